//! How values are written into unit files: quoted words and command lines, escaped free text,
//! time spans and lists of exit statuses. Does not own: which settings a unit has.

use std::path::Path;
use std::time::Duration;

/// One word of a systemd setting: double-quoted when it contains white space or quotes,
/// `%` doubled (specifiers), `\` and `"` escaped, and on `Exec*=` lines (`exec`) `$`
/// doubled (environment expansion).
pub fn systemd_word(s: &str, exec: bool) -> String {
    let quote = s.is_empty() || s.chars().any(|c| c.is_whitespace() || matches!(c, '"' | '\'' | '\\' | ';'));
    let mut out = String::with_capacity(s.len() + 2);
    if quote {
        out.push('"');
    }
    for c in s.chars() {
        match c {
            '%' => out.push_str("%%"),
            '$' if exec => out.push_str("$$"),
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            _ => out.push(c),
        }
    }
    if quote {
        out.push('"');
    }
    out
}

pub(super) fn path_word(p: &Path, exec: bool) -> String {
    systemd_word(&p.to_string_lossy(), exec)
}

/// A command line for `ExecStart=`.
pub(super) fn exec_line(args: &[String]) -> String {
    args.iter().map(|a| systemd_word(a, true)).collect::<Vec<_>>().join(" ")
}

/// A free-text value (`Description=`): specifiers escaped, no quoting.
pub(super) fn text(s: &str) -> String {
    s.replace('%', "%%")
}

/// A systemd time span: `30s`, `10min`, `2h`, `1500ms`.
pub fn timespan(d: Duration) -> String {
    let ms = d.as_millis();
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let s = d.as_secs();
    if s > 0 && s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s > 0 && s.is_multiple_of(60) {
        format!("{}min", s / 60)
    } else {
        format!("{s}s")
    }
}

pub(super) fn list(nums: &[u8]) -> String {
    nums.iter().map(u8::to_string).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_quoted_and_escaped() {
        assert_eq!(systemd_word("/var/lib/engine", true), "/var/lib/engine");
        assert_eq!(systemd_word("/srv/my data/e.db", true), "\"/srv/my data/e.db\"");
        assert_eq!(systemd_word("/srv/100%/e.db", false), "/srv/100%%/e.db");
        assert_eq!(systemd_word("/srv/$HOME", true), "/srv/$$HOME");
        assert_eq!(systemd_word("/srv/$HOME", false), "/srv/$HOME");
        assert_eq!(systemd_word("a\"b", false), "\"a\\\"b\"");
        assert_eq!(systemd_word("", true), "\"\"");
    }

    #[test]
    fn timespans() {
        assert_eq!(timespan(Duration::from_secs(30)), "30s");
        assert_eq!(timespan(Duration::from_secs(600)), "10min");
        assert_eq!(timespan(Duration::from_secs(7200)), "2h");
        assert_eq!(timespan(Duration::from_millis(1500)), "1500ms");
        assert_eq!(timespan(Duration::from_secs(90)), "90s");
    }
}

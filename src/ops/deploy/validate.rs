//! Checking every deployment value before anything is rendered: unit and account names, paths
//! systemd and logrotate can read back, calendars, durations. Does not own: rendering.

use std::path::{Component, Path};
use std::time::Duration;

use super::error::DeployError;
use super::options::DeployOptions;

/// Roots that `PrivateTmp=yes` replaces with a private, empty directory.
const PRIVATE_TMP_ROOTS: [&str; 2] = ["/tmp", "/var/tmp"];

impl DeployOptions {
    /// Checks every value before anything is rendered.
    pub(super) fn validate(&self) -> Result<(), DeployError> {
        valid_unit_name(&self.unit)?;
        valid_account("user", &self.user)?;
        valid_account("group", &self.group)?;
        if self.engine.is_empty() {
            return Err(DeployError::NoEngineCommand);
        }
        let mut paths: Vec<(&'static str, &Path)> = vec![
            ("the warden binary", &self.warden),
            ("the config file", &self.config),
            ("the database", &self.database),
            ("backup_dir", &self.backup_dir),
            ("session_dir", &self.session_dir),
            ("the snapshot dir", &self.snapshot_dir),
            ("audit_dir", self.audit_dir()),
            ("the log dir", &self.log_dir),
        ];
        paths.extend(self.read_write.iter().map(|p| ("a read-write path", p.as_path())));
        if let Some(p) = &self.prom_dir {
            paths.push(("the textfile dir", p));
        }
        for (what, p) in &paths {
            valid_path(what, p)?;
        }
        // The engine program: only when given as an absolute path (else PATH decides).
        if let Some(p) = self.engine.first().map(Path::new).filter(|p| p.is_absolute()) {
            valid_path("the engine program", p)?;
        }
        for (what, p) in [("audit_dir", self.audit_dir()), ("the log dir", &self.log_dir)] {
            if let Some(c) = p.to_string_lossy().chars().find(|c| matches!(c, '*' | '?' | '[' | ']')) {
                return Err(DeployError::UnsafePath {
                    what,
                    path: p.to_owned(),
                    reason: format!("`{c}` is a glob character for logrotate (hint: rename the directory)"),
                });
            }
        }
        for (what, v) in [
            ("check calendar", &self.check_at),
            ("drill calendar", &self.drill_at),
            ("prune calendar", &self.prune_at),
            ("status calendar", &self.status_at),
        ] {
            if v.trim().is_empty() || v.chars().any(char::is_control) {
                return Err(DeployError::Invalid {
                    what,
                    value: v.clone(),
                    reason: "not a systemd calendar expression (hint: `*-*-* 03:30:00`, `daily`, `*:0/5`; check with `systemd-analyze calendar`)".into(),
                });
            }
        }
        for (what, d) in [("watchdog", self.watchdog), ("stop timeout", Some(self.stop_timeout))] {
            if let Some(d) = d
                && d < Duration::from_secs(1)
            {
                return Err(DeployError::Invalid {
                    what,
                    value: format!("{d:?}"),
                    reason: "at least 1s (hint: `30s`, `10min`)".into(),
                });
            }
        }
        Ok(())
    }
}

fn valid_unit_name(name: &str) -> Result<(), DeployError> {
    let bad = |reason: &str| {
        Err(DeployError::Invalid { what: "unit name", value: name.to_owned(), reason: reason.to_owned() })
    };
    if name.is_empty() || name.len() > 200 {
        return bad("1 to 200 characters (hint: `engine`)");
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':')) {
        return bad("only ASCII letters, digits, `-`, `_`, `.` and `:` (hint: `engine`, `engine-eu`)");
    }
    if name.starts_with('-') || name.starts_with('.') {
        return bad("must start with a letter or digit");
    }
    if [".service", ".timer", ".socket", ".target", ".mount"].iter().any(|s| name.ends_with(s)) {
        return bad("give the base name without a suffix (hint: `engine`, not `engine.service`)");
    }
    Ok(())
}

fn valid_account(what: &'static str, name: &str) -> Result<(), DeployError> {
    let numeric = !name.is_empty() && name.chars().all(|c| c.is_ascii_digit());
    let named = name.len() <= 31
        && name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'));
    if numeric || named {
        Ok(())
    } else {
        Err(DeployError::Invalid {
            what,
            value: name.to_owned(),
            reason: "not a user or group name (hint: letters, digits, `_`, `-`, at most 31, or a numeric id)".into(),
        })
    }
}

fn valid_path(what: &'static str, p: &Path) -> Result<(), DeployError> {
    if !p.is_absolute() {
        return Err(DeployError::RelativePath { what, path: p.to_owned() });
    }
    let unsafe_path = |reason: &str| DeployError::UnsafePath { what, path: p.to_owned(), reason: reason.to_owned() };
    let Some(s) = p.to_str() else {
        return Err(unsafe_path("it is not UTF-8 (hint: rename it)"));
    };
    if s.chars().any(|c| c.is_control() || c == '"' || c == '\\') {
        return Err(unsafe_path("it contains a control character, `\"` or `\\` (hint: rename it)"));
    }
    if p.components().any(|c| matches!(c, Component::CurDir | Component::ParentDir))
        || s.contains("//")
        || s.contains("/./")
        || s.ends_with("/.")
    {
        return Err(unsafe_path("it is not normalised (`.`, `..` or `//`) (hint: give the plain path)"));
    }
    if s.len() > 1 && s.ends_with('/') {
        return Err(unsafe_path("it ends with `/` (hint: drop the trailing slash)"));
    }
    for root in PRIVATE_TMP_ROOTS {
        if p.starts_with(root) {
            return Err(DeployError::PrivateTmp { what, path: p.to_owned(), root });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_accounts() {
        assert!(valid_unit_name("engine").is_ok());
        assert!(valid_unit_name("engine-eu_1").is_ok());
        for bad in ["", "engine.service", "a b", "a/b", "-x", "a@b", "a%b"] {
            assert!(valid_unit_name(bad).is_err(), "{bad}");
        }
        assert!(valid_account("user", "engine").is_ok());
        assert!(valid_account("user", "0").is_ok());
        for bad in ["", "a b", "1abc", "x:y"] {
            assert!(valid_account("user", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn paths() {
        assert!(valid_path("x", Path::new("/var/lib/engine")).is_ok());
        assert!(valid_path("x", Path::new("/srv/a b/100%")).is_ok());
        for bad in ["rel", "/a/../b", "/a/./b", "/a//b", "/a/", "/a\"b", "/a\\b", "/a\nb", "/tmp/x", "/var/tmp"] {
            assert!(valid_path("x", Path::new(bad)).is_err(), "{bad}");
        }
    }
}

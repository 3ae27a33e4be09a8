//! How warden talks on stderr: `-q` (only errors), colour only for a person at a terminal
//! (never in a pipe, never with `NO_COLOR`), and under systemd the journal's priority
//! prefixes (`<4>` for a warning) without a second timestamp. Also the JSON form of an
//! error when `--json` was asked for.
//! Does not own: what any command prints (the command modules), the exit codes (`util::exit`).

use std::io::IsTerminal as _;
use std::sync::atomic::{AtomicBool, Ordering};

use tracing::Level;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, format::Writer};
use tracing_subscriber::registry::LookupSpan;

/// Set once from `-q`, before any command runs.
static QUIET: AtomicBool = AtomicBool::new(false);

/// `-q`: only errors on stderr.
pub fn quiet() -> bool {
    QUIET.load(Ordering::Relaxed)
}

/// Set once from `-v`.
static VERBOSE: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// `-v`: show everything (a whole damage report, for one).
pub fn verbose() -> bool {
    VERBOSE.load(Ordering::Relaxed) > 0
}

/// Records `-v` (its count) for the whole process.
pub fn set_verbose(v: u8) {
    VERBOSE.store(v, Ordering::Relaxed);
}

/// Records `-q` for the whole process.
pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
}

/// Whether colour may be written to stderr: a terminal, and no `NO_COLOR` (no-color.org:
/// set and not empty).
pub fn colour() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && !journal()
}

/// Whether stderr is systemd's journal stream: `JOURNAL_STREAM` names its device and inode
/// (systemd.exec(5)), so a stderr redirected elsewhere by the unit is not taken for it.
pub fn journal() -> bool {
    static J: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *J.get_or_init(journal_stream)
}

fn journal_stream() -> bool {
    use std::os::unix::fs::MetadataExt as _;
    let Some(v) = std::env::var_os("JOURNAL_STREAM") else { return false };
    let Some((dev, ino)) = v.to_str().and_then(|v| v.split_once(':')) else { return false };
    let Ok(md) = std::fs::metadata("/proc/self/fd/2") else { return false };
    dev.parse() == Ok(md.dev()) && ino.parse() == Ok(md.ino())
}

/// The prefix that gives a stderr line its journal priority (sd-daemon(3)): `<3>` error,
/// `<4>` warning, `<6>` info, `<7>` debug; empty when stderr is not the journal.
pub fn priority(level: Level) -> &'static str {
    if journal() { prefix(level) } else { "" }
}

fn prefix(level: Level) -> &'static str {
    match level {
        Level::ERROR => "<3>",
        Level::WARN => "<4>",
        Level::INFO => "<6>",
        _ => "<7>",
    }
}

/// Sets up logging to stderr: warnings by default (errors only with `-q`), more with `-v`,
/// `RUST_LOG` over both. Under systemd each line carries its priority and no timestamp
/// (the journal keeps its own); at a terminal, colour unless `NO_COLOR`.
pub fn init_logging(verbose: u8) {
    // Audit records are mirrored to tracing; the CLI prints refusals itself, so their
    // mirror is shown only with -v.
    let level = match (quiet(), verbose) {
        (true, _) => "error,sqlite_warden::guard::audit=off",
        (false, 0) => "warn,sqlite_warden::guard::audit=error",
        (false, 1) => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = if journal() {
        builder.with_ansi(false).event_format(JournalLine).try_init()
    } else {
        builder.with_ansi(colour()).try_init()
    };
}

/// One journal line: `<priority>target: message fields`, no time, no colour.
struct JournalLine;

impl<S, N> FormatEvent<S, N> for JournalLine
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let meta = event.metadata();
        write!(w, "{}{}: ", prefix(*meta.level()), meta.target())?;
        ctx.format_fields(w.by_ref(), event)?;
        writeln!(w)
    }
}

/// Whether `--json` is among warden's own arguments (before `--`): then an error is
/// printed as JSON on stdout too.
pub fn json_requested() -> bool {
    std::env::args_os().skip(1).take_while(|a| a != "--").any(|a| a == "--json")
}

/// An error as one JSON document (`schema` "warden.error/1"): the message, the hint when
/// the message has one, and the exit code.
pub fn error_json(message: &str, code: u8) -> String {
    let (text, hint) = split_hint(message);
    let v = serde_json::json!({
        "schema": "warden.error/1",
        "ok": false,
        "error": text,
        "hint": hint,
        "exit_code": code,
    });
    format!("{v}\n")
}

/// Splits the `hint:` part (warden's errors end with one: `(hint: …)` or a `hint:` line)
/// from the rest of a message.
fn split_hint(message: &str) -> (String, Option<String>) {
    for marker in ["\nwarden: (hint: ", "\n(hint: ", " (hint: ", "\nhint: ", "; hint: "] {
        if let Some(at) = message.find(marker) {
            let hint = message[at + marker.len()..].trim_end().trim_end_matches(')').trim().to_owned();
            return (message[..at].trim_end().to_owned(), Some(hint));
        }
    }
    (message.trim_end().to_owned(), None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_as_json_carries_its_schema_code_and_hint() {
        let v: serde_json::Value =
            serde_json::from_str(&error_json("`x.db` is missing (hint: run `warden doctor x.db`)", 66)).unwrap();
        assert_eq!(v["schema"], "warden.error/1");
        assert_eq!(v["exit_code"], 66);
        assert_eq!(v["error"], "`x.db` is missing");
        assert_eq!(v["hint"], "run `warden doctor x.db`");
        let v: serde_json::Value = serde_json::from_str(&error_json("no hint here\n", 1)).unwrap();
        assert_eq!((v["error"].as_str(), v["hint"].is_null()), (Some("no hint here"), true));
    }

    #[test]
    fn no_journal_without_a_matching_stream() {
        // The test's stderr is never the journal: no prefix, whatever the level.
        assert_eq!(priority(Level::WARN), "");
    }
}

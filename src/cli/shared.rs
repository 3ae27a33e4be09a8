//! Helpers shared by the operator views (`check`, `status`, `sessions`, `backups`, `audit`):
//! stdout, JSON lines, short times and durations, flag parsing, the signal flag, lookup exit
//! codes. Does not own: any command or what it prints.

use std::io::{self, Write as _};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use sqlite_warden::copies::backup::CheckMode;
use sqlite_warden::ops::status::LookupError;
use sqlite_warden::util::exit;

use super::CliError;
use super::settings::CheckArg;

/// Writes `text` to stdout, as [`out`] does: a closed pipe (`warden audit | head`) is not an
/// error, any other failure is kept for [`stdout_failure`].
pub(super) fn emit(text: &str) -> Result<(), CliError> {
    out(format_args!("{text}"), false);
    Ok(())
}

/// The first error writing stdout other than a closed pipe (see [`out`]).
static STDOUT_FAILED: std::sync::Mutex<Option<io::Error>> = std::sync::Mutex::new(None);

/// What `outln!`/`out!` do: write to stdout, and never panic. A closed pipe (`warden fs / |
/// true`) means the reader has gone: the line is dropped and the command carries on to
/// its own result and exit code. Any other failure (disk full behind `> file`) is kept for
/// [`stdout_failure`], which turns a success into [`exit::IOERR`].
pub(super) fn out(args: std::fmt::Arguments<'_>, newline: bool) {
    WROTE.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut o = io::stdout().lock();
    let written = o.write_fmt(args).and_then(|()| if newline { o.write_all(b"\n") } else { Ok(()) });
    if let Err(e) = written.and_then(|()| o.flush())
        && e.kind() != io::ErrorKind::BrokenPipe
        && let Ok(mut slot) = STDOUT_FAILED.lock()
    {
        slot.get_or_insert(e);
    }
}

/// Whether anything was written to stdout (a command that printed its own JSON answer,
/// error included, gets no second document from `main`).
static WROTE: AtomicBool = AtomicBool::new(false);

/// Whether [`out`] wrote anything.
pub fn stdout_written() -> bool {
    WROTE.load(std::sync::atomic::Ordering::Relaxed)
}

/// The first failure [`out`] kept, if any (main reports it and exits [`exit::IOERR`]).
pub fn stdout_failure() -> Option<io::Error> {
    STDOUT_FAILED.lock().ok().and_then(|mut slot| slot.take())
}

/// One `--json` answer as a line. Every answer is an object carrying `schema`, the version
/// of its shape: a report that has its own keeps it, any other gets 1. Lists are wrapped in
/// an object by their command (`{"schema":1,"backups":[…]}`), so a script can always read
/// `schema` first.
pub(super) fn json_line(v: &impl serde::Serialize) -> String {
    let mut doc = match serde_json::to_value(v) {
        Ok(doc) => doc,
        Err(e) => serde_json::json!({"error": format!("could not render the answer as JSON: {e}")}),
    };
    debug_assert!(doc.is_object(), "a --json answer is an object, not {doc}");
    if let Some(map) = doc.as_object_mut() {
        map.entry("schema").or_insert(serde_json::json!(1));
    }
    let mut s = doc.to_string();
    s.push('\n');
    s
}

/// `2026-03-01T12:00:00.123456Z` → `2026-03-01 12:00:00Z`.
pub(super) fn short_ts(ts: &str) -> String {
    match ts.get(..19) {
        Some(head) if ts.len() > 19 => format!("{}Z", head.replacen('T', " ", 1)),
        _ => ts.replacen('T', " ", 1),
    }
}

pub(super) fn secs(ms: u64) -> String {
    if ms < 1000 { format!("{ms} ms") } else { format!("{:.1} s", ms as f64 / 1000.0) }
}

pub(super) fn snake<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_else(|| "?".into())
}

pub(super) fn check_mode(c: Option<CheckArg>) -> Option<CheckMode> {
    c.map(CheckMode::from)
}

pub(super) fn parse_duration(flag: &str, s: &str) -> Result<Option<Duration>, CliError> {
    sqlite_warden::ops::config::parse_limit(s).map_err(|e| CliError::Usage(format!("{flag} {e}")))
}

/// A flag set by SIGINT/SIGTERM, so long work stops cleanly (temporary files removed).
pub(super) fn cancel_on_signals() -> Result<Arc<AtomicBool>, CliError> {
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, flag.clone())
            .map_err(|source| CliError::Io { context: "installing signal handlers".into(), source })?;
    }
    Ok(flag)
}

pub(super) fn lookup_error(e: LookupError) -> CliError {
    let code = match &e {
        LookupError::NotFound { .. } => exit::NOINPUT,
        LookupError::Ambiguous { .. } => exit::USAGE,
        _ => exit::IOERR,
    };
    CliError::Failed { message: e.to_string(), code }
}

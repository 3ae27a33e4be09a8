//! The doctor report model: verdicts and exit codes, one [`Check`]'s outcome, the report, the
//! options, and the context every check reads ([`Ctx`]). Does not own any check.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::guard::lock::LockStatus;
use crate::ops::config::Settings;
use crate::storage::{FsProbe, FsVerdict, RealProbe};
use crate::util::exit;

/// Schema version of [`DoctorReport`]; readers ignore unknown fields.
pub const SCHEMA: u32 = 1;

/// Exit code when every check passed ([`exit::OK`]).
pub const EXIT_PASS: u8 = exit::OK;
/// Exit code when the worst verdict is a warning ([`exit::DOCTOR_WARN`]).
pub const EXIT_WARN: u8 = exit::DOCTOR_WARN;
/// Exit code when at least one check failed ([`exit::DOCTOR_FAIL`]).
pub const EXIT_FAIL: u8 = exit::DOCTOR_FAIL;

/// Median `fsync` latency above which the `fsync` check warns (milliseconds).
pub const FSYNC_WARN_MS: f64 = 50.0;

/// How far in the future a backup or artifact may be dated before the clock check fails.
pub const CLOCK_TOLERANCE: Duration = Duration::from_secs(5 * 60);

/// The ids of the checks, in the order they run and are reported.
pub const CHECK_IDS: [&str; 10] = [
    "storage",
    "free_space",
    "fsync",
    "device",
    "permissions",
    "sqlite",
    "extension",
    "journal",
    "clock",
    "foreign_openers",
];

/// One check's judgement. Ordered: `Pass < Warn < Fail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Ready.
    Pass,
    /// Works, but an operator should look.
    Warn,
    /// Not ready: fix before running the engine here.
    Fail,
}

impl Verdict {
    /// `pass`, `warn` or `fail`.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Warn => "warn",
            Verdict::Fail => "fail",
        }
    }

    /// The process exit code for this overall verdict: [`EXIT_PASS`], [`EXIT_WARN`] or
    /// [`EXIT_FAIL`].
    pub fn exit_code(self) -> u8 {
        match self {
            Verdict::Pass => EXIT_PASS,
            Verdict::Warn => EXIT_WARN,
            Verdict::Fail => EXIT_FAIL,
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    /// Stable snake_case id (one of [`CHECK_IDS`]).
    pub id: String,
    /// What was checked, for people.
    pub title: String,
    /// The judgement.
    pub verdict: Verdict,
    /// The measured facts behind the verdict.
    pub detail: String,
    /// One actionable line; empty on pass.
    pub fix: String,
    /// The same facts, machine-readable (an object; fields vary by check).
    pub data: Value,
}

/// Everything `warden doctor` reports (schema [`SCHEMA`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DoctorReport {
    /// [`SCHEMA`].
    pub schema: u32,
    /// The database examined (absolute).
    pub db: PathBuf,
    /// The backup directory examined.
    pub backup_dir: PathBuf,
    /// The worst verdict of all checks.
    pub verdict: Verdict,
    /// [`Verdict::exit_code`] of [`DoctorReport::verdict`].
    pub exit_code: u8,
    /// `7 pass, 2 warn (device, fsync), 0 fail`.
    pub summary: String,
    /// Size of the database file, when it exists.
    pub database_bytes: Option<u64>,
    /// Every check, in [`CHECK_IDS`] order.
    pub checks: Vec<Check>,
    /// When the checks ran (RFC 3339 UTC).
    pub checked_at: String,
    /// The warden that ran them.
    pub warden_version: String,
}

impl DoctorReport {
    /// The check with this id.
    pub fn check(&self, id: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.id == id)
    }
}

/// What to examine and how. [`DoctorOptions::new`] gives the defaults.
#[derive(Debug, Clone)]
pub struct DoctorOptions {
    /// The database (need not exist yet: doctor then judges where it would be created).
    pub db: PathBuf,
    /// Backups (default `<db>.warden/backups`).
    pub backup_dir: Option<PathBuf>,
    /// Health artifacts, for the clock check (default `<db>.warden/sessions`).
    pub session_dir: Option<PathBuf>,
    /// Where mount facts come from: [`RealProbe`] by default; tests pass a
    /// [`crate::storage::SimulatedProbe`]. The `storage` check and the device lookup use it.
    pub probe: Arc<dyn FsProbe>,
    /// `free_space` warns below this many times the database (+ `-wal` + `-journal`);
    /// default 3.
    pub min_free_factor: f64,
    /// Number of timed `fsync`s (default 5; at least 1 is taken).
    pub fsync_samples: u32,
    /// Median `fsync` above this warns (default [`FSYNC_WARN_MS`]).
    pub fsync_warn_ms: f64,
    /// Artifacts dated further in the future fail the clock check (default
    /// [`CLOCK_TOLERANCE`]).
    pub clock_tolerance: Duration,
    /// Ask `timedatectl show -p NTPSynchronized` (default `true`; it is skipped when absent).
    pub ntp: bool,
}

impl DoctorOptions {
    /// The defaults for `db`.
    pub fn new(db: impl Into<PathBuf>) -> Self {
        DoctorOptions {
            db: db.into(),
            backup_dir: None,
            session_dir: None,
            probe: Arc::new(RealProbe::new()),
            min_free_factor: 3.0,
            fsync_samples: 5,
            fsync_warn_ms: FSYNC_WARN_MS,
            clock_tolerance: CLOCK_TOLERANCE,
            ntp: true,
        }
    }

    /// The defaults for the database, backup and artifact directories of `warden.toml` and
    /// its flags.
    pub fn from_settings(s: &Settings) -> Self {
        DoctorOptions {
            backup_dir: Some(s.backup_dir.clone()),
            session_dir: Some(s.session_dir.clone()),
            ..Self::new(s.database.clone())
        }
    }
}

/// Everything the checks share, gathered once.
pub(super) struct Ctx<'a> {
    pub(super) opts: &'a DoctorOptions,
    pub(super) db: PathBuf,
    pub(super) dir: PathBuf,
    pub(super) backup_dir: PathBuf,
    pub(super) session_dir: PathBuf,
    pub(super) db_verdict: Result<FsVerdict, String>,
    pub(super) backup_verdict: Result<FsVerdict, String>,
    pub(super) lock: Result<LockStatus, String>,
}

pub(super) fn mk(id: &str, title: &str, verdict: Verdict, detail: String, fix: String, data: Value) -> Check {
    Check {
        id: id.to_owned(),
        title: title.to_owned(),
        verdict,
        detail,
        fix: if verdict == Verdict::Pass { String::new() } else { fix },
        data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_order_and_exit_codes() {
        assert!(Verdict::Pass < Verdict::Warn && Verdict::Warn < Verdict::Fail);
        assert_eq!(
            [Verdict::Pass, Verdict::Warn, Verdict::Fail].map(Verdict::exit_code),
            [EXIT_PASS, EXIT_WARN, EXIT_FAIL]
        );
        assert_eq!(serde_json::to_value(Verdict::Warn).unwrap(), "warn");
    }
}

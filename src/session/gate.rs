//! The integrity gate: may a session start on this database?
//!
//! Owns: the verdict on a database set before an engine touches it, combining
//! - the raw scan of the original files ([`super::scan`]): header and size sanity, and the
//!   WAL damage SQLite's recovery would silently swallow;
//! - `PRAGMA integrity_check` (or `quick_check`) and `foreign_key_check` on a **private,
//!   read-write, recovered copy** of the set, which is also the pre-session backup: the
//!   gate costs about one integrity check, not a check plus a backup.
//!
//! Does not own: taking the copy or checking it ([`super::backup`]), or what to do with a
//! failure ([`super::Session`] refuses to start the engine).
//!
//! Fail closed: the gate passes only when the scan has no fatal finding, the pragma returned
//! exactly one row `ok`, no foreign key is violated, nothing errored and the time budget was
//! not exceeded. The original files are only ever read: never opened read-write, never with
//! `immutable=1`, their `-shm` never rewritten.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::backup::{BackupError, BackupOptions, BackupRecord, BackupStore, CheckMode, IntegrityReport};
use super::scan::{self, ScanReport, Severity};

/// Why the gate refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GateFailure {
    /// The database does not exist and creating it was not asked for.
    Missing,
    /// The database is an empty file and creating it was not asked for.
    Empty,
    /// The raw scan found damage (see the findings).
    Scan,
    /// The integrity check or foreign key check failed, or could not run.
    Integrity,
    /// The time budget ran out before the check finished.
    TimedOut,
}

/// The gate's verdict and everything it is based on. A failed gate is a report, not an error.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GateReport {
    /// The database.
    pub db: PathBuf,
    /// True when a session may start.
    pub passed: bool,
    /// Why not, when it did not pass.
    pub failure: Option<GateFailure>,
    /// The check that ran on the copy.
    pub mode: CheckMode,
    /// Human-readable reasons for the verdict (empty when it passed with nothing to say).
    pub reasons: Vec<String>,
    /// The raw scan of the original files.
    pub scan: Option<ScanReport>,
    /// The check of the private copy.
    pub integrity: Option<IntegrityReport>,
    /// The database did not exist (or was empty) and creation was allowed: nothing checked.
    pub fresh_database: bool,
    /// Wall time of the whole gate, copy included.
    pub duration_ms: u64,
}

impl GateReport {
    fn new(db: &Path, mode: CheckMode) -> Self {
        GateReport {
            db: db.to_owned(),
            passed: false,
            failure: None,
            mode,
            reasons: Vec::new(),
            scan: None,
            integrity: None,
            fresh_database: false,
            duration_ms: 0,
        }
    }

    fn fail(mut self, failure: GateFailure, reason: String, started: Instant) -> Self {
        self.passed = false;
        self.failure = Some(failure);
        self.reasons.push(reason);
        self.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self
    }

    /// One line for humans.
    pub fn summary(&self) -> String {
        if self.passed {
            if self.fresh_database {
                return "passed: no database yet (creation allowed)".into();
            }
            return format!(
                "passed: {}",
                self.integrity.as_ref().map_or_else(|| "ok".to_owned(), IntegrityReport::summary)
            );
        }
        format!("FAILED: {}", self.reasons.first().map_or("unknown", String::as_str))
    }
}

/// What the gate was given to do.
#[derive(Debug, Clone, Default)]
pub struct GateOptions {
    /// A missing or empty database passes (the engine will create it). Default `false`: at
    /// session start a missing database usually means a wrong path or a lost disk.
    pub allow_create: bool,
}

/// Runs the gate on `db` and, when it passes, publishes the checked copy in `store` as the
/// pre-session backup (`backup.kind` should be [`super::BackupKind::Pre`]).
///
/// The caller must hold the writer lock of `db` with no engine running
/// (`backup.writer_lock_held`): the set is then stable, and a hot journal or WAL is
/// recovered on the private copy, as the engine would at its next open.
///
/// # Errors
/// [`BackupError`] when the gate could not be run at all (no space, I/O errors, a set
/// that changes under warden's lock); the engine must not start then either.
pub fn run(
    db: &Path,
    store: &BackupStore,
    opts: &GateOptions,
    backup: &BackupOptions,
) -> Result<(GateReport, Option<BackupRecord>), BackupError> {
    let started = Instant::now();
    let report = GateReport::new(db, backup.check);
    let size = match std::fs::metadata(db) {
        Ok(md) => Some(md.len()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(BackupError::Io { action: "reading", path: db.to_owned(), source: e }),
    };
    let wal = super::backup::sidecar(db, "-wal");
    let wal_nonempty = std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0);
    match size {
        None if !wal_nonempty => {
            if opts.allow_create {
                let mut r = report;
                r.passed = true;
                r.fresh_database = true;
                r.reasons.push("the database does not exist yet; the engine will create it".into());
                return Ok((r, None));
            }
            return Ok((
                report.fail(
                    GateFailure::Missing,
                    format!(
                        "`{}` does not exist (hint: check the path; pass --create only for a brand-new database)",
                        db.display()
                    ),
                    started,
                ),
                None,
            ));
        }
        Some(0) if !wal_nonempty => {
            if opts.allow_create {
                let mut r = report;
                r.passed = true;
                r.fresh_database = true;
                r.reasons.push("the database is an empty file; the engine will initialise it".into());
                return Ok((r, None));
            }
            return Ok((
                report.fail(
                    GateFailure::Empty,
                    format!(
                        "`{}` is an empty file: no tables, no data (hint: a lost or replaced file? pass --create only for a brand-new database)",
                        db.display()
                    ),
                    started,
                ),
                None,
            ));
        }
        _ => {}
    }

    let scanned =
        scan::scan_set(db).map_err(|source| BackupError::Io { action: "scanning", path: db.to_owned(), source })?;
    let mut report = report;
    let fatal: Vec<String> = scanned
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Fatal)
        .map(|f| format!("{}: {}", f.code, f.message))
        .collect();
    report.scan = Some(scanned);
    if !fatal.is_empty() {
        let mut r = report.fail(GateFailure::Scan, fatal[0].clone(), started);
        r.reasons.extend(fatal.into_iter().skip(1));
        return Ok((r, None));
    }

    let outcome = store.take(db, backup)?;
    let integrity = outcome.integrity.clone();
    report.integrity = Some(integrity.clone());
    if !integrity.ok {
        let failure = if integrity.timed_out { GateFailure::TimedOut } else { GateFailure::Integrity };
        let mut reason = integrity.summary();
        if integrity.timed_out {
            reason.push_str(" (hint: raise the gate budget, or use the quick check with a nightly full check)");
        }
        return Ok((report.fail(failure, reason, started), outcome.published));
    }
    report.passed = true;
    report.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    Ok((report, outcome.published))
}

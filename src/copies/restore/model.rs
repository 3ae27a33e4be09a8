//! The restore's data model: options, the re-verification, the report, the intent record
//! and recovery report types, and the on-disk names. Owns no behaviour beyond building an
//! empty report; errors are in `error`, the drill's types in `drills`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::copies::backup::{BackupRecord, BackupRef, IntegrityReport};
use crate::guard::vfs::Guard;
use crate::util::fmt::ms;
use crate::util::identity::{ProcessIdentity, now_rfc3339};

/// File name of the intent record inside the state directory.
pub const INTENT_FILE: &str = "restore-in-progress.json";
/// Directory (inside the state directory) of what restores moved aside.
pub const REPLACED_DIR: &str = "replaced";
/// The sidecars moved aside with the database, in the order they are moved.
pub const SIDECARS: [&str; 3] = ["-wal", "-journal", "-shm"];
pub(super) const RESTORE_TMP: &str = ".restore";

/// How to restore.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// The backup: an id, a data file name in the store, or a path to a data file with its
    /// manifest (`<stem>.json`) beside it. `None`: the newest good backup.
    pub from: Option<String>,
    /// Restore to this new path instead of over the database (an existing directory means
    /// `<dir>/<database file name>`). It must not exist; the live database is not touched.
    pub to: Option<PathBuf>,
    /// Verify and report the plan; change nothing, take no lock.
    pub dry_run: bool,
    /// Accept a named `post-crash` copy, or one whose manifest says unverified. It must
    /// still pass the hash and integrity checks now. Default `false`.
    pub allow_crash_copy: bool,
    /// Accept a backup named by `from` that belongs to another database (another identity
    /// or path, e.g. a database of the same file name sharing the backup directory). Never
    /// considered without `from`. Default `false`.
    pub allow_foreign: bool,
    /// Time budget of the integrity check (exceeding it fails the verification); `None`
    /// for no limit.
    pub check_budget: Option<Duration>,
    /// Where the intent record and `replaced/` live (default `<db>.warden`, which must be on
    /// the database's filesystem).
    pub state_dir: Option<PathBuf>,
    /// The guard whose audit log records the restore; `None`: the default audit directory.
    pub guard: Option<Guard>,
    /// Run the full integrity check even when the copy hashes to content that passed one
    /// already. Default `false`.
    pub recheck: bool,
}

/// How a restore call ended. Failures to even try are [`RestoreError`]s.
///
/// [`RestoreError`]: super::RestoreError
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RestoreOutcome {
    /// The backup is in place (exit code 0).
    Restored,
    /// Dry run: verified, nothing changed (exit code 0).
    Planned,
    /// The backup failed re-verification; nothing was changed (exit code 65).
    VerificationFailed,
}

/// The re-verification of the chosen backup. A failure is a finding, not an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verification {
    /// Size and SHA-256 match the manifest and the integrity check passed.
    pub ok: bool,
    /// Size the manifest records.
    pub expected_size: u64,
    /// Size found on disk.
    pub found_size: u64,
    /// SHA-256 the manifest records.
    pub expected_sha256: String,
    /// SHA-256 of the bytes copied (`None` when the size already differed).
    pub found_sha256: Option<String>,
    /// Size and SHA-256 match.
    pub hash_ok: bool,
    /// The check of the private copy (`None` when the hash failed first, or when an
    /// interrupted restore's copy was re-hashed only: it had passed before its record was
    /// written).
    pub integrity: Option<IntegrityReport>,
    /// Not checked again: the copy hashes to the recorded SHA-256, whose content passed a
    /// full check before (this says when); `--recheck` runs the check anyway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checked_before: Option<String>,
    /// Why it failed, one line.
    pub failure: Option<String>,
    /// Wall time of copy, hash and check.
    pub duration_ms: u64,
}

/// A file moved aside (or to be moved, in a plan or an intent record).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MovedFile {
    /// Where it was.
    pub from: PathBuf,
    /// Where it went.
    pub to: PathBuf,
    /// Its size in bytes.
    pub size: u64,
}

/// What the next restore does with an interrupted one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecoveryAction {
    /// The verified copy had been installed: only the intent record is removed.
    Completed,
    /// The verified copy was intact: the rest was moved aside and it was installed.
    RolledForward,
    /// The copy was missing or damaged: everything moved aside was moved back.
    RolledBack,
}

/// What was found and done about an interrupted restore.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecoveryReport {
    /// The decision.
    pub action: RecoveryAction,
    /// False in a dry run: the decision a real run would take.
    pub performed: bool,
    /// The record that was found.
    pub intent: RestoreIntent,
    /// What was done, one line each.
    pub details: Vec<String>,
}

/// The intent record (`<db>.warden/restore-in-progress.json`), written atomically before
/// anything is moved and removed once the restored file is in place. Schema 1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreIntent {
    /// Record format version.
    pub schema: u32,
    /// When the restore started (RFC 3339 UTC).
    pub started: String,
    /// The database.
    pub db: PathBuf,
    /// The backup being restored.
    pub backup: BackupRef,
    /// The verified copy, beside the database, to be renamed over it.
    pub temp: PathBuf,
    /// Where the current set goes.
    pub replaced_dir: PathBuf,
    /// The moves, in order (database first).
    pub moves: Vec<MovedFile>,
    /// Permission bits given to the restored file.
    pub mode: u32,
    /// The restoring process.
    pub process: ProcessIdentity,
}

/// What [`restore`] did (or would do).
///
/// [`restore`]: super::restore
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RestoreReport {
    /// Report format version.
    pub schema: u32,
    /// How it ended.
    pub outcome: RestoreOutcome,
    /// Nothing was changed on purpose.
    pub dry_run: bool,
    /// The database of the settings.
    pub db: PathBuf,
    /// Where the backup goes: the database, or the `--to` path.
    pub target: PathBuf,
    /// The target is the database itself.
    pub in_place: bool,
    /// The backup restored (or chosen).
    pub backup: BackupRef,
    /// Its re-verification.
    pub verification: Verification,
    /// Where the replaced set went (or would go).
    pub replaced_dir: Option<PathBuf>,
    /// The files moved aside (or that would be).
    pub moved_aside: Vec<MovedFile>,
    /// Permission bits of the restored file, octal (`0600`).
    pub mode: String,
    /// An interrupted restore that was finished or undone first (or would be, in a dry run).
    pub recovery: Option<RecoveryReport>,
    /// An older good backup to try when this one failed.
    pub next_candidate: Option<String>,
    /// Notes and warnings for the operator.
    pub messages: Vec<String>,
    /// When it started (RFC 3339 UTC).
    pub started_at: String,
    /// Wall time.
    pub duration_ms: u64,
}

pub(super) struct Started {
    pub(super) at: String,
    pub(super) clock: Instant,
}

impl Started {
    pub(super) fn now() -> Self {
        Started { at: now_rfc3339(), clock: Instant::now() }
    }
}

pub(super) fn base_report(
    started: &Started,
    db: &Path,
    target: &Path,
    rec: &BackupRecord,
    verification: Verification,
    dry_run: bool,
) -> RestoreReport {
    RestoreReport {
        schema: 1,
        outcome: RestoreOutcome::Planned,
        dry_run,
        db: db.to_owned(),
        target: target.to_owned(),
        in_place: db == target,
        backup: BackupRef::from(rec),
        verification,
        replaced_dir: None,
        moved_aside: Vec::new(),
        mode: octal(0o600),
        recovery: None,
        next_candidate: None,
        messages: Vec::new(),
        started_at: started.at.clone(),
        duration_ms: ms(started.clock.elapsed()),
    }
}

pub(super) fn octal(mode: u32) -> String {
    format!("{mode:04o}")
}

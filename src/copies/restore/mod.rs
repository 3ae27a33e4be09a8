//! Restores and restore drills.
//!
//! Owns: choosing the backup to restore, re-verifying it before anything is touched, putting
//! it in place of the database without ever deleting the database it replaces, finishing or
//! undoing a restore that was killed half-way, and the restore drill. Does not own: taking,
//! listing or hash-checking backups ([`crate::copies::backup`]), the hashed copy and the integrity
//! check it runs on it (the crate-internal `session::copy`, [`crate::copies::backup::check_file`]),
//! which backups are kept ([`crate::copies::retention`]), or the writer lock itself ([`crate::guard::lock`]).
//!
//! # What [`restore`] does, in place
//! 1. Takes the database's writer lock ([`WriterScope::Connection`]: refused even when this
//!    process holds it) and keeps it to the end, so no session or engine can start
//!    mid-restore. A held lock is refused with the holder named; nothing is changed.
//! 2. Finishes or undoes an interrupted restore, if its intent record is there (below).
//! 3. Picks the backup: `--from` (an id, a data file name, or a path to a data file with its
//!    manifest beside it), else the newest *good* one ([`Manifest::is_good`]). A `post-crash`
//!    copy or a copy whose manifest says unverified is restored only when named and
//!    [`RestoreOptions::allow_crash_copy`] is set, and it must still pass every check.
//! 4. Re-verifies, before touching anything: the size against the manifest; then the backup
//!    is copied to a temporary file beside the database, hashed *as it is copied*, and the
//!    SHA-256 compared with the manifest (one flipped byte anywhere, even where no pragma
//!    looks, is refused here); then `PRAGMA integrity_check` and `foreign_key_check` run on
//!    that private copy (read-write connection: CHECK constraints are attached only then);
//!    then the copy is re-hashed, so the file installed is byte-identical to the manifest.
//! 5. Writes the intent record atomically and audits `restore_started` (failing closed: a
//!    restore that cannot be audited does not start).
//! 6. Moves the database, then its `-wal`, `-journal` and `-shm`, into
//!    `<db>.warden/replaced/<UTC>/` (`rename(2)` on one filesystem, never over an existing
//!    file; nothing is ever deleted). The database goes first: from then until the restored
//!    file is in place there is *no* database at the path, rather than one without its WAL
//!    or hot journal, which would open as an older or torn state.
//! 7. Renames the verified copy into place (`RENAME_NOREPLACE`), with the replaced file's
//!    mode (and owner, when running as root), or `0600` when there was none; syncs the
//!    directory. No `-wal`, `-shm` or `-journal` is left beside it.
//! 8. Removes the intent record, audits `restored` (which backup and its SHA-256, the target,
//!    what was moved aside, who), and releases the lock recording the restored file as the
//!    last clean close, so the next engine open does not report a change outside warden.
//!
//! With [`RestoreOptions::to`], the copy is verified the same way and renamed to a new path
//! that must not exist (nor its `-wal`, `-journal`, `-shm`); the live database and its lock
//! are not touched. [`RestoreOptions::dry_run`] verifies (on a temporary copy it removes) and
//! reports the plan; it changes nothing and takes no lock.
//!
//! # Crash safety
//! `kill -9` at any point leaves either the old set at the path (nothing moved yet), or the
//! restored file at the path (all moved), or the old set in `replaced/<UTC>/` plus the
//! verified copy named in the intent record. The next restore (any [`restore`] call, or
//! [`recover_interrupted`]) takes the lock and decides deterministically:
//! - the verified copy is still there and its size and SHA-256 match: **roll forward** (move
//!   the rest aside, install the copy);
//! - the copy is gone and everything was moved aside and a database is at the path: it was
//!   installed; **complete** (only the record is removed);
//! - otherwise (the copy is gone or damaged): **roll back** (move everything back, remove the
//!   copy).
//!
//! A file found where a move must put one is never overwritten: recovery stops with
//! [`RestoreError::InterruptedConflict`] and leaves the record for a human. A restore that
//! fails (rather than dies) after writing its record rolls back at once. Crash tests stop
//! the process at [`pause_point`]s: `restore-verified`, `restore-intent-written`,
//! `restore-moved-db`, `restore-moved-wal`, `restore-moved-journal`, `restore-moved-shm`,
//! `restore-installed`, `restore-finished` (in place) and `restore-to-installed` (`--to`).
//!
//! # On disk
//! ```text
//! <dir>/.<name>.restore.warden-tmp.<pid>.<n>   the verified copy, until renamed into place
//! <db>.warden/restore-in-progress.json         intent record (RestoreIntent, schema 1);
//!                                              exists only while a restore runs or was killed
//! <db>.warden/replaced/<YYYYmmddTHHMMSS.mmmZ>/ what one restore moved aside (0700): <name>,
//!                                              <name>-wal, <name>-journal, <name>-shm
//! <db>.warden/drills/latest.json               the last drill's DrillRecord (schema 1)
//! ```
//! `replaced/` is never pruned by warden: remove a directory once the restore is trusted.
//!
//! # The drill
//! [`drill`] copies the newest good backup into a scratch directory (a fresh
//! `.warden-drill.warden-tmp.<pid>.<n>/` under [`DrillOptions::scratch`], default the backup
//! directory's parent), hashing as it copies, then runs `integrity_check` and
//! `foreign_key_check` there, removes the scratch directory, and writes its record
//! atomically to `<db>.warden/drills/latest.json` (mode `0640`). It never opens the live
//! database and never takes the writer lock. The record, stable fields (readers ignore
//! unknown ones):
//!
//! ```text
//! schema        1
//! outcome       "ok" | "failed" | "no_backup"
//! ok            true only for "ok"
//! started_at, finished_at   RFC 3339 UTC
//! db            the database whose backups were drilled
//! backup        {id, path, kind, created, sha256, size, verified} or null
//! backup_age_s  seconds between the backup's creation and the drill, or null
//! hash_ok       size and SHA-256 equal the manifest (null when not reached)
//! integrity     the IntegrityReport of the restored copy (null when not reached)
//! messages      human-readable findings (why it failed)
//! bytes         bytes restored; duration_ms, copy_ms, check_ms; mb_per_s (bytes / total)
//! scratch       the scratch directory used (already removed)
//! host, warden_version, sqlite_version
//! ```

use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::copies::backup::BackupRef;
use crate::copies::backup::{
    self, BackupError, BackupRecord, BackupStore, CheckMode, IntegrityReport, Manifest, check_file, pause_point,
    sidecar,
};
use crate::copies::copy::{self, TempGuard};
use crate::copies::kind::BackupKind;
use crate::format::header::change_counter as read_change_counter;
use crate::format::names;
use crate::guard::audit::AuditError;
use crate::guard::audit::{AuditEvent, AuditLog, AuditRecord};
use crate::guard::lock::LockError;
use crate::guard::lock::{self, CloseState, LockState, WriterLock, WriterScope};
use crate::guard::vfs::Guard;
use crate::util::atomic::{self, TMP_MARK};
use crate::util::fmt::ms;
use crate::util::identity::{ProcessIdentity, now_rfc3339};

/// File name of the intent record inside the state directory.
pub const INTENT_FILE: &str = "restore-in-progress.json";
/// Directory (inside the state directory) of what restores moved aside.
pub const REPLACED_DIR: &str = "replaced";
/// Directory (inside the state directory) of drill records.
pub const DRILLS_DIR: &str = "drills";
/// File name of the latest drill record.
pub const DRILL_LATEST: &str = "latest.json";
/// The sidecars moved aside with the database, in the order they are moved.
pub const SIDECARS: [&str; 3] = ["-wal", "-journal", "-shm"];
const RESTORE_TMP: &str = ".restore";
const DRILL_PREFIX: &str = ".warden-drill";

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
    /// Time budget of the integrity check (exceeding it fails the verification); `None`
    /// for no limit.
    pub check_budget: Option<Duration>,
    /// Where the intent record and `replaced/` live (default `<db>.warden`, which must be on
    /// the database's filesystem).
    pub state_dir: Option<PathBuf>,
    /// The guard whose audit log records the restore; `None`: the default audit directory.
    pub guard: Option<Guard>,
}

/// How a restore call ended. Failures to even try are [`RestoreError`]s.
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

/// Why a restore or drill could not be carried out. A backup that fails re-verification is
/// not an error: see [`RestoreOutcome::VerificationFailed`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RestoreError {
    /// There is no good backup to restore.
    #[error(
        "no verified backup of `{db}` in `{dir}`\n(hint: backups are taken by `warden run` and `warden backup`; `warden backups` lists them; name a crash copy with --from and --allow-crash-copy)"
    )]
    NoBackup {
        /// The database.
        db: PathBuf,
        /// The backup directory.
        dir: PathBuf,
    },
    /// The named backup does not exist.
    #[error(
        "no backup `{from}` in `{dir}`\n(hint: `warden backups` lists the ids; a path must name a backup data file with its manifest (`<id>.json`) beside it)"
    )]
    NotFound {
        /// As given.
        from: String,
        /// The backup directory.
        dir: PathBuf,
    },
    /// The named backup is not a known-good state.
    #[error(
        "backup `{id}` is {what}, not a known-good state; refusing to restore it\n(hint: pass --allow-crash-copy to restore it anyway; it must still pass the hash and integrity checks)"
    )]
    NotGood {
        /// The backup.
        id: String,
        /// `a post-crash copy` or `unverified`.
        what: &'static str,
    },
    /// A writer (an engine or a session) holds the database.
    #[error(
        "refusing to restore `{db}` while a writer holds it: {holder}\n(hint: stop that engine or session first; `warden lock {db}` shows the holder; nothing was changed)"
    )]
    WriterLocked {
        /// The database.
        db: PathBuf,
        /// The lock file.
        lock_path: PathBuf,
        /// Who holds it, as recorded.
        holder: String,
    },
    /// The writer lock could not be used.
    #[error("{source}")]
    Lock {
        /// Why.
        #[source]
        source: LockError,
    },
    /// The target (or one of its sidecars) exists.
    #[error(
        "`{path}` already exists; restore never overwrites a file\n(hint: choose a new path for --to, or restore in place without --to: the current database is moved aside, never deleted)"
    )]
    TargetExists {
        /// The existing file.
        path: PathBuf,
    },
    /// The target cannot be created there.
    #[error("cannot restore to `{path}`: {why}")]
    CannotCreate {
        /// The target.
        path: PathBuf,
        /// Why, with a hint.
        why: String,
    },
    /// The request makes no sense.
    #[error("{message}")]
    Usage {
        /// What is wrong, with a hint.
        message: String,
    },
    /// The state directory is on another filesystem, so the set cannot be moved aside by
    /// rename.
    #[error(
        "`{state_dir}` is not on the same filesystem as `{db}`, so the current database cannot be moved aside by rename\n(hint: make `{state_dir}` a plain directory beside the database)"
    )]
    CrossDevice {
        /// The database.
        db: PathBuf,
        /// The state directory.
        state_dir: PathBuf,
    },
    /// Not enough free space for the verified copy.
    #[error(
        "not enough space in `{dir}` for the restored copy: need {needed} bytes, {available} free; nothing was changed\n(hint: free space there, or restore elsewhere with --to)"
    )]
    NoSpace {
        /// The target's directory.
        dir: PathBuf,
        /// Bytes needed.
        needed: u64,
        /// Bytes free.
        available: u64,
    },
    /// The disk filled up while copying; the copy was removed and nothing was changed.
    #[error(
        "the disk holding `{dir}` filled up while copying the backup; nothing was changed\n(hint: free space, or restore elsewhere with --to)"
    )]
    DiskFull {
        /// The target's directory.
        dir: PathBuf,
    },
    /// A file operation failed.
    #[error("{action} `{path}`: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// On which file.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The backup store could not be read or locked.
    #[error("{source}")]
    Store {
        /// Why.
        #[source]
        source: BackupError,
    },
    /// The audit log could not record the start of the restore (nothing was changed).
    #[error("{source}; the restore was not started")]
    Audit {
        /// Why.
        #[source]
        source: AuditError,
    },
    /// An interrupted restore cannot be finished or undone without overwriting a file.
    #[error(
        "an interrupted restore of `{db}` cannot be finished or undone automatically: {detail}\n(hint: the record `{intent}` lists every file and where it went; put them right by hand, then remove the record)"
    )]
    InterruptedConflict {
        /// The database.
        db: PathBuf,
        /// The intent record.
        intent: PathBuf,
        /// What is in the way.
        detail: String,
    },
    /// The intent record exists but cannot be read.
    #[error(
        "the restore record `{path}` cannot be read: {reason}\n(hint: a restore was interrupted; inspect `replaced/` beside it and the database, then remove the record by hand)"
    )]
    UnreadableIntent {
        /// The record.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

impl RestoreError {
    /// The sysexits-style exit code (documented in the README).
    pub fn exit_code(&self) -> u8 {
        match self {
            RestoreError::NoBackup { .. } | RestoreError::NotFound { .. } => 66,
            RestoreError::NotGood { .. } | RestoreError::UnreadableIntent { .. } => 65,
            RestoreError::WriterLocked { .. } => 75,
            RestoreError::TargetExists { .. }
            | RestoreError::CannotCreate { .. }
            | RestoreError::InterruptedConflict { .. } => 73,
            RestoreError::Usage { .. } => 64,
            RestoreError::Store { source: BackupError::Missing { .. } } => 66,
            RestoreError::Lock { .. }
            | RestoreError::CrossDevice { .. }
            | RestoreError::NoSpace { .. }
            | RestoreError::DiskFull { .. }
            | RestoreError::Io { .. }
            | RestoreError::Store { .. }
            | RestoreError::Audit { .. } => 74,
        }
    }
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl Fn(io::Error) -> RestoreError + 'a {
    move |source| RestoreError::Io { action, path: path.to_owned(), source }
}

fn store_err(source: BackupError) -> RestoreError {
    RestoreError::Store { source }
}

fn exists(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok()
}

fn size_of(p: &Path) -> u64 {
    std::fs::symlink_metadata(p).map(|m| m.len()).unwrap_or(0)
}

fn file_name(p: &Path) -> String {
    p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "db".into())
}

/// `<db>.warden` unless the options say otherwise.
fn state_dir_of(db: &Path, opts: &RestoreOptions) -> PathBuf {
    opts.state_dir.clone().unwrap_or_else(|| names::state_dir(db))
}

/// The intent record of `db` with the default state directory.
pub fn intent_path(db: &Path) -> PathBuf {
    names::state_dir(db).join(INTENT_FILE)
}

/// The latest drill record of `db` (`<db>.warden/drills/latest.json`).
pub fn drill_record_path(db: &Path) -> PathBuf {
    names::state_dir(db).join(DRILLS_DIR).join(DRILL_LATEST)
}

/// The latest drill record of `db`, if one was written and parses.
pub fn latest_drill(db: &Path) -> Option<DrillRecord> {
    let bytes = std::fs::read(drill_record_path(db)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The intent record of an interrupted restore of `db`, if there is one (read only; the
/// status command and sessions use it to refuse starting on a half-restored database).
///
/// # Errors
/// [`RestoreError::UnreadableIntent`] when the record exists but cannot be parsed.
pub fn pending(db: &Path) -> Result<Option<RestoreIntent>, RestoreError> {
    read_intent(&intent_path(db))
}

fn read_intent(path: &Path) -> Result<Option<RestoreIntent>, RestoreError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| RestoreError::UnreadableIntent { path: path.to_owned(), reason: e.to_string() }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(RestoreError::UnreadableIntent { path: path.to_owned(), reason: e.to_string() }),
    }
}

fn sync_dir(dir: &Path) -> Result<(), RestoreError> {
    atomic::sync_dir(dir).map_err(io_err("syncing", dir))
}

/// A temporary name beside `target` for the restored copy: `.<name>.restore.warden-tmp.<pid>.<n>`.
fn restore_temp_for(target: &Path) -> PathBuf {
    atomic::temp_path_for(&target.with_file_name(format!("{}{RESTORE_TMP}", file_name(target))))
}

fn pid_alive(pid: u32) -> bool {
    pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists()
}

/// Removes the entries of `dir` whose names start with `prefix` (temporary names, see
/// [`atomic::temp_owner`]) and whose owner process is gone, with `remove`: what a killed
/// restore or drill left. Returns what was removed.
fn remove_dead_temps(dir: &Path, prefix: &str, remove: fn(&Path) -> io::Result<()>) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else { return removed };
    for entry in rd.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with(prefix) || atomic::temp_owner(&name).is_some_and(pid_alive) {
            continue;
        }
        if remove(&entry.path()).is_ok() {
            removed.push(entry.path());
        }
    }
    removed
}

/// Removes restore copies beside `target` left by dead processes.
fn remove_stale_temps(target: &Path) -> Vec<PathBuf> {
    let prefix = format!(".{}{RESTORE_TMP}{TMP_MARK}", file_name(target));
    remove_dead_temps(atomic::parent_of(target), &prefix, |p| std::fs::remove_file(p))
}

fn space_preflight(dir: &Path, size: u64) -> Result<(), RestoreError> {
    let needed = copy::with_headroom(size);
    let available = copy::free_bytes(dir).map_err(|e| io_err("statvfs", dir)(e.into()))?;
    if available < needed {
        return Err(RestoreError::NoSpace { dir: dir.to_owned(), needed, available });
    }
    Ok(())
}

/// Copies the backup to `tmp` and re-verifies it: size, then SHA-256 of the bytes copied,
/// then the integrity and foreign key checks on the copy, then the copy is re-hashed.
/// `tmp` is left in place (fsynced) whatever the outcome; the caller removes it on failure.
fn verify_into(
    rec: &BackupRecord,
    tmp: &Path,
    budget: Option<Duration>,
) -> Result<(Verification, Duration, Duration), RestoreError> {
    let started = Instant::now();
    let m = &rec.manifest;
    let mut v = no_verification(m);
    let done = |mut v: Verification, copy: Duration, check: Duration| {
        v.duration_ms = ms(started.elapsed());
        Ok((v, copy, check))
    };
    let md = match std::fs::metadata(&rec.path) {
        Ok(md) => md,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(RestoreError::NotFound { from: m.id.clone(), dir: atomic::parent_of(&rec.path).to_owned() });
        }
        Err(e) => return Err(io_err("reading", &rec.path)(e)),
    };
    v.found_size = md.len();
    if v.found_size != m.size {
        v.failure =
            Some(format!("size mismatch: the manifest says {} bytes, the file has {} bytes", m.size, v.found_size));
        return done(v, Duration::ZERO, Duration::ZERO);
    }
    if m.sha256.len() != 64 {
        v.failure = Some("the manifest records no SHA-256, so the backup cannot be verified".into());
        return done(v, Duration::ZERO, Duration::ZERO);
    }
    let dir = atomic::parent_of(tmp).to_owned();
    let copy_started = Instant::now();
    let (sha, n) = copy::copy_hashed(&rec.path, tmp).map_err(|e| {
        if copy::io_is_full(&e) {
            RestoreError::DiskFull { dir: dir.clone() }
        } else {
            io_err("copying the backup to", tmp)(e)
        }
    })?;
    let copy_time = copy_started.elapsed();
    v.found_size = n;
    v.found_sha256 = Some(sha.clone());
    if n != m.size || sha != m.sha256 {
        v.failure = Some(format!(
            "sha256 mismatch: the manifest says {}, the file hashes to {sha}; the backup changed after it was published",
            m.sha256
        ));
        return done(v, copy_time, Duration::ZERO);
    }
    v.hash_ok = true;
    let check_started = Instant::now();
    let (report, _) = check_file(tmp, CheckMode::Full, budget, None).map_err(store_err)?;
    let check_time = check_started.elapsed();
    let ok = report.ok;
    if !ok {
        v.failure = Some(format!("the restored copy fails its check: {}", report.summary()));
    }
    v.integrity = Some(report);
    if ok {
        // The check opened the copy read-write; prove the bytes installed are still the
        // manifest's.
        let (again, _) = copy::sha256_file(tmp, None).map_err(io_err("re-hashing", tmp))?;
        if again != m.sha256 {
            v.failure = Some(format!("the copy changed while it was checked (sha256 now {again})"));
            return done(v, copy_time, check_time);
        }
        v.ok = true;
    }
    done(v, copy_time, check_time)
}

/// A verification that has not got anywhere yet.
fn no_verification(m: &Manifest) -> Verification {
    Verification {
        ok: false,
        expected_size: m.size,
        found_size: 0,
        expected_sha256: m.sha256.clone(),
        found_sha256: None,
        hash_ok: false,
        integrity: None,
        failure: None,
        duration_ms: 0,
    }
}

/// Finds the backup `from` names: an id, a data file name in the store, or a path to a
/// data file whose manifest is beside it.
fn find_backup(store: &BackupStore, from: &str) -> Result<BackupRecord, RestoreError> {
    let not_found = || RestoreError::NotFound { from: from.to_owned(), dir: store.dir().to_owned() };
    let all = store.list().map_err(store_err)?;
    let name = from.rsplit('/').next().unwrap_or(from);
    if let Some(r) = all.iter().find(|r| r.manifest.id == from || (!from.contains('/') && r.manifest.file == from)) {
        return Ok(r.clone());
    }
    let path = Path::new(from);
    if !from.contains('/') && !path.exists() {
        return Err(not_found());
    }
    // A path: in the store, or a data file with its manifest beside it elsewhere.
    let canon = std::fs::canonicalize(path).map_err(|_| not_found())?;
    if let Some(r) = all.iter().find(|r| std::fs::canonicalize(&r.path).is_ok_and(|p| p == canon)) {
        return Ok(r.clone());
    }
    let stem = name.strip_suffix(&format!(".{}", backup::DATA_EXT)).ok_or_else(not_found)?;
    let manifest_path = canon.with_file_name(format!("{stem}.{}", backup::MANIFEST_EXT));
    let bytes = std::fs::read(&manifest_path).map_err(|_| not_found())?;
    let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|_| not_found())?;
    if manifest.file != name {
        return Err(not_found());
    }
    Ok(BackupRecord { manifest, path: canon, manifest_path })
}

/// The backup to restore, and whether it may be restored.
fn choose(
    db: &Path,
    store: &BackupStore,
    opts: &RestoreOptions,
) -> Result<(BackupRecord, Option<String>), RestoreError> {
    let rec = match &opts.from {
        Some(from) => find_backup(store, from)?,
        None => store
            .newest_good()
            .map_err(store_err)?
            .ok_or_else(|| RestoreError::NoBackup { db: db.to_owned(), dir: store.dir().to_owned() })?,
    };
    if !rec.manifest.is_good() && !opts.allow_crash_copy {
        let what = if rec.manifest.kind == BackupKind::PostCrash { "a post-crash copy" } else { "unverified" };
        return Err(RestoreError::NotGood { id: rec.manifest.id.clone(), what });
    }
    let next = store.list().ok().and_then(|all| {
        all.into_iter()
            .filter(|r| r.manifest.is_good() && r.manifest.id != rec.manifest.id)
            .find(|r| r.manifest.created <= rec.manifest.created)
            .map(|r| r.manifest.id)
    });
    Ok((rec, next))
}

fn audit(guard: Option<&Guard>, rec: &mut AuditRecord) -> Result<(), AuditError> {
    match guard {
        Some(g) => g.audit(rec),
        None => AuditLog::in_dir(AuditLog::default_dir()).append(rec),
    }
}

fn audit_record(event: AuditEvent, target: &Path, decision: &str, reason: String) -> AuditRecord {
    let mut r = AuditRecord::new(event);
    r.db = Some(target.to_owned());
    r.decision = Some(decision.to_owned());
    r.reason = Some(reason);
    r
}

fn describe_moves(moves: &[MovedFile]) -> String {
    if moves.is_empty() {
        return "nothing (there was no database)".into();
    }
    let names: Vec<String> = moves.iter().map(|m| file_name(&m.from)).collect();
    format!("{} -> `{}`", names.join(", "), atomic::parent_of(&moves[0].to).display())
}

fn octal(mode: u32) -> String {
    format!("{mode:04o}")
}

fn new_replaced_dir(state: &Path) -> PathBuf {
    let ts = copy::stamp();
    let base = state.join(REPLACED_DIR).join(&ts);
    let mut dir = base.clone();
    let mut n = 1;
    while exists(&dir) {
        n += 1;
        dir = base.with_file_name(format!("{ts}.{n}"));
    }
    dir
}

/// The files of the set at `db` that exist, database first, as moves into `dir`.
fn plan_moves(db: &Path, dir: &Path) -> Vec<MovedFile> {
    std::iter::once("")
        .chain(SIDECARS)
        .map(|suffix| sidecar(db, suffix))
        .filter(|p| exists(p))
        .map(|from| {
            let to = dir.join(file_name(&from));
            let size = size_of(&from);
            MovedFile { from, to, size }
        })
        .collect()
}

fn same_device(a: &Path, b: &Path) -> bool {
    // The nearest existing ancestors: the state directory may not exist yet.
    let dev = |p: &Path| p.ancestors().find_map(|a| std::fs::metadata(a).ok()).map(|m| m.dev());
    match (dev(a), dev(b)) {
        (Some(x), Some(y)) => x == y,
        _ => true,
    }
}

/// Restores a backup over `db` (or to [`RestoreOptions::to`]); see the module docs for
/// every step.
///
/// # Errors
/// [`RestoreError`] when the restore could not be attempted or carried out: no backup, the
/// writer lock held (nothing changed), target exists, I/O. A backup that fails
/// re-verification is reported as [`RestoreOutcome::VerificationFailed`] instead, with
/// nothing changed.
pub fn restore(db: &Path, store: &BackupStore, opts: &RestoreOptions) -> Result<RestoreReport, RestoreError> {
    let db = std::path::absolute(db).map_err(io_err("resolving", db))?;
    match &opts.to {
        Some(to) => restore_elsewhere(&db, to, store, opts),
        None => restore_in_place(&db, store, opts),
    }
}

struct Started {
    at: String,
    clock: Instant,
}

impl Started {
    fn now() -> Self {
        Started { at: now_rfc3339(), clock: Instant::now() }
    }
}

fn base_report(
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

fn refused_record(rec: &BackupRecord, target: &Path, v: &Verification) -> AuditRecord {
    audit_record(
        AuditEvent::RestoreRefused,
        target,
        "refuse",
        format!(
            "backup {} (sha256 {}) failed re-verification: {}; nothing was changed; by {}",
            rec.manifest.id,
            rec.manifest.sha256,
            v.failure.as_deref().unwrap_or("?"),
            crate::util::identity::who()
        ),
    )
}

/// Step 4 of both kinds of restore: under the store's lock, copies the backup beside
/// `target` and re-verifies the copy ([`verify_into`]). Returns the report so far with the
/// copy and the guard that removes it unless disarmed; or, when the backup failed
/// re-verification, the finished report and no copy (the copy is removed and, outside a dry
/// run, the refusal audited).
fn verify_beside(
    started: &Started,
    db: &Path,
    target: &Path,
    rec: &BackupRecord,
    store: &BackupStore,
    opts: &RestoreOptions,
) -> Result<(RestoreReport, Option<(PathBuf, TempGuard)>), RestoreError> {
    let store_lock = store.lock().map_err(store_err)?;
    let tmp = restore_temp_for(target);
    let tmp_guard = TempGuard::with_sidecars(&tmp);
    let (verification, _, _) = verify_into(rec, &tmp, opts.check_budget)?;
    drop(store_lock);
    let mut report = base_report(started, db, target, rec, verification, opts.dry_run);
    if report.verification.ok {
        return Ok((report, Some((tmp, tmp_guard))));
    }
    drop(tmp_guard);
    report.outcome = RestoreOutcome::VerificationFailed;
    if !opts.dry_run {
        let _ = audit(opts.guard.as_ref(), &mut refused_record(rec, target, &report.verification));
    }
    report.duration_ms = ms(started.clock.elapsed());
    Ok((report, None))
}

/// Audits `restored` with `reason`; a lost record is noted in the report (the restore is
/// done either way).
fn audit_restored(guard: Option<&Guard>, target: &Path, reason: String, report: &mut RestoreReport) {
    let mut done = audit_record(AuditEvent::Restored, target, "allow", reason);
    if let Err(e) = audit(guard, &mut done) {
        report.messages.push(format!("the restore is complete but its audit record was lost: {e}"));
    }
}

fn restore_in_place(db: &Path, store: &BackupStore, opts: &RestoreOptions) -> Result<RestoreReport, RestoreError> {
    let started = Started::now();
    let state = state_dir_of(db, opts);
    if std::fs::symlink_metadata(db).is_ok_and(|m| !m.file_type().is_file()) {
        return Err(RestoreError::Usage {
            message: format!(
                "`{}` is not a regular file (a symbolic link or a directory); refusing to replace it\n(hint: pass the real path of the database with --db)",
                db.display()
            ),
        });
    }
    let parent = atomic::parent_of(db).to_owned();
    if !parent.is_dir() {
        return Err(RestoreError::CannotCreate {
            path: db.to_owned(),
            why: format!("`{}` is not a directory\n(hint: create it first, or check --db)", parent.display()),
        });
    }
    if !same_device(&parent, &state) {
        return Err(RestoreError::CrossDevice { db: db.to_owned(), state_dir: state });
    }

    // 1. The writer lock (a dry run only looks).
    let lock = if opts.dry_run {
        let st = lock::inspect(db).map_err(|source| RestoreError::Lock { source })?;
        if st.state == LockState::Held {
            return Err(held_error(db, st.lock_path, st.record.as_ref().map(|r| r.holder.describe()), st.record));
        }
        None
    } else {
        Some(take_lock(db)?)
    };

    // 2. An interrupted restore.
    let intent_path = state.join(INTENT_FILE);
    let mut recovery = None;
    if let Some(intent) = read_intent(&intent_path)? {
        let r = if opts.dry_run {
            let action = decide(&intent, &observe(&intent)).map_err(|detail| conflict(db, &intent_path, detail))?;
            let details = vec![format!(
                "an interrupted restore of {} (started {}) would be {} first; the plan below assumes the current files",
                intent.backup.id,
                intent.started,
                match action {
                    RecoveryAction::Completed => "marked complete",
                    RecoveryAction::RolledForward => "rolled forward",
                    RecoveryAction::RolledBack => "rolled back",
                }
            )];
            RecoveryReport { action, performed: false, intent, details }
        } else {
            recover_locked(db, &intent_path, intent, opts.guard.as_ref(), None)?
        };
        recovery = Some(r);
    }
    if !opts.dry_run {
        for p in remove_stale_temps(db) {
            tracing::warn!(temp = %p.display(), "removed the copy left by a restore killed before it moved anything");
        }
    }

    // 3. The backup.
    let (rec, next) = choose(db, store, opts)?;
    if let Some(r) = recovery.as_ref().filter(|r| r.performed && r.action != RecoveryAction::RolledBack)
        && r.intent.backup.id == rec.manifest.id
    {
        // The interrupted restore was of this very backup and is now complete.
        return Ok(finish_recovered(&started, db, &rec, r.clone(), lock));
    }

    // 4. Re-verify on the copy that will be installed.
    space_preflight(&parent, rec.manifest.size)?;
    let (mut report, verified) = verify_beside(&started, db, db, &rec, store, opts)?;
    report.recovery = recovery;
    report.next_candidate = next;
    let old_mode = std::fs::metadata(db).ok().map(|m| (m.permissions().mode() & 0o7777, m.uid(), m.gid()));
    let mode = old_mode.map_or(0o600, |(m, _, _)| m);
    report.mode = octal(mode);
    let Some((tmp, mut tmp_guard)) = verified else { return Ok(report) };
    let replaced_dir = new_replaced_dir(&state);
    if opts.dry_run {
        drop(tmp_guard);
        report.moved_aside = plan_moves(db, &replaced_dir);
        report.replaced_dir = Some(replaced_dir);
        report.messages.push("dry run: nothing was changed".into());
        report.duration_ms = ms(started.clock.elapsed());
        return Ok(report);
    }
    pause_point("restore-verified");

    // 5. The restored file's mode and owner, then the intent record, then the audit.
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).map_err(io_err("chmod", &tmp))?;
    if let Some((_, uid, gid)) = old_mode
        && nix::unistd::geteuid().is_root()
        && let Err(e) = std::os::unix::fs::chown(&tmp, Some(uid), Some(gid))
    {
        report.messages.push(format!("could not give the restored file its owner {uid}:{gid}: {e}"));
    }
    std::fs::DirBuilder::new().recursive(true).mode(0o750).create(&state).map_err(io_err("creating", &state))?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&replaced_dir)
        .map_err(io_err("creating", &replaced_dir))?;
    sync_dir(atomic::parent_of(&replaced_dir))?;
    let moves = plan_moves(db, &replaced_dir);
    let intent = RestoreIntent {
        schema: 1,
        started: started.at.clone(),
        db: db.to_owned(),
        backup: BackupRef::from(&rec),
        temp: tmp.clone(),
        replaced_dir: replaced_dir.clone(),
        moves: moves.clone(),
        mode,
        process: ProcessIdentity::current(),
    };
    let written = serde_json::to_vec_pretty(&intent)
        .map_err(io::Error::other)
        .and_then(|bytes| atomic::write_atomic(&intent_path, &bytes, 0o600));
    if let Err(e) = written {
        let _ = std::fs::remove_dir(&replaced_dir);
        return Err(io_err("writing", &intent_path)(e));
    }
    let mut started_rec = audit_record(
        AuditEvent::RestoreStarted,
        db,
        "allow",
        format!(
            "restoring backup {} ({}, created {}, sha256 {}, {} bytes); moving aside {}; by {}",
            rec.manifest.id,
            rec.manifest.kind,
            rec.manifest.created,
            rec.manifest.sha256,
            rec.manifest.size,
            describe_moves(&moves),
            crate::util::identity::who()
        ),
    );
    if let Err(source) = audit(opts.guard.as_ref(), &mut started_rec) {
        let _ = std::fs::remove_file(&intent_path);
        let _ = std::fs::remove_dir(&replaced_dir);
        return Err(RestoreError::Audit { source });
    }
    tmp_guard.disarm();
    pause_point("restore-intent-written");

    // 6 + 7. Move aside, install. A failure here (not a crash) is undone at once.
    let swept = match move_aside_and_install(db, &intent) {
        Ok(swept) => swept,
        Err(e) => {
            let undo = recover_locked(db, &intent_path, intent, opts.guard.as_ref(), Some(RecoveryAction::RolledBack));
            return Err(match undo {
                Ok(_) => e,
                Err(u) => RestoreError::InterruptedConflict {
                    db: db.to_owned(),
                    intent: intent_path,
                    detail: format!("{e}; undoing it failed too: {u}"),
                },
            });
        }
    };

    // 8. Done: the record goes, the audit says so, the lock records the new file.
    std::fs::remove_file(&intent_path).map_err(io_err("removing", &intent_path))?;
    sync_dir(&state)?;
    pause_point("restore-finished");
    report.outcome = RestoreOutcome::Restored;
    report.moved_aside = moves;
    report.moved_aside.extend(swept);
    if report.moved_aside.is_empty() {
        // There was no database: nothing was replaced.
        let _ = std::fs::remove_dir(&replaced_dir);
    } else {
        report.replaced_dir = Some(replaced_dir);
    }
    for suffix in SIDECARS {
        let p = sidecar(db, suffix);
        if exists(&p) {
            report.messages.push(format!("`{}` appeared beside the restored file: something opened it", p.display()));
        }
    }
    let reason = format!(
        "restored backup {} (sha256 {}) to `{}`; moved aside {}; by {}",
        rec.manifest.id,
        rec.manifest.sha256,
        db.display(),
        describe_moves(&report.moved_aside),
        crate::util::identity::who()
    );
    audit_restored(opts.guard.as_ref(), db, reason, &mut report);
    release(lock, db);
    report.duration_ms = ms(started.clock.elapsed());
    Ok(report)
}

fn release(lock: Option<WriterLock>, db: &Path) {
    if let Some(l) = lock {
        l.release(CloseState::observe(db, read_change_counter(db)));
    }
}

fn held_error(
    db: &Path,
    lock_path: PathBuf,
    holder: Option<String>,
    record: Option<crate::guard::lock::LockRecord>,
) -> RestoreError {
    let mut holder = holder.unwrap_or_else(|| "holder details unavailable".into());
    if let Some(s) = record.and_then(|r| r.session) {
        holder.push_str(&format!(", session {s}"));
    }
    RestoreError::WriterLocked { db: db.to_owned(), lock_path, holder }
}

fn take_lock(db: &Path) -> Result<WriterLock, RestoreError> {
    match WriterLock::acquire(db, WriterScope::Connection) {
        Ok(a) if a.inherited => {
            // Handed over by a `warden run` session: that session is the writer.
            let lock_path = a.lock.lock_path().to_owned();
            let holder = Some(a.holder.describe());
            drop(a.lock);
            Err(held_error(db, lock_path, holder, lock::inspect(db).ok().and_then(|s| s.record)))
        }
        Ok(a) => Ok(a.lock),
        Err(LockError::Held { lock_path, holder, .. }) => {
            let record = lock::inspect(db).ok().and_then(|s| s.record);
            Err(held_error(db, lock_path, holder.map(|h| h.describe()), record))
        }
        Err(source) => Err(RestoreError::Lock { source }),
    }
}

fn move_aside_and_install(db: &Path, intent: &RestoreIntent) -> Result<Vec<MovedFile>, RestoreError> {
    for suffix in std::iter::once("").chain(SIDECARS) {
        let from = sidecar(db, suffix);
        if let Some(m) = intent.moves.iter().find(|m| m.from == from) {
            match atomic::rename_noreplace(&m.from, &m.to) {
                Ok(()) => {}
                // A -shm can vanish by itself; the set is still moved as a whole.
                Err(e) if e.kind() == io::ErrorKind::NotFound && !suffix.is_empty() => {}
                Err(e) => return Err(io_err("moving aside", &m.from)(e)),
            }
        }
        pause_point(&format!("restore-moved-{}", if suffix.is_empty() { "db" } else { &suffix[1..] }));
    }
    let swept = sweep_sidecars(db, &intent.replaced_dir)?;
    sync_dir(&intent.replaced_dir)?;
    sync_dir(atomic::parent_of(db))?;
    atomic::rename_noreplace(&intent.temp, db).map_err(io_err("installing the restored copy as", db))?;
    pause_point("restore-installed");
    sync_dir(atomic::parent_of(db))?;
    Ok(swept)
}

/// Moves any `-wal`, `-journal` or `-shm` still beside `db` into `dir` (under a fresh name
/// if taken): a sidecar left beside the restored file would be replayed into it. Under the
/// writer lock none can appear, but a restore killed before moving the database frees the
/// lock, and an opener may have created one since.
fn sweep_sidecars(db: &Path, dir: &Path) -> Result<Vec<MovedFile>, RestoreError> {
    let mut out = Vec::new();
    for suffix in SIDECARS {
        let from = sidecar(db, suffix);
        if !exists(&from) {
            continue;
        }
        let base = dir.join(file_name(&from));
        let mut to = base.clone();
        let mut n = 1;
        while exists(&to) {
            n += 1;
            to = sidecar(&base, &format!(".{n}"));
        }
        let size = size_of(&from);
        atomic::rename_noreplace(&from, &to).map_err(io_err("moving aside", &from))?;
        out.push(MovedFile { from, to, size });
    }
    Ok(out)
}

fn finish_recovered(
    started: &Started,
    db: &Path,
    rec: &BackupRecord,
    r: RecoveryReport,
    lock: Option<WriterLock>,
) -> RestoreReport {
    let mut v = no_verification(&rec.manifest);
    v.ok = true;
    v.hash_ok = true;
    v.found_size = rec.manifest.size;
    v.found_sha256 = Some(rec.manifest.sha256.clone());
    let mut report = base_report(started, db, db, rec, v, false);
    report.outcome = RestoreOutcome::Restored;
    report.replaced_dir = Some(r.intent.replaced_dir.clone());
    report.moved_aside = r.intent.moves.clone();
    report.mode = octal(r.intent.mode);
    report.messages.push(format!(
        "finished the interrupted restore of {} started {} (its copy had passed the integrity check and still matches the manifest's SHA-256)",
        r.intent.backup.id, r.intent.started
    ));
    report.recovery = Some(r);
    release(lock, db);
    report.duration_ms = ms(started.clock.elapsed());
    report
}

/// What recovery sees on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Observed {
    temp_exists: bool,
    temp_intact: bool,
    db_exists: bool,
    /// Per move: (something at `from`, something at `to`).
    moves: Vec<(bool, bool)>,
}

fn observe(intent: &RestoreIntent) -> Observed {
    let temp_exists = exists(&intent.temp);
    let temp_intact = temp_exists
        && copy::sha256_file(&intent.temp, None)
            .is_ok_and(|(h, n)| h == intent.backup.sha256 && n == intent.backup.size);
    Observed {
        temp_exists,
        temp_intact,
        db_exists: exists(&intent.db),
        moves: intent.moves.iter().map(|m| (exists(&m.from), exists(&m.to))).collect(),
    }
}

/// The deterministic decision on an interrupted restore (see the module docs); `Err` names
/// the file that is in the way.
fn decide(intent: &RestoreIntent, o: &Observed) -> Result<RecoveryAction, String> {
    let action = if o.temp_exists {
        if o.temp_intact { RecoveryAction::RolledForward } else { RecoveryAction::RolledBack }
    } else if o.db_exists && o.moves.iter().all(|&(_, to)| to) {
        RecoveryAction::Completed
    } else {
        RecoveryAction::RolledBack
    };
    for (m, &(at_from, at_to)) in intent.moves.iter().zip(&o.moves) {
        if action != RecoveryAction::Completed && at_from && at_to {
            return Err(format!("both `{}` and `{}` exist", m.from.display(), m.to.display()));
        }
    }
    if action == RecoveryAction::RolledForward && o.db_exists && !intent.moves.iter().any(|m| m.from == intent.db) {
        return Err(format!("`{}` exists, but there was no database when the restore started", intent.db.display()));
    }
    Ok(action)
}

fn conflict(db: &Path, intent: &Path, detail: String) -> RestoreError {
    RestoreError::InterruptedConflict { db: db.to_owned(), intent: intent.to_owned(), detail }
}

/// Finishes or undoes the interrupted restore recorded at `intent_path`. The caller holds
/// the writer lock. `force` overrides the decision (an in-process failure rolls back).
fn recover_locked(
    db: &Path,
    intent_path: &Path,
    intent: RestoreIntent,
    guard: Option<&Guard>,
    force: Option<RecoveryAction>,
) -> Result<RecoveryReport, RestoreError> {
    let seen = observe(&intent);
    let action = match force {
        Some(a) => a,
        None => decide(&intent, &seen).map_err(|d| conflict(db, intent_path, d))?,
    };
    let mut details = Vec::new();
    let fail = |e: io::Error, what: &str, p: &Path| conflict(db, intent_path, format!("{what} `{}`: {e}", p.display()));
    match action {
        RecoveryAction::Completed => {
            let matches = copy::sha256_file(db, None).is_ok_and(|(h, _)| h == intent.backup.sha256);
            details.push(format!(
                "the restored copy of {} was already in place{}",
                intent.backup.id,
                if matches { "" } else { " (it has changed since: an engine has used it)" }
            ));
        }
        RecoveryAction::RolledForward => {
            for (m, &(at_from, at_to)) in intent.moves.iter().zip(&seen.moves) {
                if at_from && !at_to {
                    atomic::rename_noreplace(&m.from, &m.to).map_err(|e| fail(e, "moving aside", &m.from))?;
                    details.push(format!("moved `{}` aside", m.from.display()));
                } else if !at_from && !at_to {
                    details.push(format!("`{}` had vanished before it could be moved aside", m.from.display()));
                }
            }
            for m in sweep_sidecars(db, &intent.replaced_dir)? {
                details.push(format!("moved `{}` aside (it appeared after the interruption)", m.from.display()));
            }
            sync_dir(&intent.replaced_dir)?;
            atomic::rename_noreplace(&intent.temp, db).map_err(|e| fail(e, "installing the verified copy as", db))?;
            sync_dir(atomic::parent_of(db))?;
            details.push(format!("installed the verified copy of {} (sha256 matches)", intent.backup.id));
        }
        RecoveryAction::RolledBack => {
            for m in intent.moves.iter().rev() {
                if exists(&m.to) && !exists(&m.from) {
                    atomic::rename_noreplace(&m.to, &m.from).map_err(|e| fail(e, "moving back", &m.to))?;
                    details.push(format!("moved `{}` back", m.from.display()));
                } else if exists(&m.to) {
                    return Err(conflict(
                        db,
                        intent_path,
                        format!("both `{}` and `{}` exist", m.from.display(), m.to.display()),
                    ));
                }
            }
            sync_dir(atomic::parent_of(db))?;
            if exists(&intent.temp) {
                let _ = std::fs::remove_file(&intent.temp);
                details.push(if seen.temp_exists && !seen.temp_intact {
                    "removed the copy, which no longer matched the manifest".into()
                } else {
                    "removed the unused copy".into()
                });
            }
            let _ = std::fs::remove_dir(&intent.replaced_dir);
        }
    }
    std::fs::remove_file(intent_path).map_err(io_err("removing", intent_path))?;
    sync_dir(atomic::parent_of(intent_path))?;
    let verb = match action {
        RecoveryAction::Completed => "completed",
        RecoveryAction::RolledForward => "rolled forward",
        RecoveryAction::RolledBack => "rolled back",
    };
    let mut rec = audit_record(
        AuditEvent::RestoreRecovered,
        db,
        "info",
        format!(
            "interrupted restore of backup {} (sha256 {}, started {} by pid {}) {verb}: {}; by {}",
            intent.backup.id,
            intent.backup.sha256,
            intent.started,
            intent.process.pid,
            details.join("; "),
            crate::util::identity::who()
        ),
    );
    let _ = audit(guard, &mut rec);
    tracing::warn!(db = %db.display(), action = verb, "an interrupted restore was found and {verb}");
    Ok(RecoveryReport { action, performed: true, intent, details })
}

/// Finishes or undoes an interrupted restore of `db`, if one is recorded, taking the writer
/// lock for it. `Ok(None)` when there was nothing to do.
///
/// # Errors
/// [`RestoreError::WriterLocked`] when a writer holds the database,
/// [`RestoreError::InterruptedConflict`] when a file is in the way, I/O errors.
pub fn recover_interrupted(db: &Path, opts: &RestoreOptions) -> Result<Option<RecoveryReport>, RestoreError> {
    let db = std::path::absolute(db).map_err(io_err("resolving", db))?;
    let intent_path = state_dir_of(&db, opts).join(INTENT_FILE);
    if read_intent(&intent_path)?.is_none() {
        return Ok(None);
    }
    let lock = take_lock(&db)?;
    // Re-read under the lock: another process may have finished it meanwhile.
    let Some(intent) = read_intent(&intent_path)? else { return Ok(None) };
    let r = recover_locked(&db, &intent_path, intent, opts.guard.as_ref(), None)?;
    release(Some(lock), &db);
    Ok(Some(r))
}

fn restore_elsewhere(
    db: &Path,
    to: &Path,
    store: &BackupStore,
    opts: &RestoreOptions,
) -> Result<RestoreReport, RestoreError> {
    let started = Started::now();
    let to = std::path::absolute(to).map_err(io_err("resolving", to))?;
    let target = if to.is_dir() { to.join(file_name(db)) } else { to };
    if target == db {
        return Err(RestoreError::Usage {
            message: format!(
                "--to names the database itself (`{}`)\n(hint: leave out --to to restore in place: the current database is moved aside under the writer lock)",
                db.display()
            ),
        });
    }
    for suffix in std::iter::once("").chain(SIDECARS) {
        let p = sidecar(&target, suffix);
        if exists(&p) {
            return Err(RestoreError::TargetExists { path: p });
        }
    }
    let parent = atomic::parent_of(&target).to_owned();
    if !parent.is_dir() {
        return Err(RestoreError::CannotCreate {
            path: target,
            why: format!("`{}` is not a directory\n(hint: create it first)", parent.display()),
        });
    }
    let (rec, next) = choose(db, store, opts)?;
    space_preflight(&parent, rec.manifest.size)?;
    if !opts.dry_run {
        remove_stale_temps(&target);
    }
    let (mut report, verified) = verify_beside(&started, db, &target, &rec, store, opts)?;
    report.next_candidate = next;
    let Some((tmp, tmp_guard)) = verified else { return Ok(report) };
    if opts.dry_run {
        drop(tmp_guard);
        report.messages.push("dry run: nothing was changed".into());
        report.duration_ms = ms(started.clock.elapsed());
        return Ok(report);
    }
    match atomic::rename_noreplace(&tmp, &target) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Err(RestoreError::TargetExists { path: target }),
        Err(e) => return Err(io_err("installing the restored copy as", &target)(e)),
    }
    drop(tmp_guard);
    pause_point("restore-to-installed");
    sync_dir(&parent)?;
    report.outcome = RestoreOutcome::Restored;
    let reason = format!(
        "restored backup {} (sha256 {}) of `{}` to the new file `{}` (the database was not touched); by {}",
        rec.manifest.id,
        rec.manifest.sha256,
        db.display(),
        target.display(),
        crate::util::identity::who()
    );
    audit_restored(opts.guard.as_ref(), &target, reason, &mut report);
    report.duration_ms = ms(started.clock.elapsed());
    Ok(report)
}

// -------------------------------------------------------------------------------------------
// Drills
// -------------------------------------------------------------------------------------------

/// How to run a drill.
#[derive(Debug, Clone, Default)]
pub struct DrillOptions {
    /// Where the scratch directory is made (a fresh subdirectory, always removed); default:
    /// the backup directory's parent.
    pub scratch: Option<PathBuf>,
    /// Where the record goes; default `<db>.warden/drills/latest.json`.
    pub record_path: Option<PathBuf>,
    /// Time budget of the integrity check (exceeding it fails the drill); `None`: no limit.
    pub check_budget: Option<Duration>,
    /// The guard whose audit log records the drill; `None`: the default audit directory.
    pub guard: Option<Guard>,
}

/// How a drill ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DrillOutcome {
    /// The newest good backup restored and passed every check (exit code 0).
    Ok,
    /// It did not (exit code 65).
    Failed,
    /// There is no good backup (exit code 66).
    NoBackup,
}

/// A drill's record, written to `<db>.warden/drills/latest.json`. Schema 1; see the module
/// docs for the field contract.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DrillRecord {
    /// Record format version.
    pub schema: u32,
    /// How it ended.
    pub outcome: DrillOutcome,
    /// True only for [`DrillOutcome::Ok`].
    pub ok: bool,
    /// When it started (RFC 3339 UTC).
    pub started_at: String,
    /// When it ended (RFC 3339 UTC).
    pub finished_at: String,
    /// The database whose backups were drilled.
    pub db: PathBuf,
    /// The backup restored.
    pub backup: Option<BackupRef>,
    /// Seconds between the backup's creation and the drill.
    pub backup_age_s: Option<u64>,
    /// Size and SHA-256 matched the manifest (`None` when not reached).
    pub hash_ok: Option<bool>,
    /// The check of the restored copy (`None` when not reached).
    pub integrity: Option<IntegrityReport>,
    /// Findings, one line each.
    pub messages: Vec<String>,
    /// Bytes restored.
    pub bytes: u64,
    /// Wall time of the drill.
    pub duration_ms: u64,
    /// Copy and hash.
    pub copy_ms: u64,
    /// Integrity and foreign key checks.
    pub check_ms: u64,
    /// Bytes restored per second of the whole drill, in MB (10^6 bytes).
    pub mb_per_s: f64,
    /// The scratch directory used (removed again).
    pub scratch: Option<PathBuf>,
    /// Host that ran it.
    pub host: String,
    /// warden that ran it.
    pub warden_version: String,
    /// SQLite that checked it.
    pub sqlite_version: String,
}

/// What [`drill`] returns: the record and where it was written.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DrillReport {
    /// The record.
    #[serde(flatten)]
    pub record: DrillRecord,
    /// Where the record was written (`None` when it could not be; see `record_error`).
    pub record_path: Option<PathBuf>,
    /// Why the record could not be written.
    pub record_error: Option<String>,
}

/// Removes drill scratch directories left by dead processes.
fn remove_stale_scratch(parent: &Path) {
    remove_dead_temps(parent, &format!("{DRILL_PREFIX}{TMP_MARK}"), |p| std::fs::remove_dir_all(p));
}

/// Restores the newest good backup of `db` into a scratch directory, checks it (size and
/// SHA-256 against the manifest, `integrity_check`, `foreign_key_check`), removes the
/// scratch directory and writes the drill record. Never opens the live database and never
/// takes its writer lock. A failed drill (or no backup) is a report, not an error.
///
/// # Errors
/// [`RestoreError`] when the drill could not be run at all (the scratch directory cannot
/// be made, no space, the store cannot be read).
pub fn drill(db: &Path, store: &BackupStore, opts: &DrillOptions) -> Result<DrillReport, RestoreError> {
    let db = std::path::absolute(db).map_err(io_err("resolving", db))?;
    let started = Started::now();
    let mut record = DrillRecord {
        schema: 1,
        outcome: DrillOutcome::Failed,
        ok: false,
        started_at: started.at.clone(),
        finished_at: String::new(),
        db: db.clone(),
        backup: None,
        backup_age_s: None,
        hash_ok: None,
        integrity: None,
        messages: Vec::new(),
        bytes: 0,
        duration_ms: 0,
        copy_ms: 0,
        check_ms: 0,
        mb_per_s: 0.0,
        scratch: None,
        host: ProcessIdentity::current().host,
        warden_version: env!("CARGO_PKG_VERSION").to_owned(),
        sqlite_version: rusqlite::version().to_owned(),
    };
    match store.newest_good().map_err(store_err)? {
        None => {
            record.outcome = DrillOutcome::NoBackup;
            record.messages.push(format!("no verified backup in `{}`", store.dir().display()));
        }
        Some(rec) => {
            record.backup = Some(BackupRef::from(&rec));
            record.backup_age_s = rec
                .manifest
                .created_at()
                .map(|c| u64::try_from(jiff::Timestamp::now().duration_since(c).as_secs()).unwrap_or(0));
            let parent = opts.scratch.clone().unwrap_or_else(|| atomic::parent_of(store.dir()).to_owned());
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&parent)
                .map_err(io_err("creating", &parent))?;
            remove_stale_scratch(&parent);
            space_preflight(&parent, rec.manifest.size)?;
            let scratch = atomic::temp_path_for(&parent.join(DRILL_PREFIX));
            std::fs::DirBuilder::new().mode(0o700).create(&scratch).map_err(io_err("creating", &scratch))?;
            let _cleanup = TempGuard::new(vec![scratch.clone()]);
            record.scratch = Some(scratch.clone());
            let copy = scratch.join(file_name(&rec.path));
            let store_lock = store.lock().map_err(store_err)?;
            let (v, copy_time, check_time) = verify_into(&rec, &copy, opts.check_budget)?;
            drop(store_lock);
            record.bytes = v.found_size;
            record.copy_ms = ms(copy_time);
            record.check_ms = ms(check_time);
            record.hash_ok = Some(v.hash_ok);
            record.integrity = v.integrity;
            record.ok = v.ok;
            record.outcome = if v.ok { DrillOutcome::Ok } else { DrillOutcome::Failed };
            if let Some(f) = v.failure {
                record.messages.push(format!("backup {}: {f}", rec.manifest.id));
            }
        }
    }
    record.finished_at = now_rfc3339();
    record.duration_ms = ms(started.clock.elapsed());
    let secs = started.clock.elapsed().as_secs_f64();
    if secs > 0.0 {
        record.mb_per_s = ((record.bytes as f64 / 1e6 / secs) * 100.0).round() / 100.0;
    }
    let path = opts.record_path.clone().unwrap_or_else(|| drill_record_path(&db));
    let written = (|| {
        std::fs::DirBuilder::new().recursive(true).mode(0o750).create(atomic::parent_of(&path))?;
        let bytes = serde_json::to_vec_pretty(&record).map_err(io::Error::other)?;
        atomic::write_atomic(&path, &bytes, 0o640)
    })();
    let mut rec = audit_record(
        AuditEvent::RestoreDrill,
        &db,
        if record.ok { "allow" } else { "refuse" },
        format!(
            "restore drill {}: backup {} {}; by {}",
            serde_json::to_value(record.outcome).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default(),
            record.backup.as_ref().map_or("-", |b| b.id.as_str()),
            record.messages.first().map_or("passed every check", String::as_str),
            crate::util::identity::who()
        ),
    );
    let _ = audit(opts.guard.as_ref(), &mut rec);
    Ok(match written {
        Ok(()) => DrillReport { record, record_path: Some(path), record_error: None },
        Err(e) => DrillReport {
            record,
            record_path: None,
            record_error: Some(format!("cannot write the drill record `{}`: {e}", path.display())),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intent(moves: usize) -> RestoreIntent {
        let m = |i: usize| MovedFile {
            from: PathBuf::from(format!("/d/e.db{}", ["", "-wal", "-shm"][i])),
            to: PathBuf::from(format!("/d/e.db.warden/replaced/x/e.db{}", ["", "-wal", "-shm"][i])),
            size: 1,
        };
        RestoreIntent {
            schema: 1,
            started: "t".into(),
            db: "/d/e.db".into(),
            backup: BackupRef {
                id: "b".into(),
                path: "/b".into(),
                kind: BackupKind::Pre,
                created: "t".into(),
                sha256: "00".into(),
                size: 1,
                verified: true,
            },
            temp: "/d/.e.db.restore.warden-tmp.1.0".into(),
            replaced_dir: "/d/e.db.warden/replaced/x".into(),
            moves: (0..moves).map(m).collect(),
            mode: 0o600,
            process: ProcessIdentity::current(),
        }
    }

    fn seen(temp: (bool, bool), db: bool, moves: &[(bool, bool)]) -> Observed {
        Observed { temp_exists: temp.0, temp_intact: temp.1, db_exists: db, moves: moves.to_vec() }
    }

    #[test]
    fn recovery_decisions_cover_every_crash_point() {
        use RecoveryAction::*;
        let i = intent(3);
        // Killed after the intent, before any move: the copy is intact, roll forward.
        assert_eq!(decide(&i, &seen((true, true), true, &[(true, false); 3])), Ok(RolledForward));
        // After the database moved, before the sidecars.
        assert_eq!(
            decide(&i, &seen((true, true), false, &[(false, true), (true, false), (true, false)])),
            Ok(RolledForward)
        );
        // Everything moved, not installed.
        assert_eq!(decide(&i, &seen((true, true), false, &[(false, true); 3])), Ok(RolledForward));
        // Installed: the copy is the database now.
        assert_eq!(
            decide(&i, &seen((false, false), true, &[(true, true), (false, true), (false, true)])),
            Ok(Completed)
        );
        // The copy is damaged or gone before installation: roll back.
        assert_eq!(decide(&i, &seen((true, false), false, &[(false, true); 3])), Ok(RolledBack));
        assert_eq!(decide(&i, &seen((false, false), false, &[(false, true); 3])), Ok(RolledBack));
        // Something reappeared where a move must go: a human decides.
        assert!(decide(&i, &seen((true, true), true, &[(true, true), (false, true), (false, true)])).is_err());
        // No database when the restore began, and one appeared since.
        assert!(decide(&intent(0), &seen((true, true), true, &[])).is_err());
        assert_eq!(decide(&intent(0), &seen((false, false), true, &[])), Ok(Completed));
    }

    #[test]
    fn rename_noreplace_refuses_existing() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, b"a").unwrap();
        std::fs::write(&b, b"b").unwrap();
        assert_eq!(atomic::rename_noreplace(&a, &b).unwrap_err().kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&b).unwrap(), b"b");
        std::fs::remove_file(&b).unwrap();
        atomic::rename_noreplace(&a, &b).unwrap();
        assert_eq!(std::fs::read(&b).unwrap(), b"a");
    }
}

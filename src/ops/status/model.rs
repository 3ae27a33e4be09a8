//! The `warden status` report model: its options, the problem kinds and their exit codes and
//! severity, and the JSON shape of [`StatusReport`] (schema 1). Does not own gathering the
//! facts ([`super::collect()`]) or rendering them ([`super::prometheus_text`], the CLI).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::copies::backup::{BackupRecord, CheckMode};
use crate::copies::kind::BackupKind;
use crate::guard::lock::{Holder, LockState};
use crate::ops::config::Settings;
use crate::session::SessionConfig;
use crate::session::gate::GateFailure;
use crate::session::health::{HealthArtifact, SessionStatus, Step};
use crate::storage::{FsProbe, FsVerdict};
use crate::util::exit;

/// Schema version of [`StatusReport`].
pub const SCHEMA: u32 = 1;

/// Default for [`StatusOptions::max_backup_age`]: a daily session plus two hours of slack.
pub const DEFAULT_MAX_BACKUP_AGE: Duration = Duration::from_secs(26 * 3600);

/// The SQLite floor, as text (3.51.3 fixes the WAL-reset corruption bug).
pub const SQLITE_FLOOR: &str = "3.51.3";

/// Exit codes of problems, most severe first (see the module docs).
pub const SEVERITY: [u8; 9] = [
    exit::STATUS_DATABASE,
    exit::STATUS_WRITER_DIED,
    exit::FOREIGN_WRITER,
    exit::STATUS_STORAGE,
    exit::STATUS_SESSION,
    exit::STATUS_DISK,
    exit::STATUS_BACKUP,
    exit::STATUS_DRILL,
    exit::STATUS_OFFSITE,
];

/// What [`collect`](super::collect()) looks at. [`StatusOptions::new`] gives the documented defaults.
#[derive(Clone)]
pub struct StatusOptions {
    /// The database.
    pub db: PathBuf,
    /// Its backups (default `<db>.warden/backups`).
    pub backup_dir: PathBuf,
    /// Its session artifacts (default `<db>.warden/sessions`).
    pub session_dir: PathBuf,
    /// The newest restore-drill record (default `<db>.warden/drills/latest.json`); a missing
    /// file means no drill has run, which is not a problem.
    pub drill_record: PathBuf,
    /// The record of the last in-place restore (default `<db>.warden/restores/latest.json`):
    /// sessions and gates from before it describe a database that was replaced since.
    pub restore_record: PathBuf,
    /// The newest good backup may be at most this old (default [`DEFAULT_MAX_BACKUP_AGE`]).
    pub max_backup_age: Duration,
    /// Free-space floor in bytes for the database's and the backup directory; the floor is
    /// never below what the next backup needs ([`BackupStore::space_needed`](crate::copies::backup::BackupStore::space_needed)).
    pub min_free_bytes: Option<u64>,
    /// Offsite copies are configured: their lag may be at most this (`[offsite] max_lag`);
    /// `None`: not configured, not reported.
    pub offsite_max_lag: Option<Duration>,
    /// Where filesystem facts come from (default [`RealProbe`](crate::storage::RealProbe)).
    pub probe: Option<Arc<dyn FsProbe>>,
    /// "Now", for ages (default: the clock).
    pub now: Option<Timestamp>,
}

impl std::fmt::Debug for StatusOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusOptions")
            .field("db", &self.db)
            .field("backup_dir", &self.backup_dir)
            .field("session_dir", &self.session_dir)
            .field("drill_record", &self.drill_record)
            .field("restore_record", &self.restore_record)
            .field("max_backup_age", &self.max_backup_age)
            .field("min_free_bytes", &self.min_free_bytes)
            .field("now", &self.now)
            .finish_non_exhaustive()
    }
}

impl StatusOptions {
    /// The defaults for `db`.
    pub fn new(db: impl Into<PathBuf>) -> Self {
        let db = db.into();
        let state = SessionConfig::state_dir(&db);
        StatusOptions {
            backup_dir: state.join("backups"),
            session_dir: state.join("sessions"),
            drill_record: crate::copies::restore::drill_record_path(&db),
            restore_record: crate::copies::restore::restore_record_path(&db),
            db,
            max_backup_age: DEFAULT_MAX_BACKUP_AGE,
            min_free_bytes: None,
            offsite_max_lag: None,
            probe: None,
            now: None,
        }
    }

    /// The database and directories of `settings` (from `warden.toml` and flags).
    pub fn from_settings(settings: &Settings) -> Self {
        let mut o = StatusOptions::new(&settings.database);
        o.backup_dir.clone_from(&settings.backup_dir);
        o.session_dir.clone_from(&settings.session_dir);
        o.offsite_max_lag = settings.offsite.as_ref().map(|c| c.max_lag);
        o
    }
}

/// What is wrong, as a stable machine-readable name. [`ProblemKind::exit_code`] maps it to
/// the table in the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// The most recent integrity gate failed, or a session was refused for damage (11).
    GateFailed,
    /// The database does not exist or is empty (11).
    DatabaseMissing,
    /// Something other than a readable database file is at the path (a directory, no
    /// permission, a name that is not UTF-8), or a side file is in the way (11).
    DatabaseUnusable,
    /// The database changed since its seal without a guarded session, or the seal is
    /// damaged (11).
    ChangedSinceSeal,
    /// A restore was interrupted: sessions refuse until `warden restore` finishes it (11).
    RestoreInterrupted,
    /// The writer lock was never released by its last holder: an engine died (13).
    WriterDied,
    /// The writer lock could not be inspected (13).
    LockUnreadable,
    /// The database or the backup directory is not on local storage (14).
    StorageNotLocal,
    /// The storage could not be judged (14).
    StorageUnknown,
    /// The linked SQLite is older than [`SQLITE_FLOOR`] (14).
    SqliteTooOld,
    /// The last session ended badly (12).
    SessionEndedBadly,
    /// The session's artifact says `running` but its supervisor (`warden run`) is gone: no
    /// post-session backup will come, and its engine may still be running unsupervised (12).
    SupervisorDied,
    /// The session artifacts could not be read (12).
    SessionsUnreadable,
    /// Free space is below the floor (15).
    DiskHeadroom,
    /// There is no good backup (10).
    NoGoodBackup,
    /// The newest good backup is older than the maximum age (10).
    BackupStale,
    /// The backups could not be listed (10).
    BackupsUnreadable,
    /// The last restore drill failed, or its record is unreadable (16).
    DrillFailed,
    /// A process other than warden and its engine had the database open for writing during
    /// the last session (running or ended), as its artifact's `foreign_writers` records (17).
    ForeignWriter,
    /// Offsite copies are configured and a good point has been local-only longer than
    /// `[offsite] max_lag` (18).
    OffsiteLag,
}

impl ProblemKind {
    /// The exit code of `warden status` for this problem.
    pub fn exit_code(self) -> u8 {
        match self {
            ProblemKind::GateFailed
            | ProblemKind::DatabaseMissing
            | ProblemKind::DatabaseUnusable
            | ProblemKind::ChangedSinceSeal
            | ProblemKind::RestoreInterrupted => exit::STATUS_DATABASE,
            ProblemKind::WriterDied | ProblemKind::LockUnreadable => exit::STATUS_WRITER_DIED,
            ProblemKind::StorageNotLocal | ProblemKind::StorageUnknown | ProblemKind::SqliteTooOld => {
                exit::STATUS_STORAGE
            }
            ProblemKind::SessionEndedBadly | ProblemKind::SupervisorDied | ProblemKind::SessionsUnreadable => {
                exit::STATUS_SESSION
            }
            ProblemKind::DiskHeadroom => exit::STATUS_DISK,
            ProblemKind::NoGoodBackup | ProblemKind::BackupStale | ProblemKind::BackupsUnreadable => {
                exit::STATUS_BACKUP
            }
            ProblemKind::DrillFailed => exit::STATUS_DRILL,
            ProblemKind::ForeignWriter => exit::FOREIGN_WRITER,
            ProblemKind::OffsiteLag => exit::STATUS_OFFSITE,
        }
    }

    /// The snake_case name used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            ProblemKind::GateFailed => "gate_failed",
            ProblemKind::DatabaseMissing => "database_missing",
            ProblemKind::DatabaseUnusable => "database_unusable",
            ProblemKind::ChangedSinceSeal => "changed_since_seal",
            ProblemKind::RestoreInterrupted => "restore_interrupted",
            ProblemKind::WriterDied => "writer_died",
            ProblemKind::LockUnreadable => "lock_unreadable",
            ProblemKind::StorageNotLocal => "storage_not_local",
            ProblemKind::StorageUnknown => "storage_unknown",
            ProblemKind::SqliteTooOld => "sqlite_too_old",
            ProblemKind::SessionEndedBadly => "session_ended_badly",
            ProblemKind::SupervisorDied => "supervisor_died",
            ProblemKind::SessionsUnreadable => "sessions_unreadable",
            ProblemKind::DiskHeadroom => "disk_headroom",
            ProblemKind::NoGoodBackup => "no_good_backup",
            ProblemKind::BackupStale => "backup_stale",
            ProblemKind::BackupsUnreadable => "backups_unreadable",
            ProblemKind::DrillFailed => "drill_failed",
            ProblemKind::ForeignWriter => "foreign_writer",
            ProblemKind::OffsiteLag => "offsite_lag",
        }
    }
}

/// Position of an exit code in [`SEVERITY`] (0 is the most severe).
pub fn severity_rank(code: u8) -> usize {
    SEVERITY.iter().position(|&c| c == code).unwrap_or(SEVERITY.len())
}

/// One thing that makes the database unhealthy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// Its exit code.
    pub code: u8,
    /// What it is.
    pub kind: ProblemKind,
    /// For humans, with a hint where there is one.
    pub message: String,
}

impl Problem {
    pub(super) fn new(kind: ProblemKind, message: String) -> Self {
        Problem { code: kind.exit_code(), kind, message }
    }
}

/// The database file as found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseInfo {
    /// The database.
    pub path: PathBuf,
    /// The file exists.
    pub exists: bool,
    /// Its size in bytes.
    pub size: Option<u64>,
    /// Size of its `-wal`, when one exists.
    pub wal_bytes: Option<u64>,
    /// Size of its `-journal`, when one exists.
    pub journal_bytes: Option<u64>,
}

/// Where the database and its backups live.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageInfo {
    /// The verdict on the database's location.
    pub database: Option<FsVerdict>,
    /// The verdict on the backup directory.
    pub backup_dir: Option<FsVerdict>,
    /// Why a verdict is missing.
    pub error: Option<String>,
}

/// The writer lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    /// Held, free, free after a crash, or never used; `None` when it could not be read.
    pub state: Option<LockState>,
    /// The lock file.
    pub lock_path: PathBuf,
    /// The holder (held) or the last holder (otherwise), as it recorded itself.
    pub holder: Option<Holder>,
    /// The `warden run` session of the (last) holder.
    pub session: Option<String>,
    /// Why the state is unknown.
    pub error: Option<String>,
}

/// A session, as its artifact records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    /// Session id.
    pub id: String,
    /// Where it stands.
    pub status: SessionStatus,
    /// The step that stopped it.
    pub failed_step: Option<Step>,
    /// The error that stopped it.
    pub error: Option<String>,
    /// When it started.
    pub started_at: String,
    /// When it ended.
    pub finished_at: Option<String>,
    /// warden's exit code for it.
    pub exit_code: Option<i32>,
    /// The engine's exit code.
    pub engine_exit_code: Option<i32>,
    /// The signal that killed the engine.
    pub engine_signal: Option<i32>,
    /// The engine's pid, once it was started.
    pub engine_pid: Option<u32>,
    /// The supervisor (`warden run`) that ran the session.
    pub supervisor_pid: u32,
    /// For a `running` session whose supervisor is gone: how that is known (the pid is gone,
    /// reused by a later process, or the host rebooted). `None` while it lives, or when it
    /// cannot be judged from here (another host or pid namespace).
    pub supervisor_gone: Option<String>,
    /// The artifact.
    pub artifact: PathBuf,
    /// Processes other than its engine that had the database open for writing while it ran
    /// (the artifact's `foreign_writers.writers`); empty when none was seen.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub foreign_writers: Vec<crate::session::watch::ForeignWriter>,
}

impl SessionInfo {
    pub(super) fn of(path: &Path, a: &HealthArtifact) -> Self {
        SessionInfo {
            id: a.session_id.clone(),
            status: a.status,
            failed_step: a.failed_step,
            error: a.error.clone(),
            started_at: a.started_at.clone(),
            finished_at: a.finished_at.clone(),
            exit_code: a.exit_code,
            engine_exit_code: a.engine.as_ref().and_then(|e| e.exit_code),
            engine_signal: a.engine.as_ref().and_then(|e| e.signal),
            engine_pid: a.engine.as_ref().and_then(|e| e.pid),
            supervisor_pid: a.runner.pid,
            supervisor_gone: (a.status == SessionStatus::Running)
                .then(|| crate::util::identity::process_gone(&a.runner, a.runner_start.as_ref()))
                .flatten()
                .map(str::to_owned),
            artifact: path.to_owned(),
            foreign_writers: a.foreign_writers.as_ref().map(|w| w.writers.clone()).unwrap_or_default(),
        }
    }
}

/// The most recent integrity gate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateInfo {
    /// The session that ran it.
    pub session_id: String,
    /// When that session started.
    pub at: String,
    /// It passed.
    pub passed: bool,
    /// `full` or `quick`.
    pub mode: CheckMode,
    /// Why it failed.
    pub failure: Option<GateFailure>,
    /// One line.
    pub summary: String,
}

/// A backup, for status and listings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupInfo {
    /// Backup id.
    pub id: String,
    /// Why it was taken.
    pub kind: BackupKind,
    /// When (RFC 3339 UTC).
    pub created: String,
    /// Seconds since then (0 for a future-dated backup); `None` if `created` is unreadable.
    pub age_seconds: Option<i64>,
    /// Bytes.
    pub size: u64,
    /// SHA-256 of the data file.
    pub sha256: String,
    /// Passed its check when taken.
    pub verified: bool,
    /// May be restored as a known-good state ([`backup::Manifest::is_good`](crate::copies::backup::Manifest::is_good)).
    pub good: bool,
    /// The session it belongs to.
    pub session_id: Option<String>,
    /// The data file, or for a restore point in the page store its manifest.
    pub path: PathBuf,
    /// `pages` (a restore point in the page store) or `file`.
    pub store: String,
    /// Bytes it added to the page store when it was written (`None` for a file backup).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub stored_bytes: Option<u64>,
    /// Its check has not run yet: the next gate checks it; never good until then.
    pub check_pending: bool,
}

impl BackupInfo {
    /// Describes `rec` as of `now`.
    pub fn of(rec: &BackupRecord, now: Timestamp) -> Self {
        let m = &rec.manifest;
        BackupInfo {
            id: m.id.clone(),
            kind: m.kind,
            created: m.created.clone(),
            age_seconds: m.created_at().map(|t| (now.as_second() - t.as_second()).max(0)),
            size: m.size,
            sha256: m.sha256.clone(),
            verified: m.verified,
            good: m.is_good(),
            session_id: m.session_id.clone(),
            path: rec.path.clone(),
            store: if m.is_paged() { "pages" } else { "file" }.to_owned(),
            stored_bytes: m.stored.as_ref().map(|s| s.new_bytes),
            check_pending: m.check_pending(),
        }
    }
}

/// The backups of the database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupsInfo {
    /// The backup directory.
    pub dir: PathBuf,
    /// Published backups.
    pub total: usize,
    /// Good ones.
    pub good: usize,
    /// The newest good backup (what a restore picks).
    pub newest_good: Option<BackupInfo>,
    /// The newest backup of any kind.
    pub newest: Option<BackupInfo>,
    /// The newest good backup of each kind.
    pub newest_good_by_kind: Vec<BackupInfo>,
    /// Why they could not be listed.
    pub error: Option<String>,
}

/// The offsite copy, as the last push left it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsiteInfo {
    /// The remote, as the last push named it.
    pub remote: Option<String>,
    /// The last push put every local good point there.
    pub last_push_ok: Option<bool>,
    /// When it finished.
    pub last_push_at: Option<String>,
    /// Why it failed.
    pub last_error: Option<String>,
    /// The newest point on the remote.
    pub newest_remote: Option<String>,
    /// Seconds the oldest good point the remote lacks has existed (0: none is missing).
    pub lag_seconds: u64,
    /// The threshold applied.
    pub max_lag_seconds: u64,
}

/// The newest restore drill, as its record says (written by `warden drill`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrillInfo {
    /// The record.
    pub path: PathBuf,
    /// When it finished.
    pub finished_at: Option<String>,
    /// Seconds since then.
    pub age_seconds: Option<i64>,
    /// It succeeded; `None` when the record does not say.
    pub ok: Option<bool>,
    /// The backup it restored.
    pub backup_id: Option<String>,
    /// What it reported.
    pub messages: Vec<String>,
    /// Why the record could not be read.
    pub error: Option<String>,
}

/// An interrupted (or running) restore, from its intent record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreInfo {
    /// When it started.
    pub started: Option<String>,
    /// The backup being restored.
    pub backup_id: Option<String>,
    /// The restoring process.
    pub pid: Option<u32>,
    /// A restore holds the writer lock now (it is running, not interrupted).
    pub running: bool,
    /// Why the intent record could not be read.
    pub error: Option<String>,
}

/// Free space in one directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirSpace {
    /// The directory measured (the nearest existing ancestor of the configured one).
    pub path: PathBuf,
    /// Free bytes for unprivileged users.
    pub free_bytes: Option<u64>,
    /// At least [`DiskInfo::required_free_bytes`] free.
    pub ok: bool,
    /// Why it could not be measured.
    pub error: Option<String>,
}

/// Disk headroom.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskInfo {
    /// Size of the database plus its `-wal` and `-journal`.
    pub db_bytes: u64,
    /// The floor: what the next backup needs, or `min_free_bytes` when larger.
    pub required_free_bytes: u64,
    /// The database's directory.
    pub database_dir: DirSpace,
    /// The backup directory.
    pub backup_dir: DirSpace,
}

/// The linked SQLite.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SqliteInfo {
    /// Its version.
    pub version: String,
    /// The floor.
    pub floor: String,
    /// At least the floor.
    pub ok: bool,
}

/// The health of one guarded database: what `warden status` prints (schema 1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    /// [`SCHEMA`].
    pub schema: u32,
    /// The database.
    pub db: PathBuf,
    /// When this was collected (RFC 3339 UTC).
    pub checked_at: String,
    /// No problem.
    pub healthy: bool,
    /// The exit code: 0, or the most severe problem's.
    pub exit_code: u8,
    /// One line.
    pub summary: String,
    /// Everything wrong, most severe first.
    pub problems: Vec<Problem>,
    /// The database file.
    pub database: DatabaseInfo,
    /// Storage verdicts.
    pub storage: StorageInfo,
    /// The writer lock.
    pub writer_lock: LockInfo,
    /// The last session that says something about the database (sessions refused only
    /// because another one held the lock are skipped); the running one while one runs.
    pub last_session: Option<SessionInfo>,
    /// The most recent integrity gate.
    pub last_gate: Option<GateInfo>,
    /// Backups.
    pub backups: BackupsInfo,
    /// The newest restore drill, when one is recorded.
    pub drill: Option<DrillInfo>,
    /// Offsite copies, when configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offsite: Option<OffsiteInfo>,
    /// A restore in progress or interrupted (`<db>.warden/restore-in-progress.json`).
    pub restore: Option<RestoreInfo>,
    /// The last restore that replaced the database (`<db>.warden/restores/latest.json`).
    /// Problems of sessions and gates that started before it are not reported: they were
    /// about the database it replaced.
    pub last_restore: Option<crate::copies::restore::RestoreRecord>,
    /// Disk headroom.
    pub disk: DiskInfo,
    /// The linked SQLite.
    pub sqlite: SqliteInfo,
    /// The maximum backup age applied, in seconds.
    pub max_backup_age_seconds: u64,
    /// The seal of the last clean close, compared cheaply (the file's identity, size and
    /// status change time; `warden check` compares the pages). Absent before seals existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seal: Option<crate::copies::seal::SealCheck>,
}

/// Human-readable age: `3h 12m`, `45s`.
pub fn human_age(secs: i64) -> String {
    let secs = u64::try_from(secs.max(0)).unwrap_or(0);
    let rounded = if secs >= 86_400 {
        secs - secs % 3600
    } else if secs >= 3600 {
        secs - secs % 60
    } else {
        secs
    };
    if rounded == 0 {
        return "0s".into();
    }
    humantime::format_duration(Duration::from_secs(rounded)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severity_order_is_the_documented_one() {
        let mut codes = vec![16, 10, 18, 15, 12, 14, 17, 13, 11];
        codes.sort_by_key(|c| severity_rank(*c));
        assert_eq!(codes, SEVERITY);
        for k in [
            ProblemKind::GateFailed,
            ProblemKind::WriterDied,
            ProblemKind::StorageNotLocal,
            ProblemKind::SessionEndedBadly,
            ProblemKind::DiskHeadroom,
            ProblemKind::BackupStale,
            ProblemKind::DrillFailed,
            ProblemKind::ForeignWriter,
            ProblemKind::OffsiteLag,
        ] {
            assert!(SEVERITY.contains(&k.exit_code()));
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
        }
    }
}

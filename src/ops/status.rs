//! Operator views of a guarded database: its health ([`collect`], `warden status`) and the
//! Prometheus textfile made from it ([`prometheus_text`], [`write_prometheus`]); session
//! artifacts by id ([`list_sessions`], [`find_session`]); re-verification of published
//! backups ([`verify_backups`]); reading, filtering and following the audit log
//! ([`AuditReader`], [`AuditFilter`]).
//!
//! Owns: what "healthy" means and its exit codes, the report's JSON shape (schema 1; fields
//! are only ever added, consumers must ignore unknown ones), the metric names, and the
//! lookup rules for ids. Does not own: any of the facts, which come from the library
//! ([`crate::guard::lock::inspect`], [`crate::storage::classify`], [`crate::session::health::list`],
//! [`BackupStore`], [`crate::guard::audit`]); nothing here writes to a database, a backup, an
//! artifact or the lock (the Prometheus textfile is the only file written, and only on
//! request).
//!
//! # Health verdict and exit codes
//!
//! [`collect`] never fails: a part it cannot read becomes a problem of that part (fail
//! closed). Every problem found is listed in [`StatusReport::problems`], most severe first,
//! and the exit code is the most severe one's:
//!
//! | code | problem | kinds |
//! |---|---|---|
//! | `0` | healthy: none of the below (a session, an engine or a restore holding the writer lock is healthy: "session running") | |
//! | `11` | the most recent integrity gate failed, a session was refused for damage, the database is missing or empty, or a restore was interrupted (its intent record is there and nobody holds the lock; sessions refuse until `warden restore` finishes it) | `gate_failed`, `database_missing`, `restore_interrupted` |
//! | `13` | the writer lock is free but its last holder never released it: an engine died (crash, `kill -9`); or the lock could not be read | `writer_died`, `lock_unreadable` |
//! | `14` | the database or the backup directory is not on local storage (or could not be judged), or SQLite is older than 3.51.3 | `storage_not_local`, `storage_unknown`, `sqlite_too_old` |
//! | `12` | the last session ended badly: `engine_failed`, `abandoned` (or still `running` with nobody holding the lock), `completed_without_backup`, `engine_not_started`, or refused at a step other than the lock (another session holding the lock is not a problem) | `session_ended_badly`, `sessions_unreadable` |
//! | `15` | free space in the database's or the backup directory below the floor: room for one more backup (database + `-wal` + `-journal`, +10 %, +1 MiB), or `--min-free-bytes` when larger | `disk_headroom` |
//! | `10` | no good backup, the newest good one is older than `--max-backup-age` (default 26 h), or the backups could not be listed | `no_good_backup`, `backup_stale`, `backups_unreadable` |
//! | `16` | the last restore drill (`<db>.warden/drills/latest.json`, written by `warden drill`) failed or its record is unreadable | `drill_failed` |
//!
//! Severity, most severe first, is the order of the table: **11 > 13 > 14 > 12 > 15 > 10 >
//! 16** ([`SEVERITY`]). Damage found comes first; then a writer that died (damage possible,
//! nothing checked since); then storage that makes every session unsafe; then a session that
//! ended badly; then what will stop the next backup (disk); then the recovery point (no
//! fresh backup); then proof of restorability (the drill). Root causes rank above the
//! symptoms they produce: a database on a network share (14) refuses every session (12).
//!
//! # Prometheus textfile
//!
//! [`write_prometheus`] writes the node_exporter textfile-collector format atomically
//! ([`crate::util::atomic::write_atomic`]: a temporary file in the same directory whose name does
//! not end in `.prom`, `fsync`, `rename`), ending with a newline, `# HELP` and `# TYPE`
//! before each family's samples. Every sample carries a `db` label, so the files of several
//! databases in one collector directory never collide. All families are gauges:
//!
//! | series | value |
//! |---|---|
//! | `warden_backup_last_success_timestamp_seconds{db,kind}` | creation time of the newest good backup of each kind (`pre`, `post`, `manual`) |
//! | `warden_backup_age_seconds{db}` | age of the newest good backup |
//! | `warden_backups_good_total{db}` | good backups retained (a gauge, despite the suffix) |
//! | `warden_backup_bytes{db}` | size of the newest good backup |
//! | `warden_integrity_ok{db,mode}` | 1 when the most recent gate passed; `mode` is `full` or `quick` |
//! | `warden_last_session_ok{db}` | 1 when the last session completed or is running |
//! | `warden_writer_lock_held{db}` | 1 while a writer holds the lock |
//! | `warden_db_on_network_fs{db}` | 1 when the database is not on storage judged local (network, lock-less or unknown) |
//! | `warden_free_bytes{db,dir}` | free bytes for `dir="database"` and `dir="backups"` |
//! | `warden_db_bytes{db}` | size of the database file |
//! | `warden_sqlite_version_ok{db,version}` | 1 when the linked SQLite is at least 3.51.3 |
//! | `warden_drill_ok{db}`, `warden_drill_last_timestamp_seconds{db}` | the last restore drill, when one is recorded |
//! | `warden_healthy{db}` | 1 when the exit code is 0 |
//! | `warden_status_code{db}` | the exit code |
//! | `warden_status_timestamp_seconds{db}` | when the status was collected |
//!
//! Series without a value (no good backup yet, no gate yet) are left out rather than
//! reported as 0; alert on them with `absent()` or on `warden_healthy`.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::copies::backup::{self, BackupError, BackupRecord, BackupStore, CheckMode, IntegrityReport};
use crate::guard::audit::{AuditEvent, AuditRecord};
use crate::guard::lock::{Holder, LockState};
use crate::ops::config::Settings;
use crate::session::BackupKind;
use crate::session::SessionConfig;
use crate::session::gate::{GateFailure, ScratchDir};
use crate::session::health::{self, HealthArtifact, SessionStatus, Step};
use crate::storage::{FsProbe, FsVerdict, RealProbe};

/// Schema version of [`StatusReport`].
pub const SCHEMA: u32 = 1;

/// Default for [`StatusOptions::max_backup_age`]: a daily session plus two hours of slack.
pub const DEFAULT_MAX_BACKUP_AGE: Duration = Duration::from_secs(26 * 3600);

/// The SQLite floor, as text (3.51.3 fixes the WAL-reset corruption bug).
pub const SQLITE_FLOOR: &str = "3.51.3";

/// Exit codes of problems, most severe first (see the module docs).
pub const SEVERITY: [u8; 7] = [11, 13, 14, 12, 15, 10, 16];

// =============================================================================================
// Status
// =============================================================================================

/// What [`collect`] looks at. [`StatusOptions::new`] gives the documented defaults.
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
    /// The newest good backup may be at most this old (default [`DEFAULT_MAX_BACKUP_AGE`]).
    pub max_backup_age: Duration,
    /// Free-space floor in bytes for the database's and the backup directory; the floor is
    /// never below what the next backup needs ([`BackupStore::space_needed`]).
    pub min_free_bytes: Option<u64>,
    /// Where filesystem facts come from (default [`RealProbe`]).
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
            db,
            max_backup_age: DEFAULT_MAX_BACKUP_AGE,
            min_free_bytes: None,
            probe: None,
            now: None,
        }
    }

    /// The database and directories of `settings` (from `warden.toml` and flags).
    pub fn from_settings(settings: &Settings) -> Self {
        let mut o = StatusOptions::new(&settings.database);
        o.backup_dir.clone_from(&settings.backup_dir);
        o.session_dir.clone_from(&settings.session_dir);
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
}

impl ProblemKind {
    /// The exit code of `warden status` for this problem.
    pub fn exit_code(self) -> u8 {
        match self {
            ProblemKind::GateFailed | ProblemKind::DatabaseMissing | ProblemKind::RestoreInterrupted => 11,
            ProblemKind::WriterDied | ProblemKind::LockUnreadable => 13,
            ProblemKind::StorageNotLocal | ProblemKind::StorageUnknown | ProblemKind::SqliteTooOld => 14,
            ProblemKind::SessionEndedBadly | ProblemKind::SessionsUnreadable => 12,
            ProblemKind::DiskHeadroom => 15,
            ProblemKind::NoGoodBackup | ProblemKind::BackupStale | ProblemKind::BackupsUnreadable => 10,
            ProblemKind::DrillFailed => 16,
        }
    }

    /// The snake_case name used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            ProblemKind::GateFailed => "gate_failed",
            ProblemKind::DatabaseMissing => "database_missing",
            ProblemKind::RestoreInterrupted => "restore_interrupted",
            ProblemKind::WriterDied => "writer_died",
            ProblemKind::LockUnreadable => "lock_unreadable",
            ProblemKind::StorageNotLocal => "storage_not_local",
            ProblemKind::StorageUnknown => "storage_unknown",
            ProblemKind::SqliteTooOld => "sqlite_too_old",
            ProblemKind::SessionEndedBadly => "session_ended_badly",
            ProblemKind::SessionsUnreadable => "sessions_unreadable",
            ProblemKind::DiskHeadroom => "disk_headroom",
            ProblemKind::NoGoodBackup => "no_good_backup",
            ProblemKind::BackupStale => "backup_stale",
            ProblemKind::BackupsUnreadable => "backups_unreadable",
            ProblemKind::DrillFailed => "drill_failed",
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
    fn new(kind: ProblemKind, message: String) -> Self {
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
    /// The artifact.
    pub artifact: PathBuf,
}

impl SessionInfo {
    fn of(path: &Path, a: &HealthArtifact) -> Self {
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
            artifact: path.to_owned(),
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
    /// May be restored as a known-good state ([`backup::Manifest::is_good`]).
    pub good: bool,
    /// The session it belongs to.
    pub session_id: Option<String>,
    /// The data file.
    pub path: PathBuf,
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
    /// A restore in progress or interrupted (`<db>.warden/restore-in-progress.json`).
    pub restore: Option<RestoreInfo>,
    /// Disk headroom.
    pub disk: DiskInfo,
    /// The linked SQLite.
    pub sqlite: SqliteInfo,
    /// The maximum backup age applied, in seconds.
    pub max_backup_age_seconds: u64,
}

fn size_of(p: &Path) -> Option<u64> {
    std::fs::metadata(p).ok().map(|m| m.len())
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
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

/// Free bytes for unprivileged users in `dir`, or in its nearest existing ancestor.
fn free_space(dir: &Path, required: u64) -> DirSpace {
    let mut at = dir.to_owned();
    while !at.exists() {
        match at.parent() {
            Some(p) if !p.as_os_str().is_empty() => at = p.to_owned(),
            _ => {
                at = PathBuf::from(".");
                break;
            }
        }
    }
    match crate::copies::copy::free_bytes(&at) {
        Ok(free) => DirSpace { path: at, free_bytes: Some(free), ok: free >= required, error: None },
        Err(e) => DirSpace { path: at, free_bytes: None, ok: false, error: Some(e.to_string()) },
    }
}

fn same_db(a: &Path, b: &Path) -> bool {
    a == b || std::path::absolute(a).ok() == std::path::absolute(b).ok()
}

/// Collects the health of a guarded database. Reads only; never takes the writer lock or
/// waits for anything, so it is safe (and cheap) while the engine runs.
pub fn collect(opts: &StatusOptions) -> StatusReport {
    let now = opts.now.unwrap_or_else(Timestamp::now);
    let db = opts.db.as_path();
    let mut problems = Vec::new();

    // SQLite.
    let sqlite = SqliteInfo {
        version: rusqlite::version().to_owned(),
        floor: SQLITE_FLOOR.to_owned(),
        ok: crate::guard::vfs::sqlite_version_number() >= crate::guard::vfs::SQLITE_FLOOR,
    };
    if !sqlite.ok {
        problems.push(Problem::new(
            ProblemKind::SqliteTooOld,
            format!(
                "SQLite {} is older than {SQLITE_FLOOR} (WAL-reset corruption bug): sessions are refused\n(hint: rebuild warden with the bundled SQLite)",
                sqlite.version
            ),
        ));
    }

    // The writer lock (first: a running engine explains other observations).
    let writer_lock = match crate::guard::lock::inspect(db) {
        Ok(st) => LockInfo {
            state: Some(st.state),
            lock_path: st.lock_path,
            holder: st.record.as_ref().map(|r| r.holder.clone()),
            session: st.record.and_then(|r| r.session),
            error: None,
        },
        Err(e) => LockInfo {
            state: None,
            lock_path: crate::guard::lock::lock_path_for(db),
            holder: None,
            session: None,
            error: Some(e.to_string()),
        },
    };
    let held = writer_lock.state == Some(LockState::Held);
    match (writer_lock.state, &writer_lock.error) {
        (Some(LockState::FreeAfterCrash), _) => problems.push(Problem::new(
            ProblemKind::WriterDied,
            format!(
                "the last writer ({}) never released the writer lock: it crashed or was killed\n(hint: `warden check {}` checks the database now; the next `warden run` gates it and clears this)",
                crate::guard::error::holder_text(writer_lock.holder.as_ref()),
                db.display()
            ),
        )),
        (None, Some(e)) => problems.push(Problem::new(ProblemKind::LockUnreadable, format!("cannot inspect the writer lock: {e}"))),
        _ => {}
    }

    // The database file.
    let database = DatabaseInfo {
        path: db.to_owned(),
        exists: db.exists(),
        size: size_of(db),
        wal_bytes: size_of(&backup::sidecar(db, "-wal")),
        journal_bytes: size_of(&backup::sidecar(db, "-journal")),
    };
    if !held && database.size.unwrap_or(0) == 0 && database.wal_bytes.unwrap_or(0) == 0 {
        let what = if database.exists { "is an empty file" } else { "does not exist" };
        problems.push(Problem::new(
            ProblemKind::DatabaseMissing,
            format!(
                "`{}` {what}: a session's gate refuses it\n(hint: check the path or the disk; restore a verified backup with `warden restore`; `--create` only for a brand-new database)",
                db.display()
            ),
        ));
    }

    // An interrupted restore (its intent record); one holding the lock is just running.
    let restore = match crate::copies::restore::pending(db) {
        Ok(None) => None,
        Ok(Some(i)) => Some(RestoreInfo {
            started: Some(i.started),
            backup_id: Some(i.backup.id),
            pid: Some(i.process.pid),
            running: held,
            error: None,
        }),
        Err(e) => {
            Some(RestoreInfo { started: None, backup_id: None, pid: None, running: held, error: Some(e.to_string()) })
        }
    };
    if let Some(r) = restore.as_ref().filter(|r| !r.running) {
        let what = match (&r.error, &r.backup_id) {
            (Some(e), _) => format!("a restore record is there but unreadable: {e}"),
            (None, id) => format!(
                "a restore{} (pid {}, started {}) was interrupted",
                id.as_deref().map(|i| format!(" of {i}")).unwrap_or_default(),
                r.pid.map_or_else(|| "?".into(), |p| p.to_string()),
                r.started.as_deref().unwrap_or("?")
            ),
        };
        problems.push(Problem::new(
            ProblemKind::RestoreInterrupted,
            format!(
                "{what}: sessions refuse to start until it is finished\n(hint: run `warden restore --db {}` again: it first rolls the interrupted one forward or back)",
                db.display()
            ),
        ));
    }

    // Storage.
    let probe: Arc<dyn FsProbe> = opts.probe.clone().unwrap_or_else(|| Arc::new(RealProbe::new()));
    let mut storage = StorageInfo { database: None, backup_dir: None, error: None };
    let mut storage_errors = Vec::new();
    for (what, path) in [("database", db), ("backup directory", opts.backup_dir.as_path())] {
        match crate::storage::classify(probe.as_ref(), path) {
            Ok(v) => {
                if !v.kind.is_local() {
                    problems.push(Problem::new(
                        ProblemKind::StorageNotLocal,
                        format!(
                            "the {what} `{}` is on {}, {} storage ({}): warden refuses sessions there\n(hint: move it to a local disk; see `warden fs {}`)",
                            path.display(),
                            v.describe(),
                            v.kind,
                            v.reason,
                            path.display()
                        ),
                    ));
                }
                if what == "database" {
                    storage.database = Some(v);
                } else {
                    storage.backup_dir = Some(v);
                }
            }
            Err(e) => {
                problems.push(Problem::new(
                    ProblemKind::StorageUnknown,
                    format!("cannot judge the storage of the {what}: {e}"),
                ));
                storage_errors.push(format!("{what}: {e}"));
            }
        }
    }
    if !storage_errors.is_empty() {
        storage.error = Some(storage_errors.join("; "));
    }

    // Sessions.
    let (last_session, last_gate) = match health::list(&opts.session_dir) {
        Ok(mut all) => {
            newest_first(&mut all);
            let mine: Vec<&(PathBuf, HealthArtifact)> = all.iter().filter(|(_, a)| same_db(&a.database, db)).collect();
            // A session refused only because another held the lock changed nothing.
            let telling =
                |a: &HealthArtifact| !(a.status == SessionStatus::Refused && a.failed_step == Some(Step::WriterLock));
            let running = writer_lock
                .session
                .as_deref()
                .filter(|_| held)
                .and_then(|id| mine.iter().find(|(_, a)| a.session_id == id));
            let last = running.or_else(|| mine.iter().find(|(_, a)| telling(a))).map(|(p, a)| SessionInfo::of(p, a));
            let gate = mine.iter().filter(|(_, a)| telling(a)).find_map(|(_, a)| {
                a.gate.as_ref().map(|g| GateInfo {
                    session_id: a.session_id.clone(),
                    at: a.started_at.clone(),
                    passed: g.passed,
                    mode: g.mode,
                    failure: g.failure,
                    summary: g.summary(),
                })
            });
            (last, gate)
        }
        Err(e) => {
            problems.push(Problem::new(
                ProblemKind::SessionsUnreadable,
                format!("cannot read the session artifacts in `{}`: {e}", opts.session_dir.display()),
            ));
            (None, None)
        }
    };
    if let Some(g) = last_gate.as_ref().filter(|g| !g.passed) {
        problems.push(Problem::new(
            ProblemKind::GateFailed,
            format!(
                "the integrity gate of session {} refused the database: {}\n(hint: `warden check {}` for details; restore a verified backup (`warden restore`) or salvage (`warden salvage`))",
                g.session_id,
                g.summary.strip_prefix("FAILED: ").unwrap_or(&g.summary),
                db.display()
            ),
        ));
    }
    if let Some(s) = &last_session
        && let Some(p) = judge_session(s, held, last_gate.as_ref())
    {
        problems.push(p);
    }

    // Backups.
    let store = BackupStore::new(&opts.backup_dir, db);
    let mut backups = BackupsInfo {
        dir: opts.backup_dir.clone(),
        total: 0,
        good: 0,
        newest_good: None,
        newest: None,
        newest_good_by_kind: Vec::new(),
        error: None,
    };
    match store.list() {
        Ok(list) => {
            backups.total = list.len();
            backups.good = list.iter().filter(|r| r.manifest.is_good()).count();
            backups.newest = list.first().map(|r| BackupInfo::of(r, now));
            backups.newest_good = list.iter().find(|r| r.manifest.is_good()).map(|r| BackupInfo::of(r, now));
            for kind in [BackupKind::Pre, BackupKind::Post, BackupKind::Manual] {
                if let Some(r) = list.iter().find(|r| r.manifest.is_good() && r.manifest.kind == kind) {
                    backups.newest_good_by_kind.push(BackupInfo::of(r, now));
                }
            }
            match &backups.newest_good {
                None => problems.push(Problem::new(
                    ProblemKind::NoGoodBackup,
                    format!(
                        "no good backup in `{}`{}\n(hint: `warden backup` takes one now; every `warden run` takes two)",
                        opts.backup_dir.display(),
                        if backups.total > 0 {
                            format!(" ({} unverified or crash copies only)", backups.total)
                        } else {
                            String::new()
                        }
                    ),
                )),
                Some(b) => {
                    let max = i64::try_from(opts.max_backup_age.as_secs()).unwrap_or(i64::MAX);
                    match b.age_seconds {
                        Some(age) if age <= max => {}
                        age => problems.push(Problem::new(
                            ProblemKind::BackupStale,
                            format!(
                                "the newest good backup {} is {} old (limit {})\n(hint: is the engine's session running on schedule? `warden backup` takes one now)",
                                b.id,
                                age.map_or_else(|| "of unknown age".into(), human_age),
                                human_age(max)
                            ),
                        )),
                    }
                }
            }
        }
        Err(e) => {
            problems.push(Problem::new(ProblemKind::BackupsUnreadable, format!("cannot list the backups: {e}")));
            backups.error = Some(e.to_string());
        }
    }

    // The newest drill.
    let drill = read_drill(&opts.drill_record, now);
    if let Some(d) = &drill {
        let bad = match (&d.error, d.ok) {
            (Some(e), _) => Some(format!("the restore drill record `{}` is unreadable: {e}", d.path.display())),
            (None, Some(true)) => None,
            (None, Some(false)) => Some(format!(
                "the last restore drill{}{} FAILED: {}\n(hint: the backups may not be restorable; `warden backups verify --all`)",
                d.finished_at.as_deref().map(|t| format!(" ({t})")).unwrap_or_default(),
                d.backup_id.as_deref().map(|b| format!(" of {b}")).unwrap_or_default(),
                d.messages.first().map_or("no message recorded", String::as_str)
            )),
            (None, None) => {
                Some(format!("the restore drill record `{}` does not say whether it passed", d.path.display()))
            }
        };
        if let Some(m) = bad {
            problems.push(Problem::new(ProblemKind::DrillFailed, m));
        }
    }

    // Disk headroom.
    let db_bytes = database.size.unwrap_or(0) + database.wal_bytes.unwrap_or(0) + database.journal_bytes.unwrap_or(0);
    let required = BackupStore::space_needed(db).max(opts.min_free_bytes.unwrap_or(0));
    let disk = DiskInfo {
        db_bytes,
        required_free_bytes: required,
        database_dir: free_space(crate::util::atomic::parent_of(db), required),
        backup_dir: free_space(&opts.backup_dir, required),
    };
    for (what, d) in [("database", &disk.database_dir), ("backup", &disk.backup_dir)] {
        if d.ok {
            continue;
        }
        let m = match (d.free_bytes, &d.error) {
            (Some(free), _) => format!(
                "only {free} bytes free in the {what} directory `{}`; {required} needed (the next backup, or --min-free-bytes)\n(hint: free space, lower retention, or move backups to another local disk)",
                d.path.display()
            ),
            (None, e) => format!(
                "cannot measure free space in the {what} directory `{}`: {}",
                d.path.display(),
                e.as_deref().unwrap_or("unknown error")
            ),
        };
        problems.push(Problem::new(ProblemKind::DiskHeadroom, m));
    }

    problems.sort_by_key(|p| severity_rank(p.code));
    let exit_code = problems.first().map_or(0, |p| p.code);
    let summary = match problems.first() {
        Some(p) => {
            let more = problems.len() - 1;
            let more = if more > 0 { format!(" (+{more} more)") } else { String::new() };
            format!("UNHEALTHY ({}): {}{more}", p.code, first_line(&p.message))
        }
        None => {
            let running = if held {
                match (&writer_lock.session, &writer_lock.holder) {
                    _ if restore.is_some() => "restore running".into(),
                    (Some(s), _) => format!("session running ({s})"),
                    (None, Some(h)) => {
                        let exe = h.process.exe.as_deref().map(|e| e.rsplit('/').next().unwrap_or(e));
                        format!(
                            "writer running (pid {}{})",
                            h.process.pid,
                            exe.map(|e| format!(", {e}")).unwrap_or_default()
                        )
                    }
                    (None, None) => "writer running".into(),
                }
            } else {
                "idle".into()
            };
            let backup = backups
                .newest_good
                .as_ref()
                .and_then(|b| b.age_seconds)
                .map(|a| format!("; newest good backup {} old", human_age(a)))
                .unwrap_or_default();
            format!("healthy: {running}{backup}")
        }
    };
    StatusReport {
        schema: SCHEMA,
        db: db.to_owned(),
        checked_at: now.to_string(),
        healthy: problems.is_empty(),
        exit_code,
        summary,
        problems,
        database,
        storage,
        writer_lock,
        last_session,
        last_gate,
        backups,
        drill,
        restore,
        disk,
        sqlite,
        max_backup_age_seconds: opts.max_backup_age.as_secs(),
    }
}

/// The problem the last session poses, if any. A failed gate is reported from
/// `last_gate` already.
fn judge_session(s: &SessionInfo, lock_held: bool, last_gate: Option<&GateInfo>) -> Option<Problem> {
    let why = s.error.as_deref().map(|e| format!(": {}", first_line(e))).unwrap_or_default();
    let bad = |m: String| Some(Problem::new(ProblemKind::SessionEndedBadly, m));
    match s.status {
        SessionStatus::Completed | SessionStatus::Aborted => None,
        SessionStatus::Running if lock_held => None,
        SessionStatus::Running => bad(format!(
            "session {} is still marked running but nobody holds the writer lock: warden was killed mid-session (no post-session backup)",
            s.id
        )),
        SessionStatus::CompletedWithoutBackup => {
            bad(format!("session {}: the engine closed cleanly but the post-session backup failed{why}", s.id))
        }
        SessionStatus::EngineFailed => {
            let how = match (s.engine_exit_code, s.engine_signal) {
                (Some(c), _) => format!("exited with status {c}"),
                (None, Some(sig)) => format!("was killed by signal {sig}"),
                _ => "failed".into(),
            };
            bad(format!(
                "session {}: the engine {how}; only a post-crash copy was taken\n(hint: see `warden sessions show {}`)",
                s.id, s.id
            ))
        }
        SessionStatus::EngineNotStarted => bad(format!("session {}: the engine could not be started{why}", s.id)),
        SessionStatus::Abandoned => bad(format!(
            "session {} was abandoned: warden was killed mid-session, so no post-session backup was taken",
            s.id
        )),
        SessionStatus::Refused => {
            let gate_reported = last_gate.is_some_and(|g| g.session_id == s.id && !g.passed);
            if gate_reported {
                None
            } else if s.exit_code == Some(65) {
                Some(Problem::new(ProblemKind::GateFailed, format!("session {} was refused for damage{why}", s.id)))
            } else {
                let step = s
                    .failed_step
                    .and_then(|st| serde_json::to_value(st).ok())
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_else(|| "?".into());
                bad(format!("session {} was refused at step `{step}`{why}", s.id))
            }
        }
    }
}

fn read_drill(path: &Path, now: Timestamp) -> Option<DrillInfo> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
        Err(e) => {
            return Some(DrillInfo {
                path: path.to_owned(),
                finished_at: None,
                age_seconds: None,
                ok: None,
                backup_id: None,
                messages: Vec::new(),
                error: Some(e.to_string()),
            });
        }
    };
    let mut d = DrillInfo {
        path: path.to_owned(),
        finished_at: None,
        age_seconds: None,
        ok: None,
        backup_id: None,
        messages: Vec::new(),
        error: None,
    };
    match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(v) => {
            d.finished_at = v.get("finished_at").and_then(|x| x.as_str()).map(str::to_owned);
            d.age_seconds = d
                .finished_at
                .as_deref()
                .and_then(|t| t.parse::<Timestamp>().ok())
                .map(|t| (now.as_second() - t.as_second()).max(0));
            d.ok = v
                .get("ok")
                .and_then(serde_json::Value::as_bool)
                .or_else(|| v.get("outcome").and_then(|o| o.as_str()).map(|o| o == "ok"));
            d.backup_id = v
                .get("backup_id")
                .or_else(|| v.get("backup").and_then(|b| b.get("id")))
                .and_then(|x| x.as_str())
                .map(str::to_owned);
            d.messages = match v.get("messages") {
                Some(serde_json::Value::Array(a)) => {
                    a.iter().map(|m| m.as_str().map_or_else(|| m.to_string(), str::to_owned)).collect()
                }
                Some(serde_json::Value::String(s)) => vec![s.clone()],
                _ => Vec::new(),
            };
        }
        Err(e) => d.error = Some(format!("not JSON: {e}")),
    }
    Some(d)
}

// =============================================================================================
// Prometheus textfile
// =============================================================================================

/// Escapes a label value per the text exposition format: backslash, double quote and line
/// feed.
pub fn escape_label_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

struct Families {
    out: String,
    db: String,
}

impl Families {
    fn family(&mut self, name: &str, help: &str, samples: &[(Vec<(&str, String)>, String)]) {
        if samples.is_empty() {
            return;
        }
        self.out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n"));
        for (labels, value) in samples {
            let mut l = format!("db=\"{}\"", escape_label_value(&self.db));
            for (k, v) in labels {
                l.push_str(&format!(",{k}=\"{}\"", escape_label_value(v)));
            }
            self.out.push_str(&format!("{name}{{{l}}} {value}\n"));
        }
    }

    fn one(&mut self, name: &str, help: &str, value: impl ToString) {
        self.family(name, help, &[(Vec::new(), value.to_string())]);
    }
}

fn bit(b: bool) -> u8 {
    u8::from(b)
}

fn ts_seconds(rfc3339: &str) -> Option<String> {
    let t: Timestamp = rfc3339.parse().ok()?;
    Some(format!("{:.3}", t.as_millisecond() as f64 / 1000.0))
}

/// The report as a node_exporter textfile (see the module docs for the series).
pub fn prometheus_text(r: &StatusReport) -> String {
    let mut f = Families { out: String::new(), db: r.db.display().to_string() };
    let by_kind: Vec<_> = r
        .backups
        .newest_good_by_kind
        .iter()
        .filter_map(|b| Some((vec![("kind", b.kind.as_str().to_owned())], ts_seconds(&b.created)?)))
        .collect();
    f.family(
        "warden_backup_last_success_timestamp_seconds",
        "Creation time of the newest good (verified, restorable) backup, per kind.",
        &by_kind,
    );
    if let Some(age) = r.backups.newest_good.as_ref().and_then(|b| b.age_seconds) {
        f.one("warden_backup_age_seconds", "Age of the newest good backup.", age);
    }
    if r.backups.error.is_none() {
        f.one("warden_backups_good_total", "Good backups retained (a gauge).", r.backups.good);
    }
    if let Some(b) = &r.backups.newest_good {
        f.one("warden_backup_bytes", "Size of the newest good backup.", b.size);
    }
    if let Some(g) = &r.last_gate {
        let mode = match g.mode {
            CheckMode::Full => "full",
            CheckMode::Quick => "quick",
        };
        f.family(
            "warden_integrity_ok",
            "1 when the most recent integrity gate passed.",
            &[(vec![("mode", mode.to_owned())], bit(g.passed).to_string())],
        );
    }
    if let Some(s) = &r.last_session {
        let ok =
            !r.problems.iter().any(|p| p.kind == ProblemKind::SessionEndedBadly) && s.status != SessionStatus::Refused;
        f.one("warden_last_session_ok", "1 when the last session completed or is running.", bit(ok));
    }
    if let Some(state) = r.writer_lock.state {
        f.one("warden_writer_lock_held", "1 while a writer holds the lock.", bit(state == LockState::Held));
    }
    if let Some(v) = &r.storage.database {
        f.one(
            "warden_db_on_network_fs",
            "1 when the database is not on storage judged local (network, lock-less or unknown).",
            bit(!v.kind.is_local()),
        );
    }
    let free: Vec<_> = [("database", &r.disk.database_dir), ("backups", &r.disk.backup_dir)]
        .into_iter()
        .filter_map(|(dir, d)| Some((vec![("dir", dir.to_owned())], d.free_bytes?.to_string())))
        .collect();
    f.family("warden_free_bytes", "Free bytes in the database's and the backup directory.", &free);
    f.one("warden_db_bytes", "Size of the database file.", r.database.size.unwrap_or(0));
    f.family(
        "warden_sqlite_version_ok",
        "1 when the linked SQLite is at least 3.51.3.",
        &[(vec![("version", r.sqlite.version.clone())], bit(r.sqlite.ok).to_string())],
    );
    if let Some(d) = &r.drill {
        f.one("warden_drill_ok", "1 when the last restore drill passed.", bit(d.ok == Some(true) && d.error.is_none()));
        if let Some(t) = d.finished_at.as_deref().and_then(ts_seconds) {
            f.one("warden_drill_last_timestamp_seconds", "When the last restore drill finished.", t);
        }
    }
    f.one("warden_healthy", "1 when warden status finds no problem.", bit(r.healthy));
    f.one("warden_status_code", "Exit code of warden status (0 healthy; see the README).", r.exit_code);
    let now = ts_seconds(&r.checked_at).unwrap_or_else(|| "0".into());
    f.one("warden_status_timestamp_seconds", "When this status was collected.", now);
    f.out
}

/// Writes [`prometheus_text`] to `path` atomically (mode `0644`, readable by
/// node_exporter).
///
/// # Errors
/// The I/O error; the previous file is then intact.
pub fn write_prometheus(r: &StatusReport, path: &Path) -> io::Result<()> {
    crate::util::atomic::write_atomic(path, prometheus_text(r).as_bytes(), 0o644)
}

// =============================================================================================
// Sessions and backups by id
// =============================================================================================

/// An id that names nothing, or more than one thing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LookupError {
    /// Nothing has this id or id prefix.
    #[error("no {what} `{id}` in `{dir}`\n(hint: list them with `warden {what}s`)")]
    NotFound {
        /// `session` or `backup`.
        what: &'static str,
        /// The id or prefix given.
        id: String,
        /// Where it was looked for.
        dir: PathBuf,
    },
    /// The prefix matches several.
    #[error("`{id}` matches {} {what}s: {}\n(hint: give more of the id)", candidates.len(), candidates.join(", "))]
    Ambiguous {
        /// `session` or `backup`.
        what: &'static str,
        /// The prefix given.
        id: String,
        /// The ids it matches.
        candidates: Vec<String>,
    },
    /// The directory could not be read.
    #[error("cannot read `{dir}`: {source}")]
    Io {
        /// The directory.
        dir: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// An exact id wins; otherwise exactly one id may start with `id`.
fn pick<T>(
    items: Vec<T>,
    id: &str,
    key: impl Fn(&T) -> &str,
    what: &'static str,
    dir: &Path,
) -> Result<T, LookupError> {
    let mut matching: Vec<T> = Vec::new();
    for it in items {
        if key(&it) == id {
            return Ok(it);
        }
        if !id.is_empty() && key(&it).starts_with(id) {
            matching.push(it);
        }
    }
    match matching.len() {
        0 => Err(LookupError::NotFound { what, id: id.to_owned(), dir: dir.to_owned() }),
        1 => Ok(matching.remove(0)),
        _ => Err(LookupError::Ambiguous {
            what,
            id: id.to_owned(),
            candidates: matching.iter().map(|t| key(t).to_owned()).collect(),
        }),
    }
}

/// Every session artifact in `session_dir`, newest first.
///
/// # Errors
/// [`LookupError::Io`] when the directory cannot be read (a missing one is empty).
pub fn list_sessions(session_dir: &Path) -> Result<Vec<(PathBuf, HealthArtifact)>, LookupError> {
    let mut all =
        health::list(session_dir).map_err(|source| LookupError::Io { dir: session_dir.to_owned(), source })?;
    newest_first(&mut all);
    Ok(all)
}

/// Newest first by start time (microseconds), then id: ids only have second resolution,
/// and two sessions can start within one second.
fn newest_first(all: &mut [(PathBuf, HealthArtifact)]) {
    let key = |a: &HealthArtifact| (a.started_at.parse::<Timestamp>().ok(), a.session_id.clone());
    all.sort_by_key(|(_, a)| std::cmp::Reverse(key(a)));
}

/// The session artifact whose id is `id`, or the only one whose id starts with it.
///
/// # Errors
/// [`LookupError`]: none, several, or an unreadable directory.
pub fn find_session(session_dir: &Path, id: &str) -> Result<(PathBuf, HealthArtifact), LookupError> {
    pick(list_sessions(session_dir)?, id, |(_, a)| a.session_id.as_str(), "session", session_dir)
}

/// The backup whose id is `id`, or the only one whose id starts with it.
///
/// # Errors
/// [`LookupError`]: none, several, or an unreadable directory.
pub fn find_backup(store: &BackupStore, id: &str) -> Result<BackupRecord, LookupError> {
    let all = store.list().map_err(|e| LookupError::Io { dir: store.dir().to_owned(), source: io::Error::other(e) })?;
    pick(all, id, |r| r.manifest.id.as_str(), "backup", store.dir())
}

// =============================================================================================
// Backup verification
// =============================================================================================

/// Which backups [`verify_backups`] re-verifies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackupSelection {
    /// The newest good backup: the one a restore would pick.
    NewestGood,
    /// One backup, by id or unique id prefix.
    Id(String),
    /// Every published backup, crash copies included.
    All,
}

/// How [`verify_backups`] checks.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// The check (default full).
    pub check: CheckMode,
    /// Time budget of each check (`None`: none).
    pub budget: Option<Duration>,
    /// Where the private copies go (default [`std::env::temp_dir`]); needs room for the
    /// largest backup.
    pub scratch_dir: Option<PathBuf>,
}

/// The result for one backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerifyOutcome {
    /// Hash and check as recorded.
    Ok,
    /// The hash differs, the file cannot be read, or the check fails.
    Failed,
    /// Removed (by retention) between listing and reading: not a failure.
    Gone,
}

/// What re-verifying one backup found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupVerification {
    /// Backup id.
    pub id: String,
    /// The data file.
    pub path: PathBuf,
    /// Its kind.
    pub kind: BackupKind,
    /// When it was taken.
    pub created: String,
    /// The manifest says it is good ([`backup::Manifest::is_good`]).
    pub good: bool,
    /// The result.
    pub outcome: VerifyOutcome,
    /// Size and SHA-256 equal the manifest's.
    pub hash_ok: Option<bool>,
    /// The check of a private copy.
    pub integrity: Option<IntegrityReport>,
    /// Why it failed, or a note.
    pub reason: Option<String>,
    /// Wall time.
    pub duration_ms: u64,
}

/// What [`verify_backups`] found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    /// The backup directory.
    pub dir: PathBuf,
    /// One entry per backup, newest first.
    pub results: Vec<BackupVerification>,
    /// Every backup verified (gone ones do not count).
    pub ok: bool,
    /// How many failed.
    pub failed: usize,
}

/// Why [`verify_backups`] could not verify.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// Nothing to verify.
    #[error("no {what} backup in `{dir}`\n(hint: `warden backups` lists them; `warden backup` takes one)")]
    NoBackups {
        /// `good` or `published`.
        what: &'static str,
        /// The backup directory.
        dir: PathBuf,
    },
    /// The id names nothing or several.
    #[error(transparent)]
    Lookup(#[from] LookupError),
    /// The scratch copy could not be made or read.
    #[error(transparent)]
    Backup(#[from] BackupError),
}

/// Re-verifies published backups, never touching them: each data file is copied into a
/// private scratch directory; the copy's size and SHA-256 are compared with the manifest
/// ([`BackupStore::verify_hash`]) and the copy is checked ([`backup::check_file`], read-write
/// because a read-only connection skips CHECK constraints). Hash and check see the same
/// bytes. A backup that was not verified when taken (a crash copy) only has to match its
/// hash; its check is reported for information.
///
/// # Errors
/// [`VerifyError`] when there is nothing to verify, the id is unknown or ambiguous, or the
/// scratch copy cannot be written.
pub fn verify_backups(
    store: &BackupStore,
    which: &BackupSelection,
    opts: &VerifyOptions,
) -> Result<VerifyReport, VerifyError> {
    let dir = store.dir().to_owned();
    let selected: Vec<BackupRecord> = match which {
        BackupSelection::Id(id) => vec![find_backup(store, id)?],
        BackupSelection::NewestGood => {
            vec![store.newest_good()?.ok_or_else(|| VerifyError::NoBackups { what: "good", dir: dir.clone() })?]
        }
        BackupSelection::All => {
            let all = store.list()?;
            if all.is_empty() {
                return Err(VerifyError::NoBackups { what: "published", dir });
            }
            all
        }
    };
    let base = opts.scratch_dir.clone().unwrap_or_else(std::env::temp_dir);
    let scratch = ScratchDir::create(&base, "warden-verify").map_err(|source| BackupError::Io {
        action: "creating a scratch directory in",
        path: base.clone(),
        source,
    })?;
    let mut results = Vec::new();
    for rec in &selected {
        results.push(verify_one(store, rec, opts, scratch.path())?);
    }
    let failed = results.iter().filter(|r| r.outcome == VerifyOutcome::Failed).count();
    Ok(VerifyReport { dir, results, ok: failed == 0, failed })
}

enum CopyError {
    Gone,
    Read(io::Error),
    Write(io::Error),
}

/// Copies `from` to `to`; read errors (the backup's problem) are told apart from write
/// errors (the scratch directory's).
fn copy_for_check(from: &Path, to: &Path) -> Result<(), CopyError> {
    let mut src = match File::open(from) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(CopyError::Gone),
        Err(e) => return Err(CopyError::Read(e)),
    };
    let mut dst = std::fs::OpenOptions::new().write(true).create_new(true).open(to).map_err(CopyError::Write)?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Read(e)),
        };
        dst.write_all(&buf[..n]).map_err(CopyError::Write)?;
    }
    Ok(())
}

fn verify_one(
    store: &BackupStore,
    rec: &BackupRecord,
    opts: &VerifyOptions,
    scratch: &Path,
) -> Result<BackupVerification, BackupError> {
    let started = Instant::now();
    let m = &rec.manifest;
    let mut out = BackupVerification {
        id: m.id.clone(),
        path: rec.path.clone(),
        kind: m.kind,
        created: m.created.clone(),
        good: m.is_good(),
        outcome: VerifyOutcome::Failed,
        hash_ok: None,
        integrity: None,
        reason: None,
        duration_ms: 0,
    };
    let copy = scratch.join(format!("{}.{}", m.id, backup::DATA_EXT));
    let cleanup = |copy: &Path| {
        for suffix in ["", "-journal", "-wal", "-shm"] {
            let _ = std::fs::remove_file(backup::sidecar(copy, suffix));
        }
    };
    cleanup(&copy);
    let ms = |s: Instant| crate::session::ms(s.elapsed());
    match copy_for_check(&rec.path, &copy) {
        Ok(()) => {}
        Err(CopyError::Gone) => {
            out.outcome = VerifyOutcome::Gone;
            out.reason = Some("removed (by retention?) while verifying".into());
            out.duration_ms = ms(started);
            return Ok(out);
        }
        Err(CopyError::Read(e)) => {
            cleanup(&copy);
            out.reason = Some(format!("cannot read the data file: {e}"));
            out.duration_ms = ms(started);
            return Ok(out);
        }
        Err(CopyError::Write(e)) => {
            cleanup(&copy);
            return Err(if crate::copies::copy::io_is_full(&e) {
                BackupError::DiskFull { dir: scratch.to_owned() }
            } else {
                BackupError::Io { action: "copying a backup into", path: copy, source: e }
            });
        }
    }
    let on_copy = BackupRecord { manifest: m.clone(), path: copy.clone(), manifest_path: rec.manifest_path.clone() };
    let hashed = store.verify_hash(&on_copy);
    let checked = backup::check_file(&copy, opts.check, opts.budget, None);
    cleanup(&copy);
    let hash_ok = hashed?;
    let (integrity, _) = checked?;
    out.hash_ok = Some(hash_ok);
    let copy_size = m.size;
    let mut reasons = Vec::new();
    if !hash_ok {
        reasons.push(format!(
            "size or SHA-256 differs from the manifest (recorded {copy_size} bytes, sha256 {}…): the file changed after it was published (bit rot, a failing disk, or tampering)",
            m.sha256.get(..12).unwrap_or(&m.sha256)
        ));
    }
    if !integrity.ok {
        if m.verified {
            reasons.push(integrity.summary());
        } else {
            reasons.push(format!(
                "not verified when taken (a {} copy, never restored as good); its check still fails: {}",
                m.kind,
                integrity.summary()
            ));
        }
    } else if !hash_ok {
        reasons.push(format!("{} on the changed file", integrity.summary()));
    }
    let ok = hash_ok && (integrity.ok || !m.verified);
    out.outcome = if ok { VerifyOutcome::Ok } else { VerifyOutcome::Failed };
    out.reason = (!reasons.is_empty()).then(|| reasons.join("; "));
    out.integrity = Some(integrity);
    out.duration_ms = ms(started);
    Ok(out)
}

// =============================================================================================
// The audit log
// =============================================================================================

/// Which audit records to show. Empty fields match everything; several events are ORed.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Only these events.
    pub events: Vec<AuditEvent>,
    /// Only records about this database (its `-wal`, `-journal` included).
    pub db: Option<PathBuf>,
    /// Only records at or after this time.
    pub since: Option<Timestamp>,
    /// Only records of this process id.
    pub pid: Option<u32>,
}

impl AuditFilter {
    /// True when `r` passes every given condition.
    pub fn matches(&self, r: &AuditRecord) -> bool {
        if !self.events.is_empty() && !self.events.contains(&r.event) {
            return false;
        }
        if self.pid.is_some_and(|p| p != r.process.pid) {
            return false;
        }
        if let Some(since) = self.since {
            match r.ts.parse::<Timestamp>() {
                Ok(t) if t >= since => {}
                _ => return false,
            }
        }
        if let Some(want) = &self.db {
            let Some(got) = &r.db else { return false };
            let (w, g) = (want.as_os_str().to_string_lossy(), got.as_os_str().to_string_lossy());
            let same = g == w
                || ["-wal", "-journal", "-shm"].iter().any(|s| g.strip_suffix(s) == Some(w.as_ref()))
                || std::fs::canonicalize(want).ok().is_some_and(|c| c == *got);
            if !same {
                return false;
            }
        }
        true
    }
}

/// Parses `--since`: an RFC 3339 time (`2026-03-01T12:00:00Z`) or a duration back from
/// `now` (`90s`, `15m`, `2h`, `7d`).
///
/// # Errors
/// A message saying what is accepted.
pub fn parse_since(s: &str, now: Timestamp) -> Result<Timestamp, String> {
    if let Ok(t) = s.parse::<Timestamp>() {
        return Ok(t);
    }
    let d = humantime::parse_duration(s.trim()).map_err(|_| {
        format!("`{s}` is neither an RFC 3339 time (2026-03-01T12:00:00Z) nor a duration (15m, 2h, 7d)")
    })?;
    let d = jiff::SignedDuration::try_from(d).map_err(|e| format!("`{s}`: {e}"))?;
    now.checked_sub(d).map_err(|e| format!("`{s}`: {e}"))
}

/// One complete line of the audit log: its text exactly as written, and its record.
#[derive(Debug, Clone)]
pub struct AuditLine {
    /// The JSON line (without its newline), so `--json` passes unknown fields through.
    pub raw: String,
    /// The parsed record.
    pub record: AuditRecord,
}

/// Reads an audit log incrementally: complete lines only (a partial last line waits for its
/// newline), across `logrotate` renames (the rest of the old file is read, then the new
/// file from its start) and truncation (`copytruncate`: read again from the start).
#[derive(Debug)]
pub struct AuditReader {
    path: PathBuf,
    file: Option<(File, (u64, u64))>,
    offset: u64,
    partial: Vec<u8>,
    skipped: u64,
}

impl AuditReader {
    /// A reader of the log at `path` (which need not exist yet), from its beginning.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        AuditReader { path: path.into(), file: None, offset: 0, partial: Vec::new(), skipped: 0 }
    }

    /// Lines that were not valid records (garbage, a schema this warden cannot read).
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Calls `each` for every complete line added since the last call.
    ///
    /// # Errors
    /// I/O errors other than the log not existing (yet).
    pub fn poll(&mut self, each: &mut dyn FnMut(AuditLine)) -> io::Result<()> {
        if self.file.is_none() && !self.reopen()? {
            return Ok(());
        }
        self.drain(each)?;
        // Rotated: the path now names another file. Finish nothing more from the old one
        // (drained above) and start the new one from its beginning.
        if let Ok(md) = std::fs::metadata(&self.path)
            && self.file.as_ref().is_some_and(|(_, id)| *id != (md.dev(), md.ino()))
            && self.reopen()?
        {
            self.drain(each)?;
        }
        Ok(())
    }

    fn reopen(&mut self) -> io::Result<bool> {
        match File::open(&self.path) {
            Ok(f) => {
                let md = f.metadata()?;
                self.file = Some((f, (md.dev(), md.ino())));
                self.offset = 0;
                self.partial.clear();
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn drain(&mut self, each: &mut dyn FnMut(AuditLine)) -> io::Result<()> {
        let Some((f, _)) = self.file.as_mut() else { return Ok(()) };
        if f.metadata()?.len() < self.offset {
            // Truncated in place (copytruncate): start over.
            self.offset = 0;
            self.partial.clear();
        }
        f.seek(SeekFrom::Start(self.offset))?;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = match f.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.offset += n as u64;
            let mut chunk = &buf[..n];
            while let Some(nl) = chunk.iter().position(|&b| b == b'\n') {
                self.partial.extend_from_slice(&chunk[..nl]);
                chunk = &chunk[nl + 1..];
                let line = std::mem::take(&mut self.partial);
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                match serde_json::from_slice::<AuditRecord>(&line) {
                    Ok(record) => each(AuditLine { raw: String::from_utf8_lossy(&line).into_owned(), record }),
                    Err(_) => self.skipped += 1,
                }
            }
            self.partial.extend_from_slice(chunk);
        }
        Ok(())
    }
}

/// The last `n` records of the log at `path` that match `filter`, oldest first, and the
/// reader positioned after them (for `--follow`). A missing log is empty.
///
/// # Errors
/// I/O errors reading the log.
pub fn tail_audit(path: &Path, filter: &AuditFilter, n: usize) -> io::Result<(Vec<AuditLine>, AuditReader)> {
    let mut reader = AuditReader::new(path);
    let mut last: VecDeque<AuditLine> = VecDeque::with_capacity(n.min(4096));
    reader.poll(&mut |l| {
        if n > 0 && filter.matches(&l.record) {
            if last.len() == n {
                last.pop_front();
            }
            last.push_back(l);
        }
    })?;
    Ok((last.into(), reader))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label_value(r#"a\b"c"#), r#"a\\b\"c"#);
        assert_eq!(escape_label_value("x\ny"), "x\\ny");
        assert_eq!(escape_label_value("/plain/path.db"), "/plain/path.db");
    }

    #[test]
    fn severity_order_is_the_documented_one() {
        let mut codes = vec![16, 10, 15, 12, 14, 13, 11];
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
        ] {
            assert!(SEVERITY.contains(&k.exit_code()));
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
        }
    }

    #[test]
    fn ids_match_exactly_first_then_by_unique_prefix() {
        let dir = Path::new("/d");
        let ids = || vec!["a-post".to_owned(), "a-post.2".to_owned(), "b".to_owned()];
        assert_eq!(pick(ids(), "a-post", |s| s.as_str(), "backup", dir).unwrap(), "a-post");
        assert_eq!(pick(ids(), "b", |s| s.as_str(), "backup", dir).unwrap(), "b");
        assert!(matches!(pick(ids(), "a", |s| s.as_str(), "backup", dir), Err(LookupError::Ambiguous { .. })));
        assert!(matches!(pick(ids(), "c", |s| s.as_str(), "backup", dir), Err(LookupError::NotFound { .. })));
        assert!(matches!(pick(ids(), "", |s| s.as_str(), "backup", dir), Err(LookupError::NotFound { .. })));
    }

    #[test]
    fn since_takes_times_and_durations() {
        let now: Timestamp = "2026-03-01T12:00:00Z".parse().unwrap();
        assert_eq!(parse_since("2026-03-01T11:00:00Z", now).unwrap(), "2026-03-01T11:00:00Z".parse().unwrap());
        assert_eq!(parse_since("90m", now).unwrap(), "2026-03-01T10:30:00Z".parse().unwrap());
        assert!(parse_since("yesterday", now).is_err());
    }

    #[test]
    fn audit_reader_waits_for_complete_lines_and_follows_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("audit.jsonl");
        let rec = |seq: u64| {
            let mut r = AuditRecord::new(AuditEvent::Open);
            r.seq = seq;
            serde_json::to_string(&r).unwrap()
        };
        let mut reader = AuditReader::new(&p);
        let mut seen = Vec::new();
        reader.poll(&mut |l| seen.push(l.record.seq)).unwrap();
        assert!(seen.is_empty(), "no log yet");
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&p).unwrap();
        let second = rec(2);
        let (head, tail) = second.split_at(10);
        write!(f, "{}\ngarbage\n{head}", rec(1)).unwrap();
        reader.poll(&mut |l| seen.push(l.record.seq)).unwrap();
        assert_eq!(seen, [1], "the partial line waits");
        writeln!(f, "{tail}").unwrap();
        reader.poll(&mut |l| seen.push(l.record.seq)).unwrap();
        assert_eq!(seen, [1, 2]);
        assert_eq!(reader.skipped(), 1);
        // logrotate: rename, one late line into the old file, then a new file.
        std::fs::rename(&p, dir.path().join("audit.jsonl.1")).unwrap();
        writeln!(f, "{}", rec(3)).unwrap();
        std::fs::write(&p, format!("{}\n", rec(4))).unwrap();
        reader.poll(&mut |l| seen.push(l.record.seq)).unwrap();
        assert_eq!(seen, [1, 2, 3, 4]);
        // copytruncate: emptied in place, then written again.
        std::fs::OpenOptions::new().write(true).open(&p).unwrap().set_len(0).unwrap();
        reader.poll(&mut |l| seen.push(l.record.seq)).unwrap();
        std::fs::write(&p, format!("{}\n", rec(5))).unwrap();
        reader.poll(&mut |l| seen.push(l.record.seq)).unwrap();
        assert_eq!(seen, [1, 2, 3, 4, 5]);
    }

    #[test]
    fn prometheus_text_has_help_and_type_before_samples() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("we\"ird.db");
        let r = collect(&StatusOptions::new(&db));
        assert_eq!(r.exit_code, 11, "{:#?}", r.problems);
        let text = prometheus_text(&r);
        assert!(text.ends_with('\n'));
        let mut typed = std::collections::BTreeSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                typed.insert(rest.split(' ').next().unwrap().to_owned());
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let name = line.split('{').next().unwrap();
            assert!(typed.contains(name), "{name} sampled before its TYPE");
            assert!(line.contains("db=\"") && line.contains("we\\\"ird.db"), "{line}");
        }
        assert!(text.contains("warden_healthy{"), "{text}");
    }
}

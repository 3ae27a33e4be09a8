//! The health artifact: one JSON file per session, the record an operator reads afterwards.
//!
//! Owns: the artifact's schema (documented field by field below; stable: fields are only
//! ever added, readers must ignore unknown ones) and writing it atomically, once at start
//! (`status: running`) and again at each step until it is final. Does not own: the values,
//! which [`super::Session`] fills in.
//!
//! Path: `<session_dir>/<session_id>.json`. Session ids sort by start time
//! (`20261125T181430Z-4f1c`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::gate::GateReport;
use super::watch::ForeignWriterWatch;
use crate::copies::kind::BackupKind;
use crate::copies::snapshot::SnapshotSummary;
use crate::storage::FsVerdict;
use crate::util::atomic;

/// Current artifact schema version.
pub const SCHEMA: u32 = 1;

/// Where a session stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionStatus {
    /// Preflight, gate or engine in progress. A `running` artifact whose runner is gone
    /// means warden itself was killed.
    Running,
    /// The engine exited 0 and the post-session backup is verified.
    Completed,
    /// The engine exited 0 but the post-session backup failed.
    CompletedWithoutBackup,
    /// The engine exited non-zero or was killed; a post-crash copy was attempted.
    EngineFailed,
    /// The engine could not be started.
    EngineNotStarted,
    /// A preflight step or the integrity gate refused: the engine never started.
    Refused,
    /// Stopped by a signal before the engine started.
    Aborted,
    /// Was `running` when a later session took the writer lock: warden itself was killed
    /// mid-session, so no post-session backup was taken.
    Abandoned,
    /// The engine was stopped (SIGTERM) because another process had the database open for
    /// writing (`on_foreign_writer = "stop"`); the post-session backup was still taken
    /// (`post` if the engine then closed cleanly). See `foreign_writers`.
    ForeignWriterStopped,
}

/// The lifecycle steps, in order; `failed_step` names the one that stopped a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Reading the configuration.
    Config,
    /// The database path: a readable and writable file (or one that may be created), a
    /// UTF-8 name, nothing in the way of warden's side files.
    Database,
    /// The linked SQLite is at least 3.51.3.
    SqliteVersion,
    /// The database and backup directory are on local storage.
    Storage,
    /// Enough free space for the pre-session backup.
    FreeSpace,
    /// The writer lock.
    WriterLock,
    /// The integrity gate.
    Gate,
    /// The verified pre-session backup.
    PreBackup,
    /// Starting the engine.
    EngineStart,
    /// The engine ran.
    Engine,
    /// The post-session (or post-crash) backup.
    PostBackup,
    /// The foreign-writer watch stopped the engine (`on_foreign_writer = "stop"`).
    ForeignWriter,
    /// Retention.
    Retention,
}

pub use crate::copies::backup::BackupRef;

/// The engine process.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineRun {
    /// Program and arguments, as given (no shell).
    pub command: Vec<String>,
    /// Its pid.
    pub pid: Option<u32>,
    /// When it started.
    pub started_at: Option<String>,
    /// When it exited.
    pub exited_at: Option<String>,
    /// Its exit code, when it exited.
    pub exit_code: Option<i32>,
    /// The signal that killed it, when one did.
    pub signal: Option<i32>,
    /// Exit code 0.
    pub clean: bool,
    /// Signals warden forwarded to it, by name.
    pub forwarded_signals: Vec<String>,
    /// Run time.
    pub duration_ms: Option<u64>,
}

/// The backup taken when the session ended.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostBackup {
    /// `post` after a clean exit, `post-crash` otherwise.
    pub kind: Option<BackupKind>,
    /// A verified `post` backup was published.
    pub ok: bool,
    /// The backup, when one was published.
    pub backup: Option<BackupRef>,
    /// One-line result of its check.
    pub integrity: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// The seal made from it (a clean close with a verified backup); absent in artifacts
    /// written before seals existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seal: Option<SealSummary>,
}

/// What the close sealed: the next session must find exactly this content.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealSummary {
    /// The seal was written.
    pub sealed: bool,
    /// The content digest (over every page's digest).
    pub content: Option<String>,
    /// Pages sealed.
    pub page_count: u32,
    /// Why no seal was written.
    pub error: Option<String>,
    /// What a seal cannot tell (writes by another process during the session look like
    /// the engine's).
    pub note: String,
}

/// What retention did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionSummary {
    /// Backups kept.
    pub kept: usize,
    /// Ids removed.
    pub removed: Vec<String>,
    /// Bytes freed.
    pub freed_bytes: u64,
    /// Why it failed (the session's outcome does not change).
    pub error: Option<String>,
}

/// Phase durations in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Durations {
    /// Version, storage, space and lock checks.
    pub preflight_ms: u64,
    /// Gate including the pre-session backup.
    pub gate_ms: u64,
    /// The engine.
    pub engine_ms: u64,
    /// Post-session backup.
    pub post_backup_ms: u64,
    /// Retention.
    pub retention_ms: u64,
    /// Everything.
    pub total_ms: u64,
}

/// The per-session health artifact (schema 1).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HealthArtifact {
    /// Schema version ([`SCHEMA`]).
    pub schema: u32,
    /// Session id.
    pub session_id: String,
    /// Where the session stands.
    pub status: SessionStatus,
    /// The step that stopped the session, if one did.
    pub failed_step: Option<Step>,
    /// The error that stopped it, with its hint.
    pub error: Option<String>,
    /// When warden started the session (RFC 3339 UTC).
    pub started_at: String,
    /// When the artifact became final.
    pub finished_at: Option<String>,
    /// The database.
    pub database: PathBuf,
    /// Storage verdict of the database's location.
    pub storage: Option<FsVerdict>,
    /// Where this session's backups go.
    pub backup_dir: PathBuf,
    /// Free bytes in the backup directory at start, and what the backup needed.
    pub free_space: Option<FreeSpace>,
    /// The integrity gate.
    pub gate: Option<GateReport>,
    /// The verified pre-session backup.
    pub pre_backup: Option<BackupRef>,
    /// The engine.
    pub engine: Option<EngineRun>,
    /// The post-session backup.
    pub post_backup: Option<PostBackup>,
    /// Retention.
    pub retention: Option<RetentionSummary>,
    /// Periodic analysis snapshots taken while the engine ran (`warden run
    /// --snapshot-every`); `null` when they were off. Absent in artifacts written before
    /// snapshots existed.
    #[serde(default)]
    pub snapshots: Option<SnapshotSummary>,
    /// Processes other than warden and its engine that had the database, its `-wal` or its
    /// `-journal` open for writing while the engine ran, each once, with the watch's
    /// policy and counters ([`super::watch`]); `null` when no engine ran under `warden run`.
    /// The database's content after the session cannot tell their writes from the
    /// engine's: this is the evidence. Absent in artifacts written before the watch existed.
    #[serde(default)]
    pub foreign_writers: Option<ForeignWriterWatch>,
    /// The push to the offsite copy after the session (`[offsite] push_after_session`); a
    /// failed push is recorded here and never fails the session. Absent when none ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offsite: Option<crate::copies::offsite::PushRecord>,
    /// Phase durations.
    pub durations: Durations,
    /// The exit code warden returned (the engine's own, or warden's for a refusal).
    pub exit_code: Option<i32>,
    /// Versions.
    pub versions: Versions,
    /// Who ran it.
    pub runner: crate::util::identity::ProcessIdentity,
    /// When the runner started and in which pid namespace: with `runner.pid` and
    /// `runner.boot_id` it tells a live runner from a later process that reuses its pid
    /// (`warden status` reports a `running` session whose runner is gone as
    /// `supervisor_died`). Absent in artifacts written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner_start: Option<crate::util::identity::ProcessStart>,
}

/// Free space at start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FreeSpace {
    /// Free bytes in the backup directory.
    pub available: u64,
    /// Bytes the backup needs.
    pub needed: u64,
}

/// Versions in play.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Versions {
    /// warden.
    pub warden: String,
    /// The linked SQLite.
    pub sqlite: String,
}

impl HealthArtifact {
    /// A fresh artifact with status `running`.
    pub fn new(session_id: &str, db: &Path, backup_dir: &Path) -> Self {
        HealthArtifact {
            schema: SCHEMA,
            session_id: session_id.to_owned(),
            status: SessionStatus::Running,
            failed_step: None,
            error: None,
            started_at: crate::util::identity::now_rfc3339(),
            finished_at: None,
            database: db.to_owned(),
            storage: None,
            backup_dir: backup_dir.to_owned(),
            free_space: None,
            gate: None,
            pre_backup: None,
            engine: None,
            post_backup: None,
            retention: None,
            snapshots: None,
            foreign_writers: None,
            offsite: None,
            durations: Durations::default(),
            exit_code: None,
            versions: Versions { warden: env!("CARGO_PKG_VERSION").to_owned(), sqlite: rusqlite::version().to_owned() },
            runner: crate::util::identity::ProcessIdentity::current(),
            runner_start: crate::util::identity::ProcessStart::current(),
        }
    }

    /// Writes the artifact to `path` atomically (`0640`).
    ///
    /// # Errors
    /// The I/O error; the previous version of the file is then intact.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let mut bytes = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        bytes.push(b'\n');
        atomic::write_atomic(path, &bytes, 0o640)
    }

    /// Reads an artifact.
    ///
    /// # Errors
    /// The I/O or parse error.
    pub fn read(path: &Path) -> std::io::Result<Self> {
        let bytes = std::fs::read(path)?;
        serde_json::from_slice(&bytes).map_err(std::io::Error::other)
    }

    /// True when the session ended with the engine closing cleanly.
    pub fn is_successful(&self) -> bool {
        matches!(self.status, SessionStatus::Completed | SessionStatus::CompletedWithoutBackup)
    }
}

/// The artifacts in `dir` that cannot be read or parsed (which [`list`] skips), with why,
/// sorted by name. A missing or unreadable directory is none here ([`list`] reports it).
pub fn unreadable(dir: &Path) -> Vec<(PathBuf, String)> {
    let Ok(rd) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut out: Vec<(PathBuf, String)> = rd
        .filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            !name.starts_with('.') && name.ends_with(".json")
        })
        .filter_map(|e| HealthArtifact::read(&e.path()).err().map(|err| (e.path(), err.to_string())))
        .collect();
    out.sort();
    out
}

/// Every artifact in `dir`, oldest first (by start time, then id). Unreadable files are
/// skipped with a warning.
///
/// # Errors
/// The I/O error of reading the directory (a missing directory is an empty list).
pub fn list(dir: &Path) -> std::io::Result<Vec<(PathBuf, HealthArtifact)>> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !name.ends_with(".json") {
            continue;
        }
        match HealthArtifact::read(&entry.path()) {
            Ok(a) => out.push((entry.path(), a)),
            Err(e) => tracing::warn!(file = %entry.path().display(), error = %e, "unreadable session artifact skipped"),
        }
    }
    // RFC 3339 UTC timestamps with a fixed format sort as text; ids break ties.
    out.sort_by(|a, b| (&a.1.started_at, &a.1.session_id).cmp(&(&b.1.started_at, &b.1.session_id)));
    Ok(out)
}

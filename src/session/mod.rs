//! Sessions: the lifecycle around an engine run, and the library API for Rust engines.
//!
//! Owns: the order of the steps and their fail-closed rules. [`Session::begin`] runs, in
//! order, stopping at the first refusal with nothing started:
//! 1. the SQLite version floor (3.51.3);
//! 2. the storage verdict of the database and the backup directory (local only);
//! 3. free space for the pre-session backup;
//! 4. the writer lock, taken here and held until [`Session::finish`];
//! 5. the integrity gate ([`gate`]) whose checked private copy becomes
//! 6. the verified pre-session backup ([`backup`]).
//!
//! [`Session::finish`] then takes the post-session backup (`post` after a clean close; a
//! clearly labelled `post-crash` copy otherwise, never counted as the last good backup),
//! applies retention ([`prune`]) and finalises the health artifact ([`health`]). Every
//! step, refusals included, is recorded in the artifact as it happens. What the post-session
//! backup records is the content, whoever wrote it: content cannot tell the engine's writes
//! from a foreign writer's; the evidence is `warden run`'s descriptor watch ([`watch`]).
//!
//! Does not own: starting and supervising an engine process ([`run`]), the checks
//! themselves ([`gate`], [`crate::format::scan`], [`backup`]; the copy, check and hash
//! steps that backups, snapshots, restores and salvage share are in `copies`), or which
//! backups to keep ([`crate::copies::retention`]).
//!
//! ```no_run
//! use sqlite_warden::session::{Session, SessionConfig, EngineOutcome};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let session = Session::begin(SessionConfig::new("/var/lib/engine/engine.db"))
//!     .map_err(|f| f.error)?;
//! let conn = session.open_engine(&Default::default())?;
//! conn.execute_batch("INSERT INTO fills(qty) VALUES (1)")?;
//! drop(conn); // close the engine connection before finishing
//! let artifact = session.finish(EngineOutcome::clean())?;
//! println!("session {} {:?}", artifact.session_id, artifact.status);
//! # Ok(()) }
//! ```

pub mod gate;
pub mod health;
pub mod notify;
mod offsite;
pub mod run;
pub mod sealing;
pub mod watch;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

pub use crate::copies::kind::BackupKind;

use self::gate::{GateFailure, GateOptions, GateReport};
use self::health::{BackupRef, FreeSpace, HealthArtifact, PostBackup, RetentionSummary, SessionStatus, Step};
use crate::copies::backup::{BackupError, BackupOptions, BackupStore, CheckMode};
use crate::copies::retention::RetentionPolicy;
use crate::copies::{backup, prune, restore, snapshot};
use crate::guard::connect::OpenError;
use crate::guard::lock::LockError;
use crate::guard::lock::{CloseState, WriterLock, WriterScope};
use crate::guard::vfs::RegisterError;
use crate::guard::vfs::{self, Guard};
use crate::storage::FsVerdict;
use crate::storage::ProbeError;
use crate::util::atomic;
use crate::util::progress::Progress;

/// Everything a session needs. [`SessionConfig::new`] gives the documented defaults.
#[derive(Clone)]
pub struct SessionConfig {
    /// The database.
    pub db: PathBuf,
    /// Backups of this database (default `<db>.warden/backups`).
    pub backup_dir: Option<PathBuf>,
    /// Health artifacts (default `<db>.warden/sessions`).
    pub session_dir: Option<PathBuf>,
    /// A missing or empty database is allowed (the engine creates it). Default `false`.
    pub create: bool,
    /// The gate's check (default [`CheckMode::Full`], `integrity_check`).
    pub check: CheckMode,
    /// The gate's time budget; exceeding it fails the gate (default 30 minutes).
    pub check_budget: Option<Duration>,
    /// Retention applied after each session.
    pub retention: RetentionPolicy,
    /// The guard (default: the process's default guard).
    pub guard: Option<Guard>,
    /// Progress of the gate and the backups.
    pub progress: Option<Arc<dyn Progress>>,
    /// Set to abandon the gate or a backup early (signals).
    pub cancel: Option<Arc<AtomicBool>>,
    /// Analysis snapshots (default [`snapshot::default_dir`], `<db>.warden/snapshots`).
    pub snapshot_dir: Option<PathBuf>,
    /// Publish an analysis snapshot this often while the engine runs (`warden run`);
    /// default `None`, off. A failed snapshot is logged and recorded in the artifact; it
    /// never stops the engine.
    pub snapshot_every: Option<Duration>,
    /// Snapshots kept (default [`snapshot::DEFAULT_KEEP`], 5; the one `latest.sqlite`
    /// points to is never removed).
    pub snapshot_keep: u32,
    /// The check of each snapshot (default `quick_check`; `None` for none).
    pub snapshot_check: Option<CheckMode>,
    /// What a foreign writer during `warden run` does ([`watch`]; default warn).
    pub on_foreign_writer: watch::OnForeignWriter,
    /// How often `warden run` looks for foreign writers (default [`watch::DEFAULT_EVERY`],
    /// 2 s; at least [`watch::MIN_EVERY`]).
    pub foreign_writer_every: Duration,
    /// How new backups are kept (default: the page store, zstd 3).
    pub store_format: crate::copies::backup::StoreFormat,
    /// Store the post-session restore point straight from the live file and leave its
    /// check to the next gate (`[backups] post_check = "next_gate"`); default: checked at
    /// close.
    pub defer_post_check: bool,
    /// Push to this offsite copy after a clean close with a good post-session point.
    pub offsite: Option<crate::copies::offsite::OffsiteConfig>,
}

impl std::fmt::Debug for SessionConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionConfig")
            .field("db", &self.db)
            .field("backup_dir", &self.backup_dir)
            .field("session_dir", &self.session_dir)
            .field("create", &self.create)
            .field("check", &self.check)
            .field("check_budget", &self.check_budget)
            .field("retention", &self.retention)
            .field("snapshot_dir", &self.snapshot_dir)
            .field("snapshot_every", &self.snapshot_every)
            .field("snapshot_keep", &self.snapshot_keep)
            .field("snapshot_check", &self.snapshot_check)
            .field("on_foreign_writer", &self.on_foreign_writer)
            .field("foreign_writer_every", &self.foreign_writer_every)
            .finish_non_exhaustive()
    }
}

impl SessionConfig {
    /// The defaults for `db`.
    pub fn new(db: impl Into<PathBuf>) -> Self {
        SessionConfig {
            db: db.into(),
            backup_dir: None,
            session_dir: None,
            create: false,
            check: CheckMode::Full,
            check_budget: Some(Duration::from_secs(30 * 60)),
            retention: RetentionPolicy::default(),
            guard: None,
            progress: None,
            cancel: None,
            snapshot_dir: None,
            snapshot_every: None,
            snapshot_keep: snapshot::DEFAULT_KEEP,
            snapshot_check: Some(CheckMode::Quick),
            on_foreign_writer: watch::OnForeignWriter::Warn,
            foreign_writer_every: watch::DEFAULT_EVERY,
            store_format: crate::copies::backup::StoreFormat::default(),
            defer_post_check: false,
            offsite: None,
        }
    }

    /// `<db>.warden`, the default home of backups and artifacts.
    pub fn state_dir(db: &Path) -> PathBuf {
        backup::sidecar(db, ".warden")
    }

    /// The backup directory in effect.
    pub fn backup_dir(&self) -> PathBuf {
        self.backup_dir.clone().unwrap_or_else(|| Self::state_dir(&self.db).join("backups"))
    }

    /// The artifact directory in effect.
    pub fn session_dir(&self) -> PathBuf {
        self.session_dir.clone().unwrap_or_else(|| Self::state_dir(&self.db).join("sessions"))
    }

    /// The snapshot directory in effect.
    pub fn snapshot_dir(&self) -> PathBuf {
        self.snapshot_dir.clone().unwrap_or_else(|| snapshot::default_dir(&self.db))
    }
}

/// Why a session could not begin or finish. Every variant says what to do next.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The linked SQLite is older than the floor.
    #[error(
        "SQLite {found} is older than {floor}, which fixes a WAL-reset corruption bug\n(hint: rebuild warden with the bundled SQLite, or upgrade the system library)"
    )]
    SqliteTooOld {
        /// The linked version.
        found: String,
        /// The floor.
        floor: &'static str,
    },
    /// The storage could not be examined.
    #[error(transparent)]
    Probe(#[from] ProbeError),
    /// The database or the backup directory is not on local storage.
    #[error(
        "`{path}` is on {}, {} storage ({}): warden starts sessions only on local disks\n(hint: move the {what} to a local disk; see `warden fs {path}`)",
        verdict.describe(), verdict.kind, verdict.reason
    )]
    StorageRefused {
        /// The path judged.
        path: PathBuf,
        /// `database` or `backup directory`.
        what: &'static str,
        /// The verdict.
        verdict: Box<FsVerdict>,
    },
    /// Not enough free space for the pre-session backup.
    #[error(
        "not enough space for the pre-session backup in `{dir}`: need {needed} bytes, {available} free\n(hint: free space, lower retention, or point backup_dir at another local disk)"
    )]
    NoSpace {
        /// The backup directory.
        dir: PathBuf,
        /// Bytes needed.
        needed: u64,
        /// Bytes free.
        available: u64,
    },
    /// Another writer holds the database.
    #[error("{0}")]
    WriterLocked(LockError),
    /// The integrity gate refused the database. The report says why.
    #[error("integrity gate refused `{}`: {}\n(hint: the engine was not started; see the session artifact, restore a verified backup, or salvage)", report.db.display(), report.summary())]
    GateFailed {
        /// The gate's report.
        report: Box<GateReport>,
    },
    /// The pre- or post-session backup could not be taken.
    #[error("{0}")]
    Backup(#[from] BackupError),
    /// The health artifact could not be written.
    #[error(
        "cannot write the session artifact `{}`: {source}\n(hint: {})",
        path.display(),
        crate::util::fmt::io_hint(source, "the session directory", path)
    )]
    Artifact {
        /// The artifact.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The guard could not be registered.
    #[error(transparent)]
    Register(#[from] RegisterError),
    /// A restore was interrupted: the database may be the old one, the restored one, or
    /// missing, until the restore is finished.
    #[error(
        "a restore of `{db}` was interrupted (record: {record})\n(hint: run `warden restore --db {db}` to finish or undo it, then start the session)"
    )]
    RestoreInterrupted {
        /// The database.
        db: PathBuf,
        /// The intent record.
        record: String,
    },
    /// The database path cannot be used (missing, a directory, no permission, not UTF-8, a
    /// side file in the way). Nothing was created for it.
    #[error(transparent)]
    Target(#[from] crate::storage::TargetError),
    /// Stopped by a signal before the engine started.
    #[error("session on `{db}` aborted before the engine started")]
    Aborted {
        /// The database.
        db: PathBuf,
    },
}

impl SessionError {
    /// The sysexits-style exit code for this error (documented in the README).
    pub fn exit_code(&self) -> u8 {
        use crate::util::exit;
        match self {
            SessionError::SqliteTooOld { .. } | SessionError::Register(_) => exit::SOFTWARE,
            SessionError::Probe(_) | SessionError::StorageRefused { .. } => exit::UNAVAILABLE,
            SessionError::NoSpace { .. } => exit::CANTCREAT,
            SessionError::WriterLocked(e) => e.exit_code(),
            SessionError::GateFailed { report } => match report.failure {
                Some(GateFailure::Missing | GateFailure::Empty) => exit::NOINPUT,
                Some(GateFailure::Seal) => exit::UNSEALED,
                _ => exit::DATAERR,
            },
            SessionError::Backup(e) if e.is_space() => exit::IOERR,
            SessionError::Backup(BackupError::Changing { .. }) => exit::DATAERR,
            SessionError::Backup(BackupError::Missing { .. } | BackupError::Empty { .. }) => exit::NOINPUT,
            SessionError::Backup(BackupError::StorageRefused { .. }) => exit::UNAVAILABLE,
            SessionError::Backup(BackupError::Target(e)) => e.exit_code(),
            SessionError::Backup(_) => exit::IOERR,
            SessionError::Artifact { .. } => exit::CANTCREAT,
            SessionError::Target(e) => e.exit_code(),
            SessionError::Aborted { .. } => exit::CANCELLED,
            SessionError::RestoreInterrupted { .. } => exit::TEMPFAIL,
        }
    }
}

/// A session that could not begin: the error, the step it stopped at, and the artifact
/// that records it.
#[derive(Debug)]
pub struct BeginFailure {
    /// What went wrong.
    pub error: SessionError,
    /// The step that refused.
    pub step: Step,
    /// The artifact as written (status `refused` or `aborted`).
    pub artifact: Box<HealthArtifact>,
    /// Where it was written, if it could be.
    pub artifact_path: Option<PathBuf>,
}

/// How the engine ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EngineOutcome {
    /// Its exit code.
    pub exit_code: Option<i32>,
    /// The signal that killed it.
    pub signal: Option<i32>,
    /// It never started (nothing ran; no post-session backup is needed).
    pub not_started: bool,
}

impl EngineOutcome {
    /// Exit code 0.
    pub fn clean() -> Self {
        EngineOutcome { exit_code: Some(0), signal: None, not_started: false }
    }

    /// A clean close.
    pub fn is_clean(&self) -> bool {
        self.exit_code == Some(0) && !self.not_started
    }

    /// The exit code a supervisor should return: the engine's own, `128 + signal` when it
    /// was killed.
    pub fn process_exit_code(&self) -> i32 {
        use crate::util::exit;
        match (self.exit_code, self.signal) {
            (Some(c), _) => c,
            (None, Some(s)) => i32::from(exit::SIGNAL_BASE) + s,
            (None, None) => i32::from(exit::SOFTWARE),
        }
    }
}

/// A running session: the writer lock is held, the gate passed, the pre-session backup is
/// verified. Finish it with [`Session::finish`]; dropping it releases the lock without a
/// post-session backup (the artifact then stays `running`).
#[derive(Debug)]
pub struct Session {
    config: SessionConfig,
    id: String,
    guard: Guard,
    lock: Option<WriterLock>,
    store: BackupStore,
    artifact: HealthArtifact,
    artifact_path: PathBuf,
    started: Instant,
    engine_started: Option<Instant>,
}

/// Milliseconds, saturating (for reports and manifests).
pub(crate) use crate::util::fmt::ms;

/// A new session id: `YYYYmmddTHHMMSSZ-xxxx`, sortable by start time.
pub fn new_session_id() -> String {
    let now = jiff::Timestamp::now();
    let salt = (u64::from(std::process::id()) << 20) ^ u64::from(now.subsec_nanosecond().unsigned_abs());
    format!("{}-{:04x}", now.strftime("%Y%m%dT%H%M%SZ"), salt & 0xffff)
}

pub(crate) use crate::format::header::change_counter as read_change_counter;

impl Session {
    /// Runs the preflight, takes the writer lock, runs the gate and publishes the verified
    /// pre-session backup. On any refusal nothing is started, the lock is released, and the
    /// artifact records the step and the reason.
    ///
    /// # Errors
    /// A [`BeginFailure`] naming the step, the error (with its exit code) and the artifact.
    pub fn begin(config: SessionConfig) -> Result<Session, Box<BeginFailure>> {
        let id = new_session_id();
        let started = Instant::now();
        let backup_dir = config.backup_dir();
        let session_dir = config.session_dir();
        let mut artifact = HealthArtifact::new(&id, &config.db, &backup_dir);
        let artifact_path = session_dir.join(format!("{id}.json"));
        // Set once the session directory was judged local and created.
        let session_dir_ok = std::cell::Cell::new(false);
        let fail = |mut artifact: HealthArtifact, step: Step, error: SessionError| {
            artifact.status = if matches!(error, SessionError::Aborted { .. }) {
                SessionStatus::Aborted
            } else {
                SessionStatus::Refused
            };
            artifact.failed_step = Some(step);
            artifact.error = Some(error.to_string());
            artifact.exit_code = Some(i32::from(error.exit_code()));
            artifact.finished_at = Some(crate::util::identity::now_rfc3339());
            artifact.durations.total_ms = ms(started.elapsed());
            // Never onto storage that was just refused: the refusal goes to stderr only.
            let artifact_path = if !session_dir_ok.get() {
                None
            } else {
                match artifact.write(&artifact_path) {
                    Ok(()) => Some(artifact_path.clone()),
                    Err(e) => {
                        tracing::error!(artifact = %artifact_path.display(), error = %e, "the session artifact could not be written");
                        None
                    }
                }
            };
            Box::new(BeginFailure { error, step, artifact: Box::new(artifact), artifact_path })
        };

        let guard = match config.guard.clone().map_or_else(vfs::default_guard, Ok) {
            Ok(g) => g,
            Err(e) => return Err(fail(artifact, Step::Config, e.into())),
        };
        // 0. The database path itself, before anything is created or locked for it: a
        // missing file, a directory, a file this user may not write or a name that is not
        // UTF-8 gets its own error, and no `<db>.warden/`, lock file or artifact.
        let target = crate::storage::resolve(&config.db)
            .map_err(|source| crate::storage::TargetError::Io { path: config.db.clone(), source })
            .and_then(|db| {
                crate::storage::check_database(&db, crate::storage::Need::Write { create: config.create })?;
                for dir in [&backup_dir, &session_dir, &config.snapshot_dir()] {
                    crate::storage::target::require_utf8(dir)?;
                }
                Ok(())
            });
        if let Err(e) = target {
            return Err(fail(artifact, Step::Database, e.into()));
        }
        // Every directory warden writes is judged like the database, before any is created:
        // a symlinked `<db>.warden` or a --session-dir on a network mount must receive
        // nothing, not even the refusal.
        let audit_dir = atomic::parent_of(guard.audit_path()).to_owned();
        let mut written = vec![(session_dir.clone(), "session directory"), (audit_dir, "audit directory")];
        if config.snapshot_every.is_some() {
            written.push((config.snapshot_dir(), "snapshot directory"));
        }
        for (i, (dir, what)) in written.into_iter().enumerate() {
            match guard.classify(&dir) {
                Ok(v) if v.kind.is_local() => {}
                Ok(v) => {
                    // The session directory is judged first: when it passed, the refusal
                    // is recorded there.
                    session_dir_ok.set(i > 0 && atomic::create_dir_synced(&session_dir, 0o750).is_ok());
                    artifact.storage = Some(v.clone());
                    let e = SessionError::StorageRefused { path: dir, what, verdict: Box::new(v) };
                    return Err(fail(artifact, Step::Storage, e));
                }
                // A snapshot directory that cannot even be examined is not network storage:
                // periodic snapshots then fail and are reported, and never stop the engine.
                Err(_) if what == "snapshot directory" => {}
                Err(e) => return Err(fail(artifact, Step::Storage, e.into())),
            }
        }
        if let Err(source) =
            crate::util::atomic::create_dir_synced(&session_dir, 0o750).and_then(|()| artifact.write(&artifact_path))
        {
            return Err(fail(artifact, Step::Config, SessionError::Artifact { path: artifact_path.clone(), source }));
        }
        session_dir_ok.set(true);
        // The default session directory is swept with the state directory.
        if session_dir != SessionConfig::state_dir(&config.db).join("sessions") {
            crate::util::atomic::sweep_dead_temps(&session_dir);
        }
        crate::copies::sweep_state(&config.db);

        // 1. SQLite floor.
        if vfs::wal_reset_bug().is_some() {
            let e = SessionError::SqliteTooOld { found: rusqlite::version().to_owned(), floor: "3.51.3" };
            return Err(fail(artifact, Step::SqliteVersion, e));
        }

        // 2. Storage of the database and of the backups.
        let store = BackupStore::new(&backup_dir, &config.db).with_format(config.store_format);
        let verdict = match guard.classify(&config.db) {
            Ok(v) => v,
            Err(e) => return Err(fail(artifact, Step::Storage, e.into())),
        };
        artifact.storage = Some(verdict.clone());
        if !verdict.kind.is_local() {
            let e =
                SessionError::StorageRefused { path: config.db.clone(), what: "database", verdict: Box::new(verdict) };
            return Err(fail(artifact, Step::Storage, e));
        }
        match guard.classify(&backup_dir) {
            Ok(v) if v.kind.is_local() => {}
            Ok(v) => {
                let e =
                    SessionError::StorageRefused { path: backup_dir, what: "backup directory", verdict: Box::new(v) };
                return Err(fail(artifact, Step::Storage, e));
            }
            Err(e) => return Err(fail(artifact, Step::Storage, e.into())),
        }
        if let Err(e) = store.ensure_dir() {
            return Err(fail(artifact, Step::Storage, e.into()));
        }

        // 3. Free space.
        let needed = BackupStore::space_needed(&config.db);
        let available = match store.free_bytes() {
            Ok(a) => a,
            Err(e) => return Err(fail(artifact, Step::FreeSpace, e.into())),
        };
        artifact.free_space = Some(FreeSpace { available, needed });
        if available < needed {
            let e = SessionError::NoSpace { dir: store.dir().to_owned(), needed, available };
            return Err(fail(artifact, Step::FreeSpace, e));
        }

        // 4. The writer lock, held from here to `finish`.
        let acquired = match WriterLock::acquire(&config.db, WriterScope::Process) {
            Ok(a) if !a.newly_taken && !a.inherited => {
                // This very process already has an engine connection open: joining its hold
                // would run the gate and byte-copy a set that may be mid-write.
                let e = LockError::Held {
                    db: config.db.clone(),
                    lock_path: a.lock.lock_path().to_owned(),
                    holder: Some(Box::new(a.holder.clone())),
                };
                drop(a);
                return Err(fail(artifact, Step::WriterLock, SessionError::WriterLocked(e)));
            }
            Ok(a) => a,
            Err(e) => return Err(fail(artifact, Step::WriterLock, SessionError::WriterLocked(e))),
        };
        let lock = acquired.lock;
        // An interrupted restore (or an unreadable record of one) must be finished first.
        if !matches!(restore::pending(&config.db), Ok(None)) {
            drop(lock);
            let record = restore::intent_path(&config.db).display().to_string();
            let e = SessionError::RestoreInterrupted { db: config.db.clone(), record };
            return Err(fail(artifact, Step::WriterLock, e));
        }
        let _ = lock.set_session(&id);
        // What the last clean close sealed, read before this session touches anything.
        let seal_state = sealing::state_before_gate(&config.db);
        // The database's stable identity, recorded in every backup from here on.
        if let Err(source) =
            crate::copies::identity::ensure(&crate::storage::resolve(&config.db).unwrap_or_else(|_| config.db.clone()))
        {
            drop(lock);
            let path = crate::format::names::state_dir(&config.db).join(crate::copies::identity::IDENTITY_FILE);
            return Err(fail(artifact, Step::WriterLock, SessionError::Artifact { path, source }));
        }
        if let Some(prev) = acquired.previous.filter(|p| p.state == crate::guard::lock::RecordState::Held) {
            tracing::warn!(db = %config.db.display(), holder = %prev.holder.describe(), "the previous writer never released the lock: it crashed or was killed");
        }
        mark_abandoned(&session_dir, &id);
        let preflight_ms = ms(started.elapsed());
        artifact.durations.preflight_ms = preflight_ms;
        let _ = artifact.write(&artifact_path);

        // 5 + 6. The gate and the pre-session backup.
        let gate_started = Instant::now();
        let opts = BackupOptions {
            kind: Some(BackupKind::Pre),
            session_id: Some(id.clone()),
            check: config.check,
            check_budget: config.check_budget,
            writer_lock_held: true,
            private_copy_unlocked: false,
            guard: Some(guard.clone()),
            cancel: config.cancel.clone(),
            keep_unverified: false,
            progress: config.progress.clone(),
            expect_seal: None,
            defer_check: false,
        };
        let gate_opts = GateOptions { allow_create: config.create, seal: Some(seal_state) };
        let result = gate::run(&config.db, &store, &gate_opts, &opts);
        artifact.durations.gate_ms = ms(gate_started.elapsed());
        let cancelled = config.cancel.as_ref().is_some_and(|c| c.load(std::sync::atomic::Ordering::Relaxed));
        match result {
            Ok((report, published)) => {
                artifact.pre_backup = published.as_ref().map(BackupRef::from);
                let passed = report.passed;
                artifact.gate = Some(report.clone());
                if cancelled {
                    drop(lock);
                    return Err(fail(artifact, Step::Gate, SessionError::Aborted { db: config.db.clone() }));
                }
                if !passed {
                    drop(lock);
                    if report.failure == Some(GateFailure::Seal) {
                        sealing::audit_mismatch(&guard, &config.db, &report);
                    }
                    return Err(fail(artifact, Step::Gate, SessionError::GateFailed { report: Box::new(report) }));
                }
                // From here this session may change the database: a crash leaves the seal
                // superseded, not failed.
                sealing::mark_open(&config.db, &id);
            }
            Err(BackupError::Cancelled { .. }) => {
                drop(lock);
                return Err(fail(artifact, Step::Gate, SessionError::Aborted { db: config.db.clone() }));
            }
            Err(e) => {
                drop(lock);
                return Err(fail(artifact, Step::PreBackup, e.into()));
            }
        }
        if let Err(source) = artifact.write(&artifact_path) {
            drop(lock);
            return Err(fail(artifact, Step::Config, SessionError::Artifact { path: artifact_path.clone(), source }));
        }
        Ok(Session {
            config,
            id,
            guard,
            lock: Some(lock),
            store,
            artifact,
            artifact_path,
            started,
            engine_started: None,
        })
    }

    /// The session id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The database.
    pub fn db(&self) -> &Path {
        &self.config.db
    }

    /// The session allows a missing or empty database (the engine creates it).
    pub fn create_allowed(&self) -> bool {
        self.config.create
    }

    /// The guard the session runs under.
    pub fn guard(&self) -> &Guard {
        &self.guard
    }

    /// The health artifact's path.
    pub fn artifact_path(&self) -> &Path {
        &self.artifact_path
    }

    /// The artifact as it stands.
    pub fn artifact(&self) -> &HealthArtifact {
        &self.artifact
    }

    /// The backup store.
    pub fn store(&self) -> &BackupStore {
        &self.store
    }

    /// The writer lock this session holds.
    pub fn writer_lock(&self) -> Option<&WriterLock> {
        self.lock.as_ref()
    }

    /// Opens the engine connection through the session's guard (it joins the session's
    /// writer lock). Close it before [`Session::finish`].
    ///
    /// # Errors
    /// As [`crate::guard::connect::open_engine`].
    pub fn open_engine(&self, opts: &crate::guard::connect::EngineOptions) -> Result<rusqlite::Connection, OpenError> {
        let mut opts = opts.clone();
        opts.guard = Some(self.guard.clone());
        opts.create = opts.create || self.config.create;
        crate::guard::connect::open_engine(&self.config.db, &opts)
    }

    /// Records that the engine started (for the artifact).
    pub fn engine_started(&mut self, command: Vec<String>, pid: Option<u32>) {
        self.engine_started = Some(Instant::now());
        self.artifact.engine = Some(health::EngineRun {
            command,
            pid,
            started_at: Some(crate::util::identity::now_rfc3339()),
            ..Default::default()
        });
        let _ = self.artifact.write(&self.artifact_path);
    }

    /// The session's configuration.
    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    /// Records the periodic snapshots so far in the artifact (written at once).
    pub fn record_snapshots(&mut self, summary: snapshot::SnapshotSummary) {
        self.artifact.snapshots = Some(summary);
        let _ = self.artifact.write(&self.artifact_path);
    }

    /// Records a signal forwarded to the engine.
    pub fn signal_forwarded(&mut self, name: &str) {
        if let Some(e) = self.artifact.engine.as_mut() {
            e.forwarded_signals.push(name.to_owned());
        }
    }

    /// Ends the session: post-session backup (`post` after a clean close, `post-crash`
    /// otherwise), retention, final artifact, lock release. Failures of these steps are
    /// recorded in the artifact; the returned artifact says what happened.
    ///
    /// # Errors
    /// [`SessionError::Artifact`] when the final artifact cannot be written.
    pub fn finish(mut self, outcome: EngineOutcome) -> Result<HealthArtifact, SessionError> {
        let db = self.config.db.clone();
        let engine_ms = self.engine_started.map(|s| ms(s.elapsed()));
        let engine = self.artifact.engine.get_or_insert_with(Default::default);
        engine.exit_code = outcome.exit_code;
        engine.signal = outcome.signal;
        engine.clean = outcome.is_clean();
        engine.exited_at = Some(crate::util::identity::now_rfc3339());
        engine.duration_ms = engine_ms;
        self.artifact.durations.engine_ms = engine_ms.unwrap_or(0);

        // The post-session backup.
        let post_started = Instant::now();
        let mut post = PostBackup::default();
        if outcome.not_started {
            post.error = Some("the engine never started; the pre-session backup is current".into());
        } else if !db.exists() {
            post.error = Some("the database does not exist after the session".into());
        } else if crate::copies::copy::is_empty_db(&db) {
            post.error = Some("the database is still an empty file after the session: nothing to back up".into());
        } else {
            let kind = if outcome.is_clean() { BackupKind::Post } else { BackupKind::PostCrash };
            post.kind = Some(kind);
            if outcome.is_clean() {
                sealing::final_checkpoint(&self);
            }
            // A private copy is safe only when no engine connection of this process is open.
            let alone = self.lock.as_ref().is_some_and(WriterLock::is_last);
            let opts = BackupOptions {
                kind: Some(kind),
                session_id: Some(self.id.clone()),
                check: self.config.check,
                check_budget: self.config.check_budget,
                writer_lock_held: alone,
                // Not alone: an engine connection of this process may still write.
                private_copy_unlocked: false,
                guard: Some(self.guard.clone()),
                cancel: None,
                keep_unverified: true,
                progress: self.config.progress.clone(),
                expect_seal: None,
                defer_check: self.config.defer_post_check,
            };
            match self.store.take(&db, &opts) {
                Ok(out) => {
                    post.integrity = Some(out.integrity.summary());
                    post.backup = out.published.as_ref().map(BackupRef::from);
                    let pending = out.published.as_ref().is_some_and(|r| r.manifest.check_pending());
                    post.ok = kind == BackupKind::Post && (out.integrity.ok || pending) && out.published.is_some();
                    if post.ok {
                        post.seal = Some(sealing::seal_close(&db, &self.id, &out));
                    }
                    if !out.integrity.ok && !pending {
                        post.error = Some(format!("the copy failed its check: {}", out.integrity.summary()));
                    }
                }
                Err(e) => post.error = Some(e.to_string()),
            }
        }
        self.artifact.durations.post_backup_ms = ms(post_started.elapsed());
        let post_ok = post.ok;
        let post_attempted = post.kind.is_some();
        self.artifact.post_backup = Some(post);
        self.artifact.status = match (outcome.not_started, outcome.is_clean(), post_ok) {
            (true, _, _) => SessionStatus::EngineNotStarted,
            (false, true, true) => SessionStatus::Completed,
            (false, true, false) => SessionStatus::CompletedWithoutBackup,
            (false, false, _) => SessionStatus::EngineFailed,
        };
        let stopped = self.stopped_for_foreign_writer();
        if stopped {
            self.artifact.status = SessionStatus::ForeignWriterStopped;
            self.artifact.failed_step = Some(Step::ForeignWriter);
        } else if outcome.not_started {
            self.artifact.failed_step = Some(Step::EngineStart);
        } else if !outcome.is_clean() {
            self.artifact.failed_step = Some(Step::Engine);
        } else if post_attempted && !post_ok {
            self.artifact.failed_step = Some(Step::PostBackup);
        }
        let _ = self.artifact.write(&self.artifact_path);

        // Retention: never the newest good backup, never what the latest successful
        // session refers to.
        let ret_started = Instant::now();
        let protected = protected_ids(&self.config.session_dir(), &self.artifact);
        let summary = match prune::prune(&self.store, &self.config.retention, &protected, false) {
            Ok(plan) => RetentionSummary {
                kept: plan.kept().count(),
                removed: plan.dropped().map(|d| d.id.clone()).collect(),
                freed_bytes: plan.freed_bytes(),
                error: None,
            },
            Err(e) => RetentionSummary { error: Some(e.to_string()), ..Default::default() },
        };
        self.artifact.retention = Some(summary);
        self.artifact.durations.retention_ms = ms(ret_started.elapsed());

        // Release the lock, recording the database as this clean close left it.
        if let Some(lock) = self.lock.take() {
            let close = if outcome.is_clean() { CloseState::observe(&db, read_change_counter(&db)) } else { None };
            lock.release(close);
        }
        if post_ok && let Some(cfg) = &self.config.offsite {
            self.artifact.offsite = Some(offsite::push_after_session(&db, &self.store, cfg, self.config.guard.clone()));
        }
        // A clean close whose seal could not be written is not a success: the next gate
        // would have nothing to compare with.
        let seal_lost =
            post_ok && self.artifact.post_backup.as_ref().and_then(|p| p.seal.as_ref()).is_some_and(|s| !s.sealed);
        let code = if stopped {
            i32::from(crate::util::exit::FOREIGN_WRITER)
        } else if outcome.not_started {
            outcome.process_exit_code()
        } else if outcome.is_clean() && ((post_attempted && !post_ok) || seal_lost) {
            74
        } else {
            outcome.process_exit_code()
        };
        self.artifact.exit_code = Some(code);
        self.artifact.finished_at = Some(crate::util::identity::now_rfc3339());
        self.artifact.durations.total_ms = ms(self.started.elapsed());
        self.artifact
            .write(&self.artifact_path)
            .map_err(|source| SessionError::Artifact { path: self.artifact_path.clone(), source })?;
        Ok(self.artifact)
    }
}

fn referenced(a: &HealthArtifact, out: &mut std::collections::BTreeSet<String>) {
    if let Some(p) = &a.pre_backup {
        out.insert(p.id.clone());
    }
    if let Some(b) = a.post_backup.as_ref().and_then(|p| p.backup.as_ref()) {
        out.insert(b.id.clone());
    }
}

/// Ids of the backups the latest successful session of `db` (per the artifacts in
/// `session_dir`) refers to: retention never removes them.
pub fn protected_by_latest_session(session_dir: &Path, db: &Path) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    if let Ok(all) = health::list(session_dir)
        && let Some((_, last_ok)) = all.iter().rev().find(|(_, a)| a.is_successful() && a.database == db)
    {
        referenced(last_ok, &mut out);
    }
    out
}

/// Backups the latest successful session (and this one) refer to.
fn protected_ids(session_dir: &Path, current: &HealthArtifact) -> std::collections::BTreeSet<String> {
    if current.is_successful() {
        let mut out = std::collections::BTreeSet::new();
        referenced(current, &mut out);
        return out;
    }
    let mut out = protected_by_latest_session(session_dir, &current.database);
    // The state the engine started from stays too.
    if let Some(p) = &current.pre_backup {
        out.insert(p.id.clone());
    }
    out
}

/// Marks `running` artifacts of earlier sessions as abandoned: the caller holds the writer
/// lock, so no earlier session of this database is alive.
fn mark_abandoned(session_dir: &Path, current: &str) {
    let Ok(all) = health::list(session_dir) else { return };
    for (path, mut a) in all {
        if a.session_id != current && a.status == SessionStatus::Running {
            a.status = SessionStatus::Abandoned;
            a.error = Some("warden was killed before the session ended (found by a later session)".into());
            a.finished_at = Some(crate::util::identity::now_rfc3339());
            let _ = a.write(&path);
        }
    }
}

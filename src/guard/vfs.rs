//! The guarded VFS: registration and the safe half of every decision it makes.
//!
//! Owns: [`GuardConfig`], registering a guard as a pair of VFS objects (`<name>` for the
//! engine role, `<name>-ro` for tooling) over a parent VFS (`unix`), and the safe logic of
//! an open: storage verdict, policy, the tooling downgrade, the writer lock, header and
//! hot-WAL checks, drift detection and the audit records. Does not own: pointer handling
//! and forwarding to the parent, which live in [`ffi`], the only file allowed `unsafe`.
//!
//! WAL is refused on non-local storage in four layers, each closing a hole in the others:
//! 1. `PRAGMA journal_mode=WAL` fails with a message naming the path and filesystem
//!    (`SQLITE_FCNTL_PRAGMA`);
//! 2. the file gets io_methods version 1, without `xShmMap`, so SQLite cannot use WAL even
//!    when the pragma reaches an attached database that never saw the file control;
//! 3. opening a `-wal` file of such a database is refused (WAL in `locking_mode=EXCLUSIVE`
//!    needs no shared memory, so layer 2 alone would let it through);
//! 4. a database whose header says WAL, or that has a hot `-wal` beside it, is refused at
//!    open. Nothing is ever deleted: a hot `-wal` holds committed transactions.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use crate::guard::audit::{AuditEvent, AuditLog, AuditRecord, Flags, HeaderInfo};
use crate::guard::lock::LockError;
use crate::guard::lock::{Acquired, CloseState, RecordState, WriterLock};
use crate::guard::policy::{self, Access, AuditFailure, Policy, Refusal, RefusalKind, Role, UriFlags};
use crate::storage::{self, FsProbe, FsVerdict, RealProbe};

/// The oldest SQLite the guard registers on: 3.51.3 (`SQLITE_VERSION_NUMBER` form). Older
/// releases carry a WAL-reset bug that can corrupt a database under concurrent checkpoints.
pub const SQLITE_FLOOR: i32 = 3_051_003;

/// Name of the default guard's engine VFS; the tooling VFS is this plus `-ro`.
pub const DEFAULT_NAME: &str = "warden";

/// Everything a guard needs to decide. One config serves both VFS objects of a guard.
#[derive(Debug, Clone)]
pub struct GuardConfig {
    /// Where filesystem facts come from: [`RealProbe`] by default; tests pass a
    /// [`storage::SimulatedProbe`].
    pub probe: Arc<dyn FsProbe>,
    /// The rules.
    pub policy: Policy,
    /// Directory of the audit log (see [`crate::guard::audit`] for the default).
    pub audit_dir: PathBuf,
    /// The VFS being wrapped (`unix`).
    pub parent: String,
}

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig {
            probe: Arc::new(RealProbe::new()),
            policy: Policy::default(),
            audit_dir: AuditLog::default_dir(),
            parent: "unix".to_owned(),
        }
    }
}

/// State shared by both VFS objects of a guard and by every file they open.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: GuardConfig,
    pub(crate) audit: AuditLog,
    pub(crate) engine_name: String,
    pub(crate) tool_name: String,
}

impl Shared {
    pub(crate) fn vfs_name(&self, role: Role) -> &str {
        match role {
            Role::Engine => &self.engine_name,
            Role::Tool => &self.tool_name,
        }
    }

    fn audit_failure(&self, role: Role) -> AuditFailure {
        match role {
            Role::Engine => self.config.policy.engine_audit_failure,
            Role::Tool => self.config.policy.tool_audit_failure,
        }
    }
}

/// A registered guard: two VFS names sharing one config. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Guard {
    shared: Arc<Shared>,
}

impl Guard {
    /// The engine role's VFS name (`warden`).
    pub fn engine_vfs(&self) -> &str {
        &self.shared.engine_name
    }

    /// The tooling role's VFS name (`warden-ro`).
    pub fn tool_vfs(&self) -> &str {
        &self.shared.tool_name
    }

    /// The VFS name for `role`.
    pub fn vfs_name(&self, role: Role) -> &str {
        self.shared.vfs_name(role)
    }

    /// The config this guard was registered with.
    pub fn config(&self) -> &GuardConfig {
        &self.shared.config
    }

    /// The audit log file.
    pub fn audit_path(&self) -> &Path {
        self.shared.audit.path()
    }

    /// The storage verdict for `path`, through this guard's probe.
    ///
    /// # Errors
    /// [`crate::storage::ProbeError`] when the path or mount table cannot be examined.
    pub fn classify(&self, path: &Path) -> Result<FsVerdict, crate::storage::ProbeError> {
        storage::classify(self.shared.config.probe.as_ref(), path)
    }

    /// Appends a record to this guard's audit log (the caller applies its own failure policy).
    ///
    /// # Errors
    /// [`crate::guard::audit::AuditError`] when the log cannot be written.
    pub fn audit(&self, rec: &mut AuditRecord) -> Result<(), crate::guard::audit::AuditError> {
        self.shared.audit.append(rec)
    }
}

fn guards() -> std::sync::MutexGuard<'static, HashMap<String, Guard>> {
    static G: OnceLock<Mutex<HashMap<String, Guard>>> = OnceLock::new();
    G.get_or_init(Mutex::default).lock().unwrap_or_else(PoisonError::into_inner)
}

/// Registers a guard as `name` (engine role) and `name-ro` (tooling role).
///
/// Registering is process-wide and permanent (SQLite keeps pointers to the VFS objects, so
/// they are never freed). Neither VFS becomes SQLite's default.
///
/// # Errors
/// [`RegisterError::SqliteTooOld`] below [`SQLITE_FLOOR`]; [`RegisterError::NameTaken`] if
/// either name is already registered (by warden or anyone else);
/// [`RegisterError::ParentMissing`] / [`RegisterError::SelfWrap`] for a bad parent.
pub fn register(name: &str, config: GuardConfig) -> Result<Guard, RegisterError> {
    let mut reg = guards();
    if reg.contains_key(name) {
        return Err(RegisterError::NameTaken { name: name.to_owned() });
    }
    let audit = AuditLog::in_dir(&config.audit_dir);
    let shared = Arc::new(Shared { config, audit, engine_name: name.to_owned(), tool_name: format!("{name}-ro") });
    crate::sys::vfs::register_pair(&shared)?;
    let guard = Guard { shared };
    reg.insert(name.to_owned(), guard.clone());
    Ok(guard)
}

/// The process's default guard (`warden` / `warden-ro`, real probe, default policy, audit
/// in the default directory), registered on first use.
///
/// # Errors
/// As [`register`], on the first call only; later calls return the same guard or error.
pub fn default_guard() -> Result<Guard, RegisterError> {
    static DEFAULT: OnceLock<Result<Guard, String>> = OnceLock::new();
    let r = DEFAULT.get_or_init(|| {
        if let Some(g) = guards().get(DEFAULT_NAME) {
            return Ok(g.clone());
        }
        register(DEFAULT_NAME, GuardConfig::default()).map_err(|e| e.to_string())
    });
    match r {
        Ok(g) => Ok(g.clone()),
        Err(msg) => Err(RegisterError::NameTaken { name: format!("{DEFAULT_NAME} ({msg})") }),
    }
}

/// The guard registered under `name`, if any.
pub fn find_guard(name: &str) -> Option<Guard> {
    guards().get(name).cloned()
}

/// The version of the SQLite library actually linked, as a number (`3054001`).
pub fn sqlite_version_number() -> i32 {
    rusqlite::version_number()
}

thread_local! {
    static LAST_REFUSAL: RefCell<Option<Refusal>> = const { RefCell::new(None) };
}

/// Takes the refusal the guard recorded on this thread during the last failed open or
/// refused pragma. The factory turns it into a typed error; SQLite itself only carries a
/// result code and a message.
pub fn take_last_refusal() -> Option<Refusal> {
    LAST_REFUSAL.with(|r| r.borrow_mut().take())
}

pub(crate) fn set_last_refusal(r: Refusal) {
    LAST_REFUSAL.with(|slot| *slot.borrow_mut() = Some(r));
}

/// What the safe half decided before the parent opens the file.
pub(crate) struct PreOpen {
    pub(crate) path: PathBuf,
    pub(crate) verdict: FsVerdict,
    pub(crate) access: Access,
    pub(crate) flags_requested: i32,
    pub(crate) flags: i32,
    pub(crate) downgraded: bool,
    /// Tooling may write only to a brand-new file (a `VACUUM INTO` or backup target).
    pub(crate) fresh_target: bool,
    pub(crate) lock: Option<Acquired>,
}

const RW: i32 = libsqlite3_sys::SQLITE_OPEN_READWRITE;
const CREATE: i32 = libsqlite3_sys::SQLITE_OPEN_CREATE;
const RO: i32 = libsqlite3_sys::SQLITE_OPEN_READONLY;

/// A file tooling may create and write: it does not exist, or is empty with no writer lock
/// file beside it (an engine's brand-new database is never a fresh target).
fn is_fresh_target(path: &Path) -> bool {
    match std::fs::metadata(path) {
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
        Ok(md) => md.len() == 0 && !crate::guard::lock::lock_path_for(path).exists(),
    }
}

pub(crate) fn pre_open(
    shared: &Shared,
    role: Role,
    path: &Path,
    flags: i32,
    uri: UriFlags,
) -> Result<PreOpen, Refusal> {
    let probe = shared.config.probe.as_ref();
    let verdict = probe
        .facts_nearest(path)
        .and_then(|facts| storage::classify_facts(probe, &facts))
        .unwrap_or_else(|e| storage::probe::unknown_verdict(format!("storage could not be examined: {e}")));
    let access = policy::decide(role, path, &verdict, uri, &shared.config.policy)?;
    let mut plan = PreOpen {
        path: path.to_owned(),
        verdict,
        access,
        flags_requested: flags,
        flags,
        downgraded: false,
        fresh_target: false,
        lock: None,
    };
    match role {
        Role::Tool if flags & RW != 0 => {
            if is_fresh_target(path) {
                plan.fresh_target = true;
            } else {
                plan.flags = (flags & !(RW | CREATE)) | RO;
                plan.downgraded = true;
            }
        }
        Role::Engine if flags & RW != 0 => match WriterLock::acquire(path, shared.config.policy.writer_scope) {
            Ok(a) => plan.lock = Some(a),
            Err(LockError::Held { lock_path, holder, db }) => {
                let text = crate::guard::lock::holder_text(holder.as_deref());
                return Err(Refusal {
                    kind: RefusalKind::WriterLocked { lock_path, holder },
                    path: db.clone(),
                    verdict: Some(Box::new(plan.verdict)),
                    message: format!("warden: `{}` already has a writer: {text}", db.display()),
                });
            }
            Err(e) => {
                return Err(Refusal {
                    kind: RefusalKind::LockUnavailable,
                    path: path.to_owned(),
                    verdict: Some(Box::new(plan.verdict)),
                    message: format!("warden: {e}"),
                });
            }
        },
        _ => {}
    }
    Ok(plan)
}

/// Checks made once the parent has opened the file; returns extra audit records (drift,
/// unclean previous close) to write after the open record.
pub(crate) fn post_open(
    role: Role,
    pre: &PreOpen,
    header: Option<&HeaderInfo>,
    wal_present: bool,
    flags_actual: i32,
) -> Result<Vec<AuditRecord>, Refusal> {
    if role == Role::Engine && pre.flags & RW != 0 && flags_actual & RO != 0 {
        return Err(Refusal {
            kind: RefusalKind::NotWritable,
            path: pre.path.clone(),
            verdict: Some(Box::new(pre.verdict.clone())),
            message: format!("warden: `{}` is not writable by this process", pre.path.display()),
        });
    }
    if !pre.access.wal_allowed {
        if header.is_some_and(|h| h.valid && h.wal) {
            return Err(Refusal::wal(pre.path.clone(), &pre.verdict, "opening a WAL-mode database"));
        }
        if wal_present {
            return Err(Refusal::wal(
                pre.path.clone(),
                &pre.verdict,
                "opening a database with a hot -wal file beside it (the -wal was left untouched)",
            ));
        }
    }
    let mut extra = Vec::new();
    if let Some(acq) = pre.lock.as_ref().filter(|a| a.newly_taken)
        && let Some(prev) = &acq.previous
    {
        if prev.state == RecordState::Held {
            let mut r = AuditRecord::new(AuditEvent::UncleanPreviousClose);
            r.db = Some(pre.path.clone());
            r.lock_holder = Some(prev.holder.clone());
            r.reason = Some(format!(
                "the previous engine ({}) never released the writer lock: it crashed or was killed",
                prev.holder.describe()
            ));
            extra.push(r);
        } else if let Some(before) = &prev.last_close {
            let now = CloseState::observe(&pre.path, header.map(|h| h.change_counter));
            if let Some(now) = now.filter(|n| before.differs(n)) {
                let mut r = AuditRecord::new(AuditEvent::ChangedOutsideWarden);
                r.db = Some(pre.path.clone());
                r.reason = Some("the database changed since the engine last closed it, and not through warden".into());
                r.previous = Some(before.clone());
                r.current = Some(now);
                extra.push(r);
            }
        }
    }
    Ok(extra)
}

pub(crate) fn open_record(
    shared: &Shared,
    role: Role,
    pre: &PreOpen,
    header: Option<HeaderInfo>,
    flags_actual: i32,
) -> AuditRecord {
    let event = if pre.downgraded { AuditEvent::OpenDowngraded } else { AuditEvent::Open };
    let mut r = AuditRecord::new(event);
    r.role = Some(role);
    r.vfs = Some(shared.vfs_name(role).to_owned());
    r.db = Some(pre.path.clone());
    r.file_kind = Some("main_db".into());
    r.flags_requested = Some(Flags::decode(pre.flags_requested));
    r.flags_actual = Some(Flags::decode(flags_actual));
    r.fs = Some(pre.verdict.clone());
    r.header = header;
    r.decision = Some(if pre.downgraded { "downgrade" } else { "allow" }.into());
    r.reason = Some(if pre.downgraded {
        "tooling opens are read-only: READWRITE downgraded to READONLY".into()
    } else if pre.fresh_target {
        "tooling may write a brand-new file (VACUUM INTO or backup target)".into()
    } else if pre.access.wal_allowed {
        format!("{}; WAL allowed", pre.verdict.reason)
    } else {
        format!("{}; rollback journal only, WAL refused", pre.verdict.reason)
    });
    r.lock_holder = pre.lock.as_ref().map(|a| a.holder.clone());
    r.rc = Some(0);
    r
}

pub(crate) fn refusal_record(shared: &Shared, role: Role, refusal: &Refusal, flags: i32, rc: i32) -> AuditRecord {
    let event = match refusal.kind {
        RefusalKind::WalRefused => AuditEvent::WalRefused,
        RefusalKind::WriterLocked { .. } => AuditEvent::WriterLockBusy,
        _ => AuditEvent::OpenRefused,
    };
    let mut r = AuditRecord::new(event);
    r.role = Some(role);
    r.vfs = Some(shared.vfs_name(role).to_owned());
    r.db = Some(refusal.path.clone());
    r.file_kind = Some(if flags & libsqlite3_sys::SQLITE_OPEN_WAL != 0 { "wal" } else { "main_db" }.into());
    r.flags_requested = Some(Flags::decode(flags));
    r.fs = refusal.verdict.as_deref().cloned();
    r.decision = Some("refuse".into());
    r.reason = Some(refusal.message.clone());
    r.rc = Some(rc);
    if let RefusalKind::WriterLocked { holder, .. } = &refusal.kind {
        r.lock_holder = holder.as_deref().cloned();
    }
    r
}

/// Writes a record, honouring the failure policy of `role`: `Err` only when the record was
/// lost and the policy is fail-closed.
pub(crate) fn audit_or_refuse(shared: &Shared, role: Role, rec: &mut AuditRecord) -> Result<(), Refusal> {
    match shared.audit.append(rec) {
        Ok(()) => Ok(()),
        Err(e) if shared.audit_failure(role) == AuditFailure::FailClosed => Err(Refusal {
            kind: RefusalKind::AuditUnavailable,
            path: rec.db.clone().unwrap_or_default(),
            verdict: rec.fs.clone().map(Box::new),
            message: format!("warden: {e}"),
        }),
        Err(e) => {
            tracing::warn!(target: "sqlite_warden::guard::audit", error = %e, "audit record lost (fail-open policy)");
            Ok(())
        }
    }
}

/// Best-effort record (close, lock release, extra events): failures are logged only.
pub(crate) fn audit_best_effort(shared: &Shared, rec: &mut AuditRecord) {
    let _ = shared.audit.append(rec);
}

/// The JSON `PRAGMA warden_status` returns.
pub(crate) fn status_json(
    shared: &Shared,
    role: Role,
    path: &Path,
    verdict: &FsVerdict,
    access: Access,
    stats: &crate::guard::audit::FileStats,
) -> String {
    let lock = crate::guard::lock::inspect(path).ok();
    serde_json::json!({
        "role": role,
        "vfs": shared.vfs_name(role),
        "db": path,
        "fs": verdict,
        "wal_allowed": access.wal_allowed,
        "writer_lock": lock,
        "stats": stats,
        "audit_log": shared.audit.path(),
        "guard_version": env!("CARGO_PKG_VERSION"),
    })
    .to_string()
}
/// Registering the guard VFS failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegisterError {
    /// The linked SQLite is older than the floor.
    #[error(
        "SQLite {found} is too old: warden needs {required} or newer (older releases carry the WAL-reset corruption bug)\n(hint: build with rusqlite's `bundled` feature or upgrade the system libsqlite3)"
    )]
    SqliteTooOld {
        /// Version found, e.g. `3.40.1`.
        found: String,
        /// Minimum version, e.g. `3.51.3`.
        required: String,
    },
    /// Another VFS object already uses the name.
    #[error("a different VFS is already registered as `{name}`\n(hint: pick another name for this guard)")]
    NameTaken {
        /// The name.
        name: String,
    },
    /// The parent VFS does not exist.
    #[error("parent VFS `{name}` is not registered in this SQLite")]
    ParentMissing {
        /// The parent's name.
        name: String,
    },
    /// The parent VFS is itself a warden guard.
    #[error("parent VFS `{name}` is a warden guard; a guard must wrap a real VFS, not itself")]
    SelfWrap {
        /// The parent's name.
        name: String,
    },
    /// SQLite refused the registration.
    #[error("sqlite3_vfs_register(`{name}`) failed with code {code}")]
    Sqlite {
        /// The name.
        name: String,
        /// SQLite's result code.
        code: i32,
    },
    /// A name with a NUL byte.
    #[error("invalid VFS name `{name}`")]
    InvalidName {
        /// The name.
        name: String,
    },
}


//! The safe half of one open of a guarded database: every decision the VFS makes.
//!
//! Owns: the storage verdict and policy of an open, the tooling downgrade, the writer lock,
//! header and hot-WAL checks, drift detection, the audit records of opens, refusals and
//! closes, the WAL refusals of layers 1, 3 and 5, and `PRAGMA warden_status`. It implements
//! the [`Shim`], [`PendingOpen`] and [`GuardedFile`] traits that `sys` calls. Does not own
//! pointers, buffers or forwarding to the parent VFS (`sys`).

use std::cell::RefCell;
use std::ffi::c_int;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use libsqlite3_sys as ffi;

use crate::guard::audit::AuditLog;
use crate::guard::audit::{AuditEvent, AuditRecord, FileStats, Flags, HeaderInfo};
use crate::guard::lock::{Acquired, CloseState, LockError, RecordState, WriterLock};
use crate::guard::policy::{self, Access, AuditFailure, Policy, Refusal, RefusalKind, Role, UriFlags};
use crate::storage::{self, FsProbe, FsVerdict};
use crate::sys::shim::{GuardedFile, OpenRequest, Opened, PendingOpen, PragmaAnswer, Refused, Shim};

/// State shared by both VFS objects of a guard and by every file they open.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) probe: Arc<dyn FsProbe>,
    pub(crate) policy: Policy,
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

    pub(crate) fn audit_failure(&self, role: Role) -> AuditFailure {
        match role {
            Role::Engine => self.policy.engine_audit_failure,
            Role::Tool => self.policy.tool_audit_failure,
        }
    }
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

/// One role of a registered guard, as `sys` sees it.
pub(crate) struct RoleVfs {
    pub(crate) shared: Arc<Shared>,
    pub(crate) role: Role,
}

impl Shim for RoleVfs {
    fn open(&self, req: &OpenRequest<'_>) -> Result<Box<dyn PendingOpen>, Refused> {
        let uri = UriFlags { nolock: req.nolock, immutable: req.immutable };
        match pre_open(&self.shared, self.role, req.path, req.flags, uri) {
            Ok(pre) => Ok(Box::new(Pending { shared: Arc::clone(&self.shared), role: self.role, pre })),
            Err(r) => Err(refused(&self.shared, self.role, r, req.flags)),
        }
    }

    /// Every connection whose main database is on the tooling VFS, whoever opened it (the
    /// factory, a host through the extension, plain rusqlite by VFS name), is restricted
    /// before the host gets it: see [`restrict_tool_connection`].
    fn connection_opened(&self, conn: &rusqlite::Connection) -> Result<(), String> {
        match self.role {
            Role::Engine => Ok(()),
            Role::Tool => restrict_tool_connection(conn),
        }
    }

    fn may_attach(&self, name: Option<&str>) -> bool {
        let Some(why) = crate::guard::attach::attach_refusal(name, &self.shared.tool_name) else { return true };
        let mut r = AuditRecord::new(AuditEvent::RoViolation);
        r.role = Some(self.role);
        r.vfs = Some(self.shared.vfs_name(self.role).to_owned());
        r.db = Some(PathBuf::from(name.unwrap_or("<not a literal>")));
        r.decision = Some("refuse".into());
        r.reason = Some(format!(
            "a tooling connection tried to ATTACH `{}`: {why}; refused (tooling may attach only in-memory databases and files through its own read-only VFS)",
            name.unwrap_or("<not a literal>")
        ));
        audit_best_effort(&self.shared, &mut r);
        false
    }
}

/// What makes a tooling connection unable to write anything through `ATTACH`, for a user
/// who has only SQL (no pragma, no SQL function undoes either):
/// - `SQLITE_DBCONFIG_ENABLE_ATTACH_WRITE` and `_CREATE` off: every attached database is
///   opened read-only, whatever its URI (`vfs=unix`, `mode=rw`) asks for, and none is
///   created. This holds even if the host replaces the authorizer below; only the host's
///   own `sqlite3_db_config` call could switch it back on. (`VACUUM INTO` switches both on
///   for its own target internally; the authorizer still vets that target's name.)
/// - the `ATTACH` authorizer: anything but an in-memory database or a file through this same
///   tooling VFS is refused outright, read-only or not, and audited (`ro_violation`), so an
///   attached file is always judged, downgraded and audited by the guard.
///
/// On a host SQLite older than 3.49 (the loadable extension in Debian's or Ubuntu's
/// python3) the two settings do not exist, and the authorizer is the one layer: an attached
/// file still opens only through the tooling VFS, read-only and audited, but a host that
/// replaces the authorizer could attach other files.
///
/// # Errors
/// A message when a setting does not take (the open then fails: fail closed).
pub(crate) fn restrict_tool_connection(conn: &rusqlite::Connection) -> Result<(), String> {
    use crate::sys::sqlite::{DBCONFIG_ENABLE_ATTACH_CREATE, DBCONFIG_ENABLE_ATTACH_WRITE, db_flag};
    if crate::guard::sqlite_host::sqlite_version_number() < 3_049_000 {
        return crate::sys::hooks::restrict_attach(conn);
    }
    for (op, what) in [(DBCONFIG_ENABLE_ATTACH_WRITE, "ATTACH_WRITE"), (DBCONFIG_ENABLE_ATTACH_CREATE, "ATTACH_CREATE")]
    {
        match db_flag(conn, op, Some(false)) {
            Ok(false) => {}
            Ok(true) => return Err(format!("SQLITE_DBCONFIG_ENABLE_{what} stayed on for a tooling connection")),
            Err(rc) => {
                return Err(format!(
                    "cannot switch off SQLITE_DBCONFIG_ENABLE_{what} for a tooling connection (SQLite {}, code {rc})",
                    rusqlite::version()
                ));
            }
        }
    }
    crate::sys::hooks::restrict_attach(conn)
}

/// Records a refusal (audit, the thread's last refusal) and says how SQLite sees it.
fn refused(shared: &Shared, role: Role, refusal: Refusal, flags: i32) -> Refused {
    let (rc, errno) = match refusal.kind {
        RefusalKind::WriterLocked { .. } | RefusalKind::WriterElsewhere => (ffi::SQLITE_BUSY, libc::EWOULDBLOCK),
        RefusalKind::Forked { .. } | RefusalKind::LockReplaced { .. } => (ffi::SQLITE_READONLY, libc::EPERM),
        RefusalKind::NotWritable => (ffi::SQLITE_READONLY, libc::EROFS),
        RefusalKind::UnsafeUriParameter { .. } => (ffi::SQLITE_CANTOPEN, libc::EPERM),
        RefusalKind::PathNotUtf8 => (ffi::SQLITE_CANTOPEN, libc::EILSEQ),
        RefusalKind::AuditUnavailable | RefusalKind::LockUnavailable => (ffi::SQLITE_CANTOPEN, libc::EIO),
        RefusalKind::NetworkFilesystem
        | RefusalKind::NoLocking
        | RefusalKind::SuspectFilesystem
        | RefusalKind::WalRefused => (ffi::SQLITE_CANTOPEN, libc::EREMOTE),
    };
    let mut rec = refusal_record(shared, role, &refusal, flags, rc);
    audit_best_effort(shared, &mut rec);
    let message = refusal.message.clone();
    set_last_refusal(refusal);
    Refused { rc, errno, message }
}

/// An open the policy allowed, waiting for the parent VFS.
struct Pending {
    shared: Arc<Shared>,
    role: Role,
    pre: PreOpen,
}

impl PendingOpen for Pending {
    fn flags(&self) -> c_int {
        self.pre.flags
    }

    fn wal_allowed(&self) -> bool {
        self.pre.access.wal_allowed
    }

    fn hot_wal_path(&self) -> Option<PathBuf> {
        (!self.pre.access.wal_allowed).then(|| crate::format::names::wal(&self.pre.path))
    }

    fn parent_failed(self: Box<Self>, rc: c_int, errno: c_int) {
        let Pending { shared, role, pre } = *self;
        let refusal = Refusal {
            kind: RefusalKind::NotWritable,
            path: pre.path.clone(),
            verdict: Some(Box::new(pre.verdict.clone())),
            message: format!("parent VFS failed to open the file (rc {rc}, errno {errno})"),
        };
        let mut rec = refusal_record(&shared, role, &refusal, pre.flags_requested, rc);
        rec.event = AuditEvent::OpenRefused;
        rec.decision = Some("error".into());
        audit_best_effort(&shared, &mut rec);
    }

    fn opened(self: Box<Self>, opened: Opened) -> Result<Box<dyn GuardedFile>, Refused> {
        let Pending { shared, role, pre } = *self;
        let header = opened.header.map(|h| HeaderInfo::decode(&h));
        let extra = match post_open(role, &pre, header.as_ref(), opened.wal_present, opened.flags) {
            Ok(extra) => extra,
            Err(r) => return Err(refused(&shared, role, r, pre.flags_requested)),
        };
        if header.is_some_and(|h| !h.valid) {
            let mut r = AuditRecord::new(AuditEvent::HeaderInvalid);
            r.db = Some(pre.path.clone());
            r.role = Some(role);
            r.reason = Some("the first 100 bytes are not a SQLite header: not a database, or damaged".into());
            audit_best_effort(&shared, &mut r);
        }
        let mut rec = open_record(&shared, role, &pre, header, opened.flags);
        if let Err(r) = audit_or_refuse(&shared, role, &mut rec) {
            return Err(refused(&shared, role, r, pre.flags_requested));
        }
        if let Some(acq) = pre.lock.as_ref().filter(|a| a.newly_taken || a.inherited) {
            let mut r = AuditRecord::new(AuditEvent::WriterLockAcquired);
            r.db = Some(pre.path.clone());
            r.role = Some(role);
            r.vfs = rec.vfs.clone();
            r.lock_holder = Some(acq.holder.clone());
            if acq.inherited {
                r.reason = Some("handed over by the `warden run` session that holds it (WARDEN_LOCK_FD)".into());
            }
            audit_best_effort(&shared, &mut r);
        }
        for mut r in extra {
            r.role = Some(role);
            r.vfs = rec.vfs.clone();
            audit_best_effort(&shared, &mut r);
        }
        let PreOpen { path, verdict, access, lock, fresh_target, .. } = pre;
        Ok(Box::new(FileState {
            read_only: role == Role::Tool && !fresh_target,
            shared,
            role,
            path,
            verdict,
            access,
            lock: lock.map(|a| a.lock),
            opened: Instant::now(),
            ro_violation_logged: false,
        }))
    }
}

/// The safe state of one open guarded main-database file.
struct FileState {
    shared: Arc<Shared>,
    role: Role,
    path: PathBuf,
    verdict: FsVerdict,
    access: Access,
    /// Writes through this file are vetoed (tooling role, except on a fresh target).
    read_only: bool,
    lock: Option<WriterLock>,
    opened: Instant,
    ro_violation_logged: bool,
}

impl FileState {
    fn refuse_wal(&self, doing: &str, rc: c_int) -> Refused {
        let refusal = Refusal::wal(self.path.clone(), &self.verdict, doing);
        let mut rec = refusal_record(&self.shared, self.role, &refusal, ffi::SQLITE_OPEN_MAIN_DB, rc);
        audit_best_effort(&self.shared, &mut rec);
        let message = refusal.message.clone();
        set_last_refusal(refusal);
        Refused { rc, errno: libc::EREMOTE, message }
    }
}

impl GuardedFile for FileState {
    fn read_only(&self) -> bool {
        self.read_only
    }

    fn vfs_name(&self) -> &str {
        self.shared.vfs_name(self.role)
    }

    fn refuse_wal_file(&self) -> Refused {
        let refusal = Refusal::wal(self.path.clone(), &self.verdict, "opening a WAL file");
        refused(&self.shared, self.role, refusal, ffi::SQLITE_OPEN_WAL)
    }

    fn refuse_wal_header(&self) -> Refused {
        self.refuse_wal("marking the database as WAL", ffi::SQLITE_IOERR_WRITE)
    }

    /// Audited once per file: a write on a read-only role is unreachable through SQLite (the
    /// file is opened read-only), so one means something bypassed the downgrade.
    fn vetoed_write(&mut self) {
        if !self.ro_violation_logged {
            self.ro_violation_logged = true;
            let mut r = AuditRecord::new(AuditEvent::RoViolation);
            r.role = Some(self.role);
            r.db = Some(self.path.clone());
            r.decision = Some("refuse".into());
            r.reason = Some("a tooling connection tried to write the database".into());
            audit_best_effort(&self.shared, &mut r);
        }
    }

    /// Layer 1: `PRAGMA journal_mode=WAL` on storage that forbids it; and
    /// `PRAGMA warden_status`.
    fn pragma(&mut self, name: &str, value: Option<&str>, stats: &FileStats) -> Option<PragmaAnswer> {
        if name.eq_ignore_ascii_case("journal_mode")
            && !self.access.wal_allowed
            && value.is_some_and(|v| v.trim().eq_ignore_ascii_case("wal"))
        {
            let r = self.refuse_wal("journal_mode=WAL", ffi::SQLITE_ERROR);
            return Some(PragmaAnswer::Error(r.message));
        }
        if name.eq_ignore_ascii_case("warden_status") {
            let json = status_json(&self.shared, self.role, &self.path, &self.verdict, self.access, stats);
            return Some(PragmaAnswer::Value(json));
        }
        None
    }

    /// The start of a write transaction: the hold is re-validated (see
    /// [`WriterLock::check_write`]); a lost or foreign hold refuses the write, audited.
    fn begin_write(&mut self) -> Result<(), Refused> {
        let Some(lock) = &self.lock else { return Ok(()) };
        match lock.check_write() {
            Ok(()) => Ok(()),
            Err(e) => {
                let refusal = lock_refusal(e, &self.path, Some(Box::new(self.verdict.clone())));
                Err(refused(&self.shared, self.role, refusal, ffi::SQLITE_OPEN_MAIN_DB))
            }
        }
    }

    fn wants_header_on_close(&self) -> bool {
        self.lock.as_ref().is_some_and(WriterLock::is_last)
    }

    fn closed(self: Box<Self>, header: Option<[u8; 100]>, stats: FileStats, rc: c_int) {
        let FileState { shared, role, path, verdict, lock, opened, .. } = *self;
        let mut rec = AuditRecord::new(AuditEvent::Close);
        rec.role = Some(role);
        rec.vfs = Some(shared.vfs_name(role).to_owned());
        rec.db = Some(path.clone());
        rec.file_kind = Some("main_db".into());
        rec.stats = Some(stats);
        rec.duration_ms = Some(u64::try_from(opened.elapsed().as_millis()).unwrap_or(u64::MAX));
        rec.rc = Some(rc);
        rec.decision = Some("info".into());
        rec.fs = Some(verdict);
        if let Some(lock) = lock {
            // Only the last engine reference reads the header; it records the database as
            // it leaves it (after the pager's final checkpoint).
            let last = lock.is_last();
            let close_state = last
                .then(|| CloseState::observe(&path, header.map(|h| HeaderInfo::decode(&h).change_counter)))
                .flatten();
            rec.current = close_state.clone();
            let inherited = lock.is_inherited();
            lock.release(close_state);
            if last {
                audit_best_effort(&shared, &mut rec);
                let mut r = AuditRecord::new(AuditEvent::WriterLockReleased);
                r.role = Some(role);
                r.vfs = rec.vfs.clone();
                r.db = Some(path);
                if inherited {
                    r.reason = Some("returned to the `warden run` session, which still holds it".into());
                }
                audit_best_effort(&shared, &mut r);
                return;
            }
        }
        audit_best_effort(&shared, &mut rec);
    }
}

/// What the safe half decided before the parent opens the file.
struct PreOpen {
    path: PathBuf,
    verdict: FsVerdict,
    access: Access,
    flags_requested: i32,
    flags: i32,
    downgraded: bool,
    /// Tooling may write only to a brand-new file (a `VACUUM INTO` or backup target).
    fresh_target: bool,
    lock: Option<Acquired>,
}

const RW: i32 = libsqlite3_sys::SQLITE_OPEN_READWRITE;
const CREATE: i32 = libsqlite3_sys::SQLITE_OPEN_CREATE;
const RO: i32 = libsqlite3_sys::SQLITE_OPEN_READONLY;

/// A file tooling may create and write: it does not exist, or is empty with no writer lock
/// file beside it (an engine's brand-new database is never a fresh target).
fn is_fresh_target(path: &Path) -> bool {
    match std::fs::metadata(path) {
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
        Ok(md) => md.len() == 0 && !crate::format::names::lock(path).exists(),
    }
}

fn pre_open(shared: &Shared, role: Role, path: &Path, flags: i32, uri: UriFlags) -> Result<PreOpen, Refusal> {
    if path.to_str().is_none() {
        return Err(Refusal {
            kind: RefusalKind::PathNotUtf8,
            path: path.to_owned(),
            verdict: None,
            message: format!(
                "warden: refusing `{}`: its name is not valid UTF-8, and warden names every database it guards as text (audit log, writer lock, artifacts)\n(hint: rename the file, and its directory if that is the part that is not UTF-8, to UTF-8 names)",
                crate::util::fmt::path_text(path)
            ),
        });
    }
    let probe = shared.probe.as_ref();
    let verdict = probe
        .facts_nearest(path)
        .and_then(|facts| storage::classify_facts(probe, &facts))
        .unwrap_or_else(|e| storage::probe::unknown_verdict(format!("storage could not be examined: {e}")));
    let access = policy::decide(role, path, &verdict, uri, &shared.policy)?;
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
        Role::Engine if flags & RW != 0 => match WriterLock::acquire(path, shared.policy.writer_scope) {
            Ok(a) => {
                if a.newly_taken && !a.inherited {
                    mark_seal_open(path);
                }
                plan.lock = Some(a);
            }
            Err(LockError::Held { lock_path, holder, db }) => {
                let text = crate::guard::lock::holder_text(holder.as_deref());
                return Err(Refusal {
                    kind: RefusalKind::WriterLocked { lock_path, holder },
                    path: db.clone(),
                    verdict: Some(Box::new(plan.verdict)),
                    message: format!("warden: `{}` already has a writer: {text}", db.display()),
                });
            }
            Err(e) => return Err(lock_refusal(e, path, Some(Box::new(plan.verdict)))),
        },
        _ => {}
    }
    Ok(plan)
}

/// A guarded engine took the writer lock outside a `warden run` session: it may change
/// the database, so the seal of the last clean close no longer says what it must be. The
/// open marker says so (the next gate then does not compare, and the next clean close of a
/// session seals again). Only where a seal exists; never creates the state directory.
fn mark_seal_open(path: &Path) {
    let db = crate::storage::resolve(path).unwrap_or_else(|_| path.to_owned());
    let (seal, marker) = (crate::format::names::seal(&db), crate::format::names::seal_open(&db));
    if !seal.is_file() || marker.exists() {
        return;
    }
    let pid = std::process::id();
    let body = serde_json::json!({
        "session_id": format!("engine pid {pid} (a guarded open outside a session)"),
        "since": crate::util::identity::now_rfc3339(),
        "pid": pid,
    });
    if let Err(e) = crate::util::atomic::write_atomic(&marker, body.to_string().as_bytes(), 0o600) {
        tracing::warn!(db = %db.display(), error = %e, "cannot mark the seal open");
    }
}

/// A refusal for a writer-lock failure other than "held by that holder".
fn lock_refusal(e: LockError, path: &Path, verdict: Option<Box<FsVerdict>>) -> Refusal {
    let kind = match &e {
        LockError::HeldElsewhere { .. } => RefusalKind::WriterElsewhere,
        LockError::Forked { holder_pid, .. } => RefusalKind::Forked { holder_pid: *holder_pid },
        LockError::Replaced { lock_path, .. } => RefusalKind::LockReplaced { lock_path: lock_path.clone() },
        LockError::Held { lock_path, holder, .. } => {
            RefusalKind::WriterLocked { lock_path: lock_path.clone(), holder: holder.clone() }
        }
        LockError::Io { .. } | LockError::NotAFile { .. } => RefusalKind::LockUnavailable,
    };
    Refusal { kind, path: path.to_owned(), verdict, message: format!("warden: {e}") }
}

/// Checks made once the parent has opened the file; returns extra audit records (drift,
/// unclean previous close) to write after the open record.
fn post_open(
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

fn open_record(
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
    } else if let Some(v) = crate::guard::sqlite_host::wal_reset_bug() {
        format!(
            "{}; rollback journal only, WAL refused: SQLite {} carries the WAL-reset bug",
            pre.verdict.reason,
            crate::guard::sqlite_host::version_text(v)
        )
    } else {
        format!("{}; rollback journal only, WAL refused", pre.verdict.reason)
    });
    r.lock_holder = pre.lock.as_ref().map(|a| a.holder.clone());
    r.rc = Some(0);
    r
}

fn refusal_record(shared: &Shared, role: Role, refusal: &Refusal, flags: i32, rc: i32) -> AuditRecord {
    let event = match refusal.kind {
        RefusalKind::WalRefused => AuditEvent::WalRefused,
        RefusalKind::WriterLocked { .. } | RefusalKind::WriterElsewhere => AuditEvent::WriterLockBusy,
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
fn audit_or_refuse(shared: &Shared, role: Role, rec: &mut AuditRecord) -> Result<(), Refusal> {
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
fn audit_best_effort(shared: &Shared, rec: &mut AuditRecord) {
    let _ = shared.audit.append(rec);
}

/// The JSON `PRAGMA warden_status` returns.
fn status_json(
    shared: &Shared,
    role: Role,
    path: &Path,
    verdict: &FsVerdict,
    access: Access,
    stats: &FileStats,
) -> String {
    let lock = crate::guard::lock::inspect(path).ok();
    serde_json::json!({
        "role": role,
        "vfs": shared.vfs_name(role),
        "db": crate::util::fmt::path_text(path),
        "fs": verdict,
        "wal_allowed": access.wal_allowed,
        "writer_lock": lock,
        "stats": stats,
        "audit_log": shared.audit.path(),
        "guard_version": env!("CARGO_PKG_VERSION"),
    })
    .to_string()
}

//! The C side of the guard: the only file of the crate allowed `unsafe`.
//!
//! Owns: the two `sqlite3_vfs` objects of each guard, the `GuardFile` that wraps the parent
//! VFS's file, every `extern "C"` callback, forwarding to the parent, and the io_methods
//! tables that switch WAL off. Decisions are made by safe code in [`super`]; this file
//! turns pointers into Rust values, calls it, and turns the answer back into result codes.
//!
//! # Safety
//! The invariants this file keeps, each relied on by the `SAFETY:` comments below:
//! - **Layout.** `szOsFile = size_of::<GuardFile>() + parent.szOsFile`. SQLite allocates
//!   that many bytes, 8-byte aligned; the parent's file lives right after `GuardFile`
//!   (`GuardFile` is `repr(C)`, 8-aligned and a multiple of 8 bytes, checked at compile
//!   time). Files that need no guarding (journals, temp files, WAL files we allow) are
//!   handed whole to the parent, which then owns the buffer and its `pMethods`.
//! - **pMethods.** "If the xOpen method sets the sqlite3_file.pMethods element to a non-NULL
//!   value, then the sqlite3_io_methods.xClose method will be invoked even if the xOpen
//!   reported that it failed" (sqlite.org/c3ref/io_methods.html). So `pMethods` is set to
//!   NULL first and to one of our tables only once everything succeeded; every failure path
//!   closes the parent file itself.
//! - **State.** `GuardFile::state` is a `Box<FileState>` leaked at open and reclaimed
//!   exactly once, in `x_close`. SQLite serialises calls on one `sqlite3_file`, so the
//!   state is never accessed concurrently; VFS-level state (`GuardVfsData`) is immutable
//!   after registration and shared (`Sync`) across threads calling `xOpen` concurrently.
//! - **Panics.** Every callback runs its body in [`guarded`], which catches unwinding: a
//!   panic across `extern "C"` would abort the host process. A caught panic becomes an error
//!   code (`SQLITE_IOERR` or `SQLITE_CANTOPEN`).
//! - **Lifetime.** VFS objects are leaked and never unregistered: SQLite keeps pointers to
//!   them in every connection and file.
//! - **Formats.** `sqlite3_mprintf` and `sqlite3_log` are printf-like: user text is always
//!   passed as an argument to a `"%s"` format, never as the format.
//! - **errno.** `xGetLastError(vfs, 0, 0)` is called after `CANTOPEN`/`IOERR` to fill in
//!   `sqlite3_system_errno()`. A refusal stores its own errno (`EREMOTE`, `EWOULDBLOCK`,
//!   ...) in a thread-local; a parent failure stores the errno it left, saved before our
//!   bookkeeping can clobber it.

#![allow(unsafe_code)]

use std::cell::Cell;
use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::os::unix::ffi::OsStrExt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::ptr;
use std::sync::Arc;
use std::time::Instant;

use libsqlite3_sys as ffi;

use crate::guard::audit::{AuditEvent, AuditRecord, FileStats, HeaderInfo};
use crate::guard::vfs::RegisterError;
use crate::guard::lock::{CloseState, WriterLock};
use crate::guard::policy::{Access, Refusal, RefusalKind, Role, UriFlags};
use crate::guard::vfs::{PreOpen, Shared};

/// VFS-level state, pointed to by `sqlite3_vfs.pAppData`. Immutable after registration.
struct GuardVfsData {
    role: Role,
    parent: *mut ffi::sqlite3_vfs,
    shared: Arc<Shared>,
}

// SAFETY: `parent` points to a registered sqlite3_vfs, which SQLite never frees and whose
// methods are thread-safe by the VFS contract; everything else is `Send + Sync`.
unsafe impl Send for GuardVfsData {}
// SAFETY: as above; the data is never mutated after registration.
unsafe impl Sync for GuardVfsData {}

/// Our part of a main-database file; the parent's `sqlite3_file` follows it in memory.
#[repr(C)]
struct GuardFile {
    /// Must be first: SQLite sees a `GuardFile*` as a `sqlite3_file*`.
    base: ffi::sqlite3_file,
    state: *mut FileState,
    real: *mut ffi::sqlite3_file,
}

const _: () = assert!(std::mem::align_of::<GuardFile>() <= 8);
const _: () = assert!(std::mem::size_of::<GuardFile>().is_multiple_of(8));

/// Per-file state, owned by the `GuardFile` from open to close.
struct FileState {
    data: &'static GuardVfsData,
    path: PathBuf,
    verdict: crate::storage::FsVerdict,
    access: Access,
    /// Writes through this file are vetoed (tooling role, except on a fresh target).
    read_only: bool,
    lock: Option<WriterLock>,
    stats: FileStats,
    opened: Instant,
    ro_violation_logged: bool,
}

thread_local! {
    /// The errno to report from `xGetLastError` for the last failure on this thread.
    static GUARD_ERRNO: Cell<c_int> = const { Cell::new(0) };
}

fn set_errno(e: c_int) {
    GUARD_ERRNO.with(|c| c.set(e));
}

/// Runs a callback body, turning a panic into `on_panic` instead of unwinding into C.
fn guarded(on_panic: c_int, body: impl FnOnce() -> c_int) -> c_int {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(rc) => rc,
        Err(_) => {
            tracing::error!(target: "sqlite_warden::guard::vfs", "panic inside a VFS callback; returning an error to SQLite");
            log_to_sqlite(ffi::SQLITE_INTERNAL, "warden: internal error (panic) in a VFS callback");
            on_panic
        }
    }
}

/// Sends a message to `sqlite3_log`, always as the argument of a `"%s"` format.
fn log_to_sqlite(code: c_int, msg: &str) {
    // SQLite's log buffer is small; keep the message short and NUL-free.
    let short: String = msg.chars().filter(|&c| c != '\0').take(200).collect();
    if let Ok(c) = CString::new(short) {
        // SAFETY: the format is a literal "%s" and the argument a valid C string.
        unsafe { ffi::sqlite3_log(code, c"%s".as_ptr(), c.as_ptr()) };
    }
}

/// A string SQLite can free with `sqlite3_free`.
fn sqlite_string(s: &str) -> *mut c_char {
    // Not sqlite3_mprintf: the extension API of libsqlite3-sys has no variadic entry for it,
    // and a plain copy needs no format string at all.
    let clean: Vec<u8> = s.bytes().filter(|&b| b != 0).collect();
    let Ok(n) = u64::try_from(clean.len() + 1) else { return ptr::null_mut() };
    // SAFETY: sqlite3_malloc64 returns NULL or a buffer of at least n bytes, which SQLite
    // frees with sqlite3_free as the pragma and error contracts require.
    let p = unsafe { ffi::sqlite3_malloc64(n) }.cast::<u8>();
    if p.is_null() {
        return ptr::null_mut();
    }
    // SAFETY: p has room for clean.len() + 1 bytes and does not overlap `clean`.
    unsafe {
        ptr::copy_nonoverlapping(clean.as_ptr(), p, clean.len());
        *p.add(clean.len()) = 0;
    }
    p.cast()
}

/// # Safety
/// `vfs` must be one of the VFS objects registered by [`register_pair`].
unsafe fn vfs_data(vfs: *mut ffi::sqlite3_vfs) -> &'static GuardVfsData {
    // SAFETY: our VFS objects carry a leaked, never-freed GuardVfsData in pAppData.
    unsafe { &*((*vfs).pAppData as *const GuardVfsData) }
}

/// # Safety
/// `vfs` must be one of ours; its parent is a registered VFS.
unsafe fn parent(vfs: *mut ffi::sqlite3_vfs) -> *mut ffi::sqlite3_vfs {
    // SAFETY: per the contract above.
    unsafe { vfs_data(vfs).parent }
}

fn path_of(z: *const c_char) -> PathBuf {
    // SAFETY: callers pass a non-NULL NUL-terminated name from SQLite.
    let bytes = unsafe { CStr::from_ptr(z) }.to_bytes();
    PathBuf::from(std::ffi::OsStr::from_bytes(bytes))
}

// ---------------------------------------------------------------------------------------
// Registration
// ---------------------------------------------------------------------------------------

/// Addresses of every VFS object this process registered, to refuse wrapping ourselves.
fn ours() -> std::sync::MutexGuard<'static, Vec<usize>> {
    static OURS: std::sync::Mutex<Vec<usize>> = std::sync::Mutex::new(Vec::new());
    OURS.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Registers `shared.engine_name` and `shared.tool_name` over the configured parent.
pub(crate) fn register_pair(shared: &Arc<Shared>) -> Result<(), RegisterError> {
    let found = crate::guard::vfs::sqlite_version_number();
    if found < crate::guard::vfs::SQLITE_FLOOR {
        return Err(RegisterError::SqliteTooOld {
            found: rusqlite::version().to_owned(),
            required: "3.51.3".to_owned(),
        });
    }
    let parent_name = CString::new(shared.config.parent.clone())
        .map_err(|_| RegisterError::InvalidName { name: shared.config.parent.clone() })?;
    // SAFETY: a valid C string; vfs_find only reads the VFS list.
    let parent = unsafe { ffi::sqlite3_vfs_find(parent_name.as_ptr()) };
    if parent.is_null() {
        return Err(RegisterError::ParentMissing { name: shared.config.parent.clone() });
    }
    // SAFETY: parent is a registered, live VFS.
    let p = unsafe { &*parent };
    if ours().contains(&(parent as usize)) {
        return Err(RegisterError::SelfWrap { name: shared.config.parent.clone() });
    }
    let mut names = Vec::new();
    for (name, role) in [(&shared.engine_name, Role::Engine), (&shared.tool_name, Role::Tool)] {
        let c_name = CString::new(name.as_str()).map_err(|_| RegisterError::InvalidName { name: name.clone() })?;
        // SAFETY: valid C string.
        if !unsafe { ffi::sqlite3_vfs_find(c_name.as_ptr()) }.is_null() {
            return Err(RegisterError::NameTaken { name: name.clone() });
        }
        names.push((c_name, role));
    }
    for (c_name, role) in names {
        let data: &'static GuardVfsData =
            Box::leak(Box::new(GuardVfsData { role, parent, shared: Arc::clone(shared) }));
        let z_name: &'static CStr = Box::leak(c_name.into_boxed_c_str());
        let size = std::mem::size_of::<GuardFile>() as c_int + p.szOsFile;
        let vfs = Box::leak(Box::new(ffi::sqlite3_vfs {
            // Forward everything up to the parent's version (capped at the 3 we know).
            iVersion: p.iVersion.min(3),
            szOsFile: size,
            mxPathname: p.mxPathname,
            pNext: ptr::null_mut(),
            zName: z_name.as_ptr(),
            pAppData: ptr::from_ref(data).cast_mut().cast(),
            xOpen: Some(x_open),
            xDelete: p.xDelete.and(Some(x_delete)),
            xAccess: p.xAccess.and(Some(x_access)),
            xFullPathname: p.xFullPathname.and(Some(x_full_pathname)),
            xDlOpen: p.xDlOpen.and(Some(x_dl_open)),
            xDlError: p.xDlError.and(Some(x_dl_error)),
            xDlSym: p.xDlSym.and(Some(x_dl_sym)),
            xDlClose: p.xDlClose.and(Some(x_dl_close)),
            xRandomness: p.xRandomness.and(Some(x_randomness)),
            xSleep: p.xSleep.and(Some(x_sleep)),
            xCurrentTime: p.xCurrentTime.and(Some(x_current_time)),
            xGetLastError: Some(x_get_last_error),
            xCurrentTimeInt64: if p.iVersion >= 2 { Some(x_current_time_int64) } else { None },
            xSetSystemCall: if p.iVersion >= 3 { p.xSetSystemCall.and(Some(x_set_system_call)) } else { None },
            xGetSystemCall: if p.iVersion >= 3 { p.xGetSystemCall.and(Some(x_get_system_call)) } else { None },
            xNextSystemCall: if p.iVersion >= 3 { p.xNextSystemCall.and(Some(x_next_system_call)) } else { None },
        }));
        ours().push(ptr::from_mut(vfs) as usize);
        // SAFETY: `vfs` is leaked, so it outlives every connection; not made the default.
        let rc = unsafe { ffi::sqlite3_vfs_register(vfs, 0) };
        if rc != ffi::SQLITE_OK {
            return Err(RegisterError::Sqlite { name: z_name.to_string_lossy().into_owned(), code: rc });
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// sqlite3_vfs methods
// ---------------------------------------------------------------------------------------

unsafe extern "C" fn x_open(
    vfs: *mut ffi::sqlite3_vfs,
    z_name: ffi::sqlite3_filename,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    // SAFETY: SQLite hands us a buffer of szOsFile bytes. "pMethods ... must be NULL or
    // valid after every xOpen return": clear it before anything can fail.
    unsafe { (*file).pMethods = ptr::null() };
    guarded(ffi::SQLITE_CANTOPEN, || {
        set_errno(0);
        // SAFETY: vfs is ours (SQLite calls a VFS's own xOpen); the arguments are SQLite's.
        unsafe { open_impl(vfs, z_name, file, flags, out_flags) }
    })
}

/// # Safety
/// Arguments as SQLite passes them to `xOpen` of one of our VFS objects.
unsafe fn open_impl(
    vfs: *mut ffi::sqlite3_vfs,
    z_name: ffi::sqlite3_filename,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    // SAFETY: vfs is ours.
    let data = unsafe { vfs_data(vfs) };
    let parent = data.parent;
    // SAFETY: the parent is a live registered VFS; xOpen is mandatory.
    let Some(parent_open) = (unsafe { (*parent).xOpen }) else {
        return ffi::SQLITE_CANTOPEN;
    };
    let is_main = flags & ffi::SQLITE_OPEN_MAIN_DB != 0 && !z_name.is_null();
    if !is_main {
        if flags & ffi::SQLITE_OPEN_WAL != 0 && !z_name.is_null() {
            // SAFETY: z_name is the WAL name SQLite passes to xOpen, exactly as
            // sqlite3_database_file_object requires.
            if let Some(refusal) = unsafe { wal_owner_refusal(z_name) } {
                return refuse(data, refusal, flags);
            }
        }
        // Journals, temp files and allowed WAL files: the parent owns the whole buffer.
        // SAFETY: `file` has room for the parent's file (szOsFile covers it).
        return unsafe { parent_open(parent, z_name, file, flags, out_flags) };
    }

    let path = path_of(z_name);
    let uri = UriFlags {
        // SAFETY: z_name is a main-database name SQLite gave to xOpen, which is what
        // sqlite3_uri_boolean accepts.
        nolock: unsafe { ffi::sqlite3_uri_boolean(z_name, c"nolock".as_ptr(), 0) } != 0,
        // SAFETY: as above.
        immutable: unsafe { ffi::sqlite3_uri_boolean(z_name, c"immutable".as_ptr(), 0) } != 0,
    };
    let shared = data.shared.as_ref();
    let pre = match crate::guard::vfs::pre_open(shared, data.role, &path, flags, uri) {
        Ok(p) => p,
        Err(r) => return refuse(data, r, flags),
    };

    let g = file.cast::<GuardFile>();
    // SAFETY: the buffer is size_of::<GuardFile>() + parent.szOsFile bytes; the parent's
    // part starts right after ours and is 8-aligned (GuardFile's size is a multiple of 8).
    let real = unsafe { g.add(1) }.cast::<ffi::sqlite3_file>();
    // SAFETY: real is inside the buffer.
    unsafe { (*real).pMethods = ptr::null() };
    let mut actual: c_int = 0;
    // SAFETY: forwarding SQLite's own arguments with the possibly downgraded flags.
    let rc = unsafe { parent_open(parent, z_name, real, pre.flags, &raw mut actual) };
    if rc != ffi::SQLITE_OK {
        let errno = nix::errno::Errno::last_raw();
        let mut rec = crate::guard::vfs::refusal_record(
            shared,
            data.role,
            &Refusal {
                kind: RefusalKind::NotWritable,
                path: path.clone(),
                verdict: Some(Box::new(pre.verdict.clone())),
                message: format!("parent VFS failed to open the file (rc {rc}, errno {errno})"),
            },
            flags,
            rc,
        );
        rec.event = AuditEvent::OpenRefused;
        rec.decision = Some("error".into());
        crate::guard::vfs::audit_best_effort(shared, &mut rec);
        // A parent open that failed must not leave a half-open sub-file: "pMethods NULL".
        // SAFETY: real is inside the buffer.
        if !unsafe { (*real).pMethods }.is_null() {
            // SAFETY: the parent set pMethods, so its xClose must run.
            unsafe { close_real(real) };
        }
        drop(pre);
        set_errno(errno);
        return rc;
    }

    // SAFETY: real was opened successfully just above.
    let header = unsafe { read_header(real) };
    let wal_present = if pre.access.wal_allowed {
        false
    } else {
        // SAFETY: parent is live; the name is a valid path.
        unsafe { parent_access_exists(parent, &wal_path(&path)) }
    };
    let extra = match crate::guard::vfs::post_open(data.role, &pre, header.as_ref(), wal_present, actual) {
        Ok(extra) => extra,
        Err(r) => {
            // SAFETY: real is open; close it before refusing ("pMethods NULL" on failure).
            unsafe { close_real(real) };
            return refuse(data, r, flags);
        }
    };
    if header.is_some_and(|h| !h.valid) {
        let mut r = AuditRecord::new(AuditEvent::HeaderInvalid);
        r.db = Some(path.clone());
        r.role = Some(data.role);
        r.reason = Some("the first 100 bytes are not a SQLite header: not a database, or damaged".into());
        crate::guard::vfs::audit_best_effort(shared, &mut r);
    }
    let mut rec = crate::guard::vfs::open_record(shared, data.role, &pre, header, actual);
    if let Err(r) = crate::guard::vfs::audit_or_refuse(shared, data.role, &mut rec) {
        // SAFETY: real is open.
        unsafe { close_real(real) };
        return refuse(data, r, flags);
    }
    if let Some(acq) = pre.lock.as_ref().filter(|a| a.newly_taken || a.inherited) {
        let mut r = AuditRecord::new(AuditEvent::WriterLockAcquired);
        r.db = Some(path.clone());
        r.role = Some(data.role);
        r.vfs = rec.vfs.clone();
        r.lock_holder = Some(acq.holder.clone());
        if acq.inherited {
            r.reason = Some("handed over by the `warden run` session that holds it (WARDEN_LOCK_FD)".into());
        }
        crate::guard::vfs::audit_best_effort(shared, &mut r);
    }
    for mut r in extra {
        r.role = Some(data.role);
        r.vfs = rec.vfs.clone();
        crate::guard::vfs::audit_best_effort(shared, &mut r);
    }

    let PreOpen { verdict, access, lock, fresh_target, .. } = pre;
    let state = Box::new(FileState {
        data,
        path,
        verdict,
        access,
        read_only: data.role == Role::Tool && !fresh_target,
        lock: lock.map(|a| a.lock),
        stats: FileStats::default(),
        opened: Instant::now(),
        ro_violation_logged: false,
    });
    // SAFETY: real is open, so its pMethods is valid.
    let real_version = unsafe { (*(*real).pMethods).iVersion };
    // Layer 2 of WAL refusal: no xShmMap (version 1) unless WAL is allowed.
    let table = if !access.wal_allowed || real_version < 2 {
        &IO_V1
    } else if real_version < 3 {
        &IO_V2
    } else {
        &IO_V3
    };
    // SAFETY: g points to our part of the buffer; writing plain fields, then pMethods last.
    unsafe {
        (*g).state = Box::into_raw(state);
        (*g).real = real;
        (*g).base.pMethods = table;
        if !out_flags.is_null() {
            *out_flags = actual;
        }
    }
    ffi::SQLITE_OK
}

/// Records a refusal (audit, thread-local, errno) and returns its result code.
fn refuse(data: &GuardVfsData, refusal: Refusal, flags: c_int) -> c_int {
    let (rc, errno) = match refusal.kind {
        RefusalKind::WriterLocked { .. } => (ffi::SQLITE_BUSY, libc::EWOULDBLOCK),
        RefusalKind::NotWritable => (ffi::SQLITE_READONLY, libc::EROFS),
        RefusalKind::UnsafeUriParameter { .. } => (ffi::SQLITE_CANTOPEN, libc::EPERM),
        RefusalKind::AuditUnavailable | RefusalKind::LockUnavailable => (ffi::SQLITE_CANTOPEN, libc::EIO),
        RefusalKind::NetworkFilesystem
        | RefusalKind::NoLocking
        | RefusalKind::SuspectFilesystem
        | RefusalKind::WalRefused => (ffi::SQLITE_CANTOPEN, libc::EREMOTE),
    };
    let mut rec = crate::guard::vfs::refusal_record(&data.shared, data.role, &refusal, flags, rc);
    crate::guard::vfs::audit_best_effort(&data.shared, &mut rec);
    log_to_sqlite(rc, &refusal.message);
    crate::guard::vfs::set_last_refusal(refusal);
    set_errno(errno);
    rc
}

fn wal_path(db: &Path) -> PathBuf {
    let mut s = db.as_os_str().to_owned();
    s.push("-wal");
    PathBuf::from(s)
}

/// Layer 3: a WAL file of a database whose storage forbids WAL is refused.
///
/// # Safety
/// `z_wal` must be the name SQLite passed to `xOpen` for a WAL file.
unsafe fn wal_owner_refusal(z_wal: ffi::sqlite3_filename) -> Option<Refusal> {
    // SAFETY: "If X is the name of a rollback or WAL-mode journal file that is passed into
    // the xOpen method of sqlite3_vfs, then sqlite3_database_file_object(X) returns a
    // pointer to the sqlite3_file object that represents the main database file."
    let main = unsafe { ffi::sqlite3_database_file_object(z_wal) };
    if main.is_null() {
        return None;
    }
    // SAFETY: main is a live, open database file; we only compare its pMethods with our
    // tables, and treat it as a GuardFile only when it is one of ours.
    let methods = unsafe { (*main).pMethods };
    if !is_ours(methods) {
        return None;
    }
    // SAFETY: pMethods is one of our tables, so main is a GuardFile with a live state.
    let st = unsafe { &*(*main.cast::<GuardFile>()).state };
    if st.access.wal_allowed {
        return None;
    }
    Some(Refusal::wal(st.path.clone(), &st.verdict, "opening a WAL file"))
}

fn is_ours(m: *const ffi::sqlite3_io_methods) -> bool {
    ptr::eq(m, &IO_V1) || ptr::eq(m, &IO_V2) || ptr::eq(m, &IO_V3)
}

/// Reads the 100-byte header through the parent's file (never a descriptor of our own).
///
/// # Safety
/// `real` must be an open parent file.
unsafe fn read_header(real: *mut ffi::sqlite3_file) -> Option<HeaderInfo> {
    // SAFETY: real is open; its methods are valid.
    let m = unsafe { &*(*real).pMethods };
    let mut size: ffi::sqlite3_int64 = 0;
    // SAFETY: forwarding to the parent's own method with valid out-pointer.
    if unsafe { m.xFileSize?(real, &raw mut size) } != ffi::SQLITE_OK || size < 100 {
        return None;
    }
    let mut buf = [0u8; 100];
    // SAFETY: buf has 100 bytes. A short read zero-fills, which decodes as invalid.
    let rc = unsafe { m.xRead?(real, buf.as_mut_ptr().cast(), 100, 0) };
    (rc == ffi::SQLITE_OK).then(|| HeaderInfo::decode(&buf))
}

/// # Safety
/// `parent` must be a live VFS.
unsafe fn parent_access_exists(parent: *mut ffi::sqlite3_vfs, path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    let mut res: c_int = 0;
    // SAFETY: valid VFS, C string and out-pointer. unix treats an empty file as absent,
    // which matches SQLite's own notion of a hot -wal.
    let rc = unsafe {
        match (*parent).xAccess {
            Some(f) => f(parent, c.as_ptr(), ffi::SQLITE_ACCESS_EXISTS, &raw mut res),
            None => ffi::SQLITE_ERROR,
        }
    };
    rc == ffi::SQLITE_OK && res != 0
}

/// # Safety
/// `real` must be an open parent file; it is closed and must not be used again.
unsafe fn close_real(real: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: per the contract above.
    unsafe {
        let m = (*real).pMethods;
        let rc = match (*m).xClose {
            Some(f) => f(real),
            None => ffi::SQLITE_OK,
        };
        (*real).pMethods = ptr::null();
        rc
    }
}

unsafe extern "C" fn x_delete(vfs: *mut ffi::sqlite3_vfs, z: *const c_char, sync_dir: c_int) -> c_int {
    guarded(ffi::SQLITE_IOERR_DELETE, || {
        // SAFETY: forwarding to the parent with SQLite's arguments.
        unsafe {
            let p = parent(vfs);
            (*p).xDelete.map_or(ffi::SQLITE_IOERR_DELETE, |f| f(p, z, sync_dir))
        }
    })
}

unsafe extern "C" fn x_access(vfs: *mut ffi::sqlite3_vfs, z: *const c_char, flags: c_int, out: *mut c_int) -> c_int {
    guarded(ffi::SQLITE_IOERR_ACCESS, || {
        // SAFETY: forwarding.
        unsafe {
            let p = parent(vfs);
            (*p).xAccess.map_or(ffi::SQLITE_IOERR_ACCESS, |f| f(p, z, flags, out))
        }
    })
}

unsafe extern "C" fn x_full_pathname(
    vfs: *mut ffi::sqlite3_vfs,
    z: *const c_char,
    n: c_int,
    out: *mut c_char,
) -> c_int {
    // The parent's rc is returned unchanged: unix returns SQLITE_OK_SYMLINK (non-zero) for
    // a path through a symlink, and the pager decides what that means.
    guarded(ffi::SQLITE_CANTOPEN, || {
        // SAFETY: forwarding.
        unsafe {
            let p = parent(vfs);
            (*p).xFullPathname.map_or(ffi::SQLITE_CANTOPEN, |f| f(p, z, n, out))
        }
    })
}

unsafe extern "C" fn x_dl_open(vfs: *mut ffi::sqlite3_vfs, z: *const c_char) -> *mut c_void {
    // SAFETY: forwarding; load_extension goes through the VFS, so this must work.
    catch_unwind(AssertUnwindSafe(|| unsafe {
        let p = parent(vfs);
        (*p).xDlOpen.map_or(ptr::null_mut(), |f| f(p, z))
    }))
    .unwrap_or(ptr::null_mut())
}

unsafe extern "C" fn x_dl_error(vfs: *mut ffi::sqlite3_vfs, n: c_int, z: *mut c_char) {
    // SAFETY: forwarding.
    let _ = catch_unwind(AssertUnwindSafe(|| unsafe {
        let p = parent(vfs);
        if let Some(f) = (*p).xDlError {
            f(p, n, z);
        }
    }));
}

type DlSym = Option<unsafe extern "C" fn(*mut ffi::sqlite3_vfs, *mut c_void, *const c_char)>;

unsafe extern "C" fn x_dl_sym(vfs: *mut ffi::sqlite3_vfs, h: *mut c_void, z: *const c_char) -> DlSym {
    // SAFETY: forwarding.
    catch_unwind(AssertUnwindSafe(|| unsafe {
        let p = parent(vfs);
        (*p).xDlSym.and_then(|f| f(p, h, z))
    }))
    .unwrap_or(None)
}

unsafe extern "C" fn x_dl_close(vfs: *mut ffi::sqlite3_vfs, h: *mut c_void) {
    // SAFETY: forwarding.
    let _ = catch_unwind(AssertUnwindSafe(|| unsafe {
        let p = parent(vfs);
        if let Some(f) = (*p).xDlClose {
            f(p, h);
        }
    }));
}

unsafe extern "C" fn x_randomness(vfs: *mut ffi::sqlite3_vfs, n: c_int, out: *mut c_char) -> c_int {
    guarded(0, || {
        // SAFETY: forwarding.
        unsafe {
            let p = parent(vfs);
            (*p).xRandomness.map_or(0, |f| f(p, n, out))
        }
    })
}

unsafe extern "C" fn x_sleep(vfs: *mut ffi::sqlite3_vfs, us: c_int) -> c_int {
    guarded(0, || {
        // SAFETY: forwarding.
        unsafe {
            let p = parent(vfs);
            (*p).xSleep.map_or(0, |f| f(p, us))
        }
    })
}

unsafe extern "C" fn x_current_time(vfs: *mut ffi::sqlite3_vfs, out: *mut f64) -> c_int {
    guarded(ffi::SQLITE_ERROR, || {
        // SAFETY: forwarding.
        unsafe {
            let p = parent(vfs);
            (*p).xCurrentTime.map_or(ffi::SQLITE_ERROR, |f| f(p, out))
        }
    })
}

unsafe extern "C" fn x_current_time_int64(vfs: *mut ffi::sqlite3_vfs, out: *mut ffi::sqlite3_int64) -> c_int {
    guarded(ffi::SQLITE_ERROR, || {
        // SAFETY: forwarding, falling back to xCurrentTime when the parent lacks Int64.
        unsafe {
            let p = parent(vfs);
            if let Some(f) = (*p).xCurrentTimeInt64 {
                return f(p, out);
            }
            let mut days = 0.0f64;
            let rc = (*p).xCurrentTime.map_or(ffi::SQLITE_ERROR, |f| f(p, &raw mut days));
            #[allow(clippy::cast_possible_truncation)]
            {
                *out = (days * 86_400_000.0) as ffi::sqlite3_int64;
            }
            rc
        }
    })
}

unsafe extern "C" fn x_get_last_error(vfs: *mut ffi::sqlite3_vfs, n: c_int, z: *mut c_char) -> c_int {
    guarded(0, || {
        let ours = GUARD_ERRNO.with(|c| c.replace(0));
        if ours != 0 {
            return ours;
        }
        // SAFETY: forwarding.
        unsafe {
            let p = parent(vfs);
            (*p).xGetLastError.map_or(0, |f| f(p, n, z))
        }
    })
}

unsafe extern "C" fn x_set_system_call(
    vfs: *mut ffi::sqlite3_vfs,
    z: *const c_char,
    f: ffi::sqlite3_syscall_ptr,
) -> c_int {
    guarded(ffi::SQLITE_NOTFOUND, || {
        // SAFETY: forwarding (SQLite's fault-injection tests rely on it).
        unsafe {
            let p = parent(vfs);
            (*p).xSetSystemCall.map_or(ffi::SQLITE_NOTFOUND, |g| g(p, z, f))
        }
    })
}

unsafe extern "C" fn x_get_system_call(vfs: *mut ffi::sqlite3_vfs, z: *const c_char) -> ffi::sqlite3_syscall_ptr {
    // SAFETY: forwarding.
    catch_unwind(AssertUnwindSafe(|| unsafe {
        let p = parent(vfs);
        (*p).xGetSystemCall.and_then(|g| g(p, z))
    }))
    .unwrap_or(None)
}

unsafe extern "C" fn x_next_system_call(vfs: *mut ffi::sqlite3_vfs, z: *const c_char) -> *const c_char {
    // SAFETY: forwarding.
    catch_unwind(AssertUnwindSafe(|| unsafe {
        let p = parent(vfs);
        (*p).xNextSystemCall.map_or(ptr::null(), |g| g(p, z))
    }))
    .unwrap_or(ptr::null())
}

// ---------------------------------------------------------------------------------------
// sqlite3_io_methods of a guarded main-database file
// ---------------------------------------------------------------------------------------

/// No shared memory and no mmap: SQLite cannot use WAL on this file
/// ("`iVersion>=2 && xShmMap`" is what `sqlite3PagerWalSupported` tests).
static IO_V1: ffi::sqlite3_io_methods = methods(1);
/// Shared memory, no mmap (a parent at version 2).
static IO_V2: ffi::sqlite3_io_methods = methods(2);
/// Everything, mirroring unix.
static IO_V3: ffi::sqlite3_io_methods = methods(3);

const fn methods(version: c_int) -> ffi::sqlite3_io_methods {
    ffi::sqlite3_io_methods {
        iVersion: version,
        xClose: Some(f_close),
        xRead: Some(f_read),
        xWrite: Some(f_write),
        xTruncate: Some(f_truncate),
        xSync: Some(f_sync),
        xFileSize: Some(f_file_size),
        xLock: Some(f_lock),
        xUnlock: Some(f_unlock),
        xCheckReservedLock: Some(f_check_reserved_lock),
        xFileControl: Some(f_file_control),
        xSectorSize: Some(f_sector_size),
        xDeviceCharacteristics: Some(f_device_characteristics),
        xShmMap: if version >= 2 { Some(f_shm_map) } else { None },
        xShmLock: if version >= 2 { Some(f_shm_lock) } else { None },
        xShmBarrier: if version >= 2 { Some(f_shm_barrier) } else { None },
        xShmUnmap: if version >= 2 { Some(f_shm_unmap) } else { None },
        xFetch: if version >= 3 { Some(f_fetch) } else { None },
        xUnfetch: if version >= 3 { Some(f_unfetch) } else { None },
    }
}

/// # Safety
/// `f` must be an open `GuardFile` (its pMethods is one of our tables).
unsafe fn parts<'a>(
    f: *mut ffi::sqlite3_file,
) -> (&'a mut FileState, *mut ffi::sqlite3_file, &'a ffi::sqlite3_io_methods) {
    // SAFETY: per the contract; SQLite serialises calls on one file, so the &mut is unique.
    unsafe {
        let g = f.cast::<GuardFile>();
        let real = (*g).real;
        (&mut *(*g).state, real, &*(*real).pMethods)
    }
}

unsafe extern "C" fn f_close(f: *mut ffi::sqlite3_file) -> c_int {
    guarded(ffi::SQLITE_IOERR_CLOSE, || {
        // SAFETY: f is an open GuardFile; after this call SQLite frees the buffer, so the
        // state box is reclaimed here, exactly once.
        unsafe {
            let g = f.cast::<GuardFile>();
            let real = (*g).real;
            let state = Box::from_raw((*g).state);
            (*g).state = ptr::null_mut();
            // The last engine reference records the database as it leaves it (after the
            // pager's final checkpoint, which runs before the main file is closed).
            let closing_state = match &state.lock {
                Some(l) if l.is_last() => Some(read_header(real).map(|h| h.change_counter)),
                _ => None,
            };
            let rc = close_real(real);
            (*g).base.pMethods = ptr::null();
            finish_close(*state, closing_state, rc);
            rc
        }
    })
}

fn finish_close(state: FileState, closing: Option<Option<u32>>, rc: c_int) {
    let FileState { data, path, verdict, lock, stats, opened, .. } = state;
    let mut rec = AuditRecord::new(AuditEvent::Close);
    rec.role = Some(data.role);
    rec.vfs = Some(data.shared.vfs_name(data.role).to_owned());
    rec.db = Some(path.clone());
    rec.file_kind = Some("main_db".into());
    rec.stats = Some(stats);
    rec.duration_ms = Some(u64::try_from(opened.elapsed().as_millis()).unwrap_or(u64::MAX));
    rec.rc = Some(rc);
    rec.decision = Some("info".into());
    rec.fs = Some(verdict);
    if let Some(lock) = lock {
        let close_state = closing.and_then(|cc| CloseState::observe(&path, cc));
        rec.current = close_state.clone();
        let last = closing.is_some();
        let inherited = lock.is_inherited();
        lock.release(close_state);
        if last {
            crate::guard::vfs::audit_best_effort(&data.shared, &mut rec);
            let mut r = AuditRecord::new(AuditEvent::WriterLockReleased);
            r.role = Some(data.role);
            r.vfs = rec.vfs.clone();
            r.db = Some(path);
            if inherited {
                r.reason = Some("returned to the `warden run` session, which still holds it".into());
            }
            crate::guard::vfs::audit_best_effort(&data.shared, &mut r);
            return;
        }
    }
    crate::guard::vfs::audit_best_effort(&data.shared, &mut rec);
}

unsafe extern "C" fn f_read(f: *mut ffi::sqlite3_file, buf: *mut c_void, n: c_int, off: ffi::sqlite3_int64) -> c_int {
    guarded(ffi::SQLITE_IOERR_READ, || {
        // SAFETY: f is open; forwarding. "If xRead() returns SQLITE_IOERR_SHORT_READ it must
        // also fill in the unread portions of the buffer with zeros": the parent does, and
        // its rc is passed through unchanged.
        unsafe {
            let (st, real, m) = parts(f);
            st.stats.reads += 1;
            st.stats.bytes_read += u64::try_from(n).unwrap_or(0);
            m.xRead.map_or(ffi::SQLITE_IOERR_READ, |g| g(real, buf, n, off))
        }
    })
}

unsafe extern "C" fn f_write(
    f: *mut ffi::sqlite3_file,
    buf: *const c_void,
    n: c_int,
    off: ffi::sqlite3_int64,
) -> c_int {
    guarded(ffi::SQLITE_IOERR_WRITE, || {
        // SAFETY: f is open; forwarding.
        unsafe {
            let (st, real, m) = parts(f);
            if st.read_only {
                return veto(st);
            }
            if !st.access.wal_allowed && off == 0 && n >= 20 {
                // Layer 5: switching to WAL rewrites header bytes 18/19 to 2 through a
                // rollback-journal transaction *before* the -wal is ever opened (vdbe.c,
                // OP_JournalMode), e.g. for an attached database in exclusive locking mode.
                // Refuse the page-1 write that would mark the file as WAL; the pager rolls
                // the transaction back from its journal.
                let b = buf.cast::<u8>();
                if *b.add(18) == 2 || *b.add(19) == 2 {
                    return refuse_wal_header(st);
                }
            }
            st.stats.writes += 1;
            st.stats.bytes_written += u64::try_from(n).unwrap_or(0);
            m.xWrite.map_or(ffi::SQLITE_IOERR_WRITE, |g| g(real, buf, n, off))
        }
    })
}

fn refuse_wal_header(st: &FileState) -> c_int {
    let refusal = Refusal::wal(st.path.clone(), &st.verdict, "marking the database as WAL");
    let mut rec = crate::guard::vfs::refusal_record(
        &st.data.shared,
        st.data.role,
        &refusal,
        ffi::SQLITE_OPEN_MAIN_DB,
        ffi::SQLITE_IOERR_WRITE,
    );
    crate::guard::vfs::audit_best_effort(&st.data.shared, &mut rec);
    log_to_sqlite(ffi::SQLITE_IOERR_WRITE, &refusal.message);
    crate::guard::vfs::set_last_refusal(refusal);
    ffi::SQLITE_IOERR_WRITE
}

/// A write on a read-only role: unreachable through SQLite (the file is opened read-only),
/// kept as a second wall and audited once per file.
fn veto(st: &mut FileState) -> c_int {
    st.stats.vetoed_writes += 1;
    if !st.ro_violation_logged {
        st.ro_violation_logged = true;
        let mut r = AuditRecord::new(AuditEvent::RoViolation);
        r.role = Some(st.data.role);
        r.db = Some(st.path.clone());
        r.decision = Some("refuse".into());
        r.reason = Some("a tooling connection tried to write the database".into());
        crate::guard::vfs::audit_best_effort(&st.data.shared, &mut r);
    }
    ffi::SQLITE_READONLY
}

unsafe extern "C" fn f_truncate(f: *mut ffi::sqlite3_file, size: ffi::sqlite3_int64) -> c_int {
    guarded(ffi::SQLITE_IOERR_TRUNCATE, || {
        // SAFETY: f is open; forwarding.
        unsafe {
            let (st, real, m) = parts(f);
            if st.read_only {
                return veto(st);
            }
            m.xTruncate.map_or(ffi::SQLITE_IOERR_TRUNCATE, |g| g(real, size))
        }
    })
}

unsafe extern "C" fn f_sync(f: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    guarded(ffi::SQLITE_IOERR_FSYNC, || {
        // SAFETY: f is open; forwarding.
        unsafe {
            let (st, real, m) = parts(f);
            st.stats.syncs += 1;
            m.xSync.map_or(ffi::SQLITE_IOERR_FSYNC, |g| g(real, flags))
        }
    })
}

unsafe extern "C" fn f_file_size(f: *mut ffi::sqlite3_file, out: *mut ffi::sqlite3_int64) -> c_int {
    guarded(ffi::SQLITE_IOERR_FSTAT, || {
        // SAFETY: f is open; forwarding.
        unsafe {
            let (_, real, m) = parts(f);
            m.xFileSize.map_or(ffi::SQLITE_IOERR_FSTAT, |g| g(real, out))
        }
    })
}

unsafe extern "C" fn f_lock(f: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    guarded(ffi::SQLITE_IOERR_LOCK, || {
        // SAFETY: f is open; forwarding.
        unsafe {
            let (st, real, m) = parts(f);
            let rc = m.xLock.map_or(ffi::SQLITE_IOERR_LOCK, |g| g(real, level));
            if rc == ffi::SQLITE_OK && level == ffi::SQLITE_LOCK_RESERVED {
                st.stats.write_txns += 1;
            }
            rc
        }
    })
}

unsafe extern "C" fn f_unlock(f: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    guarded(ffi::SQLITE_IOERR_UNLOCK, || {
        // SAFETY: f is open; forwarding.
        unsafe {
            let (_, real, m) = parts(f);
            m.xUnlock.map_or(ffi::SQLITE_IOERR_UNLOCK, |g| g(real, level))
        }
    })
}

unsafe extern "C" fn f_check_reserved_lock(f: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    guarded(ffi::SQLITE_IOERR_CHECKRESERVEDLOCK, || {
        // SAFETY: f is open; forwarding.
        unsafe {
            let (_, real, m) = parts(f);
            m.xCheckReservedLock.map_or(ffi::SQLITE_IOERR_CHECKRESERVEDLOCK, |g| g(real, out))
        }
    })
}

unsafe extern "C" fn f_file_control(f: *mut ffi::sqlite3_file, op: c_int, arg: *mut c_void) -> c_int {
    guarded(ffi::SQLITE_ERROR, || {
        // SAFETY: f is open; the argument layouts below are SQLite's documented ones.
        unsafe {
            let (st, real, m) = parts(f);
            match op {
                ffi::SQLITE_FCNTL_PRAGMA => {
                    // "The argument is a pointer to an array of pointers to strings (char**)
                    // ... [1] is the name of the pragma and [2] is the argument or NULL.
                    // ... the VFS ... may [set [0]] to an error message ... and return
                    // SQLITE_ERROR" (sqlite.org/c3ref/c_fcntl_begin_atomic_write.html).
                    let az = arg.cast::<*mut c_char>();
                    if let Some(rc) = pragma(st, az) {
                        return rc;
                    }
                }
                ffi::SQLITE_FCNTL_VFSNAME => {
                    let rc = m.xFileControl.map_or(ffi::SQLITE_NOTFOUND, |g| g(real, op, arg));
                    let out = arg.cast::<*mut c_char>();
                    let name = st.data.shared.vfs_name(st.data.role);
                    let inner = if rc == ffi::SQLITE_OK && !(*out).is_null() {
                        let s = CStr::from_ptr(*out).to_string_lossy().into_owned();
                        ffi::sqlite3_free((*out).cast());
                        s
                    } else {
                        "unix".to_owned()
                    };
                    *out = sqlite_string(&format!("{name}/{inner}"));
                    return ffi::SQLITE_OK;
                }
                _ => {}
            }
            m.xFileControl.map_or(ffi::SQLITE_NOTFOUND, |g| g(real, op, arg))
        }
    })
}

/// `PRAGMA journal_mode=WAL` on storage that forbids it (layer 1), and `PRAGMA
/// warden_status`. `None` lets the pragma through to the parent.
///
/// # Safety
/// `az` must be the `char*[3]` of `SQLITE_FCNTL_PRAGMA`.
unsafe fn pragma(st: &FileState, az: *mut *mut c_char) -> Option<c_int> {
    // SAFETY: per the contract; entries 1 and 2 are NUL-terminated or (2) NULL.
    let (name, value) = unsafe {
        let name = *az.add(1);
        let value = *az.add(2);
        if name.is_null() {
            return None;
        }
        let v = (!value.is_null()).then(|| CStr::from_ptr(value).to_string_lossy().into_owned());
        (CStr::from_ptr(name).to_string_lossy().into_owned(), v)
    };
    if name.eq_ignore_ascii_case("journal_mode")
        && !st.access.wal_allowed
        && value.as_deref().is_some_and(|v| v.trim().eq_ignore_ascii_case("wal"))
    {
        let refusal = Refusal::wal(st.path.clone(), &st.verdict, "journal_mode=WAL");
        // SAFETY: [0] receives a string SQLite frees with sqlite3_free.
        unsafe { *az = sqlite_string(&refusal.message) };
        let mut rec = crate::guard::vfs::refusal_record(
            &st.data.shared,
            st.data.role,
            &refusal,
            ffi::SQLITE_OPEN_MAIN_DB,
            ffi::SQLITE_ERROR,
        );
        crate::guard::vfs::audit_best_effort(&st.data.shared, &mut rec);
        crate::guard::vfs::set_last_refusal(refusal);
        return Some(ffi::SQLITE_ERROR);
    }
    if name.eq_ignore_ascii_case("warden_status") {
        let json =
            crate::guard::vfs::status_json(&st.data.shared, st.data.role, &st.path, &st.verdict, st.access, &st.stats);
        // SAFETY: as above; returning SQLITE_OK with [0] set makes it the pragma's result.
        unsafe { *az = sqlite_string(&json) };
        return Some(ffi::SQLITE_OK);
    }
    None
}

unsafe extern "C" fn f_sector_size(f: *mut ffi::sqlite3_file) -> c_int {
    guarded(4096, || {
        // SAFETY: f is open; forwarding.
        unsafe {
            let (_, real, m) = parts(f);
            m.xSectorSize.map_or(4096, |g| g(real))
        }
    })
}

unsafe extern "C" fn f_device_characteristics(f: *mut ffi::sqlite3_file) -> c_int {
    guarded(0, || {
        // SAFETY: f is open; forwarding.
        unsafe {
            let (_, real, m) = parts(f);
            m.xDeviceCharacteristics.map_or(0, |g| g(real))
        }
    })
}

unsafe extern "C" fn f_shm_map(
    f: *mut ffi::sqlite3_file,
    pg: c_int,
    pgsz: c_int,
    extend: c_int,
    pp: *mut *mut c_void,
) -> c_int {
    guarded(ffi::SQLITE_IOERR_SHMMAP, || {
        // SAFETY: f is open (only reachable through IO_V2/IO_V3, i.e. WAL allowed).
        unsafe {
            let (_, real, m) = parts(f);
            m.xShmMap.map_or(ffi::SQLITE_IOERR_SHMMAP, |g| g(real, pg, pgsz, extend, pp))
        }
    })
}

unsafe extern "C" fn f_shm_lock(f: *mut ffi::sqlite3_file, off: c_int, n: c_int, flags: c_int) -> c_int {
    guarded(ffi::SQLITE_IOERR_SHMLOCK, || {
        // SAFETY: f is open; forwarding.
        unsafe {
            let (_, real, m) = parts(f);
            m.xShmLock.map_or(ffi::SQLITE_IOERR_SHMLOCK, |g| g(real, off, n, flags))
        }
    })
}

unsafe extern "C" fn f_shm_barrier(f: *mut ffi::sqlite3_file) {
    // SAFETY: f is open; forwarding.
    let _ = catch_unwind(AssertUnwindSafe(|| unsafe {
        let (_, real, m) = parts(f);
        if let Some(g) = m.xShmBarrier {
            g(real);
        }
    }));
}

unsafe extern "C" fn f_shm_unmap(f: *mut ffi::sqlite3_file, delete: c_int) -> c_int {
    guarded(ffi::SQLITE_IOERR_SHMMAP, || {
        // SAFETY: f is open; forwarding.
        unsafe {
            let (_, real, m) = parts(f);
            m.xShmUnmap.map_or(ffi::SQLITE_OK, |g| g(real, delete))
        }
    })
}

unsafe extern "C" fn f_fetch(
    f: *mut ffi::sqlite3_file,
    off: ffi::sqlite3_int64,
    n: c_int,
    pp: *mut *mut c_void,
) -> c_int {
    guarded(ffi::SQLITE_IOERR_MMAP, || {
        // SAFETY: f is open; forwarding. "*pp = 0" is a valid answer (no mapping).
        unsafe {
            let (_, real, m) = parts(f);
            match m.xFetch {
                Some(g) => g(real, off, n, pp),
                None => {
                    *pp = ptr::null_mut();
                    ffi::SQLITE_OK
                }
            }
        }
    })
}

unsafe extern "C" fn f_unfetch(f: *mut ffi::sqlite3_file, off: ffi::sqlite3_int64, p: *mut c_void) -> c_int {
    guarded(ffi::SQLITE_IOERR_MMAP, || {
        // SAFETY: f is open; forwarding.
        unsafe {
            let (_, real, m) = parts(f);
            m.xUnfetch.map_or(ffi::SQLITE_OK, |g| g(real, off, p))
        }
    })
}

// ---------------------------------------------------------------------------------------
// Helpers for the connection factory
// ---------------------------------------------------------------------------------------

/// The name of the VFS a connection's main database really runs on
/// (`SQLITE_FCNTL_VFS_POINTER`), to catch `?vfs=` and other bypasses.
pub(crate) fn connection_vfs_name(conn: &rusqlite::Connection) -> Option<String> {
    let mut vfs: *mut ffi::sqlite3_vfs = ptr::null_mut();
    // SAFETY: the handle is live for the borrow of `conn`; VFS_POINTER writes a
    // sqlite3_vfs* into the out-pointer.
    let rc = unsafe {
        ffi::sqlite3_file_control(conn.handle(), c"main".as_ptr(), ffi::SQLITE_FCNTL_VFS_POINTER, (&raw mut vfs).cast())
    };
    if rc != ffi::SQLITE_OK || vfs.is_null() {
        return None;
    }
    // SAFETY: a registered VFS has a valid zName for the life of the process.
    Some(unsafe { CStr::from_ptr((*vfs).zName) }.to_string_lossy().into_owned())
}

/// `sqlite3_db_readonly(db, "main")`: 1 read-only, 0 read-write, -1 no such database.
pub(crate) fn db_readonly(conn: &rusqlite::Connection) -> c_int {
    // SAFETY: live handle; a valid schema name.
    unsafe { ffi::sqlite3_db_readonly(conn.handle(), c"main".as_ptr()) }
}

/// Makes the registered VFS `name` SQLite's default (the loadable extension's
/// `WARDEN_DEFAULT_VFS=1`). False if no VFS has that name.
pub(crate) fn make_default(name: &str) -> bool {
    let Ok(c) = CString::new(name) else { return false };
    // SAFETY: a valid C string; sqlite3_vfs_find returns a registered VFS or NULL.
    let vfs = unsafe { ffi::sqlite3_vfs_find(c.as_ptr()) };
    if vfs.is_null() {
        return false;
    }
    // SAFETY: "The same VFS can be registered multiple times without injury. To make an
    // existing VFS into the default VFS, register it again with the makeDflt flag set."
    // (sqlite.org/c3ref/vfs_find.html). Our VFS objects are leaked, so they outlive SQLite.
    unsafe { ffi::sqlite3_vfs_register(vfs, 1) == ffi::SQLITE_OK }
}

// ---------------------------------------------------------------------------------------
// The session runner's lock handoff (see `crate::guard::lock::INHERIT_FD_ENV`)
// ---------------------------------------------------------------------------------------

/// True when descriptor `fd` is open in this process and refers to the file `(dev, ino)`.
pub(crate) fn inherited_fd_matches(fd: std::os::fd::RawFd, dev: u64, ino: u64) -> bool {
    if fd < 3 {
        return false;
    }
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat on any integer is defined: it fails with EBADF when `fd` is not open,
    // and on success fills the whole `stat` we pass.
    let rc = unsafe { libc::fstat(fd, st.as_mut_ptr()) };
    if rc != 0 {
        return false;
    }
    // SAFETY: fstat returned 0, so it initialised `st`.
    let st = unsafe { st.assume_init() };
    #[allow(clippy::useless_conversion)]
    let same = u64::from(st.st_dev) == dev && u64::from(st.st_ino) == ino;
    same
}

/// Takes ownership of an inherited descriptor (the lock handoff protocol).
///
/// The caller (`lock::take_inherited`) has checked that `fd` is open and is the lock file,
/// and calls this at most once per process.
pub(crate) fn adopt_inherited_fd(fd: std::os::fd::RawFd) -> Option<std::fs::File> {
    use std::os::fd::FromRawFd;
    if fd < 3 {
        return None;
    }
    // SAFETY: `fd` is open (checked by `inherited_fd_matches`) and owned by nothing else in
    // this process: the session runner created it for this process to adopt, named it in
    // WARDEN_LOCK_FD, and `take_inherited` adopts it at most once, so it is closed once.
    Some(unsafe { std::fs::File::from_raw_fd(fd) })
}

#[cfg(test)]
mod contract_tests {
    //! Callbacks called directly on raw aligned buffers, as SQLite would call them.
    use super::*;

    #[repr(C, align(8))]
    struct Buf([u8; 4096]);

    #[test]
    fn failed_open_leaves_pmethods_null() {
        let g = crate::guard::vfs::register(
            "warden-contract",
            crate::guard::vfs::GuardConfig {
                audit_dir: std::env::temp_dir().join("warden-contract-audit"),
                ..Default::default()
            },
        )
        .unwrap();
        let name = CString::new(g.engine_vfs()).unwrap();
        // SAFETY: looking up our own VFS.
        let vfs = unsafe { ffi::sqlite3_vfs_find(name.as_ptr()) };
        assert!(!vfs.is_null());
        // SAFETY: vfs is live.
        assert!(unsafe { (*vfs).szOsFile } as usize <= std::mem::size_of::<Buf>());
        let mut buf = Buf([0xAB; 4096]);
        let file = buf.0.as_mut_ptr().cast::<ffi::sqlite3_file>();
        let z = c"/nonexistent-dir-warden/x.db";
        // A temp-kind open through the parent, then a main-db open in a missing directory.
        // SAFETY: the buffer is large enough and aligned; the name outlives the call.
        let rc = unsafe {
            x_open(vfs, z.as_ptr(), file, ffi::SQLITE_OPEN_MAIN_DB | ffi::SQLITE_OPEN_READONLY, ptr::null_mut())
        };
        assert_ne!(rc, ffi::SQLITE_OK);
        // SAFETY: reading the field we just were told about.
        assert!(unsafe { (*file).pMethods }.is_null(), "pMethods must be NULL after a failed xOpen");
        // xGetLastError reports an errno for the failure, as sqlite3_system_errno expects.
        // SAFETY: vfs is ours; (0, NULL) is how SQLite calls it.
        let e = unsafe { x_get_last_error(vfs, 0, ptr::null_mut()) };
        assert_ne!(e, 0);
    }

    #[test]
    fn panics_become_error_codes() {
        let rc = guarded(ffi::SQLITE_IOERR, || panic!("boom"));
        assert_eq!(rc, ffi::SQLITE_IOERR);
    }

    #[test]
    fn log_is_not_a_format_string() {
        // A '%' in a message must not be interpreted by sqlite3_log / mprintf.
        log_to_sqlite(ffi::SQLITE_WARNING, "path /tmp/%s%n%x.db");
        let p = sqlite_string("100% /x/%s");
        // SAFETY: p is a valid string from sqlite3_mprintf.
        let s = unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned();
        // SAFETY: freeing what mprintf allocated.
        unsafe { ffi::sqlite3_free(p.cast()) };
        assert_eq!(s, "100% /x/%s");
    }
}

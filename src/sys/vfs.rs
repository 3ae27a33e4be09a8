//! The `sqlite3_vfs` side of a guard: registration and every VFS-level callback.
//!
//! Owns: the VFS objects (one per registered name), `xOpen` with the buffer layout it
//! implies, and forwarding of every other VFS method to the parent. The decisions (may this
//! file be opened, with which flags, is WAL allowed) belong to the safe half behind the
//! [`Shim`] trait, implemented in `guard`; this file only turns pointers into Rust values,
//! calls it, and turns the answers back into result codes. The per-file methods are in
//! [`super::file`].
//!
//! # Safety
//! The invariants kept here, relied on by the `SAFETY:` comments:
//! - **Layout.** `szOsFile = size_of::<GuardFile>() + parent.szOsFile`. SQLite allocates
//!   that many bytes, 8-byte aligned; the parent's file lives right after `GuardFile`
//!   (`repr(C)`, 8-aligned and a multiple of 8 bytes, checked at compile time). Files that
//!   need no guarding (journals, temp files, WAL files we allow) are handed whole to the
//!   parent, which then owns the buffer and its `pMethods`.
//! - **pMethods.** "If the xOpen method sets the sqlite3_file.pMethods element to a non-NULL
//!   value, then the sqlite3_io_methods.xClose method will be invoked even if the xOpen
//!   reported that it failed" (sqlite.org/c3ref/io_methods.html). So `pMethods` is set to
//!   NULL first and to one of our tables only once everything succeeded; every failure path
//!   closes the parent file itself.
//! - **State.** `GuardFile::state` is a `Box<FileState>` leaked at open and reclaimed
//!   exactly once, in `xClose`. SQLite serialises calls on one `sqlite3_file`, so the state
//!   is never accessed concurrently; VFS-level state (`VfsData`) is immutable after
//!   registration and shared (`Sync`) across threads calling `xOpen` concurrently.
//! - **Panics.** Every callback runs its body in [`guarded`], which catches unwinding: a
//!   panic across `extern "C"` would abort the host process.
//! - **Lifetime.** VFS objects are leaked and never unregistered: SQLite keeps pointers to
//!   them in every connection and file.
//! - **errno.** `xGetLastError(vfs, 0, 0)` is called after `CANTOPEN`/`IOERR` to fill in
//!   `sqlite3_system_errno()`. A refusal stores its own errno in a thread-local; a parent
//!   failure stores the errno it left, saved before our bookkeeping can clobber it.

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::os::unix::ffi::OsStrExt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::ptr;
use std::sync::Arc;

use libsqlite3_sys as ffi;

use super::file::{FileState, GuardFile, close_real, is_ours, read_header, table_for};
use super::shim::{
    GUARD_ERRNO, IoStats, OpenRequest, Opened, Refused, RegisterFailure, Shim, guarded, refuse, set_errno,
};

// ---------------------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------------------

/// VFS-level state, pointed to by `sqlite3_vfs.pAppData`. Immutable after registration.
pub(super) struct VfsData {
    pub(super) parent: *mut ffi::sqlite3_vfs,
    pub(super) shim: Arc<dyn Shim>,
}

// SAFETY: `parent` points to a registered sqlite3_vfs, which SQLite never frees and whose
// methods are thread-safe by the VFS contract; the shim is `Send + Sync`.
unsafe impl Send for VfsData {}
// SAFETY: as above; the data is never mutated after registration.
unsafe impl Sync for VfsData {}

/// # Safety
/// `vfs` must be one of the VFS objects registered by [`register`].
unsafe fn vfs_data(vfs: *mut ffi::sqlite3_vfs) -> &'static VfsData {
    // SAFETY: our VFS objects carry a leaked, never-freed VfsData in pAppData.
    unsafe { &*((*vfs).pAppData as *const VfsData) }
}

/// Our state behind `vfs`, when `vfs` is one of the objects [`register`] created (a
/// connection's main VFS, found through `SQLITE_FCNTL_VFS_POINTER`, may be anyone's).
pub(super) fn data_of(vfs: *mut ffi::sqlite3_vfs) -> Option<&'static VfsData> {
    if vfs.is_null() || !ours().contains(&(vfs as usize)) {
        return None;
    }
    // SAFETY: `vfs` is one of our registered objects (checked just above).
    Some(unsafe { vfs_data(vfs) })
}

/// # Safety
/// `vfs` must be one of ours; its parent is a registered VFS.
unsafe fn parent(vfs: *mut ffi::sqlite3_vfs) -> *mut ffi::sqlite3_vfs {
    // SAFETY: per the contract above.
    unsafe { vfs_data(vfs).parent }
}

/// The path of a NUL-terminated name from SQLite.
///
/// # Safety
/// `z` must be non-NULL and point to a NUL-terminated string that outlives the call.
unsafe fn path_of(z: *const c_char) -> PathBuf {
    // SAFETY: per the contract above.
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

/// Registers one VFS object per `(name, shim)` over the VFS named `parent`. Every name is
/// checked before any is registered. None becomes SQLite's default.
pub(crate) fn register(parent_name: &str, objects: Vec<(String, Arc<dyn Shim>)>) -> Result<(), RegisterFailure> {
    #[cfg(feature = "faults")]
    super::faults::link_in();
    let c_parent = CString::new(parent_name).map_err(|_| RegisterFailure::InvalidName(parent_name.to_owned()))?;
    // SAFETY: a valid C string; vfs_find only reads the VFS list.
    let parent = unsafe { ffi::sqlite3_vfs_find(c_parent.as_ptr()) };
    if parent.is_null() {
        return Err(RegisterFailure::ParentMissing(parent_name.to_owned()));
    }
    if ours().contains(&(parent as usize)) {
        return Err(RegisterFailure::SelfWrap(parent_name.to_owned()));
    }
    // SAFETY: parent is a registered, live VFS.
    let p = unsafe { &*parent };
    let mut named = Vec::with_capacity(objects.len());
    for (name, shim) in objects {
        let c_name = CString::new(name.as_str()).map_err(|_| RegisterFailure::InvalidName(name.clone()))?;
        // SAFETY: valid C string.
        if !unsafe { ffi::sqlite3_vfs_find(c_name.as_ptr()) }.is_null() {
            return Err(RegisterFailure::NameTaken(name));
        }
        named.push((c_name, shim));
    }
    for (c_name, shim) in named {
        let data: &'static VfsData = Box::leak(Box::new(VfsData { parent, shim }));
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
            return Err(RegisterFailure::Sqlite { name: z_name.to_string_lossy().into_owned(), code: rc });
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// xOpen
// ---------------------------------------------------------------------------------------

pub(super) unsafe extern "C" fn x_open(
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
            if let Some(r) = unsafe { wal_owner_refusal(z_name) } {
                return refuse(r);
            }
        }
        // Journals, temp files and allowed WAL files: the parent owns the whole buffer.
        // SAFETY: `file` has room for the parent's file (szOsFile covers it).
        return unsafe { parent_open(parent, z_name, file, flags, out_flags) };
    }

    // SAFETY: z_name is a non-NULL name from SQLite, live for the call.
    let path = unsafe { path_of(z_name) };
    let req = OpenRequest {
        path: &path,
        flags,
        // SAFETY: z_name is a main-database name SQLite gave to xOpen, which is what
        // sqlite3_uri_boolean accepts.
        nolock: unsafe { ffi::sqlite3_uri_boolean(z_name, c"nolock".as_ptr(), 0) } != 0,
        // SAFETY: as above.
        immutable: unsafe { ffi::sqlite3_uri_boolean(z_name, c"immutable".as_ptr(), 0) } != 0,
    };
    let pending = match data.shim.open(&req) {
        Ok(p) => p,
        Err(r) => return refuse(r),
    };

    let g = file.cast::<GuardFile>();
    // SAFETY: the buffer is size_of::<GuardFile>() + parent.szOsFile bytes; the parent's
    // part starts right after ours and is 8-aligned (GuardFile's size is a multiple of 8).
    let real = unsafe { g.add(1) }.cast::<ffi::sqlite3_file>();
    // SAFETY: real is inside the buffer.
    unsafe { (*real).pMethods = ptr::null() };
    let mut actual: c_int = 0;
    // SAFETY: forwarding SQLite's own arguments with the possibly downgraded flags.
    let rc = unsafe { parent_open(parent, z_name, real, pending.flags(), &raw mut actual) };
    if rc != ffi::SQLITE_OK {
        let errno = nix::errno::Errno::last_raw();
        pending.parent_failed(rc, errno);
        // A parent open that failed must not leave a half-open sub-file: "pMethods NULL".
        // SAFETY: real is inside the buffer.
        if !unsafe { (*real).pMethods }.is_null() {
            // SAFETY: the parent set pMethods, so its xClose must run.
            unsafe { close_real(real) };
        }
        set_errno(errno);
        return rc;
    }

    let wal_allowed = pending.wal_allowed();
    // SAFETY: real was opened successfully just above.
    let header = unsafe { read_header(real) };
    // SAFETY: parent is live; the name is a valid path.
    let wal_present = pending.hot_wal_path().is_some_and(|p| unsafe { parent_access_exists(parent, &p) });
    let hooks = match pending.opened(Opened { header, wal_present, flags: actual }) {
        Ok(h) => h,
        Err(r) => {
            // SAFETY: real is open; close it before refusing ("pMethods NULL" on failure).
            unsafe { close_real(real) };
            return refuse(r);
        }
    };
    let read_only = hooks.read_only();
    let state = Box::new(FileState { parent, hooks, read_only, wal_allowed, stats: IoStats::default() });
    // SAFETY: real is open, so its pMethods is valid.
    let real_version = unsafe { (*(*real).pMethods).iVersion };
    let table = table_for(wal_allowed, real_version);
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

/// Layer 3: a WAL file of a database whose storage forbids WAL is refused.
///
/// # Safety
/// `z_wal` must be the name SQLite passed to `xOpen` for a WAL file.
unsafe fn wal_owner_refusal(z_wal: ffi::sqlite3_filename) -> Option<Refused> {
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
    // SAFETY: pMethods is one of our tables, so main is a GuardFile with a live state; the
    // WAL is opened on the same connection, which SQLite serialises with the main file.
    let st = unsafe { &*(*main.cast::<GuardFile>()).state };
    (!st.wal_allowed).then(|| st.hooks.refuse_wal_file())
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

// ---------------------------------------------------------------------------------------
// The other sqlite3_vfs methods: forwarded to the parent
// ---------------------------------------------------------------------------------------

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

pub(super) unsafe extern "C" fn x_get_last_error(vfs: *mut ffi::sqlite3_vfs, n: c_int, z: *mut c_char) -> c_int {
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

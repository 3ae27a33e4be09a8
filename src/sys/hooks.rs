//! Per-connection hooks: SQLite's auto-extension, through which the guard sees every
//! connection of the process as soon as its main database is open (before the host gets it),
//! and the `ATTACH` authorizer installed on tooling connections.
//!
//! Owns: registering the auto-extension once per process (on the SQLite the crate links, or
//! on the host's through the extension API), finding the guard VFS object a connection's
//! main database runs on, and the authorizer callback, which asks that object's [`Shim`]
//! whether an `ATTACH` may go ahead. Does not own any decision: which connections get which
//! settings, and which names may be attached, belong to the safe half
//! ([`Shim::connection_opened`], [`Shim::may_attach`]).
//!
//! Why an auto-extension: a host opens tooling connections itself (`apsw.Connection(db,
//! vfs="warden-ro")`), and no VFS method may call into the connection that opened a file.
//! The auto-extension is SQLite's documented per-connection entry point: it runs inside
//! `sqlite3_open_v2` after the main database is opened, for every connection opened after
//! its registration (the guard's VFS objects exist only after it), and an error from it
//! fails the open. It returns `SQLITE_OK` for every connection that is not on a guard VFS.
//!
//! [`Shim`]: super::shim::Shim
//! [`Shim::connection_opened`]: super::shim::Shim::connection_opened
//! [`Shim::may_attach`]: super::shim::Shim::may_attach

use std::ffi::{CStr, c_char, c_int, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr;
use std::sync::OnceLock;

use libsqlite3_sys as ffi;

use super::vfs::{VfsData, data_of};

/// The signature SQLite calls an auto-extension with (`sqlite3_auto_extension`).
type Entry = unsafe extern "C" fn(*mut ffi::sqlite3, *mut *mut c_char, *const ffi::sqlite3_api_routines) -> c_int;

/// Registers the auto-extension, once per process.
///
/// # Errors
/// SQLite's result code when it refused the registration.
pub(crate) fn install() -> Result<(), c_int> {
    static RC: OnceLock<c_int> = OnceLock::new();
    // SAFETY: `on_open` has the auto-extension signature and, being a plain function, lives
    // as long as the process (the extension stays loaded: it returns LOAD_PERMANENTLY).
    let rc = *RC.get_or_init(|| unsafe { register_auto_extension(on_open) });
    if rc == ffi::SQLITE_OK { Ok(()) } else { Err(rc) }
}

/// # Safety
/// `entry` must be a valid auto-extension entry point that outlives the process.
#[cfg(not(feature = "loadable_extension"))]
unsafe fn register_auto_extension(entry: Entry) -> c_int {
    // SAFETY: per the contract above.
    unsafe { ffi::sqlite3_auto_extension(Some(entry)) }
}

/// # Safety
/// `entry` must be a valid auto-extension entry point that outlives the process.
#[cfg(feature = "loadable_extension")]
unsafe fn register_auto_extension(entry: Entry) -> c_int {
    // SAFETY: the extension API declares the entry point as `void(*)(void)` (sqlite3ext.h);
    // SQLite casts it back to the auto-extension signature `entry` has before calling it.
    let erased = unsafe { std::mem::transmute::<Entry, unsafe extern "C" fn()>(entry) };
    // SAFETY: per the contract above.
    unsafe { ffi::sqlite3_auto_extension(Some(erased)) }
}

/// The VFS object a connection's main database runs on (`SQLITE_FCNTL_VFS_POINTER`), or NULL.
///
/// # Safety
/// `db` must be a live connection.
unsafe fn main_vfs(db: *mut ffi::sqlite3) -> *mut ffi::sqlite3_vfs {
    let mut vfs: *mut ffi::sqlite3_vfs = ptr::null_mut();
    // SAFETY: a live handle; VFS_POINTER writes a sqlite3_vfs* into the out-pointer.
    let rc = unsafe {
        ffi::sqlite3_file_control(db, c"main".as_ptr(), ffi::SQLITE_FCNTL_VFS_POINTER, (&raw mut vfs).cast())
    };
    if rc == ffi::SQLITE_OK { vfs } else { ptr::null_mut() }
}

/// The auto-extension: hands every connection whose main database is on one of our VFS
/// objects to that object's safe half.
unsafe extern "C" fn on_open(
    db: *mut ffi::sqlite3,
    pz_err_msg: *mut *mut c_char,
    _api: *const ffi::sqlite3_api_routines,
) -> c_int {
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: SQLite calls auto-extensions with the connection being opened.
        let Some(data) = data_of(unsafe { main_vfs(db) }) else { return Ok(()) };
        // SAFETY: `db` is live for the call; `from_handle` borrows it and never closes it.
        let conn = unsafe { rusqlite::Connection::from_handle(db) }.map_err(|e| e.to_string())?;
        data.shim.connection_opened(&conn)
    }))
    .unwrap_or_else(|_| Err("internal error (panic) while setting up the connection".into()));
    match outcome {
        Ok(()) => ffi::SQLITE_OK,
        Err(msg) => {
            if !pz_err_msg.is_null() {
                // SAFETY: SQLite's out-pointer for the message, which it frees with
                // sqlite3_free; sqlite_string allocates with sqlite3_malloc64.
                unsafe { *pz_err_msg = super::sqlite_string(&format!("warden: {msg}")) };
            }
            ffi::SQLITE_ERROR
        }
    }
}

/// Installs the `ATTACH` authorizer on `conn`, whose main database must run on one of our
/// VFS objects: every `ATTACH` is then allowed only when that object's
/// [`Shim::may_attach`](super::shim::Shim::may_attach) says so. Replaces any authorizer
/// the connection had (the host can replace this one in turn; SQL cannot).
///
/// # Errors
/// A message when the connection is not on one of our VFS objects, or SQLite refused.
pub(crate) fn restrict_attach(conn: &rusqlite::Connection) -> Result<(), String> {
    // SAFETY: the handle is live for the borrow of `conn`.
    let Some(data) = data_of(unsafe { main_vfs(conn.handle()) }) else {
        return Err("the connection's main database is not on a warden VFS".into());
    };
    let user = ptr::from_ref::<VfsData>(data).cast_mut().cast::<c_void>();
    // SAFETY: a live handle; `authorize` has the authorizer signature; `user` points to
    // VfsData that is leaked at registration and so outlives every connection.
    let rc = unsafe { ffi::sqlite3_set_authorizer(conn.handle(), Some(authorize), user) };
    if rc == ffi::SQLITE_OK { Ok(()) } else { Err(format!("sqlite3_set_authorizer failed with code {rc}")) }
}

/// The authorizer: every action but `ATTACH` is allowed; an `ATTACH` is asked about.
unsafe extern "C" fn authorize(
    user: *mut c_void,
    action: c_int,
    arg1: *const c_char,
    _arg2: *const c_char,
    _db_name: *const c_char,
    _trigger: *const c_char,
) -> c_int {
    if action != ffi::SQLITE_ATTACH {
        return ffi::SQLITE_OK;
    }
    let allowed = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: `user` is the leaked VfsData `restrict_attach` installed.
        let data = unsafe { &*user.cast_const().cast::<VfsData>() };
        // "the third parameter ... the name of the file being ATTACHed", NULL when the
        // name is not a literal (sqlite.org/c3ref/c_alter_table.html).
        // SAFETY: a NUL-terminated string from SQLite, live for the call, or NULL.
        let name = (!arg1.is_null()).then(|| unsafe { CStr::from_ptr(arg1) }).and_then(|c| c.to_str().ok());
        data.shim.may_attach(name)
    }))
    .unwrap_or(false);
    if allowed { ffi::SQLITE_OK } else { ffi::SQLITE_DENY }
}

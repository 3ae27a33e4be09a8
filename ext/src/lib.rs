//! `libwarden.so`: sqlite-warden's guard for any SQLite host (Python, the sqlite3 shell,
//! Node, Go, …). This file is the extension's only FFI: the entry point SQLite calls. All the
//! behaviour lives in the main crate ([`sqlite_warden::guard::extension`]).
//!
//! ```text
//! sqlite> .load ./libwarden
//! python> conn.enable_load_extension(True); conn.load_extension("./libwarden")
//! ```
#![allow(unsafe_code)]

use std::ffi::{c_char, c_int};
use std::panic::{AssertUnwindSafe, catch_unwind};

use rusqlite::{Connection, ffi};

/// The entry point, named after the file (`libwarden.so` → `sqlite3_warden_init`), as
/// `sqlite3_load_extension` looks it up when no name is given.
///
/// # Safety
/// Called by SQLite with a valid connection, error-message out-pointer and API table
/// ("The third parameter is a pointer to the sqlite3_api_routines structure",
/// sqlite.org/loadext.html).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sqlite3_warden_init(
    db: *mut ffi::sqlite3,
    pz_err_msg: *mut *mut c_char,
    p_api: *mut ffi::sqlite3_api_routines,
) -> c_int {
    // A panic must not unwind across `extern "C"` into the host: it becomes an error code.
    catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: p_api is SQLite's API table (or NULL, handled); reading it needs no
        // initialisation, unlike the wrapped API, which refuses hosts older than its bindings.
        if let Some(found) = unsafe { host_version(p_api) }
            && found < FLOOR
        {
            let msg = format!(
                "sqlite-warden refuses to load into SQLite {}.{}.{}: it needs 3.51.3 or newer (older releases carry a WAL-reset corruption bug); use a host with a newer SQLite, e.g. apsw or pysqlite3-binary for Python",
                found / 1_000_000,
                found / 1000 % 1000,
                found % 1000
            );
            // SAFETY: as above; pz_err_msg is SQLite's out-pointer for the message.
            unsafe { set_error(p_api, pz_err_msg, &msg) };
            return ffi::SQLITE_ERROR;
        }
        // SAFETY: the pointers come from SQLite's loader, unchanged; extension_init2 stores
        // the API table before any other SQLite call and only borrows `db` for the call.
        unsafe { Connection::extension_init2(db, pz_err_msg, p_api, init) }
    }))
    .unwrap_or(ffi::SQLITE_ERROR)
}

/// 3.51.3 as `SQLITE_VERSION_NUMBER`.
const FLOOR: c_int = 3_051_003;

/// The host's `sqlite3_libversion_number()`, read from its API table.
///
/// # Safety
/// `p_api` is NULL or SQLite's `sqlite3_api_routines`.
unsafe fn host_version(p_api: *mut ffi::sqlite3_api_routines) -> Option<c_int> {
    // SAFETY: non-null per the check; the table outlives the call.
    let f = unsafe { p_api.as_ref() }?.libversion_number?;
    // SAFETY: a function of the host's SQLite taking no arguments.
    Some(unsafe { f() })
}

/// Stores `msg` in `*pz_err_msg` with the host's allocator ("the error message must be
/// obtained from sqlite3_malloc", sqlite.org/c3ref/load_extension.html).
///
/// # Safety
/// As [`host_version`]; `pz_err_msg` is NULL or a valid out-pointer.
unsafe fn set_error(p_api: *mut ffi::sqlite3_api_routines, pz_err_msg: *mut *mut c_char, msg: &str) {
    // SAFETY: checked non-null below before use.
    let Some(malloc) = (unsafe { p_api.as_ref() }).and_then(|api| api.malloc) else { return };
    if pz_err_msg.is_null() {
        return;
    }
    let bytes: Vec<u8> = msg.bytes().filter(|&b| b != 0).collect();
    let Ok(n) = c_int::try_from(bytes.len() + 1) else { return };
    // SAFETY: the host's sqlite3_malloc; NULL or n writable bytes.
    let p = unsafe { malloc(n) }.cast::<u8>();
    if p.is_null() {
        return;
    }
    // SAFETY: p has n bytes; pz_err_msg is a valid out-pointer.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), p, bytes.len());
        *p.add(bytes.len()) = 0;
        *pz_err_msg = p.cast();
    }
}

fn init(conn: Connection) -> rusqlite::Result<bool> {
    sqlite_warden::guard::extension::init(&conn)
}

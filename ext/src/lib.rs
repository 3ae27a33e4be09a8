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
// The oldest host the guard runs on is also the oldest whose API table `compat` knows.
use sqlite_warden::guard::sqlite_host::{SQLITE_OLDEST, version_text};

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
        let found = unsafe { host_version(p_api) };
        let api = match found {
            Some(v) if v < SQLITE_OLDEST => {
                let msg = format!(
                    "sqlite-warden refuses to load into SQLite {}: it needs 3.40.0 or newer (hint: use a host with a newer SQLite; on an older distribution, apsw ships its own)",
                    version_text(v)
                );
                // SAFETY: as above; pz_err_msg is SQLite's out-pointer for the message.
                unsafe { set_error(p_api, pz_err_msg, &msg) };
                return ffi::SQLITE_ERROR;
            }
            // SAFETY: p_api is the host's table of release `v` (3.40 ≤ v < the bindings').
            Some(v) if v < ffi::SQLITE_VERSION_NUMBER => unsafe { compat::table_for(p_api, v) },
            _ => p_api,
        };
        // SAFETY: the pointers come from SQLite's loader, unchanged, or `api` is the
        // process-lifetime table `compat` built from the host's; extension_init2 stores the
        // API table before any other SQLite call and only borrows `db` for the call.
        unsafe { Connection::extension_init2(db, pz_err_msg, api, init) }
    }))
    .unwrap_or(ffi::SQLITE_ERROR)
}

/// Hosts older than the bindings (rusqlite's prebuilt loadable-extension bindings are of
/// SQLite 3.45.3, and its init refuses any older host): Debian 12 (3.40.1) and Ubuntu 24.04
/// (3.45.1) among them. The API table only ever grows at its end, so a host's table is a
/// prefix of the bindings' one. This builds, once per process, a table of the bindings'
/// size: the host's entries, then stubs for the few functions the host lacks (none of which
/// the guard calls), with `libversion_number` answering the bindings' release so that the
/// init accepts it. The guard reads the host's real release from `sqlite3_libversion()`,
/// which stays the host's own, and runs in rollback-journal-only mode on such a host.
mod compat {
    use std::ffi::{c_char, c_int, c_void};
    use std::sync::OnceLock;

    use rusqlite::ffi;

    const WORD: usize = std::mem::size_of::<usize>();
    // Every entry is one function pointer; the bindings' table has 270 (3.44 and later).
    const _: () = assert!(std::mem::size_of::<ffi::sqlite3_api_routines>() == 270 * WORD);

    /// Entries of the host's table by release (from each release's `sqlite3ext.h`).
    fn entries(version: c_int) -> usize {
        match version {
            v if v >= 3_044_000 => 270, // get_clientdata, set_clientdata
            v if v >= 3_043_000 => 268, // stmt_explain
            v if v >= 3_041_000 => 267, // is_interrupted
            _ => 266,                   // 3.40: the last entry is value_encoding
        }
    }

    /// The built table's address (a `usize`: raw pointers are not `Sync`).
    static TABLE: OnceLock<usize> = OnceLock::new();

    /// The table to hand to the bindings for host table `host` of release `version`.
    ///
    /// # Safety
    /// `host` is the host's `sqlite3_api_routines` of release `version` (≥ 3.40.0), valid
    /// for the life of the process (it is a static of the host's SQLite).
    pub(super) unsafe fn table_for(
        host: *mut ffi::sqlite3_api_routines,
        version: c_int,
    ) -> *mut ffi::sqlite3_api_routines {
        let addr = *TABLE.get_or_init(|| {
            // SAFETY: every field is an `Option` of a function pointer, for which all-zero
            // bytes are `None`.
            let mut t: Box<ffi::sqlite3_api_routines> = Box::new(unsafe { std::mem::zeroed() });
            let n = entries(version);
            // SAFETY: the host's table has at least `n` entries of one word each (its
            // release's layout), `t` has 270, and the two do not overlap.
            unsafe {
                std::ptr::copy_nonoverlapping(host.cast::<u8>(), (&raw mut *t).cast::<u8>(), n * WORD);
            }
            if n < 267 {
                t.is_interrupted = Some(is_interrupted);
            }
            if n < 268 {
                t.stmt_explain = Some(stmt_explain);
            }
            if n < 270 {
                t.get_clientdata = Some(get_clientdata);
                t.set_clientdata = Some(set_clientdata);
            }
            t.libversion_number = Some(bindings_version);
            Box::into_raw(t) as usize
        });
        addr as *mut ffi::sqlite3_api_routines
    }

    unsafe extern "C" fn bindings_version() -> c_int {
        ffi::SQLITE_VERSION_NUMBER
    }

    /// The host cannot be asked; nothing the guard runs is ever interrupted by it.
    unsafe extern "C" fn is_interrupted(_db: *mut ffi::sqlite3) -> c_int {
        0
    }

    unsafe extern "C" fn stmt_explain(_stmt: *mut ffi::sqlite3_stmt, _mode: c_int) -> c_int {
        ffi::SQLITE_ERROR
    }

    /// No client data on a host without it.
    unsafe extern "C" fn get_clientdata(_db: *mut ffi::sqlite3, _name: *const c_char) -> *mut c_void {
        std::ptr::null_mut()
    }

    /// Refused, as SQLite refuses it when out of memory: the destructor runs on the data
    /// now (sqlite.org/c3ref/get_clientdata.html), so nothing leaks.
    unsafe extern "C" fn set_clientdata(
        _db: *mut ffi::sqlite3,
        _name: *const c_char,
        data: *mut c_void,
        destructor: Option<unsafe extern "C" fn(*mut c_void)>,
    ) -> c_int {
        if let Some(d) = destructor
            && !data.is_null()
        {
            // SAFETY: the caller's destructor for its own data, called once, as SQLite would.
            unsafe { d(data) };
        }
        ffi::SQLITE_ERROR
    }
}

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

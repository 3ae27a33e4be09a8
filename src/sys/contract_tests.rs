//! Contract tests of the FFI layer: callbacks called directly on raw aligned buffers, as
//! SQLite calls them, behind a stand-in safe half (no guard, no policy).
//!
//! Each test names the contract it keeps:
//! - "pMethods must be NULL after a failed xOpen" (sqlite.org/c3ref/io_methods.html);
//! - `xGetLastError` reports the errno of the last failure (`sqlite3_system_errno`);
//! - a panic never unwinds into C;
//! - user text never becomes a printf format.
//!
//! File names handed to `x_open` come from `sqlite3_create_filename`, as SQLite requires of
//! any name passed to a VFS: a plain C literal makes `sqlite3_uri_boolean` read past it.

use std::ffi::{CStr, c_int};
use std::ptr;
use std::sync::Arc;

use libsqlite3_sys as ffi;

use super::shim::{GuardedFile, OpenRequest, Opened, PendingOpen, Refused, Shim, guarded};
use super::sqlite::SqliteFilename;
use super::vfs::{register, x_get_last_error, x_open};
use super::{log_to_sqlite, sqlite_string};

#[repr(C, align(8))]
struct Buf([u8; 4096]);

/// A stand-in safe half: refuses every open, panics, or lets it through to the parent.
#[derive(Clone, Copy)]
enum Mode {
    Refuse,
    Panic,
    PassThrough,
}

struct TestShim(Mode);

struct Pass(c_int);

impl Shim for TestShim {
    fn open(&self, req: &OpenRequest<'_>) -> Result<Box<dyn PendingOpen>, Refused> {
        match self.0 {
            Mode::Refuse => Err(Refused { rc: ffi::SQLITE_CANTOPEN, errno: libc::EREMOTE, message: "no".into() }),
            Mode::Panic => panic!("a bug in the safe half"),
            Mode::PassThrough => Ok(Box::new(Pass(req.flags))),
        }
    }
}

impl PendingOpen for Pass {
    fn flags(&self) -> c_int {
        self.0
    }
    fn wal_allowed(&self) -> bool {
        true
    }
    fn hot_wal_path(&self) -> Option<std::path::PathBuf> {
        None
    }
    fn parent_failed(self: Box<Self>, _rc: c_int, _errno: c_int) {}
    fn opened(self: Box<Self>, _opened: Opened) -> Result<Box<dyn GuardedFile>, Refused> {
        Err(Refused { rc: ffi::SQLITE_CANTOPEN, errno: libc::EPERM, message: "refused after open".into() })
    }
}

/// Registers a test VFS named `name` and returns it.
fn vfs(name: &str, mode: Mode) -> *mut ffi::sqlite3_vfs {
    register("unix", vec![(name.to_owned(), Arc::new(TestShim(mode)) as Arc<dyn Shim>)]).unwrap();
    let c = std::ffi::CString::new(name).unwrap();
    // SAFETY: looking up the VFS just registered.
    let v = unsafe { ffi::sqlite3_vfs_find(c.as_ptr()) };
    assert!(!v.is_null());
    // SAFETY: v is live.
    assert!(unsafe { (*v).szOsFile } as usize <= std::mem::size_of::<Buf>());
    v
}

/// Opens `path` as a main database through `v` on a poisoned buffer; returns the rc and
/// whether pMethods was left NULL.
fn open_main(v: *mut ffi::sqlite3_vfs, path: &str) -> (c_int, bool) {
    let mut buf = Buf([0xAB; 4096]);
    let file = buf.0.as_mut_ptr().cast::<ffi::sqlite3_file>();
    let name = SqliteFilename::new(std::path::Path::new(path)).unwrap();
    // SAFETY: the buffer is large enough and aligned; the name is a SQLite filename that
    // outlives the call.
    let rc = unsafe {
        x_open(v, name.as_ptr(), file, ffi::SQLITE_OPEN_MAIN_DB | ffi::SQLITE_OPEN_READONLY, ptr::null_mut())
    };
    // SAFETY: reading the field xOpen must have left NULL or valid.
    (rc, unsafe { (*file).pMethods }.is_null())
}

#[test]
fn failed_parent_open_leaves_pmethods_null_and_reports_errno() {
    let v = vfs("warden-contract-pass", Mode::PassThrough);
    let (rc, null) = open_main(v, "/nonexistent-dir-warden/x.db");
    assert_ne!(rc, ffi::SQLITE_OK);
    assert!(null, "pMethods must be NULL after a failed xOpen");
    // SAFETY: v is ours; (0, NULL) is how SQLite calls it.
    assert_ne!(unsafe { x_get_last_error(v, 0, ptr::null_mut()) }, 0);
}

#[test]
fn refusal_after_a_successful_parent_open_closes_it_and_leaves_pmethods_null() {
    let v = vfs("warden-contract-after", Mode::PassThrough);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("x.db");
    std::fs::write(&db, b"").unwrap();
    let (rc, null) = open_main(v, db.to_str().unwrap());
    assert_eq!(rc, ffi::SQLITE_CANTOPEN);
    assert!(null);
    // SAFETY: as above.
    assert_eq!(unsafe { x_get_last_error(v, 0, ptr::null_mut()) }, libc::EPERM);
}

#[test]
fn refusal_reports_its_code_and_errno() {
    let v = vfs("warden-contract-refuse", Mode::Refuse);
    let (rc, null) = open_main(v, "/tmp/warden-contract-refused.db");
    assert_eq!(rc, ffi::SQLITE_CANTOPEN);
    assert!(null);
    // SAFETY: as above.
    assert_eq!(unsafe { x_get_last_error(v, 0, ptr::null_mut()) }, libc::EREMOTE);
}

#[test]
fn a_panic_in_the_safe_half_becomes_cantopen() {
    let v = vfs("warden-contract-panic", Mode::Panic);
    let (rc, null) = open_main(v, "/tmp/warden-contract-panic.db");
    assert_eq!(rc, ffi::SQLITE_CANTOPEN);
    assert!(null);
}

#[test]
fn panics_become_error_codes() {
    let rc = guarded(ffi::SQLITE_IOERR, || panic!("boom"));
    assert_eq!(rc, ffi::SQLITE_IOERR);
}

#[test]
fn registering_a_taken_name_or_over_ourselves_fails() {
    vfs("warden-contract-taken", Mode::Refuse);
    let again =
        register("unix", vec![("warden-contract-taken".to_owned(), Arc::new(TestShim(Mode::Refuse)) as Arc<dyn Shim>)]);
    assert!(matches!(again, Err(super::shim::RegisterFailure::NameTaken(_))));
    let wrap = register(
        "warden-contract-taken",
        vec![("warden-contract-wrap".to_owned(), Arc::new(TestShim(Mode::Refuse)) as Arc<dyn Shim>)],
    );
    assert!(matches!(wrap, Err(super::shim::RegisterFailure::SelfWrap(_))));
}

#[test]
fn log_is_not_a_format_string() {
    // A '%' in a message must not be interpreted by sqlite3_log / mprintf.
    log_to_sqlite(ffi::SQLITE_WARNING, "path /tmp/%s%n%x.db");
    let p = sqlite_string("100% /x/%s");
    // SAFETY: p is a valid NUL-terminated string from sqlite3_malloc64.
    let s = unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned();
    // SAFETY: freeing what sqlite3_malloc64 allocated.
    unsafe { ffi::sqlite3_free(p.cast()) };
    assert_eq!(s, "100% /x/%s");
}

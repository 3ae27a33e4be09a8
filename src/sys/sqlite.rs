//! Small SQLite helpers that need raw handles.
//!
//! Owns: [`VfsFile`], a file read through a registered VFS instead of a `std::fs`
//! descriptor; the VFS a connection's main database runs on; `sqlite3_db_readonly`; boolean
//! `sqlite3_db_config` options; making a VFS the default. Does not own what is read or why: `format` decodes, callers decide.
//!
//! Why [`VfsFile`] exists: closing *any* descriptor of a file drops every POSIX lock the
//! process holds on it, SQLite's included (sqlite.org/howtocorrupt.html, 2.2). SQLite's
//! `unix` VFS knows this and, when a file it opened is closed while another connection of
//! the process holds locks on the same inode, keeps the descriptor open until those locks
//! are gone. Reading a live database through that VFS therefore never drops an engine's
//! locks, where a `std::fs::File` would.

use std::ffi::{CStr, CString, c_int};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::ptr;

use libsqlite3_sys as ffi;

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

/// `SQLITE_DBCONFIG_ENABLE_ATTACH_CREATE` (SQLite 3.49.0; the extension API's bindings
/// predate it): may `ATTACH` create a database file?
pub(crate) const DBCONFIG_ENABLE_ATTACH_CREATE: c_int = 1020;
/// `SQLITE_DBCONFIG_ENABLE_ATTACH_WRITE` (SQLite 3.49.0): may `ATTACH` open a database for
/// writing? Off, every attached database is opened read-only, whatever its URI says.
pub(crate) const DBCONFIG_ENABLE_ATTACH_WRITE: c_int = 1021;

/// A boolean `sqlite3_db_config` option of `conn`: switched to `set` when given, and its
/// value after the call.
///
/// # Errors
/// SQLite's result code (an option this SQLite does not know is `SQLITE_ERROR`).
pub(crate) fn db_flag(conn: &rusqlite::Connection, op: c_int, set: Option<bool>) -> Result<bool, c_int> {
    let mut now: c_int = -1;
    let want = set.map_or(-1, c_int::from);
    // SAFETY: a live handle; boolean options take (int, int*) ("The first argument is 1, 0,
    // or -1 to enable, disable, or leave unchanged", sqlite.org/c3ref/c_dbconfig_defensive.html).
    let rc = unsafe { ffi::sqlite3_db_config(conn.handle(), op, want, &raw mut now) };
    if rc != ffi::SQLITE_OK {
        return Err(rc);
    }
    Ok(now == 1)
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

/// A database filename as `xOpen` requires it: "the filename ... is a pointer to a string
/// obtained from sqlite3_create_filename() or passed into xOpen by SQLite itself"
/// (sqlite.org/c3ref/create_filename.html), because a VFS may read URI parameters that
/// follow it in memory.
pub(crate) struct SqliteFilename(ffi::sqlite3_filename);

impl SqliteFilename {
    /// A filename for `path` with no journal, WAL or URI parameters.
    pub(crate) fn new(path: &Path) -> io::Result<SqliteFilename> {
        let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| io::ErrorKind::InvalidInput)?;
        // SAFETY: three valid C strings and zero parameters; the result is NULL (out of
        // memory) or a filename freed by sqlite3_free_filename in Drop.
        let z = unsafe { ffi::sqlite3_create_filename(c.as_ptr(), c"".as_ptr(), c"".as_ptr(), 0, ptr::null_mut()) };
        if z.is_null() {
            return Err(io::ErrorKind::OutOfMemory.into());
        }
        Ok(SqliteFilename(z))
    }

    /// The pointer to hand to `xOpen`; valid while `self` lives.
    pub(crate) fn as_ptr(&self) -> ffi::sqlite3_filename {
        self.0
    }
}

impl Drop for SqliteFilename {
    fn drop(&mut self) {
        // SAFETY: the pointer came from sqlite3_create_filename and is freed once.
        unsafe { ffi::sqlite3_free_filename(self.0) };
    }
}

/// A file opened read-only through a registered VFS (see the module docs for why).
pub struct VfsFile {
    /// `szOsFile` bytes, 8-aligned, holding the VFS's `sqlite3_file` (a leaked box,
    /// reclaimed in `Drop`, so SQLite may write through it behind `&self`).
    mem: *mut [u64],
    /// The VFS's xOpen succeeded, so xClose must run.
    open: bool,
    /// Kept alive for as long as the file: the unix VFS stores the name pointer.
    _name: SqliteFilename,
    len: u64,
}

impl VfsFile {
    /// Opens `path` read-only through the VFS `vfs` (`unix` when `None`).
    ///
    /// # Errors
    /// `NotFound` when the VFS is not registered or SQLite cannot open the file
    /// (`SQLITE_CANTOPEN`, also for a missing file), otherwise an I/O error with SQLite's
    /// result code.
    pub fn open(vfs: Option<&str>, path: &Path) -> io::Result<VfsFile> {
        let c_vfs = CString::new(vfs.unwrap_or("unix")).map_err(|_| io::ErrorKind::InvalidInput)?;
        // SAFETY: a valid C string; vfs_find only reads the VFS list.
        let v = unsafe { ffi::sqlite3_vfs_find(c_vfs.as_ptr()) };
        if v.is_null() {
            return Err(io::Error::new(io::ErrorKind::NotFound, "VFS not registered"));
        }
        // SAFETY: v is a registered, live VFS.
        let (size, open) = unsafe { ((*v).szOsFile, (*v).xOpen) };
        let Some(open) = open else { return Err(io::ErrorKind::Unsupported.into()) };
        let words = usize::try_from(size).unwrap_or(0).div_ceil(8).max(1);
        let name = SqliteFilename::new(path)?;
        let mut f =
            VfsFile { mem: Box::into_raw(vec![0u64; words].into_boxed_slice()), open: false, _name: name, len: 0 };
        let file = f.file();
        let mut out = 0;
        let flags = ffi::SQLITE_OPEN_READONLY | ffi::SQLITE_OPEN_MAIN_DB;
        // SAFETY: the buffer has szOsFile bytes, 8-aligned; the name is a SQLite filename
        // that outlives the file (it is stored beside it).
        let rc = unsafe { open(v, f._name.as_ptr(), file, flags, &raw mut out) };
        // SAFETY: "pMethods ... must be NULL or valid after every xOpen return": when set,
        // xClose must run, even after a failed open.
        f.open = !unsafe { (*file).pMethods }.is_null();
        if rc != ffi::SQLITE_OK {
            return Err(if rc & 0xff == ffi::SQLITE_CANTOPEN {
                io::Error::new(io::ErrorKind::NotFound, format!("cannot open `{}`", path.display()))
            } else {
                io::Error::other(format!("SQLite error {rc} opening `{}`", path.display()))
            });
        }
        let mut sz: ffi::sqlite3_int64 = 0;
        // SAFETY: the file is open; xFileSize writes one integer.
        let rc = unsafe { f.methods().xFileSize.map_or(ffi::SQLITE_ERROR, |g| g(f.file(), &raw mut sz)) };
        if rc != ffi::SQLITE_OK {
            return Err(io::Error::other(format!("SQLite error {rc} sizing `{}`", path.display())));
        }
        f.len = u64::try_from(sz).unwrap_or(0);
        Ok(f)
    }

    fn file(&self) -> *mut ffi::sqlite3_file {
        self.mem.cast()
    }

    fn methods(&self) -> &ffi::sqlite3_io_methods {
        // SAFETY: the file is open for as long as self lives, so pMethods is valid.
        unsafe { &*(*self.file()).pMethods }
    }

    /// The file's size when it was opened.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Reads up to `buf.len()` bytes at `offset`; returns how many were read (fewer at the
    /// end of the file).
    ///
    /// # Errors
    /// An I/O error with SQLite's result code.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let want = self.len.saturating_sub(offset).min(buf.len() as u64);
        if want == 0 {
            return Ok(0);
        }
        let n = c_int::try_from(want).unwrap_or(c_int::MAX);
        let off = ffi::sqlite3_int64::try_from(offset).map_err(|_| io::ErrorKind::InvalidInput)?;
        // SAFETY: the file is open; buf has at least n bytes.
        let rc = unsafe {
            self.methods().xRead.map_or(ffi::SQLITE_ERROR, |g| g(self.file(), buf.as_mut_ptr().cast(), n, off))
        };
        match rc {
            ffi::SQLITE_OK => Ok(n as usize),
            // The file shrank since it was sized: the unread part is zero-filled; report
            // only what is known to be data.
            ffi::SQLITE_IOERR_SHORT_READ => Ok(0),
            rc => Err(io::Error::other(format!("SQLite read error {rc}"))),
        }
    }
}

impl Drop for VfsFile {
    fn drop(&mut self) {
        if self.open
            && let Some(close) = self.methods().xClose
        {
            // SAFETY: the file is open and is closed exactly once, here.
            unsafe { close(self.file()) };
        }
        // SAFETY: `mem` came from Box::into_raw in `open` and is reclaimed once, here.
        drop(unsafe { Box::from_raw(self.mem) });
    }
}

// SAFETY: the sqlite3_file is owned by this value alone and the VFS methods are
// thread-safe for distinct files; nothing else points into the buffer.
unsafe impl Send for VfsFile {}

impl std::fmt::Debug for VfsFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VfsFile").field("len", &self.len).finish_non_exhaustive()
    }
}

/// A sequential reader over a [`VfsFile`], from offset 0.
#[derive(Debug)]
pub struct VfsReader<'a> {
    file: &'a VfsFile,
    pos: u64,
}

impl VfsFile {
    /// Reads the file from the start, sequentially (`std::io::Read`).
    pub fn reader(&self) -> VfsReader<'_> {
        VfsReader { file: self, pos: 0 }
    }
}

impl io::Read for VfsReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

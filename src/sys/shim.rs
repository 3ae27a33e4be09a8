//! The safe interface between the VFS callbacks and the guard's decisions.
//!
//! Owns: the [`Shim`], [`PendingOpen`] and [`GuardedFile`] traits the safe half implements,
//! the values that cross them ([`Refused`], [`OpenRequest`], [`Opened`], [`PragmaAnswer`],
//! [`IoStats`]), and the two rules every callback follows: catch panics ([`guarded`]) and
//! report a refusal's errno to `xGetLastError`. Does not own any pointer handling.

use std::cell::Cell;
use std::ffi::c_int;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use libsqlite3_sys as ffi;
use serde::{Deserialize, Serialize};

use super::log_to_sqlite;

/// A refusal as SQLite sees it. The safe half has already recorded it (audit, the
/// thread-local refusal); this layer logs `message`, sets `errno` and returns `rc`.
#[derive(Debug)]
pub(crate) struct Refused {
    /// The result code `xOpen` (or the call refused) returns.
    pub(crate) rc: c_int,
    /// What `xGetLastError` reports for it (`EREMOTE`, `EWOULDBLOCK`, ...).
    pub(crate) errno: c_int,
    /// The text sent to `sqlite3_log`.
    pub(crate) message: String,
}

/// A main-database open as SQLite asked for it.
pub(crate) struct OpenRequest<'a> {
    /// The file name SQLite passed (already a full path name).
    pub(crate) path: &'a Path,
    /// SQLite's open flags.
    pub(crate) flags: c_int,
    /// `nolock=1` was given as a URI parameter.
    pub(crate) nolock: bool,
    /// `immutable=1` was given as a URI parameter.
    pub(crate) immutable: bool,
}

/// What the parent's successful open left, read through the parent's own file.
pub(crate) struct Opened {
    /// The first 100 bytes, when the file has that many.
    pub(crate) header: Option<[u8; 100]>,
    /// [`PendingOpen::hot_wal_path`] exists and is not empty, as the parent sees it.
    pub(crate) wal_present: bool,
    /// The flags the parent reported (`READONLY` when it had to downgrade).
    pub(crate) flags: c_int,
}

/// The safe half of one registered VFS object (one role of a guard).
pub(crate) trait Shim: Send + Sync + 'static {
    /// Decides a main-database open before the parent sees it.
    fn open(&self, req: &OpenRequest<'_>) -> Result<Box<dyn PendingOpen>, Refused>;

    /// A connection whose main database runs on this VFS object was opened: called from
    /// SQLite's auto-extension ([`super::hooks`]), before the host gets the connection, so
    /// the safe half can configure it. `Err` fails the open with that message.
    fn connection_opened(&self, _conn: &rusqlite::Connection) -> Result<(), String> {
        Ok(())
    }

    /// Asked by the authorizer [`super::hooks::restrict_attach`] installs: may the connection
    /// `ATTACH` the file `name`? `None`: the name is not a string literal (or not UTF-8).
    fn may_attach(&self, _name: Option<&str>) -> bool {
        true
    }
}

/// An open the safe half allowed, waiting for the parent.
pub(crate) trait PendingOpen {
    /// The flags to pass to the parent (possibly downgraded to read-only).
    fn flags(&self) -> c_int;
    /// Whether WAL may be used on this file; decides the io_methods version.
    fn wal_allowed(&self) -> bool;
    /// A file whose existence (non-empty) the safe half wants to know once the parent has
    /// opened the database: its hot `-wal`, when WAL is not allowed.
    fn hot_wal_path(&self) -> Option<PathBuf>;
    /// The parent failed to open the file with `rc`, leaving `errno`.
    fn parent_failed(self: Box<Self>, rc: c_int, errno: c_int);
    /// The parent opened the file: last checks, then the file's safe state.
    fn opened(self: Box<Self>, opened: Opened) -> Result<Box<dyn GuardedFile>, Refused>;
}

/// The safe state of one open guarded main-database file. Called only on the rare paths
/// (refusals, pragmas, close); the hot paths (read, write, sync) only consult the two flags
/// this layer caches at open.
pub(crate) trait GuardedFile: Send {
    /// Writes are vetoed (a tooling connection on an existing file).
    fn read_only(&self) -> bool;
    /// The VFS name reported by `SQLITE_FCNTL_VFSNAME` before the parent's.
    fn vfs_name(&self) -> &str;
    /// Layer 3: SQLite opens a `-wal` of this file, which does not allow WAL.
    fn refuse_wal_file(&self) -> Refused;
    /// Layer 5: a page-1 write would mark this file as WAL.
    fn refuse_wal_header(&self) -> Refused;
    /// A write was vetoed on a read-only file.
    fn vetoed_write(&mut self);
    /// `PRAGMA name[=value]` reached the file (`SQLITE_FCNTL_PRAGMA`); `None` lets it through.
    fn pragma(&mut self, name: &str, value: Option<&str>, stats: &IoStats) -> Option<PragmaAnswer>;
    /// A write transaction starts (SQLite asks for a RESERVED lock): `Err` refuses it.
    fn begin_write(&mut self) -> Result<(), Refused>;
    /// The header should be read just before the file is closed (the last engine reference).
    fn wants_header_on_close(&self) -> bool;
    /// The file was closed by the parent with `rc`.
    fn closed(self: Box<Self>, header: Option<[u8; 100]>, stats: IoStats, rc: c_int);
}

/// How a pragma handled by the safe half ends.
pub(crate) enum PragmaAnswer {
    /// `SQLITE_OK` with this text as the pragma's result.
    Value(String),
    /// `SQLITE_ERROR` with this message.
    Error(String),
}

/// Per-file I/O counters, kept on the hot path and reported on close.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IoStats {
    /// `xRead` calls.
    pub reads: u64,
    /// `xWrite` calls.
    pub writes: u64,
    /// Bytes read.
    pub bytes_read: u64,
    /// Bytes written.
    pub bytes_written: u64,
    /// `xSync` calls.
    pub syncs: u64,
    /// Write transactions (RESERVED locks taken).
    pub write_txns: u64,
    /// Writes vetoed on a read-only role.
    pub vetoed_writes: u64,
}

/// Why a registration failed (the safe half turns this into its own error type).
#[derive(Debug)]
pub(crate) enum RegisterFailure {
    /// A name (parent or ours) with a NUL byte.
    InvalidName(String),
    /// No VFS of the parent's name.
    ParentMissing(String),
    /// The parent is one of our own VFS objects.
    SelfWrap(String),
    /// A VFS of that name is already registered.
    NameTaken(String),
    /// `sqlite3_vfs_register` failed.
    Sqlite {
        /// The name being registered.
        name: String,
        /// SQLite's result code.
        code: c_int,
    },
}

thread_local! {
    /// The errno to report from `xGetLastError` for the last failure on this thread.
    pub(super) static GUARD_ERRNO: Cell<c_int> = const { Cell::new(0) };
}

pub(super) fn set_errno(e: c_int) {
    GUARD_ERRNO.with(|c| c.set(e));
}

/// Runs a callback body, turning a panic into `on_panic` instead of unwinding into C.
pub(super) fn guarded(on_panic: c_int, body: impl FnOnce() -> c_int) -> c_int {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(rc) => rc,
        Err(_) => {
            tracing::error!(target: "sqlite_warden::vfs", "panic inside a VFS callback; returning an error to SQLite");
            log_to_sqlite(ffi::SQLITE_INTERNAL, "warden: internal error (panic) in a VFS callback");
            on_panic
        }
    }
}

/// Logs a refusal, sets its errno and returns its result code.
pub(super) fn refuse(r: Refused) -> c_int {
    log_to_sqlite(r.rc, &r.message);
    set_errno(r.errno);
    r.rc
}

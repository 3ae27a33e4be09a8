//! Error types, one per operation, each with the failures that operation can produce.
//!
//! Owns: the error enums and their messages (lowercase, paths in backticks, a `hint:` where
//! the operator can do something). Does not own: refusal decisions (see [`crate::guard::policy`]).
//! A failed check is never an error here: errors mean "could not do what was asked".

use std::io;
use std::path::PathBuf;

use crate::guard::lock::Holder;
use crate::storage::FsVerdict;

/// Gathering filesystem facts failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProbeError {
    /// `stat`/`statfs` failed on the path or every ancestor.
    #[error("cannot examine `{path}`: {source}")]
    Path {
        /// The path examined.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: io::Error,
    },
    /// The mount table could not be read.
    #[error(
        "cannot read the mount table `{path}`: {source}\n(hint: warden needs /proc mounted to tell local from network storage)"
    )]
    MountTable {
        /// The mountinfo file.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: io::Error,
    },
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

/// Taking or reading the single-writer lock failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    /// Another writer holds the lock.
    #[error("`{db}` already has a writer: {}\n(hint: stop that engine first; `warden lock {}` shows the holder)", holder_text(holder.as_deref()), db.display())]
    Held {
        /// The database.
        db: PathBuf,
        /// The lock file.
        lock_path: PathBuf,
        /// Who holds it, as the holder recorded it (diagnostic only).
        holder: Option<Box<Holder>>,
    },
    /// The lock file could not be opened, locked or written.
    #[error("cannot use the writer lock file `{lock_path}`: {source}")]
    Io {
        /// The lock file.
        lock_path: PathBuf,
        /// What the system said.
        #[source]
        source: io::Error,
    },
}

pub(crate) fn holder_text(h: Option<&Holder>) -> String {
    match h {
        Some(h) => h.describe(),
        None => "holder details unavailable".to_owned(),
    }
}

/// Writing the audit log failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// The audit file could not be created or appended to.
    #[error(
        "cannot append to the audit log `{path}`: {source}\n(hint: set WARDEN_AUDIT_DIR to a writable local directory)"
    )]
    Io {
        /// The audit file.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: io::Error,
    },
}

/// Opening a guarded connection failed or was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The engine was asked to write on a network filesystem.
    #[error("refusing to open `{path}` for the engine: it is on a network filesystem, {}\n(reason: {})\n(hint: move the database to a local disk; `warden fs {}` explains the verdict)", verdict.describe(), verdict.reason, path.display())]
    NetworkFilesystem {
        /// The database.
        path: PathBuf,
        /// The verdict.
        verdict: Box<FsVerdict>,
    },
    /// The mount's locks are not real.
    #[error("refusing to open `{path}` for the engine: locking is disabled on {}\n(reason: {})\n(hint: remount without `nobrl`/`nolock`, or better, move the database to a local disk)", verdict.describe(), verdict.reason)]
    NoLocking {
        /// The database.
        path: PathBuf,
        /// The verdict.
        verdict: Box<FsVerdict>,
    },
    /// The filesystem could not be vouched for.
    #[error("refusing to open `{path}` for the engine: warden cannot vouch for {}\n(reason: {})\n(hint: move the database to a local disk)", verdict.describe(), verdict.reason)]
    SuspectFilesystem {
        /// The database.
        path: PathBuf,
        /// The verdict.
        verdict: Box<FsVerdict>,
    },
    /// WAL was requested, or found, where it cannot work.
    #[error("{message}\n(hint: keep journal_mode=DELETE on this storage, or move the database to a local disk)")]
    WalRefused {
        /// The database.
        path: PathBuf,
        /// The refusal, as SQLite reported it.
        message: String,
    },
    /// Another writer holds the single-writer lock.
    #[error(transparent)]
    WriterLocked(#[from] LockError),
    /// A URI parameter that disables safety was used.
    #[error(
        "refusing `{param}` on `{path}`: it disables SQLite's locking or change detection\n(hint: open the database without URI parameters; analysis tools should read a snapshot)"
    )]
    UnsafeUriParameter {
        /// The database.
        path: PathBuf,
        /// `nolock=1` or `immutable=1`.
        param: String,
    },
    /// The path is a URI or an in-memory name, which the factory does not accept.
    #[error("`{path}` is not a database file path: {why}\n(hint: pass a plain filesystem path)")]
    NotAFilePath {
        /// What was passed.
        path: String,
        /// Why it is refused.
        why: &'static str,
    },
    /// The connection did not end up on the warden VFS.
    #[error("`{path}` was opened on VFS `{vfs}`, not on warden's `{expected}`; refusing the connection")]
    NotOnWardenVfs {
        /// The database.
        path: PathBuf,
        /// The VFS the connection runs on.
        vfs: String,
        /// The VFS it should run on.
        expected: String,
    },
    /// The engine asked to write but the file is read-only to this process.
    #[error(
        "`{path}` is not writable by this process, so the engine cannot use it\n(hint: check the owner and mode of the file and its directory)"
    )]
    NotWritable {
        /// The database.
        path: PathBuf,
    },
    /// The database is missing and creation was not asked for.
    #[error("`{path}` does not exist\n(hint: pass the right path, or allow creation explicitly)")]
    Missing {
        /// The database.
        path: PathBuf,
    },
    /// The audit record for the open could not be written and the policy is fail-closed.
    #[error("refusing to open `{path}`: {source}")]
    AuditUnavailable {
        /// The database.
        path: PathBuf,
        /// The audit failure.
        #[source]
        source: AuditError,
    },
    /// The guard could not be registered.
    #[error(transparent)]
    Register(#[from] RegisterError),
    /// The tooling connection is not read-only after all checks.
    #[error("tooling connection to `{path}` is not read-only; refusing it")]
    NotReadOnly {
        /// The database.
        path: PathBuf,
    },
    /// An analysis open ([`crate::guard::connect::open_snapshot`]) was pointed at a live database
    /// and it has no snapshot to read instead.
    #[error(
        "`{path}`: this is the live database; analysis reads snapshots: run `warden snapshot` (or pass --live)\n(reason: {why}; no snapshot at `{latest}`)\n(hint: `warden snapshot --db {}` publishes one; `warden run --snapshot-every 10m` keeps one fresh)",
        path.display()
    )]
    LiveDatabase {
        /// The database.
        path: PathBuf,
        /// Where its latest snapshot would be.
        latest: PathBuf,
        /// Why it counts as live.
        why: &'static str,
    },
    /// SQLite itself failed.
    #[error("SQLite failed on `{path}`: {source}")]
    Sqlite {
        /// The database.
        path: PathBuf,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
}

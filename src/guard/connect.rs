//! The connection factory: one call for the engine's connection, one for tooling's.
//!
//! Owns: opening `rusqlite::Connection`s on the guard VFS with safe settings, checking that
//! the connection really runs on the guard, and turning the guard's refusals into typed
//! [`OpenError`]s with hints. Does not own: the refusal rules (see [`crate::guard::policy`]) or
//! the VFS itself (see [`crate::guard::vfs`]).
//!
//! Bypasses it closes:
//! - paths are opened **without** `SQLITE_OPEN_URI`, so `file:db?vfs=unix`, `nolock=1` or
//!   `immutable=1` cannot switch the guard or its locking off; a `file:` path is refused
//!   outright rather than silently treated as a file name;
//! - after opening, `SQLITE_FCNTL_VFS_POINTER` must name the guard's VFS;
//! - tooling connections are read-only at three levels (the VFS downgrades the open,
//!   `query_only`, and `SQLITE_DBCONFIG_DEFENSIVE`) and cannot `ATTACH` (limit 0, which also
//!   stops `VACUUM INTO`), so a reader cannot write the guarded file through another name.
//!   The limit is the host's to raise, so it is not what holds: every connection on the
//!   tooling VFS, the factory's included, is also restricted when it opens (attached files
//!   read-only, and an authorizer that refuses any `ATTACH` but in-memory databases and files
//!   through the tooling VFS itself; see `guard::open`), and [`open_tool`] checks that this
//!   took effect.
//!
//! # Analysis reads snapshots ([`crate::copies::snapshot::open_snapshot`])
//! The operators' rule: the engine is the only writer, and analysis reads snapshots or
//! copies, never the live database and never its WAL. A reader on the live file is not
//! harmless even when it is read-only: its read transaction pins the WAL so checkpoints
//! cannot finish and the `-wal` grows for as long as the query runs; in rollback mode its
//! shared lock makes the engine's commit wait (up to its busy timeout, then fail); and
//! opening a WAL database at all maps and writes its `-shm`. So the analysis factory,
//! `open_snapshot` (in [`crate::copies::snapshot`]), opens snapshot files, and when it is
//! handed the live database's path it opens that database's `latest.sqlite` instead and
//! says so; with no snapshot it fails with [`OpenError::LiveDatabase`]. A caller that
//! really needs the live file (an operator who passed `--live`) calls [`open_tool`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use serde::{Deserialize, Serialize};

use crate::guard::audit::AuditError;
use crate::guard::lock::LockError;
use crate::guard::policy::{Refusal, RefusalKind, Role};
use crate::guard::vfs::{self, Guard, RegisterError};
use crate::storage::FsVerdict;
use crate::sys::sqlite as ffi;

/// Which journal mode the engine connection ends up in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JournalChoice {
    /// WAL on local storage (readers never block the writer, one fsync per commit at most);
    /// on storage where WAL is refused, a WAL-mode database cannot even be opened, so the
    /// existing rollback mode is kept. The default.
    #[default]
    PerVerdict,
    /// Leave whatever mode the database is in.
    Keep,
    /// `DELETE` rollback journal.
    Delete,
    /// `TRUNCATE` rollback journal.
    Truncate,
    /// `WAL`; refused with [`OpenError::WalRefused`] where the guard forbids it.
    Wal,
}

/// `PRAGMA synchronous` for the engine connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Synchronous {
    /// `FULL` (default): every commit is durable once it returns, in WAL mode too. A
    /// trading engine cannot lose acknowledged work on power loss.
    #[default]
    Full,
    /// `NORMAL`: in WAL mode, the last commits may roll back after a power loss (never
    /// corrupt). Faster; choose it only if the engine can replay.
    Normal,
    /// `EXTRA`: also syncs the directory after a rollback journal is deleted.
    Extra,
}

/// Settings of the engine connection. The defaults are the safe ones.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// The guard to open through; `None` uses [`vfs::default_guard`].
    pub guard: Option<Guard>,
    /// Create the database if it does not exist (default `false`: a missing database at
    /// session start usually means a wrong path, not a first run).
    pub create: bool,
    /// Journal mode (default [`JournalChoice::PerVerdict`]).
    pub journal: JournalChoice,
    /// Durability (default [`Synchronous::Full`]).
    pub synchronous: Synchronous,
    /// How long to wait on SQLite's own locks before `SQLITE_BUSY` (default 5 s: long
    /// enough for a checkpoint, short enough to surface a stuck reader).
    pub busy_timeout: Duration,
    /// `PRAGMA foreign_keys=ON` (default `true`; SQLite's own default is off).
    pub foreign_keys: bool,
    /// `PRAGMA cell_size_check=ON` (default `true`): catches some corruption at read time
    /// instead of crashing on it, for a small cost.
    pub cell_size_check: bool,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            guard: None,
            create: false,
            journal: JournalChoice::PerVerdict,
            synchronous: Synchronous::Full,
            busy_timeout: Duration::from_secs(5),
            foreign_keys: true,
            cell_size_check: true,
        }
    }
}

/// Settings of a tooling connection.
#[derive(Debug, Clone)]
pub struct ToolOptions {
    /// The guard to open through; `None` uses [`vfs::default_guard`].
    pub guard: Option<Guard>,
    /// How long to wait on SQLite's locks (default 5 s).
    pub busy_timeout: Duration,
}

impl Default for ToolOptions {
    fn default() -> Self {
        ToolOptions { guard: None, busy_timeout: Duration::from_secs(5) }
    }
}

/// Why a name that is not UTF-8 is refused.
const NOT_UTF8: &str = "the name is not valid UTF-8, and warden names every database it guards as text (audit log, writer lock, artifacts); rename it";

pub(crate) fn check_path(path: &Path) -> Result<(), OpenError> {
    let s = crate::util::fmt::path_text(path);
    let why = if path.to_str().is_none() {
        Some(NOT_UTF8)
    } else if s.is_empty() {
        Some("an empty name opens a temporary database")
    } else if s == ":memory:" {
        Some("`:memory:` is not a file the guard can protect")
    } else if s.starts_with("file:") {
        Some("URIs are not accepted: their parameters (`vfs=`, `nolock=`, `immutable=`) could bypass the guard")
    } else {
        None
    };
    match why {
        Some(why) => Err(OpenError::NotAFilePath { path: s.into_owned(), why }),
        None => Ok(()),
    }
}

fn guard_or_default(g: Option<&Guard>) -> Result<Guard, OpenError> {
    match g {
        Some(g) => Ok(g.clone()),
        None => Ok(vfs::default_guard()?),
    }
}

/// Turns the guard's refusal into a typed error.
pub fn refusal_to_error(r: Refusal) -> OpenError {
    let Refusal { kind, path, verdict, message } = r;
    let verdict =
        || verdict.clone().unwrap_or_else(|| Box::new(crate::storage::probe::unknown_verdict("unknown".into())));
    match kind {
        RefusalKind::NetworkFilesystem => OpenError::NetworkFilesystem { path, verdict: verdict() },
        RefusalKind::NoLocking => OpenError::NoLocking { path, verdict: verdict() },
        RefusalKind::SuspectFilesystem => OpenError::SuspectFilesystem { path, verdict: verdict() },
        RefusalKind::WalRefused => OpenError::WalRefused { path, message },
        RefusalKind::WriterLocked { lock_path, holder } => {
            OpenError::WriterLocked(LockError::Held { db: path, lock_path, holder })
        }
        RefusalKind::UnsafeUriParameter { param } => OpenError::UnsafeUriParameter { path, param },
        RefusalKind::NotWritable => OpenError::NotWritable { path },
        RefusalKind::AuditUnavailable => OpenError::AuditUnavailable {
            path: path.clone(),
            source: AuditError::Io { path, source: std::io::Error::other(message) },
        },
        RefusalKind::WriterElsewhere => OpenError::WriterLocked(LockError::HeldElsewhere { db: path }),
        RefusalKind::Forked { holder_pid } => OpenError::WriterLocked(LockError::Forked { db: path, holder_pid }),
        RefusalKind::LockReplaced { lock_path } => OpenError::WriterLocked(LockError::Replaced { db: path, lock_path }),
        RefusalKind::PathNotUtf8 => {
            OpenError::NotAFilePath { path: crate::util::fmt::path_text(&path).into_owned(), why: NOT_UTF8 }
        }
        RefusalKind::LockUnavailable => OpenError::WriterLocked(LockError::Io {
            lock_path: crate::guard::lock::lock_path_for(&path),
            source: std::io::Error::other(message),
        }),
    }
}

fn open_on(path: &Path, flags: OpenFlags, vfs_name: &str) -> Result<Connection, OpenError> {
    let _ = vfs::take_last_refusal();
    Connection::open_with_flags_and_vfs(path, flags, vfs_name).map_err(|source| match vfs::take_last_refusal() {
        Some(r) => refusal_to_error(r),
        None => OpenError::Sqlite { path: path.to_owned(), source },
    })
}

fn sqlite_err(path: &Path) -> impl Fn(rusqlite::Error) -> OpenError + '_ {
    move |source| match vfs::take_last_refusal() {
        Some(r) => refusal_to_error(r),
        None => OpenError::Sqlite { path: path.to_owned(), source },
    }
}

fn check_vfs(conn: &Connection, path: &Path, expected: &str) -> Result<(), OpenError> {
    let vfs = ffi::connection_vfs_name(conn).unwrap_or_else(|| "<unknown>".into());
    if vfs == expected {
        Ok(())
    } else {
        Err(OpenError::NotOnWardenVfs { path: path.to_owned(), vfs, expected: expected.to_owned() })
    }
}

/// What the guard decided for a connection's main database (`PRAGMA warden_status`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GuardStatus {
    /// Role of the connection.
    pub role: Role,
    /// The VFS name.
    pub vfs: String,
    /// The database.
    pub db: PathBuf,
    /// The storage verdict.
    pub fs: crate::storage::FsVerdict,
    /// Whether WAL may be used.
    pub wal_allowed: bool,
    /// The writer lock's state.
    pub writer_lock: Option<crate::guard::lock::LockStatus>,
    /// I/O counters so far.
    pub stats: crate::guard::audit::FileStats,
    /// The audit log file.
    pub audit_log: PathBuf,
}

/// Asks the guard about a connection (`PRAGMA warden_status`).
///
/// # Errors
/// `rusqlite::Error` if the connection is not on a warden VFS or the answer is not JSON.
pub fn guard_status(conn: &Connection) -> rusqlite::Result<GuardStatus> {
    let json: String = conn.query_row("PRAGMA warden_status", [], |r| r.get(0))?;
    serde_json::from_str(&json).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
}

/// Opens the engine's connection: the one writer.
///
/// On return the writer lock is held (it is released when the last engine connection of
/// this process to the database closes), the storage was judged safe under the guard's
/// policy, the audit log has a record of the open, and the connection is configured as
/// [`EngineOptions`] documents.
///
/// # Errors
/// - [`OpenError::NetworkFilesystem`], [`OpenError::NoLocking`],
///   [`OpenError::SuspectFilesystem`]: the storage is refused for the engine;
/// - [`OpenError::WriterLocked`]: another writer holds the lock (its record is attached);
/// - [`OpenError::WalRefused`]: the database is in WAL mode, has a hot `-wal`, or WAL was
///   requested on storage that forbids it;
/// - [`OpenError::Missing`], [`OpenError::NotAFilePath`], [`OpenError::NotWritable`],
///   [`OpenError::AuditUnavailable`], [`OpenError::NotOnWardenVfs`], [`OpenError::Sqlite`].
pub fn open_engine(path: impl AsRef<Path>, opts: &EngineOptions) -> Result<Connection, OpenError> {
    let path = path.as_ref();
    check_path(path)?;
    let guard = guard_or_default(opts.guard.as_ref())?;
    if !opts.create && !path.exists() {
        return Err(OpenError::Missing { path: path.to_owned() });
    }
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    if opts.create {
        flags |= OpenFlags::SQLITE_OPEN_CREATE;
    }
    let conn = open_on(path, flags, guard.engine_vfs())?;
    check_vfs(&conn, path, guard.engine_vfs())?;
    let e = sqlite_err(path);
    conn.busy_timeout(opts.busy_timeout).map_err(&e)?;
    let status = guard_status(&conn).map_err(&e)?;
    let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).map_err(&e)?;
    let want = match opts.journal {
        JournalChoice::PerVerdict if status.wal_allowed => Some("WAL"),
        JournalChoice::PerVerdict | JournalChoice::Keep => None,
        JournalChoice::Delete => Some("DELETE"),
        JournalChoice::Truncate => Some("TRUNCATE"),
        JournalChoice::Wal => Some("WAL"),
    };
    if let Some(want) = want.filter(|w| !w.eq_ignore_ascii_case(&mode)) {
        let got: String = conn.query_row(&format!("PRAGMA journal_mode={want}"), [], |r| r.get(0)).map_err(&e)?;
        if !got.eq_ignore_ascii_case(want) {
            return Err(OpenError::WalRefused {
                path: path.to_owned(),
                message: format!("journal_mode={want} did not take effect (still {got})"),
            });
        }
    }
    let sync = match opts.synchronous {
        Synchronous::Full => "FULL",
        Synchronous::Normal => "NORMAL",
        Synchronous::Extra => "EXTRA",
    };
    conn.execute_batch(&format!(
        "PRAGMA synchronous={sync}; PRAGMA foreign_keys={}; PRAGMA cell_size_check={};",
        if opts.foreign_keys { "ON" } else { "OFF" },
        if opts.cell_size_check { "ON" } else { "OFF" },
    ))
    .map_err(&e)?;
    Ok(conn)
}

/// Opens a tooling connection: read-only, never blocking the engine, unable to attach or
/// write anything.
///
/// # Errors
/// [`OpenError::Missing`] when the database does not exist (a reader never creates it);
/// [`OpenError::NotReadOnly`] if any read-only check fails; otherwise as [`open_engine`]
/// for storage and VFS problems (tooling may read from network storage, never in WAL).
pub fn open_tool(path: impl AsRef<Path>, opts: &ToolOptions) -> Result<Connection, OpenError> {
    let path = path.as_ref();
    check_path(path)?;
    let guard = guard_or_default(opts.guard.as_ref())?;
    if !path.exists() {
        return Err(OpenError::Missing { path: path.to_owned() });
    }
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = open_on(path, flags, guard.tool_vfs())?;
    check_vfs(&conn, path, guard.tool_vfs())?;
    let e = sqlite_err(path);
    conn.busy_timeout(opts.busy_timeout).map_err(&e)?;
    conn.execute_batch("PRAGMA query_only=ON;").map_err(&e)?;
    use rusqlite::config::DbConfig;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true).map_err(&e)?;
    // A reader must never checkpoint (and so write) the engine's database on close.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true).map_err(&e)?;
    conn.set_limit(rusqlite::limits::Limit::SQLITE_LIMIT_ATTACHED, 0).map_err(&e)?;
    // Set up by the guard when the connection opened (raising the limit does not lift it).
    let attach_write = ffi::db_flag(&conn, ffi::DBCONFIG_ENABLE_ATTACH_WRITE, None);
    if ffi::db_readonly(&conn) != 1 || attach_write != Ok(false) {
        return Err(OpenError::NotReadOnly { path: path.to_owned() });
    }
    Ok(conn)
}

impl OpenError {
    /// The exit code for this error (the table in `util::exit`), the same for every command
    /// that opens a database.
    pub fn exit_code(&self) -> u8 {
        use crate::util::exit;
        match self {
            OpenError::WriterLocked(e) => e.exit_code(),
            OpenError::Missing { .. } => exit::NOINPUT,
            OpenError::NotAFilePath { .. } => exit::USAGE,
            _ => exit::UNAVAILABLE,
        }
    }
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
    /// An analysis open ([`crate::copies::snapshot::open_snapshot`]) was pointed at a live database
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_and_memory_are_refused() {
        for p in ["file:x.db?vfs=unix", ":memory:", ""] {
            let e = open_engine(p, &EngineOptions::default()).unwrap_err();
            assert!(matches!(e, OpenError::NotAFilePath { .. }), "{p}: {e}");
        }
    }
}

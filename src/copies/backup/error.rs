//! Why a backup could not be taken ([`BackupError`]) and its exit code. A copy that fails its
//! check is a report, not an error. Does not own taking the backup (`backup`).

use std::io;
use std::path::{Path, PathBuf};

use crate::copies::copy::Failure;
use crate::guard::connect::OpenError;

/// Why a backup could not be taken. A copy that fails its check is not an error: see
/// [`BackupOutcome::integrity`].
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The database is an empty file: there is nothing to back up, and a "verified" copy of
    /// nothing must never become the newest good backup.
    #[error(
        "`{db}` is an empty file: no tables, no data; refusing to publish a backup of it\n(hint: a lost or replaced file? `warden backups` lists the last good backups; `warden restore` installs one)"
    )]
    Empty {
        /// The database.
        db: PathBuf,
    },
    /// The database or the backup directory is on storage warden refuses.
    #[error(
        "refusing to back up: the {what} `{path}` is on {}\n(reason: {})\n(hint: backups must be written to, and taken from, a local disk; `warden fs {}` explains the verdict)",
        verdict.describe(),
        verdict.reason,
        path.display()
    )]
    StorageRefused {
        /// The path judged.
        path: PathBuf,
        /// `database` or `backup directory`.
        what: &'static str,
        /// The verdict.
        verdict: Box<crate::storage::FsVerdict>,
    },
    /// Not enough free space for the copy.
    #[error(
        "not enough space for a backup in `{dir}`: need {needed} bytes, {available} free\n(hint: free space there, lower retention, or point backups at another local disk)"
    )]
    NoSpace {
        /// The backup directory.
        dir: PathBuf,
        /// Bytes needed.
        needed: u64,
        /// Bytes available.
        available: u64,
    },
    /// The disk filled up during the copy; nothing was published and the previous backups
    /// are untouched.
    #[error(
        "the disk holding `{dir}` filled up during the backup; nothing was published and earlier backups are untouched\n(hint: free space or lower retention, then retry)"
    )]
    DiskFull {
        /// The backup directory.
        dir: PathBuf,
    },
    /// The source could not be opened through the guard.
    #[error("cannot read `{db}` for a backup: {source}")]
    Source {
        /// The database.
        db: PathBuf,
        /// Why.
        #[source]
        source: OpenError,
    },
    /// The database is missing.
    #[error("`{db}` does not exist; there is nothing to back up")]
    Missing {
        /// The database.
        db: PathBuf,
    },
    /// The database path cannot be read (a directory, no permission, not UTF-8, a side
    /// file in the way).
    #[error(transparent)]
    Target(#[from] crate::storage::TargetError),
    /// The set has a hot journal or WAL and the caller does not hold the writer lock.
    #[error(
        "`{db}` has a hot rollback journal: an engine is mid-transaction or died\n(hint: run the backup inside a session (`warden run`), which holds the writer lock and recovers a private copy)"
    )]
    HotJournal {
        /// The database.
        db: PathBuf,
    },
    /// The set changed while it was being copied privately, though the writer lock was held:
    /// something writes it outside warden.
    #[error(
        "`{db}` changed while warden copied it, although warden holds its writer lock: something writes it outside warden\n(hint: find it with `fuser -v {db}*`; the engine must be the only writer)"
    )]
    Changing {
        /// The database.
        db: PathBuf,
    },
    /// The set kept changing while it was copied privately without the writer lock: a writer
    /// outside warden is active.
    #[error(
        "`{db}` kept changing while warden copied it, and no guarded engine holds its writer lock: a writer outside warden is active\n(hint: find it with `fuser -v {db}*`; check again once it is idle, or run the engine under warden)"
    )]
    Unsettled {
        /// The database.
        db: PathBuf,
    },
    /// A SQLite call failed.
    #[error("{action} `{path}`: {source}")]
    Sqlite {
        /// What was being done.
        action: &'static str,
        /// On which file.
        path: PathBuf,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// A file operation failed.
    #[error("{action} `{path}`: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// On which file.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// Stopped on request.
    #[error("backup of `{db}` cancelled")]
    Cancelled {
        /// The database.
        db: PathBuf,
    },
}

impl BackupError {
    /// True for the disk-space errors (exit code 74 at the CLI).
    pub fn is_space(&self) -> bool {
        matches!(self, BackupError::NoSpace { .. } | BackupError::DiskFull { .. })
    }
}

impl From<Failure> for BackupError {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Source { db, source } => BackupError::Source { db, source },
            Failure::Sqlite { action, path, source } => BackupError::Sqlite { action, path, source },
            Failure::Io { action, path, source } => BackupError::Io { action, path, source },
            Failure::Cancelled { db } => BackupError::Cancelled { db },
        }
    }
}

impl BackupError {
    /// The exit code for this error (the table in `util::exit`).
    pub fn exit_code(&self) -> u8 {
        use crate::util::exit;
        match self {
            BackupError::Missing { .. } | BackupError::Empty { .. } => exit::NOINPUT,
            BackupError::Target(e) => e.exit_code(),
            BackupError::StorageRefused { .. } => exit::UNAVAILABLE,
            BackupError::HotJournal { .. } | BackupError::Unsettled { .. } => exit::TEMPFAIL,
            BackupError::Changing { .. } => exit::DATAERR,
            BackupError::Source { source, .. } => source.exit_code(),
            BackupError::Cancelled { .. } => exit::CANCELLED,
            BackupError::Io { source, .. } if source.kind() == std::io::ErrorKind::PermissionDenied => exit::NOPERM,
            BackupError::NoSpace { .. }
            | BackupError::DiskFull { .. }
            | BackupError::Io { .. }
            | BackupError::Sqlite { .. } => exit::IOERR,
        }
    }
}

pub(crate) fn io_err<'a>(action: &'static str, path: &'a Path) -> impl Fn(io::Error) -> BackupError + 'a {
    move |source| BackupError::Io { action, path: path.to_owned(), source }
}

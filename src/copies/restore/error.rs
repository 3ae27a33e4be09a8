//! [`RestoreError`]: why a restore, a recovery or a drill could not be carried out, with its
//! exit code, and the small constructors the other files map errors with. Does not own
//! findings (a failed verification or drill is a report, not an error).

use std::io;
use std::path::{Path, PathBuf};

use crate::copies::backup::BackupError;
use crate::guard::audit::AuditError;
use crate::guard::lock::LockError;
use crate::util::exit;

/// Why a restore or drill could not be carried out. A backup that fails re-verification is
/// not an error: see [`RestoreOutcome::VerificationFailed`].
///
/// [`RestoreOutcome::VerificationFailed`]: super::RestoreOutcome::VerificationFailed
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RestoreError {
    /// There is no good backup to restore.
    #[error(
        "no verified backup of `{db}` in `{dir}`\n(hint: backups are taken by `warden run` and `warden backup`; `warden backups` lists them; name a crash copy with --from and --allow-crash-copy)"
    )]
    NoBackup {
        /// The database.
        db: PathBuf,
        /// The backup directory.
        dir: PathBuf,
    },
    /// The named backup does not exist.
    #[error(
        "no backup `{from}` in `{dir}`\n(hint: `warden backups` lists the ids; a path must name a backup data file with its manifest (`<id>.json`) beside it)"
    )]
    NotFound {
        /// As given.
        from: String,
        /// The backup directory.
        dir: PathBuf,
    },
    /// The named backup is not a known-good state.
    #[error(
        "backup `{id}` is {what}, not a known-good state; refusing to restore it\n(hint: pass --allow-crash-copy to restore it anyway; it must still pass the hash and integrity checks)"
    )]
    NotGood {
        /// The backup.
        id: String,
        /// `a post-crash copy` or `unverified`.
        what: &'static str,
    },
    /// The backup named belongs to another database.
    #[error(
        "backup `{id}` is a backup of another database (`{source_db}`), not of `{db}`; refusing to restore it\n(hint: name the right backup with --from (`warden backups` lists this database's), or pass --allow-foreign if you really mean to install the other database's data here)"
    )]
    Foreign {
        /// The backup.
        id: String,
        /// The database it was taken of.
        source_db: PathBuf,
        /// The database being restored.
        db: PathBuf,
    },
    /// A writer (an engine or a session) holds the database.
    #[error(
        "refusing to restore `{db}` while a writer holds it: {holder}\n(hint: stop that engine or session first; `warden lock {db}` shows the holder; nothing was changed)"
    )]
    WriterLocked {
        /// The database.
        db: PathBuf,
        /// The lock file.
        lock_path: PathBuf,
        /// Who holds it, as recorded.
        holder: String,
    },
    /// The writer lock could not be used.
    #[error("{source}")]
    Lock {
        /// Why.
        #[source]
        source: LockError,
    },
    /// The target (or one of its sidecars) exists.
    #[error(
        "`{path}` already exists; restore never overwrites a file\n(hint: choose a new path for --to, or restore in place without --to: the current database is moved aside, never deleted)"
    )]
    TargetExists {
        /// The existing file.
        path: PathBuf,
    },
    /// The target cannot be created there.
    #[error("cannot restore to `{path}`: {why}")]
    CannotCreate {
        /// The target.
        path: PathBuf,
        /// Why, with a hint.
        why: String,
    },
    /// The request makes no sense.
    #[error("{message}")]
    Usage {
        /// What is wrong, with a hint.
        message: String,
    },
    /// The state directory is on another filesystem, so the set cannot be moved aside by
    /// rename.
    #[error(
        "`{state_dir}` is not on the same filesystem as `{db}`, so the current database cannot be moved aside by rename\n(hint: make `{state_dir}` a plain directory beside the database)"
    )]
    CrossDevice {
        /// The database.
        db: PathBuf,
        /// The state directory.
        state_dir: PathBuf,
    },
    /// Not enough free space for the verified copy.
    #[error(
        "not enough space in `{dir}` for the restored copy: need {needed} bytes, {available} free; nothing was changed\n(hint: free space there, or restore elsewhere with --to)"
    )]
    NoSpace {
        /// The target's directory.
        dir: PathBuf,
        /// Bytes needed.
        needed: u64,
        /// Bytes free.
        available: u64,
    },
    /// The disk filled up while copying; the copy was removed and nothing was changed.
    #[error(
        "the disk holding `{dir}` filled up while copying the backup; nothing was changed\n(hint: free space, or restore elsewhere with --to)"
    )]
    DiskFull {
        /// The target's directory.
        dir: PathBuf,
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
    /// The backup store could not be read or locked.
    #[error("{source}")]
    Store {
        /// Why.
        #[source]
        source: BackupError,
    },
    /// The audit log could not record the start of the restore (nothing was changed).
    #[error("{source}; the restore was not started")]
    Audit {
        /// Why.
        #[source]
        source: AuditError,
    },
    /// An interrupted restore cannot be finished or undone without overwriting a file.
    #[error(
        "an interrupted restore of `{db}` cannot be finished or undone automatically: {detail}\n(hint: the record `{intent}` lists every file and where it went; put them right by hand, then remove the record)"
    )]
    InterruptedConflict {
        /// The database.
        db: PathBuf,
        /// The intent record.
        intent: PathBuf,
        /// What is in the way.
        detail: String,
    },
    /// The intent record exists but cannot be read.
    #[error(
        "the restore record `{path}` cannot be read: {reason}\n(hint: a restore was interrupted; inspect `replaced/` beside it and the database, then remove the record by hand)"
    )]
    UnreadableIntent {
        /// The record.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

impl RestoreError {
    /// The sysexits-style exit code (documented in the README).
    pub fn exit_code(&self) -> u8 {
        match self {
            RestoreError::NoBackup { .. } | RestoreError::NotFound { .. } => exit::NOINPUT,
            RestoreError::NotGood { .. } | RestoreError::Foreign { .. } | RestoreError::UnreadableIntent { .. } => {
                exit::DATAERR
            }
            RestoreError::WriterLocked { .. } => exit::TEMPFAIL,
            RestoreError::TargetExists { .. }
            | RestoreError::CannotCreate { .. }
            | RestoreError::InterruptedConflict { .. } => exit::CANTCREAT,
            RestoreError::Usage { .. } => exit::USAGE,
            RestoreError::Store { source: BackupError::Missing { .. } } => exit::NOINPUT,
            // The lock's own code: a directory in the way is 73 here as for every command.
            RestoreError::Lock { source } => source.exit_code(),
            RestoreError::CrossDevice { .. }
            | RestoreError::NoSpace { .. }
            | RestoreError::DiskFull { .. }
            | RestoreError::Io { .. }
            | RestoreError::Store { .. }
            | RestoreError::Audit { .. } => exit::IOERR,
        }
    }
}

pub(super) fn io_err<'a>(action: &'static str, path: &'a Path) -> impl Fn(io::Error) -> RestoreError + 'a {
    move |source| RestoreError::Io { action, path: path.to_owned(), source }
}

pub(super) fn store_err(source: BackupError) -> RestoreError {
    RestoreError::Store { source }
}

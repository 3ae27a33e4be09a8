//! Why an export or import did not happen ([`MigrateError`]) and its exit code, with the small
//! error adapters the other steps share. Does not own: deciding when to fail.

use std::io;
use std::path::{Path, PathBuf};

use crate::copies::backup::IntegrityReport;
use crate::copies::copy::{self, Failure};
use crate::copies::snapshot::SnapshotError;
use crate::guard::error::{LockError, OpenError};
use crate::storage::FsVerdict;
use crate::util::exit;

/// Why an export or import did not happen. Nothing is left behind in either case: no bundle
/// (nor its temporary directory), no database at the target, no state directory.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MigrateError {
    /// The database to export is missing.
    #[error("`{db}` does not exist; there is nothing to export\n(hint: check --db or `database` in warden.toml)")]
    Missing {
        /// The database.
        db: PathBuf,
    },
    /// The database to export is a directory, or an empty file: a bundle of nothing would
    /// look like a real one.
    #[error(
        "`{db}` {what}; refusing to export it\n(hint: check --db or `database` in warden.toml; `warden backups` lists the last good backups)"
    )]
    NotADatabase {
        /// The database.
        db: PathBuf,
        /// `is a directory, not a database file` or `is an empty file: no tables, no data`.
        what: &'static str,
    },
    /// There is no bundle at the path.
    #[error(
        "no bundle at `{path}`\n(hint: pass the directory `warden migrate export --to` made; copy it whole, e.g. `rsync -a` or `tar`)"
    )]
    BundleMissing {
        /// As given.
        path: PathBuf,
    },
    /// The bundle does not match its manifest, or its manifest is not acceptable.
    #[error(
        "refusing the bundle `{bundle}`: {reason}; nothing was written\n(hint: the bundle changed after it was exported, or was copied incompletely; export it again on the old host and copy the whole directory)"
    )]
    Tampered {
        /// The bundle.
        bundle: PathBuf,
        /// What does not match.
        reason: String,
    },
    /// The bundled database fails the integrity gate on this host.
    #[error(
        "the database in `{bundle}` fails the integrity gate: {reason}; nothing was installed\n(hint: export again on the old host; if that copy fails too, run `warden check` on the source database there)"
    )]
    GateFailed {
        /// The bundle.
        bundle: PathBuf,
        /// One line: the check's summary, or the row counts that differ.
        reason: String,
        /// The check, when it ran.
        report: Option<Box<IntegrityReport>>,
    },
    /// The copy of the source fails its check: no bundle was published.
    #[error(
        "the copy of `{db}` fails its check: {}; no bundle was published\n(hint: the database itself is probably damaged; run `warden check --db {db}`)",
        report.summary()
    )]
    CopyFailedCheck {
        /// The database.
        db: PathBuf,
        /// The check.
        report: Box<IntegrityReport>,
    },
    /// A file changed while it was copied into a bundle.
    #[error("`{path}` changed while it was copied: {reason}\n(hint: run the command again)")]
    Changed {
        /// The file.
        path: PathBuf,
        /// What differs.
        reason: String,
    },
    /// The target directory is not on local storage.
    #[error(
        "refusing to place the database in `{dir}`: it is on {}, {} storage ({}); nothing was written\n(hint: import onto a local disk of this host; `warden fs {dir}` shows the verdict)",
        verdict.describe(), verdict.kind, verdict.reason
    )]
    NetworkTarget {
        /// The directory judged.
        dir: PathBuf,
        /// The verdict.
        verdict: Box<FsVerdict>,
    },
    /// The storage of the target could not be judged.
    #[error("cannot judge the storage of `{dir}`: {source}")]
    Probe {
        /// The directory.
        dir: PathBuf,
        /// Why.
        #[source]
        source: crate::guard::error::ProbeError,
    },
    /// Something is already at a path the command would create.
    #[error(
        "`{path}` already exists; warden never overwrites it\n(hint: choose a new path, or move the existing one away first)"
    )]
    TargetExists {
        /// The existing path.
        path: PathBuf,
    },
    /// The target cannot be created there.
    #[error("cannot create `{path}`: {why}")]
    CannotCreate {
        /// The target.
        path: PathBuf,
        /// Why, with a hint.
        why: String,
    },
    /// No such user or group.
    #[error(
        "no such user or group in `{spec}`\n(hint: create the account first (`useradd --system ...`), or pass USER[:GROUP] of an existing one)"
    )]
    UnknownOwner {
        /// As given.
        spec: String,
    },
    /// `chown` was refused.
    #[error(
        "changing the owner of `{path}` to {owner} is not permitted: {source}; nothing was installed\n(hint: run the import as root (sudo), or leave out --owner)"
    )]
    ChownNotPermitted {
        /// The file.
        path: PathBuf,
        /// `user:group (uid:gid)`.
        owner: String,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// A writer holds the target's lock.
    #[error(
        "refusing to import to `{db}`: a writer holds its lock ({holder}); nothing was installed\n(hint: stop that engine; `warden lock {db}` shows the holder)"
    )]
    WriterLocked {
        /// The target.
        db: PathBuf,
        /// Who holds it.
        holder: String,
    },
    /// The writer lock could not be used.
    #[error("{source}")]
    Lock {
        /// Why.
        #[source]
        source: LockError,
    },
    /// The source has a hot rollback journal.
    #[error(
        "`{db}` has a hot rollback journal: an engine is mid-transaction or died, and a read-only copy cannot roll it back\n(hint: stop the engine cleanly (or start and stop a session, which recovers it), then export again)"
    )]
    HotJournal {
        /// The database.
        db: PathBuf,
    },
    /// The source could not be opened through the guard.
    #[error("cannot read `{db}`: {source}")]
    Source {
        /// The database.
        db: PathBuf,
        /// Why.
        #[source]
        source: OpenError,
    },
    /// The installed database could not be switched to WAL; the import was undone.
    #[error(
        "cannot switch `{path}` to WAL on this host: {message}; the import was undone\n(hint: `warden fs {path}` and `warden lock {path}` show why; the bundle is untouched, import it again)"
    )]
    Wal {
        /// The target.
        path: PathBuf,
        /// Why.
        message: String,
        /// The open error, when the open itself failed.
        #[source]
        source: Option<Box<OpenError>>,
    },
    /// A snapshot for a sessions export could not be taken.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// Not enough free space.
    #[error(
        "not enough space in `{dir}`: need {needed} bytes, {available} free; nothing was written\n(hint: free space there, or choose a directory on another local disk)"
    )]
    NoSpace {
        /// The directory.
        dir: PathBuf,
        /// Bytes needed.
        needed: u64,
        /// Bytes free.
        available: u64,
    },
    /// The disk filled up; what was written was removed.
    #[error("the disk holding `{dir}` filled up; nothing was published\n(hint: free space, then retry)")]
    DiskFull {
        /// The directory.
        dir: PathBuf,
    },
    /// The request makes no sense.
    #[error("{message}")]
    Usage {
        /// What is wrong, with a hint.
        message: String,
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
    /// Stopped on request; nothing was published.
    #[error("`{path}`: cancelled; nothing was published")]
    Cancelled {
        /// The database.
        path: PathBuf,
    },
}

impl MigrateError {
    /// The sysexits-style exit code (documented in the README): 65 tampered bundle or failed
    /// gate, 66 missing, 69 network target, 73 target exists, 74 I/O, 75 writer lock or hot
    /// journal, 77 chown or reading not permitted, 64 usage, 130 cancelled.
    pub fn exit_code(&self) -> u8 {
        use MigrateError as E;
        match self {
            E::Missing { .. } | E::NotADatabase { .. } | E::BundleMissing { .. } => exit::NOINPUT,
            E::Tampered { .. } | E::GateFailed { .. } | E::CopyFailedCheck { .. } | E::Changed { .. } => exit::DATAERR,
            E::NetworkTarget { .. } | E::Probe { .. } => exit::UNAVAILABLE,
            E::TargetExists { .. } | E::CannotCreate { .. } => exit::CANTCREAT,
            E::UnknownOwner { .. } | E::Usage { .. } => exit::USAGE,
            E::ChownNotPermitted { .. } => exit::NOPERM,
            E::WriterLocked { .. } | E::HotJournal { .. } => exit::TEMPFAIL,
            E::Source { source, .. } => open_exit_code(source),
            E::Wal { source: Some(source), .. } => open_exit_code(source),
            E::Snapshot(e) => e.exit_code(),
            E::Cancelled { .. } => exit::CANCELLED,
            E::Io { source, .. } if source.kind() == std::io::ErrorKind::PermissionDenied => exit::NOPERM,
            E::Wal { source: None, .. }
            | E::Lock { .. }
            | E::NoSpace { .. }
            | E::DiskFull { .. }
            | E::Sqlite { .. }
            | E::Io { .. } => exit::IOERR,
        }
    }
}

fn open_exit_code(e: &OpenError) -> u8 {
    e.exit_code()
}

impl From<Failure> for MigrateError {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Source { db, source } => MigrateError::Source { db, source },
            Failure::Sqlite { action, path, source } => MigrateError::Sqlite { action, path, source },
            Failure::Io { action, path, source } => MigrateError::Io { action, path, source },
            Failure::Cancelled { db } => MigrateError::Cancelled { path: db },
        }
    }
}

pub(super) fn io_err<'a>(action: &'static str, path: &'a Path) -> impl Fn(io::Error) -> MigrateError + 'a {
    move |source| MigrateError::Io { action, path: path.to_owned(), source }
}

/// Turns a full disk into [`MigrateError::DiskFull`] for `dir`.
pub(super) fn full_in(dir: &Path) -> impl Fn(MigrateError) -> MigrateError + '_ {
    move |e| match &e {
        MigrateError::Sqlite { source, .. } if copy::is_disk_full(source) => {
            MigrateError::DiskFull { dir: dir.to_owned() }
        }
        MigrateError::Io { source, .. } if copy::io_is_full(source) => MigrateError::DiskFull { dir: dir.to_owned() },
        _ => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_table() {
        let p = PathBuf::from("/x");
        assert_eq!(MigrateError::Tampered { bundle: p.clone(), reason: String::new() }.exit_code(), 65);
        assert_eq!(MigrateError::BundleMissing { path: p.clone() }.exit_code(), 66);
        assert_eq!(MigrateError::TargetExists { path: p.clone() }.exit_code(), 73);
        assert_eq!(
            MigrateError::ChownNotPermitted { path: p.clone(), owner: String::new(), source: io::Error::other("x") }
                .exit_code(),
            77
        );
        assert_eq!(MigrateError::Io { action: "x", path: p, source: io::Error::other("x") }.exit_code(), 74);
    }
}

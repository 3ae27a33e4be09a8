//! What is at the database path, judged before warden creates or locks anything.
//!
//! Owns [`check_database`]: a missing file, a directory, a device or FIFO, a file this user
//! may not read (or write, for a session), a name that is not UTF-8, and a warden side file
//! (`<db>-warden.lock`, `<db>.warden/`) that is something else than warden would make. Each
//! is a [`TargetError`] naming the path, the cause, the next step and the exit code, so
//! every command refuses it the same way and creates nothing beside it. Judged from `stat`
//! and `access` alone: no descriptor of the database is opened here, so a process that
//! holds SQLite locks on it keeps them. Does not own what the file contains (see
//! [`crate::format`]) or what its storage is (the rest of [`crate::storage`]).

use std::io;
use std::os::unix::fs::FileTypeExt as _;
use std::path::{Path, PathBuf};

use nix::unistd::AccessFlags;

use crate::util::exit;
use crate::util::fmt::path_text;

/// What a command needs of the database file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Read it (`check`, `status`, `backup`, `snapshot`): it must exist and be readable.
    Read,
    /// Read and write it (a session, an engine). `create`: a missing file is fine when its
    /// directory exists and is writable.
    Write {
        /// A missing database may be created.
        create: bool,
    },
}

/// Why the database path cannot be used. Each names the path, the cause and the way out.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TargetError {
    /// The name is not valid UTF-8.
    #[error(
        "`{path}`: the name is not valid UTF-8, and warden names every database it guards as text (audit log, writer lock, artifacts, manifests)\n(hint: rename the file, or the directory that is not UTF-8, to a UTF-8 name; `ls --quoting-style=escape` shows the bytes)"
    )]
    NotUtf8 {
        /// The path, with `\xNN` for each byte that is not UTF-8.
        path: String,
    },
    /// No file at the path.
    #[error(
        "`{}` does not exist; nothing was started or created\n(hint: check the path; pass --create only for a brand-new database)",
        path.display()
    )]
    Missing {
        /// The database.
        path: PathBuf,
    },
    /// A brand-new database was asked for in a directory that does not exist.
    #[error(
        "cannot create `{}`: its directory `{}` does not exist; nothing was created\n(hint: create the directory first: `mkdir -p {}`)",
        path.display(), dir.display(), dir.display()
    )]
    NoDirectory {
        /// The database.
        path: PathBuf,
        /// Its missing directory.
        dir: PathBuf,
    },
    /// Something other than a regular file is at the path.
    #[error(
        "`{}` is {kind}, not a database file; nothing was started or created\n(hint: name the database file itself, e.g. `{}/engine.db`)",
        path.display(), path.display()
    )]
    NotAFile {
        /// The path.
        path: PathBuf,
        /// `a directory`, `a FIFO`, ….
        kind: &'static str,
    },
    /// This user may not read (or write) the file, or create it in its directory.
    #[error(
        "`{}`: permission denied: this user (uid {uid}) may not {action} it\n(hint: run as the database's owner (see `ls -l {}`), or fix its mode)",
        path.display(), path.display()
    )]
    Denied {
        /// The file (or, to create one, its directory).
        path: PathBuf,
        /// `read`, `read and write`, `create a file in`.
        action: &'static str,
        /// The effective user.
        uid: u32,
    },
    /// One of warden's side files is in the way.
    #[error(
        "`{}` is {kind}, where warden keeps its {what}; nothing was started\n(hint: move it away if it is not yours to keep (`mv {} {}.moved`); warden recreates it)",
        path.display(), path.display(), path.display()
    )]
    InTheWay {
        /// The side path.
        path: PathBuf,
        /// `writer lock file`, `state directory`.
        what: &'static str,
        /// What is there instead.
        kind: &'static str,
    },
    /// The file does not start with SQLite's header.
    #[error(
        "`{}` is not an SQLite database (its first bytes are not `SQLite format 3`); nothing was created\n(hint: check the path; if it is the database and it was overwritten, `warden restore --db {}` brings back the newest good backup)",
        path.display(), path.display()
    )]
    NotADatabase {
        /// The file.
        path: PathBuf,
    },
    /// `stat` or `access` failed otherwise.
    #[error("cannot examine `{}`: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: io::Error,
    },
}

impl TargetError {
    /// The exit code (the table in [`crate::util::exit`]).
    pub fn exit_code(&self) -> u8 {
        match self {
            TargetError::NotUtf8 { .. } => exit::USAGE,
            TargetError::Missing { .. } | TargetError::NoDirectory { .. } | TargetError::NotAFile { .. } => {
                exit::NOINPUT
            }
            TargetError::Denied { .. } => exit::NOPERM,
            TargetError::InTheWay { .. } => exit::CANTCREAT,
            TargetError::NotADatabase { .. } => exit::DATAERR,
            TargetError::Io { source, .. } if source.kind() == io::ErrorKind::PermissionDenied => exit::NOPERM,
            TargetError::Io { .. } => exit::IOERR,
        }
    }
}

/// `Err(NotADatabase)` when the non-empty file at `db` does not start with SQLite's magic
/// (an empty file, or one whose content is all in its `-wal`, is not judged here). Read
/// through SQLite's VFS, so it is safe in a process holding SQLite locks on `db`. Commands
/// that copy or accept a database call it before they create anything; `restore` never does
/// (a database overwritten with garbage is what it is for).
///
/// # Errors
/// [`TargetError::NotADatabase`]; [`TargetError::Io`] when the header cannot be read.
pub fn require_sqlite(db: &Path) -> Result<(), TargetError> {
    if std::fs::metadata(db).map(|m| m.len()).unwrap_or(0) == 0 {
        return Ok(());
    }
    let head =
        crate::format::header::read_raw_header(db).map_err(|source| TargetError::Io { path: db.to_owned(), source })?;
    if head.len() < crate::format::header::MAGIC.len() || &head[..16] != crate::format::header::MAGIC {
        return Err(TargetError::NotADatabase { path: db.to_owned() });
    }
    Ok(())
}

/// `Err(NotUtf8)` when `path` is not valid UTF-8.
///
/// # Errors
/// [`TargetError::NotUtf8`].
pub fn require_utf8(path: &Path) -> Result<(), TargetError> {
    match path.to_str() {
        Some(_) => Ok(()),
        None => Err(TargetError::NotUtf8 { path: path_text(path).into_owned() }),
    }
}

/// Judges the (resolved) database path for `need`: a UTF-8 name, a regular file (or a
/// creatable one), the access `need` asks for, and warden's own side paths either absent
/// or of the kind warden makes. Opens nothing.
///
/// # Errors
/// The first [`TargetError`] found.
pub fn check_database(db: &Path, need: Need) -> Result<(), TargetError> {
    require_utf8(db)?;
    match std::fs::metadata(db) {
        Ok(md) if md.is_file() => {
            let (flags, action) = match need {
                Need::Read => (AccessFlags::R_OK, "read"),
                Need::Write { .. } => (AccessFlags::R_OK | AccessFlags::W_OK, "read and write"),
            };
            access(db, flags, action)?;
        }
        Ok(md) => return Err(TargetError::NotAFile { path: db.to_owned(), kind: kind_of(&md.file_type()) }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let Need::Write { create: true } = need else {
                return Err(TargetError::Missing { path: db.to_owned() });
            };
            let dir = db.parent().unwrap_or(Path::new("/"));
            match std::fs::metadata(dir) {
                Ok(md) if md.is_dir() => access(dir, AccessFlags::W_OK | AccessFlags::X_OK, "create a file in")?,
                Ok(md) => return Err(TargetError::NotAFile { path: dir.to_owned(), kind: kind_of(&md.file_type()) }),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(TargetError::NoDirectory { path: db.to_owned(), dir: dir.to_owned() });
                }
                Err(source) => return Err(TargetError::Io { path: dir.to_owned(), source }),
            }
        }
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            let dir = db.parent().unwrap_or(Path::new("/")).to_owned();
            return Err(TargetError::Denied { path: dir, action: "search", uid: nix::unistd::geteuid().as_raw() });
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {
            return Err(TargetError::NotAFile { path: first_non_dir(db), kind: "a file" });
        }
        Err(source) => return Err(TargetError::Io { path: db.to_owned(), source }),
    }
    side_paths(db)
}

/// `<db>-warden.lock` must be a regular file, `<db>.warden` a directory, when present.
fn side_paths(db: &Path) -> Result<(), TargetError> {
    let sides = [
        (crate::format::names::lock(db), "writer lock file", true),
        (crate::format::names::state_dir(db), "state directory", false),
    ];
    for (path, what, want_file) in sides {
        // `metadata` follows a symlink: a symlinked state directory is judged where it
        // points, as the storage verdict judges it.
        match std::fs::metadata(&path) {
            Ok(md) if md.is_file() == want_file && md.is_dir() != want_file => {}
            Ok(md) => return Err(TargetError::InTheWay { path, what, kind: kind_of(&md.file_type()) }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(TargetError::Io { path, source }),
        }
    }
    Ok(())
}

fn access(path: &Path, flags: AccessFlags, action: &'static str) -> Result<(), TargetError> {
    // The effective ids, as the open would use them; `access` alone checks the real ones.
    match nix::unistd::faccessat(nix::fcntl::AT_FDCWD, path, flags, nix::fcntl::AtFlags::AT_EACCESS) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EACCES | nix::errno::Errno::EPERM) => {
            Err(TargetError::Denied { path: path.to_owned(), action, uid: nix::unistd::geteuid().as_raw() })
        }
        // A read-only filesystem refuses W_OK with EROFS: the open would fail the same way.
        Err(nix::errno::Errno::EROFS) => Err(TargetError::Denied {
            path: path.to_owned(),
            action: "write (read-only filesystem)",
            uid: nix::unistd::geteuid().as_raw(),
        }),
        Err(e) => Err(TargetError::Io { path: path.to_owned(), source: io::Error::from(e) }),
    }
}

/// The first component of `path` that exists and is not a directory.
fn first_non_dir(path: &Path) -> PathBuf {
    path.ancestors()
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .find(|p| std::fs::metadata(p).is_ok_and(|md| !md.is_dir()))
        .unwrap_or(path)
        .to_owned()
}

fn kind_of(t: &std::fs::FileType) -> &'static str {
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_file() {
        "a regular file"
    } else {
        "not a regular file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt as _;

    #[test]
    fn each_kind_of_bad_path_has_its_error_and_code() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("e.db");
        let e = check_database(&db, Need::Read).unwrap_err();
        assert!(matches!(e, TargetError::Missing { .. }) && e.exit_code() == exit::NOINPUT, "{e}");
        check_database(&db, Need::Write { create: true }).unwrap();
        let e = check_database(&dir.path().join("no/e.db"), Need::Write { create: true }).unwrap_err();
        assert!(matches!(e, TargetError::NoDirectory { .. }), "{e}");

        std::fs::create_dir(&db).unwrap();
        let e = check_database(&db, Need::Write { create: false }).unwrap_err();
        assert!(matches!(e, TargetError::NotAFile { kind: "a directory", .. }), "{e}");
        assert!(e.to_string().contains("is a directory, not a database file"), "{e}");
        std::fs::remove_dir(&db).unwrap();

        std::fs::write(&db, b"x").unwrap();
        check_database(&db, Need::Read).unwrap();
        let e = check_database(&db.join("x.db"), Need::Read).unwrap_err();
        assert!(matches!(&e, TargetError::NotAFile { path, .. } if path == &db), "{e}");

        std::fs::create_dir(crate::format::names::lock(&db)).unwrap();
        let e = check_database(&db, Need::Read).unwrap_err();
        assert!(matches!(e, TargetError::InTheWay { what: "writer lock file", .. }), "{e}");
        assert_eq!(e.exit_code(), exit::CANTCREAT);
        std::fs::remove_dir(crate::format::names::lock(&db)).unwrap();
        std::fs::write(crate::format::names::state_dir(&db), b"").unwrap();
        let e = check_database(&db, Need::Read).unwrap_err();
        assert!(matches!(e, TargetError::InTheWay { what: "state directory", kind: "a regular file", .. }), "{e}");

        let odd = dir.path().join(std::ffi::OsStr::from_bytes(b"caf\xe9.db"));
        let e = check_database(&odd, Need::Read).unwrap_err();
        assert!(matches!(&e, TargetError::NotUtf8 { path } if path.ends_with("caf\\xe9.db")), "{e}");
        assert_eq!(e.exit_code(), exit::USAGE);
    }
}

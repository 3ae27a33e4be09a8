//! The writer lock's second wall: an OFD lock on the database file itself, so one file has
//! one writer whatever name reaches it.
//!
//! Owns: one descriptor per database inode per process, and a one-byte OFD write lock on it
//! far beyond any byte SQLite locks. The lock file (`guard::lock`) is found by name, so
//! two names of one file (a hard link, a file bind-mounted into a container, a directory
//! reached by two paths) would each find their own lock file; this lock is on the inode, so
//! the second writer is refused whichever name it used. Does not own the holder record or
//! the handoff to an engine, which stay with the lock file.
//!
//! **The descriptor is never closed.** Closing any descriptor of a file drops every POSIX
//! lock the process holds on it, and SQLite's locks on the database are POSIX locks: a
//! close here could remove the locks of an engine connection in this very process. So the
//! descriptor stays open for the life of the process (one per database, reused by every
//! later lock of it) and the lock is released with `F_UNLCK`. It is close-on-exec, and an
//! OFD lock is shared by a forked child only through this same description, which the
//! registry in `guard::lock` refuses to let a child use.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};

/// The byte locked: SQLite locks bytes at 1 GiB (`PENDING_BYTE`) and just above, never
/// this far out, so the two never overlap (OFD and POSIX locks on disjoint ranges coexist).
const OFFSET: i64 = 1 << 62;

/// A database file's identity: device and inode.
pub(crate) type Inode = (u64, u64);

fn descriptors() -> MutexGuard<'static, HashMap<Inode, File>> {
    static FDS: OnceLock<Mutex<HashMap<Inode, File>>> = OnceLock::new();
    FDS.get_or_init(Mutex::default).lock().unwrap_or_else(PoisonError::into_inner)
}

/// The outcome of [`lock`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum InodeLock {
    /// This process holds it now.
    Taken(Inode),
    /// Another open file description holds it: a writer through another name.
    Busy(Inode),
    /// The database does not exist yet: there is no inode to lock (the lock is taken at the
    /// first write transaction, once it does).
    NoFile,
}

fn setlk(file: &File, kind: libc::c_int) -> io::Result<bool> {
    let fl = libc::flock {
        l_type: kind as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: OFFSET,
        l_len: 1,
        l_pid: 0,
    };
    match nix::fcntl::fcntl(file, nix::fcntl::FcntlArg::F_OFD_SETLK(&fl)) {
        Ok(_) => Ok(true),
        Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EACCES) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Takes the inode lock of `db` (a resolved path) without waiting.
///
/// # Errors
/// The I/O error opening the database for writing or locking it (`EINVAL` on a kernel
/// without OFD locks).
pub(crate) fn lock(db: &Path) -> io::Result<InodeLock> {
    let md = match std::fs::metadata(db) {
        Ok(md) => md,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(InodeLock::NoFile),
        Err(e) => return Err(e),
    };
    let inode = (md.dev(), md.ino());
    let mut fds = descriptors();
    let file = match fds.entry(inode) {
        Entry::Occupied(e) => e.into_mut(),
        Entry::Vacant(e) => {
            // Write access is what F_WRLCK needs; the engine needs it anyway.
            let file = OpenOptions::new().read(true).write(true).custom_flags(libc::O_CLOEXEC).open(db)?;
            let got = file.metadata()?;
            if (got.dev(), got.ino()) != inode {
                return Err(io::Error::other("the database was replaced while it was being locked"));
            }
            e.insert(file)
        }
    };
    Ok(if setlk(file, libc::F_WRLCK)? { InodeLock::Taken(inode) } else { InodeLock::Busy(inode) })
}

/// Releases the inode lock (the descriptor stays open: see the module docs).
pub(crate) fn unlock(inode: Inode) {
    if let Some(file) = descriptors().get(&inode) {
        let _ = setlk(file, libc::F_UNLCK);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_inode_one_lock_and_the_descriptor_is_reused() {
        let d = tempfile::tempdir().unwrap();
        let db = d.path().join("a.db");
        assert_eq!(lock(&db).unwrap(), InodeLock::NoFile);
        std::fs::write(&db, b"").unwrap();
        let InodeLock::Taken(inode) = lock(&db).unwrap() else { panic!("not taken") };
        // The same description again: still ours (OFD locks of one description never
        // conflict), and no second descriptor is opened.
        assert_eq!(lock(&db).unwrap(), InodeLock::Taken(inode));
        // A second description of the same file, as a writer through a hard link in
        // another process would have: refused.
        std::fs::hard_link(&db, d.path().join("b.db")).unwrap();
        let other = OpenOptions::new().read(true).write(true).open(d.path().join("b.db")).unwrap();
        assert!(!setlk(&other, libc::F_WRLCK).unwrap());
        unlock(inode);
        assert!(setlk(&other, libc::F_WRLCK).unwrap());
        assert_eq!(lock(&db).unwrap(), InodeLock::Busy(inode));
    }
}

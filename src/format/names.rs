//! The names of the files that belong to a database, derived in one place.
//!
//! Owns: the suffixes SQLite uses for a database's side files (`-wal`, `-shm`,
//! `-journal`) and the ones warden adds (`-warden.lock`, the `<db>.warden/` state
//! directory). Does not own what lives in them.

use std::path::{Path, PathBuf};

/// SQLite's write-ahead log beside a database.
pub const WAL: &str = "-wal";
/// SQLite's WAL index (shared memory) beside a database.
pub const SHM: &str = "-shm";
/// SQLite's rollback journal beside a database.
pub const JOURNAL: &str = "-journal";
/// warden's single-writer lock file beside a database.
pub const LOCK: &str = "-warden.lock";
/// warden's state directory beside a database (backups, sessions, snapshots, records).
pub const STATE_DIR: &str = ".warden";

/// `db` with `suffix` appended to its file name (`/x/e.db` + `-wal` = `/x/e.db-wal`).
pub fn sidecar(db: &Path, suffix: &str) -> PathBuf {
    let mut s = db.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// `<db>-wal`.
pub fn wal(db: &Path) -> PathBuf {
    sidecar(db, WAL)
}

/// `<db>-shm`.
pub fn shm(db: &Path) -> PathBuf {
    sidecar(db, SHM)
}

/// `<db>-journal`.
pub fn journal(db: &Path) -> PathBuf {
    sidecar(db, JOURNAL)
}

/// `<db>-warden.lock`, the writer lock file.
pub fn lock(db: &Path) -> PathBuf {
    sidecar(db, LOCK)
}

/// `<db>.warden/`, warden's state directory.
pub fn state_dir(db: &Path) -> PathBuf {
    sidecar(db, STATE_DIR)
}

/// The seal of the last clean close: `<db>.warden/seal` (see `copies::seal`).
pub fn seal(db: &Path) -> PathBuf {
    state_dir(db).join("seal")
}

/// The open marker of the seal: `<db>.warden/seal.open`, written when a session's gate
/// passed or a guarded engine took the writer lock outside a session; the seal is
/// superseded while it is there.
pub fn seal_open(db: &Path) -> PathBuf {
    state_dir(db).join("seal.open")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_append_to_the_file_name() {
        let db = Path::new("/var/lib/e.db");
        assert_eq!(wal(db), Path::new("/var/lib/e.db-wal"));
        assert_eq!(shm(db), Path::new("/var/lib/e.db-shm"));
        assert_eq!(journal(db), Path::new("/var/lib/e.db-journal"));
        assert_eq!(lock(db), Path::new("/var/lib/e.db-warden.lock"));
        assert_eq!(state_dir(db), Path::new("/var/lib/e.db.warden"));
    }
}

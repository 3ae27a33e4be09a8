//! A database's stable identity, recorded in every backup it has.
//!
//! Owns: the random id kept in `<db>.warden/identity` (created by the database's first
//! guarded session; a backup records it when it exists), and the rule that says whether a manifest belongs to a database. Backups know
//! their database by this id and by the resolved path they were taken from, never by the
//! file name alone: two databases called `engine.db` sharing one backup directory must
//! never restore, prune or report each other's backups. Does not own where backups live
//! (`copies::backup`).

use std::io::{self, Read};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::format::names;
use crate::util::atomic;

/// The identity file in the state directory.
pub const IDENTITY_FILE: &str = "identity";

/// What `<db>.warden/identity` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// Record format version.
    pub schema: u32,
    /// 128 random bits, hex.
    pub id: String,
    /// The database's resolved path when the id was made (diagnostic).
    pub path: PathBuf,
    /// When (RFC 3339 UTC).
    pub created: String,
}

fn file_of(db: &Path) -> PathBuf {
    names::state_dir(db).join(IDENTITY_FILE)
}

/// The id of the database at `db` (a resolved path), if it has one.
pub fn load(db: &Path) -> Option<String> {
    let bytes = std::fs::read(file_of(db)).ok()?;
    serde_json::from_slice::<Identity>(&bytes).ok().map(|i| i.id)
}

/// The id of the database at `db`, made and stored (atomically, `0600`, in a `0700` state
/// directory synced into its parent) the first time.
///
/// # Errors
/// The I/O error creating the state directory or writing the file.
pub fn ensure(db: &Path) -> io::Result<String> {
    if let Some(id) = load(db) {
        return Ok(id);
    }
    let mut raw = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut raw)?;
    let ident = Identity {
        schema: 1,
        id: crate::util::fmt::hex(&raw),
        path: db.to_owned(),
        created: crate::util::identity::now_rfc3339(),
    };
    let dir = names::state_dir(db);
    atomic::create_dir_synced(&dir, 0o700)?;
    let mut bytes = serde_json::to_vec_pretty(&ident).map_err(io::Error::other)?;
    bytes.push(b'\n');
    atomic::write_atomic(&file_of(db), &bytes, 0o600)?;
    Ok(ident.id)
}

/// Whether a backup taken of `source` with identity `backup_id` belongs to the database at
/// `db` (resolved) whose identity is `ours`: the same id when both have one; otherwise (a
/// backup from before identities, or a database whose state directory was lost) the same
/// resolved path.
pub fn belongs(backup_id: Option<&str>, source: &Path, ours: Option<&str>, db: &Path) -> bool {
    match (backup_id, ours) {
        (Some(b), Some(o)) => b == o,
        _ => crate::storage::resolve(source).is_ok_and(|s| s == db),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_identity_is_made_once_and_kept() {
        let d = tempfile::tempdir().unwrap();
        let db = d.path().join("e.db");
        assert_eq!(load(&db), None);
        let id = ensure(&db).unwrap();
        assert_eq!(id.len(), 32);
        assert_eq!(ensure(&db).unwrap(), id);
        assert_eq!(load(&db), Some(id));
    }

    #[test]
    fn backups_belong_by_id_then_by_path() {
        let a = Path::new("/srv/a/engine.db");
        let b = Path::new("/srv/b/engine.db");
        assert!(belongs(Some("1"), a, Some("1"), a));
        assert!(!belongs(Some("1"), a, Some("2"), a), "same path, another identity: another database");
        assert!(belongs(None, a, Some("1"), a), "a backup from before identities, same path");
        assert!(!belongs(None, b, Some("1"), a), "same file name, another path: never ours");
        assert!(belongs(Some("1"), a, None, a), "our identity file was lost: the path decides");
    }
}

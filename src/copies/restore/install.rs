//! The install step of an in-place restore: where the replaced set goes, moving it aside
//! (database first, `rename(2)` never over a file) and renaming the verified copy into place.
//! Does not own the intent record or undoing an interrupted install (`recovery`).

use std::io;
use std::path::{Path, PathBuf};

use super::error::{RestoreError, io_err};
use super::files::{exists, file_name, size_of, sync_dir};
use super::model::{MovedFile, REPLACED_DIR, RestoreIntent, SIDECARS};
use crate::copies::backup::{pause_point, sidecar};
use crate::copies::copy;
use crate::util::atomic;

pub(super) fn new_replaced_dir(state: &Path) -> PathBuf {
    let ts = copy::stamp();
    let base = state.join(REPLACED_DIR).join(&ts);
    let mut dir = base.clone();
    let mut n = 1;
    while exists(&dir) {
        n += 1;
        dir = base.with_file_name(format!("{ts}.{n}"));
    }
    dir
}

/// The files of the set at `db` that exist, database first, as moves into `dir`.
pub(super) fn plan_moves(db: &Path, dir: &Path) -> Vec<MovedFile> {
    std::iter::once("")
        .chain(SIDECARS)
        .map(|suffix| sidecar(db, suffix))
        .filter(|p| exists(p))
        .map(|from| {
            let to = dir.join(file_name(&from));
            let size = size_of(&from);
            MovedFile { from, to, size }
        })
        .collect()
}

pub(super) fn move_aside_and_install(db: &Path, intent: &RestoreIntent) -> Result<Vec<MovedFile>, RestoreError> {
    for suffix in std::iter::once("").chain(SIDECARS) {
        let from = sidecar(db, suffix);
        if let Some(m) = intent.moves.iter().find(|m| m.from == from) {
            match atomic::rename_noreplace(&m.from, &m.to) {
                Ok(()) => {}
                // A -shm can vanish by itself; the set is still moved as a whole.
                Err(e) if e.kind() == io::ErrorKind::NotFound && !suffix.is_empty() => {}
                Err(e) => return Err(io_err("moving aside", &m.from)(e)),
            }
        }
        pause_point(&format!("restore-moved-{}", if suffix.is_empty() { "db" } else { &suffix[1..] }));
    }
    let swept = sweep_sidecars(db, &intent.replaced_dir)?;
    sync_dir(&intent.replaced_dir)?;
    sync_dir(atomic::parent_of(db))?;
    atomic::rename_noreplace(&intent.temp, db).map_err(io_err("installing the restored copy as", db))?;
    pause_point("restore-installed");
    sync_dir(atomic::parent_of(db))?;
    Ok(swept)
}

/// Moves any `-wal`, `-journal` or `-shm` still beside `db` into `dir` (under a fresh name
/// if taken): a sidecar left beside the restored file would be replayed into it. Under the
/// writer lock none can appear, but a restore killed before moving the database frees the
/// lock, and an opener may have created one since.
pub(super) fn sweep_sidecars(db: &Path, dir: &Path) -> Result<Vec<MovedFile>, RestoreError> {
    let mut out = Vec::new();
    for suffix in SIDECARS {
        let from = sidecar(db, suffix);
        if !exists(&from) {
            continue;
        }
        let base = dir.join(file_name(&from));
        let mut to = base.clone();
        let mut n = 1;
        while exists(&to) {
            n += 1;
            to = sidecar(&base, &format!(".{n}"));
        }
        let size = size_of(&from);
        atomic::rename_noreplace(&from, &to).map_err(io_err("moving aside", &from))?;
        out.push(MovedFile { from, to, size });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rename_noreplace_refuses_existing() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, b"a").unwrap();
        std::fs::write(&b, b"b").unwrap();
        assert_eq!(atomic::rename_noreplace(&a, &b).unwrap_err().kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&b).unwrap(), b"b");
        std::fs::remove_file(&b).unwrap();
        atomic::rename_noreplace(&a, &b).unwrap();
        assert_eq!(std::fs::read(&b).unwrap(), b"a");
    }
}

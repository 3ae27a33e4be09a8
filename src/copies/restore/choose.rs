//! Choosing the backup to restore: `--from` (an id, a data file name, or a path with its
//! manifest beside it) or the newest good one, refusing a crash copy unless allowed, and
//! the next candidate. Does not own verifying the choice (`verify`).

use std::path::Path;

use super::error::{RestoreError, store_err};
use super::model::RestoreOptions;
use crate::copies::backup::{self, BackupRecord, BackupStore, Manifest};
use crate::copies::kind::BackupKind;

/// Finds the backup `from` names: an id, a data file name in the store, or a path to a
/// data file whose manifest is beside it.
fn find_backup(store: &BackupStore, from: &str, allow_foreign: bool, db: &Path) -> Result<BackupRecord, RestoreError> {
    let not_found = || RestoreError::NotFound { from: from.to_owned(), dir: store.dir().to_owned() };
    let mut all = store.list().map_err(store_err)?;
    let foreign = store.list_foreign().map_err(store_err)?;
    if let Some(f) = foreign.iter().find(|r| r.manifest.id == from || r.manifest.file == from) {
        if !allow_foreign {
            return Err(RestoreError::Foreign {
                id: f.manifest.id.clone(),
                source_db: f.manifest.source.clone(),
                db: db.to_owned(),
            });
        }
        all.push(f.clone());
    }
    let name = from.rsplit('/').next().unwrap_or(from);
    if let Some(r) = all.iter().find(|r| r.manifest.id == from || (!from.contains('/') && r.manifest.file == from)) {
        return Ok(r.clone());
    }
    let path = Path::new(from);
    if !from.contains('/') && !path.exists() {
        return Err(not_found());
    }
    // A path: in the store, or a data file with its manifest beside it elsewhere.
    let canon = std::fs::canonicalize(path).map_err(|_| not_found())?;
    if let Some(r) = all.iter().find(|r| std::fs::canonicalize(&r.path).is_ok_and(|p| p == canon)) {
        return Ok(r.clone());
    }
    let stem = name.strip_suffix(&format!(".{}", backup::DATA_EXT)).ok_or_else(not_found)?;
    let manifest_path = canon.with_file_name(format!("{stem}.{}", backup::MANIFEST_EXT));
    let bytes = std::fs::read(&manifest_path).map_err(|_| not_found())?;
    let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|_| not_found())?;
    if manifest.file != name {
        return Err(not_found());
    }
    Ok(BackupRecord { manifest, path: canon, manifest_path })
}

/// The backup to restore, and whether it may be restored.
pub(super) fn choose(
    db: &Path,
    store: &BackupStore,
    opts: &RestoreOptions,
) -> Result<(BackupRecord, Option<String>), RestoreError> {
    let rec = match &opts.from {
        Some(from) => find_backup(store, from, opts.allow_foreign, db)?,
        None => store
            .newest_good()
            .map_err(store_err)?
            .ok_or_else(|| RestoreError::NoBackup { db: db.to_owned(), dir: store.dir().to_owned() })?,
    };
    if !rec.manifest.is_good() && !opts.allow_crash_copy {
        let what = if rec.manifest.kind == BackupKind::PostCrash { "a post-crash copy" } else { "unverified" };
        return Err(RestoreError::NotGood { id: rec.manifest.id.clone(), what });
    }
    let next = store.list().ok().and_then(|all| {
        all.into_iter()
            .filter(|r| r.manifest.is_good() && r.manifest.id != rec.manifest.id)
            .find(|r| r.manifest.created <= rec.manifest.created)
            .map(|r| r.manifest.id)
    });
    Ok((rec, next))
}

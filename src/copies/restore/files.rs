//! File-system chores shared by restore, recovery and drill: existence and size, names, the
//! state directory, directory syncs, temporary copies (and removing dead processes' ones),
//! the free-space preflight. Does not own moving files aside or installing them (`install`).

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::error::{RestoreError, io_err};
use super::model::{RESTORE_TMP, RestoreOptions};
use crate::copies::copy;
use crate::format::names;
use crate::util::atomic::{self, TMP_MARK};

pub(super) fn exists(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok()
}

pub(super) fn size_of(p: &Path) -> u64 {
    std::fs::symlink_metadata(p).map(|m| m.len()).unwrap_or(0)
}

pub(super) fn file_name(p: &Path) -> String {
    p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "db".into())
}

/// `<db>.warden` unless the options say otherwise.
pub(super) fn state_dir_of(db: &Path, opts: &RestoreOptions) -> PathBuf {
    opts.state_dir.clone().unwrap_or_else(|| names::state_dir(db))
}

pub(super) fn sync_dir(dir: &Path) -> Result<(), RestoreError> {
    atomic::sync_dir(dir).map_err(io_err("syncing", dir))
}

/// A temporary name beside `target` for the restored copy: `.<name>.restore.warden-tmp.<pid>.<n>`.
pub(super) fn restore_temp_for(target: &Path) -> PathBuf {
    atomic::temp_path_for(&target.with_file_name(format!("{}{RESTORE_TMP}", file_name(target))))
}

/// Removes the entries of `dir` whose names start with `prefix` (temporary names, see
/// [`atomic::temp_owner`]) and whose owner process is gone, with `remove`: what a killed
/// restore or drill left. Returns what was removed.
pub(super) fn remove_dead_temps(dir: &Path, prefix: &str, remove: fn(&Path) -> io::Result<()>) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else { return removed };
    for entry in rd.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with(prefix) || atomic::temp_owner(&name).is_some_and(atomic::pid_alive) {
            continue;
        }
        if remove(&entry.path()).is_ok() {
            removed.push(entry.path());
        }
    }
    removed
}

/// Removes restore copies beside `target` left by dead processes.
pub(super) fn remove_stale_temps(target: &Path) -> Vec<PathBuf> {
    let prefix = format!(".{}{RESTORE_TMP}{TMP_MARK}", file_name(target));
    remove_dead_temps(atomic::parent_of(target), &prefix, |p| std::fs::remove_file(p))
}

pub(super) fn space_preflight(dir: &Path, size: u64) -> Result<(), RestoreError> {
    let needed = copy::with_headroom(size);
    let available = copy::free_bytes(dir).map_err(|e| io_err("statvfs", dir)(e.into()))?;
    if available < needed {
        return Err(RestoreError::NoSpace { dir: dir.to_owned(), needed, available });
    }
    Ok(())
}

pub(super) fn same_device(a: &Path, b: &Path) -> bool {
    // The nearest existing ancestors: the state directory may not exist yet.
    let dev = |p: &Path| p.ancestors().find_map(|a| std::fs::metadata(a).ok()).map(|m| m.dev());
    match (dev(a), dev(b)) {
        (Some(x), Some(y)) => x == y,
        _ => true,
    }
}

//! Atomic, durable file publication.
//!
//! Owns: writing a file so that readers see either the old content or the whole new content,
//! never a torn mix, and so that the result survives a power cut once the call returns: a
//! temporary file in the same directory, `fsync`, `rename` over the target, `fsync` of the
//! directory. Does not own: deciding what to write or where (callers), or locking out other
//! writers of the same target (callers serialise, e.g. with the backup store's lock).
//!
//! Temporary names start with `.` and contain [`TMP_MARK`], so leftovers of a killed process
//! are recognisable and never mistaken for published files.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Marker in every temporary file name this crate creates.
pub const TMP_MARK: &str = ".warden-tmp.";

/// A temporary path beside `target`: `.<name>.warden-tmp.<pid>.<n>`.
pub fn temp_path_for(target: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = format!(".{name}{TMP_MARK}{}.{n}", std::process::id());
    target.with_file_name(tmp)
}

/// The process id encoded in a temporary name made by [`temp_path_for`], if `name` is one.
pub fn temp_owner(name: &str) -> Option<u32> {
    let (_, rest) = name.split_once(TMP_MARK)?;
    rest.split('.').next()?.parse().ok()
}

/// True when the process `pid` still exists (this process always does).
pub fn pid_alive(pid: u32) -> bool {
    pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists()
}

/// Removes what killed or failed processes left in `dir`: every entry whose name is a
/// temporary name of this crate ([`temp_path_for`]) and whose owner process is gone (a
/// directory with all it holds). The directory is synced when anything went. Returns
/// what was removed; errors are skipped (the next sweep tries again). A live owner's
/// temporaries are never touched, and neither is any name without [`TMP_MARK`].
pub fn sweep_dead_temps(dir: &Path) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else { return removed };
    for entry in rd.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') || temp_owner(&name).is_none_or(pid_alive) {
            continue;
        }
        let path = entry.path();
        let gone = match entry.file_type() {
            Ok(t) if t.is_dir() => std::fs::remove_dir_all(&path),
            _ => std::fs::remove_file(&path),
        };
        if gone.is_ok() {
            removed.push(path);
        }
    }
    if !removed.is_empty() {
        let _ = sync_dir(dir);
    }
    removed
}

/// [`sweep_dead_temps`] limited to the temporaries of `target` ([`temp_path_for`] of
/// `dir/target`): for directories that hold the user's own files too.
pub fn sweep_dead_temps_named(dir: &Path, target: &str) -> Vec<PathBuf> {
    let prefix = format!(".{target}{TMP_MARK}");
    let mut removed = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else { return removed };
    for entry in rd.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with(&prefix) || temp_owner(&name).is_none_or(pid_alive) {
            continue;
        }
        let path = entry.path();
        let gone = if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
        if gone.is_ok() {
            removed.push(path);
        }
    }
    removed
}

/// `fsync` of a directory, so that a rename or unlink inside it is durable.
///
/// # Errors
/// The I/O error of opening or syncing the directory.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
    File::open(dir)?.sync_all()
}

/// Creates `dir` and any missing parents with permissions `mode`, and makes each new entry
/// durable by syncing the directory it was made in: a directory created without that can
/// vanish after a power cut, together with the first backup written into it.
///
/// # Errors
/// The I/O error of creating or syncing a directory (an existing `dir` is fine).
pub fn create_dir_synced(dir: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    let parent = parent_of(dir);
    if parent != dir {
        create_dir_synced(parent, mode)?;
    }
    match std::fs::DirBuilder::new().mode(mode).create(dir) {
        Ok(()) => sync_dir(parent),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Parent directory of `path` (`.` for a bare file name).
pub fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Writes `bytes` to `target` atomically and durably with permissions `mode`.
///
/// # Errors
/// Any I/O error; the target is then untouched and the temporary file removed.
pub fn write_atomic(target: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    write_atomic_with(target, mode, |f| f.write_all(bytes))
}

/// Like [`write_atomic`], with the content produced by `fill` writing into the file.
///
/// # Errors
/// Any I/O error of `fill`, the sync or the rename; the target is then untouched.
pub fn write_atomic_with(target: &Path, mode: u32, fill: impl FnOnce(&mut File) -> io::Result<()>) -> io::Result<()> {
    let tmp = temp_path_for(target);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(&tmp)?;
        fill(&mut f)?;
        f.sync_all()?;
        drop(f);
        publish(&tmp, target)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Renames a finished, synced temporary file over `target` and syncs the directory.
///
/// # Errors
/// The I/O error of the rename or the directory sync.
pub fn publish(tmp: &Path, target: &Path) -> io::Result<()> {
    std::fs::rename(tmp, target)?;
    sync_dir(parent_of(target))
}

/// `rename(2)` that never replaces what is at `to` (`RENAME_NOREPLACE`; where the
/// filesystem lacks it, a check just before a plain rename, which callers make safe by
/// holding the relevant lock).
///
/// # Errors
/// `EEXIST` when `to` exists; any other error of the rename.
pub fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};
        match renameat2(AT_FDCWD, from, AT_FDCWD, to, RenameFlags::RENAME_NOREPLACE) {
            Ok(()) => return Ok(()),
            Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOSYS) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if std::fs::symlink_metadata(to).is_ok() {
        return Err(io::Error::from_raw_os_error(libc::EEXIST));
    }
    std::fs::rename(from, to)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_whole_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.json");
        write_atomic(&p, b"one", 0o600).unwrap();
        write_atomic(&p, b"two", 0o600).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 1, "{names:?}");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn failed_fill_keeps_old_content() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a");
        write_atomic(&p, b"old", 0o644).unwrap();
        let e = write_atomic_with(&p, 0o644, |f| {
            f.write_all(b"partial")?;
            Err(io::Error::other("injected"))
        });
        assert!(e.is_err());
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn sweep_takes_only_dead_owners_temps() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // pid 0x7fffffff never exists; our own pid always does.
        let dead = d.join(format!(".a.json{TMP_MARK}2147483646.0"));
        let dead_dir = d.join(format!("..warden-drill{TMP_MARK}2147483646.1"));
        let mine = temp_path_for(&d.join("b.json"));
        for f in [&dead, &mine] {
            std::fs::write(f, b"x").unwrap();
        }
        std::fs::create_dir(&dead_dir).unwrap();
        std::fs::write(dead_dir.join("copy.sqlite"), b"x").unwrap();
        std::fs::write(d.join("published.json"), b"x").unwrap();
        std::fs::write(d.join(format!("user{TMP_MARK}2147483646.0")), b"x").unwrap();
        let mut gone = sweep_dead_temps(d);
        gone.sort();
        let mut want = vec![dead, dead_dir];
        want.sort();
        assert_eq!(gone, want);
        assert!(mine.exists() && d.join("published.json").exists());
    }

    #[test]
    fn temp_names_carry_the_owner() {
        let t = temp_path_for(Path::new("/x/db-20261125-pre.sqlite"));
        let name = t.file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with('.'));
        assert_eq!(temp_owner(name), Some(std::process::id()));
        assert_eq!(temp_owner("db.sqlite"), None);
    }
}

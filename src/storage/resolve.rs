//! Which file is this? Resolving the name an operator typed to the file the kernel opens.
//!
//! Owns [`resolve`]: a path made absolute with every symlink (a file, any directory on
//! the way, a dangling link SQLite would create through) and every `..` resolved the way the
//! kernel resolves them, also for a database that does not exist yet. Every decision warden
//! makes about a database (storage verdict, writer lock file, state directory, backup
//! store) starts from this path, never from the typed one. Does not own what a file *is*
//! beyond its name: `guard::lock` keys the writer lock on device and inode as well, which
//! also catches hard links and bind-mounted files.

use std::ffi::OsString;
use std::io;
use std::path::{Component, Path, PathBuf};

/// How many symlinks [`resolve`] follows before it gives up (the kernel's `ELOOP` limit).
const MAX_LINKS: usize = 40;

/// `path` as the kernel would open or create it: absolute, no `.` or `..`, no symlink in any
/// component. The part that exists is resolved on the filesystem; the missing rest (a
/// database not created yet, and maybe its directory) is appended as written, `..` in it
/// taken lexically. A dangling symlink is followed to where a create through it would land.
///
/// # Errors
/// `ELOOP` after too many symlinks; any other error but `NotFound` from `stat`,
/// `readlink` or `realpath` (a component that is not a directory, no permission).
pub fn resolve(path: &Path) -> io::Result<PathBuf> {
    let mut links = 0;
    resolve_at(path, &mut links)
}

fn resolve_at(path: &Path, links: &mut usize) -> io::Result<PathBuf> {
    let abs = if path.is_absolute() { path.to_owned() } else { std::env::current_dir()?.join(path) };
    let parts: Vec<Component<'_>> = abs.components().collect();
    // The longest prefix that exists, resolved by the kernel; then the rest.
    for split in (1..=parts.len()).rev() {
        let prefix: PathBuf = parts[..split].iter().collect();
        match std::fs::canonicalize(&prefix) {
            Ok(real) => return Ok(append(real, &parts[split..])),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // A dangling symlink: `realpath` fails on it, but a create through it
                // makes the file at its target.
                if let Ok(md) = std::fs::symlink_metadata(&prefix)
                    && md.file_type().is_symlink()
                {
                    *links += 1;
                    if *links > MAX_LINKS {
                        return Err(io::Error::from_raw_os_error(libc::ELOOP));
                    }
                    let target = std::fs::read_link(&prefix)?;
                    let base = prefix.parent().unwrap_or(Path::new("/"));
                    let mut whole = base.join(target);
                    for c in &parts[split..] {
                        whole.push(c.as_os_str());
                    }
                    return resolve_at(&whole, links);
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(append(PathBuf::from("/"), &parts))
}

/// Appends components that do not exist, lexically.
fn append(mut base: PathBuf, rest: &[Component<'_>]) -> PathBuf {
    for c in rest {
        match c {
            Component::Normal(n) => base.push(OsString::from(n)),
            Component::ParentDir => {
                base.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    base
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn symlinks_and_dotdot_resolve_to_the_real_file() {
        let d = tempfile::tempdir().unwrap();
        let real = resolve(d.path()).unwrap();
        std::fs::create_dir(real.join("data")).unwrap();
        std::fs::write(real.join("data/e.db"), b"").unwrap();
        symlink(real.join("data/e.db"), real.join("l.db")).unwrap();
        symlink(real.join("data"), real.join("ldir")).unwrap();
        assert_eq!(resolve(&real.join("l.db")).unwrap(), real.join("data/e.db"));
        assert_eq!(resolve(&real.join("ldir/e.db")).unwrap(), real.join("data/e.db"));
        // `..` after a symlinked directory is the target's parent, not the link's.
        std::fs::create_dir(real.join("data/sub")).unwrap();
        symlink(real.join("data/sub"), real.join("lsub")).unwrap();
        assert_eq!(resolve(&real.join("lsub/../e.db")).unwrap(), real.join("data/e.db"));
    }

    #[test]
    fn a_missing_file_resolves_through_its_directory_and_a_dangling_link() {
        let d = tempfile::tempdir().unwrap();
        let real = resolve(d.path()).unwrap();
        std::fs::create_dir(real.join("data")).unwrap();
        symlink(real.join("data"), real.join("ldir")).unwrap();
        assert_eq!(resolve(&real.join("ldir/new/x.db")).unwrap(), real.join("data/new/x.db"));
        symlink(real.join("data/later.db"), real.join("dangling.db")).unwrap();
        assert_eq!(resolve(&real.join("dangling.db")).unwrap(), real.join("data/later.db"));
    }

    #[test]
    fn a_symlink_loop_is_an_error_not_a_hang() {
        let d = tempfile::tempdir().unwrap();
        let real = resolve(d.path()).unwrap();
        symlink(real.join("b"), real.join("a")).unwrap();
        symlink(real.join("a"), real.join("b")).unwrap();
        assert!(resolve(&real.join("a")).is_err());
    }
}

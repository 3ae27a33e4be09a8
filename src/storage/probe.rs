//! Gathering filesystem facts: the seam between the verdict logic and the machine.
//!
//! Owns: the [`FsProbe`] trait, the real probe ([`RealProbe`]: `stat`, `statfs` and a cached
//! `/proc/self/mountinfo`) and the simulated one ([`SimulatedProbe`]) that tests and the
//! demo use to say "this directory is an SMB share" without mounting anything. Does not own:
//! the verdict (see [`crate::storage::classify_mount`]).
//!
//! The real probe never opens the database file itself: a `close()` on any descriptor of
//! the database would drop SQLite's POSIX locks. It only calls `stat`/`statfs` on the path.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Seek};
use std::os::fd::AsFd;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use crate::storage::{FsKind, FsVerdict, MountTable, ProbeError, magic};

/// Facts about one existing path, the input to the verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathFacts {
    /// The absolute, resolved path that was examined.
    pub canonical: PathBuf,
    /// `st_dev` as (major, minor), to match mountinfo's field 3.
    pub dev: Option<(u32, u32)>,
    /// statfs magic, Linux only.
    pub magic: Option<u32>,
}

/// Where filesystem facts come from. Implement it to simulate mounts in tests.
pub trait FsProbe: Send + Sync + std::fmt::Debug {
    /// Facts about `path`, which exists and is absolute and already resolved (SQLite's
    /// `xFullPathname` resolves symlinks before any open).
    ///
    /// # Errors
    /// The I/O error from `stat`/`statfs` (`NotFound` when the path does not exist).
    fn facts(&self, path: &Path) -> io::Result<PathFacts>;

    /// The current mount table. Implementations should cache it: it is consulted on every
    /// database open.
    ///
    /// # Errors
    /// [`ProbeError::MountTable`] when the table cannot be read.
    fn mounts(&self) -> Result<Arc<MountTable>, ProbeError>;

    /// Facts about `path` or, when it does not exist yet, about its nearest existing
    /// ancestor (where it would be created). The path is [`resolve`](crate::storage::resolve)d
    /// first: the verdict is about the file a symlink points to, not the link.
    ///
    /// # Errors
    /// [`ProbeError::Path`] when no ancestor can be examined.
    fn facts_nearest(&self, path: &Path) -> Result<PathFacts, ProbeError> {
        let abs = crate::storage::resolve(path).map_err(|source| ProbeError::Path { path: path.to_owned(), source })?;
        let mut cur: &Path = &abs;
        loop {
            match self.facts(cur) {
                Ok(f) => return Ok(f),
                Err(e) if e.kind() == io::ErrorKind::NotFound => match cur.parent() {
                    Some(p) => cur = p,
                    None => {
                        return Err(ProbeError::Path { path: abs.clone(), source: e });
                    }
                },
                Err(source) => {
                    return Err(ProbeError::Path { path: cur.to_owned(), source });
                }
            }
        }
    }
}

/// Makes a path absolute and lexically normal (`.` and `..` removed) without touching the
/// filesystem beyond the current directory.
pub fn absolute(path: &Path) -> io::Result<PathBuf> {
    let joined = if path.is_absolute() { path.to_owned() } else { std::env::current_dir()?.join(path) };
    let mut out = PathBuf::from("/");
    for c in joined.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    Ok(out)
}

/// The probe of the running machine.
///
/// The mount table is parsed once and kept until the kernel says it changed: an open
/// `/proc/self/mountinfo` reports `POLLPRI` after any mount or unmount, so each lookup
/// costs one `poll` with a zero timeout, not a re-parse (cheap even with thousands of
/// mounts).
#[derive(Debug, Default)]
pub struct RealProbe {
    cache: Mutex<Option<MountCache>>,
    /// Read this file instead of `/proc/self/mountinfo` (benchmarks of huge tables).
    mountinfo_path: Option<PathBuf>,
}

#[derive(Debug)]
struct MountCache {
    file: File,
    table: Arc<MountTable>,
}

impl RealProbe {
    /// A probe of this machine.
    pub fn new() -> Self {
        Self::default()
    }

    /// A probe that reads its mount table from `path` instead of `/proc/self/mountinfo`,
    /// still with real `stat`/`statfs`. Used by benchmarks that need a large table.
    pub fn with_mountinfo_file(path: impl Into<PathBuf>) -> Self {
        RealProbe { cache: Mutex::default(), mountinfo_path: Some(path.into()) }
    }

    fn source(&self) -> &Path {
        self.mountinfo_path.as_deref().unwrap_or(Path::new("/proc/self/mountinfo"))
    }

    fn read_table(file: &mut File) -> io::Result<MountTable> {
        file.rewind()?;
        let mut buf = Vec::with_capacity(64 * 1024);
        file.read_to_end(&mut buf)?;
        Ok(MountTable::new(crate::storage::mountinfo::parse_bytes(&buf)))
    }
}

fn changed(file: &File) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut fds = [PollFd::new(file.as_fd(), PollFlags::POLLPRI)];
    match poll(&mut fds, PollTimeout::ZERO) {
        Ok(0) => false,
        Ok(_) => fds[0].revents().is_some_and(|r| r.intersects(PollFlags::POLLPRI | PollFlags::POLLERR)),
        // Cannot tell: re-read to be safe.
        Err(_) => true,
    }
}

impl FsProbe for RealProbe {
    fn facts(&self, path: &Path) -> io::Result<PathFacts> {
        let st = nix::sys::stat::stat(path).map_err(io::Error::from)?;
        let sfs = nix::sys::statfs::statfs(path).map_err(io::Error::from)?;
        #[allow(clippy::useless_conversion)] // the width of f_type differs by target
        let raw = i64::from(sfs.filesystem_type().0);
        #[allow(clippy::useless_conversion)]
        let dev = u64::from(st.st_dev);
        Ok(PathFacts {
            canonical: path.to_owned(),
            dev: Some((libc::major(dev), libc::minor(dev))),
            magic: Some(magic::from_raw(raw)),
        })
    }

    fn mounts(&self) -> Result<Arc<MountTable>, ProbeError> {
        let mut guard = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = guard.as_mut() {
            if !changed(&c.file) {
                return Ok(Arc::clone(&c.table));
            }
            if let Ok(t) = Self::read_table(&mut c.file) {
                c.table = Arc::new(t);
                return Ok(Arc::clone(&c.table));
            }
        }
        let src = self.source().to_owned();
        let err = |source| ProbeError::MountTable { path: src.clone(), source };
        let mut file = File::open(&src).map_err(err)?;
        let table = Arc::new(Self::read_table(&mut file).map_err(err)?);
        *guard = Some(MountCache { file, table: Arc::clone(&table) });
        Ok(table)
    }
}

/// A probe over a simulated machine: a mountinfo text and per-mount statfs magics.
///
/// Paths are real paths (tests use real SQLite files in a temporary directory); the
/// simulated table decides which "mount" owns them. Existence is still checked on the real
/// filesystem, so a missing database is judged by its directory as on a real machine.
///
/// ```
/// use sqlite_warden::storage::{FsKind, SimulatedProbe, classify};
/// let probe = SimulatedProbe::local_root()
///     .mount("/srv/share", "cifs", "//nas/trading", "rw,vers=3.1.1");
/// let v = classify(&probe, "/srv/share/engine.db".as_ref()).unwrap();
/// assert_eq!(v.kind, FsKind::Network);
/// ```
#[derive(Debug, Clone, Default)]
pub struct SimulatedProbe {
    lines: Vec<String>,
    magics: BTreeMap<PathBuf, u32>,
    table: Arc<MountTable>,
}

impl SimulatedProbe {
    /// A simulated machine whose mount table is exactly `mountinfo`.
    pub fn from_mountinfo(mountinfo: &str) -> Self {
        let lines = mountinfo.lines().map(str::to_owned).collect();
        let mut p = SimulatedProbe { lines, ..Self::default() };
        p.rebuild();
        p
    }

    /// A simulated machine with only an ext4 root filesystem.
    pub fn local_root() -> Self {
        Self::from_mountinfo("1 0 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw")
    }

    /// Adds a mount of `fstype` at `mount_point` (escaped as the kernel would).
    #[must_use]
    pub fn mount(mut self, mount_point: impl AsRef<Path>, fstype: &str, source: &str, options: &str) -> Self {
        use std::os::unix::ffi::OsStrExt;
        let id = self.lines.len() + 100;
        let mp = crate::storage::mountinfo::escape(mount_point.as_ref().as_os_str().as_bytes());
        let src =
            if source.is_empty() { "none".to_owned() } else { crate::storage::mountinfo::escape(source.as_bytes()) };
        self.lines.push(format!("{id} 1 0:{id} / {mp} rw,relatime - {fstype} {src} {options}"));
        self.rebuild();
        self
    }

    /// Sets the statfs magic reported for paths under `mount_point`.
    #[must_use]
    pub fn magic(mut self, mount_point: impl Into<PathBuf>, magic: u32) -> Self {
        self.magics.insert(mount_point.into(), magic);
        self
    }

    /// The mountinfo text of this simulated machine.
    pub fn mountinfo(&self) -> String {
        self.lines.join("\n")
    }

    fn rebuild(&mut self) {
        self.table = Arc::new(MountTable::parse(&self.mountinfo()));
    }
}

impl FsProbe for SimulatedProbe {
    fn facts(&self, path: &Path) -> io::Result<PathFacts> {
        if !path.exists() && path.parent().is_some() {
            // Simulated mounts still sit over real files: mirror the real existence check,
            // except for paths that only exist in the simulation (the mount points).
            let simulated = self.table.entries().iter().any(|e| e.mount_point.starts_with(path));
            if !simulated {
                return Err(io::Error::from(io::ErrorKind::NotFound));
            }
        }
        let entry = self.table.find(None, path);
        let magic = self
            .magics
            .iter()
            .filter(|(mp, _)| path.starts_with(mp))
            .max_by_key(|(mp, _)| mp.components().count())
            .map(|(_, m)| *m);
        Ok(PathFacts { canonical: path.to_owned(), dev: entry.map(|e| (e.major, e.minor)), magic })
    }

    fn mounts(&self) -> Result<Arc<MountTable>, ProbeError> {
        Ok(Arc::clone(&self.table))
    }
}

/// A verdict for paths whose facts could not be gathered: never local.
pub fn unknown_verdict(reason: String) -> FsVerdict {
    FsVerdict {
        kind: FsKind::Suspect,
        fstype: "unknown".into(),
        magic: None,
        mount_point: None,
        source: None,
        options: Vec::new(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_probe_sees_this_machine() {
        let p = RealProbe::new();
        let dir = tempfile::tempdir().unwrap();
        let v = crate::storage::classify(&p, &dir.path().join("x.db")).unwrap();
        assert!(v.magic.is_some());
        assert!(v.mount_point.is_some(), "{v:?}");
        // The cached table is reused until the kernel reports a change.
        let a = p.mounts().unwrap();
        let b = p.mounts().unwrap();
        assert!(Arc::ptr_eq(&a, &b));
    }

    #[test]
    fn absolute_is_lexical() {
        assert_eq!(absolute(Path::new("/a/./b/../c")).unwrap(), Path::new("/a/c"));
    }
}

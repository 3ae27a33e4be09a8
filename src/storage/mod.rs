//! Is this path safe for a SQLite writer? The filesystem verdict.
//!
//! Owns: the decision Local / Network / NoLocking / Suspect for a path, with a reason an
//! operator can act on, from three facts: the statfs magic number, the owning mount in
//! `/proc/self/mountinfo` (fstype, source, options). Linux only (mountinfo and the OFD locks
//! the writer lock uses are Linux interfaces). Does not own: what a role may do on each verdict (see [`crate::guard::policy`]) or
//! how the facts are gathered (see [`probe`], the seam that lets tests simulate mounts).
//! Beside the verdict, [`openers`] answers the other question about a file on this host:
//! which processes have it open, and for writing or not (a look at `/proc`).
//!
//! Why both magic and mountinfo: every FUSE filesystem reports the same magic, and only the
//! mountinfo fstype (`fuse.sshfs`) tells a network share from a local one; mount options
//! such as CIFS `nobrl` or NFS `nolock` make a mount lie about locks, and only mountinfo
//! shows them. The magic still catches a network mount that mountinfo cannot be matched
//! against (an odd container view).

pub mod magic;
pub mod mountinfo;
pub mod openers;
pub mod probe;
pub mod resolve;
pub mod target;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use mountinfo::{MountEntry, MountTable};
pub use probe::{FsProbe, PathFacts, RealProbe, SimulatedProbe};
pub use resolve::resolve;
pub use target::{Need, TargetError, check_database};

/// What kind of storage a path lives on, from SQLite's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FsKind {
    /// A local filesystem whose locks and shared memory work as SQLite expects.
    Local,
    /// A network or host-share filesystem: POSIX locks and `mmap` of the `-shm` file cannot
    /// be trusted, so WAL must not be used and a single writer is only as safe as the
    /// server's lock manager.
    Network,
    /// A mount whose options disable real locking (`nobrl`, `nolock`, `local_lock=all`):
    /// locks succeed without excluding anyone, so no journal mode is safe.
    NoLocking,
    /// A filesystem warden cannot vouch for (unknown FUSE subtype, virtiofs, overlay over an
    /// unknown layer, an unknown type): treated as unsafe until shown otherwise.
    Suspect,
}

impl FsKind {
    /// True only for [`FsKind::Local`].
    pub fn is_local(self) -> bool {
        self == FsKind::Local
    }

    /// Lower-case name used in messages and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            FsKind::Local => "local",
            FsKind::Network => "network",
            FsKind::NoLocking => "no_locking",
            FsKind::Suspect => "suspect",
        }
    }
}

impl fmt::Display for FsKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The verdict on one path, with everything an operator needs to see why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsVerdict {
    /// The decision.
    pub kind: FsKind,
    /// Filesystem type from mountinfo (`nfs4`, `cifs`, `fuse.sshfs`), else from the magic.
    pub fstype: String,
    /// statfs `f_type` (Linux) when known.
    pub magic: Option<u32>,
    /// The owning mount point, when the mount table had one.
    pub mount_point: Option<PathBuf>,
    /// The mount source (`//nas/share`, `host:/export`), when known.
    pub source: Option<String>,
    /// Mount options, per-mount then superblock.
    pub options: Vec<String>,
    /// One sentence saying why this verdict was reached.
    pub reason: String,
}

impl FsVerdict {
    /// Short description used in refusal messages: `cifs (//nas/share, nobrl)`.
    pub fn describe(&self) -> String {
        let mut s = self.fstype.clone();
        let mut extra = Vec::new();
        if let Some(src) = &self.source {
            extra.push(src.clone());
        }
        if let Some(mp) = &self.mount_point {
            extra.push(format!("mounted at {}", mp.display()));
        }
        if !extra.is_empty() {
            s.push_str(&format!(" ({})", extra.join(", ")));
        }
        s
    }
}

/// Options that make a mount accept lock requests without enforcing them.
fn lock_disabling_option(fstype: &str, opt: &str) -> Option<&'static str> {
    match opt {
        "nobrl" => Some("mount option `nobrl` turns byte-range locks into no-ops"),
        "nolock" => Some("mount option `nolock` keeps locks local to this client"),
        "local_lock=all" | "local_lock=posix" if fstype.starts_with("nfs") => {
            Some("mount option `local_lock` keeps POSIX locks local to this client")
        }
        _ => None,
    }
}

/// FUSE subtypes that are network or cloud filesystems.
const NETWORK_FUSE: &[&str] = &[
    "sshfs",
    "rclone",
    "s3fs",
    "gcsfuse",
    "juicefs",
    "glusterfs",
    "davfs",
    "davfs2",
    "goofys",
    "blobfuse",
    "blobfuse2",
    "ceph-fuse",
    "ceph",
    "mfs",
    "lizardfs",
    "seaweedfs",
    "weed",
    "gvfsd-fuse",
    "curlftpfs",
    "smbnetfs",
    "vmhgfs-fuse",
    "mountpoint-s3",
    "cvmfs2",
    "beegfs",
    "objectivefs",
    "geesefs",
];

/// FUSE filesystems that sit on a local block device or local files only.
const LOCAL_FUSE: &[&str] = &["fuseblk", "fuse.squashfuse", "fuse.fuse-overlayfs"];

/// Kernel network and host-share filesystem types.
const NETWORK_TYPES: &[&str] = &[
    "nfs",
    "nfs4",
    "cifs",
    "smb3",
    "smbfs",
    "9p",
    "drvfs",
    "afs",
    "ceph",
    "coda",
    "ncpfs",
    "ocfs2",
    "gfs2",
    "lustre",
    "gpfs",
    "beegfs",
    "glusterfs",
    "vboxsf",
    "vmhgfs",
    "orangefs",
    "pvfs2",
    "ncp",
    "davfs",
    "webdav",
    "smb",
    "afpfs",
    "nfs3",
];

/// Local filesystem types SQLite's unix VFS works on as documented.
const LOCAL_TYPES: &[&str] = &[
    "ext2", "ext3", "ext4", "xfs", "btrfs", "zfs", "f2fs", "tmpfs", "ramfs", "jfs", "reiserfs", "bcachefs", "nilfs2",
    "hfs", "hfsplus", "apfs", "ufs", "ffs", "vfat", "msdos", "exfat", "ntfs", "squashfs", "erofs", "iso9660", "udf",
    "ecryptfs", "devtmpfs",
];

/// Types warden will not vouch for, with why.
fn suspect_type(fstype: &str) -> Option<&'static str> {
    Some(match fstype {
        "virtiofs" => "virtiofs shares a host directory; its locking and mmap depend on the host",
        "overlay" | "aufs" => "a union filesystem whose writable layer could not be identified",
        "autofs" => "an automount point; the real filesystem is mounted on demand",
        "ntfs3" => "ntfs3 rejects shared mmap, so WAL reports success and fails on first write",
        "fuse" => "a FUSE filesystem without a subtype",
        _ => return None,
    })
}

/// Classifies a mount (and the statfs magic, if known) without any I/O.
///
/// `lower` resolves an overlay's `upperdir=` to the verdict of the filesystem below, so an
/// overlay on a local disk is local; it is called at most once per overlay level.
pub fn classify_mount(
    entry: Option<&MountEntry>,
    magic: Option<u32>,
    lower: &mut dyn FnMut(&Path) -> Option<FsKind>,
) -> FsVerdict {
    let fstype = entry
        .map(|e| e.fstype.clone())
        .or_else(|| magic.and_then(magic::name).map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned());
    let options: Vec<String> = entry.map(|e| e.all_options().map(str::to_owned).collect()).unwrap_or_default();
    let mk = |kind, reason: String| FsVerdict {
        kind,
        fstype: fstype.clone(),
        magic,
        mount_point: entry.map(|e| e.mount_point.clone()),
        source: entry.map(|e| e.source.clone()).filter(|s| !s.is_empty()),
        options: options.clone(),
        reason,
    };

    if let Some(why) = options.iter().find_map(|o| lock_disabling_option(&fstype, o)) {
        return mk(FsKind::NoLocking, format!("{fstype}: {why}"));
    }
    if let Some(sub) = fstype.strip_prefix("fuse.")
        && NETWORK_FUSE.contains(&sub)
    {
        return mk(FsKind::Network, format!("{fstype} is a network filesystem over FUSE"));
    }
    if LOCAL_FUSE.contains(&fstype.as_str()) {
        return mk(FsKind::Local, format!("{fstype} is FUSE over local storage"));
    }
    let base = fstype.split('.').next().unwrap_or(&fstype);
    if NETWORK_TYPES.contains(&base) {
        return mk(FsKind::Network, format!("{fstype} is a network or host-share filesystem"));
    }
    if let Some(m) = magic
        && let Some(name) = magic::network_name(m)
    {
        return mk(FsKind::Network, format!("statfs magic {m:#x} ({name}) is a network filesystem"));
    }
    if fstype.starts_with("fuse.") {
        return mk(FsKind::Suspect, format!("{fstype} is a FUSE filesystem warden does not know; it may be remote"));
    }
    if base == "overlay" {
        let upper = options.iter().find_map(|o| o.strip_prefix("upperdir="));
        if let Some(kind) = upper.and_then(|u| lower(Path::new(u))) {
            if kind.is_local() {
                return mk(FsKind::Local, "overlay whose writable layer is local".to_owned());
            }
            return mk(kind, format!("overlay whose writable layer is {kind}"));
        }
    }
    if let Some(why) = suspect_type(base) {
        return mk(FsKind::Suspect, format!("{fstype}: {why}"));
    }
    if LOCAL_TYPES.contains(&base) {
        return mk(FsKind::Local, format!("{fstype} is a local filesystem"));
    }
    mk(FsKind::Suspect, format!("{fstype} is not a filesystem warden knows to be local"))
}

/// The verdict for `path` (a file that may not exist yet, or a directory), gathering facts
/// through `probe`.
///
/// A path that does not exist is judged by its nearest existing ancestor, since that is
/// where the file would be created.
///
/// # Errors
/// [`ProbeError`] when no ancestor of the path can be examined or the mount table cannot be
/// read.
pub fn classify(probe: &dyn FsProbe, path: &Path) -> Result<FsVerdict, ProbeError> {
    let facts = probe.facts_nearest(path)?;
    classify_facts(probe, &facts)
}

/// The verdict for facts already gathered (the VFS gathers them from the full pathname
/// SQLite hands it, which is already absolute and resolved).
///
/// # Errors
/// [`ProbeError::MountTable`] when the mount table cannot be read.
pub fn classify_facts(probe: &dyn FsProbe, facts: &PathFacts) -> Result<FsVerdict, ProbeError> {
    let table = probe.mounts()?;
    let entry = table.find(facts.dev, &facts.canonical);
    let mut depth = 0;
    let mut lower = |upper: &Path| -> Option<FsKind> {
        depth += 1;
        if depth > 4 {
            return None;
        }
        let e = table.find(None, upper);
        // Resolving one level is enough for container runtimes; deeper stacks stay suspect.
        Some(classify_mount(e, None, &mut |_| None).kind)
    };
    Ok(classify_mount(entry, facts.magic, &mut lower))
}

/// Gathering filesystem facts failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProbeError {
    /// `stat`/`statfs` failed on the path or every ancestor.
    #[error("cannot examine `{path}`: {source}")]
    Path {
        /// The path examined.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: io::Error,
    },
    /// The mount table could not be read.
    #[error(
        "cannot read the mount table `{path}`: {source}\n(hint: warden needs /proc mounted to tell local from network storage)"
    )]
    MountTable {
        /// The mountinfo file.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: io::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(fstype: &str, opts: &str) -> MountEntry {
        let line = format!("40 1 0:50 / /mnt rw - {fstype} src {opts}");
        mountinfo::parse(&line).pop().unwrap()
    }

    fn verdict(fstype: &str, opts: &str) -> FsVerdict {
        classify_mount(Some(&entry(fstype, opts)), None, &mut |_| None)
    }

    #[test]
    fn table_of_kinds() {
        let cases = [
            ("ext4", "rw", FsKind::Local),
            ("nfs4", "rw,vers=4.2,local_lock=none", FsKind::Network),
            ("nfs", "rw,vers=3,nolock", FsKind::NoLocking),
            ("nfs4", "rw,local_lock=all", FsKind::NoLocking),
            ("cifs", "rw,vers=3.0", FsKind::Network),
            ("cifs", "rw,nobrl", FsKind::NoLocking),
            ("smb3", "rw", FsKind::Network),
            ("9p", "rw,trans=virtio", FsKind::Network),
            ("drvfs", "rw", FsKind::Network),
            ("vboxsf", "rw", FsKind::Network),
            ("fuse.sshfs", "rw", FsKind::Network),
            ("fuse.rclone", "rw", FsKind::Network),
            ("fuse.somethingnew", "rw", FsKind::Suspect),
            ("fuseblk", "rw", FsKind::Local),
            ("virtiofs", "rw", FsKind::Suspect),
            ("overlay", "rw,lowerdir=/a,upperdir=/b", FsKind::Suspect),
            ("tmpfs", "rw", FsKind::Local),
            ("weirdfs", "rw", FsKind::Suspect),
        ];
        for (fstype, opts, kind) in cases {
            assert_eq!(verdict(fstype, opts).kind, kind, "{fstype} {opts}");
        }
    }

    #[test]
    fn magic_alone_catches_network() {
        let v = classify_mount(None, Some(magic::SMB2_MAGIC_NUMBER), &mut |_| None);
        assert_eq!(v.kind, FsKind::Network);
        assert_eq!(v.fstype, "smb2");
        // A local-looking fstype with a network magic is still network.
        let v = classify_mount(Some(&entry("ext4", "rw")), Some(magic::NFS_SUPER_MAGIC), &mut |_| None);
        assert_eq!(v.kind, FsKind::Network);
    }

    #[test]
    fn overlay_follows_its_upper_layer() {
        let e = entry("overlay", "rw,lowerdir=/l,upperdir=/var/lib/x/upper,workdir=/w");
        let v = classify_mount(Some(&e), None, &mut |p| {
            assert_eq!(p, Path::new("/var/lib/x/upper"));
            Some(FsKind::Local)
        });
        assert_eq!(v.kind, FsKind::Local);
    }
}

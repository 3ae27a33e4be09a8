//! Parser for `/proc/self/mountinfo` (see `proc_pid_mountinfo(5)`).
//!
//! Owns: turning mountinfo text into [`MountEntry`] values, the kernel's octal escaping of
//! paths (`\040` for a space, `\011`, `\012`, `\134`), and finding the mount that owns a
//! path. Does not own: reading the file (see [`crate::storage::probe`]) or deciding whether a mount
//! is safe for SQLite (see [`crate::storage::classify_mount`]).
//!
//! A line looks like this (fields 7.. are optional and end at a lone `-`):
//!
//! ```text
//! 36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
//! (1)(2)(3)   (4)   (5)      (6)      (7)   (8) (9)    (10)         (11)
//! ```
//!
//! The parser never panics and never fails: a malformed line is skipped, because one odd
//! line written by a new kernel must not blind the guard to every other mount.

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path, PathBuf};

/// One mount, as the kernel describes it in `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// Unique id of the mount (field 1).
    pub mount_id: u32,
    /// Id of the parent mount (field 2).
    pub parent_id: u32,
    /// Device major number of the filesystem (field 3, before the colon).
    pub major: u32,
    /// Device minor number of the filesystem (field 3, after the colon).
    pub minor: u32,
    /// The directory inside the filesystem that forms the root of this mount; not `/` for
    /// bind mounts of a subdirectory (field 4, unescaped).
    pub root: PathBuf,
    /// Where the mount is attached, relative to the process root (field 5, unescaped).
    pub mount_point: PathBuf,
    /// Per-mount options such as `rw` or `nosuid` (field 6).
    pub mount_options: Vec<String>,
    /// Optional fields such as `shared:1` or `master:2` (fields 7.. before the `-`).
    pub optional_fields: Vec<String>,
    /// Filesystem type, `type.subtype` for FUSE (`fuse.sshfs`).
    pub fstype: String,
    /// Filesystem-specific source such as `//server/share` or `host:/export`.
    pub source: String,
    /// Per-superblock options such as `nobrl` or `local_lock=none`.
    pub super_options: Vec<String>,
}

impl MountEntry {
    /// The mount point as raw bytes (paths need not be UTF-8).
    pub fn mount_point_bytes(&self) -> &[u8] {
        self.mount_point.as_os_str().as_bytes()
    }

    /// Every option of the mount, per-mount options first, then the superblock's.
    pub fn all_options(&self) -> impl Iterator<Item = &str> {
        self.mount_options.iter().chain(&self.super_options).map(String::as_str)
    }
}

/// Parses mountinfo text; malformed lines are skipped.
pub fn parse(text: &str) -> Vec<MountEntry> {
    parse_bytes(text.as_bytes())
}

/// Parses mountinfo bytes (mount points may hold any byte but NUL); malformed lines are
/// skipped.
pub fn parse_bytes(text: &[u8]) -> Vec<MountEntry> {
    text.split(|&b| b == b'\n').filter_map(parse_line).collect()
}

fn parse_line(line: &[u8]) -> Option<MountEntry> {
    let mut fields = line.split(|&b| b == b' ').filter(|f| !f.is_empty());
    let mount_id = parse_num(fields.next()?)?;
    let parent_id = parse_num(fields.next()?)?;
    let (major, minor) = {
        let dev = fields.next()?;
        let colon = dev.iter().position(|&b| b == b':')?;
        (parse_num(&dev[..colon])?, parse_num(&dev[colon + 1..])?)
    };
    let root = path_of(fields.next()?);
    let mount_point = path_of(fields.next()?);
    let mount_options = split_options(fields.next()?);
    let mut optional_fields = Vec::new();
    loop {
        let f = fields.next()?;
        if f == b"-" {
            break;
        }
        optional_fields.push(text_of(f));
    }
    let fstype = text_of(fields.next()?);
    // The source may be missing on some pseudo filesystems written by old kernels; the
    // superblock options are always present on current ones, but tolerate their absence.
    let source = fields.next().map(text_of).unwrap_or_default();
    let super_options = fields.next().map(split_options).unwrap_or_default();
    Some(MountEntry {
        mount_id,
        parent_id,
        major,
        minor,
        root,
        mount_point,
        mount_options,
        optional_fields,
        fstype,
        source,
        super_options,
    })
}

fn parse_num(b: &[u8]) -> Option<u32> {
    std::str::from_utf8(b).ok()?.parse().ok()
}

fn path_of(field: &[u8]) -> PathBuf {
    PathBuf::from(OsString::from_vec(unescape_bytes(field)))
}

fn text_of(field: &[u8]) -> String {
    String::from_utf8_lossy(&unescape_bytes(field)).into_owned()
}

fn split_options(field: &[u8]) -> Vec<String> {
    field.split(|&b| b == b',').filter(|o| !o.is_empty()).map(text_of).collect()
}

/// Undoes the kernel's escaping: `\ooo` (three octal digits, at most `\377`) becomes one
/// byte; any other backslash is kept literally.
pub fn unescape(field: &str) -> Vec<u8> {
    unescape_bytes(field.as_bytes())
}

fn unescape_bytes(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] == b'\\'
            && let Some(byte) = octal3(&field[i + 1..])
        {
            out.push(byte);
            i += 4;
            continue;
        }
        out.push(field[i]);
        i += 1;
    }
    out
}

fn octal3(b: &[u8]) -> Option<u8> {
    let digits = b.get(..3)?;
    let mut v: u32 = 0;
    for &d in digits {
        if !(b'0'..=b'7').contains(&d) {
            return None;
        }
        v = v * 8 + u32::from(d - b'0');
    }
    u8::try_from(v).ok()
}

/// Escapes bytes the way mountinfo fields are escaped, so that [`unescape`] returns them
/// unchanged. Besides the kernel's set (space, tab, newline, backslash) it escapes every
/// byte outside printable ASCII, so that any path survives the round trip as text.
pub fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if b == b' ' || b == b'\\' || !(0x21..0x7f).contains(&b) {
            out.push_str(&format!("\\{b:03o}"));
        } else {
            out.push(char::from(b));
        }
    }
    out
}

/// A parsed mount table with an index by device, so that finding the mount of a path is
/// cheap even on hosts with thousands of mounts.
#[derive(Debug, Clone, Default)]
pub struct MountTable {
    entries: Vec<MountEntry>,
    by_dev: HashMap<(u32, u32), Vec<usize>>,
}

impl MountTable {
    /// Builds a table from parsed entries (in mountinfo order: later mounts hide earlier
    /// ones on the same mount point).
    pub fn new(entries: Vec<MountEntry>) -> Self {
        let mut by_dev: HashMap<(u32, u32), Vec<usize>> = HashMap::new();
        for (i, e) in entries.iter().enumerate() {
            by_dev.entry((e.major, e.minor)).or_default().push(i);
        }
        MountTable { entries, by_dev }
    }

    /// Parses mountinfo text into a table.
    pub fn parse(text: &str) -> Self {
        Self::new(parse(text))
    }

    /// All entries, in mountinfo order.
    pub fn entries(&self) -> &[MountEntry] {
        &self.entries
    }

    /// The mount that owns `path` (absolute and already resolved) on device `dev`.
    ///
    /// Among the mounts of that device, the one whose mount point is the longest
    /// component-wise prefix of `path` wins (bind mounts share a device); on a tie the one
    /// mounted last wins, since it hides the others. When no mount of that device contains
    /// the path (btrfs subvolumes and overlay report other device numbers through `stat`),
    /// the longest prefix over the whole table is used instead.
    pub fn find(&self, dev: Option<(u32, u32)>, path: &Path) -> Option<&MountEntry> {
        if let Some(idx) = dev.and_then(|d| self.by_dev.get(&d))
            && let Some(best) = best_prefix(idx.iter().map(|&i| (i, &self.entries[i])), path)
        {
            return Some(best);
        }
        best_prefix(self.entries.iter().enumerate(), path)
    }
}

fn best_prefix<'a>(candidates: impl Iterator<Item = (usize, &'a MountEntry)>, path: &Path) -> Option<&'a MountEntry> {
    candidates
        .filter_map(|(i, e)| prefix_depth(&e.mount_point, path).map(|d| ((d, i), e)))
        .max_by_key(|(key, _)| *key)
        .map(|(_, e)| e)
}

/// Number of normal components of `mount_point` if it is a component-wise prefix of `path`.
fn prefix_depth(mount_point: &Path, path: &Path) -> Option<usize> {
    if !path.starts_with(mount_point) {
        return None;
    }
    Some(mount_point.components().filter(|c| matches!(c, Component::Normal(_))).count())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro
30 22 0:26 / /mnt/smb\\040share rw,relatime shared:7 master:3 - cifs //nas/trading rw,vers=3.1.1,nobrl,cache=strict
31 22 8:1 /srv/data /data rw,relatime shared:1 - ext4 /dev/sda1 rw
32 22 0:44 / /mnt/ssh rw,nosuid,nodev - fuse.sshfs root@127.0.0.1:/export rw,user_id=0,group_id=0
this line is garbage
33 22 0:50 / /var/nfs rw - nfs4 host:/x rw,vers=4.2,local_lock=none";

    #[test]
    fn parses_fields_optional_and_separator() {
        let t = parse(SAMPLE);
        assert_eq!(t.len(), 5, "garbage line skipped");
        let smb = &t[1];
        assert_eq!(smb.mount_point, Path::new("/mnt/smb share"));
        assert_eq!(smb.optional_fields, vec!["shared:7", "master:3"]);
        assert_eq!(smb.fstype, "cifs");
        assert_eq!(smb.source, "//nas/trading");
        assert!(smb.super_options.iter().any(|o| o == "nobrl"));
        assert_eq!((smb.major, smb.minor), (0, 26));
        assert_eq!(t[2].root, Path::new("/srv/data"));
        assert_eq!(t[3].fstype, "fuse.sshfs");
        assert!(t[0].optional_fields == vec!["shared:1"]);
    }

    #[test]
    fn longest_prefix_and_bind_mounts() {
        let t = MountTable::parse(SAMPLE);
        let m = t.find(Some((8, 1)), Path::new("/data/db.sqlite")).unwrap();
        assert_eq!(m.mount_point, Path::new("/data"));
        let m = t.find(Some((8, 1)), Path::new("/home/x/db")).unwrap();
        assert_eq!(m.mount_point, Path::new("/"));
        // `/database` is not under `/data`: prefixes are component-wise.
        let m = t.find(Some((8, 1)), Path::new("/database/x")).unwrap();
        assert_eq!(m.mount_point, Path::new("/"));
        // Unknown device: falls back to the longest prefix over the whole table.
        let m = t.find(Some((0, 99)), Path::new("/mnt/smb share/db")).unwrap();
        assert_eq!(m.fstype, "cifs");
    }

    #[test]
    fn escapes_round_trip_and_stray_backslashes_survive() {
        assert_eq!(unescape("a\\040b\\011c\\012d\\134e"), b"a b\tc\nd\\e");
        assert_eq!(unescape("\\9\\x\\47"), b"\\9\\x\\47");
        assert_eq!(unescape("\\400"), b"\\400", "above \\377 is not an escape");
        let raw = b"we ird\\\xff\tpath";
        assert_eq!(unescape(&escape(raw)), raw);
    }
}

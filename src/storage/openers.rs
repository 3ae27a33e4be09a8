//! Who has a file open, and for what: one look at every process's descriptors in `/proc`.
//!
//! Owns: [`scan`], which lists the processes (the caller excepted) holding a descriptor of
//! any of a set of files ([`Target`]), matched by device and inode, so a name reached through
//! a hard link, a symlink or a bind mount is the same file; the access mode of each such
//! descriptor (the `flags:` line of `/proc/PID/fdinfo/FD`); and what names the process
//! ([`Opener`]: pid, parent, process group, start time, uid, `comm`, command line). Does not
//! own: which files to look for, which processes are expected to have them open, or what to
//! do about the others ([`crate::session::watch`]); doctor's own view, which also reads
//! `/proc/PID/maps` (`ops::doctor`).
//!
//! Only thread-group leaders are listed (`/proc` does not list threads), so a process is
//! seen once whatever its threads hold.
//!
//! What one look cannot see, by construction:
//! - processes whose `/proc/PID/fd` this process may not read: other users' processes unless
//!   it runs as root (or with `CAP_SYS_PTRACE`), and every process hidden by a `/proc`
//!   mounted with `hidepid=`; they are counted in [`Scan::uninspectable`], never guessed at;
//! - processes this `/proc` does not show: when warden runs in a container with its own PID
//!   namespace, every process outside it (the host, another container sharing the volume);
//!   a process in a VM; a writer on another host through a network share;
//! - a descriptor opened, written and closed between two looks, also by a process seen
//!   before as a reader (an `O_RDONLY` descriptor itself cannot write: `write(2)` on it and
//!   a writable shared `mmap` of it fail, so a reader is only a reader while it keeps that
//!   descriptor);
//! - a file written through a shared writable `mmap` after its descriptor was closed (only
//!   `/proc/PID/maps` shows those), or through a reference the kernel holds without a
//!   descriptor (a file registered with io_uring and then closed, a loop device backed by
//!   it, a descriptor in flight over a Unix socket).

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A file to look for, by identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `st_dev`.
    pub dev: u64,
    /// `st_ino`.
    pub ino: u64,
    /// How reports name it (`database`, `-wal`, ...).
    pub label: &'static str,
}

impl Target {
    /// The file at `path` (symlinks followed), or `None` when there is none.
    ///
    /// # Errors
    /// Any `stat` error but `NotFound`.
    pub fn of(path: &Path, label: &'static str) -> io::Result<Option<Target>> {
        match std::fs::metadata(path) {
            Ok(md) => Ok(Some(Target { dev: md.dev(), ino: md.ino(), label })),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// The access mode of a descriptor (`flags & O_ACCMODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    /// `O_RDONLY`.
    ReadOnly,
    /// `O_WRONLY`.
    WriteOnly,
    /// `O_RDWR`.
    ReadWrite,
}

impl Access {
    /// From the octal `flags:` of fdinfo.
    pub fn from_flags(flags: u32) -> Access {
        match flags & 0o3 {
            0 => Access::ReadOnly,
            1 => Access::WriteOnly,
            // 3 is not a valid mode; treat it as the most capable.
            _ => Access::ReadWrite,
        }
    }

    /// The descriptor can write.
    pub fn writes(self) -> bool {
        self != Access::ReadOnly
    }
}

/// One descriptor of a [`Target`] held by another process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenFile {
    /// The target's label (`database`, `-wal`, ...).
    pub file: String,
    /// The name as that process reaches it (the descriptor's link target: a hard link's
    /// name, a path inside its mount namespace, with ` (deleted)` once unlinked).
    pub path: PathBuf,
    /// The descriptor number.
    pub fd: u32,
    /// The open flags, octal as `/proc/PID/fdinfo` shows them (`02100002`).
    pub flags: String,
    /// Read-only, write-only or read-write.
    pub access: Access,
}

/// A process holding one or more of the targets open.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Opener {
    /// Its pid (in this process's pid namespace).
    pub pid: u32,
    /// Its parent's pid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ppid: Option<u32>,
    /// Its process group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pgid: Option<u32>,
    /// Start time in clock ticks after boot: with the pid, tells it from a later process
    /// that reuses the pid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_ticks: Option<u64>,
    /// Its real uid, when readable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// `/proc/PID/comm`.
    pub comm: String,
    /// `/proc/PID/cmdline`, arguments joined by spaces (control characters shown as
    /// spaces), at most 200 characters.
    pub cmdline: String,
    /// The descriptors of targets it holds.
    pub files: Vec<OpenFile>,
}

impl Opener {
    /// `pid 42 (python3: python3 -c …), uid 1000`.
    pub fn describe(&self) -> String {
        let cmd = if self.cmdline.is_empty() || self.cmdline == self.comm {
            self.comm.clone()
        } else {
            format!("{}: {}", self.comm, self.cmdline)
        };
        let uid = self.uid.map(|u| format!(", uid {u}")).unwrap_or_default();
        format!("pid {} ({cmd}){uid}", self.pid)
    }

    /// `` `/srv/e.db` (database, read_write, flags 0100002) ``, for each descriptor that can
    /// write (`writes_only`) or for all.
    pub fn describe_files(&self, writes_only: bool) -> String {
        self.files
            .iter()
            .filter(|f| !writes_only || f.access.writes())
            .map(|f| {
                let access = serde_json::to_value(f.access).ok().and_then(|v| v.as_str().map(str::to_owned));
                format!(
                    "`{}` ({}, {}, flags {})",
                    crate::util::fmt::path_text(&f.path),
                    f.file,
                    access.unwrap_or_default(),
                    f.flags
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// What one look found.
#[derive(Debug, Clone, Default)]
pub struct Scan {
    /// Processes holding a target, in pid order.
    pub openers: Vec<Opener>,
    /// Processes whose descriptors were read.
    pub processes: usize,
    /// Processes whose descriptors could not be read (permission): unknown, not clean.
    pub uninspectable: usize,
}

/// The fields of `/proc/PID/stat` a scan uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// Parent pid (field 4).
    pub ppid: u32,
    /// Process group (field 5).
    pub pgid: u32,
    /// Start time in clock ticks (field 22).
    pub start_ticks: u64,
}

/// `/proc/PID/stat` of `pid`, or `None` once it is gone.
pub fn proc_stat(pid: u32) -> Option<ProcStat> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses; the fields
    // after the last ')' are plain, starting with the state (field 3).
    let f: Vec<&str> = stat.get(stat.rfind(')')? + 1..)?.split_whitespace().collect();
    Some(ProcStat {
        ppid: f.get(1)?.parse().ok()?,
        pgid: f.get(2)?.parse().ok()?,
        start_ticks: f.get(19)?.parse().ok()?,
    })
}

/// `/proc/PID/comm`, or empty once it is gone.
pub fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim_end_matches('\n').to_owned())
        .unwrap_or_default()
}

/// `/proc/PID/cmdline`, arguments joined by spaces (control characters shown as spaces), at
/// most 200 characters.
pub fn cmdline(pid: u32) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let s: String = raw
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(String::from_utf8_lossy)
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if s.chars().count() > 200 { s.chars().take(200).collect::<String>() + "…" } else { s }
}

/// The real uid of `pid` (`/proc/PID/status`), when readable.
pub fn uid(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("Uid:"))?.split_whitespace().next()?.parse().ok()
}

/// The `flags:` of `/proc/PID/fdinfo/FD`, as written (octal) and decoded, or `None` when
/// it is gone.
fn fd_flags(pid: u32, fd: u32) -> Option<(String, u32)> {
    let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).ok()?;
    let octal = info.lines().find_map(|l| l.strip_prefix("flags:"))?.trim();
    Some((octal.to_owned(), u32::from_str_radix(octal, 8).ok()?))
}

/// One look at every process but this one: which hold any of `targets` open, and how.
///
/// A process that exits during the look is skipped; one whose descriptors may not be read
/// is counted in [`Scan::uninspectable`].
///
/// # Errors
/// The I/O error of listing `/proc` itself (not mounted, not readable).
pub fn scan(targets: &[Target]) -> io::Result<Scan> {
    let me = std::process::id();
    let mut out = Scan::default();
    if targets.is_empty() {
        return Ok(out);
    }
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        if pid == me {
            continue;
        }
        let fd_dir = entry.path().join("fd");
        let rd = match std::fs::read_dir(&fd_dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue, // gone meanwhile
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => continue,
            Err(_) => {
                out.uninspectable += 1;
                continue;
            }
        };
        out.processes += 1;
        let mut files = Vec::new();
        for fd in rd.flatten() {
            let Some(n) = fd.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
            // Sockets, pipes and anonymous inodes (`socket:[…]`) never match: no stat for them.
            let Ok(link) = std::fs::read_link(fd.path()) else { continue };
            if !link.is_absolute() {
                continue;
            }
            // Follows the descriptor to the open file itself, whatever name it was opened by.
            let Ok(md) = std::fs::metadata(fd.path()) else { continue };
            let Some(t) = targets.iter().find(|t| t.dev == md.dev() && t.ino == md.ino()) else { continue };
            let Some((text, flags)) = fd_flags(pid, n) else { continue };
            files.push(OpenFile {
                file: t.label.to_owned(),
                path: link,
                fd: n,
                flags: text,
                access: Access::from_flags(flags),
            });
        }
        if files.is_empty() {
            continue;
        }
        files.sort_by_key(|f| f.fd);
        let stat = proc_stat(pid);
        out.openers.push(Opener {
            pid,
            ppid: stat.map(|s| s.ppid),
            pgid: stat.map(|s| s.pgid),
            start_ticks: stat.map(|s| s.start_ticks),
            uid: uid(pid),
            comm: comm(pid),
            cmdline: cmdline(pid),
            files,
        });
    }
    out.openers.sort_by_key(|o| o.pid);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_modes() {
        assert_eq!(Access::from_flags(0o100000), Access::ReadOnly);
        assert_eq!(Access::from_flags(0o100001), Access::WriteOnly);
        assert_eq!(Access::from_flags(0o2100002), Access::ReadWrite);
        assert!(!Access::ReadOnly.writes() && Access::WriteOnly.writes() && Access::ReadWrite.writes());
    }

    #[test]
    fn own_process_is_never_listed_and_stat_parses() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let _f = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&p).unwrap();
        let t = Target::of(&p, "database").unwrap().unwrap();
        let s = scan(&[t]).unwrap();
        assert!(s.openers.iter().all(|o| o.pid != std::process::id()));
        assert!(s.processes > 0);
        let me = proc_stat(std::process::id()).unwrap();
        assert!(me.start_ticks > 0);
        assert!(Target::of(&dir.path().join("missing"), "x").unwrap().is_none());
    }
}

//! The `foreign_openers` check: processes other than the engine that have the database or its
//! sidecars open or mapped (a scan of `/proc`). Does not own the writer lock.

use std::collections::BTreeSet;
use std::io;
use std::os::unix::fs::MetadataExt;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::model::{Check, Ctx, Verdict, mk};
use crate::copies::backup::sidecar;
use crate::guard::lock::LockState;

/// A process that has one of the database's files open or mapped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Opener {
    /// Its pid.
    pub pid: u32,
    /// `/proc/PID/comm`.
    pub command: String,
    /// `/proc/PID/cmdline`, space-joined and shortened.
    pub cmdline: String,
    /// Its real uid, when readable.
    pub uid: Option<u32>,
    /// Which files: `database`, `-wal`, `-shm`, `-journal`.
    pub files: Vec<String>,
}

impl Opener {
    /// `pid 42 (sleep: sleep 30) has database open`.
    pub fn describe(&self) -> String {
        let cmd = if self.cmdline.is_empty() || self.cmdline == self.command {
            self.command.clone()
        } else {
            format!("{}: {}", self.command, self.cmdline)
        };
        format!("pid {} ({cmd}) has {} open", self.pid, self.files.join(", "))
    }
}

/// One file to look for: (major, minor, inode) and its label.
struct Target {
    dev: (u32, u32),
    ino: u64,
    label: &'static str,
}

/// Parses one `/proc/PID/maps` line into (major, minor, inode) of the mapped file.
fn maps_entry(line: &str) -> Option<(u32, u32, u64)> {
    let mut f = line.split_whitespace();
    let (_addr, _perms, _off, dev, ino) = (f.next()?, f.next()?, f.next()?, f.next()?, f.next()?);
    let (maj, min) = dev.split_once(':')?;
    let ino: u64 = ino.parse().ok()?;
    if ino == 0 {
        return None;
    }
    Some((u32::from_str_radix(maj, 16).ok()?, u32::from_str_radix(min, 16).ok()?, ino))
}

/// What a scan of `/proc` found.
struct Scan {
    openers: Vec<Opener>,
    /// Processes holding the lock file open (the engine side, when the lock is held).
    lock_holders: BTreeSet<u32>,
    scanned: usize,
    skipped: usize,
}

fn scan_proc(targets: &[Target], lock_file: Option<(u32, u32, u64)>, me: u32) -> io::Result<Scan> {
    let mut scan = Scan { openers: Vec::new(), lock_holders: BTreeSet::new(), scanned: 0, skipped: 0 };
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        if pid == me {
            continue;
        }
        let fd_dir = entry.path().join("fd");
        let rd = match std::fs::read_dir(&fd_dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue, // gone meanwhile
            Err(_) => {
                scan.skipped += 1;
                continue;
            }
        };
        scan.scanned += 1;
        let mut files = BTreeSet::new();
        for fd in rd.flatten() {
            // Sockets, pipes and anonymous inodes never match; skip them without a stat.
            match std::fs::read_link(fd.path()) {
                Ok(t) if t.is_absolute() => {}
                _ => continue,
            }
            let Ok(md) = std::fs::metadata(fd.path()) else { continue };
            let key = (libc::major(md.dev()), libc::minor(md.dev()), md.ino());
            if lock_file == Some(key) {
                scan.lock_holders.insert(pid);
            }
            for t in targets {
                if (t.dev, t.ino) == ((key.0, key.1), key.2) {
                    files.insert(t.label);
                }
            }
        }
        if let Ok(maps) = std::fs::read_to_string(entry.path().join("maps")) {
            for (maj, min, ino) in maps.lines().filter_map(maps_entry) {
                for t in targets {
                    if t.dev == (maj, min) && t.ino == ino {
                        files.insert(t.label);
                    }
                }
            }
        }
        if !files.is_empty() {
            scan.openers.push(Opener {
                pid,
                command: crate::storage::openers::comm(pid),
                cmdline: crate::storage::openers::cmdline(pid),
                uid: crate::storage::openers::uid(pid),
                files: files.into_iter().map(str::to_owned).collect(),
            });
        }
    }
    Ok(scan)
}

pub(super) fn foreign_openers(cx: &Ctx<'_>) -> Check {
    const ID: &str = "foreign_openers";
    const TITLE: &str = "no process but the engine has the database open";
    let mut targets = Vec::new();
    for (suffix, label) in [("", "database"), ("-wal", "-wal"), ("-shm", "-shm"), ("-journal", "-journal")] {
        if let Ok(md) = std::fs::metadata(sidecar(&cx.db, suffix)) {
            targets.push(Target { dev: (libc::major(md.dev()), libc::minor(md.dev())), ino: md.ino(), label });
        }
    }
    if targets.is_empty() {
        return mk(
            ID,
            TITLE,
            Verdict::Pass,
            format!("the database `{}` does not exist: nobody can have it open", cx.db.display()),
            String::new(),
            json!({"foreign": [], "engine": []}),
        );
    }
    let lock_file = std::fs::metadata(crate::guard::lock::lock_path_for(&cx.db))
        .ok()
        .map(|m| (libc::major(m.dev()), libc::minor(m.dev()), m.ino()));
    let scan = match scan_proc(&targets, lock_file, std::process::id()) {
        Ok(s) => s,
        Err(e) => {
            return mk(
                ID,
                TITLE,
                Verdict::Warn,
                format!("/proc cannot be read ({e}): openers unknown"),
                "run doctor on Linux with /proc mounted (and as root to see every process)".into(),
                json!({"error": e.to_string()}),
            );
        }
    };
    let held = cx.lock.as_ref().ok().filter(|s| s.state == LockState::Held);
    // The engine side: the recorded holder (on this host) and whoever holds the lock file
    // open while the lock is held (`warden run` and the engine it handed the lock to).
    let mut engine: BTreeSet<u32> = BTreeSet::new();
    if let Some(st) = held {
        engine.extend(scan.lock_holders.iter().copied());
        if let Some(r) = &st.record {
            let here = crate::util::identity::ProcessIdentity::current();
            if r.holder.process.host == here.host && r.holder.process.boot_id == here.boot_id {
                engine.insert(r.holder.process.pid);
            }
        }
    }
    let (engine_openers, foreign): (Vec<Opener>, Vec<Opener>) =
        scan.openers.into_iter().partition(|o| engine.contains(&o.pid));
    let lock_text = match &cx.lock {
        Ok(st) => match st.state {
            LockState::Held => format!(
                "writer lock held by {}",
                st.record.as_ref().map(|r| r.holder.describe()).unwrap_or_else(|| "an unknown process".into())
            ),
            LockState::Free => "writer lock free (no engine runs)".into(),
            LockState::FreeAfterCrash => "writer lock free, but its last holder died without releasing it".into(),
            LockState::NeverUsed => "no guarded engine has ever opened this database".into(),
        },
        Err(e) => format!("writer lock unreadable ({e})"),
    };
    let mut parts = Vec::new();
    if foreign.is_empty() {
        parts.push("no other process has the database, -wal, -shm or -journal open or mapped".into());
    } else {
        parts.push(format!(
            "{} foreign opener{}: {}",
            foreign.len(),
            if foreign.len() == 1 { "" } else { "s" },
            foreign.iter().map(Opener::describe).collect::<Vec<_>>().join("; ")
        ));
    }
    parts.push(lock_text);
    if !engine_openers.is_empty() {
        parts.push(format!(
            "engine (not foreign): {}",
            engine_openers.iter().map(|o| format!("pid {} ({})", o.pid, o.command)).collect::<Vec<_>>().join(", ")
        ));
    }
    let me = nix::unistd::geteuid().as_raw();
    parts.push(format!(
        "{} processes inspected{}",
        scan.scanned,
        if scan.skipped > 0 {
            format!(
                ", {} could not be inspected{}",
                scan.skipped,
                if me == 0 { "" } else { " (run doctor as root to see every process)" }
            )
        } else {
            String::new()
        }
    ));
    let pids = foreign.iter().map(|o| o.pid.to_string()).collect::<Vec<_>>().join(" ");
    let (verdict, fix) = match (foreign.is_empty(), held.is_some()) {
        (true, _) => (Verdict::Pass, String::new()),
        (false, true) => (
            Verdict::Warn,
            format!(
                "only the engine should open the live database (readers pin the WAL or delay commits): stop pid {pids} and point analysis at snapshots (`warden snapshot`)"
            ),
        ),
        (false, false) => (
            Verdict::Fail,
            format!(
                "no engine holds the writer lock, yet pid {pids} has the database open and may be writing outside warden: find out what it is (`ps -o pid,user,args -p {pids}`) and stop it before the next session"
            ),
        ),
    };
    let data = json!({
        "foreign": foreign,
        "engine": engine_openers,
        "lock_state": cx.lock.as_ref().ok().map(|s| s.state),
        "scanned": scan.scanned,
        "skipped": scan.skipped,
    });
    mk(ID, TITLE, verdict, parts.join("; "), fix, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_lines() {
        let l = "7f1c2a000000-7f1c2a008000 rw-s 00000000 fe:01 1234567  /var/lib/engine/engine.db-shm";
        assert_eq!(maps_entry(l), Some((0xfe, 1, 1_234_567)));
        assert_eq!(maps_entry("7ffd-7ffe rw-p 00000000 00:00 0 [stack]"), None);
    }
}

//! Who is this process? Identity fields shared by audit records and lock holders.
//!
//! Owns: pid, parent pid, uid, host name, boot id, executable and RFC 3339 timestamps, and
//! telling a recorded process from a later one with the same pid ([`ProcessStart`],
//! [`process_gone`]).
//! Host, boot id and executable are read once; pids are read on every call because a
//! forked child must not report its parent's.

use std::sync::OnceLock;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// The identity of the current process, for audit records and lock holders.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessIdentity {
    /// Process id (in this process's pid namespace; 1 in many containers).
    pub pid: u32,
    /// Parent process id.
    pub ppid: u32,
    /// Real user id.
    pub uid: u32,
    /// Host name.
    pub host: String,
    /// `/proc/sys/kernel/random/boot_id`, which tells a reboot from a pid reuse.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub boot_id: Option<String>,
    /// The executable.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub exe: Option<String>,
}

struct Static {
    host: String,
    boot_id: Option<String>,
    exe: Option<String>,
}

fn statics() -> &'static Static {
    static S: OnceLock<Static> = OnceLock::new();
    S.get_or_init(|| Static {
        host: nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "unknown".to_owned()),
        boot_id: std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok().map(|s| s.trim().to_owned()),
        exe: std::env::current_exe().ok().map(|p| crate::util::fmt::path_text(&p).into_owned()),
    })
}

impl ProcessIdentity {
    /// The identity of the calling process.
    pub fn current() -> Self {
        let s = statics();
        ProcessIdentity {
            pid: std::process::id(),
            ppid: u32::try_from(nix::unistd::getppid().as_raw()).unwrap_or(0),
            uid: nix::unistd::getuid().as_raw(),
            host: s.host.clone(),
            boot_id: s.boot_id.clone(),
            exe: s.exe.clone(),
        }
    }
}

/// What tells a process from a later one that reuses its pid: its start time, and the pid
/// namespace its pid is counted in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessStart {
    /// Start time in clock ticks after boot (field 22 of `/proc/<pid>/stat`).
    pub ticks: u64,
    /// The inode of the pid namespace (`/proc/<pid>/ns/pid`), when readable: pids are only
    /// comparable within one namespace.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub pid_ns: Option<u64>,
}

impl ProcessStart {
    /// The calling process's.
    pub fn current() -> Option<Self> {
        Self::of(std::process::id()).map(|(start, _)| start)
    }

    /// The process `pid` as this process sees it: its start and whether it is a zombie
    /// (exited, not yet reaped); `None` when there is no such process here.
    pub fn of(pid: u32) -> Option<(Self, bool)> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // "pid (comm) state ppid ...": comm may hold spaces and parentheses; the fields
        // after the last ')' are plain. state is field 3, starttime field 22.
        let fields: Vec<&str> = stat.get(stat.rfind(')')? + 1..)?.split_whitespace().collect();
        let zombie = matches!(fields.first(), Some(&("Z" | "X" | "x")));
        let ticks = fields.get(19)?.parse().ok()?;
        Some((ProcessStart { ticks, pid_ns: pid_namespace(&format!("/proc/{pid}/ns/pid")) }, zombie))
    }
}

fn pid_namespace(link: &str) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(link).ok().map(|m| m.ino())
}

/// Whether the process recorded as `id` (started at `start`, when that was recorded) is
/// gone, judged from this process: `Some(why)` when it certainly is, `None` when it is alive
/// or cannot be judged from here (another host, another pid namespace). Never decided by
/// the pid alone: a pid that exists again after a reboot or a reuse is another process.
pub fn process_gone(id: &ProcessIdentity, start: Option<&ProcessStart>) -> Option<&'static str> {
    let here = statics();
    if id.host != here.host {
        return None;
    }
    if let (Some(then), Some(now)) = (&id.boot_id, &here.boot_id)
        && then != now
    {
        return Some("the host rebooted since");
    }
    let my_ns = pid_namespace("/proc/self/ns/pid");
    if let (Some(Some(theirs)), Some(mine)) = (start.map(|s| s.pid_ns), my_ns)
        && theirs != mine
    {
        return None;
    }
    match ProcessStart::of(id.pid) {
        None => Some("no process has its pid any more"),
        Some((_, true)) => Some("it has exited"),
        Some((now, false)) => match start {
            Some(then) if then.ticks != now.ticks => Some("its pid now belongs to another process"),
            _ => None,
        },
    }
}

/// The current time as RFC 3339 UTC with microseconds (`2026-11-25T17:42:29.123456Z`).
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_micros(SystemTime::now()).to_string()
}

/// Who is doing this, for audit records of operator actions: `uid 0 (alice), pid 42 on vps1`
/// (`$SUDO_USER`, else `$USER`, names the person behind the uid when known).
pub fn who() -> String {
    let id = ProcessIdentity::current();
    let user = std::env::var("SUDO_USER").or_else(|_| std::env::var("USER")).ok();
    let user = user.map(|u| format!(" ({u})")).unwrap_or_default();
    format!("uid {}{user}, pid {} on {}", id.uid, id.pid, id.host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_process_is_not_gone_and_a_reused_pid_is() {
        let me = ProcessIdentity::current();
        let start = ProcessStart::current().expect("/proc/self/stat");
        assert_eq!(process_gone(&me, Some(&start)), None);
        assert_eq!(process_gone(&me, None), None, "no start recorded: the pid alone, alive");
        let earlier = ProcessStart { ticks: start.ticks.wrapping_sub(1), pid_ns: start.pid_ns };
        assert!(process_gone(&me, Some(&earlier)).is_some(), "same pid, other start time: another process");
        let rebooted = ProcessIdentity { boot_id: Some("not-this-boot".into()), ..me.clone() };
        assert!(process_gone(&rebooted, Some(&start)).is_some());
        let elsewhere = ProcessIdentity { host: format!("{}-other", me.host), ..me.clone() };
        assert_eq!(process_gone(&elsewhere, Some(&earlier)), None, "another host: cannot tell");
        let other_ns = ProcessStart { pid_ns: start.pid_ns.map(|n| n + 1), ..earlier };
        if start.pid_ns.is_some() {
            assert_eq!(process_gone(&me, Some(&other_ns)), None, "another pid namespace: cannot tell");
        }
        let dead = ProcessIdentity { pid: u32::MAX - 7, ..me };
        assert!(process_gone(&dead, None).is_some());
    }
}

//! Who is this process? Identity fields shared by audit records and lock holders.
//!
//! Owns: pid, parent pid, uid, host name, boot id, executable and RFC 3339 timestamps.
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
        exe: std::env::current_exe().ok().map(|p| p.display().to_string()),
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

//! systemd's notification protocol (`sd_notify(3)`), for `Type=notify` units.
//!
//! Owns: sending `READY=1`, `STATUS=…`, `STOPPING=1`, `EXTEND_TIMEOUT_USEC=…` and watchdog
//! pings to `$NOTIFY_SOCKET` (a path or an abstract `@name`), and the watchdog's period from
//! `$WATCHDOG_USEC` / `$WATCHDOG_PID`. Does not own: when to send them ([`super::run`]).
//! Without `$NOTIFY_SOCKET` every call is a no-op, so the same binary runs under systemd, a
//! terminal or a test.
//!
//! What the states mean for a `warden run` unit: the service becomes *active* (`READY=1`)
//! only once the gate has passed, the pre-session backup is verified and the engine is
//! running; while the gate runs it extends the start timeout, so a large database does not
//! trip `TimeoutStartSec=`; the watchdog is fed while the engine lives, so a wedged warden is
//! restarted by systemd; `STOPPING=1` is sent as the post-session backup starts.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// A connection to systemd's notification socket, if there is one.
#[derive(Debug)]
pub struct Notifier {
    socket: Option<(UnixDatagram, std::os::unix::net::SocketAddr)>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// Reads `$NOTIFY_SOCKET` and `$WATCHDOG_USEC` (honouring `$WATCHDOG_PID`).
    pub fn from_env() -> Self {
        let socket = std::env::var_os("NOTIFY_SOCKET").filter(|v| !v.is_empty()).and_then(|path| {
            let bytes = path.as_encoded_bytes();
            let addr = if let Some(name) = bytes.strip_prefix(b"@") {
                use std::os::linux::net::SocketAddrExt;
                std::os::unix::net::SocketAddr::from_abstract_name(name).ok()?
            } else {
                std::os::unix::net::SocketAddr::from_pathname(&path).ok()?
            };
            let sock = UnixDatagram::unbound().ok()?;
            Some((sock, addr))
        });
        let for_us = std::env::var("WATCHDOG_PID").ok().is_none_or(|p| p.trim() == std::process::id().to_string());
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|&us| us > 0 && for_us)
            .map(Duration::from_micros);
        Notifier { socket, watchdog }
    }

    /// True when systemd (or a test) listens.
    pub fn is_active(&self) -> bool {
        self.socket.is_some()
    }

    /// How often to ping the watchdog (half of `$WATCHDOG_USEC`), if it is enabled.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog.filter(|_| self.socket.is_some()).map(|d| d / 2)
    }

    /// Sends `state` (newline-separated `KEY=VALUE` lines). Failures are logged, never fatal.
    pub fn send(&self, state: &str) {
        if let Some((sock, addr)) = &self.socket
            && let Err(e) = sock.send_to_addr(state.as_bytes(), addr)
        {
            tracing::warn!(error = %e, "sd_notify failed");
        }
    }

    /// `READY=1` with a status line and warden's pid as the main pid.
    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nMAINPID={}\nSTATUS={status}", std::process::id()));
    }

    /// A status line.
    pub fn status(&self, status: &str) {
        self.send(&format!("STATUS={status}"));
    }

    /// Asks for `extra` more time to finish starting or stopping.
    pub fn extend_timeout(&self, extra: Duration) {
        self.send(&format!("EXTEND_TIMEOUT_USEC={}", extra.as_micros()));
    }

    /// `STOPPING=1` with a status line.
    pub fn stopping(&self, status: &str) {
        self.send(&format!("STOPPING=1\nSTATUS={status}"));
    }

    /// One watchdog ping.
    pub fn watchdog(&self) {
        self.send("WATCHDOG=1");
    }
}

/// The variables a child must not inherit: the engine is not the unit's main process.
pub const CHILD_ENV_REMOVE: [&str; 3] = ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_socket_everything_is_a_no_op() {
        let n = Notifier { socket: None, watchdog: Some(Duration::from_secs(10)) };
        assert!(!n.is_active());
        assert_eq!(n.watchdog_interval(), None);
        n.ready("x");
        n.watchdog();
    }

    #[test]
    fn messages_arrive_on_a_path_socket() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        let addr = std::os::unix::net::SocketAddr::from_pathname(&path).unwrap();
        let n =
            Notifier { socket: Some((UnixDatagram::unbound().unwrap(), addr)), watchdog: Some(Duration::from_secs(2)) };
        assert_eq!(n.watchdog_interval(), Some(Duration::from_secs(1)));
        n.ready("engine running");
        let mut buf = [0u8; 256];
        let len = listener.recv(&mut buf).unwrap();
        let msg = std::str::from_utf8(&buf[..len]).unwrap();
        assert!(msg.starts_with("READY=1\nMAINPID=") && msg.ends_with("STATUS=engine running"), "{msg}");
    }
}

//! `warden run` speaks systemd's notification protocol when `$NOTIFY_SOCKET` is set
//! (`Type=notify` units): the start timeout is extended for the gate, `READY=1` comes only
//! once the engine runs, the watchdog is fed while it runs, `STOPPING=1` when it exits, and
//! the engine itself never sees the socket.

use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::Duration;

const WARDEN: &str = env!("CARGO_BIN_EXE_warden");
const ENGINE: &str = env!("CARGO_BIN_EXE_warden-demo-engine");

#[test]
fn a_session_notifies_systemd() {
    let d = tempfile::tempdir().unwrap();
    let sock_path = d.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let listener = std::thread::spawn(move || {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        let mut idle = 0;
        while idle < 25 {
            match sock.recv(&mut buf) {
                Ok(n) => {
                    idle = 0;
                    got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
                }
                Err(_) => idle += 1,
            }
        }
        got
    });
    let db = d.path().join("n.db");
    let out = Command::new(WARDEN)
        .args(["run", "-q", "--create", "--db"])
        .arg(&db)
        .arg("--")
        .args([ENGINE, "--trades", "3", "--hold-ms", "1500"])
        .env("WARDEN_AUDIT_DIR", d.path().join("audit"))
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "200000")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let got = listener.join().unwrap();
    let pos = |prefix: &str| got.iter().position(|m| m.starts_with(prefix) || m.contains(&format!("\n{prefix}")));
    let extend = pos("EXTEND_TIMEOUT_USEC=").expect("the start timeout is extended for the gate");
    let ready = pos("READY=1").unwrap_or_else(|| panic!("no READY=1 in {got:?}"));
    let stopping = pos("STOPPING=1").unwrap_or_else(|| panic!("no STOPPING=1 in {got:?}"));
    assert!(extend < ready && ready < stopping, "{got:?}");
    assert!(got[ready].contains("MAINPID="), "{}", got[ready]);
    let pings = got[ready..stopping].iter().filter(|m| m.as_str() == "WATCHDOG=1").count();
    assert!(pings >= 4, "the watchdog is fed every WATCHDOG_USEC/2 while the engine runs: {got:?}");
    assert!(got[stopping..].iter().all(|m| m != "WATCHDOG=1"), "no pings after the engine exited");
}

#[test]
fn the_engine_does_not_inherit_the_notify_socket() {
    let d = tempfile::tempdir().unwrap();
    let sock_path = d.path().join("notify.sock");
    let _sock = UnixDatagram::bind(&sock_path).unwrap();
    let out = Command::new(WARDEN)
        .args(["run", "-q", "--create", "--db"])
        .arg(d.path().join("e.db"))
        .args(["--", "/usr/bin/env"])
        .env("WARDEN_AUDIT_DIR", d.path().join("audit"))
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "1000000")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let env = String::from_utf8_lossy(&out.stdout);
    assert!(env.contains("WARDEN_SESSION_ID="), "{env}");
    for var in ["NOTIFY_SOCKET=", "WATCHDOG_USEC=", "WATCHDOG_PID="] {
        assert!(!env.lines().any(|l| l.starts_with(var)), "the engine got {var}");
    }
}

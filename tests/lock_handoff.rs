//! The session's writer lock handed to the engine (`WARDEN_LOCK_FD`), with real processes:
//! the engine may reconnect within its session, and the lock outlives a `kill -9` of warden
//! for as long as the engine lives, so nobody can start a second writer in between. (A
//! well-behaved engine stops at once when warden dies, on the SIGTERM its parent-death signal
//! sends, see tests/supervisor_death.rs; the engine here ignores SIGTERM to live on.)

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const WARDEN: &str = env!("CARGO_BIN_EXE_warden");
const ENGINE: &str = env!("CARGO_BIN_EXE_warden-demo-engine");

struct Reap(Vec<u32>);

impl Drop for Reap {
    fn drop(&mut self) {
        for pid in &self.0 {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid as i32), nix::sys::signal::Signal::SIGKILL);
        }
    }
}

fn lock_state(dir: &Path, db: &Path) -> serde_json::Value {
    let out = Command::new(WARDEN)
        .args(["lock", "--json"])
        .arg(db)
        .env("WARDEN_AUDIT_DIR", dir.join("audit"))
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap()
}

fn alive(pid: u32) -> bool {
    // A zombie still answers kill -0; treat state Z as dead.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s.rsplit(')').next().is_some_and(|rest| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

fn start_session(dir: &Path, db: &Path, engine_args: &[&str]) -> (Child, u32) {
    let mut child = Command::new(WARDEN)
        .args(["run", "-q", "--create", "--db"])
        .arg(db)
        .arg("--")
        .arg(ENGINE)
        .args(engine_args)
        .env("WARDEN_AUDIT_DIR", dir.join("audit"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|_| panic!("engine said: {line}"));
    assert_eq!(v["event"], "ready", "{line}");
    let engine = u32::try_from(v["pid"].as_u64().unwrap()).unwrap();
    (child, engine)
}

#[test]
fn the_engine_can_reconnect_within_its_session() {
    let d = tempfile::tempdir().unwrap();
    let db = d.path().join("e.db");
    let out = Command::new(WARDEN)
        .args(["run", "-q", "--create", "--db"])
        .arg(&db)
        .arg("--")
        .args([ENGINE, "--trades", "3", "--reopen"])
        .env("WARDEN_AUDIT_DIR", d.path().join("audit"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("\"reopened\"") && stdout.contains("\"trades_total\":6"), "{stdout}");
    let audit = std::fs::read_to_string(d.path().join("audit/audit.jsonl")).unwrap();
    assert!(audit.contains("handed over by the `warden run` session"), "adoption is audited");
    assert!(audit.contains("returned to the `warden run` session"), "hand-back is audited");
}

#[test]
fn the_lock_outlives_a_killed_warden_while_the_engine_runs() {
    let d = tempfile::tempdir().unwrap();
    let db = d.path().join("e.db");
    let (mut warden, engine) =
        start_session(d.path(), &db, &["--trades", "5", "--hold-ms", "60000", "--ignore-sigterm"]);
    let _reap = Reap(vec![engine]);
    let st = lock_state(d.path(), &db);
    assert_eq!(st["state"], "held");
    assert_eq!(st["record"]["holder"]["pid"], warden.id(), "the runner's record names the runner");
    assert!(st["record"]["session"].is_string(), "{st}");

    // kill -9 warden itself: the engine still holds the same lock description.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(warden.id() as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    warden.wait().unwrap();
    assert!(alive(engine), "the engine keeps running");
    assert_eq!(lock_state(d.path(), &db)["state"], "held", "no gap for a second writer");
    let second =
        Command::new(ENGINE).arg("--db").arg(&db).env("WARDEN_AUDIT_DIR", d.path().join("audit")).output().unwrap();
    assert_eq!(second.status.code(), Some(75), "{}", String::from_utf8_lossy(&second.stdout));
    let second_session = Command::new(WARDEN)
        .args(["run", "-q", "--db"])
        .arg(&db)
        .arg("--")
        .arg(ENGINE)
        .env("WARDEN_AUDIT_DIR", d.path().join("audit"))
        .output()
        .unwrap();
    assert_eq!(second_session.status.code(), Some(75));

    // Once the engine ends, the lock is free and the next session marks the killed one.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(engine as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while lock_state(d.path(), &db)["state"] == "held" {
        assert!(Instant::now() < deadline, "the lock was never freed");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = Command::new(WARDEN)
        .args(["run", "-q", "--json", "--db"])
        .arg(&db)
        .arg("--")
        .args([ENGINE, "--trades", "1"])
        .env("WARDEN_AUDIT_DIR", d.path().join("audit"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let sessions = db.with_file_name("e.db.warden").join("sessions");
    let statuses: Vec<String> = std::fs::read_dir(&sessions)
        .unwrap()
        .map(|e| {
            let v: serde_json::Value = serde_json::from_slice(&std::fs::read(e.unwrap().path()).unwrap()).unwrap();
            v["status"].as_str().unwrap().to_owned()
        })
        .collect();
    assert!(statuses.iter().any(|s| s == "abandoned"), "{statuses:?}");
    assert!(statuses.iter().any(|s| s == "completed"), "{statuses:?}");
}

//! A dead supervisor must not look healthy (issue 11, defect 8). After `kill -9` of
//! `warden run`, the engine kept running with the inherited writer lock, no post-session
//! backup would ever come, and `warden status` said HEALTHY "session running", naming the
//! dead pid. Now:
//!
//! - the engine gets SIGTERM when its supervisor dies (a parent-death signal set between
//!   fork and exec), so it stops within seconds;
//! - `warden status` reports `supervisor_died` (non-zero) whenever the session's artifact
//!   says `running` but the recorded supervisor is gone, also while an engine that ignores
//!   SIGTERM still holds the lock;
//! - a successful `warden restore` afterwards resolves it: status no longer recommends a
//!   restore (nor does it after a restore that followed a failed gate).
//!
//! Real processes throughout: the `warden` binary and the demo engine (or a shell engine that
//! ignores SIGTERM).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::proc::*;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

const MINUTE: Duration = Duration::from_secs(60);

fn status(s: &common::Scratch, db: &Path) -> (i32, Value, String) {
    let mut c = s.warden();
    c.args(["status", "--json", "--db"]).arg(db);
    let d = run_to_end(c, MINUTE);
    let v = d.json();
    assert_eq!(d.code(), Some(v["exit_code"].as_i64().unwrap() as i32), "{}", d.diag());
    let mut c = s.warden();
    c.args(["status", "--db"]).arg(db);
    let text = run_to_end(c, MINUTE).stdout;
    (d.code().unwrap(), v, text)
}

fn kinds(v: &Value) -> Vec<String> {
    v["problems"].as_array().unwrap().iter().map(|p| p["kind"].as_str().unwrap().to_owned()).collect()
}

fn problem<'a>(v: &'a Value, kind: &str) -> &'a Value {
    v["problems"].as_array().unwrap().iter().find(|p| p["kind"] == kind).unwrap_or_else(|| panic!("no {kind}: {v:#}"))
}

fn session(s: &common::Scratch, db: &Path, extra: &[&str], engine: &[&str]) -> Done {
    let mut c = s.warden();
    c.args(["run", "-q", "--db"]).arg(db).args(extra).arg("--").arg(ENGINE).args(engine);
    run_to_end(c, MINUTE)
}

fn wait_gone(pid: u32, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while alive(pid) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

fn no_restore_advice(v: &Value) {
    for p in v["problems"].as_array().unwrap() {
        let m = p["message"].as_str().unwrap();
        assert!(!m.contains("warden restore"), "status still recommends a restore after one: {v:#}");
    }
}

#[test]
fn kill_9_of_warden_run_stops_the_engine_and_status_says_the_supervisor_died() {
    let s = common::Scratch::new();
    let db = s.path("e.db");
    assert_eq!(session(&s, &db, &["--create"], &["--create", "--trades", "5"]).code(), Some(0));

    let mut c = s.warden();
    c.args(["run", "-q", "--db"]).arg(&db).arg("--").arg(ENGINE).args(["--trades", "1000000", "--interval-ms", "200"]);
    let mut run = Proc::spawn(c);
    let engine = run.wait_engine_ready(MINUTE);
    let supervisor = run.pid();
    let (code, v, _) = status(&s, &db);
    assert_eq!(code, 0, "a supervised session is healthy: {v:#}");

    run.signal(Signal::SIGKILL);
    let _ = run.finish(MINUTE);
    assert!(wait_gone(engine, Duration::from_secs(5)), "the engine outlived its supervisor by more than 5 s");

    let (code, v, text) = status(&s, &db);
    assert_ne!(code, 0, "{v:#}");
    assert!(kinds(&v).contains(&"supervisor_died".to_owned()), "{v:#}");
    let p = problem(&v, "supervisor_died");
    assert_eq!(p["code"], 12, "{v:#}");
    let m = p["message"].as_str().unwrap();
    assert!(m.contains("supervisor") && m.contains(&format!("pid {supervisor}")), "{m}");
    assert!(m.contains("no post-session backup"), "{m}");
    assert!(text.contains("supervisor died"), "{text}");
    assert!(!text.contains("HEALTHY") || text.contains("UNHEALTHY"), "{text}");

    // A successful restore resolves it: nothing left that recommends one.
    let mut c = s.warden();
    c.args(["restore", "-q", "--db"]).arg(&db);
    let d = run_to_end(c, MINUTE);
    assert_eq!(d.code(), Some(0), "{}", d.diag());
    let (code, v, _) = status(&s, &db);
    assert_eq!(code, 0, "healthy after the restore: {v:#}");
    no_restore_advice(&v);
    assert!(v["last_restore"]["backup"]["id"].is_string(), "the restore is shown: {v:#}");
    // And the next session runs normally.
    assert_eq!(session(&s, &db, &[], &["--trades", "1"]).code(), Some(0));
    assert_eq!(status(&s, &db).0, 0);
}

#[test]
fn an_engine_that_ignores_sigterm_still_shows_the_dead_supervisor() {
    let s = common::Scratch::new();
    let db = s.path("t.db");
    assert_eq!(session(&s, &db, &["--create"], &["--create", "--trades", "5"]).code(), Some(0));
    // A shell engine that ignores SIGTERM and keeps the inherited lock for a minute.
    let mut c = s.warden();
    c.args(["run", "-q", "--db"]).arg(&db).args(["--", "/bin/sh", "-c", "trap '' TERM; echo engine-up; exec sleep 60"]);
    let mut run = Proc::spawn(c);
    run.wait_line(false, "engine-up", MINUTE);
    let artifact = wait_running_artifact(&sessions_of(&db));
    let engine = artifact["engine"]["pid"].as_u64().expect("engine pid") as i32;
    let (code, v, _) = status(&s, &db);
    assert_eq!((code, v["writer_lock"]["state"].as_str()), (0, Some("held")), "{v:#}");

    run.signal(Signal::SIGKILL);
    let _ = run.finish(MINUTE);
    std::thread::sleep(Duration::from_millis(300));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let (code, v, text) = status(&s, &db);
        assert_eq!(v["writer_lock"]["state"], "held", "the engine still holds the lock: {v:#}");
        assert_ne!(code, 0, "an unsupervised engine is not healthy: {v:#}");
        let m = problem(&v, "supervisor_died")["message"].as_str().unwrap().to_owned();
        assert!(m.contains(&format!("pid {engine}")) && m.contains("still running"), "{m}");
        assert!(!text.contains("session running"), "{text}");
    }));
    // The engine's process group (the shell and its sleep).
    let _ = kill(Pid::from_raw(-engine), Signal::SIGKILL);
    result.unwrap();
}

#[test]
fn a_restore_after_a_failed_gate_stops_status_recommending_one() {
    let s = common::Scratch::new();
    let db = s.path("g.db");
    assert_eq!(session(&s, &db, &["--create"], &["--create", "--trades", "5"]).code(), Some(0));
    let mut bytes = std::fs::read(&db).unwrap();
    assert!(bytes.len() >= 3 * 4096, "{} bytes", bytes.len());
    bytes[4096..2 * 4096].fill(0xFF);
    std::fs::write(&db, &bytes).unwrap();
    // Damage after a sealed close: refused for the seal (67), its structure broken too.
    assert_eq!(session(&s, &db, &[], &["--trades", "5"]).code(), Some(67));
    let (code, v, _) = status(&s, &db);
    assert_eq!(code, 11, "{v:#}");
    assert!(problem(&v, "gate_failed")["message"].as_str().unwrap().contains("warden restore"), "{v:#}");

    let mut c = s.warden();
    c.args(["restore", "-q", "--db"]).arg(&db);
    let d = run_to_end(c, MINUTE);
    assert_eq!(d.code(), Some(0), "{}", d.diag());
    let (code, v, _) = status(&s, &db);
    assert_eq!(code, 0, "the restored database is not the one the gate refused: {v:#}");
    no_restore_advice(&v);
    assert!(v["last_gate"]["passed"] == false, "the old gate is still shown, as history: {v:#}");
}

fn wait_running_artifact(dir: &Path) -> Value {
    let deadline = Instant::now() + MINUTE;
    loop {
        for n in names(dir) {
            if !n.ends_with(".json") || n.starts_with('.') {
                continue;
            }
            let Ok(bytes) = std::fs::read(dir.join(&n)) else { continue };
            let Ok(v) = serde_json::from_slice::<Value>(&bytes) else { continue };
            if v["status"] == "running" && v["engine"]["pid"].is_u64() {
                return v;
            }
        }
        assert!(Instant::now() < deadline, "no running artifact with an engine pid in {}", dir.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

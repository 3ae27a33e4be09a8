//! The `warden` binary: exit codes, `--json` shapes, and the README's demo end to end.

use std::process::Command;

const WARDEN: &str = env!("CARGO_BIN_EXE_warden");

fn warden(dir: &std::path::Path) -> Command {
    let mut c = Command::new(WARDEN);
    c.env("WARDEN_AUDIT_DIR", dir.join("audit"));
    c
}

#[test]
fn fs_on_local_disk_is_safe() {
    let d = tempfile::tempdir().unwrap();
    let out = warden(d.path()).args(["fs", "--json"]).arg(d.path().join("new.db")).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["engine_safe"], true);
    assert_eq!(v[0]["verdict"]["kind"], "local");
    let text = warden(d.path()).arg("fs").arg(d.path()).output().unwrap();
    assert!(String::from_utf8_lossy(&text.stdout).contains("safe for the engine"));
}

#[test]
fn lock_reports_never_used_held_and_free() {
    let d = tempfile::tempdir().unwrap();
    let db = d.path().join("e.db");
    let out = warden(d.path()).args(["lock", "--json"]).arg(&db).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["state"], "never_used");

    let mut engine = Command::new(env!("CARGO_BIN_EXE_warden-demo-engine"))
        .arg("--db")
        .arg(&db)
        .args(["--create", "--hold-ms", "20000"])
        .env("WARDEN_AUDIT_DIR", d.path().join("audit"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(engine.stdout.as_mut().unwrap()), &mut line).unwrap();
    assert!(line.contains("ready"), "{line}");
    let out = warden(d.path()).args(["lock", "--json"]).arg(&db).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["state"], "held");
    assert_eq!(v["record"]["holder"]["pid"], engine.id());
    let text = String::from_utf8_lossy(&warden(d.path()).arg("lock").arg(&db).output().unwrap().stdout).into_owned();
    assert!(text.contains("writer lock held") && text.contains(&format!("pid {}", engine.id())), "{text}");
    engine.kill().unwrap();
    engine.wait().unwrap();
    let out = warden(d.path()).args(["lock", "--json"]).arg(&db).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["state"], "free_after_crash");
}

#[test]
fn usage_errors_exit_2_and_missing_paths_are_explained() {
    let d = tempfile::tempdir().unwrap();
    let out = warden(d.path()).arg("fs").output().unwrap();
    assert_eq!(out.status.code(), Some(2), "clap usage error");
    let out = warden(d.path()).args(["version", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["sqlite"].as_str().unwrap() >= "3.51.3");
}

#[test]
fn the_readme_demo_runs_end_to_end() {
    let d = tempfile::tempdir().unwrap();
    let demo = d.path().join("demo");
    let out = warden(d.path()).args(["demo", "--trades", "50", "--dir"]).arg(&demo).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    for expected in ["refused, as it must be", "write refused", "journal_mode=WAL refused", "audit log:"] {
        assert!(stdout.contains(expected), "demo output lacks `{expected}`:\n{stdout}");
    }
    let n: i64 = rusqlite::Connection::open(demo.join("demo.db"))
        .unwrap()
        .query_row("SELECT count(*) FROM trades", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 50);
    assert!(demo.join("audit/audit.jsonl").exists());
}

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
    assert_eq!(v["schema"], 1);
    assert_eq!(v["verdicts"][0]["engine_safe"], true);
    assert_eq!(v["verdicts"][0]["verdict"]["kind"], "local");
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
fn usage_errors_exit_64_and_missing_paths_are_explained() {
    let d = tempfile::tempdir().unwrap();
    let out = warden(d.path()).arg("fs").output().unwrap();
    assert_eq!(out.status.code(), Some(64), "clap usage error");
    let out = warden(d.path()).args(["version", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["sqlite"].as_str().unwrap() >= "3.51.3");
}

#[test]
fn the_readme_demo_runs_end_to_end() {
    let d = tempfile::tempdir().unwrap();
    let demo = d.path().join("demo");
    let run = || {
        let out = warden(d.path()).args(["demo", "--trades", "50", "--dir"]).arg(&demo).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        for expected in [
            "a guarded session",
            "exit 75: warden:",
            "already has a writer",
            "\"busy\"",
            "write refused",
            "post-session backup:",
            "session refused before anything started",
            "journal_mode=WAL refused",
            "backups:",
            "status \"completed\"",
            "audit log:",
        ] {
            assert!(stdout.contains(expected), "demo output lacks `{expected}`:\n{stdout}");
        }
        stdout
    };
    let first = run();
    assert!(first.contains("no pre-session backup: the database is new"), "{first}");
    // The second run gates and backs up what the first one wrote.
    let second = run();
    assert!(second.contains("gate passed: integrity_check: ok"), "{second}");
    assert!(second.contains("pre-session backup:"), "{second}");
    let n: i64 = rusqlite::Connection::open(demo.join("demo.db"))
        .unwrap()
        .query_row("SELECT count(*) FROM trades", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 100);
    assert!(demo.join("audit/audit.jsonl").exists());
    // One health artifact per session, the refused second sessions included.
    let mut statuses: Vec<String> = std::fs::read_dir(demo.join("demo.db.warden/sessions"))
        .unwrap()
        .map(|e| {
            let v: serde_json::Value = serde_json::from_slice(&std::fs::read(e.unwrap().path()).unwrap()).unwrap();
            format!("{}/{}", v["status"].as_str().unwrap(), v["failed_step"].as_str().unwrap_or("-"))
        })
        .collect();
    statuses.sort();
    assert_eq!(statuses, ["completed/-", "completed/-", "refused/writer_lock", "refused/writer_lock"]);
    let backups = std::fs::read_dir(demo.join("demo.db.warden/backups"))
        .unwrap()
        .filter(|e| {
            let n = e.as_ref().unwrap().file_name().to_string_lossy().into_owned();
            n.ends_with(".json") && !n.starts_with('.')
        })
        .count();
    assert_eq!(backups, 3, "post, pre, post");
}

#[test]
fn usage_errors_exit_64_on_stderr_help_and_version_exit_0_on_stdout() {
    let d = tempfile::tempdir().unwrap();
    for args in
        [&["fs"][..], &["nonsense"], &["status", "--no-such-flag"], &["check"], &["salvage", "--method", "x"], &[]]
    {
        let out = warden(d.path()).args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "warden {args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "warden {args:?}: {}", String::from_utf8_lossy(&out.stdout));
        // clap's own message (or, with no subcommand at all, its help).
        assert!(stderr.starts_with("error: ") || stderr.contains("Usage: warden"), "warden {args:?}: {stderr}");
    }
    for args in
        [&["--help"][..], &["-h"], &["help"], &["status", "--help"], &["help", "backups", "verify"], &["--version"]]
    {
        let out = warden(d.path()).args(args).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "warden {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout.starts_with("warden ") || stdout.contains("Usage: warden"), "warden {args:?}: {stdout}");
        assert!(out.stderr.is_empty(), "warden {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

/// Every settings flag (each overrides a key of warden.toml).
const SETTINGS_FLAGS: [&str; 17] = [
    "--config",
    "--db",
    "--create",
    "--backup-dir",
    "--session-dir",
    "--audit-dir",
    "--check",
    "--gate-budget",
    "--keep-last",
    "--keep-hourly",
    "--keep-daily",
    "--keep-weekly",
    "--keep-monthly",
    "--max-total-bytes",
    "--snapshot-every",
    "--snapshot-dir",
    "--snapshot-keep",
];

/// The settings flags each subcommand reads: exactly these are in its `--help`, every other
/// one is a usage error.
fn settings_of(cmd: &str) -> Vec<&'static str> {
    const DB: [&str; 2] = ["--config", "--db"];
    const RETENTION: [&str; 6] =
        ["--keep-last", "--keep-hourly", "--keep-daily", "--keep-weekly", "--keep-monthly", "--max-total-bytes"];
    let mut f: Vec<&str> = DB.to_vec();
    match cmd {
        "run" | "deploy systemd" => return SETTINGS_FLAGS.to_vec(),
        "backup" => f.extend(["--backup-dir", "--audit-dir", "--check", "--gate-budget"]),
        "prune" => f.extend([&["--backup-dir", "--session-dir"][..], &RETENTION].concat()),
        "snapshot" => f.extend(["--audit-dir", "--snapshot-dir", "--snapshot-keep"]),
        "restore" | "drill" => f.extend(["--backup-dir", "--audit-dir", "--gate-budget"]),
        "status" | "doctor" => f.extend(["--backup-dir", "--session-dir"]),
        "sessions" | "sessions show" => f.push("--session-dir"),
        "sessions export" => f.extend(["--session-dir", "--audit-dir", "--snapshot-dir", "--snapshot-keep"]),
        "backups" => f.push("--backup-dir"),
        "backups verify" => f.extend(["--backup-dir", "--check"]),
        "migrate export" => f.extend(["--backup-dir", "--session-dir", "--audit-dir", "--gate-budget"]),
        "migrate import" => f.extend(["--session-dir", "--audit-dir", "--gate-budget"]),
        other => panic!("{other}"),
    }
    f
}

#[test]
fn each_subcommand_takes_only_the_settings_it_reads() {
    let d = tempfile::tempdir().unwrap();
    for cmd in [
        "run",
        "backup",
        "prune",
        "snapshot",
        "restore",
        "drill",
        "status",
        "sessions",
        "sessions show",
        "sessions export",
        "backups",
        "backups verify",
        "doctor",
        "deploy systemd",
        "migrate export",
        "migrate import",
    ] {
        let words: Vec<&str> = cmd.split(' ').collect();
        let out = warden(d.path()).args(&words).arg("--help").output().unwrap();
        assert_eq!(out.status.code(), Some(0), "warden {cmd} --help");
        let help = String::from_utf8_lossy(&out.stdout);
        let shown: Vec<&str> = SETTINGS_FLAGS
            .iter()
            .copied()
            .filter(|f| help.lines().any(|l| l.trim_start().split([' ', ',']).next() == Some(*f)))
            .collect();
        let expected = settings_of(cmd);
        assert_eq!(
            shown,
            SETTINGS_FLAGS.iter().copied().filter(|f| expected.contains(f)).collect::<Vec<_>>(),
            "warden {cmd} --help"
        );
        let examples = help.trim_end().rsplit_once("\nExamples:").map(|(_, e)| e.to_owned()).unwrap_or_default();
        assert!(
            examples.lines().skip(1).all(|l| l.starts_with(&format!("  warden {cmd} "))),
            "warden {cmd}: {examples}"
        );
        for flag in SETTINGS_FLAGS.iter().filter(|f| !expected.contains(f)) {
            let out = warden(d.path()).args(&words).arg(flag).output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(64), "warden {cmd} {flag}: {stderr}");
            assert!(stderr.contains(&format!("unexpected argument '{flag}'")), "warden {cmd} {flag}: {stderr}");
        }
    }
}

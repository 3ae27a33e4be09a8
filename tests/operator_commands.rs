//! The operator commands end to end, as real processes: `warden status` and its exit codes
//! (healthy, stale backup, failed gate, bad last session, a running session, a dead
//! engine) and its Prometheus textfile; `warden check` on good, live and damaged databases
//! (read-only, nothing published); `warden sessions`, `warden backups` and `backups verify`;
//! `warden audit` filters, limits and `--follow` across a logrotate rename.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::proc::*;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

const MINUTE: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Scratch directories, commands
// ---------------------------------------------------------------------------------------------

/// A test's own directory, audit log and `$TMPDIR` (where `check` and `verify` make their
/// private copies, so leftovers would show).
struct Scratch(common::Scratch);

impl std::ops::Deref for Scratch {
    type Target = common::Scratch;

    fn deref(&self) -> &common::Scratch {
        &self.0
    }
}

impl Scratch {
    fn with_file_backups() -> Self {
        let s = Scratch::new();
        std::fs::write(s.path("warden.toml"), common::FILE_BACKUPS).unwrap();
        s
    }

    fn new() -> Self {
        let s = Scratch(common::Scratch::new());
        std::fs::create_dir(s.tmp()).unwrap();
        s
    }

    fn tmp(&self) -> PathBuf {
        self.path("tmp")
    }

    fn audit_file(&self) -> PathBuf {
        self.audit_dir().join("audit.jsonl")
    }

    /// `warden ARGS` with `$TMPDIR` in the test's directory.
    fn warden(&self, args: &[&str]) -> Command {
        let mut c = self.0.warden();
        c.args(args).env("TMPDIR", self.tmp());
        c
    }

    /// `warden <args...> --db <db>`, to the end.
    fn warden_db(&self, args: &[&str], db: &Path) -> Done {
        let mut c = self.warden(args);
        c.arg("--db").arg(db);
        run_to_end(c, MINUTE)
    }

    /// `warden run --db DB -q -- demo-engine ARGS`, to the end.
    fn session(&self, db: &Path, extra: &[&str], engine: &[&str]) -> Done {
        let mut c = self.warden(&["run", "-q", "--db"]);
        c.arg(db).args(extra).arg("--").arg(ENGINE).args(engine);
        let d = run_to_end(c, MINUTE);
        assert!(d.code().is_some(), "{}", d.diag());
        d
    }

    /// `warden status --db DB --json [extra]`: exit code and report.
    fn status(&self, db: &Path, extra: &[&str]) -> (i32, Value) {
        let mut args = vec!["status", "--json"];
        args.extend_from_slice(extra);
        let d = self.warden_db(&args, db);
        let v = d.json();
        assert_eq!(d.code(), Some(v["exit_code"].as_i64().unwrap() as i32), "exit code = report's: {}", d.diag());
        (d.code().unwrap(), v)
    }

    fn assert_tmp_empty(&self, context: &str) {
        let left = names(&self.tmp());
        assert!(left.is_empty(), "{context}: scratch copies left behind in $TMPDIR: {left:?}");
    }
}

/// The database and every sidecar SQLite or warden could create, with their bytes.
fn file_set(db: &Path) -> Vec<(&'static str, Option<Vec<u8>>)> {
    set_bytes(db, &["", "-wal", "-shm", "-journal", "-warden.lock"])
}

fn problem_codes(report: &Value) -> Vec<i64> {
    report["problems"].as_array().unwrap().iter().map(|p| p["code"].as_i64().unwrap()).collect()
}

/// Overwrites page 2 (a b-tree page of a small database) with 0xFF: the header stays
/// valid, `integrity_check` fails.
fn damage_page_2(db: &Path) {
    let mut bytes = std::fs::read(db).unwrap();
    assert!(bytes.len() >= 3 * 4096, "{} bytes", bytes.len());
    bytes[4096..2 * 4096].fill(0xFF);
    std::fs::write(db, &bytes).unwrap();
}

/// A plain SQLite database (never opened by a guarded engine), 600 rows, then damaged.
fn make_plain_damaged_db(db: &Path) {
    let c = rusqlite::Connection::open(db).unwrap();
    c.execute_batch(
        "PRAGMA page_size=4096; PRAGMA journal_mode=DELETE;
         CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT NOT NULL);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 600)
         INSERT INTO t(v) SELECT printf('row-%05d-%s', i, hex(randomblob(20))) FROM n;",
    )
    .unwrap();
    drop(c);
    let mut bytes = std::fs::read(db).unwrap();
    bytes[3 * 4096 + 1536..3 * 4096 + 2560].fill(0xFF);
    std::fs::write(db, &bytes).unwrap();
}

/// One sample of a textfile: name, labels, value.
type Sample = (String, Vec<(String, String)>, f64);

/// Checks the Prometheus text exposition format: every sample is `name{labels} value`,
/// preceded by its family's `# HELP` and `# TYPE`; the file ends with a newline. Returns
/// the samples as (name, labels, value).
fn parse_prom(text: &str) -> Vec<Sample> {
    assert!(text.ends_with('\n'), "a textfile must end with a newline: {text:?}");
    let valid_name = |n: &str| {
        !n.is_empty()
            && n.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    let (mut helped, mut typed) = (std::collections::BTreeSet::new(), std::collections::BTreeSet::new());
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap();
            assert!(valid_name(name), "{line}");
            assert!(helped.insert(name.to_owned()), "HELP twice for {name}");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split(' ');
            let name = it.next().unwrap();
            assert!(matches!(it.next(), Some("gauge" | "counter" | "untyped")), "{line}");
            assert!(typed.insert(name.to_owned()), "TYPE twice for {name}");
            continue;
        }
        assert!(!line.starts_with('#'), "unexpected comment {line:?}");
        let brace = line.find('{').unwrap_or_else(|| panic!("no labels: {line:?}"));
        let name = &line[..brace];
        assert!(valid_name(name), "{line}");
        assert!(helped.contains(name) && typed.contains(name), "{name}: HELP/TYPE must come before samples");
        // Labels: k="v" pairs, values with \\ \" \n escapes.
        let mut labels = Vec::new();
        let mut rest = &line[brace + 1..];
        loop {
            let eq = rest.find("=\"").unwrap_or_else(|| panic!("bad labels in {line:?}"));
            let key = &rest[..eq];
            assert!(valid_name(key), "{line}");
            let mut value = String::new();
            let mut chars = rest[eq + 2..].char_indices();
            let end = loop {
                match chars.next() {
                    Some((i, '"')) => break i,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, c @ ('\\' | '"'))) => value.push(c),
                        other => panic!("bad escape {other:?} in {line:?}"),
                    },
                    Some((_, c)) => value.push(c),
                    None => panic!("unterminated label value in {line:?}"),
                }
            };
            labels.push((key.to_owned(), value));
            rest = &rest[eq + 2 + end + 1..];
            if let Some(r) = rest.strip_prefix(',') {
                rest = r;
                continue;
            }
            rest = rest.strip_prefix("} ").unwrap_or_else(|| panic!("bad sample {line:?}"));
            break;
        }
        let value: f64 = rest.parse().unwrap_or_else(|e| panic!("bad value in {line:?}: {e}"));
        samples.push((name.to_owned(), labels, value));
    }
    samples
}

fn sample(samples: &[Sample], name: &str) -> f64 {
    samples.iter().find(|s| s.0 == name).unwrap_or_else(|| panic!("no {name} in {samples:?}")).2
}

// ---------------------------------------------------------------------------------------------
// warden status
// ---------------------------------------------------------------------------------------------

#[test]
fn status_healthy_after_a_good_session_then_stale_and_the_textfile() {
    let s = Scratch::new();
    let db = s.path("e.db");
    let r = s.session(&db, &["--create"], &["--create", "--trades", "5"]);
    assert_eq!(r.code(), Some(0), "{}", r.diag());

    let (code, v) = s.status(&db, &[]);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["healthy"], true);
    assert_eq!(v["problems"], serde_json::json!([]));
    assert_eq!(v["writer_lock"]["state"], "free");
    assert_eq!(v["last_session"]["status"], "completed");
    assert_eq!(v["backups"]["good"], 1);
    assert_eq!(v["backups"]["newest_good"]["kind"], "post");
    assert_eq!(v["storage"]["database"]["kind"], "local");
    assert_eq!(v["sqlite"]["ok"], true);
    assert!(v["drill"].is_null(), "no drill recorded");
    let human = s.warden_db(&["status"], &db);
    assert_eq!(human.code(), Some(0), "{}", human.diag());
    assert!(human.stdout.contains("HEALTHY") && human.stdout.contains("idle"), "{}", human.diag());

    // The textfile: valid exposition format, replaced atomically (a new inode each time,
    // no temporary left beside it).
    let prom_dir = s.path("textfile");
    std::fs::create_dir(&prom_dir).unwrap();
    let prom = prom_dir.join("warden.prom");
    std::fs::write(&prom, "stale content without newline").unwrap();
    let before = std::fs::metadata(&prom).unwrap().ino();
    let d = s.warden_db(&["status", "--prom", prom.to_str().unwrap()], &db);
    assert_eq!(d.code(), Some(0), "{}", d.diag());
    let text = std::fs::read_to_string(&prom).unwrap();
    let samples = parse_prom(&text);
    assert_ne!(std::fs::metadata(&prom).unwrap().ino(), before, "replaced by rename, not rewritten in place");
    assert_eq!(names(&prom_dir), ["warden.prom"], "no temporary file left");
    assert!(samples.iter().all(|(_, l, _)| l.iter().any(|(k, v)| k == "db" && Path::new(v) == db)), "{text}");
    assert_eq!(sample(&samples, "warden_healthy"), 1.0);
    assert_eq!(sample(&samples, "warden_status_code"), 0.0);
    assert_eq!(sample(&samples, "warden_backups_good"), 1.0);
    assert_eq!(sample(&samples, "warden_last_session_ok"), 1.0);
    assert_eq!(sample(&samples, "warden_writer_lock_held"), 0.0);
    assert_eq!(sample(&samples, "warden_db_on_network_fs"), 0.0);
    assert_eq!(sample(&samples, "warden_sqlite_version_ok"), 1.0);
    assert_eq!(sample(&samples, "warden_integrity_ok"), 1.0);
    assert!(sample(&samples, "warden_db_bytes") > 0.0);
    assert!(sample(&samples, "warden_free_bytes") > 0.0);
    assert!(sample(&samples, "warden_backup_bytes") > 0.0);
    let last_success = samples
        .iter()
        .find(|(n, l, _)| {
            n == "warden_backup_last_success_timestamp_seconds" && l.contains(&("kind".into(), "post".into()))
        })
        .expect("a post backup timestamp");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    assert!((now - last_success.2).abs() < 600.0, "{last_success:?} vs {now}");
    assert!((now - sample(&samples, "warden_status_timestamp_seconds")).abs() < 600.0);
    assert!(sample(&samples, "warden_backup_age_seconds") >= 0.0);

    // Stale: the newest good backup is older than a tiny maximum age.
    std::thread::sleep(Duration::from_millis(2100));
    let (code, v) = s.status(&db, &["--max-backup-age", "1s", "--prom", prom.to_str().unwrap()]);
    assert_eq!(code, 10, "{v:#}");
    assert_eq!(problem_codes(&v), [10]);
    assert_eq!(v["problems"][0]["kind"], "backup_stale");
    let samples = parse_prom(&std::fs::read_to_string(&prom).unwrap());
    assert_eq!(sample(&samples, "warden_healthy"), 0.0);
    assert_eq!(sample(&samples, "warden_status_code"), 10.0);
    assert!(sample(&samples, "warden_backup_age_seconds") >= 2.0);
    assert_eq!(names(&prom_dir), ["warden.prom"]);

    // A disk-headroom floor nobody can meet: 15, and 15 outranks 10.
    let (code, v) = s.status(&db, &["--max-backup-age", "1s", "--min-free-bytes", &u64::MAX.to_string()]);
    assert_eq!(code, 15, "{v:#}");
    assert_eq!(problem_codes(&v), [15, 15, 10], "every problem listed, most severe first");

    // A failed restore drill (the record another command writes): 16.
    let drills = state_dir(&db).join("drills");
    std::fs::create_dir_all(&drills).unwrap();
    std::fs::write(
        drills.join("latest.json"),
        r#"{"finished_at":"2026-01-01T00:00:00Z","ok":false,"backup_id":"b1","messages":["restored copy failed integrity_check"],"future_field":1}"#,
    )
    .unwrap();
    let (code, v) = s.status(&db, &[]);
    assert_eq!(code, 16, "{v:#}");
    assert_eq!(v["drill"]["ok"], false);
    assert_eq!(v["drill"]["backup_id"], "b1");
    assert!(v["problems"][0]["message"].as_str().unwrap().contains("restored copy failed"), "{v:#}");
    // A real drill (`warden drill`) replaces the record: healthy again, and it is shown.
    let d = s.warden_db(&["drill"], &db);
    assert_eq!(d.code(), Some(0), "{}", d.diag());
    let (code, v) = s.status(&db, &[]);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["drill"]["ok"], true);
    assert_eq!(v["drill"]["backup_id"], v["backups"]["newest_good"]["id"]);
}

#[test]
fn status_11_after_the_gate_refused_a_damaged_database_and_check_agrees() {
    let s = Scratch::new();
    let db = s.path("d.db");
    assert_eq!(s.session(&db, &["--create"], &["--create", "--trades", "5"]).code(), Some(0));
    damage_page_2(&db);
    let backups = state_dir(&db).join("backups");
    let published = names(&backups);

    // `warden check` on the damaged database (no writer: warden takes the lock for the check).
    let before = file_set(&db);
    let d = s.warden(&["check", "--json", db.to_str().unwrap()]).output().unwrap();
    let v: Value = serde_json::from_slice(&d.stdout).unwrap();
    // After a sealed close the damage is first of all not what was sealed (67); the check
    // of the copy failed too, and the report keeps both.
    assert_eq!(d.status.code(), Some(67), "{v:#}");
    assert_eq!(v["passed"], false);
    assert_eq!(v["exit_code"], 67);
    assert_eq!(v["failure"], "seal", "{v:#}");
    assert_eq!(v["integrity"]["ok"], false, "{v:#}");
    assert!(v["reasons"].as_array().unwrap().iter().any(|r| r.as_str().unwrap().contains("failed its check")), "{v:#}");
    assert!(v["reasons"].as_array().unwrap().last().unwrap().as_str().unwrap().contains("held the writer lock"));
    assert_eq!(file_set(&db)[..4], before[..4], "the database and its SQLite sidecars are byte-identical");
    assert_eq!(names(&backups), published, "nothing published");
    s.assert_tmp_empty("check of a damaged database");

    let r = s.session(&db, &[], &["--trades", "5"]);
    assert_eq!(r.code(), Some(67), "the gate refuses: {}", r.diag());
    let (code, v) = s.status(&db, &[]);
    assert_eq!(code, 11, "{v:#}");
    assert_eq!(problem_codes(&v), [11], "said once, by the gate's refusal: {v:#}");
    assert_eq!(v["problems"][0]["kind"], "gate_failed");
    assert_eq!(v["last_gate"]["passed"], false);
    assert_eq!(v["last_session"]["status"], "refused");
    let d = s.warden_db(&["status"], &db);
    assert!(d.stdout.contains("UNHEALTHY (exit 11)") && d.stdout.contains("gate_failed"), "{}", d.diag());
}

#[test]
fn check_never_publishes_or_writes_anything() {
    let s = Scratch::new();
    // A plain database no guarded engine ever used, damaged: 65, and no trace anywhere.
    let db = s.path("plain.db");
    make_plain_damaged_db(&db);
    let before = file_set(&db);
    let d = run_to_end(s.warden(&["check", db.to_str().unwrap()]), MINUTE);
    assert_eq!(d.code(), Some(65), "{}", d.diag());
    assert!(d.stdout.contains("integrity gate FAILED"), "{}", d.diag());
    assert!(d.stdout.contains("warden restore") || d.stdout.contains("warden salvage"), "a hint: {}", d.diag());
    assert_eq!(file_set(&db), before, "byte-identical, and no lock file created");
    assert!(!state_dir(&db).exists(), "no state directory, no backup");
    s.assert_tmp_empty("check of a plain damaged database");
    let all = names(s.dir.path());
    assert!(all.iter().all(|n| !n.contains(TMP_MARK)), "{all:?}");

    // The same database intact: 0. Quick mode too.
    let good = s.path("good.db");
    let c = rusqlite::Connection::open(&good).unwrap();
    c.execute_batch("CREATE TABLE t(x CHECK (x > 0)); INSERT INTO t VALUES (1),(2);").unwrap();
    drop(c);
    let before = file_set(&good);
    for mode in ["full", "quick"] {
        let d = run_to_end(s.warden(&["check", "--check", mode, good.to_str().unwrap()]), MINUTE);
        assert_eq!(d.code(), Some(0), "{mode}: {}", d.diag());
    }
    assert_eq!(file_set(&good), before);
    s.assert_tmp_empty("check of a good database");

    // Missing: 66; --scratch-dir is honoured.
    let d = run_to_end(s.warden(&["check", "--json", s.path("nope.db").to_str().unwrap()]), MINUTE);
    assert_eq!(d.code(), Some(66), "{}", d.diag());
    assert_eq!(d.json()["failure"], "missing");
    assert!(!s.path("nope.db").exists());
    let own = s.path("own-scratch");
    std::fs::create_dir(&own).unwrap();
    let d = run_to_end(s.warden(&["check", "--scratch-dir", own.to_str().unwrap(), good.to_str().unwrap()]), MINUTE);
    assert_eq!(d.code(), Some(0), "{}", d.diag());
    assert!(names(&own).is_empty());
}

#[test]
fn status_12_after_an_engine_failed() {
    let s = Scratch::new();
    let db = s.path("f.db");
    assert_eq!(s.session(&db, &["--create"], &["--create", "--trades", "5"]).code(), Some(0));
    let r = s.session(&db, &[], &["--trades", "5", "--exit-code", "3"]);
    assert_eq!(r.code(), Some(3), "{}", r.diag());
    let (code, v) = s.status(&db, &[]);
    assert_eq!(code, 12, "{v:#}");
    assert_eq!(problem_codes(&v), [12]);
    assert_eq!(v["problems"][0]["kind"], "session_ended_badly");
    assert!(v["problems"][0]["message"].as_str().unwrap().contains("exited with status 3"), "{v:#}");
    assert_eq!(v["last_session"]["status"], "engine_failed");
    assert_eq!(v["last_session"]["engine_exit_code"], 3);
    assert_eq!(v["backups"]["good"], 2, "post of the first session and pre of the second; the crash copy is not good");
}

#[test]
fn a_running_session_is_healthy_and_check_runs_beside_it() {
    let s = Scratch::new();
    let db = s.path("live.db");
    assert_eq!(s.session(&db, &["--create"], &["--create", "--trades", "5"]).code(), Some(0));
    let mut c = s.warden(&["run", "-q", "--db"]);
    // Commits every few milliseconds until SIGTERM (the engine then stops cleanly).
    c.arg(&db).arg("--").arg(ENGINE).args(["--trades", "1000000", "--interval-ms", "1"]);
    let mut run = Proc::spawn(c);
    run.wait_engine_ready(MINUTE);

    let (code, v) = s.status(&db, &[]);
    assert_eq!(code, 0, "a running session is healthy: {v:#}");
    assert_eq!(v["writer_lock"]["state"], "held");
    assert!(v["writer_lock"]["session"].is_string(), "{v:#}");
    assert_eq!(v["last_session"]["status"], "running");
    assert!(v["summary"].as_str().unwrap().contains("session running"), "{v:#}");

    // The gate on its own while the engine commits: a consistent snapshot, nothing published.
    let backups = state_dir(&db).join("backups");
    let published = names(&backups);
    let trades = |p: &Path| -> i64 {
        let c = rusqlite::Connection::open_with_flags(p, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
        c.query_row("SELECT count(*) FROM trades", [], |r| r.get(0)).unwrap()
    };
    let first = trades(&db);
    for round in 0..5 {
        let d = run_to_end(s.warden(&["check", "--json", db.to_str().unwrap()]), MINUTE);
        assert_eq!(d.code(), Some(0), "round {round}: {}", d.diag());
        let v = d.json();
        assert_eq!(v["passed"], true);
        let read = v["reasons"].as_array().unwrap().last().unwrap().as_str().unwrap().to_owned();
        assert!(read.contains("online backup API") && read.contains("writer holds the lock"), "{read}");
    }
    assert!(trades(&db) > first, "the engine kept committing during the checks");
    assert_eq!(names(&backups), published, "nothing published");
    s.assert_tmp_empty("check beside a live engine");
    let (code, v) = s.status(&db, &[]);
    assert_eq!((code, v["writer_lock"]["state"].as_str()), (0, Some("held")), "still the session's lock: {v:#}");

    run.signal(Signal::SIGTERM);
    let done = run.finish(MINUTE);
    assert_eq!(done.code(), Some(0), "{}", done.diag());
    let (code, v) = s.status(&db, &[]);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["writer_lock"]["state"], "free");
}

#[test]
fn a_killed_engine_leaves_13_and_check_keeps_that_evidence() {
    let s = Scratch::new();
    let db = s.path("k.db");
    assert_eq!(s.session(&db, &["--create"], &["--create", "--trades", "5"]).code(), Some(0));
    let mut c = s.engine();
    c.arg("--db").arg(&db).args(["--trades", "3", "--hold-ms", "20000"]);
    let mut engine = Proc::spawn(c);
    let pid = engine.wait_engine_ready(MINUTE);
    let (code, v) = s.status(&db, &[]);
    assert_eq!(code, 0, "an engine holding the lock is healthy: {v:#}");
    assert_eq!(v["writer_lock"]["holder"]["pid"], pid);
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
    let _ = engine.finish(MINUTE);

    let (code, v) = s.status(&db, &[]);
    assert_eq!(code, 13, "{v:#}");
    assert_eq!(problem_codes(&v), [13]);
    assert_eq!(v["writer_lock"]["state"], "free_after_crash");
    assert_eq!(v["problems"][0]["kind"], "writer_died");
    assert!(v["problems"][0]["message"].as_str().unwrap().contains(&format!("pid {pid}")), "{v:#}");

    // `warden check` reads without taking the dead writer's lock: the evidence stays.
    let d = run_to_end(s.warden(&["check", "--json", db.to_str().unwrap()]), MINUTE);
    assert_eq!(d.code(), Some(0), "{}", d.diag());
    let read = d.json()["reasons"].as_array().unwrap().last().unwrap().as_str().unwrap().to_owned();
    assert!(read.contains("left untouched as evidence"), "{read}");
    s.assert_tmp_empty("check after a crash");
    assert_eq!(s.status(&db, &[]).0, 13, "still 13 after the check");

    // The next session clears it.
    assert_eq!(s.session(&db, &[], &["--trades", "1"]).code(), Some(0));
    assert_eq!(s.status(&db, &[]).0, 0);
}

// ---------------------------------------------------------------------------------------------
// warden sessions, warden backups
// ---------------------------------------------------------------------------------------------

#[test]
fn sessions_list_and_show() {
    let s = Scratch::new();
    let db = s.path("s.db");
    assert_eq!(s.session(&db, &["--create"], &["--create", "--trades", "5"]).code(), Some(0));
    assert_eq!(s.session(&db, &[], &["--trades", "2", "--exit-code", "4"]).code(), Some(4));

    let d = s.warden_db(&["sessions", "--json"], &db);
    assert_eq!(d.code(), Some(0), "{}", d.diag());
    let list = d.json();
    let list = list["sessions"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["status"], "engine_failed", "newest first");
    assert_eq!(list[0]["engine_exit_code"], 4);
    assert_eq!(list[0]["post_backup_ok"], false);
    assert_eq!(list[1]["status"], "completed");
    assert_eq!(list[1]["gate_passed"], true);
    assert_eq!(list[1]["post_backup_ok"], true);
    let (newest, oldest) = (list[0]["id"].as_str().unwrap(), list[1]["id"].as_str().unwrap());

    let d = s.warden_db(&["sessions", "-n", "1", "--json"], &db);
    assert_eq!(d.json()["sessions"].as_array().unwrap().len(), 1);
    let d = s.warden_db(&["sessions"], &db);
    assert_eq!(d.code(), Some(0), "{}", d.diag());
    assert!(d.stdout.contains(newest) && d.stdout.contains("engine_failed") && d.stdout.contains("completed"));

    // show: exact id, unique prefix, JSON = the artifact file.
    let mut c = s.warden(&["sessions", "show", oldest, "--json", "--db"]);
    c.arg(&db);
    let d = run_to_end(c, MINUTE);
    assert_eq!(d.code(), Some(0), "{}", d.diag());
    let a = d.json();
    let file: Value =
        serde_json::from_slice(&std::fs::read(state_dir(&db).join("sessions").join(format!("{oldest}.json"))).unwrap())
            .unwrap();
    assert_eq!(a, file);
    // The shortest prefix of the newest id that the other one does not share.
    let common = newest.chars().zip(oldest.chars()).take_while(|(a, b)| a == b).count();
    let prefix = &newest[..(common + 1).min(newest.len())];
    let mut c = s.warden(&["sessions", "show", prefix, "--db"]);
    c.arg(&db);
    let d = run_to_end(c, MINUTE);
    assert_eq!(d.code(), Some(0), "{}", d.diag());
    assert!(d.stdout.contains(newest) && d.stdout.contains("exit 4"), "{}", d.diag());
    // Ambiguous (both ids start with the year) and unknown.
    let mut c = s.warden(&["sessions", "show", "20", "--db"]);
    c.arg(&db);
    let d = run_to_end(c, MINUTE);
    assert_eq!(d.code(), Some(64), "{}", d.diag());
    assert!(d.stderr.contains(newest) && d.stderr.contains(oldest), "names the candidates: {}", d.diag());
    let mut c = s.warden(&["sessions", "show", "19990101", "--db"]);
    c.arg(&db);
    assert_eq!(run_to_end(c, MINUTE).code(), Some(66));
}

#[test]
fn backups_list_and_verify_names_a_flipped_byte() {
    // Flips a byte of a data file: the file format (tests/page_store.rs flips a pack's).
    let s = Scratch::with_file_backups();
    let db = s.path("b.db");
    assert_eq!(s.session(&db, &["--create"], &["--create", "--trades", "50"]).code(), Some(0));
    assert_eq!(s.session(&db, &[], &["--trades", "50"]).code(), Some(0));

    let d = s.warden_db(&["backups", "--json"], &db);
    assert_eq!(d.code(), Some(0), "{}", d.diag());
    let list = d.json();
    let list = list["backups"].as_array().unwrap();
    assert_eq!(list.len(), 3, "post, pre, post: {list:#?}");
    let kinds: Vec<&str> = list.iter().map(|b| b["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["post", "pre", "post"], "newest first");
    assert!(
        list.iter().all(|b| b["good"] == true && b["verified"] == true && b["sha256"].as_str().unwrap().len() == 64)
    );
    let human = s.warden_db(&["backups"], &db);
    assert!(human.stdout.contains("3 backups (3 good)"), "{}", human.diag());

    let mut c = s.warden(&["backups", "verify", "--all", "--json", "--db"]);
    c.arg(&db);
    let d = run_to_end(c, MINUTE);
    assert_eq!(d.code(), Some(0), "{}", d.diag());
    assert_eq!(d.json()["results"].as_array().unwrap().len(), 3);
    s.assert_tmp_empty("verify --all");

    // One flipped byte in the middle of the oldest backup: its hash catches it, although
    // SQLite's own check may not.
    let victim = &list[2];
    let path = PathBuf::from(victim["path"].as_str().unwrap());
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2 + 17;
    bytes[mid] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    let flipped = std::fs::read(&path).unwrap();

    let mut c = s.warden(&["backups", "verify", "--all", "--json", "--db"]);
    c.arg(&db);
    let d = run_to_end(c, MINUTE);
    assert_eq!(d.code(), Some(65), "{}", d.diag());
    let v = d.json();
    assert_eq!(v["ok"], false);
    assert_eq!(v["failed"], 1);
    for r in v["results"].as_array().unwrap() {
        if r["id"] == victim["id"] {
            assert_eq!(r["outcome"], "failed", "{r:#}");
            assert_eq!(r["hash_ok"], false);
            assert!(r["reason"].as_str().unwrap().contains("SHA-256"), "{r:#}");
        } else {
            assert_eq!(r["outcome"], "ok", "{r:#}");
        }
    }
    assert_eq!(std::fs::read(&path).unwrap(), flipped, "verify never writes the backup");
    let mut c = s.warden(&["backups", "verify", "--all", "--db"]);
    c.arg(&db);
    let d = run_to_end(c, MINUTE);
    assert_eq!(d.code(), Some(65));
    let failed_line = d.stdout.lines().find(|l| l.starts_with("FAILED")).unwrap_or_else(|| panic!("{}", d.diag()));
    assert!(failed_line.contains(victim["id"].as_str().unwrap()), "names it: {}", d.diag());
    assert!(d.stdout.contains("1 of 3 backup(s) FAILED"), "{}", d.diag());

    // One by id; the default (newest good) is intact; an unknown id is 66.
    let mut c = s.warden(&["backups", "verify", victim["id"].as_str().unwrap(), "--db"]);
    c.arg(&db);
    assert_eq!(run_to_end(c, MINUTE).code(), Some(65));
    assert_eq!(s.warden_db(&["backups", "verify"], &db).code(), Some(0));
    let mut c = s.warden(&["backups", "verify", "nope", "--db"]);
    c.arg(&db);
    assert_eq!(run_to_end(c, MINUTE).code(), Some(66));
    s.assert_tmp_empty("verify");
    let empty = s.path("none.db");
    assert_eq!(s.warden_db(&["backups", "verify", "--all"], &empty).code(), Some(66));
}

// ---------------------------------------------------------------------------------------------
// warden audit
// ---------------------------------------------------------------------------------------------

#[test]
fn audit_filters_limits_and_follows_across_rotation() {
    let s = Scratch::new();
    let db = s.path("a.db");
    assert_eq!(s.session(&db, &["--create"], &["--create", "--trades", "3"]).code(), Some(0));
    assert_eq!(s.session(&db, &[], &["--trades", "3"]).code(), Some(0));
    let all: Vec<Value> =
        std::fs::read_to_string(s.audit_file()).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(all.len() > 6, "{all:#?}");

    // --event open --json: exactly the open records, as written.
    let d = run_to_end(s.warden(&["audit", "--event", "open", "--json", "-n", "1000"]), MINUTE);
    assert_eq!(d.code(), Some(0), "{}", d.diag());
    let opens: Vec<Value> = d.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let expected: Vec<&Value> = all.iter().filter(|v| v["event"] == "open").collect();
    assert!(!opens.is_empty());
    assert_eq!(opens.iter().collect::<Vec<_>>(), expected);
    // Several events are ORed; -n limits to the newest.
    let d = run_to_end(s.warden(&["audit", "--event", "open", "--event", "close", "--json"]), MINUTE);
    assert!(d.stdout.lines().all(|l| l.contains("\"event\":\"open\"") || l.contains("\"event\":\"close\"")));
    let d = run_to_end(s.warden(&["audit", "-n", "3", "--json"]), MINUTE);
    let last3: Vec<Value> = d.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(last3.as_slice(), &all[all.len() - 3..]);
    let d = run_to_end(s.warden(&["audit", "-n", "3"]), MINUTE);
    assert_eq!(d.stdout.lines().count(), 3, "{}", d.diag());
    // --pid, --db, --since.
    let pid = expected[0]["pid"].as_u64().unwrap();
    let d = run_to_end(s.warden(&["audit", "--json", "--pid", &pid.to_string()]), MINUTE);
    assert!(d.stdout.lines().count() >= 1 && d.stdout.lines().all(|l| l.contains(&format!("\"pid\":{pid},"))));
    let d = run_to_end(s.warden(&["audit", "--json", "--db", s.path("other.db").to_str().unwrap()]), MINUTE);
    assert_eq!(d.stdout, "", "no record about another database");
    let d = run_to_end(s.warden(&["audit", "--json", "--since", "2999-01-01T00:00:00Z"]), MINUTE);
    assert_eq!(d.stdout, "");
    let d =
        run_to_end(s.warden(&["audit", "--json", "-n", "1000", "--since", "1h", "--db", db.to_str().unwrap()]), MINUTE);
    assert_eq!(d.stdout.lines().count(), all.iter().filter(|v| v["db"].is_string()).count(), "{}", d.diag());
    // A bad filter is a usage error naming the valid events.
    let d = run_to_end(s.warden(&["audit", "--event", "opened"]), MINUTE);
    assert_eq!(d.code(), Some(64), "{}", d.diag());
    assert!(d.stderr.contains("open_refused"), "{}", d.diag());

    // A partial last line is not shown.
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(s.audit_file()).unwrap();
    f.write_all(b"{\"schema\":1,\"ts\":\"2026-").unwrap();
    let d = run_to_end(s.warden(&["audit", "-n", "1", "--json"]), MINUTE);
    assert_eq!(d.code(), Some(0));
    assert_eq!(serde_json::from_str::<Value>(d.stdout.trim()).unwrap(), *all.last().unwrap());
    // Completed, it is a line that is not a record: skipped, and said so.
    f.write_all(b"\n").unwrap();
    let d = run_to_end(s.warden(&["audit", "-n", "1", "--json"]), MINUTE);
    assert_eq!(serde_json::from_str::<Value>(d.stdout.trim()).unwrap(), *all.last().unwrap());
    assert!(d.stderr.contains("1 line(s)") && d.stderr.contains("skipped"), "{}", d.diag());

    // --follow: the last records first, then new ones as they come; a logrotate rename is
    // followed to the new file.
    let mut follow = Proc::spawn(s.warden(&["audit", "--follow", "--json", "--event", "writer_lock_acquired"]));
    follow.wait_line(false, "writer_lock_acquired", MINUTE);
    follow.wait_line(false, "writer_lock_acquired", MINUTE);
    assert_eq!(s.session(&db, &[], &["--trades", "1"]).code(), Some(0));
    follow.wait_line(false, "writer_lock_acquired", MINUTE);
    std::fs::rename(s.audit_file(), s.path("audit").join("audit.jsonl.1")).unwrap();
    assert_eq!(s.session(&db, &[], &["--trades", "1"]).code(), Some(0));
    assert!(s.audit_file().exists(), "the next writer started a new log");
    follow.wait_line(false, "writer_lock_acquired", MINUTE);
    follow.signal(Signal::SIGINT);
    let d = follow.finish(MINUTE);
    assert_eq!(d.code(), Some(0), "SIGINT ends --follow cleanly: {}", d.diag());
    let seen: Vec<Value> = d.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(seen.len(), 4, "two sessions before, one before and one after the rotation: {}", d.diag());
    assert!(seen.iter().all(|v| v["event"] == "writer_lock_acquired"));
}

/// A rollback journal left hot by a writer that died mid-transaction, beside a database no
/// guarded engine uses. `check` does not take the writer lock there, yet checks the set: the
/// pair is copied byte for byte and the journal rolled back on the private copy, never on
/// the original (issue 11: it used to refuse with 75). The crashed pair stays byte-identical
/// and no lock file appears.
#[test]
fn check_rolls_back_a_hot_journal_on_its_private_copy_only() {
    let s = Scratch::new();
    let live = s.path("live.db");
    let c = rusqlite::Connection::open(&live).unwrap();
    c.execute_batch(
        "PRAGMA page_size=4096; PRAGMA journal_mode=DELETE;
         CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT NOT NULL);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000)
         INSERT INTO t(v) SELECT hex(randomblob(40)) FROM n;
         PRAGMA cache_size=2; BEGIN; UPDATE t SET v = v || 'x';",
    )
    .unwrap();
    // Mid-transaction (pages spilled into the file, the journal synced): the state a crash
    // would leave. Copy the pair, then let the live transaction go.
    let db = s.path("crashed.db");
    std::fs::copy(&live, &db).unwrap();
    std::fs::copy(sidecar(&live, "-journal"), sidecar(&db, "-journal")).unwrap();
    c.execute_batch("ROLLBACK").unwrap();
    drop(c);
    let before = file_set(&db);
    let d = run_to_end(s.warden(&["check", "--json", db.to_str().unwrap()]), MINUTE);
    assert_eq!(d.code(), Some(0), "{}", d.diag());
    let v = d.json();
    assert_eq!(v["passed"], true, "{v:#}");
    let read = v["reasons"].as_array().unwrap().last().unwrap().as_str().unwrap().to_owned();
    assert!(read.contains("recovered on the private copy"), "{read}");
    assert_eq!(file_set(&db), before, "the crashed pair is byte-identical, no lock file");
    s.assert_tmp_empty("check of a hot journal");
}

/// A restore holding the lock is "running" (healthy); killed after writing its intent
/// record it is "interrupted" (11, and 13 for its lock); the next restore finishes it.
#[test]
#[cfg_attr(
    not(feature = "testing"),
    ignore = "needs the test seams: cargo test --features testing (scripts/test does)"
)]
fn status_11_for_an_interrupted_restore() {
    let s = Scratch::new();
    let db = s.path("r.db");
    assert_eq!(s.session(&db, &["--create"], &["--create", "--trades", "5"]).code(), Some(0));
    let mut c = s.warden(&["restore", "--db"]);
    c.arg(&db).env("WARDEN_PAUSE_AT", "restore-intent-written");
    let mut restore = Proc::spawn(c);
    wait_state(restore.pid(), 'T', MINUTE);
    let (code, v) = s.status(&db, &[]);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["restore"]["running"], true);
    assert!(v["summary"].as_str().unwrap().contains("restore running"), "{v:#}");

    restore.signal(Signal::SIGKILL);
    let _ = restore.finish(MINUTE);
    let (code, v) = s.status(&db, &[]);
    assert_eq!(code, 11, "{v:#}");
    assert_eq!(problem_codes(&v), [11, 13]);
    assert_eq!(v["problems"][0]["kind"], "restore_interrupted");
    assert_eq!(v["restore"]["running"], false);
    assert!(v["problems"][0]["message"].as_str().unwrap().contains("warden restore"), "{v:#}");

    let d = s.warden_db(&["restore", "-q"], &db);
    assert_eq!(d.code(), Some(0), "{}", d.diag());
    let (code, v) = s.status(&db, &[]);
    assert_eq!(code, 0, "{v:#}");
    assert!(v["restore"].is_null());
}

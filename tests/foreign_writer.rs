//! A foreign writer during a session is reported with its pid (issue 12, item 3). Before,
//! a second process could hold the live database open for writing (plain SQLite, through a
//! hard link or a symlink) for a whole `warden run` session and nothing noticed: the audit
//! log had no record of it, the health artifact said `completed`, and `warden status` said
//! healthy. Now warden looks at `/proc` every 2 s while the engine runs:
//!
//! - a writer is named (pid, command, uid, file, flags) once in the artifact's
//!   `foreign_writers` and once in the audit log (`foreign_writer`), and `warden status`
//!   reports `foreign_writer` (exit 17) while the session runs and after it;
//! - readers, the engine and the engine's own children are not foreign writers;
//! - with `--on-foreign-writer stop` the engine gets SIGTERM, the post-session backup is
//!   still taken, and `warden run` exits 17 with status `foreign_writer_stopped`.
//!
//! Real processes throughout: the `warden` binary, the demo engine, and Python's `sqlite3`
//! module (or a plain `open()`) as the other process.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::proc::*;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

const MINUTE: Duration = Duration::from_secs(60);

/// Opens `argv[1]` with Python's sqlite3 (read-write, or read-only with `ro`), reads from it
/// so the `-wal` is open too, writes the marker `argv[2]`, and holds the connection.
const SQLITE_HOLDER: &str = r#"
import os, sqlite3, sys, time, pathlib
db, marker, mode = (sys.argv + [None, None, None, None])[1:4]
db = db or os.environ["WARDEN_DB"]
if mode == "ro":
    c = sqlite3.connect("file:" + db + "?mode=ro", uri=True, timeout=10)
else:
    c = sqlite3.connect(db, timeout=10)
c.execute("SELECT count(*) FROM trades").fetchall()
pathlib.Path(marker).write_text(str(os.getpid()))
time.sleep(120)
"#;

/// Opens `argv[1]` with plain `open(…, "r+b")` (no SQLite), writes the marker, holds it.
const RAW_HOLDER: &str = r#"
import os, sys, time, pathlib
f = open(sys.argv[1], "r+b")
pathlib.Path(sys.argv[2]).write_text(str(os.getpid()))
time.sleep(120)
"#;

fn have_python() -> bool {
    Command::new("python3").args(["-c", "import sqlite3"]).status().is_ok_and(|s| s.success())
}

/// SIGKILLs a process the test started indirectly (the engine's child) when dropped.
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.0 as i32), Signal::SIGKILL);
    }
}

/// Starts a holder script and waits until it has the file open; returns it and its pid.
fn hold(script: &str, args: &[&Path], mode: Option<&str>, marker: &Path) -> (Proc, u32) {
    let mut c = Command::new("python3");
    c.arg("-c").arg(script).args(args).arg(marker);
    if let Some(m) = mode {
        c.arg(m);
    }
    let p = Proc::spawn(c);
    wait_file(marker, &p);
    let pid = p.pid();
    (p, pid)
}

fn wait_file(marker: &Path, p: &Proc) {
    let deadline = Instant::now() + MINUTE;
    while !marker.exists() {
        assert!(Instant::now() < deadline, "the holder never opened its file: {}", p.stderr());
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn first_session(s: &common::Scratch, db: &Path) {
    let mut c = s.warden();
    c.args(["run", "-q", "--db"]).arg(db).args(["--create", "--"]).arg(ENGINE).args(["--create", "--trades", "5"]);
    let d = run_to_end(c, MINUTE);
    assert_eq!(d.code(), Some(0), "{}", d.diag());
}

/// `warden run` with the demo engine writing a trade every 100 ms until it is stopped.
fn start_session(s: &common::Scratch, db: &Path, flags: &[&str], engine: &[&str]) -> (Proc, u32) {
    let mut c = s.warden();
    c.args(["run", "--json", "--db"]).arg(db).args(flags).arg("--").arg(ENGINE);
    c.args(["--trades", "1000000", "--interval-ms", "100"]).args(engine);
    let mut run = Proc::spawn(c);
    let engine = run.wait_engine_ready(MINUTE);
    (run, engine)
}

/// The artifact of the session that is running now.
fn running_artifact(db: &Path) -> Option<Value> {
    let dir = sessions_of(db);
    names(&dir).into_iter().filter(|n| n.ends_with(".json") && !n.starts_with('.')).find_map(|n| {
        let v: Value = serde_json::from_slice(&std::fs::read(dir.join(n)).ok()?).ok()?;
        (v["status"] == "running").then_some(v)
    })
}

/// Waits until the running session's artifact satisfies `pred`; panics with `what` (the
/// failure this prevents) and the artifact otherwise.
fn wait_artifact(db: &Path, timeout: Duration, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let a = running_artifact(db);
        if let Some(a) = a.as_ref().filter(|a| pred(a)) {
            return a.clone();
        }
        assert!(Instant::now() < deadline, "{what} within {timeout:?}; artifact: {a:#?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn writers(a: &Value) -> Vec<Value> {
    a["foreign_writers"]["writers"].as_array().cloned().unwrap_or_default()
}

fn writer_pids(a: &Value) -> Vec<u64> {
    writers(a).iter().filter_map(|w| w["pid"].as_u64()).collect()
}

fn scans(a: &Value) -> u64 {
    a["foreign_writers"]["scans"].as_u64().unwrap_or(0)
}

fn status(s: &common::Scratch, db: &Path) -> (i32, Value) {
    let mut c = s.warden();
    c.args(["status", "--json", "--db"]).arg(db);
    let d = run_to_end(c, MINUTE);
    (d.code().unwrap_or(-1), d.json())
}

fn problem<'a>(v: &'a Value, kind: &str) -> Option<&'a Value> {
    v["problems"].as_array()?.iter().find(|p| p["kind"] == kind)
}

fn foreign_records(s: &common::Scratch) -> Vec<Value> {
    s.audit_lines().into_iter().filter(|r| r["event"] == "foreign_writer").collect()
}

#[test]
fn a_foreign_writer_through_a_hard_link_is_reported_with_its_pid() {
    if !have_python() {
        return skip_or_fail(
            "a_foreign_writer_through_a_hard_link_is_reported_with_its_pid",
            "no python3 with sqlite3",
        );
    }
    let s = common::Scratch::new();
    let db = s.path("e.db");
    first_session(&s, &db);
    let link = s.path("other-name.db");
    std::fs::hard_link(&db, &link).unwrap();
    let (mut run, engine) = start_session(&s, &db, &[], &[]);

    let (_writer, pid) = hold(SQLITE_HOLDER, &[&link], None, &s.path("writer.open"));
    let a = wait_artifact(&db, Duration::from_secs(15), &format!("no foreign writer pid {pid} in the artifact"), |a| {
        writer_pids(a).contains(&u64::from(pid))
    });
    let w = writers(&a).into_iter().find(|w| w["pid"] == pid).unwrap();
    assert_eq!(w["comm"], "python3", "{w:#}");
    assert_eq!(w["uid"].as_u64(), Some(u64::from(nix::unistd::getuid().as_raw())), "{w:#}");
    assert!(w["first_seen_at"].is_string() && w["gone_at"].is_null(), "{w:#}");
    let files = w["files"].as_array().unwrap();
    assert!(
        files.iter().any(|f| f["file"] == "database"
            && f["path"] == link.to_str().unwrap()
            && f["access"] == "read_write"
            && f["flags"].as_str().is_some_and(|x| x.ends_with('2'))),
        "the hard link's name, read-write: {w:#}"
    );
    assert!(!writer_pids(&a).contains(&u64::from(engine)), "the engine is not foreign: {a:#}");
    assert_eq!(a["foreign_writers"]["policy"], "warn");

    // While the session runs, `warden status` says so, naming the pid.
    let (code, v) = status(&s, &db);
    assert_eq!(code, 17, "{v:#}");
    let m = problem(&v, "foreign_writer").expect("a foreign_writer problem")["message"].as_str().unwrap().to_owned();
    assert!(m.contains(&format!("pid {pid} (python3")), "{m}");

    // Several looks later (every 2 s): still one record per writer, in the audit log and (below)
    // in the artifact.
    let n = scans(&a);
    std::thread::sleep(Duration::from_secs(5));
    let recs = foreign_records(&s);
    assert_eq!(recs.len(), 1, "one audit record per foreign writer: {recs:#?}");
    let r = &recs[0];
    assert_eq!(r["opener"]["pid"], pid, "{r:#}");
    assert_eq!(r["decision"], "warn", "{r:#}");
    assert_eq!(r["db"], db.to_str().unwrap(), "{r:#}");
    assert!(r["reason"].as_str().unwrap().contains(&format!("pid {pid}")), "{r:#}");

    // `warn` lets the session go on and end as usual; the record stays.
    run.signal(Signal::SIGTERM);
    let d = run.finish(MINUTE);
    assert_eq!(d.code(), Some(0), "{}", d.diag());
    let fin = d.last_json();
    assert_eq!(fin["status"], "completed", "{fin:#}");
    assert_eq!(writer_pids(&fin), vec![u64::from(pid)], "{fin:#}");
    assert!(scans(&fin) >= n + 2, "the watch kept looking: {fin:#}");
    assert!(d.stderr.contains("foreign writer during session"), "{}", d.diag());
    let (code, v) = status(&s, &db);
    assert_eq!(code, 17, "after the session too: {v:#}");
    assert!(problem(&v, "foreign_writer").unwrap()["message"].as_str().unwrap().contains("on_foreign_writer = warn"));

    // The next session without one clears it.
    drop(_writer);
    let mut c = s.warden();
    c.args(["run", "-q", "--db"]).arg(&db).arg("--").arg(ENGINE).args(["--trades", "2"]);
    assert_eq!(run_to_end(c, MINUTE).code(), Some(0));
    let (code, v) = status(&s, &db);
    assert_eq!(code, 0, "{v:#}");
}

#[test]
fn readers_the_engine_and_its_children_are_not_foreign_writers() {
    if !have_python() {
        return skip_or_fail("readers_the_engine_and_its_children_are_not_foreign_writers", "no python3 with sqlite3");
    }
    let s = common::Scratch::new();
    let db = s.path("r.db");
    first_session(&s, &db);
    let sym = s.path("symlinked.db");
    std::os::unix::fs::symlink(&db, &sym).unwrap();
    // The engine's child opens the database read-write (it inherits WARDEN_DB).
    let child_marker = s.path("child.open");
    let child_args = ["--spawn-child", "python3", "-c", SQLITE_HOLDER, "", child_marker.to_str().unwrap()];
    let (mut run, engine) = start_session(&s, &db, &[], &child_args);
    let line = run.wait_line(false, "\"child\"", MINUTE);
    let child: Value = serde_json::from_str(&line).unwrap();
    let child = child["pid"].as_u64().unwrap() as u32;
    let _reap = KillOnDrop(child);
    let deadline = Instant::now() + MINUTE;
    while !child_marker.exists() {
        assert!(Instant::now() < deadline, "the engine's child never opened the database");
        std::thread::sleep(Duration::from_millis(20));
    }
    // A read-only reader through a symlink: its database descriptor is O_RDONLY, its -wal
    // read-write (SQLite opens it so for read-only connections too).
    let (_reader, reader) = hold(SQLITE_HOLDER, &[&sym], Some("ro"), &s.path("reader.open"));
    let fd_flags = |pid: u32, name: &str| -> Vec<String> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().flatten() {
            if std::fs::read_link(e.path()).is_ok_and(|t| t.to_string_lossy().ends_with(name)) {
                let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{}", e.file_name().to_string_lossy()));
                out.extend(
                    info.unwrap_or_default()
                        .lines()
                        .filter_map(|l| l.strip_prefix("flags:"))
                        .map(|f| f.trim().to_owned()),
                );
            }
        }
        out
    };
    assert!(fd_flags(reader, "symlinked.db").iter().all(|f| f.ends_with('0')), "the reader is O_RDONLY");

    // A few looks (every 2 s) with all three holding their descriptors.
    std::thread::sleep(Duration::from_secs(5));
    let (code, v) = status(&s, &db);
    assert_eq!(code, 0, "{v:#}");

    // The child outlives the engine (left behind in its process group): still not foreign at
    // the look right after the exit, which the reader also still holds its descriptors for.
    run.signal(Signal::SIGTERM);
    let d = run.finish(MINUTE);
    assert_eq!(d.code(), Some(0), "{}", d.diag());
    assert!(alive(child) && alive(reader), "the engine's child and the reader are still running");
    let fin = d.last_json();
    assert!(scans(&fin) >= 3, "the foreign-writer watch did not look at least 3 times: {:#}", fin["foreign_writers"]);
    let pids = writer_pids(&fin);
    for (who, pid) in [("a read-only reader", reader), ("the engine", engine), ("the engine's child", child)] {
        assert!(!pids.contains(&u64::from(pid)), "{who} (pid {pid}) reported as a foreign writer: {fin:#}");
    }
    assert!(pids.is_empty(), "{fin:#}");
    assert_eq!(fin["status"], "completed", "{fin:#}");
    assert!(foreign_records(&s).is_empty(), "{:#?}", foreign_records(&s));
    let (code, v) = status(&s, &db);
    assert_eq!(code, 0, "{v:#}");
}

#[test]
fn on_foreign_writer_stop_stops_the_engine_takes_the_backup_and_exits_17() {
    if !have_python() {
        return skip_or_fail("on_foreign_writer_stop_stops_the_engine_takes_the_backup_and_exits_17", "no python3");
    }
    let s = common::Scratch::new();
    let mut c = s.warden();
    c.args(["run", "--help"]);
    let help = run_to_end(c, MINUTE).stdout;
    assert!(help.contains("--on-foreign-writer"), "`warden run` cannot be told to stop for a foreign writer:\n{help}");
    let db = s.path("s.db");
    first_session(&s, &db);
    let (mut run, engine) =
        start_session(&s, &db, &["--on-foreign-writer", "stop", "--foreign-writer-every", "200ms"], &[]);
    // A raw writer of the -wal through a symlink (no SQLite, no database descriptor).
    let wal = sidecar(&db, "-wal");
    assert!(wal.exists(), "the engine runs in WAL mode");
    let walink: PathBuf = s.path("walink");
    std::os::unix::fs::symlink(&wal, &walink).unwrap();
    let (_raw, pid) = hold(RAW_HOLDER, &[&walink], None, &s.path("raw.open"));

    let d = run.finish(MINUTE);
    assert_eq!(d.code(), Some(17), "stopped for a foreign writer: exit 17\n{}", d.diag());
    assert!(!alive(engine), "the engine was stopped");
    let fin = d.last_json();
    assert_eq!(fin["status"], "foreign_writer_stopped", "{fin:#}");
    assert_eq!(fin["failed_step"], "foreign_writer", "{fin:#}");
    assert_eq!(fin["exit_code"], 17, "{fin:#}");
    assert!(fin["foreign_writers"]["stopped_engine_at"].is_string(), "{fin:#}");
    assert_eq!(fin["engine"]["exit_code"], 0, "the engine closed cleanly on SIGTERM: {fin:#}");
    let w = writers(&fin).into_iter().find(|w| w["pid"] == pid).unwrap_or_else(|| panic!("pid {pid}: {fin:#}"));
    assert!(w["files"].as_array().unwrap().iter().any(|f| f["file"] == "-wal" && f["access"] == "read_write"), "{w:#}");
    // The post-session backup is never skipped.
    assert_eq!(fin["post_backup"]["ok"], true, "{fin:#}");
    assert_eq!(fin["post_backup"]["kind"], "post", "{fin:#}");
    let recs = foreign_records(&s);
    assert_eq!(recs.len(), 1, "{recs:#?}");
    assert_eq!((recs[0]["opener"]["pid"].as_u64(), recs[0]["decision"].as_str()), (Some(u64::from(pid)), Some("stop")));

    let (code, v) = status(&s, &db);
    assert_eq!(code, 17, "{v:#}");
    let m = problem(&v, "foreign_writer").unwrap()["message"].as_str().unwrap();
    assert!(m.contains(&format!("pid {pid}")) && m.contains("stopped the engine"), "{m}");
    assert!(problem(&v, "session_ended_badly").is_none(), "reported once, as the foreign writer: {v:#}");
}

//! Analysis snapshots end to end: real engine processes committing every few milliseconds,
//! real readers re-opening `latest.sqlite` while snapshots are published, the SQLite hosts
//! analysts use (sqlite3 CLI, Python's sqlite3, Datasette `--immutable`), the analysis
//! factory pointed at the live database, periodic snapshots under `warden run`, and
//! `kill -9` at every publication seam.
//!
//! What they prove (issue 4, part 1): a snapshot equals a committed state of the engine's
//! database; it is one self-contained rollback-journal file, mode 0444, with no `-wal` or
//! `-shm` beside it; `latest.sqlite` always opens and is complete, whatever a reader or a
//! crash does; retention keeps at most N.

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::proc::*;
use common::{Scratch, local_guard};
use nix::sys::signal::Signal;
use rusqlite::OpenFlags;
use serde_json::Value;
use sqlite_warden::copies::snapshot::open_snapshot;
use sqlite_warden::copies::snapshot::{self, SnapshotError, SnapshotOptions};
use sqlite_warden::guard::connect::ToolOptions;
use sqlite_warden::guard::error::OpenError;

// ---------------------------------------------------------------------------------------------
// Commands and processes
// ---------------------------------------------------------------------------------------------

/// The demo engine on `db` with `args`.
fn engine(s: &Scratch, db: &Path, args: &[&str]) -> Command {
    let mut c = s.engine();
    c.arg("--db").arg(db).args(args);
    c
}

/// Starts the demo engine committing one trade every `interval_ms` and waits until it has
/// committed some.
fn start_engine(s: &Scratch, db: &Path, interval_ms: u32) -> Proc {
    let e = Proc::spawn(engine(s, db, &["--create", "--trades", "1000000", "--interval-ms", &interval_ms.to_string()]));
    e.wait_line(false, "\"ready\"", Duration::from_secs(30));
    let deadline = Instant::now() + Duration::from_secs(30);
    while trade_count(db) < 5 {
        assert!(Instant::now() < deadline, "the engine committed nothing");
        std::thread::sleep(Duration::from_millis(10));
    }
    e
}

fn stop_engine(mut e: Proc) -> i64 {
    e.signal(Signal::SIGTERM);
    let d = e.finish(Duration::from_secs(30));
    assert_eq!(d.code(), Some(0), "{}", d.diag());
    let done = d.last_json();
    assert_eq!(done["event"], "done", "{}", d.diag());
    done["trades_total"].as_i64().unwrap()
}

// ---------------------------------------------------------------------------------------------
// Checking snapshots
// ---------------------------------------------------------------------------------------------

/// `file:<path>?immutable=1`, opened with plain rusqlite (no guard), read-only.
fn open_immutable(path: &Path) -> rusqlite::Result<rusqlite::Connection> {
    rusqlite::Connection::open_with_flags(
        format!("file:{}?immutable=1", path.display()),
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
}

/// `quick_check` ok and `count(*) FROM trades` == the ledger; returns the count.
fn consistent_count(c: &rusqlite::Connection) -> Result<i64, String> {
    let qc: String = c.query_row("PRAGMA quick_check", [], |r| r.get(0)).map_err(|e| e.to_string())?;
    if qc != "ok" {
        return Err(format!("quick_check: {qc}"));
    }
    let n: i64 = c.query_row("SELECT count(*) FROM trades", [], |r| r.get(0)).map_err(|e| e.to_string())?;
    let ledger: i64 =
        c.query_row("SELECT trades FROM ledger WHERE id = 1", [], |r| r.get(0)).map_err(|e| e.to_string())?;
    if n != ledger {
        return Err(format!("{n} trades but the ledger says {ledger}"));
    }
    Ok(n)
}

/// Everything a published snapshot must be: a rollback-journal file (header bytes 18/19 =
/// 1), `journal_mode=delete`, integrity ok, consistent, mode 0444, nothing beside it.
/// Returns the number of trades.
fn check_snapshot(path: &Path) -> i64 {
    let mut h = [0u8; 20];
    std::fs::File::open(path).unwrap().read_exact(&mut h).unwrap();
    assert_eq!(&h[..16], b"SQLite format 3\0", "{}", path.display());
    assert_eq!((h[18], h[19]), (1, 1), "{} must be a rollback-journal file, not WAL", path.display());
    assert_eq!(mode(path), 0o444, "{}", path.display());
    let c = open_immutable(path).unwrap();
    let ic: String = c.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(ic, "ok", "{}", path.display());
    let jm: String = c.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
    assert_eq!(jm, "delete", "{}", path.display());
    let n = consistent_count(&c).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let max: i64 = c.query_row("SELECT coalesce(max(id), 0) FROM trades", [], |r| r.get(0)).unwrap();
    assert_eq!(max, n, "{}: trade ids are 1..=n in a committed state", path.display());
    drop(c);
    assert_no_sidecars(path);
    n
}

fn assert_no_sidecars(path: &Path) {
    for suffix in ["-wal", "-shm", "-journal"] {
        assert!(!sidecar(path, suffix).exists(), "{} has a {suffix} beside it", path.display());
    }
}

fn ino(path: &Path) -> Option<u64> {
    std::fs::metadata(path).ok().map(|m| m.ino())
}

/// The published snapshot data files (`<db>-<ts>.sqlite` with a manifest), oldest first.
fn published(dir: &Path) -> Vec<PathBuf> {
    let all = names(dir);
    all.iter()
        .filter(|n| !n.starts_with('.') && *n != "latest.sqlite" && n.ends_with(".sqlite"))
        .filter(|n| all.contains(&format!("{}.json", n.trim_end_matches(".sqlite"))))
        .map(|n| dir.join(n))
        .collect()
}

/// No temporary file, no data file without its manifest, no manifest without its data file,
/// and `latest.sqlite` is a published snapshot.
fn assert_dir_sound(dir: &Path, context: &str) {
    let all = names(dir);
    for n in &all {
        assert!(!n.contains(TMP_MARK), "{context}: leftover temporary {n} in {all:?}");
        if n == "latest.sqlite" || n.starts_with('.') {
            continue;
        }
        if let Some(stem) = n.strip_suffix(".sqlite") {
            assert!(all.contains(&format!("{stem}.json")), "{context}: {n} has no manifest: {all:?}");
        }
        if let Some(stem) = n.strip_suffix(".json") {
            assert!(all.contains(&format!("{stem}.sqlite")), "{context}: {n} has no data file: {all:?}");
            let m: Value = serde_json::from_slice(&std::fs::read(dir.join(n)).unwrap()).unwrap();
            assert_eq!(m["file"], format!("{stem}.sqlite"), "{context}");
            assert_eq!(m["journal_mode"], "delete", "{context}");
        }
    }
    let latest = dir.join("latest.sqlite");
    assert!(
        published(dir).iter().any(|p| ino(p) == ino(&latest)),
        "{context}: latest.sqlite is not a published snapshot: {all:?}"
    );
}

fn python() -> Option<PathBuf> {
    if Path::new("/usr/bin/python3").exists() {
        return Some("/usr/bin/python3".into());
    }
    on_path("python3")
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

// ---------------------------------------------------------------------------------------------
// 1. Snapshots under a live writer equal committed states
// ---------------------------------------------------------------------------------------------

#[test]
fn snapshots_under_a_live_writer_equal_committed_states() {
    let s = Scratch::new();
    let db = s.path("live.db");
    let dir = snapshots_of(&db);
    let e = start_engine(&s, &db, 2);

    let mut taken: Vec<(PathBuf, i64)> = Vec::new();
    for i in 0..6 {
        let mut c = s.warden();
        c.args(["snapshot", "--json", "--snapshot-keep", "10", "--db"]).arg(&db);
        let d = run_to_end(c, Duration::from_secs(60));
        assert_eq!(d.code(), Some(0), "snapshot {i}: {}", d.diag());
        let out = d.last_json();
        let path = PathBuf::from(out["path"].as_str().unwrap());
        let latest = PathBuf::from(out["latest"].as_str().unwrap());
        assert_eq!(latest, dir.join("latest.sqlite"));
        assert_eq!(path.parent(), Some(dir.as_path()));
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        assert!(name.starts_with("live.db-") && name.ends_with("Z.sqlite"), "{name}");
        assert_eq!(out["manifest"]["check"]["mode"], "quick");
        assert_eq!(out["manifest"]["check"]["ok"], true);
        assert_eq!(out["manifest"]["journal_mode"], "delete");
        assert_eq!(out["manifest"]["size"].as_u64(), Some(std::fs::metadata(&path).unwrap().len()));
        assert_eq!(mode(Path::new(out["manifest_path"].as_str().unwrap())), 0o444);
        assert_eq!(ino(&latest), ino(&path), "latest is re-pointed at the new snapshot");
        let n = check_snapshot(&path);
        assert_eq!(check_snapshot(&latest), n);
        taken.push((path, n));
        assert!(e.exited().is_none() && proc_state(e.pid()).is_some_and(|st| st != 'Z'), "the engine keeps running");
    }
    assert_dir_sound(&dir, "after 6 snapshots");
    let counts: Vec<i64> = taken.iter().map(|t| t.1).collect();
    assert!(counts.windows(2).all(|w| w[0] <= w[1]), "snapshots never go back in time: {counts:?}");
    assert!(counts.first() < counts.last(), "the engine committed between snapshots: {counts:?}");

    // Each snapshot is exactly the first n trades of the engine's final database: a state
    // the engine committed, not a mix.
    let total = stop_engine(e);
    assert!(total >= *counts.last().unwrap());
    let live = rusqlite::Connection::open_with_flags(&db, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    for (path, n) in &taken {
        let snap = open_immutable(path).unwrap();
        assert_eq!(trades_upto(&snap, i64::MAX), trades_upto(&live, *n), "{} vs the live database", path.display());
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Readers of `latest` never see a half-written file
// ---------------------------------------------------------------------------------------------

const PY_READER: &str = r#"
import json, os, sqlite3, sys
latest, stop = sys.argv[1], sys.argv[2]
reads = 0
errors = []
while not os.path.exists(stop):
    try:
        c = sqlite3.connect("file:%s?immutable=1" % latest, uri=True)
        qc = c.execute("PRAGMA quick_check").fetchone()[0]
        n = c.execute("SELECT count(*) FROM trades").fetchone()[0]
        ledger = c.execute("SELECT trades FROM ledger WHERE id = 1").fetchone()[0]
        c.close()
        if qc != "ok" or n != ledger:
            errors.append("inconsistent: %s %s %s" % (qc, n, ledger))
    except Exception as e:
        errors.append(repr(e))
    reads += 1
print(json.dumps({"reads": reads, "errors": len(errors), "first": errors[:5]}))
"#;

#[test]
fn readers_reopening_latest_never_see_a_half_written_file() {
    let s = Scratch::new();
    let db = s.path("readers.db");
    let dir = snapshots_of(&db);
    let latest = dir.join("latest.sqlite");
    let guard = local_guard(&s);
    let opts = SnapshotOptions { keep: 3, guard: Some(guard.clone()), ..Default::default() };
    let e = start_engine(&s, &db, 2);
    let first = snapshot::take(&db, &opts).unwrap();
    assert_eq!(first.latest, latest);

    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let reads = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();
    // Plain rusqlite with `?immutable=1`, and the analysis factory given the LIVE path.
    for via_factory in [false, true] {
        let (stop, failures, reads, latest, db, guard) =
            (stop.clone(), failures.clone(), reads.clone(), latest.clone(), db.clone(), guard.clone());
        threads.push(std::thread::spawn(move || {
            let topts = ToolOptions { guard: Some(guard), ..Default::default() };
            let mut last = 0;
            while !stop.load(Ordering::Relaxed) {
                let got = if via_factory {
                    open_snapshot(&db, &topts).map_err(|e| e.to_string()).and_then(|c| consistent_count(&c))
                } else {
                    open_immutable(&latest).map_err(|e| e.to_string()).and_then(|c| consistent_count(&c))
                };
                match got {
                    Ok(n) if n >= last => last = n,
                    Ok(n) => failures.lock().unwrap().push(format!("went back from {last} to {n} trades")),
                    Err(e) => failures.lock().unwrap().push(format!("factory={via_factory}: {e}")),
                }
                reads.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    // A reader in another process: Python's sqlite3.
    let stop_file = s.path("STOP");
    let py = python().map(|py| {
        let mut c = Command::new(py);
        c.arg("-c").arg(PY_READER).arg(&latest).arg(&stop_file);
        Proc::spawn(c)
    });
    // A connection opened before the publications keeps reading its (old) inode, even after
    // retention has unlinked that snapshot's name.
    let held = open_immutable(&latest).unwrap();
    let held_n = consistent_count(&held).unwrap();

    let mut paths = vec![first.path.clone()];
    for i in 0..20 {
        let r = snapshot::take(&db, &opts).unwrap_or_else(|e| panic!("snapshot {i}: {e}"));
        assert_eq!(ino(&r.latest), ino(&r.path));
        assert!(r.retention_error.is_none(), "{r:?}");
        paths.push(r.path);
        std::thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, Ordering::Relaxed);
    std::fs::write(&stop_file, b"").unwrap();
    for t in threads {
        t.join().unwrap();
    }
    let failures = failures.lock().unwrap().clone();
    eprintln!("in-process readers: {} reads, {} failures", reads.load(Ordering::Relaxed), failures.len());
    assert!(failures.is_empty(), "{} failed reads, first: {:?}", failures.len(), &failures[..failures.len().min(5)]);
    assert!(reads.load(Ordering::Relaxed) >= 20, "the readers read {} times", reads.load(Ordering::Relaxed));
    if let Some(mut p) = py {
        let d = p.finish(Duration::from_secs(30));
        assert_eq!(d.code(), Some(0), "{}", d.diag());
        let out = d.last_json();
        eprintln!("python reader: {out}");
        assert_eq!(out["errors"], 0, "python reader: {out}");
        assert!(out["reads"].as_u64().unwrap() >= 5, "python reader: {out}");
    } else {
        skip_or_fail("readers_reopening_latest_never_see_a_half_written_file (python part)", "no python3");
    }

    assert!(!paths[0].exists(), "retention removed the first snapshot");
    assert_eq!(consistent_count(&held), Ok(held_n), "a held connection still reads its snapshot");
    drop(held);
    let kept = published(&dir);
    assert_eq!(kept.len(), 3, "keep = 3: {:?}", names(&dir));
    assert_eq!(kept.last(), paths.last());
    assert_dir_sound(&dir, "after 21 snapshots");
    for p in &kept {
        check_snapshot(p);
    }
    stop_engine(e);
}

// ---------------------------------------------------------------------------------------------
// 3. The sqlite3 CLI, Python's sqlite3 and Datasette read a snapshot
// ---------------------------------------------------------------------------------------------

#[test]
fn sqlite3_cli_python_and_datasette_read_a_snapshot() {
    let s = Scratch::new();
    let db = s.path("hosts.db");
    let d = run_to_end(engine(&s, &db, &["--create", "--trades", "137"]), Duration::from_secs(60));
    assert_eq!(d.code(), Some(0), "{}", d.diag());
    let mut c = s.warden();
    c.args(["snapshot", "--json", "--db"]).arg(&db);
    let d = run_to_end(c, Duration::from_secs(60));
    assert_eq!(d.code(), Some(0), "{}", d.diag());
    let out = d.last_json();
    let snap = PathBuf::from(out["path"].as_str().unwrap());
    let latest = PathBuf::from(out["latest"].as_str().unwrap());
    assert_eq!(check_snapshot(&snap), 137);

    for file in [&snap, &latest] {
        let uri = format!("file:{}?immutable=1", file.display());
        // Python's sqlite3.
        match python() {
            Some(py) => {
                let o = Command::new(&py)
                    .args(["-c", "import sqlite3, sys; c = sqlite3.connect(sys.argv[1], uri=True); print(c.execute('SELECT count(*) FROM trades').fetchone()[0], c.execute('SELECT trades FROM ledger').fetchone()[0], c.execute('PRAGMA quick_check').fetchone()[0])"])
                    .arg(&uri)
                    .output()
                    .unwrap();
                assert!(o.status.success(), "{}: {}", py.display(), String::from_utf8_lossy(&o.stderr));
                assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "137 137 ok", "{}", py.display());
            }
            None => skip_or_fail("sqlite3_cli_python_and_datasette_read_a_snapshot (python)", "no python3"),
        }
        // The sqlite3 CLI.
        match on_path("sqlite3") {
            Some(cli) => {
                let o = Command::new(&cli)
                    .arg(&uri)
                    .arg("SELECT count(*) FROM trades; SELECT trades FROM ledger; PRAGMA quick_check;")
                    .output()
                    .unwrap();
                assert!(o.status.success(), "sqlite3: {}", String::from_utf8_lossy(&o.stderr));
                let text = String::from_utf8_lossy(&o.stdout);
                assert_eq!(text.split_whitespace().collect::<Vec<_>>(), ["137", "137", "ok"], "sqlite3 CLI: {text}");
            }
            None => skip_or_fail(
                "sqlite3_cli_python_and_datasette_read_a_snapshot (sqlite3 CLI)",
                "no sqlite3 on PATH (apt-get install sqlite3)",
            ),
        }
        assert_no_sidecars(file);
    }

    // Datasette --immutable, on a free loopback port.
    let Some(ds) =
        on_path("datasette").filter(|ds| Command::new(ds).arg("--version").output().is_ok_and(|o| o.status.success()))
    else {
        skip_or_fail(
            "sqlite3_cli_python_and_datasette_read_a_snapshot (datasette)",
            "datasette is not on PATH (scripts/test installs it: python3 -m pip install datasette)",
        );
        return;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut c = Command::new(&ds);
    c.arg("serve").arg("--immutable").arg(&latest).args(["-h", "127.0.0.1", "-p", &port.to_string()]);
    let server = Proc::spawn(c);
    let deadline = Instant::now() + Duration::from_secs(60);
    let dbs = loop {
        if let Some((200, body)) = http_get(port, "/-/databases.json") {
            break body;
        }
        assert!(Instant::now() < deadline, "datasette did not answer on port {port}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let dbs: Value = serde_json::from_str(&dbs).unwrap();
    let entry = dbs.as_array().unwrap().iter().find(|d| d["name"] == "latest").unwrap_or_else(|| panic!("{dbs}"));
    assert_eq!(entry["is_mutable"], false, "{entry}");
    let (code, body) = http_get(port, "/latest.json?sql=select+count(*)+as+n+from+trades&_shape=array").unwrap();
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v[0]["n"], 137, "{v}");
    eprintln!("datasette --immutable on 127.0.0.1:{port}: count via the SQL JSON API = {}", v[0]["n"]);
    let (code, body) = http_get(port, "/latest/trades.json?_shape=array&_size=1").unwrap();
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v.as_array().map(Vec::len), Some(1), "{v}");
    assert_eq!(v[0]["id"], 1, "{v}");
    drop(server);
    assert_no_sidecars(&latest);
}

/// A minimal HTTP/1.1 GET on 127.0.0.1: (status, body).
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n").ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    let body =
        if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { dechunk(body) } else { body.into() };
    Some((code, body))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else { break };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

// ---------------------------------------------------------------------------------------------
// 4. The analysis factory and the live database
// ---------------------------------------------------------------------------------------------

#[test]
fn open_snapshot_reads_snapshots_never_the_live_database() {
    let s = Scratch::new();
    let db = s.path("factory.db");
    let guard = local_guard(&s);
    let topts = ToolOptions { guard: Some(guard.clone()), ..Default::default() };
    let d = run_to_end(engine(&s, &db, &["--create", "--trades", "42"]), Duration::from_secs(60));
    assert_eq!(d.code(), Some(0), "{}", d.diag());
    let latest = snapshots_of(&db).join("latest.sqlite");

    // The live database (a writer lock file beside it), no snapshot yet: a clear refusal.
    let e = open_snapshot(&db, &topts).map(|_| ()).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(&e, OpenError::LiveDatabase { path, latest: l, .. } if *path == db && *l == latest), "{e:?}");
    assert!(
        msg.contains("this is the live database; analysis reads snapshots: run `warden snapshot` (or pass --live)"),
        "{msg}"
    );
    assert!(msg.contains("hint"), "{msg}");

    // With a snapshot, the live path opens `latest.sqlite` instead.
    let r = snapshot::take(&db, &SnapshotOptions { guard: Some(guard.clone()), ..Default::default() }).unwrap();
    let c = open_snapshot(&db, &topts).unwrap();
    let file: String =
        c.query_row("SELECT file FROM pragma_database_list WHERE name = 'main'", [], |r| r.get(0)).unwrap();
    assert_eq!(Path::new(&file), latest, "the factory opened {file}");
    assert_eq!(consistent_count(&c), Ok(42));
    assert!(c.execute_batch("INSERT INTO ledger VALUES (2, 0)").is_err(), "analysis connections are read-only");
    drop(c);
    // A snapshot file itself opens as it is.
    let c = open_snapshot(&r.path, &topts).unwrap();
    let file: String =
        c.query_row("SELECT file FROM pragma_database_list WHERE name = 'main'", [], |r| r.get(0)).unwrap();
    assert_eq!(Path::new(&file), r.path);
    drop(c);
    assert_no_sidecars(&r.path);
    assert_no_sidecars(&latest);

    // Any WAL-mode database counts as live (reading it would create its -wal and -shm).
    let wal = s.path("plain-wal.db");
    common::make_db(&wal, "WAL");
    let e = open_snapshot(&wal, &topts).map(|_| ()).unwrap_err();
    assert!(matches!(e, OpenError::LiveDatabase { .. }), "{e:?}");
    // A missing file is Missing, a URI is refused as by every factory call.
    assert!(matches!(open_snapshot(s.path("nope.db"), &topts).map(|_| ()), Err(OpenError::Missing { .. })));
    assert!(matches!(
        open_snapshot(format!("file:{}?immutable=1", r.path.display()), &topts).map(|_| ()),
        Err(OpenError::NotAFilePath { .. })
    ));
}

// ---------------------------------------------------------------------------------------------
// 5. Periodic snapshots during `warden run`
// ---------------------------------------------------------------------------------------------

#[test]
fn periodic_snapshots_during_run_and_their_retention() {
    let s = Scratch::new();
    let db = s.path("periodic.db");
    let dir = snapshots_of(&db);
    let mut c = s.warden();
    c.args(["run", "--json", "-q", "--create", "--snapshot-every", "1s", "--snapshot-keep", "2", "--db"])
        .arg(&db)
        .args(["--", ENGINE, "--create", "--trades", "300", "--interval-ms", "10"]);
    let started = Instant::now();
    let d = run_to_end(c, Duration::from_secs(120));
    assert_eq!(d.code(), Some(0), "{}", d.diag());
    let a = d.last_json();
    assert_eq!(a["status"], "completed", "{a:#}");
    let engine_ms = a["engine"]["duration_ms"].as_u64().unwrap();
    assert!(engine_ms >= 2500, "the engine ran ~3 s: {engine_ms} ms");
    let snaps = &a["snapshots"];
    assert_eq!(snaps["every_ms"], 1000, "{a:#}");
    assert_eq!(snaps["failed"], 0, "{snaps:#}");
    let taken = snaps["taken"].as_u64().unwrap();
    eprintln!("periodic: {taken} snapshots while the engine ran {engine_ms} ms");
    assert!(taken >= 2, "{taken} snapshots in {engine_ms} ms: {snaps:#}");
    assert!(started.elapsed() < Duration::from_secs(60));

    let kept = published(&dir);
    assert!(kept.len() <= 2 && !kept.is_empty(), "retention keeps at most 2: {:?}", names(&dir));
    assert_dir_sound(&dir, "after the session");
    let latest = dir.join("latest.sqlite");
    assert_eq!(snaps["last"].as_str().map(PathBuf::from), kept.last().cloned(), "{snaps:#}");
    assert_eq!(ino(&latest), ino(kept.last().unwrap()));
    let mut prev = 0;
    for p in &kept {
        let n = check_snapshot(p);
        assert!(n >= prev && n <= 300, "{n}");
        prev = n;
        let m: Value =
            serde_json::from_slice(&std::fs::read(sidecar(&p.with_extension(""), ".json")).unwrap()).unwrap();
        assert_eq!(m["session_id"], a["session_id"], "{m:#}");
    }
    assert!(check_snapshot(&latest) > 0);
}

#[test]
fn a_failing_periodic_snapshot_never_stops_the_engine() {
    let s = Scratch::new();
    let db = s.path("failing.db");
    // The snapshot directory cannot be created: a regular file is in the way.
    let blocker = s.path("not-a-dir");
    std::fs::write(&blocker, b"x").unwrap();
    let mut c = s.warden();
    c.args(["run", "--json", "--create", "--snapshot-every", "1s", "--snapshot-dir"])
        .arg(blocker.join("snaps"))
        .arg("--db")
        .arg(&db)
        .args(["--", ENGINE, "--create", "--trades", "150", "--interval-ms", "10"]);
    let d = run_to_end(c, Duration::from_secs(120));
    assert_eq!(d.code(), Some(0), "{}", d.diag());
    let a = d.last_json();
    assert_eq!(a["status"], "completed", "{a:#}");
    assert_eq!(a["engine"]["clean"], true);
    let snaps = &a["snapshots"];
    assert_eq!(snaps["taken"], 0, "{snaps:#}");
    assert!(snaps["failed"].as_u64().unwrap() >= 1, "{snaps:#}");
    let err = snaps["last_error"].as_str().unwrap();
    assert!(err.contains("not-a-dir"), "{err}");
    assert!(d.stderr.contains("periodic snapshot failed"), "logged: {}", d.diag());
    let n: i64 = rusqlite::Connection::open_with_flags(&db, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap()
        .query_row("SELECT count(*) FROM trades", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 150, "the engine did all its work");
}

// ---------------------------------------------------------------------------------------------
// 6. kill -9 during publication
// ---------------------------------------------------------------------------------------------

#[test]
#[cfg_attr(
    not(feature = "testing"),
    ignore = "needs the test seams: cargo test --features testing (scripts/test does)"
)]
fn kill_minus_9_during_publication_keeps_latest_whole() {
    let s = Scratch::new();
    let db = s.path("k9.db");
    let dir = snapshots_of(&db);
    let latest = dir.join("latest.sqlite");
    let e = start_engine(&s, &db, 3);
    let snap = |pause: Option<&str>| {
        let mut c = s.warden();
        c.args(["snapshot", "--json", "--snapshot-keep", "2", "--db"]).arg(&db);
        if let Some(p) = pause {
            c.env("WARDEN_PAUSE_AT", p);
        }
        c
    };
    let d = run_to_end(snap(None), Duration::from_secs(60));
    assert_eq!(d.code(), Some(0), "{}", d.diag());

    for point in ["snapshot-copied", "snapshot-published", "snapshot-latest-linked"] {
        let ctx = format!("kill -9 at {point}");
        let before = published(&dir);
        let latest_before = ino(&latest);
        let mut p = Proc::spawn(snap(Some(point)));
        let line = p.wait_line(true, "paused at", Duration::from_secs(30));
        assert_eq!(line, format!("warden: paused at {point} (pid {})", p.pid()), "{ctx}");
        wait_state(p.pid(), 'T', Duration::from_secs(10));
        p.signal(Signal::SIGKILL);
        assert_eq!(p.wait_exit(Duration::from_secs(10)).signal(), Some(9), "{ctx}");

        // `latest` still opens, complete, and is a published snapshot.
        assert!(check_snapshot(&latest) > 0, "{ctx}");
        let left = names(&dir);
        let tmp: Vec<&String> = left.iter().filter(|n| n.contains(TMP_MARK)).collect();
        match point {
            "snapshot-copied" => {
                assert!(!tmp.is_empty(), "{ctx}: the temporary copy is left: {left:?}");
                assert_eq!(ino(&latest), latest_before, "{ctx}");
                assert_eq!(published(&dir), before, "{ctx}");
            }
            "snapshot-published" => {
                assert!(tmp.is_empty(), "{ctx}: {left:?}");
                assert_eq!(ino(&latest), latest_before, "{ctx}: latest not re-pointed yet");
                assert_eq!(published(&dir).len(), before.len() + 1, "{ctx}: the new snapshot is published");
            }
            _ => {
                assert!(tmp.iter().any(|n| n.starts_with(".latest.sqlite")), "{ctx}: the link is left: {left:?}");
                assert_eq!(ino(&latest), latest_before, "{ctx}");
            }
        }
        assert!(published(&dir).iter().any(|p| ino(p) == ino(&latest)), "{ctx}: {left:?}");

        // The next snapshot cleans up and re-points `latest` at itself.
        let d = run_to_end(snap(None), Duration::from_secs(60));
        assert_eq!(d.code(), Some(0), "{ctx}: {}", d.diag());
        let out = d.last_json();
        let recovered = out["recovered"].as_array().unwrap();
        assert_eq!(recovered.is_empty(), point == "snapshot-published", "{ctx}: {out:#}");
        assert_dir_sound(&dir, &format!("{ctx}: after the next snapshot"));
        assert_eq!(ino(&latest), ino(Path::new(out["path"].as_str().unwrap())), "{ctx}");
        assert!(published(&dir).len() <= 2, "{ctx}: {:?}", names(&dir));
        check_snapshot(&latest);
    }
    stop_engine(e);
}

// ---------------------------------------------------------------------------------------------
// 7. A copy that fails its check is never published
// ---------------------------------------------------------------------------------------------

#[test]
fn a_damaged_database_is_never_published_and_latest_stays() {
    let s = Scratch::new();
    let db = s.path("damaged.db");
    let dir = snapshots_of(&db);
    {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch(
            "PRAGMA page_size=4096; PRAGMA journal_mode=DELETE;
             CREATE TABLE trades(id INTEGER PRIMARY KEY, v TEXT NOT NULL);
             CREATE TABLE ledger(id INTEGER PRIMARY KEY, trades INTEGER NOT NULL);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 600)
             INSERT INTO trades(v) SELECT printf('row-%05d-%s', i, hex(randomblob(20))) FROM n;
             INSERT INTO ledger VALUES (1, 600);",
        )
        .unwrap();
    }
    let mut c = s.warden();
    c.args(["snapshot", "--db"]).arg(&db);
    let d = run_to_end(c, Duration::from_secs(60));
    assert_eq!(d.code(), Some(0), "{}", d.diag());
    assert!(d.stdout.starts_with("snapshot  ") && d.stdout.contains("\nlatest    "), "{}", d.diag());
    let latest = dir.join("latest.sqlite");
    let before = (published(&dir), ino(&latest));
    assert_eq!(check_snapshot(&latest), 600);

    // 1 KiB of 0xFF in the middle of a full table leaf (page 4).
    let mut bytes = std::fs::read(&db).unwrap();
    let page = 3 * 4096;
    assert_eq!(bytes[page], 0x0D, "page 4 is a table leaf");
    bytes[page + 1536..page + 2560].fill(0xFF);
    std::fs::write(&db, &bytes).unwrap();

    let mut c = s.warden();
    c.args(["snapshot", "--verify", "full", "--db"]).arg(&db);
    let d = run_to_end(c, Duration::from_secs(60));
    assert_eq!(d.code(), Some(65), "{}", d.diag());
    assert!(d.stderr.contains("failed its check") && d.stderr.contains("hint"), "{}", d.diag());
    assert_eq!((published(&dir), ino(&latest)), before, "nothing published, latest unchanged");
    assert_dir_sound(&dir, "after the refused snapshot");
    assert_eq!(check_snapshot(&latest), 600);

    // The library says the same, with the report.
    let r = snapshot::take(&db, &SnapshotOptions { guard: Some(local_guard(&s)), ..Default::default() });
    match r {
        Err(SnapshotError::CheckFailed { report, .. }) => assert!(!report.ok),
        other => panic!("{other:?}"),
    }
    // Missing database: exit 66.
    let mut c = s.warden();
    c.args(["snapshot", "--db"]).arg(s.path("missing.db"));
    let d = run_to_end(c, Duration::from_secs(60));
    assert_eq!(d.code(), Some(66), "{}", d.diag());
}

// ---------------------------------------------------------------------------------------------
// 8. Free-space preflight (a real full disk: tmpfs, as root)
// ---------------------------------------------------------------------------------------------

#[test]
fn no_space_for_a_snapshot_publishes_nothing() {
    let s = Scratch::new();
    let db = s.path("big.db");
    {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch(
            "PRAGMA journal_mode=DELETE;
             CREATE TABLE trades(id INTEGER PRIMARY KEY, v TEXT NOT NULL);
             CREATE TABLE ledger(id INTEGER PRIMARY KEY, trades INTEGER NOT NULL);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 6000)
             INSERT INTO trades(v) SELECT hex(randomblob(100)) FROM n;
             INSERT INTO ledger VALUES (1, 6000);",
        )
        .unwrap();
    }
    let small = s.path("small");
    let _mnt = match Tmpfs::mount(&small, "1m") {
        Ok(m) => m,
        Err(why) => return skip_or_fail("no_space_for_a_snapshot_publishes_nothing", &why),
    };
    let dir = small.join("snaps");
    let mut c = s.warden();
    c.args(["snapshot", "--snapshot-dir"]).arg(&dir).arg("--db").arg(&db);
    let d = run_to_end(c, Duration::from_secs(60));
    assert_eq!(d.code(), Some(74), "{}", d.diag());
    assert!(d.stderr.contains("not enough space for a snapshot") && d.stderr.contains("hint"), "{}", d.diag());
    assert_eq!(names(&dir), [".warden-snapshots.lock"], "nothing published, nothing left");
}

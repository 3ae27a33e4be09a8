//! `warden check` promises to leave the database it checks alone. These tests pin the failure
//! of issue 11 (defect 6): with no writer lock file beside a database (no guarded engine
//! ever used it), `check` opened the set read-only through SQLite, which rewrote the `-shm`
//! of a WAL database, created a `-shm` and an empty `-wal` beside others, and refused a hot
//! rollback journal left by a dead writer with exit 75 instead of checking it.
//!
//! Each case is made by a real writer (Python's `sqlite3`, a separate process) and, where a
//! crash is the point, killed with SIGKILL. The real `warden` binary then checks it; the
//! directory listing and every file's bytes, size and modification time must be exactly as
//! before, no lock file or state directory may appear, the private copy must be gone from
//! `$TMPDIR`, and the result must be reported (exit 0 and `passed` for these intact sets).

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::proc::{names, run_to_end, sidecar, state_dir};

const MINUTE: Duration = Duration::from_secs(60);

/// Name, bytes, size and mtime (ns) of every file in `dir`, sorted by name.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>, u64, i128)> {
    names(dir)
        .into_iter()
        .map(|n| {
            let p = dir.join(&n);
            let md = std::fs::metadata(&p).unwrap();
            let mtime = i128::from(md.mtime()) * 1_000_000_000 + i128::from(md.mtime_nsec());
            (n, std::fs::read(&p).unwrap(), md.len(), mtime)
        })
        .collect()
}

/// Runs a Python writer on `db` that prints `ready` once its work is on disk and then
/// sleeps; the writer is SIGKILLed right after `ready`, leaving exactly what a crash leaves.
fn python_writer_killed(db: &Path, code: &str) {
    let prelude =
        format!("import sqlite3, sys, time\nc = sqlite3.connect({:?}, isolation_level=None)\n", db.to_str().unwrap());
    let tail = "\nprint('ready', flush=True)\ntime.sleep(120)\n";
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(prelude + code + tail)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3 runs");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready", "the writer did not get ready");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
}

struct Case {
    _dir: tempfile::TempDir,
    db: PathBuf,
    tmp: PathBuf,
    audit: PathBuf,
}

impl Case {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (tmp, audit, dbs) = (dir.path().join("tmp"), dir.path().join("audit"), dir.path().join("dbs"));
        for d in [&tmp, &dbs] {
            std::fs::create_dir(d).unwrap();
        }
        Case { db: dbs.join("x.db"), tmp, audit, _dir: dir }
    }

    fn dbs(&self) -> &Path {
        self.db.parent().unwrap()
    }

    /// `warden check --json DB`: the files must be untouched; returns the report.
    fn check_untouched(&self, what: &str) -> serde_json::Value {
        let before = snapshot(self.dbs());
        // A later write would show up in the mtime even within the same clock tick.
        std::thread::sleep(Duration::from_millis(20));
        let mut c = Command::new(env!("CARGO_BIN_EXE_warden"));
        c.args(["check", "--json"])
            .arg(&self.db)
            .env("TMPDIR", &self.tmp)
            .env("WARDEN_AUDIT_DIR", &self.audit)
            .env_remove("WARDEN_LOCK_FD")
            .env_remove("WARDEN_CONFIG");
        let d = run_to_end(c, MINUTE);
        let after = snapshot(self.dbs());
        let listing = |s: &[(String, Vec<u8>, u64, i128)]| s.iter().map(|f| f.0.clone()).collect::<Vec<_>>();
        assert_eq!(listing(&after), listing(&before), "{what}: `check` created or removed files beside the database");
        for (b, a) in before.iter().zip(&after) {
            assert!(a.1 == b.1, "{what}: `check` changed the bytes of {}", b.0);
            assert_eq!((a.2, a.3), (b.2, b.3), "{what}: `check` changed the size or mtime of {}", b.0);
        }
        assert!(!sidecar(&self.db, "-warden.lock").exists() && !state_dir(&self.db).exists(), "{what}");
        assert!(names(&self.tmp).is_empty(), "{what}: private copy left in $TMPDIR: {:?}", names(&self.tmp));
        assert_eq!(d.code(), Some(0), "{what}: {}", d.diag());
        let v = d.json();
        assert_eq!(v["passed"], true, "{what}: {v:#}");
        assert_eq!(v["exit_code"], 0, "{what}: {v:#}");
        v
    }
}

fn last_reason(v: &serde_json::Value) -> String {
    v["reasons"].as_array().unwrap().last().unwrap().as_str().unwrap().to_owned()
}

#[test]
fn check_of_a_crashed_wal_writer_leaves_wal_and_shm_byte_identical() {
    let c = Case::new();
    python_writer_killed(
        &c.db,
        "c.execute('PRAGMA journal_mode=WAL')\nc.execute('PRAGMA wal_autocheckpoint=0')\n\
         c.execute('CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)')\n\
         for i in range(200):\n    c.execute('INSERT INTO t(v) VALUES (?)', ('row-%d' % i,))",
    );
    assert!(std::fs::metadata(sidecar(&c.db, "-wal")).unwrap().len() > 0, "a -wal with the commits");
    assert!(sidecar(&c.db, "-shm").exists(), "and its -shm");
    let v = c.check_untouched("crashed WAL writer");
    assert!(last_reason(&v).contains("private copy"), "{v:#}");
    // The committed rows live only in the -wal: the check saw them on its recovered copy.
    assert_eq!(v["integrity"]["ok"], true, "{v:#}");
}

#[test]
fn check_of_a_live_idle_wal_writer_leaves_its_files_alone() {
    // The writer stays alive (its connection open, idle): nothing about it changes either.
    let c = Case::new();
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import sqlite3, time\nc = sqlite3.connect({:?}, isolation_level=None)\n\
             c.execute('PRAGMA journal_mode=WAL')\nc.execute('CREATE TABLE t(x)')\n\
             c.execute('INSERT INTO t VALUES (1)')\nprint('ready', flush=True)\ntime.sleep(120)\n",
            c.db.to_str().unwrap()
        ))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| c.check_untouched("live idle WAL writer")));
    child.kill().unwrap();
    child.wait().unwrap();
    checked.unwrap();
}

#[test]
fn check_recovers_a_hot_journal_of_a_killed_writer_on_its_copy_instead_of_exiting_75() {
    let c = Case::new();
    python_writer_killed(
        &c.db,
        "c.execute('PRAGMA page_size=4096')\nc.execute('PRAGMA journal_mode=DELETE')\n\
         c.execute('CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT NOT NULL)')\n\
         c.execute(\"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000) \
         INSERT INTO t(v) SELECT hex(randomblob(40)) FROM n\")\n\
         c.execute('PRAGMA cache_size=2')\nc.execute('BEGIN')\nc.execute(\"UPDATE t SET v = v || 'x'\")",
    );
    let journal = sidecar(&c.db, "-journal");
    assert!(std::fs::metadata(&journal).unwrap().len() > 0, "the killed writer left a hot journal");
    let v = c.check_untouched("hot journal of a killed writer");
    assert!(last_reason(&v).contains("private copy"), "{v:#}");
    assert_eq!(v["integrity"]["ok"], true, "the rolled-back state is intact: {v:#}");
}

#[test]
fn check_of_a_plain_database_creates_nothing_beside_it() {
    let c = Case::new();
    let conn = rusqlite::Connection::open(&c.db).unwrap();
    conn.execute_batch("CREATE TABLE t(x CHECK (x > 0)); INSERT INTO t VALUES (1), (2);").unwrap();
    drop(conn);
    assert_eq!(names(c.dbs()), ["x.db"]);
    c.check_untouched("plain database");
}

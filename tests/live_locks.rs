//! warden's library never drops the SQLite locks of the process it runs in.
//!
//! The story: POSIX advisory locks belong to a (process, file) pair, and closing *any*
//! descriptor of the file releases every lock the process holds on it (SQLite's "how to
//! corrupt", 2.2). Several library paths used to open and close the live database with
//! `std::fs::File` to peek at its header (`BackupStore::take`'s WAL check, `open_snapshot`'s
//! live check, `Session::finish`'s change counter) or to copy it byte for byte (the
//! post-session backup of a WAL set). Inside an engine process, each such close silently
//! removed the engine's own locks: another process could then take `BEGIN EXCLUSIVE` in the
//! middle of the engine's transaction, or checkpoint and delete the `-wal` under it. Every
//! read of a database that may be live now goes through SQLite's `unix` VFS, which keeps the
//! descriptor open while the process holds locks on the file.
//!
//! Each test holds an engine lock in this process, calls the library paths in this same
//! process, then asks a second real process (Python's stdlib `sqlite3`) to do what the lock
//! must prevent.

mod common;

use std::path::Path;
use std::process::Command;

use common::{Scratch, local_guard};
use sqlite_warden::copies::backup::{BackupOptions, BackupStore};
use sqlite_warden::copies::snapshot::open_snapshot;
use sqlite_warden::guard::connect::{EngineOptions, JournalChoice, ToolOptions, open_engine};
use sqlite_warden::session::{EngineOutcome, Session, SessionConfig};

/// Runs Python's stdlib sqlite3 (a second process, its own SQLite) on `db`.
fn python(script: &str, db: &Path) -> String {
    let out = Command::new("python3").arg("-c").arg(script).arg(db).output().expect("python3 runs");
    assert!(out.status.success(), "python failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// `BEGIN EXCLUSIVE` with no busy timeout: `BUSY` while another process holds a lock.
const TRY_EXCLUSIVE: &str = r#"
import sqlite3, sys
c = sqlite3.connect(sys.argv[1], timeout=0, isolation_level=None)
try:
    c.execute("BEGIN EXCLUSIVE")
    print("GOT")
    c.execute("ROLLBACK")
except sqlite3.OperationalError as e:
    print("BUSY" if "locked" in str(e) else "ERROR " + str(e))
c.close()
"#;

/// Opens, reads and closes: the last connection to close checkpoints and deletes the -wal,
/// which it may only do when no other process holds a lock on the database file.
const OPEN_READ_CLOSE: &str = r#"
import sqlite3, sys
c = sqlite3.connect(sys.argv[1], timeout=0)
print(c.execute("SELECT count(*) FROM t").fetchone()[0])
c.close()
"#;

fn tool(g: &sqlite_warden::Guard) -> ToolOptions {
    ToolOptions { guard: Some(g.clone()), ..Default::default() }
}

#[test]
fn a_backup_and_open_snapshot_in_the_engine_process_keep_its_write_lock() {
    let s = Scratch::new();
    let g = local_guard(&s);
    let db = s.path("engine.db");
    let engine = open_engine(
        &db,
        &EngineOptions { guard: Some(g.clone()), create: true, journal: JournalChoice::Delete, ..Default::default() },
    )
    .unwrap();
    engine.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t(v) VALUES ('a');").unwrap();
    // RESERVED on the database file, and no journal yet: the write transaction has begun.
    engine.execute_batch("BEGIN IMMEDIATE").unwrap();
    assert_eq!(python(TRY_EXCLUSIVE, &db), "BUSY", "the lock holds before the library runs");

    // Each of these used to open and close the live file with std::fs.
    let header = sqlite_warden::format::header::read_header(&db).unwrap().unwrap();
    assert!(header.valid && !header.wal);
    let report = sqlite_warden::format::scan::scan_set(&db).unwrap();
    assert!(report.is_ok(), "{report:?}");
    let store = BackupStore::new(s.path("backups"), &db);
    let out = store.take(&db, &BackupOptions { guard: Some(g.clone()), ..Default::default() }).unwrap();
    assert!(out.published.is_some(), "{:?}", out.integrity);
    let snap = open_snapshot(&db, &tool(&g));
    assert!(snap.is_err(), "the live database has no snapshot yet");

    assert_eq!(
        python(TRY_EXCLUSIVE, &db),
        "BUSY",
        "another process took BEGIN EXCLUSIVE inside the engine's transaction: the engine's locks were dropped"
    );
    engine.execute_batch("INSERT INTO t(v) VALUES ('b'); COMMIT").unwrap();
    let n: i64 = engine.query_row("SELECT count(*) FROM t", [], |r| r.get(0)).unwrap();
    assert_eq!(n, 2);
}

#[test]
fn session_finish_in_the_engine_process_keeps_the_wal_of_its_open_connection() {
    let s = Scratch::new();
    let g = local_guard(&s);
    let db = s.path("engine.db");
    {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);").unwrap();
    }
    let mut config = SessionConfig::new(&db);
    config.guard = Some(g.clone());
    config.session_dir = Some(s.path("sessions"));
    config.backup_dir = Some(s.path("backups"));
    let session = Session::begin(config).map_err(|f| f.error.to_string()).unwrap();
    let engine = session.open_engine(&EngineOptions { guard: Some(g.clone()), ..Default::default() }).unwrap();
    let mode: String = engine.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
    assert_eq!(mode, "wal");
    for i in 0..50 {
        engine.execute("INSERT INTO t(v) VALUES (?1)", [format!("row {i}")]).unwrap();
    }
    let wal = sqlite_warden::format::names::wal(&db);
    assert!(std::fs::metadata(&wal).unwrap().len() > 0, "the rows are in the -wal");

    // The engine finishes its session while its connection is still open (a post-session
    // backup of a WAL set copies the set byte for byte, then reads the change counter).
    session.finish(EngineOutcome::clean()).unwrap();
    let _ = open_snapshot(&db, &tool(&g));

    // A second process opens and closes the database. Were the engine's SHARED lock gone,
    // its close would count as the last one: checkpoint, then delete the -wal and -shm
    // under the engine's open connection.
    assert_eq!(python(OPEN_READ_CLOSE, &db), "50");
    assert!(wal.exists(), "a second process deleted the engine's -wal: the engine's locks were dropped");
    engine.execute("INSERT INTO t(v) VALUES ('after')", []).unwrap();
    let n: i64 = engine.query_row("SELECT count(*) FROM t", [], |r| r.get(0)).unwrap();
    assert_eq!(n, 51);
    drop(engine);
    let c = rusqlite::Connection::open(&db).unwrap();
    assert_eq!(c.query_row("PRAGMA integrity_check", [], |r| r.get::<_, String>(0)).unwrap(), "ok");
}

//! Holes in the writer lock, closed: who may use a hold, and what a failed open leaves.
//!
//! The story (issue 11, "lock holes"): the `WARDEN_LOCK_FD` handoff of `warden run` could be
//! adopted by any process that inherited the descriptor (a wrapper's grandchild, a helper
//! the engine forked before opening the database); a child forked from the engine (Python
//! multiprocessing with `fork`) joined its parent's hold and wrote; `Session::begin` joined a
//! hold its own process already had and byte-copied a set that may be mid-write; and a
//! failed open rewrote the lock record as a clean release, erasing "the previous engine
//! crashed".

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::proc::{ENGINE, WARDEN, skip_or_fail};
use common::{Scratch, guard_on, local_guard};
use sqlite_warden::guard::connect::{EngineOptions, open_engine};
use sqlite_warden::guard::lock::{LockState, inspect};
use sqlite_warden::guard::policy::NetworkPolicy;
use sqlite_warden::session::{Session, SessionConfig, SessionError};

fn warden(s: &Scratch) -> Command {
    let mut c = Command::new(WARDEN);
    c.current_dir(s.dir.path()).env("WARDEN_AUDIT_DIR", s.audit_dir()).env_remove("WARDEN_CONFIG");
    c
}

#[test]
fn the_lock_handoff_is_for_the_engine_warden_started_not_a_grandchild() {
    let s = Scratch::new();
    let db = s.path("e.db");
    // The engine started directly adopts the lock and writes.
    let ok = warden(&s)
        .args(["run", "-q", "--create", "--db"])
        .arg(&db)
        .args(["--", ENGINE, "--create", "--trades", "3"])
        .env("WARDEN_DB", &db)
        .output()
        .unwrap();
    assert_eq!(ok.status.code(), Some(0), "{}", String::from_utf8_lossy(&ok.stderr));
    // A wrapper that forks: the engine is warden's grandchild, which inherited the
    // descriptor but was not handed the lock.
    let script = format!("{ENGINE} --db {} --trades 3; exit $?", db.display());
    let out = warden(&s).args(["run", "-q", "--db"]).arg(&db).args(["--", "sh", "-c", &script]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("\"busy\"") || stdout.contains("\"refused\""),
        "a grandchild of warden run adopted the session's writer lock: {stdout}"
    );
    assert_eq!(out.status.code(), Some(75), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn session_begin_refuses_to_join_a_hold_of_its_own_process() {
    let s = Scratch::new();
    let g = local_guard(&s);
    let db = s.path("e.db");
    let engine =
        open_engine(&db, &EngineOptions { guard: Some(g.clone()), create: true, ..Default::default() }).unwrap();
    engine.execute_batch("CREATE TABLE t(v); INSERT INTO t VALUES (1);").unwrap();
    let mut c = SessionConfig::new(&db);
    c.guard = Some(g);
    c.backup_dir = Some(s.path("backups"));
    c.session_dir = Some(s.path("sessions"));
    let f = Session::begin(c).map(|_| ()).unwrap_err();
    assert!(
        matches!(f.error, SessionError::WriterLocked(_)),
        "a session joined the hold of an open engine connection: {}",
        f.error
    );
    assert_eq!(f.error.exit_code(), 75);
    assert_eq!(std::fs::read_dir(s.path("backups")).map(|d| d.count()).unwrap_or(0), 0, "nothing was copied");
    // The engine connection keeps its hold.
    engine.execute("INSERT INTO t VALUES (2)", []).unwrap();
}

#[test]
fn a_failed_open_keeps_the_evidence_that_the_previous_engine_crashed() {
    let s = Scratch::new();
    let share = s.path("share");
    std::fs::create_dir(&share).unwrap();
    let db = share.join("e.db");
    // An engine dies holding the lock (WAL mode on local storage: a hot -wal stays).
    let mut holder = Command::new(ENGINE)
        .arg("--db")
        .arg(&db)
        .args(["--create", "--trades", "50", "--hold-ms", "60000"])
        .env("WARDEN_AUDIT_DIR", s.audit_dir())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(holder.stdout.as_mut().unwrap()), &mut line).unwrap();
    holder.kill().unwrap();
    holder.wait().unwrap();
    assert_eq!(inspect(&db).unwrap().state, LockState::FreeAfterCrash);
    // The next open takes the lock, then is refused (the share is now a CIFS mount where WAL
    // cannot work, and a hot -wal is beside the database): no clean close happened.
    let g = guard_on(&s, &share, "cifs", "rw,vers=3.1.1", NetworkPolicy::RollbackOnly);
    let e = open_engine(&db, &EngineOptions { guard: Some(g), ..Default::default() }).map(|_| ()).unwrap_err();
    assert!(e.to_string().contains("WAL") || e.to_string().contains("-wal"), "{e}");
    assert_eq!(
        inspect(&db).unwrap().state,
        LockState::FreeAfterCrash,
        "a failed open recorded a clean release and erased the crash"
    );
}

fn ext() -> Option<PathBuf> {
    let p = std::env::var_os("WARDEN_EXT_LIB")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("ext/target/release/libwarden.so"));
    p.exists().then(|| p.with_extension(""))
}

#[test]
fn a_forked_child_of_the_engine_is_not_a_writer() {
    let Some(ext) = ext() else {
        skip_or_fail("a_forked_child_of_the_engine_is_not_a_writer", "libwarden.so is not built");
        return;
    };
    if !Command::new("python3").args(["-c", "import apsw"]).status().is_ok_and(|s| s.success()) {
        skip_or_fail("a_forked_child_of_the_engine_is_not_a_writer", "python3 has no apsw");
        return;
    }
    let s = Scratch::new();
    let db = s.path("e.db");
    // Python multiprocessing with `fork`: the child has a copy of the parent's memory,
    // descriptors and connection objects.
    let code = format!(
        r#"
import apsw, os, sys
boot = apsw.Connection(':memory:')
boot.enable_load_extension(True)
boot.load_extension({ext:?})
db = {db:?}
e = apsw.Connection(db, vfs='warden')
e.execute('CREATE TABLE IF NOT EXISTS t(v)')
pid = os.fork()
if pid == 0:
    refused = 0
    try:
        apsw.Connection(db, vfs='warden').execute('INSERT INTO t VALUES (1)')
    except Exception as ex:
        refused += 1
    try:
        e.execute('INSERT INTO t VALUES (2)')
    except Exception as ex:
        refused += 1
    os._exit(10 + refused)
_, st = os.waitpid(pid, 0)
e.execute('INSERT INTO t VALUES (3)')
print(os.WEXITSTATUS(st), e.execute('SELECT count(*) FROM t').fetchall()[0][0])
"#,
        ext = ext.to_str().unwrap(),
        db = db.to_str().unwrap()
    );
    let out = Command::new("python3").arg("-c").arg(code).env("WARDEN_AUDIT_DIR", s.audit_dir()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        stdout.trim(),
        "12 1",
        "the forked child wrote as if it were the writer (child exit 10 + refusals, rows)"
    );
}

//! What the guard allows and refuses, through real SQLite files, on simulated mounts.
//!
//! The kernel here has no NFS/SMB/9p, so network storage is simulated through the probe
//! seam (a mount table that says "this directory is cifs"); the files and SQLite are real.
//! The real network filesystem (sshfs) is in `netfs_sshfs.rs`.

mod common;

use common::*;
use rusqlite::{Connection, OpenFlags};
use sqlite_warden::guard::connect::{EngineOptions, JournalChoice, ToolOptions, open_engine, open_tool};
use sqlite_warden::guard::error::OpenError;
use sqlite_warden::guard::policy::NetworkPolicy;

fn engine_opts(g: &sqlite_warden::Guard) -> EngineOptions {
    EngineOptions { guard: Some(g.clone()), create: true, ..Default::default() }
}

fn journal_mode(c: &Connection, schema: &str) -> String {
    c.query_row(&format!("PRAGMA {schema}.journal_mode"), [], |r| r.get(0)).unwrap()
}

#[test]
fn local_engine_gets_wal_and_readers_are_not_blocked() {
    let s = Scratch::new();
    let g = local_guard(&s);
    let db = s.path("engine.db");
    let engine = open_engine(&db, &engine_opts(&g)).unwrap();
    assert_eq!(journal_mode(&engine, "main"), "wal");
    engine.execute_batch("CREATE TABLE t(x); BEGIN; INSERT INTO t VALUES (1);").unwrap();
    // A reader opens and reads while the engine holds an open write transaction.
    let tool = open_tool(&db, &ToolOptions { guard: Some(g.clone()), ..Default::default() }).unwrap();
    let n: i64 = tool.query_row("SELECT count(*) FROM t", [], |r| r.get(0)).unwrap();
    assert_eq!(n, 0, "the uncommitted row is invisible, and the read did not block");
    engine.execute_batch("COMMIT").unwrap();
    let n: i64 = tool.query_row("SELECT count(*) FROM t", [], |r| r.get(0)).unwrap();
    assert_eq!(n, 1);
    let sync: i64 = engine.query_row("PRAGMA synchronous", [], |r| r.get(0)).unwrap();
    assert_eq!(sync, 2, "FULL by default");
    let fk: i64 = engine.query_row("PRAGMA foreign_keys", [], |r| r.get(0)).unwrap();
    assert_eq!(fk, 1);
}

const NETWORK: &[(&str, &str)] = &[
    ("cifs", "rw,vers=3.1.1,cache=strict"),
    ("smb3", "rw,vers=3.0"),
    ("nfs4", "rw,vers=4.2,local_lock=none"),
    ("nfs", "rw,vers=3"),
    ("9p", "rw,trans=virtio"),
    ("fuse.sshfs", "rw,user_id=0"),
];

#[test]
fn engine_refused_on_every_network_type_by_default() {
    for (fstype, opts) in NETWORK {
        let s = Scratch::new();
        let g = guard_on(&s, s.dir.path(), fstype, opts, NetworkPolicy::Refuse);
        let db = s.path("engine.db");
        let err = open_engine(&db, &engine_opts(&g)).unwrap_err();
        match &err {
            OpenError::NetworkFilesystem { path, verdict } => {
                assert_eq!(path, &db);
                assert_eq!(verdict.fstype, *fstype);
            }
            other => panic!("{fstype}: expected NetworkFilesystem, got {other}"),
        }
        let msg = err.to_string();
        assert!(msg.contains(&db.display().to_string()) && msg.contains(fstype) && msg.contains("hint:"), "{msg}");
        assert!(!db.exists(), "{fstype}: a refused open creates nothing");
        assert_eq!(s.events(), vec!["open_refused"], "{fstype}");
        // Tooling may still read a (rollback-mode) database there.
        make_db(&db, "delete");
        let tool = open_tool(&db, &ToolOptions { guard: Some(g.clone()), ..Default::default() }).unwrap();
        let n: i64 = tool.query_row("SELECT count(*) FROM t", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 2);
    }
}

#[test]
fn rollback_only_policy_allows_delete_mode_and_refuses_wal_with_the_exact_message() {
    for (fstype, opts) in NETWORK {
        let s = Scratch::new();
        let g = guard_on(&s, s.dir.path(), fstype, opts, NetworkPolicy::RollbackOnly);
        let db = s.path("engine.db");
        let engine = open_engine(&db, &engine_opts(&g)).unwrap();
        assert_eq!(journal_mode(&engine, "main"), "delete", "{fstype}: per-verdict keeps rollback mode");
        engine.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);").unwrap();
        let err = engine.query_row("PRAGMA journal_mode=WAL", [], |r| r.get::<_, String>(0)).unwrap_err();
        let expected = format!(
            "warden: journal_mode=WAL refused: `{}` is on {fstype} (//nas/trading, mounted at {}), network storage where WAL cannot work",
            db.display(),
            s.dir.path().display()
        );
        let msg = err.to_string();
        assert!(msg.starts_with(&expected), "{fstype}:\n got: {msg}\nwant: {expected}…");
        assert_eq!(journal_mode(&engine, "main"), "delete");
        // Asking the factory for WAL there is a typed error.
        drop(engine);
        let e = open_engine(&db, &EngineOptions { journal: JournalChoice::Wal, ..engine_opts(&g) }).unwrap_err();
        assert!(matches!(e, OpenError::WalRefused { .. }), "{fstype}: {e}");
        assert!(!s.path("engine.db-wal").exists());
        assert!(s.events().contains(&"wal_refused".to_owned()));
    }
}

#[test]
fn lock_disabling_mounts_are_refused_under_every_policy() {
    for (fstype, opts) in [("cifs", "rw,nobrl"), ("nfs", "rw,vers=3,nolock"), ("nfs4", "rw,local_lock=all")] {
        for policy in [NetworkPolicy::Refuse, NetworkPolicy::RollbackOnly] {
            let s = Scratch::new();
            let g = guard_on(&s, s.dir.path(), fstype, opts, policy);
            let err = open_engine(s.path("e.db"), &engine_opts(&g)).unwrap_err();
            assert!(matches!(err, OpenError::NoLocking { .. }), "{fstype} {opts} {policy:?}: {err}");
        }
    }
}

#[test]
fn wal_header_and_hot_wal_are_refused_at_open_and_left_untouched() {
    let s = Scratch::new();
    let g = guard_on(&s, s.dir.path(), "cifs", "rw", NetworkPolicy::RollbackOnly);
    // A database already in WAL mode (written by plain SQLite, as on the old SMB box).
    let wal_db = s.path("walmode.db");
    make_db(&wal_db, "wal");
    let before = std::fs::read(&wal_db).unwrap();
    let e = open_engine(&wal_db, &engine_opts(&g)).unwrap_err();
    assert!(matches!(&e, OpenError::WalRefused { message, .. } if message.contains("WAL-mode database")), "{e}");
    assert_eq!(std::fs::read(&wal_db).unwrap(), before);
    // Readers are refused too: reading a WAL database needs shared memory.
    let e = open_tool(&wal_db, &ToolOptions { guard: Some(g.clone()), ..Default::default() }).unwrap_err();
    assert!(matches!(e, OpenError::WalRefused { .. }), "{e}");

    // A rollback-mode database with a hot -wal beside it.
    let db = s.path("hot.db");
    make_db(&db, "delete");
    let wal = s.path("hot.db-wal");
    std::fs::write(&wal, b"not empty: holds committed frames in real life").unwrap();
    let wal_before = std::fs::read(&wal).unwrap();
    let e = open_engine(&db, &engine_opts(&g)).unwrap_err();
    assert!(matches!(&e, OpenError::WalRefused { message, .. } if message.contains("hot -wal")), "{e}");
    assert_eq!(std::fs::read(&wal).unwrap(), wal_before, "never deleted or changed");
    let lines = s.audit_lines();
    let last = lines.last().unwrap();
    assert_eq!(last["event"], "wal_refused");
    assert_eq!(last["fs"]["fstype"], "cifs");
    assert_eq!(last["rc"], 14, "SQLITE_CANTOPEN");
}

#[test]
fn attached_network_database_stays_in_rollback_mode() {
    let s = Scratch::new();
    let share = s.path("share");
    std::fs::create_dir(&share).unwrap();
    let g = guard_on(&s, &share, "nfs4", "rw,vers=4.2", NetworkPolicy::RollbackOnly);
    let engine = open_engine(s.path("local.db"), &engine_opts(&g)).unwrap();
    let aux = share.join("aux.db");
    make_db(&aux, "delete");
    engine.execute("ATTACH ?1 AS aux", [aux.to_str().unwrap()]).unwrap();
    // Unprefixed: SQLite sends the file control to `main` only; layer 2 (no xShmMap) keeps
    // the attached network database out of WAL.
    let mode: String = engine.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0)).unwrap();
    assert_eq!(mode, "wal", "main is local");
    assert_eq!(journal_mode(&engine, "aux"), "delete");
    // Exclusive locking mode lets SQLite use WAL without shared memory: layer 3 refuses
    // the -wal open itself, so the switch fails and nothing is written in WAL format.
    engine.execute_batch("PRAGMA aux.locking_mode=EXCLUSIVE").unwrap();
    // Unprefixed, the pragma reports main's mode; aux's switch fails when its -wal is
    // opened.
    let r = engine.query_row("PRAGMA journal_mode=WAL", [], |r| r.get::<_, String>(0));
    // (SQLite reports main's result for the unprefixed pragma whatever happened to aux.)
    let _ = r;
    assert!(!share.join("aux.db-wal").exists());
    let header = std::fs::read(&aux).unwrap();
    assert_eq!((header[18], header[19]), (1, 1), "aux's header still says rollback journal");
    assert!(s.events().contains(&"wal_refused".to_owned()), "layer 5 refused the header write");
    engine.execute("INSERT INTO aux.t(v) VALUES ('c')", []).unwrap();
    assert!(!share.join("aux.db-wal").exists());
    engine.execute("DETACH aux", []).unwrap();
    let n: i64 = Connection::open(&aux).unwrap().query_row("SELECT count(*) FROM t", [], |r| r.get(0)).unwrap();
    assert_eq!(n, 3, "aux is intact and was written in rollback mode");
    engine.execute("ATTACH ?1 AS aux", [aux.to_str().unwrap()]).unwrap();
    // Prefixed: layer 1 answers with the message.
    let e = engine.query_row("PRAGMA aux.journal_mode=WAL", [], |r| r.get::<_, String>(0)).unwrap_err();
    assert!(e.to_string().contains("journal_mode=WAL refused"), "{e}");
}

#[test]
fn uri_bypasses_fail() {
    let s = Scratch::new();
    let g = local_guard(&s);
    let db = s.path("u.db");
    make_db(&db, "delete");
    for param in ["nolock=1", "immutable=1"] {
        for vfs in [g.engine_vfs(), g.tool_vfs()] {
            let uri = format!("file:{}?vfs={vfs}&{param}", db.display());
            let r = Connection::open_with_flags(&uri, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI);
            assert!(r.is_err(), "{uri} must be refused");
            let refusal = sqlite_warden::guard::vfs::take_last_refusal().expect("refusal recorded");
            assert!(refusal.message.contains(param), "{}", refusal.message);
        }
    }
    // The factory does not take URIs at all, so `?vfs=unix` cannot reach SQLite.
    let e = open_tool(
        format!("file:{}?vfs=unix", db.display()),
        &ToolOptions { guard: Some(g.clone()), ..Default::default() },
    )
    .unwrap_err();
    assert!(matches!(e, OpenError::NotAFilePath { .. }), "{e}");
}

#[test]
fn tooling_cannot_write_attach_or_vacuum_into() {
    let s = Scratch::new();
    let g = local_guard(&s);
    let db = s.path("t.db");
    make_db(&db, "wal");
    let before = std::fs::read(&db).unwrap();
    let tool = open_tool(&db, &ToolOptions { guard: Some(g.clone()), ..Default::default() }).unwrap();
    assert!(tool.execute("INSERT INTO t(v) VALUES ('x')", []).is_err());
    assert!(tool.execute_batch("CREATE TABLE z(a)").is_err());
    let other = s.path("other.db");
    assert!(tool.execute("ATTACH ?1 AS o", [other.to_str().unwrap()]).is_err());
    assert!(tool.execute("VACUUM INTO ?1", [s.path("copy.db").to_str().unwrap()]).is_err());
    assert!(tool.execute("VACUUM INTO ?1", [db.to_str().unwrap()]).is_err());
    assert!(tool.execute_batch("PRAGMA query_only=OFF; INSERT INTO t(v) VALUES ('y')").is_err());
    drop(tool);
    assert_eq!(std::fs::read(&db).unwrap(), before);

    // Even a raw connection on the tooling VFS that asks for READWRITE is downgraded.
    let raw = Connection::open_with_flags_and_vfs(&db, OpenFlags::SQLITE_OPEN_READ_WRITE, g.tool_vfs()).unwrap();
    let e = raw.execute("INSERT INTO t(v) VALUES ('x')", []).unwrap_err();
    assert_eq!(e.sqlite_error_code(), Some(rusqlite::ErrorCode::ReadOnly), "{e}");
    // ... and VACUUM INTO the guarded file is refused, while a brand-new target works.
    assert!(raw.execute("VACUUM INTO ?1", [db.to_str().unwrap()]).is_err());
    raw.execute("VACUUM INTO ?1", [s.path("fresh.db").to_str().unwrap()]).unwrap();
    drop(raw);
    assert_eq!(std::fs::read(&db).unwrap(), before);
    assert!(s.events().contains(&"open_downgraded".to_owned()));
}

#[test]
fn audit_lines_are_complete_json() {
    let s = Scratch::new();
    let g = local_guard(&s);
    let db = s.path("a.db");
    let engine = open_engine(&db, &engine_opts(&g)).unwrap();
    engine.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);").unwrap();
    drop(engine);
    let lines = s.audit_lines();
    let events: Vec<_> = lines.iter().map(|l| l["event"].as_str().unwrap()).collect();
    assert_eq!(events, vec!["open", "writer_lock_acquired", "close", "writer_lock_released"]);
    let open = &lines[0];
    for field in [
        "schema",
        "ts",
        "seq",
        "pid",
        "ppid",
        "uid",
        "host",
        "role",
        "vfs",
        "db",
        "file_kind",
        "flags_requested",
        "flags_actual",
        "fs",
        "decision",
        "reason",
        "rc",
        "sqlite_version",
        "guard_version",
    ] {
        assert!(!open[field].is_null(), "open record lacks `{field}`: {open}");
    }
    assert_eq!(open["role"], "engine");
    assert_eq!(open["fs"]["kind"], "local");
    assert_eq!(open["db"], db.to_str().unwrap());
    let close = &lines[2];
    assert!(close["stats"]["writes"].as_u64().unwrap() > 0);
    assert!(close["current"]["size"].as_u64().unwrap() > 0, "close records the database state");
}

#[test]
fn a_write_behind_the_engines_back_is_detected() {
    let s = Scratch::new();
    let g = local_guard(&s);
    let db = s.path("d.db");
    let e = open_engine(&db, &EngineOptions { journal: JournalChoice::Delete, ..engine_opts(&g) }).unwrap();
    e.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);").unwrap();
    drop(e);
    // Reopening without outside changes is quiet.
    drop(open_engine(&db, &EngineOptions { journal: JournalChoice::Delete, ..engine_opts(&g) }).unwrap());
    assert!(!s.events().contains(&"changed_outside_warden".to_owned()));
    // Plain SQLite (no guard) writes the file.
    Connection::open(&db).unwrap().execute("INSERT INTO t VALUES (2)", []).unwrap();
    drop(open_engine(&db, &EngineOptions { journal: JournalChoice::Delete, ..engine_opts(&g) }).unwrap());
    let lines = s.audit_lines();
    let drift = lines.iter().find(|l| l["event"] == "changed_outside_warden").expect("drift recorded");
    assert_ne!(drift["previous"]["change_counter"], drift["current"]["change_counter"]);
}

#[test]
fn fail_closed_audit_refuses_the_engine() {
    let s = Scratch::new();
    // The audit "directory" is a file: nothing can be appended below it.
    let blocker = s.path("not-a-dir");
    std::fs::write(&blocker, b"x").unwrap();
    let config = sqlite_warden::GuardConfig {
        probe: std::sync::Arc::new(sqlite_warden::storage::SimulatedProbe::local_root()),
        audit_dir: blocker.join("audit"),
        ..Default::default()
    };
    let g = sqlite_warden::guard::vfs::register(&format!("t-failclosed-{}", std::process::id()), config).unwrap();
    let db = s.path("f.db");
    make_db(&db, "delete");
    let e = open_engine(&db, &engine_opts(&g)).unwrap_err();
    assert!(matches!(e, OpenError::AuditUnavailable { .. }), "{e}");
    // Tooling fails open by default: reading continues without an audit line.
    assert!(open_tool(&db, &ToolOptions { guard: Some(g), ..Default::default() }).is_ok());
    assert_eq!(sqlite_warden::guard::lock::inspect(&db).unwrap().state, sqlite_warden::guard::lock::LockState::Free);
}

#[test]
fn symlinked_database_path_opens() {
    let s = Scratch::new();
    let g = local_guard(&s);
    let real = s.path("real.db");
    make_db(&real, "delete");
    let link = s.path("link.db");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let tool = open_tool(&link, &ToolOptions { guard: Some(g), ..Default::default() }).unwrap();
    let n: i64 = tool.query_row("SELECT count(*) FROM t", [], |r| r.get(0)).unwrap();
    assert_eq!(n, 2);
}

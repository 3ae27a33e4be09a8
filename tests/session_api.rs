//! The session lifecycle as a library API (for Rust engines), against simulated mounts and
//! real files: refusals before anything starts, the engine connection joining the session's
//! lock, the artifact at every stage, retention's protections.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::{Scratch, guard_on, local_guard};
use sqlite_warden::copies::retention::RetentionPolicy;
use sqlite_warden::guard::connect::EngineOptions;
use sqlite_warden::guard::lock::{LockState, inspect, lock_path_for};
use sqlite_warden::guard::policy::NetworkPolicy;
use sqlite_warden::guard::vfs::{self, GuardConfig};
use sqlite_warden::session::health::{HealthArtifact, SessionStatus, Step};
use sqlite_warden::session::{BackupKind, EngineOutcome, Session, SessionConfig, SessionError};
use sqlite_warden::storage::SimulatedProbe;

fn make_db(path: &Path, rows: i64) {
    let c = rusqlite::Connection::open(path).unwrap();
    c.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v TEXT NOT NULL);")
        .unwrap();
    for i in 0..rows {
        c.execute("INSERT INTO t(v) VALUES (?1)", [format!("row {i}")]).unwrap();
    }
}

fn config(s: &Scratch, db: &Path, guard: sqlite_warden::Guard) -> SessionConfig {
    let mut c = SessionConfig::new(db);
    c.guard = Some(guard);
    c.session_dir = Some(s.path("sessions"));
    c.backup_dir = Some(s.path("backups"));
    c
}

#[test]
fn network_and_lockless_storage_are_refused_before_anything_starts() {
    for (fstype, opts, what) in [
        ("cifs", "rw,vers=3.1.1", "network"),
        ("nfs4", "rw,vers=4.2", "network"),
        ("fuse.sshfs", "rw", "network"),
        ("ext4", "rw,nolock", "locking"),
    ] {
        let s = Scratch::new();
        let share = s.path("share");
        std::fs::create_dir_all(&share).unwrap();
        let db = share.join("engine.db");
        make_db(&db, 3);
        let before = std::fs::read(&db).unwrap();
        let g = guard_on(&s, &share, fstype, opts, NetworkPolicy::Refuse);
        let f = Session::begin(config(&s, &db, g)).unwrap_err();
        assert_eq!(f.step, Step::Storage, "{fstype}");
        assert!(matches!(f.error, SessionError::StorageRefused { .. }), "{fstype}: {}", f.error);
        assert_eq!(f.error.exit_code(), 69);
        let msg = f.error.to_string();
        assert!(msg.contains(fstype) && msg.contains("hint"), "{fstype}: {msg}");
        let _ = what;
        // Nothing started: no lock file, no backup, the database untouched; the artifact
        // records the refusal.
        assert!(!lock_path_for(&db).exists(), "{fstype}: lock taken before the storage check");
        assert_eq!(std::fs::read_dir(s.path("backups")).map(|d| d.count()).unwrap_or(0), 0);
        assert_eq!(std::fs::read(&db).unwrap(), before);
        let a = HealthArtifact::read(f.artifact_path.as_ref().unwrap()).unwrap();
        assert_eq!(a.status, SessionStatus::Refused);
        assert_eq!(a.failed_step, Some(Step::Storage));
        assert_eq!(a.exit_code, Some(69));
        assert_eq!(a.storage.as_ref().unwrap().fstype, fstype);
    }
}

#[test]
fn backups_on_a_network_share_are_refused() {
    let s = Scratch::new();
    let db = s.path("engine.db");
    make_db(&db, 3);
    let nas = s.path("nas");
    std::fs::create_dir_all(&nas).unwrap();
    let g = guard_on(&s, &nas, "cifs", "rw", NetworkPolicy::Refuse);
    let mut c = config(&s, &db, g);
    c.backup_dir = Some(nas.join("backups"));
    let f = Session::begin(c).unwrap_err();
    assert_eq!(f.step, Step::Storage);
    assert!(f.error.to_string().contains("backup directory"), "{}", f.error);
}

#[test]
fn a_rust_engine_runs_a_whole_session_in_process() {
    let s = Scratch::new();
    let db = s.path("engine.db");
    make_db(&db, 10);
    let g = local_guard(&s);
    let session = Session::begin(config(&s, &db, g)).map_err(|f| f.error).unwrap();
    // Running: the lock is held, the artifact says so, the pre-session backup is verified.
    assert_eq!(inspect(&db).unwrap().state, LockState::Held);
    let running = HealthArtifact::read(session.artifact_path()).unwrap();
    assert_eq!(running.status, SessionStatus::Running);
    let pre = running.pre_backup.clone().expect("pre-session backup");
    assert!(pre.verified && pre.kind == BackupKind::Pre);
    assert!(running.gate.as_ref().unwrap().passed);

    // The engine connection joins the session's lock; another process could not.
    let conn = session.open_engine(&EngineOptions::default()).unwrap();
    conn.execute("INSERT INTO t(v) VALUES ('during the session')", []).unwrap();
    drop(conn);
    let a = session.finish(EngineOutcome::clean()).unwrap();
    assert_eq!(a.status, SessionStatus::Completed, "{a:?}");
    let post = a.post_backup.as_ref().unwrap();
    assert!(post.ok && post.backup.as_ref().unwrap().kind == BackupKind::Post);
    // The backup is in the page store: materialize it (checked against its SHA-256).
    let store = sqlite_warden::copies::backup::BackupStore::new(s.path("backups"), &db);
    let id = &post.backup.as_ref().unwrap().id;
    let rec = store.list().unwrap().into_iter().find(|r| &r.manifest.id == id).expect("listed");
    assert!(rec.manifest.is_paged(), "new backups go to the page store: {:?}", rec.manifest);
    let copy = s.path("post-copy.db");
    let (sha, _) = store.materialize(&rec, &copy).unwrap();
    assert_eq!(sha, rec.manifest.sha256);
    let n: i64 =
        rusqlite::Connection::open(&copy).unwrap().query_row("SELECT count(*) FROM t", [], |r| r.get(0)).unwrap();
    assert_eq!(n, 11, "the post-session backup holds the session's writes");
    assert_eq!(inspect(&db).unwrap().state, LockState::Free);
    assert_eq!(a.exit_code, Some(0));
    assert!(a.finished_at.is_some() && a.durations.total_ms >= a.durations.gate_ms);
    // The final artifact on disk is the returned one.
    let on_disk = HealthArtifact::read(&s.path("sessions").join(format!("{}.json", a.session_id))).unwrap();
    assert_eq!(on_disk.status, SessionStatus::Completed);
    // Stable, documented top-level fields.
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(s.path("sessions").join(format!("{}.json", a.session_id))).unwrap())
            .unwrap();
    for key in [
        "schema",
        "session_id",
        "status",
        "started_at",
        "finished_at",
        "database",
        "storage",
        "gate",
        "pre_backup",
        "engine",
        "post_backup",
        "retention",
        "durations",
        "exit_code",
        "versions",
        "runner",
    ] {
        assert!(v.get(key).is_some(), "artifact lacks `{key}`");
    }
}

#[test]
fn an_unclean_end_leaves_a_crash_copy_that_is_never_good() {
    let s = Scratch::new();
    let db = s.path("engine.db");
    make_db(&db, 5);
    let session = Session::begin(config(&s, &db, local_guard(&s))).map_err(|f| f.error).unwrap();
    let a = session.finish(EngineOutcome { exit_code: Some(2), signal: None, not_started: false }).unwrap();
    assert_eq!(a.status, SessionStatus::EngineFailed);
    assert_eq!(a.exit_code, Some(2));
    let post = a.post_backup.unwrap();
    assert!(!post.ok);
    assert_eq!(post.kind, Some(BackupKind::PostCrash));
    let store = sqlite_warden::copies::backup::BackupStore::new(s.path("backups"), &db);
    let newest_good = store.newest_good().unwrap().unwrap();
    assert_eq!(newest_good.manifest.kind, BackupKind::Pre, "a post-crash copy is never the last good backup");
}

#[test]
fn the_lock_record_names_the_running_session() {
    let s = Scratch::new();
    let db = s.path("engine.db");
    make_db(&db, 1);
    let session = Session::begin(config(&s, &db, local_guard(&s))).map_err(|f| f.error).unwrap();
    let st = inspect(&db).unwrap();
    assert_eq!(st.record.unwrap().session.as_deref(), Some(session.id()));
    session.finish(EngineOutcome::clean()).unwrap();
}

#[test]
fn retention_never_drops_what_the_latest_successful_session_refers_to() {
    let s = Scratch::new();
    let db = s.path("engine.db");
    make_db(&db, 2);
    let mut last = None;
    for _ in 0..4 {
        let mut c = config(&s, &db, local_guard(&s));
        c.retention =
            RetentionPolicy { keep_last: 1, keep_daily: 0, keep_weekly: 0, keep_monthly: 0, ..Default::default() };
        let session = Session::begin(c).map_err(|f| f.error).unwrap();
        let conn = session.open_engine(&EngineOptions::default()).unwrap();
        conn.execute("INSERT INTO t(v) VALUES ('x')", []).unwrap();
        drop(conn);
        last = Some(session.finish(EngineOutcome::clean()).unwrap());
    }
    let last = last.unwrap();
    let store = sqlite_warden::copies::backup::BackupStore::new(s.path("backups"), &db);
    let ids: Vec<String> = store.list().unwrap().into_iter().map(|r| r.manifest.id).collect();
    let pre = last.pre_backup.unwrap().id;
    let post = last.post_backup.unwrap().backup.unwrap().id;
    assert!(ids.contains(&pre) && ids.contains(&post), "{ids:?}");
    assert_eq!(ids.len(), 2, "keep_last 1 plus the latest session's pair: {ids:?}");
    assert!(last.retention.unwrap().removed.len() >= 2);
}

#[test]
fn a_killed_runner_is_marked_abandoned_by_the_next_session() {
    let s = Scratch::new();
    let db = s.path("engine.db");
    make_db(&db, 2);
    let session = Session::begin(config(&s, &db, local_guard(&s))).map_err(|f| f.error).unwrap();
    let first = session.artifact_path().to_owned();
    drop(session); // as if warden died: no finish, the lock goes with the process
    let next = Session::begin(config(&s, &db, local_guard(&s))).map_err(|f| f.error).unwrap();
    assert_eq!(HealthArtifact::read(&first).unwrap().status, SessionStatus::Abandoned);
    next.finish(EngineOutcome::clean()).unwrap();
}

#[test]
fn sqlite_floor_and_unregistrable_guards_are_reported() {
    // The floor itself is met by the bundled SQLite (a build with an older one fails here).
    assert!(vfs::sqlite_version_number() >= vfs::SQLITE_FLOOR);
    let s = Scratch::new();
    let probe = SimulatedProbe::local_root();
    let g = vfs::register(
        &format!("t-floor-{}", std::process::id()),
        GuardConfig { probe: Arc::new(probe), audit_dir: s.audit_dir(), ..Default::default() },
    )
    .unwrap();
    let f = Session::begin(config(&s, &s.path("missing.db"), g)).unwrap_err();
    // Judged before anything is created or locked for it (issue 11, defect 9).
    assert_eq!(f.step, Step::Database);
    assert!(f.artifact_path.is_none(), "nothing is written for a missing database");
    assert!(!s.path("missing.db.warden").exists());
    assert_eq!(f.error.exit_code(), 66);
    assert!(f.error.to_string().contains("does not exist"), "{}", f.error);
}

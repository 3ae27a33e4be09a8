//! The integrity gate against the damage corpus (reliability-notes §6): every damaged set is
//! refused with a machine-readable reason, every intact control passes and yields a verified
//! pre-session backup equal to the committed state, the originals never change by one byte,
//! and the same files give the same verdict twice.

#[path = "common/corpus.rs"]
mod corpus;

use std::path::{Path, PathBuf};

use corpus::{build_corpus, hashes, sidecar};
use sqlite_warden::copies::backup::{BackupOptions, BackupStore, CheckMode};
use sqlite_warden::guard::lock::{WriterLock, WriterScope};
use sqlite_warden::session::BackupKind;
use sqlite_warden::session::gate::{self, GateFailure, GateOptions, GateReport};

fn gate_once(db: &Path, store_dir: &Path, check: CheckMode) -> (GateReport, Option<PathBuf>) {
    // The gate's contract: the caller holds the writer lock and no engine runs.
    let lock = WriterLock::acquire(db, WriterScope::Process).expect("writer lock");
    // Full files: the corpus opens and hashes the published copy itself.
    let store = BackupStore::new(store_dir, db).with_format(sqlite_warden::copies::backup::StoreFormat::Files);
    let opts = BackupOptions {
        kind: Some(BackupKind::Pre),
        check,
        writer_lock_held: true,
        guard: Some(sqlite_warden::guard::vfs::default_guard().unwrap()),
        ..Default::default()
    };
    let (report, published) = gate::run(db, &store, &GateOptions::default(), &opts).expect("the gate runs");
    drop(lock.lock);
    (report, published.map(|p| p.path))
}

fn remove_lock_file(db: &Path) {
    // Not part of the original set; the gate's caller created it.
    let _ = std::fs::remove_file(sqlite_warden::guard::lock::lock_path_for(db));
}

#[test]
fn damaged_sets_are_refused_and_controls_pass_with_originals_untouched() {
    let root = tempfile::tempdir().unwrap();
    // SAFETY of the test: audit records of the gate's reads go to this test's directory.
    let audit = root.path().join("audit");
    let _ = sqlite_warden::guard::vfs::register(
        sqlite_warden::guard::vfs::DEFAULT_NAME,
        sqlite_warden::guard::vfs::GuardConfig { audit_dir: audit, ..Default::default() },
    );
    let cases = build_corpus(&root.path().join("corpus"));
    assert!(cases.iter().filter(|c| c.damaged).count() >= 15, "corpus too small");
    assert!(cases.iter().filter(|c| !c.damaged).count() >= 5, "too few controls");
    let mut table = Vec::new();
    let mut wrong = Vec::new();
    for case in &cases {
        let before = hashes(&case.db);
        let store = root.path().join("backups").join(case.name);
        let (first, published) = gate_once(&case.db, &store, CheckMode::Full);
        remove_lock_file(&case.db);
        let after = hashes(&case.db);
        assert_eq!(before, after, "{}: the gate changed an original file", case.name);

        // Repeatable: same verdict, same reason, files still unchanged.
        let (second, _) = gate_once(&case.db, &root.path().join("backups2").join(case.name), CheckMode::Full);
        remove_lock_file(&case.db);
        assert_eq!(first.passed, second.passed, "{}: verdict changed on a rerun", case.name);
        assert_eq!(first.failure, second.failure, "{}", case.name);
        assert_eq!(hashes(&case.db), before, "{}: changed on the rerun", case.name);

        let reason = first.reasons.first().cloned().unwrap_or_default();
        table.push(format!("{:<36} {:<8} {:?} {}", case.name, first.passed, first.failure, reason));
        if case.damaged {
            if first.passed {
                wrong.push(format!("{}: damaged set PASSED the gate ({})", case.name, case.expect));
                continue;
            }
            let failure = first.failure.expect("a failed gate names its failure");
            if case.name == "empty_file" {
                assert_eq!(failure, GateFailure::Empty, "{}", case.name);
            }
            assert!(published.is_none(), "{}: a failed gate published a backup", case.name);
            let listed = BackupStore::new(&store, &case.db).list().unwrap();
            assert!(listed.is_empty(), "{}: something was listed after a refusal", case.name);
            // Machine-readable: the report serialises with the failure kind.
            let json = serde_json::to_value(&first).unwrap();
            assert_eq!(json["passed"], false);
            assert!(json["failure"].is_string(), "{}: {json}", case.name);
        } else {
            if !first.passed {
                wrong.push(format!("{}: intact control REFUSED: {reason}", case.name));
                continue;
            }
            let path = published.unwrap_or_else(|| panic!("{}: no pre-session backup", case.name));
            let conn = rusqlite::Connection::open(&path).unwrap();
            let ok: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
            assert_eq!(ok, "ok", "{}", case.name);
            let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
            assert_eq!(mode, "delete", "{}: a backup must be one self-contained file", case.name);
            drop(conn);
            assert!(!sidecar(&path, "-wal").exists(), "{}: -wal beside a backup", case.name);
            let rec = &BackupStore::new(&store, &case.db).list().unwrap()[0];
            assert!(rec.manifest.is_good());
            assert!(BackupStore::new(&store, &case.db).verify_hash(rec).unwrap());
        }
    }
    println!("{}", table.join("\n"));
    assert!(wrong.is_empty(), "gate verdicts wrong:\n{}\n\nall:\n{}", wrong.join("\n"), table.join("\n"));
}

#[test]
fn hot_journal_control_is_checked_as_the_committed_state() {
    // The pre-session backup of a set with a hot journal is the rolled-back state: the same
    // rows as the database before the interrupted transaction.
    let root = tempfile::tempdir().unwrap();
    let cases = build_corpus(&root.path().join("corpus"));
    let hot = cases.iter().find(|c| c.name == "hot_journal").expect("corpus has a hot journal control");
    assert!(sidecar(&hot.db, "-journal").exists());
    let (report, published) = gate_once(&hot.db, &root.path().join("b"), CheckMode::Quick);
    remove_lock_file(&hot.db);
    assert!(report.passed, "{}", report.summary());
    let plain = cases.iter().find(|c| c.name == "plain").unwrap();
    let count = |p: &Path| -> i64 {
        rusqlite::Connection::open(p)
            .unwrap()
            .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(count(&published.unwrap()), count(&plain.db));
}

#[test]
fn missing_and_empty_databases_pass_only_when_creation_is_asked() {
    let d = tempfile::tempdir().unwrap();
    let store = BackupStore::new(d.path().join("b"), &d.path().join("x.db"));
    let opts = BackupOptions { writer_lock_held: true, ..Default::default() };
    let missing = d.path().join("x.db");
    let (r, p) = gate::run(&missing, &store, &GateOptions::default(), &opts).unwrap();
    assert!(!r.passed && r.failure == Some(GateFailure::Missing) && p.is_none(), "{r:?}");
    let (r, _) = gate::run(&missing, &store, &GateOptions { allow_create: true, ..Default::default() }, &opts).unwrap();
    assert!(r.passed && r.fresh_database);
    std::fs::write(&missing, b"").unwrap();
    let (r, _) = gate::run(&missing, &store, &GateOptions::default(), &opts).unwrap();
    assert_eq!(r.failure, Some(GateFailure::Empty));
    assert!(!missing.with_extension("db-journal").exists());
    let (r, _) = gate::run(&missing, &store, &GateOptions { allow_create: true, ..Default::default() }, &opts).unwrap();
    assert!(r.passed);
    assert_eq!(std::fs::metadata(&missing).unwrap().len(), 0, "the gate never writes the original");
}

#[test]
fn the_time_budget_fails_closed() {
    let d = tempfile::tempdir().unwrap();
    let db = d.path().join("big.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch(
        "CREATE TABLE t(id INTEGER PRIMARY KEY, a TEXT, b TEXT UNIQUE);
         CREATE INDEX ta ON t(a);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 60000)
         INSERT INTO t SELECT i, hex(randomblob(16)), hex(randomblob(16)) FROM n;",
    )
    .unwrap();
    drop(conn);
    let store = BackupStore::new(d.path().join("b"), &db);
    let opts = BackupOptions {
        writer_lock_held: true,
        check_budget: Some(std::time::Duration::from_millis(1)),
        ..Default::default()
    };
    let (r, published) = gate::run(&db, &store, &GateOptions::default(), &opts).unwrap();
    assert!(!r.passed, "{r:?}");
    assert_eq!(r.failure, Some(GateFailure::TimedOut));
    assert!(r.integrity.as_ref().unwrap().timed_out);
    assert!(published.is_none(), "a copy whose check timed out is never published");
    assert!(store.list().unwrap().is_empty());
    // With a real budget the same database passes.
    let opts = BackupOptions { check_budget: Some(std::time::Duration::from_secs(120)), ..opts };
    let (r, published) = gate::run(&db, &store, &GateOptions::default(), &opts).unwrap();
    assert!(r.passed, "{}", r.summary());
    assert!(published.is_some());
}

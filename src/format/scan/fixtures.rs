//! Test fixtures shared by the scan's unit tests: real SQLite files (a WAL-mode database with
//! its `-wal`, a rollback-mode database) and the finding codes of a report. Tests only.

use rusqlite::Connection;

use super::report::ScanReport;

/// A real WAL: a WAL-mode database with committed, uncheckpointed transactions, and the
/// bytes of its database file and `-wal` taken while the writer is still open.
pub(super) fn real_wal(page_size: u32) -> (Vec<u8>, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.db");
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch(&format!(
        "PRAGMA page_size={page_size}; PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0;
         CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);"
    ))
    .unwrap();
    for i in 0..20 {
        conn.execute("INSERT INTO t(v) VALUES (?1)", [format!("{i}-{}", "x".repeat(300))]).unwrap();
    }
    let db = std::fs::read(&path).unwrap();
    let wal = std::fs::read(dir.path().join("w.db-wal")).unwrap();
    drop(conn);
    (db, wal)
}

/// A rollback-mode database with a schema and rows, all in the file.
pub(super) fn plain_db() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.db");
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch(
        "PRAGMA page_size=4096; CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100)
         INSERT INTO t(v) SELECT printf('%.200c', 'x') FROM n;",
    )
    .unwrap();
    drop(conn);
    std::fs::read(&path).unwrap()
}

pub(super) fn codes(report: &ScanReport) -> Vec<&str> {
    report.findings.iter().map(|f| f.code.as_str()).collect()
}

pub(super) fn fatal_codes(report: &ScanReport) -> Vec<&str> {
    report.fatal().map(|f| f.code.as_str()).collect()
}

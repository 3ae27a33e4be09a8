//! WAL states where SQLite silently ignores frames a writer committed, caught by the raw scan
//! with no seal and no history (issue 12, item 4): built by the real SQLite this crate links,
//! then damaged by byte edits or by pairing files that do not belong together. Each damaged
//! set is also opened by SQLite on a private copy to show the loss is silent (`integrity_check`
//! says `ok`, committed rows are gone), next to the honest state the same edit leaves when the
//! database already holds the frames. Ends with `warden check` and `warden run` refusing such
//! a set on a database never run under warden.
//!
//! Without the `wal_header_reset` / `wal_stale_commits` findings (main before this change)
//! `header_rewritten_over_committed_frames_is_fatal`, `restart_header_with_random_salts_is_fatal`,
//! `previous_generation_commits_missing_from_the_db_are_fatal` and
//! `check_and_run_refuse_a_reset_wal_without_a_seal` fail: the scan passes those sets.
//! `a_break_inside_an_unfinished_final_commit_is_a_warning` fails the other way: main refuses
//! that honest crash state.

mod common;
#[path = "common/wal_sets.rs"]
mod wal_sets;

use std::path::Path;
use std::time::Duration;

use common::Scratch;
use common::proc::{run_to_end, set_bytes};
use sqlite_warden::format::scan::{scan_bytes, scan_set};
use wal_sets::*;

/// A WAL-mode ledger with `txns` committed, uncheckpointed transactions: the bytes of the db
/// file and of the WAL, taken while the writer is open, and the committed row count.
fn hot_ledger(txns: i64) -> (Vec<u8>, Vec<u8>, i64) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("engine.db");
    let conn = open_writer(&db);
    for t in 0..txns {
        commit_rows(&conn, 20, t);
    }
    let (db_bytes, wal) = read_set(&db);
    drop(conn);
    (db_bytes, wal, txns * 20)
}

#[test]
fn header_rewritten_over_committed_frames_is_fatal() {
    let (db, wal, rows) = hot_ledger(12);
    let report = scan_bytes(&db, Some(&wal));
    assert!(report.findings.is_empty(), "{:#?}", report.findings);
    assert_eq!(recovered(&db, &wal), (vec!["ok".to_owned()], rows));

    // Exactly the header a restart writes (sequence and salt-1 plus one), but over frames that
    // were never checkpointed: the database file holds page 1 and nothing of the ledger.
    let mut reset = wal.clone();
    restart_header(&mut reset, 0x5eed_0001);
    let report = scan_bytes(&db, Some(&reset));
    assert_eq!(fatal_codes(&report), ["wal_header_reset"], "{:#?}", report.findings);
    let summary = report.wal.clone().unwrap();
    assert_eq!(summary.valid_frames, 0);
    assert_eq!(summary.stale_frames as usize, frames(&wal));
    assert!(summary.stale_pages_not_in_db > 3, "{summary:?}");
    let message = &report.fatal().next().unwrap().message;
    let commits = (1..=frames(&wal)).filter(|&i| is_commit(&wal, i)).count();
    assert!(
        message.contains(&format!("frames 1..={} hold {commits} committed transactions", frames(&wal))),
        "{message}"
    );
    // Frame 1 is proved to be the first frame of the original header, sequence number and all.
    let original =
        format!("salts {:08x}-{:08x}, checkpoint sequence {},", be32(&wal, 16), be32(&wal, 20), be32(&wal, 12));
    assert!(message.contains(&original), "{message}");

    // The failure this prevents: SQLite treats the WAL as empty; every commit is gone, and
    // nothing says so.
    let (integrity, count) = recovered(&db, &reset);
    assert_eq!(integrity, ["ok"]);
    assert!(count < rows, "SQLite dropped the committed rows ({count} of {rows} left)");
}

#[test]
fn restart_header_with_random_salts_is_fatal() {
    let (db, wal, _) = hot_ledger(6);
    let mut reset = wal.clone();
    rewrite_header(&mut reset, be32(&wal, 12), 0x0bad_cafe, 0x1234_5678);
    let report = scan_bytes(&db, Some(&reset));
    assert_eq!(fatal_codes(&report), ["wal_header_reset"], "{:#?}", report.findings);
    // Only the salts differ from the original: any other header field is covered by the
    // header checksum, which is its own finding.
    let mut sum_broken = wal.clone();
    sum_broken[16] ^= 0x40;
    assert_eq!(fatal_codes(&scan_bytes(&db, Some(&sum_broken))), ["wal_bad_header_checksum"]);
}

#[test]
fn restart_header_over_checkpointed_frames_is_honest() {
    // A writer that checkpointed everything, then was killed right after writing the
    // restarted header: old frames behind a header that matches none of them, all already in
    // the database file. SQLite loses nothing; the scan must pass.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("engine.db");
    let conn = open_writer(&path);
    for t in 0..8 {
        commit_rows(&conn, 20, t);
    }
    let (busy, log, done) = checkpoint(&conn, "PASSIVE");
    assert_eq!((busy, log), (0, done));
    let (db, wal) = read_set(&path);
    drop(conn);
    let mut reset = wal.clone();
    restart_header(&mut reset, 0x7777_0001);
    let report = scan_bytes(&db, Some(&reset));
    assert!(report.is_ok(), "{:#?}", report.findings);
    let summary = report.wal.unwrap();
    assert_eq!((summary.valid_frames, summary.stale_frames as usize), (0, frames(&wal)));
    assert_eq!(summary.stale_pages_not_in_db, 0);
    assert_eq!(recovered(&db, &reset), (vec!["ok".to_owned()], 160));
}

/// A WAL reused after a complete checkpoint: a small new generation over a larger old one.
/// Returns the db file as it was before that checkpoint, the db file after, and the WAL.
fn reused_ledger() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("engine.db");
    let conn = open_writer(&path);
    commit_rows(&conn, 40, 0);
    let (busy, log, done) = checkpoint(&conn, "PASSIVE");
    assert_eq!((busy, log), (0, done));
    for t in 1..10 {
        commit_rows(&conn, 20, t);
    }
    let before = std::fs::read(&path).unwrap();
    let (busy, log, done) = checkpoint(&conn, "PASSIVE");
    assert_eq!((busy, log), (0, done));
    conn.execute("UPDATE ledger SET amount = amount + 1 WHERE id = 3", []).unwrap();
    let (after, wal) = read_set(&path);
    drop(conn);
    assert_ne!(before, after, "the checkpoint wrote the database file");
    (before, after, wal)
}

#[test]
fn previous_generation_commits_missing_from_the_db_are_fatal() {
    let (before, after, wal) = reused_ledger();
    let honest = scan_bytes(&after, Some(&wal));
    assert!(honest.is_ok(), "{:#?}", honest.findings);
    let summary = honest.wal.unwrap();
    assert!(summary.valid_frames > 0 && summary.stale_frames > 5, "{summary:?}");
    assert_eq!(summary.stale_pages_not_in_db, 0);

    // The same WAL beside the database file as it was before the checkpoint (the checkpoint's
    // writes lost, or the file restored from an older copy): the old generation's commits are
    // nowhere but in frames SQLite ignores.
    let report = scan_bytes(&before, Some(&wal));
    assert_eq!(fatal_codes(&report), ["wal_stale_commits"], "{:#?}", report.findings);
    let message = &report.fatal().next().unwrap().message;
    assert!(message.contains("the generation before the header's"), "{message}");
    assert!(report.wal.unwrap().stale_pages_checked > 0);
    let (_, rows) = recovered(&before, &wal);
    assert!(rows < 220, "SQLite dropped committed rows ({rows} of 220 left)");
}

#[test]
fn old_frames_of_an_unrelated_generation_are_not_judged() {
    // Old frames whose salt-1 is not one less than the header's: a generation further back,
    // whose pages a later, since overwritten generation may have changed; or the one just
    // before, when the connection that restarted the WAL drew new random salts (one that never
    // ran recovery writes checkpoint sequence 0 and random salts). Either way a difference from
    // the database file proves nothing, and an honest state must pass.
    let (before, _, mut wal) = reused_ledger();
    let valid = scan_bytes(&before, Some(&wal)).wal.unwrap().valid_frames as usize;
    for index in valid + 1..=frames(&wal) {
        let at = frame_offset(index) + 8;
        wal[at..at + 4].copy_from_slice(&0x9000_0000u32.to_be_bytes());
    }
    let report = scan_bytes(&before, Some(&wal));
    assert!(report.is_ok(), "{:#?}", report.findings);
    let summary = report.wal.unwrap();
    assert!(summary.stale_frames > 5 && summary.stale_pages_checked == 0, "{summary:?}");
}

/// A ledger whose last transaction spilled pages into the WAL and then changed them again, as a
/// writer with a small page cache does: the bytes, and where that transaction's frames start.
fn spilled_last_transaction() -> (Vec<u8>, Vec<u8>, usize) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("engine.db");
    let conn = open_writer(&path);
    for t in 0..4 {
        commit_rows(&conn, 30, t);
    }
    let start = frames(&std::fs::read(sidecar(&path, "-wal")).unwrap()) + 1;
    conn.execute_batch(
        "PRAGMA cache_size=2; BEGIN;
         UPDATE ledger SET note = note || '+';
         UPDATE ledger SET amount = amount + 1;
         COMMIT;",
    )
    .unwrap();
    let (db, wal) = read_set(&path);
    drop(conn);
    (db, wal, start)
}

#[test]
fn a_break_inside_an_unfinished_final_commit_is_a_warning() {
    // A writer killed while committing a transaction that rewrote pages it had spilled: the
    // commit frame is written, the rewritten frames still carry their old checksums
    // (`walRewriteChecksums()` runs after the commit frame is appended), so the chain breaks
    // at the first rewritten frame and the frames after it chain from each other. That is a
    // transaction that never committed. Rewriting one spilled page's bytes without fixing its
    // checksum leaves exactly that structure.
    let (db, wal, start) = spilled_last_transaction();
    let total = frames(&wal);
    assert!(total > start + 3 && (start..total).all(|i| !is_commit(&wal, i)) && is_commit(&wal, total));
    let mut crashed = wal.clone();
    crashed[frame_offset(start + 1) + FRAME_PAGE_BYTE] ^= 0x01;
    let report = scan_bytes(&db, Some(&crashed));
    assert!(report.is_ok(), "{:#?}", report.findings);
    assert!(codes(&report).contains(&"wal_frames_after_break".to_owned()), "{:#?}", report.findings);
    assert!(report.wal.unwrap().frames_after_break > 0);

    // The same damage one transaction earlier: a completed commit follows it, and a whole
    // committed transaction SQLite drops is fatal, as before.
    let mut earlier = wal.clone();
    earlier[frame_offset(start - 2) + FRAME_PAGE_BYTE] ^= 0x01;
    assert!(is_commit(&wal, start - 1));
    let report = scan_bytes(&db, Some(&earlier));
    assert_eq!(fatal_codes(&report), ["wal_frames_after_break"], "{:#?}", report.findings);
}

/// A byte in the middle of a frame's page.
const FRAME_PAGE_BYTE: usize = 24 + 2000;

#[test]
fn check_and_run_refuse_a_reset_wal_without_a_seal() {
    let s = Scratch::new();
    let (db_bytes, wal, _) = hot_ledger(8);
    let mut reset = wal.clone();
    restart_header(&mut reset, 0x4242_4242);
    let db = write_set(&s.path("fresh"), &db_bytes, &reset);
    let before = set_bytes(&db, &["", "-wal", "-shm", "-journal"]);
    assert!(!sidecar(&db, ".warden").exists(), "never run under warden: no seal, no state");

    let mut check = s.warden();
    check.args(["check", "--json"]).arg(&db);
    let done = run_to_end(check, Duration::from_secs(120));
    assert_eq!(done.code(), Some(65), "{}", done.diag());
    let report = done.json();
    assert_eq!(report["passed"], false, "{report:#}");
    assert_eq!(report["failure"], "scan", "{report:#}");
    assert!(report["reasons"][0].as_str().unwrap().starts_with("wal_header_reset"), "{report:#}");

    let marker = s.path("ENGINE-RAN");
    let mut run = s.warden();
    run.args(["run", "--json", "-q", "--db"])
        .arg(&db)
        .args(["--", "/bin/sh", "-c"])
        .arg(format!("echo ran > '{}'", marker.display()));
    let done = run_to_end(run, Duration::from_secs(120));
    assert_eq!(done.code(), Some(65), "{}", done.diag());
    assert!(!marker.exists(), "the engine started on a WAL whose commits SQLite would drop");
    let artifact = done.last_json();
    assert_eq!(artifact["failed_step"], "gate", "{artifact:#}");
    assert_eq!(artifact["gate"]["failure"], "scan", "{artifact:#}");
    let findings = artifact["gate"]["scan"]["findings"].as_array().unwrap();
    assert!(findings.iter().any(|f| f["code"] == "wal_header_reset" && f["severity"] == "fatal"), "{artifact:#}");
    assert_eq!(set_bytes(&db, &["", "-wal", "-shm", "-journal"]), before, "the originals are untouched");
    assert_eq!(scan_set(&db).unwrap(), scan_bytes(&db_bytes, Some(&reset)).with_messages_of(&db));
}

trait WithMessages {
    fn with_messages_of(self, db: &Path) -> Self;
}

impl WithMessages for sqlite_warden::format::scan::ScanReport {
    /// The same report with the file names of a scan of `db` (in-memory scans name no file).
    fn with_messages_of(mut self, db: &Path) -> Self {
        let named = scan_set(db).unwrap();
        for (mine, theirs) in self.findings.iter_mut().zip(&named.findings) {
            mine.message.clone_from(&theirs.message);
        }
        self
    }
}

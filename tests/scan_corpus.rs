//! The damage corpus against the real SQLite this crate links (reliability-notes §6.1, §6.17).
//!
//! Every damaged set must be caught by at least one of: a fatal finding of `session::scan`,
//! `PRAGMA integrity_check` on a read-write private copy of the set (anything but exactly one
//! row `ok`, or an error), or rows from `PRAGMA foreign_key_check`; and by the check its case
//! names. Every control must pass all three. No original file (db, -wal, -journal, -shm) may
//! change by a single byte, and a second scan must give the same report (§6.18).
//!
//! Damage this SQLite cannot see is not faked into the corpus; `payload_flip_is_silent` and
//! `wal_of_another_whole_db_is_silent` record the kinds dropped for that reason.

#[path = "common/corpus.rs"]
mod corpus;

use std::path::Path;

use corpus::{Case, build_corpus, hashes, sidecar};
use rusqlite::Connection;
use rusqlite::types::Value;
use sqlite_warden::format::scan::{ScanReport, scan_set};

/// What the pragmas say about a private, read-write copy of the set (db, -wal, -journal; never
/// -shm, which SQLite rebuilds).
struct Pragmas {
    /// `integrity_check` rows, or the error from opening or running it.
    integrity: Result<Vec<String>, String>,
    /// `foreign_key_check` row count, or its error.
    foreign_keys: Result<usize, String>,
}

fn private_check(db: &Path) -> Pragmas {
    let scratch = tempfile::tempdir().unwrap();
    let copy = scratch.path().join("engine.db");
    for suffix in ["", "-wal", "-journal"] {
        let from = sidecar(db, suffix);
        if from.exists() {
            std::fs::copy(&from, sidecar(&copy, suffix)).unwrap();
        }
    }
    let conn = match Connection::open(&copy) {
        Ok(conn) => conn,
        Err(e) => return Pragmas { integrity: Err(e.to_string()), foreign_keys: Err(e.to_string()) },
    };
    let rows = |sql: &str| -> Result<Vec<Value>, String> {
        let mut stmt = conn.prepare(sql).map_err(|e| e.to_string())?;
        let rows = stmt.query_map([], |r| r.get::<_, Value>(0)).map_err(|e| e.to_string())?;
        rows.collect::<Result<_, _>>().map_err(|e| e.to_string())
    };
    let integrity = rows("PRAGMA integrity_check").map(|rows| {
        rows.into_iter()
            .map(|v| match v {
                Value::Text(text) => text,
                other => format!("{other:?}"),
            })
            .collect()
    });
    let foreign_keys = rows("PRAGMA foreign_key_check").map(|rows| rows.len());
    Pragmas { integrity, foreign_keys }
}

/// The checks that caught a set, as `scan:<code>`, `integrity`, `open`, `foreign_key_check`.
fn caught_by(scan: &ScanReport, pragmas: &Pragmas) -> Vec<String> {
    let mut by: Vec<String> = scan.fatal().map(|f| format!("scan:{}", f.code)).collect();
    match &pragmas.integrity {
        Ok(rows) if rows.len() == 1 && rows[0] == "ok" => {}
        Ok(_) => by.push("integrity".into()),
        Err(_) => by.push("open".into()),
    }
    if matches!(pragmas.foreign_keys, Ok(n) if n > 0) {
        by.push("foreign_key_check".into());
    }
    by
}

/// Whether the case's `expect` is among the checks that caught it. A pragma error is also a
/// failed integrity check (reliability-notes §6.2).
fn expected_caught(case: &Case, by: &[String]) -> bool {
    match case.expect {
        "integrity" => by.iter().any(|b| b == "integrity" || b == "open"),
        expect => by.iter().any(|b| b == expect),
    }
}

fn first_line(pragmas: &Pragmas) -> String {
    let text = match &pragmas.integrity {
        Ok(rows) => format!("{} row(s): {}", rows.len(), rows.first().map_or("", String::as_str)),
        Err(e) => format!("error: {e}"),
    };
    text.replace('\n', " ").chars().take(90).collect()
}

#[test]
fn corpus_damaged_refused_controls_accepted_files_unchanged() {
    let root = tempfile::tempdir().unwrap();
    let cases = build_corpus(root.path());
    assert!(cases.iter().filter(|c| c.damaged).count() >= 20);
    assert!(cases.iter().filter(|c| !c.damaged).count() >= 6);
    let mut names: Vec<_> = cases.iter().map(|c| c.name).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), cases.len(), "case names are unique");

    let mut failures = Vec::new();
    println!("\n{:<34} {:<8} {:<32} {:<55} integrity_check on a private copy", "case", "kind", "expect", "caught by");
    for case in &cases {
        let before = hashes(&case.db);
        let scan = scan_set(&case.db).unwrap_or_else(|e| panic!("{}: scan failed: {e}", case.name));
        let pragmas = private_check(&case.db);
        let again = scan_set(&case.db).unwrap();
        let after = hashes(&case.db);

        let by = caught_by(&scan, &pragmas);
        let kind = if case.damaged { "damaged" } else { "control" };
        let shown = if by.is_empty() { "-".to_owned() } else { by.join(", ") };
        println!("{:<34} {:<8} {:<32} {:<55} {}", case.name, kind, case.expect, shown, first_line(&pragmas));

        if before != after {
            failures.push(format!("{}: an original file changed", case.name));
        }
        if scan != again {
            failures.push(format!("{}: a second scan differs", case.name));
        }
        if case.damaged {
            if by.is_empty() {
                failures.push(format!("{}: damaged but nothing caught it", case.name));
            } else if !expected_caught(case, &by) {
                failures.push(format!("{}: expected {} to catch it, caught by {by:?}", case.name, case.expect));
            }
        } else {
            if !scan.is_ok() {
                failures.push(format!("{}: control refused by the scan: {:#?}", case.name, scan.findings));
            }
            if !matches!(&pragmas.integrity, Ok(rows) if rows == &["ok"]) {
                failures.push(format!("{}: control fails integrity_check: {:?}", case.name, pragmas.integrity));
            }
            if !matches!(pragmas.foreign_keys, Ok(0)) {
                failures.push(format!("{}: control fails foreign_key_check: {:?}", case.name, pragmas.foreign_keys));
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// Details the scan must report for particular sets, beyond "fatal or not".
#[test]
fn scan_details_on_wal_sets() {
    let root = tempfile::tempdir().unwrap();
    let cases = build_corpus(root.path());
    let scan = |name: &str| scan_set(&cases.iter().find(|c| c.name == name).unwrap().db).unwrap();

    let hot = scan("hot_wal").wal.unwrap();
    assert!(hot.valid_frames > 0);
    assert_eq!(hot.committed_frames, hot.valid_frames);
    assert_eq!((hot.frames_after_break, hot.torn_tail), (0, false));

    let broken = scan("wal_frame_checksum_break").wal.unwrap();
    assert!(broken.frames_after_break > 0 && broken.valid_frames < hot.valid_frames);

    for name in ["torn_wal_tail_cut", "torn_wal_tail_garbled"] {
        let report = scan(name);
        assert!(report.findings.iter().any(|f| f.code == "wal_torn_tail"), "{name}: {:#?}", report.findings);
        let wal = report.wal.unwrap();
        assert!(wal.torn_tail && wal.frames_after_break == 0, "{name}");
    }

    let reused = scan("wal_reused_old_generation");
    let wal = reused.wal.unwrap();
    assert!(wal.valid_frames > 0 && !wal.torn_tail && wal.frames_after_break == 0);
    assert!(wal.valid_frames < (wal.size - 32) / (24 + 4096), "old-generation frames follow the new ones");

    let journal = scan("hot_journal");
    assert!(journal.journal_bytes.unwrap() > 0);
    assert!(journal.findings.iter().any(|f| f.code == "hot_journal"));
}

/// Dropped from the corpus: a bit flip that lands only inside a stored value (here one letter of
/// a TEXT column in a `trade` leaf page) leaves every structure valid. Neither the scan nor
/// `integrity_check` (nor `quick_check`) can see it with this SQLite; only a page checksum
/// (cksumvfs, reliability-notes §4) or a content hash of a backup would. This test pins that
/// down, so the day it starts failing the case can join the corpus.
#[test]
fn payload_flip_is_silent() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("engine.db");
    corpus::build_source(&db);
    let conn = Connection::open(&db).unwrap();
    // The page and byte of one `note` value: find the text in the page that holds its row.
    let (rowid, note): (i64, String) = conn
        .query_row("SELECT id, note FROM trade WHERE length(note) > 20 ORDER BY id LIMIT 1 OFFSET 500", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    drop(conn);
    let bytes = std::fs::read(&db).unwrap();
    let at = bytes.windows(note.len()).position(|w| w == note.as_bytes()).expect("the note is stored in the file");
    corpus::write_at(&db, (at + 5) as u64, &[bytes[at + 5] ^ 0x01]);

    assert!(scan_set(&db).unwrap().is_ok());
    let pragmas = private_check(&db);
    assert_eq!(pragmas.integrity.unwrap(), ["ok"]);
    let conn = Connection::open(&db).unwrap();
    let changed: String = conn.query_row("SELECT note FROM trade WHERE id = ?1", [rowid], |r| r.get(0)).unwrap();
    assert_ne!(changed, note, "the flip changed the value, silently");
}

/// Dropped from the corpus: a WAL of another database with the same page size, where that
/// database's whole image is in its WAL (a fresh WAL-mode database never checkpointed). SQLite
/// reads page 1 and every page up to the commit frame's size from the WAL, so the set opens as
/// the other database, intact: the scan sees a well-formed WAL and `integrity_check` says ok.
/// (With a base in its own file the foreign pages mix with ours and the set is caught; see
/// `wal_from_other_db_same_page_size` in the corpus.)
#[test]
fn wal_of_another_whole_db_is_silent() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("engine.db");
    corpus::build_source(&db);
    let conn = Connection::open(&db).unwrap();
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0)).unwrap();
    assert_eq!(mode, "wal");
    drop(conn);
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let (_, other_wal) = corpus::fresh_wal_only(&work);
    std::fs::write(sidecar(&db, "-wal"), other_wal).unwrap();

    let scan = scan_set(&db).unwrap();
    assert!(scan.is_ok(), "{:#?}", scan.findings);
    assert_eq!(private_check(&db).integrity.unwrap(), ["ok"]);
    let scratch = tempfile::tempdir().unwrap();
    let copy = scratch.path().join("engine.db");
    std::fs::copy(&db, &copy).unwrap();
    std::fs::copy(sidecar(&db, "-wal"), sidecar(&copy, "-wal")).unwrap();
    let conn = Connection::open(&copy).unwrap();
    let accounts: i64 =
        conn.query_row("SELECT count(*) FROM sqlite_schema WHERE name = 'account'", [], |r| r.get(0)).unwrap();
    assert_eq!(accounts, 0, "the set now opens as the other database");
}

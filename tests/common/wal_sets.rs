//! Real WAL-mode database sets for the WAL-gap tests (`tests/wal_gaps.rs`, `tests/wal_honest.rs`):
//! a ledger written by the SQLite this crate links, the bytes of its files, a private copy
//! opened by SQLite to see what it recovers, and the byte edits SQLite's own WAL code makes to a
//! header (so a test can apply them where SQLite would not). Included by path; owns no test.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};

use rusqlite::Connection;
use sqlite_warden::format::scan::ScanReport;

/// Page size of every set here.
pub const PAGE: usize = 4096;
const WAL_HEADER: usize = 32;
const FRAME_HEADER: usize = 24;

/// `db` plus a suffix (`-wal`, `-shm`).
pub fn sidecar(db: &Path, suffix: &str) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// A WAL-mode connection to `db` without automatic checkpoints, with the ledger schema.
pub fn open_writer(db: &Path) -> Connection {
    let conn = Connection::open(db).unwrap();
    conn.execute_batch(&format!(
        "PRAGMA page_size={PAGE}; PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0;
         CREATE TABLE IF NOT EXISTS ledger(id INTEGER PRIMARY KEY, account INTEGER NOT NULL, amount INTEGER NOT NULL,
                                           note TEXT NOT NULL);
         CREATE INDEX IF NOT EXISTS ledger_account ON ledger(account, id);"
    ))
    .unwrap();
    let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
    assert_eq!(mode, "wal");
    conn
}

/// One transaction inserting `rows` ledger rows tagged `tag` (notes long enough that a few
/// hundred rows span many pages).
pub fn commit_rows(conn: &Connection, rows: usize, tag: i64) {
    conn.execute_batch("BEGIN").unwrap();
    for i in 0..rows {
        conn.execute(
            "INSERT INTO ledger(account, amount, note) VALUES (?1, ?2, ?3)",
            rusqlite::params![
                (tag * 31 + i as i64) % 97,
                tag * 1000 + i as i64,
                format!("{tag}:{i}:{}", "n".repeat(120))
            ],
        )
        .unwrap();
    }
    conn.execute_batch("COMMIT").unwrap();
}

/// `PRAGMA wal_checkpoint(mode)`: (busy, frames in the WAL, frames checkpointed).
pub fn checkpoint(conn: &Connection, mode: &str) -> (i64, i64, i64) {
    conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap()
}

/// The bytes of the database file and of its `-wal` (empty when there is none).
pub fn read_set(db: &Path) -> (Vec<u8>, Vec<u8>) {
    (fs::read(db).unwrap(), fs::read(sidecar(db, "-wal")).unwrap_or_default())
}

/// Writes a set (`engine.db` and, when not empty, `engine.db-wal`) into `dir`.
pub fn write_set(dir: &Path, db: &[u8], wal: &[u8]) -> PathBuf {
    fs::create_dir_all(dir).unwrap();
    let path = dir.join("engine.db");
    fs::write(&path, db).unwrap();
    if !wal.is_empty() {
        fs::write(sidecar(&path, "-wal"), wal).unwrap();
    }
    path
}

/// What SQLite recovers from a set: opened on a private copy, `(integrity_check rows, ledger
/// rows)`.
pub fn recovered(db: &[u8], wal: &[u8]) -> (Vec<String>, i64) {
    let scratch = tempfile::tempdir().unwrap();
    let path = write_set(scratch.path(), db, wal);
    let conn = Connection::open(&path).unwrap();
    let mut stmt = conn.prepare("PRAGMA integrity_check").unwrap();
    let rows: Vec<String> = stmt.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect();
    drop(stmt);
    let count = conn.query_row("SELECT count(*) FROM ledger", [], |r| r.get(0)).unwrap_or(-1);
    (rows, count)
}

/// Codes of the fatal findings of a report.
pub fn fatal_codes(report: &ScanReport) -> Vec<String> {
    report.fatal().map(|f| f.code.clone()).collect()
}

/// Codes of every finding of a report.
pub fn codes(report: &ScanReport) -> Vec<String> {
    report.findings.iter().map(|f| f.code.clone()).collect()
}

pub fn be32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap())
}

/// Whole frames in a WAL image.
pub fn frames(wal: &[u8]) -> usize {
    (wal.len() - WAL_HEADER) / (FRAME_HEADER + PAGE)
}

/// Byte offset of frame `index` (1-based).
pub fn frame_offset(index: usize) -> usize {
    WAL_HEADER + (index - 1) * (FRAME_HEADER + PAGE)
}

/// Whether frame `index` is a commit frame.
pub fn is_commit(wal: &[u8], index: usize) -> bool {
    be32(wal, frame_offset(index) + 4) != 0
}

/// The WAL checksum (fileformat2 §4), for rewriting a header the way `walFrames()` does.
pub fn wal_checksum(big_endian: bool, data: &[u8], (mut s0, mut s1): (u32, u32)) -> (u32, u32) {
    for pair in data.chunks_exact(8) {
        let word = |b: &[u8]| {
            let b = [b[0], b[1], b[2], b[3]];
            if big_endian { u32::from_be_bytes(b) } else { u32::from_le_bytes(b) }
        };
        s0 = s0.wrapping_add(word(&pair[..4])).wrapping_add(s1);
        s1 = s1.wrapping_add(word(&pair[4..])).wrapping_add(s0);
    }
    (s0, s1)
}

/// Rewrites the WAL header's checkpoint sequence number and salts, with a valid checksum.
pub fn rewrite_header(wal: &mut [u8], sequence: u32, salt1: u32, salt2: u32) {
    wal[12..16].copy_from_slice(&sequence.to_be_bytes());
    wal[16..20].copy_from_slice(&salt1.to_be_bytes());
    wal[20..24].copy_from_slice(&salt2.to_be_bytes());
    let big_endian = wal[3] & 1 == 1;
    let (a, b) = wal_checksum(big_endian, &wal[..24], (0, 0));
    wal[24..28].copy_from_slice(&a.to_be_bytes());
    wal[28..32].copy_from_slice(&b.to_be_bytes());
}

/// The header a writer puts on a WAL it restarts (`walRestartHdr()`: checkpoint sequence and
/// salt-1 plus one, a new random salt-2; `walFrames()` writes it before frame 1), without any
/// new frame after it: the state a writer killed right after writing that header leaves.
pub fn restart_header(wal: &mut [u8], salt2: u32) {
    let (sequence, salt1) = (be32(wal, 12), be32(wal, 16));
    rewrite_header(wal, sequence.wrapping_add(1), salt1.wrapping_add(1), salt2);
}

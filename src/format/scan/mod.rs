//! Raw, read-only scans of a database set's files: what `PRAGMA integrity_check` cannot see.
//!
//! The integrity gate runs SQLite's pragmas on a private copy of the set. SQLite never reports
//! some damage at all, because its recovery has already hidden it by the time a pragma runs:
//! a WAL whose header checksum fails is ignored whole, recovery stops at the first bad frame and
//! drops every later frame even when they are intact and committed, frames whose salts do not
//! match the header's are skipped (a header rewritten over committed frames empties the WAL),
//! and a WAL beside an empty database file is deleted on open. This module reads the bytes of the ORIGINAL files, opened
//! read-only through SQLite's `unix` VFS (never for writing, and never a `std::fs` descriptor
//! whose close would drop the process's locks), and reports what it finds.
//!
//! It owns:
//! - parsing the 100-byte database header (<https://www.sqlite.org/fileformat2.html> §1.3) and
//!   judging it the way SQLite's `lockBtree()` does (magic, page size, file format numbers,
//!   reserved bytes, payload fractions, the in-header database size, text encoding);
//! - parsing the WAL (fileformat2 §4 "The Write-Ahead Log"): the header and its checksum, every
//!   frame header, salts and the cumulative checksums, the last commit frame, intact frames
//!   after a break, a torn final frame, and frames of other generations (other salts) whose
//!   commits the database file should hold but does not (`stale`);
//! - noting a `-journal` beside the database (size, and whether its header makes it hot);
//! - turning all that into [`Finding`]s with stable codes and a [`Severity`].
//!
//! It does not own running pragmas, copying the set, recovering a hot journal, or deciding
//! whether a session starts: the gate does that, and refuses when [`ScanReport::is_ok`] is
//! false. One exception is the gate's to make: `empty_database` is fatal here, and only the
//! gate may waive it, when the caller explicitly asked to create the database
//! (reliability-notes §6.6). `wal_beside_empty_db` must never be waived.
//!
//! The `-shm` file is not read: SQLite rebuilds the wal-index from the WAL whenever no other
//! connection holds it, so stale or garbage `-shm` content is benign (reliability-notes §6.9).
//!
//! Severity follows reliability-notes §6: damage, and states where SQLite would silently lose
//! committed data, are [`Severity::Fatal`]; benign states (a torn final WAL frame, uncommitted
//! WAL frames, a hot journal the gate recovers on its copy) are [`Severity::Warning`].
//!
//! | code | severity |
//! |---|---|
//! | `empty_database` | fatal (waivable by the gate when creating) |
//! | `wal_beside_empty_db` | fatal |
//! | `not_a_database` | fatal |
//! | `bad_page_size` | fatal |
//! | `bad_file_format` | fatal |
//! | `bad_reserved_bytes` | fatal |
//! | `bad_payload_fractions` | fatal |
//! | `bad_text_encoding` | fatal |
//! | `size_not_page_multiple` | fatal |
//! | `size_mismatch` | fatal |
//! | `wal_truncated_header` | warning |
//! | `wal_bad_magic`, `wal_bad_page_size`, `wal_bad_header_checksum` | fatal when the WAL holds a frame, else warning |
//! | `wal_bad_version` | fatal when the WAL is longer than its header, else warning |
//! | `wal_page_size_mismatch` | fatal when the WAL holds a frame, else warning |
//! | `wal_frames_after_break` | fatal when a commit frame after the break is followed by a frame chained from it, else warning |
//! | `wal_header_reset` | fatal |
//! | `wal_stale_commits` | fatal |
//! | `wal_changed_during_scan` | warning (either of the two above, on a WAL a live writer moved meanwhile) |
//! | `wal_torn_tail` | warning |
//! | `wal_uncommitted_frames` | warning |
//! | `hot_journal` | warning |
//!
//! `size_mismatch` and the encoding check are suspended while the WAL holds committed frames
//! (the database image then lives partly in the WAL) or a hot journal is present (the file is
//! mid-transaction and the journal restores it).
//!
//! `wal_frames_after_break` fails closed when SQLite would drop a commit the writer completed:
//! an intact commit frame after the break with an intact frame chained from it (the writer went
//! on after it). After a power loss on a filesystem that reorders unsynced writes, a crashed
//! writer's last, never-acknowledged transaction can also leave such frames; the scan cannot tell
//! that from lost committed frames and refuses both. Intact frames after a break with no commit
//! among them, or whose every commit frame ends its chain, are a warning: a plain `kill -9` leaves
//! them whenever a transaction rewrote a page it had already spilled to the WAL (the rewritten
//! frame keeps its old checksum until the commit rewrites them, `walRewriteChecksums()`, which
//! runs after the commit frame is appended), and that transaction never committed.
//!
//! `wal_header_reset` and `wal_stale_commits` are committed transactions SQLite ignores because
//! their frames carry other salts than the header's, in a WAL whose database file does not hold
//! what they commit (each page compared with its SHA-256). A WAL reused after a checkpoint keeps
//! such frames too, honestly: SQLite restarts a WAL only once every frame is in the database
//! file. See `stale` for which old frames are judged and which cannot be.
//!
//! What no raw scan can see (and `integrity_check` cannot either): a database copied without
//! its WAL, which is an intact older state; a WAL of another database with the same page size
//! that holds that database's whole image; a bit flip inside a stored value. Page checksums
//! (cksumvfs) or a backup's content hash are the tools for those (reliability-notes §4, §5).

mod checksum;
mod db_header;
#[cfg(test)]
mod fixtures;
mod journal;
mod report;
mod stale;
mod wal;

use std::io::{self, BufReader, Read};
use std::path::Path;

use self::db_header::{DB_HEADER_LEN, check_header, check_size};
use self::journal::JournalState;
use self::stale::Image;
use self::wal::scan_wal;
use crate::format::names;
use crate::sys::sqlite::VfsFile;

pub use self::db_header::sqlite_page_size;
pub use self::report::{Finding, ScanReport, Severity, WalSummary};

/// Scans the set of files of the database at `db`: the database itself, `<db>-wal` and
/// `<db>-journal` when they exist. Every file is opened read-only and only read.
///
/// The database needs its first 100 bytes and its size, and only when the WAL holds committed
/// frames of an older generation, the pages those frames write. The WAL is streamed frame by
/// frame through one page-sized buffer, so a multi-gigabyte WAL costs one sequential read, plus
/// a digest per page its old frames write, not memory for the frames.
///
/// # Errors
///
/// Any I/O error opening or reading a file, including [`io::ErrorKind::NotFound`] when the
/// database itself does not exist (a missing database is the gate's decision, not a finding), and
/// [`io::ErrorKind::UnexpectedEof`] when a file shrinks while it is read.
pub fn scan_set(db: &Path) -> io::Result<ScanReport> {
    let file = VfsFile::open(None, db)?;
    let db_size = file.len();
    let mut header = Vec::with_capacity(DB_HEADER_LEN);
    file.reader().take(DB_HEADER_LEN as u64).read_to_end(&mut header)?;

    let journal = match open_if_present(&names::journal(db))? {
        None => None,
        Some(file) => Some(JournalState::read(&file)?),
    };

    let wal_path = names::wal(db);
    let wal_file = open_if_present(&wal_path)?;
    // Large enough for one 64 KiB frame, so each frame costs one read call.
    let wal =
        wal_file.as_ref().map(|f| (f.len(), BufReader::with_capacity(1 << 17, f.reader()), Image::path(&wal_path)));

    let names = Names { db: db.display().to_string(), wal: wal_path.display().to_string() };
    scan_parts(&names, &header, &Image::path(db), db_size, wal, journal)
}

/// Scans in-memory images of a database and its WAL: the pure core of [`scan_set`], for tests
/// and fuzzing. There is no journal here, so a journal's effect on the verdict (a hot journal
/// suspends `size_mismatch`) is not modelled.
pub fn scan_bytes(db: &[u8], wal: Option<&[u8]>) -> ScanReport {
    let names = Names { db: "database".to_owned(), wal: "WAL".to_owned() };
    let header = &db[..db.len().min(DB_HEADER_LEN)];
    let wal = wal.map(|w| (w.len() as u64, w, Image::Bytes(w)));
    match scan_parts(&names, header, &Image::Bytes(db), db.len() as u64, wal, None) {
        Ok(report) => report,
        // Every read is bounded by the slice's own length, so a slice never runs short.
        Err(e) => unreachable!("reading a byte slice failed: {e}"),
    }
}

/// Opens a file of the set through SQLite's `unix` VFS: the original may be a live database
/// whose process holds SQLite locks, which closing a `std::fs` descriptor would drop.
fn open_if_present(path: &Path) -> io::Result<Option<VfsFile>> {
    match VfsFile::open(None, path) {
        Ok(file) => Ok(Some(file)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// File names used in messages.
struct Names {
    db: String,
    wal: String,
}

fn scan_parts<R: Read>(
    names: &Names,
    header: &[u8],
    image: &Image<'_>,
    db_size: u64,
    wal: Option<(u64, R, Image<'_>)>,
    journal: Option<JournalState>,
) -> io::Result<ScanReport> {
    let mut report = ScanReport { db_size, ..ScanReport::default() };
    let db = &names.db;

    let wal = wal.filter(|(size, _, _)| *size > 0);
    let wal_size = wal.as_ref().map(|(size, _, _)| *size);

    if db_size == 0 {
        if let Some(size) = wal_size {
            // pagerOpenWalIfPresent(): "if( nPage==0 ){ rc = sqlite3OsDelete(..., pPager->zWal, 0); }"
            report.push(
                "wal_beside_empty_db",
                Severity::Fatal,
                format!(
                    "`{db}` is empty but `{}` holds {size} bytes; SQLite deletes a WAL beside an empty \
                     database on open, so whatever it holds would be lost",
                    names.wal
                ),
            );
        } else {
            report.push(
                "empty_database",
                Severity::Fatal,
                format!("`{db}` is empty (0 bytes): a new database, not an existing one"),
            );
        }
    }

    let encoding = if db_size > 0 { check_header(&mut report, db, header, db_size) } else { None };

    if let Some((size, reader, again)) = wal {
        let db_page_size = if db_size > 0 { report.page_size } else { None };
        let summary = scan_wal(&mut report, &names.wal, reader, size, db_page_size, image, &again)?;
        report.wal = Some(summary);
    }

    if let Some(journal) = &journal {
        journal.note(&mut report, db);
    }

    if let Some(encoding) = encoding {
        check_size(&mut report, db, journal.as_ref().is_some_and(|j| j.hot), encoding);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    use rusqlite::Connection;

    #[test]
    fn scan_set_reads_the_sidecars_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0; CREATE TABLE t(x); INSERT INTO t VALUES (1);",
        )
        .unwrap();
        let before = (std::fs::read(&path).unwrap(), std::fs::read(names::wal(&path)).unwrap());
        let report = scan_set(&path).unwrap();
        assert_eq!(report, scan_bytes(&before.0, Some(&before.1)).with_names_from(&report));
        assert!(report.is_ok());
        assert!(report.wal.as_ref().unwrap().committed_frames > 0);
        assert_eq!(report.journal_bytes, None);
        assert_eq!(before, (std::fs::read(&path).unwrap(), std::fs::read(names::wal(&path)).unwrap()));
        drop(conn);

        let err = scan_set(&dir.path().join("missing.db")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }

    impl ScanReport {
        /// The same report with the messages of `other` (file names differ between the two scans).
        fn with_names_from(mut self, other: &ScanReport) -> ScanReport {
            for (mine, theirs) in self.findings.iter_mut().zip(&other.findings) {
                mine.message.clone_from(&theirs.message);
            }
            self
        }
    }

    #[test]
    fn serde_round_trip() {
        let report = scan_bytes(&[], Some(&[0; 10]));
        let json = serde_json::to_string(&report).unwrap();
        assert!(json.contains("\"severity\":\"fatal\""), "{json}");
        assert_eq!(serde_json::from_str::<ScanReport>(&json).unwrap(), report);
    }
}

//! Raw, read-only scans of a database set's files: what `PRAGMA integrity_check` cannot see.
//!
//! The integrity gate runs SQLite's pragmas on a private copy of the set. SQLite never reports
//! some damage at all, because its recovery has already hidden it by the time a pragma runs:
//! a WAL whose header checksum fails is ignored whole, recovery stops at the first bad frame and
//! drops every later frame even when they are intact and committed, and a WAL beside an empty
//! database file is deleted on open. This module reads the bytes of the ORIGINAL files, opened
//! read-only through SQLite's `unix` VFS (never for writing, and never a `std::fs` descriptor
//! whose close would drop the process's locks), and reports what it finds.
//!
//! It owns:
//! - parsing the 100-byte database header (<https://www.sqlite.org/fileformat2.html> §1.3) and
//!   judging it the way SQLite's `lockBtree()` does (magic, page size, file format numbers,
//!   reserved bytes, payload fractions, the in-header database size, text encoding);
//! - parsing the WAL (fileformat2 §4 "The Write-Ahead Log"): the header and its checksum, every
//!   frame header, salts and the cumulative checksums, the last commit frame, intact frames
//!   after a break, and a torn final frame;
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
//! | `wal_frames_after_break` | fatal |
//! | `wal_torn_tail` | warning |
//! | `wal_uncommitted_frames` | warning |
//! | `hot_journal` | warning |
//!
//! `size_mismatch` and the encoding check are suspended while the WAL holds committed frames
//! (the database image then lives partly in the WAL) or a hot journal is present (the file is
//! mid-transaction and the journal restores it).
//!
//! `wal_frames_after_break` fails closed: after a power loss on a filesystem that reorders
//! unsynced writes, a crashed writer's last, never-acknowledged transaction can also leave intact
//! frames behind a torn one. The scan cannot tell that from lost committed frames, so it refuses
//! both; the message says how many of the dropped frames are commit frames.
//!
//! What no raw scan can see (and `integrity_check` cannot either): a database copied without
//! its WAL, which is an intact older state; a WAL of another database with the same page size
//! that holds that database's whole image; a bit flip inside a stored value. Page checksums
//! (cksumvfs) or a backup's content hash are the tools for those (reliability-notes §4, §5).

use std::io::{self, BufReader, Read};

use crate::format::names;
use crate::sys::sqlite::VfsFile;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Length of the database header at the start of page 1.
const DB_HEADER_LEN: usize = 100;
/// "Every valid SQLite database file begins with the following 16 bytes (in hex): 53 51 4c 69
/// 74 65 20 66 6f 72 6d 61 74 20 33 00." (fileformat2 §1.3.1)
const DB_MAGIC: &[u8; 16] = b"SQLite format 3\0";
/// "The WAL header is 32 bytes in size" (wal.c).
const WAL_HEADER_LEN: u64 = 32;
/// "Each frame consists of a 24-byte frame-header followed by <page-size> bytes of page data."
const WAL_FRAME_HEADER_LEN: u64 = 24;
/// "0: Magic number. 0x377f0682 or 0x377f0683"; the low bit picks the checksum byte order.
const WAL_MAGIC_LE: u32 = 0x377f_0682;
/// The big-endian-checksum WAL magic.
const WAL_MAGIC_BE: u32 = 0x377f_0683;
/// "4: File format version. Currently 3007000"; any other value makes SQLite refuse to open.
const WAL_VERSION: u32 = 3_007_000;
/// The rollback journal header magic (fileformat2 §3): a journal whose header still carries it
/// has not been finished (DELETE, TRUNCATE and PERSIST all remove or zero it at commit).
const JOURNAL_MAGIC: [u8; 8] = [0xd9, 0xd5, 0x05, 0xf9, 0x20, 0xa1, 0x63, 0xd7];

/// How bad a [`Finding`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// The set is damaged, or SQLite would silently lose committed data: blocks a session.
    Fatal,
    /// Worth reporting, but benign: SQLite handles it correctly.
    Warning,
}

/// One thing a scan found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// Stable, machine-readable reason, e.g. `not_a_database` (the table in the module docs).
    pub code: String,
    /// Whether it blocks a session.
    pub severity: Severity,
    /// For humans: names the file and the numbers involved.
    pub message: String,
}

impl Finding {
    fn new(code: &str, severity: Severity, message: String) -> Self {
        Finding { code: code.to_owned(), severity, message }
    }

    /// True for [`Severity::Fatal`].
    pub fn is_fatal(&self) -> bool {
        self.severity == Severity::Fatal
    }
}

/// What one scan of a database set saw.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanReport {
    /// Size of the database file in bytes.
    pub db_size: u64,
    /// Page size from the database header, when the header is valid enough to hold one.
    pub page_size: Option<u32>,
    /// The in-header database size in pages, only when SQLite would trust it (nonzero, and the
    /// change counter equals the version-valid-for number).
    pub header_pages: Option<u32>,
    /// The WAL, when a non-empty `-wal` file exists.
    pub wal: Option<WalSummary>,
    /// Size of the `-journal` file in bytes, when one exists (0 is a finished TRUNCATE journal).
    pub journal_bytes: Option<u64>,
    /// Everything found, in the order found.
    pub findings: Vec<Finding>,
}

impl ScanReport {
    /// The findings that block a session.
    pub fn fatal(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(|f| f.is_fatal())
    }

    /// True when nothing fatal was found.
    pub fn is_ok(&self) -> bool {
        self.fatal().next().is_none()
    }

    fn push(&mut self, code: &str, severity: Severity, message: String) {
        self.findings.push(Finding::new(code, severity, message));
    }
}

/// What the frames of a WAL say.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalSummary {
    /// Size of the `-wal` file in bytes.
    pub size: u64,
    /// Page size from the WAL header (0 when the header is shorter than 32 bytes).
    pub page_size: u32,
    /// Frames in the valid prefix: right salts, nonzero page number, checksum chain intact.
    pub valid_frames: u64,
    /// Frames up to and including the last commit frame of the valid prefix: what SQLite's
    /// recovery will use.
    pub committed_frames: u64,
    /// Intact frames of the current generation (the header's salts, a checksum that chains from
    /// the frame before) found after the first break. SQLite drops them silently.
    pub frames_after_break: u64,
    /// The WAL ends in a partial frame, or in a broken frame of the current generation with no
    /// intact frame after it: the signature of an append cut short by a crash. Benign.
    pub torn_tail: bool,
}

/// Scans the set of files of the database at `db`: the database itself, `<db>-wal` and
/// `<db>-journal` when they exist. Every file is opened read-only and only read.
///
/// The database needs only its first 100 bytes and its size. The WAL is streamed frame by frame
/// through one page-sized buffer, so a multi-gigabyte WAL costs one sequential read, not memory.
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
        Some(file) => {
            let mut head = Vec::with_capacity(JOURNAL_MAGIC.len());
            file.reader().take(JOURNAL_MAGIC.len() as u64).read_to_end(&mut head)?;
            Some(JournalState { size: file.len(), hot: head == JOURNAL_MAGIC })
        }
    };

    let wal_path = names::wal(db);
    let wal_file = open_if_present(&wal_path)?;
    // Large enough for one 64 KiB frame, so each frame costs one read call.
    let wal = wal_file.as_ref().map(|f| (f.len(), BufReader::with_capacity(1 << 17, f.reader())));

    let names = Names { db: db.display().to_string(), wal: wal_path.display().to_string() };
    scan_parts(&names, &header, db_size, wal, journal)
}

/// Scans in-memory images of a database and its WAL: the pure core of [`scan_set`], for tests
/// and fuzzing. There is no journal here, so a journal's effect on the verdict (a hot journal
/// suspends `size_mismatch`) is not modelled.
pub fn scan_bytes(db: &[u8], wal: Option<&[u8]>) -> ScanReport {
    let names = Names { db: "database".to_owned(), wal: "WAL".to_owned() };
    let header = &db[..db.len().min(DB_HEADER_LEN)];
    let wal = wal.map(|w| (w.len() as u64, w));
    match scan_parts(&names, header, db.len() as u64, wal, None) {
        Ok(report) => report,
        // Every read is bounded by the slice's own length, so a slice never runs short.
        Err(e) => unreachable!("reading a byte slice failed: {e}"),
    }
}

/// The page size in a database header, or `None` when it is not one SQLite accepts.
///
/// "The two-byte value beginning at offset 16 determines the page size of the database. For
/// SQLite versions 3.7.0.1 (2010-08-04) and later, this value is interpreted as a big-endian
/// integer and must be a power of two between 512 and 32768, inclusive. Beginning with version
/// 3.7.1 (2010-08-23), a page size of 65536 bytes is supported. The value 65536 will not fit in
/// a two-byte integer, so to specify a 65536-byte page size, the value at offset 16 is 0x00
/// 0x01." (fileformat2 §1.3.2)
pub fn sqlite_page_size(header: &[u8]) -> Option<u32> {
    let raw = u32::from(u16::from_be_bytes(header.get(16..18)?.try_into().ok()?));
    let size = if raw == 1 { 65_536 } else { raw };
    valid_page_size(size).then_some(size)
}

fn valid_page_size(size: u32) -> bool {
    (512..=65_536).contains(&size) && size.is_power_of_two()
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

/// What the `-journal` beside the database looks like.
struct JournalState {
    size: u64,
    hot: bool,
}

fn be32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

fn scan_parts<R: Read>(
    names: &Names,
    header: &[u8],
    db_size: u64,
    wal: Option<(u64, R)>,
    journal: Option<JournalState>,
) -> io::Result<ScanReport> {
    let mut report = ScanReport { db_size, ..ScanReport::default() };
    let db = &names.db;

    let wal = wal.filter(|(size, _)| *size > 0);
    let wal_size = wal.as_ref().map(|(size, _)| *size);

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

    if let Some((size, reader)) = wal {
        let db_page_size = if db_size > 0 { report.page_size } else { None };
        let summary = scan_wal(&mut report, &names.wal, reader, size, db_page_size)?;
        report.wal = Some(summary);
    }

    if let Some(journal) = &journal {
        report.journal_bytes = Some(journal.size);
        if journal.hot {
            report.push(
                "hot_journal",
                Severity::Warning,
                format!(
                    "`{db}-journal` ({} bytes) holds an unfinished transaction; SQLite rolls it back \
                     on open, which the gate does on its private copy",
                    journal.size
                ),
            );
        }
    }

    if let Some(encoding) = encoding {
        check_size(&mut report, db, journal.as_ref().is_some_and(|j| j.hot), encoding);
    }
    Ok(report)
}

/// Judges the database header as `lockBtree()` does. Returns the text encoding field when the
/// header is a database header at all, for [`check_size`] to judge once the WAL is known.
fn check_header(report: &mut ScanReport, db: &str, header: &[u8], db_size: u64) -> Option<u32> {
    if header.len() < DB_HEADER_LEN {
        report.push(
            "not_a_database",
            Severity::Fatal,
            format!("`{db}` is {db_size} bytes, shorter than the {DB_HEADER_LEN}-byte SQLite header"),
        );
        return None;
    }
    if &header[..16] != DB_MAGIC {
        report.push(
            "not_a_database",
            Severity::Fatal,
            format!("`{db}` does not start with \"SQLite format 3\\0\" (first bytes: {})", hex(&header[..16])),
        );
        return None;
    }
    let page_size = sqlite_page_size(header);
    report.page_size = page_size;
    if page_size.is_none() {
        report.push(
            "bad_page_size",
            Severity::Fatal,
            format!(
                "`{db}` header page size field is {} (bytes 16..18); must be a power of two from 512 to 65536",
                u16::from_be_bytes([header[16], header[17]])
            ),
        );
    }
    // "page1[18]>2: read-only; page1[19]>2: not a database" in lockBtree(); fileformat2 §1.3.3:
    // "1 for legacy; 2 for WAL".
    let (write_version, read_version) = (header[18], header[19]);
    if !matches!(write_version, 1 | 2) || !matches!(read_version, 1 | 2) {
        report.push(
            "bad_file_format",
            Severity::Fatal,
            format!(
                "`{db}` file format write/read versions are {write_version}/{read_version} (bytes 18, 19); \
                 must each be 1 (rollback) or 2 (WAL)"
            ),
        );
    }
    // "the usable size is not allowed to be less than 480. In other words, if the page size is
    // 512, then the reserved space size cannot exceed 32." (fileformat2 §1.3.4)
    let reserved = u32::from(header[20]);
    if let Some(size) = page_size
        && size - reserved < 480
    {
        report.push(
            "bad_reserved_bytes",
            Severity::Fatal,
            format!("`{db}` reserves {reserved} bytes per page (byte 20), leaving {} of {size}; at least 480 must be usable", size - reserved),
        );
    }
    // "The maximum and minimum embedded payload fractions and the leaf payload fraction values
    // must be 64, 32, and 32." (fileformat2 §1.3.5)
    if header[21..24] != [64, 32, 32] {
        report.push(
            "bad_payload_fractions",
            Severity::Fatal,
            format!("`{db}` payload fractions are {:?} (bytes 21..24); must be [64, 32, 32]", &header[21..24]),
        );
    }
    // "The in-header database size is only considered to be valid if it is non-zero and if the
    // 4-byte change counter at offset 24 exactly matches the 4-byte version-valid-for number at
    // offset 92." (fileformat2 §1.3.7)
    let in_header = be32(header, 28);
    if in_header != 0 && header[24..28] == header[92..96] {
        report.header_pages = Some(in_header);
    }
    Some(be32(header, 56))
}

/// Judges the text encoding, and the database's size against its page size and its header,
/// once the WAL is known.
fn check_size(report: &mut ScanReport, db: &str, hot_journal: bool, encoding: u32) {
    // With committed WAL frames the database image is the WAL's last commit frame's size, and
    // the file may legitimately be shorter or longer; its page 1 may predate the schema. With a
    // hot journal the file is mid-transaction and the journal restores it. Only a lone file can
    // be judged by its own header.
    let wal_committed = report.wal.as_ref().is_some_and(|w| w.committed_frames > 0);
    let lone = !wal_committed && !hot_journal;
    let size = report.db_size;
    // "A value of 1 means UTF-8. A value of 2 means UTF-16le. A value of 3 means UTF-16be."
    // (fileformat2 §1.3.13). SQLite reads `encoding & 3` and takes 0 for UTF-8, so a damaged
    // field silently changes how every string is read. 0 is left by a database whose schema was
    // never written, which is one page long (every table and index needs a root page of its own).
    let pages = report.page_size.map_or(0, |page_size| size.div_ceil(u64::from(page_size)));
    if encoding > 3 || (encoding == 0 && pages > 1 && lone) {
        report.push(
            "bad_text_encoding",
            Severity::Fatal,
            format!(
                "`{db}` text encoding is {encoding} (bytes 56..60) in a {pages}-page file; must be 1, 2 or 3 \
                 once a schema exists"
            ),
        );
    }
    let Some(page_size) = report.page_size else { return };
    if !size.is_multiple_of(u64::from(page_size)) {
        report.push(
            "size_not_page_multiple",
            Severity::Fatal,
            format!(
                "`{db}` is {size} bytes, not a multiple of its {page_size}-byte page size ({} bytes past \
                 the last whole page): truncated or extended mid-page",
                size % u64::from(page_size)
            ),
        );
        return;
    }
    let Some(header_pages) = report.header_pages else { return };
    let file_pages = size / u64::from(page_size);
    if lone && u64::from(header_pages) != file_pages {
        let what = if u64::from(header_pages) > file_pages {
            "pages are missing: truncated (SQLite reports the file as corrupt)"
        } else {
            "pages past the end of the database image: a mixed or appended file"
        };
        report.push(
            "size_mismatch",
            Severity::Fatal,
            format!("`{db}` header says {header_pages} pages but the file holds {file_pages}; {what}"),
        );
    }
}

/// The WAL checksum of fileformat2 §4 / wal.c, continued from `(s0, s1)`:
///
/// "The checksum is computed by interpreting the input as an even number of unsigned 32-bit
/// integers: x[0] through x[N]. [...] for i from 0 to n-1 step 2: s0 += x[i] + s1; s1 +=
/// x[i+1] + s0;" with "32-bit big-endian integers if the magic number in the first 4 bytes of
/// the WAL is 0x377f0683 and [...] little-endian if the magic number is 0x377f0682."
///
/// `data.len()` must be a multiple of 8 (headers and pages always are).
fn wal_checksum(big_endian: bool, data: &[u8], (mut s0, mut s1): (u32, u32)) -> (u32, u32) {
    debug_assert_eq!(data.len() % 8, 0);
    for pair in data.chunks_exact(8) {
        let (a, b) = ([pair[0], pair[1], pair[2], pair[3]], [pair[4], pair[5], pair[6], pair[7]]);
        let (a, b) = if big_endian {
            (u32::from_be_bytes(a), u32::from_be_bytes(b))
        } else {
            (u32::from_le_bytes(a), u32::from_le_bytes(b))
        };
        s0 = s0.wrapping_add(a).wrapping_add(s1);
        s1 = s1.wrapping_add(b).wrapping_add(s0);
    }
    (s0, s1)
}

/// Stored checksum of a WAL header (bytes 24..32) or frame header (bytes 16..24): "always
/// stored in the frame header in a big-endian format regardless of which byte order is used to
/// compute the checksum".
fn stored_checksum(bytes: &[u8], at: usize) -> (u32, u32) {
    (be32(bytes, at), be32(bytes, at + 4))
}

/// Whether `size` bytes of WAL hold at least one whole frame of `page_size`.
fn holds_frame(size: u64, page_size: u32) -> bool {
    size >= WAL_HEADER_LEN + WAL_FRAME_HEADER_LEN + u64::from(page_size)
}

/// Walks a WAL the way `walIndexRecover()` does, and keeps walking after the point where it
/// stops, to see what recovery would throw away.
fn scan_wal<R: Read>(
    report: &mut ScanReport,
    wal: &str,
    mut reader: R,
    size: u64,
    db_page_size: Option<u32>,
) -> io::Result<WalSummary> {
    let mut summary = WalSummary {
        size,
        page_size: 0,
        valid_frames: 0,
        committed_frames: 0,
        frames_after_break: 0,
        torn_tail: false,
    };
    if size < WAL_HEADER_LEN {
        // "if( nSize>WAL_HDRSIZE )" guards recovery: a shorter WAL holds no frames.
        report.push(
            "wal_truncated_header",
            Severity::Warning,
            format!("`{wal}` is {size} bytes, shorter than the 32-byte WAL header: it holds no frames"),
        );
        return Ok(summary);
    }
    let mut header = [0u8; WAL_HEADER_LEN as usize];
    reader.read_exact(&mut header)?;
    let magic = be32(&header, 0);
    let version = be32(&header, 4);
    let page_size = be32(&header, 8);
    summary.page_size = page_size;
    // Before the WAL's own page size is trusted, a frame is as big as the database's pages.
    let guess = db_page_size.unwrap_or(512);
    let severity_if = |frames: bool| if frames { Severity::Fatal } else { Severity::Warning };

    // walIndexRecover(): a bad magic or page size means "the WAL file contains no valid data",
    // a bad header checksum likewise; frames behind such a header are all ignored.
    if magic != WAL_MAGIC_LE && magic != WAL_MAGIC_BE {
        let frames = holds_frame(size, guess);
        report.push(
            "wal_bad_magic",
            severity_if(frames),
            format!(
                "`{wal}` ({size} bytes) has magic {magic:#010x}, not 0x377f0682/0x377f0683; SQLite ignores \
                 the whole file{}",
                if frames { ", dropping every frame in it" } else { "" }
            ),
        );
        return Ok(summary);
    }
    if !valid_page_size(page_size) {
        let frames = holds_frame(size, guess);
        report.push(
            "wal_bad_page_size",
            severity_if(frames),
            format!(
                "`{wal}` header page size is {page_size}; SQLite ignores the whole file{}",
                if frames { ", dropping every frame in it" } else { "" }
            ),
        );
        return Ok(summary);
    }
    let big_endian = magic & 1 == 1;
    let header_sum = wal_checksum(big_endian, &header[..24], (0, 0));
    if header_sum != stored_checksum(&header, 24) {
        let frames = holds_frame(size, page_size);
        report.push(
            "wal_bad_header_checksum",
            severity_if(frames),
            format!(
                "`{wal}` header checksum is {:08x}{:08x}, computed {:08x}{:08x}; SQLite ignores the whole \
                 file{}",
                be32(&header, 24),
                be32(&header, 28),
                header_sum.0,
                header_sum.1,
                if frames { ", silently dropping every frame in it" } else { "" }
            ),
        );
        return Ok(summary);
    }
    if version != WAL_VERSION {
        // "if( version!=WAL_MAX_VERSION ){ rc = SQLITE_CANTOPEN_BKPT; ... }"
        let beyond_header = size > WAL_HEADER_LEN;
        report.push(
            "wal_bad_version",
            severity_if(beyond_header),
            format!("`{wal}` format version is {version}, not {WAL_VERSION}; SQLite refuses to open the database"),
        );
        return Ok(summary);
    }
    if let Some(db_page_size) = db_page_size
        && db_page_size != page_size
    {
        let frames = holds_frame(size, page_size);
        report.push(
            "wal_page_size_mismatch",
            severity_if(frames),
            format!(
                "`{wal}` has {page_size}-byte pages but the database has {db_page_size}-byte pages: a WAL \
                 of another database"
            ),
        );
    }

    let salts = &header[16..24];
    let frame_len = WAL_FRAME_HEADER_LEN + u64::from(page_size);
    let frames = (size - WAL_HEADER_LEN) / frame_len;
    let partial = (size - WAL_HEADER_LEN) % frame_len;
    let mut frame = vec![0u8; frame_len as usize];
    let mut running = header_sum;
    // The stored checksum of the previous frame, from which an intact frame after a break chains.
    let mut previous_stored = header_sum;
    // Frame number (1-based) and salts-matched flag of the first frame that failed.
    let mut first_break: Option<(u64, bool)> = None;
    let mut after_break_commits = 0u64;

    for index in 1..=frames {
        reader.read_exact(&mut frame)?;
        let fh = &frame[..WAL_FRAME_HEADER_LEN as usize];
        let page = &frame[WAL_FRAME_HEADER_LEN as usize..];
        let stored = stored_checksum(fh, 16);
        let same_salts = &fh[8..16] == salts;
        let pgno = be32(fh, 0);
        let commit = be32(fh, 4) != 0;
        match first_break {
            None => {
                // walDecodeFrame(): salts, "A frame is only valid if the page number is greater
                // than zero", then the cumulative checksum over the frame header's first 8 bytes
                // and the page.
                let sum = wal_checksum(big_endian, page, wal_checksum(big_endian, &fh[..8], running));
                if same_salts && pgno != 0 && sum == stored {
                    running = sum;
                    summary.valid_frames = index;
                    if commit {
                        summary.committed_frames = index;
                    }
                } else {
                    first_break = Some((index, same_salts));
                }
            }
            Some(_) => {
                let sum = wal_checksum(big_endian, page, wal_checksum(big_endian, &fh[..8], previous_stored));
                if same_salts && pgno != 0 && sum == stored {
                    summary.frames_after_break += 1;
                    after_break_commits += u64::from(commit);
                }
            }
        }
        previous_stored = stored;
    }

    if let Some((at, _)) = first_break
        && summary.frames_after_break > 0
    {
        report.push(
            "wal_frames_after_break",
            Severity::Fatal,
            format!(
                "`{wal}`: frame {at} of {frames} breaks the checksum/salt chain, yet {} intact frames of the \
                 same generation follow it ({after_break_commits} of them commit frames); SQLite's recovery \
                 stops at frame {at} and silently drops them all",
                summary.frames_after_break
            ),
        );
    }
    let torn_frame = first_break.is_some_and(|(_, same_salts)| same_salts);
    summary.torn_tail = summary.frames_after_break == 0 && (partial > 0 || torn_frame);
    if summary.torn_tail {
        let what = match first_break {
            Some((at, true)) => format!("frame {at} of {frames} fails its checksum with nothing intact after it"),
            _ => format!("the file ends {partial} bytes into a frame"),
        };
        report.push(
            "wal_torn_tail",
            Severity::Warning,
            format!("`{wal}`: {what}; an append cut short by a crash, which SQLite discards"),
        );
    }
    if summary.valid_frames > summary.committed_frames {
        report.push(
            "wal_uncommitted_frames",
            Severity::Warning,
            format!(
                "`{wal}`: {} valid frames after the last commit frame ({}) belong to a transaction that \
                 never committed; SQLite discards them",
                summary.valid_frames - summary.committed_frames,
                summary.committed_frames
            ),
        );
    }
    Ok(summary)
}

use crate::util::fmt::hex;

#[cfg(test)]
mod tests {
    use super::*;

    use rusqlite::Connection;

    /// A real WAL: a WAL-mode database with committed, uncheckpointed transactions, and the
    /// bytes of its database file and `-wal` taken while the writer is still open.
    fn real_wal(page_size: u32) -> (Vec<u8>, Vec<u8>) {
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
    fn plain_db() -> Vec<u8> {
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

    fn codes(report: &ScanReport) -> Vec<&str> {
        report.findings.iter().map(|f| f.code.as_str()).collect()
    }

    fn fatal_codes(report: &ScanReport) -> Vec<&str> {
        report.fatal().map(|f| f.code.as_str()).collect()
    }

    fn frame_offset(page_size: u32, index: u64) -> usize {
        (WAL_HEADER_LEN + (index - 1) * (WAL_FRAME_HEADER_LEN + u64::from(page_size))) as usize
    }

    #[test]
    fn checksum_matches_real_sqlite_wal() {
        let (db, wal) = real_wal(4096);
        let report = scan_bytes(&db, Some(&wal));
        assert!(report.findings.is_empty(), "{:#?}", report.findings);
        let summary = report.wal.unwrap();
        assert_eq!(summary.page_size, 4096);
        assert_eq!((wal.len() as u64 - WAL_HEADER_LEN) % (24 + 4096), 0);
        assert_eq!(summary.valid_frames, (wal.len() as u64 - WAL_HEADER_LEN) / (24 + 4096));
        assert!(summary.valid_frames > 20);
        assert_eq!(summary.committed_frames, summary.valid_frames);
        assert_eq!((summary.frames_after_break, summary.torn_tail), (0, false));
        assert_eq!(report.page_size, Some(4096));
    }

    #[test]
    fn checksum_algorithm_by_hand() {
        // Two pairs: s0 = 1 + 0 = 1, s1 = 2 + 1 = 3; s0 = 1 + 3 + 3 = 7, s1 = 3 + 4 + 7 = 14.
        let data = [0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4];
        assert_eq!(wal_checksum(true, &data, (0, 0)), (7, 14));
        let le: Vec<u8> = data.chunks(4).flat_map(|c| [c[3], c[2], c[1], c[0]]).collect();
        assert_eq!(wal_checksum(false, &le, (0, 0)), (7, 14));
        assert_eq!(wal_checksum(true, &[0xff; 8], (u32::MAX, u32::MAX)).0, u32::MAX.wrapping_mul(3));
    }

    #[test]
    fn other_page_sizes_too() {
        for page_size in [512, 1024, 65536] {
            let (db, wal) = real_wal(page_size);
            let report = scan_bytes(&db, Some(&wal));
            assert!(report.is_ok(), "{page_size}: {:#?}", report.findings);
            let summary = report.wal.unwrap();
            assert_eq!(summary.page_size, page_size);
            assert_eq!(summary.committed_frames, summary.valid_frames);
            assert!(summary.valid_frames > 0);
        }
    }

    #[test]
    fn broken_middle_frame_with_intact_frames_after_is_fatal() {
        let (db, mut wal) = real_wal(4096);
        let total = scan_bytes(&db, Some(&wal)).wal.unwrap().valid_frames;
        wal[frame_offset(4096, 3) + 24 + 100] ^= 0x40;
        let report = scan_bytes(&db, Some(&wal));
        let summary = report.wal.clone().unwrap();
        assert_eq!(summary.valid_frames, 2);
        assert_eq!(summary.frames_after_break, total - 3);
        assert!(!summary.torn_tail);
        assert_eq!(fatal_codes(&report), ["wal_frames_after_break"]);
    }

    #[test]
    fn broken_stored_checksum_still_finds_the_frames_after() {
        let (db, mut wal) = real_wal(4096);
        wal[frame_offset(4096, 3) + 16] ^= 0x01;
        let report = scan_bytes(&db, Some(&wal));
        let summary = report.wal.clone().unwrap();
        assert_eq!(summary.valid_frames, 2);
        assert!(summary.frames_after_break > 0);
        assert!(!report.is_ok());
    }

    #[test]
    fn salt_change_in_the_middle_is_fatal_at_the_end_benign() {
        let (db, wal) = real_wal(4096);
        let frames = scan_bytes(&db, Some(&wal)).wal.unwrap().valid_frames;
        let mut middle = wal.clone();
        middle[frame_offset(4096, 2) + 8] ^= 0x01;
        assert_eq!(fatal_codes(&scan_bytes(&db, Some(&middle))), ["wal_frames_after_break"]);

        // A different salt on the last frame only: an older generation's leftover, benign, and
        // the transaction it committed is not committed any more.
        let mut last = wal.clone();
        last[frame_offset(4096, frames) + 8] ^= 0x01;
        let report = scan_bytes(&db, Some(&last));
        assert!(report.is_ok(), "{:#?}", report.findings);
        let summary = report.wal.unwrap();
        assert!(!summary.torn_tail);
        assert_eq!(summary.valid_frames, frames - 1);
    }

    #[test]
    fn torn_tail_is_benign() {
        let (db, wal) = real_wal(4096);
        let frames = scan_bytes(&db, Some(&wal)).wal.unwrap().valid_frames;
        // The file ends mid-frame.
        let cut = &wal[..wal.len() - 1000];
        let report = scan_bytes(&db, Some(cut));
        assert!(report.is_ok(), "{:#?}", report.findings);
        let summary = report.wal.clone().unwrap();
        assert!(summary.torn_tail);
        assert_eq!(summary.valid_frames, frames - 1);
        assert!(codes(&report).contains(&"wal_torn_tail"));
        // The last frame's page is garbage.
        let mut garbled = wal.clone();
        let at = frame_offset(4096, frames) + 24;
        garbled[at..at + 2048].fill(0x5a);
        let report = scan_bytes(&db, Some(&garbled));
        assert!(report.is_ok(), "{:#?}", report.findings);
        assert!(report.wal.unwrap().torn_tail);
    }

    #[test]
    fn bad_wal_headers() {
        let (db, wal) = real_wal(4096);
        let mut magic = wal.clone();
        magic[0] = 0;
        assert_eq!(codes(&scan_bytes(&db, Some(&magic))), ["wal_bad_magic"]);
        assert!(scan_bytes(&db, Some(&magic[..40])).is_ok(), "no frame behind the bad header");

        let mut cksum = wal.clone();
        cksum[13] ^= 0x01; // checkpoint sequence number, covered by the header checksum
        let report = scan_bytes(&db, Some(&cksum));
        assert_eq!(codes(&report), ["wal_bad_header_checksum"]);
        assert!(!report.is_ok());
        assert!(scan_bytes(&db, Some(&cksum[..32])).is_ok());

        assert_eq!(codes(&scan_bytes(&db, Some(&wal[..20]))), ["wal_truncated_header"]);
        assert!(scan_bytes(&db, Some(&wal[..20])).is_ok());

        let mut version = wal.clone();
        version[7] ^= 0x01;
        let sum = wal_checksum(version[3] & 1 == 1, &version[..24], (0, 0));
        version[24..28].copy_from_slice(&sum.0.to_be_bytes());
        version[28..32].copy_from_slice(&sum.1.to_be_bytes());
        assert_eq!(codes(&scan_bytes(&db, Some(&version))), ["wal_bad_version"]);
    }

    #[test]
    fn wal_of_another_page_size() {
        let (db, _) = real_wal(4096);
        let (_, other) = real_wal(1024);
        let report = scan_bytes(&db, Some(&other));
        assert_eq!(fatal_codes(&report), ["wal_page_size_mismatch"]);
    }

    #[test]
    fn database_header_checks() {
        let (db, _) = real_wal(4096);
        assert_eq!(codes(&scan_bytes(&[], None)), ["empty_database"]);
        assert_eq!(fatal_codes(&scan_bytes(&[], Some(&[1; 100]))), ["wal_beside_empty_db"]);
        assert_eq!(codes(&scan_bytes(b"hello, not a database", None)), ["not_a_database"]);
        assert_eq!(codes(&scan_bytes(&db[..50], None)), ["not_a_database"]);

        let with = |at: usize, bytes: &[u8]| {
            let mut copy = db.clone();
            copy[at..at + bytes.len()].copy_from_slice(bytes);
            copy
        };
        assert_eq!(codes(&scan_bytes(&with(16, &[3, 0]), None)), ["bad_page_size"]);
        assert_eq!(codes(&scan_bytes(&with(18, &[3]), None)), ["bad_file_format"]);
        assert!(scan_bytes(&with(20, &[255]), None).is_ok(), "4096 - 255 bytes are usable");
        let (mut small, _) = real_wal(512);
        small[20] = 33; // "if the page size is 512, then the reserved space size cannot exceed 32"
        assert_eq!(codes(&scan_bytes(&small, None)), ["bad_reserved_bytes"]);
        assert_eq!(codes(&scan_bytes(&with(21, &[64, 32, 33]), None)), ["bad_payload_fractions"]);
        assert_eq!(codes(&scan_bytes(&with(56, &[0, 0, 0, 9]), None)), ["bad_text_encoding"]);

        // The WAL-mode file above is page 1 only, its schema still in the WAL: encoding 0.
        assert_eq!(db[56..60], [0, 0, 0, 0]);
        let mut longer = db.clone();
        longer.extend_from_slice(&[0; 4096]);
        assert_eq!(codes(&scan_bytes(&longer, None)), ["bad_text_encoding", "size_mismatch"]);

        let plain = plain_db();
        assert!(scan_bytes(&plain, None).findings.is_empty());
        let mut short = plain.clone();
        short.truncate(plain.len() - 10);
        assert_eq!(codes(&scan_bytes(&short, None)), ["size_not_page_multiple"]);
        let mut longer = plain.clone();
        longer.extend_from_slice(&[0; 4096]);
        assert_eq!(codes(&scan_bytes(&longer, None)), ["size_mismatch"]);
        let mut truncated = plain.clone();
        truncated.truncate(plain.len() - 4096);
        assert_eq!(codes(&scan_bytes(&truncated, None)), ["size_mismatch"]);
    }

    #[test]
    fn page_size_field() {
        let mut h = [0u8; 100];
        for (raw, want) in [
            ([0x10, 0x00], Some(4096)),
            ([0, 1], Some(65536)),
            ([2, 0], Some(512)),
            ([1, 0], None),
            ([0x30, 0], None),
            ([0, 0], None),
        ] {
            h[16..18].copy_from_slice(&raw);
            assert_eq!(sqlite_page_size(&h), want, "{raw:?}");
        }
        assert_eq!(sqlite_page_size(&h[..17]), None);
    }

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

//! Judging the 100-byte database header the way SQLite's `lockBtree()` does, and the file's
//! size against it once the WAL is known. Does not own the WAL (`wal`) or the journal
//! (`journal`); the header field decoder shared by the crate is `format::header`.

use super::report::{ScanReport, Severity};
use crate::util::fmt::hex;

/// Length of the database header at the start of page 1.
pub(super) const DB_HEADER_LEN: usize = 100;
/// "Every valid SQLite database file begins with the following 16 bytes (in hex): 53 51 4c 69
/// 74 65 20 66 6f 72 6d 61 74 20 33 00." (fileformat2 §1.3.1)
const DB_MAGIC: &[u8; 16] = b"SQLite format 3\0";

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

pub(super) fn valid_page_size(size: u32) -> bool {
    (512..=65_536).contains(&size) && size.is_power_of_two()
}

pub(super) fn be32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// Judges the database header as `lockBtree()` does. Returns the text encoding field when the
/// header is a database header at all, for [`check_size`] to judge once the WAL is known.
pub(super) fn check_header(report: &mut ScanReport, db: &str, header: &[u8], db_size: u64) -> Option<u32> {
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
pub(super) fn check_size(report: &mut ScanReport, db: &str, hot_journal: bool, encoding: u32) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::scan::fixtures::{codes, fatal_codes, plain_db, real_wal};
    use crate::format::scan::scan_bytes;

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
}

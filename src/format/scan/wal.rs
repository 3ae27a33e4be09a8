//! Parsing the WAL the way `walIndexRecover()` does: the header and its checksum, every
//! frame's salts and cumulative checksum, the last commit, intact frames after a break and a
//! torn tail. Does not own the database header (`db_header`) or the report types (`report`).

use std::io::{self, Read};

use super::db_header::{be32, valid_page_size};
use super::report::{ScanReport, Severity, WalSummary};

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
pub(super) fn scan_wal<R: Read>(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::scan::fixtures::{codes, fatal_codes, real_wal};
    use crate::format::scan::scan_bytes;

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
}

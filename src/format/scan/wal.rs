//! Parsing the WAL the way `walIndexRecover()` does: the header and its checksum, every
//! frame's salts and cumulative checksum, the last commit, intact frames after a break and a
//! torn tail, and handing every frame of another generation to `stale`. Does not own the
//! database header (`db_header`), the checksum arithmetic (`checksum`), the judgement of
//! other generations' frames (`stale`) or the report types (`report`).

use std::io::{self, Read};

use super::checksum::{stored_checksum, wal_checksum};
use super::db_header::{be32, valid_page_size};
use super::report::{ScanReport, Severity, WalSummary};
use super::stale::{Generation, Image, StaleFrames};

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
    db: &Image<'_>,
    wal_again: &Image<'_>,
) -> io::Result<WalSummary> {
    let mut summary = WalSummary {
        size,
        page_size: 0,
        valid_frames: 0,
        committed_frames: 0,
        frames_after_break: 0,
        torn_tail: false,
        stale_frames: 0,
        stale_pages_checked: 0,
        stale_pages_not_in_db: 0,
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
    // The stored checksum and the salts of the previous frame (the header's for frame 1). In
    // the valid prefix the stored checksum is the running one; after a break an intact frame
    // still chains from it.
    let mut previous_stored = header_sum;
    let mut previous_salts = [0u8; 8];
    previous_salts.copy_from_slice(salts);
    // Frame number (1-based) and salts-matched flag of the first frame that failed.
    let mut first_break: Option<(u64, bool)> = None;
    let mut after_break_commits = 0u64;
    // An intact commit frame after the break with an intact frame chained from it: a commit the
    // writer completed (see `stale` on what an unfinished one leaves).
    let mut completed_commit_after_break: Option<u64> = None;
    let mut previous_intact_commit = false;
    // What a live writer overwrites next, as the scan saw it: the headers of the frames after the
    // last commit (where a new transaction starts, or an unfinished one goes on), the whole break
    // frame (the one it may be writing: header first, then the page) and the header after it.
    // Read again at the end, they show whether the WAL moved while it was scanned.
    let mut next_written: Vec<(u64, Vec<u8>)> = Vec::new();
    // Stale generations are compared with the database's pages, so only when both agree on the
    // page size (a mismatch is its own finding above).
    let mut stale = (db_page_size == Some(page_size)).then(|| {
        let mut header_start = [0u8; 12];
        header_start.copy_from_slice(&header[..12]);
        let mut header_salts = [0u8; 8];
        header_salts.copy_from_slice(salts);
        StaleFrames::new(Generation {
            header_start,
            salts: header_salts,
            sequence: be32(&header, 12),
            big_endian,
            page_size,
        })
    });

    for index in 1..=frames {
        reader.read_exact(&mut frame)?;
        let fh = &frame[..WAL_FRAME_HEADER_LEN as usize];
        let page = &frame[WAL_FRAME_HEADER_LEN as usize..];
        let stored = stored_checksum(fh, 16);
        let same_salts = &fh[8..16] == salts;
        let pgno = be32(fh, 0);
        let commit = be32(fh, 4) != 0;
        // walDecodeFrame(): salts, "A frame is only valid if the page number is greater than
        // zero", then the cumulative checksum over the frame header's first 8 bytes and the page.
        let sum = wal_checksum(big_endian, page, wal_checksum(big_endian, &fh[..8], previous_stored));
        let intact = pgno != 0 && sum == stored;
        if first_break.is_none() {
            if index == summary.committed_frames + 1 {
                next_written.clear();
            }
            next_written.push((index, if same_salts && intact { fh.to_vec() } else { frame.clone() }));
        } else if first_break.is_some_and(|(at, _)| index == at + 1) {
            next_written.push((index, fh.to_vec()));
        }
        match first_break {
            None if same_salts && intact => {
                summary.valid_frames = index;
                if commit {
                    summary.committed_frames = index;
                }
            }
            None => first_break = Some((index, same_salts)),
            Some(_) if same_salts && intact => {
                summary.frames_after_break += 1;
                after_break_commits += u64::from(commit);
                if previous_intact_commit && completed_commit_after_break.is_none() {
                    completed_commit_after_break = Some(index - 1);
                }
            }
            Some(_) => {}
        }
        // The break frame counts too: one whose checksum is intact but whose salts were damaged.
        previous_intact_commit = first_break.is_some() && intact && commit;
        if let Some(stale) = stale.as_mut() {
            if same_salts {
                stale.current(fh);
            } else if first_break.is_some() {
                let chained = intact && fh[8..16] == previous_salts;
                stale.stale(index, fh, page, chained, &previous_salts);
            }
        }
        previous_stored = stored;
        previous_salts.copy_from_slice(&fh[8..16]);
    }

    if let Some((at, _)) = first_break
        && summary.frames_after_break > 0
    {
        let dropped = summary.frames_after_break;
        if let Some(commit) = completed_commit_after_break {
            report.push(
                "wal_frames_after_break",
                Severity::Fatal,
                format!(
                    "`{wal}`: frame {at} of {frames} breaks the checksum/salt chain, yet {dropped} intact frames of \
                     the same generation follow it ({after_break_commits} of them commit frames, and the commit in \
                     frame {commit} was completed: the writer went on writing after it); SQLite's recovery stops \
                     at frame {at} and silently drops them all"
                ),
            );
        } else {
            let what = if after_break_commits == 0 {
                "none of them a commit frame: a transaction that never committed".to_owned()
            } else {
                format!(
                    "{after_break_commits} of them commit frames, each the last of its chain: at most a commit a \
                     killed writer had not finished (its commit frame written, the checksums of pages it rewrote \
                     not yet), which never completed"
                )
            };
            report.push(
                "wal_frames_after_break",
                Severity::Warning,
                format!(
                    "`{wal}`: frame {at} of {frames} breaks the checksum/salt chain and {dropped} intact frames of \
                     the same generation follow it, {what}; SQLite's recovery stops at frame {at} and drops them"
                ),
            );
        }
    }
    if let Some(stale) = stale {
        summary.stale_frames = stale.frames;
        let unmoved = || -> io::Result<bool> {
            if wal_again.bytes_at(0, header.len())?.as_deref() != Some(&header[..]) {
                return Ok(false);
            }
            for (index, seen) in &next_written {
                let at = WAL_HEADER_LEN + (index - 1) * frame_len;
                if wal_again.bytes_at(at, seen.len())?.as_deref() != Some(&seen[..]) {
                    return Ok(false);
                }
            }
            Ok(true)
        };
        (summary.stale_pages_checked, summary.stale_pages_not_in_db) = stale.finish(report, wal, db, unmoved)?;
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
    fn a_break_is_fatal_only_before_a_completed_commit() {
        let (db, wal) = real_wal(4096);
        let frames = scan_bytes(&db, Some(&wal)).wal.unwrap().valid_frames;
        let commit = |i: u64| be32(&wal, frame_offset(4096, i) + 4) != 0;
        assert!(commit(frames) && commit(frames - 1) && commit(frames - 2), "single-frame transactions");
        // Damage in the second to last frame: what SQLite drops after it is one transaction whose
        // commit frame ends the chain, which is also what a writer killed mid-commit leaves.
        let mut last = wal.clone();
        last[frame_offset(4096, frames - 1) + 24 + 100] ^= 0x01;
        let report = scan_bytes(&db, Some(&last));
        assert!(report.is_ok(), "{:#?}", report.findings);
        assert_eq!(codes(&report), ["wal_frames_after_break"]);
        assert_eq!(report.findings[0].severity, Severity::Warning);
        // One frame earlier: a commit after the break is followed by a frame chained from it, so
        // the writer completed it, and SQLite drops it.
        let mut earlier = wal.clone();
        earlier[frame_offset(4096, frames - 2) + 24 + 100] ^= 0x01;
        let report = scan_bytes(&db, Some(&earlier));
        assert_eq!(fatal_codes(&report), ["wal_frames_after_break"]);
        let message = &report.findings[0].message;
        assert!(message.contains(&format!("the commit in frame {} was completed", frames - 1)), "{message}");
        // A commit frame whose salts were damaged but whose checksum is intact, with a frame
        // chained from it: completed, so fatal, with a single transaction after it.
        let mut salt = wal.clone();
        salt[frame_offset(4096, frames - 1) + 8] ^= 0x01;
        assert_eq!(fatal_codes(&scan_bytes(&db, Some(&salt))), ["wal_frames_after_break"]);
    }

    #[test]
    fn old_commits_missing_from_a_wal_that_moved_while_scanned_are_inconclusive() {
        let (db, mut wal) = real_wal(4096);
        // A header rewritten over the committed frames: they are not in the database file.
        wal[16] ^= 0x10;
        let sum = wal_checksum(wal[3] & 1 == 1, &wal[..24], (0, 0));
        wal[24..28].copy_from_slice(&sum.0.to_be_bytes());
        wal[28..32].copy_from_slice(&sum.1.to_be_bytes());
        let scan = |again: &[u8]| {
            let mut report = ScanReport::default();
            let (db_image, wal_image) = (Image::Bytes(&db), Image::Bytes(again));
            scan_wal(&mut report, "WAL", &wal[..], wal.len() as u64, Some(4096), &db_image, &wal_image).unwrap();
            report
        };
        assert_eq!(fatal_codes(&scan(&wal)), ["wal_header_reset"]);
        // Read again after the database file, frame 1 is not what the scan saw: a live writer
        // wrote there meanwhile, and may have checkpointed it.
        let mut moved = wal.clone();
        moved[frame_offset(4096, 1) + 16] ^= 0x01;
        let report = scan(&moved);
        assert!(report.is_ok(), "{:#?}", report.findings);
        assert_eq!(codes(&report), ["wal_changed_during_scan"]);
        let mut restarted = wal.clone();
        restarted[16] ^= 0x01;
        assert_eq!(codes(&scan(&restarted)), ["wal_changed_during_scan"]);
        // The writer finished the page of the frame it was writing, or wrote the next one.
        let mut page_done = wal.clone();
        page_done[frame_offset(4096, 1) + 24 + 4000] ^= 0x01;
        assert_eq!(codes(&scan(&page_done)), ["wal_changed_during_scan"]);
        let mut next = wal.clone();
        next[frame_offset(4096, 2) + 8] ^= 0x01;
        assert_eq!(codes(&scan(&next)), ["wal_changed_during_scan"]);
        // Further on, nothing the writer writes next: the verdict stands.
        let mut further = wal.clone();
        further[frame_offset(4096, 5) + 24 + 10] ^= 0x01;
        assert_eq!(fatal_codes(&scan(&further)), ["wal_header_reset"]);
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

//! Frames of other WAL generations beyond the valid prefix (salts other than the header's),
//! and whether the transactions they commit are already in the database file: the
//! `wal_header_reset` and `wal_stale_commits` findings. Does not walk the WAL itself (`wal`
//! feeds it frame by frame) or own the checksum (`checksum`).
//!
//! SQLite reuses a WAL after a complete checkpoint: the next writer rewrites the header with
//! salt-1 plus one, a new random salt-2 and the checkpoint sequence plus one (`walRestartHdr()`,
//! `walFrames()`; or with new random salts, see below), then overwrites frames from frame 1 on. Frames of the older generation stay
//! behind the new valid prefix, and recovery ignores them. That is honest only because
//! `walRestartLog()` restarts nothing before every frame has been copied into the database file
//! (`nBackfill == mxFrame`) and that file synced. So old frames are dropped committed data when
//! the database file does NOT hold what they commit, and the generation they belong to is one
//! whose pages must be there:
//!
//! - a run of frames starting at frame 1 (the header's salts match no frame): every generation
//!   writes from frame 1, so nothing newer wrote any frame, and the run is the whole of the
//!   generation before the header (or of a foreign one); nothing can have superseded it;
//! - the run that starts the region of the generation just before the header's (salt-1 exactly
//!   one less: `walRestartHdr()` takes salt-1 from the shared wal-index, so every connection
//!   increments the same value): that generation was checkpointed in full, and only the
//!   header's own frames (excluded from the comparison) can have changed those pages since.
//!
//! Other runs are not judged. A generation two or more back may have had its pages changed by
//! a later one that was overwritten since, so a difference proves nothing. And salts unrelated
//! to the header's prove nothing either: a connection that did not run recovery itself starts
//! with a checkpoint sequence of 0 and draws new random salts when it writes the header of a
//! WAL another connection restarted (`walFrames()`: `if( pWal->nCkpt==0 )
//! sqlite3_randomness(...)`), so neither the salts nor the sequence number count restarts.
//!
//! Only frames whose checksum chains from the frame before (or, for frame 1, from the header it
//! was written under, rebuilt by [`first_frame_sequence`]) count, so a torn or half-overwritten
//! frame never does. And a run counts only when at least one of its commits is certainly a
//! completed one: the run starts at frame 1 with that frame verified, or one of its commit
//! frames is followed by a frame chained from it. A run whose only commit is its last frame
//! is what a writer killed while committing leaves when its transaction rewrote a page it had
//! already spilled: the commit frame is written, the checksums of the rewritten frames are not
//! yet fixed (`walRewriteChecksums()` runs after the commit frame is appended), so the chain
//! from the valid prefix breaks but the frames after the break chain from each other. That
//! transaction never committed.

use std::cell::OnceCell;
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::io;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::checksum::first_frame_sequence;
use super::db_header::be32;
use super::report::{ScanReport, Severity};
use crate::sys::sqlite::VfsFile;

/// A file of the set read at random offsets: the database file the frames are compared with,
/// or the WAL read again to see whether it moved while it was scanned.
pub(super) enum Image<'a> {
    /// An in-memory image ([`super::scan_bytes`]).
    Bytes(&'a [u8]),
    /// The original file at this path, opened read-only through SQLite's `unix` VFS when first
    /// read (so a live file is read as it is then, at its size then, and a WAL deleted or
    /// replaced since the scan began is seen as such).
    Path(&'a Path, OnceCell<Option<VfsFile>>),
}

impl<'a> Image<'a> {
    /// The original file at `path`, not opened yet.
    pub(super) fn path(path: &'a Path) -> Self {
        Image::Path(path, OnceCell::new())
    }

    /// `len` bytes at `offset`, or `None` when the file does not hold all of them (or, for a
    /// path, no longer exists).
    pub(super) fn bytes_at(&self, offset: u64, len: usize) -> io::Result<Option<Vec<u8>>> {
        let mut buf = vec![0u8; len];
        let n = match self {
            Image::Bytes(bytes) => {
                let Some(src) = usize::try_from(offset).ok().and_then(|at| bytes.get(at..at.checked_add(len)?)) else {
                    return Ok(None);
                };
                buf.copy_from_slice(src);
                len
            }
            Image::Path(path, file) => {
                if file.get().is_none() {
                    let opened = match VfsFile::open(None, path) {
                        Ok(f) => Some(f),
                        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                        Err(e) => return Err(e),
                    };
                    let _ = file.set(opened);
                }
                match file.get().and_then(Option::as_ref) {
                    Some(f) => f.read_at(&mut buf, offset)?,
                    None => return Ok(None),
                }
            }
        };
        Ok((n == len).then_some(buf))
    }

    /// Page `pgno` (1-based) of `page_size` bytes, or `None` when the file does not hold all of it.
    fn page(&self, pgno: u32, page_size: u32) -> io::Result<Option<Vec<u8>>> {
        self.bytes_at(u64::from(pgno.saturating_sub(1)) * u64::from(page_size), page_size as usize)
    }
}

/// What the WAL's header says about the generation it belongs to.
pub(super) struct Generation {
    /// Bytes 0..12 of the header: magic, version, page size.
    pub(super) header_start: [u8; 12],
    /// The header's salts (bytes 16..24).
    pub(super) salts: [u8; 8],
    /// The header's checkpoint sequence number (bytes 12..16).
    pub(super) sequence: u32,
    /// The checksum byte order.
    pub(super) big_endian: bool,
    /// The WAL's (and the database's) page size.
    pub(super) page_size: u32,
}

/// Collects the stale frames of one WAL as `wal` walks it.
pub(super) struct StaleFrames {
    generation: Generation,
    /// Page numbers of every frame carrying the header's salts: the pages the current
    /// generation may have changed (and a checkpoint may have copied) since.
    current_pages: HashSet<u32>,
    /// The smallest database size a commit frame carrying the header's salts set: a complete
    /// checkpoint of the current generation truncates the file to its size.
    current_min_size: Option<u32>,
    open: Option<Run>,
    judged: Vec<Run>,
    /// Frames after the valid prefix with other salts than the header's.
    pub(super) frames: u64,
}

/// A run of frames of one generation, each chained from the one before.
struct Run {
    first: u64,
    salts: [u8; 8],
    /// The run starts at frame 1.
    at_frame_one: bool,
    /// The checkpoint sequence number of the header frame 1 was chained from.
    sequence: Option<u32>,
    /// Pages are collected: the run may be judged (see the module docs).
    collect: bool,
    /// Digests of the pages of verified frames since the last commit, then up to it.
    pending: HashMap<u32, [u8; 32]>,
    committed: HashMap<u32, [u8; 32]>,
    commits: u64,
    /// A verified commit frame is followed by a frame chained from it.
    continued: bool,
    last_was_commit: bool,
    /// Database size in pages after the last verified commit.
    db_pages: u32,
    last_commit_frame: u64,
}

impl Run {
    fn judged(&self) -> bool {
        self.collect && self.commits > 0 && ((self.at_frame_one && self.sequence.is_some()) || self.continued)
    }

    fn verified(&mut self, index: u64, frame_header: &[u8], page: &[u8]) {
        let commit = be32(frame_header, 4);
        if self.last_was_commit {
            self.continued = true;
        }
        if self.collect {
            self.pending.insert(be32(frame_header, 0), Sha256::digest(page).into());
        }
        if commit != 0 {
            self.commits += 1;
            self.committed.extend(self.pending.drain());
            self.db_pages = commit;
            self.last_commit_frame = index;
        }
        self.last_was_commit = commit != 0;
    }
}

impl StaleFrames {
    pub(super) fn new(generation: Generation) -> Self {
        StaleFrames {
            generation,
            current_pages: HashSet::new(),
            current_min_size: None,
            open: None,
            judged: Vec::new(),
            frames: 0,
        }
    }

    /// A frame carrying the header's salts, anywhere in the WAL. It ends any stale run.
    pub(super) fn current(&mut self, frame_header: &[u8]) {
        self.current_pages.insert(be32(frame_header, 0));
        let size = be32(frame_header, 4);
        if size != 0 {
            self.current_min_size = Some(self.current_min_size.map_or(size, |min| min.min(size)));
        }
        self.close();
    }

    /// A frame after the valid prefix with other salts than the header's. `chained`: its
    /// page number is nonzero, its salts equal the previous frame's and its checksum chains
    /// from that frame's stored checksum.
    pub(super) fn stale(&mut self, index: u64, frame_header: &[u8], page: &[u8], chained: bool, prev_salts: &[u8]) {
        self.frames += 1;
        if chained && let Some(run) = self.open.as_mut() {
            run.verified(index, frame_header, page);
            return;
        }
        self.close();
        let salts: [u8; 8] = frame_header[8..16].try_into().unwrap_or_default();
        let g = &self.generation;
        let sequence = (index == 1 && be32(frame_header, 0) != 0)
            .then(|| first_frame_sequence(g.big_endian, &g.header_start, frame_header, page))
            .flatten();
        let collect = index == 1 || (prev_salts != salts && self.previous_generation(&salts));
        let mut run = Run {
            first: index,
            salts,
            at_frame_one: index == 1,
            sequence,
            collect,
            pending: HashMap::new(),
            committed: HashMap::new(),
            commits: 0,
            continued: false,
            last_was_commit: false,
            db_pages: 0,
            last_commit_frame: 0,
        };
        if sequence.is_some() {
            run.verified(index, frame_header, page);
        }
        self.open = Some(run);
    }

    /// Salts of the generation just before the header's: a restart writes salt-1 plus one.
    fn previous_generation(&self, salts: &[u8; 8]) -> bool {
        be32(&self.generation.salts, 0).wrapping_sub(be32(salts, 0)) == 1
    }

    fn close(&mut self) {
        if let Some(run) = self.open.take()
            && run.judged()
        {
            self.judged.push(run);
        }
    }

    /// Compares what the judged runs commit with the database file and reports the commits it
    /// does not hold. Returns how many pages were compared and how many of them differ.
    ///
    /// `unmoved` says whether the WAL is still as it was scanned. A live writer may append over
    /// old frames after the scan read them and checkpoint what it appended before the scan reads
    /// the database file; a difference is only reported when the WAL did not move meanwhile,
    /// otherwise it is a `wal_changed_during_scan` warning (scan again once the writer is idle).
    pub(super) fn finish(
        mut self,
        report: &mut ScanReport,
        wal: &str,
        db: &Image<'_>,
        unmoved: impl FnOnce() -> io::Result<bool>,
    ) -> io::Result<(u64, u64)> {
        self.close();
        let page_size = self.generation.page_size;
        let (mut checked, mut total) = (0u64, 0u64);
        let mut differing: Vec<(&Run, Vec<u32>)> = Vec::new();
        for run in &self.judged {
            let mut missing: Vec<u32> = Vec::new();
            let mut pages: Vec<(&u32, &[u8; 32])> = run.committed.iter().collect();
            pages.sort_unstable_by_key(|(pgno, _)| **pgno);
            for (&pgno, digest) in pages {
                if self.current_pages.contains(&pgno) || pgno > run.db_pages {
                    continue;
                }
                match db.page(pgno, page_size)? {
                    Some(held) if Sha256::digest(&held).as_slice() == digest.as_slice() => {}
                    Some(_) => missing.push(pgno),
                    // Past the end of the file: gone, unless the current generation shrank the
                    // database below it (its complete checkpoint truncates the file).
                    None if self.current_min_size.is_some_and(|size| size < pgno) => continue,
                    None => missing.push(pgno),
                }
                checked += 1;
            }
            if !missing.is_empty() {
                total += missing.len() as u64;
                differing.push((run, missing));
            }
        }
        if differing.is_empty() {
            return Ok((checked, 0));
        }
        if !unmoved()? {
            report.push(
                "wal_changed_during_scan",
                Severity::Warning,
                format!(
                    "`{wal}`: {total} pages that older frames commit differ from the database file, but the WAL \
                     changed while it was scanned (a live writer): inconclusive; scan again while the writer is idle"
                ),
            );
            return Ok((checked, 0));
        }
        for (run, missing) in &differing {
            self.report_run(report, wal, run, missing);
        }
        Ok((checked, total))
    }

    fn report_run(&self, report: &mut ScanReport, wal: &str, run: &Run, missing: &[u32]) {
        let g = &self.generation;
        let mut listed = missing.iter().take(8).map(u32::to_string).collect::<Vec<_>>().join(", ");
        if missing.len() > 8 {
            let _ = write!(listed, ", ...");
        }
        let (header_salt1, salt1) = (be32(&g.salts, 0), be32(&run.salts, 0));
        let commits = format!(
            "frames {}..={} hold {} committed transaction{} of salts {:08x}-{:08x}",
            run.first,
            run.last_commit_frame,
            run.commits,
            if run.commits == 1 { "" } else { "s" },
            salt1,
            be32(&run.salts, 4)
        );
        let not_held = format!(
            "the database file does not hold {} of the pages they commit (page{} {listed})",
            missing.len(),
            if missing.len() == 1 { "" } else { "s" }
        );
        if run.at_frame_one {
            let sequence = run.sequence.map_or(String::new(), |s| format!(", checkpoint sequence {s}"));
            report.push(
                "wal_header_reset",
                Severity::Fatal,
                format!(
                    "`{wal}`: the header's salts ({header_salt1:08x}-{:08x}, checkpoint sequence {}) match none of \
                     its frames, yet {commits}{sequence}, and {not_held}; SQLite treats the WAL as empty and \
                     silently drops those commits (a header rewritten over committed frames; a checkpoint-and-restart \
                     rewrites it only after copying every frame into the database)",
                    be32(&g.salts, 4),
                    g.sequence
                ),
            );
        } else {
            report.push(
                "wal_stale_commits",
                Severity::Fatal,
                format!(
                    "`{wal}`: after the valid prefix, {commits}: the generation before the header's (salt-1 \
                     {header_salt1:08x} is one more), which SQLite restarts only once all of it is in the database; \
                     {not_held}; SQLite ignores those frames, so their commits are silently lost"
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::scan::checksum::wal_checksum;
    use crate::format::scan::fixtures::{fatal_codes, real_wal};
    use crate::format::scan::scan_bytes;

    const PAGE: usize = 4096;

    fn at(index: usize) -> usize {
        32 + (index - 1) * (24 + PAGE)
    }

    fn frames(wal: &[u8]) -> usize {
        (wal.len() - 32) / (24 + PAGE)
    }

    /// What a restart leaves: a header with `sequence` and `salt1` (salt-2 new), frames
    /// `1..=new.len()` rewritten by the new generation (page number and commit size from `new`,
    /// re-salted and re-chained from that header), the old generation's frames after them as
    /// they were.
    fn restarted(wal: &[u8], sequence: u32, salt1: u32, new: &[(u32, u32)]) -> Vec<u8> {
        let mut wal = wal.to_vec();
        let big_endian = wal[3] & 1 == 1;
        wal[12..16].copy_from_slice(&sequence.to_be_bytes());
        wal[16..20].copy_from_slice(&salt1.to_be_bytes());
        wal[20..24].copy_from_slice(&0x0123_4567u32.to_be_bytes());
        let mut sum = wal_checksum(big_endian, &wal[..24], (0, 0));
        wal[24..28].copy_from_slice(&sum.0.to_be_bytes());
        wal[28..32].copy_from_slice(&sum.1.to_be_bytes());
        for (index, (pgno, size)) in (1..).zip(new) {
            let f = at(index);
            let salts: [u8; 8] = wal[16..24].try_into().unwrap();
            wal[f..f + 4].copy_from_slice(&pgno.to_be_bytes());
            wal[f + 4..f + 8].copy_from_slice(&size.to_be_bytes());
            wal[f + 8..f + 16].copy_from_slice(&salts);
            sum = wal_checksum(big_endian, &wal[f + 24..f + 24 + PAGE], wal_checksum(big_endian, &wal[f..f + 8], sum));
            wal[f + 16..f + 20].copy_from_slice(&sum.0.to_be_bytes());
            wal[f + 20..f + 24].copy_from_slice(&sum.1.to_be_bytes());
        }
        wal
    }

    /// `n` new-generation frames writing pages no old frame writes, none of them a commit.
    fn unrelated(n: usize) -> Vec<(u32, u32)> {
        (1..=n as u32).map(|i| (10_000 + i, 0)).collect()
    }

    /// The real fixture: a database file holding page 1 only, a WAL of single-row transactions
    /// (checkpoint sequence 0), and its salt-1.
    fn fixture() -> (Vec<u8>, Vec<u8>, u32) {
        let (db, wal) = real_wal(4096);
        let salt1 = be32(&wal, 16);
        (db, wal, salt1)
    }

    /// The database image a complete checkpoint of `wal` leaves: for every page the last
    /// frame's content, the file cut to the last commit's size.
    fn checkpointed(db: &[u8], wal: &[u8]) -> Vec<u8> {
        let mut image = db.to_vec();
        let mut size = 0;
        for index in 1..=frames(wal) {
            let f = at(index);
            let pgno = be32(wal, f) as usize;
            image.resize(image.len().max(pgno * PAGE), 0);
            image[(pgno - 1) * PAGE..pgno * PAGE].copy_from_slice(&wal[f + 24..f + 24 + PAGE]);
            size = size.max(be32(wal, f + 4) as usize);
        }
        image.truncate(size * PAGE);
        image
    }

    #[test]
    fn a_header_that_matches_no_frame_over_frames_the_db_lacks_is_fatal() {
        let (db, wal, salt1) = fixture();
        assert!(scan_bytes(&db, Some(&wal)).is_ok());
        for (sequence, new_salt1) in [(1, salt1.wrapping_add(1)), (0, salt1 ^ 0x5555_0000), (9, salt1.wrapping_add(7))]
        {
            let report = scan_bytes(&db, Some(&restarted(&wal, sequence, new_salt1, &[])));
            assert_eq!(fatal_codes(&report), ["wal_header_reset"], "{sequence} {new_salt1:x}: {:#?}", report.findings);
            assert!(report.wal.unwrap().stale_pages_not_in_db > 0);
        }
        // Frame 1 damaged too: what follows still chains, and a commit followed by more frames
        // is one that completed.
        let mut damaged = restarted(&wal, 1, salt1.wrapping_add(1), &[]);
        damaged[at(1) + 24 + 10] ^= 0x01;
        assert_eq!(fatal_codes(&scan_bytes(&db, Some(&damaged))), ["wal_header_reset"]);
        // With every page in the database file (a complete checkpoint before the restart), the
        // same WAL loses nothing.
        let report = scan_bytes(&checkpointed(&db, &wal), Some(&restarted(&wal, 1, salt1.wrapping_add(1), &[])));
        assert!(report.is_ok(), "{:#?}", report.findings);
        let summary = report.wal.unwrap();
        assert_eq!((summary.stale_frames as usize, summary.stale_pages_not_in_db), (frames(&wal), 0));
    }

    #[test]
    fn only_the_previous_generation_is_judged_after_the_valid_prefix() {
        let (db, wal, salt1) = fixture();
        let new = unrelated(frames(&wal) / 2);
        // The generation just before the header's was checkpointed in full before the restart,
        // so its commits must be in the database file; here they are not.
        let previous = restarted(&wal, 1, salt1.wrapping_add(1), &new);
        let report = scan_bytes(&db, Some(&previous));
        assert_eq!(report.wal.as_ref().unwrap().valid_frames as usize, new.len());
        assert_eq!(fatal_codes(&report), ["wal_stale_commits"], "{:#?}", report.findings);
        assert!(report.fatal().next().unwrap().message.contains("the generation before the header's"));
        // The same frames beside the checkpointed image: honest.
        assert!(scan_bytes(&checkpointed(&db, &wal), Some(&previous)).is_ok());
        // Two generations back: a generation in between may have changed those pages and been
        // overwritten since, so a difference proves nothing. Nor do unrelated salts, whatever the
        // header's checkpoint sequence says (a connection that restarts a WAL another one
        // checkpointed draws new random salts and writes sequence 0).
        for (sequence, new_salt1) in [(5, salt1.wrapping_add(2)), (1, salt1.wrapping_add(2)), (0, salt1 ^ 0x8000_0000)]
        {
            let report = scan_bytes(&db, Some(&restarted(&wal, sequence, new_salt1, &new)));
            assert!(report.is_ok(), "{sequence} {new_salt1:x}: {:#?}", report.findings);
            let summary = report.wal.unwrap();
            assert!(summary.stale_frames > 0 && summary.stale_pages_checked == 0, "{summary:?}");
        }
    }

    #[test]
    fn a_run_whose_only_commit_ends_it_is_not_judged() {
        // A writer killed mid-commit (its commit frame written, its chain broken before it)
        // leaves frames like these: one commit, the last frame of its run.
        let (db, wal, salt1) = fixture();
        let total = frames(&wal);
        assert!((total - 1..=total).all(|i| be32(&wal, at(i) + 4) != 0), "single-frame transactions");
        let report = scan_bytes(&db, Some(&restarted(&wal, 1, salt1.wrapping_add(1), &unrelated(total - 2))));
        assert!(report.is_ok(), "{:#?}", report.findings);
        assert_eq!(report.wal.unwrap().stale_frames, 2);
        // One frame more, and a commit is followed by a frame chained from it: it completed.
        let report = scan_bytes(&db, Some(&restarted(&wal, 1, salt1.wrapping_add(1), &unrelated(total - 3))));
        assert_eq!(fatal_codes(&report), ["wal_stale_commits"]);
    }

    #[test]
    fn pages_the_current_generation_writes_or_truncates_are_not_compared() {
        let (db, wal, salt1) = fixture();
        let total = frames(&wal);
        let keep = total / 2;
        let mut old: Vec<u32> = (keep + 1..=total).map(|i| be32(&wal, at(i))).collect();
        old.sort_unstable();
        old.dedup();
        assert!(old.len() <= keep);
        assert!(old.iter().any(|&p| p > 1), "the old frames write pages past the database file's end");
        let baseline = restarted(&wal, 1, salt1.wrapping_add(1), &unrelated(keep));
        assert_eq!(fatal_codes(&scan_bytes(&db, Some(&baseline))), ["wal_stale_commits"]);
        // The new generation writes each of those pages: its checkpoint may have overwritten them.
        let mut rewrites: Vec<(u32, u32)> = old.iter().map(|&p| (p, 0)).collect();
        rewrites.resize(keep, (20_000, 0));
        let report = scan_bytes(&db, Some(&restarted(&wal, 1, salt1.wrapping_add(1), &rewrites)));
        assert!(report.is_ok(), "{:#?}", report.findings);
        // It commits page 1 and a one-page database: its checkpoint truncated the rest away.
        let mut truncates = unrelated(keep);
        truncates[0] = (1, 1);
        let report = scan_bytes(&db, Some(&restarted(&wal, 1, salt1.wrapping_add(1), &truncates)));
        assert!(report.is_ok(), "{:#?}", report.findings);
    }
}

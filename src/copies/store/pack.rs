//! One pack file of the page store: its byte layout, writing one as pages stream in, and
//! reading its index and its pages back.
//!
//! Owns the pack format and nothing else: which pages go into a pack, which restore points
//! use it and when it may be deleted are the store's ([`super::PageStore`]).
//!
//! # Layout (version 1)
//!
//! ```text
//! data      the stored pages, one after another (each raw or one zstd frame)
//! index     count × 48 bytes: page SHA-256 (32), offset u64, stored length u32,
//!           codec u8 (0 raw, 1 zstd), 3 zero bytes
//! footer    24 bytes: index offset u64, count u32, page size u32, magic "WPACK\0\0\x01"
//! ```
//!
//! Integers are little-endian. A pack is written to a temporary file as pages arrive
//! (nothing is buffered whole), synced, and renamed to `<SHA-256 of its bytes>.pack`: its
//! name proves its content, and a pack that exists is complete.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::util::atomic;

/// The footer's last bytes: format marker and version.
pub const MAGIC: [u8; 8] = *b"WPACK\0\0\x01";
/// Bytes of one index entry.
pub const ENTRY_LEN: usize = 48;
/// Bytes of the footer.
pub const FOOTER_LEN: usize = 24;
/// Suffix of pack files.
pub const EXT: &str = "pack";

/// How a stored page is encoded.
pub const RAW: u8 = 0;
/// A zstd frame.
pub const ZSTD: u8 = 1;

/// A page's SHA-256.
pub type PageHash = [u8; 32];

/// One page in a pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// SHA-256 of the page's bytes (uncompressed).
    pub sha256: PageHash,
    /// Where its stored bytes start in the pack.
    pub offset: u64,
    /// How many stored bytes.
    pub len: u32,
    /// [`RAW`] or [`ZSTD`].
    pub codec: u8,
}

/// A pack's index, as read from its footer.
#[derive(Debug, Clone)]
pub struct Index {
    /// The page size every entry decodes to.
    pub page_size: u32,
    /// Entries in pack order.
    pub entries: Vec<Entry>,
    /// Bytes of the pack file.
    pub file_len: u64,
}

/// Reads the index of the pack at `path`.
///
/// # Errors
/// I/O errors; `InvalidData` for a file that is not a well-formed pack.
pub fn read_index(file: &File) -> io::Result<Index> {
    let bad = |why: &str| io::Error::new(io::ErrorKind::InvalidData, format!("not a well-formed pack: {why}"));
    let len = file.metadata()?.len();
    if len < FOOTER_LEN as u64 {
        return Err(bad("shorter than its footer"));
    }
    let mut footer = [0u8; FOOTER_LEN];
    file.read_exact_at(&mut footer, len - FOOTER_LEN as u64)?;
    if footer[16..24] != MAGIC {
        return Err(bad("no pack marker"));
    }
    let at = u64::from_le_bytes(footer[0..8].try_into().unwrap_or_default());
    let count = u32::from_le_bytes(footer[8..12].try_into().unwrap_or_default());
    let page_size = u32::from_le_bytes(footer[12..16].try_into().unwrap_or_default());
    let index_len = u64::from(count) * ENTRY_LEN as u64;
    if at.checked_add(index_len) != Some(len - FOOTER_LEN as u64) || !(512..=65536).contains(&page_size) {
        return Err(bad("its footer does not describe the file"));
    }
    let mut raw = vec![0u8; usize::try_from(index_len).map_err(|_| bad("index too large"))?];
    file.read_exact_at(&mut raw, at)?;
    let mut entries = Vec::with_capacity(count as usize);
    for e in raw.chunks_exact(ENTRY_LEN) {
        let entry = Entry {
            sha256: e[0..32].try_into().unwrap_or_default(),
            offset: u64::from_le_bytes(e[32..40].try_into().unwrap_or_default()),
            len: u32::from_le_bytes(e[40..44].try_into().unwrap_or_default()),
            codec: e[44],
        };
        if entry.offset.saturating_add(u64::from(entry.len)) > at || entry.codec > ZSTD {
            return Err(bad("an entry points outside the data"));
        }
        entries.push(entry);
    }
    Ok(Index { page_size, entries, file_len: len })
}

/// Decodes one stored page into `out` (exactly one page) and checks its SHA-256.
///
/// # Errors
/// `InvalidData` when the bytes do not decode to a page of that hash; read errors.
pub fn read_page(file: &File, e: &Entry, page_size: u32, scratch: &mut Vec<u8>, out: &mut [u8]) -> io::Result<()> {
    read_page_unchecked(file, e, page_size, scratch, out)?;
    if Sha256::digest(&out[..]).as_slice() != e.sha256 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "a page does not hash as its index records"));
    }
    Ok(())
}

/// [`read_page`] without the hash check (the caller hashes the whole file instead).
///
/// # Errors
/// As [`read_page`], but a page that decodes to other bytes is not noticed here.
pub fn read_page_unchecked(
    file: &File,
    e: &Entry,
    page_size: u32,
    scratch: &mut Vec<u8>,
    out: &mut [u8],
) -> io::Result<()> {
    debug_assert_eq!(out.len(), page_size as usize);
    if e.codec == RAW && e.len == page_size {
        return file.read_exact_at(out, e.offset);
    }
    scratch.resize(e.len as usize, 0);
    file.read_exact_at(scratch, e.offset)?;
    decode(e, scratch, out)
}

/// Decodes `stored`, the stored bytes of entry `e`, into `out` (exactly one page), without
/// checking its hash.
///
/// # Errors
/// `InvalidData` when the bytes do not decode to one page.
pub fn decode(e: &Entry, stored: &[u8], out: &mut [u8]) -> io::Result<()> {
    let bad = |why: &str| io::Error::new(io::ErrorKind::InvalidData, why.to_owned());
    if stored.len() != e.len as usize {
        return Err(bad("a page's stored bytes are cut short"));
    }
    match e.codec {
        RAW => {
            if stored.len() != out.len() {
                return Err(bad("a raw page of the wrong length"));
            }
            out.copy_from_slice(stored);
            Ok(())
        }
        _ => {
            // One decompression context per thread: making one per page costs more than
            // decompressing it.
            thread_local! {
                static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
                    const { std::cell::RefCell::new(None) };
            }
            let n = DECOMPRESSOR
                .with(|d| {
                    let mut d = d.borrow_mut();
                    if d.is_none() {
                        *d = Some(zstd::bulk::Decompressor::new()?);
                    }
                    d.as_mut().map_or(Err(io::ErrorKind::Other.into()), |d| d.decompress_to_buffer(stored, out))
                })
                .map_err(|_| bad("a page does not decompress"))?;
            if n != out.len() {
                return Err(bad("a page decompresses to the wrong length"));
            }
            Ok(())
        }
    }
}

/// Smallest read ahead of a span, and the largest it grows to while reads stay sequential.
const SPAN_MIN: usize = 32 << 10;
const SPAN_MAX: usize = 1 << 20;
/// Packs read at once (a restore point after a small change alternates between an old pack
/// and a few new ones).
const SPAN_SLOTS: usize = 4;

/// The stored bytes of pages, read in large pieces: the entries of a run lie back to back
/// in their pack, so rebuilding a restore point makes one read per piece of a run instead
/// of one per page. Reads ahead grow while they stay sequential and shrink when they jump,
/// so a single page taken from another pack costs a small read. Packs are told apart by
/// descriptor: keep every file passed in open while the `Spans` is in use.
#[derive(Default)]
pub struct Spans {
    slots: Vec<Span>,
    tick: u64,
}

struct Span {
    fd: std::os::fd::RawFd,
    start: u64,
    buf: Vec<u8>,
    ahead: usize,
    used: u64,
}

impl Spans {
    /// The stored bytes of entry `e` of the pack open as `file` (of `file_len` bytes).
    ///
    /// # Errors
    /// Read errors; `UnexpectedEof` when the pack is shorter than its index says.
    pub fn stored(&mut self, file: &File, file_len: u64, e: &Entry) -> io::Result<&[u8]> {
        use std::os::fd::AsRawFd;
        self.tick += 1;
        let fd = file.as_raw_fd();
        let end = e.offset.saturating_add(u64::from(e.len));
        let i = match self.slots.iter().position(|s| s.fd == fd) {
            Some(i) => i,
            None if self.slots.len() < SPAN_SLOTS => {
                self.slots.push(Span { fd, start: 0, buf: Vec::new(), ahead: SPAN_MIN, used: 0 });
                self.slots.len() - 1
            }
            None => {
                let i = (0..self.slots.len()).min_by_key(|&i| self.slots[i].used).unwrap_or(0);
                self.slots[i] = Span { fd, start: 0, buf: Vec::new(), ahead: SPAN_MIN, used: 0 };
                i
            }
        };
        let span = &mut self.slots[i];
        span.used = self.tick;
        let held = span.start..span.start + span.buf.len() as u64;
        if !(held.contains(&e.offset) && end <= held.end) {
            span.ahead = if e.offset == held.end { (span.ahead * 2).min(SPAN_MAX) } else { SPAN_MIN };
            let want = (e.len as usize).max(span.ahead) as u64;
            let len = want.min(file_len.saturating_sub(e.offset)).max(u64::from(e.len));
            span.buf.resize(usize::try_from(len).map_err(|_| io::ErrorKind::InvalidData)?, 0);
            file.read_exact_at(&mut span.buf, e.offset)?;
            span.start = e.offset;
        }
        let at = usize::try_from(e.offset - span.start).map_err(|_| io::ErrorKind::InvalidData)?;
        Ok(&span.buf[at..at + e.len as usize])
    }
}

/// A pack being written: pages are appended, then [`PackWriter::finish`] publishes it.
pub struct PackWriter {
    dir: PathBuf,
    tmp: PathBuf,
    out: BufWriter<File>,
    whole: Sha256,
    at: u64,
    page_size: u32,
    entries: Vec<Entry>,
    compressor: Option<zstd::bulk::Compressor<'static>>,
    buf: Vec<u8>,
}

impl std::fmt::Debug for PackWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackWriter").field("tmp", &self.tmp).field("entries", &self.entries.len()).finish()
    }
}

impl PackWriter {
    /// Starts a pack in `dir`; `level` 0 stores pages raw, otherwise the zstd level.
    ///
    /// # Errors
    /// I/O errors creating the temporary file; an invalid zstd level.
    pub fn create(dir: &Path, page_size: u32, level: i32) -> io::Result<PackWriter> {
        let tmp = atomic::temp_path_for(&dir.join(format!("new.{EXT}")));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(&tmp)?;
        let compressor = if level == 0 { None } else { Some(zstd::bulk::Compressor::new(level)?) };
        Ok(PackWriter {
            dir: dir.to_owned(),
            tmp,
            out: BufWriter::with_capacity(1 << 20, file),
            whole: Sha256::new(),
            at: 0,
            page_size,
            entries: Vec::new(),
            compressor,
            buf: vec![0u8; zstd::zstd_safe::compress_bound(page_size as usize)],
        })
    }

    /// Pages written so far.
    fn count(&self) -> u32 {
        u32::try_from(self.entries.len()).unwrap_or(u32::MAX)
    }

    fn emit(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.whole.update(bytes);
        Ok(())
    }

    /// Appends one page (its SHA-256 already computed); returns its entry number.
    ///
    /// # Errors
    /// I/O errors.
    pub fn push(&mut self, page: &[u8], sha256: PageHash) -> io::Result<u32> {
        let (codec, len) = match self.compressor.as_mut() {
            Some(c) => match c.compress_to_buffer(page, &mut self.buf) {
                Ok(n) if n < page.len() => (ZSTD, n),
                _ => (RAW, page.len()),
            },
            None => (RAW, page.len()),
        };
        if codec == ZSTD {
            let stored = std::mem::take(&mut self.buf);
            let r = self.emit(&stored[..len]);
            self.buf = stored;
            r?;
        } else {
            self.emit(page)?;
        }
        let n = self.count();
        self.entries.push(Entry { sha256, offset: self.at, len: len as u32, codec });
        self.at += len as u64;
        Ok(n)
    }

    /// Writes the index and footer, syncs, and publishes the pack under its hash. Returns the
    /// pack's name (its SHA-256) and its size.
    ///
    /// # Errors
    /// I/O errors; the temporary file is removed then.
    pub fn finish(mut self) -> io::Result<(String, u64)> {
        let tmp = self.tmp.clone();
        let r = (move || {
            let mut index = Vec::with_capacity(self.entries.len() * ENTRY_LEN + FOOTER_LEN);
            for e in &self.entries {
                index.extend_from_slice(&e.sha256);
                index.extend_from_slice(&e.offset.to_le_bytes());
                index.extend_from_slice(&e.len.to_le_bytes());
                index.extend_from_slice(&[e.codec, 0, 0, 0]);
            }
            index.extend_from_slice(&self.at.to_le_bytes());
            index.extend_from_slice(&self.count().to_le_bytes());
            index.extend_from_slice(&self.page_size.to_le_bytes());
            index.extend_from_slice(&MAGIC);
            self.emit(&index)?;
            let size = self.at + index.len() as u64;
            let file = self.out.into_inner().map_err(io::IntoInnerError::into_error)?;
            file.sync_all()?;
            drop(file);
            let name = crate::util::fmt::hex(&self.whole.finalize());
            let to = self.dir.join(format!("{name}.{EXT}"));
            match atomic::rename_noreplace(&self.tmp, &to) {
                Ok(()) => {}
                // The same bytes are already stored (its name is their hash).
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => std::fs::remove_file(&self.tmp)?,
                Err(e) => return Err(e),
            }
            atomic::sync_dir(&self.dir)?;
            Ok((name, size))
        })();
        if r.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        r
    }
}

/// SHA-256 of a whole pack file (its name, when it is intact).
///
/// # Errors
/// Read errors.
pub fn file_sha256(file: &File) -> io::Result<String> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0u64;
    loop {
        let n = file.read_at(&mut buf, at)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        at += n as u64;
    }
    Ok(crate::util::fmt::hex(&h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pack_reads_back_what_was_written_raw_and_compressed() {
        let d = tempfile::tempdir().unwrap();
        for level in [0, 3] {
            let mut w = PackWriter::create(d.path(), 1024, level).unwrap();
            let pages: Vec<Vec<u8>> =
                (0..5u8).map(|i| (0..1024u32).map(|b| if i % 2 == 0 { i } else { (b * 7) as u8 }).collect()).collect();
            for p in &pages {
                w.push(p, Sha256::digest(p).into()).unwrap();
            }
            let (name, size) = w.finish().unwrap();
            let f = File::open(d.path().join(format!("{name}.{EXT}"))).unwrap();
            assert_eq!(file_sha256(&f).unwrap(), name);
            let idx = read_index(&f).unwrap();
            assert_eq!((idx.entries.len(), idx.file_len), (5, size));
            assert_eq!(idx.entries[0].codec, if level == 0 { RAW } else { ZSTD });
            let mut out = vec![0u8; 1024];
            for (e, p) in idx.entries.iter().zip(&pages) {
                read_page(&f, e, 1024, &mut Vec::new(), &mut out).unwrap();
                assert_eq!(&out, p);
            }
        }
    }

    #[test]
    fn a_truncated_pack_is_not_a_pack() {
        let d = tempfile::tempdir().unwrap();
        let mut w = PackWriter::create(d.path(), 512, 0).unwrap();
        w.push(&[1u8; 512], Sha256::digest([1u8; 512]).into()).unwrap();
        let (name, size) = w.finish().unwrap();
        let p = d.path().join(format!("{name}.{EXT}"));
        let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        f.set_len(size - 1).unwrap();
        assert_eq!(read_index(&File::open(&p).unwrap()).unwrap_err().kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn spans_read_pages_of_several_packs_in_any_order_and_a_short_pack_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        // Two packs of 600 pages each (more than one span), pages distinct per pack.
        let mut packs = Vec::new();
        for (k, level) in [(0u8, 0), (1, 3)] {
            let mut w = PackWriter::create(d.path(), 512, level).unwrap();
            let pages: Vec<Vec<u8>> =
                (0..600u32).map(|i| (0..512u32).map(|b| (i * 31 + b * u32::from(k + 1)) as u8).collect()).collect();
            for p in &pages {
                w.push(p, Sha256::digest(p).into()).unwrap();
            }
            let (name, _) = w.finish().unwrap();
            let f = File::open(d.path().join(format!("{name}.{EXT}"))).unwrap();
            let idx = read_index(&f).unwrap();
            packs.push((f, idx, pages));
        }
        // Sequential runs interleaved with single pages of the other pack, then jumps back.
        let order: Vec<(usize, usize)> = (0..600)
            .map(|i| (0, i))
            .chain((0..600).step_by(7).map(|i| (1, i)))
            .flat_map(|x| [x, (1, 599 - x.1)])
            .chain((0..600).rev().map(|i| (0, i)))
            .collect();
        let mut spans = Spans::default();
        let mut out = vec![0u8; 512];
        for (p, i) in order {
            let (f, idx, pages) = &packs[p];
            let e = &idx.entries[i];
            let stored = spans.stored(f, idx.file_len, e).unwrap().to_vec();
            decode(e, &stored, &mut out).unwrap();
            assert_eq!(&out, &pages[i], "pack {p} page {i}");
        }
        // A pack cut short after its index was read: the read fails, nothing panics.
        let (f, idx, _) = &packs[0];
        let path = d.path().join("short");
        std::fs::write(&path, b"tiny").unwrap();
        let short = File::open(&path).unwrap();
        let e = &idx.entries[300];
        assert!(Spans::default().stored(&short, idx.file_len, e).is_err());
        assert!(Spans::default().stored(f, idx.file_len, e).is_ok());
    }
}

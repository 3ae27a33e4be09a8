//! Per-page digests of a database image: what a seal records and what the next gate
//! compares.
//!
//! Owns [`PageDigests`] (one truncated SHA-256 per page, and the content digest over them),
//! [`PageHasher`] (fed the bytes of a copy as they are hashed for its manifest, so a seal or
//! a comparison reads nothing twice) and [`PageDigests::differing`]. Does not own where the
//! bytes come from (the copies of [`crate::copies::copy`]) or the seal file (see
//! [`super::file`]).
//!
//! What is digested is the database's *content*, not one file's bytes: on page 1 the header
//! fields that SQLite rewrites when it copies or re-journals an unchanged database are
//! zeroed first: the file format versions (bytes 18–19, WAL or rollback), the file change
//! counter (24–27), the schema cookie (40–43: the online backup API sets the copy's to its
//! own count, so it depends on the journal mode of the source) and the version-valid-for
//! number and SQLite version (92–99). A copy of the live database, a copy of that copy and
//! the backup file itself then digest the same, page for page; any change to a b-tree, the
//! schema (its table lives on page 1 and the pages it points to), the freelist or a payload
//! still shows.

use sha2::{Digest, Sha256};

/// Bytes kept of each page's SHA-256: enough to tell pages apart (the content digest over
/// all of them is the full SHA-256 that decides).
pub const DIGEST_LEN: usize = 16;

/// One page's digest.
pub type PageDigest = [u8; DIGEST_LEN];

/// Header bytes of page 1 that an unchanged database may differ in between copies.
const VOLATILE: [std::ops::Range<usize>; 4] = [18..20, 24..28, 40..44, 92..100];

/// The per-page digests of one database image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageDigests {
    /// The page size the image was cut at.
    pub page_size: u32,
    /// Page `n` (1-based) is `digests[n - 1]`. A short last page (a truncated file) is
    /// digested as it is.
    pub digests: Vec<PageDigest>,
    /// The first 100 bytes of page 1 as they are (the database header), when there were.
    pub header: Vec<u8>,
}

impl PageDigests {
    /// Number of pages.
    pub fn page_count(&self) -> u32 {
        u32::try_from(self.digests.len()).unwrap_or(u32::MAX)
    }

    /// SHA-256 (hex) over the page size and every page digest: one value that is equal
    /// exactly when every page is.
    pub fn content_digest(&self) -> String {
        let mut h = Sha256::new();
        h.update(self.page_size.to_be_bytes());
        for d in &self.digests {
            h.update(d);
        }
        crate::util::fmt::hex(&h.finalize())
    }

    /// The 1-based numbers of the pages that differ between `self` (what was sealed) and
    /// `now`: changed pages, and pages only one of them has (a truncated or grown file).
    /// A different page size makes every page differ.
    pub fn differing(&self, now: &PageDigests) -> Vec<u32> {
        let n = self.digests.len().max(now.digests.len());
        (0..n)
            .filter(|&i| self.page_size != now.page_size || self.digests.get(i) != now.digests.get(i))
            .map(|i| u32::try_from(i + 1).unwrap_or(u32::MAX))
            .collect()
    }
}

/// Digests pages from a stream of bytes (the copy as it is read for its SHA-256).
#[derive(Debug)]
pub struct PageHasher {
    page_size: Option<usize>,
    /// The bytes of the current (or, before the page size is known, first) page.
    partial: Vec<u8>,
    digests: Vec<PageDigest>,
    header: Vec<u8>,
}

impl Default for PageHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl PageHasher {
    /// A hasher that learns the page size from the header at the start of the stream.
    pub fn new() -> Self {
        PageHasher { page_size: None, partial: Vec::new(), digests: Vec::new(), header: Vec::new() }
    }

    /// Feeds the next bytes of the image.
    pub fn update(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let size = match self.page_size {
                Some(s) => s,
                None => {
                    // The page size is bytes 16–17 of the header (1 means 65536).
                    let need = 18usize.saturating_sub(self.partial.len()).min(bytes.len());
                    self.partial.extend_from_slice(&bytes[..need]);
                    bytes = &bytes[need..];
                    if self.partial.len() < 18 {
                        continue;
                    }
                    let raw = u32::from(u16::from_be_bytes([self.partial[16], self.partial[17]]));
                    let size = if raw == 1 { 65536 } else { raw as usize };
                    // A header that is not a database's: cut at 4096 so a damaged image
                    // still digests (and differs) page by page.
                    let size = if size.is_power_of_two() && (512..=65536).contains(&size) { size } else { 4096 };
                    self.page_size = Some(size);
                    continue;
                }
            };
            if self.partial.is_empty() && bytes.len() >= size {
                self.push_page(&bytes[..size]);
                bytes = &bytes[size..];
                continue;
            }
            let take = (size - self.partial.len()).min(bytes.len());
            self.partial.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.partial.len() == size {
                let page = std::mem::take(&mut self.partial);
                self.push_page(&page);
            }
        }
    }

    fn push_page(&mut self, page: &[u8]) {
        let mut h = Sha256::new();
        if self.digests.is_empty() {
            self.header = page[..page.len().min(100)].to_vec();
            let mut first = page.to_vec();
            for r in VOLATILE {
                if let Some(b) = first.get_mut(r) {
                    b.fill(0);
                }
            }
            h.update(&first);
        } else {
            h.update(page);
        }
        let full = h.finalize();
        let mut d = [0u8; DIGEST_LEN];
        d.copy_from_slice(&full[..DIGEST_LEN]);
        self.digests.push(d);
    }

    /// The digests of everything fed (a short last page digested as it is).
    pub fn finish(mut self) -> PageDigests {
        if !self.partial.is_empty() {
            let page = std::mem::take(&mut self.partial);
            self.push_page(&page);
        }
        let page_size = u32::try_from(self.page_size.unwrap_or(4096)).unwrap_or(4096);
        PageDigests { page_size, digests: self.digests, header: self.header }
    }
}

/// The digests of the image in `path` (read with `std::fs`: for copies and backup files,
/// never a live database a process of ours may hold SQLite locks on).
///
/// # Errors
/// The read error.
pub fn digest_file(path: &std::path::Path) -> std::io::Result<PageDigests> {
    digest_reader(std::fs::File::open(path)?)
}

/// The digests of the image `f` reads, from its start.
///
/// # Errors
/// The read error.
pub fn digest_reader(mut f: impl std::io::Read) -> std::io::Result<PageDigests> {
    let mut h = PageHasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let k = f.read(&mut buf)?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
    }
    Ok(h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(page_size: usize, pages: usize) -> Vec<u8> {
        let mut v: Vec<u8> = (0..page_size * pages).map(|i| (i * 7 % 251) as u8).collect();
        v[16..18].copy_from_slice(&u16::try_from(page_size).unwrap().to_be_bytes());
        v
    }

    #[test]
    fn block_boundaries_do_not_change_the_digests() {
        let img = image(4096, 9);
        let whole = {
            let mut h = PageHasher::new();
            h.update(&img);
            h.finish()
        };
        for step in [1usize, 7, 17, 18, 19, 4095, 4096, 4097, 10_000] {
            let mut h = PageHasher::new();
            for chunk in img.chunks(step) {
                h.update(chunk);
            }
            assert_eq!(h.finish(), whole, "fed in blocks of {step}");
        }
        assert_eq!(whole.page_count(), 9);
        assert_eq!(whole.page_size, 4096);
    }

    #[test]
    fn volatile_header_bytes_are_ignored_and_everything_else_counts() {
        let img = image(1024, 4);
        let base = {
            let mut h = PageHasher::new();
            h.update(&img);
            h.finish()
        };
        for at in [18usize, 19, 24, 27, 40, 43, 92, 99] {
            let mut other = img.clone();
            other[at] ^= 0xff;
            let mut h = PageHasher::new();
            h.update(&other);
            assert!(base.differing(&h.finish()).is_empty(), "byte {at} is volatile");
        }
        for at in [0usize, 20, 28, 44, 100, 1023, 1024, 2048 + 5, 4095] {
            let mut other = img.clone();
            other[at] ^= 0x01;
            let mut h = PageHasher::new();
            h.update(&other);
            let now = h.finish();
            assert_eq!(base.differing(&now), vec![u32::try_from(at / 1024 + 1).unwrap()], "byte {at}");
            assert_ne!(base.content_digest(), now.content_digest());
        }
        let mut h = PageHasher::new();
        h.update(&img[..1024 * 3 + 10]);
        assert_eq!(base.differing(&h.finish()), vec![4], "a truncated last page differs");
        let mut h = PageHasher::new();
        h.update(&img[..1024 * 2]);
        assert_eq!(base.differing(&h.finish()), vec![3, 4], "missing pages differ");
    }
}

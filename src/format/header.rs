//! The 100-byte database header: one decoder for every reader in the crate.
//!
//! Owns: what the header's bytes mean (sqlite.org/fileformat2.html, 1.3), and
//! [`read_header`], the one way warden reads the header of a file that may be live: through
//! SQLite's `unix` VFS, never a `std::fs` descriptor whose close could drop the process's
//! POSIX locks on the database (see `sys::sqlite::VfsFile`).

use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::sys::sqlite::VfsFile;

/// Length of the database header.
pub const HEADER_LEN: usize = 100;
/// The first 16 bytes of every SQLite 3 database.
pub const MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// The parts of the 100-byte database header warden looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeaderInfo {
    /// Starts with `SQLite format 3\0`.
    pub valid: bool,
    /// Page size in bytes (1 in the header means 65536).
    pub page_size: u32,
    /// File change counter (bytes 24..28).
    pub change_counter: u32,
    /// Database size in pages (bytes 28..32).
    pub db_pages: u32,
    /// Schema cookie (bytes 40..44).
    pub schema_cookie: u32,
    /// A valid header whose read or write version (bytes 18, 19) is 2: WAL mode. SQLite
    /// sets both when it switches to WAL; either one alone already makes it look for a
    /// `-wal`, so either counts.
    pub wal: bool,
}

impl HeaderInfo {
    /// Decodes the first 100 bytes of a database file.
    pub fn decode(h: &[u8; HEADER_LEN]) -> Self {
        let be = |at: usize| u32::from_be_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]);
        let raw_page = u32::from(u16::from_be_bytes([h[16], h[17]]));
        let valid = &h[..16] == MAGIC;
        HeaderInfo {
            valid,
            page_size: if raw_page == 1 { 65536 } else { raw_page },
            change_counter: be(24),
            db_pages: be(28),
            schema_cookie: be(40),
            wal: valid && (h[18] == 2 || h[19] == 2),
        }
    }

    /// Decodes the start of a file; `None` when it is shorter than the header.
    pub fn from_prefix(bytes: &[u8]) -> Option<Self> {
        bytes.get(..HEADER_LEN).and_then(|h| h.try_into().ok()).map(Self::decode)
    }
}

/// Reads the header of the database at `path` through SQLite's `unix` VFS, so that it is
/// safe in a process that holds SQLite locks on that file. `Ok(None)` when the file is
/// shorter than the header.
///
/// # Errors
/// `NotFound` for a missing file; any other I/O error while reading.
pub fn read_header(path: &Path) -> io::Result<Option<HeaderInfo>> {
    let f = VfsFile::open(None, path)?;
    let mut h = [0u8; HEADER_LEN];
    let n = f.read_at(&mut h, 0)?;
    Ok((n == HEADER_LEN).then(|| HeaderInfo::decode(&h)))
}

/// The first bytes of the file at `path`, up to the header's length, read as
/// [`read_header`] does (for callers that judge the raw bytes themselves).
///
/// # Errors
/// As [`read_header`].
pub fn read_raw_header(path: &Path) -> io::Result<Vec<u8>> {
    let f = VfsFile::open(None, path)?;
    let mut h = vec![0u8; HEADER_LEN];
    let n = f.read_at(&mut h, 0)?;
    h.truncate(n);
    Ok(h)
}

/// The file change counter (bytes 24..28) of the database at `path`, read as
/// [`read_header`] does; `None` when it cannot be read or is not a database.
pub fn change_counter(path: &Path) -> Option<u32> {
    read_header(path).ok().flatten().filter(|h| h.valid).map(|h| h.change_counter)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[..16].copy_from_slice(MAGIC);
        h[16..18].copy_from_slice(&4096u16.to_be_bytes());
        h[18] = 1;
        h[19] = 1;
        h[24..28].copy_from_slice(&7u32.to_be_bytes());
        h[28..32].copy_from_slice(&3u32.to_be_bytes());
        h
    }

    #[test]
    fn decodes_the_fields_warden_uses() {
        let d = HeaderInfo::decode(&header());
        assert!(d.valid && !d.wal);
        assert_eq!((d.page_size, d.change_counter, d.db_pages), (4096, 7, 3));
    }

    #[test]
    fn either_version_byte_marks_wal_but_only_on_a_valid_header() {
        for at in [18, 19] {
            let mut h = header();
            h[at] = 2;
            assert!(HeaderInfo::decode(&h).wal, "byte {at}");
            h[0] = b'X';
            assert!(!HeaderInfo::decode(&h).wal, "byte {at} on garbage");
        }
    }

    #[test]
    fn page_size_one_means_65536_and_short_input_is_none() {
        let mut h = header();
        h[16..18].copy_from_slice(&1u16.to_be_bytes());
        assert_eq!(HeaderInfo::decode(&h).page_size, 65536);
        assert!(HeaderInfo::from_prefix(&h[..99]).is_none());
        assert!(HeaderInfo::from_prefix(&h).is_some());
    }
}

//! A raw reader of SQLite table b-tree pages, for salvage.
//!
//! Owns: decoding pages of a (possibly damaged) database file without SQLite: table
//! b-tree interior and leaf pages, cells, overflow chains and records (fileformat2.html §1.6
//! and §2.1). Does not own: deciding where rows go ([`crate::copies::salvage`]).
//!
//! Everything is bounds-checked: a damaged page yields fewer rows, never a panic or a loop
//! (page visits are capped and cycles are cut).

use std::collections::{BTreeSet, HashSet};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use rusqlite::types::Value;

/// A database file opened for raw page reads.
pub struct PageFile {
    file: File,
    page_size: usize,
    usable: usize,
    pages: u32,
}

/// One row found on a table leaf page.
#[derive(Debug, Clone, PartialEq)]
pub struct RawRow {
    /// The leaf page it sat on.
    pub page: u32,
    /// Its rowid.
    pub rowid: i64,
    /// Its column values, in record order.
    pub values: Vec<Value>,
}

fn varint(b: &[u8]) -> Option<(i64, usize)> {
    let mut v: u64 = 0;
    for i in 0..9 {
        let byte = *b.get(i)?;
        if i == 8 {
            v = (v << 8) | u64::from(byte);
            return Some((v as i64, 9));
        }
        v = (v << 7) | u64::from(byte & 0x7f);
        if byte & 0x80 == 0 {
            return Some((v as i64, i + 1));
        }
    }
    None
}

fn be(b: &[u8]) -> i64 {
    let mut v: i64 = if b.first().is_some_and(|x| x & 0x80 != 0) { -1 } else { 0 };
    for &x in b {
        v = (v << 8) | i64::from(x);
    }
    v
}

/// Decodes a record (header of serial types, then the body). `None` if malformed.
pub fn decode_record(rec: &[u8]) -> Option<Vec<Value>> {
    let (hsize, mut at) = varint(rec)?;
    let hsize = usize::try_from(hsize).ok()?;
    if hsize > rec.len() || hsize < at {
        return None;
    }
    let mut types = Vec::new();
    while at < hsize {
        let (t, n) = varint(&rec[at..hsize])?;
        types.push(t);
        at += n;
    }
    let mut body = hsize;
    let mut out = Vec::with_capacity(types.len());
    for t in types {
        let (len, v) = match t {
            0 => (0, Some(Value::Null)),
            1..=6 => {
                let len = [0, 1, 2, 3, 4, 6, 8][usize::try_from(t).ok()?];
                (len, None)
            }
            7 => (8, None),
            8 => (0, Some(Value::Integer(0))),
            9 => (0, Some(Value::Integer(1))),
            10 | 11 => return None,
            n if n >= 12 => (usize::try_from((n - 12) / 2).ok()?, None),
            _ => return None,
        };
        let bytes = rec.get(body..body.checked_add(len)?)?;
        body += len;
        out.push(match v {
            Some(v) => v,
            None => match t {
                1..=6 => Value::Integer(be(bytes)),
                7 => Value::Real(f64::from_bits(u64::from_be_bytes(bytes.try_into().ok()?))),
                n if n % 2 == 0 => Value::Blob(bytes.to_vec()),
                _ => Value::Text(String::from_utf8_lossy(bytes).into_owned()),
            },
        });
    }
    Some(out)
}

impl PageFile {
    /// Opens `path` and reads its header (page size, reserved bytes).
    ///
    /// # Errors
    /// The I/O error, or `InvalidData` when the header is unusable.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let file = File::open(path)?;
        let mut h = [0u8; 100];
        file.read_exact_at(&mut h, 0)?;
        let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "unusable database header");
        let page_size = match u16::from_be_bytes([h[16], h[17]]) {
            1 => 65536,
            n if n >= 512 && n.is_power_of_two() => usize::from(n),
            _ => return Err(bad()),
        };
        let usable = page_size.checked_sub(usize::from(h[20])).filter(|u| *u >= 480).ok_or_else(bad)?;
        let len = file.metadata()?.len();
        let pages = u32::try_from(len / page_size as u64).unwrap_or(u32::MAX);
        Ok(PageFile { file, page_size, usable, pages })
    }

    /// Number of whole pages in the file.
    pub fn page_count(&self) -> u32 {
        self.pages
    }

    fn page(&self, pgno: u32) -> Option<Vec<u8>> {
        if pgno == 0 || pgno > self.pages {
            return None;
        }
        let mut buf = vec![0u8; self.page_size];
        self.file.read_exact_at(&mut buf, u64::from(pgno - 1) * self.page_size as u64).ok()?;
        Some(buf)
    }

    /// Pages of the freelist (trunks and leaves), as far as the chain can be followed.
    pub fn freelist(&self) -> BTreeSet<u32> {
        let mut out = BTreeSet::new();
        let Some(p1) = self.page(1) else { return out };
        let mut trunk = u32::from_be_bytes([p1[32], p1[33], p1[34], p1[35]]);
        while trunk != 0 && out.insert(trunk) && out.len() <= self.pages as usize {
            let Some(t) = self.page(trunk) else { break };
            let n = u32::from_be_bytes([t[4], t[5], t[6], t[7]]) as usize;
            for i in 0..n.min((self.usable - 8) / 4) {
                let at = 8 + i * 4;
                let leaf = u32::from_be_bytes([t[at], t[at + 1], t[at + 2], t[at + 3]]);
                if leaf != 0 && leaf <= self.pages {
                    out.insert(leaf);
                }
            }
            trunk = u32::from_be_bytes([t[0], t[1], t[2], t[3]]);
        }
        out
    }

    /// The leaf pages reachable from the table b-tree rooted at `root` (cycles cut).
    pub fn table_leaves(&self, root: u32, seen: &mut HashSet<u32>) -> Vec<u32> {
        let mut leaves = Vec::new();
        let mut stack = vec![root];
        while let Some(p) = stack.pop() {
            if !seen.insert(p) {
                continue;
            }
            let Some(page) = self.page(p) else { continue };
            let h = if p == 1 { 100 } else { 0 };
            match page.get(h) {
                Some(0x0D) => leaves.push(p),
                Some(0x05) => {
                    let n = usize::from(u16::from_be_bytes([page[h + 3], page[h + 4]]));
                    let right = u32::from_be_bytes([page[h + 8], page[h + 9], page[h + 10], page[h + 11]]);
                    stack.push(right);
                    for i in 0..n {
                        let at = h + 12 + i * 2;
                        let Some(ptr) = page.get(at..at + 2) else { break };
                        let off = usize::from(u16::from_be_bytes([ptr[0], ptr[1]]));
                        if let Some(c) = page.get(off..off + 4) {
                            stack.push(u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
                        }
                    }
                }
                _ => {}
            }
        }
        leaves
    }

    /// True when page `p` looks like a table leaf.
    pub fn is_table_leaf(&self, p: u32) -> bool {
        self.page(p).is_some_and(|page| page.get(if p == 1 { 100 } else { 0 }) == Some(&0x0D))
    }

    /// The rows on table leaf page `p` whose cells (and overflow chains) decode.
    pub fn leaf_rows(&self, p: u32) -> Vec<RawRow> {
        let Some(page) = self.page(p) else { return Vec::new() };
        let h = if p == 1 { 100 } else { 0 };
        if page.get(h) != Some(&0x0D) {
            return Vec::new();
        }
        let n = usize::from(u16::from_be_bytes([page[h + 3], page[h + 4]]));
        let u = self.usable;
        let max_local = u - 35;
        let min_local = ((u - 12) * 32 / 255) - 23;
        let mut rows = Vec::new();
        for i in 0..n {
            let at = h + 8 + i * 2;
            let Some(ptr) = page.get(at..at + 2) else { break };
            let off = usize::from(u16::from_be_bytes([ptr[0], ptr[1]]));
            let Some(cell) = page.get(off..u.min(page.len())) else { continue };
            let Some((size, a)) = varint(cell) else { continue };
            let Some((rowid, b)) = varint(&cell[a..]) else { continue };
            let Ok(size) = usize::try_from(size) else { continue };
            let start = a + b;
            let local = if size <= max_local {
                size
            } else {
                let k = min_local + (size - min_local) % (u - 4);
                if k <= max_local { k } else { min_local }
            };
            let Some(head) = cell.get(start..start + local) else { continue };
            let mut payload = head.to_vec();
            if local < size {
                let Some(next) = cell.get(start + local..start + local + 4) else { continue };
                let mut next = u32::from_be_bytes([next[0], next[1], next[2], next[3]]);
                let mut hops = 0;
                while payload.len() < size && next != 0 && hops <= self.pages {
                    let Some(ov) = self.page(next) else { break };
                    let take = (size - payload.len()).min(u - 4);
                    payload.extend_from_slice(&ov[4..4 + take]);
                    next = u32::from_be_bytes([ov[0], ov[1], ov[2], ov[3]]);
                    hops += 1;
                }
                if payload.len() < size {
                    continue; // a broken overflow chain: this row is lost
                }
            }
            if let Some(values) = decode_record(&payload) {
                rows.push(RawRow { page: p, rowid, values });
            }
        }
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_back_what_sqlite_wrote() {
        let d = tempfile::tempdir().unwrap();
        let db = d.path().join("a.db");
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch(
            "CREATE TABLE t(id INTEGER PRIMARY KEY, a TEXT, b REAL, c BLOB, d INTEGER);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 500)
             INSERT INTO t SELECT i, 'text ' || i, i / 3.0, randomblob(i * 20), -i * 1000003 FROM n;",
        )
        .unwrap();
        let root: u32 = c.query_row("SELECT rootpage FROM sqlite_schema WHERE name='t'", [], |r| r.get(0)).unwrap();
        drop(c);
        let f = PageFile::open(&db).unwrap();
        let mut seen = HashSet::new();
        let rows: Vec<RawRow> = f.table_leaves(root, &mut seen).into_iter().flat_map(|p| f.leaf_rows(p)).collect();
        assert_eq!(rows.len(), 500, "every row, overflow chains included");
        let r = rows.iter().find(|r| r.rowid == 77).unwrap();
        assert_eq!(r.values[0], Value::Null, "the INTEGER PRIMARY KEY is the rowid");
        assert_eq!(r.values[1], Value::Text("text 77".into()));
        assert_eq!(r.values[2], Value::Real(77.0 / 3.0));
        assert!(matches!(&r.values[3], Value::Blob(b) if b.len() == 1540));
        assert_eq!(r.values[4], Value::Integer(-77 * 1_000_003));
    }

    #[test]
    fn garbage_never_panics() {
        for seed in 0..200u32 {
            let bytes: Vec<u8> =
                (0..64).map(|i| (seed.wrapping_mul(2_654_435_761).wrapping_add(i * 97) >> 7) as u8).collect();
            let _ = decode_record(&bytes);
            let _ = varint(&bytes);
        }
    }
}

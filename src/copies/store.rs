//! The page store (issue 14, first layer): restore points as manifests over immutable,
//! content-addressed packs of SQLite pages, materialized byte for byte and verified.
//!
//! Owns the on-disk format and its three operations: [`PageStore::put`] (store the pages of
//! a finished, private copy, writing only pages the store does not hold yet),
//! [`PageStore::materialize`] (rebuild the exact file, checked against the recorded
//! SHA-256 before it is published) and [`PageStore::verify`] (re-hash every page a restore
//! point references; a damaged pack makes exactly the points that use it bad). Does not own
//! where pages come from (the backup layer hands it a settled copy), which points to keep
//! (retention), or garbage collection (not built yet: packs are never deleted here).
//!
//! # On-disk format, version 1
//!
//! ```text
//! <store>/STORE                       "warden-page-store 1\n": the format marker
//! <store>/packs/<sha256>.pack         immutable; named by the SHA-256 of its bytes
//! <store>/points/<id>.json            one restore point (a RestorePoint, JSON)
//! ```
//!
//! A pack is the bytes of its pages, one after another; a restore point names, for each
//! page of the database in order, an index into its `chunks` (pack, offset, length, page
//! SHA-256), so a page shared by many points or repeated in one is stored once. Codec 0
//! is "raw"; compression will be a new codec, never a change of this one. Every file is
//! written atomically ([`crate::util::atomic`]) and a pack before any point that names it,
//! so a kill at any step leaves every published point restorable.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::util::atomic;

/// The format marker's content.
pub const MARKER: &str = "warden-page-store 1\n";

/// Where one stored page lives.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Chunk {
    /// The pack file's name (its SHA-256).
    pub pack: String,
    /// Byte offset in the pack.
    pub offset: u64,
    /// Stored length.
    pub len: u32,
    /// 0: raw.
    pub codec: u8,
    /// SHA-256 of the page's bytes.
    pub sha256: String,
}

/// One restore point: the exact file, page by page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestorePoint {
    /// Format version of this record (1).
    pub format: u32,
    /// Unique id (the backup's).
    pub id: String,
    /// Page size of the database.
    pub page_size: u32,
    /// Size of the materialized file in bytes.
    pub size: u64,
    /// SHA-256 of the whole materialized file.
    pub sha256: String,
    /// Every location this point uses, each once.
    pub chunks: Vec<Chunk>,
    /// For each page in file order, its index in `chunks`.
    pub pages: Vec<u32>,
}

/// What [`PageStore::put`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutReport {
    /// The restore point.
    pub point: RestorePoint,
    /// Pages in the file.
    pub pages: u64,
    /// Pages that were new to the store (and written).
    pub new_pages: u64,
    /// Bytes written to packs.
    pub pack_bytes: u64,
}

/// What [`PageStore::verify`] found for one point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PointCheck {
    /// The point.
    pub id: String,
    /// `None`: every page re-hashed as recorded and the whole file's SHA-256 matched.
    pub problem: Option<String>,
}

/// A failed store operation.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file operation failed.
    #[error("{action} `{}`: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// On which file.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The directory is not a page store of a version this warden reads.
    #[error("`{}` is not a warden page store (format 1)\n(hint: point at the store directory itself, or at an empty directory to create one)", path.display())]
    NotAStore {
        /// The directory.
        path: PathBuf,
    },
    /// A file the store needs does not hash or parse as recorded.
    #[error(
        "restore point `{id}` cannot be materialized: {why}\n(hint: `warden backups verify` names every point this damage reaches; restore an older good one)"
    )]
    Damaged {
        /// The point.
        id: String,
        /// What does not match.
        why: String,
    },
    /// The file to store is not whole pages.
    #[error("`{}` is {size} bytes, not a whole number of {page_size}-byte pages", path.display())]
    NotPages {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// The page size.
        page_size: u32,
    },
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl Fn(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io { action, path: path.to_owned(), source }
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// A page store in one directory.
#[derive(Debug, Clone)]
pub struct PageStore {
    dir: PathBuf,
}

impl PageStore {
    /// Opens the store at `dir`, creating it (durably) when the directory is missing or
    /// empty.
    ///
    /// # Errors
    /// [`StoreError::NotAStore`] for a directory holding something else; I/O errors.
    pub fn open(dir: &Path) -> Result<PageStore, StoreError> {
        let marker = dir.join("STORE");
        match std::fs::read_to_string(&marker) {
            Ok(m) if m == MARKER => {}
            Ok(_) => return Err(StoreError::NotAStore { path: dir.to_owned() }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let empty = std::fs::read_dir(dir).map(|mut d| d.next().is_none()).unwrap_or(true);
                if !empty {
                    return Err(StoreError::NotAStore { path: dir.to_owned() });
                }
                for d in [dir.to_owned(), dir.join("packs"), dir.join("points")] {
                    atomic::create_dir_synced(&d, 0o700).map_err(io_err("creating", &d))?;
                }
                atomic::write_atomic(&marker, MARKER.as_bytes(), 0o600).map_err(io_err("writing", &marker))?;
            }
            Err(e) => return Err(io_err("reading", &marker)(e)),
        }
        Ok(PageStore { dir: dir.to_owned() })
    }

    fn point_path(&self, id: &str) -> PathBuf {
        self.dir.join("points").join(format!("{id}.json"))
    }

    fn pack_path(&self, pack: &str) -> PathBuf {
        self.dir.join("packs").join(format!("{pack}.pack"))
    }

    /// Every restore point, by id.
    ///
    /// # Errors
    /// I/O errors; a point that does not parse is [`StoreError::Damaged`].
    pub fn points(&self) -> Result<Vec<RestorePoint>, StoreError> {
        let dir = self.dir.join("points");
        let mut out = Vec::new();
        for e in std::fs::read_dir(&dir).map_err(io_err("listing", &dir))?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(id) = name.strip_suffix(".json").filter(|_| !name.starts_with('.')) else { continue };
            let bytes = std::fs::read(e.path()).map_err(io_err("reading", &e.path()))?;
            let p: RestorePoint = serde_json::from_slice(&bytes).map_err(|err| StoreError::Damaged {
                id: id.to_owned(),
                why: format!("its record does not parse: {err}"),
            })?;
            out.push(p);
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// Stores the settled file `file` (a private copy: nothing writes it meanwhile) as the
    /// restore point `id`, writing one new pack with the pages no kept point holds yet.
    ///
    /// # Errors
    /// I/O errors, [`StoreError::NotPages`]; nothing is published then.
    pub fn put(&self, file: &Path, page_size: u32, id: &str) -> Result<PutReport, StoreError> {
        let size = std::fs::metadata(file).map_err(io_err("reading", file))?.len();
        if page_size == 0 || !size.is_multiple_of(u64::from(page_size)) {
            return Err(StoreError::NotPages { path: file.to_owned(), size, page_size });
        }
        let mut known: HashMap<String, Chunk> = HashMap::new();
        for p in self.points()? {
            for c in p.chunks {
                known.entry(c.sha256.clone()).or_insert(c);
            }
        }
        let mut f = std::fs::File::open(file).map_err(io_err("reading", file))?;
        let mut page = vec![0u8; page_size as usize];
        let mut whole = Sha256::new();
        let mut fresh = Vec::new();
        let mut order: Vec<String> = Vec::new();
        let mut pending: HashMap<String, u64> = HashMap::new();
        let pages = size / u64::from(page_size);
        for _ in 0..pages {
            f.read_exact(&mut page).map_err(io_err("reading", file))?;
            whole.update(&page);
            let h = hex(&Sha256::digest(&page));
            if !known.contains_key(&h) && !pending.contains_key(&h) {
                pending.insert(h.clone(), fresh.len() as u64);
                fresh.extend_from_slice(&page);
            }
            order.push(h);
        }
        let pack = hex(&Sha256::digest(&fresh));
        if !fresh.is_empty() {
            let path = self.pack_path(&pack);
            if !path.exists() {
                atomic::write_atomic(&path, &fresh, 0o400).map_err(io_err("writing", &path))?;
            }
        }
        let mut chunks: Vec<Chunk> = Vec::new();
        let mut index: HashMap<String, u32> = HashMap::new();
        let mut refs = Vec::with_capacity(order.len());
        for h in order {
            let i = match index.get(&h) {
                Some(&i) => i,
                None => {
                    let c = match pending.get(&h) {
                        Some(&offset) => {
                            Chunk { pack: pack.clone(), offset, len: page_size, codec: 0, sha256: h.clone() }
                        }
                        None => known[&h].clone(),
                    };
                    chunks.push(c);
                    let i = u32::try_from(chunks.len() - 1).unwrap_or(u32::MAX);
                    index.insert(h, i);
                    i
                }
            };
            refs.push(i);
        }
        let point = RestorePoint {
            format: 1,
            id: id.to_owned(),
            page_size,
            size,
            sha256: hex(&whole.finalize()),
            chunks,
            pages: refs,
        };
        let path = self.point_path(id);
        let bytes = serde_json::to_vec(&point).map_err(|e| io_err("encoding", &path)(io::Error::other(e)))?;
        atomic::write_atomic(&path, &bytes, 0o600).map_err(io_err("writing", &path))?;
        Ok(PutReport { pages, new_pages: pending.len() as u64, pack_bytes: fresh.len() as u64, point })
    }

    fn read_chunk(&self, c: &Chunk, packs: &mut HashMap<String, std::fs::File>) -> io::Result<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        if !packs.contains_key(&c.pack) {
            packs.insert(c.pack.clone(), std::fs::File::open(self.pack_path(&c.pack))?);
        }
        let mut buf = vec![0u8; c.len as usize];
        packs[&c.pack].read_exact_at(&mut buf, c.offset)?;
        Ok(buf)
    }

    /// Rebuilds restore point `id` as the new file `to` (never replacing one), checking
    /// every page and the whole file's SHA-256 before it is published.
    ///
    /// # Errors
    /// [`StoreError::Damaged`] when a page or the whole does not hash as recorded (nothing
    /// is left at `to`); I/O errors.
    pub fn materialize(&self, point: &RestorePoint, to: &Path) -> Result<(), StoreError> {
        let damaged = |why: String| StoreError::Damaged { id: point.id.clone(), why };
        let mut packs = HashMap::new();
        let tmp = atomic::temp_path_for(to);
        let result = (|| {
            let mut out = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
                .map_err(io_err("creating", &tmp))?;
            let mut whole = Sha256::new();
            for (n, &i) in point.pages.iter().enumerate() {
                let c =
                    point.chunks.get(i as usize).ok_or_else(|| damaged(format!("page {} names no chunk", n + 1)))?;
                let bytes = self.read_chunk(c, &mut packs).map_err(|e| damaged(format!("pack {}: {e}", c.pack)))?;
                if hex(&Sha256::digest(&bytes)) != c.sha256 {
                    return Err(damaged(format!("page {} does not hash as recorded (pack {})", n + 1, c.pack)));
                }
                whole.update(&bytes);
                out.write_all(&bytes).map_err(io_err("writing", &tmp))?;
            }
            if hex(&whole.finalize()) != point.sha256 {
                return Err(damaged("the whole file does not hash as recorded".into()));
            }
            out.sync_all().map_err(io_err("syncing", &tmp))?;
            atomic::rename_noreplace(&tmp, to).map_err(io_err("publishing", to))?;
            atomic::sync_dir(atomic::parent_of(to)).map_err(io_err("syncing", to))
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    /// Re-hashes every page every point references: one check per point, a damaged pack
    /// reported for exactly the points that use it.
    ///
    /// # Errors
    /// I/O errors listing the store.
    pub fn verify(&self) -> Result<Vec<PointCheck>, StoreError> {
        let mut packs = HashMap::new();
        let mut out = Vec::new();
        for point in self.points()? {
            let mut problem = None;
            let mut whole = Sha256::new();
            for (n, &i) in point.pages.iter().enumerate() {
                let Some(c) = point.chunks.get(i as usize) else {
                    problem = Some(format!("page {} names no chunk", n + 1));
                    break;
                };
                match self.read_chunk(c, &mut packs) {
                    Ok(b) if hex(&Sha256::digest(&b)) == c.sha256 => whole.update(&b),
                    Ok(_) => {
                        problem = Some(format!("page {} does not hash as recorded in pack {}", n + 1, c.pack));
                        break;
                    }
                    Err(e) => {
                        problem = Some(format!("page {}: pack {}: {e}", n + 1, c.pack));
                        break;
                    }
                }
            }
            if problem.is_none() && hex(&whole.finalize()) != point.sha256 {
                problem = Some("the whole file does not hash as recorded".into());
            }
            out.push(PointCheck { id: point.id.clone(), problem });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const PS: u32 = 512;

    fn write_pages(path: &Path, pages: &[u8]) {
        // Page n holds the byte pages[n] over its first half and n over its second: pages
        // with the same seed byte at different places still differ.
        let mut bytes = Vec::new();
        for (n, &p) in pages.iter().enumerate() {
            bytes.extend(std::iter::repeat_n(p, PS as usize / 2));
            bytes.extend(std::iter::repeat_n((n % 3) as u8, PS as usize / 2));
        }
        std::fs::write(path, bytes).unwrap();
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// A chain of versions: each restores byte for byte, and only pages the store has
        /// never seen are written.
        #[test]
        fn every_point_of_a_chain_materializes_byte_exact(
            first in proptest::collection::vec(0u8..6, 1..40),
            edits in proptest::collection::vec(proptest::collection::vec((0usize..60, 0u8..6), 0..6), 1..8),
        ) {
            let d = tempfile::tempdir().unwrap();
            let store = PageStore::open(&d.path().join("store")).unwrap();
            let mut pages = first;
            let mut expected = Vec::new();
            for (v, edit) in std::iter::once(Vec::new()).chain(edits).enumerate() {
                for (at, b) in edit {
                    if at < pages.len() { pages[at] = b } else { pages.push(b) }
                }
                let src = d.path().join(format!("v{v}.db"));
                write_pages(&src, &pages);
                let distinct_before: std::collections::HashSet<String> =
                    store.points().unwrap().iter().flat_map(|p| p.chunks.iter().map(|c| c.sha256.clone())).collect();
                let r = store.put(&src, PS, &format!("p{v:02}")).unwrap();
                let now: std::collections::HashSet<String> = r.point.chunks.iter().map(|c| c.sha256.clone()).collect();
                prop_assert_eq!(r.new_pages as usize, now.difference(&distinct_before).count());
                prop_assert_eq!(r.pack_bytes, r.new_pages * u64::from(PS));
                expected.push((r.point.clone(), std::fs::read(&src).unwrap()));
            }
            for (point, bytes) in &expected {
                let out = d.path().join(format!("{}.restored", point.id));
                store.materialize(point, &out).unwrap();
                prop_assert_eq!(&std::fs::read(&out).unwrap(), bytes);
            }
            prop_assert!(store.verify().unwrap().iter().all(|c| c.problem.is_none()));
        }
    }

    #[test]
    fn an_unchanged_state_writes_no_page() {
        let d = tempfile::tempdir().unwrap();
        let store = PageStore::open(&d.path().join("s")).unwrap();
        let src = d.path().join("a.db");
        write_pages(&src, &[1, 2, 3, 4]);
        assert_eq!(store.put(&src, PS, "a").unwrap().new_pages, 4);
        let again = store.put(&src, PS, "b").unwrap();
        assert_eq!((again.new_pages, again.pack_bytes), (0, 0));
    }

    #[test]
    fn a_flipped_byte_in_a_pack_marks_exactly_the_points_that_use_it() {
        let d = tempfile::tempdir().unwrap();
        let store = PageStore::open(&d.path().join("s")).unwrap();
        let src = d.path().join("a.db");
        write_pages(&src, &[1, 2]);
        let a = store.put(&src, PS, "a").unwrap().point;
        write_pages(&src, &[1, 2, 5]);
        let b = store.put(&src, PS, "b").unwrap().point;
        write_pages(&src, &[4, 4]);
        let c = store.put(&src, PS, "c").unwrap().point;
        // b's own pack holds only page 3; damage it.
        let pack = &b.chunks[b.pages[2] as usize].pack;
        let path = store.pack_path(pack);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[7] ^= 0x40;
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        std::fs::write(&path, bytes).unwrap();
        let checks = store.verify().unwrap();
        let bad: Vec<&str> = checks.iter().filter(|c| c.problem.is_some()).map(|c| c.id.as_str()).collect();
        assert_eq!(bad, ["b"], "{checks:?}");
        let out = d.path().join("b.restored");
        assert!(matches!(store.materialize(&b, &out), Err(StoreError::Damaged { .. })));
        assert!(!out.exists(), "a damaged point leaves nothing behind");
        for p in [&a, &c] {
            store.materialize(p, &d.path().join(format!("{}.ok", p.id))).unwrap();
        }
    }

    #[test]
    fn a_directory_holding_something_else_is_not_taken_over() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("mine.txt"), b"x").unwrap();
        assert!(matches!(PageStore::open(d.path()), Err(StoreError::NotAStore { .. })));
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }
}

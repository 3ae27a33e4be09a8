//! The page store: restore points as maps over immutable, content-addressed packs of
//! SQLite pages, deduplicated, compressed, materialized byte for byte and verified.
//!
//! Owns the store directory and its operations: [`PageStore::put`] (store the pages of a
//! settled file, writing only pages the store does not hold yet), [`PageStore::materialize`]
//! (rebuild the exact file, checked against its SHA-256), [`PageStore::verify`] (re-hash
//! every page the given points use, each stored page once; a damaged pack makes exactly the
//! points that use it bad), [`PageStore::collect`] (delete packs no kept point uses) and
//! [`PageStore::repack`] (merge small packs). Does not own what a restore point *is* to a
//! user (the backup manifest that carries its [`PageMap`], `copies::backup`), where pages
//! come from (a private copy or the live file under the writer lock), which points to keep
//! (retention) or the store's lock (the backup directory's, held by every caller that
//! writes).
//!
//! # On-disk format, version 1
//!
//! ```text
//! <backups>/pages/FORMAT             "warden-page-store 1\n"
//! <backups>/pages/<sha256>.pack      immutable; named by the SHA-256 of its bytes (see pack)
//! ```
//!
//! A restore point is the [`PageMap`] in its backup's manifest: the packs it uses and runs
//! of `(pack, first entry, count)` that list its pages in file order. Writing order makes
//! every crash safe: a pack is complete before it is named, a manifest is written only
//! after every pack it names, and a pack is deleted only when no manifest names it.

pub mod pack;
mod pipe;

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use pack::PageHash;
use pack::{Entry, Index, PackWriter};

use crate::util::atomic;

/// The format marker's content.
pub const MARKER: &str = "warden-page-store 1\n";
/// The marker's file name.
pub const MARKER_FILE: &str = "FORMAT";
/// The store's directory inside a backup directory.
pub const DIR: &str = "pages";

/// Where a restore point's pages are: what a backup manifest records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageMap {
    /// Format of this map (1).
    pub format: u32,
    /// The packs it uses (their names).
    pub packs: Vec<String>,
    /// Its pages in file order: `[pack index, first entry, count]`.
    pub runs: Vec<[u32; 3]>,
}

impl PageMap {
    /// Pages the map lists.
    pub fn page_count(&self) -> u64 {
        self.runs.iter().map(|r| u64::from(r[2])).sum()
    }
}

/// What [`PageStore::put`] stored.
#[derive(Debug, Clone)]
pub struct Put {
    /// The restore point's map.
    pub map: PageMap,
    /// SHA-256 of the whole file.
    pub sha256: String,
    /// Bytes of the file.
    pub size: u64,
    /// Pages of the file.
    pub pages: u64,
    /// Pages the store did not hold (written now).
    pub new_pages: u64,
    /// Bytes written to the store (the new pack, compressed).
    pub pack_bytes: u64,
}

/// A file the store reads pages from.
pub trait PageSource {
    /// Fills `buf` from `offset`.
    ///
    /// # Errors
    /// Read errors; `UnexpectedEof` when the file is shorter.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
}

impl PageSource for File {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(self, buf, offset)
    }
}

impl PageSource for crate::sys::sqlite::VfsFile {
    fn read_exact_at(&self, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
        while !buf.is_empty() {
            let n = self.read_at(buf, offset)?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            buf = &mut buf[n..];
            offset += n as u64;
        }
        Ok(())
    }
}

/// What [`PageStore::verify`] found.
#[derive(Debug, Clone, Default)]
pub struct StoreCheck {
    /// For each point asked about (by its position), `None` when every page it uses
    /// re-hashed as recorded, or the first problem.
    pub points: Vec<Option<String>>,
    /// Stored pages re-hashed.
    pub pages_checked: u64,
    /// Packs whose bytes no longer hash to their name (even where no point is affected).
    pub damaged_packs: Vec<String>,
}

/// What [`PageStore::collect`] removed (or, in a dry run, would remove).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Collected {
    /// Packs no kept restore point uses.
    pub packs: Vec<String>,
    /// Their bytes.
    pub bytes: u64,
    /// Packs kept.
    pub kept_packs: u64,
    /// Their bytes.
    pub kept_bytes: u64,
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
    #[error("`{}` is not a warden page store (format 1): {why}\n(hint: move it aside; warden creates the store when its directory is missing or empty)", path.display())]
    NotAStore {
        /// The directory.
        path: PathBuf,
        /// What was found.
        why: String,
    },
    /// A page or the whole file does not hash as recorded, or a pack is missing.
    #[error(
        "the restore point cannot be materialized: {why}\n(hint: `warden backups verify --all` names every restore point this damage reaches; restore an older good one)"
    )]
    Damaged {
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

/// Open packs, each with its index, read once per operation.
#[derive(Default)]
struct Packs {
    open: HashMap<String, Result<(File, Index), String>>,
}

impl Packs {
    fn get(&mut self, store: &PageStore, name: &str) -> Result<&(File, Index), String> {
        self.open
            .entry(name.to_owned())
            .or_insert_with(|| {
                let path = store.pack_path(name);
                let f = File::open(&path).map_err(|e| format!("`{}`: {e}", path.display()))?;
                let idx = pack::read_index(&f).map_err(|e| format!("`{}`: {e}", path.display()))?;
                Ok((f, idx))
            })
            .as_ref()
            .map_err(Clone::clone)
    }
}

/// A map keyed by page hash. The keys are SHA-256 digests, uniformly spread already, so
/// their first bytes are the hash: SipHash over them again cost a tenth of a small put.
type ByHash<V> = HashMap<PageHash, V, std::hash::BuildHasherDefault<FirstBytes>>;

/// Where a stored page is: (pack number, entry in that pack).
type Place = (u32, u32);

/// The hasher of [`ByHash`]: folds in the first eight bytes of each write (a digest), and
/// ignores the short writes (the slice's length) that come with it.
#[derive(Default)]
struct FirstBytes(u64);

impl std::hash::Hasher for FirstBytes {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        if let Some(first) = bytes.first_chunk::<8>() {
            self.0 = self.0.rotate_left(17) ^ u64::from_le_bytes(*first);
        }
    }
}

/// Appends page `(pack, entry)` to `runs`, extending the last run when it continues it.
fn push_run(runs: &mut Vec<[u32; 3]>, pack: u32, entry: u32) {
    match runs.last_mut() {
        Some(r) if r[0] == pack && r[1] + r[2] == entry => r[2] += 1,
        _ => runs.push([pack, entry, 1]),
    }
}

/// Every page of `map` in file order as `(pack name, entry)`, or why the map is malformed.
fn walk<'m>(
    map: &'m PageMap,
    packs: &mut Packs,
    store: &PageStore,
    mut each: impl FnMut(u64, &'m str, &File, u32, &Entry, &Index) -> Result<(), String>,
) -> Result<(), String> {
    if map.format != 1 {
        return Err(format!("its page map has format {}, this warden reads 1", map.format));
    }
    let mut n = 0u64;
    for run in &map.runs {
        let name = map.packs.get(run[0] as usize).ok_or("its page map names a pack it does not list")?;
        let (f, idx) = packs.get(store, name)?;
        let end = run[1].checked_add(run[2]).ok_or("its page map overflows")?;
        let entries = idx.entries.get(run[1] as usize..end as usize).ok_or_else(|| {
            format!("its page map names entries {}..{end} of pack {name}, which has {}", run[1], idx.entries.len())
        })?;
        for (i, e) in (run[1]..).zip(entries) {
            n += 1;
            each(n, name, f, i, e, idx)?;
        }
    }
    Ok(())
}

/// The page store in one directory.
#[derive(Debug, Clone)]
pub struct PageStore {
    dir: PathBuf,
}

impl PageStore {
    /// The store of the backup directory `backups` (not created).
    pub fn of(backups: &Path) -> PageStore {
        PageStore { dir: backups.join(DIR) }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Creates the store (durably) when its directory is missing or empty; refuses a
    /// directory holding something else.
    ///
    /// # Errors
    /// [`StoreError::NotAStore`]; I/O errors.
    pub fn create(&self) -> Result<(), StoreError> {
        let marker = self.dir.join(MARKER_FILE);
        match std::fs::read_to_string(&marker) {
            Ok(m) if m == MARKER => Ok(()),
            Ok(m) => Err(StoreError::NotAStore {
                path: self.dir.clone(),
                why: format!("its marker says {:?}", m.trim_end()),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let empty = std::fs::read_dir(&self.dir).map(|mut d| d.next().is_none()).unwrap_or(true);
                if !empty {
                    return Err(StoreError::NotAStore { path: self.dir.clone(), why: "it has no marker".into() });
                }
                atomic::create_dir_synced(&self.dir, 0o700).map_err(io_err("creating", &self.dir))?;
                atomic::write_atomic(&marker, MARKER.as_bytes(), 0o600).map_err(io_err("writing", &marker))
            }
            Err(e) => Err(io_err("reading", &marker)(e)),
        }
    }

    /// The file of pack `name`.
    pub fn pack_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.{}", pack::EXT))
    }

    /// Every pack in the store: (name, bytes).
    ///
    /// # Errors
    /// I/O errors listing the directory (a missing store has no packs).
    pub fn packs(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let rd = match std::fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("listing", &self.dir)(e)),
        };
        let mut out = Vec::new();
        for e in rd {
            let e = e.map_err(io_err("listing", &self.dir))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(stem) = name.strip_suffix(&format!(".{}", pack::EXT))
                && stem.len() == 64
                && stem.bytes().all(|b| b.is_ascii_hexdigit())
            {
                out.push((stem.to_owned(), e.metadata().map(|m| m.len()).unwrap_or(0)));
            }
        }
        out.sort();
        Ok(out)
    }

    /// Temporary files of interrupted writes. Call with the store's lock held: none is live.
    ///
    /// # Errors
    /// I/O errors.
    pub fn remove_temporaries(&self) -> Result<Vec<PathBuf>, StoreError> {
        let mut out = Vec::new();
        let Ok(rd) = std::fs::read_dir(&self.dir) else { return Ok(out) };
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().contains(atomic::TMP_MARK) {
                std::fs::remove_file(e.path()).map_err(io_err("removing leftover", &e.path()))?;
                out.push(e.path());
            }
        }
        Ok(out)
    }

    /// Every page the store holds, by hash: where to find it (pack number in the names
    /// returned, entry).
    fn known(&self) -> Result<(Vec<String>, ByHash<Place>), StoreError> {
        let mut names = Vec::new();
        let mut out = ByHash::default();
        for (name, _) in self.packs()? {
            let path = self.pack_path(&name);
            let Ok(f) = File::open(&path) else { continue };
            // A pack whose index cannot be read is never used again: its pages are
            // stored anew (and `verify` reports the points that use it).
            let Ok(idx) = pack::read_index(&f) else { continue };
            let p = names.len() as u32;
            out.reserve(idx.entries.len());
            for (i, e) in idx.entries.iter().enumerate() {
                out.entry(e.sha256).or_insert((p, i as u32));
            }
            names.push(name);
        }
        Ok((names, out))
    }

    /// Stores the `size` bytes of `src` (settled: nothing writes it meanwhile) as whole
    /// pages of `page_size`, writing one new pack with the pages the store does not hold
    /// yet, zstd `level` (0: raw). `each_page(n, page, sha256)` sees every page once, in
    /// order (a seal's digests are made from it, so nothing is hashed twice). Call with the
    /// store's lock held.
    ///
    /// # Errors
    /// I/O errors, [`StoreError::NotPages`]; a pack may be left that no point uses yet
    /// (reused by the next put, or collected).
    pub fn put(
        &self,
        src: &dyn PageSource,
        size: u64,
        page_size: u32,
        level: i32,
        each_page: &mut dyn FnMut(u64, &[u8], &PageHash),
    ) -> Result<Put, StoreError> {
        let src_name = Path::new("(source)");
        if !(512..=65536).contains(&page_size) || !size.is_multiple_of(u64::from(page_size)) {
            return Err(StoreError::NotPages { path: src_name.to_owned(), size, page_size });
        }
        self.create()?;
        let (known_names, known) = self.known()?;
        // Created at the first page the store does not hold: an unchanged state writes nothing.
        let mut writer: Option<PackWriter> = None;
        let ps = page_size as usize;
        let mut whole = pipe::Whole::start();
        // Each page as (pack, entry), where pack u32::MAX is the new one.
        let mut placed: Vec<(u32, u32)> = Vec::new();
        let mut pack_names: Vec<String> = Vec::new();
        // Known pack number -> its number in this map's pack list.
        let mut pack_index: Vec<Option<u32>> = vec![None; known_names.len()];
        let mut fresh: ByHash<u32> = ByHash::default();
        let pages = size / u64::from(page_size);
        let per_chunk = (pipe::CHUNK / ps) as u64;
        let mut n = 0u64;
        while n < pages {
            let count = per_chunk.min(pages - n);
            let mut chunk = whole.chunk();
            chunk.truncate(count as usize * ps);
            src.read_exact_at(&mut chunk, n * u64::from(page_size)).map_err(io_err("reading", src_name))?;
            for page in chunk.chunks_exact(ps) {
                n += 1;
                let h: PageHash = Sha256::digest(page).into();
                each_page(n, page, &h);
                let at = if let Some(&(p, entry)) = known.get(&h) {
                    let i = *pack_index[p as usize].get_or_insert_with(|| {
                        pack_names.push(known_names[p as usize].clone());
                        pack_names.len() as u32 - 1
                    });
                    (i, entry)
                } else if let Some(&entry) = fresh.get(&h) {
                    (u32::MAX, entry)
                } else {
                    let w = match &mut writer {
                        Some(w) => w,
                        None => writer.insert(
                            PackWriter::create(&self.dir, page_size, level)
                                .map_err(io_err("creating a pack in", &self.dir))?,
                        ),
                    };
                    let entry = w.push(page, h).map_err(io_err("writing a pack in", &self.dir))?;
                    fresh.insert(h, entry);
                    (u32::MAX, entry)
                };
                placed.push(at);
            }
            whole.send(chunk);
        }
        let (sha256, _) = whole.finish().map_err(io_err("hashing", src_name))?;
        let new_pages = fresh.len() as u64;
        let pack_bytes = if let Some(writer) = writer {
            let (name, bytes) = writer.finish().map_err(io_err("publishing a pack in", &self.dir))?;
            let i = pack_names.len() as u32;
            pack_names.push(name);
            for p in &mut placed {
                if p.0 == u32::MAX {
                    p.0 = i;
                }
            }
            bytes
        } else {
            0
        };
        let mut runs: Vec<[u32; 3]> = Vec::new();
        for (p, e) in placed {
            push_run(&mut runs, p, e);
        }
        Ok(Put { map: PageMap { format: 1, packs: pack_names, runs }, sha256, size, pages, new_pages, pack_bytes })
    }

    /// Writes restore point `map` into the new file `to` (created, never replaced; the
    /// caller removes it on failure) and checks the whole file's SHA-256 against `sha256`
    /// while writing; the file is synced when `durable` (a scratch copy that is checked and
    /// thrown away need not be). `progress(done, total)` sees pages.
    ///
    /// # Errors
    /// [`StoreError::Damaged`] naming the first bad page when the bytes are not the
    /// recorded ones; I/O errors writing.
    pub fn materialize(
        &self,
        map: &PageMap,
        sha256: &str,
        to: &Path,
        durable: bool,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<u64, StoreError> {
        let out = std::fs::OpenOptions::new().write(true).create_new(true).open(to).map_err(io_err("creating", to))?;
        // Pages are read and decoded here; one worker writes each chunk, the other hashes it.
        let mut whole = pipe::Whole::start_writing(out);
        let mut packs = Packs::default();
        let mut spans = pack::Spans::default();
        let total = map.page_count();
        let mut written = 0u64;
        let mut chunk = whole.chunk();
        let mut at = 0;
        let walked = walk(map, &mut packs, self, |n, name, f, _, e, idx| {
            let ps = idx.page_size as usize;
            if at + ps > chunk.len() {
                let mut full = std::mem::replace(&mut chunk, whole.chunk());
                full.truncate(at);
                whole.send(full);
                at = 0;
            }
            let named = |err: io::Error| format!("page {n}: `{}`: {err}", self.pack_path(name).display());
            let stored = spans.stored(f, idx.file_len, e).map_err(named)?;
            pack::decode(e, stored, &mut chunk[at..at + ps]).map_err(named)?;
            at += ps;
            written += ps as u64;
            if n % 4096 == 0 {
                progress(n, total);
            }
            Ok(())
        });
        chunk.truncate(at);
        whole.send(chunk);
        let (sha, out) = whole.finish().map_err(io_err("writing", to))?;
        let out = out.unwrap_or_else(|| Err(io::Error::other("no file was written"))).map_err(io_err("writing", to))?;
        walked.map_err(|why| StoreError::Damaged { why })?;
        if sha != sha256 {
            // Name the page: check every page against its index.
            let why = self.first_bad_page(map).unwrap_or_else(|| "the whole file does not hash as recorded".into());
            return Err(StoreError::Damaged { why });
        }
        if durable {
            out.sync_all().map_err(io_err("syncing", to))?;
        }
        progress(total, total);
        Ok(written)
    }

    fn first_bad_page(&self, map: &PageMap) -> Option<String> {
        let mut packs = Packs::default();
        let (mut scratch, mut page) = (Vec::new(), Vec::new());
        walk(map, &mut packs, self, |n, name, f, _, e, idx| {
            let ps = idx.page_size;
            page.resize(ps as usize, 0);
            pack::read_page(f, e, ps, &mut scratch, &mut page)
                .map_err(|err| format!("page {n}: `{}`: {err}", self.pack_path(name).display()))
        })
        .err()
    }

    /// Re-hashes every stored page the points in `maps` use, each once (or, with `sample`
    /// = `Some(k)`, every k-th of them, a spot check), and checks each map's structure.
    /// A damaged page makes exactly the points that use it bad.
    ///
    /// # Errors
    /// I/O errors listing the store.
    pub fn verify(&self, maps: &[&PageMap], sample: Option<u64>) -> Result<StoreCheck, StoreError> {
        let mut packs = Packs::default();
        let mut out = StoreCheck::default();
        // (pack, entry) -> problem, for entries already checked.
        let mut seen: HashMap<(String, u32), Option<String>> = HashMap::new();
        let (mut scratch, mut page) = (Vec::new(), Vec::new());
        let mut k = 0u64;
        for map in maps {
            let mut first: Option<String> = None;
            let walked = walk(map, &mut packs, self, |n, name, f, i, e, idx| {
                let ps = idx.page_size;
                let key = (name.to_owned(), i);
                let verdict = match seen.get(&key) {
                    Some(v) => v.clone(),
                    None => {
                        k += 1;
                        let v = if sample.is_some_and(|s| s > 1 && !k.is_multiple_of(s)) {
                            None
                        } else {
                            out.pages_checked += 1;
                            page.resize(ps as usize, 0);
                            pack::read_page(f, e, ps, &mut scratch, &mut page)
                                .err()
                                .map(|err| format!("`{}`: {err}", self.pack_path(name).display()))
                        };
                        seen.insert(key, v.clone());
                        v
                    }
                };
                if let Some(v) = verdict
                    && first.is_none()
                {
                    first = Some(format!("page {n}: {v}"));
                }
                Ok(())
            });
            out.points.push(walked.err().or(first));
        }
        if sample.is_none() {
            for (name, _) in self.packs()? {
                let hashed = File::open(self.pack_path(&name)).and_then(|f| pack::file_sha256(&f));
                if hashed.map_or(true, |h| h != name) {
                    out.damaged_packs.push(name);
                }
            }
        }
        Ok(out)
    }

    /// Removes every pack no map in `keep` uses (unless `dry_run`). `keep` must be every
    /// restore point whose manifest exists, read with the store's lock held: a pack is
    /// deleted only when nothing names it.
    ///
    /// # Errors
    /// I/O errors; what was removed before one stays removed (it was unused).
    pub fn collect(&self, keep: &[&PageMap], dry_run: bool) -> Result<Collected, StoreError> {
        let used: HashSet<&str> = keep.iter().flat_map(|m| m.packs.iter().map(String::as_str)).collect();
        let mut out = Collected::default();
        for (name, bytes) in self.packs()? {
            if used.contains(name.as_str()) {
                out.kept_packs += 1;
                out.kept_bytes += bytes;
                continue;
            }
            if !dry_run {
                let p = self.pack_path(&name);
                crate::util::testing::pause_point("store-collect-remove");
                match std::fs::remove_file(&p) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_err("removing", &p)(e)),
                }
            }
            out.packs.push(name);
            out.bytes += bytes;
        }
        if !dry_run && !out.packs.is_empty() {
            atomic::sync_dir(&self.dir).map_err(io_err("syncing", &self.dir))?;
        }
        Ok(out)
    }

    /// Merges the pages that `maps` use from packs smaller than `small` bytes into one new
    /// pack, when at least `min_packs` such packs exist, and returns the rewritten maps
    /// (same pages, same order) for the caller to publish; the old packs are then unused
    /// and [`PageStore::collect`] removes them. `None` when it is not worthwhile.
    ///
    /// # Errors
    /// I/O errors, [`StoreError::Damaged`] for a page that does not hash as recorded (the
    /// damage is never copied into a new pack).
    pub fn repack(
        &self,
        maps: &[&PageMap],
        small: u64,
        min_packs: usize,
        level: i32,
    ) -> Result<Option<Vec<PageMap>>, StoreError> {
        let sizes: HashMap<String, u64> = self.packs()?.into_iter().collect();
        let used: HashSet<&str> = maps.iter().flat_map(|m| m.packs.iter().map(String::as_str)).collect();
        let victims: HashSet<&str> =
            used.iter().copied().filter(|p| sizes.get(*p).is_some_and(|&s| s < small)).collect();
        if victims.len() < min_packs {
            return Ok(None);
        }
        let mut packs = Packs::default();
        let page_size = {
            let any = victims.iter().next().copied().unwrap_or_default();
            packs.get(self, any).map_err(|why| StoreError::Damaged { why })?.1.page_size
        };
        let mut writer =
            PackWriter::create(&self.dir, page_size, level).map_err(io_err("creating a pack in", &self.dir))?;
        let mut moved: HashMap<PageHash, u32> = HashMap::new();
        let (mut scratch, mut page) = (Vec::new(), vec![0u8; page_size as usize]);
        // Per map, each page as (pack name or None for the new pack, entry).
        let mut placed: Vec<Vec<(Option<String>, u32)>> = Vec::new();
        for map in maps {
            let mut mine = Vec::new();
            let mut err = None;
            let walked = walk(map, &mut packs, self, |n, name, f, i, e, idx| {
                let ps = idx.page_size;
                if !victims.contains(name) || ps != page_size {
                    mine.push((Some(name.to_owned()), i));
                    return Ok(());
                }
                let entry = match moved.get(&e.sha256) {
                    Some(&i) => i,
                    None => {
                        pack::read_page(f, e, ps, &mut scratch, &mut page)
                            .map_err(|err| format!("page {n}: `{}`: {err}", self.pack_path(name).display()))?;
                        match writer.push(&page, e.sha256) {
                            Ok(i) => {
                                moved.insert(e.sha256, i);
                                i
                            }
                            Err(w) => {
                                err = Some(w);
                                return Err(String::new());
                            }
                        }
                    }
                };
                mine.push((None, entry));
                Ok(())
            });
            if let Some(e) = err {
                return Err(io_err("writing a pack in", &self.dir)(e));
            }
            walked.map_err(|why| StoreError::Damaged { why })?;
            placed.push(mine);
        }
        let (new_name, _) = writer.finish().map_err(io_err("publishing a pack in", &self.dir))?;
        let mut out = Vec::new();
        for (map, pages) in maps.iter().zip(placed) {
            let mut names: Vec<String> = Vec::new();
            let mut runs: Vec<[u32; 3]> = Vec::new();
            for (pack, entry) in pages {
                let name = pack.unwrap_or_else(|| new_name.clone());
                let i = match names.iter().position(|n| *n == name) {
                    Some(i) => i as u32,
                    None => {
                        names.push(name);
                        (names.len() - 1) as u32
                    }
                };
                push_run(&mut runs, i, entry);
            }
            debug_assert_eq!(runs.iter().map(|r| u64::from(r[2])).sum::<u64>(), map.page_count());
            out.push(PageMap { format: 1, packs: names, runs });
        }
        Ok(Some(out))
    }
}

#[cfg(test)]
mod tests;

//! Backups kept in the page store ([`crate::copies::store`]): storing a verified copy's
//! pages, taking a post-session restore point straight from the live file under the writer
//! lock (its check left to the next gate), materializing any backup byte for byte, settling
//! checks that were left pending, and collecting packs no kept backup uses.
//!
//! Does not own the pack format or the map (`copies::store`), taking and checking the copy
//! (`backup`), or which backups to keep (`retention`, `prune`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::{BackupError, BackupRecord, BackupStore, Manifest, StoreLock, io_err};
use crate::copies::check::IntegrityReport;
use crate::copies::store::{Collected, PageMap, PageStore, StoreError};
use crate::util::atomic;

/// How a store keeps new backups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "store")]
pub enum StoreFormat {
    /// One full `.sqlite` file per backup (warden before the page store).
    Files,
    /// Pages in the deduplicated page store, zstd `level` (0: raw).
    Pages {
        /// zstd level, 0 (off) to 19.
        level: i32,
    },
}

impl Default for StoreFormat {
    /// The page store, zstd level 3.
    fn default() -> Self {
        StoreFormat::Pages { level: 3 }
    }
}

/// When the content of a backup passed its check: what a manifest records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "when")]
pub enum CheckedWhen {
    /// The copy was checked before it was published.
    AtWrite,
    /// Not checked yet: the next gate settles it (its own check when the content is the
    /// same, else a check of the materialized point). Never good until then.
    Pending,
    /// The next gate's check of the same content (by its page digests) passed or failed.
    ByGate {
        /// The gate's backup.
        backup: String,
    },
    /// Materialized and checked later (`warden backups verify`, a gate that found other
    /// content).
    Later,
}

/// What storing a backup's pages cost, recorded in its manifest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredCost {
    /// Pages the store did not hold before this backup.
    pub new_pages: u64,
    /// Bytes this backup added to the store.
    pub new_bytes: u64,
    /// Milliseconds spent storing pages.
    pub store_ms: u64,
}

/// Why a backup could not be materialized.
#[derive(Debug, thiserror::Error)]
pub enum MaterializeError {
    /// The stored bytes are not the recorded ones (or a file is missing): a verification
    /// failure, never installed.
    #[error("{0}")]
    Damaged(String),
    /// Writing the new file failed.
    #[error("writing `{}`: {source}", path.display())]
    Write {
        /// The file being written.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

fn store_err(dir: &Path) -> impl Fn(StoreError) -> BackupError + '_ {
    move |e| match e {
        StoreError::Io { action, path, source } => BackupError::Io { action, path, source },
        other => BackupError::Io {
            action: "using the page store in",
            path: dir.to_owned(),
            source: std::io::Error::other(other),
        },
    }
}

impl BackupStore {
    /// The page store beside this store's backups.
    pub fn pages(&self) -> PageStore {
        PageStore::of(&self.dir)
    }

    /// Stores the pages of the verified private copy `tmp`; returns its map and what it cost.
    /// Call with the store's lock held.
    pub(super) fn store_copy(
        &self,
        tmp: &Path,
        page_size: u32,
        sha256: &str,
        level: i32,
    ) -> Result<(PageMap, StoredCost), BackupError> {
        let started = Instant::now();
        let f = std::fs::File::open(tmp).map_err(io_err("reading", tmp))?;
        let size = f.metadata().map_err(io_err("reading", tmp))?.len();
        let put = self.pages().put(&f, size, page_size, level, &mut |_, _, _| {}).map_err(store_err(&self.dir))?;
        if put.sha256 != sha256 {
            return Err(BackupError::Changing { db: tmp.to_owned() });
        }
        let cost = StoredCost {
            new_pages: put.new_pages,
            new_bytes: put.pack_bytes,
            store_ms: crate::util::fmt::ms(started.elapsed()),
        };
        Ok((put.map, cost))
    }

    /// Writes backup `rec` byte for byte into the new file `to` (the caller removes it on
    /// failure) and returns its SHA-256 and size: a file backup is copied and hashed, a
    /// paged one is materialized and checked against its recorded SHA-256.
    ///
    /// # Errors
    /// [`MaterializeError::Damaged`] when the stored bytes are not the recorded ones (a file
    /// backup's hash is compared by the caller); write errors.
    pub fn materialize(&self, rec: &BackupRecord, to: &Path) -> Result<(String, u64), MaterializeError> {
        self.materialize_with(rec, to, true)
    }

    /// [`BackupStore::materialize`] into a scratch file that is checked and thrown away:
    /// a restore point is not synced to disk (a drill, a verification).
    ///
    /// # Errors
    /// As [`BackupStore::materialize`].
    pub fn materialize_scratch(&self, rec: &BackupRecord, to: &Path) -> Result<(String, u64), MaterializeError> {
        self.materialize_with(rec, to, false)
    }

    fn materialize_with(
        &self,
        rec: &BackupRecord,
        to: &Path,
        durable: bool,
    ) -> Result<(String, u64), MaterializeError> {
        let write = |source: std::io::Error| MaterializeError::Write { path: to.to_owned(), source };
        match &rec.manifest.pages {
            None => crate::copies::copy::copy_hashed(&rec.path, to).map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound || !to.exists() {
                    MaterializeError::Damaged(format!("cannot read `{}`: {e}", rec.path.display()))
                } else {
                    write(e)
                }
            }),
            Some(map) => match self.pages().materialize(map, &rec.manifest.sha256, to, durable, &mut |_, _| {}) {
                Ok(n) => Ok((rec.manifest.sha256.clone(), n)),
                Err(StoreError::Damaged { why }) => Err(MaterializeError::Damaged(why)),
                Err(StoreError::Io { source, .. }) => Err(write(source)),
                Err(e) => Err(MaterializeError::Damaged(e.to_string())),
            },
        }
    }

    /// Rewrites the manifest of `rec` (atomically). Call with the store's lock held.
    pub(super) fn rewrite_manifest(&self, _lock: &StoreLock, m: &Manifest, path: &Path) -> Result<(), BackupError> {
        let bytes = serde_json::to_vec_pretty(m).map_err(|e| io_err("encoding", path)(std::io::Error::other(e)))?;
        atomic::write_atomic(path, &bytes, 0o600).map_err(io_err("writing", path))
    }

    /// Backups whose check is pending ([`CheckedWhen::Pending`]), newest first.
    ///
    /// # Errors
    /// As [`BackupStore::list`].
    pub fn pending_checks(&self) -> Result<Vec<BackupRecord>, BackupError> {
        Ok(self.list()?.into_iter().filter(|r| r.manifest.checked == Some(CheckedWhen::Pending)).collect())
    }

    /// Settles every pending check: a backup whose content digest is `content` takes the
    /// result of the check that just ran on that content (`report`, by the gate's backup
    /// `by`); any other pending backup is materialized and checked now. Returns the ids
    /// settled and whether each is good.
    ///
    /// # Errors
    /// I/O errors rewriting a manifest or materializing.
    pub fn settle_pending(
        &self,
        content: Option<&str>,
        report: &IntegrityReport,
        by: &str,
    ) -> Result<Vec<(String, bool)>, BackupError> {
        let pending = self.pending_checks()?;
        if pending.is_empty() {
            return Ok(Vec::new());
        }
        let lock = self.lock()?;
        let mut out = Vec::new();
        for rec in pending {
            let mut m = rec.manifest.clone();
            if content.is_some() && m.content.as_deref() == content {
                m.integrity = report.clone();
                m.checked = Some(CheckedWhen::ByGate { backup: by.to_owned() });
            } else {
                m.integrity = self.check_now(&rec)?;
                m.checked = Some(CheckedWhen::Later);
            }
            m.verified = m.integrity.ok;
            if !m.verified && m.kind == crate::copies::kind::BackupKind::Post {
                m.kind = crate::copies::kind::BackupKind::PostCrash;
            }
            self.rewrite_manifest(&lock, &m, &rec.manifest_path)?;
            tracing::info!(id = %m.id, good = m.verified, "settled a pending check");
            out.push((m.id.clone(), m.verified));
        }
        Ok(out)
    }

    /// Materializes `rec` into a scratch file and checks it (full check).
    fn check_now(&self, rec: &BackupRecord) -> Result<IntegrityReport, BackupError> {
        let scratch = self.dir.join(format!(".check{}{}", atomic::TMP_MARK, std::process::id()));
        let _ = std::fs::remove_file(&scratch);
        let cleanup = crate::copies::copy::TempGuard::with_sidecars(&scratch);
        let started = Instant::now();
        let report = match self.materialize_scratch(rec, &scratch) {
            Ok(_) => crate::copies::check::check_file(&scratch, crate::copies::check::CheckMode::Full, None, None).0,
            Err(MaterializeError::Damaged(why)) => {
                IntegrityReport::failed(crate::copies::check::CheckMode::Full, why, started.elapsed())
            }
            Err(MaterializeError::Write { path, source }) => {
                return Err(BackupError::Io { action: "materializing into", path, source });
            }
        };
        drop(cleanup);
        Ok(report)
    }

    /// Deletes the packs that no backup in this directory uses once `dropping` is gone
    /// (`dry_run`: only says which, and how many bytes that frees). Every manifest in the
    /// directory counts, this database's or another's; when one cannot be read nothing is
    /// collected (it might use any pack). Call with the store's lock held.
    ///
    /// # Errors
    /// I/O errors.
    pub fn collect_packs(&self, _lock: &StoreLock, dropping: &[&str], dry_run: bool) -> Result<Collected, BackupError> {
        let store = self.pages();
        if !store.dir().exists() {
            return Ok(Collected::default());
        }
        let mut maps = Vec::new();
        for (path, parsed) in self.all_manifests()? {
            match parsed {
                Ok(m) if dropping.contains(&m.id.as_str()) => {}
                Ok(m) => maps.extend(m.pages),
                Err(e) => {
                    tracing::warn!(manifest = %path.display(), error = %e, "a manifest cannot be read: no pack is collected");
                    return Ok(Collected::default());
                }
            }
        }
        let refs: Vec<&PageMap> = maps.iter().collect();
        store.collect(&refs, dry_run).map_err(store_err(&self.dir))
    }

    /// Merges small packs (under [`REPACK_SMALL`] bytes, when at least [`REPACK_MIN`] of them
    /// are in use) into one and rewrites every manifest that used them; the old packs are
    /// then unused, for [`BackupStore::collect_packs`]. Every step leaves every manifest's
    /// packs in place: the new pack is durable before any manifest names it, and an old one
    /// goes only once none does. Call with the store's lock held.
    ///
    /// # Errors
    /// I/O errors; a manifest that cannot be read stops it (nothing is rewritten).
    pub fn repack_small(&self, lock: &StoreLock) -> Result<usize, BackupError> {
        let store = self.pages();
        if !store.dir().exists() {
            return Ok(0);
        }
        let mut paged = Vec::new();
        for (path, parsed) in self.all_manifests()? {
            match parsed {
                Ok(m) if m.is_paged() => paged.push((path, m)),
                Ok(_) => {}
                Err(_) => return Ok(0),
            }
        }
        let maps: Vec<&PageMap> = paged.iter().filter_map(|(_, m)| m.pages.as_ref()).collect();
        let level = match self.format {
            StoreFormat::Pages { level } => level,
            StoreFormat::Files => 3,
        };
        let new = match store.repack(&maps, REPACK_SMALL, REPACK_MIN, level) {
            Ok(Some(new)) => new,
            Ok(None) => return Ok(0),
            // Damage is never copied into a new pack; `warden backups verify` reports it.
            Err(StoreError::Damaged { why }) => {
                tracing::warn!(%why, "small packs were not merged: a page does not hash as recorded");
                return Ok(0);
            }
            Err(e) => return Err(store_err(&self.dir)(e)),
        };
        let mut rewritten = 0;
        for ((path, m), map) in paged.iter().zip(new) {
            if m.pages.as_ref() == Some(&map) {
                continue;
            }
            let mut m = m.clone();
            m.pages = Some(map);
            self.rewrite_manifest(lock, &m, path)?;
            crate::util::testing::pause_point("repack-rewrote-one");
            rewritten += 1;
        }
        tracing::info!(manifests = rewritten, "merged small packs");
        Ok(rewritten)
    }
}

/// Packs smaller than this are merged when there are enough of them.
pub const REPACK_SMALL: u64 = 1 << 20;
/// How many small packs in use make a repack worthwhile.
pub const REPACK_MIN: usize = 16;

impl BackupStore {
    /// A post-session restore point read straight from the live file: the caller holds the
    /// writer lock, no engine runs, and the database is one file (no `-wal`, no
    /// `-journal`), so the main file is the whole database. Its pages are read through
    /// SQLite's own VFS (a descriptor whose close never drops a lock this process holds),
    /// hashed once (the seal's digests are made from the same hashes) and only new ones
    /// stored. Its check is left pending ([`CheckedWhen::Pending`]): the next gate checks
    /// the same content, or [`BackupStore::settle_pending`] checks it. Call with the
    /// store's lock held.
    pub(super) fn take_direct(
        &self,
        db: &Path,
        id: &str,
        mut manifest: Manifest,
        level: i32,
    ) -> Result<(Manifest, crate::copies::seal::PageDigests), BackupError> {
        let started = Instant::now();
        let before = crate::copies::copy::set_state(db);
        let file = crate::sys::sqlite::VfsFile::open(None, db).map_err(io_err("reading", db))?;
        let mut header = [0u8; 100];
        crate::copies::store::PageSource::read_exact_at(&file, &mut header, 0).map_err(io_err("reading", db))?;
        let raw = u32::from(u16::from_be_bytes([header[16], header[17]]));
        let page_size = if raw == 1 { 65536 } else { raw };
        let mut digests: Vec<crate::copies::seal::digest::PageDigest> = Vec::new();
        let mut first = crate::copies::seal::PageHasher::new();
        let put = self
            .pages()
            .put(&file, file.len(), page_size, level, &mut |n, page, sha| {
                if n == 1 {
                    first.update(page);
                } else {
                    let mut d = [0u8; crate::copies::seal::digest::DIGEST_LEN];
                    d.copy_from_slice(&sha[..crate::copies::seal::digest::DIGEST_LEN]);
                    digests.push(d);
                }
            })
            .map_err(store_err(&self.dir))?;
        drop(file);
        if crate::copies::copy::set_state(db) != before {
            return Err(BackupError::Changing { db: db.to_owned() });
        }
        let mut image = first.finish();
        image.digests.extend(digests);
        manifest.size = put.size;
        manifest.page_size = page_size;
        manifest.page_count = put.pages;
        manifest.sha256 = put.sha256;
        manifest.file = String::new();
        manifest.method = "direct_read".into();
        manifest.content = Some(image.content_digest());
        manifest.checked = Some(CheckedWhen::Pending);
        manifest.verified = false;
        manifest.integrity = IntegrityReport::failed(
            manifest.integrity.mode,
            "pending: the next gate checks this exact content (`warden backups verify` checks it now)".into(),
            std::time::Duration::ZERO,
        );
        manifest.pages = Some(put.map);
        manifest.stored = Some(StoredCost {
            new_pages: put.new_pages,
            new_bytes: put.pack_bytes,
            store_ms: crate::util::fmt::ms(started.elapsed()),
        });
        manifest.timings.copy_ms = crate::util::fmt::ms(started.elapsed());
        manifest.timings.total_ms = manifest.timings.copy_ms;
        debug_assert_eq!(manifest.id, id);
        Ok((manifest, image))
    }
}

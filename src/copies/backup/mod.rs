//! Verified backups and the directory that holds them.
//!
//! Owns: taking a consistent copy of a database set, checking it, hashing it, describing it
//! in a manifest and publishing both atomically; the integrity check ([`check_file`], from `copies::check`);
//! listing, hash-verifying and removing backups; recovering the leftovers of a killed run.
//! The copy, check and hash steps it shares with snapshots, restores and salvage live in the
//! crate-internal `copies::copy`. Does not own: which backups to keep
//! ([`crate::copies::retention`]), when to take them ([`crate::session::Session`]), or the raw header and WAL
//! scans ([`crate::format::scan`]).
//!
//! # How a backup is taken
//! 1. The store's lock (`.warden-store.lock`, `flock`) is taken, so a backup, a prune and a
//!    recovery never interleave, then leftovers of killed runs are removed (temporary files,
//!    a data file whose manifest was never published, a manifest whose data file is gone).
//! 2. Free space is checked: the copy needs the database plus its `-wal`, plus 10 %.
//! 3. The copy:
//!    - a database that is a single file (no `-wal`, no `-journal`) is copied with SQLite's
//!      online backup API from a read-only tooling connection, in **one step** when a writer
//!      may be live (a stepped backup restarts on every foreign commit and may never end),
//!      in steps with progress when the caller holds the writer lock and no engine runs;
//!    - a set with a `-wal` or `-journal` (a crashed or running engine) is, when the caller
//!      holds the writer lock with no engine running, copied byte for byte into a private
//!      scratch directory (never its `-shm`), and SQLite recovers the *copy*: the original is
//!      never opened read-write and its `-shm` is never rewritten. Sizes, times and inodes
//!      are compared before and after: a set that changed under the copy is refused.
//!      Without the writer lock, the backup API is used (SQLite's own locking).
//! 4. The copy is switched to `journal_mode=DELETE`, so it is one self-contained file.
//! 5. Verification, on two cores at once: `PRAGMA integrity_check` (or `quick_check`) and
//!    `PRAGMA foreign_key_check` on a **read-write** connection to the private copy (a
//!    read-only connection skips CHECK constraints), and SHA-256 of the file plus `fsync`.
//!    Any error, interruption or timeout is a failed check, never a pass.
//! 6. Publication: the data file is renamed into place, then its manifest is written
//!    atomically, then the directory is synced. A backup is listed only when its manifest
//!    exists; it counts as good only when the manifest says `verified` (see
//!    [`Manifest::is_good`]).
//!
//! Files are `0600` in a `0700` directory: a backup holds everything the database holds.

use std::fs::File;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};
use serde::{Deserialize, Serialize};

use crate::copies::copy::{
    self, CheckSpec, Failure, OnlineCopy, TempGuard, io_is_full, is_damage, is_disk_full, is_hot_journal,
};
use crate::copies::kind::BackupKind;
use crate::guard::vfs::Guard;
use crate::util::atomic::{self, TMP_MARK};
use crate::util::fmt::ms;
use crate::util::progress::{Phase, Progress};

pub use crate::copies::check::{CheckMode, IntegrityReport, check_file};

mod error;
mod manifest;
mod paged;

pub use error::BackupError;
pub(crate) use error::io_err;
pub use manifest::{BackupRecord, BackupRef, Manifest, Timings};
pub use paged::{CheckedWhen, MaterializeError, StoreFormat, StoredCost};

/// Suffix of backup data files.
pub const DATA_EXT: &str = "sqlite";
/// Suffix of manifests.
pub const MANIFEST_EXT: &str = "json";
const STORE_LOCK: &str = ".warden-store.lock";
const SCRATCH_PREFIX: &str = ".scratch";
/// Where recovery sets aside data files whose manifest was never published.
pub const QUARANTINE_DIR: &str = "quarantine";

/// How to take one backup.
#[derive(Clone, Default)]
pub struct BackupOptions {
    /// Why.
    pub kind: Option<BackupKind>,
    /// The session it belongs to.
    pub session_id: Option<String>,
    /// The check to run on the copy.
    pub check: CheckMode,
    /// Give up the check after this long (fails closed); `None` for no limit.
    pub check_budget: Option<Duration>,
    /// The caller holds the database's writer lock and no engine is running: the copy may
    /// be made in steps (with progress) and a set with a `-wal`/`-journal` may be copied
    /// privately and recovered. Never set it while an engine may be writing.
    pub writer_lock_held: bool,
    /// Never open the original set through SQLite when that would change it, even without
    /// the writer lock: a set with a `-wal`, `-journal` or `-shm` (or a WAL-mode header) is
    /// copied byte for byte and recovered on the private copy, as with
    /// [`BackupOptions::writer_lock_held`]. A read-only SQLite open would rebuild the `-shm`,
    /// create a `-wal` beside a WAL-mode file, or fail on a hot journal. Without the lock a
    /// writer outside warden may be active, so the copy is repeated until the set held still
    /// while it was copied ([`BackupError::Unsettled`] otherwise). For `warden check`, which
    /// promises to leave every original file byte-identical.
    pub private_copy_unlocked: bool,
    /// The guard whose tooling VFS reads the source (its audit log records the read);
    /// `None` uses the default guard.
    pub guard: Option<Guard>,
    /// Set to stop early (the backup then fails with [`BackupError::Cancelled`]).
    pub cancel: Option<Arc<AtomicBool>>,
    /// Keep the copy even when its check fails, published as unverified (for post-crash
    /// evidence); otherwise a failed copy is discarded and only its report is returned.
    pub keep_unverified: bool,
    /// Where progress goes.
    pub progress: Option<Arc<dyn Progress>>,
    /// What the copy must be, page for page (the gate of a sealed database): a copy that
    /// differs is not published, and [`BackupOutcome::seal_diff`] names the pages.
    pub expect_seal: Option<Arc<crate::copies::seal::SealedImage>>,
    /// Leave the check to the next gate: with [`BackupOptions::writer_lock_held`], a
    /// database that is one file and the page store, the pages are read straight from the
    /// live file and the restore point is published with its check pending
    /// ([`CheckedWhen::Pending`], never good until checked). Otherwise ignored.
    pub defer_check: bool,
}

impl std::fmt::Debug for BackupOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupOptions")
            .field("kind", &self.kind)
            .field("session_id", &self.session_id)
            .field("check", &self.check)
            .field("check_budget", &self.check_budget)
            .field("writer_lock_held", &self.writer_lock_held)
            .field("private_copy_unlocked", &self.private_copy_unlocked)
            .field("keep_unverified", &self.keep_unverified)
            .finish_non_exhaustive()
    }
}

/// What [`BackupStore::take`] produced.
#[derive(Debug, Clone)]
pub struct BackupOutcome {
    /// The check of the copy (also in the manifest when published).
    pub integrity: IntegrityReport,
    /// The published backup: `Some` when verified, or when kept unverified on request.
    pub published: Option<BackupRecord>,
    /// The manifest that was (or would have been) written.
    pub manifest: Manifest,
    /// The copy's page digests (what a seal of this content records), when it was hashed.
    pub digests: Option<Arc<crate::copies::seal::PageDigests>>,
    /// How the copy differs from [`BackupOptions::expect_seal`], when it does.
    pub seal_diff: Option<crate::copies::seal::SealDiff>,
}

/// The directory of one database's backups.
#[derive(Debug, Clone)]
pub struct BackupStore {
    dir: PathBuf,
    stem: String,
    /// The database, resolved: backups belong to the file, not to a name.
    db: PathBuf,
    /// How new backups are kept.
    format: StoreFormat,
}

/// Holds the store's lock while alive.
#[derive(Debug)]
pub struct StoreLock {
    _lock: nix::fcntl::Flock<File>,
}

/// What [`BackupStore::recover`] cleaned up.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Recovered {
    /// Leftover temporary files and scratch directories removed.
    pub temp_removed: Vec<PathBuf>,
    /// Data files whose manifest was never published, moved into `quarantine/` (they were
    /// never listed; nothing a user may own is deleted).
    pub orphan_data_quarantined: Vec<PathBuf>,
    /// Manifests whose data file is gone, removed.
    pub orphan_manifests_removed: Vec<PathBuf>,
}

impl Recovered {
    /// Nothing was found.
    pub fn is_empty(&self) -> bool {
        self.temp_removed.is_empty()
            && self.orphan_data_quarantined.is_empty()
            && self.orphan_manifests_removed.is_empty()
    }
}

/// `db` with `suffix` appended (`-wal`, `-journal`, `-shm`).
pub use crate::format::names::sidecar;

pub use crate::copies::copy::needs_private_copy;

pub(super) fn sqlite_version() -> String {
    rusqlite::version().to_owned()
}

pub use crate::util::testing::pause_point;

/// A manifest file and what reading it gave.
type ReadManifest = (PathBuf, Result<Manifest, String>);

impl BackupStore {
    /// The store in `dir` for the database `db` (files are named after `db`'s file name,
    /// and belong to it only when their manifest names its identity or its resolved path:
    /// see [`crate::copies::identity::belongs`]).
    pub fn new(dir: impl Into<PathBuf>, db: &Path) -> Self {
        let db = crate::storage::resolve(db).unwrap_or_else(|_| db.to_owned());
        let stem = db.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "db".into());
        BackupStore { dir: dir.into(), stem, db, format: StoreFormat::default() }
    }

    /// The same store, keeping new backups as `format` says (existing ones stay as they are).
    #[must_use]
    pub fn with_format(mut self, format: StoreFormat) -> Self {
        self.format = format;
        self
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The database the backups belong to (resolved).
    pub fn database(&self) -> &Path {
        &self.db
    }

    /// Creates the directory (`0700`) if needed.
    ///
    /// # Errors
    /// [`BackupError::Io`] when it cannot be created.
    pub fn ensure_dir(&self) -> Result<(), BackupError> {
        atomic::create_dir_synced(&self.dir, 0o700).map_err(io_err("creating the backup directory", &self.dir))
    }

    /// Refuses a database or a backup directory on storage the guard would refuse an engine
    /// on: backups copy from a local disk onto a local disk, whichever command takes them.
    fn judge_storage(&self, db: &Path, opts: &BackupOptions) -> Result<(), BackupError> {
        match copy::first_not_local(opts.guard.as_ref(), &[(db, "database"), (&self.dir, "backup directory")]) {
            Ok(None) => Ok(()),
            Ok(Some((path, what, v))) => Err(BackupError::StorageRefused { path, what, verdict: Box::new(v) }),
            Err((action, path, source)) => Err(BackupError::Io { action, path, source }),
        }
    }

    /// Takes the store's lock, waiting for another warden using the store to finish.
    ///
    /// # Errors
    /// [`BackupError::Io`] when the lock file cannot be opened or locked.
    pub fn lock(&self) -> Result<StoreLock, BackupError> {
        self.ensure_dir()?;
        let lock = copy::lock_exclusive(&self.dir.join(STORE_LOCK), "opening the store lock")?;
        Ok(StoreLock { _lock: lock })
    }

    /// A file name this store may have written: `<stem>-<stamp>-...` with exactly this
    /// database's file name as the stem (a database called `e.db-x` never matches `e.db`).
    fn is_ours(&self, name: &str) -> bool {
        let Some(rest) = name.strip_prefix(self.stem.as_str()).and_then(|r| r.strip_prefix('-')) else {
            return false;
        };
        // The stamp: `YYYYmmddTHHMMSS.mmmZ` (copy::stamp), then `-`.
        let b = rest.as_bytes();
        b.len() > 21
            && b[..8].iter().all(u8::is_ascii_digit)
            && b[8] == b'T'
            && b[9..15].iter().all(u8::is_ascii_digit)
            && b[15] == b'.'
            && b[16..19].iter().all(u8::is_ascii_digit)
            && b[19] == b'Z'
            && b[20] == b'-'
    }

    /// Removes what killed runs left behind. Call with the store's lock held.
    ///
    /// # Errors
    /// [`BackupError::Io`] when the directory cannot be read or a leftover removed.
    pub fn recover(&self, _lock: &StoreLock) -> Result<Recovered, BackupError> {
        let mut out = Recovered::default();
        let names = copy::dir_names(&self.dir)?;
        for name in &names {
            let path = self.dir.join(name);
            if name.contains(TMP_MARK)
                && (self.is_ours(name.trim_start_matches('.')) || name.starts_with(SCRATCH_PREFIX))
            {
                // The store lock is held, so no live warden owns a temporary file here.
                let r = if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
                r.map_err(io_err("removing leftover", &path))?;
                out.temp_removed.push(path);
            }
        }
        for name in &names {
            if !self.is_ours(name) || name.contains(TMP_MARK) {
                continue;
            }
            let path = self.dir.join(name);
            if let Some(stem) = name.strip_suffix(&format!(".{DATA_EXT}")) {
                let m = self.dir.join(format!("{stem}.{MANIFEST_EXT}"));
                if !m.exists() {
                    // A data file without a manifest was never listed, but it is a copy of
                    // someone's database (maybe another database of this name): set aside,
                    // never deleted.
                    let q = self.dir.join(QUARANTINE_DIR);
                    atomic::create_dir_synced(&q, 0o700).map_err(io_err("creating", &q))?;
                    let to = q.join(name);
                    atomic::rename_noreplace(&path, &to).map_err(io_err("quarantining unpublished copy", &path))?;
                    atomic::sync_dir(&q).map_err(io_err("syncing", &q))?;
                    out.orphan_data_quarantined.push(to);
                }
            } else if let Some(stem) = name.strip_suffix(&format!(".{MANIFEST_EXT}")) {
                let d = self.dir.join(format!("{stem}.{DATA_EXT}"));
                // A backup in the page store has no data file: its manifest is the backup.
                // Only a manifest that parses and names a data file is an orphan.
                let names_a_file = || {
                    std::fs::read(&path)
                        .ok()
                        .and_then(|b| serde_json::from_slice::<Manifest>(&b).ok())
                        .is_some_and(|m| !m.is_paged())
                };
                if !d.exists() && names_a_file() {
                    std::fs::remove_file(&path).map_err(io_err("removing orphan manifest", &path))?;
                    out.orphan_manifests_removed.push(path);
                }
            }
        }
        match self.pages().remove_temporaries() {
            Ok(gone) => out.temp_removed.extend(gone),
            Err(e) => return Err(io_err("removing leftovers in", &self.dir)(std::io::Error::other(e))),
        }
        if !out.is_empty() {
            atomic::sync_dir(&self.dir).map_err(io_err("syncing", &self.dir))?;
            tracing::warn!(dir = %self.dir.display(), ?out, "recovered leftovers of an interrupted backup or prune");
        }
        Ok(out)
    }

    /// Every published backup of this database, newest first. Manifests that cannot be
    /// parsed are skipped with a warning (they never count as good).
    ///
    /// # Errors
    /// [`BackupError::Io`] when the directory cannot be read.
    pub fn list(&self) -> Result<Vec<BackupRecord>, BackupError> {
        let ours = crate::copies::identity::load(&self.db);
        Ok(self
            .list_named()?
            .into_iter()
            .filter(|r| {
                crate::copies::identity::belongs(
                    r.manifest.db_id.as_deref(),
                    &r.manifest.source,
                    ours.as_deref(),
                    &self.db,
                )
            })
            .collect())
    }

    /// Published backups with this database's file name that belong to **another**
    /// database (another identity or path), newest first: never restored, pruned or
    /// counted, unless an operator names one explicitly.
    ///
    /// # Errors
    /// As [`BackupStore::list`].
    pub fn list_foreign(&self) -> Result<Vec<BackupRecord>, BackupError> {
        let ours = crate::copies::identity::load(&self.db);
        Ok(self
            .list_named()?
            .into_iter()
            .filter(|r| {
                !crate::copies::identity::belongs(
                    r.manifest.db_id.as_deref(),
                    &r.manifest.source,
                    ours.as_deref(),
                    &self.db,
                )
            })
            .collect())
    }

    /// Every published backup whose file name is this database's, newest first.
    fn list_named(&self) -> Result<Vec<BackupRecord>, BackupError> {
        let mut out = Vec::new();
        for (manifest_path, parsed) in self.manifests()? {
            match parsed {
                Ok(manifest) if manifest.is_paged() => {
                    // Its bytes are in the page store: the manifest is the backup.
                    out.push(BackupRecord { manifest, path: manifest_path.clone(), manifest_path });
                }
                Ok(manifest) => {
                    let path = self.dir.join(&manifest.file);
                    if path.exists() && !manifest.file.contains('/') && !manifest.file.is_empty() {
                        out.push(BackupRecord { manifest, path, manifest_path });
                    }
                }
                Err(e) => {
                    tracing::warn!(manifest = %manifest_path.display(), error = %e, "unreadable manifest skipped")
                }
            }
        }
        out.sort_by(|a, b| b.manifest.created.cmp(&a.manifest.created).then(b.manifest.id.cmp(&a.manifest.id)));
        Ok(out)
    }

    /// This database's published manifests that cannot be read or parsed (which
    /// [`BackupStore::list`] skips with a warning), with why: `warden backups verify --all`
    /// counts each as a failed backup.
    ///
    /// # Errors
    /// [`BackupError::Io`] when the directory cannot be read.
    pub fn unreadable_manifests(&self) -> Result<Vec<(PathBuf, String)>, BackupError> {
        let mut out: Vec<_> =
            self.manifests()?.into_iter().filter_map(|(path, parsed)| parsed.err().map(|e| (path, e))).collect();
        out.sort();
        Ok(out)
    }

    /// This database's published manifest files (never temporaries), each read and parsed.
    fn manifests(&self) -> Result<Vec<ReadManifest>, BackupError> {
        self.read_manifests(true)
    }

    /// Every published manifest in the directory, any database's: what the page store's
    /// collection must keep.
    fn all_manifests(&self) -> Result<Vec<ReadManifest>, BackupError> {
        self.read_manifests(false)
    }

    fn read_manifests(&self, only_ours: bool) -> Result<Vec<ReadManifest>, BackupError> {
        let mut out = Vec::new();
        for name in copy::dir_names(&self.dir)? {
            if (only_ours && !self.is_ours(&name))
                || name.contains(TMP_MARK)
                || name.starts_with('.')
                || !name.ends_with(&format!(".{MANIFEST_EXT}"))
            {
                continue;
            }
            let manifest_path = self.dir.join(&name);
            let parsed = std::fs::read(&manifest_path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<Manifest>(&b).map_err(|e| e.to_string()));
            out.push((manifest_path, parsed));
        }
        Ok(out)
    }

    /// The newest backup that is good ([`Manifest::is_good`]).
    ///
    /// # Errors
    /// As [`BackupStore::list`].
    pub fn newest_good(&self) -> Result<Option<BackupRecord>, BackupError> {
        Ok(self.list()?.into_iter().find(|r| r.manifest.is_good()))
    }

    /// Re-hashes a backup's data file and compares size and SHA-256 with its manifest.
    ///
    /// # Errors
    /// [`BackupError::Io`] when the file cannot be read.
    pub fn verify_hash(&self, rec: &BackupRecord) -> Result<bool, BackupError> {
        // A paged backup's record names its manifest; a record of a materialized copy of
        // one (`backups verify`) names the copy, which is hashed like any data file.
        if rec.path == rec.manifest_path {
            return Err(io_err("hashing", &rec.path)(io::Error::other(
                "a backup in the page store has no data file: materialize it first",
            )));
        }
        let md = std::fs::metadata(&rec.path).map_err(io_err("reading", &rec.path))?;
        if md.len() != rec.manifest.size {
            return Ok(false);
        }
        let (hash, _) = copy::sha256_file(&rec.path, None).map_err(io_err("hashing", &rec.path))?;
        Ok(hash == rec.manifest.sha256)
    }

    /// Removes a backup: the manifest first (so it is no longer listed), then the data file,
    /// then the directory is synced. Call with the store's lock held.
    ///
    /// # Errors
    /// [`BackupError::Io`] when a file cannot be removed; a crash in between leaves an
    /// unlisted data file that [`BackupStore::recover`] removes.
    pub fn remove(&self, _lock: &StoreLock, rec: &BackupRecord) -> Result<(), BackupError> {
        std::fs::remove_file(&rec.manifest_path).map_err(io_err("removing", &rec.manifest_path))?;
        pause_point("remove-between");
        // A paged backup's record names its manifest; a record of a materialized copy of
        // one (`backups verify`) names the copy, which is hashed like any data file.
        if rec.path == rec.manifest_path {
            // Its pages stay until no kept backup uses them (`collect_packs`).
            return atomic::sync_dir(&self.dir).map_err(io_err("syncing", &self.dir));
        }
        match std::fs::remove_file(&rec.path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("removing", &rec.path)(e)),
        }
        atomic::sync_dir(&self.dir).map_err(io_err("syncing", &self.dir))
    }

    fn new_id(&self, kind: BackupKind) -> String {
        let base = format!("{}-{}-{}", self.stem, copy::stamp(), kind.as_str());
        let mut id = base.clone();
        let mut n = 1;
        while self.dir.join(format!("{id}.{MANIFEST_EXT}")).exists()
            || self.dir.join(format!("{id}.{DATA_EXT}")).exists()
        {
            n += 1;
            id = format!("{base}.{n}");
        }
        id
    }

    /// Free bytes for unprivileged users in the store's directory.
    ///
    /// # Errors
    /// [`BackupError::Io`] when `statvfs` fails.
    pub fn free_bytes(&self) -> Result<u64, BackupError> {
        copy::free_bytes(&self.dir).map_err(|e| BackupError::Io {
            action: "statvfs",
            path: self.dir.clone(),
            source: e.into(),
        })
    }

    /// Bytes a backup of `db` needs: database + `-wal` + `-journal`, plus 10 % and 1 MiB.
    pub fn space_needed(db: &Path) -> u64 {
        copy::with_headroom(copy::size_of(db) + Self::sidecar_bytes(db))
    }

    /// Bytes of `-wal` and `-journal` beside `db`.
    fn sidecar_bytes(db: &Path) -> u64 {
        copy::size_of(&sidecar(db, "-wal")) + copy::size_of(&sidecar(db, "-journal"))
    }

    /// Takes, checks, hashes and (when verified, or on request) publishes a backup of `db`.
    ///
    /// # Errors
    /// [`BackupError`] when no copy could be made; a copy that fails its check is reported
    /// in [`BackupOutcome::integrity`] instead.
    pub fn take(&self, db: &Path, opts: &BackupOptions) -> Result<BackupOutcome, BackupError> {
        let started = Instant::now();
        let kind = opts.kind.unwrap_or(BackupKind::Manual);
        match crate::storage::check_database(db, crate::storage::Need::Read) {
            Ok(()) => {}
            Err(crate::storage::TargetError::Missing { .. }) => return Err(BackupError::Missing { db: db.to_owned() }),
            Err(e) => return Err(e.into()),
        }
        if copy::is_empty_db(db) {
            return Err(BackupError::Empty { db: db.to_owned() });
        }
        crate::storage::target::require_sqlite(db)?;
        crate::storage::target::require_utf8(&self.dir)?;
        self.judge_storage(db, opts)?;
        // Read, never created here: a check or a scratch copy must create nothing beside the
        // database (a guarded session creates the identity, `Session::begin`).
        let db_id = crate::copies::identity::load(&self.db);
        let lock = self.lock()?;
        self.recover(&lock)?;
        let needed = Self::space_needed(db);
        let available = self.free_bytes()?;
        if available < needed {
            return Err(BackupError::NoSpace { dir: self.dir.clone(), needed, available });
        }
        pause_point("backup-preflight-passed");
        let id = self.new_id(kind);
        if let (true, StoreFormat::Pages { level }) = (opts.defer_check && opts.writer_lock_held, self.format)
            && opts.expect_seal.is_none()
            && main_file_is_whole(db)
        {
            let mut m = Manifest::unpublished(
                &id,
                kind,
                db,
                opts,
                IntegrityReport::failed(opts.check, String::new(), Duration::ZERO),
            );
            m.db_id = db_id.clone();
            m.source_sidecar_bytes = Self::sidecar_bytes(db);
            let (m, digests) = self.take_direct(db, &id, m, level)?;
            let manifest_path = self.dir.join(format!("{id}.{MANIFEST_EXT}"));
            if let Err(e) = self.rewrite_manifest(&lock, &m, &manifest_path) {
                let _ = std::fs::remove_file(&manifest_path);
                return Err(e);
            }
            pause_point("backup-published");
            return Ok(BackupOutcome {
                integrity: m.integrity.clone(),
                published: Some(BackupRecord { manifest: m.clone(), path: manifest_path.clone(), manifest_path }),
                manifest: m,
                digests: Some(Arc::new(digests)),
                seal_diff: None,
            });
        }
        let final_path = self.dir.join(format!("{id}.{DATA_EXT}"));
        let tmp = atomic::temp_path_for(&final_path);
        let guard_tmp = TempGuard::with_sidecars(&tmp);
        let full = |e: BackupError| match &e {
            BackupError::Sqlite { source, .. } if is_disk_full(source) => {
                BackupError::DiskFull { dir: self.dir.clone() }
            }
            BackupError::Io { source, .. } if io_is_full(source) => BackupError::DiskFull { dir: self.dir.clone() },
            _ => e,
        };

        let sidecar_bytes = Self::sidecar_bytes(db);
        let copy_started = Instant::now();
        let copied = self.copy(db, &tmp, opts).and_then(|method| {
            pause_point("backup-copied");
            copy::finalize(&tmp)?;
            Ok(method)
        });
        let method = match copied.map_err(full) {
            Ok(m) => m,
            // SQLite could not even read the set: the database is damaged. That is a failed
            // check (a report), not a failure to take the backup.
            Err(BackupError::Sqlite { action, path, source }) if is_damage(&source) => {
                let integrity = IntegrityReport::failed(
                    opts.check,
                    format!("{action} `{}`: {source}", path.display()),
                    started.elapsed(),
                );
                let manifest = Manifest::unpublished(&id, kind, db, opts, integrity.clone());
                return Ok(BackupOutcome { integrity, published: None, manifest, digests: None, seal_diff: None });
            }
            Err(e) => return Err(e),
        };
        let copy_ms = ms(copy_started.elapsed());
        copy::check_cancel(opts.cancel.as_ref(), db)?;

        let (integrity, sha256, hash_ms, (page_size, page_count), digests) =
            verify_copy(&tmp, opts).map_err(|f| full(f.into()))?;
        // Compared while the copy is still here to name the pages that differ.
        let seal_diff = opts.expect_seal.as_ref().and_then(|s| crate::copies::seal::diff(s, &digests, &tmp));
        let digests = Some(Arc::new(digests));
        copy::check_cancel(opts.cancel.as_ref(), db)?;
        pause_point("backup-verified");
        let size = std::fs::metadata(&tmp).map_err(io_err("reading", &tmp))?.len();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).map_err(io_err("chmod", &tmp))?;
        let verified = integrity.ok;
        let kind = if !verified && kind == BackupKind::Post { BackupKind::PostCrash } else { kind };
        let manifest = Manifest {
            schema: 1,
            id: id.clone(),
            file: format!("{id}.{DATA_EXT}"),
            kind,
            created: crate::util::identity::now_rfc3339(),
            source: db.to_owned(),
            db_id: db_id.clone(),
            session_id: opts.session_id.clone(),
            size,
            page_size,
            page_count,
            sha256,
            integrity: integrity.clone(),
            verified,
            method: method.to_owned(),
            source_sidecar_bytes: sidecar_bytes,
            timings: Timings { copy_ms, check_ms: integrity.duration_ms, hash_ms, total_ms: ms(started.elapsed()) },
            sqlite_version: sqlite_version(),
            warden_version: env!("CARGO_PKG_VERSION").to_owned(),
            host: crate::util::identity::ProcessIdentity::current().host,
            pages: None,
            stored: None,
            content: None,
            checked: None,
        };
        // Not what was sealed: verified structure, unexpected content. Never published as
        // a good backup (a restore would pick it).
        if (!verified && !opts.keep_unverified) || seal_diff.is_some() {
            return Ok(BackupOutcome { integrity, published: None, manifest, digests, seal_diff });
        }
        // A journal or WAL still beside the copy means SQLite could not finish with it (an
        // I/O error while it was checked): the bytes hashed may not be the bytes a reader
        // would see. Never published.
        if let Some(side) =
            ["-journal", "-wal"].iter().map(|s| crate::format::names::sidecar(&tmp, s)).find(|p| p.exists())
        {
            let why = io::Error::other("SQLite left this file beside the private copy: the copy is not settled");
            return Err(full(io_err("settling the private copy", &side)(why)));
        }
        let mut manifest = manifest;
        manifest.content = digests.as_ref().map(|d| d.content_digest());
        manifest.checked = Some(CheckedWhen::AtWrite);
        let manifest_path = self.dir.join(format!("{id}.{MANIFEST_EXT}"));
        let final_path = match self.format {
            StoreFormat::Pages { level } => {
                let (map, cost) = self.store_copy(&tmp, page_size, &manifest.sha256, level).map_err(full)?;
                manifest.file = String::new();
                manifest.pages = Some(map);
                manifest.stored = Some(cost);
                manifest.timings.total_ms = ms(started.elapsed());
                pause_point("backup-pages-stored");
                manifest_path.clone()
            }
            StoreFormat::Files => {
                std::fs::rename(&tmp, &final_path).map_err(io_err("publishing", &final_path))?;
                pause_point("backup-data-renamed");
                final_path
            }
        };
        let written = serde_json::to_vec_pretty(&manifest)
            .map_err(io::Error::other)
            .and_then(|bytes| atomic::write_atomic(&manifest_path, &bytes, 0o600));
        if let Err(e) = written {
            // Without its manifest the copy is not a backup: take it back out, so a failed
            // backup leaves the directory as it found it (and frees the space it took). The
            // manifest too: its rename may have landed before the directory sync failed.
            let _ = std::fs::remove_file(&manifest_path);
            if final_path != manifest_path {
                let _ = std::fs::remove_file(&final_path);
            }
            let _ = atomic::sync_dir(&self.dir);
            return Err(full(io_err("writing", &manifest_path)(e)));
        }
        pause_point("backup-published");
        drop(guard_tmp);
        drop(lock);
        Ok(BackupOutcome {
            integrity,
            published: Some(BackupRecord { manifest: manifest.clone(), path: final_path, manifest_path }),
            manifest,
            digests,
            seal_diff: None,
        })
    }

    fn copy(&self, db: &Path, tmp: &Path, opts: &BackupOptions) -> Result<&'static str, BackupError> {
        // A read-only SQLite open of a WAL-mode database creates its -wal and rebuilds its
        // -shm; of a set with a hot journal it fails. With the lock held, copy such sets
        // privately so the originals stay byte-identical.
        if needs_private_copy(db) && (opts.writer_lock_held || opts.private_copy_unlocked) {
            self.private_copy(db, tmp, opts)?;
            return Ok("private_copy_recovered");
        }
        // In steps (with progress) when the caller holds the writer lock: nothing can restart
        // a stepped copy then.
        let how = OnlineCopy {
            guard: opts.guard.as_ref(),
            pages_per_step: if opts.writer_lock_held { 4096 } else { -1 },
            cancel: opts.cancel.as_ref(),
            progress: opts.progress.as_ref(),
        };
        match copy::online_copy(db, tmp, &how) {
            Err(Failure::Sqlite { source, .. }) if is_hot_journal(&source) => {
                Err(BackupError::HotJournal { db: db.to_owned() })
            }
            other => other.map(|()| "backup_api").map_err(BackupError::from),
        }
    }

    /// Copies db + `-wal` + `-journal` (never `-shm`) into a scratch directory, lets SQLite
    /// recover the copy, and moves the recovered file to `tmp`.
    fn private_copy(&self, db: &Path, tmp: &Path, opts: &BackupOptions) -> Result<(), BackupError> {
        let scratch = self.dir.join(format!("{SCRATCH_PREFIX}{TMP_MARK}{}.{}", std::process::id(), unique()));
        std::fs::DirBuilder::new().mode(0o700).create(&scratch).map_err(io_err("creating", &scratch))?;
        let _cleanup = TempGuard::new(vec![scratch.clone()]);
        let copy_db = scratch.join("db");
        // Under the lock nothing but a writer outside warden can change the set; without it
        // (`private_copy_unlocked`) such a writer may simply be busy, so try a few more times.
        let attempts = if opts.writer_lock_held { 2 } else { 5 };
        for attempt in 1..=attempts {
            let before = copy::set_state(db);
            copy::copy_set(db, &copy_db, opts.cancel.as_ref())?;
            if copy::set_state(db) == before {
                break;
            }
            if attempt == attempts {
                return Err(if opts.writer_lock_held {
                    BackupError::Changing { db: db.to_owned() }
                } else {
                    BackupError::Unsettled { db: db.to_owned() }
                });
            }
            std::thread::sleep(Duration::from_millis(50 * attempt));
        }
        if let Some(p) = &opts.progress {
            p.update(Phase::Copy, 1, 1);
        }
        // Opening the copy read-write lets SQLite roll back the hot journal or replay the
        // WAL into the copy, exactly as the engine would at its next open.
        let sq = |action: &'static str| {
            let path = copy_db.clone();
            move |source| BackupError::Sqlite { action, path, source }
        };
        let conn = Connection::open_with_flags_and_vfs(
            &copy_db,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            crate::copies::check::PRIVATE_VFS,
        )
        .map_err(sq("opening the private copy"))?;
        let mode: String =
            conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).map_err(sq("recovering the private copy"))?;
        if mode.eq_ignore_ascii_case("wal") {
            let (busy, _, _): (i64, i64, i64) = conn
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .map_err(sq("checkpointing the private copy"))?;
            if busy != 0 {
                return Err(BackupError::Sqlite {
                    action: "checkpointing the private copy",
                    path: copy_db.clone(),
                    source: rusqlite::Error::SqliteFailure(
                        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
                        Some("checkpoint incomplete".into()),
                    ),
                });
            }
        }
        drop(conn);
        std::fs::rename(&copy_db, tmp).map_err(io_err("moving the private copy", tmp))?;
        Ok(())
    }
}

/// The main file holds the whole database: no `-journal`, and no `-wal` or an empty one (a
/// checkpointed WAL database; its `-shm` is never read).
fn main_file_is_whole(db: &Path) -> bool {
    !sidecar(db, "-journal").exists() && std::fs::metadata(sidecar(db, "-wal")).map_or(true, |m| m.len() == 0)
}

fn unique() -> u64 {
    use std::sync::atomic::AtomicU64;
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// Integrity check beside hash + fsync ([`copy::check_and_hash`]). Returns the report (failed
/// when the copy changed meanwhile), the hash, the hash time, and (page_size, page_count).
/// What [`verify_copy`] found: the check, the SHA-256, hashing time, (page size, count), the
/// page digests.
type Verified = (IntegrityReport, String, u64, (u32, u64), crate::copies::seal::PageDigests);

fn verify_copy(tmp: &Path, opts: &BackupOptions) -> Result<Verified, Failure> {
    let spec = CheckSpec {
        mode: Some(opts.check),
        budget: opts.check_budget,
        cancel: opts.cancel.as_ref(),
        progress: opts.progress.as_ref(),
    };
    let checked = copy::check_and_hash(tmp, &spec)?;
    let mut report = checked
        .report
        .unwrap_or_else(|| IntegrityReport::failed(opts.check, "the check did not run".into(), Duration::ZERO));
    let mut sha256 = checked.sha256;
    if checked.changed {
        report.ok = false;
        report.error = Some("the copy changed while it was being checked".into());
        // Never good, but kept as evidence (a post-crash copy): its manifest must still
        // describe the bytes it keeps, not the ones hashed before they changed.
        sha256 = copy::sha256_file(tmp, None)
            .map_err(|e| Failure::Io { action: "hashing", path: tmp.to_owned(), source: e })?
            .0;
    }
    Ok((report, sha256, ms(checked.hash_time), checked.pages, checked.digests))
}

//! Analysis snapshots: consistent, read-only, self-contained copies for the tools that read
//! the engine's data while it runs.
//!
//! Owns: taking a snapshot, publishing it atomically, re-pointing the stable name
//! [`LATEST`] at it, the snapshots' own retention, and recovering what a killed run left.
//! Does not own: verified backups ([`crate::copies::backup`]; a snapshot is not a backup and is never
//! restored), the copy, check and hash steps it shares with backups (the crate-internal
//! `copies::copy`), when periodic snapshots are taken ([`crate::session::run`]), or opening them for
//! analysis ([`open_snapshot`]).
//!
//! The operators' rule is that the engine is the only writer and analysis never reads the
//! live database (a long read transaction there blocks checkpoints and grows the WAL, a
//! reader in rollback mode can stall a commit, and opening a WAL database maps and writes
//! its `-shm`). Analysis reads a snapshot instead.
//!
//! # How a snapshot is taken ([`take`])
//! 1. The directory's lock (`.warden-snapshots.lock`, `flock`) is taken, so two snapshots,
//!    their retention and the recovery never interleave; then the leftovers of killed runs
//!    are removed (temporary files, a data file whose manifest was never written, a manifest
//!    whose data file is gone).
//! 2. Free space is checked: the database plus its `-wal`, plus 10 % and 1 MiB.
//! 3. The copy is made with SQLite's online backup API, in **one step**, from a read-only
//!    tooling connection ([`crate::guard::connect::open_tool`]): it goes through SQLite's locking
//!    and copies exactly one committed state, so it is safe while the engine commits (a
//!    stepped backup restarts at every foreign commit and may never finish). The live files
//!    are never copied byte for byte.
//! 4. The copy is switched to `journal_mode=DELETE`: one self-contained rollback-journal
//!    file holding the checkpointed state, with no `-wal` or `-shm` beside it. That is what
//!    `immutable=1` needs (it ignores any `-wal`), and what the sqlite3 CLI, Python's
//!    `sqlite3` and `datasette --immutable` read.
//! 5. The copy is checked (`PRAGMA quick_check` by default, see [`SnapshotOptions::check`])
//!    while it is hashed (SHA-256) and `fsync`ed. A copy that fails its check is never
//!    published ([`SnapshotError::CheckFailed`]); `latest` keeps pointing at the previous one.
//! 6. Publication: mode `0444`, rename to `<db name>-<UTC time>.sqlite`, then its manifest
//!    `<db name>-<UTC time>.json` is written atomically, then the directory is synced. A
//!    snapshot counts only once its manifest exists.
//! 7. `latest.sqlite` is re-pointed: the new snapshot is hard-linked to a temporary name,
//!    which is renamed over `latest.sqlite`. A reader that opened the old `latest` keeps
//!    reading its inode (a complete snapshot); one that opens the name again gets the new one;
//!    no reader can ever open a half-written `latest`.
//! 8. Retention: the newest [`SnapshotOptions::keep`] snapshots stay (default 5), and so does
//!    the one `latest` points to, whatever its age. Manifest first, then data file.
//!
//! # Layout
//! ```text
//! <db>.warden/snapshots/              (default; 0750: access is granted through the directory)
//!   .warden-snapshots.lock
//!   engine.db-20261125T181430.123Z.sqlite   0444, one rollback-journal file
//!   engine.db-20261125T181430.123Z.json     0444, its manifest (schema 1, see SnapshotManifest)
//!   latest.sqlite                           0444, a hard link to the newest snapshot
//! ```
//! One directory per database: `latest.sqlite` has no database name in it.
//!
//! File modes stop accidents, not root: a process running as root can still open a
//! snapshot for writing. Tools should open it with `immutable=1` or through
//! [`open_snapshot`].

use std::fs::File;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};
use serde::{Deserialize, Serialize};

use crate::copies::backup::{CheckMode, IntegrityReport, pause_point, sidecar};
use crate::copies::copy::{
    self, CheckSpec, Failure, OnlineCopy, TempGuard, io_is_full, is_damage, is_disk_full, is_hot_journal,
};
use crate::format::names;
use crate::guard::connect::{OpenError, ToolOptions, open_tool};
use crate::guard::vfs::Guard;
use crate::util::atomic::{self, TMP_MARK};
use crate::util::fmt::ms;

/// The stable name analysis tools open: always a complete snapshot.
pub const LATEST: &str = "latest.sqlite";
/// Suffix of snapshot data files.
pub const DATA_EXT: &str = "sqlite";
/// Suffix of snapshot manifests.
pub const MANIFEST_EXT: &str = "json";
/// Snapshots kept by default.
pub const DEFAULT_KEEP: u32 = 5;
/// Current manifest schema.
pub const SCHEMA: u32 = 1;
const LOCK_NAME: &str = ".warden-snapshots.lock";

/// The default snapshot directory of `db`: `<db>.warden/snapshots`.
pub fn default_dir(db: &Path) -> PathBuf {
    crate::format::names::state_dir(db).join("snapshots")
}

/// How to take one snapshot. [`Default`] gives the documented defaults.
#[derive(Clone)]
pub struct SnapshotOptions {
    /// Where snapshots go (default [`default_dir`]).
    pub dir: Option<PathBuf>,
    /// How many snapshots to keep (default [`DEFAULT_KEEP`]; at least 1 is always kept, and
    /// the one `latest` points to is never removed).
    pub keep: u32,
    /// The check of the copy: `quick_check` by default (O(N), enough to prove the copy is a
    /// readable b-tree; a snapshot is a read model, not a backup), `Some(Full)` for
    /// `integrity_check`, `None` for no check (the copy is then published unchecked, which
    /// the manifest says).
    pub check: Option<CheckMode>,
    /// Give up the check after this long (fails closed; default 10 minutes).
    pub check_budget: Option<Duration>,
    /// The guard whose tooling VFS reads the database (its audit log records the read);
    /// `None` uses the default guard.
    pub guard: Option<Guard>,
    /// The session the snapshot belongs to (periodic snapshots of `warden run`).
    pub session_id: Option<String>,
    /// Set to stop early ([`SnapshotError::Cancelled`]; nothing is published).
    pub cancel: Option<Arc<AtomicBool>>,
}

impl Default for SnapshotOptions {
    fn default() -> Self {
        SnapshotOptions {
            dir: None,
            keep: DEFAULT_KEEP,
            check: Some(CheckMode::Quick),
            check_budget: Some(Duration::from_secs(600)),
            guard: None,
            session_id: None,
            cancel: None,
        }
    }
}

impl std::fmt::Debug for SnapshotOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotOptions")
            .field("dir", &self.dir)
            .field("keep", &self.keep)
            .field("check", &self.check)
            .field("check_budget", &self.check_budget)
            .field("session_id", &self.session_id)
            .finish_non_exhaustive()
    }
}

impl SnapshotOptions {
    /// The directory in effect for `db`.
    pub fn dir_for(&self, db: &Path) -> PathBuf {
        self.dir.clone().unwrap_or_else(|| default_dir(db))
    }
}

/// Phase durations of one snapshot, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SnapshotTimings {
    /// The backup-API copy.
    pub copy_ms: u64,
    /// The check (runs beside hashing).
    pub check_ms: u64,
    /// Hash and `fsync`.
    pub hash_ms: u64,
    /// Everything, lock to `latest`.
    pub total_ms: u64,
}

/// What a snapshot's manifest records (schema 1; readers ignore unknown fields).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotManifest {
    /// Manifest schema ([`SCHEMA`]).
    pub schema: u32,
    /// The snapshot's id (the file stem: `<db name>-<UTC time>`).
    pub id: String,
    /// The data file's name, in the same directory.
    pub file: String,
    /// When the copy was taken (RFC 3339 UTC).
    pub created: String,
    /// The database it copies.
    pub source: PathBuf,
    /// The session it was taken in, for periodic snapshots.
    pub session_id: Option<String>,
    /// Bytes of the data file.
    pub size: u64,
    /// Page size.
    pub page_size: u32,
    /// Pages.
    pub page_count: u64,
    /// SHA-256 of the data file, lowercase hex.
    pub sha256: String,
    /// Always `delete`: one self-contained rollback-journal file.
    pub journal_mode: String,
    /// The check of the copy; `None` when checks were turned off.
    pub check: Option<IntegrityReport>,
    /// Bytes of `-wal` beside the source when it was copied (what the copy checkpointed).
    pub source_wal_bytes: u64,
    /// Phase durations.
    pub timings: SnapshotTimings,
    /// The SQLite that made it.
    pub sqlite_version: String,
    /// The warden that made it.
    pub warden_version: String,
    /// The host that made it.
    pub host: String,
}

/// A published snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotRecord {
    /// Its manifest.
    pub manifest: SnapshotManifest,
    /// The data file.
    pub path: PathBuf,
    /// The manifest file.
    pub manifest_path: PathBuf,
}

/// What [`take`] did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotReport {
    /// The new snapshot's data file.
    pub path: PathBuf,
    /// Its manifest file.
    pub manifest_path: PathBuf,
    /// `latest.sqlite`, now a link to [`SnapshotReport::path`].
    pub latest: PathBuf,
    /// The snapshot directory.
    pub dir: PathBuf,
    /// The manifest as published.
    pub manifest: SnapshotManifest,
    /// Old snapshots removed by retention (data files).
    pub removed: Vec<PathBuf>,
    /// Leftovers of killed runs removed before the copy.
    pub recovered: Vec<PathBuf>,
    /// Retention failed after the snapshot was published (the snapshot stands).
    pub retention_error: Option<String>,
}

/// Periodic snapshots of one session, as its health artifact records them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SnapshotSummary {
    /// The interval, in milliseconds.
    pub every_ms: u64,
    /// The snapshot directory.
    pub dir: PathBuf,
    /// Snapshots published.
    pub taken: u32,
    /// Snapshots that failed (the engine kept running).
    pub failed: u32,
    /// The newest one published.
    pub last: Option<PathBuf>,
    /// When it was published (RFC 3339 UTC).
    pub last_at: Option<String>,
    /// The most recent failure, with its hint.
    pub last_error: Option<String>,
    /// When it happened.
    pub last_error_at: Option<String>,
}

/// Why a snapshot was not published. `latest` is untouched in every case.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// The database is an empty file: a snapshot of nothing would look like a real one.
    #[error(
        "`{db}` is an empty file: no tables, no data; refusing to publish a snapshot of it\n(hint: a lost or replaced file? `warden backups` lists the last good backups)"
    )]
    Empty {
        /// The database.
        db: PathBuf,
    },
    /// The database or the snapshot directory is on storage warden refuses.
    #[error(
        "refusing to snapshot: the {what} `{path}` is on {}\n(reason: {})\n(hint: snapshots are read from, and written to, a local disk; `warden fs {}` explains the verdict)",
        verdict.describe(),
        verdict.reason,
        path.display()
    )]
    StorageRefused {
        /// The path judged.
        path: PathBuf,
        /// `database` or `snapshot directory`.
        what: &'static str,
        /// The verdict.
        verdict: Box<crate::storage::FsVerdict>,
    },
    /// The database is missing.
    #[error("`{db}` does not exist; there is nothing to snapshot\n(hint: check --db or `database` in warden.toml)")]
    Missing {
        /// The database.
        db: PathBuf,
    },
    /// The database path cannot be read (a directory, no permission, not UTF-8, a side
    /// file in the way).
    #[error(transparent)]
    Target(#[from] crate::storage::TargetError),
    /// Not enough free space for the copy.
    #[error(
        "not enough space for a snapshot in `{dir}`: need {needed} bytes, {available} free\n(hint: free space there, lower `[snapshots] keep`, or point `--snapshot-dir` at another local disk)"
    )]
    NoSpace {
        /// The snapshot directory.
        dir: PathBuf,
        /// Bytes needed.
        needed: u64,
        /// Bytes free.
        available: u64,
    },
    /// The disk filled up during the copy; nothing was published.
    #[error(
        "the disk holding `{dir}` filled up during the snapshot; nothing was published and `latest` is unchanged\n(hint: free space or lower `[snapshots] keep`, then retry)"
    )]
    DiskFull {
        /// The snapshot directory.
        dir: PathBuf,
    },
    /// The database could not be opened through the guard.
    #[error("cannot read `{db}` for a snapshot: {source}")]
    Source {
        /// The database.
        db: PathBuf,
        /// Why.
        #[source]
        source: OpenError,
    },
    /// The database has a hot rollback journal: a writer died mid-transaction.
    #[error(
        "`{db}` has a hot rollback journal: an engine died mid-transaction, and a read-only snapshot cannot roll it back\n(hint: start the next session (`warden run`), which recovers it, then snapshot)"
    )]
    HotJournal {
        /// The database.
        db: PathBuf,
    },
    /// The copy failed its check; it was discarded.
    #[error(
        "the snapshot of `{db}` failed its check and was discarded: {}\n(hint: the database itself is probably damaged; run `warden check --db {db}`)",
        report.summary()
    )]
    CheckFailed {
        /// The database.
        db: PathBuf,
        /// The check.
        report: Box<IntegrityReport>,
    },
    /// A SQLite call failed.
    #[error("{action} `{path}`: {source}")]
    Sqlite {
        /// What was being done.
        action: &'static str,
        /// On which file.
        path: PathBuf,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// A file operation failed.
    #[error("{action} `{path}`: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// On which file.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// Stopped on request.
    #[error("snapshot of `{db}` cancelled")]
    Cancelled {
        /// The database.
        db: PathBuf,
    },
}

impl SnapshotError {
    /// The sysexits-style exit code for `warden snapshot`.
    pub fn exit_code(&self) -> u8 {
        use crate::util::exit;
        match self {
            SnapshotError::Missing { .. } | SnapshotError::Empty { .. } => exit::NOINPUT,
            SnapshotError::Target(e) => e.exit_code(),
            SnapshotError::StorageRefused { .. } => exit::UNAVAILABLE,
            SnapshotError::CheckFailed { .. } => exit::DATAERR,
            SnapshotError::HotJournal { .. } => exit::TEMPFAIL,
            SnapshotError::Source { source, .. } => source.exit_code(),
            SnapshotError::Cancelled { .. } => exit::CANCELLED,
            SnapshotError::Io { source, .. } if source.kind() == std::io::ErrorKind::PermissionDenied => exit::NOPERM,
            SnapshotError::NoSpace { .. }
            | SnapshotError::DiskFull { .. }
            | SnapshotError::Sqlite { .. }
            | SnapshotError::Io { .. } => exit::IOERR,
        }
    }

    /// True for the disk-space errors.
    pub fn is_space(&self) -> bool {
        matches!(self, SnapshotError::NoSpace { .. } | SnapshotError::DiskFull { .. })
    }
}

impl From<Failure> for SnapshotError {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Source { db, source } => SnapshotError::Source { db, source },
            Failure::Sqlite { action, path, source } => SnapshotError::Sqlite { action, path, source },
            Failure::Io { action, path, source } => SnapshotError::Io { action, path, source },
            Failure::Cancelled { db } => SnapshotError::Cancelled { db },
        }
    }
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl Fn(io::Error) -> SnapshotError + 'a {
    move |source| SnapshotError::Io { action, path: path.to_owned(), source }
}

fn stem_of(db: &Path) -> String {
    db.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "db".into())
}

fn is_ours(stem: &str, name: &str) -> bool {
    name.starts_with(&format!("{stem}-")) && !name.contains(TMP_MARK)
}

/// Holds the snapshot directory's lock while alive.
#[derive(Debug)]
pub struct DirLock {
    _lock: nix::fcntl::Flock<File>,
}

/// Creates the directory (`0750`) and takes its lock, waiting for another warden using it.
///
/// # Errors
/// [`SnapshotError::Io`] when the directory or lock file cannot be made or locked.
pub fn lock_dir(dir: &Path) -> Result<DirLock, SnapshotError> {
    atomic::create_dir_synced(dir, 0o750).map_err(io_err("creating the snapshot directory", dir))?;
    let lock = copy::lock_exclusive(&dir.join(LOCK_NAME), "opening the snapshot lock")?;
    Ok(DirLock { _lock: lock })
}

fn inode(p: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()))
}

/// Removes what killed runs left in `dir` for the database named `stem`: temporary files
/// (every name with [`TMP_MARK`]: the lock is held, so no live warden owns one), data files
/// without a manifest (never listed, never linked as `latest`), manifests without a data
/// file. Returns what was removed.
fn recover(dir: &Path, stem: &str, _lock: &DirLock) -> Result<Vec<PathBuf>, SnapshotError> {
    let mut out = Vec::new();
    let names = copy::dir_names(dir)?;
    let latest = inode(&dir.join(LATEST));
    for name in &names {
        let path = dir.join(name);
        if name.contains(TMP_MARK) {
            let r = if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
            r.map_err(io_err("removing leftover", &path))?;
            out.push(path);
        }
    }
    for name in &names {
        if !is_ours(stem, name) {
            continue;
        }
        let path = dir.join(name);
        if let Some(id) = name.strip_suffix(&format!(".{DATA_EXT}")) {
            if !dir.join(format!("{id}.{MANIFEST_EXT}")).exists() && inode(&path) != latest {
                std::fs::remove_file(&path).map_err(io_err("removing unpublished snapshot", &path))?;
                out.push(path);
            }
        } else if let Some(id) = name.strip_suffix(&format!(".{MANIFEST_EXT}"))
            && !dir.join(format!("{id}.{DATA_EXT}")).exists()
        {
            std::fs::remove_file(&path).map_err(io_err("removing orphan manifest", &path))?;
            out.push(path);
        }
    }
    if !out.is_empty() {
        atomic::sync_dir(dir).map_err(io_err("syncing", dir))?;
        tracing::warn!(dir = %dir.display(), removed = ?out, "recovered leftovers of an interrupted snapshot");
    }
    Ok(out)
}

/// Every published snapshot of `db` in `dir`, newest first. Unreadable manifests are
/// skipped with a warning.
///
/// # Errors
/// [`SnapshotError::Io`] when the directory cannot be read (a missing one is empty).
pub fn list(dir: &Path, db: &Path) -> Result<Vec<SnapshotRecord>, SnapshotError> {
    let stem = stem_of(db);
    let mut out = Vec::new();
    for name in copy::dir_names(dir)? {
        if !is_ours(&stem, &name) || !name.ends_with(&format!(".{MANIFEST_EXT}")) {
            continue;
        }
        let manifest_path = dir.join(&name);
        let parsed = std::fs::read(&manifest_path)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<SnapshotManifest>(&b).map_err(|e| e.to_string()));
        match parsed {
            Ok(manifest) if !manifest.file.contains('/') && dir.join(&manifest.file).exists() => {
                out.push(SnapshotRecord { path: dir.join(&manifest.file), manifest, manifest_path });
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(manifest = %manifest_path.display(), error = %e, "unreadable snapshot manifest skipped")
            }
        }
    }
    out.sort_by(|a, b| b.manifest.created.cmp(&a.manifest.created).then(b.manifest.id.cmp(&a.manifest.id)));
    Ok(out)
}

/// The snapshot `latest.sqlite` in `dir` points to (same inode), if any.
///
/// # Errors
/// As [`list`].
pub fn latest(dir: &Path, db: &Path) -> Result<Option<SnapshotRecord>, SnapshotError> {
    let Some(target) = inode(&dir.join(LATEST)) else { return Ok(None) };
    Ok(list(dir, db)?.into_iter().find(|r| inode(&r.path) == Some(target)))
}

/// Which snapshots retention removes: `newest_first[i]` is `true` when the snapshot is the
/// one `latest` points to. Keeps the first `keep` (at least one) and the `latest` one.
pub fn plan_removals(newest_first: &[bool], keep: u32) -> Vec<usize> {
    let keep = usize::try_from(keep.max(1)).unwrap_or(usize::MAX);
    newest_first.iter().enumerate().skip(keep).filter(|(_, is_latest)| !**is_latest).map(|(i, _)| i).collect()
}

fn apply_retention(dir: &Path, db: &Path, keep: u32, _lock: &DirLock) -> Result<Vec<PathBuf>, SnapshotError> {
    let all = list(dir, db)?;
    let target = inode(&dir.join(LATEST));
    let flags: Vec<bool> = all.iter().map(|r| target.is_some() && inode(&r.path) == target).collect();
    let mut removed = Vec::new();
    for i in plan_removals(&flags, keep) {
        let r = &all[i];
        std::fs::remove_file(&r.manifest_path).map_err(io_err("removing", &r.manifest_path))?;
        match std::fs::remove_file(&r.path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("removing", &r.path)(e)),
        }
        removed.push(r.path.clone());
    }
    if !removed.is_empty() {
        atomic::sync_dir(dir).map_err(io_err("syncing", dir))?;
    }
    Ok(removed)
}

/// A new id `<stem>-<UTC time to the ms>` not used yet in `dir` (the lock is held, so the
/// names of one directory strictly increase while the clock does).
fn new_id(dir: &Path, stem: &str) -> String {
    let mut id = String::new();
    for _ in 0..2000 {
        id = format!("{stem}-{}", copy::stamp());
        if !dir.join(format!("{id}.{DATA_EXT}")).exists() && !dir.join(format!("{id}.{MANIFEST_EXT}")).exists() {
            return id;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    format!("{id}-{}", std::process::id())
}

/// The online backup API, in one step, from a read-only tooling connection into `tmp`, made
/// one self-contained rollback-journal file with nothing beside it.
fn copy(db: &Path, tmp: &Path, opts: &SnapshotOptions) -> Result<(), SnapshotError> {
    // One step, one read transaction, one committed state, whatever the engine does.
    let how =
        OnlineCopy { guard: opts.guard.as_ref(), pages_per_step: -1, cancel: opts.cancel.as_ref(), progress: None };
    copy::online_copy(db, tmp, &how).map_err(|f| match f {
        Failure::Source { source: OpenError::Sqlite { source: e, .. }, .. } | Failure::Sqlite { source: e, .. }
            if is_hot_journal(&e) =>
        {
            SnapshotError::HotJournal { db: db.to_owned() }
        }
        f => f.into(),
    })?;
    copy::finalize(tmp)?;
    for suffix in ["-wal", "-shm", "-journal"] {
        let p = sidecar(tmp, suffix);
        if p.exists() {
            return Err(SnapshotError::Io {
                action: "finalizing (a sidecar survived journal_mode=DELETE)",
                path: p,
                source: io::Error::other("unexpected sidecar"),
            });
        }
    }
    Ok(())
}

fn page_info(path: &Path) -> (u32, u64) {
    let Ok(c) = Connection::open_with_flags_and_vfs(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        crate::copies::check::PRIVATE_VFS,
    ) else {
        return (0, 0);
    };
    let size: u32 = c.query_row("PRAGMA page_size", [], |r| r.get(0)).unwrap_or(0);
    let count: i64 = c.query_row("PRAGMA page_count", [], |r| r.get(0)).unwrap_or(0);
    (size, u64::try_from(count).unwrap_or(0))
}

/// Points `latest.sqlite` at `target` atomically: a hard link under a temporary name,
/// renamed over `latest.sqlite`, then the directory is synced. Where hard links are not
/// supported, a synced copy is renamed instead (readers still never see a partial file).
fn repoint_latest(dir: &Path, target: &Path) -> Result<PathBuf, SnapshotError> {
    let latest = dir.join(LATEST);
    let tmp = atomic::temp_path_for(&latest);
    let _cleanup = TempGuard::new(vec![tmp.clone()]);
    match std::fs::hard_link(target, &tmp) {
        Ok(()) => {}
        Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM | libc::EOPNOTSUPP | libc::EXDEV | libc::EMLINK)) => {
            tracing::warn!(dir = %dir.display(), error = %e, "hard links unsupported here; `latest` is a copy");
            std::fs::copy(target, &tmp).map_err(io_err("copying to", &tmp))?;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o444)).map_err(io_err("chmod", &tmp))?;
            File::open(&tmp).and_then(|f| f.sync_all()).map_err(io_err("syncing", &tmp))?;
        }
        Err(e) => return Err(io_err("linking", &tmp)(e)),
    }
    pause_point("snapshot-latest-linked");
    atomic::publish(&tmp, &latest).map_err(io_err("re-pointing", &latest))?;
    Ok(latest)
}

/// Refuses a database or a snapshot directory on storage the guard would refuse an engine on.
fn judge_storage(db: &Path, dir: &Path, guard: Option<&Guard>) -> Result<(), SnapshotError> {
    match copy::first_not_local(guard, &[(db, "database"), (dir, "snapshot directory")]) {
        Ok(None) => Ok(()),
        Ok(Some((path, what, v))) => Err(SnapshotError::StorageRefused { path, what, verdict: Box::new(v) }),
        Err((action, path, source)) => Err(io_err(action, &path)(source)),
    }
}

/// Takes a snapshot of `db`, publishes it, re-points `latest.sqlite` at it and applies the
/// snapshots' retention. Safe while the engine runs: the copy goes through SQLite's locks.
///
/// # Errors
/// [`SnapshotError`] when nothing was published; `latest` is then untouched. A failure of
/// retention after publication is not an error: see [`SnapshotReport::retention_error`].
pub fn take(db: impl AsRef<Path>, opts: &SnapshotOptions) -> Result<SnapshotReport, SnapshotError> {
    let db = db.as_ref();
    let started = Instant::now();
    match crate::storage::check_database(db, crate::storage::Need::Read) {
        Ok(()) => {}
        Err(crate::storage::TargetError::Missing { .. }) => return Err(SnapshotError::Missing { db: db.to_owned() }),
        Err(e) => return Err(e.into()),
    }
    if copy::is_empty_db(db) {
        return Err(SnapshotError::Empty { db: db.to_owned() });
    }
    crate::storage::target::require_sqlite(db)?;
    crate::copies::sweep_state(db);
    let dir = opts.dir_for(db);
    crate::storage::target::require_utf8(&dir)?;
    judge_storage(db, &dir, opts.guard.as_ref())?;
    let stem = stem_of(db);
    let lock = lock_dir(&dir)?;
    let recovered = recover(&dir, &stem, &lock)?;
    let wal_bytes = copy::size_of(&sidecar(db, "-wal"));
    let needed = copy::with_headroom(copy::size_of(db) + wal_bytes);
    let available = copy::free_bytes(&dir).map_err(|e| io_err("statvfs", &dir)(e.into()))?;
    if available < needed {
        return Err(SnapshotError::NoSpace { dir, needed, available });
    }
    let full = |e: SnapshotError| match &e {
        SnapshotError::Sqlite { source, .. } if is_disk_full(source) => SnapshotError::DiskFull { dir: dir.clone() },
        SnapshotError::Io { source, .. } if io_is_full(source) => SnapshotError::DiskFull { dir: dir.clone() },
        _ => e,
    };

    let id = new_id(&dir, &stem);
    let final_path = dir.join(format!("{id}.{DATA_EXT}"));
    let manifest_path = dir.join(format!("{id}.{MANIFEST_EXT}"));
    let tmp = atomic::temp_path_for(&final_path);
    let cleanup = TempGuard::with_sidecars(&tmp);

    // 3 + 4: the copy, made self-contained.
    let copy_started = Instant::now();
    let created = crate::util::identity::now_rfc3339();
    let copied = copy(db, &tmp, opts).map_err(full);
    let check_mode = opts.check.unwrap_or(CheckMode::Quick);
    let check_failed =
        |report: IntegrityReport| SnapshotError::CheckFailed { db: db.to_owned(), report: Box::new(report) };
    match copied {
        Ok(()) => {}
        Err(SnapshotError::Sqlite { action, path, source }) if is_damage(&source) => {
            let why = format!("{action} `{}`: {source}", path.display());
            return Err(check_failed(IntegrityReport::failed(check_mode, why, Duration::ZERO)));
        }
        Err(e) => return Err(e),
    }
    let copy_ms = ms(copy_started.elapsed());
    copy::check_cancel(opts.cancel.as_ref(), db)?;
    pause_point("snapshot-copied");

    // 5: check beside hash + fsync.
    let spec = CheckSpec { mode: opts.check, budget: opts.check_budget, cancel: opts.cancel.as_ref(), progress: None };
    let checked = copy::check_and_hash(&tmp, &spec).map_err(|f| full(f.into()))?;
    let check = checked.report;
    copy::check_cancel(opts.cancel.as_ref(), db)?;
    if let Some(report) = &check
        && !report.ok
    {
        return Err(check_failed(report.clone()));
    }
    if checked.changed {
        let why = "the copy changed while it was being checked".into();
        return Err(check_failed(IntegrityReport::failed(check_mode, why, Duration::ZERO)));
    }
    let (page_size, page_count) = if checked.pages.0 > 0 { checked.pages } else { page_info(&tmp) };

    // 6: publication.
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o444)).map_err(io_err("chmod", &tmp))?;
    let mut manifest = SnapshotManifest {
        schema: SCHEMA,
        id: id.clone(),
        file: format!("{id}.{DATA_EXT}"),
        created,
        source: db.to_owned(),
        session_id: opts.session_id.clone(),
        size: checked.size,
        page_size,
        page_count,
        sha256: checked.sha256,
        journal_mode: "delete".into(),
        check: check.clone(),
        source_wal_bytes: wal_bytes,
        timings: SnapshotTimings {
            copy_ms,
            check_ms: check.as_ref().map_or(0, |c| c.duration_ms),
            hash_ms: ms(checked.hash_time),
            total_ms: 0,
        },
        sqlite_version: rusqlite::version().to_owned(),
        warden_version: env!("CARGO_PKG_VERSION").to_owned(),
        host: crate::util::identity::ProcessIdentity::current().host,
    };
    manifest.timings.total_ms = ms(started.elapsed());
    std::fs::rename(&tmp, &final_path).map_err(io_err("publishing", &final_path))?;
    drop(cleanup);
    let written = serde_json::to_vec_pretty(&manifest)
        .map_err(io::Error::other)
        .and_then(|mut bytes| {
            bytes.push(b'\n');
            atomic::write_atomic(&manifest_path, &bytes, 0o444)
        })
        .map_err(io_err("writing", &manifest_path));
    if let Err(e) = written {
        // Without its manifest the file is not a snapshot: take it back out, and the
        // manifest with it (its rename may have landed before the directory sync failed).
        let _ = std::fs::remove_file(&manifest_path);
        let _ = std::fs::remove_file(&final_path);
        let _ = atomic::sync_dir(&dir);
        return Err(full(e));
    }
    pause_point("snapshot-published");

    // 7: latest.
    let latest = repoint_latest(&dir, &final_path).map_err(full)?;

    // 8: retention (its failure does not unpublish anything).
    let (removed, retention_error) = match apply_retention(&dir, db, opts.keep, &lock) {
        Ok(r) => (r, None),
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "snapshot retention failed");
            (Vec::new(), Some(e.to_string()))
        }
    };
    drop(lock);
    tracing::info!(db = %db.display(), snapshot = %final_path.display(), ms = ms(started.elapsed()), "snapshot published");
    Ok(SnapshotReport { path: final_path, manifest_path, latest, dir, manifest, removed, recovered, retention_error })
}

/// Why `path` counts as a live database for [`open_snapshot`], if it does.
fn live_reason(path: &Path) -> Option<&'static str> {
    if names::state_dir(path).is_dir() {
        return Some("warden keeps its state beside it (`<db>.warden/`)");
    }
    if names::lock(path).exists() {
        return Some("an engine's writer lock file is beside it");
    }
    if names::wal(path).exists() || names::journal(path).exists() {
        return Some("a writer's -wal or -journal is beside it");
    }
    // Through SQLite's VFS: this may run inside the engine's own process.
    if crate::format::header::read_header(path).ok().flatten().is_some_and(|h| h.wal) {
        return Some("it is in WAL mode, so opening it would create its -wal and -shm");
    }
    None
}

/// Opens a database **for analysis**: a snapshot, never the live file.
///
/// - Given a snapshot file (or any self-contained rollback-journal file that no engine
///   uses), it is opened read-only through the tooling VFS, as [`crate::guard::connect::open_tool`] does.
/// - Given the **live** database's path (it has a `<db>.warden/` state directory, a
///   `-warden.lock` writer lock file, a `-wal` or `-journal` beside it, or is in WAL mode),
///   its newest snapshot, `<db>.warden/snapshots/latest.sqlite`, is opened instead, and a
///   `tracing` info event says so. Check the connection's file with `PRAGMA database_list`.
///
/// Snapshots published to a non-default directory (`[snapshots] dir`) are opened by their
/// own path (`<dir>/latest.sqlite`). See the module docs for why analysis never reads the
/// live file; a caller that must (the operator passed `--live`) uses [`crate::guard::connect::open_tool`].
///
/// # Errors
/// [`OpenError::LiveDatabase`] for a live database without a snapshot (the message says
/// to run `warden snapshot`); otherwise as [`crate::guard::connect::open_tool`].
pub fn open_snapshot(path: impl AsRef<Path>, opts: &ToolOptions) -> Result<Connection, OpenError> {
    let path = path.as_ref();
    crate::guard::connect::check_path(path)?;
    let Some(why) = live_reason(path) else {
        return open_tool(path, opts);
    };
    let latest = default_dir(path).join(LATEST);
    if !latest.is_file() {
        return Err(OpenError::LiveDatabase { path: path.to_owned(), latest, why });
    }
    tracing::info!(
        db = %path.display(),
        snapshot = %latest.display(),
        reason = why,
        "this is the live database; analysis reads its latest snapshot instead"
    );
    open_tool(&latest, opts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_keeps_the_newest_and_latest() {
        assert!(plan_removals(&[], 5).is_empty());
        assert_eq!(plan_removals(&[true, false, false, false], 2), vec![2, 3]);
        // `latest` points at an old one (a killed run re-pointed nothing): it stays.
        assert_eq!(plan_removals(&[false, false, true, false], 1), vec![1, 3]);
        // keep = 0 still keeps one.
        assert_eq!(plan_removals(&[true, false], 0), vec![1]);
        assert!(plan_removals(&[true, false, false], 3).is_empty());
    }

    #[test]
    fn ours_excludes_other_databases_and_temporaries() {
        assert!(is_ours("e.db", "e.db-20261125T181430.123Z.sqlite"));
        assert!(!is_ours("e.db", "f.db-20261125T181430.123Z.sqlite"));
        assert!(!is_ours("e.db", LATEST));
        assert!(!is_ours("e.db", ".e.db-20261125T181430.123Z.sqlite.warden-tmp.1.2"));
    }

    #[test]
    fn summary_reads_old_and_partial_json() {
        let s: SnapshotSummary = serde_json::from_str(r#"{"taken": 2}"#).unwrap();
        assert_eq!(s.taken, 2);
        assert_eq!(s.failed, 0);
    }
}

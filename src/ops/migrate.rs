//! Moving a database to another host, and handing session artifacts to analysis elsewhere:
//! verified bundles.
//!
//! Owns: the bundle format ([`BundleManifest`], schema 1), making a bundle atomically
//! ([`export`] for a migration, [`export_sessions`] for analysis), verifying one with nothing
//! written ([`verify_bundle`]), and installing a migration bundle on the new host
//! ([`import`]). Does not own: the consistent copy, the check and the hashing (the
//! crate-internal `session::copy` and [`crate::copies::backup::check_file`]), storage
//! verdicts ([`crate::storage`]), the writer lock ([`crate::guard::lock`]), or snapshots
//! ([`crate::copies::snapshot`]).
//!
//! # The bundle
//! ```text
//! BUNDLE_DIR/                0700, published by renaming a finished `.NAME.warden-tmp.*` dir
//!   MANIFEST.json            written last: schema, kind, source host and paths, versions,
//!                            every other file with its relative path, size and SHA-256
//!   database.sqlite          migration: a consistent copy taken with SQLite's online backup
//!                            API, journal_mode=DELETE, integrity_check + foreign_key_check ok
//!   sessions/<id>.json       the health artifacts
//!   audit/audit.jsonl        migration: the audit log, as it was
//!   backups/<id>.json        migration, optional: backup manifests (and with `All`, the data)
//!   snapshots/<id>.sqlite    sessions export: the newest analysis snapshot and its manifest
//! ```
//! Files are `0600`. The SHA-256 of `MANIFEST.json` names the whole bundle (every other file
//! is pinned by it); the audit records of an export and an import carry it.
//!
//! # Export ([`export`])
//! The database is read through SQLite's locking, never copied byte for byte: a read-only
//! tooling connection ([`crate::guard::connect::open_tool`], which the guard allows on network
//! storage, in rollback mode) feeds the online backup API in **one step**, so the copy is one
//! committed state even while an engine commits. That is what makes the export safe on the
//! old host, whose database sits on an SMB share. The copy is switched to `DELETE` mode,
//! checked (`integrity_check`, `foreign_key_check`) while it is hashed, and its row count per
//! table recorded. A copy that fails its check is never published.
//!
//! # Import ([`import`]), in order; the first refusal stops it
//! 1. preflight: the bundle exists (66); the target's directory exists, and the target, its
//!    `-wal`/`-journal`/`-shm`, its state directory `<db>.warden` and the artifacts to be
//!    copied do not (73); the target's directory is on local storage (69: network, lock-less
//!    and unknown filesystems are refused, as the guard refuses the engine there);
//! 2. the bundle is verified with nothing written ([`verify_bundle`]): the manifest parses
//!    and has schema 1; every entry is a plain relative path (no absolute path, no `..`);
//!    every file in the bundle is a regular file (no symbolic link) listed in the manifest,
//!    every listed file exists with its size and SHA-256 (65);
//! 3. the gate: the database is copied beside the target (hashed as it is copied, compared
//!    with the manifest), `integrity_check` and `foreign_key_check` run on that private copy,
//!    the row counts are compared with the manifest, and the copy is re-hashed (65; the copy
//!    is removed);
//! 4. mode (default `0640`) and owner (`chown`; 77 when not permitted) are set on the copy;
//!    the state directory is prepared under a temporary name with the artifacts
//!    (`sessions/`) and the old host's audit log (`imported-audit.jsonl`, never mixed into
//!    this host's log), each copy hashed against the manifest;
//! 5. the writer lock of the target is taken (75 when held), the copy is renamed into place
//!    with `RENAME_NOREPLACE` and the directory synced;
//! 6. the database is opened through the guard's **engine** role with
//!    [`JournalChoice::Wal`] and closed, so the switch to WAL happens on the local disk, the
//!    audit log shows the open and the lock file records the clean close; the header must
//!    then say WAL; the state directory is renamed into place;
//! 7. the import is audited (`migration_imported`, with the bundle's SHA-256 and the source
//!    host). A failure after step 5 undoes the import (the installed files are removed).

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};
use serde::{Deserialize, Serialize};

use crate::copies::backup::{BackupStore, CheckMode, IntegrityReport, check_file, sidecar};
use crate::copies::copy::{self, CheckSpec, Failure, OnlineCopy, TempGuard};
use crate::copies::snapshot::{self, SnapshotError, SnapshotManifest, SnapshotOptions};
use crate::guard::audit::{AuditEvent, AuditLog, AuditRecord};
use crate::guard::connect::{EngineOptions, JournalChoice, open_engine};
use crate::guard::error::{LockError, OpenError};
use crate::guard::lock::{self, CloseState, WriterLock, WriterScope};
use crate::guard::vfs::Guard;
use crate::session::{SessionConfig, health, ms, read_change_counter};
use crate::storage::{FsKind, FsVerdict};
use crate::util::atomic::{self, TMP_MARK};
use crate::util::identity::{ProcessIdentity, now_rfc3339};

/// Current bundle schema.
pub const SCHEMA: u32 = 1;
/// The manifest's file name, at the top of a bundle.
pub const MANIFEST_FILE: &str = "MANIFEST.json";
/// The database's file name in a migration bundle.
pub const DATABASE_FILE: &str = "database.sqlite";
/// Directory of the health artifacts in a bundle.
pub const SESSIONS_DIR: &str = "sessions";
/// The audit log in a migration bundle.
pub const AUDIT_FILE: &str = "audit/audit.jsonl";
/// Directory of backup manifests (and data, on request) in a migration bundle.
pub const BACKUPS_DIR: &str = "backups";
/// Directory of the snapshot in a sessions export.
pub const SNAPSHOTS_DIR: &str = "snapshots";
/// Where an import puts the old host's audit log, in the target's state directory.
pub const IMPORTED_AUDIT: &str = "imported-audit.jsonl";
/// Default permission bits of an imported database.
pub const DEFAULT_MODE: u32 = 0o640;
const IMPORT_TMP: &str = ".import";
/// A manifest larger than this is refused unread (a real one is a few KiB per file).
const MAX_MANIFEST: u64 = 64 << 20;

// ---------------------------------------------------------------------------------------------
// The format
// ---------------------------------------------------------------------------------------------

/// What a bundle is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BundleKind {
    /// A database with its artifacts and audit log, to be imported on another host.
    Migration,
    /// Session artifacts and the newest snapshot, for analysis elsewhere.
    Sessions,
}

/// One file of a bundle, as the manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleEntry {
    /// Relative path inside the bundle, `/`-separated, no `.` or `..`.
    pub path: String,
    /// Bytes.
    pub size: u64,
    /// SHA-256, lowercase hex.
    pub sha256: String,
}

/// Where a bundle came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleSource {
    /// Host name.
    pub host: String,
    /// The database (absolute path on that host).
    pub db: PathBuf,
    /// Its storage verdict there (an SMB share says `network`).
    pub storage: Option<FsVerdict>,
    /// The artifact directory read.
    pub session_dir: PathBuf,
    /// The audit log copied, if there was one.
    pub audit_log: Option<PathBuf>,
    /// The backup directory read, when backups were included.
    pub backup_dir: Option<PathBuf>,
}

/// The database of a migration bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundledDatabase {
    /// Its file in the bundle ([`DATABASE_FILE`]).
    pub file: String,
    /// Bytes.
    pub size: u64,
    /// SHA-256, lowercase hex (the same as its [`BundleEntry`]).
    pub sha256: String,
    /// Page size.
    pub page_size: u32,
    /// Page count.
    pub page_count: u64,
    /// Always `delete`: one self-contained file.
    pub journal_mode: String,
    /// `integrity_check` and `foreign_key_check` of the copy.
    pub integrity: IntegrityReport,
    /// `count(*)` of every table, by name; an import compares them.
    pub row_counts: BTreeMap<String, u64>,
    /// How the copy was made: `backup_api` (one step, from a read-only tooling connection).
    pub method: String,
    /// Bytes of `-wal` beside the source when it was copied.
    pub source_wal_bytes: u64,
    /// Wall time of the copy.
    pub copy_ms: u64,
}

/// The snapshot of a sessions export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundledSnapshot {
    /// The snapshot's id.
    pub id: String,
    /// Its data file in the bundle.
    pub file: String,
    /// Its own manifest in the bundle.
    pub manifest_file: String,
    /// When it was taken (RFC 3339 UTC).
    pub created: String,
    /// Bytes.
    pub size: u64,
    /// SHA-256, lowercase hex.
    pub sha256: String,
}

/// `MANIFEST.json`. Schema 1; readers ignore unknown fields, and a newer schema is refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleManifest {
    /// Bundle schema ([`SCHEMA`]).
    pub schema: u32,
    /// What it is for.
    pub kind: BundleKind,
    /// When it was made (RFC 3339 UTC).
    pub created: String,
    /// Where it came from.
    pub source: BundleSource,
    /// The SQLite that made it.
    pub sqlite_version: String,
    /// The warden that made it.
    pub warden_version: String,
    /// The database (migration bundles).
    #[serde(default)]
    pub database: Option<BundledDatabase>,
    /// The snapshot (sessions exports that had one).
    #[serde(default)]
    pub snapshot: Option<BundledSnapshot>,
    /// Every file of the bundle except the manifest, sorted by path.
    pub files: Vec<BundleEntry>,
    /// Notes for the operator (what was not included, and why).
    #[serde(default)]
    pub notes: Vec<String>,
}

impl BundleManifest {
    /// The entry for `path`, if listed.
    pub fn entry(&self, path: &str) -> Option<&BundleEntry> {
        self.files.iter().find(|e| e.path == path)
    }

    /// The listed artifacts (`sessions/*.json`).
    pub fn sessions(&self) -> impl Iterator<Item = &BundleEntry> {
        self.files.iter().filter(|e| e.path.starts_with(&format!("{SESSIONS_DIR}/")))
    }

    /// Bytes of every listed file.
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|e| e.size).sum()
    }
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// Why an export or import did not happen. Nothing is left behind in either case: no bundle
/// (nor its temporary directory), no database at the target, no state directory.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MigrateError {
    /// The database to export is missing.
    #[error("`{db}` does not exist; there is nothing to export\n(hint: check --db or `database` in warden.toml)")]
    Missing {
        /// The database.
        db: PathBuf,
    },
    /// There is no bundle at the path.
    #[error(
        "no bundle at `{path}`\n(hint: pass the directory `warden migrate export --to` made; copy it whole, e.g. `rsync -a` or `tar`)"
    )]
    BundleMissing {
        /// As given.
        path: PathBuf,
    },
    /// The bundle does not match its manifest, or its manifest is not acceptable.
    #[error(
        "refusing the bundle `{bundle}`: {reason}; nothing was written\n(hint: the bundle changed after it was exported, or was copied incompletely; export it again on the old host and copy the whole directory)"
    )]
    Tampered {
        /// The bundle.
        bundle: PathBuf,
        /// What does not match.
        reason: String,
    },
    /// The bundled database fails the integrity gate on this host.
    #[error(
        "the database in `{bundle}` fails the integrity gate: {reason}; nothing was installed\n(hint: export again on the old host; if that copy fails too, run `warden check` on the source database there)"
    )]
    GateFailed {
        /// The bundle.
        bundle: PathBuf,
        /// One line: the check's summary, or the row counts that differ.
        reason: String,
        /// The check, when it ran.
        report: Option<Box<IntegrityReport>>,
    },
    /// The copy of the source fails its check: no bundle was published.
    #[error(
        "the copy of `{db}` fails its check: {}; no bundle was published\n(hint: the database itself is probably damaged; run `warden check --db {db}`)",
        report.summary()
    )]
    CopyFailedCheck {
        /// The database.
        db: PathBuf,
        /// The check.
        report: Box<IntegrityReport>,
    },
    /// A file changed while it was copied into a bundle.
    #[error("`{path}` changed while it was copied: {reason}\n(hint: run the command again)")]
    Changed {
        /// The file.
        path: PathBuf,
        /// What differs.
        reason: String,
    },
    /// The target directory is not on local storage.
    #[error(
        "refusing to place the database in `{dir}`: it is on {}, {} storage ({}); nothing was written\n(hint: import onto a local disk of this host; `warden fs {dir}` shows the verdict)",
        verdict.describe(), verdict.kind, verdict.reason
    )]
    NetworkTarget {
        /// The directory judged.
        dir: PathBuf,
        /// The verdict.
        verdict: Box<FsVerdict>,
    },
    /// The storage of the target could not be judged.
    #[error("cannot judge the storage of `{dir}`: {source}")]
    Probe {
        /// The directory.
        dir: PathBuf,
        /// Why.
        #[source]
        source: crate::guard::error::ProbeError,
    },
    /// Something is already at a path the command would create.
    #[error(
        "`{path}` already exists; warden never overwrites it\n(hint: choose a new path, or move the existing one away first)"
    )]
    TargetExists {
        /// The existing path.
        path: PathBuf,
    },
    /// The target cannot be created there.
    #[error("cannot create `{path}`: {why}")]
    CannotCreate {
        /// The target.
        path: PathBuf,
        /// Why, with a hint.
        why: String,
    },
    /// No such user or group.
    #[error(
        "no such user or group in `{spec}`\n(hint: create the account first (`useradd --system ...`), or pass USER[:GROUP] of an existing one)"
    )]
    UnknownOwner {
        /// As given.
        spec: String,
    },
    /// `chown` was refused.
    #[error(
        "changing the owner of `{path}` to {owner} is not permitted: {source}; nothing was installed\n(hint: run the import as root (sudo), or leave out --owner)"
    )]
    ChownNotPermitted {
        /// The file.
        path: PathBuf,
        /// `user:group (uid:gid)`.
        owner: String,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// A writer holds the target's lock.
    #[error(
        "refusing to import to `{db}`: a writer holds its lock ({holder}); nothing was installed\n(hint: stop that engine; `warden lock {db}` shows the holder)"
    )]
    WriterLocked {
        /// The target.
        db: PathBuf,
        /// Who holds it.
        holder: String,
    },
    /// The writer lock could not be used.
    #[error("{source}")]
    Lock {
        /// Why.
        #[source]
        source: LockError,
    },
    /// The source has a hot rollback journal.
    #[error(
        "`{db}` has a hot rollback journal: an engine is mid-transaction or died, and a read-only copy cannot roll it back\n(hint: stop the engine cleanly (or start and stop a session, which recovers it), then export again)"
    )]
    HotJournal {
        /// The database.
        db: PathBuf,
    },
    /// The source could not be opened through the guard.
    #[error("cannot read `{db}`: {source}")]
    Source {
        /// The database.
        db: PathBuf,
        /// Why.
        #[source]
        source: OpenError,
    },
    /// The installed database could not be switched to WAL; the import was undone.
    #[error(
        "cannot switch `{path}` to WAL on this host: {message}; the import was undone\n(hint: `warden fs {path}` and `warden lock {path}` show why; the bundle is untouched, import it again)"
    )]
    Wal {
        /// The target.
        path: PathBuf,
        /// Why.
        message: String,
        /// The open error, when the open itself failed.
        #[source]
        source: Option<Box<OpenError>>,
    },
    /// A snapshot for a sessions export could not be taken.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// Not enough free space.
    #[error(
        "not enough space in `{dir}`: need {needed} bytes, {available} free; nothing was written\n(hint: free space there, or choose a directory on another local disk)"
    )]
    NoSpace {
        /// The directory.
        dir: PathBuf,
        /// Bytes needed.
        needed: u64,
        /// Bytes free.
        available: u64,
    },
    /// The disk filled up; what was written was removed.
    #[error("the disk holding `{dir}` filled up; nothing was published\n(hint: free space, then retry)")]
    DiskFull {
        /// The directory.
        dir: PathBuf,
    },
    /// The request makes no sense.
    #[error("{message}")]
    Usage {
        /// What is wrong, with a hint.
        message: String,
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
    /// Stopped on request; nothing was published.
    #[error("`{path}`: cancelled; nothing was published")]
    Cancelled {
        /// The database.
        path: PathBuf,
    },
}

impl MigrateError {
    /// The sysexits-style exit code (documented in the README): 65 tampered bundle or failed
    /// gate, 66 missing, 69 network target, 73 target exists, 74 I/O, 75 writer lock or hot
    /// journal, 77 chown not permitted, 64 usage, 130 cancelled.
    pub fn exit_code(&self) -> u8 {
        use MigrateError as E;
        match self {
            E::Missing { .. } | E::BundleMissing { .. } => 66,
            E::Tampered { .. } | E::GateFailed { .. } | E::CopyFailedCheck { .. } | E::Changed { .. } => 65,
            E::NetworkTarget { .. } | E::Probe { .. } => 69,
            E::TargetExists { .. } | E::CannotCreate { .. } => 73,
            E::UnknownOwner { .. } | E::Usage { .. } => 64,
            E::ChownNotPermitted { .. } => 77,
            E::WriterLocked { .. } | E::HotJournal { .. } => 75,
            E::Source { source, .. } => open_exit_code(source),
            E::Wal { source: Some(source), .. } => open_exit_code(source),
            E::Snapshot(e) => e.exit_code(),
            E::Cancelled { .. } => 130,
            E::Wal { source: None, .. }
            | E::Lock { .. }
            | E::NoSpace { .. }
            | E::DiskFull { .. }
            | E::Sqlite { .. }
            | E::Io { .. } => 74,
        }
    }
}

fn open_exit_code(e: &OpenError) -> u8 {
    match e {
        OpenError::Missing { .. } => 66,
        OpenError::WriterLocked(LockError::Held { .. }) => 75,
        OpenError::NotAFilePath { .. } => 64,
        _ => 69,
    }
}

impl From<Failure> for MigrateError {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Source { db, source } => MigrateError::Source { db, source },
            Failure::Sqlite { action, path, source } => MigrateError::Sqlite { action, path, source },
            Failure::Io { action, path, source } => MigrateError::Io { action, path, source },
            Failure::Cancelled { db } => MigrateError::Cancelled { path: db },
        }
    }
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl Fn(io::Error) -> MigrateError + 'a {
    move |source| MigrateError::Io { action, path: path.to_owned(), source }
}

/// Turns a full disk into [`MigrateError::DiskFull`] for `dir`.
fn full_in(dir: &Path) -> impl Fn(MigrateError) -> MigrateError + '_ {
    move |e| match &e {
        MigrateError::Sqlite { source, .. } if copy::is_disk_full(source) => {
            MigrateError::DiskFull { dir: dir.to_owned() }
        }
        MigrateError::Io { source, .. } if copy::io_is_full(source) => MigrateError::DiskFull { dir: dir.to_owned() },
        _ => e,
    }
}

// ---------------------------------------------------------------------------------------------
// Small file helpers
// ---------------------------------------------------------------------------------------------

fn exists(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok()
}

fn file_name(p: &Path) -> String {
    p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "db".into())
}

fn sync_dir(dir: &Path) -> Result<(), MigrateError> {
    atomic::sync_dir(dir).map_err(io_err("syncing", dir))
}

fn make_dir(dir: &Path, mode: u32) -> Result<(), MigrateError> {
    std::fs::DirBuilder::new().recursive(true).mode(mode).create(dir).map_err(io_err("creating", dir))
}

/// Removes the entries of `dir` named `<prefix>…` whose owner process (see
/// [`atomic::temp_owner`]) is gone: what a killed export or import left.
fn remove_dead_temps(dir: &Path, prefix: &str) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for entry in rd.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with(prefix) {
            continue;
        }
        let alive = atomic::temp_owner(&name)
            .is_some_and(|pid| pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists());
        if alive {
            continue;
        }
        let p = entry.path();
        let removed = if p.is_dir() { std::fs::remove_dir_all(&p) } else { std::fs::remove_file(&p) };
        if removed.is_ok() {
            tracing::warn!(path = %p.display(), "removed the leftover of a killed export or import");
        }
    }
}

fn space_preflight(dir: &Path, raw: u64) -> Result<(), MigrateError> {
    let needed = copy::with_headroom(raw);
    let available = copy::free_bytes(dir).map_err(|e| io_err("statvfs", dir)(e.into()))?;
    if available < needed {
        return Err(MigrateError::NoSpace { dir: dir.to_owned(), needed, available });
    }
    Ok(())
}

/// `count(*)` of every ordinary table of the database at `path` (virtual tables are skipped;
/// their shadow tables are counted).
fn row_counts(path: &Path) -> rusqlite::Result<BTreeMap<String, u64>> {
    let c = Connection::open_with_flags_and_vfs(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        c"unix",
    )?;
    let names: Vec<String> = {
        let mut st = c.prepare(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND coalesce(sql, '') NOT LIKE 'CREATE VIRTUAL%' ORDER BY name",
        )?;
        st.query_map([], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?
    };
    let mut out = BTreeMap::new();
    for n in names {
        let q = format!("SELECT count(*) FROM \"{}\"", n.replace('"', "\"\""));
        let count: i64 = c.query_row(&q, [], |r| r.get(0))?;
        out.insert(n, u64::try_from(count).unwrap_or(0));
    }
    Ok(out)
}

/// Appends an audit record through `guard` (or to the default log); a lost record is
/// returned as a message for the report (the operation stands either way).
fn audit(guard: Option<&Guard>, event: AuditEvent, db: &Path, decision: &str, reason: String) -> Option<String> {
    let mut r = AuditRecord::new(event);
    r.db = Some(db.to_owned());
    r.decision = Some(decision.to_owned());
    r.reason = Some(reason);
    let written = match guard {
        Some(g) => g.audit(&mut r),
        None => AuditLog::in_dir(AuditLog::default_dir()).append(&mut r),
    };
    written.err().map(|e| format!("the audit record was lost: {e}"))
}

fn guard_or_default(guard: Option<&Guard>) -> Result<Guard, MigrateError> {
    match guard {
        Some(g) => Ok(g.clone()),
        None => crate::guard::vfs::default_guard().map_err(|e| MigrateError::Usage { message: e.to_string() }),
    }
}

// ---------------------------------------------------------------------------------------------
// Building a bundle
// ---------------------------------------------------------------------------------------------

/// A bundle being built in a temporary directory beside its final name; removed on drop
/// unless published.
struct Builder {
    dir: PathBuf,
    tmp: PathBuf,
    parent: PathBuf,
    guard: TempGuard,
    files: Vec<BundleEntry>,
}

impl Builder {
    /// Checks `to` (absent, its directory present) and creates the temporary directory.
    fn start(to: &Path) -> Result<Builder, MigrateError> {
        let dir = std::path::absolute(to).map_err(io_err("resolving", to))?;
        if exists(&dir) {
            return Err(MigrateError::TargetExists { path: dir });
        }
        let parent = atomic::parent_of(&dir).to_owned();
        if !parent.is_dir() {
            return Err(MigrateError::CannotCreate {
                path: dir,
                why: format!("`{}` is not a directory\n(hint: create it first)", parent.display()),
            });
        }
        remove_dead_temps(&parent, &format!(".{}{TMP_MARK}", file_name(&dir)));
        let tmp = atomic::temp_path_for(&dir);
        std::fs::DirBuilder::new().mode(0o700).create(&tmp).map_err(io_err("creating", &tmp))?;
        let guard = TempGuard::new(vec![tmp.clone()]);
        Ok(Builder { dir, tmp, parent, guard, files: Vec::new() })
    }

    /// The temporary path of `rel`, its directory created.
    fn path(&self, rel: &str) -> Result<PathBuf, MigrateError> {
        let p = self.tmp.join(rel);
        make_dir(atomic::parent_of(&p), 0o700)?;
        Ok(p)
    }

    /// Copies `src` in as `rel`, hashing as it copies (`0600`, synced).
    fn add_copy(&mut self, src: &Path, rel: &str) -> Result<BundleEntry, MigrateError> {
        let dst = self.path(rel)?;
        let (sha256, size) =
            copy::copy_hashed(src, &dst).map_err(io_err("copying", src)).map_err(full_in(&self.parent))?;
        let e = BundleEntry { path: rel.to_owned(), size, sha256 };
        self.files.push(e.clone());
        Ok(e)
    }

    /// Writes the manifest last, syncs everything, renames the directory into place.
    fn publish(mut self, manifest: &mut BundleManifest) -> Result<(PathBuf, String), MigrateError> {
        self.files.sort_by(|a, b| a.path.cmp(&b.path));
        manifest.files = std::mem::take(&mut self.files);
        let mut bytes = serde_json::to_vec_pretty(manifest).map_err(|e| io_err("encoding", &self.tmp)(e.into()))?;
        bytes.push(b'\n');
        let mpath = self.tmp.join(MANIFEST_FILE);
        atomic::write_atomic(&mpath, &bytes, 0o600)
            .map_err(io_err("writing", &mpath))
            .map_err(full_in(&self.parent))?;
        let mut dirs = BTreeSet::new();
        for e in &manifest.files {
            let mut p = Path::new(&e.path).parent();
            while let Some(d) = p.filter(|d| !d.as_os_str().is_empty()) {
                dirs.insert(self.tmp.join(d));
                p = d.parent();
            }
        }
        for d in dirs {
            sync_dir(&d)?;
        }
        sync_dir(&self.tmp)?;
        match atomic::rename_noreplace(&self.tmp, &self.dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists || e.raw_os_error() == Some(libc::ENOTEMPTY) => {
                return Err(MigrateError::TargetExists { path: self.dir.clone() });
            }
            Err(e) => return Err(io_err("publishing", &self.dir)(e)),
        }
        self.guard.disarm();
        sync_dir(&self.parent)?;
        Ok((self.dir.clone(), sha256_hex(&bytes)))
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// The artifacts of `session_dir` (as [`health::list`] reads them), as (file, bundle path).
fn artifacts(session_dir: &Path) -> Result<Vec<(PathBuf, String)>, MigrateError> {
    let all = health::list(session_dir).map_err(io_err("reading", session_dir))?;
    Ok(all.into_iter().map(|(p, _)| (p.clone(), format!("{SESSIONS_DIR}/{}", file_name(&p)))).collect())
}

// ---------------------------------------------------------------------------------------------
// Export
// ---------------------------------------------------------------------------------------------

/// Which backups a migration bundle carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackupsInBundle {
    /// None (default): the new host starts its own backups.
    #[default]
    None,
    /// The manifests (the history: ids, times, hashes, checks), not the data.
    Manifests,
    /// Manifests and data files.
    All,
}

/// How to export. [`Default`] gives the documented defaults.
#[derive(Clone, Default)]
pub struct ExportOptions {
    /// The artifact directory (default `<db>.warden/sessions`).
    pub session_dir: Option<PathBuf>,
    /// The audit log to carry (default: the guard's log); a missing file is noted, not an
    /// error.
    pub audit_log: Option<PathBuf>,
    /// The backup directory (default `<db>.warden/backups`), read only when
    /// [`ExportOptions::backups`] asks for backups.
    pub backup_dir: Option<PathBuf>,
    /// Which backups to include (default none).
    pub backups: BackupsInBundle,
    /// Time budget of the check of the copy (exceeding it fails the export); `None`: none.
    pub check_budget: Option<Duration>,
    /// The guard whose tooling VFS reads the database and whose log records the export;
    /// `None`: the default guard.
    pub guard: Option<Guard>,
    /// Set to stop early (nothing is published).
    pub cancel: Option<Arc<AtomicBool>>,
}

impl std::fmt::Debug for ExportOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExportOptions")
            .field("session_dir", &self.session_dir)
            .field("audit_log", &self.audit_log)
            .field("backup_dir", &self.backup_dir)
            .field("backups", &self.backups)
            .field("check_budget", &self.check_budget)
            .finish_non_exhaustive()
    }
}

/// What [`export`] published.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExportReport {
    /// Report schema (1).
    pub schema: u32,
    /// The bundle directory.
    pub bundle: PathBuf,
    /// SHA-256 of its `MANIFEST.json`: the bundle's name in audit records.
    pub manifest_sha256: String,
    /// The manifest as published.
    pub manifest: BundleManifest,
    /// Bytes of every file in the bundle except the manifest.
    pub bytes: u64,
    /// Wall time.
    pub duration_ms: u64,
    /// Notes (what was left out, an audit record that was lost).
    pub messages: Vec<String>,
}

/// Exports `db` into the new bundle directory `to` (see the module docs). Safe while the
/// engine runs and when the database is on network storage: the copy goes through SQLite's
/// locks from a read-only tooling connection.
///
/// # Errors
/// [`MigrateError`]; nothing is published then. A copy that fails its check is
/// [`MigrateError::CopyFailedCheck`].
pub fn export(db: &Path, to: &Path, opts: &ExportOptions) -> Result<ExportReport, MigrateError> {
    let started = Instant::now();
    let db = std::path::absolute(db).map_err(io_err("resolving", db))?;
    if !db.is_file() {
        return Err(MigrateError::Missing { db });
    }
    let guard = guard_or_default(opts.guard.as_ref())?;
    let session_dir = opts.session_dir.clone().unwrap_or_else(|| SessionConfig::state_dir(&db).join(SESSIONS_DIR));
    let audit_log = opts.audit_log.clone().unwrap_or_else(|| guard.audit_path().to_owned());
    let backup_dir = opts.backup_dir.clone().unwrap_or_else(|| SessionConfig::state_dir(&db).join(BACKUPS_DIR));
    let mut notes = Vec::new();

    // What goes in, sized first so a full disk is refused before anything is copied.
    let sessions = artifacts(&session_dir)?;
    let audit_present = audit_log.is_file();
    if !audit_present {
        notes.push(format!("no audit log at `{}`; none included", audit_log.display()));
    }
    let mut backups = Vec::new();
    if opts.backups != BackupsInBundle::None {
        let store = BackupStore::new(&backup_dir, &db);
        for rec in store.list().map_err(|e| io_err("listing", &backup_dir)(io::Error::other(e.to_string())))? {
            backups.push((rec.manifest_path.clone(), format!("{BACKUPS_DIR}/{}", file_name(&rec.manifest_path))));
            if opts.backups == BackupsInBundle::All {
                backups.push((rec.path.clone(), format!("{BACKUPS_DIR}/{}", file_name(&rec.path))));
            }
        }
    } else {
        notes.push("backups not included (the new host takes its own)".into());
    }
    let wal_bytes = copy::size_of(&sidecar(&db, "-wal"));
    let raw = copy::size_of(&db)
        + wal_bytes
        + sessions.iter().chain(&backups).map(|(p, _)| copy::size_of(p)).sum::<u64>()
        + if audit_present { copy::size_of(&audit_log) } else { 0 };

    let mut b = Builder::start(to)?;
    space_preflight(&b.parent, raw)?;
    let parent = b.parent.clone();
    let full = full_in(&parent);

    // The database: one step of the backup API, made self-contained, checked while hashed.
    let tmp_db = b.path(DATABASE_FILE)?;
    let copy_started = Instant::now();
    let how = OnlineCopy { guard: Some(&guard), pages_per_step: -1, cancel: opts.cancel.as_ref(), progress: None };
    let copied = copy::online_copy(&db, &tmp_db, &how).and_then(|()| copy::finalize(&tmp_db));
    match copied {
        Ok(()) => {}
        Err(
            Failure::Source { source: OpenError::Sqlite { source: e, .. }, .. } | Failure::Sqlite { source: e, .. },
        ) if copy::is_hot_journal(&e) => return Err(MigrateError::HotJournal { db }),
        Err(Failure::Sqlite { action, path, source }) if copy::is_damage(&source) => {
            let why = format!("{action} `{}`: {source}", path.display());
            let report = IntegrityReport::failed(CheckMode::Full, why, copy_started.elapsed());
            return Err(MigrateError::CopyFailedCheck { db, report: Box::new(report) });
        }
        Err(f) => return Err(full(f.into())),
    }
    let copy_ms = ms(copy_started.elapsed());
    copy::check_cancel(opts.cancel.as_ref(), &db)?;
    std::fs::set_permissions(&tmp_db, std::fs::Permissions::from_mode(0o600)).map_err(io_err("chmod", &tmp_db))?;
    let spec = CheckSpec {
        mode: Some(CheckMode::Full),
        budget: opts.check_budget,
        cancel: opts.cancel.as_ref(),
        progress: None,
    };
    let checked = copy::check_and_hash(&tmp_db, &spec).map_err(|f| full(f.into()))?;
    copy::check_cancel(opts.cancel.as_ref(), &db)?;
    let mut integrity = checked
        .report
        .unwrap_or_else(|| IntegrityReport::failed(CheckMode::Full, "the check did not run".into(), Duration::ZERO));
    if checked.changed {
        integrity.ok = false;
        integrity.error = Some("the copy changed while it was being checked".into());
    }
    if !integrity.ok {
        return Err(MigrateError::CopyFailedCheck { db, report: Box::new(integrity) });
    }
    let counts = row_counts(&tmp_db).map_err(|source| MigrateError::Sqlite {
        action: "counting the rows of",
        path: tmp_db.clone(),
        source,
    })?;
    b.files.push(BundleEntry { path: DATABASE_FILE.into(), size: checked.size, sha256: checked.sha256.clone() });
    let database = BundledDatabase {
        file: DATABASE_FILE.into(),
        size: checked.size,
        sha256: checked.sha256,
        page_size: checked.pages.0,
        page_count: checked.pages.1,
        journal_mode: "delete".into(),
        integrity,
        row_counts: counts,
        method: "backup_api".into(),
        source_wal_bytes: wal_bytes,
        copy_ms,
    };

    // The rest, copied as they are.
    for (src, rel) in sessions.iter().chain(&backups) {
        b.add_copy(src, rel)?;
    }
    if audit_present {
        b.add_copy(&audit_log, AUDIT_FILE)?;
    }
    copy::check_cancel(opts.cancel.as_ref(), &db)?;

    let mut manifest = BundleManifest {
        schema: SCHEMA,
        kind: BundleKind::Migration,
        created: now_rfc3339(),
        source: BundleSource {
            host: ProcessIdentity::current().host,
            db: db.clone(),
            storage: guard.classify(&db).ok(),
            session_dir,
            audit_log: audit_present.then_some(audit_log),
            backup_dir: (opts.backups != BackupsInBundle::None).then_some(backup_dir),
        },
        sqlite_version: rusqlite::version().to_owned(),
        warden_version: env!("CARGO_PKG_VERSION").to_owned(),
        database: Some(database),
        snapshot: None,
        files: Vec::new(),
        notes,
    };
    let (bundle, manifest_sha256) = b.publish(&mut manifest)?;
    let mut messages = manifest.notes.clone();
    let reason = format!(
        "exported `{}` to the bundle `{}` (manifest sha256 {manifest_sha256}; database sha256 {}, {} sessions); by {}",
        db.display(),
        bundle.display(),
        manifest.database.as_ref().map_or("-", |d| d.sha256.as_str()),
        manifest.sessions().count(),
        crate::util::identity::who()
    );
    messages.extend(audit(Some(&guard), AuditEvent::MigrationExported, &db, "allow", reason));
    Ok(ExportReport {
        schema: 1,
        bytes: manifest.bytes(),
        bundle,
        manifest_sha256,
        manifest,
        duration_ms: ms(started.elapsed()),
        messages,
    })
}

// ---------------------------------------------------------------------------------------------
// Sessions export
// ---------------------------------------------------------------------------------------------

/// How to export session artifacts for analysis.
#[derive(Clone, Default)]
pub struct SessionsExportOptions {
    /// The artifact directory (default `<db>.warden/sessions`).
    pub session_dir: Option<PathBuf>,
    /// The snapshot directory (default `<db>.warden/snapshots`).
    pub snapshot_dir: Option<PathBuf>,
    /// Take a fresh snapshot first, with these options; `None`: include the newest existing
    /// one (`latest.sqlite`), if any.
    pub take_snapshot: Option<SnapshotOptions>,
}

impl std::fmt::Debug for SessionsExportOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionsExportOptions")
            .field("session_dir", &self.session_dir)
            .field("snapshot_dir", &self.snapshot_dir)
            .field("take_snapshot", &self.take_snapshot)
            .finish()
    }
}

/// What [`export_sessions`] published.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionsExportReport {
    /// Report schema (1).
    pub schema: u32,
    /// The export directory.
    pub dir: PathBuf,
    /// SHA-256 of its `MANIFEST.json`.
    pub manifest_sha256: String,
    /// The manifest as published.
    pub manifest: BundleManifest,
    /// Artifacts included.
    pub sessions: usize,
    /// The snapshot included (`None`: there was none; see `messages`).
    pub snapshot: Option<BundledSnapshot>,
    /// The snapshot taken first, when one was asked for.
    pub snapshot_taken: Option<PathBuf>,
    /// Bytes of every file except the manifest.
    pub bytes: u64,
    /// Wall time.
    pub duration_ms: u64,
    /// Notes for the operator.
    pub messages: Vec<String>,
}

/// Collects the health artifacts of `db` and its newest analysis snapshot (taking one first
/// when asked) into the new directory `to`, atomically, with a `MANIFEST.json` of hashes.
/// Never opens the live database unless a snapshot is taken (through the tooling role).
///
/// # Errors
/// [`MigrateError`]: `to` exists, a snapshot could not be taken, the snapshot changed since
/// it was published, I/O. Nothing is published then.
pub fn export_sessions(
    db: &Path,
    to: &Path,
    opts: &SessionsExportOptions,
) -> Result<SessionsExportReport, MigrateError> {
    let started = Instant::now();
    let db = std::path::absolute(db).map_err(io_err("resolving", db))?;
    let session_dir = opts.session_dir.clone().unwrap_or_else(|| SessionConfig::state_dir(&db).join(SESSIONS_DIR));
    let mut b = Builder::start(to)?;
    let mut messages = Vec::new();
    let mut snapshot_taken = None;
    let snap_dir = match &opts.take_snapshot {
        Some(so) => {
            let r = snapshot::take(&db, so)?;
            snapshot_taken = Some(r.path.clone());
            r.dir
        }
        None => opts.snapshot_dir.clone().unwrap_or_else(|| snapshot::default_dir(&db)),
    };
    let latest = snapshot::latest(&snap_dir, &db)?;
    let sessions = artifacts(&session_dir)?;
    let raw =
        sessions.iter().map(|(p, _)| copy::size_of(p)).sum::<u64>() + latest.as_ref().map_or(0, |r| r.manifest.size);
    space_preflight(&b.parent, raw)?;
    for (src, rel) in &sessions {
        b.add_copy(src, rel)?;
    }
    if sessions.is_empty() {
        messages.push(format!("no session artifacts in `{}`", session_dir.display()));
    }
    let snapshot = match latest {
        None => {
            messages.push(format!(
                "no snapshot in `{}`; none included (pass --snapshot to take one first, or run `warden snapshot`)",
                snap_dir.display()
            ));
            None
        }
        Some(rec) => Some(add_snapshot(&mut b, &rec.path, &rec.manifest_path, &rec.manifest)?),
    };
    let mut manifest = BundleManifest {
        schema: SCHEMA,
        kind: BundleKind::Sessions,
        created: now_rfc3339(),
        source: BundleSource {
            host: ProcessIdentity::current().host,
            db: db.clone(),
            storage: None,
            session_dir,
            audit_log: None,
            backup_dir: None,
        },
        sqlite_version: rusqlite::version().to_owned(),
        warden_version: env!("CARGO_PKG_VERSION").to_owned(),
        database: None,
        snapshot: snapshot.clone(),
        files: Vec::new(),
        notes: messages.clone(),
    };
    let (dir, manifest_sha256) = b.publish(&mut manifest)?;
    Ok(SessionsExportReport {
        schema: 1,
        sessions: manifest.sessions().count(),
        bytes: manifest.bytes(),
        dir,
        manifest_sha256,
        manifest,
        snapshot,
        snapshot_taken,
        duration_ms: ms(started.elapsed()),
        messages,
    })
}

/// Copies a published snapshot and its manifest into the bundle; its hash must still be the
/// one its manifest recorded.
fn add_snapshot(
    b: &mut Builder,
    data: &Path,
    manifest_path: &Path,
    m: &SnapshotManifest,
) -> Result<BundledSnapshot, MigrateError> {
    let file = format!("{SNAPSHOTS_DIR}/{}", file_name(data));
    let manifest_file = format!("{SNAPSHOTS_DIR}/{}", file_name(manifest_path));
    let e = b.add_copy(data, &file)?;
    if e.sha256 != m.sha256 || e.size != m.size {
        return Err(MigrateError::Changed {
            path: data.to_owned(),
            reason: format!(
                "its manifest records {} bytes, sha256 {}; the file has {} bytes, sha256 {}",
                m.size, m.sha256, e.size, e.sha256
            ),
        });
    }
    b.add_copy(manifest_path, &manifest_file)?;
    Ok(BundledSnapshot {
        id: m.id.clone(),
        file,
        manifest_file,
        created: m.created.clone(),
        size: e.size,
        sha256: e.sha256,
    })
}

// ---------------------------------------------------------------------------------------------
// Verification
// ---------------------------------------------------------------------------------------------

/// A bundle whose every file matched its manifest when it was verified.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VerifiedBundle {
    /// The bundle directory (canonical).
    pub dir: PathBuf,
    /// Its manifest.
    pub manifest: BundleManifest,
    /// SHA-256 of `MANIFEST.json`.
    pub manifest_sha256: String,
}

/// Checks that `p` is a plain relative bundle path: not empty, not absolute, no `.` or `..`
/// component, no empty component, no backslash or NUL, not the manifest itself.
///
/// # Errors
/// Why it is not, one line.
pub fn check_entry_path(p: &str) -> Result<(), String> {
    if p.is_empty() {
        return Err("an entry with an empty path".into());
    }
    if p.contains('\0') || p.contains('\\') {
        return Err(format!("the entry `{}` has a NUL or backslash in its path", p.escape_debug()));
    }
    if p.starts_with('/') || Path::new(p).is_absolute() {
        return Err(format!("the entry `{p}` has an absolute path"));
    }
    for part in p.split('/') {
        match part {
            "" => return Err(format!("the entry `{p}` has an empty path component")),
            "." | ".." => return Err(format!("the entry `{p}` has a `{part}` component (path traversal)")),
            _ => {}
        }
    }
    if !Path::new(p).components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(format!("the entry `{p}` is not a plain relative path"));
    }
    if p == MANIFEST_FILE {
        return Err(format!("the manifest lists `{MANIFEST_FILE}` itself"));
    }
    Ok(())
}

/// Every regular file under `root`, as relative `/`-separated paths with their sizes; a
/// symbolic link, special file or non-UTF-8 name anywhere is a problem.
fn walk(root: &Path) -> Result<(BTreeMap<String, u64>, Vec<String>), MigrateError> {
    let mut files = BTreeMap::new();
    let mut problems = Vec::new();
    let mut stack = vec![(root.to_owned(), String::new(), 0usize)];
    while let Some((dir, rel, depth)) = stack.pop() {
        let rd = std::fs::read_dir(&dir).map_err(io_err("reading", &dir))?;
        for entry in rd {
            let entry = entry.map_err(io_err("reading", &dir))?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                problems.push(format!("`{}` has a name that is not UTF-8", entry.path().display()));
                continue;
            };
            let path = if rel.is_empty() { name } else { format!("{rel}/{name}") };
            let ft = entry.file_type().map_err(io_err("reading", &entry.path()))?;
            if ft.is_symlink() {
                problems.push(format!("`{path}` is a symbolic link"));
            } else if ft.is_dir() {
                if depth >= 16 {
                    problems.push(format!("`{path}` is nested too deep"));
                } else {
                    stack.push((entry.path(), path, depth + 1));
                }
            } else if ft.is_file() {
                let md = entry.metadata().map_err(io_err("reading", &entry.path()))?;
                files.insert(path, md.len());
            } else {
                problems.push(format!("`{path}` is not a regular file"));
            }
        }
    }
    Ok((files, problems))
}

/// Verifies a bundle with nothing written: the manifest (schema, paths), every file on disk
/// against it (no symbolic links, nothing unlisted, nothing missing, sizes and SHA-256).
///
/// # Errors
/// [`MigrateError::BundleMissing`] (66) when there is no bundle; [`MigrateError::Tampered`]
/// (65) naming what does not match (the first few problems, and how many there were).
pub fn verify_bundle(bundle: &Path) -> Result<VerifiedBundle, MigrateError> {
    let dir = match std::fs::canonicalize(bundle) {
        Ok(d) if d.is_dir() => d,
        Ok(_) => return Err(MigrateError::BundleMissing { path: bundle.to_owned() }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(MigrateError::BundleMissing { path: bundle.to_owned() });
        }
        Err(e) => return Err(io_err("resolving", bundle)(e)),
    };
    let tampered = |reason: String| MigrateError::Tampered { bundle: dir.clone(), reason };
    let mpath = dir.join(MANIFEST_FILE);
    match std::fs::symlink_metadata(&mpath) {
        Ok(md) if md.file_type().is_file() && md.len() <= MAX_MANIFEST => {}
        Ok(md) if md.file_type().is_file() => return Err(tampered(format!("{MANIFEST_FILE} is too large"))),
        Ok(_) => return Err(tampered(format!("{MANIFEST_FILE} is not a regular file"))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(tampered(format!("it has no {MANIFEST_FILE} (an incomplete copy, or not a bundle)")));
        }
        Err(e) => return Err(io_err("reading", &mpath)(e)),
    }
    let bytes = std::fs::read(&mpath).map_err(io_err("reading", &mpath))?;
    let manifest_sha256 = sha256_hex(&bytes);
    let schema = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v.get("schema").and_then(serde_json::Value::as_u64));
    match schema {
        Some(s) if s == u64::from(SCHEMA) => {}
        Some(s) => {
            return Err(tampered(format!(
                "{MANIFEST_FILE} has schema {s}; this warden reads schema {SCHEMA} (use the same warden version on both hosts)"
            )));
        }
        None => return Err(tampered(format!("{MANIFEST_FILE} is not a bundle manifest (no schema)"))),
    }
    let manifest: BundleManifest =
        serde_json::from_slice(&bytes).map_err(|e| tampered(format!("{MANIFEST_FILE} does not parse: {e}")))?;

    let mut problems = Vec::new();
    let mut listed = BTreeSet::new();
    for e in &manifest.files {
        if let Err(p) = check_entry_path(&e.path) {
            problems.push(p);
        } else if !listed.insert(e.path.as_str()) {
            problems.push(format!("the entry `{}` is listed twice", e.path));
        }
        if e.sha256.len() != 64 || !e.sha256.bytes().all(|c| c.is_ascii_hexdigit()) {
            problems.push(format!("the entry `{}` has no valid SHA-256", e.path));
        }
    }
    if !problems.is_empty() {
        return Err(tampered(summarize(&problems)));
    }
    let (found, mut problems) = walk(&dir)?;
    for path in found.keys() {
        if path != MANIFEST_FILE && !listed.contains(path.as_str()) {
            problems.push(format!("`{path}` is not listed in {MANIFEST_FILE}"));
        }
    }
    let mut to_hash = Vec::new();
    for e in &manifest.files {
        match found.get(&e.path) {
            None if !problems.iter().any(|p| p.starts_with(&format!("`{}` ", e.path))) => {
                problems.push(format!("`{}` is listed but missing", e.path));
            }
            None => {}
            Some(&size) if size != e.size => {
                problems.push(format!("`{}` has {size} bytes; the manifest says {}", e.path, e.size));
            }
            Some(_) => to_hash.push(e),
        }
    }
    if !problems.is_empty() {
        return Err(tampered(summarize(&problems)));
    }
    for e in to_hash {
        let p = dir.join(&e.path);
        let (sha, _) = copy::sha256_file(&p, None).map_err(io_err("hashing", &p))?;
        if sha != e.sha256 {
            problems.push(format!("`{}` hashes to {sha}; the manifest says {}", e.path, e.sha256));
        }
    }
    if !problems.is_empty() {
        return Err(tampered(summarize(&problems)));
    }
    Ok(VerifiedBundle { dir, manifest, manifest_sha256 })
}

fn summarize(problems: &[String]) -> String {
    let mut s = problems.iter().take(3).cloned().collect::<Vec<_>>().join("; ");
    if problems.len() > 3 {
        s.push_str(&format!(" (+{} more)", problems.len() - 3));
    }
    s
}

// ---------------------------------------------------------------------------------------------
// Import
// ---------------------------------------------------------------------------------------------

/// The owner an import gives the database and its state: a user and a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    /// As given (`engine`, `engine:engine`, `1001:1001`).
    pub spec: String,
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

impl Owner {
    /// Resolves `USER[:GROUP]` (names or numeric ids); without a group, the user's primary
    /// group.
    ///
    /// # Errors
    /// [`MigrateError::UnknownOwner`] when the user or group does not exist.
    pub fn resolve(spec: &str) -> Result<Owner, MigrateError> {
        use nix::unistd::{Group, User};
        let unknown = || MigrateError::UnknownOwner { spec: spec.to_owned() };
        let (user, group) = match spec.split_once(':') {
            Some((u, g)) => (u, Some(g).filter(|g| !g.is_empty())),
            None => (spec, None),
        };
        if user.is_empty() {
            return Err(unknown());
        }
        // A name first; a number only when no account has that name.
        let u = User::from_name(user).ok().flatten().or_else(|| {
            let uid = user.parse().ok()?;
            User::from_uid(nix::unistd::Uid::from_raw(uid)).ok().flatten()
        });
        let uid = match &u {
            Some(u) => u.uid.as_raw(),
            None => user.parse().map_err(|_| unknown())?,
        };
        let gid = match group {
            Some(g) => Group::from_name(g).ok().flatten().map(|g| g.gid.as_raw()).or_else(|| g.parse().ok()),
            None => u.as_ref().map(|u| u.gid.as_raw()),
        }
        .ok_or_else(unknown)?;
        Ok(Owner { spec: spec.to_owned(), uid, gid })
    }

    /// `spec (uid:gid)`.
    pub fn describe(&self) -> String {
        format!("{} ({}:{})", self.spec, self.uid, self.gid)
    }

    fn apply(&self, path: &Path) -> Result<(), MigrateError> {
        use nix::unistd::{Gid, Uid, chown};
        chown(path, Some(Uid::from_raw(self.uid)), Some(Gid::from_raw(self.gid))).map_err(|e| match e {
            nix::errno::Errno::EPERM | nix::errno::Errno::EACCES => {
                MigrateError::ChownNotPermitted { path: path.to_owned(), owner: self.describe(), source: e.into() }
            }
            e => io_err("chown", path)(e.into()),
        })
    }
}

/// How to import. [`Default`] gives the documented defaults.
#[derive(Clone, Debug)]
pub struct ImportOptions {
    /// Owner of the database, its lock file and its state (default: unchanged, the importing
    /// user).
    pub owner: Option<Owner>,
    /// Permission bits of the database (default [`DEFAULT_MODE`], `0640`); world-writable
    /// modes are refused. The lock file gets the same bits; directories `0750`, artifacts
    /// `0640`.
    pub mode: u32,
    /// Where the artifacts go (default `<db>.warden/sessions`).
    pub session_dir: Option<PathBuf>,
    /// Time budget of the integrity gate (exceeding it fails the import); `None`: none.
    pub check_budget: Option<Duration>,
    /// The guard: its probe judges the target's storage, its engine role switches the
    /// database to WAL, its log records the import. `None`: the default guard.
    pub guard: Option<Guard>,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions { owner: None, mode: DEFAULT_MODE, session_dir: None, check_budget: None, guard: None }
    }
}

/// The installed database, as [`import`] checked it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImportedDatabase {
    /// Bytes (as installed, before the switch to WAL).
    pub size: u64,
    /// SHA-256 (equal to the manifest's).
    pub sha256: String,
    /// The gate on this host.
    pub integrity: IntegrityReport,
    /// `count(*)` per table, equal to the manifest's.
    pub row_counts: BTreeMap<String, u64>,
    /// `wal` after the switch.
    pub journal_mode: String,
    /// The header's read/write versions say WAL.
    pub header_wal: bool,
}

/// What [`import`] did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImportReport {
    /// Report schema (1).
    pub schema: u32,
    /// The bundle.
    pub bundle: PathBuf,
    /// SHA-256 of its `MANIFEST.json`.
    pub manifest_sha256: String,
    /// Where it came from.
    pub source: BundleSource,
    /// When it was exported.
    pub exported_at: String,
    /// The installed database.
    pub target: PathBuf,
    /// Its storage verdict here.
    pub storage: FsVerdict,
    /// What was checked and installed.
    pub database: ImportedDatabase,
    /// Permission bits, octal (`0640`).
    pub mode: String,
    /// The owner given, if any.
    pub owner: Option<Owner>,
    /// The writer lock file.
    pub lock_file: PathBuf,
    /// The state directory (`<db>.warden`).
    pub state_dir: PathBuf,
    /// The artifacts installed.
    pub sessions: Vec<PathBuf>,
    /// The old host's audit log, installed beside this host's state.
    pub imported_audit: Option<PathBuf>,
    /// Wall time.
    pub duration_ms: u64,
    /// Notes for the operator.
    pub messages: Vec<String>,
}

/// What an import put in place, removed again if a later step fails.
#[derive(Default)]
struct Undo {
    files: Vec<PathBuf>,
    dirs: Vec<PathBuf>,
    armed: bool,
}

impl Undo {
    fn run(&mut self) {
        if !self.armed {
            return;
        }
        for f in self.files.drain(..) {
            let _ = std::fs::remove_file(&f);
        }
        for d in self.dirs.drain(..) {
            let _ = std::fs::remove_dir_all(&d);
        }
    }
}

impl Drop for Undo {
    fn drop(&mut self) {
        self.run();
    }
}

/// Checks the target: its directory, that nothing is in the way, local storage.
fn import_preflight(target: &Path, state_dir: &Path, guard: &Guard) -> Result<FsVerdict, MigrateError> {
    let parent = atomic::parent_of(target);
    if !parent.is_dir() {
        return Err(MigrateError::CannotCreate {
            path: target.to_owned(),
            why: format!(
                "`{}` is not a directory\n(hint: create it first, with the owner and mode the engine needs)",
                parent.display()
            ),
        });
    }
    for suffix in ["", "-wal", "-journal", "-shm"] {
        let p = sidecar(target, suffix);
        if exists(&p) {
            return Err(MigrateError::TargetExists { path: p });
        }
    }
    if exists(state_dir) {
        return Err(MigrateError::TargetExists { path: state_dir.to_owned() });
    }
    let verdict = guard.classify(parent).map_err(|source| MigrateError::Probe { dir: parent.to_owned(), source })?;
    if verdict.kind != FsKind::Local {
        return Err(MigrateError::NetworkTarget { dir: parent.to_owned(), verdict: Box::new(verdict) });
    }
    Ok(verdict)
}

/// Copies the bundled database to `tmp` (hashed as it is copied), runs the gate there,
/// compares the row counts, re-hashes.
fn gate_copy(
    vb: &VerifiedBundle,
    tmp: &Path,
    budget: Option<Duration>,
) -> Result<(IntegrityReport, BTreeMap<String, u64>, u64), MigrateError> {
    let dbm = vb.manifest.database.as_ref().ok_or_else(|| MigrateError::Tampered {
        bundle: vb.dir.clone(),
        reason: "it is not a migration bundle (no database)".into(),
    })?;
    let gate_failed = |reason: String, report: Option<IntegrityReport>| MigrateError::GateFailed {
        bundle: vb.dir.clone(),
        reason,
        report: report.map(Box::new),
    };
    let src = vb.dir.join(&dbm.file);
    let (sha, n) = copy::copy_hashed(&src, tmp)
        .map_err(io_err("copying the bundled database to", tmp))
        .map_err(full_in(atomic::parent_of(tmp)))?;
    if sha != dbm.sha256 || n != dbm.size {
        return Err(MigrateError::Tampered {
            bundle: vb.dir.clone(),
            reason: format!("`{}` changed after it was verified (sha256 now {sha})", dbm.file),
        });
    }
    let (report, _) = check_file(tmp, CheckMode::Full, budget, None)
        .map_err(|e| io_err("checking", tmp)(io::Error::other(e.to_string())))?;
    if !report.ok {
        return Err(gate_failed(report.summary(), Some(report)));
    }
    let counts = row_counts(tmp).map_err(|source| MigrateError::Sqlite {
        action: "counting the rows of",
        path: tmp.to_owned(),
        source,
    })?;
    if counts != dbm.row_counts {
        let diff: Vec<String> = dbm
            .row_counts
            .keys()
            .chain(counts.keys())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .filter(|t| dbm.row_counts.get(*t) != counts.get(*t))
            .map(|t| format!("{t}: manifest {:?}, copy {:?}", dbm.row_counts.get(t), counts.get(t)))
            .collect();
        return Err(gate_failed(format!("row counts differ from the manifest: {}", diff.join(", ")), Some(report)));
    }
    let (again, _) = copy::sha256_file(tmp, None).map_err(io_err("re-hashing", tmp))?;
    if again != dbm.sha256 {
        return Err(gate_failed(format!("the copy changed while it was checked (sha256 now {again})"), Some(report)));
    }
    Ok((report, counts, n))
}

/// Copies `rel` of the bundle to `dst` (new file), hashed against the manifest; mode and
/// owner applied.
fn install_file(vb: &VerifiedBundle, rel: &str, dst: &Path, owner: Option<&Owner>) -> Result<(), MigrateError> {
    let e = vb
        .manifest
        .entry(rel)
        .ok_or_else(|| MigrateError::Tampered { bundle: vb.dir.clone(), reason: format!("`{rel}` is not listed") })?;
    let src = vb.dir.join(rel);
    let (sha, n) = copy::copy_hashed(&src, dst).map_err(|source| {
        if source.kind() == io::ErrorKind::AlreadyExists {
            MigrateError::TargetExists { path: dst.to_owned() }
        } else {
            io_err("copying", &src)(source)
        }
    })?;
    if sha != e.sha256 || n != e.size {
        return Err(MigrateError::Tampered {
            bundle: vb.dir.clone(),
            reason: format!("`{rel}` changed after it was verified (sha256 now {sha})"),
        });
    }
    std::fs::set_permissions(dst, std::fs::Permissions::from_mode(0o640)).map_err(io_err("chmod", dst))?;
    if let Some(o) = owner {
        o.apply(dst)?;
    }
    Ok(())
}

/// Opens `target` through the guard's engine role with WAL, closes it, and reads the header.
fn switch_to_wal(target: &Path, guard: &Guard) -> Result<(String, bool), MigrateError> {
    let wal_err = |message: String, source: Option<Box<OpenError>>| MigrateError::Wal {
        path: target.to_owned(),
        message,
        source,
    };
    let opts = EngineOptions { guard: Some(guard.clone()), journal: JournalChoice::Wal, ..Default::default() };
    let conn = open_engine(target, &opts).map_err(|e| wal_err(e.to_string(), Some(Box::new(e))))?;
    let mode: String =
        conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).map_err(|e| wal_err(e.to_string(), None))?;
    conn.close().map_err(|(_, e)| wal_err(format!("closing: {e}"), None))?;
    // Header bytes 18 and 19, the file format write and read versions: 2 means WAL.
    let mut h = [0u8; 20];
    let header_wal = std::fs::File::open(target)
        .and_then(|mut f| io::Read::read_exact(&mut f, &mut h))
        .is_ok_and(|()| &h[..16] == b"SQLite format 3\0" && h[18] == 2 && h[19] == 2);
    if !mode.eq_ignore_ascii_case("wal") || !header_wal {
        return Err(wal_err(format!("journal_mode is `{mode}` and the header says WAL: {header_wal}"), None));
    }
    Ok((mode.to_ascii_lowercase(), header_wal))
}

/// Imports the migration bundle at `bundle` as the new database `target` (see the module
/// docs for every step and exit code).
///
/// # Errors
/// [`MigrateError`]; nothing is left at the target then (a failure after the database was
/// installed undoes the installation).
pub fn import(bundle: &Path, target: &Path, opts: &ImportOptions) -> Result<ImportReport, MigrateError> {
    let started = Instant::now();
    if opts.mode & !0o7777 != 0 || opts.mode & 0o002 != 0 {
        return Err(MigrateError::Usage {
            message: format!(
                "mode {:04o} is not acceptable for a database\n(hint: use 0640 or 0600; never world-writable)",
                opts.mode
            ),
        });
    }
    let guard = guard_or_default(opts.guard.as_ref())?;
    let target = std::path::absolute(target).map_err(io_err("resolving", target))?;
    let state_dir = SessionConfig::state_dir(&target);
    let session_dir = opts.session_dir.clone().unwrap_or_else(|| state_dir.join(SESSIONS_DIR));
    let session_dir = std::path::absolute(&session_dir).map_err(io_err("resolving", &session_dir))?;
    if !bundle.is_dir() {
        return Err(MigrateError::BundleMissing { path: bundle.to_owned() });
    }

    // 1. Preflight, 2. verify (nothing written by either).
    let storage = import_preflight(&target, &state_dir, &guard)?;
    let refused = |e: MigrateError| {
        if matches!(e, MigrateError::Tampered { .. } | MigrateError::GateFailed { .. }) {
            let _ = audit(
                Some(&guard),
                AuditEvent::MigrationRefused,
                &target,
                "refuse",
                format!(
                    "import of `{}` refused: {}; nothing was written; by {}",
                    bundle.display(),
                    first_line(&e),
                    crate::util::identity::who()
                ),
            );
        }
        e
    };
    let vb = verify_bundle(bundle).map_err(refused)?;
    if vb.manifest.kind != BundleKind::Migration || vb.manifest.database.is_none() {
        return Err(refused(MigrateError::Tampered {
            bundle: vb.dir.clone(),
            reason: "it is not a migration bundle (a sessions export holds no database to import)".into(),
        }));
    }
    if !session_dir.starts_with(&state_dir) {
        for e in vb.manifest.sessions() {
            let p = session_dir.join(file_name(Path::new(&e.path)));
            if exists(&p) {
                return Err(MigrateError::TargetExists { path: p });
            }
        }
    }
    let parent = atomic::parent_of(&target).to_owned();
    space_preflight(&parent, vb.manifest.bytes())?;

    // 3. The gate on a private copy beside the target.
    remove_dead_temps(&parent, &format!(".{}{IMPORT_TMP}{TMP_MARK}", file_name(&target)));
    remove_dead_temps(&parent, &format!(".{}{TMP_MARK}", file_name(&state_dir)));
    let tmp = atomic::temp_path_for(&target.with_file_name(format!("{}{IMPORT_TMP}", file_name(&target))));
    let mut tmp_guard = TempGuard::with_sidecars(&tmp);
    let (integrity, counts, size) = gate_copy(&vb, &tmp, opts.check_budget).map_err(refused)?;
    let sha256 = vb.manifest.database.as_ref().map(|d| d.sha256.clone()).unwrap_or_default();

    // 4. Mode and owner on the copy; the state directory under a temporary name.
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(opts.mode)).map_err(io_err("chmod", &tmp))?;
    if let Some(o) = &opts.owner {
        o.apply(&tmp)?;
    }
    let state_tmp = atomic::temp_path_for(&state_dir);
    let _state_guard = TempGuard::new(vec![state_tmp.clone()]);
    make_dir(&state_tmp, 0o750)?;
    let sessions_in = |d: &Path| session_dir.strip_prefix(&state_dir).ok().map(|rel| d.join(rel));
    let session_tmp = sessions_in(&state_tmp).unwrap_or_else(|| session_dir.clone());
    let mut undo = Undo::default();
    if !session_dir.starts_with(&state_dir) && !exists(&session_dir) {
        undo.dirs.push(session_dir.clone());
    }
    undo.armed = true;
    make_dir(&session_tmp, 0o750)?;
    let mut sessions = Vec::new();
    for e in vb.manifest.sessions() {
        let name = file_name(Path::new(&e.path));
        let dst = session_tmp.join(&name);
        if session_tmp == session_dir {
            undo.files.push(dst.clone());
        }
        install_file(&vb, &e.path, &dst, opts.owner.as_ref())?;
        sessions.push(session_dir.join(name));
    }
    let imported_audit = match vb.manifest.entry(AUDIT_FILE) {
        Some(_) => {
            install_file(&vb, AUDIT_FILE, &state_tmp.join(IMPORTED_AUDIT), opts.owner.as_ref())?;
            Some(state_dir.join(IMPORTED_AUDIT))
        }
        None => None,
    };
    if let Some(o) = &opts.owner {
        // The state directory and every directory made inside it (or a session directory
        // elsewhere, when this import made it).
        let mut dirs: Vec<&Path> = session_tmp.ancestors().take_while(|d| d.starts_with(&state_tmp)).collect();
        dirs.push(&state_tmp);
        if undo.dirs.contains(&session_dir) {
            dirs.push(&session_dir);
        }
        for d in dirs {
            o.apply(d)?;
        }
    }
    sync_dir(&session_tmp)?;
    sync_dir(&state_tmp)?;

    // 5. The writer lock, then the database into place.
    let lock_file = lock::lock_path_for(&target);
    let lock_existed = exists(&lock_file);
    let lock = match WriterLock::acquire(&target, WriterScope::Process) {
        Ok(a) => a.lock,
        Err(LockError::Held { holder, .. }) => {
            let holder = holder.map_or_else(|| "holder unknown".to_owned(), |h| h.describe());
            return Err(MigrateError::WriterLocked { db: target.clone(), holder });
        }
        Err(source) => return Err(MigrateError::Lock { source }),
    };
    if !lock_existed {
        undo.files.push(lock_file.clone());
        let _ = std::fs::set_permissions(&lock_file, std::fs::Permissions::from_mode(opts.mode & 0o666));
    }
    if let Some(o) = &opts.owner {
        o.apply(&lock_file)?;
    }
    match atomic::rename_noreplace(&tmp, &target) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(MigrateError::TargetExists { path: target.clone() });
        }
        Err(e) => return Err(io_err("installing", &target)(e)),
    }
    tmp_guard.disarm();
    undo.files.extend(["", "-wal", "-shm", "-journal"].iter().map(|s| sidecar(&target, s)));
    sync_dir(&parent)?;

    // 6. WAL on the local disk, through the engine role; then the state directory.
    let (journal_mode, header_wal) = switch_to_wal(&target, &guard)?;
    match atomic::rename_noreplace(&state_tmp, &state_dir) {
        Ok(()) => undo.dirs.push(state_dir.clone()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists || e.raw_os_error() == Some(libc::ENOTEMPTY) => {
            return Err(MigrateError::TargetExists { path: state_dir.clone() });
        }
        Err(e) => return Err(io_err("installing", &state_dir)(e)),
    }
    sync_dir(&parent)?;
    lock.release(CloseState::observe(&target, read_change_counter(&target)));
    undo.armed = false;

    // 7. The record.
    let mut messages = Vec::new();
    let src = &vb.manifest.source;
    let reason = format!(
        "imported the bundle `{}` (manifest sha256 {}) exported from host {} (`{}`) at {}: database sha256 {sha256}, {} sessions, journal_mode={journal_mode}, mode {:04o}{}; by {}",
        vb.dir.display(),
        vb.manifest_sha256,
        src.host,
        src.db.display(),
        vb.manifest.created,
        sessions.len(),
        opts.mode,
        opts.owner.as_ref().map(|o| format!(", owner {}", o.describe())).unwrap_or_default(),
        crate::util::identity::who()
    );
    messages.extend(audit(Some(&guard), AuditEvent::MigrationImported, &target, "allow", reason));
    if vb.manifest.files.iter().any(|e| e.path.starts_with(&format!("{BACKUPS_DIR}/"))) {
        messages.push(format!(
            "the bundle's {BACKUPS_DIR}/ was verified but not installed: backups on this host start with the first session"
        ));
    }
    Ok(ImportReport {
        schema: 1,
        bundle: vb.dir.clone(),
        manifest_sha256: vb.manifest_sha256.clone(),
        source: vb.manifest.source.clone(),
        exported_at: vb.manifest.created.clone(),
        target: target.clone(),
        storage,
        database: ImportedDatabase { size, sha256, integrity, row_counts: counts, journal_mode, header_wal },
        mode: format!("{:04o}", opts.mode),
        owner: opts.owner.clone(),
        lock_file,
        state_dir,
        sessions,
        imported_audit,
        duration_ms: ms(started.elapsed()),
        messages,
    })
}

fn first_line(e: &MigrateError) -> String {
    e.to_string().lines().next().unwrap_or_default().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_paths_are_plain_and_relative() {
        for ok in ["database.sqlite", "sessions/a.json", "audit/audit.jsonl", "a/b/c", ".hidden"] {
            assert_eq!(check_entry_path(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../evil",
            "sessions/../../evil",
            "./database.sqlite",
            "a//b",
            "a/",
            "a/.",
            "..",
            "a\\b",
            "a\0b",
            MANIFEST_FILE,
        ] {
            assert!(check_entry_path(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn manifest_round_trips_and_ignores_unknown_fields() {
        let m = BundleManifest {
            schema: SCHEMA,
            kind: BundleKind::Sessions,
            created: "t".into(),
            source: BundleSource {
                host: "h".into(),
                db: "/d/e.db".into(),
                storage: None,
                session_dir: "/d/e.db.warden/sessions".into(),
                audit_log: None,
                backup_dir: None,
            },
            sqlite_version: "3".into(),
            warden_version: "0".into(),
            database: None,
            snapshot: None,
            files: vec![BundleEntry { path: "sessions/a.json".into(), size: 1, sha256: "0".repeat(64) }],
            notes: Vec::new(),
        };
        let mut v = serde_json::to_value(&m).unwrap();
        v.as_object_mut().unwrap().insert("future".into(), 1.into());
        let back: BundleManifest = serde_json::from_value(v).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.sessions().count(), 1);
        assert_eq!(back.bytes(), 1);
    }

    #[test]
    fn exit_codes_follow_the_table() {
        let p = PathBuf::from("/x");
        assert_eq!(MigrateError::Tampered { bundle: p.clone(), reason: String::new() }.exit_code(), 65);
        assert_eq!(MigrateError::BundleMissing { path: p.clone() }.exit_code(), 66);
        assert_eq!(MigrateError::TargetExists { path: p.clone() }.exit_code(), 73);
        assert_eq!(
            MigrateError::ChownNotPermitted { path: p.clone(), owner: String::new(), source: io::Error::other("x") }
                .exit_code(),
            77
        );
        assert_eq!(MigrateError::Io { action: "x", path: p, source: io::Error::other("x") }.exit_code(), 74);
    }

    #[test]
    fn owner_resolves_root_and_refuses_unknown() {
        let o = Owner::resolve("root").unwrap();
        assert_eq!((o.uid, o.gid), (0, 0));
        assert_eq!(Owner::resolve("0:0").unwrap().uid, 0);
        assert!(matches!(Owner::resolve("no-such-user-warden"), Err(MigrateError::UnknownOwner { .. })));
        assert!(matches!(Owner::resolve("root:no-such-group-warden"), Err(MigrateError::UnknownOwner { .. })));
    }
}

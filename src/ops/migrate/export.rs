//! Export of a migration bundle ([`export`]): the consistent, checked copy of the database, its
//! artifacts, audit log and (optionally) backups. Does not own: the bundle mechanics or the import.

use crate::copies::copy::TempGuard;
use crate::util::atomic;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::builder::{Builder, artifacts};
use super::common::{audit, file_name, guard_or_default, row_counts, space_preflight};
use super::error::{MigrateError, full_in, io_err};
use super::manifest::{
    AUDIT_FILE, BACKUPS_DIR, BundleEntry, BundleKind, BundleManifest, BundleSource, BundledDatabase, DATABASE_FILE,
    SCHEMA, SESSIONS_DIR,
};
use crate::copies::backup::{BackupStore, CheckMode, IntegrityReport, sidecar};
use crate::copies::copy::{self, CheckSpec, Failure, OnlineCopy};
use crate::guard::audit::AuditEvent;
use crate::guard::error::OpenError;
use crate::guard::vfs::Guard;
use crate::session::{SessionConfig, ms};
use crate::util::identity::{ProcessIdentity, now_rfc3339};

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
    let db = crate::storage::resolve(db).map_err(io_err("resolving", db))?;
    if db.is_dir() {
        return Err(MigrateError::NotADatabase { db, what: "is a directory, not a database file" });
    }
    if !db.is_file() {
        return Err(MigrateError::Missing { db });
    }
    if crate::copies::copy::is_empty_db(&db) {
        return Err(MigrateError::NotADatabase { db, what: "is an empty file: no tables, no data" });
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
    let mut paged_scratch: Option<(PathBuf, TempGuard)> = None;
    if opts.backups != BackupsInBundle::None {
        let store = BackupStore::new(&backup_dir, &db);
        for rec in store.list().map_err(|e| io_err("listing", &backup_dir)(io::Error::other(e.to_string())))? {
            if opts.backups == BackupsInBundle::All && rec.manifest.is_paged() {
                // The new host has no page store yet: the bundle carries the backup as the
                // full file it materializes to, with a manifest that says so.
                let dir = match &paged_scratch {
                    Some((d, _)) => d,
                    None => {
                        let parent = atomic::parent_of(to);
                        atomic::sweep_dead_temps_named(parent, EXPORT_SCRATCH);
                        let d = atomic::temp_path_for(&parent.join(EXPORT_SCRATCH));
                        atomic::create_dir_synced(&d, 0o700).map_err(io_err("creating", &d))?;
                        &paged_scratch.insert((d.clone(), TempGuard::new(vec![d]))).0
                    }
                };
                let (data, manifest) = as_file_backup(&store, &rec, dir)?;
                backups.push((manifest, format!("{BACKUPS_DIR}/{}.json", rec.manifest.id)));
                backups.push((data, format!("{BACKUPS_DIR}/{}.sqlite", rec.manifest.id)));
                continue;
            }
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

/// Where paged backups are materialized for a bundle (a temporary directory beside it).
const EXPORT_SCRATCH: &str = "warden-export-backups";

/// A paged backup as a file backup in `dir`: the materialized data file (checked against its
/// SHA-256) and a manifest naming it.
fn as_file_backup(
    store: &BackupStore,
    rec: &crate::copies::backup::BackupRecord,
    dir: &Path,
) -> Result<(PathBuf, PathBuf), MigrateError> {
    let id = &rec.manifest.id;
    let data = dir.join(format!("{id}.sqlite"));
    store.materialize(rec, &data).map_err(|e| match e {
        crate::copies::backup::MaterializeError::Write { path, source } => io_err("writing", &path)(source),
        damaged => io_err("materializing backup", &rec.manifest_path)(io::Error::other(damaged.to_string())),
    })?;
    let mut m = rec.manifest.clone();
    m.pages = None;
    m.file = format!("{id}.sqlite");
    let manifest = dir.join(format!("{id}.json"));
    let bytes = serde_json::to_vec_pretty(&m).map_err(|e| io_err("encoding", &manifest)(io::Error::other(e)))?;
    atomic::write_atomic(&manifest, &bytes, 0o600).map_err(io_err("writing", &manifest))?;
    Ok((data, manifest))
}

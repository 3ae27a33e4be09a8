//! Export of session artifacts for analysis elsewhere ([`export_sessions`]): the health
//! artifacts and the newest snapshot. Does not own: taking snapshots
//! ([`crate::copies::snapshot`]) or migrations.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::builder::{Builder, artifacts};
use super::common::{file_name, space_preflight};
use super::error::{MigrateError, io_err};
use super::manifest::{BundleKind, BundleManifest, BundleSource, BundledSnapshot, SCHEMA, SESSIONS_DIR, SNAPSHOTS_DIR};
use crate::copies::copy;
use crate::copies::snapshot::{self, SnapshotManifest, SnapshotOptions};
use crate::session::{SessionConfig, ms};
use crate::util::identity::{ProcessIdentity, now_rfc3339};

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
    let db = crate::storage::resolve(db).map_err(io_err("resolving", db))?;
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

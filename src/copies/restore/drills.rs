//! The restore drill: its options, outcome, record and report, restoring the newest good
//! backup into a scratch directory to check it, and the drill record on disk. Never opens
//! the live database nor takes its lock; does not own the verification itself (`verify`).

use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::{RestoreError, io_err, store_err};
use super::files::{remove_dead_temps, space_preflight};
use super::guard::{audit, audit_record};
use super::model::Started;
use super::verify::verify_into;
use crate::copies::backup::{BackupRef, BackupStore, IntegrityReport};
use crate::copies::copy::TempGuard;
use crate::format::names;
use crate::guard::audit::AuditEvent;
use crate::guard::vfs::Guard;
use crate::util::atomic::{self, TMP_MARK};
use crate::util::fmt::ms;
use crate::util::identity::{ProcessIdentity, now_rfc3339};

/// Directory (inside the state directory) of drill records.
pub const DRILLS_DIR: &str = "drills";
/// File name of the latest drill record.
pub const DRILL_LATEST: &str = "latest.json";
const DRILL_PREFIX: &str = ".warden-drill";

/// The latest drill record of `db` (`<db>.warden/drills/latest.json`).
pub fn drill_record_path(db: &Path) -> PathBuf {
    names::state_dir(db).join(DRILLS_DIR).join(DRILL_LATEST)
}

/// The latest drill record of `db`, if one was written and parses.
pub fn latest_drill(db: &Path) -> Option<DrillRecord> {
    let bytes = std::fs::read(drill_record_path(db)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// How to run a drill.
#[derive(Debug, Clone, Default)]
pub struct DrillOptions {
    /// Where the scratch directory is made (a fresh subdirectory, always removed); default:
    /// the backup directory's parent.
    pub scratch: Option<PathBuf>,
    /// Where the record goes; default `<db>.warden/drills/latest.json`.
    pub record_path: Option<PathBuf>,
    /// Time budget of the integrity check (exceeding it fails the drill); `None`: no limit.
    pub check_budget: Option<Duration>,
    /// The guard whose audit log records the drill; `None`: the default audit directory.
    pub guard: Option<Guard>,
    /// Run the full integrity check even when the copy hashes to content that passed one
    /// already (the nightly drill does).
    pub recheck: bool,
}

/// How a drill ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DrillOutcome {
    /// The newest good backup restored and passed every check (exit code 0).
    Ok,
    /// It did not (exit code 65).
    Failed,
    /// There is no good backup (exit code 66).
    NoBackup,
}

/// A drill's record, written to `<db>.warden/drills/latest.json`. Schema 1; see the module
/// docs for the field contract.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DrillRecord {
    /// Record format version.
    pub schema: u32,
    /// How it ended.
    pub outcome: DrillOutcome,
    /// True only for [`DrillOutcome::Ok`].
    pub ok: bool,
    /// When it started (RFC 3339 UTC).
    pub started_at: String,
    /// When it ended (RFC 3339 UTC).
    pub finished_at: String,
    /// The database whose backups were drilled.
    pub db: PathBuf,
    /// The backup restored.
    pub backup: Option<BackupRef>,
    /// Seconds between the backup's creation and the drill.
    pub backup_age_s: Option<u64>,
    /// Size and SHA-256 matched the manifest (`None` when not reached).
    pub hash_ok: Option<bool>,
    /// The check of the restored copy (`None` when not reached, or not needed: see
    /// `checked_before`).
    pub integrity: Option<IntegrityReport>,
    /// Not checked again: the copy hashes to content that passed a full check before (when
    /// that was); `--recheck` checks anyway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checked_before: Option<String>,
    /// Findings, one line each.
    pub messages: Vec<String>,
    /// Bytes restored.
    pub bytes: u64,
    /// Wall time of the drill.
    pub duration_ms: u64,
    /// Copy and hash.
    pub copy_ms: u64,
    /// Integrity and foreign key checks.
    pub check_ms: u64,
    /// Bytes restored per second of the whole drill, in MB (10^6 bytes).
    pub mb_per_s: f64,
    /// The scratch directory used (removed again).
    pub scratch: Option<PathBuf>,
    /// Host that ran it.
    pub host: String,
    /// warden that ran it.
    pub warden_version: String,
    /// SQLite that checked it.
    pub sqlite_version: String,
}

/// What [`drill`] returns: the record and where it was written.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DrillReport {
    /// The record.
    #[serde(flatten)]
    pub record: DrillRecord,
    /// Where the record was written (`None` when it could not be; see `record_error`).
    pub record_path: Option<PathBuf>,
    /// Why the record could not be written.
    pub record_error: Option<String>,
}

/// Removes drill scratch directories left by dead processes.
fn remove_stale_scratch(parent: &Path) {
    remove_dead_temps(parent, &format!(".{DRILL_PREFIX}{TMP_MARK}"), |p| std::fs::remove_dir_all(p));
}

/// Restores the newest good backup of `db` into a scratch directory, checks it (size and
/// SHA-256 against the manifest, `integrity_check`, `foreign_key_check`), removes the
/// scratch directory and writes the drill record. Never opens the live database and never
/// takes its writer lock. A failed drill (or no backup) is a report, not an error.
///
/// # Errors
/// [`RestoreError`] when the drill could not be run at all (the scratch directory cannot
/// be made, no space, the store cannot be read).
pub fn drill(db: &Path, store: &BackupStore, opts: &DrillOptions) -> Result<DrillReport, RestoreError> {
    let db = crate::storage::resolve(db).map_err(io_err("resolving", db))?;
    crate::copies::sweep_state(&db);
    let started = Started::now();
    let mut record = DrillRecord {
        schema: 1,
        outcome: DrillOutcome::Failed,
        ok: false,
        started_at: started.at.clone(),
        finished_at: String::new(),
        db: db.clone(),
        backup: None,
        backup_age_s: None,
        hash_ok: None,
        integrity: None,
        checked_before: None,
        messages: Vec::new(),
        bytes: 0,
        duration_ms: 0,
        copy_ms: 0,
        check_ms: 0,
        mb_per_s: 0.0,
        scratch: None,
        host: ProcessIdentity::current().host,
        warden_version: env!("CARGO_PKG_VERSION").to_owned(),
        sqlite_version: rusqlite::version().to_owned(),
    };
    match store.newest_good().map_err(store_err)? {
        None => {
            record.outcome = DrillOutcome::NoBackup;
            record.messages.push(format!("no verified backup in `{}`", store.dir().display()));
        }
        Some(rec) => {
            record.backup = Some(BackupRef::from(&rec));
            record.backup_age_s = rec
                .manifest
                .created_at()
                .map(|c| u64::try_from(jiff::Timestamp::now().duration_since(c).as_secs()).unwrap_or(0));
            let parent = opts.scratch.clone().unwrap_or_else(|| atomic::parent_of(store.dir()).to_owned());
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&parent)
                .map_err(io_err("creating", &parent))?;
            remove_stale_scratch(&parent);
            space_preflight(&parent, rec.manifest.size)?;
            let scratch = atomic::temp_path_for(&parent.join(DRILL_PREFIX));
            std::fs::DirBuilder::new().mode(0o700).create(&scratch).map_err(io_err("creating", &scratch))?;
            let _cleanup = TempGuard::new(vec![scratch.clone()]);
            record.scratch = Some(scratch.clone());
            let copy = scratch.join(format!("{}.{}", rec.manifest.id, crate::copies::backup::DATA_EXT));
            let store_lock = store.lock().map_err(store_err)?;
            let (v, copy_time, check_time) = verify_into(store, &rec, false, &copy, opts.check_budget, opts.recheck)?;
            drop(store_lock);
            record.bytes = v.found_size;
            record.copy_ms = ms(copy_time);
            record.check_ms = ms(check_time);
            record.hash_ok = Some(v.hash_ok);
            record.integrity = v.integrity;
            record.checked_before = v.checked_before;
            record.ok = v.ok;
            record.outcome = if v.ok { DrillOutcome::Ok } else { DrillOutcome::Failed };
            if let Some(f) = v.failure {
                record.messages.push(format!("backup {}: {f}", rec.manifest.id));
            }
        }
    }
    record.finished_at = now_rfc3339();
    record.duration_ms = ms(started.clock.elapsed());
    let secs = started.clock.elapsed().as_secs_f64();
    if secs > 0.0 {
        record.mb_per_s = ((record.bytes as f64 / 1e6 / secs) * 100.0).round() / 100.0;
    }
    let path = opts.record_path.clone().unwrap_or_else(|| drill_record_path(&db));
    // Nothing to drill and no state of this database yet (a mistyped path, a directory):
    // say so, and create no `<db>.warden/` for it.
    let state_dir = crate::format::names::state_dir(&db);
    if record.outcome == DrillOutcome::NoBackup && opts.record_path.is_none() && !state_dir.is_dir() {
        return Ok(DrillReport {
            record,
            record_path: None,
            record_error: Some(format!(
                "no drill record written: `{}` does not exist, and nothing is created for a database warden has never backed up",
                state_dir.display()
            )),
        });
    }
    let written = (|| {
        atomic::create_dir_synced(atomic::parent_of(&path), 0o750)?;
        let bytes = serde_json::to_vec_pretty(&record).map_err(io::Error::other)?;
        atomic::write_atomic(&path, &bytes, 0o640)
    })();
    let mut rec = audit_record(
        AuditEvent::RestoreDrill,
        &db,
        if record.ok { "allow" } else { "refuse" },
        format!(
            "restore drill {}: backup {} {}; by {}",
            serde_json::to_value(record.outcome).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default(),
            record.backup.as_ref().map_or("-", |b| b.id.as_str()),
            record.messages.first().map_or("passed every check", String::as_str),
            crate::util::identity::who()
        ),
    );
    let _ = audit(opts.guard.as_ref(), &mut rec);
    Ok(match written {
        Ok(()) => DrillReport { record, record_path: Some(path), record_error: None },
        Err(e) => DrillReport {
            record,
            record_path: None,
            record_error: Some(format!(
                "cannot write the drill record `{}`: {e}\n(hint: {})",
                path.display(),
                crate::util::fmt::io_hint(&e, "the state directory", &path)
            )),
        },
    })
}

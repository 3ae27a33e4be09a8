//! Re-verification of published backups on private scratch copies ([`verify_backups`]).
//! Does not own hashing or checking ([`BackupStore::verify_hash`], [`backup::check_file`])
//! and never touches the backups themselves.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::lookup::{LookupError, find_backup};
use crate::copies::backup::{self, BackupError, BackupRecord, BackupStore, CheckMode, IntegrityReport};
use crate::copies::kind::BackupKind;
use crate::session::gate::ScratchDir;

/// Which backups [`verify_backups`] re-verifies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackupSelection {
    /// The newest good backup: the one a restore would pick.
    NewestGood,
    /// One backup, by id or unique id prefix.
    Id(String),
    /// Every published backup, crash copies included.
    All,
}

/// How [`verify_backups`] checks.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// The check (default full).
    pub check: CheckMode,
    /// Time budget of each check (`None`: none).
    pub budget: Option<Duration>,
    /// Where the private copies go (default [`std::env::temp_dir`]); needs room for the
    /// largest backup.
    pub scratch_dir: Option<PathBuf>,
    /// A spot check instead: every `k`-th stored page of each restore point in the page
    /// store is re-hashed (each stored page once), nothing is rebuilt or checked; a file
    /// backup is only re-hashed. Never a substitute for the full verification.
    pub sample: Option<u64>,
}

/// The result for one backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerifyOutcome {
    /// Hash and check as recorded.
    Ok,
    /// The hash differs, the file cannot be read, or the check fails.
    Failed,
    /// Removed (by retention) between listing and reading: not a failure.
    Gone,
}

/// What re-verifying one backup found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupVerification {
    /// Backup id.
    pub id: String,
    /// The data file.
    pub path: PathBuf,
    /// Its kind.
    pub kind: BackupKind,
    /// When it was taken.
    pub created: String,
    /// The manifest says it is good ([`backup::Manifest::is_good`]).
    pub good: bool,
    /// The result.
    pub outcome: VerifyOutcome,
    /// Size and SHA-256 equal the manifest's.
    pub hash_ok: Option<bool>,
    /// The check of a private copy.
    pub integrity: Option<IntegrityReport>,
    /// Why it failed, or a note.
    pub reason: Option<String>,
    /// Wall time.
    pub duration_ms: u64,
}

/// What [`verify_backups`] found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    /// The backup directory.
    pub dir: PathBuf,
    /// One entry per backup, newest first.
    pub results: Vec<BackupVerification>,
    /// Every backup verified (gone ones do not count).
    pub ok: bool,
    /// How many failed.
    pub failed: usize,
}

/// Why [`verify_backups`] could not verify.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// Nothing to verify.
    #[error("no {what} backup in `{dir}`\n(hint: `warden backups` lists them; `warden backup` takes one)")]
    NoBackups {
        /// `good` or `published`.
        what: &'static str,
        /// The backup directory.
        dir: PathBuf,
    },
    /// The id names nothing or several.
    #[error(transparent)]
    Lookup(#[from] LookupError),
    /// The scratch copy could not be made or read.
    #[error(transparent)]
    Backup(#[from] BackupError),
}

/// Re-verifies published backups, never touching them: each data file is copied into a
/// private scratch directory; the copy's size and SHA-256 are compared with the manifest
/// ([`BackupStore::verify_hash`]) and the copy is checked ([`backup::check_file`], read-write
/// because a read-only connection skips CHECK constraints). Hash and check see the same
/// bytes. A backup that was not verified when taken (a crash copy) only has to match its
/// hash; its check is reported for information.
///
/// # Errors
/// [`VerifyError`] when there is nothing to verify, the id is unknown or ambiguous, or the
/// scratch copy cannot be written.
pub fn verify_backups(
    store: &BackupStore,
    which: &BackupSelection,
    opts: &VerifyOptions,
) -> Result<VerifyReport, VerifyError> {
    let dir = store.dir().to_owned();
    let selected: Vec<BackupRecord> = match which {
        BackupSelection::Id(id) => vec![find_backup(store, id)?],
        BackupSelection::NewestGood => {
            vec![store.newest_good()?.ok_or_else(|| VerifyError::NoBackups { what: "good", dir: dir.clone() })?]
        }
        BackupSelection::All => {
            let all = store.list()?;
            if all.is_empty() {
                return Err(VerifyError::NoBackups { what: "published", dir });
            }
            all
        }
    };
    let base = opts.scratch_dir.clone().unwrap_or_else(std::env::temp_dir);
    // What killed verifications left there (never a live one's).
    crate::util::atomic::sweep_dead_temps(&base);
    let scratch = ScratchDir::create(&base, "warden-verify").map_err(|source| BackupError::Io {
        action: "creating a scratch directory in",
        path: base.clone(),
        source,
    })?;
    let mut results = Vec::new();
    if let Some(k) = opts.sample {
        drop(scratch);
        results = spot_check(store, &selected, k.max(1))?;
        let failed = results.iter().filter(|r| r.outcome == VerifyOutcome::Failed).count();
        return Ok(VerifyReport { dir, results, ok: failed == 0, failed });
    }
    for rec in &selected {
        results.push(verify_one(store, rec, opts, scratch.path())?);
    }
    let failed = results.iter().filter(|r| r.outcome == VerifyOutcome::Failed).count();
    Ok(VerifyReport { dir, results, ok: failed == 0, failed })
}

enum CopyError {
    Gone,
    Read(io::Error),
    Write(io::Error),
}

/// Copies `from` to `to`; read errors (the backup's problem) are told apart from write
/// errors (the scratch directory's).
fn copy_for_check(from: &Path, to: &Path) -> Result<(), CopyError> {
    let mut src = match File::open(from) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(CopyError::Gone),
        Err(e) => return Err(CopyError::Read(e)),
    };
    let mut dst = std::fs::OpenOptions::new().write(true).create_new(true).open(to).map_err(CopyError::Write)?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Read(e)),
        };
        dst.write_all(&buf[..n]).map_err(CopyError::Write)?;
    }
    Ok(())
}

/// The first integrity message that reports an I/O error (`error code=N` with SQLite's
/// primary code SQLITE_IOERR), as opposed to damage.
fn io_error_in(report: &crate::copies::check::IntegrityReport) -> Option<String> {
    let io = |m: &str| {
        m.split("error code=")
            .nth(1)
            .and_then(|t| t.split(|c: char| !c.is_ascii_digit()).next()?.parse::<i32>().ok())
            .is_some_and(|code| code & 0xff == rusqlite::ffi::SQLITE_IOERR)
    };
    // "disk I/O error" is SQLite's own text for SQLITE_IOERR (sqlite3_errstr).
    report.messages.iter().chain(report.error.iter()).find(|m| io(m) || m.contains("disk I/O error")).cloned()
}

fn verify_one(
    store: &BackupStore,
    rec: &BackupRecord,
    opts: &VerifyOptions,
    scratch: &Path,
) -> Result<BackupVerification, BackupError> {
    let started = Instant::now();
    let m = &rec.manifest;
    let mut out = BackupVerification {
        id: m.id.clone(),
        path: rec.path.clone(),
        kind: m.kind,
        created: m.created.clone(),
        good: m.is_good(),
        outcome: VerifyOutcome::Failed,
        hash_ok: None,
        integrity: None,
        reason: None,
        duration_ms: 0,
    };
    let copy = scratch.join(format!("{}.{}", m.id, backup::DATA_EXT));
    let cleanup = |copy: &Path| {
        for suffix in ["", "-journal", "-wal", "-shm"] {
            let _ = std::fs::remove_file(backup::sidecar(copy, suffix));
        }
    };
    cleanup(&copy);
    let ms = |s: Instant| crate::util::fmt::ms(s.elapsed());
    let copied = if m.is_paged() {
        match store.materialize_scratch(rec, &copy) {
            Ok(_) => Ok(()),
            Err(backup::MaterializeError::Damaged(why)) => {
                cleanup(&copy);
                out.hash_ok = Some(false);
                out.reason = Some(format!("the stored pages are not the recorded ones: {why}"));
                out.duration_ms = ms(started);
                return Ok(out);
            }
            Err(backup::MaterializeError::Write { source, .. }) => Err(CopyError::Write(source)),
        }
    } else {
        copy_for_check(&rec.path, &copy)
    };
    match copied {
        Ok(()) => {}
        Err(CopyError::Gone) => {
            out.outcome = VerifyOutcome::Gone;
            out.reason = Some("removed (by retention?) while verifying".into());
            out.duration_ms = ms(started);
            return Ok(out);
        }
        Err(CopyError::Read(e)) => {
            cleanup(&copy);
            out.reason = Some(format!("cannot read the data file `{}`: {e}", rec.path.display()));
            out.duration_ms = ms(started);
            return Ok(out);
        }
        Err(CopyError::Write(e)) => {
            cleanup(&copy);
            return Err(if crate::copies::copy::io_is_full(&e) {
                BackupError::DiskFull { dir: scratch.to_owned() }
            } else {
                BackupError::Io { action: "copying a backup into", path: copy, source: e }
            });
        }
    }
    let on_copy = BackupRecord { manifest: m.clone(), path: copy.clone(), manifest_path: rec.manifest_path.clone() };
    let hashed = store.verify_hash(&on_copy);
    let mut checked = backup::check_file(&copy, opts.check, opts.budget, None);
    // Bytes that hash as recorded, of a backup that passed when taken, failing now: a read
    // error can look like damage to SQLite ("malformed"). Checked once more before it is
    // called failed; a disk that keeps failing fails both.
    if matches!(hashed, Ok(true)) && !checked.0.ok && m.verified && !checked.0.timed_out {
        tracing::warn!(id = %m.id, first = %checked.0.summary(), "the check failed on bytes that hash as recorded; checking once more");
        checked = backup::check_file(&copy, opts.check, opts.budget, None);
    }
    cleanup(&copy);
    let hash_ok = hashed?;
    let (integrity, _) = checked;
    // A check that stopped on an I/O error (SQLITE_IOERR reading the scratch copy) says
    // nothing about the backup: an error naming the copy, never a "damaged" verdict.
    if hash_ok
        && !integrity.ok
        && let Some(msg) = io_error_in(&integrity)
    {
        return Err(BackupError::Io {
            action: "checking the scratch copy of a backup",
            path: copy,
            source: std::io::Error::other(format!("SQLite could not read it ({msg}); the backup itself is not judged")),
        });
    }
    out.hash_ok = Some(hash_ok);
    let copy_size = m.size;
    let mut reasons = Vec::new();
    if !hash_ok {
        reasons.push(format!(
            "size or SHA-256 differs from the manifest (recorded {copy_size} bytes, sha256 {}…): the file changed after it was published (bit rot, a failing disk, or tampering)",
            m.sha256.get(..12).unwrap_or(&m.sha256)
        ));
    }
    if !integrity.ok {
        if m.verified {
            reasons.push(integrity.summary());
        } else {
            reasons.push(format!(
                "not verified when taken (a {} copy, never restored as good); its check still fails: {}",
                m.kind,
                integrity.summary()
            ));
        }
    } else if !hash_ok {
        reasons.push(format!("{} on the changed file", integrity.summary()));
    }
    let ok = hash_ok && (integrity.ok || !m.verified);
    out.outcome = if ok { VerifyOutcome::Ok } else { VerifyOutcome::Failed };
    out.reason = (!reasons.is_empty()).then(|| reasons.join("; "));
    out.integrity = Some(integrity);
    out.duration_ms = ms(started);
    Ok(out)
}

/// `--sample k`: re-hashes every k-th stored page of each selected restore point (each
/// stored page once, across all of them) and each file backup's whole file.
fn spot_check(store: &BackupStore, selected: &[BackupRecord], k: u64) -> Result<Vec<BackupVerification>, VerifyError> {
    let started = Instant::now();
    let maps: Vec<&crate::copies::store::PageMap> = selected.iter().filter_map(|r| r.manifest.pages.as_ref()).collect();
    let checked = store.pages().verify(&maps, Some(k)).map_err(|e| BackupError::Io {
        action: "spot-checking",
        path: store.dir().to_owned(),
        source: io::Error::other(e),
    })?;
    let mut paged = checked.points.into_iter();
    let mut out = Vec::new();
    for rec in selected {
        let m = &rec.manifest;
        let (ok, reason) = if m.is_paged() {
            match paged.next().flatten() {
                None => (true, format!("spot check: every {k}th stored page re-hashed as recorded")),
                Some(why) => (false, format!("the stored pages are not the recorded ones: {why}")),
            }
        } else {
            match store.verify_hash(rec) {
                Ok(true) => (true, "spot check: the file hashes as recorded".to_owned()),
                Ok(false) => (false, "size or sha256 differs from the manifest".to_owned()),
                Err(e) => (false, e.to_string()),
            }
        };
        out.push(BackupVerification {
            id: m.id.clone(),
            path: rec.path.clone(),
            kind: m.kind,
            created: m.created.clone(),
            good: m.is_good(),
            outcome: if ok { VerifyOutcome::Ok } else { VerifyOutcome::Failed },
            hash_ok: Some(ok),
            integrity: None,
            reason: Some(reason),
            duration_ms: crate::util::fmt::ms(started.elapsed()),
        });
    }
    Ok(out)
}

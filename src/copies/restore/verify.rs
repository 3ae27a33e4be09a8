//! Re-verifying a backup before anything is touched: the hashed copy to a temporary file, the
//! size and SHA-256 against the manifest, the integrity check, the re-hash. Shared by restore
//! and drill. Does not own choosing the backup (`choose`) or installing the copy (`install`).

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::error::{RestoreError, io_err, store_err};
use super::files::restore_temp_for;
use super::guard::{audit, refused_record};
use super::model::{RestoreOptions, RestoreOutcome, RestoreReport, Started, Verification, base_report};
use crate::copies::backup::{BackupRecord, BackupStore, CheckMode, Manifest, MaterializeError, check_file};
use crate::copies::copy::{self, TempGuard};
use crate::util::atomic;
use crate::util::fmt::ms;

/// Copies the backup to `tmp` and re-verifies it: size, then SHA-256 of the bytes copied,
/// then the integrity and foreign key checks on the copy, then the copy is re-hashed.
/// `tmp` is left in place (fsynced when `durable`: a restore; a drill's scratch copy is not) whatever the outcome; the caller removes it on failure.
/// Unless `recheck`, a copy whose bytes hash to content that already passed a full check
/// ([`Manifest::content_fully_checked`]) is not checked again: the same bytes give the same
/// verdict.
pub(super) fn verify_into(
    store: &BackupStore,
    rec: &BackupRecord,
    durable: bool,
    tmp: &Path,
    budget: Option<Duration>,
    recheck: bool,
) -> Result<(Verification, Duration, Duration), RestoreError> {
    let started = Instant::now();
    let m = &rec.manifest;
    let mut v = no_verification(m);
    let done = |mut v: Verification, copy: Duration, check: Duration| {
        v.duration_ms = ms(started.elapsed());
        Ok((v, copy, check))
    };
    let md_len = match std::fs::metadata(&rec.path) {
        // A backup in the page store: its size is checked as it is materialized.
        Ok(_) if m.is_paged() => m.size,
        Ok(md) => md.len(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(RestoreError::NotFound { from: m.id.clone(), dir: atomic::parent_of(&rec.path).to_owned() });
        }
        Err(e) => return Err(io_err("reading", &rec.path)(e)),
    };
    v.found_size = md_len;
    if v.found_size != m.size {
        v.failure =
            Some(format!("size mismatch: the manifest says {} bytes, the file has {} bytes", m.size, v.found_size));
        return done(v, Duration::ZERO, Duration::ZERO);
    }
    if m.sha256.len() != 64 {
        v.failure = Some("the manifest records no SHA-256, so the backup cannot be verified".into());
        return done(v, Duration::ZERO, Duration::ZERO);
    }
    let dir = atomic::parent_of(tmp).to_owned();
    let copy_started = Instant::now();
    let materialized = if durable { store.materialize(rec, tmp) } else { store.materialize_scratch(rec, tmp) };
    let (sha, n) = match materialized {
        Ok(done) => done,
        Err(MaterializeError::Damaged(why)) => {
            v.failure = Some(format!("the stored pages are not the recorded ones: {why}"));
            return done(v, copy_started.elapsed(), Duration::ZERO);
        }
        Err(MaterializeError::Write { source, .. }) if copy::io_is_full(&source) => {
            return Err(RestoreError::DiskFull { dir: dir.clone() });
        }
        Err(MaterializeError::Write { source, .. }) => return Err(io_err("copying the backup to", tmp)(source)),
    };
    let copy_time = copy_started.elapsed();
    v.found_size = n;
    v.found_sha256 = Some(sha.clone());
    if n != m.size || sha != m.sha256 {
        v.failure = Some(format!(
            "sha256 mismatch: the manifest says {}, the file hashes to {sha}; the backup changed after it was published",
            m.sha256
        ));
        return done(v, copy_time, Duration::ZERO);
    }
    v.hash_ok = true;
    if !recheck && m.content_fully_checked() {
        v.checked_before = Some(checked_before(m));
        v.ok = true;
        return done(v, copy_time, Duration::ZERO);
    }
    let check_started = Instant::now();
    let (report, _) = check_file(tmp, CheckMode::Full, budget, None);
    let check_time = check_started.elapsed();
    let ok = report.ok;
    if !ok {
        v.failure = Some(format!("the restored copy fails its check: {}", report.summary()));
    }
    v.integrity = Some(report);
    if ok {
        // The check opened the copy read-write; prove the bytes installed are still the
        // manifest's.
        let (again, _) = copy::sha256_file(tmp, None).map_err(io_err("re-hashing", tmp))?;
        if again != m.sha256 {
            v.failure = Some(format!("the copy changed while it was checked (sha256 now {again})"));
            return done(v, copy_time, check_time);
        }
        v.ok = true;
    }
    done(v, copy_time, check_time)
}

/// When the content of `m` passed its full check, for the report.
fn checked_before(m: &Manifest) -> String {
    match &m.checked {
        Some(crate::copies::backup::CheckedWhen::ByGate { backup }) => {
            format!("its content passed the full check of the gate before backup {backup}")
        }
        _ => format!("its content passed a full check when it was written ({})", m.created),
    }
}

/// A verification that has not got anywhere yet.
pub(super) fn no_verification(m: &Manifest) -> Verification {
    Verification {
        ok: false,
        expected_size: m.size,
        found_size: 0,
        expected_sha256: m.sha256.clone(),
        found_sha256: None,
        hash_ok: false,
        integrity: None,
        checked_before: None,
        failure: None,
        duration_ms: 0,
    }
}

/// Step 4 of both kinds of restore: under the store's lock, copies the backup beside
/// `target` and re-verifies the copy ([`verify_into`]). Returns the report so far with the
/// copy and the guard that removes it unless disarmed; or, when the backup failed
/// re-verification, the finished report and no copy (the copy is removed and, outside a dry
/// run, the refusal audited).
pub(super) fn verify_beside(
    started: &Started,
    db: &Path,
    target: &Path,
    rec: &BackupRecord,
    store: &BackupStore,
    opts: &RestoreOptions,
) -> Result<(RestoreReport, Option<(PathBuf, TempGuard)>), RestoreError> {
    let store_lock = store.lock().map_err(store_err)?;
    let tmp = restore_temp_for(target);
    let tmp_guard = TempGuard::with_sidecars(&tmp);
    let (verification, _, _) = verify_into(store, rec, true, &tmp, opts.check_budget, opts.recheck)?;
    drop(store_lock);
    let mut report = base_report(started, db, target, rec, verification, opts.dry_run);
    if report.verification.ok {
        return Ok((report, Some((tmp, tmp_guard))));
    }
    drop(tmp_guard);
    report.outcome = RestoreOutcome::VerificationFailed;
    if !opts.dry_run {
        let _ = audit(opts.guard.as_ref(), &mut refused_record(rec, target, &report.verification));
    }
    report.duration_ms = ms(started.clock.elapsed());
    Ok((report, None))
}

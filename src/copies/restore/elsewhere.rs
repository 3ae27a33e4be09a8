//! Restoring to a new path (`--to`): the target checks, the verified copy renamed into place
//! with `RENAME_NOREPLACE`, the audit. Never touches the live database or its lock; does not
//! own the in-place restore (`in_place`).

use std::io;
use std::path::Path;

use super::choose::choose;
use super::error::{RestoreError, io_err};
use super::files::{exists, file_name, remove_stale_temps, space_preflight, sync_dir};
use super::guard::audit_restored;
use super::model::{RestoreOptions, RestoreOutcome, RestoreReport, SIDECARS, Started};
use super::verify::verify_beside;
use crate::copies::backup::{BackupStore, pause_point, sidecar};
use crate::util::atomic;
use crate::util::fmt::ms;

pub(super) fn restore_elsewhere(
    db: &Path,
    to: &Path,
    store: &BackupStore,
    opts: &RestoreOptions,
) -> Result<RestoreReport, RestoreError> {
    let started = Started::now();
    let to = crate::storage::resolve(to).map_err(io_err("resolving", to))?;
    let target = if to.is_dir() { to.join(file_name(db)) } else { to };
    if target == db {
        return Err(RestoreError::Usage {
            message: format!(
                "--to names the database itself (`{}`)\n(hint: leave out --to to restore in place: the current database is moved aside under the writer lock)",
                db.display()
            ),
        });
    }
    for suffix in std::iter::once("").chain(SIDECARS) {
        let p = sidecar(&target, suffix);
        if exists(&p) {
            return Err(RestoreError::TargetExists { path: p });
        }
    }
    let parent = atomic::parent_of(&target).to_owned();
    if !parent.is_dir() {
        return Err(RestoreError::CannotCreate {
            path: target,
            why: format!("`{}` is not a directory\n(hint: create it first)", parent.display()),
        });
    }
    let (rec, next) = choose(db, store, opts)?;
    space_preflight(&parent, rec.manifest.size)?;
    if !opts.dry_run {
        remove_stale_temps(&target);
    }
    let (mut report, verified) = verify_beside(&started, db, &target, &rec, store, opts)?;
    report.next_candidate = next;
    let Some((tmp, tmp_guard)) = verified else { return Ok(report) };
    if opts.dry_run {
        drop(tmp_guard);
        report.messages.push("dry run: nothing was changed".into());
        report.duration_ms = ms(started.clock.elapsed());
        return Ok(report);
    }
    match atomic::rename_noreplace(&tmp, &target) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Err(RestoreError::TargetExists { path: target }),
        Err(e) => return Err(io_err("installing the restored copy as", &target)(e)),
    }
    drop(tmp_guard);
    pause_point("restore-to-installed");
    sync_dir(&parent)?;
    report.outcome = RestoreOutcome::Restored;
    let reason = format!(
        "restored backup {} (sha256 {}) of `{}` to the new file `{}` (the database was not touched); by {}",
        rec.manifest.id,
        rec.manifest.sha256,
        db.display(),
        target.display(),
        crate::util::identity::who()
    );
    audit_restored(opts.guard.as_ref(), &target, reason, &mut report);
    report.duration_ms = ms(started.clock.elapsed());
    Ok(report)
}

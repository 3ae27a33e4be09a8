//! Restoring over the database, steps 1 to 8 of the module docs: the lock, recovery first,
//! the choice, the verified copy, the intent record and its audit, the install, the finish.
//! Does not own the pieces it calls (`choose`, `verify`, `install`, `recovery`, `guard`).

use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use super::choose::choose;
use super::error::{RestoreError, io_err};
use super::files::{exists, remove_stale_temps, same_device, space_preflight, state_dir_of, sync_dir};
use super::guard::{audit, audit_record, audit_restored, describe_moves, held_error, release, take_lock};
use super::install::{move_aside_and_install, new_replaced_dir, plan_moves};
use super::model::{
    INTENT_FILE, RecoveryAction, RecoveryReport, RestoreIntent, RestoreOptions, RestoreOutcome, RestoreReport,
    SIDECARS, Started, base_report, octal,
};
use super::record::RestoreRecord;
use super::recovery::{conflict, decide, observe, read_intent, recover_locked};
use super::verify::{no_verification, verify_beside};
use crate::copies::backup::{BackupRecord, BackupRef, BackupStore, pause_point, sidecar};
use crate::guard::audit::AuditEvent;
use crate::guard::lock::{self, LockState, WriterLock};
use crate::guard::vfs::Guard;
use crate::util::atomic;
use crate::util::fmt::ms;
use crate::util::identity::ProcessIdentity;

pub(super) fn restore_in_place(
    db: &Path,
    store: &BackupStore,
    opts: &RestoreOptions,
) -> Result<RestoreReport, RestoreError> {
    let started = Started::now();
    let state = state_dir_of(db, opts);
    if std::fs::symlink_metadata(db).is_ok_and(|m| !m.file_type().is_file()) {
        return Err(RestoreError::Usage {
            message: format!(
                "`{}` is not a regular file (a symbolic link or a directory); refusing to replace it\n(hint: pass the real path of the database with --db)",
                db.display()
            ),
        });
    }
    let parent = atomic::parent_of(db).to_owned();
    if !parent.is_dir() {
        return Err(RestoreError::CannotCreate {
            path: db.to_owned(),
            why: format!("`{}` is not a directory\n(hint: create it first, or check --db)", parent.display()),
        });
    }
    if !same_device(&parent, &state) {
        return Err(RestoreError::CrossDevice { db: db.to_owned(), state_dir: state });
    }

    // No backup directory and no interrupted restore: nothing to restore from, said before
    // the writer lock file is created (a mistyped --db leaves nothing behind).
    if !store.dir().exists() && !state.join(INTENT_FILE).exists() {
        choose(db, store, opts)?;
    }

    // 1. The writer lock (a dry run only looks).
    let lock = if opts.dry_run {
        let st = lock::inspect(db).map_err(|source| RestoreError::Lock { source })?;
        if st.state == LockState::Held {
            return Err(held_error(db, st.lock_path, st.record.as_ref().map(|r| r.holder.describe()), st.record));
        }
        None
    } else {
        Some(take_lock(db)?)
    };

    // 2. An interrupted restore.
    let intent_path = state.join(INTENT_FILE);
    let mut recovery = None;
    if let Some(intent) = read_intent(&intent_path)? {
        let r = if opts.dry_run {
            let action = decide(&intent, &observe(&intent)).map_err(|detail| conflict(db, &intent_path, detail))?;
            let details = vec![format!(
                "an interrupted restore of {} (started {}) would be {} first; the plan below assumes the current files",
                intent.backup.id,
                intent.started,
                match action {
                    RecoveryAction::Completed => "marked complete",
                    RecoveryAction::RolledForward => "rolled forward",
                    RecoveryAction::RolledBack => "rolled back",
                }
            )];
            RecoveryReport { action, performed: false, intent, details }
        } else {
            recover_locked(db, &intent_path, intent, opts.guard.as_ref(), None)?
        };
        recovery = Some(r);
    }
    if !opts.dry_run {
        for p in remove_stale_temps(db) {
            tracing::warn!(temp = %p.display(), "removed the copy left by a restore killed before it moved anything");
        }
    }

    // 3. The backup.
    let (rec, next) = choose(db, store, opts)?;
    if let Some(r) = recovery.as_ref().filter(|r| r.performed && r.action != RecoveryAction::RolledBack)
        && r.intent.backup.id == rec.manifest.id
    {
        // The interrupted restore was of this very backup and is now complete.
        return Ok(finish_recovered(&started, db, &rec, r.clone(), lock, opts.guard.as_ref()));
    }

    // 4. Re-verify on the copy that will be installed.
    space_preflight(&parent, rec.manifest.size)?;
    let (mut report, verified) = verify_beside(&started, db, db, &rec, store, opts)?;
    report.recovery = recovery;
    report.next_candidate = next;
    let old_mode = std::fs::metadata(db).ok().map(|m| (m.permissions().mode() & 0o7777, m.uid(), m.gid()));
    let mode = old_mode.map_or(0o600, |(m, _, _)| m);
    report.mode = octal(mode);
    let Some((tmp, mut tmp_guard)) = verified else { return Ok(report) };
    let replaced_dir = new_replaced_dir(&state);
    if opts.dry_run {
        drop(tmp_guard);
        report.moved_aside = plan_moves(db, &replaced_dir);
        report.replaced_dir = Some(replaced_dir);
        report.messages.push("dry run: nothing was changed".into());
        report.duration_ms = ms(started.clock.elapsed());
        return Ok(report);
    }
    pause_point("restore-verified");

    // 5. The restored file's mode and owner, then the intent record, then the audit.
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).map_err(io_err("chmod", &tmp))?;
    if let Some((_, uid, gid)) = old_mode
        && nix::unistd::geteuid().is_root()
        && let Err(e) = std::os::unix::fs::chown(&tmp, Some(uid), Some(gid))
    {
        report.messages.push(format!("could not give the restored file its owner {uid}:{gid}: {e}"));
    }
    atomic::create_dir_synced(&state, 0o750).map_err(io_err("creating", &state))?;
    atomic::create_dir_synced(&replaced_dir, 0o700).map_err(io_err("creating", &replaced_dir))?;
    sync_dir(atomic::parent_of(&replaced_dir))?;
    let moves = plan_moves(db, &replaced_dir);
    let intent = RestoreIntent {
        schema: 1,
        started: started.at.clone(),
        db: db.to_owned(),
        backup: BackupRef::from(&rec),
        temp: tmp.clone(),
        replaced_dir: replaced_dir.clone(),
        moves: moves.clone(),
        mode,
        process: ProcessIdentity::current(),
    };
    let written = serde_json::to_vec_pretty(&intent)
        .map_err(io::Error::other)
        .and_then(|bytes| atomic::write_atomic(&intent_path, &bytes, 0o600));
    if let Err(e) = written {
        let _ = std::fs::remove_dir(&replaced_dir);
        return Err(io_err("writing", &intent_path)(e));
    }
    let mut started_rec = audit_record(
        AuditEvent::RestoreStarted,
        db,
        "allow",
        format!(
            "restoring backup {} ({}, created {}, sha256 {}, {} bytes); moving aside {}; by {}",
            rec.manifest.id,
            rec.manifest.kind,
            rec.manifest.created,
            rec.manifest.sha256,
            rec.manifest.size,
            describe_moves(&moves),
            crate::util::identity::who()
        ),
    );
    if let Err(source) = audit(opts.guard.as_ref(), &mut started_rec) {
        let _ = std::fs::remove_file(&intent_path);
        let _ = std::fs::remove_dir(&replaced_dir);
        return Err(RestoreError::Audit { source });
    }
    tmp_guard.disarm();
    pause_point("restore-intent-written");

    // 6 + 7. Move aside, install. A failure here (not a crash) is undone at once.
    let swept = match move_aside_and_install(db, &intent) {
        Ok(swept) => swept,
        Err(e) => {
            let undo = recover_locked(db, &intent_path, intent, opts.guard.as_ref(), Some(RecoveryAction::RolledBack));
            return Err(match undo {
                Ok(_) => e,
                Err(u) => RestoreError::InterruptedConflict {
                    db: db.to_owned(),
                    intent: intent_path,
                    detail: format!("{e}; undoing it failed too: {u}"),
                },
            });
        }
    };

    // 8. Done: the record goes, the audit says so, the lock records the new file.
    std::fs::remove_file(&intent_path).map_err(io_err("removing", &intent_path))?;
    sync_dir(&state)?;
    pause_point("restore-finished");
    report.outcome = RestoreOutcome::Restored;
    report.moved_aside = moves;
    report.moved_aside.extend(swept);
    if report.moved_aside.is_empty() {
        // There was no database: nothing was replaced.
        let _ = std::fs::remove_dir(&replaced_dir);
    } else {
        report.replaced_dir = Some(replaced_dir);
    }
    for suffix in SIDECARS {
        let p = sidecar(db, suffix);
        if exists(&p) {
            report.messages.push(format!("`{}` appeared beside the restored file: something opened it", p.display()));
        }
    }
    let reason = format!(
        "restored backup {} (sha256 {}) to `{}`; moved aside {}; by {}",
        rec.manifest.id,
        rec.manifest.sha256,
        db.display(),
        describe_moves(&report.moved_aside),
        crate::util::identity::who()
    );
    audit_restored(opts.guard.as_ref(), db, reason, &mut report);
    let record = RestoreRecord::now(db, BackupRef::from(&rec), report.replaced_dir.clone(), false);
    if let Err(e) = record.write(&state) {
        report
            .messages
            .push(format!("the restore is complete but its record for `warden status` could not be written: {e}"));
    }
    seal_restored(db, &rec, opts.guard.as_ref(), &mut report.messages);
    release(lock, db);
    report.duration_ms = ms(started.clock.elapsed());
    Ok(report)
}

/// A new seal chain: the next gate must find exactly what was installed (a restore of the
/// sealed backup makes it pass at once; any other restore is sealed here).
pub(super) fn seal_restored(db: &Path, rec: &BackupRecord, guard: Option<&Guard>, messages: &mut Vec<String>) {
    // A paged backup has no data file: digest what was installed, read through SQLite's
    // VFS (never a descriptor whose close could drop a lock of this process).
    let digests = if rec.manifest.is_paged() {
        crate::sys::sqlite::VfsFile::open(None, db).and_then(|f| crate::copies::seal::digest_reader(f.reader()))
    } else {
        crate::copies::seal::digest_file(&rec.path)
    };
    let chained = digests.map_err(|e| e.to_string()).and_then(|d| {
        let detail = format!("restore of backup {} by {}", rec.manifest.id, crate::util::identity::who());
        let reason = crate::copies::seal::SealReason::Restore;
        crate::copies::seal::start_chain(db, d, reason, Some(rec.manifest.id.clone()), detail, guard)
            .map_err(|e| e.to_string())
    });
    if let Err(e) = chained {
        messages.push(format!(
            "the restore is complete but it could not be sealed ({e}): the next gate has no seal to compare with"
        ));
        let _ = crate::copies::seal::file::clear_open(db);
    }
}

pub(super) fn finish_recovered(
    started: &Started,
    db: &Path,
    rec: &BackupRecord,
    r: RecoveryReport,
    lock: Option<WriterLock>,
    guard: Option<&Guard>,
) -> RestoreReport {
    let mut v = no_verification(&rec.manifest);
    v.ok = true;
    v.hash_ok = true;
    v.found_size = rec.manifest.size;
    v.found_sha256 = Some(rec.manifest.sha256.clone());
    let mut report = base_report(started, db, db, rec, v, false);
    report.outcome = RestoreOutcome::Restored;
    report.replaced_dir = Some(r.intent.replaced_dir.clone());
    report.moved_aside = r.intent.moves.clone();
    report.mode = octal(r.intent.mode);
    report.messages.push(format!(
        "finished the interrupted restore of {} started {} (its copy had passed the integrity check and still matches the manifest's SHA-256)",
        r.intent.backup.id, r.intent.started
    ));
    report.recovery = Some(r);
    seal_restored(db, rec, guard, &mut report.messages);
    release(lock, db);
    report.duration_ms = ms(started.clock.elapsed());
    report
}

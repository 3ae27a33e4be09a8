//! The intent record of a restore in progress and the recovery of an interrupted one: reading
//! it (`pending`), the deterministic decision (complete, roll forward, roll back) and carrying
//! it out. Does not own writing the record or the first install attempt (`in_place`).

use std::io;
use std::path::{Path, PathBuf};

use super::error::{RestoreError, io_err};
use super::files::{exists, state_dir_of, sync_dir};
use super::guard::{audit, audit_record, release, take_lock};
use super::install::sweep_sidecars;
use super::model::{INTENT_FILE, RecoveryAction, RecoveryReport, RestoreIntent, RestoreOptions};
use super::record::RestoreRecord;
use crate::copies::copy;
use crate::format::names;
use crate::guard::audit::AuditEvent;
use crate::guard::vfs::Guard;
use crate::util::atomic;

/// The intent record of `db` with the default state directory.
pub fn intent_path(db: &Path) -> PathBuf {
    names::state_dir(db).join(INTENT_FILE)
}

/// The intent record of an interrupted restore of `db`, if there is one (read only; the
/// status command and sessions use it to refuse starting on a half-restored database).
///
/// # Errors
/// [`RestoreError::UnreadableIntent`] when the record exists but cannot be parsed.
pub fn pending(db: &Path) -> Result<Option<RestoreIntent>, RestoreError> {
    read_intent(&intent_path(db))
}

pub(super) fn read_intent(path: &Path) -> Result<Option<RestoreIntent>, RestoreError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| RestoreError::UnreadableIntent { path: path.to_owned(), reason: e.to_string() }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(RestoreError::UnreadableIntent { path: path.to_owned(), reason: e.to_string() }),
    }
}

/// What recovery sees on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Observed {
    temp_exists: bool,
    temp_intact: bool,
    db_exists: bool,
    /// Per move: (something at `from`, something at `to`).
    moves: Vec<(bool, bool)>,
}

pub(super) fn observe(intent: &RestoreIntent) -> Observed {
    let temp_exists = exists(&intent.temp);
    let temp_intact = temp_exists
        && copy::sha256_file(&intent.temp, None)
            .is_ok_and(|(h, n)| h == intent.backup.sha256 && n == intent.backup.size);
    Observed {
        temp_exists,
        temp_intact,
        db_exists: exists(&intent.db),
        moves: intent.moves.iter().map(|m| (exists(&m.from), exists(&m.to))).collect(),
    }
}

/// The deterministic decision on an interrupted restore (see the module docs); `Err` names
/// the file that is in the way.
pub(super) fn decide(intent: &RestoreIntent, o: &Observed) -> Result<RecoveryAction, String> {
    let action = if o.temp_exists {
        if o.temp_intact { RecoveryAction::RolledForward } else { RecoveryAction::RolledBack }
    } else if o.db_exists && o.moves.iter().all(|&(_, to)| to) {
        RecoveryAction::Completed
    } else {
        RecoveryAction::RolledBack
    };
    for (m, &(at_from, at_to)) in intent.moves.iter().zip(&o.moves) {
        if action != RecoveryAction::Completed && at_from && at_to {
            return Err(format!("both `{}` and `{}` exist", m.from.display(), m.to.display()));
        }
    }
    if action == RecoveryAction::RolledForward && o.db_exists && !intent.moves.iter().any(|m| m.from == intent.db) {
        return Err(format!("`{}` exists, but there was no database when the restore started", intent.db.display()));
    }
    Ok(action)
}

pub(super) fn conflict(db: &Path, intent: &Path, detail: String) -> RestoreError {
    RestoreError::InterruptedConflict { db: db.to_owned(), intent: intent.to_owned(), detail }
}

/// Finishes or undoes the interrupted restore recorded at `intent_path`. The caller holds
/// the writer lock. `force` overrides the decision (an in-process failure rolls back).
pub(super) fn recover_locked(
    db: &Path,
    intent_path: &Path,
    intent: RestoreIntent,
    guard: Option<&Guard>,
    force: Option<RecoveryAction>,
) -> Result<RecoveryReport, RestoreError> {
    let seen = observe(&intent);
    let action = match force {
        Some(a) => a,
        None => decide(&intent, &seen).map_err(|d| conflict(db, intent_path, d))?,
    };
    let mut details = Vec::new();
    let fail = |e: io::Error, what: &str, p: &Path| conflict(db, intent_path, format!("{what} `{}`: {e}", p.display()));
    match action {
        RecoveryAction::Completed => {
            let matches = copy::sha256_file(db, None).is_ok_and(|(h, _)| h == intent.backup.sha256);
            details.push(format!(
                "the restored copy of {} was already in place{}",
                intent.backup.id,
                if matches { "" } else { " (it has changed since: an engine has used it)" }
            ));
        }
        RecoveryAction::RolledForward => {
            for (m, &(at_from, at_to)) in intent.moves.iter().zip(&seen.moves) {
                if at_from && !at_to {
                    atomic::rename_noreplace(&m.from, &m.to).map_err(|e| fail(e, "moving aside", &m.from))?;
                    details.push(format!("moved `{}` aside", m.from.display()));
                } else if !at_from && !at_to {
                    details.push(format!("`{}` had vanished before it could be moved aside", m.from.display()));
                }
            }
            for m in sweep_sidecars(db, &intent.replaced_dir)? {
                details.push(format!("moved `{}` aside (it appeared after the interruption)", m.from.display()));
            }
            sync_dir(&intent.replaced_dir)?;
            atomic::rename_noreplace(&intent.temp, db).map_err(|e| fail(e, "installing the verified copy as", db))?;
            sync_dir(atomic::parent_of(db))?;
            details.push(format!("installed the verified copy of {} (sha256 matches)", intent.backup.id));
        }
        RecoveryAction::RolledBack => {
            for m in intent.moves.iter().rev() {
                if exists(&m.to) && !exists(&m.from) {
                    atomic::rename_noreplace(&m.to, &m.from).map_err(|e| fail(e, "moving back", &m.to))?;
                    details.push(format!("moved `{}` back", m.from.display()));
                } else if exists(&m.to) {
                    return Err(conflict(
                        db,
                        intent_path,
                        format!("both `{}` and `{}` exist", m.from.display(), m.to.display()),
                    ));
                }
            }
            sync_dir(atomic::parent_of(db))?;
            if exists(&intent.temp) {
                let _ = std::fs::remove_file(&intent.temp);
                details.push(if seen.temp_exists && !seen.temp_intact {
                    "removed the copy, which no longer matched the manifest".into()
                } else {
                    "removed the unused copy".into()
                });
            }
            let _ = std::fs::remove_dir(&intent.replaced_dir);
        }
    }
    std::fs::remove_file(intent_path).map_err(io_err("removing", intent_path))?;
    sync_dir(atomic::parent_of(intent_path))?;
    let verb = match action {
        RecoveryAction::Completed => "completed",
        RecoveryAction::RolledForward => "rolled forward",
        RecoveryAction::RolledBack => "rolled back",
    };
    let mut rec = audit_record(
        AuditEvent::RestoreRecovered,
        db,
        "info",
        format!(
            "interrupted restore of backup {} (sha256 {}, started {} by pid {}) {verb}: {}; by {}",
            intent.backup.id,
            intent.backup.sha256,
            intent.started,
            intent.process.pid,
            details.join("; "),
            crate::util::identity::who()
        ),
    );
    let _ = audit(guard, &mut rec);
    if action != RecoveryAction::RolledBack {
        // The verified backup is in place now: `warden status` must know, as after any restore.
        let record = RestoreRecord::now(db, intent.backup.clone(), Some(intent.replaced_dir.clone()), true);
        if let Err(e) = record.write(atomic::parent_of(intent_path)) {
            details.push(format!("the restore record for `warden status` could not be written: {e}"));
        }
    }
    tracing::warn!(db = %db.display(), action = verb, "an interrupted restore was found and {verb}");
    Ok(RecoveryReport { action, performed: true, intent, details })
}

/// Finishes or undoes an interrupted restore of `db`, if one is recorded, taking the writer
/// lock for it. `Ok(None)` when there was nothing to do.
///
/// # Errors
/// [`RestoreError::WriterLocked`] when a writer holds the database,
/// [`RestoreError::InterruptedConflict`] when a file is in the way, I/O errors.
pub fn recover_interrupted(db: &Path, opts: &RestoreOptions) -> Result<Option<RecoveryReport>, RestoreError> {
    let db = crate::storage::resolve(db).map_err(io_err("resolving", db))?;
    let intent_path = state_dir_of(&db, opts).join(INTENT_FILE);
    if read_intent(&intent_path)?.is_none() {
        return Ok(None);
    }
    let lock = take_lock(&db)?;
    // Re-read under the lock: another process may have finished it meanwhile.
    let Some(intent) = read_intent(&intent_path)? else { return Ok(None) };
    let r = recover_locked(&db, &intent_path, intent, opts.guard.as_ref(), None)?;
    release(Some(lock), &db);
    Ok(Some(r))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::copies::backup::BackupRef;
    use crate::copies::kind::BackupKind;
    use crate::copies::restore::model::MovedFile;
    use crate::util::identity::ProcessIdentity;

    fn intent(moves: usize) -> RestoreIntent {
        let m = |i: usize| MovedFile {
            from: PathBuf::from(format!("/d/e.db{}", ["", "-wal", "-shm"][i])),
            to: PathBuf::from(format!("/d/e.db.warden/replaced/x/e.db{}", ["", "-wal", "-shm"][i])),
            size: 1,
        };
        RestoreIntent {
            schema: 1,
            started: "t".into(),
            db: "/d/e.db".into(),
            backup: BackupRef {
                id: "b".into(),
                path: "/b".into(),
                kind: BackupKind::Pre,
                created: "t".into(),
                sha256: "00".into(),
                size: 1,
                verified: true,
            },
            temp: "/d/.e.db.restore.warden-tmp.1.0".into(),
            replaced_dir: "/d/e.db.warden/replaced/x".into(),
            moves: (0..moves).map(m).collect(),
            mode: 0o600,
            process: ProcessIdentity::current(),
        }
    }

    fn seen(temp: (bool, bool), db: bool, moves: &[(bool, bool)]) -> Observed {
        Observed { temp_exists: temp.0, temp_intact: temp.1, db_exists: db, moves: moves.to_vec() }
    }

    #[test]
    fn recovery_decisions_cover_every_crash_point() {
        use RecoveryAction::*;
        let i = intent(3);
        // Killed after the intent, before any move: the copy is intact, roll forward.
        assert_eq!(decide(&i, &seen((true, true), true, &[(true, false); 3])), Ok(RolledForward));
        // After the database moved, before the sidecars.
        assert_eq!(
            decide(&i, &seen((true, true), false, &[(false, true), (true, false), (true, false)])),
            Ok(RolledForward)
        );
        // Everything moved, not installed.
        assert_eq!(decide(&i, &seen((true, true), false, &[(false, true); 3])), Ok(RolledForward));
        // Installed: the copy is the database now.
        assert_eq!(
            decide(&i, &seen((false, false), true, &[(true, true), (false, true), (false, true)])),
            Ok(Completed)
        );
        // The copy is damaged or gone before installation: roll back.
        assert_eq!(decide(&i, &seen((true, false), false, &[(false, true); 3])), Ok(RolledBack));
        assert_eq!(decide(&i, &seen((false, false), false, &[(false, true); 3])), Ok(RolledBack));
        // Something reappeared where a move must go: a human decides.
        assert!(decide(&i, &seen((true, true), true, &[(true, true), (false, true), (false, true)])).is_err());
        // No database when the restore began, and one appeared since.
        assert!(decide(&intent(0), &seen((true, true), true, &[])).is_err());
        assert_eq!(decide(&intent(0), &seen((false, false), true, &[])), Ok(Completed));
    }
}

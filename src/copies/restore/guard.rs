//! What restore asks of the guard layer: the audit records it writes (started, refused,
//! restored, recovered, drill), and the database's writer lock (taking it, naming its holder,
//! releasing it as a clean close). Does not own the lock or the audit log themselves.

use std::path::{Path, PathBuf};

use super::error::RestoreError;
use super::files::file_name;
use super::model::{MovedFile, RestoreReport, Verification};
use crate::copies::backup::BackupRecord;
use crate::format::header::change_counter as read_change_counter;
use crate::guard::audit::{AuditEvent, AuditRecord};
use crate::guard::lock::{self, CloseState, LockError, WriterLock, WriterScope};
use crate::guard::vfs::Guard;
use crate::util::atomic;

pub(super) use crate::guard::vfs::audit_with as audit;

pub(super) fn audit_record(event: AuditEvent, target: &Path, decision: &str, reason: String) -> AuditRecord {
    AuditRecord::decided(event, target, decision, reason)
}

pub(super) fn describe_moves(moves: &[MovedFile]) -> String {
    if moves.is_empty() {
        return "nothing (there was no database)".into();
    }
    let names: Vec<String> = moves.iter().map(|m| file_name(&m.from)).collect();
    format!("{} -> `{}`", names.join(", "), atomic::parent_of(&moves[0].to).display())
}

pub(super) fn refused_record(rec: &BackupRecord, target: &Path, v: &Verification) -> AuditRecord {
    audit_record(
        AuditEvent::RestoreRefused,
        target,
        "refuse",
        format!(
            "backup {} (sha256 {}) failed re-verification: {}; nothing was changed; by {}",
            rec.manifest.id,
            rec.manifest.sha256,
            v.failure.as_deref().unwrap_or("?"),
            crate::util::identity::who()
        ),
    )
}

/// Audits `restored` with `reason`; a lost record is noted in the report (the restore is
/// done either way).
pub(super) fn audit_restored(guard: Option<&Guard>, target: &Path, reason: String, report: &mut RestoreReport) {
    let mut done = audit_record(AuditEvent::Restored, target, "allow", reason);
    if let Err(e) = audit(guard, &mut done) {
        report.messages.push(format!("the restore is complete but its audit record was lost: {e}"));
    }
}

pub(super) fn release(lock: Option<WriterLock>, db: &Path) {
    if let Some(l) = lock {
        l.release(CloseState::observe(db, read_change_counter(db)));
    }
}

pub(super) fn held_error(
    db: &Path,
    lock_path: PathBuf,
    holder: Option<String>,
    record: Option<crate::guard::lock::LockRecord>,
) -> RestoreError {
    let mut holder = holder.unwrap_or_else(|| "holder details unavailable".into());
    if let Some(s) = record.and_then(|r| r.session) {
        holder.push_str(&format!(", session {s}"));
    }
    RestoreError::WriterLocked { db: db.to_owned(), lock_path, holder }
}

pub(super) fn take_lock(db: &Path) -> Result<WriterLock, RestoreError> {
    match WriterLock::acquire(db, WriterScope::Connection) {
        Ok(a) if a.inherited => {
            // Handed over by a `warden run` session: that session is the writer.
            let lock_path = a.lock.lock_path().to_owned();
            let holder = Some(a.holder.describe());
            drop(a.lock);
            Err(held_error(db, lock_path, holder, lock::inspect(db).ok().and_then(|s| s.record)))
        }
        Ok(a) => Ok(a.lock),
        Err(LockError::Held { lock_path, holder, .. }) => {
            let record = lock::inspect(db).ok().and_then(|s| s.record);
            Err(held_error(db, lock_path, holder.map(|h| h.describe()), record))
        }
        Err(source) => Err(RestoreError::Lock { source }),
    }
}

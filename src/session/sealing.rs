//! When a session seals and when its gate compares: the session side of
//! [`crate::copies::seal`].
//!
//! Owns the three moments: before the gate (the seal state of the database, compared by
//! the gate on the pre-session copy it makes anyway), after the gate passed (the seal is
//! marked open: this session may change the database), and at a clean close (a final
//! checkpoint so the main file holds everything, then the seal of the verified post-session
//! backup, which closes the marker). Also `warden accept`: the full gate without the
//! comparison, and a new seal of what it found. Does not own the seal's format or the
//! comparison itself.

use std::path::{Path, PathBuf};

use crate::copies::backup::{BackupOptions, BackupOutcome, BackupStore, CheckMode};
use crate::copies::seal::{self, SealCheck, SealReason, SealState};
use crate::guard::audit::{AuditEvent, AuditRecord};
use crate::guard::vfs::Guard;

use super::health::SealSummary;

/// What the seal cannot see, said in every artifact that has one.
pub const SEAL_NOTE: &str = "the seal records the content at this clean close; writes another process made during the session cannot be told apart from the engine's by content (the session's descriptor watch is the evidence for those)";

/// The seal state of `db` before its gate.
pub(crate) fn state_before_gate(db: &Path) -> SealState {
    seal::state(&resolved(db))
}

fn resolved(db: &Path) -> PathBuf {
    crate::storage::resolve(db).unwrap_or_else(|_| db.to_owned())
}

/// After the gate passed: from here the session may change the database.
pub(crate) fn mark_open(db: &Path, session_id: &str) {
    if let Err(e) = seal::file::mark_open(&resolved(db), session_id) {
        // Without the marker a crash of this session makes the next gate fail closed (the
        // database differs from the old seal): loud, never unsafe.
        tracing::warn!(db = %db.display(), error = %e, "cannot mark the seal open");
    }
}

/// Lets SQLite checkpoint a WAL left by the engine, so the main file holds every committed
/// page before the close is sealed: opens and closes one engine connection through the
/// session's guard (it joins the session's writer lock; the last close checkpoints and
/// removes the `-wal`).
pub(crate) fn final_checkpoint(session: &super::Session) {
    let wal = crate::format::names::wal(session.db());
    if std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0) == 0 {
        return;
    }
    match session.open_engine(&crate::guard::connect::EngineOptions::default()) {
        Ok(conn) => {
            let r: rusqlite::Result<(i64, i64, i64)> =
                conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)));
            if let Err(e) = r {
                tracing::warn!(db = %session.db().display(), error = %e, "the final checkpoint failed");
            }
        }
        Err(e) => {
            tracing::warn!(db = %session.db().display(), error = %e, "no final checkpoint: cannot open the database")
        }
    }
}

/// Seals the clean close whose verified post-session backup is `out`.
pub(crate) fn seal_close(db: &Path, session_id: &str, out: &BackupOutcome) -> SealSummary {
    let mut summary = SealSummary { note: SEAL_NOTE.into(), ..SealSummary::default() };
    let (Some(digests), Some(published)) = (out.digests.as_ref(), out.published.as_ref()) else {
        summary.error = Some("no verified post-session backup: nothing to seal".into());
        return summary;
    };
    let db = resolved(db);
    let image = seal::make_seal(
        &db,
        (**digests).clone(),
        SealReason::Session,
        Some(session_id.to_owned()),
        Some(published.manifest.id.clone()),
        format!("clean close of session {session_id} by {}", crate::util::identity::who()),
    );
    summary.content = Some(image.seal.content.clone());
    summary.page_count = image.seal.page_count;
    match seal::file::store(&db, &image) {
        Ok(()) => summary.sealed = true,
        Err(e) => summary.error = Some(e.to_string()),
    }
    summary
}

/// Audits a gate that refused a database for its seal.
pub(crate) fn audit_mismatch(guard: &Guard, db: &Path, report: &super::gate::GateReport) {
    let why = report.seal.as_ref().map(|c| c.message.clone()).unwrap_or_default();
    let _ = guard.audit(&mut AuditRecord::decided(AuditEvent::SealMismatch, &resolved(db), "refuse", why));
}

/// What `warden accept` did.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct AcceptReport {
    /// The database.
    pub db: PathBuf,
    /// The comparison with the seal it replaced (what was accepted).
    pub replaced: SealCheck,
    /// The full gate on the database as it is.
    pub gate: super::gate::GateReport,
    /// The backup of the accepted state.
    pub backup_id: Option<String>,
    /// The new seal's content digest, when the gate passed and it was written.
    pub sealed: Option<String>,
    /// Why no seal was written.
    pub error: Option<String>,
}

/// Why `warden accept` could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AcceptError {
    /// Another writer holds the database.
    #[error("{0}")]
    Locked(#[from] crate::guard::lock::LockError),
    /// The gate could not run.
    #[error("{0}")]
    Backup(#[from] crate::copies::backup::BackupError),
    /// The database path cannot be used.
    #[error(transparent)]
    Target(#[from] crate::storage::TargetError),
}

impl AcceptError {
    /// The exit code (the table in [`crate::util::exit`]).
    pub fn exit_code(&self) -> u8 {
        match self {
            AcceptError::Locked(e) => e.exit_code(),
            AcceptError::Backup(e) => e.exit_code(),
            AcceptError::Target(e) => e.exit_code(),
        }
    }
}

/// `warden accept`: runs the full gate on the database as it is (under the writer lock,
/// without comparing it with the seal) and, when it passes, publishes its verified copy and
/// seals exactly that content, audited. The operator's explicit "this is right".
///
/// # Errors
/// [`AcceptError`] when the gate could not run; a failed gate is in the report.
pub fn accept(
    db: &Path,
    store: &BackupStore,
    check: CheckMode,
    budget: Option<std::time::Duration>,
    guard: Option<Guard>,
) -> Result<AcceptReport, AcceptError> {
    use crate::guard::lock::{WriterLock, WriterScope};
    let db = resolved(db);
    crate::storage::check_database(&db, crate::storage::Need::Write { create: false })?;
    if crate::copies::copy::is_empty_db(&db) {
        return Err(crate::copies::backup::BackupError::Empty { db: db.clone() }.into());
    }
    crate::storage::target::require_sqlite(&db)?;
    let acquired = WriterLock::acquire(&db, WriterScope::Connection)?;
    crate::copies::sweep_state(&db);
    let replaced = seal::check(&db, &seal::state(&db), None);
    let opts = BackupOptions {
        kind: Some(crate::copies::kind::BackupKind::Manual),
        check,
        check_budget: budget,
        writer_lock_held: true,
        guard: guard.clone(),
        ..BackupOptions::default()
    };
    store.ensure_dir()?;
    let (gate, published) = super::gate::run(&db, store, &super::gate::GateOptions::default(), &opts)?;
    let mut report = AcceptReport {
        db: db.clone(),
        replaced,
        backup_id: published.as_ref().map(|p| p.manifest.id.clone()),
        gate: gate.clone(),
        sealed: None,
        error: None,
    };
    match (&gate.digests, gate.passed, &published) {
        (Some(d), true, Some(p)) => {
            let detail = format!("accepted as it is by {} (backup {})", crate::util::identity::who(), p.manifest.id);
            match seal::start_chain(
                &db,
                (**d).clone(),
                SealReason::Accept,
                Some(p.manifest.id.clone()),
                detail,
                guard.as_ref(),
            ) {
                Ok(image) => report.sealed = Some(image.seal.content),
                Err(e) => report.error = Some(e.to_string()),
            }
        }
        (_, false, _) => report.error = Some(format!("the gate failed, nothing was sealed: {}", gate.summary())),
        _ => report.error = Some("the gate passed without a published copy: nothing was sealed".into()),
    }
    drop(acquired);
    Ok(report)
}

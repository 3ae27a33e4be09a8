//! Applying retention to a backup store.
//!
//! Owns: turning the store's manifests into retention candidates, asking
//! [`crate::copies::retention::plan`] what to keep, and removing the rest crash-safely (manifest
//! first, so a removed backup is never listed, then the data file; a kill in between leaves
//! an unlisted file the next run removes). Does not own: the keep rules themselves.

use std::collections::BTreeSet;

use crate::copies::backup::{BackupError, BackupStore};
use crate::copies::retention::{self, Candidate, Plan, RetentionPolicy};

/// Why a prune did not run.
#[derive(Debug, thiserror::Error)]
pub enum PruneError {
    /// The policy would keep nothing.
    #[error(transparent)]
    Policy(#[from] retention::RetentionError),
    /// The store could not be read or a backup not removed.
    #[error(transparent)]
    Store(#[from] BackupError),
    /// There is no backup directory at all: nothing to prune, and none is created (a
    /// mistyped `--db` must not leave `<typo>.warden/backups/` behind).
    #[error(
        "no backups of `{}`: `{}` does not exist; nothing was pruned or created\n(hint: check --db or `database` in warden.toml; `warden backups` lists the backups)",
        crate::util::fmt::path_text(db),
        crate::util::fmt::path_text(dir)
    )]
    NoStore {
        /// The database.
        db: std::path::PathBuf,
        /// The backup directory that does not exist.
        dir: std::path::PathBuf,
    },
    /// A session artifact cannot be read: which backups its session depends on is unknown,
    /// so nothing is removed (a dry run still shows the plan).
    #[error(
        "not pruning the backups of `{}`: the session artifact `{}` cannot be read ({why}), so the backups its session depends on are unknown; nothing was removed\n(hint: a damaged artifact is evidence: move it aside (`mv {} {}.damaged`) once you have looked at it, then prune again)",
        crate::util::fmt::path_text(db),
        crate::util::fmt::path_text(artifact),
        crate::util::fmt::path_text(artifact),
        crate::util::fmt::path_text(artifact)
    )]
    UnreadableArtifact {
        /// The database.
        db: std::path::PathBuf,
        /// The artifact.
        artifact: std::path::PathBuf,
        /// Why it cannot be read.
        why: String,
    },
}

impl PruneError {
    /// The process exit code: `CONFIG` for an empty policy, `NOINPUT` for no backup
    /// directory, `DATAERR` for an unreadable session artifact, the store's own otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            PruneError::Policy(_) => crate::util::exit::CONFIG,
            PruneError::NoStore { .. } => crate::util::exit::NOINPUT,
            PruneError::UnreadableArtifact { .. } => crate::util::exit::DATAERR,
            PruneError::Store(e) => e.exit_code(),
        }
    }
}

/// Plans retention over `store` and, unless `dry_run`, removes what the plan drops. The
/// dry run and the real run compute the same plan.
///
/// # Errors
/// [`PruneError::Policy`] for an empty policy; [`PruneError::Store`] when the store cannot
/// be read or a file cannot be removed (backups removed before the error stay removed; the
/// rest are untouched).
pub fn prune(
    store: &BackupStore,
    policy: &RetentionPolicy,
    protected: &BTreeSet<String>,
    dry_run: bool,
) -> Result<Plan, PruneError> {
    policy.validate()?;
    // Prune creates nothing: no store, no lock file, where there are no backups at all (a
    // dry run plans nothing; a real run says so).
    if !store.dir().exists() {
        if dry_run {
            return Ok(retention::plan(policy, &[], protected, jiff::Timestamp::now()));
        }
        return Err(PruneError::NoStore { db: store.database().to_owned(), dir: store.dir().to_owned() });
    }
    let lock = store.lock()?;
    if !dry_run {
        store.recover(&lock)?;
    }
    let records = store.list()?;
    let candidates: Vec<Candidate> = records
        .iter()
        .map(|r| Candidate {
            id: r.manifest.id.clone(),
            // An unparsable time sorts as the oldest possible: never "newest good".
            created: r.manifest.created_at().unwrap_or(jiff::Timestamp::MIN),
            size: r.manifest.size,
            kind: r.manifest.kind,
            verified: r.manifest.verified,
        })
        .collect();
    let mut plan = retention::plan(policy, &candidates, protected, jiff::Timestamp::now());
    if !dry_run {
        for d in plan.dropped() {
            if let Some(rec) = records.iter().find(|r| r.manifest.id == d.id) {
                store.remove(&lock, rec)?;
                tracing::info!(backup = %d.id, detail = %d.detail, "retention removed a backup");
                crate::copies::backup::pause_point("prune-removed-one");
            }
        }
        store.repack_small(&lock)?;
    }
    let dropping: Vec<&str> = plan.dropped().map(|d| d.id.as_str()).collect();
    let collected = store.collect_packs(&lock, &dropping, dry_run)?;
    if !collected.packs.is_empty() && !dry_run {
        tracing::info!(packs = collected.packs.len(), bytes = collected.bytes, "removed packs no kept backup uses");
    }
    plan.packs = Some(collected);
    Ok(plan)
}

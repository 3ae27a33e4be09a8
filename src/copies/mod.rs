//! Consistent copies of a database and the stores that keep them.
//!
//! Owns copying, checking and hashing, the backup store, retention and prune, analysis
//! snapshots, restore and drill, salvage, and the seal of a clean close. Does not own the session lifecycle
//! (`session`), which calls into this layer at its boundaries.

pub mod backup;
pub mod check;
pub(crate) mod copy;
pub mod identity;
pub mod kind;
pub mod offsite;
pub mod prune;
pub mod restore;
pub mod retention;
pub mod salvage;
pub mod seal;
pub mod snapshot;
pub mod store;

/// Sweeps what killed processes left in the state directory of `db` and the folders warden
/// writes inside it (`sessions/`, `drills/`, `restores/`; backups and snapshots have their
/// own cleanup, which also quarantines): temporaries whose owner is gone
/// ([`crate::util::atomic::sweep_dead_temps`]). Every command that writes state calls it
/// first, so an interrupted run never leaves debris behind the next one.
pub fn sweep_state(db: &std::path::Path) -> Vec<std::path::PathBuf> {
    let state = crate::format::names::state_dir(db);
    let mut gone = crate::util::atomic::sweep_dead_temps(&state);
    for sub in ["sessions", "drills", "restores"] {
        gone.extend(crate::util::atomic::sweep_dead_temps(&state.join(sub)));
    }
    for p in &gone {
        tracing::info!(path = %p.display(), "removed what an interrupted run left");
    }
    gone
}

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
pub mod prune;
pub mod restore;
pub mod retention;
pub mod salvage;
pub mod seal;
pub mod snapshot;

//! Progress of long operations (copy, check, hash), for a terminal or a script.
//!
//! Owns: the [`Progress`] trait the backup and gate code report into, and the phases they
//! report. Does not own: rendering, which is the CLI's (a line on a terminal, nothing in a
//! script).

use serde::{Deserialize, Serialize};

/// A phase of a long operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Copying the database.
    Copy,
    /// Checking the copy.
    Check,
    /// Hashing and syncing the copy.
    Hash,
    /// Scanning the original's header and WAL.
    Scan,
}

impl Phase {
    /// A short label.
    pub fn label(self) -> &'static str {
        match self {
            Phase::Copy => "copy",
            Phase::Check => "check",
            Phase::Hash => "hash",
            Phase::Scan => "scan",
        }
    }
}

/// Receives progress. `done` and `total` are pages for [`Phase::Copy`] and bytes otherwise;
/// [`Phase::Check`] is an estimate (bytes the checking thread has read so far). Called from
/// the working threads; must be cheap.
pub trait Progress: Send + Sync {
    /// Reports that `done` of `total` units of `phase` are finished.
    fn update(&self, phase: Phase, done: u64, total: u64);
}

//! Pure SQLite file-format knowledge: no I/O policy, no locks.
//!
//! Owns the raw WAL / rollback-journal scan ([`scan`]) and the b-tree page reader
//! ([`pages`]). Does not own where bytes come from: callers hand it paths of private
//! copies or byte slices, never a live database another connection holds locks on.

pub mod pages;
pub mod scan;

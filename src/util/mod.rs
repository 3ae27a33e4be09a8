//! Small helpers every layer may use: atomic file writes, the exit-code table, process
//! identity, progress.
//!
//! Owns nothing about SQLite or warden's policy; depends on nothing else in the crate.

pub mod atomic;
pub mod exit;
pub mod fmt;
pub mod identity;
pub mod progress;

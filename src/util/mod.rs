//! Small helpers every layer may use: atomic file writes, the exit-code table, process
//! identity, progress, the test seams (compiled only with the `testing` feature).
//!
//! Owns nothing about SQLite or warden's policy; depends on nothing else in the crate.

pub mod atomic;
pub mod exit;
pub mod fault;
pub mod fmt;
pub mod identity;
pub mod progress;
pub mod testing;

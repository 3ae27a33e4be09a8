//! # sqlite-warden
//!
//! A guard for single-node engines that write a SQLite database during live sessions. It
//! makes the operators' rules impossible to break by accident:
//!
//! - **never on network storage**: a shim VFS over SQLite's `unix` VFS judges the storage of
//!   every database it opens (statfs magic, `/proc/self/mountinfo`, mount options such as
//!   `nobrl`/`nolock`) and refuses the engine on network, lock-less or unknown filesystems,
//!   and WAL anywhere but local storage, with a message that names the path and the mount;
//! - **one writer**: the engine connection takes a kernel-enforced lock beside the database;
//!   a second writer is refused at once, with who holds it; readers are never blocked;
//! - **everything else reads**: tooling connections are read-only and cannot attach, vacuum
//!   into, or otherwise reach the guarded file for writing;
//! - **a record of every open**: one JSON line per open, refusal, downgrade, close and lock
//!   event, including databases changed behind the engine's back.
//!
//! ```no_run
//! use sqlite_warden::connect::{EngineOptions, ToolOptions, open_engine, open_tool};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // The engine: fails with a typed error (network filesystem, writer already running, ...).
//! let engine = open_engine("/var/lib/engine/engine.db", &EngineOptions { create: true, ..Default::default() })?;
//! engine.execute_batch("CREATE TABLE IF NOT EXISTS trades(id INTEGER PRIMARY KEY, qty INTEGER)")?;
//!
//! // Tooling: read-only, never blocks the engine.
//! let tool = open_tool("/var/lib/engine/engine.db", &ToolOptions::default())?;
//! let n: i64 = tool.query_row("SELECT count(*) FROM trades", [], |r| r.get(0))?;
//! # let _ = n; Ok(()) }
//! ```
//!
//! Module map: [`fs`] judges storage, [`policy`] decides, [`vfs`] enforces inside SQLite,
//! [`lock`] is the single-writer lock, [`audit`] the log, [`connect`] the factory.

#![deny(unsafe_code)]

pub mod atomic;
pub mod audit;
pub mod config;
pub mod connect;
pub mod deploy;
pub mod doctor;
pub mod error;
pub mod extension;
pub mod fs;
pub mod identity;
pub mod lock;
pub mod migrate;
pub mod policy;
pub mod session;
pub mod status;
pub mod vfs;

pub use connect::{EngineOptions, ToolOptions, open_engine, open_tool};
pub use error::{AuditError, LockError, OpenError, ProbeError, RegisterError};
pub use fs::{FsKind, FsVerdict};
pub use policy::{NetworkPolicy, Policy, Role};
pub use vfs::{Guard, GuardConfig};

/// The README's Rust examples, compiled as doctests so they cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

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
//! use sqlite_warden::guard::connect::{EngineOptions, ToolOptions, open_engine, open_tool};
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
//! # Layers
//!
//! Dependencies point one way, from the top of this list to the bottom; no module imports
//! one above it:
//!
//! | layer | owns |
//! |---|---|
//! | `ops` | operator features the CLI renders (config, status, doctor, migrate, deploy) |
//! | [`session`] | the lifecycle of an engine run: begin/finish, gate, health artifact, run |
//! | [`copies`] | consistent copies and their stores: backups, retention, snapshots, restore, salvage |
//! | [`guard`] | what an engine links: policy, writer lock, audit log, VFS safe half, factory |
//! | [`storage`] | "is this path safe for a writer?": statfs, mountinfo, probe, verdicts |
//! | [`mod@format`] | SQLite file-format knowledge: header, side-file names, WAL scan, pages |
//! | `sys` | every `unsafe` block: the VFS tables and callbacks, fd handoff, raw reads |
//! | `util` | atomic writes, process identity, progress |

#![deny(unsafe_code)]

// The storage probe reads /proc/self/mountinfo and the writer lock is an OFD lock: both are
// Linux interfaces. Say so at build time rather than build a guard that cannot judge.
#[cfg(not(target_os = "linux"))]
compile_error!("sqlite-warden supports Linux only (it judges storage through /proc/self/mountinfo)");

pub mod copies;
pub mod format;
pub mod guard;
#[doc(hidden)]
pub mod ops;
pub mod session;
pub mod storage;
pub(crate) mod sys;
#[doc(hidden)]
pub mod util;

pub use guard::connect::{EngineOptions, ToolOptions, open_engine, open_tool};
pub use guard::error::{AuditError, LockError, OpenError, ProbeError, RegisterError};
pub use guard::policy::{NetworkPolicy, Policy, Role};
pub use guard::vfs::{Guard, GuardConfig};
pub use storage::{FsKind, FsVerdict};

/// The README's Rust examples, compiled as doctests so they cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

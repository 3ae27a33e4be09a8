//! What an engine links: the policy, the writer lock, the audit log, the VFS's safe half
//! and the connection factory.
//!
//! Owns every decision about a single open of a database. Does not own copies of the
//! database (`copies`) or the session lifecycle (`session`).

mod attach;
pub mod audit;
pub mod connect;
pub mod error;
pub mod extension;
mod inode_lock;
pub mod lock;
mod open;
pub mod policy;
pub mod sqlite_host;
pub mod vfs;

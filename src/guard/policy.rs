//! What each role may do on each kind of storage: the pure decision, no I/O.
//!
//! Owns: [`Role`], [`Policy`] and [`decide`], the table below, and the [`Refusal`] type every
//! refusal travels in. Does not own: gathering the facts ([`crate::storage`]), taking the lock
//! ([`crate::guard::lock`]) or carrying the decision out ([`crate::guard::vfs`]).
//!
//! | verdict    | engine, `Refuse` (default) | engine, `RollbackOnly`  | tool            |
//! |------------|----------------------------|-------------------------|-----------------|
//! | local      | open; WAL allowed          | open; WAL allowed       | read-only       |
//! | network    | refused                    | open; WAL refused       | read-only, no WAL |
//! | suspect    | refused                    | open; WAL refused       | read-only, no WAL |
//! | no-locking | refused                    | refused                 | read-only, no WAL |
//!
//! On a no-locking mount no journal mode is safe (locks succeed without excluding anyone),
//! so no policy lets the engine write there. `nolock=1` and `immutable=1` URI parameters are
//! refused for every role: both switch off the locking that makes concurrent readers safe.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::guard::lock::{Holder, WriterScope};
use crate::storage::{FsKind, FsVerdict};

/// Which side of the single-writer rule a connection is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The engine: the one writer. Takes the writer lock on open.
    Engine,
    /// Tooling (analysis, status, backups): read-only, never blocks the engine.
    Tool,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Engine => "engine",
            Role::Tool => "tool",
        })
    }
}

/// What the engine may do on storage that is not local.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetworkPolicy {
    /// Refuse to open (default): the operators' rule is never to run a session on storage
    /// that can silently lose writes.
    #[default]
    Refuse,
    /// Allow a rollback-journal database (DELETE/TRUNCATE/PERSIST) but refuse WAL in every
    /// form. Only as safe as the server's lock manager: use it to migrate off such a mount,
    /// not to run on one.
    RollbackOnly,
}

/// What to do when the audit record of an open cannot be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditFailure {
    /// Refuse the open: nothing writes unaudited.
    FailClosed,
    /// Open anyway and warn through `tracing` and `sqlite3_log`.
    FailOpen,
}

/// The rules a guard enforces. The defaults are the operators' rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// Engine on non-local storage: refused by default.
    pub network: NetworkPolicy,
    /// Engine connections per process that may share the writer lock.
    pub writer_scope: WriterScope,
    /// Engine opens when the audit cannot be written: fail closed by default.
    pub engine_audit_failure: AuditFailure,
    /// Tool opens when the audit cannot be written: fail open by default (reading a copy
    /// must not stop because a log disk is full).
    pub tool_audit_failure: AuditFailure,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            network: NetworkPolicy::Refuse,
            writer_scope: WriterScope::Process,
            engine_audit_failure: AuditFailure::FailClosed,
            tool_audit_failure: AuditFailure::FailOpen,
        }
    }
}

/// URI parameters of an open that matter to the guard.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UriFlags {
    /// `nolock=1`: SQLite skips all file locking.
    pub nolock: bool,
    /// `immutable=1`: SQLite assumes nobody changes the file, and ignores locks and `-wal`.
    pub immutable: bool,
}

/// What an open may do once allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access {
    /// WAL (and shared-memory `mmap`) may be used: only on local storage.
    pub wal_allowed: bool,
}

/// Why an open or a pragma was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RefusalKind {
    /// Engine on network storage under [`NetworkPolicy::Refuse`].
    NetworkFilesystem,
    /// Engine on a mount whose locks are disabled.
    NoLocking,
    /// Engine on storage warden cannot vouch for.
    SuspectFilesystem,
    /// WAL requested or present on non-local storage.
    WalRefused,
    /// Another writer holds the lock.
    WriterLocked {
        /// The lock file.
        lock_path: PathBuf,
        /// The holder's record.
        holder: Option<Box<Holder>>,
    },
    /// `nolock=1` or `immutable=1`.
    UnsafeUriParameter {
        /// The parameter.
        param: String,
    },
    /// The engine asked to write and got a read-only file.
    NotWritable,
    /// The audit record could not be written (fail-closed policy).
    AuditUnavailable,
    /// The lock file could not be used.
    LockUnavailable,
    /// The database file is locked by a writer that reached it under another name (a hard
    /// link, a bind mount).
    WriterElsewhere,
    /// A process forked from the writer tried to write.
    Forked {
        /// The writer it was forked from.
        holder_pid: u32,
    },
    /// The lock file was removed or replaced while the lock was held.
    LockReplaced {
        /// The lock file.
        lock_path: PathBuf,
    },
    /// The file's name is not valid UTF-8: warden names every database it guards in its
    /// audit log, lock record and artifacts as text, so it guards only names it can write.
    PathNotUtf8,
}

/// A refusal: its kind, the database, the verdict it was based on, and the message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// Why.
    #[serde(flatten)]
    pub kind: RefusalKind,
    /// The database path.
    pub path: PathBuf,
    /// The verdict of the storage, when one was made.
    pub verdict: Option<Box<FsVerdict>>,
    /// The full message.
    pub message: String,
}

impl Refusal {
    /// The refusal for WAL on `verdict`, with the message SQLite will show.
    pub fn wal(path: PathBuf, verdict: &FsVerdict, what: &str) -> Self {
        if let Some(v) = crate::guard::sqlite_host::wal_reset_bug()
            && verdict.kind.is_local()
        {
            let message = format!(
                "warden: {what} refused: `{}`: this SQLite ({}) carries the WAL-reset corruption bug (fixed in 3.51.3, backported to 3.50.7 and 3.44.6), so warden runs it with a rollback journal only\n(hint: use a host with a fixed SQLite for WAL; a database already in WAL mode can be switched once with `PRAGMA journal_mode=DELETE` from a fixed SQLite, e.g. `python3 -m pip install apsw`)",
                path.display(),
                crate::guard::sqlite_host::version_text(v)
            );
            return Refusal { kind: RefusalKind::WalRefused, path, verdict: Some(Box::new(verdict.clone())), message };
        }
        let message = format!(
            "warden: {what} refused: `{}` is on {}, {} storage where WAL cannot work ({})",
            path.display(),
            verdict.describe(),
            verdict.kind,
            verdict.reason
        );
        Refusal { kind: RefusalKind::WalRefused, path, verdict: Some(Box::new(verdict.clone())), message }
    }
}

/// Decides whether `role` may open a database on `verdict` with `uri`.
///
/// # Errors
/// The [`Refusal`], whose kind names the rule that refused.
pub fn decide(
    role: Role,
    path: &std::path::Path,
    verdict: &FsVerdict,
    uri: UriFlags,
    policy: &Policy,
) -> Result<Access, Refusal> {
    let refuse = |kind: RefusalKind, message: String| Refusal {
        kind,
        path: path.to_owned(),
        verdict: Some(Box::new(verdict.clone())),
        message,
    };
    for (on, param) in [(uri.nolock, "nolock=1"), (uri.immutable, "immutable=1")] {
        if on {
            return Err(refuse(
                RefusalKind::UnsafeUriParameter { param: param.to_owned() },
                format!(
                    "warden: `{param}` refused on `{}`: it switches off locking or change detection",
                    path.display()
                ),
            ));
        }
    }
    let fixed = crate::guard::sqlite_host::wal_reset_bug().is_none();
    let wal_allowed = verdict.kind.is_local() && fixed;
    if role == Role::Tool {
        return Ok(Access { wal_allowed });
    }
    let head = format!("warden: engine open of `{}` refused", path.display());
    match (verdict.kind, policy.network) {
        (FsKind::Local, _) => Ok(Access { wal_allowed: fixed }),
        (FsKind::NoLocking, _) => Err(refuse(
            RefusalKind::NoLocking,
            format!("{head}: locking is disabled on {} ({})", verdict.describe(), verdict.reason),
        )),
        (FsKind::Network | FsKind::Suspect, NetworkPolicy::RollbackOnly) => Ok(Access { wal_allowed: false }),
        (FsKind::Network, NetworkPolicy::Refuse) => Err(refuse(
            RefusalKind::NetworkFilesystem,
            format!("{head}: it is on {}, a network filesystem ({})", verdict.describe(), verdict.reason),
        )),
        (FsKind::Suspect, NetworkPolicy::Refuse) => Err(refuse(
            RefusalKind::SuspectFilesystem,
            format!("{head}: warden cannot vouch for {} ({})", verdict.describe(), verdict.reason),
        )),
    }
}

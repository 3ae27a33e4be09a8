//! The audit log: one JSON line for every open, refusal, downgrade, close and lock event.
//!
//! Owns: the record format ([`AuditRecord`], `schema: 1`), where the log lives, appending a
//! record safely from many processes at once, and mirroring each record to `tracing`. Does
//! not own: deciding what happened (the VFS reports it) or rotation (the file is reopened
//! for every record, so a `logrotate` rename never loses a line).
//!
//! # Location
//! `$WARDEN_AUDIT_DIR/audit.jsonl` when set; else `$XDG_STATE_HOME/sqlite-warden/audit.jsonl`;
//! else `$HOME/.local/state/sqlite-warden/audit.jsonl`; else
//! `/var/lib/sqlite-warden/audit.jsonl`. The directory must be on local storage: `O_APPEND`
//! is not atomic across NFS clients.
//!
//! # Concurrency
//! Every record is one `write(2)` of one line on an `O_APPEND` descriptor. On a local
//! filesystem the kernel serialises appends to one file, so lines from concurrent processes
//! never interleave. Records are capped at [`MAX_RECORD`] bytes so that one write suffices.
//!
//! # Failure policy
//! See [`crate::guard::policy::AuditFailure`]: engine opens fail closed by default.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::guard::lock::{CloseState, Holder};
use crate::guard::policy::Role;
use crate::storage::FsVerdict;
use crate::util::identity::{ProcessIdentity, now_rfc3339};

/// Largest record written; longer ones lose their mount options first.
pub const MAX_RECORD: usize = 4096;

/// File name of the audit log inside its directory.
pub const AUDIT_FILE: &str = "audit.jsonl";

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditEvent {
    /// A database file was opened through the guard.
    Open,
    /// An open was refused.
    OpenRefused,
    /// A tooling read-write open was downgraded to read-only.
    OpenDowngraded,
    /// A guarded database file was closed.
    Close,
    /// A `journal_mode=WAL` or a WAL file open was refused.
    WalRefused,
    /// The engine took the writer lock.
    WriterLockAcquired,
    /// The engine found the writer lock held.
    WriterLockBusy,
    /// The engine released the writer lock.
    WriterLockReleased,
    /// The database changed since the engine last closed it, without warden.
    ChangedOutsideWarden,
    /// The last engine never released its lock: it crashed or was killed.
    UncleanPreviousClose,
    /// The first 100 bytes are not a SQLite header.
    HeaderInvalid,
    /// A read-only connection tried to write.
    RoViolation,
    /// The audit log itself could not be written (logged through `tracing` only).
    AuditFailed,
    /// A restore verified its backup and is about to move the database aside (written before
    /// anything is moved; a restore that cannot write it does not start).
    RestoreStarted,
    /// A backup was restored (in place, or to a new file).
    Restored,
    /// A restore was refused: the backup failed re-verification; nothing was changed.
    RestoreRefused,
    /// An interrupted restore was found and completed, rolled forward or rolled back.
    RestoreRecovered,
    /// A restore drill ran (its outcome is in `decision` and `reason`).
    RestoreDrill,
    /// An offsite push ran (`decision`: `allow` when every local good point is on the
    /// remote, `refuse` when it failed; `reason` names the remote, never credentials).
    OffsitePush,
    /// A restore point was restored from the offsite copy to a new file.
    OffsiteRestored,
    /// A migration bundle was exported (`warden migrate export`); `reason` names the bundle
    /// and its manifest's SHA-256.
    MigrationExported,
    /// A migration bundle was verified, gated and installed as a new database (`warden
    /// migrate import`); `reason` names the bundle, its SHA-256 and the source host.
    MigrationImported,
    /// An import was refused: the bundle did not match its manifest, or its database failed
    /// the gate; nothing was written.
    MigrationRefused,
    /// A new seal chain started: `warden accept`, a restore or an import sealed what it
    /// installed; `reason` names it and the seal it replaced.
    SealChainStarted,
    /// A gate refused a database that is not what its seal says (or whose seal is
    /// damaged); `reason` names the differing pages.
    SealMismatch,
    /// During a `warden run` session, a process other than warden and its engine had the
    /// database (or its `-wal` or `-journal`) open for writing: one record per such process,
    /// naming it in `opener`; `decision` is the session's `on_foreign_writer` (`warn`, `stop`).
    ForeignWriter,
}

/// Open flags, as hex and decoded names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flags {
    /// `0x00000106`.
    pub hex: String,
    /// `["READWRITE", "CREATE", "MAIN_DB"]`.
    pub names: Vec<String>,
}

impl Flags {
    /// Decodes `SQLITE_OPEN_*` bits.
    pub fn decode(bits: i32) -> Self {
        use libsqlite3_sys as f;
        const NAMES: &[(i32, &str)] = &[
            (f::SQLITE_OPEN_READONLY, "READONLY"),
            (f::SQLITE_OPEN_READWRITE, "READWRITE"),
            (f::SQLITE_OPEN_CREATE, "CREATE"),
            (f::SQLITE_OPEN_DELETEONCLOSE, "DELETEONCLOSE"),
            (f::SQLITE_OPEN_EXCLUSIVE, "EXCLUSIVE"),
            (f::SQLITE_OPEN_URI, "URI"),
            (f::SQLITE_OPEN_MEMORY, "MEMORY"),
            (f::SQLITE_OPEN_MAIN_DB, "MAIN_DB"),
            (f::SQLITE_OPEN_TEMP_DB, "TEMP_DB"),
            (f::SQLITE_OPEN_TRANSIENT_DB, "TRANSIENT_DB"),
            (f::SQLITE_OPEN_MAIN_JOURNAL, "MAIN_JOURNAL"),
            (f::SQLITE_OPEN_TEMP_JOURNAL, "TEMP_JOURNAL"),
            (f::SQLITE_OPEN_SUBJOURNAL, "SUBJOURNAL"),
            (f::SQLITE_OPEN_SUPER_JOURNAL, "SUPER_JOURNAL"),
            (f::SQLITE_OPEN_NOMUTEX, "NOMUTEX"),
            (f::SQLITE_OPEN_FULLMUTEX, "FULLMUTEX"),
            (f::SQLITE_OPEN_WAL, "WAL"),
            (f::SQLITE_OPEN_NOFOLLOW, "NOFOLLOW"),
        ];
        Flags {
            hex: format!("{bits:#010x}"),
            names: NAMES.iter().filter(|(b, _)| bits & b != 0).map(|(_, n)| (*n).to_owned()).collect(),
        }
    }
}

pub use crate::format::header::HeaderInfo;
/// Per-file I/O counters, reported on close (kept by the VFS layer on the hot path).
pub use crate::sys::shim::IoStats as FileStats;

/// One audit line. Fields that do not apply to an event are left out; consumers must
/// ignore fields they do not know.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Record format version.
    pub schema: u32,
    /// RFC 3339 UTC.
    pub ts: String,
    /// Per-process sequence number.
    pub seq: u64,
    /// What happened.
    pub event: AuditEvent,
    /// Who did it.
    #[serde(flatten)]
    pub process: ProcessIdentity,
    /// Role of the connection.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub role: Option<Role>,
    /// Name of the guard VFS.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub vfs: Option<String>,
    /// The database file (absolute, as SQLite resolved it). A name that is not UTF-8 is
    /// written with `\xNN` escapes (see [`crate::util::fmt::path_text`]).
    #[serde(skip_serializing_if = "Option::is_none", default, serialize_with = "crate::util::fmt::serialize_opt_path")]
    pub db: Option<PathBuf>,
    /// What kind of file (`main_db`, `wal`, …).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub file_kind: Option<String>,
    /// Flags the caller asked for.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub flags_requested: Option<Flags>,
    /// Flags the file was actually opened with.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub flags_actual: Option<Flags>,
    /// The storage verdict.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub fs: Option<FsVerdict>,
    /// The database header at open or close.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub header: Option<HeaderInfo>,
    /// `allow`, `refuse`, `downgrade`, `info`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub decision: Option<String>,
    /// Why.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reason: Option<String>,
    /// SQLite result code returned.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub rc: Option<i32>,
    /// The writer lock's holder (busy) or the new holder (acquired).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub lock_holder: Option<Holder>,
    /// The state recorded at the last clean close (drift events).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub previous: Option<CloseState>,
    /// The state found now (drift events) or recorded at this close.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub current: Option<CloseState>,
    /// I/O counters (close).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub stats: Option<FileStats>,
    /// How long the file was open (close).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub duration_ms: Option<u64>,
    /// The other process and the descriptors it holds (`foreign_writer`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub opener: Option<crate::storage::openers::Opener>,
    /// SQLite library version.
    pub sqlite_version: String,
    /// warden version.
    pub guard_version: String,
}

impl AuditRecord {
    /// A record of `event` by this process, with the rest empty.
    pub fn new(event: AuditEvent) -> Self {
        AuditRecord {
            schema: 1,
            ts: now_rfc3339(),
            seq: 0,
            event,
            process: ProcessIdentity::current(),
            role: None,
            vfs: None,
            db: None,
            file_kind: None,
            flags_requested: None,
            flags_actual: None,
            fs: None,
            header: None,
            decision: None,
            reason: None,
            rc: None,
            lock_holder: None,
            previous: None,
            current: None,
            stats: None,
            duration_ms: None,
            opener: None,
            sqlite_version: rusqlite::version().to_owned(),
            guard_version: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }

    /// A record of `event` about `db`: what was decided (`allow`, `refuse`, `info`) and why.
    pub fn decided(event: AuditEvent, db: &Path, decision: &str, reason: String) -> Self {
        let mut r = AuditRecord::new(event);
        r.db = Some(db.to_owned());
        r.decision = Some(decision.to_owned());
        r.reason = Some(reason);
        r
    }

    fn to_line(&self) -> Vec<u8> {
        let mut line = self.encode();
        if line.len() >= MAX_RECORD {
            // Keep the record whole and within one write: shed the bulkiest parts first.
            let mut slim = self.clone();
            if let Some(fs) = slim.fs.as_mut() {
                fs.options.clear();
            }
            slim.reason = slim.reason.map(|r| r.chars().take(512).collect());
            line = slim.encode();
        }
        line.push(b'\n');
        line
    }

    /// The record as JSON; never empty. Should a field fail to encode, the record is still
    /// written with its event, process and the encoder's complaint, never as a blank line.
    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_else(|e| {
            let mut bare = AuditRecord::new(self.event);
            bare.ts.clone_from(&self.ts);
            bare.seq = self.seq;
            bare.process = self.process.clone();
            bare.db.clone_from(&self.db);
            bare.decision.clone_from(&self.decision);
            bare.reason = Some(format!("this record could not be encoded in full ({e}); kept: event, process, db"));
            serde_json::to_vec(&bare).unwrap_or_else(|_| b"{\"schema\":1,\"event\":\"unencodable\"}".to_vec())
        })
    }
}

/// An append-only JSON-lines audit log.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    seq: AtomicU64,
}

impl AuditLog {
    /// The log in `dir` (created on first write, mode 0750).
    pub fn in_dir(dir: impl AsRef<Path>) -> Self {
        AuditLog { path: dir.as_ref().join(AUDIT_FILE), seq: AtomicU64::new(0) }
    }

    /// The documented default directory (see the module docs).
    pub fn default_dir() -> PathBuf {
        let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
        if let Some(d) = env("WARDEN_AUDIT_DIR") {
            return d;
        }
        if let Some(d) = env("XDG_STATE_HOME") {
            return d.join("sqlite-warden");
        }
        if let Some(h) = env("HOME") {
            return h.join(".local/state/sqlite-warden");
        }
        PathBuf::from("/var/lib/sqlite-warden")
    }

    /// The log file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `rec` (its `seq` is assigned here) and mirrors it to `tracing`.
    ///
    /// # Errors
    /// [`AuditError::Io`] when the directory or file cannot be created or written.
    pub fn append(&self, rec: &mut AuditRecord) -> Result<(), AuditError> {
        rec.seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        mirror(rec);
        let line = rec.to_line();
        self.write_line(&line).map_err(|source| {
            let e = AuditError::Io { path: self.path.clone(), source };
            tracing::error!(target: "sqlite_warden::guard::audit", error = %e, "audit record lost");
            note_lost(&e);
            e
        })
    }

    fn write_line(&self, line: &[u8]) -> io::Result<()> {
        let open = || {
            OpenOptions::new()
                .append(true)
                .create(true)
                .mode(0o640)
                .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
                .open(&self.path)
        };
        let mut f = match open() {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if let Some(dir) = self.path.parent() {
                    crate::util::atomic::create_dir_synced(dir, 0o750)?;
                }
                open()?
            }
            Err(e) => return Err(e),
        };
        // One write call: O_APPEND makes it land whole at the end of the file.
        let n = f.write(line)?;
        if n != line.len() {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "short append to the audit log"));
        }
        Ok(())
    }
}

/// Records lost by this process so far, and the error of the first one.
static LOST: AtomicU64 = AtomicU64::new(0);
static FIRST_LOST: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

fn note_lost(e: &AuditError) {
    if LOST.fetch_add(1, Ordering::SeqCst) == 0 {
        let mut first = FIRST_LOST.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *first = Some(e.to_string());
    }
}

/// How many audit records this process could not write, with the first error: a command
/// that lost any must not report success (the CLI turns its 0 into 74).
pub fn lost_records() -> Option<(u64, String)> {
    let n = LOST.load(Ordering::SeqCst);
    (n > 0).then(|| {
        let first = FIRST_LOST.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        (n, first.unwrap_or_default())
    })
}

fn mirror(rec: &AuditRecord) {
    let db = rec.db.as_deref().map(|p| p.display().to_string()).unwrap_or_default();
    let reason = rec.reason.as_deref().unwrap_or("");
    let refused = matches!(
        rec.event,
        AuditEvent::OpenRefused
            | AuditEvent::WalRefused
            | AuditEvent::WriterLockBusy
            | AuditEvent::ChangedOutsideWarden
            | AuditEvent::UncleanPreviousClose
            | AuditEvent::RoViolation
            | AuditEvent::HeaderInvalid
            | AuditEvent::ForeignWriter
    );
    if refused {
        tracing::warn!(target: "sqlite_warden::guard::audit", event = ?rec.event, db, reason, "audit");
    } else {
        tracing::debug!(target: "sqlite_warden::guard::audit", event = ?rec.event, db, reason, "audit");
    }
}

/// Reads every record of an audit file, skipping lines that are not valid records.
///
/// # Errors
/// The I/O error from reading the file.
pub fn read_log(path: &Path) -> io::Result<Vec<AuditRecord>> {
    let text = std::fs::read_to_string(path)?;
    Ok(text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect())
}
/// Writing the audit log failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// The audit file could not be created or appended to.
    #[error(
        "cannot append to the audit log `{path}`: {source}\n(hint: set WARDEN_AUDIT_DIR to a writable local directory)"
    )]
    Io {
        /// The audit file.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: io::Error,
    },
}

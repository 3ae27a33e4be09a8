//! The integrity gate: may a session start on this database?
//!
//! Owns: the verdict on a database set before an engine touches it, combining
//! - the raw scan of the original files ([`crate::format::scan`]): header and size sanity, and the
//!   WAL damage SQLite's recovery would silently swallow;
//! - `PRAGMA integrity_check` (or `quick_check`) and `foreign_key_check` on a **private,
//!   read-write, recovered copy** of the set, which is also the pre-session backup: the
//!   gate costs about one integrity check, not a check plus a backup.
//!
//! Does not own: taking the copy or checking it ([`crate::copies::backup`]), or what to do with a
//! failure ([`super::Session`] refuses to start the engine).
//!
//! Fail closed: the gate passes only when the scan has no fatal finding, the pragma returned
//! exactly one row `ok`, no foreign key is violated, nothing errored and the time budget was
//! not exceeded. The original files are only ever read: never opened read-write, never with
//! `immutable=1`, their `-shm` never rewritten.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use std::sync::Arc;

use crate::copies::backup::{BackupError, BackupOptions, BackupRecord, BackupStore, CheckMode, IntegrityReport};
use crate::copies::seal::{PageDigests, SealCheck, SealState};
use crate::format::scan::{self, ScanReport, Severity};

/// Why the gate refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GateFailure {
    /// The database does not exist and creating it was not asked for.
    Missing,
    /// The database is an empty file and creating it was not asked for.
    Empty,
    /// The raw scan found damage (see the findings).
    Scan,
    /// The integrity check or foreign key check failed, or could not run.
    Integrity,
    /// The time budget ran out before the check finished.
    TimedOut,
    /// Not what the last clean close sealed (changed without a guarded session), or the
    /// seal cannot be trusted: see [`GateReport::seal`].
    Seal,
}

/// The gate's verdict and everything it is based on. A failed gate is a report, not an error.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GateReport {
    /// The database.
    pub db: PathBuf,
    /// True when a session may start.
    pub passed: bool,
    /// Why not, when it did not pass.
    pub failure: Option<GateFailure>,
    /// The check that ran on the copy.
    pub mode: CheckMode,
    /// Human-readable reasons for the verdict (empty when it passed with nothing to say).
    pub reasons: Vec<String>,
    /// The raw scan of the original files.
    pub scan: Option<ScanReport>,
    /// The check of the private copy.
    pub integrity: Option<IntegrityReport>,
    /// The database did not exist (or was empty) and creation was allowed: nothing checked.
    pub fresh_database: bool,
    /// Wall time of the whole gate, copy included.
    pub duration_ms: u64,
    /// The comparison with the last seal (`None`: not asked for).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub seal: Option<SealCheck>,
    /// The checked copy's page digests (what a seal of this content records).
    #[serde(skip)]
    pub digests: Option<Arc<PageDigests>>,
    /// Restore points whose pending check this gate settled: (backup id, good).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub settled: Vec<(String, bool)>,
}

impl GateReport {
    fn new(db: &Path, mode: CheckMode) -> Self {
        GateReport {
            db: db.to_owned(),
            passed: false,
            failure: None,
            mode,
            reasons: Vec::new(),
            scan: None,
            integrity: None,
            fresh_database: false,
            duration_ms: 0,
            seal: None,
            digests: None,
            settled: Vec::new(),
        }
    }

    fn fail(mut self, failure: GateFailure, reason: String, started: Instant) -> Self {
        self.passed = false;
        self.failure = Some(failure);
        self.reasons.push(reason);
        self.duration_ms = super::ms(started.elapsed());
        self
    }

    /// One line for humans.
    pub fn summary(&self) -> String {
        if self.passed {
            if self.fresh_database {
                return "passed: no database yet (creation allowed)".into();
            }
            return format!(
                "passed: {}",
                self.integrity.as_ref().map_or_else(|| "ok".to_owned(), IntegrityReport::summary)
            );
        }
        format!("FAILED: {}", self.reasons.first().map_or("unknown", String::as_str))
    }
}

/// What the gate was given to do.
#[derive(Debug, Clone, Default)]
pub struct GateOptions {
    /// A missing or empty database passes (the engine will create it). Default `false`: at
    /// session start a missing database usually means a wrong path or a lost disk.
    pub allow_create: bool,
    /// Compare with this seal state (`None`: no comparison). A broken seal fails the gate
    /// before anything is copied; a sealed database must be exactly what was sealed.
    pub seal: Option<SealState>,
}

/// Runs the gate on `db` and, when it passes, publishes the checked copy in `store` as the
/// pre-session backup (`backup.kind` should be [`crate::copies::kind::BackupKind::Pre`]).
///
/// The caller must hold the writer lock of `db` with no engine running
/// (`backup.writer_lock_held`): the set is then stable, and a hot journal or WAL is
/// recovered on the private copy, as the engine would at its next open.
///
/// # Errors
/// [`BackupError`] when the gate could not be run at all (no space, I/O errors, a set
/// that changes under warden's lock); the engine must not start then either.
pub fn run(
    db: &Path,
    store: &BackupStore,
    opts: &GateOptions,
    backup: &BackupOptions,
) -> Result<(GateReport, Option<BackupRecord>), BackupError> {
    let started = Instant::now();
    let report = GateReport::new(db, backup.check);
    let size = match std::fs::metadata(db) {
        Ok(md) => Some(md.len()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(BackupError::Io { action: "reading", path: db.to_owned(), source: e }),
    };
    let wal = crate::copies::backup::sidecar(db, "-wal");
    let wal_nonempty = std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0);
    // A missing or empty database: a fresh start when creation is allowed, a failure otherwise.
    let absent = match size {
        None if !wal_nonempty => Some((
            GateFailure::Missing,
            "the database does not exist yet; the engine will create it",
            format!(
                "`{}` does not exist (hint: check the path; pass --create only for a brand-new database)",
                db.display()
            ),
        )),
        Some(0) if !wal_nonempty => Some((
            GateFailure::Empty,
            "the database is an empty file; the engine will initialise it",
            format!(
                "`{}` is an empty file: no tables, no data (hint: a lost or replaced file? pass --create only for a brand-new database)",
                db.display()
            ),
        )),
        _ => None,
    };
    if let Some((failure, fresh, refusal)) = absent {
        if !opts.allow_create {
            return Ok((report.fail(failure, refusal, started), None));
        }
        let mut r = report;
        r.passed = true;
        r.fresh_database = true;
        r.reasons.push(fresh.into());
        return Ok((r, None));
    }

    let scanned =
        scan::scan_set(db).map_err(|source| BackupError::Io { action: "scanning", path: db.to_owned(), source })?;
    let mut report = report;
    let fatal: Vec<String> = scanned
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Fatal)
        .map(|f| format!("{}: {}", f.code, f.message))
        .collect();
    report.scan = Some(scanned);
    if !fatal.is_empty() {
        let mut r = report.fail(GateFailure::Scan, fatal[0].clone(), started);
        r.reasons.extend(fatal.into_iter().skip(1));
        return Ok((r, None));
    }

    // A seal that cannot be trusted fails closed before anything is copied or published.
    if let Some(state @ SealState::Broken(_)) = &opts.seal {
        let check = crate::copies::seal::check(db, state, None);
        let reason = check.message.clone();
        report.seal = Some(check);
        return Ok((report.fail(GateFailure::Seal, reason, started), None));
    }
    let with_seal;
    let backup = match &opts.seal {
        Some(SealState::Sealed(image)) => {
            with_seal = BackupOptions { expect_seal: Some(Arc::clone(image)), ..backup.clone() };
            &with_seal
        }
        _ => backup,
    };
    let outcome = store.take(db, backup)?;
    let integrity = outcome.integrity.clone();
    // A restore point whose check was left to this gate: the same content just passed (or
    // failed) this check; any other pending one is checked now.
    if let Some(d) = &outcome.digests {
        let by = outcome.manifest.id.clone();
        match store.settle_pending(Some(&d.content_digest()), &integrity, &by) {
            Ok(settled) => report.settled = settled,
            Err(e) => {
                tracing::warn!(error = %e, "a pending check could not be settled; `warden backups verify` checks it")
            }
        }
    }
    report.integrity = Some(integrity.clone());
    report.digests.clone_from(&outcome.digests);
    if let Some(state) = &opts.seal {
        report.seal = Some(crate::copies::seal::check(db, state, outcome.seal_diff.as_ref()));
    }
    // Not what was sealed comes first: the pages are named and the sealed backup is the way
    // back, whether or not the damage also broke the structure (its findings stay below).
    if let Some(check) = report.seal.as_ref().filter(|c| c.fails()) {
        let reason = check.message.clone();
        let structure = (!integrity.ok).then(|| format!("and the copy failed its check: {}", integrity.summary()));
        let mut r = report.fail(GateFailure::Seal, reason, started);
        r.reasons.extend(structure);
        return Ok((r, None));
    }
    if !integrity.ok {
        let failure = if integrity.timed_out { GateFailure::TimedOut } else { GateFailure::Integrity };
        let mut reason = integrity.summary();
        if integrity.timed_out {
            reason.push_str(" (hint: raise the gate budget, or use the quick check with a nightly full check)");
        }
        return Ok((report.fail(failure, reason, started), outcome.published));
    }
    report.passed = true;
    report.duration_ms = super::ms(started.elapsed());
    Ok((report, outcome.published))
}

/// What [`check_only`] is asked to do. The default is a full check with no time budget, in
/// the system's temporary directory.
#[derive(Clone, Default)]
pub struct CheckOptions {
    /// The check to run on the private copy (default [`CheckMode::Full`]).
    pub check: CheckMode,
    /// Give up after this long (the check then fails closed); `None` for no limit.
    pub budget: Option<std::time::Duration>,
    /// Where the private copy is made: a fresh `0700` directory inside it holds the copy and
    /// is always removed. Default: [`std::env::temp_dir`] (`$TMPDIR`, else `/tmp`). It needs
    /// room for one copy of the database (plus its `-wal`) and should be a local disk.
    pub scratch_dir: Option<PathBuf>,
    /// The guard whose tooling VFS reads the database (its audit log records the read);
    /// `None` uses the default guard.
    pub guard: Option<crate::guard::vfs::Guard>,
    /// Set to stop early ([`BackupError::Cancelled`]); the scratch directory is still removed.
    pub cancel: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
    /// Where progress of the copy and the check goes.
    pub progress: Option<std::sync::Arc<dyn crate::util::progress::Progress>>,
}

impl std::fmt::Debug for CheckOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckOptions")
            .field("check", &self.check)
            .field("budget", &self.budget)
            .field("scratch_dir", &self.scratch_dir)
            .finish_non_exhaustive()
    }
}

/// A private scratch directory (`0700`) that is removed, with everything in it, on drop.
/// Its name carries [`crate::util::atomic::TMP_MARK`] and the owner's pid, so the leftovers of a
/// killed process are swept by the next one ([`ScratchDir::create`]).
#[derive(Debug)]
pub(crate) struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    /// Creates `<base>/.<label><TMP_MARK><pid>.<n>`, after removing leftovers of the same
    /// label whose owner process is gone and which are over an hour old (a `/tmp` shared
    /// with another pid namespace could otherwise lose a live directory whose owner this
    /// process cannot see).
    pub(crate) fn create(base: &Path, label: &str) -> std::io::Result<ScratchDir> {
        use std::os::unix::fs::DirBuilderExt;
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let prefix = format!(".{label}{}", crate::util::atomic::TMP_MARK);
        if let Ok(rd) = std::fs::read_dir(base) {
            for entry in rd.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let Some(pid) = name.strip_prefix(&prefix).and_then(|_| crate::util::atomic::temp_owner(&name)) else {
                    continue;
                };
                let gone = i32::try_from(pid).is_ok_and(|p| {
                    nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), None) == Err(nix::errno::Errno::ESRCH)
                });
                let old = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > std::time::Duration::from_secs(3600)));
                if gone && old {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        let path = base.join(format!("{prefix}{}.{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)));
        std::fs::DirBuilder::new().mode(0o700).create(&path)?;
        Ok(ScratchDir { path })
    }

    /// The directory.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// How [`check_only`] could read the database set.
enum Access {
    /// A writer holds the lock: an engine may be committing.
    Live(Option<Box<crate::guard::lock::Holder>>),
    /// `check_only` took the writer lock itself (held until the check is done).
    LockTaken,
    /// Nobody holds the lock, but taking it would lose something (the reason says what).
    Unlocked(&'static str),
}

/// The integrity gate on its own, for `warden check`: read-only and safe at any time, also
/// while the engine runs. Nothing is ever published: the checked copy lives in a private
/// scratch directory that is removed before this returns (see [`CheckOptions::scratch_dir`]).
///
/// The same gate as at session start ([`run`]): the raw scan of the original files, then
/// `PRAGMA integrity_check` (or `quick_check`) and `foreign_key_check` on a private,
/// read-write copy. How the copy is taken depends on the writer lock ([`crate::guard::lock::inspect`]):
///
/// - **held** (an engine may be committing): the online backup API, in one step, from a
///   read-only tooling connection, which yields a consistent committed state without
///   blocking the writer. A fatal scan finding is re-scanned twice (100 ms apart) before it
///   counts, since the files move under a live writer;
/// - **free after a clean release**: the writer lock is taken for the duration (an engine
///   starting meanwhile is refused with "lock held"), so the set is stable and a hot journal
///   or WAL is recovered on the private copy, never on the original;
/// - **free after a crash**: the lock is *not* taken, because taking and releasing it would
///   erase the evidence that the last writer died (`warden status` exit 13, and the engine's
///   `unclean_previous_close` audit record at its next open);
/// - **never used** (no lock file): the lock is not taken either (that would create a lock
///   file beside a database no guarded engine uses).
///
/// In the last two cases the originals must still stay byte-identical, and a read-only
/// SQLite open would not leave them so (it rebuilds a `-shm`, creates a `-wal` beside a
/// WAL-mode file, and cannot read past a hot journal). So a set with a `-wal`, `-journal` or
/// `-shm` is copied byte for byte and recovered on the private copy, exactly as under the
/// lock ([`BackupOptions::private_copy_unlocked`]): a hot journal left by a dead writer is
/// rolled back there, its WAL replayed there. The copy is repeated until the set held still
/// while it was copied; one that keeps changing (a writer outside warden at work) fails with
/// [`BackupError::Unsettled`]. A plain database file is read with the backup API, under
/// SQLite's own locking, which writes nothing.
///
/// The returned report's last `reasons` entry says which of these applied. A missing or
/// empty database fails the gate ([`GateFailure::Missing`], [`GateFailure::Empty`]).
///
/// # Errors
/// [`BackupError`] when the check could not be run at all: the scratch directory cannot be
/// made or has no room ([`BackupError::NoSpace`]), an I/O or SQLite error, a cancel, a set
/// that changed under the lock, or one that never held still without it.
pub fn check_only(db: &Path, opts: &CheckOptions) -> Result<GateReport, BackupError> {
    use crate::guard::lock::{LockState, WriterLock, WriterScope};
    let lock_io = |lock_path: PathBuf, source: std::io::Error| BackupError::Io {
        action: "reading the writer lock",
        path: lock_path,
        source,
    };
    // A directory, an unreadable file, a lock file that is a directory: an error naming it,
    // before anything is opened (a missing file is the report's `missing` below).
    match crate::storage::check_database(db, crate::storage::Need::Read) {
        Ok(()) | Err(crate::storage::TargetError::Missing { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    let status = crate::guard::lock::inspect(db).map_err(|e| match e {
        crate::guard::lock::LockError::Io { lock_path, source } => lock_io(lock_path, source),
        other => lock_io(crate::guard::lock::lock_path_for(db), std::io::Error::other(other.to_string())),
    })?;
    let mut taken = None;
    let access = match status.state {
        LockState::Held => Access::Live(status.record.map(|r| Box::new(r.holder))),
        // `Connection` scope: a hold by this very process (an engine connection of an
        // embedding program) is refused like any other, never joined.
        LockState::Free => match WriterLock::acquire(db, WriterScope::Connection) {
            Ok(a) => {
                taken = Some(a.lock);
                Access::LockTaken
            }
            Err(crate::guard::lock::LockError::Held { holder, .. }) => Access::Live(holder),
            Err(crate::guard::lock::LockError::HeldElsewhere { .. }) => Access::Live(None),
            Err(crate::guard::lock::LockError::Io { lock_path, source }) => return Err(lock_io(lock_path, source)),
            Err(other) => {
                return Err(lock_io(crate::guard::lock::lock_path_for(db), std::io::Error::other(other.to_string())));
            }
        },
        LockState::FreeAfterCrash => Access::Unlocked(
            "the last writer died without releasing the writer lock; the lock was left untouched as evidence (`warden status`)",
        ),
        LockState::NeverUsed => Access::Unlocked("no guarded engine has used this database (no writer lock file)"),
    };
    let base = opts.scratch_dir.clone().unwrap_or_else(std::env::temp_dir);
    let scratch = ScratchDir::create(&base, "warden-check").map_err(|source| BackupError::Io {
        action: "creating a scratch directory in",
        path: base.clone(),
        source,
    })?;
    // A scratch copy that is thrown away: never worth storing as pages.
    let store = BackupStore::new(scratch.path(), db).with_format(crate::copies::backup::StoreFormat::Files);
    let backup = BackupOptions {
        kind: Some(crate::copies::kind::BackupKind::Manual),
        session_id: None,
        check: opts.check,
        check_budget: opts.budget,
        writer_lock_held: taken.is_some(),
        // Without the lock the originals are still never opened where opening would change
        // them: a set with sidecars is copied byte for byte and recovered on the copy.
        private_copy_unlocked: matches!(access, Access::Unlocked(_)),
        guard: opts.guard.clone(),
        cancel: opts.cancel.clone(),
        keep_unverified: false,
        progress: opts.progress.clone(),
        expect_seal: None,
        defer_check: false,
    };
    let live = matches!(access, Access::Live(_));
    let private = crate::copies::backup::needs_private_copy(db);
    let gate = GateOptions { seal: Some(crate::copies::seal::state(db)), ..GateOptions::default() };
    let mut attempt = 0;
    let mut report = loop {
        attempt += 1;
        // The verified copy lands in the private store and goes with the scratch directory.
        let (report, _copy) = run(db, &store, &gate, &backup)?;
        if live && report.failure == Some(GateFailure::Scan) && attempt < 3 {
            std::thread::sleep(std::time::Duration::from_millis(100));
            continue;
        }
        break report;
    };
    drop(scratch);
    // Released with the state it was taken in (its last clean close is kept).
    drop(taken);
    if matches!(report.failure, Some(GateFailure::Missing | GateFailure::Empty)) {
        return Ok(report);
    }
    report.reasons.push(match &access {
        Access::Live(holder) => format!(
            "read while a writer holds the lock ({}): checked a consistent snapshot taken with the online backup API",
            crate::guard::lock::holder_text(holder.as_deref())
        ),
        Access::LockTaken => "no writer was running: warden held the writer lock during the check, so the set was stable and any journal or WAL was recovered on the private copy".into(),
        Access::Unlocked(why) if private => format!(
            "read without the writer lock ({why}): the set was copied byte for byte, held still while it was copied, and its journal or WAL was recovered on the private copy; the originals were only read"
        ),
        Access::Unlocked(why) => format!("read without the writer lock ({why}): SQLite's own locking kept the copy consistent"),
    });
    Ok(report)
}

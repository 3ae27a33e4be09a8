//! Taking and checking a consistent private copy of a database: the steps that verified
//! backups ([`crate::copies::backup`]), analysis snapshots ([`crate::copies::snapshot`]), restores and drills
//! ([`crate::copies::restore`]) and salvage ([`crate::copies::salvage`]) share.
//!
//! Owns: the copy with SQLite's online backup API from a read-only tooling connection
//! ([`online_copy`]); making the copy one self-contained rollback-journal file
//! ([`finalize`]); the byte-for-byte copy of a set that SQLite then recovers privately
//! ([`copy_set`]), when a set needs one ([`needs_private_copy`]) and whether it held still
//! meanwhile ([`set_state`]); checking it on one thread while it is hashed and `fsync`ed on another
//! ([`check_and_hash`]); SHA-256 of a file or of the bytes a copy writes ([`sha256_file`],
//! [`copy_hashed`]); free space and the room a copy needs ([`free_bytes`],
//! [`with_headroom`]); the lock of a directory of copies ([`lock_exclusive`]); removing the
//! temporary files of a copy that was not published ([`TempGuard`]); and telling a damaged
//! database, a hot journal and a full disk apart ([`is_damage`], [`is_hot_journal`],
//! [`is_disk_full`], [`io_is_full`]).
//!
//! Does not own: the check itself ([`crate::copies::backup::check_file`]), where copies are
//! published, how they are named and described (manifests), or which ones are kept; nor the
//! error types the callers report. Every function here fails with a [`Failure`], which each
//! caller turns into its own error (`From<Failure>`).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};
use sha2::{Digest, Sha256};

use crate::copies::check::{CheckMode, IntegrityReport, PRIVATE_VFS, check_file};
use crate::format::names::sidecar;
use crate::guard::connect::OpenError;
use crate::guard::connect::{ToolOptions, open_tool};
use crate::guard::vfs::Guard;
use crate::sys::sqlite::VfsFile;
use crate::util::progress::{Phase, Progress};

/// Why a step of taking or checking a copy failed. Callers convert it into their own error
/// type, where the same variants exist.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The source could not be opened through the guard.
    Source {
        /// The database.
        db: PathBuf,
        /// Why.
        source: OpenError,
    },
    /// A SQLite call failed.
    Sqlite {
        /// What was being done.
        action: &'static str,
        /// On which file.
        path: PathBuf,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// A file operation failed.
    Io {
        /// What was being done.
        action: &'static str,
        /// On which file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The cancel flag was set.
    Cancelled {
        /// The database.
        db: PathBuf,
    },
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Source { db, source } => write!(f, "cannot read `{}`: {source}", db.display()),
            Failure::Sqlite { action, path, source } => write!(f, "{action} `{}`: {source}", path.display()),
            Failure::Io { action, path, source } => write!(f, "{action} `{}`: {source}", path.display()),
            Failure::Cancelled { db } => write!(f, "copying `{}` cancelled", db.display()),
        }
    }
}

fn sqlite_err<'a>(action: &'static str, path: &'a Path) -> impl Fn(rusqlite::Error) -> Failure + 'a {
    move |source| Failure::Sqlite { action, path: path.to_owned(), source }
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl Fn(io::Error) -> Failure + 'a {
    move |source| Failure::Io { action, path: path.to_owned(), source }
}

/// [`Failure::Cancelled`] once `cancel` is set.
pub(crate) fn check_cancel(cancel: Option<&Arc<AtomicBool>>, db: &Path) -> Result<(), Failure> {
    if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
        return Err(Failure::Cancelled { db: db.to_owned() });
    }
    Ok(())
}

/// Errors that mean the database set itself is damaged (not the disk we copy to).
pub(crate) fn is_damage(e: &rusqlite::Error) -> bool {
    match e {
        rusqlite::Error::SqliteFailure(f, _) => {
            matches!(f.code, rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase)
                || f.extended_code == rusqlite::ffi::SQLITE_IOERR_SHORT_READ
        }
        _ => false,
    }
}

/// A read-only open met a hot rollback journal (or a WAL it may not recover).
pub(crate) fn is_hot_journal(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.extended_code == rusqlite::ffi::SQLITE_READONLY_ROLLBACK
            || f.extended_code == rusqlite::ffi::SQLITE_READONLY_RECOVERY)
}

/// SQLite ran out of disk.
pub(crate) fn is_disk_full(e: &rusqlite::Error) -> bool {
    e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull)
}

/// The disk (or the quota) is full.
pub(crate) fn io_is_full(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ENOSPC) || e.raw_os_error() == Some(libc::EDQUOT)
}

/// Free bytes for unprivileged users on the filesystem holding `dir` (`statvfs`).
pub(crate) fn free_bytes(dir: &Path) -> nix::Result<u64> {
    let st = nix::sys::statvfs::statvfs(dir)?;
    #[allow(clippy::useless_conversion)]
    Ok(u64::from(st.blocks_available()).saturating_mul(u64::from(st.fragment_size())))
}

/// The room a copy of `raw` bytes needs: `raw` plus 10 % and 1 MiB.
pub(crate) fn with_headroom(raw: u64) -> u64 {
    raw + raw / 10 + (1 << 20)
}

/// Size of the file at `p` (following links), 0 when there is none.
pub(crate) fn size_of(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// The UTC time, to the millisecond, that names copies: `20261125T181430.123Z`.
pub(crate) fn stamp() -> String {
    jiff::Timestamp::now().strftime("%Y%m%dT%H%M%S%.3fZ").to_string()
}

/// Opens (creating it `0600`) and exclusively `flock`s the lock file `path`, waiting for
/// another warden that holds it: two copies into one directory, its retention and its
/// recovery never interleave. `opening` names the open step in an error.
pub(crate) fn lock_exclusive(path: &Path, opening: &'static str) -> Result<nix::fcntl::Flock<File>, Failure> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(path)
        .map_err(io_err(opening, path))?;
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive).map_err(|(_, e)| Failure::Io {
        action: "locking",
        path: path.to_owned(),
        source: e.into(),
    })
}

/// The names in `dir`, sorted; a missing directory has none.
pub(crate) fn dir_names(dir: &Path) -> Result<Vec<String>, Failure> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("reading", dir)(e)),
    };
    let mut names = Vec::new();
    for entry in rd {
        let entry = entry.map_err(io_err("reading", dir))?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}

/// Removes the listed paths on drop (files, or directories with everything in them), unless
/// they were moved away or the guard was disarmed: what a copy that was not published left.
#[derive(Debug)]
pub(crate) struct TempGuard(Vec<PathBuf>);

impl TempGuard {
    /// Guards `paths`.
    pub(crate) fn new(paths: Vec<PathBuf>) -> Self {
        TempGuard(paths)
    }

    /// Guards `tmp` and the `-journal`, `-wal` and `-shm` SQLite may create beside it.
    pub(crate) fn with_sidecars(tmp: &Path) -> Self {
        TempGuard(["", "-journal", "-wal", "-shm"].iter().map(|s| sidecar(tmp, s)).collect())
    }

    /// Keeps everything: the files are someone else's now.
    pub(crate) fn disarm(&mut self) {
        self.0.clear();
    }
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        for p in &self.0 {
            if p.is_dir() {
                let _ = std::fs::remove_dir_all(p);
            } else {
                let _ = std::fs::remove_file(p);
            }
        }
    }
}

/// A set's sidecars and identity, to notice changes during a private copy: size, mtime and
/// inode of the database, its `-wal` and its `-journal`, and the first bytes of the database
/// and of the `-wal` (the change counter of a commit, the salts of a WAL restart), which
/// change even when a write lands within the same clock tick as the last one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SetState(Vec<Option<(u64, i64, i64, u64)>>, Vec<Vec<u8>>);

/// The [`SetState`] of `db` now (headers read through SQLite's `unix` VFS, as [`copy_set`]
/// reads the files).
pub(crate) fn set_state(db: &Path) -> SetState {
    let files = [db.to_owned(), sidecar(db, "-wal"), sidecar(db, "-journal")];
    let heads = [db.to_owned(), sidecar(db, "-wal")]
        .iter()
        .map(|p| crate::format::header::read_raw_header(p).unwrap_or_default())
        .collect();
    SetState(
        files
            .iter()
            .map(|p| std::fs::metadata(p).ok().map(|m| (m.len(), m.mtime(), m.mtime_nsec(), m.ino())))
            .collect(),
        heads,
    )
}

/// True when a read-only SQLite open of `db` could change the set (rebuild or create its
/// `-shm`, create a `-wal`) or could not read it (a hot journal): it has a non-empty `-wal`,
/// a `-journal`, a `-shm`, or a WAL-mode header. Such a set is copied byte for byte
/// ([`copy_set`]) and recovered privately instead (see
/// [`crate::copies::backup::BackupOptions::private_copy_unlocked`]).
pub fn needs_private_copy(db: &Path) -> bool {
    let nonempty = |p: &Path| std::fs::metadata(p).is_ok_and(|m| m.len() > 0);
    // The header is read through SQLite's VFS: this runs in processes that may hold SQLite
    // locks on `db`.
    let header_says_wal = || crate::format::header::read_header(db).ok().flatten().is_some_and(|h| h.wal);
    nonempty(&sidecar(db, "-wal"))
        || sidecar(db, "-journal").exists()
        || sidecar(db, "-shm").exists()
        || header_says_wal()
}

/// Copies the set at `db` byte for byte to `to`: the database, its `-wal` and its
/// `-journal` (a missing sidecar is skipped; never the `-shm`, which SQLite rebuilds),
/// replacing what is there. SQLite may then recover the copy, never the original.
///
/// The originals are read through SQLite's `unix` VFS ([`VfsFile`]): a process that holds
/// SQLite locks on the database (an engine calling `Session::finish`) keeps them, where
/// closing a `std::fs` descriptor of the file would drop them.
pub(crate) fn copy_set(db: &Path, to: &Path, cancel: Option<&Arc<AtomicBool>>) -> Result<(), Failure> {
    for (suffix, required) in [("", true), ("-wal", false), ("-journal", false)] {
        let from = sidecar(db, suffix);
        let dst = sidecar(to, suffix);
        let _ = std::fs::remove_file(&dst);
        match copy_through_vfs(&from, &dst) {
            Ok(_) => {}
            Err(e) if !required && e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("copying", &from)(e)),
        }
        check_cancel(cancel, db)?;
    }
    Ok(())
}

/// Copies the file `from` (read through SQLite's `unix` VFS) to the new file `to` (`0600`).
fn copy_through_vfs(from: &Path, to: &Path) -> io::Result<u64> {
    let src = VfsFile::open(None, from)?;
    let mut dst = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(to)?;
    let n = io::copy(&mut src.reader(), &mut dst)?;
    if n != src.len() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("`{}` changed while it was copied", from.display()),
        ));
    }
    Ok(n)
}

/// How [`online_copy`] reads the source.
pub(crate) struct OnlineCopy<'a> {
    /// The guard whose tooling VFS reads the source; `None`: the default guard.
    pub(crate) guard: Option<&'a Guard>,
    /// Pages per step, `-1` for one step. One step when a writer may be live: a stepped
    /// backup restarts at every foreign commit and may never end.
    pub(crate) pages_per_step: std::ffi::c_int,
    /// Stops the copy between steps ([`Failure::Cancelled`]).
    pub(crate) cancel: Option<&'a Arc<AtomicBool>>,
    /// Told the pages copied after each step.
    pub(crate) progress: Option<&'a Arc<dyn Progress>>,
}

/// Copies `db` into the new file `tmp` with SQLite's online backup API, from a read-only
/// tooling connection ([`crate::guard::connect::open_tool`]): the copy goes through SQLite's
/// locking and holds exactly one committed state. Gives up after ten minutes of a locked
/// source.
pub(crate) fn online_copy(db: &Path, tmp: &Path, how: &OnlineCopy<'_>) -> Result<(), Failure> {
    let src = open_tool(db, &ToolOptions { guard: how.guard.cloned(), ..Default::default() })
        .map_err(|source| Failure::Source { db: db.to_owned(), source })?;
    let mut dst = Connection::open_with_flags_and_vfs(
        tmp,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        PRIVATE_VFS,
    )
    .map_err(sqlite_err("creating", tmp))?;
    // The destination is a brand-new private file: no journal and no syncs while copying
    // (it is synced once, whole, when it is hashed).
    dst.execute_batch("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;").map_err(sqlite_err("preparing", tmp))?;
    let backup = rusqlite::backup::Backup::new(&src, &mut dst).map_err(sqlite_err("starting the backup of", db))?;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        check_cancel(how.cancel, db)?;
        use rusqlite::backup::StepResult;
        // "If N is negative, all remaining source pages are copied" (sqlite3_backup_step).
        match backup.step(how.pages_per_step).map_err(sqlite_err("copying", db))? {
            StepResult::Done => break,
            StepResult::Busy | StepResult::Locked => {
                if Instant::now() > deadline {
                    return Err(Failure::Sqlite {
                        action: "copying (the database stayed locked for 10 minutes)",
                        path: db.to_owned(),
                        source: rusqlite::Error::SqliteFailure(
                            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
                            None,
                        ),
                    });
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            _ => {}
        }
        if let Some(p) = how.progress {
            let pr = backup.progress();
            let total = u64::try_from(pr.pagecount).unwrap_or(0);
            let done = total.saturating_sub(u64::try_from(pr.remaining).unwrap_or(0));
            p.update(Phase::Copy, done, total);
        }
    }
    Ok(())
}

/// Makes the copy one self-contained rollback-journal file: `journal_mode=DELETE` (a copy of
/// a WAL database says WAL in its header, and `immutable=1` readers would look for a `-wal`).
pub(crate) fn finalize(tmp: &Path) -> Result<(), Failure> {
    let conn = Connection::open_with_flags_and_vfs(
        tmp,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        PRIVATE_VFS,
    )
    .map_err(sqlite_err("opening the copy", tmp))?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode=DELETE", [], |r| r.get(0))
        .map_err(sqlite_err("setting journal_mode on", tmp))?;
    if !mode.eq_ignore_ascii_case("delete") {
        return Err(Failure::Sqlite {
            action: "setting journal_mode=DELETE on",
            path: tmp.to_owned(),
            source: rusqlite::Error::InvalidQuery,
        });
    }
    Ok(())
}

/// Reads `from` to the end in 1 MiB blocks, hashing them (SHA-256) and handing each block,
/// with the bytes read so far, to `each`. Returns the lowercase hex digest and the length.
fn sha256_stream(
    from: &mut impl Read,
    mut each: impl FnMut(&[u8], u64) -> io::Result<()>,
) -> io::Result<(String, u64)> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = from.read(&mut buf)?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
        each(&buf[..k], n)?;
    }
    Ok((crate::util::fmt::hex(&h.finalize()), n))
}

/// SHA-256 (lowercase hex) and length of a file; `progress` is told the bytes hashed so far.
pub(crate) fn sha256_file(path: &Path, progress: Option<&dyn Fn(u64)>) -> io::Result<(String, u64)> {
    sha256_stream(&mut File::open(path)?, |_, done| {
        if let Some(p) = progress {
            p(done);
        }
        Ok(())
    })
}

/// Copies `src` to the new file `dst` (mode `0600`, never over an existing file), hashing the
/// bytes as they are written, then `fsync`s it. Returns the SHA-256 and the byte count.
pub(crate) fn copy_hashed(src: &Path, dst: &Path) -> io::Result<(String, u64)> {
    let mut from = File::open(src)?;
    let mut to = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(dst)?;
    let hashed = sha256_stream(&mut from, |block, _| to.write_all(block))?;
    to.sync_all()?;
    Ok(hashed)
}

/// How [`check_and_hash`] checks.
pub(crate) struct CheckSpec<'a> {
    /// The check; `None`: hash only.
    pub(crate) mode: Option<CheckMode>,
    /// Give up the check after this long (it then fails closed).
    pub(crate) budget: Option<Duration>,
    /// Stops the check (it then fails closed).
    pub(crate) cancel: Option<&'a Arc<AtomicBool>>,
    /// Told how far hashing and (an estimate of) the check are.
    pub(crate) progress: Option<&'a Arc<dyn Progress>>,
}

/// What [`check_and_hash`] found.
#[derive(Debug)]
pub(crate) struct Checked {
    /// The check's report (`None` when no check was asked for).
    pub(crate) report: Option<IntegrityReport>,
    /// (page size, page count) as the check saw them; `(0, 0)` without a check.
    pub(crate) pages: (u32, u64),
    /// SHA-256 of the copy, lowercase hex.
    pub(crate) sha256: String,
    /// Hashing and `fsync`.
    pub(crate) hash_time: Duration,
    /// Size of the copy after the check.
    pub(crate) size: u64,
    /// The copy's size or modification time changed while it was checked.
    pub(crate) changed: bool,
    /// The copy's page digests (what a seal records and compares).
    pub(crate) digests: crate::copies::seal::PageDigests,
}

/// Checks the copy at `tmp` ([`check_file`], on a thread of its own) while this thread
/// hashes and `fsync`s it, and notices a copy that changed meanwhile. A failed check is a
/// report, not an error.
pub(crate) fn check_and_hash(tmp: &Path, spec: &CheckSpec<'_>) -> Result<Checked, Failure> {
    let before = std::fs::metadata(tmp).map_err(io_err("reading", tmp))?;
    let size = before.len();
    let tid = AtomicI32::new(0);
    let (hashed, checked, digests) = std::thread::scope(|s| -> Result<_, Failure> {
        let checker = match spec.mode {
            Some(mode) => {
                let (tid, cancel) = (&tid, spec.cancel.cloned());
                let handle = std::thread::Builder::new()
                    .name("warden-check".into())
                    .spawn_scoped(s, move || {
                        tid.store(nix::unistd::gettid().as_raw(), Ordering::Relaxed);
                        check_file(tmp, mode, spec.budget, cancel)
                    })
                    .map_err(io_err("starting the check thread for", tmp))?;
                Some((mode, handle))
            }
            None => None,
        };
        let tick = |done: u64| {
            if let Some(p) = spec.progress {
                p.update(Phase::Hash, done, size);
            }
        };
        let hash_started = Instant::now();
        // One read of the copy for both its SHA-256 and its page digests (the seal's).
        let mut pages = crate::copies::seal::PageHasher::new();
        let hashed = File::open(tmp)
            .and_then(|mut f| {
                sha256_stream(&mut f, |block, done| {
                    pages.update(block);
                    tick(done);
                    Ok(())
                })
            })
            .and_then(|(h, _)| File::open(tmp)?.sync_all().map(|()| h))
            .map(|h| (h, hash_started.elapsed()));
        let digests = pages.finish();
        let Some((mode, checker)) = checker else { return Ok((hashed, None, digests)) };
        let mut last = Instant::now();
        while !checker.is_finished() {
            if let Some(p) = spec.progress
                && last.elapsed() > Duration::from_millis(200)
            {
                let read = thread_read_bytes(tid.load(Ordering::Relaxed));
                p.update(Phase::Check, read.min(size.saturating_sub(1)), size);
                last = Instant::now();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let result = checker.join().unwrap_or_else(|_| {
            (IntegrityReport::failed(mode, "the check thread panicked".into(), Duration::ZERO), (0, 0))
        });
        Ok((hashed, Some(result), digests))
    })?;
    let (sha256, hash_time) = hashed.map_err(io_err("hashing", tmp))?;
    let (report, pages) = match checked {
        Some(result) => {
            let (report, pages) = result;
            if let Some(p) = spec.progress {
                p.update(Phase::Check, size, size);
            }
            (Some(report), pages)
        }
        None => (None, (0, 0)),
    };
    let after = std::fs::metadata(tmp).map_err(io_err("reading", tmp))?;
    let changed =
        (after.len(), after.mtime(), after.mtime_nsec()) != (before.len(), before.mtime(), before.mtime_nsec());
    Ok(Checked { report, pages, sha256, hash_time, size: after.len(), changed, digests })
}

/// Bytes read so far by thread `tid` of this process (`/proc/self/task/<tid>/io`, `rchar`).
fn thread_read_bytes(tid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/self/task/{tid}/io"))
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("rchar:").and_then(|v| v.trim().parse().ok())))
        .unwrap_or(0)
}

/// True for a database that is an empty file with no non-empty `-wal`: nothing to copy, and
/// a "verified" copy of it must never count as a good state.
pub(crate) fn is_empty_db(db: &Path) -> bool {
    size_of(db) == 0 && size_of(&sidecar(db, "-wal")) == 0
}

/// Why [`first_not_local`] could not judge a path: what it was doing, the path, the cause.
pub(crate) type JudgeFailure = (&'static str, PathBuf, io::Error);

/// The first of `paths` on storage the guard would refuse an engine on, with its verdict:
/// copies are read from, and written to, a local disk, whichever command makes them.
pub(crate) fn first_not_local(
    guard: Option<&Guard>,
    paths: &[(&Path, &'static str)],
) -> Result<Option<(PathBuf, &'static str, crate::storage::FsVerdict)>, JudgeFailure> {
    let first = paths.first().map_or_else(PathBuf::new, |(p, _)| p.to_path_buf());
    let guard = match guard {
        Some(g) => g.clone(),
        None => crate::guard::vfs::default_guard()
            .map_err(|e| ("registering the guard for", first, io::Error::other(e.to_string())))?,
    };
    for &(path, what) in paths {
        let v = guard.classify(path).map_err(|e| {
            // Keep the kind (a permission problem stays one: exit 77, not 74).
            let kind = match &e {
                crate::storage::ProbeError::Path { source, .. } => source.kind(),
                _ => io::ErrorKind::Other,
            };
            ("examining the storage of", path.to_owned(), io::Error::new(kind, e.to_string()))
        })?;
        if !v.kind.is_local() {
            return Ok(Some((path.to_owned(), what, v)));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_hashed_matches_sha256_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        std::fs::write(&a, vec![7u8; 3 << 20]).unwrap();
        let b = dir.path().join("b");
        let (h1, n) = copy_hashed(&a, &b).unwrap();
        assert_eq!(n, 3 << 20);
        assert_eq!(sha256_file(&b, None).unwrap(), (h1.clone(), n));
        assert_eq!(std::fs::metadata(&b).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(copy_hashed(&a, &b).is_err(), "never over an existing file");
    }

    #[test]
    fn headroom_is_ten_percent_and_a_mebibyte() {
        assert_eq!(with_headroom(0), 1 << 20);
        assert_eq!(with_headroom(1000), 1100 + (1 << 20));
    }
}

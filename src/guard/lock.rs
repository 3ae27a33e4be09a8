//! The single-writer lock: one engine per database, enforced by the kernel.
//!
//! Owns: the lock file `<db>-warden.lock` beside the database, the OFD lock on it (Linux;
//! `flock` elsewhere or where OFD locks are unsupported), the in-process registry that lets
//! several engine connections of one process share the lock (or refuses them, per
//! [`WriterScope`]), and the holder record written into the file for diagnostics. Does not
//! own: SQLite's own locks, which it never touches, or when to take the lock (the VFS takes
//! it on an engine open, see [`crate::guard::vfs`]).
//!
//! Why a separate file and an OFD lock:
//! - SQLite's RESERVED/EXCLUSIVE locks exist only during a transaction; between
//!   transactions any process could start writing.
//! - `locking_mode=EXCLUSIVE` would also lock out readers, which must never be blocked.
//! - A lock on the database file itself would need our own descriptor, and closing any
//!   descriptor of a file drops every POSIX lock the process holds on it, SQLite's included.
//! - An OFD lock belongs to the open file description: the kernel drops it the moment the
//!   holder dies (`kill -9` included), so staleness is never judged by pid, which is reused
//!   and is 1 in every container. The descriptor is close-on-exec, so an engine's child
//!   processes do not inherit it.
//!
//! The file is never unlinked: unlinking a locked file lets a second process create a new
//! file of the same name and lock that one. After locking, the descriptor's inode is
//! compared with the path's, and the lock is retried if someone replaced the file.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};

use serde::{Deserialize, Serialize};

use crate::guard::inode_lock::{self, Inode, InodeLock};
use crate::util::identity::{ProcessIdentity, now_rfc3339};

/// Suffix of the lock file; avoids SQLite's own `-journal`, `-wal`, `-shm`, `-mj` and the
/// `.lock` directory of the `unix-dotfile` VFS.
pub const LOCK_SUFFIX: &str = "-warden.lock";

/// How many engine connections of one process may share the writer lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WriterScope {
    /// Every engine connection in the holding process may open the database (default: an
    /// engine with a writer and a reader connection is still one writer process).
    #[default]
    Process,
    /// Exactly one engine connection at a time, even within one process.
    Connection,
}

/// Who holds (or last held) the lock, as the holder wrote it. Diagnostic only: the kernel
/// lock, not this record, decides whether the lock is held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// The holding process.
    #[serde(flatten)]
    pub process: ProcessIdentity,
    /// When the lock was taken (RFC 3339 UTC).
    pub since: String,
    /// The warden version that took it.
    pub version: String,
}

impl Holder {
    fn current() -> Self {
        Holder {
            process: ProcessIdentity::current(),
            since: now_rfc3339(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }

    /// One line for messages: `pid 42 (/usr/bin/engine) on host vps1 since …`.
    pub fn describe(&self) -> String {
        let exe = self.process.exe.as_deref().map(|e| format!(" ({e})")).unwrap_or_default();
        format!("pid {}{exe} on host {} since {}", self.process.pid, self.process.host, self.since)
    }
}

/// The database's state when the engine last closed it; compared at the next open to
/// detect writes that did not go through warden.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloseState {
    /// File change counter (header bytes 24..28), when the file had a header.
    pub change_counter: Option<u32>,
    /// File size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i128,
    /// Inode number (a replaced file has another).
    pub ino: u64,
    /// When it was recorded.
    pub at: String,
}

impl CloseState {
    /// Reads size, mtime and inode of `db` (the change counter comes from the caller, who
    /// reads it through SQLite's own file handle). `None` if the file is gone.
    pub fn observe(db: &Path, change_counter: Option<u32>) -> Option<Self> {
        let md = std::fs::metadata(db).ok()?;
        Some(CloseState {
            change_counter,
            size: md.len(),
            mtime_ns: i128::from(md.mtime()) * 1_000_000_000 + i128::from(md.mtime_nsec()),
            ino: md.ino(),
            at: now_rfc3339(),
        })
    }

    /// True when `now` differs from this recorded state in anything but the timestamp.
    pub fn differs(&self, now: &CloseState) -> bool {
        (self.change_counter, self.size, self.mtime_ns, self.ino)
            != (now.change_counter, now.size, now.mtime_ns, now.ino)
    }
}

/// The record kept in the lock file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockRecord {
    /// Record format version.
    pub schema: u32,
    /// `held` while a writer has it; `released` after a clean release. A record that says
    /// `held` while the kernel lock is free means the last holder died without closing.
    pub state: RecordState,
    /// The current or last holder.
    pub holder: Holder,
    /// The database as the last clean close left it.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub last_close: Option<CloseState>,
    /// The `warden run` session holding the lock, when one does.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub session: Option<String>,
    /// The one process the session handed the lock to ([`INHERIT_FD_ENV`]): only it may
    /// adopt the inherited descriptor, not a grandchild or another process that inherited it.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub engine_pid: Option<u32>,
}

/// Whether the record was written by a live holder or at a clean release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordState {
    /// Written when the lock was taken.
    Held,
    /// Written when the lock was released cleanly.
    Released,
}

/// The lock file for a database: beside the file the name resolves to (symlinks and `..`
/// resolved), so every alias of one database finds the same lock file.
pub fn lock_path_for(db: &Path) -> PathBuf {
    crate::format::names::lock(&crate::storage::resolve(db).unwrap_or_else(|_| db.to_owned()))
}

struct HeldLock {
    file: File,
    refs: usize,
    scope: WriterScope,
    record: LockRecord,
    /// Inherited from a session runner ([`INHERIT_FD_ENV`]): the runner holds the same open
    /// file description, so releasing here never frees the lock while the runner lives.
    inherited: bool,
    /// The process that took it. A child forked from it inherits this registry in its copy
    /// of memory, but is not the writer: it must not join the hold.
    pid: u32,
    /// The database's inode lock, once taken (see `guard::inode_lock`); `None` while the
    /// database does not exist yet, and for an inherited lock (the runner holds it).
    inode: Option<Inode>,
    /// The record of a previous holder that died holding the lock: written back when this
    /// hold ends without a clean close, so a failed open never erases the evidence that the
    /// engine before it crashed.
    crashed_before: Option<LockRecord>,
}

/// Environment variable through which `warden run` hands its writer lock to the engine it
/// starts: the number of an inherited descriptor of the lock file. The descriptor shares the
/// runner's open file description, so runner and engine hold *one* OFD lock: the lock stays
/// held from before the integrity gate until after the post-session backup, whichever of the
/// two dies first. A guarded engine adopts it at its first engine open (the descriptor must
/// refer to that database's lock file) and marks it close-on-exec, so the engine's own
/// children never inherit it.
pub const INHERIT_FD_ENV: &str = "WARDEN_LOCK_FD";

/// The inherited descriptor while no engine connection of this process uses it: kept open,
/// because closing it would leave only the runner's reference, and a later engine open in
/// this process could then not take the lock the runner holds.
fn parked_inherited() -> MutexGuard<'static, Option<(Key, File)>> {
    static SLOT: OnceLock<Mutex<Option<(Key, File)>>> = OnceLock::new();
    SLOT.get_or_init(Mutex::default).lock().unwrap_or_else(PoisonError::into_inner)
}

/// Takes the descriptor named by [`INHERIT_FD_ENV`], at most once per process, if it is open
/// and is the lock file at `lock_path`.
fn take_inherited(lock_path: &Path) -> Option<File> {
    let want = std::fs::metadata(lock_path).ok()?;
    {
        // Handed back by an earlier release in this process: the engine reconnected.
        let mut parked = parked_inherited();
        if parked.as_ref().is_some_and(|(k, _)| *k == key_of(&want)) {
            return parked.take().map(|(_, f)| f);
        }
    }
    let fd: i32 = std::env::var(INHERIT_FD_ENV).ok()?.trim().parse().ok()?;
    if !handed_to_us(lock_path) {
        return None;
    }
    crate::sys::handoff::adopt(fd, want.dev(), want.ino())
}

/// True when the lock record names this process as the one the session handed the lock
/// to. The runner records the engine's pid right after starting it, so a freshly started
/// engine may read the record a moment before it is there: wait for it, briefly.
fn handed_to_us(lock_path: &Path) -> bool {
    let me = std::process::id();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    loop {
        // Reading the lock file through a descriptor of its own and closing it releases
        // nothing: the lock is an OFD lock on the runner's description, and the lock file
        // holds no SQLite locks.
        let pid = File::open(lock_path).ok().and_then(|mut f| read_record(&mut f)).and_then(|r| r.engine_pid);
        match pid {
            Some(p) => return p == me,
            None if std::time::Instant::now() >= deadline => return false,
            None => std::thread::sleep(std::time::Duration::from_millis(5)),
        }
    }
}

type Key = (u64, u64);

fn registry() -> MutexGuard<'static, HashMap<Key, HeldLock>> {
    static MAP: OnceLock<Mutex<HashMap<Key, HeldLock>>> = OnceLock::new();
    MAP.get_or_init(Mutex::default).lock().unwrap_or_else(PoisonError::into_inner)
}

/// One reference to the writer lock of a database. The lock is released when the last
/// reference in the process is released or dropped.
#[derive(Debug)]
pub struct WriterLock {
    key: Key,
    db: PathBuf,
    lock_path: PathBuf,
    released: bool,
}

/// The outcome of [`WriterLock::acquire`].
#[derive(Debug)]
pub struct Acquired {
    /// The reference to keep while writing.
    pub lock: WriterLock,
    /// True when this call took the kernel lock; false when it joined this process's hold.
    pub newly_taken: bool,
    /// The record left by the previous holder, when this call took the lock.
    pub previous: Option<LockRecord>,
    /// The holder recorded in the lock file (this process, or the `warden run` session
    /// that handed the lock over).
    pub holder: Holder,
    /// The lock was handed over by a session runner ([`INHERIT_FD_ENV`]) at this call.
    pub inherited: bool,
}

fn io_err(lock_path: PathBuf) -> impl Fn(io::Error) -> LockError {
    move |source| LockError::Io { lock_path: lock_path.clone(), source }
}

enum TryLock {
    Locked,
    Busy,
}

/// `F_OFD_SETLK` on the whole file, falling back to `flock` where OFD locks are missing.
fn try_lock_exclusive(file: &File) -> io::Result<TryLock> {
    #[cfg(target_os = "linux")]
    {
        let fl = libc::flock {
            l_type: libc::F_WRLCK as libc::c_short,
            l_whence: libc::SEEK_SET as libc::c_short,
            l_start: 0,
            l_len: 0,
            l_pid: 0,
        };
        match nix::fcntl::fcntl(file, nix::fcntl::FcntlArg::F_OFD_SETLK(&fl)) {
            Ok(_) => return Ok(TryLock::Locked),
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EACCES) => return Ok(TryLock::Busy),
            Err(nix::errno::Errno::EINVAL) => {} // kernel without OFD locks: use flock
            Err(e) => return Err(e.into()),
        }
    }
    match file.try_lock() {
        Ok(()) => Ok(TryLock::Locked),
        Err(std::fs::TryLockError::WouldBlock) => Ok(TryLock::Busy),
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

/// Is a write lock held on `file` by anyone (another process or descriptor)? Never takes it.
fn probe_held(file: &File) -> io::Result<bool> {
    #[cfg(target_os = "linux")]
    {
        let mut fl = libc::flock {
            l_type: libc::F_WRLCK as libc::c_short,
            l_whence: libc::SEEK_SET as libc::c_short,
            l_start: 0,
            l_len: 0,
            l_pid: 0,
        };
        match nix::fcntl::fcntl(file, nix::fcntl::FcntlArg::F_OFD_GETLK(&mut fl)) {
            Ok(_) => return Ok(fl.l_type != libc::F_UNLCK as libc::c_short),
            Err(nix::errno::Errno::EINVAL) => {}
            Err(e) => return Err(e.into()),
        }
    }
    match file.try_lock_shared() {
        Ok(()) => {
            let _ = file.unlock();
            Ok(false)
        }
        Err(std::fs::TryLockError::WouldBlock) => Ok(true),
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

/// Reads the first JSON value in the lock file. A writer replaces the record in place
/// (write, then truncate), so a reader may see trailing bytes of an older, longer record:
/// only the first value counts.
fn read_record(file: &mut File) -> Option<LockRecord> {
    let mut buf = Vec::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.read_to_end(&mut buf).ok()?;
    serde_json::Deserializer::from_slice(&buf).into_iter::<LockRecord>().next()?.ok()
}

fn write_record(file: &mut File, rec: &LockRecord) -> io::Result<()> {
    let mut bytes = serde_json::to_vec(rec).map_err(io::Error::other)?;
    bytes.push(b'\n');
    file.seek(SeekFrom::Start(0))?;
    file.write_all(&bytes)?;
    file.set_len(bytes.len() as u64)?;
    Ok(())
}

fn key_of(md: &std::fs::Metadata) -> Key {
    (md.dev(), md.ino())
}

/// Tries the lock again for up to half a second: true once it is ours.
fn own_copy_released(file: &File) -> io::Result<bool> {
    for _ in 0..50 {
        std::thread::sleep(std::time::Duration::from_millis(10));
        if let TryLock::Locked = try_lock_exclusive(file)? {
            return Ok(true);
        }
    }
    Ok(false)
}

impl WriterLock {
    /// Takes the writer lock of `db` without waiting.
    ///
    /// The database need not exist yet; its directory must. Within one process, a second
    /// call for the same database joins the hold under [`WriterScope::Process`] and is
    /// refused under [`WriterScope::Connection`].
    ///
    /// # Errors
    /// [`LockError::Held`] with the holder's record when another writer has it;
    /// [`LockError::Io`] when the lock file cannot be created, locked or written.
    pub fn acquire(db: &Path, scope: WriterScope) -> Result<Acquired, LockError> {
        let resolved = crate::storage::resolve(db)
            .map_err(|source| LockError::Io { lock_path: crate::format::names::lock(db), source })?;
        let db = resolved.as_path();
        let lock_path = crate::format::names::lock(db);
        let err = io_err(lock_path.clone());
        let mut reg = registry();
        for _attempt in 0..8 {
            if let Ok(md) = std::fs::metadata(&lock_path) {
                let key = key_of(&md);
                if let Some(h) = reg.get_mut(&key) {
                    if h.pid != std::process::id() {
                        return Err(LockError::Forked { db: db.to_owned(), holder_pid: h.pid });
                    }
                    if h.scope == WriterScope::Process && scope == WriterScope::Process {
                        h.refs += 1;
                        let holder = h.record.holder.clone();
                        let lock = WriterLock { key, db: db.to_owned(), lock_path: lock_path.clone(), released: false };
                        return Ok(Acquired { lock, newly_taken: false, previous: None, holder, inherited: false });
                    }
                    return Err(LockError::Held {
                        db: db.to_owned(),
                        lock_path,
                        holder: Some(Box::new(h.record.holder.clone())),
                    });
                }
            }
            if let Some(mut file) = take_inherited(&lock_path) {
                // Re-locking through the shared description succeeds (it is ours); if the
                // runner died and someone else took the lock meanwhile, it is refused.
                if let TryLock::Busy = try_lock_exclusive(&file).map_err(&err)? {
                    let holder = read_record(&mut file).map(|r| Box::new(r.holder));
                    return Err(LockError::Held { db: db.to_owned(), lock_path, holder });
                }
                let md = file.metadata().map_err(&err)?;
                let record = read_record(&mut file).unwrap_or_else(|| LockRecord {
                    schema: 1,
                    state: RecordState::Held,
                    holder: Holder::current(),
                    last_close: None,
                    session: None,
                    engine_pid: None,
                });
                let key = key_of(&md);
                let holder = record.holder.clone();
                reg.insert(
                    key,
                    HeldLock {
                        file,
                        refs: 1,
                        scope,
                        record,
                        inherited: true,
                        pid: std::process::id(),
                        inode: None,
                        crashed_before: None,
                    },
                );
                let lock = WriterLock { key, db: db.to_owned(), lock_path, released: false };
                return Ok(Acquired { lock, newly_taken: false, previous: None, holder, inherited: true });
            }
            let mode = std::fs::metadata(db).map(|m| m.permissions().mode() & 0o666).unwrap_or(0o644);
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(mode)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&lock_path)
                .map_err(|e| not_a_file(&lock_path, &e).unwrap_or_else(|| err(e)))?;
            if let TryLock::Busy = try_lock_exclusive(&file).map_err(&err)? {
                let holder = read_record(&mut file).map(|r| Box::new(r.holder));
                // Recorded as ours, yet not in this process's registry: the lock we just
                // released lives on in a child this process is forking (another thread's
                // `Command::spawn`), which holds a copy of the description until its `exec`
                // closes it. Wait for that, briefly, instead of refusing ourselves.
                let ours = holder.as_ref().is_some_and(|h| h.process.pid == std::process::id());
                if !(ours && own_copy_released(&file).map_err(&err)?) {
                    return Err(LockError::Held { db: db.to_owned(), lock_path, holder });
                }
            }
            // The file we locked must still be the one at the path; if it was replaced
            // between open and lock, our lock protects nothing: retry on the new file.
            let ours = file.metadata().map_err(&err)?;
            match std::fs::metadata(&lock_path) {
                Ok(md) if key_of(&md) == key_of(&ours) => {}
                _ => continue,
            }
            // The file itself, whatever name reached it: a writer through a hard link or a
            // bind mount has its own lock file, but not its own inode.
            let inode = match inode_lock::lock(db).map_err(&err)? {
                InodeLock::Taken(i) => Some(i),
                InodeLock::NoFile => None,
                InodeLock::Busy(_) => return Err(LockError::HeldElsewhere { db: db.to_owned() }),
            };
            let previous = read_record(&mut file);
            let record = LockRecord {
                schema: 1,
                state: RecordState::Held,
                holder: Holder::current(),
                last_close: previous.as_ref().and_then(|p| p.last_close.clone()),
                session: None,
                engine_pid: None,
            };
            write_record(&mut file, &record).map_err(&err)?;
            let key = key_of(&ours);
            let holder = record.holder.clone();
            reg.insert(
                key,
                HeldLock {
                    file,
                    refs: 1,
                    scope,
                    record,
                    inherited: false,
                    pid: std::process::id(),
                    inode,
                    crashed_before: previous.clone().filter(|p| p.state == RecordState::Held),
                },
            );
            let lock = WriterLock { key, db: db.to_owned(), lock_path, released: false };
            return Ok(Acquired { lock, newly_taken: true, previous, holder, inherited: false });
        }
        Err(err(io::Error::other("the lock file kept being replaced while locking it")))
    }

    /// Names the `warden run` session in the holder record (diagnostic).
    ///
    /// # Errors
    /// [`LockError::Io`] when the record cannot be written.
    pub fn set_session(&self, session: &str) -> Result<(), LockError> {
        let mut reg = registry();
        let Some(h) = reg.get_mut(&self.key) else {
            return Ok(());
        };
        h.record.session = Some(session.to_owned());
        write_record(&mut h.file, &h.record).map_err(io_err(self.lock_path.clone()))
    }

    /// Names the process the lock is handed to (the engine `warden run` started): only that
    /// process may adopt the inherited descriptor.
    ///
    /// # Errors
    /// [`LockError::Io`] when the record cannot be written.
    pub fn set_engine_pid(&self, pid: u32) -> Result<(), LockError> {
        let mut reg = registry();
        let Some(h) = reg.get_mut(&self.key) else {
            return Ok(());
        };
        h.record.engine_pid = Some(pid);
        write_record(&mut h.file, &h.record).map_err(io_err(self.lock_path.clone()))
    }

    /// A new descriptor of the lock file, **without** close-on-exec, sharing this lock's open
    /// file description: a child started with it (and [`INHERIT_FD_ENV`] naming it) holds
    /// the same lock. Drop it in the parent once the child is started.
    ///
    /// # Errors
    /// [`LockError::Io`] when the descriptor cannot be duplicated.
    pub fn inheritable_fd(&self) -> Result<std::os::fd::OwnedFd, LockError> {
        let reg = registry();
        let err = io_err(self.lock_path.clone());
        let h = reg.get(&self.key).ok_or_else(|| err(io::Error::other("the lock is not held")))?;
        // dup(2) never copies FD_CLOEXEC: the duplicate is inherited across exec.
        nix::unistd::dup(&h.file).map_err(|e| err(e.into()))
    }

    /// Re-validates the hold at the start of a write transaction (cheap: one `stat`):
    /// this process took it (not a forked child), the lock file at the path is still the one
    /// locked (not deleted or replaced, which would let a second engine lock a new file), and
    /// the database's inode lock is held, taken now if the file did not exist before.
    ///
    /// # Errors
    /// [`LockError::Forked`], [`LockError::Replaced`] or [`LockError::HeldElsewhere`]: the
    /// write must not start.
    pub fn check_write(&self) -> Result<(), LockError> {
        let mut reg = registry();
        let Some(h) = reg.get_mut(&self.key) else {
            return Err(LockError::Replaced { db: self.db.clone(), lock_path: self.lock_path.clone() });
        };
        if h.pid != std::process::id() {
            return Err(LockError::Forked { db: self.db.clone(), holder_pid: h.pid });
        }
        match std::fs::metadata(&self.lock_path) {
            Ok(md) if key_of(&md) == self.key => {}
            _ => return Err(LockError::Replaced { db: self.db.clone(), lock_path: self.lock_path.clone() }),
        }
        if h.inode.is_none() && !h.inherited {
            match inode_lock::lock(&self.db).map_err(io_err(self.lock_path.clone()))? {
                InodeLock::Taken(i) => h.inode = Some(i),
                InodeLock::NoFile => {}
                InodeLock::Busy(_) => return Err(LockError::HeldElsewhere { db: self.db.clone() }),
            }
        }
        Ok(())
    }

    /// The lock file.
    pub fn lock_path(&self) -> &Path {
        &self.lock_path
    }

    /// The database this lock guards.
    pub fn db(&self) -> &Path {
        &self.db
    }

    /// True when the lock was handed over by a session runner, which keeps holding it.
    pub fn is_inherited(&self) -> bool {
        registry().get(&self.key).is_some_and(|h| h.inherited)
    }

    /// True when this is the only reference in the process, so releasing it frees the lock.
    pub fn is_last(&self) -> bool {
        registry().get(&self.key).is_some_and(|h| h.refs == 1)
    }

    /// Releases this reference. When it is the last one, `close_state` is recorded in the
    /// lock file as the database's state at a clean close, and the kernel lock is dropped.
    pub fn release(mut self, close_state: Option<CloseState>) {
        self.release_inner(close_state);
    }

    fn release_inner(&mut self, close_state: Option<CloseState>) {
        if self.released {
            return;
        }
        self.released = true;
        let mut reg = registry();
        let Some(h) = reg.get_mut(&self.key) else {
            return;
        };
        h.refs -= 1;
        if h.refs > 0 {
            return;
        }
        if let Some(mut h) = reg.remove(&self.key) {
            if h.inherited {
                // The runner still holds the lock (same description) and owns the record;
                // only the close state is ours to add. Closing our descriptor does not free it.
                if let Some(c) = close_state
                    && let Some(mut rec) = read_record(&mut h.file)
                {
                    rec.last_close = Some(c);
                    let _ = write_record(&mut h.file, &rec);
                }
                *parked_inherited() = Some((self.key, h.file));
                return;
            }
            if let Some(inode) = h.inode {
                inode_lock::unlock(inode);
            }
            if close_state.is_none()
                && let Some(crashed) = h.crashed_before.take()
            {
                // No clean close happened in this hold: the last clean state is still the
                // crashed engine's, and so is the evidence.
                if let Err(e) = write_record(&mut h.file, &crashed) {
                    tracing::warn!(lock = %self.lock_path.display(), error = %e, "could not restore the crash record");
                }
                return;
            }
            h.record.state = RecordState::Released;
            if close_state.is_some() {
                h.record.last_close = close_state;
            }
            // Best effort: the record is diagnostic; the lock is dropped with the file.
            if let Err(e) = write_record(&mut h.file, &h.record) {
                tracing::warn!(lock = %self.lock_path.display(), error = %e, "could not record the clean release");
            }
        }
    }
}

impl Drop for WriterLock {
    fn drop(&mut self) {
        self.release_inner(None);
    }
}

/// What `warden lock` reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LockStatus {
    /// The database.
    pub db: PathBuf,
    /// The lock file.
    pub lock_path: PathBuf,
    /// Whether a writer holds it now.
    pub state: LockState,
    /// The record in the file: the holder when held, the last holder otherwise.
    pub record: Option<LockRecord>,
}

/// Whether the writer lock is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LockState {
    /// A writer holds it.
    Held,
    /// Nobody holds it, and the last holder released it cleanly (or there was none).
    Free,
    /// Nobody holds it, but the last holder never released it: it died or was killed.
    FreeAfterCrash,
    /// No lock file: no guarded engine has opened this database.
    NeverUsed,
}

/// Reports whether a writer holds the lock of `db`, without ever taking it (readers and
/// status commands must not block the engine).
///
/// # Errors
/// [`LockError::Io`] when the lock file exists but cannot be read or tested.
pub fn inspect(db: &Path) -> Result<LockStatus, LockError> {
    let lock_path = lock_path_for(db);
    let db = &crate::storage::resolve(db).unwrap_or_else(|_| db.to_owned());
    let err = io_err(lock_path.clone());
    let mut file = match File::open(&lock_path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(LockStatus { db: db.to_owned(), lock_path, state: LockState::NeverUsed, record: None });
        }
        Err(e) => return Err(err(e)),
    };
    if let Ok(md) = file.metadata()
        && !md.is_file()
    {
        return Err(LockError::NotAFile {
            lock_path,
            kind: if md.is_dir() { "a directory" } else { "not a regular file" },
        });
    }
    let in_process = file.metadata().ok().is_some_and(|md| registry().contains_key(&key_of(&md)));
    let held = in_process || probe_held(&file).map_err(&err)?;
    let record = read_record(&mut file);
    let state = match (held, record.as_ref().map(|r| r.state)) {
        (true, _) => LockState::Held,
        (false, Some(RecordState::Held)) => LockState::FreeAfterCrash,
        (false, _) => LockState::Free,
    };
    Ok(LockStatus { db: db.to_owned(), lock_path, state, record })
}

/// Taking or reading the single-writer lock failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    /// Another writer holds the lock.
    #[error("`{db}` already has a writer: {}\n(hint: stop that engine first; `warden lock {}` shows the holder)", holder_text(holder.as_deref()), db.display())]
    Held {
        /// The database.
        db: PathBuf,
        /// The lock file.
        lock_path: PathBuf,
        /// Who holds it, as the holder recorded it (diagnostic only).
        holder: Option<Box<Holder>>,
    },
    /// The database file is locked by a writer that reached it through another name: a
    /// hard link, a bind mount, another path to the same directory.
    #[error(
        "`{db}` already has a writer that opened it under another name (a hard link, a bind-mounted file or another path to it)\n(hint: find it with `fuser -v {}`; one file has exactly one writer, whatever its name)",
        db.display()
    )]
    HeldElsewhere {
        /// The database (resolved).
        db: PathBuf,
    },
    /// A process forked from the writer tried to write: it shares the writer's memory and
    /// descriptors, but it is not the writer.
    #[error(
        "refusing to write `{db}` from a forked child of the writer (pid {holder_pid})\n(hint: open the database in the parent only, or start the child with exec / the `spawn` start method)"
    )]
    Forked {
        /// The database.
        db: PathBuf,
        /// The writer process the child was forked from.
        holder_pid: u32,
    },
    /// The lock file was deleted or replaced while the lock was held: a second engine could
    /// now lock a new file of that name.
    #[error(
        "the writer lock file `{lock_path}` of `{db}` was removed or replaced while this engine held it; refusing to write\n(hint: never delete `*-warden.lock` files; stop every engine of this database and start one again)"
    )]
    Replaced {
        /// The database.
        db: PathBuf,
        /// The lock file.
        lock_path: PathBuf,
    },
    /// Something else than a regular file is where the lock file belongs.
    #[error(
        "`{}` is {kind}, where warden keeps the writer lock file\n(hint: move it away if it is not yours to keep (`mv {} {}.moved`); warden recreates the lock file)",
        lock_path.display(), lock_path.display(), lock_path.display()
    )]
    NotAFile {
        /// The lock path.
        lock_path: PathBuf,
        /// What is there instead (`a directory`, `a symlink`, …).
        kind: &'static str,
    },
    /// The lock file could not be opened, locked or written.
    #[error("cannot use the writer lock file `{lock_path}`: {source}")]
    Io {
        /// The lock file.
        lock_path: PathBuf,
        /// What the system said.
        #[source]
        source: io::Error,
    },
}

impl LockError {
    /// The exit code for this error (the table in `util::exit`): another writer or a lost
    /// hold is a temporary failure, a forked child may not write, the rest is I/O.
    pub fn exit_code(&self) -> u8 {
        use crate::util::exit;
        match self {
            LockError::Held { .. } | LockError::HeldElsewhere { .. } | LockError::Replaced { .. } => exit::TEMPFAIL,
            LockError::Forked { .. } => exit::NOPERM,
            LockError::NotAFile { .. } => exit::CANTCREAT,
            LockError::Io { .. } => exit::IOERR,
        }
    }
}

/// The error for a lock path that holds something else than a regular file: `EISDIR`
/// from opening a directory, `ELOOP` from `O_NOFOLLOW` on a symlink.
fn not_a_file(lock_path: &Path, e: &io::Error) -> Option<LockError> {
    let kind = match e.raw_os_error()? {
        libc::EISDIR => "a directory",
        libc::ELOOP => "a symlink",
        _ => return None,
    };
    Some(LockError::NotAFile { lock_path: lock_path.to_owned(), kind })
}

pub(crate) fn holder_text(h: Option<&Holder>) -> String {
    match h {
        Some(h) => h.describe(),
        None => "holder details unavailable".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_process_scopes() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("a.db");
        let a = WriterLock::acquire(&db, WriterScope::Process).unwrap();
        assert!(a.newly_taken);
        let b = WriterLock::acquire(&db, WriterScope::Process).unwrap();
        assert!(!b.newly_taken);
        let c = WriterLock::acquire(&db, WriterScope::Connection).unwrap_err();
        assert!(matches!(c, LockError::Held { holder: Some(_), .. }), "{c}");
        assert_eq!(inspect(&db).unwrap().state, LockState::Held);
        drop(b);
        assert_eq!(inspect(&db).unwrap().state, LockState::Held, "a still holds it");
        a.lock.release(CloseState::observe(&db, None));
        let st = inspect(&db).unwrap();
        assert_eq!(st.state, LockState::Free);
        assert_eq!(st.record.unwrap().state, RecordState::Released);
        assert!(lock_path_for(&db).exists(), "lock file is never unlinked");
    }

    #[test]
    fn record_with_stale_tail_parses() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x");
        let rec = LockRecord {
            schema: 1,
            state: RecordState::Held,
            holder: Holder::current(),
            last_close: None,
            session: Some("s".into()),
            engine_pid: None,
        };
        let mut bytes = serde_json::to_vec(&rec).unwrap();
        bytes.extend_from_slice(b"\n\"tail of an older record\"}}");
        std::fs::write(&p, bytes).unwrap();
        let mut f = File::open(&p).unwrap();
        assert_eq!(read_record(&mut f).unwrap(), rec);
    }
}

//! Foreign writers during a session: another process with the database open for writing
//! while `warden run`'s engine runs.
//!
//! Owns: looking every [`SessionConfig::foreign_writer_every`](super::SessionConfig) (default
//! [`DEFAULT_EVERY`], 2 s; once more right after the engine exits) at which processes hold
//! the database, its `-wal` or its `-journal` ([`crate::storage::openers::scan`], by device
//! and inode, so a hard link, a symlink or a bind mount is the same file); deciding which
//! of them are foreign writers; recording each once in the artifact (`foreign_writers`) and
//! in the audit log (`foreign_writer`, the process named); and, with
//! [`OnForeignWriter::Stop`], sending the engine SIGTERM once, as a forwarded signal would.
//! Does not own: the scan itself (`storage::openers`), the supervisor loop that calls
//! [`Watch::tick`] ([`super::run`]), or what the session's end makes of a stop
//! ([`super::Session::finish`]: status `foreign_writer_stopped`, failed step
//! `foreign_writer`, exit [`crate::util::exit::FOREIGN_WRITER`]; the post-session backup is
//! still taken).
//!
//! Not foreign: warden itself; the engine; every process in the engine's process group (it
//! is spawned as a group leader), which keeps a child the engine left behind when it exited;
//! every descendant of the engine (parent pids walked up), which covers a child that moved
//! to a group of its own. A foreign **writer** holds the database with write access
//! (`O_WRONLY` or `O_RDWR` in `/proc/PID/fdinfo/FD`), or a `-wal` or `-journal` with write
//! access and no descriptor of the database at all (a raw writer of the side file). A process
//! whose database descriptors are all read-only is a reader even when its `-wal` is
//! read-write: SQLite opens the `-wal` read-write for read-only connections too. The `-shm`
//! is never looked at: every WAL reader maps it read-write.
//!
//! What the watch cannot see is listed in [`crate::storage::openers`]: in short, processes
//! this user may not inspect (run warden as root to see every process; their count is in
//! `uninspectable`), processes outside this PID namespace or host, writes between two looks
//! by a descriptor opened and closed in between, and writes without a descriptor (a shared
//! `mmap` kept after closing, io_uring registered files, loop devices). The content of the
//! database after the session cannot tell the engine's writes from anyone else's: the
//! post-session backup (and a seal of it) records what is there, whoever wrote it, so this
//! watch is the evidence of who else could write.
//!
//! Cost: one look reads `/proc/*/fd` of every process, `readlink`s each descriptor and
//! `stat`s only the ones naming a file, on the supervisor's thread (it delays nothing but
//! noticing the engine's exit). Measured once on the 2-vCPU development VM, release build:
//! 0.6 ms for 74 processes holding 400 descriptors (median of 50 looks), 56 ms for 1 080
//! processes holding 13 400 (about 3 % of one core at the default 2 s).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::Session;
use crate::guard::audit::{AuditEvent, AuditRecord};
use crate::storage::openers::{self, Opener, Target};
use crate::util::identity::now_rfc3339;

/// How often the watch looks by default.
pub const DEFAULT_EVERY: Duration = Duration::from_secs(2);

/// The shortest interval accepted.
pub const MIN_EVERY: Duration = Duration::from_millis(100);

/// What a foreign writer makes the session do (`[session] on_foreign_writer`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnForeignWriter {
    /// Record it (artifact, audit log, `warden status`); the engine keeps running.
    #[default]
    Warn,
    /// Record it and stop the engine (SIGTERM, once); the session ends with status
    /// `foreign_writer_stopped` and exit 17 after its post-session backup.
    Stop,
}

impl OnForeignWriter {
    /// `warn` or `stop`.
    pub fn as_str(self) -> &'static str {
        match self {
            OnForeignWriter::Warn => "warn",
            OnForeignWriter::Stop => "stop",
        }
    }

    /// Parses `warn` or `stop`.
    ///
    /// # Errors
    /// The message, with a hint, for anything else.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.trim() {
            "warn" => Ok(OnForeignWriter::Warn),
            "stop" => Ok(OnForeignWriter::Stop),
            other => Err(format!("`{other}` (hint: `warn` or `stop`)")),
        }
    }
}

/// One foreign writer, as first seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForeignWriter {
    /// The process and the descriptors it held (files seen later are added).
    #[serde(flatten)]
    pub process: Opener,
    /// The look that first saw it (RFC 3339 UTC).
    pub first_seen_at: String,
    /// The first look that no longer saw it with write access; `None` while it still had
    /// the database open for writing at the last look.
    #[serde(default)]
    pub gone_at: Option<String>,
}

/// The artifact's `foreign_writers` section: the watch of one session.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForeignWriterWatch {
    /// `warn` or `stop`.
    pub policy: OnForeignWriter,
    /// The interval between looks.
    pub every_ms: u64,
    /// Looks taken.
    pub scans: u64,
    /// When the last look was taken.
    pub last_scan_at: Option<String>,
    /// The slowest look, in milliseconds.
    pub slowest_scan_ms: u64,
    /// Processes the last look could not inspect (other users' processes when warden is not
    /// root, `hidepid`): what they hold is unknown.
    pub uninspectable: usize,
    /// Every foreign writer, once each (pid and start time), in the order found.
    pub writers: Vec<ForeignWriter>,
    /// With `stop`: when the engine was sent SIGTERM because of a foreign writer.
    pub stopped_engine_at: Option<String>,
    /// Why a look failed (`/proc` unreadable); the last such error.
    pub error: Option<String>,
}

/// What a look found that the supervisor should tell the operator.
#[derive(Debug, Clone)]
pub enum WatchNotice {
    /// A new foreign writer.
    Found(String),
    /// The engine was sent SIGTERM because of it (`stop`).
    StoppingEngine(u32),
}

/// The watch of one running engine. [`Watch::tick`] from the supervisor loop.
#[derive(Debug)]
pub struct Watch {
    db: PathBuf,
    engine: u32,
    every: Duration,
    next: Instant,
    summary: ForeignWriterWatch,
    known: HashMap<(u32, Option<u64>), usize>,
    exited: bool,
}

impl Watch {
    /// The watch for `engine`, recorded in the session's artifact at once. The first look is
    /// taken at the first [`Watch::tick`].
    pub fn start(session: &mut Session, engine: u32) -> Watch {
        let config = session.config();
        let every = config.foreign_writer_every.max(MIN_EVERY);
        let summary = ForeignWriterWatch {
            policy: config.on_foreign_writer,
            every_ms: u64::try_from(every.as_millis()).unwrap_or(u64::MAX),
            ..Default::default()
        };
        let db = session.db().to_owned();
        session.record_foreign_writers(summary.clone(), true);
        Watch { db, engine, every, next: Instant::now(), summary, known: HashMap::new(), exited: false }
    }

    /// Takes a look when one is due, records what is new, and with `stop` signals the
    /// engine. `exited`: the engine has exited and was reaped; look at once, and never signal
    /// its pid, which may belong to another process by now. Returns what to tell the operator.
    pub fn tick(&mut self, session: &mut Session, exited: bool) -> Vec<WatchNotice> {
        if exited {
            self.exited = true;
        } else if Instant::now() < self.next {
            return Vec::new();
        }
        self.next = Instant::now() + self.every;
        let mut notices = Vec::new();
        let changed = self.look(session, &mut notices);
        session.record_foreign_writers(self.summary.clone(), changed);
        notices
    }

    fn targets(&self) -> Vec<Target> {
        [("", "database"), ("-wal", "-wal"), ("-journal", "-journal")]
            .into_iter()
            .filter_map(|(suffix, label)| Target::of(&crate::format::names::sidecar(&self.db, suffix), label).ok()?)
            .collect()
    }

    /// One look; true when the artifact should be written now.
    fn look(&mut self, session: &Session, notices: &mut Vec<WatchNotice>) -> bool {
        let started = Instant::now();
        let scan = openers::scan(&self.targets());
        let at = now_rfc3339();
        self.summary.scans += 1;
        self.summary.last_scan_at = Some(at.clone());
        self.summary.slowest_scan_ms = self.summary.slowest_scan_ms.max(super::ms(started.elapsed()));
        let scan = match scan {
            Ok(s) => s,
            Err(e) => {
                let e = format!("cannot list /proc ({e}): foreign writers cannot be seen");
                let changed = self.summary.error.as_deref() != Some(e.as_str());
                if changed {
                    tracing::warn!(db = %self.db.display(), error = %e, "the foreign-writer watch cannot look");
                }
                self.summary.error = Some(e);
                return changed;
            }
        };
        let mut changed = self.summary.uninspectable != scan.uninspectable;
        self.summary.uninspectable = scan.uninspectable;
        let mut seen = Vec::new();
        let foreign: Vec<Opener> = scan.openers.into_iter().filter(|o| writes(o) && !self.is_ours(o)).collect();
        for o in foreign {
            let key = (o.pid, o.start_ticks);
            seen.push(key);
            if let Some(&i) = self.known.get(&key) {
                let w = &mut self.summary.writers[i];
                if w.gone_at.take().is_some() {
                    changed = true;
                }
                for f in o.files {
                    if !w.process.files.iter().any(|g| g.fd == f.fd && g.file == f.file) {
                        w.process.files.push(f);
                        changed = true;
                    }
                }
                continue;
            }
            changed = true;
            self.found(session, &o, notices);
            self.known.insert(key, self.summary.writers.len());
            self.summary.writers.push(ForeignWriter { process: o, first_seen_at: at.clone(), gone_at: None });
        }
        for w in self.summary.writers.iter_mut().filter(|w| w.gone_at.is_none()) {
            if !seen.contains(&(w.process.pid, w.process.start_ticks)) {
                w.gone_at = Some(at.clone());
                changed = true;
            }
        }
        changed
    }

    /// The engine, its process group, its descendants.
    fn is_ours(&self, o: &Opener) -> bool {
        if o.pid == self.engine || o.pgid == Some(self.engine) {
            return true;
        }
        let mut parent = o.ppid;
        for _ in 0..64 {
            match parent {
                Some(p) if p == self.engine => return true,
                Some(p) if p > 1 => parent = openers::proc_stat(p).map(|s| s.ppid),
                _ => return false,
            }
        }
        false
    }

    fn found(&mut self, session: &Session, o: &Opener, notices: &mut Vec<WatchNotice>) {
        let policy = self.summary.policy;
        let stop = policy == OnForeignWriter::Stop && self.summary.stopped_engine_at.is_none() && !self.exited;
        let then = match policy {
            OnForeignWriter::Warn => "the session goes on (on_foreign_writer = warn)".to_owned(),
            OnForeignWriter::Stop if self.exited => {
                "the engine had already exited (on_foreign_writer = stop)".to_owned()
            }
            OnForeignWriter::Stop if stop => format!(
                "stopping the engine (pid {}) with SIGTERM (on_foreign_writer = stop); the post-session backup is still taken",
                self.engine
            ),
            OnForeignWriter::Stop => "the engine was already told to stop (on_foreign_writer = stop)".to_owned(),
        };
        let text = format!(
            "foreign writer during session {}: {} has {} open for writing; warden cannot tell its writes from the engine's; {then}",
            session.id(),
            o.describe(),
            o.describe_files(true)
        );
        // The audit record is mirrored to `tracing` as a warning; `warden run` prints it.
        tracing::info!(db = %self.db.display(), pid = o.pid, "{text}");
        let mut rec = AuditRecord::new(AuditEvent::ForeignWriter);
        rec.db = Some(self.db.clone());
        rec.decision = Some(policy.as_str().to_owned());
        rec.reason = Some(text.clone());
        rec.opener = Some(o.clone());
        if let Err(e) = session.guard().audit(&mut rec) {
            tracing::error!(error = %e, "the foreign writer could not be audited");
        }
        notices.push(WatchNotice::Found(text));
        if stop {
            let pid = nix::unistd::Pid::from_raw(i32::try_from(self.engine).unwrap_or(i32::MAX));
            if let Err(e) = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM) {
                tracing::error!(error = %e, engine = self.engine, "cannot signal the engine to stop");
            }
            self.summary.stopped_engine_at = Some(now_rfc3339());
            notices.push(WatchNotice::StoppingEngine(self.engine));
        }
    }
}

/// A writer by the rules in the module docs.
fn writes(o: &Opener) -> bool {
    let mut db = o.files.iter().filter(|f| f.file == "database").peekable();
    if db.peek().is_some() {
        return db.any(|f| f.access.writes());
    }
    o.files.iter().any(|f| f.access.writes())
}

impl Session {
    /// Records the foreign-writer watch in the artifact, written at once when `write`.
    pub(super) fn record_foreign_writers(&mut self, watch: ForeignWriterWatch, write: bool) {
        self.artifact.foreign_writers = Some(watch);
        if write {
            let _ = self.artifact.write(&self.artifact_path);
        }
    }

    /// The watch stopped the engine because of a foreign writer.
    pub(super) fn stopped_for_foreign_writer(&self) -> bool {
        self.artifact.foreign_writers.as_ref().is_some_and(|w| w.stopped_engine_at.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::openers::{Access, OpenFile};

    fn opener(files: &[(&str, Access)]) -> Opener {
        Opener {
            pid: 42,
            ppid: Some(1),
            pgid: Some(42),
            start_ticks: Some(7),
            uid: Some(1000),
            comm: "python3".into(),
            cmdline: "python3 -c x".into(),
            files: files
                .iter()
                .enumerate()
                .map(|(i, (f, a))| OpenFile {
                    file: (*f).into(),
                    path: PathBuf::from("/x"),
                    fd: u32::try_from(i).unwrap(),
                    flags: "0100002".into(),
                    access: *a,
                })
                .collect(),
        }
    }

    #[test]
    fn who_counts_as_a_writer() {
        use Access::{ReadOnly, ReadWrite, WriteOnly};
        assert!(writes(&opener(&[("database", ReadWrite)])));
        assert!(writes(&opener(&[("database", WriteOnly)])));
        assert!(!writes(&opener(&[("database", ReadOnly)])));
        // SQLite's read-only connection: database read-only, -wal read-write.
        assert!(!writes(&opener(&[("database", ReadOnly), ("-wal", ReadWrite)])));
        assert!(writes(&opener(&[("database", ReadOnly), ("database", ReadWrite), ("-wal", ReadWrite)])));
        // A raw writer of the side file.
        assert!(writes(&opener(&[("-wal", ReadWrite)])));
        assert!(!writes(&opener(&[("-journal", ReadOnly)])));
    }

    #[test]
    fn policy_parses() {
        assert_eq!(OnForeignWriter::parse("stop"), Ok(OnForeignWriter::Stop));
        assert_eq!(OnForeignWriter::parse(" warn "), Ok(OnForeignWriter::Warn));
        assert!(OnForeignWriter::parse("kill").unwrap_err().contains("hint"));
        assert_eq!(OnForeignWriter::default(), OnForeignWriter::Warn);
    }
}

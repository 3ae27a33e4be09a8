//! `warden run`: a whole session around an engine process.
//!
//! Owns: starting the engine (no shell; program and arguments exactly as given) with the
//! session in its environment and the writer lock handed to it, forwarding SIGINT, SIGTERM
//! and SIGHUP to it, waiting for it, and mapping how it ended to an exit status. Does not own:
//! the steps before and after the engine ([`super::Session`]).
//!
//! The engine's environment:
//! - `WARDEN_DB`: the database (absolute path);
//! - `WARDEN_SESSION_ID`, `WARDEN_SESSION_ARTIFACT`: the session and its health artifact;
//! - `WARDEN_BACKUP_DIR`: where the session's backups are;
//! - `WARDEN_AUDIT_DIR`: the audit log directory, so a guarded engine logs where warden does;
//! - `WARDEN_CREATE=1`: only when the session allowed a missing database (`--create`);
//! - `WARDEN_LOCK_FD` ([`crate::guard::lock::INHERIT_FD_ENV`]): the inherited writer lock. A guarded
//!   engine adopts it; any engine keeps the lock held simply by being alive.
//!
//! The engine runs in its own process group, so a Ctrl-C on the terminal reaches warden
//! only, which forwards it once; the engine should not read from the terminal.
//!
//! The engine never outlives warden unnoticed: it is spawned with a parent-death signal
//! (SIGTERM, `PR_SET_PDEATHSIG`, set between fork and exec in `sys::process`), so a `kill -9`
//! of warden stops it too, and an engine that ignores SIGTERM is reported by `warden status`
//! as `supervisor_died` (the artifact says `running`, its runner is gone).
//!
//! While the engine runs, warden polls it every 100 ms (never blocking in `wait`), which
//! also drives the foreign-writer watch ([`super::watch`]: a look at `/proc` every
//! [`SessionConfig::foreign_writer_every`], 2 s by default, and once more right after the
//! engine exits; with `on_foreign_writer = "stop"` it sends the engine SIGTERM).
//!
//! Periodic analysis snapshots ([`SessionConfig::snapshot_every`], off by default): every
//! interval (first one interval after the engine starts) takes a snapshot
//! ([`crate::copies::snapshot::take`]) on a background thread, one at a time. Each result goes into
//! the artifact's `snapshots` summary at once. A failed snapshot is logged and counted there;
//! it never stops or signals the engine. When the engine exits, a snapshot in progress is
//! cancelled and joined before the post-session backup starts.

use std::ffi::OsString;
use std::os::fd::AsRawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::health::{HealthArtifact, SessionStatus, Step};
use super::notify::Notifier;
use super::watch::{Watch, WatchNotice};
use super::{EngineOutcome, Session, SessionConfig};
use crate::copies::snapshot::{SnapshotError, SnapshotOptions, SnapshotReport, SnapshotSummary};

/// What to run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Program and arguments (no shell).
    pub command: Vec<OsString>,
}

/// What happened, for the caller to render.
#[derive(Debug)]
pub enum RunEvent<'a> {
    /// The gate passed and the pre-session backup is published; the engine starts next.
    Ready(&'a Session),
    /// The engine is running.
    EngineStarted {
        /// Its pid.
        pid: u32,
    },
    /// A signal was forwarded to the engine.
    Forwarded(&'static str),
    /// The engine exited; the post-session backup starts.
    EngineExited(EngineOutcome),
    /// A foreign writer was found ([`super::watch`]): the whole message.
    ForeignWriter(String),
    /// The engine was sent SIGTERM because of a foreign writer (`on_foreign_writer = "stop"`).
    StoppingForForeignWriter {
        /// The engine's pid.
        pid: u32,
    },
}

/// The result of a whole run.
#[derive(Debug)]
pub struct RunReport {
    /// The final artifact.
    pub artifact: HealthArtifact,
    /// Where it is, when it could be written.
    pub artifact_path: Option<PathBuf>,
    /// The exit code for the process: the engine's own, `128 + N` if a signal killed it,
    /// warden's own code for a refusal (sysexits), `74` if the engine exited 0 but the
    /// post-session backup failed, `126`/`127` if the engine could not be started.
    pub exit_code: i32,
    /// The error that stopped the session early, with its hint.
    pub error: Option<String>,
}

/// Forwards SIGINT, SIGTERM and SIGHUP to the engine while one runs, and turns them into a
/// cancel request before that (the gate stops, the engine never starts).
pub struct SignalForwarder {
    handle: signal_hook::iterator::Handle,
    thread: Option<std::thread::JoinHandle<()>>,
    target: Arc<AtomicI32>,
    forwarded: Arc<Mutex<Vec<&'static str>>>,
    cancel: Arc<AtomicBool>,
}

impl std::fmt::Debug for SignalForwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignalForwarder").field("target", &self.target).finish_non_exhaustive()
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        signal_hook::consts::SIGINT => "SIGINT",
        signal_hook::consts::SIGTERM => "SIGTERM",
        signal_hook::consts::SIGHUP => "SIGHUP",
        _ => "signal",
    }
}

impl SignalForwarder {
    /// Installs the handlers (replacing the default "terminate" action).
    ///
    /// # Errors
    /// The I/O error of registering them.
    pub fn install() -> std::io::Result<Self> {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])?;
        let handle = signals.handle();
        let target = Arc::new(AtomicI32::new(0));
        let forwarded = Arc::new(Mutex::new(Vec::new()));
        let cancel = Arc::new(AtomicBool::new(false));
        let thread = {
            let (target, forwarded, cancel) = (target.clone(), forwarded.clone(), cancel.clone());
            std::thread::Builder::new().name("warden-signals".into()).spawn(move || {
                for sig in signals.forever() {
                    let pid = target.load(Ordering::SeqCst);
                    if pid > 0 {
                        if let Ok(s) = nix::sys::signal::Signal::try_from(sig) {
                            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), s);
                        }
                        forwarded.lock().unwrap_or_else(PoisonError::into_inner).push(signal_name(sig));
                    } else {
                        tracing::warn!(signal = signal_name(sig), "stopping before the engine starts");
                        cancel.store(true, Ordering::SeqCst);
                    }
                }
            })?
        };
        Ok(SignalForwarder { handle, thread: Some(thread), target, forwarded, cancel })
    }

    /// The flag set by a signal received before the engine started.
    pub fn cancel_flag(&self) -> Arc<AtomicBool> {
        self.cancel.clone()
    }

    fn set_target(&self, pid: Option<u32>) {
        let raw = pid.and_then(|p| i32::try_from(p).ok()).unwrap_or(0);
        self.target.store(raw, Ordering::SeqCst);
    }

    fn take_forwarded(&self) -> Vec<&'static str> {
        std::mem::take(&mut *self.forwarded.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl Drop for SignalForwarder {
    fn drop(&mut self) {
        self.handle.close();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs a whole session: [`Session::begin`], the engine, [`Session::finish`].
///
/// `signals` should be installed before the call so that a signal during the gate stops it.
pub fn run(
    mut config: SessionConfig,
    opts: &RunOptions,
    signals: &SignalForwarder,
    on_event: &mut dyn FnMut(RunEvent<'_>),
) -> RunReport {
    config.cancel = Some(signals.cancel_flag());
    if let Ok(abs) = crate::storage::resolve(&config.db) {
        config.db = abs;
    }
    let notify = Notifier::from_env();
    notify.status("preflight, integrity gate and pre-session backup");
    // The gate may legitimately take as long as its budget: say so before systemd's
    // start timeout would fire.
    notify.extend_timeout(config.check_budget.unwrap_or(Duration::from_secs(3600)) + Duration::from_secs(300));
    let mut session = match Session::begin(config) {
        Ok(s) => s,
        Err(f) => {
            let code = i32::from(f.error.exit_code());
            return RunReport {
                artifact: *f.artifact,
                artifact_path: f.artifact_path,
                exit_code: code,
                error: Some(format!("{} (step: {})", f.error, step_name(f.step))),
            };
        }
    };
    on_event(RunEvent::Ready(&session));
    let command: Vec<String> = opts.command.iter().map(|a| a.to_string_lossy().into_owned()).collect();
    let outcome = match spawn_and_wait(&mut session, opts, signals, &notify, on_event) {
        Ok(o) => o,
        Err((o, e)) => {
            tracing::error!(error = %e, "the engine could not be started");
            session.engine_started(command, None);
            let artifact_path = session.artifact_path().to_owned();
            let code = o.process_exit_code();
            let mut report = match session.finish(o) {
                Ok(a) => RunReport { artifact: a, artifact_path: Some(artifact_path), exit_code: code, error: None },
                Err(err) => return finish_failed(err, code),
            };
            report.error = Some(format!(
                "cannot start the engine `{}`: {e}\n(hint: give the program's path; no shell is involved)",
                opts.command.first().map(|p| p.to_string_lossy().into_owned()).unwrap_or_default()
            ));
            report.artifact.error.clone_from(&report.error);
            if let Some(p) = &report.artifact_path {
                let _ = report.artifact.write(p);
            }
            return report;
        }
    };
    notify.stopping("engine exited; post-session backup and retention");
    // The post-session backup is checked like the gate: it may need as long as its budget.
    notify
        .extend_timeout(session.config().check_budget.unwrap_or(Duration::from_secs(3600)) + Duration::from_secs(300));
    on_event(RunEvent::EngineExited(outcome));
    let artifact_path = session.artifact_path().to_owned();
    match session.finish(outcome) {
        Ok(a) => {
            let code = a.exit_code.unwrap_or(70);
            let error = match a.status {
                SessionStatus::CompletedWithoutBackup => Some(format!(
                    "the engine exited 0 but the post-session backup failed: {}",
                    a.post_backup.as_ref().and_then(|p| p.error.clone()).unwrap_or_default()
                )),
                SessionStatus::Completed if code != 0 => {
                    let why = a.post_backup.as_ref().and_then(|p| p.seal.as_ref()).and_then(|s| s.error.clone());
                    Some(format!(
                        "the engine exited 0 and the post-session backup is good, but the seal could not be written: {}\n(hint: the next `warden run` gates without comparing; `warden accept --db {}` seals the database now)",
                        why.unwrap_or_default(),
                        a.database.display()
                    ))
                }
                _ => None,
            };
            RunReport { artifact: a, artifact_path: Some(artifact_path), exit_code: code, error }
        }
        Err(e) => finish_failed(e, outcome.process_exit_code()),
    }
}

fn finish_failed(err: super::SessionError, code: i32) -> RunReport {
    // The engine's own failure stays the exit code; a clean engine whose close could not be
    // recorded is not a success.
    let code = if code == 0 { i32::from(err.exit_code()) } else { code };
    RunReport {
        artifact: HealthArtifact::new("unknown", std::path::Path::new(""), std::path::Path::new("")),
        artifact_path: None,
        exit_code: code,
        error: Some(err.to_string()),
    }
}

/// The name used in artifacts and messages.
pub fn step_name(step: Step) -> String {
    serde_json::to_value(step).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

fn spawn_and_wait(
    session: &mut Session,
    opts: &RunOptions,
    signals: &SignalForwarder,
    notify: &Notifier,
    on_event: &mut dyn FnMut(RunEvent<'_>),
) -> Result<EngineOutcome, (EngineOutcome, std::io::Error)> {
    let not_started = |code: i32| EngineOutcome { exit_code: Some(code), signal: None, not_started: true };
    let Some((program, args)) = opts.command.split_first() else {
        return Err((not_started(64), std::io::Error::other("no engine command given")));
    };
    let fd = match session.writer_lock().map(crate::guard::lock::WriterLock::inheritable_fd) {
        Some(Ok(fd)) => fd,
        Some(Err(e)) => return Err((not_started(74), std::io::Error::other(e.to_string()))),
        None => return Err((not_started(70), std::io::Error::other("the session holds no writer lock"))),
    };
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env("WARDEN_DB", session.db())
        .env("WARDEN_SESSION_ID", session.id())
        .env("WARDEN_SESSION_ARTIFACT", session.artifact_path())
        .env("WARDEN_BACKUP_DIR", session.store().dir())
        .env("WARDEN_AUDIT_DIR", &session.guard().config().audit_dir)
        .env(crate::guard::lock::INHERIT_FD_ENV, fd.as_raw_fd().to_string())
        .env_remove("WARDEN_CREATE")
        .process_group(0);
    // The engine is not the unit's main process: it must not notify systemd itself.
    for var in super::notify::CHILD_ENV_REMOVE {
        cmd.env_remove(var);
    }
    if session.create_allowed() {
        cmd.env("WARDEN_CREATE", "1");
    }
    // The engine must not outlive its supervisor unnoticed: when warden dies (`kill -9`
    // included), the kernel sends the engine SIGTERM, which a well-behaved engine answers by
    // closing cleanly. This thread spawns and then waits, so it lives as long as the engine.
    crate::sys::process::signal_when_parent_dies(&mut cmd, nix::sys::signal::Signal::SIGTERM);
    let spawned = cmd.spawn();
    drop(fd);
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            let code = match e.kind() {
                std::io::ErrorKind::NotFound => i32::from(crate::util::exit::ENGINE_NOT_FOUND),
                _ => i32::from(crate::util::exit::ENGINE_NOT_EXECUTABLE),
            };
            return Err((not_started(code), e));
        }
    };
    signals.set_target(Some(child.id()));
    if let Some(l) = session.writer_lock()
        && let Err(e) = l.set_engine_pid(child.id())
    {
        tracing::warn!(error = %e, "could not name the engine in the lock record; it will not adopt the lock");
    }
    let command = opts.command.iter().map(|a| a.to_string_lossy().into_owned()).collect();
    session.engine_started(command, Some(child.id()));
    on_event(RunEvent::EngineStarted { pid: child.id() });
    notify.ready(&format!("session {}: engine running as pid {}", session.id(), child.id()));
    let watchdog = Watchdog::start(notify);
    let mut periodic = PeriodicSnapshots::new(session);
    let mut watch = Watch::start(session, child.id());
    let waited = wait_polling(&mut child, session, periodic.as_mut(), &mut watch, on_event);
    // One more look right after the exit: a writer that came within the last interval.
    notices(watch.tick(session, true), on_event);
    if let Some(p) = periodic {
        p.stop(session);
    }
    drop(watchdog);
    let status = match waited {
        Ok(s) => s,
        Err(e) => {
            signals.set_target(None);
            return Err((not_started(70), e));
        }
    };
    signals.set_target(None);
    for name in signals.take_forwarded() {
        session.signal_forwarded(name);
        on_event(RunEvent::Forwarded(name));
    }
    Ok(EngineOutcome { exit_code: status.code(), signal: status.signal(), not_started: false })
}

/// Feeds systemd's watchdog from its own thread while the engine runs (the main thread may
/// be blocked in `wait`). Stops when dropped.
struct Watchdog {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watchdog {
    fn start(notify: &Notifier) -> Option<Self> {
        let every = notify.watchdog_interval()?;
        let pinger = Notifier::from_env();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("warden-watchdog".into())
            .spawn(move || {
                let mut next = std::time::Instant::now();
                while !flag.load(Ordering::Relaxed) {
                    if std::time::Instant::now() >= next {
                        pinger.watchdog();
                        next += every;
                    }
                    std::thread::sleep(Duration::from_millis(20).min(every));
                }
            })
            .ok()?;
        Some(Watchdog { stop, thread: Some(thread) })
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// How often the engine is polled (for its exit, periodic snapshots and the foreign-writer
/// watch).
const POLL: Duration = Duration::from_millis(100);

fn wait_polling(
    child: &mut std::process::Child,
    session: &mut Session,
    mut periodic: Option<&mut PeriodicSnapshots>,
    watch: &mut Watch,
    on_event: &mut dyn FnMut(RunEvent<'_>),
) -> std::io::Result<std::process::ExitStatus> {
    loop {
        match child.try_wait() {
            Ok(Some(s)) => return Ok(s),
            Ok(None) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        if let Some(p) = periodic.as_deref_mut() {
            p.tick(session);
        }
        notices(watch.tick(session, false), on_event);
        std::thread::sleep(POLL);
    }
}

fn notices(found: Vec<WatchNotice>, on_event: &mut dyn FnMut(RunEvent<'_>)) {
    for n in found {
        on_event(match n {
            WatchNotice::Found(m) => RunEvent::ForeignWriter(m),
            WatchNotice::StoppingEngine(pid) => RunEvent::StoppingForForeignWriter { pid },
        });
    }
}

/// Periodic snapshots of one session: at most one in flight, on its own thread, so the
/// engine is still reaped (and signals forwarded) on time while a large copy runs.
struct PeriodicSnapshots {
    db: PathBuf,
    every: Duration,
    opts: SnapshotOptions,
    next: Instant,
    running: Option<std::thread::JoinHandle<Result<SnapshotReport, SnapshotError>>>,
    cancel: Arc<AtomicBool>,
    summary: SnapshotSummary,
}

impl PeriodicSnapshots {
    fn new(session: &mut Session) -> Option<Self> {
        let config = session.config();
        let every = config.snapshot_every?;
        let cancel = Arc::new(AtomicBool::new(false));
        let opts = SnapshotOptions {
            dir: Some(config.snapshot_dir()),
            keep: config.snapshot_keep,
            check: config.snapshot_check,
            guard: Some(session.guard().clone()),
            session_id: Some(session.id().to_owned()),
            cancel: Some(cancel.clone()),
            ..Default::default()
        };
        let summary = SnapshotSummary {
            every_ms: u64::try_from(every.as_millis()).unwrap_or(u64::MAX),
            dir: config.snapshot_dir(),
            ..Default::default()
        };
        let db = session.db().to_owned();
        session.record_snapshots(summary.clone());
        tracing::info!(db = %db.display(), every = %humantime::format_duration(every), "periodic analysis snapshots on");
        Some(PeriodicSnapshots { db, every, opts, next: Instant::now() + every, running: None, cancel, summary })
    }

    /// Collects a finished snapshot and starts the next one when it is due.
    fn tick(&mut self, session: &mut Session) {
        if self.running.as_ref().is_some_and(std::thread::JoinHandle::is_finished) {
            self.collect(session);
        }
        if self.running.is_some() || Instant::now() < self.next {
            return;
        }
        let now = Instant::now();
        self.next += self.every;
        if self.next <= now {
            // A snapshot took longer than the interval: start the schedule again from now
            // rather than taking them back to back.
            self.next = now + self.every;
        }
        let (db, opts) = (self.db.clone(), self.opts.clone());
        let spawned = std::thread::Builder::new()
            .name("warden-snapshot".into())
            .spawn(move || crate::copies::snapshot::take(&db, &opts));
        match spawned {
            Ok(h) => self.running = Some(h),
            Err(e) => self.failed(session, format!("cannot start the snapshot thread: {e}")),
        }
    }

    fn collect(&mut self, session: &mut Session) {
        let Some(h) = self.running.take() else { return };
        match h.join() {
            Ok(Ok(r)) => {
                self.summary.taken += 1;
                self.summary.last = Some(r.path.clone());
                self.summary.last_at = Some(r.manifest.created.clone());
                if let Some(e) = r.retention_error {
                    tracing::warn!(error = %e, "snapshot retention failed (the snapshot is published)");
                }
                session.record_snapshots(self.summary.clone());
            }
            Ok(Err(SnapshotError::Cancelled { .. })) => {
                tracing::info!("snapshot in progress cancelled: the engine exited");
            }
            Ok(Err(e)) => self.failed(session, e.to_string()),
            Err(_) => self.failed(session, "the snapshot thread panicked".into()),
        }
    }

    fn failed(&mut self, session: &mut Session, error: String) {
        tracing::warn!(db = %self.db.display(), error = %error, "periodic snapshot failed; the engine keeps running");
        self.summary.failed += 1;
        self.summary.last_error = Some(error);
        self.summary.last_error_at = Some(crate::util::identity::now_rfc3339());
        session.record_snapshots(self.summary.clone());
    }

    /// The engine exited: cancel a snapshot in progress and wait for it.
    fn stop(mut self, session: &mut Session) {
        if self.running.is_some() {
            self.cancel.store(true, Ordering::Relaxed);
            self.collect(session);
        }
    }
}

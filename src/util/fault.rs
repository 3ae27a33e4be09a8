//! Fault injection for the crash and I/O-error campaigns: which operation fails, and how.
//!
//! Owns the decision half of the fault layer: the spec (`WARDEN_FAULT`), the step counter,
//! the root filter and the trace. The other half, `sys::faults`, interposes the libc calls
//! every file operation of the process goes through (warden's own `std::fs` calls *and*
//! SQLite's `unix` VFS, journals and WAL included: both call `write`, `fsync`, `rename`,
//! ...) and asks [`decide`] before each one. Does not own what the campaigns check.
//!
//! Exists only with the `faults` cargo feature, which the test command turns on for the
//! test build; release builds (and the loadable extension, which must never interpose its
//! host's libc) have none of it: `decide` is then an empty `#[inline(always)]` function,
//! and no interposer is linked.
//!
//! # The spec
//!
//! `WARDEN_FAULT=<action>@<k>[+][:read]`, with `WARDEN_FAULT_ROOT=<dir>` (required: only
//! operations on paths under it are counted, so the terminal, pipes and the system are
//! never touched) and optionally `WARDEN_FAULT_TRACE=<file>` (one line per counted step).
//!
//! - `trace`: count and record every step, inject nothing (how a campaign learns K);
//! - `kill@k`: `SIGKILL` this process just before the k-th step;
//! - `eio@k`, `enospc@k`: the k-th step fails with that errno (once; `@k+`: it and every
//!   later step);
//! - `short@k`: the k-th step, a write, writes half its bytes, and every later write fails
//!   with `ENOSPC` (a disk that filled mid-file);
//! - `:read` counts reads instead of the operations that change files (writes, syncs,
//!   truncates, renames, links, unlinks, mkdirs).
//!
//! The environment is honoured only by a process whose executable is named
//! `WARDEN_FAULT_EXE` (default `warden`), so an engine a faulted `warden run` starts is not
//! faulted too; in-process tests call [`arm`] instead.

use std::path::{Path, PathBuf};

/// A file operation the fault layer can see.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Write,
    Truncate,
    Sync,
    DirSync,
    Rename,
    Link,
    Remove,
    Mkdir,
    Read,
}

impl Op {
    /// The name used in the trace.
    pub fn name(self) -> &'static str {
        match self {
            Op::Write => "write",
            Op::Truncate => "truncate",
            Op::Sync => "fsync",
            Op::DirSync => "dirsync",
            Op::Rename => "rename",
            Op::Link => "link",
            Op::Remove => "remove",
            Op::Mkdir => "mkdir",
            Op::Read => "read",
        }
    }

    /// True for the reads, which `:read` specs count instead of the changes.
    pub fn is_read(self) -> bool {
        self == Op::Read
    }
}

/// What to do at the chosen step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Count and trace only.
    Trace,
    /// `SIGKILL` before the step.
    Kill,
    /// Fail with `EIO`.
    Eio,
    /// Fail with `ENOSPC`.
    Enospc,
    /// Write half, then `ENOSPC` for every later write.
    Short,
}

/// A parsed `WARDEN_FAULT` (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spec {
    pub action: Action,
    /// 1-based step the action applies to (0 with [`Action::Trace`]).
    pub at: u64,
    /// The fault stays on from `at` on.
    pub persistent: bool,
    /// Count reads instead of changes.
    pub reads: bool,
    /// Only operations on paths under this directory count.
    pub root: PathBuf,
    /// Where each counted step is recorded.
    pub trace: Option<PathBuf>,
}

impl Spec {
    /// Parses `action@k[+][:read]` (or `trace[:read]`) for paths under `root`.
    ///
    /// # Errors
    /// A message naming what is wrong with `text`.
    pub fn parse(text: &str, root: &Path, trace: Option<PathBuf>) -> Result<Spec, String> {
        let (body, reads) = match text.strip_suffix(":read") {
            Some(b) => (b, true),
            None => (text, false),
        };
        let (name, at) = body.split_once('@').unwrap_or((body, ""));
        let action = match name {
            "trace" => Action::Trace,
            "kill" => Action::Kill,
            "eio" => Action::Eio,
            "enospc" => Action::Enospc,
            "short" => Action::Short,
            _ => return Err(format!("unknown fault action {name:?} in {text:?}")),
        };
        let (at, persistent) = match at.strip_suffix('+') {
            Some(n) => (n, true),
            None => (at, false),
        };
        let at: u64 = match (action, at) {
            (Action::Trace, "") => 0,
            (_, n) => n
                .parse()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| format!("fault step must be a number >= 1 in {text:?}"))?,
        };
        let root = std::fs::canonicalize(root).map_err(|e| format!("fault root {}: {e}", root.display()))?;
        Ok(Spec { action, at, persistent, reads, root, trace })
    }
}

/// What the interposer does with one operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Perform it.
    Pass,
    /// Do not perform it; fail with this errno.
    Fail(i32),
    /// A write: perform half of it and report that.
    Short,
}

#[cfg(feature = "faults")]
mod imp {
    use std::io::Write;
    use std::os::unix::ffi::OsStrExt;
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
    use std::sync::{Mutex, PoisonError};

    use super::{Action, Op, Spec, Verdict};

    const UNINIT: u8 = 0;
    const OFF: u8 = 1;
    const ON: u8 = 2;

    static STATE: AtomicU8 = AtomicU8::new(UNINIT);
    static SPEC: Mutex<Option<Armed>> = Mutex::new(None);
    static STEPS: AtomicU64 = AtomicU64::new(0);
    static INJECTED: AtomicU64 = AtomicU64::new(0);
    /// Set once a `short` fault has fired: every later write fails with ENOSPC.
    static DISK_FULL: AtomicBool = AtomicBool::new(false);

    struct Armed {
        spec: Spec,
        root: Vec<u8>,
        trace: Option<std::fs::File>,
    }

    thread_local! {
        /// True while this thread is inside the fault layer (its own trace writes and
        /// path lookups must not be counted or recurse).
        static BUSY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }

    pub fn arm(spec: Spec) -> std::io::Result<()> {
        let trace = match &spec.trace {
            Some(p) => Some(std::fs::OpenOptions::new().create(true).append(true).open(p)?),
            None => None,
        };
        let root = spec.root.as_os_str().as_encoded_bytes().to_vec();
        *SPEC.lock().unwrap_or_else(PoisonError::into_inner) = Some(Armed { spec, root, trace });
        STEPS.store(0, Ordering::SeqCst);
        INJECTED.store(0, Ordering::SeqCst);
        DISK_FULL.store(false, Ordering::SeqCst);
        STATE.store(ON, Ordering::SeqCst);
        Ok(())
    }

    pub fn disarm() {
        STATE.store(OFF, Ordering::SeqCst);
        *SPEC.lock().unwrap_or_else(PoisonError::into_inner) = None;
        DISK_FULL.store(false, Ordering::SeqCst);
    }

    pub fn steps() -> u64 {
        STEPS.load(Ordering::SeqCst)
    }

    pub fn injected() -> u64 {
        INJECTED.load(Ordering::SeqCst)
    }

    /// Arms from the environment the first time any operation is seen.
    fn init_from_env() {
        // Mark OFF first: arming opens the trace file, which comes back through here.
        if STATE.compare_exchange(UNINIT, OFF, Ordering::SeqCst, Ordering::SeqCst).is_err() {
            return;
        }
        let Ok(text) = std::env::var("WARDEN_FAULT") else { return };
        let exe = std::env::var("WARDEN_FAULT_EXE").unwrap_or_else(|_| "warden".to_owned());
        let me = std::env::current_exe().ok().and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
        if me.as_deref() != Some(exe.as_str()) {
            return;
        }
        let Some(root) = std::env::var_os("WARDEN_FAULT_ROOT") else {
            eprintln!("warden: WARDEN_FAULT is set but WARDEN_FAULT_ROOT is not: no faults");
            return;
        };
        let trace = std::env::var_os("WARDEN_FAULT_TRACE").map(PathBuf::from);
        match Spec::parse(&text, Path::new(&root), trace) {
            Ok(spec) => {
                if let Err(e) = arm(spec) {
                    eprintln!("warden: WARDEN_FAULT: cannot open the trace: {e}");
                    STATE.store(OFF, Ordering::SeqCst);
                }
            }
            Err(e) => eprintln!("warden: WARDEN_FAULT: {e}"),
        }
    }

    /// True when the fault layer is armed (the interposers' fast path asks this first).
    #[inline]
    pub fn active() -> bool {
        match STATE.load(Ordering::Relaxed) {
            ON => true,
            OFF => false,
            _ => {
                init_from_env();
                STATE.load(Ordering::SeqCst) == ON
            }
        }
    }

    /// Enters the fault layer on this thread; `None` when already inside (no recursion).
    pub fn enter() -> Option<Busy> {
        BUSY.try_with(|b| if b.replace(true) { None } else { Some(Busy) }).ok().flatten()
    }

    pub struct Busy;

    impl Drop for Busy {
        fn drop(&mut self) {
            let _ = BUSY.try_with(|b| b.set(false));
        }
    }

    /// The decision for one operation on the absolute path `path` (raw bytes, so the
    /// interposers need not allocate for paths outside the root).
    pub fn decide(op: Op, path: &[u8]) -> Verdict {
        let mut g = SPEC.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(armed) = g.as_mut() else { return Verdict::Pass };
        let root = &armed.root;
        if !(path.starts_with(root) && (path.len() == root.len() || path[root.len()] == b'/')) {
            return Verdict::Pass;
        }
        let path = Path::new(std::ffi::OsStr::from_bytes(path));
        if op.is_read() != armed.spec.reads {
            return Verdict::Pass;
        }
        if op == Op::Write && DISK_FULL.load(Ordering::SeqCst) {
            INJECTED.fetch_add(1, Ordering::SeqCst);
            return Verdict::Fail(libc::ENOSPC);
        }
        let k = STEPS.fetch_add(1, Ordering::SeqCst) + 1;
        let spec = &armed.spec;
        let hit = spec.action != Action::Trace && (k == spec.at || (spec.persistent && k > spec.at));
        let verdict = match (hit, spec.action) {
            (false, _) | (_, Action::Trace) => Verdict::Pass,
            (true, Action::Kill) => Verdict::Pass,
            (true, Action::Eio) => Verdict::Fail(libc::EIO),
            (true, Action::Enospc) => Verdict::Fail(libc::ENOSPC),
            (true, Action::Short) if op == Op::Write => Verdict::Short,
            (true, Action::Short) => Verdict::Fail(libc::ENOSPC),
        };
        let what = match (hit, spec.action, verdict) {
            (true, Action::Kill, _) => " killed",
            (_, _, Verdict::Fail(libc::EIO)) => " injected=eio",
            (_, _, Verdict::Fail(_)) => " injected=enospc",
            (_, _, Verdict::Short) => " injected=short",
            _ => "",
        };
        if let Some(t) = armed.trace.as_mut() {
            let _ = writeln!(t, "{k} {} {}{what}", op.name(), path.display());
        }
        if verdict != Verdict::Pass {
            INJECTED.fetch_add(1, Ordering::SeqCst);
        }
        if verdict == Verdict::Short {
            DISK_FULL.store(true, Ordering::SeqCst);
        }
        if hit && spec.action == Action::Kill {
            drop(g);
            let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
        }
        verdict
    }
}

#[cfg(feature = "faults")]
pub use imp::{active, arm, decide, disarm, enter, injected, steps};

/// Without the `faults` feature: never armed.
#[cfg(not(feature = "faults"))]
#[inline(always)]
pub fn active() -> bool {
    false
}

/// Without the `faults` feature arming is refused: nothing could inject the fault.
///
/// # Errors
/// Always: this build has no fault layer.
#[cfg(not(feature = "faults"))]
pub fn arm(_spec: Spec) -> std::io::Result<()> {
    Err(std::io::Error::other("this build has no fault layer (cargo feature `faults`)"))
}

/// Without the `faults` feature: nothing to disarm.
#[cfg(not(feature = "faults"))]
pub fn disarm() {}

/// Counted steps since [`arm`] (always 0 without the `faults` feature).
#[cfg(not(feature = "faults"))]
pub fn steps() -> u64 {
    0
}

/// Faults injected since [`arm`] (always 0 without the `faults` feature).
#[cfg(not(feature = "faults"))]
pub fn injected() -> u64 {
    0
}

/// Whether this build carries the fault layer.
pub const AVAILABLE: bool = cfg!(feature = "faults");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_forms() {
        let d = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(d.path()).unwrap();
        let s = Spec::parse("kill@7", d.path(), None).unwrap();
        assert_eq!((s.action, s.at, s.persistent, s.reads), (Action::Kill, 7, false, false));
        assert_eq!(s.root, root);
        let s = Spec::parse("eio@3+:read", d.path(), None).unwrap();
        assert_eq!((s.action, s.at, s.persistent, s.reads), (Action::Eio, 3, true, true));
        let s = Spec::parse("trace", d.path(), None).unwrap();
        assert_eq!((s.action, s.at), (Action::Trace, 0));
        for bad in ["kill", "kill@0", "eio@x", "boom@1", "short@"] {
            assert!(Spec::parse(bad, d.path(), None).is_err(), "{bad} parsed");
        }
    }
}

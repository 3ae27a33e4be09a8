//! The engine child's last step before `exec`: dying with its supervisor.
//!
//! Owns: the `pre_exec` hook of the engine's `Command` that asks the kernel to send the
//! engine a signal when warden dies (`PR_SET_PDEATHSIG`), and closes the race of a warden that
//! died between `fork` and that request. Does not own when or what is spawned
//! (`session::run`), or what the engine does with the signal (a guarded engine closes
//! cleanly on SIGTERM; the lock it inherited is freed when it exits).
//!
//! Why: the engine inherits the session's writer lock. A `kill -9` of `warden run` leaves no
//! one to take the post-session backup, forward signals or write the final artifact, yet the
//! engine would go on writing, holding the lock, looking like a healthy session. With the
//! parent-death signal the kernel stops it within moments instead.
//!
//! The signal follows the *thread* that forked, not the process (prctl(2)): `warden run`
//! spawns the engine from the thread that then waits for it, so that thread outlives the
//! engine unless the whole process dies. The setting survives `execve` (except of set-user-ID
//! or set-group-ID programs, for which the kernel clears it).

use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;

use nix::sys::signal::Signal;

/// Makes the child that `cmd` spawns receive `signal` when the spawning thread (and so, for
/// `warden run`, warden) dies. If warden is already gone by the time the child asks, the
/// child does not exec at all (the spawn fails with `ESRCH`).
pub(crate) fn signal_when_parent_dies(cmd: &mut Command, signal: Signal) {
    let parent = nix::unistd::getpid();
    let hook = move || -> io::Result<()> {
        nix::sys::prctl::set_pdeathsig(signal).map_err(io::Error::from)?;
        // Reparented already: the parent died before the request above, so no signal will
        // ever come. Do not start an unsupervised engine.
        if nix::unistd::getppid() != parent {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
        Ok(())
    };
    // SAFETY: the hook runs in the child between fork and exec, where only
    // async-signal-safe work is allowed. It makes two system calls (prctl(2), getppid(2),
    // through nix's thin wrappers), copies a pid, and on failure builds an io::Error from a
    // raw errno, which allocates nothing; it takes no lock and touches no shared state.
    unsafe {
        cmd.pre_exec(hook);
    }
}

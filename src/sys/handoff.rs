//! The writer-lock descriptor handoff: adopting the descriptor `warden run` leaves open
//! for its engine.
//!
//! Owns: checking that an inherited descriptor number is open and refers to the expected
//! lock file, and taking ownership of it at most once per process (so it is closed once).
//! Does not own: the protocol (which variable names the descriptor, which file it must be),
//! which is `guard::lock`'s.

use std::fs::File;
use std::os::fd::{FromRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once the inherited descriptor was adopted: a second adoption would make two `File`s
/// own one descriptor, and the second close could close an unrelated file.
static ADOPTED: AtomicBool = AtomicBool::new(false);

/// True when descriptor `fd` is open in this process and refers to the file `(dev, ino)`.
fn refers_to(fd: RawFd, dev: u64, ino: u64) -> bool {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat on any integer is defined: it fails with EBADF when `fd` is not open,
    // and on success fills the whole `stat` we pass.
    let rc = unsafe { libc::fstat(fd, st.as_mut_ptr()) };
    if rc != 0 {
        return false;
    }
    // SAFETY: fstat returned 0, so it initialised `st`.
    let st = unsafe { st.assume_init() };
    #[allow(clippy::useless_conversion)]
    let same = u64::from(st.st_dev) == dev && u64::from(st.st_ino) == ino;
    same
}

/// Takes ownership of the inherited descriptor `fd` if it is open, is not a standard
/// stream, refers to the file `(dev, ino)`, and no descriptor was adopted before in this
/// process. The adopted descriptor is made close-on-exec, so the engine's own children
/// never inherit the lock.
pub(crate) fn adopt(fd: RawFd, dev: u64, ino: u64) -> Option<File> {
    if fd < 3 || !refers_to(fd, dev, ino) {
        return None;
    }
    if ADOPTED.swap(true, Ordering::SeqCst) {
        return None;
    }
    // SAFETY: `fd` is open and is the expected lock file (checked just above), and nothing
    // else in this process owns it: the session runner created it for this process to
    // adopt, and ADOPTED makes this the only adoption, so it is closed exactly once.
    let file = unsafe { File::from_raw_fd(fd) };
    let _ = nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC));
    Some(file)
}

//! The interposers of the fault layer (cargo feature `faults`, test builds only).
//!
//! Owns: definitions of the libc file calls (`write`, `pwrite64`, `fsync`, `fdatasync`,
//! `ftruncate`, `rename*`, `link*`, `unlink*`, `rmdir`, `mkdir*`, `read`, `pread64`) in
//! the executable itself. The static linker binds every reference in the program to them
//! (Rust's `std`, and the bundled SQLite's `unix` VFS, which takes their addresses for its
//! system-call table), so each file operation asks [`crate::util::fault`] first and is
//! then performed by the raw system call. Does not own the decision (the spec, the
//! counter, the root filter: `util::fault`), and is never built into the loadable
//! extension, whose host's libc must stay untouched.
//!
//! The fast path, when no fault is armed, is one relaxed atomic load. When armed, the
//! interposers resolve the path with `readlinkat` on `/proc/self/fd/N` into a stack buffer,
//! so a call that is not under the fault root allocates nothing (a forked child before
//! `exec` stays safe).

use std::ffi::{CStr, c_char, c_int, c_uint, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};

use libc::{mode_t, off_t, size_t, ssize_t};

use crate::util::fault::{self, Op, Verdict};

/// Keeps the interposers in the link: the object holding them is pulled in because this
/// function, which the VFS registration calls, names them.
pub(crate) fn link_in() {
    let keep: [usize; 4] = [
        write as *const () as usize,
        fsync as *const () as usize,
        rename as *const () as usize,
        read as *const () as usize,
    ];
    std::hint::black_box(keep);
}

/// Path bytes of `fd` via `/proc/self/fd/N`, written into `buf`; the length used.
fn fd_path(fd: c_int, buf: &mut [u8; 4096]) -> Option<usize> {
    let mut link = *b"/proc/self/fd/\0\0\0\0\0\0\0\0\0\0\0\0";
    let mut digits = [0u8; 11];
    let mut n = fd.unsigned_abs();
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for i in 0..len {
        link[14 + i] = digits[len - 1 - i];
    }
    // SAFETY: `link` is NUL-terminated (its tail is zeros), `buf` has buf.len() bytes.
    let r = unsafe { libc::syscall(libc::SYS_readlinkat, libc::AT_FDCWD, link.as_ptr(), buf.as_mut_ptr(), buf.len()) };
    usize::try_from(r).ok().filter(|&n| n > 0 && n < buf.len())
}

/// The absolute path of `name` relative to `dirfd`, built in `buf`; the length used.
///
/// # Safety
/// `name` must be NULL or a valid C string.
unsafe fn at_path(dirfd: c_int, name: *const c_char, buf: &mut [u8; 4096]) -> Option<usize> {
    if name.is_null() {
        return None;
    }
    // SAFETY: per the contract, a valid C string.
    let name = unsafe { CStr::from_ptr(name) }.to_bytes();
    if name.first() == Some(&b'/') {
        let n = name.len();
        (n < buf.len()).then(|| buf[..n].copy_from_slice(name)).map(|()| n)
    } else {
        let base = if dirfd == libc::AT_FDCWD {
            // SAFETY: buf has buf.len() bytes; getcwd writes a NUL-terminated path into it.
            let r = unsafe { libc::syscall(libc::SYS_getcwd, buf.as_mut_ptr(), buf.len()) };
            // The kernel's getcwd counts the NUL.
            usize::try_from(r).ok().filter(|&n| n > 0)? - 1
        } else {
            fd_path(dirfd, buf)?
        };
        let total = base + 1 + name.len();
        if total >= buf.len() {
            return None;
        }
        buf[base] = b'/';
        buf[base + 1..total].copy_from_slice(name);
        Some(total)
    }
}

/// Asks the decision half about one operation whose path is in `buf[..len]`.
fn ask(op: Op, fd_for_kind: Option<c_int>, path: Option<(&[u8; 4096], usize)>) -> Verdict {
    let Some((buf, len)) = path else { return Verdict::Pass };
    let op = match (op, fd_for_kind) {
        (Op::Sync, Some(fd)) if is_dir(fd) => Op::DirSync,
        (op, _) => op,
    };
    fault::decide(op, &buf[..len])
}

fn is_dir(fd: c_int) -> bool {
    let mut st = std::mem::MaybeUninit::<libc::stat>::zeroed();
    // SAFETY: st is a properly sized, writable stat buffer.
    let r = unsafe { libc::syscall(libc::SYS_fstat, fd, st.as_mut_ptr()) };
    // SAFETY: fstat succeeded (r == 0), so it filled st.
    r == 0 && (unsafe { st.assume_init() }.st_mode & libc::S_IFMT) == libc::S_IFDIR
}

/// The verdict for an operation on a descriptor.
fn on_fd(op: Op, fd: c_int) -> Verdict {
    if fd <= 2 || !fault::active() {
        return Verdict::Pass;
    }
    let Some(_inside) = fault::enter() else { return Verdict::Pass };
    catch_unwind(|| {
        let mut buf = [0u8; 4096];
        let len = fd_path(fd, &mut buf);
        ask(op, Some(fd), len.map(|n| (&buf, n)))
    })
    .unwrap_or(Verdict::Pass)
}

/// The verdict for an operation on a name relative to `dirfd`.
///
/// # Safety
/// `name` must be NULL or a valid C string.
unsafe fn on_name(op: Op, dirfd: c_int, name: *const c_char) -> Verdict {
    if !fault::active() {
        return Verdict::Pass;
    }
    let Some(_inside) = fault::enter() else { return Verdict::Pass };
    catch_unwind(AssertUnwindSafe(|| {
        let mut buf = [0u8; 4096];
        // SAFETY: name is NULL or a valid C string (our caller's contract).
        let len = unsafe { at_path(dirfd, name, &mut buf) };
        ask(op, None, len.map(|n| (&buf, n)))
    }))
    .unwrap_or(Verdict::Pass)
}

fn fail(errno: c_int) -> c_int {
    nix::errno::Errno::set_raw(errno);
    -1
}

/// Runs the raw system call unless the verdict says otherwise; for calls returning `int`.
fn int_call(v: Verdict, call: impl FnOnce() -> libc::c_long) -> c_int {
    match v {
        Verdict::Pass | Verdict::Short => call() as c_int,
        Verdict::Fail(e) => fail(e),
    }
}

/// Runs a read or write of `n` bytes (half of them on a short write).
fn sized_call(v: Verdict, n: size_t, call: impl FnOnce(size_t) -> libc::c_long) -> ssize_t {
    match v {
        Verdict::Pass => call(n) as ssize_t,
        Verdict::Short => call(n / 2) as ssize_t,
        Verdict::Fail(e) => fail(e) as ssize_t,
    }
}

/// # Safety
/// As `write(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn write(fd: c_int, buf: *const c_void, n: size_t) -> ssize_t {
    // SAFETY: forwarding the caller's arguments to the system call it asked for.
    sized_call(on_fd(Op::Write, fd), n, |n| unsafe { libc::syscall(libc::SYS_write, fd, buf, n) })
}

/// # Safety
/// As `pwrite(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pwrite64(fd: c_int, buf: *const c_void, n: size_t, off: off_t) -> ssize_t {
    // SAFETY: forwarding the caller's arguments to the system call it asked for.
    sized_call(on_fd(Op::Write, fd), n, |n| unsafe { libc::syscall(libc::SYS_pwrite64, fd, buf, n, off) })
}

/// # Safety
/// As `pwrite(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pwrite(fd: c_int, buf: *const c_void, n: size_t, off: off_t) -> ssize_t {
    // SAFETY: the same call under its other name.
    unsafe { pwrite64(fd, buf, n, off) }
}

/// # Safety
/// As `read(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn read(fd: c_int, buf: *mut c_void, n: size_t) -> ssize_t {
    // SAFETY: forwarding the caller's arguments to the system call it asked for.
    sized_call(on_fd(Op::Read, fd), n, |n| unsafe { libc::syscall(libc::SYS_read, fd, buf, n) })
}

/// # Safety
/// As `pread(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pread64(fd: c_int, buf: *mut c_void, n: size_t, off: off_t) -> ssize_t {
    // SAFETY: forwarding the caller's arguments to the system call it asked for.
    sized_call(on_fd(Op::Read, fd), n, |n| unsafe { libc::syscall(libc::SYS_pread64, fd, buf, n, off) })
}

/// # Safety
/// As `pread(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pread(fd: c_int, buf: *mut c_void, n: size_t, off: off_t) -> ssize_t {
    // SAFETY: the same call under its other name.
    unsafe { pread64(fd, buf, n, off) }
}

/// # Safety
/// As `fsync(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fsync(fd: c_int) -> c_int {
    // SAFETY: a plain system call on the caller's descriptor.
    int_call(on_fd(Op::Sync, fd), || unsafe { libc::syscall(libc::SYS_fsync, fd) })
}

/// # Safety
/// As `fdatasync(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fdatasync(fd: c_int) -> c_int {
    // SAFETY: a plain system call on the caller's descriptor.
    int_call(on_fd(Op::Sync, fd), || unsafe { libc::syscall(libc::SYS_fdatasync, fd) })
}

/// # Safety
/// As `ftruncate(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ftruncate64(fd: c_int, len: off_t) -> c_int {
    // SAFETY: a plain system call on the caller's descriptor.
    int_call(on_fd(Op::Truncate, fd), || unsafe { libc::syscall(libc::SYS_ftruncate, fd, len) })
}

/// # Safety
/// As `ftruncate(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ftruncate(fd: c_int, len: off_t) -> c_int {
    // SAFETY: the same call under its other name.
    unsafe { ftruncate64(fd, len) }
}

/// # Safety
/// As `renameat2(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn renameat2(
    olddir: c_int,
    old: *const c_char,
    newdir: c_int,
    new: *const c_char,
    flags: c_uint,
) -> c_int {
    // SAFETY: old is the caller's C string.
    let v = unsafe { on_name(Op::Rename, olddir, old) };
    // SAFETY: forwarding the caller's arguments to the system call it asked for.
    int_call(v, || unsafe { libc::syscall(libc::SYS_renameat2, olddir, old, newdir, new, flags) })
}

/// # Safety
/// As `renameat(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn renameat(olddir: c_int, old: *const c_char, newdir: c_int, new: *const c_char) -> c_int {
    // SAFETY: the same call with no flags.
    unsafe { renameat2(olddir, old, newdir, new, 0) }
}

/// # Safety
/// As `rename(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rename(old: *const c_char, new: *const c_char) -> c_int {
    // SAFETY: the same call relative to the working directory.
    unsafe { renameat2(libc::AT_FDCWD, old, libc::AT_FDCWD, new, 0) }
}

/// # Safety
/// As `linkat(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn linkat(
    olddir: c_int,
    old: *const c_char,
    newdir: c_int,
    new: *const c_char,
    flags: c_int,
) -> c_int {
    // SAFETY: new is the caller's C string.
    let v = unsafe { on_name(Op::Link, newdir, new) };
    // SAFETY: forwarding the caller's arguments to the system call it asked for.
    int_call(v, || unsafe { libc::syscall(libc::SYS_linkat, olddir, old, newdir, new, flags) })
}

/// # Safety
/// As `link(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn link(old: *const c_char, new: *const c_char) -> c_int {
    // SAFETY: the same call relative to the working directory.
    unsafe { linkat(libc::AT_FDCWD, old, libc::AT_FDCWD, new, 0) }
}

/// # Safety
/// As `unlinkat(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn unlinkat(dir: c_int, name: *const c_char, flags: c_int) -> c_int {
    // SAFETY: name is the caller's C string.
    let v = unsafe { on_name(Op::Remove, dir, name) };
    // SAFETY: forwarding the caller's arguments to the system call it asked for.
    int_call(v, || unsafe { libc::syscall(libc::SYS_unlinkat, dir, name, flags) })
}

/// # Safety
/// As `unlink(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn unlink(name: *const c_char) -> c_int {
    // SAFETY: the same call relative to the working directory.
    unsafe { unlinkat(libc::AT_FDCWD, name, 0) }
}

/// # Safety
/// As `rmdir(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rmdir(name: *const c_char) -> c_int {
    // SAFETY: the same call relative to the working directory.
    unsafe { unlinkat(libc::AT_FDCWD, name, libc::AT_REMOVEDIR) }
}

/// # Safety
/// As `mkdirat(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mkdirat(dir: c_int, name: *const c_char, mode: mode_t) -> c_int {
    // SAFETY: name is the caller's C string.
    let v = unsafe { on_name(Op::Mkdir, dir, name) };
    // SAFETY: forwarding the caller's arguments to the system call it asked for.
    int_call(v, || unsafe { libc::syscall(libc::SYS_mkdirat, dir, name, mode) })
}

/// # Safety
/// As `mkdir(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mkdir(name: *const c_char, mode: mode_t) -> c_int {
    // SAFETY: the same call relative to the working directory.
    unsafe { mkdirat(libc::AT_FDCWD, name, mode) }
}

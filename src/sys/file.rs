//! The `sqlite3_io_methods` of a guarded main-database file.
//!
//! Owns: the `GuardFile` that wraps the parent VFS's file, the three io_methods tables
//! (version 1 switches WAL off), and every per-file callback. Reads, writes and syncs are
//! the hot path: they bump counters and consult two cached flags, nothing else. Decisions
//! are the safe half's ([`super::shim::GuardedFile`]); the layout and lifetime invariants are
//! stated in [`super::vfs`].

use std::ffi::{CStr, c_char, c_int, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr;

use libsqlite3_sys as ffi;

use super::shim::{GuardedFile, IoStats, PragmaAnswer, guarded, refuse};
use super::sqlite_string;

/// Our part of a main-database file; the parent's `sqlite3_file` follows it in memory.
#[repr(C)]
pub(super) struct GuardFile {
    /// Must be first: SQLite sees a `GuardFile*` as a `sqlite3_file*`.
    pub(super) base: ffi::sqlite3_file,
    pub(super) state: *mut FileState,
    pub(super) real: *mut ffi::sqlite3_file,
}

const _: () = assert!(std::mem::align_of::<GuardFile>() <= 8);
const _: () = assert!(std::mem::size_of::<GuardFile>().is_multiple_of(8));

/// Per-file state, owned by the `GuardFile` from open to close.
pub(super) struct FileState {
    /// The parent VFS (for its name in `SQLITE_FCNTL_VFSNAME`).
    pub(super) parent: *mut ffi::sqlite3_vfs,
    /// The safe half's state of this file.
    pub(super) hooks: Box<dyn GuardedFile>,
    /// Cached `hooks.read_only()`: consulted on every write.
    pub(super) read_only: bool,
    /// Cached `hooks.wal_allowed()`: consulted on every page-1 write.
    pub(super) wal_allowed: bool,
    pub(super) stats: IoStats,
}

/// Reads the 100-byte header through the parent's file (never a descriptor of our own).
///
/// # Safety
/// `real` must be an open parent file.
pub(super) unsafe fn read_header(real: *mut ffi::sqlite3_file) -> Option<[u8; 100]> {
    // SAFETY: real is open; its methods are valid.
    let m = unsafe { &*(*real).pMethods };
    let mut size: ffi::sqlite3_int64 = 0;
    // SAFETY: forwarding to the parent's own method with valid out-pointer.
    if unsafe { m.xFileSize?(real, &raw mut size) } != ffi::SQLITE_OK || size < 100 {
        return None;
    }
    let mut buf = [0u8; 100];
    // SAFETY: buf has 100 bytes. A short read zero-fills, which decodes as invalid.
    let rc = unsafe { m.xRead?(real, buf.as_mut_ptr().cast(), 100, 0) };
    (rc == ffi::SQLITE_OK).then_some(buf)
}

/// # Safety
/// `real` must be an open parent file; it is closed and must not be used again.
pub(super) unsafe fn close_real(real: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: per the contract above.
    unsafe {
        let m = (*real).pMethods;
        let rc = match (*m).xClose {
            Some(f) => f(real),
            None => ffi::SQLITE_OK,
        };
        (*real).pMethods = ptr::null();
        rc
    }
}

/// No shared memory and no mmap: SQLite cannot use WAL on this file
/// ("`iVersion>=2 && xShmMap`" is what `sqlite3PagerWalSupported` tests).
static IO_V1: ffi::sqlite3_io_methods = methods(1);
/// Shared memory, no mmap (a parent at version 2).
static IO_V2: ffi::sqlite3_io_methods = methods(2);
/// Everything, mirroring unix.
static IO_V3: ffi::sqlite3_io_methods = methods(3);

/// Layer 2 of WAL refusal: no `xShmMap` (version 1) unless WAL is allowed.
pub(super) fn table_for(wal_allowed: bool, parent_version: c_int) -> &'static ffi::sqlite3_io_methods {
    if !wal_allowed || parent_version < 2 {
        &IO_V1
    } else if parent_version < 3 {
        &IO_V2
    } else {
        &IO_V3
    }
}

pub(super) fn is_ours(m: *const ffi::sqlite3_io_methods) -> bool {
    ptr::eq(m, &IO_V1) || ptr::eq(m, &IO_V2) || ptr::eq(m, &IO_V3)
}

const fn methods(version: c_int) -> ffi::sqlite3_io_methods {
    ffi::sqlite3_io_methods {
        iVersion: version,
        xClose: Some(f_close),
        xRead: Some(f_read),
        xWrite: Some(f_write),
        xTruncate: Some(f_truncate),
        xSync: Some(f_sync),
        xFileSize: Some(f_file_size),
        xLock: Some(f_lock),
        xUnlock: Some(f_unlock),
        xCheckReservedLock: Some(f_check_reserved_lock),
        xFileControl: Some(f_file_control),
        xSectorSize: Some(f_sector_size),
        xDeviceCharacteristics: Some(f_device_characteristics),
        xShmMap: if version >= 2 { Some(f_shm_map) } else { None },
        xShmLock: if version >= 2 { Some(f_shm_lock) } else { None },
        xShmBarrier: if version >= 2 { Some(f_shm_barrier) } else { None },
        xShmUnmap: if version >= 2 { Some(f_shm_unmap) } else { None },
        xFetch: if version >= 3 { Some(f_fetch) } else { None },
        xUnfetch: if version >= 3 { Some(f_unfetch) } else { None },
    }
}

/// # Safety
/// `f` must be an open `GuardFile` (its pMethods is one of our tables).
unsafe fn parts<'a>(
    f: *mut ffi::sqlite3_file,
) -> (&'a mut FileState, *mut ffi::sqlite3_file, &'a ffi::sqlite3_io_methods) {
    // SAFETY: per the contract; SQLite serialises calls on one file, so the &mut is unique.
    unsafe {
        let g = f.cast::<GuardFile>();
        let real = (*g).real;
        (&mut *(*g).state, real, &*(*real).pMethods)
    }
}

unsafe extern "C" fn f_close(f: *mut ffi::sqlite3_file) -> c_int {
    guarded(ffi::SQLITE_IOERR_CLOSE, || {
        // SAFETY: f is an open GuardFile; after this call SQLite frees the buffer, so the
        // state box is reclaimed here, exactly once.
        unsafe {
            let g = f.cast::<GuardFile>();
            let real = (*g).real;
            let state = Box::from_raw((*g).state);
            (*g).state = ptr::null_mut();
            // The last engine reference records the database as it leaves it (after the
            // pager's final checkpoint, which runs before the main file is closed).
            let header = if state.hooks.wants_header_on_close() { read_header(real) } else { None };
            let rc = close_real(real);
            (*g).base.pMethods = ptr::null();
            let FileState { hooks, stats, .. } = *state;
            hooks.closed(header, stats, rc);
            rc
        }
    })
}

unsafe extern "C" fn f_read(f: *mut ffi::sqlite3_file, buf: *mut c_void, n: c_int, off: ffi::sqlite3_int64) -> c_int {
    guarded(ffi::SQLITE_IOERR_READ, || {
        // SAFETY: f is open; forwarding. "If xRead() returns SQLITE_IOERR_SHORT_READ it must
        // also fill in the unread portions of the buffer with zeros": the parent does, and
        // its rc is passed through unchanged.
        unsafe {
            let (st, real, m) = parts(f);
            st.stats.reads += 1;
            st.stats.bytes_read += u64::try_from(n).unwrap_or(0);
            m.xRead.map_or(ffi::SQLITE_IOERR_READ, |g| g(real, buf, n, off))
        }
    })
}

unsafe extern "C" fn f_write(
    f: *mut ffi::sqlite3_file,
    buf: *const c_void,
    n: c_int,
    off: ffi::sqlite3_int64,
) -> c_int {
    guarded(ffi::SQLITE_IOERR_WRITE, || {
        // SAFETY: f is open; forwarding.
        unsafe {
            let (st, real, m) = parts(f);
            if st.read_only {
                return veto(st);
            }
            if !st.wal_allowed && off == 0 && n >= 20 {
                // Layer 5: switching to WAL rewrites header bytes 18/19 to 2 through a
                // rollback-journal transaction *before* the -wal is ever opened (vdbe.c,
                // OP_JournalMode), e.g. for an attached database in exclusive locking mode.
                // Refuse the page-1 write that would mark the file as WAL; the pager rolls
                // the transaction back from its journal.
                let b = buf.cast::<u8>();
                if *b.add(18) == 2 || *b.add(19) == 2 {
                    return refuse(st.hooks.refuse_wal_header());
                }
            }
            st.stats.writes += 1;
            st.stats.bytes_written += u64::try_from(n).unwrap_or(0);
            m.xWrite.map_or(ffi::SQLITE_IOERR_WRITE, |g| g(real, buf, n, off))
        }
    })
}

/// A write on a read-only role: unreachable through SQLite (the file is opened read-only),
/// kept as a second wall.
fn veto(st: &mut FileState) -> c_int {
    st.stats.vetoed_writes += 1;
    st.hooks.vetoed_write();
    ffi::SQLITE_READONLY
}

unsafe extern "C" fn f_truncate(f: *mut ffi::sqlite3_file, size: ffi::sqlite3_int64) -> c_int {
    guarded(ffi::SQLITE_IOERR_TRUNCATE, || {
        // SAFETY: f is open; forwarding.
        unsafe {
            let (st, real, m) = parts(f);
            if st.read_only {
                return veto(st);
            }
            m.xTruncate.map_or(ffi::SQLITE_IOERR_TRUNCATE, |g| g(real, size))
        }
    })
}

unsafe extern "C" fn f_sync(f: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    guarded(ffi::SQLITE_IOERR_FSYNC, || {
        // SAFETY: f is open; forwarding.
        unsafe {
            let (st, real, m) = parts(f);
            st.stats.syncs += 1;
            m.xSync.map_or(ffi::SQLITE_IOERR_FSYNC, |g| g(real, flags))
        }
    })
}

unsafe extern "C" fn f_file_size(f: *mut ffi::sqlite3_file, out: *mut ffi::sqlite3_int64) -> c_int {
    guarded(ffi::SQLITE_IOERR_FSTAT, || {
        // SAFETY: f is open; forwarding.
        unsafe {
            let (_, real, m) = parts(f);
            m.xFileSize.map_or(ffi::SQLITE_IOERR_FSTAT, |g| g(real, out))
        }
    })
}

unsafe extern "C" fn f_lock(f: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    guarded(ffi::SQLITE_IOERR_LOCK, || {
        // SAFETY: f is open; forwarding.
        unsafe {
            let (st, real, m) = parts(f);
            // Once per write transaction, not per I/O: the safe half re-validates the hold.
            if level == ffi::SQLITE_LOCK_RESERVED
                && !st.read_only
                && let Err(r) = st.hooks.begin_write()
            {
                return refuse(r);
            }
            let rc = m.xLock.map_or(ffi::SQLITE_IOERR_LOCK, |g| g(real, level));
            if rc == ffi::SQLITE_OK && level == ffi::SQLITE_LOCK_RESERVED {
                st.stats.write_txns += 1;
            }
            rc
        }
    })
}

unsafe extern "C" fn f_unlock(f: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    guarded(ffi::SQLITE_IOERR_UNLOCK, || {
        // SAFETY: f is open; forwarding.
        unsafe {
            let (_, real, m) = parts(f);
            m.xUnlock.map_or(ffi::SQLITE_IOERR_UNLOCK, |g| g(real, level))
        }
    })
}

unsafe extern "C" fn f_check_reserved_lock(f: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    guarded(ffi::SQLITE_IOERR_CHECKRESERVEDLOCK, || {
        // SAFETY: f is open; forwarding.
        unsafe {
            let (_, real, m) = parts(f);
            m.xCheckReservedLock.map_or(ffi::SQLITE_IOERR_CHECKRESERVEDLOCK, |g| g(real, out))
        }
    })
}

unsafe extern "C" fn f_file_control(f: *mut ffi::sqlite3_file, op: c_int, arg: *mut c_void) -> c_int {
    guarded(ffi::SQLITE_ERROR, || {
        // SAFETY: f is open; the argument layouts below are SQLite's documented ones.
        unsafe {
            let (st, real, m) = parts(f);
            match op {
                ffi::SQLITE_FCNTL_PRAGMA => {
                    // "The argument is a pointer to an array of pointers to strings (char**)
                    // ... [1] is the name of the pragma and [2] is the argument or NULL.
                    // ... the VFS ... may [set [0]] to an error message ... and return
                    // SQLITE_ERROR" (sqlite.org/c3ref/c_fcntl_begin_atomic_write.html).
                    let az = arg.cast::<*mut c_char>();
                    if let Some(rc) = pragma(st, az) {
                        return rc;
                    }
                }
                ffi::SQLITE_FCNTL_VFSNAME => {
                    let rc = m.xFileControl.map_or(ffi::SQLITE_NOTFOUND, |g| g(real, op, arg));
                    let out = arg.cast::<*mut c_char>();
                    let inner = if rc == ffi::SQLITE_OK && !(*out).is_null() {
                        let s = CStr::from_ptr(*out).to_string_lossy().into_owned();
                        ffi::sqlite3_free((*out).cast());
                        s
                    } else {
                        // The parent answers nothing of its own: its registered name.
                        CStr::from_ptr((*st.parent).zName).to_string_lossy().into_owned()
                    };
                    *out = sqlite_string(&format!("{}/{inner}", st.hooks.vfs_name()));
                    return ffi::SQLITE_OK;
                }
                _ => {}
            }
            m.xFileControl.map_or(ffi::SQLITE_NOTFOUND, |g| g(real, op, arg))
        }
    })
}

/// Hands a pragma to the safe half. `None` lets it through to the parent.
///
/// # Safety
/// `az` must be the `char*[3]` of `SQLITE_FCNTL_PRAGMA`.
unsafe fn pragma(st: &mut FileState, az: *mut *mut c_char) -> Option<c_int> {
    // SAFETY: per the contract; entries 1 and 2 are NUL-terminated or (2) NULL.
    let (name, value) = unsafe {
        let name = *az.add(1);
        let value = *az.add(2);
        if name.is_null() {
            return None;
        }
        let v = (!value.is_null()).then(|| CStr::from_ptr(value).to_string_lossy().into_owned());
        (CStr::from_ptr(name).to_string_lossy().into_owned(), v)
    };
    let (rc, text) = match st.hooks.pragma(&name, value.as_deref(), &st.stats)? {
        PragmaAnswer::Value(text) => (ffi::SQLITE_OK, text),
        PragmaAnswer::Error(text) => (ffi::SQLITE_ERROR, text),
    };
    // SAFETY: [0] receives a string SQLite frees with sqlite3_free; with SQLITE_OK it is
    // the pragma's result, with SQLITE_ERROR its error message.
    unsafe { *az = sqlite_string(&text) };
    Some(rc)
}

unsafe extern "C" fn f_sector_size(f: *mut ffi::sqlite3_file) -> c_int {
    guarded(4096, || {
        // SAFETY: f is open; forwarding.
        unsafe {
            let (_, real, m) = parts(f);
            m.xSectorSize.map_or(4096, |g| g(real))
        }
    })
}

unsafe extern "C" fn f_device_characteristics(f: *mut ffi::sqlite3_file) -> c_int {
    guarded(0, || {
        // SAFETY: f is open; forwarding.
        unsafe {
            let (_, real, m) = parts(f);
            m.xDeviceCharacteristics.map_or(0, |g| g(real))
        }
    })
}

unsafe extern "C" fn f_shm_map(
    f: *mut ffi::sqlite3_file,
    pg: c_int,
    pgsz: c_int,
    extend: c_int,
    pp: *mut *mut c_void,
) -> c_int {
    guarded(ffi::SQLITE_IOERR_SHMMAP, || {
        // SAFETY: f is open (only reachable through IO_V2/IO_V3, i.e. WAL allowed).
        unsafe {
            let (_, real, m) = parts(f);
            m.xShmMap.map_or(ffi::SQLITE_IOERR_SHMMAP, |g| g(real, pg, pgsz, extend, pp))
        }
    })
}

unsafe extern "C" fn f_shm_lock(f: *mut ffi::sqlite3_file, off: c_int, n: c_int, flags: c_int) -> c_int {
    guarded(ffi::SQLITE_IOERR_SHMLOCK, || {
        // SAFETY: f is open; forwarding.
        unsafe {
            let (st, real, m) = parts(f);
            // In WAL mode a write transaction takes the WAL write lock (slot 0 of the
            // wal-index, exclusive) instead of RESERVED: the same once-per-transaction check.
            if off == 0
                && flags == ffi::SQLITE_SHM_LOCK | ffi::SQLITE_SHM_EXCLUSIVE
                && !st.read_only
                && let Err(r) = st.hooks.begin_write()
            {
                return refuse(r);
            }
            m.xShmLock.map_or(ffi::SQLITE_IOERR_SHMLOCK, |g| g(real, off, n, flags))
        }
    })
}

unsafe extern "C" fn f_shm_barrier(f: *mut ffi::sqlite3_file) {
    // SAFETY: f is open; forwarding.
    let _ = catch_unwind(AssertUnwindSafe(|| unsafe {
        let (_, real, m) = parts(f);
        if let Some(g) = m.xShmBarrier {
            g(real);
        }
    }));
}

unsafe extern "C" fn f_shm_unmap(f: *mut ffi::sqlite3_file, delete: c_int) -> c_int {
    guarded(ffi::SQLITE_IOERR_SHMMAP, || {
        // SAFETY: f is open; forwarding.
        unsafe {
            let (_, real, m) = parts(f);
            m.xShmUnmap.map_or(ffi::SQLITE_OK, |g| g(real, delete))
        }
    })
}

unsafe extern "C" fn f_fetch(
    f: *mut ffi::sqlite3_file,
    off: ffi::sqlite3_int64,
    n: c_int,
    pp: *mut *mut c_void,
) -> c_int {
    guarded(ffi::SQLITE_IOERR_MMAP, || {
        // SAFETY: f is open; forwarding. "*pp = 0" is a valid answer (no mapping).
        unsafe {
            let (_, real, m) = parts(f);
            match m.xFetch {
                Some(g) => g(real, off, n, pp),
                None => {
                    *pp = ptr::null_mut();
                    ffi::SQLITE_OK
                }
            }
        }
    })
}

unsafe extern "C" fn f_unfetch(f: *mut ffi::sqlite3_file, off: ffi::sqlite3_int64, p: *mut c_void) -> c_int {
    guarded(ffi::SQLITE_IOERR_MMAP, || {
        // SAFETY: f is open; forwarding.
        unsafe {
            let (_, real, m) = parts(f);
            m.xUnfetch.map_or(ffi::SQLITE_OK, |g| g(real, off, p))
        }
    })
}

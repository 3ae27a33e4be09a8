//! Every `unsafe` block of the crate lives under this module, and nothing else does.
//!
//! Owns: the VFS objects and their callbacks ([`vfs`], [`file`]), the writer-lock
//! descriptor handoff ([`handoff`]), the per-connection hooks (the auto-extension and the
//! tooling connections' `ATTACH` authorizer, [`hooks`]), the engine child's parent-death
//! signal ([`process`]), another SQLite library's release ([`dl`]), the fault layer's libc interposers in test builds (`faults`), and small SQLite helpers that need raw handles
//! ([`sqlite`]): reading a file through a VFS instead of a `std::fs` descriptor, the VFS a
//! connection runs on. Does not own any decision: the safe half in `guard` decides behind
//! the [`shim::Shim`] trait, and this layer turns pointers into Rust values and back.
//!
//! Every `unsafe` block carries a `// SAFETY:` line and every `unsafe fn` a `# Safety`
//! section; `clippy::undocumented_unsafe_blocks` holds the first, review the second.

#![allow(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

#[cfg(feature = "faults")]
pub(crate) mod faults;
pub(crate) mod dl;
pub(crate) mod file;
pub(crate) mod handoff;
pub(crate) mod hooks;
pub(crate) mod process;
pub(crate) mod shim;
pub(crate) mod sqlite;
pub(crate) mod vfs;

#[cfg(test)]
mod contract_tests;

use std::ffi::{CString, c_char, c_int};
use std::ptr;

use libsqlite3_sys as ffi;

/// Sends a message to `sqlite3_log`, always as the argument of a `"%s"` format.
pub(crate) fn log_to_sqlite(code: c_int, msg: &str) {
    // SQLite's log buffer is small; keep the message short and NUL-free.
    let short: String = msg.chars().filter(|&c| c != '\0').take(200).collect();
    if let Ok(c) = CString::new(short) {
        // SAFETY: the format is a literal "%s" and the argument a valid C string.
        unsafe { ffi::sqlite3_log(code, c"%s".as_ptr(), c.as_ptr()) };
    }
}

/// A copy of `s` that SQLite can free with `sqlite3_free` (NUL bytes dropped); NULL when
/// SQLite is out of memory.
fn sqlite_string(s: &str) -> *mut c_char {
    // Not sqlite3_mprintf: the extension API of libsqlite3-sys has no variadic entry for it,
    // and a plain copy needs no format string at all.
    let clean: Vec<u8> = s.bytes().filter(|&b| b != 0).collect();
    let Ok(n) = u64::try_from(clean.len() + 1) else { return ptr::null_mut() };
    // SAFETY: sqlite3_malloc64 returns NULL or a buffer of at least n bytes, which SQLite
    // frees with sqlite3_free as the pragma and error contracts require.
    let p = unsafe { ffi::sqlite3_malloc64(n) }.cast::<u8>();
    if p.is_null() {
        return ptr::null_mut();
    }
    // SAFETY: p has room for clean.len() + 1 bytes and does not overlap `clean`.
    unsafe {
        ptr::copy_nonoverlapping(clean.as_ptr(), p, clean.len());
        *p.add(clean.len()) = 0;
    }
    p.cast()
}

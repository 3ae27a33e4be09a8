//! Asking another SQLite library on this machine for its release: the system's
//! `libsqlite3.so.0`, which the hosts of the loadable extension (Debian's python3 and
//! sqlite3 shell, Node's sqlite3 module built against it) run on.
//!
//! Owns: loading that library with the dynamic loader (`RTLD_LOCAL`, so none of its symbols
//! become visible to anything else), calling its `sqlite3_libversion()`, finding the file it
//! was loaded from, and unloading it. Does not own what the release means for the guard
//! (`guard::sqlite_host`). warden's own SQLite is compiled in and exports no symbols, so the
//! loaded library binds only to itself.

use std::ffi::{CStr, c_char, c_void};
use std::path::PathBuf;

/// The release text (`"3.40.1"`) of the SQLite library the loader finds as `soname`, and the
/// file it loaded; `None` when there is no such library or it has no `sqlite3_libversion`.
pub(crate) fn sqlite_library_release(soname: &CStr) -> Option<(String, PathBuf)> {
    // SAFETY: dlopen with a NUL-terminated name; RTLD_LOCAL keeps its symbols out of the
    // global scope and RTLD_NOW resolves them all now or fails. libsqlite3 has no
    // constructors with side effects (it initializes lazily on first use).
    let handle = unsafe { libc::dlopen(soname.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    if handle.is_null() {
        return None;
    }
    let found = release_of(handle, soname);
    // SAFETY: the handle came from dlopen above and nothing of the library is used after
    // this (the strings were copied out).
    unsafe { libc::dlclose(handle) };
    found
}

fn release_of(handle: *mut c_void, soname: &CStr) -> Option<(String, PathBuf)> {
    // SAFETY: a live handle and a NUL-terminated symbol name.
    let sym = unsafe { libc::dlsym(handle, c"sqlite3_libversion".as_ptr()) };
    if sym.is_null() {
        return None;
    }
    // SAFETY: `sqlite3_libversion` is `const char *sqlite3_libversion(void)` in every SQLite
    // release; the symbol is that function.
    let libversion: extern "C" fn() -> *const c_char = unsafe { std::mem::transmute(sym) };
    let text = libversion();
    if text.is_null() {
        return None;
    }
    // SAFETY: it returns a pointer to a static NUL-terminated string of the library.
    let release = unsafe { CStr::from_ptr(text) }.to_string_lossy().into_owned();
    // SAFETY: an all-zero Dl_info is a valid out-parameter for dladdr.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    // SAFETY: `sym` is an address inside the loaded library; dladdr fills `info` and its
    // dli_fname points at the loader's copy of the file name while the library is loaded.
    let file = if unsafe { libc::dladdr(sym, &raw mut info) } != 0 && !info.dli_fname.is_null() {
        // SAFETY: non-null, NUL-terminated, valid until dlclose (copied here).
        PathBuf::from(unsafe { CStr::from_ptr(info.dli_fname) }.to_string_lossy().into_owned())
    } else {
        PathBuf::from(soname.to_string_lossy().into_owned())
    };
    Some((release, file))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_library_that_is_not_there_is_none() {
        assert!(sqlite_library_release(c"libwarden-no-such-library.so.9").is_none());
        // A library without the symbol.
        assert!(sqlite_library_release(c"libm.so.6").is_none());
    }

    #[test]
    fn the_system_sqlite_answers_when_installed() {
        let Some((release, file)) = sqlite_library_release(c"libsqlite3.so.0") else {
            // Not every machine has libsqlite3 (Debian's sqlite3 package pulls it in).
            assert!(!std::path::Path::new("/usr/lib/x86_64-linux-gnu/libsqlite3.so.0").exists());
            return;
        };
        assert!(release.starts_with("3."), "{release}");
        assert!(file.is_absolute() && file.exists(), "{}", file.display());
        // warden's own SQLite is unaffected by loading and unloading another.
        assert_eq!(rusqlite::version(), rusqlite::version());
    }
}

//! What a tooling connection may `ATTACH`: the pure rule, no I/O.
//!
//! Owns: [`attach_refusal`], and reading the `vfs=` parameters of an SQLite URI filename
//! exactly as SQLite's own parser does (`sqlite3ParseUri`: `%HH` escapes decoded, `#` ends
//! the URI, an empty parameter name skipped, the authority discarded). Does not own
//! installing the rule on a connection (the authorizer lives in `sys::hooks`, set up by
//! [`crate::guard::open`] for every connection whose main database is on a tooling VFS) or
//! the read-only downgrade of files that do open through the guard ([`crate::guard::open`]).
//!
//! Why it exists: `ATTACH 'file:engine.db?vfs=unix' AS y` opens the engine's file again on
//! a VFS the guard never sees, so a read-only tooling connection could write it
//! (`INSERT INTO y.t ...`). Only these may be attached:
//! - an in-memory or temporary database (`:memory:`, `''`, `file::memory:`, `mode=memory`,
//!   or `vfs=memdb`);
//! - a file opened through the same tooling VFS, which is every name without a `vfs=`
//!   parameter (SQLite uses the connection's own VFS) or with `vfs=<that tooling VFS>`.
//!
//! A name that is not a string literal (`ATTACH ?1`, `ATTACH 'file:' || x`) is refused: the
//! authorizer is called while the statement is prepared, before the value exists.

/// Why a connection on the tooling VFS `tool_vfs` may not `ATTACH` `name` (`None`: the
/// name is not a literal, or not UTF-8); `None` when it may.
pub(crate) fn attach_refusal(name: Option<&str>, tool_vfs: &str) -> Option<String> {
    let Some(name) = name else {
        return Some(
            "the file name is not a string literal, so the guard cannot tell which file and VFS it names".into(),
        );
    };
    if !name.starts_with("file:") {
        // A plain path (or `:memory:`, or `''`) opens through the connection's own VFS:
        // this tooling VFS, which opens existing files read-only.
        return None;
    }
    for (key, value) in uri_params(name.as_bytes()) {
        if key == b"vfs" && value != tool_vfs.as_bytes() && value != b"memdb" {
            return Some(format!(
                "`vfs={}` would open it outside the guard's read-only tooling VFS `{tool_vfs}`",
                String::from_utf8_lossy(&value)
            ));
        }
    }
    None
}

/// The query parameters of the URI filename `uri` (which starts with `file:`), decoded as
/// `sqlite3ParseUri` decodes them.
fn uri_params(uri: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    #[derive(PartialEq)]
    enum State {
        Path,
        Key,
        Value,
    }
    let hex = |b: Option<&u8>| b.and_then(|b| (*b as char).to_digit(16));
    let mut i = 5;
    // "Discard the scheme and authority segments of the URI."
    if uri.get(5) == Some(&b'/') && uri.get(6) == Some(&b'/') {
        i = 7;
        while i < uri.len() && uri[i] != b'/' {
            i += 1;
        }
    }
    let (mut state, mut key, mut value, mut params) = (State::Path, Vec::new(), Vec::new(), Vec::new());
    while i < uri.len() && uri[i] != b'#' {
        let c = uri[i];
        i += 1;
        let byte = if c == b'%'
            && let (Some(hi), Some(lo)) = (hex(uri.get(i)), hex(uri.get(i + 1)))
        {
            i += 2;
            let octet = u8::try_from(hi * 16 + lo).unwrap_or(0);
            if octet == 0 {
                // "%00": the rest of the current path, name or value is ignored.
                while i < uri.len()
                    && uri[i] != b'#'
                    && (state != State::Path || uri[i] != b'?')
                    && (state != State::Key || (uri[i] != b'=' && uri[i] != b'&'))
                    && (state != State::Value || uri[i] != b'&')
                {
                    i += 1;
                }
                continue;
            }
            // A decoded byte is never a separator.
            Some(octet)
        } else if state == State::Key && (c == b'&' || c == b'=') {
            if key.is_empty() {
                // An empty option name: the whole option is ignored.
                if c == b'=' {
                    while i < uri.len() && uri[i] != b'#' && uri[i - 1] != b'&' {
                        i += 1;
                    }
                }
                continue;
            }
            if c == b'&' {
                params.push((std::mem::take(&mut key), Vec::new()));
            } else {
                state = State::Value;
            }
            None
        } else if (state == State::Path && c == b'?') || (state == State::Value && c == b'&') {
            if state == State::Value {
                params.push((std::mem::take(&mut key), std::mem::take(&mut value)));
            }
            state = State::Key;
            None
        } else {
            Some(c)
        };
        if let Some(b) = byte {
            match state {
                State::Path => {}
                State::Key => key.push(b),
                State::Value => value.push(b),
            }
        }
    }
    match state {
        State::Key if !key.is_empty() => params.push((key, Vec::new())),
        State::Value => params.push((key, value)),
        _ => {}
    }
    params
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vfs_of(uri: &str) -> Vec<String> {
        uri_params(uri.as_bytes())
            .into_iter()
            .filter(|(k, _)| k == b"vfs")
            .map(|(_, v)| String::from_utf8_lossy(&v).into_owned())
            .collect()
    }

    #[test]
    fn uri_parameters_are_read_as_sqlite_reads_them() {
        assert_eq!(vfs_of("file:e.db?vfs=unix"), ["unix"]);
        assert_eq!(vfs_of("file:e.db?mode=ro&vfs=unix-none&cache=shared"), ["unix-none"]);
        assert_eq!(vfs_of("file:e.db?v%66s=un%69x"), ["unix"], "escapes are decoded");
        assert_eq!(vfs_of("file:e.db#?vfs=unix"), Vec::<String>::new(), "# ends the URI");
        assert_eq!(vfs_of("file:e%3Fdb?x=1"), Vec::<String>::new(), "an escaped ? is part of the path");
        assert_eq!(vfs_of("file:e.db?=skip&vfs=unix"), ["unix"], "an empty name skips its option only");
        assert_eq!(vfs_of("file:e.db?a&vfs=unix"), ["unix"], "a name without a value");
        assert_eq!(vfs_of("file:e.db?vfs=a%26vfs=b"), ["a&vfs=b"], "a decoded & is not a separator");
        assert_eq!(
            vfs_of("file:e.db?vfs%00x=unix&vfs=unix-dotfile"),
            ["unix", "unix-dotfile"],
            "%00 cuts a name short"
        );
        assert_eq!(vfs_of("file://localhost/tmp/e.db?vfs=unix"), ["unix"]);
        assert_eq!(vfs_of("file:e.db?vfs=warden-ro&vfs=unix"), ["warden-ro", "unix"], "every vfs= is seen");
    }

    #[test]
    fn only_memory_and_the_tooling_vfs_may_be_attached() {
        let ro = "warden-ro";
        for ok in [
            "",
            ":memory:",
            "other.db",
            "/var/lib/x.db",
            "file::memory:",
            "file:other.db",
            "file:other.db?mode=ro",
            "file:other.db?vfs=warden-ro",
            "file:/shared?vfs=memdb",
            "FILE:x?vfs=unix",
        ] {
            assert_eq!(attach_refusal(Some(ok), ro), None, "{ok}");
        }
        for bad in [
            "file:engine.db?vfs=unix",
            "file:engine.db?mode=rw&vfs=unix",
            "file:engine.db?vfs=warden",
            "file:engine.db?v%66s=unix",
            "file:engine.db?vfs=warden-ro&vfs=unix",
            "file::memory:?vfs=unix",
        ] {
            let why = attach_refusal(Some(bad), ro).unwrap_or_else(|| panic!("{bad} allowed"));
            assert!(why.contains("vfs="), "{why}");
        }
        assert!(attach_refusal(None, ro).is_some(), "a name that is not a literal is refused");
    }
}

//! Formatting shared by every layer: byte sizes, hex digests, durations in milliseconds.
//!
//! Owns one spelling of each, so the CLI, artifacts and doctor all print sizes the same way.
//! Does not own what any command prints.

use std::time::Duration;

/// `1536` → `1.5 KiB`; below 1 KiB, `512 B`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[u]) }
}

/// The first 12 hex digits of a hash (all of it when shorter).
pub fn short_hash(h: &str) -> &str {
    h.get(..12).unwrap_or(h)
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// A duration in whole milliseconds, saturating.
pub fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A path as UTF-8 text, with every byte that is not valid UTF-8 written `\xNN`
/// (`caf\xe9.db`). The one spelling of a non-UTF-8 path in audit records, messages and
/// JSON, where `Path::display` would silently write `�` and serde would fail.
pub fn path_text(path: &std::path::Path) -> std::borrow::Cow<'_, str> {
    use std::os::unix::ffi::OsStrExt as _;
    if let Some(s) = path.to_str() {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::new();
    for chunk in path.as_os_str().as_bytes().utf8_chunks() {
        out.push_str(chunk.valid());
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    std::borrow::Cow::Owned(out)
}

/// `serialize_with` for an `Option<PathBuf>` field that must never fail to encode: a
/// non-UTF-8 path is written as [`path_text`] (a record that names the file as best it
/// can beats a record that is lost).
///
/// # Errors
/// Only the serializer's own.
pub fn serialize_opt_path<S: serde::Serializer>(path: &Option<std::path::PathBuf>, s: S) -> Result<S::Ok, S::Error> {
    match path {
        Some(p) => s.serialize_some(&*path_text(p)),
        None => s.serialize_none(),
    }
}

/// The next step for an I/O error writing `path` (`what`: "the session directory"), by
/// its cause: a full disk is not a permission problem, and the hint must not say it is.
pub fn io_hint(e: &std::io::Error, what: &str, path: &std::path::Path) -> String {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(path);
    match e.raw_os_error() {
        Some(libc::ENOSPC | libc::EDQUOT) => {
            format!(
                "the disk holding {what} is full: free space there (`df -h {}`), or move {what} to another local disk",
                dir.display()
            )
        }
        Some(libc::EACCES | libc::EPERM) => {
            format!("check the owner and permissions of {what} (`ls -ld {}`)", dir.display())
        }
        Some(libc::EROFS) => format!("{what} is on a read-only filesystem (`findmnt -T {}`)", dir.display()),
        Some(libc::EIO) => "the disk reported an I/O error: check `dmesg` and the disk's health".to_owned(),
        Some(libc::ENOENT | libc::ENOTDIR) => format!("{what} (`{}`) is gone or not a directory", dir.display()),
        _ => format!("check {what} (`{}`)", dir.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_hashes_and_hex() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
        assert_eq!(short_hash("0123456789abcdef"), "0123456789ab");
        assert_eq!(short_hash("abc"), "abc");
        assert_eq!(hex(&[0, 0xab, 0x10]), "00ab10");
        assert_eq!(ms(Duration::from_micros(2500)), 2);
    }

    #[test]
    fn path_text_escapes_only_the_bytes_that_are_not_utf8() {
        use std::os::unix::ffi::OsStrExt as _;
        let p = std::path::Path::new(std::ffi::OsStr::from_bytes(b"/tmp/caf\xe9/\xff\xfe.db"));
        assert_eq!(path_text(p), "/tmp/caf\\xe9/\\xff\\xfe.db");
        assert_eq!(path_text(std::path::Path::new("/tmp/café.db")), "/tmp/café.db");
    }

    #[test]
    fn io_hints_name_the_cause() {
        let p = std::path::Path::new("/srv/s/a.json");
        let h = |errno| io_hint(&std::io::Error::from_raw_os_error(errno), "the session directory", p);
        assert!(h(libc::ENOSPC).contains("is full"), "{}", h(libc::ENOSPC));
        assert!(!h(libc::ENOSPC).contains("permission"));
        assert!(h(libc::EACCES).contains("permissions"));
        assert!(h(libc::EROFS).contains("read-only"));
    }
}

//! Which SQLite this process runs on, and what that means for the guard: its release (read
//! from the version text, which stays the host's own under the loadable extension), whether
//! it has the WAL-reset fix, and so whether the guard runs in full or rollback-journal-only
//! mode. A leaf: it decides nothing about any file (that is `policy`).

/// The SQLite release with the WAL-reset fix (`SQLITE_VERSION_NUMBER` form). Older releases
/// (3.7.0 to 3.51.2) carry a bug that can corrupt a WAL-mode database under concurrent
/// checkpoints; the fix was backported to 3.50.7 and 3.44.6. On a release without it the
/// guard runs in rollback-journal-only mode ([`wal_reset_bug`]).
pub const SQLITE_FLOOR: i32 = 3_051_003;

/// The oldest SQLite the guard registers on at all (in rollback-journal-only mode).
pub const SQLITE_OLDEST: i32 = 3_040_000;

/// Whether SQLite release `v` has the WAL-reset fix: 3.51.3 and later, 3.50.7 and later
/// 3.50 releases, 3.44.6 and later 3.44 releases.
pub fn wal_reset_fixed(v: i32) -> bool {
    v >= SQLITE_FLOOR || (3_050_007..3_051_000).contains(&v) || (3_044_006..3_045_000).contains(&v)
}

/// The linked SQLite's release when it carries the WAL-reset bug: then WAL is refused in
/// every layer, on every storage (an old host of the loadable extension).
pub fn wal_reset_bug() -> Option<i32> {
    let v = sqlite_version_number();
    (!wal_reset_fixed(v)).then_some(v)
}

/// The mode the guard runs in on this SQLite, for status output: `full` or `rollback_only`.
pub fn sqlite_mode() -> &'static str {
    if wal_reset_bug().is_some() { "rollback_only" } else { "full" }
}

/// The system's shared SQLite (`libsqlite3.so.0`, what Debian's python3 and sqlite3 shell
/// link): its release number and file, or `None` when it is not installed. Loaded and
/// unloaded again just to ask; the loadable extension on such a host runs in the mode
/// [`extension_mode`] names.
pub fn system_sqlite() -> Option<(i32, std::path::PathBuf)> {
    let (text, file) = crate::sys::dl::sqlite_library_release(c"libsqlite3.so.0")?;
    Some((version_from_text(&text)?, file))
}

/// The mode the loadable extension runs in on a host SQLite of release `v`: `full`,
/// `rollback_only` (no WAL-reset fix), or `refused` (older than [`SQLITE_OLDEST`]).
pub fn extension_mode(v: i32) -> &'static str {
    if v < SQLITE_OLDEST {
        "refused"
    } else if wal_reset_fixed(v) {
        "full"
    } else {
        "rollback_only"
    }
}

/// The version of the SQLite library actually linked, as a number (`3054001`). Read from
/// `sqlite3_libversion()`: on a host older than the loadable extension's bindings, the
/// extension's API table answers `sqlite3_libversion_number()` for the bindings (see
/// `ext/`), while the version text stays the host's own. Read once: every open asks (for
/// [`wal_reset_bug`]) and the linked library never changes.
pub fn sqlite_version_number() -> i32 {
    static V: std::sync::OnceLock<i32> = std::sync::OnceLock::new();
    *V.get_or_init(|| version_from_text(rusqlite::version()).unwrap_or_else(rusqlite::version_number))
}

/// `"3.40.1"` → `3040001`.
fn version_from_text(text: &str) -> Option<i32> {
    let mut parts = text.split('.').map(|p| p.trim().parse::<i32>().ok());
    let (major, minor, patch) = (parts.next()??, parts.next()??, parts.next().flatten().unwrap_or(0));
    Some(major * 1_000_000 + minor * 1000 + patch)
}

/// `3040001` → `3.40.1`.
pub fn version_text(v: i32) -> String {
    format!("{}.{}.{}", v / 1_000_000, v / 1000 % 1000, v % 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wal_reset_fix_is_in_3_51_3_and_the_two_backports() {
        for (v, fixed) in [
            (3_040_001, false), // Debian 12
            (3_044_005, false),
            (3_044_006, true),
            (3_045_001, false), // Ubuntu 24.04
            (3_050_006, false),
            (3_050_007, true),
            (3_051_001, false), // pysqlite3-binary
            (3_051_002, false),
            (3_051_003, true),
            (3_054_001, true),
        ] {
            assert_eq!(wal_reset_fixed(v), fixed, "{v}");
        }
        // The bundled SQLite has the fix: the guard runs in full mode here.
        assert_eq!((wal_reset_bug(), sqlite_mode()), (None, "full"));
        let modes = [3_039_004, 3_040_001, 3_044_006, 3_045_001, 3_054_001].map(extension_mode);
        assert_eq!(modes, ["refused", "rollback_only", "full", "rollback_only", "full"]);
    }

    #[test]
    fn the_version_is_read_from_the_version_text() {
        assert_eq!(version_from_text("3.40.1"), Some(3_040_001));
        assert_eq!(version_from_text("3.54"), Some(3_054_000));
        assert_eq!(version_from_text("x"), None);
        assert_eq!(sqlite_version_number(), rusqlite::version_number());
    }
}

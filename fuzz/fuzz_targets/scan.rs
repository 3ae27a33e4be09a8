//! Fuzzes the raw database-header and WAL scan the integrity gate runs on untrusted files.
//!
//! Invariants: `scan_bytes` never panics on any bytes (a damaged file is a finding, not a
//! crash), the same input gives the same report, and an empty database is always fatal.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sqlite_warden::format::scan;

fuzz_target!(|data: &[u8]| {
    // First byte picks where the database ends and the WAL begins.
    let (db, wal) = match data.split_first() {
        Some((&cut, rest)) => {
            let at = (usize::from(cut) * 64).min(rest.len());
            let (db, wal) = rest.split_at(at);
            (db, (!wal.is_empty()).then_some(wal))
        }
        None => (data, None),
    };
    let a = scan::scan_bytes(db, wal);
    let b = scan::scan_bytes(db, wal);
    assert_eq!(a, b, "the scan is deterministic");
    if db.is_empty() {
        assert!(!a.is_ok(), "an empty database is never ok");
    }
    let _ = scan::sqlite_page_size(db);
});

//! Fuzzes the raw b-tree page reader salvage uses on damaged databases.
//!
//! Invariants: `decode_record` and every `PageFile` walk (freelist, table leaves, leaf rows)
//! never panic and always end on any bytes: a damaged page yields fewer rows, never a crash
//! or a loop.
#![no_main]

use std::collections::HashSet;

use libfuzzer_sys::fuzz_target;
use sqlite_warden::format::pages::{PageFile, decode_record};

fuzz_target!(|data: &[u8]| {
    let _ = decode_record(data);
    // The bytes as a database file: one scratch file per fuzzing process.
    let path = std::env::temp_dir().join(format!("warden-fuzz-pages-{}.db", std::process::id()));
    if std::fs::write(&path, data).is_err() {
        return;
    }
    if let Ok(f) = PageFile::open(&path) {
        let _ = f.freelist();
        let n = f.page_count().min(64);
        for root in 1..=n {
            let mut seen = HashSet::new();
            for leaf in f.table_leaves(root, &mut seen) {
                let _ = f.leaf_rows(leaf);
            }
            let _ = f.is_table_leaf(root);
        }
    }
});

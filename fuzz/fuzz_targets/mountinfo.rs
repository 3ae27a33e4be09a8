//! Fuzzes the `/proc/self/mountinfo` parser and the kernel's octal path escaping.
//!
//! Invariants: `parse` never panics on any text (malformed lines are skipped), and
//! `unescape(&escape(bytes)) == bytes` for every byte string.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sqlite_warden::storage::mountinfo;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _entries: Vec<mountinfo::MountEntry> = mountinfo::parse(&text);

    let escaped: String = mountinfo::escape(data);
    assert_eq!(mountinfo::unescape(&escaped), data, "escape/unescape round trip");
});

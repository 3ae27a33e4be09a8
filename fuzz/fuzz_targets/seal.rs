//! Fuzzes the seal file's reader and the comparison a gate makes with it.
//!
//! Invariants: `decode` never panics on any bytes and accepts only what `encode` wrote (a
//! damaged seal is an error, never a seal that says something else); a decoded seal
//! re-encodes to the same bytes; `differing` and the page hasher never panic, and a page
//! image compared with itself never differs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sqlite_warden::copies::seal::{PageHasher, file};

fuzz_target!(|data: &[u8]| {
    if let Ok(image) = file::decode(data) {
        assert_eq!(file::encode(&image), data, "a seal that decodes re-encodes to the same bytes");
        assert!(image.digests.differing(&image.digests).is_empty());
    }
    // The same bytes as a (damaged) database image: digests in any block size agree.
    let mut whole = PageHasher::new();
    whole.update(data);
    let whole = whole.finish();
    let mut parts = PageHasher::new();
    for chunk in data.chunks(7) {
        parts.update(chunk);
    }
    let parts = parts.finish();
    assert!(whole.differing(&parts).is_empty(), "block boundaries changed the digests");
    // A damaged seal round: flip one byte of a valid encoding; it must never decode.
    if data.len() > 4 {
        let sealed = sqlite_warden::copies::seal::make_seal(
            std::path::Path::new("/fuzz/e.db"),
            whole,
            sqlite_warden::copies::seal::SealReason::Accept,
            None,
            None,
            "fuzz".into(),
        );
        let mut bytes = file::encode(&sealed);
        let at = usize::from(data[0]) * 251 + usize::from(data[1]);
        let at = at % bytes.len();
        bytes[at] ^= data[2] | 1;
        assert!(file::decode(&bytes).is_err(), "a flipped byte at {at} decoded");
    }
});

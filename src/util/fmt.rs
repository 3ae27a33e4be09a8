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
}

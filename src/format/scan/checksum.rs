//! The WAL checksum of fileformat2 §4 / wal.c: computing it forwards (as SQLite does), reading
//! a stored one, and running it backwards to rebuild the header a generation's first frame was
//! chained from. Owns no judgement: `wal` and `stale` decide what a (mis)match means.

use super::db_header::be32;

/// The WAL checksum, continued from `(s0, s1)`:
///
/// "The checksum is computed by interpreting the input as an even number of unsigned 32-bit
/// integers: x[0] through x[N]. [...] for i from 0 to n-1 step 2: s0 += x[i] + s1; s1 +=
/// x[i+1] + s0;" with "32-bit big-endian integers if the magic number in the first 4 bytes of
/// the WAL is 0x377f0683 and [...] little-endian if the magic number is 0x377f0682."
///
/// `data.len()` must be a multiple of 8 (headers and pages always are).
pub(super) fn wal_checksum(big_endian: bool, data: &[u8], (mut s0, mut s1): (u32, u32)) -> (u32, u32) {
    debug_assert_eq!(data.len() % 8, 0);
    for pair in data.chunks_exact(8) {
        let (a, b) = words(big_endian, pair);
        s0 = s0.wrapping_add(a).wrapping_add(s1);
        s1 = s1.wrapping_add(b).wrapping_add(s0);
    }
    (s0, s1)
}

/// The checksum state before `data` was added, given the state after it: each step of
/// [`wal_checksum`] is invertible (`s1 -= b + s0'`, then `s0 -= a + s1`).
fn unwind(big_endian: bool, data: &[u8], (mut s0, mut s1): (u32, u32)) -> (u32, u32) {
    debug_assert_eq!(data.len() % 8, 0);
    for pair in data.chunks_exact(8).rev() {
        let (a, b) = words(big_endian, pair);
        s1 = s1.wrapping_sub(b).wrapping_sub(s0);
        s0 = s0.wrapping_sub(a).wrapping_sub(s1);
    }
    (s0, s1)
}

fn words(big_endian: bool, pair: &[u8]) -> (u32, u32) {
    let (a, b) = ([pair[0], pair[1], pair[2], pair[3]], [pair[4], pair[5], pair[6], pair[7]]);
    if big_endian {
        (u32::from_be_bytes(a), u32::from_be_bytes(b))
    } else {
        (u32::from_le_bytes(a), u32::from_le_bytes(b))
    }
}

/// Stored checksum of a WAL header (bytes 24..32) or frame header (bytes 16..24): "always
/// stored in the frame header in a big-endian format regardless of which byte order is used to
/// compute the checksum".
pub(super) fn stored_checksum(bytes: &[u8], at: usize) -> (u32, u32) {
    (be32(bytes, at), be32(bytes, at + 4))
}

/// Whether `frame` (its 24-byte header and its page) is the FIRST frame of a WAL generation
/// whose header had the magic, version and page size of `header` (bytes 0..12), this frame's
/// salts, and some checkpoint sequence number; returns that number.
///
/// Frame 1's checksum is seeded by its header's checksum (`walFrames()` sets `aFrameCksum` to
/// it), so running the frame's stored checksum back over its page and first 8 header bytes
/// gives that header's checksum. The header's checksum covers six words, of which only the
/// checkpoint sequence number (word 3) is unknown: solving the last two steps for it leaves one
/// 32-bit equation to check, so a frame that passes is, bar a 2^-32 accident, frame 1 of such a
/// header, content and all.
pub(super) fn first_frame_sequence(big_endian: bool, header: &[u8], frame_header: &[u8], page: &[u8]) -> Option<u32> {
    let seed = unwind(big_endian, &frame_header[..8], unwind(big_endian, page, stored_checksum(frame_header, 16)));
    let (x0, x1) = words(big_endian, &header[0..8]);
    let (x2, _) = words(big_endian, &[header[8], header[9], header[10], header[11], 0, 0, 0, 0]);
    let (x4, x5) = words(big_endian, &frame_header[8..16]);
    // Pair 1: s0 = x0, s1 = x1 + s0. Pair 2: s0 += x2 + s1, s1 += x3 + s0. Pair 3: s0 += x4 + s1,
    // s1 += x5 + s0, which must equal `seed`.
    let s0a = x0;
    let s1a = x1.wrapping_add(s0a);
    let s0b = s0a.wrapping_add(x2).wrapping_add(s1a);
    let s1b = seed.0.wrapping_sub(s0b).wrapping_sub(x4);
    if seed.1 != s1b.wrapping_add(x5).wrapping_add(seed.0) {
        return None;
    }
    let x3 = s1b.wrapping_sub(s1a).wrapping_sub(s0b);
    let bytes = if big_endian { x3.to_be_bytes() } else { x3.to_le_bytes() };
    Some(u32::from_be_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_algorithm_by_hand() {
        // Two pairs: s0 = 1 + 0 = 1, s1 = 2 + 1 = 3; s0 = 1 + 3 + 3 = 7, s1 = 3 + 4 + 7 = 14.
        let data = [0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4];
        assert_eq!(wal_checksum(true, &data, (0, 0)), (7, 14));
        let le: Vec<u8> = data.chunks(4).flat_map(|c| [c[3], c[2], c[1], c[0]]).collect();
        assert_eq!(wal_checksum(false, &le, (0, 0)), (7, 14));
        assert_eq!(wal_checksum(true, &[0xff; 8], (u32::MAX, u32::MAX)).0, u32::MAX.wrapping_mul(3));
    }

    #[test]
    fn first_frame_of_a_real_wal_gives_its_header_back() {
        let (_, mut wal) = crate::format::scan::fixtures::real_wal(4096);
        let frame = |wal: &[u8], index: usize| wal[32 + (index - 1) * (24 + 4096)..][..24 + 4096].to_vec();
        let sequence = |wal: &[u8], f: &[u8]| first_frame_sequence(wal[3] & 1 == 1, &wal[..12], &f[..24], &f[24..]);
        assert_eq!(sequence(&wal, &frame(&wal, 1)), Some(be32(&wal, 12)));
        // The header's own salts and sequence are not used: only the frame's.
        wal[12..24].fill(0xee);
        assert_eq!(sequence(&wal, &frame(&wal, 1)), Some(0));
        // Any other frame, or frame 1 with one byte changed, is not a first frame.
        assert_eq!(sequence(&wal, &frame(&wal, 2)), None);
        let mut changed = frame(&wal, 1);
        changed[24 + 100] ^= 0x01;
        assert_eq!(sequence(&wal, &changed), None);
        let mut other_page_size = wal.clone();
        other_page_size[8..12].copy_from_slice(&1024u32.to_be_bytes());
        assert_eq!(sequence(&other_page_size, &frame(&wal, 1)), None);
    }

    #[test]
    fn unwind_inverts_the_checksum() {
        let data: Vec<u8> = (0..64u8).map(|b| b.wrapping_mul(37).wrapping_add(11)).collect();
        for big_endian in [true, false] {
            let seed = (0xdead_beef, 0x1234_5678);
            let sum = wal_checksum(big_endian, &data, seed);
            assert_ne!(sum, seed);
            assert_eq!(unwind(big_endian, &data, sum), seed);
        }
    }
}

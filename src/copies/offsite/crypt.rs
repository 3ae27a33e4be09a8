//! Client-side encryption of offsite objects: the key file, the keys derived from it, the
//! names packs get in the bucket, and the segmented format every encrypted object has.
//! Owns nothing of S3 (`remote`) nor of what is pushed (`push`).
//!
//! # Format
//!
//! ```text
//! "WARDENC1" | u32 BE segment size | 24-byte base nonce | segment 0 | segment 1 | ...
//! segment i = XChaCha20-Poly1305(plaintext bytes [i*S, (i+1)*S), nonce_i, aad = header)
//! nonce_i   = HMAC-SHA256(nonce key, base | i as u64 BE | last as u8)[..24]
//! ```
//!
//! The base nonce is an HMAC of the plaintext's SHA-256, so the same content always encrypts
//! to the same bytes (a retried upload cannot change an object) and distinct content never
//! shares a nonce. Each segment is authenticated on its own (bounded memory either way);
//! the index and the "last" flag in its nonce make reordering, truncation and extension fail.
//! Pack names are HMACs of the plaintext pack names, so the bucket does not reveal content
//! hashes either.

use std::path::Path;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header's magic.
const MAGIC: &[u8; 8] = b"WARDENC1";
/// Header bytes: magic, segment size, base nonce.
pub const HEADER: usize = 8 + 4 + 24;
/// Plaintext bytes per segment.
pub const SEGMENT: usize = 1 << 20;
/// Authentication tag bytes per segment.
pub const TAG: usize = 16;

/// The keys of one key file.
#[derive(Clone)]
pub struct Keys {
    enc: [u8; 32],
    nonce: [u8; 32],
    name: [u8; 32],
    check: [u8; 32],
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(..)")
    }
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

impl Keys {
    /// The keys derived from 32 secret bytes.
    pub fn derive(master: &[u8; 32]) -> Keys {
        Keys {
            enc: hmac(master, &[b"warden offsite 1 encryption"]),
            nonce: hmac(master, &[b"warden offsite 1 nonce"]),
            name: hmac(master, &[b"warden offsite 1 names"]),
            check: hmac(master, &[b"warden offsite 1 key check"]),
        }
    }

    /// Reads a key file: 64 hex digits (a trailing newline allowed).
    ///
    /// # Errors
    /// A message naming what is wrong with the file.
    pub fn load(path: &Path) -> Result<Keys, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read the key file: {e}"))?;
        let hex = text.trim();
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("a key file holds 64 hex digits (32 bytes); `warden offsite keygen` writes one".into());
        }
        let mut master = [0u8; 32];
        for (i, b) in master.iter_mut().enumerate() {
            *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|e| e.to_string())?;
        }
        Ok(Keys::derive(&master))
    }

    /// A short public fingerprint of the key (recorded in the bucket's format object, so a
    /// wrong key is named as such instead of failing every object).
    pub fn key_id(&self) -> String {
        crate::util::fmt::hex(&hmac(&self.check, &[b"id"])[..8])
    }

    /// The bucket name of the pack `name`.
    pub fn pack_name(&self, name: &str) -> String {
        crate::util::fmt::hex(&hmac(&self.name, &[name.as_bytes()])[..20])
    }

    fn segment_nonce(&self, base: &[u8], i: u64, last: bool) -> [u8; 24] {
        let full = hmac(&self.nonce, &[base, &i.to_be_bytes(), &[u8::from(last)]]);
        let mut n = [0u8; 24];
        n.copy_from_slice(&full[..24]);
        n
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new((&self.enc).into())
    }

    /// An encryptor of content whose SHA-256 (hex) is `content_sha`.
    pub fn encryptor(&self, content_sha: &str) -> Encryptor {
        let base = hmac(&self.nonce, &[b"base", content_sha.as_bytes()]);
        let mut header = Vec::with_capacity(HEADER);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&(SEGMENT as u32).to_be_bytes());
        header.extend_from_slice(&base[..24]);
        Encryptor { keys: self.clone(), header, next: 0 }
    }

    /// Encrypts all of `plain` at once (manifests, the format object).
    pub fn seal_all(&self, content_sha: &str, plain: &[u8]) -> Vec<u8> {
        let mut e = self.encryptor(content_sha);
        let mut out = e.header().to_vec();
        let mut chunks = plain.chunks(SEGMENT).peekable();
        if chunks.peek().is_none() {
            out.extend(e.segment(&[], true));
        }
        while let Some(c) = chunks.next() {
            let last = chunks.peek().is_none();
            out.extend(e.segment(c, last));
        }
        out
    }

    /// Decrypts a whole object.
    ///
    /// # Errors
    /// A message when it is not an object of this key (or was changed).
    pub fn open_all(&self, object: &[u8]) -> Result<Vec<u8>, String> {
        let mut d = Decryptor::new(self);
        let mut out = d.push(object)?;
        out.extend(d.finish()?);
        Ok(out)
    }

    /// Bytes of the encrypted form of `plain_len` plaintext bytes.
    pub fn sealed_len(plain_len: u64) -> u64 {
        let segs = plain_len.div_ceil(SEGMENT as u64).max(1);
        HEADER as u64 + plain_len + segs * TAG as u64
    }
}

/// Encrypts one object segment by segment.
pub struct Encryptor {
    keys: Keys,
    header: Vec<u8>,
    next: u64,
}

impl Encryptor {
    /// The header, written before the first segment.
    pub fn header(&self) -> &[u8] {
        &self.header
    }

    /// Encrypts the next segment (exactly [`SEGMENT`] bytes unless `last`).
    pub fn segment(&mut self, plain: &[u8], last: bool) -> Vec<u8> {
        let nonce = self.keys.segment_nonce(&self.header[12..], self.next, last);
        self.next += 1;
        self.keys
            .cipher()
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: plain, aad: &self.header })
            .expect("XChaCha20-Poly1305 encrypts any length below 256 GiB")
    }
}

/// Decrypts one object as its bytes arrive.
pub struct Decryptor {
    keys: Keys,
    header: Vec<u8>,
    pending: Vec<u8>,
    next: u64,
    segment: usize,
}

impl Decryptor {
    /// A decryptor with `keys`.
    pub fn new(keys: &Keys) -> Decryptor {
        Decryptor { keys: keys.clone(), header: Vec::new(), pending: Vec::new(), next: 0, segment: SEGMENT }
    }

    fn open(&mut self, seg: &[u8], last: bool) -> Result<Vec<u8>, String> {
        let nonce = self.keys.segment_nonce(&self.header[12..], self.next, last);
        self.next += 1;
        self.keys
            .cipher()
            .decrypt(XNonce::from_slice(&nonce), Payload { msg: seg, aad: &self.header })
            .map_err(|_| "it does not decrypt with this key (a different key, or the object was changed)".to_owned())
    }

    /// Takes the next bytes; returns the plaintext of every segment now complete (the last
    /// segment is held back until [`Decryptor::finish`]).
    ///
    /// # Errors
    /// A message when the object is not of this format or key.
    pub fn push(&mut self, mut bytes: &[u8]) -> Result<Vec<u8>, String> {
        if self.header.len() < HEADER {
            let take = (HEADER - self.header.len()).min(bytes.len());
            self.header.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.header.len() == HEADER {
                if &self.header[..8] != MAGIC {
                    return Err("it is not an object warden encrypted (or it is plaintext)".into());
                }
                let s = u32::from_be_bytes(self.header[8..12].try_into().unwrap_or_default()) as usize;
                if s == 0 || s > 64 << 20 {
                    return Err("its segment size is not one warden writes".into());
                }
                self.segment = s;
            }
        }
        self.pending.extend_from_slice(bytes);
        let mut out = Vec::new();
        let whole = self.segment + TAG;
        // Keep at least one byte beyond a full segment: only then is it known not to be the last.
        while self.pending.len() > whole {
            let seg: Vec<u8> = self.pending.drain(..whole).collect();
            out.extend(self.open(&seg, false)?);
        }
        Ok(out)
    }

    /// The last segment's plaintext.
    ///
    /// # Errors
    /// A message when the object is cut short or does not authenticate.
    pub fn finish(&mut self) -> Result<Vec<u8>, String> {
        if self.header.len() < HEADER || self.pending.len() < TAG {
            return Err("it is cut short".into());
        }
        let seg = std::mem::take(&mut self.pending);
        self.open(&seg, true)
    }
}

/// Writes a new key file at `path` (mode 0600, never over an existing file).
///
/// # Errors
/// The I/O error.
pub fn keygen(path: &Path) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut master = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut master))
        .map_err(|e| std::io::Error::new(e.kind(), format!("reading /dev/urandom: {e}")))?;
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    writeln!(f, "{}", crate::util::fmt::hex(&master))?;
    f.sync_all()?;
    crate::util::atomic::sync_dir(crate::util::atomic::parent_of(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(b: u8) -> Keys {
        Keys::derive(&[b; 32])
    }

    #[test]
    fn round_trips_every_length_and_is_deterministic() {
        let k = keys(1);
        for len in [0, 1, SEGMENT - 1, SEGMENT, SEGMENT + 1, 2 * SEGMENT + 7] {
            let plain: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let sealed = k.seal_all("abc", &plain);
            assert_eq!(sealed.len() as u64, Keys::sealed_len(len as u64), "len {len}");
            assert_eq!(sealed, k.seal_all("abc", &plain), "the same content seals to the same bytes");
            assert_eq!(k.open_all(&sealed).unwrap(), plain, "len {len}");
            // Streaming in odd pieces gives the same plaintext.
            let mut d = Decryptor::new(&k);
            let mut out = Vec::new();
            for piece in sealed.chunks(4093) {
                out.extend(d.push(piece).unwrap());
            }
            out.extend(d.finish().unwrap());
            assert_eq!(out, plain);
        }
    }

    #[test]
    fn a_wrong_key_a_flipped_byte_or_a_cut_fail() {
        let plain = vec![9u8; SEGMENT + 100];
        let sealed = keys(1).seal_all("x", &plain);
        assert!(keys(2).open_all(&sealed).is_err(), "another key");
        let mut flipped = sealed.clone();
        flipped[HEADER + 5] ^= 1;
        assert!(keys(1).open_all(&flipped).is_err(), "a flipped byte");
        assert!(keys(1).open_all(&sealed[..HEADER + SEGMENT + TAG]).is_err(), "cut at a segment boundary");
        assert!(keys(1).open_all(&plain).is_err(), "plaintext");
        assert_ne!(keys(1).key_id(), keys(2).key_id());
        assert_ne!(keys(1).pack_name("p"), keys(2).pack_name("p"));
    }
}

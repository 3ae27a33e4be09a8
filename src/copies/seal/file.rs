//! The seal file `<db>.warden/seal` and the open marker `<db>.warden/seal.open`.
//!
//! Owns the on-disk form of a [`Seal`] and its checks: a first line `warden-seal 1`, one
//! line of JSON (who sealed what, when, from which backup, the live file's stat after the
//! close), the page digests (16 bytes each, `page_count` of them), and a SHA-256 of
//! everything before it. A seal whose checksum, length or JSON does not hold is
//! [`SealFileError::Damaged`]: never trusted, never silently ignored. Written atomically
//! (temp, fsync, rename, fsync of the directory). The open marker names a session that
//! began after the seal: while it is there the seal is superseded (that session may have
//! changed the database and did not close cleanly, or has not yet). Does not own what a
//! seal is compared with ([`super`]).

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::digest::{DIGEST_LEN, PageDigests};
use crate::format::names;
use crate::util::atomic;

const MAGIC: &[u8] = b"warden-seal 1\n";
/// A seal is at most this long (65536 pages of digests per MiB: a 16 TiB database at
/// 4 KiB pages is 64 GiB of digests... far beyond; this caps a damaged length field).
const MAX_SEAL: u64 = 1 << 34;

/// Why a seal was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SealReason {
    /// The clean close of a guarded session.
    Session,
    /// `warden accept`: an operator accepted the database as it is.
    Accept,
    /// A restore installed a backup.
    Restore,
    /// `warden migrate import` installed a bundle.
    Import,
}

/// The live file as the close left it: what `warden status` compares cheaply (a write puts
/// the change time forward even when the modification time is put back).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveStat {
    /// Device.
    pub dev: u64,
    /// Inode.
    pub ino: u64,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i128,
    /// Status change time, nanoseconds since the epoch.
    pub ctime_ns: i128,
}

impl LiveStat {
    /// The stat of `db` now (`stat(2)`: no descriptor is opened).
    pub fn of(db: &Path) -> Option<LiveStat> {
        use std::os::unix::fs::MetadataExt as _;
        let md = std::fs::metadata(db).ok()?;
        let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
        Some(LiveStat {
            dev: md.dev(),
            ino: md.ino(),
            size: md.len(),
            mtime_ns: ns(md.mtime(), md.mtime_nsec()),
            ctime_ns: ns(md.ctime(), md.ctime_nsec()),
        })
    }
}

/// What a seal says the database is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seal {
    /// Format version (1).
    pub schema: u32,
    /// The database (resolved).
    pub db: PathBuf,
    /// Its identity (`<db>.warden/identity`) when sealed.
    pub db_id: Option<String>,
    /// When (RFC 3339 UTC).
    pub sealed_at: String,
    /// Why.
    pub reason: SealReason,
    /// The session that sealed it (for [`SealReason::Session`]).
    pub session_id: Option<String>,
    /// Who (user@host) and what, in words, for the audit trail.
    pub detail: String,
    /// The backup that holds exactly this content, when one does.
    pub backup_id: Option<String>,
    /// Page size.
    pub page_size: u32,
    /// Pages.
    pub page_count: u32,
    /// [`PageDigests::content_digest`].
    pub content: String,
    /// The change counter and schema cookie of the header (diagnostic; not compared).
    pub change_counter: Option<u32>,
    /// Schema cookie (bytes 40..44).
    pub schema_cookie: Option<u32>,
    /// The live file after the close.
    pub live: Option<LiveStat>,
}

/// A seal with its page digests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedImage {
    /// The record.
    pub seal: Seal,
    /// The digests, page by page.
    pub digests: PageDigests,
}

/// The marker of a session that began after the last seal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenMarker {
    /// The session.
    pub session_id: String,
    /// When it began (RFC 3339 UTC).
    pub since: String,
    /// Its supervisor.
    pub pid: u32,
}

/// A seal file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SealFileError {
    /// Damaged: wrong magic, checksum, length or JSON.
    #[error(
        "the seal `{}` is damaged ({why}): warden cannot tell what the database must be\n(hint: `warden accept --db {}` checks the database as it is and seals it again; or restore the last post-session backup)",
        path.display(), db.display()
    )]
    Damaged {
        /// The seal file.
        path: PathBuf,
        /// The database.
        db: PathBuf,
        /// What does not hold.
        why: String,
    },
    /// Reading or writing failed.
    #[error("cannot {action} the seal `{}`: {source}", path.display())]
    Io {
        /// `read`, `write`.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: io::Error,
    },
}

/// `<db>.warden/seal`.
pub fn seal_path(db: &Path) -> PathBuf {
    names::seal(db)
}

/// `<db>.warden/seal.open`.
pub fn open_path(db: &Path) -> PathBuf {
    names::seal_open(db)
}

/// The bytes of a seal file.
pub fn encode(image: &SealedImage) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    out.extend(serde_json::to_vec(&image.seal).unwrap_or_default());
    out.push(b'\n');
    for d in &image.digests.digests {
        out.extend_from_slice(d);
    }
    let sum = Sha256::digest(&out);
    out.extend_from_slice(&sum);
    out
}

/// Parses a seal file; every check that fails says why.
///
/// # Errors
/// The reason, for [`SealFileError::Damaged`].
pub fn decode(bytes: &[u8]) -> Result<SealedImage, String> {
    if bytes.len() < MAGIC.len() + 32 || !bytes.starts_with(MAGIC) {
        return Err("not a warden seal (wrong first line)".into());
    }
    let (body, sum) = bytes.split_at(bytes.len() - 32);
    if Sha256::digest(body).as_slice() != sum {
        return Err("its checksum does not match its contents".into());
    }
    let rest = &body[MAGIC.len()..];
    let nl = rest.iter().position(|&b| b == b'\n').ok_or("no end to its record line")?;
    let seal: Seal = serde_json::from_slice(&rest[..nl]).map_err(|e| format!("its record is not valid: {e}"))?;
    if seal.schema != 1 {
        return Err(format!("format version {} is not one this warden reads", seal.schema));
    }
    let raw = &rest[nl + 1..];
    let want = usize::try_from(seal.page_count).unwrap_or(usize::MAX).checked_mul(DIGEST_LEN);
    if want != Some(raw.len()) {
        return Err(format!("{} bytes of page digests for {} pages", raw.len(), seal.page_count));
    }
    let digests: Vec<[u8; DIGEST_LEN]> =
        raw.chunks_exact(DIGEST_LEN).map(|c| c.try_into().expect("chunks_exact gives whole digests")).collect();
    let image = SealedImage { digests: PageDigests { page_size: seal.page_size, digests, header: Vec::new() }, seal };
    if image.digests.content_digest() != image.seal.content {
        return Err("its content digest does not match its page digests".into());
    }
    Ok(image)
}

/// The seal of `db`, if it has one.
///
/// # Errors
/// [`SealFileError::Damaged`] for a seal that does not check out, `Io` for a read error
/// other than "not there".
pub fn load(db: &Path) -> Result<Option<SealedImage>, SealFileError> {
    let path = seal_path(db);
    let len = match std::fs::symlink_metadata(&path) {
        Ok(md) if md.is_file() => md.len(),
        Ok(_) => {
            return Err(SealFileError::Damaged { path, db: db.to_owned(), why: "it is not a regular file".into() });
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(SealFileError::Io { action: "read", path, source }),
    };
    if len > MAX_SEAL {
        return Err(SealFileError::Damaged { path, db: db.to_owned(), why: format!("{len} bytes is far too long") });
    }
    let bytes =
        std::fs::read(&path).map_err(|source| SealFileError::Io { action: "read", path: path.clone(), source })?;
    decode(&bytes).map(Some).map_err(|why| SealFileError::Damaged { path, db: db.to_owned(), why })
}

/// Writes the seal of `db` (atomically) and removes the open marker: the database is sealed.
///
/// # Errors
/// [`SealFileError::Io`].
pub fn store(db: &Path, image: &SealedImage) -> Result<(), SealFileError> {
    let path = seal_path(db);
    let io = |source| SealFileError::Io { action: "write", path: path.clone(), source };
    atomic::create_dir_synced(atomic::parent_of(&path), 0o700).map_err(io)?;
    atomic::write_atomic(&path, &encode(image), 0o600).map_err(io)?;
    clear_open(db).map_err(io)
}

/// Records that `session_id` began after the seal.
///
/// # Errors
/// The I/O error.
pub fn mark_open(db: &Path, session_id: &str) -> io::Result<()> {
    let marker = OpenMarker {
        session_id: session_id.to_owned(),
        since: crate::util::identity::now_rfc3339(),
        pid: std::process::id(),
    };
    let path = open_path(db);
    atomic::create_dir_synced(atomic::parent_of(&path), 0o700)?;
    atomic::write_atomic(&path, &serde_json::to_vec(&marker).map_err(io::Error::other)?, 0o600)
}

/// The open marker, if there is one. An unreadable marker still counts as open.
pub fn open_marker(db: &Path) -> Option<OpenMarker> {
    match std::fs::read(open_path(db)) {
        Ok(bytes) => Some(serde_json::from_slice(&bytes).unwrap_or(OpenMarker {
            session_id: "<unreadable marker>".into(),
            since: String::new(),
            pid: 0,
        })),
        Err(_) => None,
    }
}

/// Removes the open marker (and makes the removal durable).
///
/// # Errors
/// The I/O error, except "not there".
pub fn clear_open(db: &Path) -> io::Result<()> {
    let path = open_path(db);
    match std::fs::remove_file(&path) {
        Ok(()) => atomic::sync_dir(atomic::parent_of(&path)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> SealedImage {
        let digests = PageDigests { page_size: 4096, digests: vec![[1; 16], [2; 16], [3; 16]], header: Vec::new() };
        SealedImage {
            seal: Seal {
                schema: 1,
                db: "/srv/e.db".into(),
                db_id: Some("ab".into()),
                sealed_at: "2026-12-02T00:00:00Z".into(),
                reason: SealReason::Session,
                session_id: Some("s1".into()),
                detail: "clean close".into(),
                backup_id: Some("b1".into()),
                page_size: 4096,
                page_count: 3,
                content: digests.content_digest(),
                change_counter: Some(7),
                schema_cookie: Some(1),
                live: None,
            },
            digests,
        }
    }

    #[test]
    fn a_seal_round_trips_and_every_damage_is_caught() {
        let img = sample();
        let bytes = encode(&img);
        assert_eq!(decode(&bytes).unwrap(), img);
        for at in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[at] ^= 0x10;
            assert!(decode(&bad).is_err(), "a flipped byte at {at} went unnoticed");
        }
        for len in 0..bytes.len() {
            assert!(decode(&bytes[..len]).is_err(), "truncated to {len}");
        }
    }

    #[test]
    fn store_load_and_the_open_marker() {
        let d = tempfile::tempdir().unwrap();
        let db = d.path().join("e.db");
        assert!(load(&db).unwrap().is_none());
        mark_open(&db, "s2").unwrap();
        assert_eq!(open_marker(&db).unwrap().session_id, "s2");
        store(&db, &sample()).unwrap();
        assert!(open_marker(&db).is_none(), "sealing closes the marker");
        assert_eq!(load(&db).unwrap().unwrap(), sample());
        std::fs::write(seal_path(&db), b"warden-seal 1\n{}").unwrap();
        assert!(matches!(load(&db), Err(SealFileError::Damaged { .. })));
    }
}

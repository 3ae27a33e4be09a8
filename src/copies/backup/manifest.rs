//! What a published backup records: its manifest, timings, the record of a listed backup,
//! and how a health artifact names it. Does not own writing or listing them (`backup`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{BackupOptions, sqlite_version};
use crate::copies::check::IntegrityReport;
use crate::copies::kind::BackupKind;

/// What a backup's manifest records. Schema 1; readers ignore unknown fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Manifest schema version.
    pub schema: u32,
    /// The backup's id (the file stem).
    pub id: String,
    /// The data file's name, in the same directory.
    pub file: String,
    /// Why it was taken.
    pub kind: BackupKind,
    /// When the copy was taken (RFC 3339 UTC).
    pub created: String,
    /// The database it copies (its resolved path).
    pub source: PathBuf,
    /// The database's stable identity (`copies::identity`); absent in backups made before
    /// warden recorded one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db_id: Option<String>,
    /// The session it belongs to.
    pub session_id: Option<String>,
    /// Size of the data file in bytes.
    pub size: u64,
    /// Page size of the copy.
    pub page_size: u32,
    /// Page count of the copy.
    pub page_count: u64,
    /// SHA-256 of the data file, lowercase hex.
    pub sha256: String,
    /// The check of the copy.
    pub integrity: IntegrityReport,
    /// The copy passed its check and its hash is recorded: it may be restored.
    pub verified: bool,
    /// How the copy was made: `backup_api` or `private_copy_recovered`.
    pub method: String,
    /// Bytes of `-wal` and `-journal` beside the source when it was copied.
    pub source_sidecar_bytes: u64,
    /// Durations of the phases.
    pub timings: Timings,
    /// SQLite that made and checked the copy.
    pub sqlite_version: String,
    /// warden that made it.
    pub warden_version: String,
    /// Host that made it.
    pub host: String,
    /// Where the bytes are when they are in the page store (then `file` is empty): the
    /// restore point's map. `None`: the data file `file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pages: Option<crate::copies::store::PageMap>,
    /// What storing the pages cost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored: Option<super::StoredCost>,
    /// The content digest of the copy (what a seal of it records, see
    /// [`crate::copies::seal::PageDigests::content_digest`]): the same for every copy of
    /// the same content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// When its exact content passed (or failed) its check; `None` in backups made before
    /// warden recorded it, which were all checked when written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checked: Option<super::CheckedWhen>,
}

impl Manifest {
    /// The manifest of a copy that could not be made or checked: never published.
    pub(super) fn unpublished(
        id: &str,
        kind: BackupKind,
        db: &Path,
        opts: &BackupOptions,
        integrity: IntegrityReport,
    ) -> Self {
        Manifest {
            schema: 1,
            id: id.to_owned(),
            file: String::new(),
            kind,
            created: crate::util::identity::now_rfc3339(),
            source: db.to_owned(),
            db_id: None,
            session_id: opts.session_id.clone(),
            size: 0,
            page_size: 0,
            page_count: 0,
            sha256: String::new(),
            integrity,
            verified: false,
            method: "none".into(),
            source_sidecar_bytes: 0,
            timings: Timings::default(),
            sqlite_version: sqlite_version(),
            warden_version: env!("CARGO_PKG_VERSION").to_owned(),
            host: crate::util::identity::ProcessIdentity::current().host,
            pages: None,
            stored: None,
            content: None,
            checked: None,
        }
    }

    /// Its bytes are in the page store.
    pub fn is_paged(&self) -> bool {
        self.pages.is_some()
    }

    /// Its exact content (these bytes, this SHA-256) passed a full integrity check, when it
    /// was written or by a later gate: a copy that hashes to `sha256` needs no second check.
    pub fn content_fully_checked(&self) -> bool {
        self.verified
            && self.integrity.ok
            && self.integrity.mode == super::CheckMode::Full
            && self.sha256.len() == 64
            && matches!(self.checked, None | Some(super::CheckedWhen::AtWrite | super::CheckedWhen::ByGate { .. }))
    }

    /// Its check has not run yet ([`super::CheckedWhen::Pending`]).
    pub fn check_pending(&self) -> bool {
        self.checked == Some(super::CheckedWhen::Pending)
    }

    /// A backup that may be restored as a known-good state: verified, and not a post-crash
    /// copy.
    pub fn is_good(&self) -> bool {
        self.verified && self.kind.can_be_good()
    }

    /// When it was taken.
    pub fn created_at(&self) -> Option<jiff::Timestamp> {
        self.created.parse().ok()
    }
}

/// Phase durations of one backup, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timings {
    /// Copying.
    pub copy_ms: u64,
    /// Integrity check (runs beside hashing).
    pub check_ms: u64,
    /// Hash and fsync (runs beside the check).
    pub hash_ms: u64,
    /// Everything, lock to publication.
    pub total_ms: u64,
}

/// A published backup: its manifest and where its files are.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackupRecord {
    /// The manifest as published.
    pub manifest: Manifest,
    /// The data file.
    pub path: PathBuf,
    /// The manifest file.
    pub manifest_path: PathBuf,
}

/// A backup as the artifact names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupRef {
    /// Backup id.
    pub id: String,
    /// Data file.
    pub path: PathBuf,
    /// Why it was taken.
    pub kind: BackupKind,
    /// When (RFC 3339 UTC).
    pub created: String,
    /// SHA-256 of the data file.
    pub sha256: String,
    /// Bytes.
    pub size: u64,
    /// Passed its check.
    pub verified: bool,
}

impl From<&BackupRecord> for BackupRef {
    fn from(r: &BackupRecord) -> Self {
        BackupRef {
            id: r.manifest.id.clone(),
            path: r.path.clone(),
            kind: r.manifest.kind,
            created: r.manifest.created.clone(),
            sha256: r.manifest.sha256.clone(),
            size: r.manifest.size,
            verified: r.manifest.verified,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::copies::backup::{CheckMode, CheckedWhen};

    /// A published point whose check ran in `mode` and passed, recorded as `checked`.
    fn point(mode: CheckMode, checked: Option<CheckedWhen>) -> Manifest {
        let mut integrity = IntegrityReport::failed(mode, String::new(), Duration::ZERO);
        integrity.ok = true;
        integrity.error = None;
        integrity.messages = vec!["ok".into()];
        let mut m =
            Manifest::unpublished("p", BackupKind::Manual, Path::new("/x.db"), &BackupOptions::default(), integrity);
        m.verified = true;
        m.sha256 = "a".repeat(64);
        m.checked = checked;
        m
    }

    /// Only content whose full check passed may skip the check on restore (issue 14, P4): a
    /// quick check, a pending check, a failed or unverified point are all checked again.
    #[test]
    fn only_fully_checked_content_skips_a_second_check() {
        assert!(point(CheckMode::Full, None).content_fully_checked());
        assert!(point(CheckMode::Full, Some(CheckedWhen::AtWrite)).content_fully_checked());
        assert!(point(CheckMode::Full, Some(CheckedWhen::ByGate { backup: "b".into() })).content_fully_checked());
        assert!(!point(CheckMode::Quick, None).content_fully_checked(), "a quick check sees less");
        assert!(!point(CheckMode::Full, Some(CheckedWhen::Pending)).content_fully_checked(), "not checked yet");
        let mut failed = point(CheckMode::Full, None);
        failed.integrity.ok = false;
        assert!(!failed.content_fully_checked());
        let mut unverified = point(CheckMode::Full, None);
        unverified.verified = false;
        assert!(!unverified.content_fully_checked());
        let mut no_hash = point(CheckMode::Full, None);
        no_hash.sha256.clear();
        assert!(!no_hash.content_fully_checked(), "nothing proves the copy is that content");
    }
}

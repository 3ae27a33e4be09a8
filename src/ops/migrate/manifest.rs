//! The bundle format: `MANIFEST.json` (schema 1), its entries, and the names of the files in
//! a bundle. Does not own: making a bundle ([`super::builder`]) or checking one against its
//! manifest ([`super::verify`]).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::copies::backup::IntegrityReport;
use crate::storage::FsVerdict;

/// Current bundle schema.
pub const SCHEMA: u32 = 1;
/// The manifest's file name, at the top of a bundle.
pub const MANIFEST_FILE: &str = "MANIFEST.json";
/// The database's file name in a migration bundle.
pub const DATABASE_FILE: &str = "database.sqlite";
/// Directory of the health artifacts in a bundle.
pub const SESSIONS_DIR: &str = "sessions";
/// The audit log in a migration bundle.
pub const AUDIT_FILE: &str = "audit/audit.jsonl";
/// Directory of backup manifests (and data, on request) in a migration bundle.
pub const BACKUPS_DIR: &str = "backups";
/// Directory of the snapshot in a sessions export.
pub const SNAPSHOTS_DIR: &str = "snapshots";

/// What a bundle is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BundleKind {
    /// A database with its artifacts and audit log, to be imported on another host.
    Migration,
    /// Session artifacts and the newest snapshot, for analysis elsewhere.
    Sessions,
}

/// One file of a bundle, as the manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleEntry {
    /// Relative path inside the bundle, `/`-separated, no `.` or `..`.
    pub path: String,
    /// Bytes.
    pub size: u64,
    /// SHA-256, lowercase hex.
    pub sha256: String,
}

/// Where a bundle came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleSource {
    /// Host name.
    pub host: String,
    /// The database (absolute path on that host).
    pub db: PathBuf,
    /// Its storage verdict there (an SMB share says `network`).
    pub storage: Option<FsVerdict>,
    /// The artifact directory read.
    pub session_dir: PathBuf,
    /// The audit log copied, if there was one.
    pub audit_log: Option<PathBuf>,
    /// The backup directory read, when backups were included.
    pub backup_dir: Option<PathBuf>,
}

/// The database of a migration bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundledDatabase {
    /// Its file in the bundle ([`DATABASE_FILE`]).
    pub file: String,
    /// Bytes.
    pub size: u64,
    /// SHA-256, lowercase hex (the same as its [`BundleEntry`]).
    pub sha256: String,
    /// Page size.
    pub page_size: u32,
    /// Page count.
    pub page_count: u64,
    /// Always `delete`: one self-contained file.
    pub journal_mode: String,
    /// `integrity_check` and `foreign_key_check` of the copy.
    pub integrity: IntegrityReport,
    /// `count(*)` of every table, by name; an import compares them.
    pub row_counts: BTreeMap<String, u64>,
    /// How the copy was made: `backup_api` (one step, from a read-only tooling connection).
    pub method: String,
    /// Bytes of `-wal` beside the source when it was copied.
    pub source_wal_bytes: u64,
    /// Wall time of the copy.
    pub copy_ms: u64,
}

/// The snapshot of a sessions export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundledSnapshot {
    /// The snapshot's id.
    pub id: String,
    /// Its data file in the bundle.
    pub file: String,
    /// Its own manifest in the bundle.
    pub manifest_file: String,
    /// When it was taken (RFC 3339 UTC).
    pub created: String,
    /// Bytes.
    pub size: u64,
    /// SHA-256, lowercase hex.
    pub sha256: String,
}

/// `MANIFEST.json`. Schema 1; readers ignore unknown fields, and a newer schema is refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleManifest {
    /// Bundle schema ([`SCHEMA`]).
    pub schema: u32,
    /// What it is for.
    pub kind: BundleKind,
    /// When it was made (RFC 3339 UTC).
    pub created: String,
    /// Where it came from.
    pub source: BundleSource,
    /// The SQLite that made it.
    pub sqlite_version: String,
    /// The warden that made it.
    pub warden_version: String,
    /// The database (migration bundles).
    #[serde(default)]
    pub database: Option<BundledDatabase>,
    /// The snapshot (sessions exports that had one).
    #[serde(default)]
    pub snapshot: Option<BundledSnapshot>,
    /// Every file of the bundle except the manifest, sorted by path.
    pub files: Vec<BundleEntry>,
    /// Notes for the operator (what was not included, and why).
    #[serde(default)]
    pub notes: Vec<String>,
}

impl BundleManifest {
    /// The entry for `path`, if listed.
    pub fn entry(&self, path: &str) -> Option<&BundleEntry> {
        self.files.iter().find(|e| e.path == path)
    }

    /// The listed artifacts (`sessions/*.json`).
    pub fn sessions(&self) -> impl Iterator<Item = &BundleEntry> {
        self.files.iter().filter(|e| e.path.starts_with(&format!("{SESSIONS_DIR}/")))
    }

    /// Bytes of every listed file.
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|e| e.size).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_round_trips_and_ignores_unknown_fields() {
        let m = BundleManifest {
            schema: SCHEMA,
            kind: BundleKind::Sessions,
            created: "t".into(),
            source: BundleSource {
                host: "h".into(),
                db: "/d/e.db".into(),
                storage: None,
                session_dir: "/d/e.db.warden/sessions".into(),
                audit_log: None,
                backup_dir: None,
            },
            sqlite_version: "3".into(),
            warden_version: "0".into(),
            database: None,
            snapshot: None,
            files: vec![BundleEntry { path: "sessions/a.json".into(), size: 1, sha256: "0".repeat(64) }],
            notes: Vec::new(),
        };
        let mut v = serde_json::to_value(&m).unwrap();
        v.as_object_mut().unwrap().insert("future".into(), 1.into());
        let back: BundleManifest = serde_json::from_value(v).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.sessions().count(), 1);
        assert_eq!(back.bytes(), 1);
    }
}

//! Offsite copies: the page store's restore points replicated to S3-compatible object
//! storage, and brought back from there on any host.
//!
//! Owns the bucket's layout, [`push`] (packs the remote lacks, then manifests, manifest
//! last), remote retention, [`verify`], [`list`] and [`restore`] (byte-exact, re-verified,
//! never over an existing file), the push record that `status` reads, and client-side
//! encryption (`crypt`). Does not own the local store (`copies::store`, `copies::backup`),
//! when a push runs (`session` after a clean close, the CLI by hand) or the config file
//! (`ops::config`, which fills an [`OffsiteConfig`]).
//!
//! # Bucket layout, format 1
//!
//! ```text
//! <prefix>/warden-offsite.json     {"format":1,"db_id":…,"encrypted":…,"key_id":…} (no data)
//! <prefix>/packs/<name>            a local pack, byte for byte (encrypted: HMAC-named, sealed)
//! <prefix>/points/<id>.json        a restore point's manifest (encrypted: sealed)
//! ```
//!
//! A restore point exists remotely once its manifest does, and a manifest is written only
//! after every pack it names is there: a killed push leaves packs no point names (the next
//! push reuses them), never a point whose pages are missing. Packs are named by their
//! content, so a retried upload cannot change one; manifests are created only if absent and
//! read back, so a point is never overwritten.

pub mod crypt;
mod fetch;
mod push;
pub mod remote;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use fetch::{ListedPoint, OffsiteRestore, PointCheck, VerifyReport, list, restore, verify};
pub use push::{PushOptions, PushRecord, latest_push, push, push_record_path};

use crate::copies::retention::RetentionPolicy;

/// The format object's name.
pub const FORMAT_OBJECT: &str = "warden-offsite.json";
/// Packs' folder.
pub const PACKS: &str = "packs";
/// Manifests' folder.
pub const POINTS: &str = "points";

/// `[offsite]` of `warden.toml`, resolved.
#[derive(Debug, Clone)]
pub struct OffsiteConfig {
    /// `s3://bucket/prefix`.
    pub url: String,
    /// The service's endpoint (`http://127.0.0.1:8333`, `https://<account>.r2.cloudflarestorage.com`);
    /// `None`: AWS.
    pub endpoint: Option<String>,
    /// Region (default `us-east-1`).
    pub region: Option<String>,
    /// Path-style URLs (`endpoint/bucket/key`); `None`: on when an endpoint is set.
    pub path_style: Option<bool>,
    /// A credentials file (INI, as `~/.aws/credentials`); `None`: the AWS environment
    /// variables, then `~/.aws/credentials`.
    pub credentials_file: Option<PathBuf>,
    /// Its profile (default `$AWS_PROFILE`, else `default`).
    pub profile: Option<String>,
    /// Push after every session that ends with a good post-session point.
    pub push_after_session: bool,
    /// Remote retention; `None` with `never_delete`: keep everything.
    pub retention: Option<RetentionPolicy>,
    /// Never delete anything remotely (lifecycle rules, Object Lock, a key without delete
    /// permission).
    pub never_delete: bool,
    /// The key file of client-side encryption; `None`: objects are stored as they are.
    pub key_file: Option<PathBuf>,
    /// `status` turns unhealthy when a good point has been local-only longer than this.
    pub max_lag: Duration,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Client retries of a failed request.
    pub retries: u32,
}

impl Default for OffsiteConfig {
    fn default() -> Self {
        OffsiteConfig {
            url: String::new(),
            endpoint: None,
            region: None,
            path_style: None,
            credentials_file: None,
            profile: None,
            push_after_session: true,
            retention: None,
            never_delete: false,
            key_file: None,
            max_lag: Duration::from_secs(24 * 3600),
            timeout: Duration::from_secs(30),
            retries: 4,
        }
    }
}

impl OffsiteConfig {
    /// The bucket and the prefix (no trailing slash) of `url`.
    ///
    /// # Errors
    /// A message when `url` is not `s3://bucket[/prefix]`.
    pub fn bucket_and_prefix(&self) -> Result<(String, String), String> {
        let rest = self
            .url
            .strip_prefix("s3://")
            .ok_or_else(|| format!("{:?} is not an s3:// URL (hint: url = \"s3://bucket/prefix\")", self.url))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(format!("{:?} names no bucket (hint: url = \"s3://bucket/prefix\")", self.url));
        }
        Ok((bucket.to_owned(), prefix.trim_matches('/').to_owned()))
    }

    /// Path-style addressing in effect.
    pub fn path_style(&self) -> bool {
        self.path_style.unwrap_or(self.endpoint.is_some())
    }

    /// Whether objects are encrypted.
    pub fn encrypted(&self) -> bool {
        self.key_file.is_some()
    }
}

/// Why an offsite command could not do its work. A remote point that fails verification is
/// a report ([`VerifyReport`]), not an error.
#[derive(Debug, thiserror::Error)]
pub enum OffsiteError {
    /// No `[offsite]` section, or a value in it is wrong.
    #[error(
        "offsite copies are not configured: {message}\n(hint: add [offsite] url = \"s3://bucket/prefix\" (and endpoint = \"…\" for a service other than AWS) to warden.toml)"
    )]
    NotConfigured {
        /// What is missing or wrong.
        message: String,
    },
    /// No credentials.
    #[error("{message}\n(hint: export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or set [offsite] credentials_file)")]
    Credentials {
        /// Where warden looked.
        message: String,
    },
    /// The key file cannot be used.
    #[error(
        "the offsite key file `{path}` cannot be used: {message}\n(hint: `warden offsite keygen --to {path}` makes one; keep a copy outside the bucket and off this host)"
    )]
    Key {
        /// The key file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The remote is encrypted and no (or another) key was given, or the other way round.
    #[error("{message}\n(hint: {hint})")]
    KeyMismatch {
        /// What does not match.
        message: String,
        /// The way out.
        hint: String,
    },
    /// The prefix holds another database's restore points, or something that is not warden's.
    #[error("`{url}` {message}\n(hint: give each database its own prefix: url = \"s3://bucket/<name>\")")]
    Foreign {
        /// The remote.
        url: String,
        /// What it holds.
        message: String,
    },
    /// A request failed (after retries).
    #[error(
        "the offsite copy at `{url}` is unreachable or refused a request: {source}\n(hint: check the endpoint, the credentials and the network; `warden offsite push` continues where this stopped)"
    )]
    Remote {
        /// The remote.
        url: String,
        /// The request.
        #[source]
        source: remote::RemoteError,
    },
    /// A remote point exists with other content than the local one of the same id.
    #[error(
        "the remote restore point `{id}` at `{url}` differs from the local one; warden never overwrites a restore point\n(hint: `warden offsite verify` checks the remote; a second host writing the same prefix would cause this)"
    )]
    Conflict {
        /// The point.
        id: String,
        /// Its object.
        url: String,
    },
    /// No such remote point.
    #[error("`{url}` holds no restore point {what}\n(hint: `warden offsite list` shows the points there)")]
    NoPoint {
        /// The remote.
        url: String,
        /// `matching "…"` or `at all`.
        what: String,
    },
    /// The restore target exists.
    #[error(
        "`{path}` exists; an offsite restore never overwrites a file\n(hint: restore to a new path, then move it into place with the engine stopped)"
    )]
    TargetExists {
        /// The target.
        path: PathBuf,
    },
    /// The restore target's directory is not on local storage.
    #[error(
        "refusing to restore into `{dir}`: it is on {verdict}\n(reason: {reason})\n(hint: restore onto a local disk; `warden fs {dir}` explains the verdict)"
    )]
    StorageRefused {
        /// The directory.
        dir: PathBuf,
        /// What storage it is.
        verdict: String,
        /// Why.
        reason: String,
    },
    /// The restored copy did not verify; nothing was installed.
    #[error(
        "the restore point `{id}` from `{url}` did not verify: {why}; nothing was written at `{to}`\n(hint: `warden offsite verify` names the damaged objects; restore an older point with --point)"
    )]
    Damaged {
        /// The point.
        id: String,
        /// The remote.
        url: String,
        /// The target.
        to: PathBuf,
        /// What failed.
        why: String,
    },
    /// Local I/O.
    #[error("{what} `{path}`: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The local backups could not be read.
    #[error(transparent)]
    Local(#[from] crate::copies::backup::BackupError),
}

impl OffsiteError {
    /// The exit code (`crate::util::exit`).
    pub fn exit_code(&self) -> u8 {
        use crate::util::exit;
        match self {
            OffsiteError::NotConfigured { .. } | OffsiteError::Credentials { .. } | OffsiteError::Key { .. } => {
                exit::CONFIG
            }
            OffsiteError::KeyMismatch { .. } | OffsiteError::Foreign { .. } => exit::CONFIG,
            OffsiteError::Remote { .. } | OffsiteError::StorageRefused { .. } => exit::UNAVAILABLE,
            OffsiteError::Conflict { .. } | OffsiteError::Damaged { .. } => exit::DATAERR,
            OffsiteError::NoPoint { .. } => exit::NOINPUT,
            OffsiteError::TargetExists { .. } => exit::CANTCREAT,
            OffsiteError::Io { .. } => exit::IOERR,
            OffsiteError::Local(e) => e.exit_code(),
        }
    }
}

/// The format object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FormatObject {
    /// Always 1.
    pub format: u32,
    /// The database these points are of.
    pub db_id: Option<String>,
    /// Objects are sealed with the key whose id is `key_id`.
    pub encrypted: bool,
    /// The key's public fingerprint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
}

/// A connected remote with its keys: what every operation starts from.
pub(crate) struct Session {
    pub(crate) remote: remote::Remote,
    pub(crate) keys: Option<crypt::Keys>,
    pub(crate) url: String,
}

impl Session {
    pub(crate) fn open(cfg: &OffsiteConfig) -> Result<Session, OffsiteError> {
        if cfg.url.is_empty() {
            return Err(OffsiteError::NotConfigured { message: "no url".into() });
        }
        cfg.bucket_and_prefix().map_err(|message| OffsiteError::NotConfigured { message })?;
        let keys = match &cfg.key_file {
            None => None,
            Some(p) => Some(crypt::Keys::load(p).map_err(|message| OffsiteError::Key { path: p.clone(), message })?),
        };
        let creds = remote::Credentials::find(cfg.credentials_file.as_deref(), cfg.profile.as_deref())
            .map_err(|message| OffsiteError::Credentials { message })?;
        let remote = remote::Remote::connect(cfg, &creds).map_err(|message| OffsiteError::NotConfigured { message })?;
        Ok(Session { url: remote.url("").trim_end_matches('/').to_owned(), remote, keys })
    }

    pub(crate) fn remote_err(&self, source: remote::RemoteError) -> OffsiteError {
        OffsiteError::Remote { url: self.url.clone(), source }
    }

    /// The format object, checked against these keys; `None`: the prefix is empty.
    pub(crate) fn format(&self) -> Result<Option<FormatObject>, OffsiteError> {
        let Some(bytes) = self.remote.get(FORMAT_OBJECT).map_err(|e| self.remote_err(e))? else {
            return Ok(None);
        };
        let f: FormatObject = serde_json::from_slice(&bytes).map_err(|e| OffsiteError::Foreign {
            url: self.url.clone(),
            message: format!("has a {FORMAT_OBJECT} warden cannot read ({e})"),
        })?;
        if f.format != 1 {
            return Err(OffsiteError::Foreign {
                url: self.url.clone(),
                message: format!("has format {}; this warden reads format 1", f.format),
            });
        }
        match (&self.keys, f.encrypted) {
            (None, true) => Err(OffsiteError::KeyMismatch {
                message: format!(
                    "the offsite copy at `{}` is encrypted (key {}) and no key file is configured",
                    self.url,
                    f.key_id.as_deref().unwrap_or("?")
                ),
                hint: "set [offsite] key_file to the key this remote was written with".into(),
            }),
            (Some(_), false) => Err(OffsiteError::KeyMismatch {
                message: format!("the offsite copy at `{}` is not encrypted, but a key file is configured", self.url),
                hint:
                    "use a new prefix for encrypted copies (a remote is all encrypted or all plain), or drop key_file"
                        .into(),
            }),
            (Some(k), true) if f.key_id.as_deref() != Some(k.key_id().as_str()) => Err(OffsiteError::KeyMismatch {
                message: format!(
                    "the offsite copy at `{}` was encrypted with key {}, the configured key file is key {}",
                    self.url,
                    f.key_id.as_deref().unwrap_or("?"),
                    k.key_id()
                ),
                hint: "set [offsite] key_file to the key this remote was written with".into(),
            }),
            _ => Ok(Some(f)),
        }
    }

    /// The name a local pack has under `packs/` (what a listing of `packs/` returns).
    pub(crate) fn pack_name(&self, pack: &str) -> String {
        match &self.keys {
            Some(k) => k.pack_name(pack),
            None => pack.to_owned(),
        }
    }

    /// The object of a local pack.
    pub(crate) fn pack_object(&self, pack: &str) -> String {
        format!("{PACKS}/{}", self.pack_name(pack))
    }

    /// A manifest's bytes as stored.
    pub(crate) fn seal(&self, plain: &[u8]) -> Vec<u8> {
        match &self.keys {
            Some(k) => k.seal_all(&crate::util::fmt::hex(&<sha2::Sha256 as sha2::Digest>::digest(plain)), plain),
            None => plain.to_vec(),
        }
    }

    /// A manifest's plaintext.
    pub(crate) fn open_bytes(&self, stored: &[u8]) -> Result<Vec<u8>, String> {
        match &self.keys {
            Some(k) => k.open_all(stored),
            None => Ok(stored.to_vec()),
        }
    }
}

/// The object name of point `id`.
pub(crate) fn point_object(id: &str) -> String {
    format!("{POINTS}/{id}.json")
}

/// `<db>.warden/offsite/`: the push record.
pub fn state_dir(db: &Path) -> PathBuf {
    crate::format::names::state_dir(db).join("offsite")
}

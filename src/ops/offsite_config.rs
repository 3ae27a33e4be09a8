//! `[offsite]` of `warden.toml`: where offsite copies go and how they are kept, parsed into
//! [`OffsiteConfig`]. Owns the section's keys and their checks. Does not own what a push
//! does (`copies::offsite`) or the rest of the file (`ops::config`).
//!
//! ```toml
//! [offsite]
//! url                = "s3://bucket/prefix"      # required to turn offsite copies on
//! endpoint           = "https://s3.example.net"  # any S3-compatible service; default AWS
//! region             = "us-east-1"
//! path_style         = true                      # default: on when endpoint is set
//! credentials_file   = "/etc/warden/s3.ini"      # default: AWS_ACCESS_KEY_ID/…, ~/.aws/credentials
//! profile            = "default"
//! push_after_session = true                      # a failed push never fails the session
//! never_delete       = false                     # true: lifecycle rules / Object Lock decide
//! key_file           = "/etc/warden/offsite.key" # client-side encryption (`warden offsite keygen`)
//! max_lag            = "24h"                     # `warden status` exits 18 past it
//! timeout            = "30s"                     # per request
//! retries            = 4
//! [offsite.retention]                            # same keys as [retention]; default: keep all
//! keep_daily = 30
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::copies::offsite::OffsiteConfig;
use crate::copies::retention::RetentionPolicy;

/// `[offsite]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OffsiteSection {
    /// `s3://bucket/prefix`.
    pub url: Option<String>,
    /// The service's endpoint URL.
    pub endpoint: Option<String>,
    /// Region.
    pub region: Option<String>,
    /// Path-style addressing.
    pub path_style: Option<bool>,
    /// Credentials file.
    pub credentials_file: Option<PathBuf>,
    /// Its profile.
    pub profile: Option<String>,
    /// Push after each session.
    pub push_after_session: Option<bool>,
    /// Never delete remotely.
    pub never_delete: Option<bool>,
    /// Encryption key file.
    pub key_file: Option<PathBuf>,
    /// Health threshold.
    pub max_lag: Option<String>,
    /// Per-request timeout.
    pub timeout: Option<String>,
    /// Client retries.
    pub retries: Option<u32>,
    /// Remote retention.
    pub retention: Option<RetentionPolicy>,
}

/// A bad value: the key and why (with a hint); `ops::config` makes it a `ConfigError`.
pub type Invalid = (&'static str, String);

fn duration(key: &'static str, s: &str) -> Result<Duration, Invalid> {
    humantime::parse_duration(s).map_err(|e| (key, format!("{s:?}: {e} (hint: a duration such as \"30s\" or \"24h\")")))
}

/// The section resolved (relative paths against `base`); `None` when it names no url.
///
/// # Errors
/// [`Invalid`]: the key and why.
pub fn resolve(sec: OffsiteSection, base: &Path) -> Result<Option<OffsiteConfig>, Invalid> {
    let rel = |p: PathBuf| if p.is_absolute() || base.as_os_str().is_empty() { p } else { base.join(p) };
    let Some(url) = sec.url else {
        let set = sec.endpoint.is_some() || sec.key_file.is_some() || sec.retention.is_some();
        if set {
            return Err((
                "offsite.url",
                "missing: [offsite] sets other keys but no url (hint: url = \"s3://bucket/prefix\")".into(),
            ));
        }
        return Ok(None);
    };
    let d = OffsiteConfig::default();
    let cfg = OffsiteConfig {
        url,
        endpoint: sec.endpoint,
        region: sec.region,
        path_style: sec.path_style,
        credentials_file: sec.credentials_file.map(rel),
        profile: sec.profile,
        push_after_session: sec.push_after_session.unwrap_or(d.push_after_session),
        never_delete: sec.never_delete.unwrap_or(false),
        key_file: sec.key_file.map(rel),
        max_lag: sec.max_lag.as_deref().map(|s| duration("offsite.max_lag", s)).transpose()?.unwrap_or(d.max_lag),
        timeout: sec.timeout.as_deref().map(|s| duration("offsite.timeout", s)).transpose()?.unwrap_or(d.timeout),
        retries: sec.retries.unwrap_or(d.retries),
        retention: sec.retention,
    };
    cfg.bucket_and_prefix().map_err(|message| ("offsite.url", message))?;
    if let Some(ep) = &cfg.endpoint
        && !(ep.starts_with("http://") || ep.starts_with("https://"))
    {
        return Err(("offsite.endpoint", format!("{ep:?} (hint: a URL such as \"https://s3.example.net\")")));
    }
    if cfg.never_delete && cfg.retention.is_some() {
        return Err((
            "offsite.retention",
            "set with never_delete = true, which never deletes (hint: drop one of them)".into(),
        ));
    }
    if let Some(r) = &cfg.retention {
        r.validate().map_err(|e| ("offsite.retention", e.to_string()))?;
    }
    if cfg.timeout < Duration::from_secs(1) {
        return Err(("offsite.timeout", "below 1s (hint: \"30s\")".into()));
    }
    Ok(Some(cfg))
}

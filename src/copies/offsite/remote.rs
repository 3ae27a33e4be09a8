//! The bucket, as warden talks to it: a blocking facade over `object_store`'s S3 client on a
//! small current-thread runtime of its own (warden stays synchronous; nothing else runs on
//! it). Every PUT carries an `x-amz-checksum-sha256` the server verifies; a request that
//! fails is retried (by the client for 5xx and unsent requests, here once more per object for
//! a dropped connection). Owns credentials (read from the environment or a credentials file,
//! never printed: [`Credentials`] has no `Debug` of its secret), keys under the prefix and
//! the error of a request. Does not own what the objects mean (`push`, `fetch`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as Key;
use object_store::{
    ClientOptions, ObjectStore, ObjectStoreExt, PutMode, PutMultipartOptions, PutOptions, PutPayload, RetryConfig,
};

use super::OffsiteConfig;

/// Objects up to this size go up in one PUT; larger ones in parts of this size.
pub const PART: usize = 16 << 20;

/// A failed request, or a remote that cannot be reached.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{op} `{key}`: {message}")]
pub struct RemoteError {
    /// What was being done (`uploading`, `listing`, ...).
    pub op: &'static str,
    /// The object's URL (`s3://bucket/key`).
    pub key: String,
    /// The client's message (never credentials).
    pub message: String,
    /// What kind of failure.
    pub kind: FailKind,
}

/// The kinds of failure that change what warden does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailKind {
    /// No such object.
    NotFound,
    /// A create-only write found the object there.
    Exists,
    /// The credentials may not do this (a key without delete permission, say).
    Denied,
    /// Anything else: the network, the server, a checksum the server rejected.
    Other,
}

/// Access key credentials.
#[derive(Clone)]
pub struct Credentials {
    /// `AWS_ACCESS_KEY_ID` (printed at most as its first 4 characters).
    pub key_id: String,
    secret: String,
    token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}…)", self.key_id.chars().take(4).collect::<String>())
    }
}

impl Credentials {
    /// Credentials from `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY` (and `AWS_SESSION_TOKEN`),
    /// else from `file` (or `$AWS_SHARED_CREDENTIALS_FILE`, else `~/.aws/credentials`),
    /// profile `profile` (or `$AWS_PROFILE`, else `default`).
    ///
    /// # Errors
    /// A message saying where warden looked.
    pub fn find(file: Option<&Path>, profile: Option<&str>) -> Result<Credentials, String> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        if file.is_none()
            && let (Some(key_id), Some(secret)) = (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY"))
        {
            return Ok(Credentials { key_id, secret, token: env("AWS_SESSION_TOKEN") });
        }
        let path = file
            .map(Path::to_owned)
            .or_else(|| env("AWS_SHARED_CREDENTIALS_FILE").map(PathBuf::from))
            .or_else(|| env("HOME").map(|h| PathBuf::from(h).join(".aws/credentials")));
        let profile = profile.map(str::to_owned).or_else(|| env("AWS_PROFILE")).unwrap_or_else(|| "default".into());
        let Some(path) = path else {
            return Err(
                "no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or [offsite] credentials_file".into(),
            );
        };
        let text = std::fs::read_to_string(&path).map_err(|e| {
            format!(
                "no credentials: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY are not set and `{}` cannot be read ({e})",
                path.display()
            )
        })?;
        let (mut key_id, mut secret, mut token, mut inside) = (None, None, None, false);
        for line in text.lines().map(str::trim) {
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                inside = name.trim() == profile || name.trim() == format!("profile {profile}");
            } else if inside && let Some((k, v)) = line.split_once('=') {
                let v = Some(v.trim().to_owned());
                match k.trim() {
                    "aws_access_key_id" => key_id = v,
                    "aws_secret_access_key" => secret = v,
                    "aws_session_token" => token = v,
                    _ => {}
                }
            }
        }
        match (key_id, secret) {
            (Some(key_id), Some(secret)) => Ok(Credentials { key_id, secret, token }),
            _ => Err(format!(
                "no credentials: `{}` has no profile [{profile}] with aws_access_key_id and aws_secret_access_key",
                path.display()
            )),
        }
    }
}

/// The bytes of one upload, in order.
pub trait Source {
    /// Appends bytes to `out`, at most `max` in all; `true` when nothing is left after them.
    ///
    /// # Errors
    /// The read error.
    fn fill(&mut self, out: &mut Vec<u8>, max: usize) -> std::io::Result<bool>;
}

/// One bucket and prefix.
pub struct Remote {
    rt: tokio::runtime::Runtime,
    store: AmazonS3,
    bucket: String,
    prefix: String,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Remote(s3://{}/{})", self.bucket, self.prefix)
    }
}

fn classify(e: &object_store::Error) -> FailKind {
    match e {
        object_store::Error::NotFound { .. } => FailKind::NotFound,
        object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. } => FailKind::Exists,
        object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. } => FailKind::Denied,
        // A denied DELETE comes back as a generic error naming S3's code.
        e if e.to_string().contains("AccessDenied") => FailKind::Denied,
        _ => FailKind::Other,
    }
}

impl Remote {
    /// Connects (lazily: nothing is sent until the first request).
    ///
    /// # Errors
    /// A message when the configuration cannot make a client.
    pub fn connect(cfg: &OffsiteConfig, creds: &Credentials) -> Result<Remote, String> {
        let (bucket, prefix) = cfg.bucket_and_prefix()?;
        let mut b = AmazonS3Builder::new()
            .with_bucket_name(&bucket)
            .with_region(cfg.region.clone().unwrap_or_else(|| "us-east-1".into()))
            .with_access_key_id(&creds.key_id)
            .with_secret_access_key(&creds.secret)
            .with_checksum_algorithm(object_store::aws::Checksum::SHA256)
            .with_virtual_hosted_style_request(!cfg.path_style())
            .with_retry(RetryConfig {
                max_retries: cfg.retries as usize,
                retry_timeout: cfg.timeout * 2,
                backoff: object_store::BackoffConfig {
                    init_backoff: Duration::from_millis(100),
                    max_backoff: Duration::from_secs(5),
                    base: 2.0,
                },
            })
            .with_client_options(
                ClientOptions::new()
                    .with_timeout(cfg.timeout)
                    .with_connect_timeout(Duration::from_secs(5).min(cfg.timeout))
                    .with_allow_http(true),
            );
        if let Some(t) = &creds.token {
            b = b.with_token(t);
        }
        if let Some(ep) = &cfg.endpoint {
            b = b.with_endpoint(ep);
        }
        let store = b.build().map_err(|e| format!("cannot make an S3 client: {e}"))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the I/O runtime: {e}"))?;
        Ok(Remote { rt, store, bucket, prefix })
    }

    fn key(&self, rel: &str) -> Key {
        if self.prefix.is_empty() { Key::from(rel) } else { Key::from(format!("{}/{rel}", self.prefix)) }
    }

    /// `s3://bucket/prefix/rel`, for messages.
    pub fn url(&self, rel: &str) -> String {
        format!("s3://{}/{}", self.bucket, self.key(rel))
    }

    fn err(&self, op: &'static str, rel: &str, e: &object_store::Error) -> RemoteError {
        RemoteError { op, key: self.url(rel), message: one_line(e), kind: classify(e) }
    }

    /// Runs `f` up to twice more when it fails for a reason other than the object's state
    /// (the client already retried 5xx and unsent requests; a connection dropped mid-request
    /// is retried here).
    fn again<T>(&self, mut f: impl FnMut() -> Result<T, RemoteError>) -> Result<T, RemoteError> {
        let mut tries = 0;
        loop {
            match f() {
                Err(e) if e.kind == FailKind::Other && tries < 2 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(200 * tries));
                }
                r => return r,
            }
        }
    }

    /// Every object under `dir/` (names relative to it) and its size.
    ///
    /// # Errors
    /// [`RemoteError`].
    pub fn list(&self, dir: &str) -> Result<Vec<(String, u64)>, RemoteError> {
        self.again(|| {
            let prefix = self.key(dir);
            let base = format!("{prefix}/");
            self.rt.block_on(async {
                let mut out = Vec::new();
                let mut s = self.store.list(Some(&prefix));
                while let Some(m) = s.next().await {
                    let m = m.map_err(|e| self.err("listing", dir, &e))?;
                    let name = m.location.as_ref().strip_prefix(&base).unwrap_or(m.location.as_ref()).to_owned();
                    out.push((name, m.size));
                }
                Ok(out)
            })
        })
    }

    /// The object's bytes; `None` when there is none.
    ///
    /// # Errors
    /// [`RemoteError`].
    pub fn get(&self, rel: &str) -> Result<Option<Vec<u8>>, RemoteError> {
        self.again(|| {
            let mut out = Vec::new();
            match self.get_with(rel, &mut |b| {
                out.extend_from_slice(b);
                Ok(())
            }) {
                Ok(()) => Ok(Some(out)),
                Err(e) if e.kind == FailKind::NotFound => Ok(None),
                Err(e) => Err(e),
            }
        })
    }

    /// Streams the object to `each`, in order (the client retries a request that fails
    /// before the body starts; a body cut short is an error the caller may retry whole).
    ///
    /// # Errors
    /// [`RemoteError`]; `each`'s error (as [`FailKind::Other`] with its message).
    pub fn get_with(&self, rel: &str, each: &mut dyn FnMut(&[u8]) -> Result<(), String>) -> Result<(), RemoteError> {
        self.rt.block_on(async {
            let got = self.store.get(&self.key(rel)).await.map_err(|e| self.err("downloading", rel, &e))?;
            let mut s = got.into_stream();
            while let Some(b) = s.next().await {
                let b = b.map_err(|e| self.err("downloading", rel, &e))?;
                each(&b).map_err(|message| RemoteError {
                    op: "downloading",
                    key: self.url(rel),
                    message,
                    kind: FailKind::Other,
                })?;
            }
            Ok(())
        })
    }

    /// Creates the object only if there is none (`If-None-Match: *`). `Ok(false)`: one was
    /// there (the caller reads it back; some servers accept concurrent creates, so the
    /// caller reads back in every case).
    ///
    /// # Errors
    /// [`RemoteError`].
    pub fn create(&self, rel: &str, bytes: &[u8]) -> Result<bool, RemoteError> {
        let body = bytes::Bytes::copy_from_slice(bytes);
        self.again(|| {
            let opts = PutOptions { mode: PutMode::Create, ..Default::default() };
            match self.rt.block_on(self.store.put_opts(&self.key(rel), PutPayload::from(body.clone()), opts)) {
                Ok(_) => Ok(true),
                Err(e) if classify(&e) == FailKind::Exists => Ok(false),
                Err(e) => Err(self.err("uploading", rel, &e)),
            }
        })
    }

    /// Uploads an object whose name is its content (a pack): overwriting it can never change
    /// what it means. Each attempt reads from a fresh [`Source`] made by `open`; up to
    /// [`PART`] bytes go in one PUT, more in a multipart upload of [`PART`]-byte parts
    /// (memory: one part). Returns the bytes sent.
    ///
    /// # Errors
    /// [`RemoteError`]; a read error of the source.
    pub fn put_content(
        &self,
        rel: &str,
        open: &mut dyn FnMut() -> std::io::Result<Box<dyn Source>>,
    ) -> Result<u64, RemoteError> {
        let read_err = |e: std::io::Error| RemoteError {
            op: "reading for upload",
            key: self.url(rel),
            message: e.to_string(),
            kind: FailKind::Other,
        };
        self.again(|| {
            let mut src = open().map_err(read_err)?;
            let mut part = Vec::with_capacity(PART);
            let mut end = src.fill(&mut part, PART).map_err(read_err)?;
            if end {
                let n = part.len() as u64;
                let opts = PutOptions { mode: PutMode::Overwrite, ..Default::default() };
                return match self.rt.block_on(self.store.put_opts(&self.key(rel), PutPayload::from(part), opts)) {
                    Ok(_) => Ok(n),
                    Err(e) => Err(self.err("uploading", rel, &e)),
                };
            }
            self.rt.block_on(async {
                let mut up = self
                    .store
                    .put_multipart_opts(&self.key(rel), PutMultipartOptions::default())
                    .await
                    .map_err(|e| self.err("starting the upload of", rel, &e))?;
                let mut n = 0u64;
                let mut failed = None;
                loop {
                    if !part.is_empty() {
                        n += part.len() as u64;
                        if let Err(e) = up.put_part(PutPayload::from(std::mem::take(&mut part))).await {
                            failed = Some(self.err("uploading a part of", rel, &e));
                            break;
                        }
                    }
                    if end {
                        break;
                    }
                    part = Vec::with_capacity(PART);
                    match src.fill(&mut part, PART) {
                        Ok(e) => end = e,
                        Err(e) => {
                            failed = Some(read_err(e));
                            break;
                        }
                    }
                }
                if let Some(e) = failed {
                    // Parts of an aborted upload are never listed; abort frees them.
                    let _ = up.abort().await;
                    return Err(e);
                }
                up.complete().await.map_err(|e| self.err("completing the upload of", rel, &e))?;
                Ok(n)
            })
        })
    }

    /// Deletes the object.
    ///
    /// # Errors
    /// [`RemoteError`] ([`FailKind::Denied`] for a key without delete permission).
    pub fn delete(&self, rel: &str) -> Result<(), RemoteError> {
        self.again(|| self.rt.block_on(self.store.delete(&self.key(rel))).map_err(|e| self.err("deleting", rel, &e)))
    }
}

/// The first line of an error and its sources, without credentials (the client never puts
/// them in messages; this keeps a message to one line).
fn one_line(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        let t = x.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = x.source();
    }
    s.replace('\n', " ")
}

//! `warden offsite push`: the packs the remote lacks, then the manifests, then remote
//! retention; and the push record `status` reads. Owns the order that keeps the remote
//! consistent at every instant (see the [module docs](super)). Does not own the requests
//! (`remote`) or the reading side (`fetch`).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::remote::{FailKind, Source};
use super::{FORMAT_OBJECT, FormatObject, OffsiteConfig, OffsiteError, PACKS, POINTS, Session, crypt, point_object};
use crate::copies::backup::{BackupRecord, BackupStore, Manifest};
use crate::copies::retention::{Candidate, plan};
use crate::guard::audit::{AuditEvent, AuditRecord};
use crate::guard::vfs::Guard;
use crate::util::atomic;
use crate::util::fmt::ms;

/// How to push.
#[derive(Default)]
pub struct PushOptions<'a> {
    /// The guard whose audit log records the push; `None`: the default audit directory.
    pub guard: Option<Guard>,
    /// Progress: `(bytes sent, bytes to send)`.
    pub progress: Option<&'a mut dyn FnMut(u64, u64)>,
    /// Where the record goes; default `<db>.warden/offsite/latest.json`.
    pub record_path: Option<PathBuf>,
}

/// What a push did; also the record `status` reads (`<db>.warden/offsite/latest.json`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushRecord {
    /// Record schema (1).
    pub schema: u32,
    /// Every local good point is on the remote now.
    pub ok: bool,
    /// The remote (`s3://bucket/prefix`; never credentials).
    pub remote: String,
    /// Objects are encrypted.
    pub encrypted: bool,
    /// When it started and finished (RFC 3339 UTC).
    pub started_at: String,
    /// When it finished.
    pub finished_at: String,
    /// Restore points uploaded now.
    pub points_pushed: Vec<String>,
    /// Local good points the remote now holds (including earlier pushes).
    pub points_remote: u64,
    /// Local good points.
    pub points_local: u64,
    /// The newest point on the remote and when it was taken.
    pub newest_remote: Option<String>,
    /// Its time (RFC 3339).
    pub newest_remote_created: Option<String>,
    /// Packs uploaded now.
    pub packs_pushed: u64,
    /// Bytes uploaded now (as stored: sealed when encrypted).
    pub bytes_pushed: u64,
    /// Remote points deleted by remote retention.
    pub points_deleted: Vec<String>,
    /// Remote packs deleted (no remaining point uses them).
    pub packs_deleted: u64,
    /// Why it failed (one line), when it did.
    pub error: Option<String>,
    /// Warnings (retention could not delete, ...).
    pub messages: Vec<String>,
    /// Wall time.
    pub duration_ms: u64,
}

/// `<db>.warden/offsite/latest.json`.
pub fn push_record_path(db: &Path) -> PathBuf {
    super::state_dir(db).join("latest.json")
}

/// The latest push record of `db`, if one was written and parses.
pub fn latest_push(db: &Path) -> Option<PushRecord> {
    serde_json::from_slice(&std::fs::read(push_record_path(db)).ok()?).ok()
}

/// Pushes every good restore point of `store` the remote lacks, then applies remote
/// retention. Writes the push record and an audit record whatever the outcome.
///
/// # Errors
/// [`OffsiteError`] (also recorded); nothing the remote lists as a restore point is ever
/// incomplete, whatever failed.
pub fn push(
    db: &Path,
    store: &BackupStore,
    cfg: &OffsiteConfig,
    opts: PushOptions<'_>,
) -> Result<PushRecord, OffsiteError> {
    let started = Instant::now();
    let mut rec = PushRecord {
        schema: 1,
        started_at: crate::util::identity::now_rfc3339(),
        encrypted: cfg.encrypted(),
        remote: cfg.url.clone(),
        ..Default::default()
    };
    let PushOptions { guard, mut progress, record_path } = opts;
    let result = run(store, cfg, &mut rec, &mut progress);
    rec.duration_ms = ms(started.elapsed());
    rec.finished_at = crate::util::identity::now_rfc3339();
    rec.ok = result.is_ok();
    if let Err(e) = &result {
        rec.error = Some(e.to_string().lines().next().unwrap_or_default().to_owned());
    }
    let path = record_path.unwrap_or_else(|| push_record_path(db));
    let written = (|| {
        atomic::create_dir_synced(atomic::parent_of(atomic::parent_of(&path)), 0o750)?;
        atomic::create_dir_synced(atomic::parent_of(&path), 0o750)?;
        let bytes = serde_json::to_vec_pretty(&rec).map_err(std::io::Error::other)?;
        atomic::write_atomic(&path, &bytes, 0o640)
    })();
    if let Err(e) = written {
        rec.messages.push(format!("cannot write the push record `{}`: {e}", path.display()));
    }
    let reason = match &rec.error {
        None => format!(
            "offsite push to {}: {} point(s), {} pack(s), {} bytes; {} of {} local good points on the remote; by {}",
            rec.remote,
            rec.points_pushed.len(),
            rec.packs_pushed,
            rec.bytes_pushed,
            rec.points_remote,
            rec.points_local,
            crate::util::identity::who()
        ),
        Some(e) => format!("offsite push to {} failed: {e}; by {}", rec.remote, crate::util::identity::who()),
    };
    let mut a = AuditRecord::decided(AuditEvent::OffsitePush, db, if rec.ok { "allow" } else { "refuse" }, reason);
    if let Err(e) = crate::guard::vfs::audit_with(guard.as_ref(), &mut a) {
        rec.messages.push(format!("the push's audit record was lost: {e}"));
    }
    result.map(|()| rec)
}

fn run(
    store: &BackupStore,
    cfg: &OffsiteConfig,
    rec: &mut PushRecord,
    progress: &mut Option<&mut dyn FnMut(u64, u64)>,
) -> Result<(), OffsiteError> {
    let s = Session::open(cfg)?;
    rec.remote = s.url.clone();
    let pages = store.pages();
    // The store's lock: no prune deletes a pack while it is read for upload.
    let _lock = store.lock()?;
    let local: Vec<BackupRecord> = store
        .list()?
        .into_iter()
        .filter(|r| r.manifest.is_good() && r.manifest.is_paged() && !r.manifest.check_pending())
        .collect();
    rec.points_local = local.len() as u64;
    let db_id = local.iter().find_map(|r| r.manifest.db_id.clone());
    match s.format()? {
        Some(f) if f.db_id.is_some() && db_id.is_some() && f.db_id != db_id => {
            return Err(OffsiteError::Foreign {
                url: s.url.clone(),
                message: format!(
                    "holds the restore points of another database ({}; this one is {})",
                    f.db_id.unwrap_or_default(),
                    db_id.unwrap_or_default()
                ),
            });
        }
        Some(_) => {}
        None => {
            let f = FormatObject {
                format: 1,
                db_id: db_id.clone(),
                encrypted: s.keys.is_some(),
                key_id: s.keys.as_ref().map(crypt::Keys::key_id),
            };
            let bytes = serde_json::to_vec_pretty(&f).map_err(|e| OffsiteError::Io {
                what: "encoding",
                path: FORMAT_OBJECT.into(),
                source: std::io::Error::other(e),
            })?;
            s.remote.create(FORMAT_OBJECT, &bytes).map_err(|e| s.remote_err(e))?;
            // Whoever won a race, the format must be one this push can write to.
            s.format()?;
        }
    }
    let remote_packs: HashMap<String, u64> = s.remote.list(PACKS).map_err(|e| s.remote_err(e))?.into_iter().collect();
    let remote_points: HashSet<String> = s
        .remote
        .list(POINTS)
        .map_err(|e| s.remote_err(e))?
        .into_iter()
        .filter_map(|(n, _)| n.strip_suffix(".json").map(str::to_owned))
        .collect();
    // Oldest first: a push cut short leaves the remote a prefix of the history.
    let mut todo: Vec<&BackupRecord> = local.iter().filter(|r| !remote_points.contains(&r.manifest.id)).collect();
    todo.reverse();
    let local_sizes: HashMap<String, u64> = pages
        .packs()
        .map_err(|e| OffsiteError::Io {
            what: "listing",
            path: pages.dir().to_owned(),
            source: std::io::Error::other(e),
        })?
        .into_iter()
        .collect();
    let stored_len = |n: u64| if s.keys.is_some() { crypt::Keys::sealed_len(n) } else { n };
    let mut need: Vec<String> = Vec::new();
    let mut seen = BTreeSet::new();
    for r in &todo {
        for p in r.manifest.pages.as_ref().map(|m| m.packs.as_slice()).unwrap_or_default() {
            let Some(&size) = local_sizes.get(p) else {
                return Err(OffsiteError::Io {
                    what: "reading",
                    path: pages.pack_path(p),
                    source: std::io::Error::new(std::io::ErrorKind::NotFound, "a pack the point uses is missing"),
                });
            };
            if seen.insert(p.clone()) && remote_packs.get(&s.pack_name(p)) != Some(&stored_len(size)) {
                need.push(p.clone());
            }
        }
    }
    let total: u64 = need.iter().map(|p| stored_len(local_sizes[p])).sum();
    let mut sent = 0u64;
    for p in &need {
        crate::util::testing::pause_point("offsite-pack");
        let n = upload_pack(&s, &pages.pack_path(p), p)?;
        sent += n;
        rec.packs_pushed += 1;
        rec.bytes_pushed += n;
        if let Some(f) = progress.as_mut() {
            f(sent, total);
        }
    }
    crate::util::testing::pause_point("offsite-points");
    for r in &todo {
        let n = publish_point(&s, &r.manifest)?;
        rec.bytes_pushed += n;
        rec.points_pushed.push(r.manifest.id.clone());
    }
    let on_remote: HashSet<&str> =
        remote_points.iter().map(String::as_str).chain(rec.points_pushed.iter().map(String::as_str)).collect();
    rec.points_remote = local.iter().filter(|r| on_remote.contains(r.manifest.id.as_str())).count() as u64;
    if let Some(newest) = local.iter().find(|r| on_remote.contains(r.manifest.id.as_str())) {
        rec.newest_remote = Some(newest.manifest.id.clone());
        rec.newest_remote_created = Some(newest.manifest.created.clone());
    }
    if !cfg.never_delete
        && let Some(policy) = &cfg.retention
    {
        retain(&s, policy, rec)?;
    }
    Ok(())
}

/// Uploads one pack (sealed when encrypted); returns the bytes sent.
fn upload_pack(s: &Session, path: &Path, name: &str) -> Result<u64, OffsiteError> {
    let mut open = || -> std::io::Result<Box<dyn Source>> {
        Ok(Box::new(PackSource {
            file: std::fs::File::open(path)?,
            enc: s.keys.as_ref().map(|k| k.encryptor(name)),
            header_sent: false,
            done: false,
            pending: None,
        }))
    };
    s.remote.put_content(&s.pack_object(name), &mut open).map_err(|e| s.remote_err(e))
}

/// A pack file as uploaded: its bytes, or its sealed segments.
struct PackSource {
    file: std::fs::File,
    enc: Option<crypt::Encryptor>,
    header_sent: bool,
    done: bool,
    /// The plaintext segment read ahead (a segment is sealed once it is known whether
    /// another follows).
    pending: Option<Vec<u8>>,
}

impl Source for PackSource {
    fn fill(&mut self, out: &mut Vec<u8>, max: usize) -> std::io::Result<bool> {
        let Some(e) = self.enc.as_mut() else {
            let start = out.len();
            out.resize(max, 0);
            let n = read_full(&mut self.file, &mut out[start..])?;
            out.truncate(start + n);
            return Ok(start + n < max);
        };
        if !self.header_sent {
            out.extend_from_slice(e.header());
            self.header_sent = true;
        }
        while !self.done && out.len() + crypt::SEGMENT + crypt::TAG <= max {
            let cur = match self.pending.take() {
                Some(c) => c,
                None => read_segment(&mut self.file)?,
            };
            let following = if cur.len() == crypt::SEGMENT { read_segment(&mut self.file)? } else { Vec::new() };
            let last = following.is_empty();
            out.extend(e.segment(&cur, last));
            if last {
                self.done = true;
            } else {
                self.pending = Some(following);
            }
        }
        Ok(self.done)
    }
}

fn read_segment(f: &mut std::fs::File) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; crypt::SEGMENT];
    let n = read_full(f, &mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

/// Reads until `buf` is full or the file ends; the bytes read.
fn read_full(f: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut at = 0;
    while at < buf.len() {
        let n = f.read(&mut buf[at..])?;
        if n == 0 {
            break;
        }
        at += n;
    }
    Ok(at)
}

/// Creates a point's manifest (only if absent) and reads it back; returns the bytes sent.
fn publish_point(s: &Session, m: &Manifest) -> Result<u64, OffsiteError> {
    let object = point_object(&m.id);
    let plain = serde_json::to_vec_pretty(m).map_err(|e| OffsiteError::Io {
        what: "encoding",
        path: object.clone().into(),
        source: std::io::Error::other(e),
    })?;
    let body = s.seal(&plain);
    crate::util::testing::pause_point("offsite-point");
    let created = s.remote.create(&object, &body).map_err(|e| s.remote_err(e))?;
    // Read back in every case: some servers accept two concurrent create-only writes.
    let back = s.remote.get(&object).map_err(|e| s.remote_err(e))?;
    let same =
        back.as_deref().and_then(|b| s.open_bytes(b).ok()).and_then(|b| serde_json::from_slice::<Manifest>(&b).ok());
    match same {
        Some(r) if r.id == m.id && r.sha256 == m.sha256 && r.pages == m.pages => {
            Ok(if created { body.len() as u64 } else { 0 })
        }
        _ => Err(OffsiteError::Conflict { id: m.id.clone(), url: s.remote.url(&object) }),
    }
}

/// Remote retention: decide on the remote points as local retention decides on local ones,
/// delete the dropped points' manifests first, then the packs no remaining point uses.
fn retain(
    s: &Session,
    policy: &crate::copies::retention::RetentionPolicy,
    rec: &mut PushRecord,
) -> Result<(), OffsiteError> {
    let points = super::fetch::remote_points(s)?;
    let candidates: Vec<Candidate> = points
        .iter()
        .map(|m| Candidate {
            id: m.id.clone(),
            created: m.created_at().unwrap_or(jiff::Timestamp::MIN),
            size: m.size,
            kind: m.kind,
            verified: m.verified,
        })
        .collect();
    let decided = plan(policy, &candidates, &BTreeSet::new(), jiff::Timestamp::now());
    let dropped: HashSet<&str> = decided.dropped().map(|d| d.id.as_str()).collect();
    if dropped.is_empty() {
        return Ok(());
    }
    for id in &dropped {
        match s.remote.delete(&point_object(id)) {
            Ok(()) => rec.points_deleted.push((*id).to_owned()),
            Err(e) if e.kind == FailKind::Denied => {
                rec.messages.push(format!(
                    "remote retention could not delete {}: the key may not delete (set [offsite] never_delete = true for a bucket with lifecycle rules or Object Lock)",
                    s.remote.url(&point_object(id))
                ));
                return Ok(());
            }
            Err(e) => return Err(s.remote_err(e)),
        }
    }
    let used: HashSet<String> = points
        .iter()
        .filter(|m| !dropped.contains(m.id.as_str()))
        .flat_map(|m| m.pages.iter().flat_map(|p| p.packs.iter().map(|n| s.pack_object(n))))
        .collect();
    for (name, _) in s.remote.list(PACKS).map_err(|e| s.remote_err(e))? {
        let object = format!("{PACKS}/{name}");
        if !used.contains(&object) {
            s.remote.delete(&object).map_err(|e| s.remote_err(e))?;
            rec.packs_deleted += 1;
        }
    }
    Ok(())
}

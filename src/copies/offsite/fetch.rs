//! The reading side of the bucket: `warden offsite list`, `verify` and `restore`, on any
//! host with only the config and the credentials (and the key, when encrypted). Owns
//! downloading a pack with its hash (and seal) checked, and installing a restored file
//! without ever replacing one. Does not own writing to the bucket (`push`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::remote::FailKind;
use super::{OffsiteConfig, OffsiteError, PACKS, POINTS, Session, crypt, point_object};
use crate::copies::backup::{CheckMode, IntegrityReport, Manifest, check_file};
use crate::copies::store::{MARKER, MARKER_FILE, PageStore};
use crate::util::atomic;
use crate::util::fmt::ms;

/// A restore point on the remote.
#[derive(Debug, Clone, Serialize)]
pub struct ListedPoint {
    /// Its id.
    pub id: String,
    /// When it was taken.
    pub created: String,
    /// Why it was taken.
    pub kind: String,
    /// Bytes of the database it restores.
    pub size: u64,
    /// SHA-256 of that file.
    pub sha256: String,
    /// Every pack it names is on the remote.
    pub complete: bool,
}

/// Remote points that cannot be read or opened: `(id, why)`.
type Unreadable = Vec<(String, String)>;

/// Every manifest on the remote, newest first; one that cannot be read or opened is named
/// in the second list.
pub(super) fn remote_points_checked(s: &Session) -> Result<(Vec<Manifest>, Unreadable), OffsiteError> {
    let mut ok = Vec::new();
    let mut bad = Vec::new();
    for (name, _) in s.remote.list(POINTS).map_err(|e| s.remote_err(e))? {
        let Some(id) = name.strip_suffix(".json") else { continue };
        let object = point_object(id);
        let got = s.remote.get(&object).map_err(|e| s.remote_err(e))?;
        let parsed = match got {
            None => continue,
            Some(b) => s
                .open_bytes(&b)
                .and_then(|p| serde_json::from_slice::<Manifest>(&p).map_err(|e| format!("not a manifest: {e}"))),
        };
        match parsed {
            Ok(m) if m.id == id && m.pages.is_some() => ok.push(m),
            Ok(_) => bad.push((id.to_owned(), "its manifest names another point, or no pages".to_owned())),
            Err(why) => bad.push((id.to_owned(), why)),
        }
    }
    ok.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| b.id.cmp(&a.id)));
    Ok((ok, bad))
}

/// Every readable manifest on the remote, newest first.
pub(super) fn remote_points(s: &Session) -> Result<Vec<Manifest>, OffsiteError> {
    Ok(remote_points_checked(s)?.0)
}

fn open_checked(cfg: &OffsiteConfig) -> Result<Session, OffsiteError> {
    let s = Session::open(cfg)?;
    if s.format()?.is_none() {
        return Err(OffsiteError::NoPoint { url: s.url.clone(), what: "at all (nothing was pushed there)".into() });
    }
    Ok(s)
}

/// The remote's restore points, newest first.
///
/// # Errors
/// [`OffsiteError`].
pub fn list(cfg: &OffsiteConfig) -> Result<(String, Vec<ListedPoint>), OffsiteError> {
    let s = open_checked(cfg)?;
    let packs: HashSet<String> =
        s.remote.list(PACKS).map_err(|e| s.remote_err(e))?.into_iter().map(|(n, _)| n).collect();
    let points = remote_points(&s)?
        .into_iter()
        .map(|m| ListedPoint {
            complete: m.pages.iter().flat_map(|p| p.packs.iter()).all(|p| packs.contains(&s.pack_name(p))),
            id: m.id,
            created: m.created,
            kind: serde_json::to_value(m.kind).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default(),
            size: m.size,
            sha256: m.sha256,
        })
        .collect();
    Ok((s.url, points))
}

/// One remote point's verification.
#[derive(Debug, Clone, Serialize)]
pub struct PointCheck {
    /// Its id.
    pub id: String,
    /// When it was taken.
    pub created: Option<String>,
    /// Complete and every checked object matched its hash.
    pub ok: bool,
    /// What is wrong, one line each.
    pub problems: Vec<String>,
}

/// What `warden offsite verify` found. A damaged remote is a report, not an error.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// The remote.
    pub remote: String,
    /// Every remote point passed.
    pub ok: bool,
    /// `Some(fraction)`: a sample of the packs was downloaded.
    pub sample: Option<f64>,
    /// Per point, newest first.
    pub points: Vec<PointCheck>,
    /// Packs the points use.
    pub packs_used: u64,
    /// Packs downloaded and re-hashed.
    pub packs_checked: u64,
    /// Packs that failed (missing, wrong hash, do not decrypt).
    pub packs_bad: BTreeMap<String, String>,
    /// Packs on the remote no point uses (left by a killed push; the next push reuses them).
    pub packs_unused: u64,
    /// Bytes downloaded.
    pub bytes_downloaded: u64,
    /// Wall time.
    pub duration_ms: u64,
}

/// Downloads the pack `name` (to `to` when given) checking that its plaintext hashes to its
/// name; returns the bytes downloaded.
fn fetch_pack(s: &Session, name: &str, to: Option<&Path>) -> Result<u64, String> {
    let object = s.pack_object(name);
    let mut tries = 0;
    loop {
        let mut file = match to {
            Some(p) => Some(std::fs::File::create(p).map_err(|e| format!("cannot write `{}`: {e}", p.display()))?),
            None => None,
        };
        let mut h = Sha256::new();
        let mut dec = s.keys.as_ref().map(crypt::Decryptor::new);
        let mut n = 0u64;
        let mut take = |plain: &[u8]| -> Result<(), String> {
            h.update(plain);
            if let Some(f) = file.as_mut() {
                f.write_all(plain).map_err(|e| format!("cannot write the pack: {e}"))?;
            }
            Ok(())
        };
        let got = s.remote.get_with(&object, &mut |b| {
            n += b.len() as u64;
            match dec.as_mut() {
                Some(d) => take(&d.push(b)?),
                None => take(b),
            }
        });
        match got {
            Ok(()) => {
                if let Some(d) = dec.as_mut() {
                    take(&d.finish()?)?;
                }
                let sha = crate::util::fmt::hex(&h.finalize());
                if sha != name {
                    return Err(format!("{} hashes to {sha}, not to its name", s.remote.url(&object)));
                }
                if let Some(f) = file {
                    f.sync_all().map_err(|e| format!("cannot sync the pack: {e}"))?;
                }
                return Ok(n);
            }
            Err(e) if e.kind == FailKind::NotFound => return Err(format!("{} is missing", s.remote.url(&object))),
            Err(e) if e.kind == FailKind::Other && tries < 2 && !e.message.contains("decrypt") => tries += 1,
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Verifies every remote point: complete (every pack it names is there) and, for the packs
/// downloaded (all, or a `sample` fraction), that each hashes to its name.
///
/// # Errors
/// [`OffsiteError`] when the remote cannot be read at all.
pub fn verify(cfg: &OffsiteConfig, sample: Option<f64>) -> Result<VerifyReport, OffsiteError> {
    let started = Instant::now();
    let s = open_checked(cfg)?;
    let (points, unreadable) = remote_points_checked(&s)?;
    let present: HashMap<String, u64> = s.remote.list(PACKS).map_err(|e| s.remote_err(e))?.into_iter().collect();
    let mut used: Vec<String> =
        points.iter().flat_map(|m| m.pages.iter().flat_map(|p| p.packs.iter().cloned())).collect();
    used.sort();
    used.dedup();
    let used_objects: HashSet<String> = used.iter().map(|p| s.pack_name(p)).collect();
    let mut bad: BTreeMap<String, String> = BTreeMap::new();
    let mut checked = 0u64;
    let mut bytes = 0u64;
    // The sample: every k-th pack from a start that changes with the time, at least one.
    let step = sample.map_or(1, |f| if f <= 0.0 { usize::MAX } else { (1.0 / f.min(1.0)).round().max(1.0) as usize });
    let offset = (jiff::Timestamp::now().as_second().unsigned_abs() as usize) % step.max(1);
    for (i, p) in used.iter().enumerate() {
        if !present.contains_key(&s.pack_name(p)) {
            bad.insert(p.clone(), format!("{} is missing", s.remote.url(&s.pack_object(p))));
            continue;
        }
        let chosen = step == 1 || (step != usize::MAX && i % step == offset) || (checked == 0 && i + 1 == used.len());
        if !chosen {
            continue;
        }
        checked += 1;
        match fetch_pack(&s, p, None) {
            Ok(n) => bytes += n,
            Err(why) => {
                bad.insert(p.clone(), why);
            }
        }
    }
    let mut checks: Vec<PointCheck> = points
        .iter()
        .map(|m| {
            let problems: Vec<String> = m
                .pages
                .iter()
                .flat_map(|p| p.packs.iter())
                .filter_map(|p| bad.get(p).map(|why| format!("pack {p}: {why}")))
                .collect();
            PointCheck { id: m.id.clone(), created: Some(m.created.clone()), ok: problems.is_empty(), problems }
        })
        .collect();
    checks.extend(unreadable.into_iter().map(|(id, why)| PointCheck {
        id,
        created: None,
        ok: false,
        problems: vec![format!("its manifest cannot be read: {why}")],
    }));
    Ok(VerifyReport {
        remote: s.url.clone(),
        ok: checks.iter().all(|c| c.ok),
        sample,
        packs_used: used.len() as u64,
        packs_checked: checked,
        packs_unused: present.keys().filter(|k| !used_objects.contains(*k)).count() as u64,
        packs_bad: bad,
        points: checks,
        bytes_downloaded: bytes,
        duration_ms: ms(started.elapsed()),
    })
}

/// What `warden offsite restore` installed.
#[derive(Debug, Clone, Serialize)]
pub struct OffsiteRestore {
    /// The remote.
    pub remote: String,
    /// The point restored.
    pub point: String,
    /// When it was taken.
    pub created: String,
    /// The new file.
    pub to: PathBuf,
    /// Its size.
    pub size: u64,
    /// Its SHA-256 (the manifest's, matched).
    pub sha256: String,
    /// The full integrity check of the restored file.
    pub integrity: IntegrityReport,
    /// Bytes downloaded.
    pub bytes_downloaded: u64,
    /// Wall time.
    pub duration_ms: u64,
}

/// Restores a remote point (`point`: an id or its unique prefix; `None`: the newest
/// verified one) to the new file `to`: downloads its packs (each checked against its name),
/// materializes the file, checks its SHA-256 and runs the full integrity check, and only
/// then links it at `to`, which must not exist (nor appear meanwhile).
///
/// # Errors
/// [`OffsiteError`]; nothing is left at `to` on any error.
pub fn restore(cfg: &OffsiteConfig, to: &Path, point: Option<&str>) -> Result<OffsiteRestore, OffsiteError> {
    let started = Instant::now();
    if std::fs::symlink_metadata(to).is_ok() {
        return Err(OffsiteError::TargetExists { path: to.to_owned() });
    }
    // The new database is judged like the database itself: never onto a network share.
    let dir = atomic::parent_of(to);
    let verdict = crate::storage::classify(&crate::storage::RealProbe::new(), dir).map_err(|e| OffsiteError::Io {
        what: "judging the storage of",
        path: dir.to_owned(),
        source: std::io::Error::other(e.to_string()),
    })?;
    if verdict.kind != crate::storage::FsKind::Local {
        return Err(OffsiteError::StorageRefused {
            dir: dir.to_owned(),
            verdict: verdict.describe(),
            reason: verdict.reason,
        });
    }
    let s = open_checked(cfg)?;
    let points = remote_points(&s)?;
    let chosen: Vec<&Manifest> = match point {
        Some(p) => {
            let exact: Vec<&Manifest> = points.iter().filter(|m| m.id == p).collect();
            if exact.is_empty() { points.iter().filter(|m| m.id.starts_with(p)).collect() } else { exact }
        }
        None => points.iter().filter(|m| m.is_good()).take(1).collect(),
    };
    let m = match chosen.as_slice() {
        [m] => *m,
        [] => {
            return Err(OffsiteError::NoPoint {
                url: s.url.clone(),
                what: point.map_or_else(|| "that is good".into(), |p| format!("matching {p:?}")),
            });
        }
        many => {
            return Err(OffsiteError::NoPoint {
                url: s.url.clone(),
                what: format!(
                    "matching {:?} alone ({} match; give more of the id)",
                    point.unwrap_or_default(),
                    many.len()
                ),
            });
        }
    };
    let map =
        m.pages.as_ref().ok_or_else(|| OffsiteError::NoPoint { url: s.url.clone(), what: "with pages".into() })?;
    let io = |what: &'static str, path: &Path| {
        let path = path.to_owned();
        move |source| OffsiteError::Io { what, path, source }
    };
    let scratch = atomic::temp_path_for(to);
    atomic::create_dir_synced(&scratch, 0o700).map_err(io("creating", &scratch))?;
    let cleanup = ScratchDir(scratch.clone());
    let damaged = |why: String| OffsiteError::Damaged { id: m.id.clone(), url: s.url.clone(), to: to.to_owned(), why };
    let store = PageStore::of(&scratch);
    std::fs::create_dir(store.dir()).map_err(io("creating", store.dir()))?;
    std::fs::write(store.dir().join(MARKER_FILE), MARKER).map_err(io("writing", store.dir()))?;
    let mut bytes = 0u64;
    for p in &map.packs {
        bytes += fetch_pack(&s, p, Some(&store.pack_path(p))).map_err(damaged)?;
    }
    let file = scratch.join("restored.db");
    store.materialize(map, &m.sha256, &file, true, &mut |_, _| {}).map_err(|e| damaged(e.to_string()))?;
    let (integrity, _) = check_file(&file, CheckMode::Full, None, None);
    if !integrity.ok {
        return Err(damaged(format!("the integrity check failed: {}", integrity.summary())));
    }
    let size = std::fs::metadata(&file).map_err(io("reading", &file))?.len();
    atomic::rename_noreplace(&file, to).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            OffsiteError::TargetExists { path: to.to_owned() }
        } else {
            OffsiteError::Io { what: "installing", path: to.to_owned(), source: e }
        }
    })?;
    atomic::sync_dir(atomic::parent_of(to)).map_err(io("syncing", atomic::parent_of(to)))?;
    drop(cleanup);
    Ok(OffsiteRestore {
        remote: s.url.clone(),
        point: m.id.clone(),
        created: m.created.clone(),
        to: to.to_owned(),
        size,
        sha256: m.sha256.clone(),
        integrity,
        bytes_downloaded: bytes,
        duration_ms: ms(started.elapsed()),
    })
}

/// Removes the scratch directory however the restore ends.
struct ScratchDir(PathBuf);

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

//! Verifying a bundle with nothing written ([`verify_bundle`]): the manifest, every entry's path,
//! every file on disk against it. Does not own: the manifest's format or what an import does next.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::common::sha256_hex;
use super::error::{MigrateError, io_err};
use super::manifest::{BundleManifest, MANIFEST_FILE, SCHEMA};
use crate::copies::copy;

/// A manifest larger than this is refused unread (a real one is a few KiB per file).
const MAX_MANIFEST: u64 = 64 << 20;

/// A bundle whose every file matched its manifest when it was verified.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VerifiedBundle {
    /// The bundle directory (canonical).
    pub dir: PathBuf,
    /// Its manifest.
    pub manifest: BundleManifest,
    /// SHA-256 of `MANIFEST.json`.
    pub manifest_sha256: String,
}

/// Checks that `p` is a plain relative bundle path: not empty, not absolute, no `.` or `..`
/// component, no empty component, no backslash or NUL, not the manifest itself.
///
/// # Errors
/// Why it is not, one line.
pub fn check_entry_path(p: &str) -> Result<(), String> {
    if p.is_empty() {
        return Err("an entry with an empty path".into());
    }
    if p.contains('\0') || p.contains('\\') {
        return Err(format!("the entry `{}` has a NUL or backslash in its path", p.escape_debug()));
    }
    if p.starts_with('/') || Path::new(p).is_absolute() {
        return Err(format!("the entry `{p}` has an absolute path"));
    }
    for part in p.split('/') {
        match part {
            "" => return Err(format!("the entry `{p}` has an empty path component")),
            "." | ".." => return Err(format!("the entry `{p}` has a `{part}` component (path traversal)")),
            _ => {}
        }
    }
    if !Path::new(p).components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(format!("the entry `{p}` is not a plain relative path"));
    }
    if p == MANIFEST_FILE {
        return Err(format!("the manifest lists `{MANIFEST_FILE}` itself"));
    }
    Ok(())
}

/// Every regular file under `root`, as relative `/`-separated paths with their sizes; a
/// symbolic link, special file or non-UTF-8 name anywhere is a problem.
fn walk(root: &Path) -> Result<(BTreeMap<String, u64>, Vec<String>), MigrateError> {
    let mut files = BTreeMap::new();
    let mut problems = Vec::new();
    let mut stack = vec![(root.to_owned(), String::new(), 0usize)];
    while let Some((dir, rel, depth)) = stack.pop() {
        let rd = std::fs::read_dir(&dir).map_err(io_err("reading", &dir))?;
        for entry in rd {
            let entry = entry.map_err(io_err("reading", &dir))?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                problems.push(format!("`{}` has a name that is not UTF-8", entry.path().display()));
                continue;
            };
            let path = if rel.is_empty() { name } else { format!("{rel}/{name}") };
            let ft = entry.file_type().map_err(io_err("reading", &entry.path()))?;
            if ft.is_symlink() {
                problems.push(format!("`{path}` is a symbolic link"));
            } else if ft.is_dir() {
                if depth >= 16 {
                    problems.push(format!("`{path}` is nested too deep"));
                } else {
                    stack.push((entry.path(), path, depth + 1));
                }
            } else if ft.is_file() {
                let md = entry.metadata().map_err(io_err("reading", &entry.path()))?;
                files.insert(path, md.len());
            } else {
                problems.push(format!("`{path}` is not a regular file"));
            }
        }
    }
    Ok((files, problems))
}

/// Verifies a bundle with nothing written: the manifest (schema, paths), every file on disk
/// against it (no symbolic links, nothing unlisted, nothing missing, sizes and SHA-256).
///
/// # Errors
/// [`MigrateError::BundleMissing`] (66) when there is no bundle; [`MigrateError::Tampered`]
/// (65) naming what does not match (the first few problems, and how many there were).
pub fn verify_bundle(bundle: &Path) -> Result<VerifiedBundle, MigrateError> {
    let dir = match std::fs::canonicalize(bundle) {
        Ok(d) if d.is_dir() => d,
        Ok(_) => return Err(MigrateError::BundleMissing { path: bundle.to_owned() }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(MigrateError::BundleMissing { path: bundle.to_owned() });
        }
        Err(e) => return Err(io_err("resolving", bundle)(e)),
    };
    let tampered = |reason: String| MigrateError::Tampered { bundle: dir.clone(), reason };
    let mpath = dir.join(MANIFEST_FILE);
    match std::fs::symlink_metadata(&mpath) {
        Ok(md) if md.file_type().is_file() && md.len() <= MAX_MANIFEST => {}
        Ok(md) if md.file_type().is_file() => return Err(tampered(format!("{MANIFEST_FILE} is too large"))),
        Ok(_) => return Err(tampered(format!("{MANIFEST_FILE} is not a regular file"))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(tampered(format!("it has no {MANIFEST_FILE} (an incomplete copy, or not a bundle)")));
        }
        Err(e) => return Err(io_err("reading", &mpath)(e)),
    }
    let bytes = std::fs::read(&mpath).map_err(io_err("reading", &mpath))?;
    let manifest_sha256 = sha256_hex(&bytes);
    let schema = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v.get("schema").and_then(serde_json::Value::as_u64));
    match schema {
        Some(s) if s == u64::from(SCHEMA) => {}
        Some(s) => {
            return Err(tampered(format!(
                "{MANIFEST_FILE} has schema {s}; this warden reads schema {SCHEMA} (use the same warden version on both hosts)"
            )));
        }
        None => return Err(tampered(format!("{MANIFEST_FILE} is not a bundle manifest (no schema)"))),
    }
    let manifest: BundleManifest =
        serde_json::from_slice(&bytes).map_err(|e| tampered(format!("{MANIFEST_FILE} does not parse: {e}")))?;

    let mut problems = Vec::new();
    let mut listed = BTreeSet::new();
    for e in &manifest.files {
        if let Err(p) = check_entry_path(&e.path) {
            problems.push(p);
        } else if !listed.insert(e.path.as_str()) {
            problems.push(format!("the entry `{}` is listed twice", e.path));
        }
        if e.sha256.len() != 64 || !e.sha256.bytes().all(|c| c.is_ascii_hexdigit()) {
            problems.push(format!("the entry `{}` has no valid SHA-256", e.path));
        }
    }
    if !problems.is_empty() {
        return Err(tampered(summarize(&problems)));
    }
    let (found, mut problems) = walk(&dir)?;
    for path in found.keys() {
        if path != MANIFEST_FILE && !listed.contains(path.as_str()) {
            problems.push(format!("`{path}` is not listed in {MANIFEST_FILE}"));
        }
    }
    let mut to_hash = Vec::new();
    for e in &manifest.files {
        match found.get(&e.path) {
            None if !problems.iter().any(|p| p.starts_with(&format!("`{}` ", e.path))) => {
                problems.push(format!("`{}` is listed but missing", e.path));
            }
            None => {}
            Some(&size) if size != e.size => {
                problems.push(format!("`{}` has {size} bytes; the manifest says {}", e.path, e.size));
            }
            Some(_) => to_hash.push(e),
        }
    }
    if !problems.is_empty() {
        return Err(tampered(summarize(&problems)));
    }
    for e in to_hash {
        let p = dir.join(&e.path);
        let (sha, _) = copy::sha256_file(&p, None).map_err(io_err("hashing", &p))?;
        if sha != e.sha256 {
            problems.push(format!("`{}` hashes to {sha}; the manifest says {}", e.path, e.sha256));
        }
    }
    if !problems.is_empty() {
        return Err(tampered(summarize(&problems)));
    }
    Ok(VerifiedBundle { dir, manifest, manifest_sha256 })
}

fn summarize(problems: &[String]) -> String {
    let mut s = problems.iter().take(3).cloned().collect::<Vec<_>>().join("; ");
    if problems.len() > 3 {
        s.push_str(&format!(" (+{} more)", problems.len() - 3));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_paths_are_plain_and_relative() {
        for ok in ["database.sqlite", "sessions/a.json", "audit/audit.jsonl", "a/b/c", ".hidden"] {
            assert_eq!(check_entry_path(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../evil",
            "sessions/../../evil",
            "./database.sqlite",
            "a//b",
            "a/",
            "a/.",
            "..",
            "a\\b",
            "a\0b",
            MANIFEST_FILE,
        ] {
            assert!(check_entry_path(bad).is_err(), "{bad:?} must be refused");
        }
    }
}

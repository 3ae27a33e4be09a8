//! Building a bundle: a temporary directory beside its final name, files copied in hashed,
//! the manifest written last, then one rename to publish.
//! Does not own: what goes in (the export, the sessions export).

use std::collections::BTreeSet;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use super::common::{exists, file_name, make_dir, remove_dead_temps, sha256_hex, sync_dir};
use super::error::{MigrateError, full_in, io_err};
use super::manifest::{BundleEntry, BundleManifest, MANIFEST_FILE, SESSIONS_DIR};
use crate::copies::copy::{self, TempGuard};
use crate::session::health;
use crate::util::atomic::{self, TMP_MARK};

/// A bundle being built in a temporary directory beside its final name; removed on drop
/// unless published.
pub(super) struct Builder {
    pub(super) dir: PathBuf,
    pub(super) tmp: PathBuf,
    pub(super) parent: PathBuf,
    pub(super) guard: TempGuard,
    pub(super) files: Vec<BundleEntry>,
}

impl Builder {
    /// Checks `to` (absent, its directory present) and creates the temporary directory.
    pub(super) fn start(to: &Path) -> Result<Builder, MigrateError> {
        let dir = crate::storage::resolve(to).map_err(io_err("resolving", to))?;
        if exists(&dir) {
            return Err(MigrateError::TargetExists { path: dir });
        }
        let parent = atomic::parent_of(&dir).to_owned();
        if !parent.is_dir() {
            return Err(MigrateError::CannotCreate {
                path: dir,
                why: format!("`{}` is not a directory\n(hint: create it first)", parent.display()),
            });
        }
        remove_dead_temps(&parent, &format!(".{}{TMP_MARK}", file_name(&dir)));
        let tmp = atomic::temp_path_for(&dir);
        std::fs::DirBuilder::new().mode(0o700).create(&tmp).map_err(io_err("creating", &tmp))?;
        let guard = TempGuard::new(vec![tmp.clone()]);
        Ok(Builder { dir, tmp, parent, guard, files: Vec::new() })
    }

    /// The temporary path of `rel`, its directory created.
    pub(super) fn path(&self, rel: &str) -> Result<PathBuf, MigrateError> {
        let p = self.tmp.join(rel);
        make_dir(atomic::parent_of(&p), 0o700)?;
        Ok(p)
    }

    /// Copies `src` in as `rel`, hashing as it copies (`0600`, synced).
    pub(super) fn add_copy(&mut self, src: &Path, rel: &str) -> Result<BundleEntry, MigrateError> {
        let dst = self.path(rel)?;
        let (sha256, size) =
            copy::copy_hashed(src, &dst).map_err(io_err("copying", src)).map_err(full_in(&self.parent))?;
        let e = BundleEntry { path: rel.to_owned(), size, sha256 };
        self.files.push(e.clone());
        Ok(e)
    }

    /// Writes the manifest last, syncs everything, renames the directory into place.
    pub(super) fn publish(mut self, manifest: &mut BundleManifest) -> Result<(PathBuf, String), MigrateError> {
        self.files.sort_by(|a, b| a.path.cmp(&b.path));
        manifest.files = std::mem::take(&mut self.files);
        let mut bytes = serde_json::to_vec_pretty(manifest).map_err(|e| io_err("encoding", &self.tmp)(e.into()))?;
        bytes.push(b'\n');
        let mpath = self.tmp.join(MANIFEST_FILE);
        atomic::write_atomic(&mpath, &bytes, 0o600)
            .map_err(io_err("writing", &mpath))
            .map_err(full_in(&self.parent))?;
        let mut dirs = BTreeSet::new();
        for e in &manifest.files {
            let mut p = Path::new(&e.path).parent();
            while let Some(d) = p.filter(|d| !d.as_os_str().is_empty()) {
                dirs.insert(self.tmp.join(d));
                p = d.parent();
            }
        }
        for d in dirs {
            sync_dir(&d)?;
        }
        sync_dir(&self.tmp)?;
        match atomic::rename_noreplace(&self.tmp, &self.dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists || e.raw_os_error() == Some(libc::ENOTEMPTY) => {
                return Err(MigrateError::TargetExists { path: self.dir.clone() });
            }
            Err(e) => return Err(io_err("publishing", &self.dir)(e)),
        }
        self.guard.disarm();
        sync_dir(&self.parent)?;
        Ok((self.dir.clone(), sha256_hex(&bytes)))
    }
}
/// The artifacts of `session_dir` (as [`health::list`] reads them), as (file, bundle path).
pub(super) fn artifacts(session_dir: &Path) -> Result<Vec<(PathBuf, String)>, MigrateError> {
    let all = health::list(session_dir).map_err(io_err("reading", session_dir))?;
    Ok(all.into_iter().map(|(p, _)| (p.clone(), format!("{SESSIONS_DIR}/{}", file_name(&p)))).collect())
}

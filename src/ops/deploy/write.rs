//! Writing rendered files into a directory ([`write()`]): atomic per file, identical files
//! left alone, different ones replaced only when forced.
//! Does not own: rendering, or installing them into systemd.

use std::path::{Path, PathBuf};

use super::error::DeployError;
use super::render::RenderedFile;

/// What [`write()`] did with one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteAction {
    /// The file did not exist.
    Created,
    /// The file existed with identical contents: left alone.
    Unchanged,
    /// The file existed with other contents and `force` was given.
    Replaced,
}

/// One file [`write()`] handled.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Written {
    /// Where.
    pub path: PathBuf,
    /// What happened.
    pub action: WriteAction,
}

/// Writes `files` into `dir` (created if missing, mode 0755): each file atomically (a
/// temporary file, fsync, rename), mode 0644. A file with identical contents is left alone;
/// one with different contents is replaced only with `force`, and otherwise nothing at all
/// is written.
///
/// # Errors
/// [`DeployError::Exists`] (nothing written) or [`DeployError::Io`].
pub fn write(dir: &Path, files: &[RenderedFile], force: bool) -> Result<Vec<Written>, DeployError> {
    use std::os::unix::fs::DirBuilderExt;
    let mut plan = Vec::with_capacity(files.len());
    for f in files {
        if f.name.is_empty() || f.name.contains('/') || f.name.starts_with('.') {
            return Err(DeployError::Invalid {
                what: "file name",
                value: f.name.clone(),
                reason: "a plain file name".into(),
            });
        }
        let path = dir.join(&f.name);
        let action = match std::fs::read(&path) {
            Ok(old) if old == f.contents.as_bytes() => WriteAction::Unchanged,
            Ok(_) if force => WriteAction::Replaced,
            Ok(_) => return Err(DeployError::Exists { path }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => WriteAction::Created,
            Err(source) => return Err(DeployError::Io { action: "reading", path, source }),
        };
        plan.push((path, action, f));
    }
    std::fs::DirBuilder::new().recursive(true).mode(0o755).create(dir).map_err(|source| DeployError::Io {
        action: "creating",
        path: dir.to_owned(),
        source,
    })?;
    let mut done = Vec::with_capacity(plan.len());
    for (path, action, f) in plan {
        if action != WriteAction::Unchanged {
            crate::util::atomic::write_atomic(&path, f.contents.as_bytes(), 0o644)
                .map_err(|source| DeployError::Io { action: "writing", path: path.clone(), source })?;
        }
        done.push(Written { path, action });
    }
    Ok(done)
}

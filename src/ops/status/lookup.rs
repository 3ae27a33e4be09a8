//! Session artifacts and backups by id: exact id first, else a unique prefix
//! ([`find_session`], [`find_backup`], [`list_sessions`]). Does not own reading them
//! ([`crate::session::health`], [`BackupStore`]).

use std::io;
use std::path::{Path, PathBuf};

use jiff::Timestamp;

use crate::copies::backup::{BackupRecord, BackupStore};
use crate::session::health::{self, HealthArtifact};

/// An id that names nothing, or more than one thing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LookupError {
    /// Nothing has this id or id prefix.
    #[error("no {what} `{id}` in `{dir}`\n(hint: list them with `warden {what}s`)")]
    NotFound {
        /// `session` or `backup`.
        what: &'static str,
        /// The id or prefix given.
        id: String,
        /// Where it was looked for.
        dir: PathBuf,
    },
    /// The prefix matches several.
    #[error("`{id}` matches {} {what}s: {}\n(hint: give more of the id)", candidates.len(), candidates.join(", "))]
    Ambiguous {
        /// `session` or `backup`.
        what: &'static str,
        /// The prefix given.
        id: String,
        /// The ids it matches.
        candidates: Vec<String>,
    },
    /// The directory could not be read.
    #[error("cannot read `{dir}`: {source}")]
    Io {
        /// The directory.
        dir: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// An exact id wins; otherwise exactly one id may start with `id`.
fn pick<T>(
    items: Vec<T>,
    id: &str,
    key: impl Fn(&T) -> &str,
    what: &'static str,
    dir: &Path,
) -> Result<T, LookupError> {
    let mut matching: Vec<T> = Vec::new();
    for it in items {
        if key(&it) == id {
            return Ok(it);
        }
        if !id.is_empty() && key(&it).starts_with(id) {
            matching.push(it);
        }
    }
    match matching.len() {
        0 => Err(LookupError::NotFound { what, id: id.to_owned(), dir: dir.to_owned() }),
        1 => Ok(matching.remove(0)),
        _ => Err(LookupError::Ambiguous {
            what,
            id: id.to_owned(),
            candidates: matching.iter().map(|t| key(t).to_owned()).collect(),
        }),
    }
}

/// Every session artifact in `session_dir`, newest first.
///
/// # Errors
/// [`LookupError::Io`] when the directory cannot be read (a missing one is empty).
pub fn list_sessions(session_dir: &Path) -> Result<Vec<(PathBuf, HealthArtifact)>, LookupError> {
    let mut all =
        health::list(session_dir).map_err(|source| LookupError::Io { dir: session_dir.to_owned(), source })?;
    newest_first(&mut all);
    Ok(all)
}

/// Newest first by start time (microseconds), then id: ids only have second resolution,
/// and two sessions can start within one second.
pub(super) fn newest_first(all: &mut [(PathBuf, HealthArtifact)]) {
    let key = |a: &HealthArtifact| (a.started_at.parse::<Timestamp>().ok(), a.session_id.clone());
    all.sort_by_key(|(_, a)| std::cmp::Reverse(key(a)));
}

/// The session artifact whose id is `id`, or the only one whose id starts with it.
///
/// # Errors
/// [`LookupError`]: none, several, or an unreadable directory.
pub fn find_session(session_dir: &Path, id: &str) -> Result<(PathBuf, HealthArtifact), LookupError> {
    pick(list_sessions(session_dir)?, id, |(_, a)| a.session_id.as_str(), "session", session_dir)
}

/// The backup whose id is `id`, or the only one whose id starts with it.
///
/// # Errors
/// [`LookupError`]: none, several, or an unreadable directory.
pub fn find_backup(store: &BackupStore, id: &str) -> Result<BackupRecord, LookupError> {
    let all = store.list().map_err(|e| LookupError::Io { dir: store.dir().to_owned(), source: io::Error::other(e) })?;
    pick(all, id, |r| r.manifest.id.as_str(), "backup", store.dir())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_match_exactly_first_then_by_unique_prefix() {
        let dir = Path::new("/d");
        let ids = || vec!["a-post".to_owned(), "a-post.2".to_owned(), "b".to_owned()];
        assert_eq!(pick(ids(), "a-post", |s| s.as_str(), "backup", dir).unwrap(), "a-post");
        assert_eq!(pick(ids(), "b", |s| s.as_str(), "backup", dir).unwrap(), "b");
        assert!(matches!(pick(ids(), "a", |s| s.as_str(), "backup", dir), Err(LookupError::Ambiguous { .. })));
        assert!(matches!(pick(ids(), "c", |s| s.as_str(), "backup", dir), Err(LookupError::NotFound { .. })));
        assert!(matches!(pick(ids(), "", |s| s.as_str(), "backup", dir), Err(LookupError::NotFound { .. })));
    }
}

//! The record of the last restore that replaced the database: `<db>.warden/restores/latest.json`.
//!
//! Owns: [`RestoreRecord`] (schema 1; fields are only added), writing it atomically when an
//! in-place restore finished (also one finished by the recovery of an interrupted one), and
//! reading it back ([`latest_restore`]). Does not own the restore itself.
//!
//! Why: `warden status` judges the database by the sessions and gates recorded before it;
//! once a verified backup replaced the database, a failed gate, a session that ended badly
//! or a supervisor that died before that moment describe a file that is no longer there.
//! Status reads this record to know that, and stops recommending a restore that happened.
//! A restore to a new file (`--to`) or a dry run never writes it.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::copies::backup::BackupRef;
use crate::format::names;
use crate::util::atomic;

/// Directory of restore records under the state directory.
pub const RESTORES_DIR: &str = "restores";
/// File name of the latest restore record.
pub const RESTORE_LATEST: &str = "latest.json";

/// The last restore that replaced the database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreRecord {
    /// Record format version (1).
    pub schema: u32,
    /// When the restored file was in place (RFC 3339 UTC).
    pub finished_at: String,
    /// The database.
    pub db: PathBuf,
    /// The backup now in place.
    pub backup: BackupRef,
    /// Where the replaced files went.
    pub replaced_dir: Option<PathBuf>,
    /// It finished a restore that had been interrupted.
    pub recovered: bool,
    /// Who (uid, user, pid, host).
    pub by: String,
}

impl RestoreRecord {
    /// A record of `backup` restored over `db` now.
    pub(super) fn now(db: &Path, backup: BackupRef, replaced_dir: Option<PathBuf>, recovered: bool) -> Self {
        RestoreRecord {
            schema: 1,
            finished_at: crate::util::identity::now_rfc3339(),
            db: db.to_owned(),
            backup,
            replaced_dir,
            recovered,
            by: crate::util::identity::who(),
        }
    }

    /// Writes the record into the state directory `state` (`restores/latest.json`, `0640`).
    ///
    /// # Errors
    /// The I/O error; the previous record is then intact.
    pub(super) fn write(&self, state: &Path) -> io::Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        let dir = state.join(RESTORES_DIR);
        std::fs::DirBuilder::new().recursive(true).mode(0o750).create(&dir)?;
        let mut bytes = serde_json::to_vec_pretty(self).map_err(io::Error::other)?;
        bytes.push(b'\n');
        atomic::write_atomic(&dir.join(RESTORE_LATEST), &bytes, 0o640)
    }
}

/// The latest restore record of `db` (`<db>.warden/restores/latest.json`).
pub fn restore_record_path(db: &Path) -> PathBuf {
    names::state_dir(db).join(RESTORES_DIR).join(RESTORE_LATEST)
}

/// The restore record at `path`, if one was written and parses.
pub fn latest_restore(path: &Path) -> Option<RestoreRecord> {
    let bytes = std::fs::read(path).ok()?;
    serde_json::from_slice(&bytes).ok()
}

//! Restores and restore drills.
//!
//! Owns: choosing the backup to restore, re-verifying it before anything is touched, putting
//! it in place of the database without ever deleting the database it replaces, finishing or
//! undoing a restore that was killed half-way, and the restore drill. Does not own: taking,
//! listing or hash-checking backups ([`crate::copies::backup`]), the hashed copy and the integrity
//! check it runs on it (the crate-internal `copies::copy`, [`crate::copies::backup::check_file`]),
//! which backups are kept ([`crate::copies::retention`]), or the writer lock itself ([`crate::guard::lock`]).
//!
//! # What [`restore`] does, in place
//! 1. Takes the database's writer lock ([`WriterScope::Connection`]: refused even when this
//!    process holds it) and keeps it to the end, so no session or engine can start
//!    mid-restore. A held lock is refused with the holder named; nothing is changed.
//! 2. Finishes or undoes an interrupted restore, if its intent record is there (below).
//! 3. Picks the backup: `--from` (an id, a data file name, or a path to a data file with its
//!    manifest beside it), else the newest *good* one ([`Manifest::is_good`]). A `post-crash`
//!    copy or a copy whose manifest says unverified is restored only when named and
//!    [`RestoreOptions::allow_crash_copy`] is set, and it must still pass every check.
//! 4. Re-verifies, before touching anything: the size against the manifest; then the backup
//!    is copied to a temporary file beside the database, hashed *as it is copied*, and the
//!    SHA-256 compared with the manifest (one flipped byte anywhere, even where no pragma
//!    looks, is refused here); then `PRAGMA integrity_check` and `foreign_key_check` run on
//!    that private copy (read-write connection: CHECK constraints are attached only then);
//!    then the copy is re-hashed, so the file installed is byte-identical to the manifest.
//! 5. Writes the intent record atomically and audits `restore_started` (failing closed: a
//!    restore that cannot be audited does not start).
//! 6. Moves the database, then its `-wal`, `-journal` and `-shm`, into
//!    `<db>.warden/replaced/<UTC>/` (`rename(2)` on one filesystem, never over an existing
//!    file; nothing is ever deleted). The database goes first: from then until the restored
//!    file is in place there is *no* database at the path, rather than one without its WAL
//!    or hot journal, which would open as an older or torn state.
//! 7. Renames the verified copy into place (`RENAME_NOREPLACE`), with the replaced file's
//!    mode (and owner, when running as root), or `0600` when there was none; syncs the
//!    directory. No `-wal`, `-shm` or `-journal` is left beside it.
//! 8. Removes the intent record, audits `restored` (which backup and its SHA-256, the target,
//!    what was moved aside, who), writes `<db>.warden/restores/latest.json` ([`RestoreRecord`],
//!    which `warden status` reads), and releases the lock recording the restored file as the
//!    last clean close, so the next engine open does not report a change outside warden.
//!
//! With [`RestoreOptions::to`], the copy is verified the same way and renamed to a new path
//! that must not exist (nor its `-wal`, `-journal`, `-shm`); the live database and its lock
//! are not touched. [`RestoreOptions::dry_run`] verifies (on a temporary copy it removes) and
//! reports the plan; it changes nothing and takes no lock.
//!
//! # Crash safety
//! `kill -9` at any point leaves either the old set at the path (nothing moved yet), or the
//! restored file at the path (all moved), or the old set in `replaced/<UTC>/` plus the
//! verified copy named in the intent record. The next restore (any [`restore`] call, or
//! [`recover_interrupted`]) takes the lock and decides deterministically:
//! - the verified copy is still there and its size and SHA-256 match: **roll forward** (move
//!   the rest aside, install the copy);
//! - the copy is gone and everything was moved aside and a database is at the path: it was
//!   installed; **complete** (only the record is removed);
//! - otherwise (the copy is gone or damaged): **roll back** (move everything back, remove the
//!   copy).
//!
//! A file found where a move must put one is never overwritten: recovery stops with
//! [`RestoreError::InterruptedConflict`] and leaves the record for a human. A restore that
//! fails (rather than dies) after writing its record rolls back at once. Crash tests stop
//! the process at [`pause_point`]s: `restore-verified`, `restore-intent-written`,
//! `restore-moved-db`, `restore-moved-wal`, `restore-moved-journal`, `restore-moved-shm`,
//! `restore-installed`, `restore-finished` (in place) and `restore-to-installed` (`--to`).
//!
//! # On disk
//! ```text
//! <dir>/.<name>.restore.warden-tmp.<pid>.<n>   the verified copy, until renamed into place
//! <db>.warden/restore-in-progress.json         intent record (RestoreIntent, schema 1);
//!                                              exists only while a restore runs or was killed
//! <db>.warden/replaced/<YYYYmmddTHHMMSS.mmmZ>/ what one restore moved aside (0700): <name>,
//!                                              <name>-wal, <name>-journal, <name>-shm
//! <db>.warden/restores/latest.json             the last in-place restore (RestoreRecord,
//!                                              schema 1), also one finished by recovery
//! <db>.warden/drills/latest.json               the last drill's DrillRecord (schema 1)
//! ```
//! `replaced/` is never pruned by warden: remove a directory once the restore is trusted.
//!
//! # The drill
//! [`drill`] copies the newest good backup into a scratch directory (a fresh
//! `.warden-drill.warden-tmp.<pid>.<n>/` under [`DrillOptions::scratch`], default the backup
//! directory's parent), hashing as it copies, then runs `integrity_check` and
//! `foreign_key_check` there, removes the scratch directory, and writes its record
//! atomically to `<db>.warden/drills/latest.json` (mode `0640`). It never opens the live
//! database and never takes the writer lock. The record, stable fields (readers ignore
//! unknown ones):
//!
//! ```text
//! schema        1
//! outcome       "ok" | "failed" | "no_backup"
//! ok            true only for "ok"
//! started_at, finished_at   RFC 3339 UTC
//! db            the database whose backups were drilled
//! backup        {id, path, kind, created, sha256, size, verified} or null
//! backup_age_s  seconds between the backup's creation and the drill, or null
//! hash_ok       size and SHA-256 equal the manifest (null when not reached)
//! integrity     the IntegrityReport of the restored copy (null when not reached)
//! messages      human-readable findings (why it failed)
//! bytes         bytes restored; duration_ms, copy_ms, check_ms; mb_per_s (bytes / total)
//! scratch       the scratch directory used (already removed)
//! host, warden_version, sqlite_version
//! ```
//!
//! [`WriterScope::Connection`]: crate::guard::lock::WriterScope::Connection
//! [`Manifest::is_good`]: crate::copies::backup::Manifest::is_good
//! [`pause_point`]: crate::copies::backup::pause_point

mod choose;
mod drills;
mod elsewhere;
mod error;
mod files;
mod guard;
mod in_place;
mod install;
mod model;
mod record;
mod recovery;
mod verify;

use std::path::Path;

use self::elsewhere::restore_elsewhere;
use self::error::io_err;
use self::in_place::restore_in_place;
use crate::copies::backup::BackupStore;

pub use self::drills::{
    DRILL_LATEST, DRILLS_DIR, DrillOptions, DrillOutcome, DrillRecord, DrillReport, drill, drill_record_path,
    latest_drill,
};
pub use self::error::RestoreError;
pub use self::model::{
    INTENT_FILE, MovedFile, REPLACED_DIR, RecoveryAction, RecoveryReport, RestoreIntent, RestoreOptions,
    RestoreOutcome, RestoreReport, SIDECARS, Verification,
};
pub use self::record::{RESTORE_LATEST, RESTORES_DIR, RestoreRecord, latest_restore, restore_record_path};
pub use self::recovery::{intent_path, pending, recover_interrupted};

/// Restores a backup over `db` (or to [`RestoreOptions::to`]); see the module docs for
/// every step.
///
/// # Errors
/// [`RestoreError`] when the restore could not be attempted or carried out: no backup, the
/// writer lock held (nothing changed), target exists, I/O. A backup that fails
/// re-verification is reported as [`RestoreOutcome::VerificationFailed`] instead, with
/// nothing changed.
pub fn restore(db: &Path, store: &BackupStore, opts: &RestoreOptions) -> Result<RestoreReport, RestoreError> {
    let db = crate::storage::resolve(db).map_err(io_err("resolving", db))?;
    if !opts.dry_run {
        crate::copies::sweep_state(&db);
    }
    match &opts.to {
        Some(to) => restore_elsewhere(&db, to, store, opts),
        None => restore_in_place(&db, store, opts),
    }
}

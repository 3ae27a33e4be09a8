//! Moving a database to another host, and handing session artifacts to analysis elsewhere:
//! verified bundles.
//!
//! Owns: the bundle format ([`BundleManifest`], schema 1), making a bundle atomically
//! ([`export`](fn@export) for a migration, [`export_sessions`] for analysis), verifying one with nothing
//! written ([`verify_bundle`]), and installing a migration bundle on the new host
//! ([`import`](fn@import)). Does not own: the consistent copy, the check and the hashing (the
//! crate-internal `copies::copy` and [`crate::copies::backup::check_file`]), storage
//! verdicts ([`crate::storage`]), the writer lock ([`crate::guard::lock`]), or snapshots
//! ([`crate::copies::snapshot`]).
//!
//! # The bundle
//! ```text
//! BUNDLE_DIR/                0700, published by renaming a finished `.NAME.warden-tmp.*` dir
//!   MANIFEST.json            written last: schema, kind, source host and paths, versions,
//!                            every other file with its relative path, size and SHA-256
//!   database.sqlite          migration: a consistent copy taken with SQLite's online backup
//!                            API, journal_mode=DELETE, integrity_check + foreign_key_check ok
//!   sessions/<id>.json       the health artifacts
//!   audit/audit.jsonl        migration: the audit log, as it was
//!   backups/<id>.json        migration, optional: backup manifests (and with `All`, the data)
//!   snapshots/<id>.sqlite    sessions export: the newest analysis snapshot and its manifest
//! ```
//! Files are `0600`. The SHA-256 of `MANIFEST.json` names the whole bundle (every other file
//! is pinned by it); the audit records of an export and an import carry it.
//!
//! # Export ([`export`](fn@export))
//! The database is read through SQLite's locking, never copied byte for byte: a read-only
//! tooling connection ([`crate::guard::connect::open_tool`], which the guard allows on network
//! storage, in rollback mode) feeds the online backup API in **one step**, so the copy is one
//! committed state even while an engine commits. That is what makes the export safe on the
//! old host, whose database sits on an SMB share. The copy is switched to `DELETE` mode,
//! checked (`integrity_check`, `foreign_key_check`) while it is hashed, and its row count per
//! table recorded. A copy that fails its check is never published.
//!
//! # Import ([`import`](fn@import)), in order; the first refusal stops it
//! 1. preflight: the bundle exists (66); the target's directory exists, and the target, its
//!    `-wal`/`-journal`/`-shm`, its state directory `<db>.warden` and the artifacts to be
//!    copied do not (73); the target's directory is on local storage (69: network, lock-less
//!    and unknown filesystems are refused, as the guard refuses the engine there);
//! 2. the bundle is verified with nothing written ([`verify_bundle`]): the manifest parses
//!    and has schema 1; every entry is a plain relative path (no absolute path, no `..`);
//!    every file in the bundle is a regular file (no symbolic link) listed in the manifest,
//!    every listed file exists with its size and SHA-256 (65);
//! 3. the gate: the database is copied beside the target (hashed as it is copied, compared
//!    with the manifest), `integrity_check` and `foreign_key_check` run on that private copy,
//!    the row counts are compared with the manifest, and the copy is re-hashed (65; the copy
//!    is removed);
//! 4. mode (default `0640`) and owner (`chown`; 77 when not permitted) are set on the copy;
//!    the state directory is prepared under a temporary name with the artifacts
//!    (`sessions/`) and the old host's audit log (`imported-audit.jsonl`, never mixed into
//!    this host's log), each copy hashed against the manifest;
//! 5. the writer lock of the target is taken (75 when held), the copy is renamed into place
//!    with `RENAME_NOREPLACE` and the directory synced;
//! 6. the database is opened through the guard's **engine** role with
//!    [`JournalChoice::Wal`](crate::guard::connect::JournalChoice::Wal) and closed, so the switch to WAL happens on the local disk, the
//!    audit log shows the open and the lock file records the clean close; the header must
//!    then say WAL; the state directory is renamed into place;
//! 7. the import is audited (`migration_imported`, with the bundle's SHA-256 and the source
//!    host). A failure after step 5 undoes the import (the installed files are removed).

mod builder;
mod common;
mod error;
mod export;
mod import;
mod manifest;
mod owner;
mod sessions;
mod verify;

pub use error::MigrateError;
pub use export::{BackupsInBundle, ExportOptions, ExportReport, export};
pub use import::{DEFAULT_MODE, IMPORTED_AUDIT, ImportOptions, ImportReport, ImportedDatabase, import};
pub use manifest::{
    AUDIT_FILE, BACKUPS_DIR, BundleEntry, BundleKind, BundleManifest, BundleSource, BundledDatabase, BundledSnapshot,
    DATABASE_FILE, MANIFEST_FILE, SCHEMA, SESSIONS_DIR, SNAPSHOTS_DIR,
};
pub use owner::Owner;
pub use sessions::{SessionsExportOptions, SessionsExportReport, export_sessions};
pub use verify::{VerifiedBundle, check_entry_path, verify_bundle};

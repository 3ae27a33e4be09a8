//! Operator views of a guarded database: its health ([`collect`], `warden status`) and the
//! Prometheus textfile made from it ([`prometheus_text`], [`write_prometheus`]); session
//! artifacts by id ([`list_sessions`], [`find_session`]); re-verification of published
//! backups ([`verify_backups`]); reading, filtering and following the audit log
//! ([`AuditReader`], [`AuditFilter`]).
//!
//! Owns: what "healthy" means and its exit codes, the report's JSON shape (schema 1; fields
//! are only ever added, consumers must ignore unknown ones), the metric names, and the
//! lookup rules for ids. Does not own: any of the facts, which come from the library
//! ([`crate::guard::lock::inspect`], [`crate::storage::classify`], [`crate::session::health::list`],
//! [`BackupStore`], [`crate::guard::audit`]); nothing here writes to a database, a backup, an
//! artifact or the lock (the Prometheus textfile is the only file written, and only on
//! request).
//!
//! # Health verdict and exit codes
//!
//! [`collect`] never fails: a part it cannot read becomes a problem of that part (fail
//! closed). Every problem found is listed in [`StatusReport::problems`], most severe first,
//! and the exit code is the most severe one's:
//!
//! | code | problem | kinds |
//! |---|---|---|
//! | `0` | healthy: none of the below (a session, an engine or a restore holding the writer lock is healthy: "session running") | |
//! | `11` | the most recent integrity gate failed, a session was refused for damage, the database is missing or empty, something else than a readable database file is at its path, it changed since its seal, or a restore was interrupted (its intent record is there and nobody holds the lock; sessions refuse until `warden restore` finishes it) | `gate_failed`, `database_missing`, `database_unusable`, `changed_since_seal`, `restore_interrupted` |
//! | `13` | the writer lock is free but its last holder never released it: an engine died (crash, `kill -9`); or the lock could not be read | `writer_died`, `lock_unreadable` |
//! | `17` | a process other than warden and its engine had the database (or its `-wal` or `-journal`) open for writing during the last session, while it runs or after it ended (its artifact's `foreign_writers`, see [`crate::session::watch`]); a later session without one clears it | `foreign_writer` |
//! | `14` | the database or the backup directory is not on local storage (or could not be judged), or SQLite is older than 3.51.3 | `storage_not_local`, `storage_unknown`, `sqlite_too_old` |
//! | `12` | the last session ended badly: `engine_failed`, `abandoned` (or still `running` with nobody holding the lock), `completed_without_backup`, `engine_not_started`, or refused at a step other than the lock (another session holding the lock is not a problem); or its artifact says `running` but its supervisor (`warden run`) is gone, judged by pid, start time, pid namespace and boot id, never by the pid alone: no post-session backup will come, and its engine may still run unsupervised with the lock | `session_ended_badly`, `supervisor_died`, `sessions_unreadable` |
//! | `15` | free space in the database's or the backup directory below the floor: room for one more backup (database + `-wal` + `-journal`, +10 %, +1 MiB), or `--min-free-bytes` when larger | `disk_headroom` |
//! | `10` | no good backup, the newest good one is older than `--max-backup-age` (default 26 h), or the backups could not be listed | `no_good_backup`, `backup_stale`, `backups_unreadable` |
//! | `16` | the last restore drill (`<db>.warden/drills/latest.json`, written by `warden drill`) failed or its record is unreadable | `drill_failed` |
//! | `18` | offsite copies are configured (`[offsite]`) and a good restore point has been on this host only for longer than `max_lag` (default 24 h), as the last push record (`<db>.warden/offsite/latest.json`) says | `offsite_lag` |
//!
//! A successful in-place restore (`<db>.warden/restores/latest.json`, written by `warden
//! restore`) ends the problems of sessions and gates that started before it: they describe
//! the database it replaced, and a restore is what they recommend. They stay visible as
//! history (`last_session`, `last_gate`); the restore is in `last_restore`.
//!
//! Severity, most severe first, is the order of the table: **11 > 13 > 17 > 14 > 12 > 15 >
//! 10 > 16** ([`SEVERITY`]). Damage found comes first; then a writer that died (damage
//! possible, nothing checked since); then a writer outside warden (content no check can
//! attribute); then storage that makes every session unsafe; then a session that
//! ended badly; then what will stop the next backup (disk); then the recovery point (no
//! fresh backup); then proof of restorability (the drill). Root causes rank above the
//! symptoms they produce: a database on a network share (14) refuses every session (12).
//!
//! # Prometheus textfile
//!
//! [`write_prometheus`] writes the node_exporter textfile-collector format atomically
//! ([`crate::util::atomic::write_atomic`]: a temporary file in the same directory whose name does
//! not end in `.prom`, `fsync`, `rename`), ending with a newline, `# HELP` and `# TYPE`
//! before each family's samples. Every sample carries a `db` label, so the files of several
//! databases in one collector directory never collide. All families are gauges:
//!
//! | series | value |
//! |---|---|
//! | `warden_backup_last_success_timestamp_seconds{db,kind}` | creation time of the newest good backup of each kind (`pre`, `post`, `manual`) |
//! | `warden_backup_age_seconds{db}` | age of the newest good backup |
//! | `warden_backups_good{db}` | good backups retained |
//! | `warden_backup_bytes{db}` | size of the newest good backup |
//! | `warden_integrity_ok{db,mode}` | 1 when the most recent gate passed; `mode` is `full` or `quick` |
//! | `warden_last_session_ok{db}` | 1 when the last session completed or is running |
//! | `warden_writer_lock_held{db}` | 1 while a writer holds the lock |
//! | `warden_db_on_network_fs{db}` | 1 when the database is not on storage judged local (network, lock-less or unknown) |
//! | `warden_free_bytes{db,dir}` | free bytes for `dir="database"` and `dir="backups"` |
//! | `warden_db_bytes{db}` | size of the database file |
//! | `warden_sqlite_version_ok{db,version}` | 1 when the linked SQLite is at least 3.51.3 |
//! | `warden_drill_ok{db}`, `warden_drill_last_timestamp_seconds{db}` | the last restore drill, when one is recorded |
//! | `warden_offsite_lag_seconds{db}`, `warden_offsite_push_ok{db}` | offsite copies, when configured |
//! | `warden_healthy{db}` | 1 when the exit code is 0 |
//! | `warden_status_code{db}` | the exit code |
//! | `warden_status_timestamp_seconds{db}` | when the status was collected |
//!
//! Series without a value (no good backup yet, no gate yet) are left out rather than
//! reported as 0; alert on them with `absent()` or on `warden_healthy`.
//!
//! [`BackupStore`]: crate::copies::backup::BackupStore

mod audit;
mod gather;
mod lookup;
mod model;
mod offsite;
pub mod prometheus;
mod verify;

pub use audit::{AuditFilter, AuditLine, AuditReader, parse_since, tail_audit};
pub use gather::collect;
pub use lookup::{LookupError, find_backup, find_session, list_sessions};
pub use model::{
    BackupInfo, BackupsInfo, DEFAULT_MAX_BACKUP_AGE, DatabaseInfo, DirSpace, DiskInfo, DrillInfo, GateInfo, LockInfo,
    OffsiteInfo, Problem, ProblemKind, RestoreInfo, SCHEMA, SEVERITY, SQLITE_FLOOR, SessionInfo, SqliteInfo,
    StatusOptions, StatusReport, StorageInfo, human_age, severity_rank,
};
pub use prometheus::{escape_label_value, prometheus_text, write_prometheus};
pub use verify::{
    BackupSelection, BackupVerification, VerifyError, VerifyOptions, VerifyOutcome, VerifyReport, verify_backups,
};

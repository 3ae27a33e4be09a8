//! `warden doctor`: is this host ready to run a guarded engine on this database path?
//!
//! Owns: ten host-readiness checks, each with a stable id, a verdict (pass / warn / fail),
//! the measured facts and one actionable fix line, the overall verdict (the worst one) and
//! its exit code. [`run`] never fails: a check that cannot run is itself a warn or a fail
//! that says why.
//!
//! | id | what is measured | fail | warn |
//! |---|---|---|---|
//! | `storage` | storage verdict of the database's and the backup directory ([`crate::storage::classify`]) | network, lock-less or unknown storage | — |
//! | `free_space` | free bytes where the database and the backups live vs. database + `-wal` + `-journal` | less than one backup needs ([`BackupStore::space_needed`]) | less than `min_free_factor` (3) × that size |
//! | `fsync` | `fsync` of a 4 KiB write in the database's directory, `fsync_samples` (5) times | `fsync` or the temporary file fails | median above [`FSYNC_WARN_MS`] (50 ms); the directory cannot be written by this user |
//! | `device` | the block device under the database (`/sys/dev/block/MAJ:MIN`, partition → disk, `queue/rotational`) | — | rotational, or unknown (tmpfs, overlay, network: no block device) |
//! | `permissions` | owner and mode of the directory, the database, its sidecars and the backup directory | anything world-writable | others can read or list; owner other than the user running doctor (as root: only named) |
//! | `sqlite` | linked SQLite vs. the floor 3.51.3 (WAL-reset bug) | older than the floor | — |
//! | `extension` | the loadable extension's mode on the system's `libsqlite3.so.0` (what Debian's python3 and sqlite3 shell run on): full, rollback-journal-only (no WAL-reset fix), refused (before 3.40); where it is installed | — | installed, and the system SQLite is too old for it to load |
//! | `journal` | header bytes 18/19 (1 rollback, 2 WAL), sidecars, the writer lock's record | not a SQLite file | missing or empty database; WAL on non-local storage |
//! | `clock` | system time vs. the newest backup, artifact, lock record and file in `<db>.warden/`; `timedatectl` | artifacts dated more than 5 minutes in the future; a clock before 2024 | NTP not synchronized |
//! | `foreign_openers` | processes other than the engine holding the database, `-wal`, `-shm` or `-journal` open or mapped (`/proc/*/fd`, `/proc/*/maps`) | someone has it open while no engine holds the writer lock | someone has it open beside the engine |
//!
//! Exit codes ([`Verdict::exit_code`]): `0` every check passed, `10` warnings only, `11` at
//! least one failure. (These are doctor's own; `warden status` uses 10 and 11 for other
//! meanings.)
//!
//! Does not own: the storage verdict ([`crate::storage`]), the writer lock ([`crate::guard::lock`]),
//! how much room a backup needs ([`BackupStore::space_needed`]), what the engine factory
//! sets ([`crate::guard::connect`]), or rendering (the CLI). Doctor changes nothing: the only
//! file it writes is the temporary `fsync` probe (`.<db>-doctor-fsync.warden-tmp.<pid>.<n>`
//! beside the database), removed before the check returns. It never opens the database
//! through SQLite and never takes the writer lock.
//!
//! What cannot be known from outside is said, not guessed: `synchronous` is a setting of
//! each connection (doctor reports what warden's factory sets), the header does not tell
//! `DELETE` from `TRUNCATE`/`PERSIST`, a virtual disk reports whatever its hypervisor
//! says about rotation, and processes doctor may not inspect are counted, not cleared.
//!
//! [`BackupStore::space_needed`]: crate::copies::backup::BackupStore::space_needed

use std::path::Path;

use crate::session::SessionConfig;

mod clock;
mod disk;
mod facts;
mod model;
mod openers;
mod permissions;
mod space;
mod sqlite;

use clock::clock;
use disk::{device, fsync};
use model::Ctx;
pub use model::{
    CHECK_IDS, CLOCK_TOLERANCE, Check, DoctorOptions, DoctorReport, EXIT_FAIL, EXIT_PASS, EXIT_WARN, FSYNC_WARN_MS,
    SCHEMA, Verdict,
};
pub use openers::Opener;
use openers::foreign_openers;
use permissions::permissions;
use space::{free_space, storage};
use sqlite::{extension, journal, sqlite};

/// Runs every check on `opts.db` and reports. Never fails; never changes anything but its
/// own temporary `fsync` file.
pub fn run(opts: &DoctorOptions) -> DoctorReport {
    let db = crate::storage::resolve(&opts.db).unwrap_or_else(|_| opts.db.clone());
    let dir = crate::util::atomic::parent_of(&db).to_owned();
    let backup_dir = opts.backup_dir.clone().unwrap_or_else(|| SessionConfig::state_dir(&db).join("backups"));
    let backup_dir = crate::storage::resolve(&backup_dir).unwrap_or(backup_dir);
    let session_dir = opts.session_dir.clone().unwrap_or_else(|| SessionConfig::state_dir(&db).join("sessions"));
    let classify = |p: &Path| crate::storage::classify(opts.probe.as_ref(), p).map_err(|e| e.to_string());
    let cx = Ctx {
        opts,
        db_verdict: classify(&db),
        backup_verdict: classify(&backup_dir),
        lock: crate::guard::lock::inspect(&db).map_err(|e| e.to_string()),
        db,
        dir,
        backup_dir,
        session_dir,
    };
    let checks = vec![
        storage(&cx),
        free_space(&cx),
        fsync(&cx),
        device(&cx),
        permissions(&cx),
        sqlite(),
        extension(),
        journal(&cx),
        clock(&cx),
        foreign_openers(&cx),
    ];
    let verdict = checks.iter().map(|c| c.verdict).max().unwrap_or(Verdict::Pass);
    DoctorReport {
        schema: SCHEMA,
        summary: summary(&checks),
        database_bytes: std::fs::metadata(&cx.db).ok().filter(|m| m.is_file()).map(|m| m.len()),
        db: cx.db,
        backup_dir: cx.backup_dir,
        verdict,
        exit_code: verdict.exit_code(),
        checks,
        checked_at: crate::util::identity::now_rfc3339(),
        warden_version: env!("CARGO_PKG_VERSION").to_owned(),
    }
}

fn summary(checks: &[Check]) -> String {
    let ids = |v: Verdict| checks.iter().filter(|c| c.verdict == v).map(|c| c.id.as_str()).collect::<Vec<_>>();
    let part = |v: Verdict| {
        let ids = ids(v);
        if ids.is_empty() || v == Verdict::Pass {
            format!("{} {v}", ids.len())
        } else {
            format!("{} {v} ({})", ids.len(), ids.join(", "))
        }
    };
    format!("{}, {}, {}", part(Verdict::Pass), part(Verdict::Warn), part(Verdict::Fail))
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::model::mk;
    use super::*;
    use crate::guard::sqlite_host::version_text;

    #[test]
    fn versions_and_summary() {
        assert_eq!(version_text(3_051_003), "3.51.3");
        let c = |id: &str, v| mk(id, "t", v, String::new(), "x".into(), Value::Null);
        let checks = [c("a", Verdict::Pass), c("b", Verdict::Warn), c("d", Verdict::Warn)];
        assert_eq!(summary(&checks), "1 pass, 2 warn (b, d), 0 fail");
        assert!(checks[0].fix.is_empty(), "no fix on pass");
    }
}

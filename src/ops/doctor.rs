//! `warden doctor`: is this host ready to run a guarded engine on this database path?
//!
//! Owns: nine host-readiness checks, each with a stable id, a verdict (pass / warn / fail),
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

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::copies::backup::{BackupStore, sidecar};
use crate::guard::lock::{LockState, LockStatus};
use crate::ops::config::Settings;
use crate::session::SessionConfig;
use crate::storage::{FsProbe, FsVerdict, RealProbe};

/// Schema version of [`DoctorReport`]; readers ignore unknown fields.
pub const SCHEMA: u32 = 1;

/// Exit code when every check passed.
pub const EXIT_PASS: u8 = 0;
/// Exit code when the worst verdict is a warning.
pub const EXIT_WARN: u8 = 10;
/// Exit code when at least one check failed.
pub const EXIT_FAIL: u8 = 11;

/// Median `fsync` latency above which the `fsync` check warns (milliseconds).
pub const FSYNC_WARN_MS: f64 = 50.0;

/// How far in the future a backup or artifact may be dated before the clock check fails.
pub const CLOCK_TOLERANCE: Duration = Duration::from_secs(5 * 60);

/// The ids of the checks, in the order they run and are reported.
pub const CHECK_IDS: [&str; 9] =
    ["storage", "free_space", "fsync", "device", "permissions", "sqlite", "journal", "clock", "foreign_openers"];

/// A clock before this (2024-01-01T00:00:00Z) is certainly wrong.
const PLAUSIBLE_EPOCH_SECS: i64 = 1_704_067_200;

/// One check's judgement. Ordered: `Pass < Warn < Fail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Ready.
    Pass,
    /// Works, but an operator should look.
    Warn,
    /// Not ready: fix before running the engine here.
    Fail,
}

impl Verdict {
    /// `pass`, `warn` or `fail`.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Warn => "warn",
            Verdict::Fail => "fail",
        }
    }

    /// The process exit code for this overall verdict: [`EXIT_PASS`], [`EXIT_WARN`] or
    /// [`EXIT_FAIL`].
    pub fn exit_code(self) -> u8 {
        match self {
            Verdict::Pass => EXIT_PASS,
            Verdict::Warn => EXIT_WARN,
            Verdict::Fail => EXIT_FAIL,
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    /// Stable snake_case id (one of [`CHECK_IDS`]).
    pub id: String,
    /// What was checked, for people.
    pub title: String,
    /// The judgement.
    pub verdict: Verdict,
    /// The measured facts behind the verdict.
    pub detail: String,
    /// One actionable line; empty on pass.
    pub fix: String,
    /// The same facts, machine-readable (an object; fields vary by check).
    pub data: Value,
}

/// Everything `warden doctor` reports (schema [`SCHEMA`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DoctorReport {
    /// [`SCHEMA`].
    pub schema: u32,
    /// The database examined (absolute).
    pub db: PathBuf,
    /// The backup directory examined.
    pub backup_dir: PathBuf,
    /// The worst verdict of all checks.
    pub verdict: Verdict,
    /// [`Verdict::exit_code`] of [`DoctorReport::verdict`].
    pub exit_code: u8,
    /// `7 pass, 2 warn (device, fsync), 0 fail`.
    pub summary: String,
    /// Size of the database file, when it exists.
    pub database_bytes: Option<u64>,
    /// Every check, in [`CHECK_IDS`] order.
    pub checks: Vec<Check>,
    /// When the checks ran (RFC 3339 UTC).
    pub checked_at: String,
    /// The warden that ran them.
    pub warden_version: String,
}

impl DoctorReport {
    /// The check with this id.
    pub fn check(&self, id: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.id == id)
    }
}

/// What to examine and how. [`DoctorOptions::new`] gives the defaults.
#[derive(Debug, Clone)]
pub struct DoctorOptions {
    /// The database (need not exist yet: doctor then judges where it would be created).
    pub db: PathBuf,
    /// Backups (default `<db>.warden/backups`).
    pub backup_dir: Option<PathBuf>,
    /// Health artifacts, for the clock check (default `<db>.warden/sessions`).
    pub session_dir: Option<PathBuf>,
    /// Where mount facts come from: [`RealProbe`] by default; tests pass a
    /// [`crate::storage::SimulatedProbe`]. The `storage` check and the device lookup use it.
    pub probe: Arc<dyn FsProbe>,
    /// `free_space` warns below this many times the database (+ `-wal` + `-journal`);
    /// default 3.
    pub min_free_factor: f64,
    /// Number of timed `fsync`s (default 5; at least 1 is taken).
    pub fsync_samples: u32,
    /// Median `fsync` above this warns (default [`FSYNC_WARN_MS`]).
    pub fsync_warn_ms: f64,
    /// Artifacts dated further in the future fail the clock check (default
    /// [`CLOCK_TOLERANCE`]).
    pub clock_tolerance: Duration,
    /// Ask `timedatectl show -p NTPSynchronized` (default `true`; it is skipped when absent).
    pub ntp: bool,
}

impl DoctorOptions {
    /// The defaults for `db`.
    pub fn new(db: impl Into<PathBuf>) -> Self {
        DoctorOptions {
            db: db.into(),
            backup_dir: None,
            session_dir: None,
            probe: Arc::new(RealProbe::new()),
            min_free_factor: 3.0,
            fsync_samples: 5,
            fsync_warn_ms: FSYNC_WARN_MS,
            clock_tolerance: CLOCK_TOLERANCE,
            ntp: true,
        }
    }

    /// The defaults for the database, backup and artifact directories of `warden.toml` and
    /// its flags.
    pub fn from_settings(s: &Settings) -> Self {
        DoctorOptions {
            backup_dir: Some(s.backup_dir.clone()),
            session_dir: Some(s.session_dir.clone()),
            ..Self::new(s.database.clone())
        }
    }
}

/// Everything the checks share, gathered once.
struct Ctx<'a> {
    opts: &'a DoctorOptions,
    db: PathBuf,
    dir: PathBuf,
    backup_dir: PathBuf,
    session_dir: PathBuf,
    db_verdict: Result<FsVerdict, String>,
    backup_verdict: Result<FsVerdict, String>,
    lock: Result<LockStatus, String>,
}

/// Runs every check on `opts.db` and reports. Never fails; never changes anything but its
/// own temporary `fsync` file.
pub fn run(opts: &DoctorOptions) -> DoctorReport {
    let db = crate::storage::probe::absolute(&opts.db).unwrap_or_else(|_| opts.db.clone());
    let dir = crate::util::atomic::parent_of(&db).to_owned();
    let backup_dir = opts.backup_dir.clone().unwrap_or_else(|| SessionConfig::state_dir(&db).join("backups"));
    let backup_dir = crate::storage::probe::absolute(&backup_dir).unwrap_or(backup_dir);
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

fn mk(id: &str, title: &str, verdict: Verdict, detail: String, fix: String, data: Value) -> Check {
    Check {
        id: id.to_owned(),
        title: title.to_owned(),
        verdict,
        detail,
        fix: if verdict == Verdict::Pass { String::new() } else { fix },
        data,
    }
}

/// `1536` → `1.5 KiB` (the CLI's format).
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[u]) }
}

fn size_of(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// `p`, or its nearest existing ancestor.
fn nearest_existing(p: &Path) -> PathBuf {
    let mut at = p.to_owned();
    while !at.exists() {
        match at.parent() {
            Some(q) if !q.as_os_str().is_empty() => at = q.to_owned(),
            _ => return PathBuf::from("/"),
        }
    }
    at
}

fn user_name(uid: u32) -> String {
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(u)) => u.name,
        _ => format!("uid {uid}"),
    }
}

fn group_name(gid: u32) -> String {
    match nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid)) {
        Ok(Some(g)) => g.name,
        _ => format!("gid {gid}"),
    }
}

// ---------------------------------------------------------------------------------------------
// storage
// ---------------------------------------------------------------------------------------------

fn storage(cx: &Ctx<'_>) -> Check {
    let mut parts = Vec::new();
    let mut bad = Vec::new();
    for (what, path, v) in [("database", &cx.db, &cx.db_verdict), ("backups", &cx.backup_dir, &cx.backup_verdict)] {
        match v {
            Ok(v) => {
                parts.push(format!("{what} `{}`: {} on {}: {}", path.display(), v.kind, v.describe(), v.reason));
                if !v.kind.is_local() {
                    bad.push(what);
                }
            }
            Err(e) => {
                parts.push(format!("{what} `{}`: cannot be examined: {e}", path.display()));
                bad.push(what);
            }
        }
    }
    let verdict = if bad.is_empty() { Verdict::Pass } else { Verdict::Fail };
    let fix = format!(
        "move the {} to a local disk (ext4/xfs on this host's own volume; `warden migrate export`/`import` does it verified); warden refuses the engine on network or unknown storage",
        bad.join(" and ")
    );
    let data = json!({
        "database": cx.db_verdict.as_ref().ok(),
        "backups": cx.backup_verdict.as_ref().ok(),
        "errors": [cx.db_verdict.as_ref().err(), cx.backup_verdict.as_ref().err()],
    });
    mk("storage", "local storage for the database and its backups", verdict, parts.join("; "), fix, data)
}

// ---------------------------------------------------------------------------------------------
// free_space
// ---------------------------------------------------------------------------------------------

fn free_space(cx: &Ctx<'_>) -> Check {
    let db_bytes = size_of(&cx.db);
    let wal = size_of(&sidecar(&cx.db, "-wal"));
    let jrnl = size_of(&sidecar(&cx.db, "-journal"));
    let total = db_bytes + wal + jrnl;
    let needed = BackupStore::space_needed(&cx.db);
    let factor = if cx.opts.min_free_factor.is_finite() && cx.opts.min_free_factor > 0.0 {
        cx.opts.min_free_factor
    } else {
        3.0
    };
    let comfortable = needed.max((total as f64 * factor) as u64);
    let mut verdict = Verdict::Pass;
    let mut parts = vec![format!(
        "database {} (-wal {}, -journal {}); one backup needs {} (+10 % +1 MiB); warn below {factor}× the database ({})",
        bytes(db_bytes),
        bytes(wal),
        bytes(jrnl),
        bytes(needed),
        bytes(comfortable)
    )];
    let mut dirs = Vec::new();
    let mut short = None;
    for (what, dir) in [("database", &cx.dir), ("backups", &cx.backup_dir)] {
        let at = nearest_existing(dir);
        let shown = if &at == dir {
            format!("`{}`", at.display())
        } else {
            format!("`{}` (nearest existing: `{}`)", dir.display(), at.display())
        };
        match crate::copies::copy::free_bytes(&at) {
            Ok(free) => {
                let v = if free < needed {
                    Verdict::Fail
                } else if free < comfortable {
                    Verdict::Warn
                } else {
                    Verdict::Pass
                };
                if v > verdict {
                    verdict = v;
                }
                if v == Verdict::Fail {
                    short = Some((at.clone(), needed - free));
                }
                parts.push(format!("{what} dir {shown}: {} free", bytes(free)));
                dirs.push(json!({"dir": what, "path": at, "free_bytes": free, "verdict": v}));
            }
            Err(e) => {
                verdict = verdict.max(Verdict::Warn);
                parts.push(format!("{what} dir {shown}: free space cannot be measured: {e}"));
                dirs.push(json!({"dir": what, "path": at, "free_bytes": null, "error": e.to_string()}));
            }
        }
    }
    let fix = match (verdict, short) {
        (Verdict::Fail, Some((at, missing))) => format!(
            "free at least {} in `{}` (or point --backup-dir at a larger local disk): the next backup would fail for lack of space",
            bytes(missing),
            at.display()
        ),
        _ => format!(
            "keep at least {factor}× the database free where it and its backups live (retention keeps several copies, the database grows): free space or lower retention"
        ),
    };
    let data = json!({
        "database_bytes": db_bytes, "wal_bytes": wal, "journal_bytes": jrnl,
        "backup_needs_bytes": needed, "warn_below_bytes": comfortable, "dirs": dirs,
    });
    mk("free_space", "free space for the database and its backups", verdict, parts.join("; "), fix, data)
}

// ---------------------------------------------------------------------------------------------
// fsync
// ---------------------------------------------------------------------------------------------

/// The median of `v` (sorted in place); 0 when empty.
fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

fn fsync(cx: &Ctx<'_>) -> Check {
    const ID: &str = "fsync";
    const TITLE: &str = "fsync works, and how long it takes";
    let dir = &cx.dir;
    if !dir.is_dir() {
        return mk(
            ID,
            TITLE,
            Verdict::Warn,
            format!("the database directory `{}` does not exist yet: fsync not measured", dir.display()),
            format!("create it (e.g. `install -d -m 0750 -o engine -g engine {}`) and run doctor again", dir.display()),
            json!({"dir": dir}),
        );
    }
    let name = cx.db.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "db".into());
    let path = crate::util::atomic::temp_path_for(&dir.join(format!("{name}-doctor-fsync")));
    let file = match OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path) {
        Ok(f) => f,
        Err(e) => {
            let denied = e.kind() == io::ErrorKind::PermissionDenied;
            let who = user_name(nix::unistd::geteuid().as_raw());
            return mk(
                ID,
                TITLE,
                if denied { Verdict::Warn } else { Verdict::Fail },
                format!("cannot create a file in `{}` as {who}: {e}", dir.display()),
                if denied {
                    "run doctor as the engine's user (e.g. `sudo -u engine warden doctor …`) so it can measure fsync where the engine writes".into()
                } else {
                    format!(
                        "the engine could not create its -journal/-wal here either: fix `{}` (read-only? full?)",
                        dir.display()
                    )
                },
                json!({"dir": dir, "error": e.to_string()}),
            );
        }
    };
    let samples = cx.opts.fsync_samples.max(1);
    let block = vec![0x5a_u8; 4096];
    let mut times = Vec::with_capacity(samples as usize);
    let mut failure = None;
    for i in 0..samples {
        if let Err(e) = file.write_all_at(&block, 0) {
            failure = Some(format!("write {} failed: {e}", i + 1));
            break;
        }
        let t = Instant::now();
        match file.sync_all() {
            Ok(()) => times.push(t.elapsed().as_secs_f64() * 1000.0),
            Err(e) => {
                failure = Some(format!("fsync {} failed: {e}", i + 1));
                break;
            }
        }
    }
    drop(file);
    let cleanup = std::fs::remove_file(&path).and_then(|()| crate::util::atomic::sync_dir(dir));
    let cleaned = match &cleanup {
        Ok(()) => "temporary file removed".to_owned(),
        Err(e) => format!("could not remove the temporary file `{}`: {e}", path.display()),
    };
    let fstype = cx.db_verdict.as_ref().map(|v| v.fstype.clone()).unwrap_or_else(|_| "unknown".into());
    if let Some(why) = failure {
        return mk(
            ID,
            TITLE,
            Verdict::Fail,
            format!("in `{}` ({fstype}): {why}; {cleaned}", dir.display()),
            "committed transactions are not durable here: put the database on a local disk whose fsync works".into(),
            json!({"dir": dir, "fstype": fstype, "error": why}),
        );
    }
    let max = times.iter().copied().fold(0.0, f64::max);
    let med = median(&mut times);
    let verdict = if med > cx.opts.fsync_warn_ms || cleanup.is_err() { Verdict::Warn } else { Verdict::Pass };
    let mut detail = format!(
        "{samples} fsyncs of a 4 KiB write in `{}` ({fstype}): median {med:.2} ms, max {max:.2} ms (warn above a {:.0} ms median); {cleaned}",
        dir.display(),
        cx.opts.fsync_warn_ms
    );
    if let Ok(v) = &cx.db_verdict
        && !v.kind.is_local()
    {
        detail.push_str(&format!(
            "; on {} storage a successful fsync proves little: the server decides what is durable (see the storage check)",
            v.kind
        ));
    }
    let fix = if med > cx.opts.fsync_warn_ms {
        format!(
            "every commit waits for fsync (≈{med:.0} ms here): use a local SSD/NVMe volume, or look for I/O contention (`iostat -x 1`)"
        )
    } else {
        format!("remove `{}` by hand", path.display())
    };
    let data = json!({"dir": dir, "fstype": fstype, "samples": samples, "median_ms": med, "max_ms": max,
        "warn_above_ms": cx.opts.fsync_warn_ms});
    mk(ID, TITLE, verdict, detail, fix, data)
}

// ---------------------------------------------------------------------------------------------
// device
// ---------------------------------------------------------------------------------------------

/// What sysfs says about one block device.
struct BlockDev {
    name: String,
    sys_path: PathBuf,
    partition_of: Option<String>,
    rotational: Option<bool>,
    virtio: bool,
    backing_file: Option<String>,
}

fn read_trim(p: &Path) -> Option<String> {
    std::fs::read_to_string(p).ok().map(|s| s.trim().to_owned())
}

fn sysfs_block(major: u32, minor: u32) -> Option<BlockDev> {
    let link = PathBuf::from(format!("/sys/dev/block/{major}:{minor}"));
    let real = std::fs::canonicalize(&link).ok()?;
    let own_name = real.file_name()?.to_string_lossy().into_owned();
    let (disk, partition_of) = if real.join("partition").exists() {
        let parent = real.parent()?.to_owned();
        let pname = parent.file_name()?.to_string_lossy().into_owned();
        (parent, Some(pname))
    } else {
        (real.clone(), None)
    };
    let rotational = read_trim(&disk.join("queue/rotational")).map(|s| s == "1");
    let name = partition_of.as_ref().map(|d| format!("{own_name} (partition of {d})")).unwrap_or(own_name);
    Some(BlockDev {
        name,
        virtio: real.components().any(|c| c.as_os_str().to_string_lossy().starts_with("virtio")),
        backing_file: read_trim(&disk.join("loop/backing_file")),
        sys_path: real,
        partition_of,
        rotational,
    })
}

fn device(cx: &Ctx<'_>) -> Check {
    const ID: &str = "device";
    const TITLE: &str = "SSD or rotational disk";
    let facts = cx.opts.probe.facts_nearest(&cx.dir);
    let table = cx.opts.probe.mounts();
    let (facts, table) = match (facts, table) {
        (Ok(f), Ok(t)) => (f, t),
        (Err(e), _) | (_, Err(e)) => {
            return mk(
                ID,
                TITLE,
                Verdict::Warn,
                format!("unknown: the database directory cannot be examined: {e}"),
                "run doctor where it can stat the database directory".into(),
                json!({"error": e.to_string()}),
            );
        }
    };
    let entry = table.find(facts.dev, &facts.canonical);
    let fstype = entry.map(|e| e.fstype.clone()).unwrap_or_else(|| "unknown".into());
    let source = entry.map(|e| e.source.clone()).unwrap_or_default();
    // The block device: st_dev itself, or (btrfs and other anonymous devices) the mount
    // source when it is a device node.
    let mut numbers = facts.dev.filter(|(maj, _)| *maj != 0);
    let mut via_source = false;
    if numbers.is_none()
        && source.starts_with("/dev/")
        && let Ok(md) = std::fs::metadata(&source)
        && md.rdev() != 0
    {
        numbers = Some((libc::major(md.rdev()), libc::minor(md.rdev())));
        via_source = true;
    }
    let dev_text = facts.dev.map(|(a, b)| format!("{a}:{b}")).unwrap_or_else(|| "?".into());
    let Some((maj, min)) = numbers else {
        let kind = match cx.db_verdict.as_ref().map(|v| v.kind) {
            Ok(k) if !k.is_local() => format!("{k} storage"),
            _ => "a virtual filesystem".into(),
        };
        return mk(
            ID,
            TITLE,
            Verdict::Warn,
            format!(
                "unknown: `{}` is on {fstype} (device {dev_text}, source {}), {kind} without a block device of its own, so there is no queue/rotational to read",
                cx.dir.display(),
                if source.is_empty() { "none" } else { &source }
            ),
            "on the VPS put the database on the disk itself (ext4/xfs on the block device), then run doctor again to see SSD or rotational".into(),
            json!({"fstype": fstype, "dev": dev_text, "source": source, "rotational": null}),
        );
    };
    let Some(b) = sysfs_block(maj, min) else {
        return mk(
            ID,
            TITLE,
            Verdict::Warn,
            format!(
                "unknown: `{}` is on {fstype} (device {maj}:{min}{}), but /sys/dev/block/{maj}:{min} does not exist",
                cx.dir.display(),
                if via_source { format!(" via {source}") } else { String::new() }
            ),
            "check the disk by hand: `lsblk -o NAME,ROTA,TYPE,MOUNTPOINT`".into(),
            json!({"fstype": fstype, "dev": format!("{maj}:{min}"), "rotational": null}),
        );
    };
    let mut extra = Vec::new();
    if b.virtio {
        extra.push(
            "a virtio disk: the hypervisor decides what it reports, and rotational=1 often only means the host did not say"
                .to_owned(),
        );
    }
    if let Some(f) = &b.backing_file {
        extra.push(format!("a loop device backed by `{f}`"));
    }
    let extra = if extra.is_empty() { String::new() } else { format!("; {}", extra.join("; ")) };
    let (verdict, what, fix) = match b.rotational {
        Some(false) => (Verdict::Pass, "SSD (queue/rotational = 0)".to_owned(), String::new()),
        Some(true) => (
            Verdict::Warn,
            "rotational (queue/rotational = 1)".to_owned(),
            "expect slower fsync (see the fsync check): prefer an SSD/NVMe volume for the database, or confirm with your provider that this volume is SSD-backed".to_owned(),
        ),
        None => (
            Verdict::Warn,
            "unknown (no queue/rotational)".to_owned(),
            "check the disk by hand: `lsblk -o NAME,ROTA,TYPE,MOUNTPOINT`".to_owned(),
        ),
    };
    let detail = format!(
        "`{}` is on {fstype}, device {maj}:{min} = {} ({}): {what}{extra}",
        cx.dir.display(),
        b.name,
        b.sys_path.display()
    );
    let data = json!({"fstype": fstype, "dev": format!("{maj}:{min}"), "device": b.name, "disk": b.partition_of,
        "sysfs": b.sys_path, "rotational": b.rotational, "virtio": b.virtio, "loop_backing_file": b.backing_file});
    mk(ID, TITLE, verdict, detail, fix, data)
}

// ---------------------------------------------------------------------------------------------
// permissions
// ---------------------------------------------------------------------------------------------

fn raise(v: Verdict, verdict: &mut Verdict) {
    *verdict = (*verdict).max(v);
}

fn mode_owner(md: &std::fs::Metadata) -> String {
    format!("{:04o} {}:{}", md.mode() & 0o7777, user_name(md.uid()), group_name(md.gid()))
}

fn permissions(cx: &Ctx<'_>) -> Check {
    const ID: &str = "permissions";
    const TITLE: &str = "ownership and mode of the database directory";
    let me = nix::unistd::geteuid().as_raw();
    let me_name = user_name(me);
    let mut verdict = Verdict::Pass;
    let mut facts = Vec::new();
    let mut problems = Vec::new();
    let mut fixes: Vec<String> = Vec::new();

    let dir_md = match std::fs::metadata(&cx.dir) {
        Ok(m) => m,
        Err(e) => {
            return mk(
                ID,
                TITLE,
                Verdict::Warn,
                format!("the database directory `{}` cannot be examined: {e}", cx.dir.display()),
                format!(
                    "create it for the engine's user: `install -d -m 0750 -o engine -g engine {}`",
                    cx.dir.display()
                ),
                json!({"dir": cx.dir, "error": e.to_string()}),
            );
        }
    };
    let dmode = dir_md.mode();
    facts.push(format!("directory `{}` {}", cx.dir.display(), mode_owner(&dir_md)));
    if dmode & 0o002 != 0 {
        raise(Verdict::Fail, &mut verdict);
        let sticky = if dmode & 0o1000 != 0 { " (sticky, but anyone can still plant a -journal or -wal)" } else { "" };
        problems.push(format!("the directory is world-writable{sticky}"));
        fixes.push(format!("chmod 0750 {}", cx.dir.display()));
    } else if dmode & 0o005 != 0 {
        raise(Verdict::Warn, &mut verdict);
        problems.push("others can list or enter the directory".into());
        fixes.push(format!("chmod 0750 {}", cx.dir.display()));
    }

    let db_md = std::fs::metadata(&cx.db).ok();
    let mut owners = BTreeSet::new();
    owners.insert(dir_md.uid());
    match &db_md {
        Some(m) => {
            facts.push(format!("database {}", mode_owner(m)));
            owners.insert(m.uid());
            let mode = m.mode();
            if mode & 0o002 != 0 {
                raise(Verdict::Fail, &mut verdict);
                problems.push("the database is world-writable".into());
                fixes.push(format!("chmod 0600 {}", cx.db.display()));
            } else if mode & 0o004 != 0 && dmode & 0o001 != 0 {
                raise(Verdict::Warn, &mut verdict);
                problems.push("others can read the database (world-readable, in a directory others can enter)".into());
                fixes.push(format!("chmod 0600 {}", cx.db.display()));
            } else if mode & 0o004 != 0 {
                facts.push("(world-readable, but the directory keeps others out)".into());
            }
            if m.uid() != dir_md.uid() {
                raise(Verdict::Warn, &mut verdict);
                problems.push(format!(
                    "the database is owned by {} but its directory by {}: the engine must be able to create -wal/-journal there",
                    user_name(m.uid()),
                    user_name(dir_md.uid())
                ));
            }
        }
        None => facts.push("database: does not exist yet".into()),
    }
    for suffix in ["-wal", "-shm", "-journal"] {
        let p = sidecar(&cx.db, suffix);
        if let Ok(m) = std::fs::metadata(&p)
            && m.mode() & 0o002 != 0
        {
            raise(Verdict::Fail, &mut verdict);
            problems.push(format!("{suffix} is world-writable"));
            fixes.push(format!("chmod 0600 {}", p.display()));
        }
    }
    match std::fs::metadata(&cx.backup_dir) {
        Ok(m) => {
            facts.push(format!("backups `{}` {}", cx.backup_dir.display(), mode_owner(&m)));
            if m.mode() & 0o002 != 0 {
                raise(Verdict::Fail, &mut verdict);
                problems.push("the backup directory is world-writable".into());
                fixes.push(format!("chmod 0700 {}", cx.backup_dir.display()));
            } else if m.mode() & 0o005 != 0 {
                raise(Verdict::Warn, &mut verdict);
                problems.push("others can read the backup directory".into());
                fixes.push(format!("chmod 0700 {}", cx.backup_dir.display()));
            }
        }
        Err(_) => {
            facts.push(format!("backups `{}`: not created yet (warden creates it 0700)", cx.backup_dir.display()))
        }
    }
    let owner_uid = db_md.as_ref().map(|m| m.uid()).unwrap_or(dir_md.uid());
    let owner = user_name(owner_uid);
    if me == 0 {
        let advice = if owner_uid == 0 {
            "the engine would have to run as root, and a dedicated user (e.g. `engine`) owning the directory is safer"
                .to_owned()
        } else {
            format!("the engine's service must run as {owner} (User=)")
        };
        facts.push(format!("doctor runs as root; the database belongs to {owner}: {advice}"));
    } else if owners.iter().any(|&u| u != me) {
        raise(Verdict::Warn, &mut verdict);
        let others: Vec<String> = owners.iter().filter(|&&u| u != me).map(|&u| user_name(u)).collect();
        problems.push(format!("owned by {} while doctor runs as {me_name}", others.join(", ")));
        fixes.push(format!("run doctor as the engine's user (`sudo -u {owner} warden doctor …`)"));
    } else {
        facts.push(format!("doctor runs as the owner ({me_name})"));
    }
    if owners.len() > 1 {
        fixes.push(format!(
            "chown {owner}:{} {} {}",
            group_name(db_md.as_ref().map(|m| m.gid()).unwrap_or(dir_md.gid())),
            cx.dir.display(),
            cx.db.display()
        ));
    }
    let detail = problems.iter().chain(facts.iter()).cloned().collect::<Vec<_>>().join("; ");
    fixes.dedup();
    let data = json!({
        "dir": {"path": cx.dir, "mode": format!("{:04o}", dmode & 0o7777), "uid": dir_md.uid(), "gid": dir_md.gid()},
        "database": db_md.as_ref().map(|m| json!({"mode": format!("{:04o}", m.mode() & 0o7777), "uid": m.uid(), "gid": m.gid()})),
        "doctor_uid": me,
        "problems": problems,
    });
    mk(ID, TITLE, verdict, detail, fixes.join("; "), data)
}

// ---------------------------------------------------------------------------------------------
// sqlite
// ---------------------------------------------------------------------------------------------

fn version_text(n: i32) -> String {
    format!("{}.{}.{}", n / 1_000_000, (n / 1000) % 1000, n % 1000)
}

fn sqlite() -> Check {
    let n = crate::guard::vfs::sqlite_version_number();
    let floor = crate::guard::vfs::SQLITE_FLOOR;
    let linked = rusqlite::version();
    let build = if cfg!(feature = "bundled") {
        "the SQLite compiled into warden (bundled build, tested with 3.54.x)"
    } else {
        "the host's SQLite library (not the bundled build)"
    };
    let ok = n >= floor;
    let detail = format!(
        "linked SQLite {linked}, {build}; floor {} (3.7.0–3.51.2 carry the WAL-reset corruption bug){}; an engine that loads warden as an extension runs on its host's libsqlite3: check that one too",
        version_text(floor),
        if ok { "" } else { ": TOO OLD" }
    );
    mk(
        "sqlite",
        "SQLite library version",
        if ok { Verdict::Pass } else { Verdict::Fail },
        detail,
        format!("rebuild warden with the bundled SQLite (3.54.x) or upgrade libsqlite3 to ≥ {}", version_text(floor)),
        json!({"version": linked, "version_number": n, "floor": version_text(floor), "bundled": cfg!(feature = "bundled")}),
    )
}

// ---------------------------------------------------------------------------------------------
// journal
// ---------------------------------------------------------------------------------------------

fn journal(cx: &Ctx<'_>) -> Check {
    const ID: &str = "journal";
    const TITLE: &str = "journal mode and synchronous";
    let sync_note = match &cx.lock {
        Ok(st) if st.state == LockState::Held => {
            let who = st.record.as_ref().map(|r| r.holder.describe()).unwrap_or_else(|| "an engine".into());
            format!(
                "the writer lock is held by {who}: the engine opened through warden's factory, which sets synchronous=FULL unless the engine chose NORMAL/EXTRA (EngineOptions::synchronous)"
            )
        }
        Ok(st) if st.state == LockState::NeverUsed => {
            "no guarded engine has opened this database yet; warden's factory sets synchronous=FULL by default".into()
        }
        Ok(_) => {
            "no engine runs now; warden's factory sets synchronous=FULL by default (EngineOptions::synchronous)".into()
        }
        Err(e) => format!("the writer lock cannot be read ({e}); warden's factory sets synchronous=FULL by default"),
    };
    let unknowable = "synchronous is per connection and cannot be read from outside the engine";
    let mut header = [0u8; 100];
    let read = File::open(&cx.db).and_then(|mut f| {
        let mut n = 0;
        while n < header.len() {
            match f.read(&mut header[n..])? {
                0 => break,
                k => n += k,
            }
        }
        Ok(n)
    });
    let n = match read {
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return mk(
                ID,
                TITLE,
                Verdict::Warn,
                format!(
                    "the database `{}` does not exist yet; on local storage warden's factory creates it in WAL mode; {sync_note}",
                    cx.db.display()
                ),
                "create or import it (`warden migrate import`, or `warden run --create` once) before the first session"
                    .into(),
                json!({"journal": null, "synchronous_default": "FULL"}),
            );
        }
        Err(e) => {
            return mk(
                ID,
                TITLE,
                Verdict::Warn,
                format!("the header of `{}` cannot be read: {e}; {sync_note}", cx.db.display()),
                "run doctor as the engine's user so it can read the database header".into(),
                json!({"journal": null, "error": e.to_string()}),
            );
        }
    };
    if n == 0 {
        return mk(
            ID,
            TITLE,
            Verdict::Warn,
            format!("the database `{}` is empty (0 bytes): no journal mode yet; {sync_note}", cx.db.display()),
            "let the engine initialise it (`warden run --create`) or import the real database".into(),
            json!({"journal": null, "bytes": 0}),
        );
    }
    if n < 100 || &header[..16] != b"SQLite format 3\0" {
        return mk(
            ID,
            TITLE,
            Verdict::Fail,
            format!("`{}` is not a SQLite database (first {n} bytes do not carry the SQLite header)", cx.db.display()),
            "check the path: --db must name the engine's SQLite file".into(),
            json!({"journal": null, "bytes": n}),
        );
    }
    let (w, r) = (header[18], header[19]);
    let wal_bytes = std::fs::metadata(sidecar(&cx.db, "-wal")).ok().map(|m| m.len());
    let shm = sidecar(&cx.db, "-shm").exists();
    let jrnl = std::fs::metadata(sidecar(&cx.db, "-journal")).ok().map(|m| m.len());
    let local = cx.db_verdict.as_ref().is_ok_and(|v| v.kind.is_local());
    let fstype = cx.db_verdict.as_ref().map(|v| v.fstype.clone()).unwrap_or_else(|_| "unknown storage".into());
    let (mode, verdict, what, fix) = match (w, r) {
        (2, 2) => {
            let side = format!(
                "-wal {}, -shm {}",
                wal_bytes.map(bytes).unwrap_or_else(|| "absent".into()),
                if shm { "present" } else { "absent" }
            );
            if local {
                (
                    "wal",
                    Verdict::Pass,
                    format!("WAL (header bytes 18/19 = 2/2) on local storage; {side}"),
                    String::new(),
                )
            } else {
                (
                    "wal",
                    Verdict::Warn,
                    format!("WAL (header bytes 18/19 = 2/2) on {fstype}, which is not local storage: WAL's shared memory only works on one host; {side}"),
                    "stop every opener, switch to a rollback journal (`PRAGMA journal_mode=DELETE`) and move the database to a local disk".into(),
                )
            }
        }
        (1, 1) => {
            let hot = match jrnl {
                Some(b) if b > 0 => {
                    format!("; a -journal of {} is present: a transaction is running or was interrupted", bytes(b))
                }
                _ => String::new(),
            };
            let next = if local {
                "warden's factory switches it to WAL at the next engine open"
            } else {
                "kept in rollback mode: warden refuses WAL on non-local storage"
            };
            (
                "rollback",
                Verdict::Pass,
                format!(
                    "rollback journal (header bytes 18/19 = 1/1): DELETE, TRUNCATE or PERSIST, the header cannot tell which; {next}{hot}"
                ),
                String::new(),
            )
        }
        _ => (
            "unknown",
            Verdict::Fail,
            format!("unknown file format versions in header bytes 18/19 = {w}/{r}"),
            "the file may be damaged: run `warden check` and keep the last verified backup at hand".into(),
        ),
    };
    let data = json!({"journal": mode, "header_write_version": w, "header_read_version": r,
        "wal_bytes": wal_bytes, "shm": shm, "journal_bytes": jrnl, "local_storage": local,
        "synchronous_default": "FULL",
        "lock_state": cx.lock.as_ref().ok().map(|s| s.state)});
    mk(ID, TITLE, verdict, format!("{what}; {sync_note}; {unknowable}"), fix, data)
}

// ---------------------------------------------------------------------------------------------
// clock
// ---------------------------------------------------------------------------------------------

/// The newest timestamp warden recorded for this database, and what it was.
fn newest_recorded(cx: &Ctx<'_>) -> (Option<(Timestamp, String)>, usize) {
    let mut newest: Option<(Timestamp, String)> = None;
    let mut seen = 0usize;
    let mut consider = |t: Timestamp, what: String| {
        seen += 1;
        if newest.as_ref().is_none_or(|(n, _)| t > *n) {
            newest = Some((t, what));
        }
    };
    if let Ok(list) = BackupStore::new(&cx.backup_dir, &cx.db).list() {
        for r in list {
            if let Some(t) = r.manifest.created_at() {
                consider(t, format!("backup {} (manifest `created`)", r.manifest.id));
            }
        }
    }
    if let Ok(list) = crate::session::health::list(&cx.session_dir) {
        for (_, a) in list {
            for (ts, what) in [(Some(&a.started_at), "started_at"), (a.finished_at.as_ref(), "finished_at")] {
                if let Some(t) = ts.and_then(|s| s.parse::<Timestamp>().ok()) {
                    consider(t, format!("session {} ({what})", a.session_id));
                }
            }
        }
    }
    if let Ok(st) = &cx.lock
        && let Some(r) = &st.record
    {
        if let Ok(t) = r.holder.since.parse::<Timestamp>() {
            consider(t, "writer lock record (since)".into());
        }
        if let Some(c) = &r.last_close
            && let Ok(t) = c.at.parse::<Timestamp>()
        {
            consider(t, "writer lock record (last clean close)".into());
        }
    }
    // Modification times of everything in <db>.warden/ (two levels deep) and its backup
    // and session directories, wherever they are.
    let mut dirs = vec![SessionConfig::state_dir(&cx.db), cx.backup_dir.clone(), cx.session_dir.clone()];
    dirs.sort();
    dirs.dedup();
    let mut stack: Vec<(PathBuf, u32)> = dirs.into_iter().map(|d| (d, 0)).collect();
    let mut visited = BTreeSet::new();
    while let Some((d, depth)) = stack.pop() {
        if !visited.insert(d.clone()) {
            continue;
        }
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let Ok(md) = e.metadata() else { continue };
            if md.is_dir() {
                if depth < 2 {
                    stack.push((e.path(), depth + 1));
                }
                continue;
            }
            if let Ok(t) = md.modified().and_then(|m| Timestamp::try_from(m).map_err(io::Error::other)) {
                consider(t, format!("file `{}` (mtime)", e.path().display()));
            }
        }
    }
    (newest, seen)
}

/// `timedatectl show -p NTPSynchronized --value`: `Some(true/false)`, or why it is unknown.
fn ntp_synchronized() -> Result<bool, String> {
    let mut child = Command::new("timedatectl")
        .args(["show", "-p", "NTPSynchronized", "--value"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("timedatectl not available ({e})"))?;
    let deadline = Instant::now() + Duration::from_secs(3);
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err("timedatectl did not answer within 3 s".into());
            }
            Err(e) => return Err(format!("timedatectl: {e}")),
        }
    };
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut out);
    }
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    if !status.success() {
        let first = err.lines().next().unwrap_or("").trim().to_owned();
        return Err(format!("timedatectl failed ({status}): {first}"));
    }
    match out.trim() {
        "yes" => Ok(true),
        "no" => Ok(false),
        other => Err(format!("timedatectl said {other:?}")),
    }
}

fn clock(cx: &Ctx<'_>) -> Check {
    const ID: &str = "clock";
    const TITLE: &str = "clock sanity";
    let now = Timestamp::try_from(SystemTime::now()).unwrap_or(Timestamp::UNIX_EPOCH);
    let mut verdict = Verdict::Pass;
    let mut parts = vec![format!("system time {now}")];
    let mut fix = String::new();
    if now.as_second() < PLAUSIBLE_EPOCH_SECS {
        verdict = Verdict::Fail;
        parts.push("before 2024-01-01: the clock is certainly wrong".into());
        fix = "set the clock and enable NTP (`timedatectl set-ntp true`) before running sessions".into();
    }
    let (newest, seen) = newest_recorded(cx);
    let ahead = newest.as_ref().map(|(t, _)| t.as_second() - now.as_second());
    match &newest {
        Some((t, what)) => {
            let ahead = ahead.unwrap_or(0);
            let tol = cx.opts.clock_tolerance.as_secs() as i64;
            if ahead > tol {
                verdict = Verdict::Fail;
                parts.push(format!(
                    "the newest of {seen} recorded timestamps, {what}, is {t}: {} in the future (tolerance {}): retention and backup-age alarms would be wrong",
                    crate::ops::status::human_age(ahead),
                    crate::ops::status::human_age(tol)
                ));
                fix = "set the system clock right (enable NTP: `timedatectl set-ntp true`), then check the future-dated backups and artifacts before pruning".into();
            } else {
                parts.push(format!("newest of {seen} recorded timestamps: {what} at {t} (not in the future)"));
            }
        }
        None => parts.push("no backups or artifacts recorded yet to compare with".into()),
    }
    let ntp = if cx.opts.ntp { Some(ntp_synchronized()) } else { None };
    match &ntp {
        Some(Ok(true)) => parts.push("NTP synchronized (timedatectl)".into()),
        Some(Ok(false)) => {
            if verdict < Verdict::Warn {
                verdict = Verdict::Warn;
                fix = "enable time synchronisation: `timedatectl set-ntp true` (systemd-timesyncd or chrony)".into();
            }
            parts.push("NTP not synchronized (timedatectl)".into());
        }
        Some(Err(why)) => parts.push(format!("NTP state unknown: {why}")),
        None => parts.push("NTP not asked".into()),
    }
    let data = json!({
        "now": now.to_string(),
        "newest_recorded": newest.as_ref().map(|(t, w)| json!({"at": t.to_string(), "what": w})),
        "seconds_ahead": ahead,
        "tolerance_seconds": cx.opts.clock_tolerance.as_secs(),
        "ntp_synchronized": ntp.as_ref().and_then(|r| r.as_ref().ok().copied()),
    });
    mk(ID, TITLE, verdict, parts.join("; "), fix, data)
}

// ---------------------------------------------------------------------------------------------
// foreign_openers
// ---------------------------------------------------------------------------------------------

/// A process that has one of the database's files open or mapped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Opener {
    /// Its pid.
    pub pid: u32,
    /// `/proc/PID/comm`.
    pub command: String,
    /// `/proc/PID/cmdline`, space-joined and shortened.
    pub cmdline: String,
    /// Its real uid, when readable.
    pub uid: Option<u32>,
    /// Which files: `database`, `-wal`, `-shm`, `-journal`.
    pub files: Vec<String>,
}

impl Opener {
    /// `pid 42 (sleep: sleep 30) has database open`.
    pub fn describe(&self) -> String {
        let cmd = if self.cmdline.is_empty() || self.cmdline == self.command {
            self.command.clone()
        } else {
            format!("{}: {}", self.command, self.cmdline)
        };
        format!("pid {} ({cmd}) has {} open", self.pid, self.files.join(", "))
    }
}

/// One file to look for: (major, minor, inode) and its label.
struct Target {
    dev: (u32, u32),
    ino: u64,
    label: &'static str,
}

fn proc_comm(pid: u32) -> String {
    read_trim(Path::new(&format!("/proc/{pid}/comm"))).unwrap_or_default()
}

fn proc_cmdline(pid: u32) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let mut s: String =
        raw.split(|b| *b == 0).filter(|a| !a.is_empty()).map(String::from_utf8_lossy).collect::<Vec<_>>().join(" ");
    if s.chars().count() > 200 {
        s = s.chars().take(200).collect::<String>() + "…";
    }
    s
}

fn proc_uid(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("Uid:"))?.split_whitespace().next()?.parse().ok()
}

/// Parses one `/proc/PID/maps` line into (major, minor, inode) of the mapped file.
fn maps_entry(line: &str) -> Option<(u32, u32, u64)> {
    let mut f = line.split_whitespace();
    let (_addr, _perms, _off, dev, ino) = (f.next()?, f.next()?, f.next()?, f.next()?, f.next()?);
    let (maj, min) = dev.split_once(':')?;
    let ino: u64 = ino.parse().ok()?;
    if ino == 0 {
        return None;
    }
    Some((u32::from_str_radix(maj, 16).ok()?, u32::from_str_radix(min, 16).ok()?, ino))
}

/// What a scan of `/proc` found.
struct Scan {
    openers: Vec<Opener>,
    /// Processes holding the lock file open (the engine side, when the lock is held).
    lock_holders: BTreeSet<u32>,
    scanned: usize,
    skipped: usize,
}

fn scan_proc(targets: &[Target], lock_file: Option<(u32, u32, u64)>, me: u32) -> io::Result<Scan> {
    let mut scan = Scan { openers: Vec::new(), lock_holders: BTreeSet::new(), scanned: 0, skipped: 0 };
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        if pid == me {
            continue;
        }
        let fd_dir = entry.path().join("fd");
        let rd = match std::fs::read_dir(&fd_dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue, // gone meanwhile
            Err(_) => {
                scan.skipped += 1;
                continue;
            }
        };
        scan.scanned += 1;
        let mut files = BTreeSet::new();
        for fd in rd.flatten() {
            // Sockets, pipes and anonymous inodes never match; skip them without a stat.
            match std::fs::read_link(fd.path()) {
                Ok(t) if t.is_absolute() => {}
                _ => continue,
            }
            let Ok(md) = std::fs::metadata(fd.path()) else { continue };
            let key = (libc::major(md.dev()), libc::minor(md.dev()), md.ino());
            if lock_file == Some(key) {
                scan.lock_holders.insert(pid);
            }
            for t in targets {
                if (t.dev, t.ino) == ((key.0, key.1), key.2) {
                    files.insert(t.label);
                }
            }
        }
        if let Ok(maps) = std::fs::read_to_string(entry.path().join("maps")) {
            for (maj, min, ino) in maps.lines().filter_map(maps_entry) {
                for t in targets {
                    if t.dev == (maj, min) && t.ino == ino {
                        files.insert(t.label);
                    }
                }
            }
        }
        if !files.is_empty() {
            scan.openers.push(Opener {
                pid,
                command: proc_comm(pid),
                cmdline: proc_cmdline(pid),
                uid: proc_uid(pid),
                files: files.into_iter().map(str::to_owned).collect(),
            });
        }
    }
    Ok(scan)
}

fn foreign_openers(cx: &Ctx<'_>) -> Check {
    const ID: &str = "foreign_openers";
    const TITLE: &str = "no process but the engine has the database open";
    let mut targets = Vec::new();
    for (suffix, label) in [("", "database"), ("-wal", "-wal"), ("-shm", "-shm"), ("-journal", "-journal")] {
        if let Ok(md) = std::fs::metadata(sidecar(&cx.db, suffix)) {
            targets.push(Target { dev: (libc::major(md.dev()), libc::minor(md.dev())), ino: md.ino(), label });
        }
    }
    if targets.is_empty() {
        return mk(
            ID,
            TITLE,
            Verdict::Pass,
            format!("the database `{}` does not exist: nobody can have it open", cx.db.display()),
            String::new(),
            json!({"foreign": [], "engine": []}),
        );
    }
    let lock_file = std::fs::metadata(crate::guard::lock::lock_path_for(&cx.db))
        .ok()
        .map(|m| (libc::major(m.dev()), libc::minor(m.dev()), m.ino()));
    let scan = match scan_proc(&targets, lock_file, std::process::id()) {
        Ok(s) => s,
        Err(e) => {
            return mk(
                ID,
                TITLE,
                Verdict::Warn,
                format!("/proc cannot be read ({e}): openers unknown"),
                "run doctor on Linux with /proc mounted (and as root to see every process)".into(),
                json!({"error": e.to_string()}),
            );
        }
    };
    let held = cx.lock.as_ref().ok().filter(|s| s.state == LockState::Held);
    // The engine side: the recorded holder (on this host) and whoever holds the lock file
    // open while the lock is held (`warden run` and the engine it handed the lock to).
    let mut engine: BTreeSet<u32> = BTreeSet::new();
    if let Some(st) = held {
        engine.extend(scan.lock_holders.iter().copied());
        if let Some(r) = &st.record {
            let here = crate::util::identity::ProcessIdentity::current();
            if r.holder.process.host == here.host && r.holder.process.boot_id == here.boot_id {
                engine.insert(r.holder.process.pid);
            }
        }
    }
    let (engine_openers, foreign): (Vec<Opener>, Vec<Opener>) =
        scan.openers.into_iter().partition(|o| engine.contains(&o.pid));
    let lock_text = match &cx.lock {
        Ok(st) => match st.state {
            LockState::Held => format!(
                "writer lock held by {}",
                st.record.as_ref().map(|r| r.holder.describe()).unwrap_or_else(|| "an unknown process".into())
            ),
            LockState::Free => "writer lock free (no engine runs)".into(),
            LockState::FreeAfterCrash => "writer lock free, but its last holder died without releasing it".into(),
            LockState::NeverUsed => "no guarded engine has ever opened this database".into(),
        },
        Err(e) => format!("writer lock unreadable ({e})"),
    };
    let mut parts = Vec::new();
    if foreign.is_empty() {
        parts.push("no other process has the database, -wal, -shm or -journal open or mapped".into());
    } else {
        parts.push(format!(
            "{} foreign opener{}: {}",
            foreign.len(),
            if foreign.len() == 1 { "" } else { "s" },
            foreign.iter().map(Opener::describe).collect::<Vec<_>>().join("; ")
        ));
    }
    parts.push(lock_text);
    if !engine_openers.is_empty() {
        parts.push(format!(
            "engine (not foreign): {}",
            engine_openers.iter().map(|o| format!("pid {} ({})", o.pid, o.command)).collect::<Vec<_>>().join(", ")
        ));
    }
    let me = nix::unistd::geteuid().as_raw();
    parts.push(format!(
        "{} processes inspected{}",
        scan.scanned,
        if scan.skipped > 0 {
            format!(
                ", {} could not be inspected{}",
                scan.skipped,
                if me == 0 { "" } else { " (run doctor as root to see every process)" }
            )
        } else {
            String::new()
        }
    ));
    let pids = foreign.iter().map(|o| o.pid.to_string()).collect::<Vec<_>>().join(" ");
    let (verdict, fix) = match (foreign.is_empty(), held.is_some()) {
        (true, _) => (Verdict::Pass, String::new()),
        (false, true) => (
            Verdict::Warn,
            format!(
                "only the engine should open the live database (readers pin the WAL or delay commits): stop pid {pids} and point analysis at snapshots (`warden snapshot`)"
            ),
        ),
        (false, false) => (
            Verdict::Fail,
            format!(
                "no engine holds the writer lock, yet pid {pids} has the database open and may be writing outside warden: find out what it is (`ps -o pid,user,args -p {pids}`) and stop it before the next session"
            ),
        ),
    };
    let data = json!({
        "foreign": foreign,
        "engine": engine_openers,
        "lock_state": cx.lock.as_ref().ok().map(|s| s.state),
        "scanned": scan.scanned,
        "skipped": scan.skipped,
    });
    mk(ID, TITLE, verdict, parts.join("; "), fix, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_order_and_exit_codes() {
        assert!(Verdict::Pass < Verdict::Warn && Verdict::Warn < Verdict::Fail);
        assert_eq!(
            [Verdict::Pass, Verdict::Warn, Verdict::Fail].map(Verdict::exit_code),
            [EXIT_PASS, EXIT_WARN, EXIT_FAIL]
        );
        assert_eq!(serde_json::to_value(Verdict::Warn).unwrap(), "warn");
    }

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&mut []), 0.0);
    }

    #[test]
    fn maps_lines() {
        let l = "7f1c2a000000-7f1c2a008000 rw-s 00000000 fe:01 1234567  /var/lib/engine/engine.db-shm";
        assert_eq!(maps_entry(l), Some((0xfe, 1, 1_234_567)));
        assert_eq!(maps_entry("7ffd-7ffe rw-p 00000000 00:00 0 [stack]"), None);
    }

    #[test]
    fn versions_and_summary() {
        assert_eq!(version_text(3_051_003), "3.51.3");
        let c = |id: &str, v| mk(id, "t", v, String::new(), "x".into(), Value::Null);
        let checks = [c("a", Verdict::Pass), c("b", Verdict::Warn), c("d", Verdict::Warn)];
        assert_eq!(summary(&checks), "1 pass, 2 warn (b, d), 0 fail");
        assert!(checks[0].fix.is_empty(), "no fix on pass");
    }
}

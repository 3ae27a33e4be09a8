//! `warden doctor` against conditions each test creates for real: a healthy local database,
//! a network share (simulated cifs through the probe seam, and the real sshfs mount of
//! `scripts/test`), a foreign process holding the database open beside (and without) the
//! engine, world-writable directories and files, a nearly full tmpfs, future-dated artifacts,
//! and the `--json` contract with its exit codes (0 pass, 10 warn, 11 fail).

mod common;

use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::proc::*;
use common::{Scratch, make_db};
use serde_json::Value;
use sqlite_warden::ops::doctor::{self, CHECK_IDS, Check, DoctorOptions, DoctorReport, Verdict};
use sqlite_warden::storage::SimulatedProbe;
use sqlite_warden::storage::magic;

const MINUTE: Duration = Duration::from_secs(60);

/// Library options for `db` without the `timedatectl` call (the clock test asks for it).
fn opts(db: &Path) -> DoctorOptions {
    DoctorOptions { ntp: false, ..DoctorOptions::new(db) }
}

fn check<'a>(r: &'a DoctorReport, id: &str) -> &'a Check {
    r.check(id).unwrap_or_else(|| panic!("no check {id} in {r:#?}"))
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// `warden doctor --json --no-ntp --db <db>`, run to its end.
fn doctor_cli(s: &Scratch, db: &Path) -> Done {
    let mut c = s.warden();
    c.args(["doctor", "--json", "--no-ntp", "--db"]).arg(db);
    run_to_end(c, MINUTE)
}

/// A child that is killed and reaped on drop.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `sleep 30` with `db` as its standard input: a process holding the database open.
fn sleeper_on(db: &Path) -> Killed {
    let mut cmd = Command::new("sleep");
    cmd.arg("30").stdin(Stdio::from(File::open(db).unwrap())).stdout(Stdio::null()).stderr(Stdio::null());
    let child = cmd.spawn().unwrap();
    drop(cmd); // the Command's copy of the descriptor: only the child may hold the file now
    Killed(child)
}

/// The `--json` contract: one document, every check in order with id/title/verdict/detail/
/// fix, fix empty exactly on pass, and an exit code that matches the worst verdict.
fn assert_contract(done: &Done) -> Value {
    let v = done.json();
    let checks = v["checks"].as_array().unwrap_or_else(|| panic!("checks array: {}", done.diag()));
    let ids: Vec<&str> = checks.iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(ids, CHECK_IDS, "{}", done.diag());
    let mut worst = 0;
    for c in checks {
        for field in ["id", "title", "verdict", "detail", "fix"] {
            assert!(c[field].is_string(), "{field} of {c}");
        }
        assert!(!c["detail"].as_str().unwrap().is_empty(), "detail of {c}");
        let rank = match c["verdict"].as_str().unwrap() {
            "pass" => 0,
            "warn" => 1,
            "fail" => 2,
            other => panic!("verdict {other} in {c}"),
        };
        assert_eq!(c["fix"].as_str().unwrap().is_empty(), rank == 0, "fix is empty exactly on pass: {c}");
        worst = worst.max(rank);
    }
    let (verdict, code) = [("pass", 0), ("warn", 10), ("fail", 11)][worst];
    assert_eq!(v["verdict"], verdict, "{}", done.diag());
    assert_eq!(v["exit_code"], code);
    assert_eq!(done.code(), Some(code), "{}", done.diag());
    v
}

/// On this VM the disk is virtio (rotational=1) and fsync may be slow under load: those
/// warnings are explainable. Everything else must pass on a healthy local database.
fn assert_healthy(r: &DoctorReport) {
    let ids: Vec<&str> = r.checks.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, CHECK_IDS);
    for c in &r.checks {
        match (c.id.as_str(), c.verdict) {
            (_, Verdict::Pass) => assert!(c.fix.is_empty(), "{c:?}"),
            ("device", Verdict::Warn) => {
                let dev = c.data["device"].as_str().unwrap_or_else(|| panic!("device warn names no device: {c:?}"));
                assert!(c.detail.contains(dev), "{c:?}");
                assert!(!c.fix.is_empty());
            }
            ("fsync", Verdict::Warn) => assert!(c.detail.contains("50 ms"), "names the threshold: {c:?}"),
            _ => panic!("unexpected {} on a healthy local database: {c:#?}", c.verdict),
        }
    }
    assert_eq!(r.exit_code, r.verdict.exit_code());
}

#[test]
fn healthy_local_database_passes_or_only_warns_about_this_vm() {
    let s = Scratch::new();
    chmod(s.dir.path(), 0o700); // as the runbook creates it (tempfile's default may be 0755)
    let db = s.path("engine.db");
    make_db(&db, "WAL");
    chmod(&db, 0o600);
    let r = doctor::run(&opts(&db));
    assert_healthy(&r);
    assert_eq!(r.database_bytes, Some(std::fs::metadata(&db).unwrap().len()));
    assert_eq!(check(&r, "journal").data["journal"], "wal");
    assert!(check(&r, "storage").detail.contains("ext4") || check(&r, "storage").detail.contains("local"));
    let f = check(&r, "fsync");
    assert_eq!(f.data["samples"], 5);
    assert!(f.data["median_ms"].as_f64().unwrap() >= 0.0);
    assert!(f.detail.contains("temporary file removed"), "{f:?}");
    assert!(
        names(s.dir.path()).iter().all(|n| !n.contains(TMP_MARK)),
        "fsync probe left behind: {:?}",
        names(s.dir.path())
    );
    // The device check names the block device this directory lives on.
    let d = check(&r, "device");
    assert!(d.data["device"].is_string(), "{d:?}");

    // The CLI gives the same verdicts, as one JSON document and as its exit code.
    let done = doctor_cli(&s, &db);
    let v = assert_contract(&done);
    assert!(matches!(done.code(), Some(0 | 10)), "{}", done.diag());
    assert_eq!(v["db"], db.to_str().unwrap());

    // Human output: one block per check, the overall verdict first.
    let mut c = s.warden();
    c.args(["doctor", "--no-ntp", "--db"]).arg(&db);
    let text = run_to_end(c, MINUTE);
    assert_eq!(text.code(), done.code());
    let first = text.stdout.lines().next().unwrap();
    assert!(first.contains(db.to_str().unwrap()) && first.contains("exit"), "{first}");
    for id in CHECK_IDS {
        assert!(text.stdout.contains(&format!(" {id} ")), "{id} missing:\n{}", text.stdout);
    }
}

#[test]
fn simulated_cifs_share_fails_storage_and_warns_wal() {
    let s = Scratch::new();
    let share = s.path("share");
    std::fs::create_dir(&share).unwrap();
    let db = share.join("engine.db");
    make_db(&db, "WAL");
    let probe = SimulatedProbe::local_root()
        .mount(&share, "cifs", "//nas/trading", "rw,vers=3.1.1")
        .magic(&share, magic::CIFS_MAGIC_NUMBER);
    let r = doctor::run(&DoctorOptions { probe: Arc::new(probe), ..opts(&db) });
    let st = check(&r, "storage");
    assert_eq!(st.verdict, Verdict::Fail, "{st:#?}");
    for want in ["cifs", "//nas/trading", share.to_str().unwrap(), "network"] {
        assert!(st.detail.contains(want), "{want} not in {}", st.detail);
    }
    assert!(st.fix.contains("local disk"), "{}", st.fix);
    assert_eq!(st.data["database"]["fstype"], "cifs");
    // WAL on a share: the journal check says so.
    let j = check(&r, "journal");
    assert_eq!(j.verdict, Verdict::Warn, "{j:#?}");
    assert!(j.detail.contains("cifs") && j.detail.contains("not local"), "{}", j.detail);
    // No block device behind a share: the device check says unknown and why.
    let d = check(&r, "device");
    assert_eq!(d.verdict, Verdict::Warn);
    assert!(d.detail.contains("cifs") && d.detail.contains("unknown"), "{}", d.detail);
    assert_eq!(r.verdict, Verdict::Fail);
    assert_eq!(r.exit_code, 11);

    // A lock-less mount option is named too.
    let probe = SimulatedProbe::local_root().mount(&share, "cifs", "//nas/trading", "rw,nobrl");
    let r = doctor::run(&DoctorOptions { probe: Arc::new(probe), ..opts(&db) });
    let st = check(&r, "storage");
    assert_eq!(st.verdict, Verdict::Fail);
    assert!(st.detail.contains("no_locking") && st.detail.contains("nobrl"), "{}", st.detail);
}

#[test]
fn real_sshfs_mount_fails_storage_through_the_cli() {
    let Some(mnt) = std::env::var_os("WARDEN_SSHFS_MNT").map(PathBuf::from) else {
        skip_or_fail(
            "real_sshfs_mount_fails_storage_through_the_cli",
            "WARDEN_SSHFS_MNT is not set (scripts/test mounts sshfs)",
        );
        return;
    };
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        info.lines().any(|l| l.contains(" fuse.sshfs ") && l.contains(&format!(" {} ", mnt.display()))),
        "{} is not a live sshfs mount",
        mnt.display()
    );
    let s = Scratch::new();
    let dir = mnt.join(format!("doctor-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("e.db");
    make_db(&db, "DELETE");
    let done = doctor_cli(&s, &db);
    let v = assert_contract(&done);
    let st = v["checks"].as_array().unwrap().iter().find(|c| c["id"] == "storage").unwrap().clone();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(st["verdict"], "fail", "{}", done.diag());
    let detail = st["detail"].as_str().unwrap();
    assert!(detail.contains("fuse.sshfs") && detail.contains("127.0.0.1"), "{detail}");
    assert_eq!(done.code(), Some(11));
}

#[test]
fn foreign_opener_is_named_and_the_engine_is_not() {
    let s = Scratch::new();

    // No engine: someone holding the database open is a failure.
    let lone = s.path("lone.db");
    make_db(&lone, "DELETE");
    let sleeper = sleeper_on(&lone);
    let pid = sleeper.0.id();
    let r = doctor::run(&opts(&lone));
    let f = check(&r, "foreign_openers");
    assert_eq!(f.verdict, Verdict::Fail, "{f:#?}");
    assert!(f.detail.contains(&format!("pid {pid} (sleep")), "{}", f.detail);
    assert!(f.fix.contains(&pid.to_string()), "{}", f.fix);
    assert_eq!(f.data["foreign"][0]["pid"], pid);
    assert_eq!(f.data["foreign"][0]["command"], "sleep");
    assert_eq!(f.data["foreign"][0]["files"][0], "database");
    drop(sleeper);
    let r = doctor::run(&opts(&lone));
    assert_eq!(check(&r, "foreign_openers").verdict, Verdict::Pass, "{:#?}", check(&r, "foreign_openers"));

    // The engine holds the writer lock and the database: not foreign. A sleeper beside it is.
    let db = s.path("engine.db");
    let mut engine = s.engine();
    engine.arg("--db").arg(&db).args(["--create", "--hold-ms", "20000"]);
    let mut engine = Proc::spawn(engine);
    let engine_pid = engine.wait_engine_ready(MINUTE);
    let sleeper = sleeper_on(&db);
    let pid = sleeper.0.id();
    let done = doctor_cli(&s, &db);
    let v = assert_contract(&done);
    let f = v["checks"].as_array().unwrap().iter().find(|c| c["id"] == "foreign_openers").unwrap();
    assert_eq!(f["verdict"], "warn", "{}", done.diag());
    let detail = f["detail"].as_str().unwrap();
    assert!(detail.contains(&format!("pid {pid} (sleep")), "{detail}");
    let foreign: Vec<u64> =
        f["data"]["foreign"].as_array().unwrap().iter().map(|o| o["pid"].as_u64().unwrap()).collect();
    assert_eq!(foreign, [u64::from(pid)], "only the sleeper is foreign: {detail}");
    let engines: Vec<u64> =
        f["data"]["engine"].as_array().unwrap().iter().map(|o| o["pid"].as_u64().unwrap()).collect();
    assert_eq!(engines, [u64::from(engine_pid)], "{detail}");
    assert!(detail.contains(&format!("engine (not foreign): pid {engine_pid}")), "{detail}");
    assert!(detail.contains("writer lock held by"), "{detail}");
    drop(sleeper);

    // The engine alone: nothing foreign.
    let r = doctor::run(&opts(&db));
    let f = check(&r, "foreign_openers");
    assert_eq!(f.verdict, Verdict::Pass, "{f:#?}");
    assert!(f.detail.contains(&format!("pid {engine_pid}")), "{}", f.detail);
    engine.signal(nix::sys::signal::Signal::SIGTERM);
    engine.finish(MINUTE);
}

#[test]
fn world_writable_directory_or_database_fails_permissions() {
    let s = Scratch::new();
    let dir = s.path("open");
    std::fs::create_dir(&dir).unwrap();
    let db = dir.join("engine.db");
    make_db(&db, "WAL");
    chmod(&db, 0o600);
    chmod(&dir, 0o777);
    let r = doctor::run(&opts(&db));
    let p = check(&r, "permissions");
    assert_eq!(p.verdict, Verdict::Fail, "{p:#?}");
    assert!(p.detail.contains("world-writable") && p.detail.contains("0777"), "{}", p.detail);
    assert!(p.fix.contains(&format!("chmod 0750 {}", dir.display())), "{}", p.fix);
    let done = doctor_cli(&s, &db);
    assert_contract(&done);
    assert_eq!(done.code(), Some(11));

    // A world-writable database in a closed directory fails too.
    chmod(&dir, 0o700);
    chmod(&db, 0o666);
    let p = doctor::run(&opts(&db)).checks.into_iter().find(|c| c.id == "permissions").unwrap();
    assert_eq!(p.verdict, Verdict::Fail, "{p:#?}");
    assert!(p.fix.contains(&format!("chmod 0600 {}", db.display())), "{}", p.fix);

    // Others may enter the directory and read the database: a warning.
    chmod(&dir, 0o755);
    chmod(&db, 0o644);
    let p = doctor::run(&opts(&db)).checks.into_iter().find(|c| c.id == "permissions").unwrap();
    assert_eq!(p.verdict, Verdict::Warn, "{p:#?}");
    assert!(p.detail.contains("others can read the database"), "{}", p.detail);
}

#[test]
fn low_free_space_on_a_small_tmpfs_fails() {
    if !nix::unistd::geteuid().is_root() {
        skip_or_fail("low_free_space_on_a_small_tmpfs_fails", "mounting a tmpfs needs root");
        return;
    }
    let s = Scratch::new();
    let small = s.path("small");
    let _tmpfs = Tmpfs::mount(&small, "2m").unwrap_or_else(|e| panic!("{e}"));
    let db = small.join("engine.db");
    {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch("PRAGMA journal_mode=DELETE; CREATE TABLE b(x); INSERT INTO b VALUES (zeroblob(1500000));")
            .unwrap();
    }
    let size = std::fs::metadata(&db).unwrap().len();
    assert!(size > 1_400_000, "{size}");
    let r = doctor::run(&opts(&db));
    let f = check(&r, "free_space");
    assert_eq!(f.verdict, Verdict::Fail, "{f:#?}");
    assert!(f.detail.contains("one backup needs") && f.detail.contains("free"), "{}", f.detail);
    assert!(f.fix.contains("free at least") && f.fix.contains(small.to_str().unwrap()), "{}", f.fix);
    let free = f.data["dirs"][0]["free_bytes"].as_u64().unwrap();
    assert!(free < f.data["backup_needs_bytes"].as_u64().unwrap());
    // tmpfs has no block device: the device check says so instead of guessing.
    let d = check(&r, "device");
    assert_eq!(d.verdict, Verdict::Warn);
    assert!(d.detail.contains("tmpfs") && d.detail.contains("unknown"), "{}", d.detail);
    // fsync still works there, and its probe file is gone.
    assert_eq!(check(&r, "fsync").verdict, Verdict::Pass, "{:#?}", check(&r, "fsync"));
    assert!(names(&small).iter().all(|n| !n.contains(TMP_MARK)));
    assert_eq!(r.exit_code, 11);
}

#[test]
fn future_dated_artifacts_fail_the_clock_check() {
    let s = Scratch::new();
    let db = s.path("engine.db");
    make_db(&db, "WAL");
    let sessions = sessions_of(&db);
    std::fs::create_dir_all(&sessions).unwrap();
    let artifact = sessions.join("note.txt");
    std::fs::write(&artifact, b"x").unwrap();

    // Two minutes ahead is within the tolerance.
    File::options().write(true).open(&artifact).unwrap().set_modified(SystemTime::now() + 2 * MINUTE).unwrap();
    let c = doctor::run(&opts(&db)).checks.into_iter().find(|c| c.id == "clock").unwrap();
    assert_eq!(c.verdict, Verdict::Pass, "{c:#?}");
    assert!(c.detail.contains("note.txt"), "{}", c.detail);

    // An hour ahead: the clock went backwards (or the files came from a host in the future).
    File::options().write(true).open(&artifact).unwrap().set_modified(SystemTime::now() + 60 * MINUTE).unwrap();
    let c = doctor::run(&opts(&db)).checks.into_iter().find(|c| c.id == "clock").unwrap();
    assert_eq!(c.verdict, Verdict::Fail, "{c:#?}");
    assert!(c.detail.contains("note.txt") && c.detail.contains("in the future"), "{}", c.detail);
    assert!(c.data["seconds_ahead"].as_i64().unwrap() > 3000);

    // With timedatectl asked, an unavailable or unsynchronised NTP never hides the failure.
    let c =
        doctor::run(&DoctorOptions { ntp: true, ..opts(&db) }).checks.into_iter().find(|c| c.id == "clock").unwrap();
    assert_eq!(c.verdict, Verdict::Fail);
    assert!(c.detail.contains("NTP"), "{}", c.detail);
}

#[test]
fn json_exit_codes_follow_the_worst_verdict() {
    let s = Scratch::new();
    // A database that does not exist yet: journal warns, nothing fails.
    let missing = s.path("later.db");
    let done = doctor_cli(&s, &missing);
    let v = assert_contract(&done);
    assert_eq!(done.code(), Some(10), "{}", done.diag());
    let j = v["checks"].as_array().unwrap().iter().find(|c| c["id"] == "journal").unwrap();
    assert_eq!(j["verdict"], "warn");
    assert!(j["detail"].as_str().unwrap().contains("does not exist yet"));
    assert!(!missing.exists(), "doctor creates nothing");
    assert_eq!(v["database_bytes"], Value::Null);

    // Not a SQLite file: a failure.
    let junk = s.path("junk.db");
    std::fs::write(&junk, vec![b'x'; 4096]).unwrap();
    chmod(&junk, 0o600);
    let done = doctor_cli(&s, &junk);
    let v = assert_contract(&done);
    assert_eq!(done.code(), Some(11));
    let j = v["checks"].as_array().unwrap().iter().find(|c| c["id"] == "journal").unwrap();
    assert_eq!(j["verdict"], "fail");

    // Usage errors keep their own codes.
    let mut c = s.warden();
    c.args(["doctor", "--no-ntp", "--min-free-factor", "0", "--db"]).arg(&junk);
    assert_eq!(run_to_end(c, MINUTE).code(), Some(64));
}

/// `extension`: where the loadable extension is installed (`WARDEN_EXTENSION`, as the units
/// set it) and the mode it runs in on the system's libsqlite3, which Debian's python3 and
/// sqlite3 shell link; asked of the library itself, compared with what that python3 says.
#[test]
fn the_extension_check_names_the_mode_on_the_system_sqlite() {
    let s = Scratch::new();
    let db = s.path("e.db");
    rusqlite::Connection::open(&db).unwrap().execute_batch("CREATE TABLE t(x)").unwrap();
    let lib = Path::new(env!("CARGO_MANIFEST_DIR")).join("ext/target/release/libwarden.so");
    let mut c = s.warden();
    c.args(["doctor", "--no-ntp", "--json", "--db"]).arg(&db).env("WARDEN_EXTENSION", lib.with_extension(""));
    let done = run_to_end(c, Duration::from_secs(60));
    let v = assert_contract(&done);
    let e = v["checks"].as_array().unwrap().iter().find(|c| c["id"] == "extension").unwrap().clone();
    if lib.exists() {
        assert!(e["data"]["installed"].as_array().unwrap().iter().any(|p| p == lib.to_str().unwrap()), "{e:#}");
    }
    let debian = Command::new("/usr/bin/python3")
        .args(["-c", "import sqlite3; print(sqlite3.sqlite_version)"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    match debian {
        Some(version) => {
            assert_eq!(e["data"]["system_sqlite"], version.as_str(), "{e:#}");
            // Debian 12 (3.40.1) and Ubuntu 24.04 (3.45.1) lack the WAL-reset fix.
            if version.starts_with("3.40.") || version.starts_with("3.45.") {
                assert_eq!(e["data"]["mode"], "rollback_only", "{e:#}");
                assert!(e["detail"].as_str().unwrap().contains("rollback-journal-only"), "{e:#}");
            } else {
                assert!(["full", "rollback_only"].contains(&e["data"]["mode"].as_str().unwrap()), "{e:#}");
            }
            assert_eq!(e["verdict"], "pass", "{e:#}");
        }
        None => eprintln!("no /usr/bin/python3 to compare with; the extension check said {e}"),
    }
}

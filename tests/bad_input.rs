//! Bad input that was not handled (issue 11, defect 9). Each case had a wrong exit code, a
//! panic, a misleading hint, or created `<path>.warden/` beside a path that was refused:
//!
//! - non-UTF-8 names: the audit log got blank lines instead of records, the engine's open
//!   was not refused, `PRAGMA warden_status` panicked, and `warden run` refused only later
//!   with "check permissions";
//! - a closed stdout (`warden fs / | true`, `lock`, `version`, `prune --dry-run`) panicked
//!   with exit 101 and a backtrace;
//! - a directory, an unreadable file, a lock file that is a directory: exit 69 or 74 with
//!   "disk I/O error" or "Is a directory" about the wrong file, and `warden lock` called a
//!   directory lock file "free";
//! - ENOSPC writing the session artifact said "check permissions";
//! - `--gate-budget 0s` was taken as "no time at all" while `0` meant "no limit";
//! - refused runs on missing paths created `<path>.warden/` trees and lock files.
//!
//! Real processes (the `warden` binary), real files, a real tmpfs filled to the last byte,
//! and a real unprivileged user (`setpriv` to nobody) for the permission cases.

mod common;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::proc::*;

const MINUTE: Duration = Duration::from_secs(60);

/// Every entry of `dir`, sorted (what a run left beside the database).
fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "audit")
        .collect();
    v.sort();
    v
}

fn run(cmd: Command) -> Done {
    run_to_end(cmd, MINUTE)
}

/// `warden ARGS PATH` to its end (`run` gets the engine `true`).
fn on(s: &common::Scratch, args: &[&str], path: &Path) -> Done {
    let mut c = s.warden();
    c.args(args).arg(path);
    if args[0] == "run" {
        c.args(["--", "true"]);
    }
    run(c)
}

fn no_panic(d: &Done, what: &str) {
    assert!(!d.stderr.contains("panicked"), "{what}: panicked: {}", d.diag());
    assert_ne!(d.code(), Some(101), "{what}: exit 101: {}", d.diag());
}

#[test]
fn non_utf8_database_names_are_refused_by_every_layer_and_audited_as_records() {
    let s = common::Scratch::new();
    let db = s.dir.path().join(OsStr::from_bytes(b"caf\xe9.db"));
    common::make_db(&db, "delete");
    let before = entries(s.dir.path());

    // The CLI: a usage error naming the bytes, nothing created.
    for args in [&["run", "--db"][..], &["check"], &["backup", "--db"], &["status", "--db"]] {
        let d = on(&s, args, &db);
        no_panic(&d, args[0]);
        assert_eq!(d.code(), Some(64), "{args:?}: {}", d.diag());
        assert!(d.stderr.contains("caf\\xe9.db") && d.stderr.contains("not valid UTF-8"), "{}", d.diag());
        assert_eq!(entries(s.dir.path()), before, "{args:?} created something");
    }

    // Reached from a directory whose name is not UTF-8 (a relative --db resolves into it).
    let odd_dir = s.dir.path().join(OsStr::from_bytes(b"d\xff"));
    std::fs::create_dir(&odd_dir).unwrap();
    common::make_db(&odd_dir.join("e.db"), "delete");
    let mut c = s.warden();
    c.current_dir(&odd_dir).args(["run", "--db", "e.db", "--", "true"]);
    let d = run(c);
    no_panic(&d, "run from a non-UTF-8 cwd");
    assert_eq!(d.code(), Some(64), "{}", d.diag());
    assert!(d.stderr.contains("d\\xff/e.db"), "{}", d.diag());
    assert_eq!(entries(&odd_dir), ["e.db"], "the refused run created something");

    // The engine's own open through the guard: refused, and the refusal is a record.
    let guard = common::local_guard(&s);
    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_CREATE;
    let err = rusqlite::Connection::open_with_flags_and_vfs(&db, flags, guard.engine_vfs())
        .map(|c| {
            // What the old code did next: the pragma panicked inside the VFS.
            let status: Result<String, _> = c.query_row("PRAGMA warden_status", [], |r| r.get(0));
            format!("opened; warden_status: {status:?}")
        })
        .expect_err("an engine open of a non-UTF-8 name must be refused");
    assert!(err.to_string().contains("unable to open"), "{err}");
    let ro = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY;
    assert!(rusqlite::Connection::open_with_flags_and_vfs(&db, ro, guard.tool_vfs()).is_err(), "tooling open allowed");
    let e = sqlite_warden::guard::connect::open_engine(
        &db,
        &sqlite_warden::guard::connect::EngineOptions { guard: Some(guard.clone()), ..Default::default() },
    )
    .expect_err("open_engine must refuse it");
    assert_eq!(e.exit_code(), 64, "{e}");

    let text = std::fs::read_to_string(s.audit_dir().join("audit.jsonl")).unwrap();
    assert!(!text.is_empty());
    for line in text.lines() {
        assert!(!line.trim().is_empty(), "a blank line in the audit log:\n{text}");
        serde_json::from_str::<serde_json::Value>(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    }
    let refusals: Vec<serde_json::Value> = s
        .audit_lines()
        .into_iter()
        .filter(|r| r["decision"] == "refuse" && r["db"].as_str().is_some_and(|p| p.ends_with("caf\\xe9.db")))
        .collect();
    assert!(refusals.len() >= 2, "each refused open is a record naming the file:\n{text}");
    assert!(refusals.iter().all(|r| r["reason"].as_str().unwrap().contains("not valid UTF-8")), "{refusals:?}");
}

/// Runs `args` with stdout a pipe whose reader has already gone.
fn with_closed_stdout(s: &common::Scratch, args: &[&OsStr]) -> Done {
    let (reader, writer) = nix::unistd::pipe().unwrap();
    drop(reader);
    let mut c = s.warden();
    c.args(args).stdout(Stdio::from(writer)).stderr(Stdio::piped());
    let out = c.output().unwrap();
    Done { status: out.status, stdout: String::new(), stderr: String::from_utf8_lossy(&out.stderr).into_owned() }
}

#[test]
fn a_closed_stdout_never_panics_and_keeps_each_commands_exit_code() {
    let s = common::Scratch::new();
    let db = s.path("e.db");
    common::make_db(&db, "delete");
    let dbs = db.as_os_str();
    let cases: Vec<Vec<&OsStr>> = vec![
        vec!["fs".as_ref(), "/".as_ref()],
        vec!["lock".as_ref(), dbs],
        vec!["version".as_ref()],
        vec!["--help".as_ref()],
        vec!["prune".as_ref(), "--dry-run".as_ref(), "--db".as_ref(), dbs],
        vec!["status".as_ref(), "--db".as_ref(), dbs],
        vec!["check".as_ref(), dbs],
        vec!["check".as_ref(), "--json".as_ref(), dbs],
        vec!["backups".as_ref(), "--db".as_ref(), dbs],
        vec!["sessions".as_ref(), "--db".as_ref(), dbs],
    ];
    for args in &cases {
        // The same command with stdout to /dev/null: its own exit code.
        let mut c = s.warden();
        c.args(args);
        let reference = run(c);
        let d = with_closed_stdout(&s, args);
        no_panic(&d, &format!("{args:?}"));
        assert_eq!(d.code(), reference.code(), "{args:?} with a closed stdout: {}", d.diag());
    }
    // A stdout that fails for another reason is an I/O error, said once.
    let mut c = s.warden();
    c.args(["fs", "/"]).stdout(std::fs::File::create("/dev/full").unwrap()).stderr(Stdio::piped());
    let out = c.output().unwrap();
    let d =
        Done { status: out.status, stdout: String::new(), stderr: String::from_utf8_lossy(&out.stderr).into_owned() };
    no_panic(&d, "fs / > /dev/full");
    assert_eq!(d.code(), Some(74), "{}", d.diag());
    assert!(d.stderr.contains("cannot write to stdout") && d.stderr.contains("No space left"), "{}", d.diag());
}

#[test]
fn a_directory_or_a_file_in_the_way_gets_its_own_code_and_nothing_is_created() {
    let s = common::Scratch::new();
    let dir_db = s.path("d.db");
    std::fs::create_dir(&dir_db).unwrap();
    let before = entries(s.dir.path());
    for (args, code) in [
        (&["run", "--db"][..], 66),
        (&["check"], 66),
        (&["backup", "--db"], 66),
        (&["snapshot", "--db"], 66),
        (&["status", "--db"], 11),
        (&["drill", "--db"], 66),
    ] {
        let d = on(&s, args, &dir_db);
        no_panic(&d, args[0]);
        assert_eq!(d.code(), Some(code), "{args:?}: {}", d.diag());
        if args[0] != "drill" {
            let said = format!("{}{}", d.stdout, d.stderr);
            assert!(said.contains("is a directory, not a database file"), "{args:?}: {}", d.diag());
        }
        assert_eq!(entries(s.dir.path()), before, "{args:?} created something beside the directory");
    }

    // The writer lock path is a directory: named as such, exit 73, never "free".
    let db = s.path("e.db");
    common::make_db(&db, "delete");
    let lock_dir = sidecar(&db, "-warden.lock");
    std::fs::create_dir(&lock_dir).unwrap();
    for args in [&["run", "--db"][..], &["lock"], &["check"], &["backup", "--db"]] {
        let d = on(&s, args, &db);
        no_panic(&d, args[0]);
        assert_eq!(d.code(), Some(73), "{args:?}: {}", d.diag());
        assert!(d.stderr.contains("e.db-warden.lock` is a directory"), "{args:?}: {}", d.diag());
        assert!(!d.stdout.contains("free"), "{args:?} called the lock free: {}", d.diag());
        assert!(!state_dir(&db).exists(), "{args:?} created the state directory");
    }
    let mut c = s.warden();
    c.args(["status", "--json", "--db"]).arg(&db);
    let d = run(c);
    assert_eq!(d.code(), Some(11), "{}", d.diag());
    assert!(d.stdout.contains("database_unusable"), "{}", d.diag());
}

#[test]
fn refused_runs_on_missing_paths_create_nothing() {
    let s = common::Scratch::new();
    let before = entries(s.dir.path());
    for db in ["nope.db", "nope/x.db"] {
        let mut c = s.warden();
        c.args(["run", "--db", db, "--", "true"]);
        let d = run(c);
        assert_eq!(d.code(), Some(66), "{db}: {}", d.diag());
        assert!(d.stderr.contains("does not exist; nothing was started or created"), "{}", d.diag());
        assert_eq!(entries(s.dir.path()), before, "`run --db {db}` created something");
    }
    // --create in a directory that does not exist: said, not half-made.
    let mut c = s.warden();
    c.args(["run", "--create", "--db", "nope/x.db", "--", "true"]);
    let d = run(c);
    assert_eq!(d.code(), Some(66), "{}", d.diag());
    assert!(d.stderr.contains("mkdir -p"), "{}", d.diag());
    // Read-only commands on a missing database create nothing either.
    for args in [&["prune", "--dry-run", "--db", "gone.db"][..], &["status", "--db", "gone.db"], &["check", "gone.db"]]
    {
        let mut c = s.warden();
        c.args(args);
        let d = run(c);
        no_panic(&d, args[0]);
        assert_eq!(entries(s.dir.path()), before, "{args:?} created something");
    }
}

#[test]
fn a_zero_gate_budget_is_refused_as_ambiguous() {
    let s = common::Scratch::new();
    let db = s.path("e.db");
    common::make_db(&db, "delete");
    for zero in ["0s", "0", "0m"] {
        let mut c = s.warden();
        c.args(["run", "--gate-budget", zero, "--db"]).arg(&db).args(["--", "true"]);
        let d = run(c);
        assert_eq!(d.code(), Some(78), "{zero}: {}", d.diag());
        assert!(d.stderr.contains("ambiguous") && d.stderr.contains("`none`"), "{}", d.diag());
        let mut c = s.warden();
        c.args(["check", "--budget", zero]).arg(&db);
        let d = run(c);
        assert_eq!(d.code(), Some(64), "{zero}: {}", d.diag());
    }
    assert!(!state_dir(&db).exists(), "a refused budget created the state directory");
    let mut c = s.warden();
    c.args(["run", "--gate-budget", "none", "--db"]).arg(&db).args(["--", "true"]);
    let d = run(c);
    assert_eq!(d.code(), Some(0), "`none` is no limit: {}", d.diag());
}

/// `setpriv` to nobody: the permission cases need a user that root's capabilities do not
/// cover. Returns `None` (a counted skip) where the binary is not reachable as nobody.
fn as_nobody(s: &common::Scratch, args: &[&OsStr]) -> Option<Done> {
    let mut c = Command::new("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups", WARDEN])
        .args(args)
        .current_dir(s.dir.path())
        .env("WARDEN_AUDIT_DIR", s.path("nobody-audit"))
        .env_remove("WARDEN_CONFIG");
    if !can_run_as_nobody() {
        return None;
    }
    Some(run(c))
}

#[test]
fn an_unreadable_database_is_a_permission_error_that_says_so() {
    let s = common::Scratch::new();
    std::fs::set_permissions(s.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let db = s.path("e.db");
    common::make_db(&db, "delete");
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o600)).unwrap();
    let before = entries(s.dir.path());
    let dbs = db.as_os_str();
    let cases: [(Vec<&OsStr>, i32); 3] = [
        (vec!["run".as_ref(), "--db".as_ref(), dbs, "--".as_ref(), "true".as_ref()], 77),
        (vec!["check".as_ref(), dbs], 77),
        (vec!["backup".as_ref(), "--db".as_ref(), dbs], 77),
    ];
    for (args, code) in cases {
        let Some(d) = as_nobody(&s, &args) else {
            skip_or_fail(
                "an_unreadable_database_is_a_permission_error_that_says_so",
                "setpriv to nobody cannot run warden",
            );
            return;
        };
        no_panic(&d, &format!("{args:?}"));
        assert_eq!(d.code(), Some(code), "{args:?}: {}", d.diag());
        assert!(d.stderr.contains("permission denied") && d.stderr.contains("uid 65534"), "{}", d.diag());
        let mut now = entries(s.dir.path());
        now.retain(|n| n != "nobody-audit");
        assert_eq!(now, before, "{args:?} created something");
    }
}

#[test]
fn enospc_writing_the_artifact_says_the_disk_is_full() {
    let s = common::Scratch::new();
    let db = s.path("e.db");
    common::make_db(&db, "delete");
    let full: PathBuf = s.path("full");
    let tmpfs = match Tmpfs::mount(&full, "64k") {
        Ok(t) => t,
        Err(why) => {
            skip_or_fail("enospc_writing_the_artifact_says_the_disk_is_full", &why);
            return;
        }
    };
    let sessions = full.join("sessions");
    std::fs::create_dir(&sessions).unwrap();
    // Fill it to the last block.
    let mut i = 0;
    while std::fs::write(full.join(format!("fill{i}")), vec![0u8; 4096]).is_ok() {
        i += 1;
    }
    let _ = std::fs::write(full.join("last"), b"x");
    let mut c = s.warden();
    c.args(["run", "--session-dir"]).arg(&sessions).arg("--db").arg(&db).args(["--", "true"]);
    let d = run(c);
    drop(tmpfs);
    no_panic(&d, "run with a full session dir");
    assert_eq!(d.code(), Some(73), "{}", d.diag());
    assert!(d.stderr.contains("No space left") && d.stderr.contains("is full"), "{}", d.diag());
    assert!(!d.stderr.contains("permissions"), "a full disk is not a permission problem: {}", d.diag());
}

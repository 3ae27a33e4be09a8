//! The crash and I/O-error campaigns (issue 13): every operation warden performs on files,
//! for backup, verification, prune, snapshot, restore (in place and elsewhere), drill, a
//! whole session (gate, backups, seal, health artifact), accept, migration export and
//! import, is made to fail in turn: the process is `SIGKILL`ed just before step k, or step
//! k fails with `EIO`, `ENOSPC` or a short write, for k = 1..K, where K is what a traced
//! run of the same command counted. The fault layer is `util::fault` + `sys::faults`
//! (cargo feature `faults`): it sits under warden's own `std::fs` calls and under SQLite's
//! `unix` VFS alike, so journal, WAL and database writes are steps too.
//!
//! After every fault: the live database is whole and holds a state the user had (or the
//! restored one), every backup `warden backups verify --all` lists still verifies, the
//! verified backup made before the fault is still there, the audit log parses, a failed
//! command said so with a documented exit code and named what failed; then the same
//! command without the fault succeeds and leaves no temporary file anywhere.
//!
//! Each campaign appends one summary line (steps tried, faults injected, failures) to
//! `$WARDEN_CAMPAIGN_SUMMARY`, which the test command prints. `WARDEN_CAMPAIGN=deep`
//! adds persistent EIO and once-only ENOSPC at every step.

mod common;

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::proc::{ENGINE, TMP_MARK, WARDEN};

/// One fault campaign over one command.
struct Case {
    name: &'static str,
    /// Builds the state the command starts from.
    setup: fn(&Fx),
    /// The command's arguments.
    args: fn(&Fx) -> Vec<OsString>,
    /// The arguments of the run after the fault (default: the same).
    rerun: Option<fn(&Fx) -> Vec<OsString>>,
    /// Checks of this case beyond the common ones.
    extra: fn(&Fx, Phase) -> Result<(), String>,
    /// The live database may be missing right after the fault (a restore between its two
    /// renames, an import that never finished): the clean run must bring it back.
    absent_ok: bool,
    /// A fault after the commit point leaves the job done: the clean run may then refuse
    /// with 73 ("already exists", warden never overwrites), and the checks still apply.
    done_is_73: bool,
    /// A read-only command: its steps are its reads (`:read`), killed or failed with EIO.
    reads: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    /// Right after the faulted run.
    Faulted,
    /// After the clean run that follows it.
    Recovered,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Kill,
    Eio,
    EioPersistent,
    Enospc,
    EnospcPersistent,
    Short,
}

impl Kind {
    fn spec(self, k: u64) -> String {
        match self {
            Kind::Kill => format!("kill@{k}"),
            Kind::Eio => format!("eio@{k}"),
            Kind::EioPersistent => format!("eio@{k}+"),
            Kind::Enospc => format!("enospc@{k}"),
            Kind::EnospcPersistent => format!("enospc@{k}+"),
            Kind::Short => format!("short@{k}"),
        }
    }
    fn name(self) -> &'static str {
        match self {
            Kind::Kill => "crash",
            Kind::Eio => "eio",
            Kind::EioPersistent => "eio-persistent",
            Kind::Enospc => "enospc",
            Kind::EnospcPersistent => "enospc-persistent",
            Kind::Short => "short-write",
        }
    }
}

/// One fresh world: a directory with the database, its state and the audit log.
struct Fx {
    _dir: tempfile::TempDir,
    root: PathBuf,
    db: PathBuf,
    audit: PathBuf,
    /// Logical digests of the database states the user may find after a fault.
    allowed: std::cell::RefCell<BTreeSet<String>>,
    /// The state a restore replaces, which must never be lost.
    changed: std::cell::RefCell<Option<String>>,
}

impl Fx {
    fn new() -> Fx {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        let db = root.join("engine.db");
        let audit = root.join("audit");
        Fx { _dir: dir, db, audit, root, allowed: Default::default(), changed: Default::default() }
    }

    fn warden(&self) -> Command {
        let mut c = Command::new(WARDEN);
        c.current_dir(&self.root)
            .env("WARDEN_AUDIT_DIR", &self.audit)
            .env_remove("WARDEN_PAUSE_AT")
            .env_remove("WARDEN_CONFIG")
            .env_remove("WARDEN_LOCK_FD")
            .env_remove("WARDEN_FAULT")
            .env_remove("RUST_LOG");
        c
    }

    fn ok(&self, args: &[&str]) -> Output {
        let out = self.warden().args(args).output().unwrap();
        assert!(
            out.status.success(),
            "setup `warden {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn db_arg(&self) -> OsString {
        self.db.clone().into_os_string()
    }

    fn allow_current(&self) {
        let d = digest(&self.db).expect("the fixture database is readable");
        self.allowed.borrow_mut().insert(d);
    }
}

fn os(v: &[&str]) -> Vec<OsString> {
    v.iter().map(OsString::from).collect()
}

fn with_db(fx: &Fx, v: &[&str]) -> Vec<OsString> {
    let mut a = os(v);
    a.push("--db".into());
    a.push(fx.db_arg());
    a
}

/// A small database in rollback mode: a few pages, an index, an overflow row.
fn make_db(db: &Path) {
    let c = rusqlite::Connection::open(db).unwrap();
    c.execute_batch(
        "PRAGMA journal_mode=DELETE; CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);
         CREATE INDEX t_v ON t(v);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 120)
         INSERT INTO t(v) SELECT printf('row-%04d-%s', i, hex(randomblob(20))) FROM n;
         INSERT INTO t(v) VALUES (hex(randomblob(3000)));",
    )
    .unwrap();
}

fn change_db(db: &Path) {
    let c = rusqlite::Connection::open(db).unwrap();
    c.execute_batch("DELETE FROM t WHERE id % 3 = 0; INSERT INTO t(v) VALUES ('changed after the backup');").unwrap();
}

/// The logical content of a database (`None` when it cannot be read).
fn digest(db: &Path) -> Option<String> {
    let c = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).ok()?;
    c.query_row("SELECT count(*) || ':' || total(id) || ':' || sum(length(v)) FROM t", [], |r| r.get(0)).ok()
}

fn integrity(db: &Path) -> Result<(), String> {
    let c = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| format!("cannot open {}: {e}", db.display()))?;
    let r: String =
        c.query_row("PRAGMA integrity_check", [], |r| r.get(0)).map_err(|e| format!("integrity_check: {e}"))?;
    if r == "ok" { Ok(()) } else { Err(format!("integrity_check of {}: {r}", db.display())) }
}

// ---------------------------------------------------------------------------------------
// The common checks
// ---------------------------------------------------------------------------------------

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        out.push(p.clone());
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            walk(&p, out);
        }
    }
}

fn check_live(fx: &Fx, phase: Phase, may_be_absent: bool) -> Result<(), String> {
    if !fx.db.exists() {
        return if may_be_absent && phase == Phase::Faulted {
            Ok(())
        } else {
            Err(format!("the live database {} is gone", fx.db.display()))
        };
    }
    integrity(&fx.db)?;
    let d = digest(&fx.db).ok_or("the live database has no readable table t")?;
    if !fx.allowed.borrow().contains(&d) {
        return Err(format!("the live database holds a state the user never had: {d}"));
    }
    Ok(())
}

/// Every listed backup verifies, and the anchor (the newest verified backup made in the
/// setup) is still one of them.
fn check_backups(fx: &Fx, anchor: Option<&str>) -> Result<(), String> {
    if anchor.is_none() && newest_backup(fx).is_none() {
        // Nothing was ever backed up here (an import): nothing may be listed either.
        return Ok(());
    }
    let out = fx.warden().args(["backups", "verify", "--all", "--json"]).arg("--db").arg(&fx.db).output().unwrap();
    if !out.status.success() {
        return Err(format!(
            "`warden backups verify --all` failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    if let Some(a) = anchor
        && !String::from_utf8_lossy(&out.stdout).contains(a)
    {
        return Err(format!("the verified backup {a} made before the fault is no longer listed"));
    }
    Ok(())
}

fn check_audit(fx: &Fx, torn_allowed: bool) -> Result<(), String> {
    let text = std::fs::read(fx.audit.join("audit.jsonl")).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let bad = text.lines().filter(|l| serde_json::from_str::<serde_json::Value>(l).is_err()).count();
    if bad > usize::from(torn_allowed) {
        return Err(format!("{bad} audit line(s) do not parse"));
    }
    let out = fx.warden().args(["audit", "--json", "-n", "100000"]).output().unwrap();
    if !out.status.success() {
        return Err(format!("`warden audit` failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(())
}

fn check_no_temps(fx: &Fx) -> Result<(), String> {
    let mut all = Vec::new();
    walk(&fx.root, &mut all);
    let left: Vec<_> = all
        .iter()
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().contains(TMP_MARK)))
        .map(|p| p.strip_prefix(&fx.root).unwrap().display().to_string())
        .collect();
    if left.is_empty() { Ok(()) } else { Err(format!("temporary files left after the clean run: {left:?}")) }
}

/// The exit codes of the README's table.
fn documented(code: i32) -> bool {
    matches!(code, 1..=3 | 10..=20 | 64..=79)
}

// ---------------------------------------------------------------------------------------
// The loop
// ---------------------------------------------------------------------------------------

struct Tally {
    steps: u64,
    injected: u64,
    tolerated: u64,
    failures: Vec<String>,
}

fn trace_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(str::to_owned).collect()
}

fn run_faulted(fx: &Fx, args: &[OsString], spec: &str, trace: &Path) -> Output {
    let _ = std::fs::remove_file(trace);
    fx.warden()
        .args(args)
        .env("WARDEN_FAULT", spec)
        .env("WARDEN_FAULT_ROOT", &fx.root)
        .env("WARDEN_FAULT_TRACE", trace)
        .env("WARDEN_FAULT_EXE", Path::new(WARDEN).file_name().unwrap())
        .output()
        .unwrap()
}

/// The steps of a clean traced run of the case: (k, line).
fn learn(case: &Case) -> Vec<String> {
    let fx = Fx::new();
    (case.setup)(&fx);
    let trace = fx.root.with_file_name(format!("{}-trace", fx.root.file_name().unwrap().to_string_lossy()));
    let out = run_faulted(&fx, &(case.args)(&fx), if case.reads { "trace:read" } else { "trace" }, &trace);
    assert!(
        out.status.success(),
        "{}: the traced clean run failed: {}",
        case.name,
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = trace_lines(&trace);
    let _ = std::fs::remove_file(&trace);
    assert!(!lines.is_empty(), "{}: the traced run counted no step: the fault layer is not in this binary", case.name);
    lines
}

fn one(case: &Case, kind: Kind, k: u64, tally: &mut Tally) {
    let fx = Fx::new();
    (case.setup)(&fx);
    let anchor = newest_backup(&fx);
    let args = (case.args)(&fx);
    let trace = fx.root.with_file_name(format!("{}-trace", fx.root.file_name().unwrap().to_string_lossy()));
    let spec = if case.reads { format!("{}:read", kind.spec(k)) } else { kind.spec(k) };
    let out = run_faulted(&fx, &args, &spec, &trace);
    let lines = trace_lines(&trace);
    let _ = std::fs::remove_file(&trace);
    let hit = lines.iter().find(|l| l.contains(" injected=") || l.ends_with(" killed")).cloned();
    let mut fail = |what: String| {
        tally.failures.push(format!(
            "{} {} k={k} ({}): {what}",
            case.name,
            kind.name(),
            hit.as_deref().unwrap_or("no step hit")
        ));
    };
    tally.steps += 1;
    if hit.is_some() {
        tally.injected += 1;
    }
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    match (kind, out.status.code(), out.status.signal()) {
        (Kind::Kill, _, Some(9)) => {}
        (Kind::Kill, Some(0), None) if hit.is_none() => {}
        (Kind::Kill, c, s) => fail(format!("expected SIGKILL, got code {c:?} signal {s:?}: {stderr}")),
        (_, Some(0), None) => {
            if hit.is_some() {
                tally.tolerated += 1;
                if hit.as_deref().is_some_and(|h| h.contains("/audit/")) {
                    fail("exited 0 although one of its audit records was lost".into());
                }
                if case.name == "session" && hit.as_deref().is_some_and(|h| h.contains("/.seal.warden-tmp.")) {
                    fail("exited 0 although the clean close's seal was not written".into());
                }
            }
        }
        (_, Some(c), None) => {
            if !documented(c) {
                fail(format!("exit code {c} is not in the README's table: {stderr}"));
            }
            // Errors name a path on stderr; a report (verify) may say it in its report.
            let stdout = String::from_utf8_lossy(&out.stdout);
            if !stderr.contains(fx.root.to_str().unwrap()) && !stdout.contains(fx.root.to_str().unwrap()) {
                fail(format!("the error names no path: {stderr}"));
            }
        }
        (_, c, s) => fail(format!("ended with code {c:?} signal {s:?}: {stderr}")),
    }
    let torn = kind == Kind::Short;
    let checks = |phase: Phase| -> Result<(), String> {
        check_live(&fx, phase, case.absent_ok)?;
        check_backups(&fx, anchor.as_deref())?;
        check_audit(&fx, torn)?;
        (case.extra)(&fx, phase)
    };
    if let Err(e) = checks(Phase::Faulted) {
        fail(format!("after the fault: {e}"));
    }
    let rerun = case.rerun.map_or_else(|| args.clone(), |r| r(&fx));
    let again = fx.warden().args(&rerun).output().unwrap();
    let done = case.done_is_73
        && again.status.code() == Some(73)
        && String::from_utf8_lossy(&again.stderr).contains("already exists");
    if !again.status.success() && !done {
        fail(format!(
            "the clean run after the fault failed ({}): {}",
            again.status,
            String::from_utf8_lossy(&again.stderr)
        ));
        return;
    }
    if let Err(e) = checks(Phase::Recovered).and_then(|()| check_no_temps(&fx)) {
        fail(format!("after the clean run: {e}"));
    }
}

fn newest_backup(fx: &Fx) -> Option<String> {
    let dir = fx.db.with_file_name("engine.db.warden/backups");
    let mut ids: Vec<String> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(".json").map(str::to_owned))
        .filter(|n| !n.starts_with('.'))
        .collect();
    ids.sort();
    ids.pop()
}

fn deep() -> bool {
    std::env::var("WARDEN_CAMPAIGN").is_ok_and(|v| v == "deep")
}

fn campaign(case: &Case) {
    let steps = learn(case);
    let k_max = steps.len() as u64;
    let is_write: Vec<bool> = steps.iter().map(|l| l.split(' ').nth(1) == Some("write")).collect();
    let mut kinds = if case.reads {
        vec![Kind::Kill, Kind::Eio]
    } else {
        vec![Kind::Kill, Kind::Eio, Kind::EnospcPersistent, Kind::Short]
    };
    if deep() {
        kinds.extend(if case.reads { &[Kind::EioPersistent][..] } else { &[Kind::EioPersistent, Kind::Enospc][..] });
    }
    let mut report = Vec::new();
    let mut failures = Vec::new();
    for kind in kinds {
        let mut t = Tally { steps: 0, injected: 0, tolerated: 0, failures: Vec::new() };
        for k in 1..=k_max {
            if kind == Kind::Short && !is_write[(k - 1) as usize] {
                continue;
            }
            one(case, kind, k, &mut t);
        }
        let line = format!(
            "campaign {:<17} {:<16} steps {:>4}  faults injected {:>4}  tolerated {:>3}  failures {}",
            kind.name(),
            case.name,
            t.steps,
            t.injected,
            t.tolerated,
            t.failures.len()
        );
        println!("{line}");
        report.push(line);
        failures.extend(t.failures);
    }
    if let Some(p) = std::env::var_os("WARDEN_CAMPAIGN_SUMMARY") {
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(p).unwrap();
        for l in &report {
            writeln!(f, "{l}").unwrap();
        }
    }
    assert!(failures.is_empty(), "{} failure(s) in {}:\n{}", failures.len(), case.name, failures.join("\n"));
}

// ---------------------------------------------------------------------------------------
// The cases
// ---------------------------------------------------------------------------------------

fn setup_backed_up(fx: &Fx) {
    make_db(&fx.db);
    fx.allow_current();
    fx.ok(&["backup", "--db", fx.db.to_str().unwrap()]);
}

fn no_extra(_: &Fx, _: Phase) -> Result<(), String> {
    Ok(())
}

macro_rules! case_test {
    ($name:ident, $case:expr) => {
        #[test]
        #[cfg_attr(not(feature = "faults"), ignore = "needs the fault layer: cargo test --features testing,faults")]
        fn $name() {
            campaign(&$case);
        }
    };
}

case_test!(
    backup,
    Case {
        absent_ok: false,
        done_is_73: false,
        reads: false,
        name: "backup",
        setup: setup_backed_up,
        args: |fx| with_db(fx, &["backup"]),
        rerun: None,
        extra: no_extra
    }
);

case_test!(
    verify,
    Case {
        absent_ok: false,
        done_is_73: false,
        name: "backups-verify",
        reads: true,
        setup: setup_backed_up,
        // The scratch copy it checks inside the fault root too, so SQLite's reads count.
        args: |fx| {
            let mut a = with_db(fx, &["backups", "verify", "--all", "--scratch-dir"]);
            a.insert(4, fx.root.clone().into_os_string());
            a
        },
        rerun: None,
        extra: no_extra,
    }
);

case_test!(
    prune,
    Case {
        absent_ok: false,
        done_is_73: false,
        reads: false,
        name: "prune",
        setup: |fx| {
            setup_backed_up(fx);
            fx.ok(&["backup", "--db", fx.db.to_str().unwrap()]);
            fx.ok(&["backup", "--db", fx.db.to_str().unwrap()]);
        },
        args: |fx| with_db(fx, &["prune", "--keep-last", "1"]),
        rerun: None,
        extra: |fx, phase| {
            let n = std::fs::read_dir(fx.db.with_file_name("engine.db.warden/backups"))
                .unwrap()
                .flatten()
                .filter(|e| {
                    // Manifests: a backup in the page store has no data file.
                    e.file_name().to_string_lossy().ends_with(".json")
                        && !e.file_name().to_string_lossy().starts_with('.')
                })
                .count();
            // --keep-last 1 keeps the newest and, while the daily buckets are short, the
            // oldest (what a clean prune of this set keeps).
            if phase == Phase::Recovered && n != 2 {
                return Err(format!("{n} backups after prune --keep-last 1, where a clean prune keeps 2"));
            }
            Ok(())
        },
    }
);

case_test!(
    snapshot,
    Case {
        absent_ok: false,
        done_is_73: false,
        reads: false,
        name: "snapshot",
        setup: |fx| {
            setup_backed_up(fx);
            fx.ok(&["snapshot", "--db", fx.db.to_str().unwrap()]);
            change_db(&fx.db);
            fx.allow_current();
        },
        args: |fx| with_db(fx, &["snapshot"]),
        rerun: None,
        extra: |fx, _| {
            let dir = fx.db.with_file_name("engine.db.warden/snapshots");
            for e in std::fs::read_dir(&dir).map_err(|e| e.to_string())?.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') || !name.ends_with(".json") {
                    continue;
                }
                let m: serde_json::Value = serde_json::from_slice(&std::fs::read(e.path()).unwrap())
                    .map_err(|err| format!("snapshot manifest {name} does not parse: {err}"))?;
                let file = dir.join(m["file"].as_str().unwrap_or_default());
                if !file.exists() {
                    return Err(format!("{name} names {}, which is missing", file.display()));
                }
                if common::proc::sha256(&file) != m["sha256"].as_str().unwrap_or_default() {
                    return Err(format!("snapshot {name} does not match its manifest"));
                }
            }
            let latest = dir.join("latest.sqlite");
            if latest.exists() { integrity(&latest) } else { Ok(()) }
        },
    }
);

fn setup_changed_since_backup(fx: &Fx) {
    setup_backed_up(fx);
    change_db(&fx.db);
    fx.allow_current();
    *fx.changed.borrow_mut() = digest(&fx.db);
}

/// The state the restore replaced is kept: live, or under `<db>.warden/`.
fn replaced_kept(fx: &Fx, _: Phase) -> Result<(), String> {
    let Some(changed) = fx.changed.borrow().clone() else { return Ok(()) };
    let mut all = Vec::new();
    walk(&fx.root.join("engine.db.warden"), &mut all);
    all.push(fx.db.clone());
    let kept = all
        .iter()
        .filter(|p| p.is_file() && p.extension().is_none_or(|e| e != "json"))
        .any(|p| digest(p).as_deref() == Some(changed.as_str()));
    if kept { Ok(()) } else { Err("the state the restore replaced is nowhere: it was lost".into()) }
}

case_test!(
    restore,
    Case {
        absent_ok: true,
        done_is_73: false,
        reads: false,
        name: "restore",
        setup: setup_changed_since_backup,
        args: |fx| with_db(fx, &["restore"]),
        rerun: None,
        extra: replaced_kept,
    }
);

case_test!(
    restore_to,
    Case {
        absent_ok: false,
        done_is_73: false,
        reads: false,
        name: "restore-to",
        setup: setup_backed_up,
        args: |fx| {
            let mut a = with_db(fx, &["restore", "--to"]);
            a.insert(2, fx.root.join("copy.db").into_os_string());
            a
        },
        // The same target unless the faulted run finished it (then it is taken).
        rerun: Some(|fx| {
            let mut a = with_db(fx, &["restore", "--to"]);
            let name = if fx.root.join("copy.db").exists() { "copy2.db" } else { "copy.db" };
            a.insert(2, fx.root.join(name).into_os_string());
            a
        }),
        extra: |fx, _| {
            let c = fx.root.join("copy.db");
            if c.exists() {
                integrity(&c)?;
                if !fx.allowed.borrow().contains(&digest(&c).unwrap_or_default()) {
                    return Err("copy.db holds a state that was never backed up".into());
                }
            }
            Ok(())
        },
    }
);

case_test!(
    drill,
    Case {
        absent_ok: false,
        done_is_73: false,
        reads: false,
        name: "drill",
        setup: setup_backed_up,
        args: |fx| with_db(fx, &["drill"]),
        rerun: None,
        extra: no_extra
    }
);

fn session_args(fx: &Fx) -> Vec<OsString> {
    let mut a = with_db(fx, &["run"]);
    a.extend(os(&["--", ENGINE, "--trades", "3"]));
    a
}

fn trades_consistent(fx: &Fx, _: Phase) -> Result<(), String> {
    let c = rusqlite::Connection::open_with_flags(&fx.db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| e.to_string())?;
    let ok: Option<bool> =
        c.query_row("SELECT (SELECT count(*) FROM trades) = (SELECT trades FROM ledger)", [], |r| r.get(0)).ok();
    if ok == Some(false) {
        return Err("trades and ledger disagree: a transaction was torn".into());
    }
    let dir = fx.db.with_file_name("engine.db.warden/sessions");
    let mut all = Vec::new();
    walk(&dir, &mut all);
    for p in all.iter().filter(|p| p.extension().is_some_and(|e| e == "json")) {
        if p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')) {
            continue;
        }
        let bytes = std::fs::read(p).unwrap_or_default();
        serde_json::from_slice::<serde_json::Value>(&bytes)
            .map_err(|e| format!("artifact {} does not parse: {e}", p.display()))?;
    }
    Ok(())
}

/// Every database state a session may leave: the engine's trades change it, so the live
/// check compares what it can: integrity and the untouched table `t`.
fn setup_session(fx: &Fx) {
    setup_backed_up(fx);
}

case_test!(
    session,
    Case {
        absent_ok: false,
        done_is_73: false,
        reads: false,
        name: "session",
        setup: setup_session,
        args: session_args,
        rerun: None,
        extra: trades_consistent
    }
);

case_test!(
    accept,
    Case {
        absent_ok: false,
        done_is_73: false,
        reads: false,
        name: "accept",
        setup: |fx| {
            setup_backed_up(fx);
            let a = session_args(fx);
            let out = fx.warden().args(&a).output().unwrap();
            assert!(out.status.success(), "setup session failed: {}", String::from_utf8_lossy(&out.stderr));
            change_db(&fx.db);
            fx.allow_current();
        },
        args: |fx| with_db(fx, &["accept"]),
        rerun: None,
        extra: no_extra,
    }
);

case_test!(
    export,
    Case {
        absent_ok: false,
        done_is_73: false,
        reads: false,
        name: "migrate-export",
        setup: setup_backed_up,
        args: |fx| {
            let mut a = with_db(fx, &["migrate", "export", "--backups", "all", "--to"]);
            a.insert(5, fx.root.join("bundle").into_os_string());
            a
        },
        // The same target unless the faulted run finished it (then it is taken).
        rerun: Some(|fx| {
            let mut a = with_db(fx, &["migrate", "export", "--backups", "all", "--to"]);
            let name = if fx.root.join("bundle").exists() { "bundle2" } else { "bundle" };
            a.insert(5, fx.root.join(name).into_os_string());
            a
        }),
        extra: |fx, phase| {
            let b = fx.root.join("bundle");
            if !b.exists() {
                return if phase == Phase::Faulted { Ok(()) } else { Err("no bundle after the clean run".into()) };
            }
            let probe = fx.root.join(format!("probe-{}.db", phase as u8));
            let out = fx.warden().args(["migrate", "import"]).arg(&b).arg("--db").arg(&probe).output().unwrap();
            if !out.status.success() {
                return Err(format!("the published bundle does not import: {}", String::from_utf8_lossy(&out.stderr)));
            }
            Ok(())
        },
    }
);

case_test!(
    import,
    Case {
        absent_ok: true,
        done_is_73: true,
        reads: false,
        name: "migrate-import",
        setup: |fx| {
            let src = fx.root.join("old/engine.db");
            std::fs::create_dir(src.parent().unwrap()).unwrap();
            make_db(&src);
            fx.ok(&["backup", "--db", src.to_str().unwrap()]);
            fx.ok(&[
                "migrate",
                "export",
                "--db",
                src.to_str().unwrap(),
                "--to",
                fx.root.join("bundle").to_str().unwrap(),
            ]);
            let c = rusqlite::Connection::open(&src).unwrap();
            let d: String = c
                .query_row("SELECT count(*) || ':' || total(id) || ':' || sum(length(v)) FROM t", [], |r| r.get(0))
                .unwrap();
            fx.allowed.borrow_mut().insert(d);
        },
        args: |fx| {
            let mut a = with_db(fx, &["migrate", "import"]);
            a.insert(2, fx.root.join("bundle").into_os_string());
            a
        },
        rerun: None,
        extra: no_extra,
    }
);

//! `warden restore` and `warden drill` end to end: real sessions make real backups, real
//! damage is done to the live database and to backups, and `kill -9` lands exactly at each
//! restore step (the `WARDEN_PAUSE_AT` seam stops the process there first).
//!
//! What is proved (issue 4, "Restore"): a restore brings back exactly the newest good backup
//! and keeps the damaged set, byte for byte, in `replaced/`; a backup with one flipped byte
//! that no pragma notices is refused by its hash with nothing changed; a restore while a
//! session runs is refused with the holder named; a restore killed at any step leaves the
//! old or the restored database (or both pieces, named in the intent record) and the next
//! restore finishes it; `--dry-run` changes nothing; `--to` never overwrites; the drill
//! passes on good backups and fails on a backup damaged after publication.

mod common;

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::Scratch;
use common::proc::*;
use nix::sys::signal::Signal;
use serde_json::Value;

// ---------------------------------------------------------------------------------------------
// Commands and paths
// ---------------------------------------------------------------------------------------------

fn replaced_of(db: &Path) -> PathBuf {
    state_dir(db).join("replaced")
}

fn intent_of(db: &Path) -> PathBuf {
    state_dir(db).join("restore-in-progress.json")
}

/// `warden run --db DB [extra] -q -- ENGINE engine_args`, to the end.
fn session(s: &Scratch, db: &Path, extra: &[&str], engine_args: &[&str]) -> Done {
    let mut c = s.warden();
    c.args(["run", "-q", "--db"]).arg(db).args(extra).arg("--").arg(ENGINE).args(engine_args);
    run_to_end(c, Duration::from_secs(120))
}

/// Two clean sessions: 5 trades, then 5 more. Backups: post (5), pre (5), post (10).
fn two_sessions(s: &Scratch, db: &Path) {
    let r = session(s, db, &["--create"], &["--create", "--trades", "5"]);
    assert_eq!(r.code(), Some(0), "{}", r.diag());
    let r = session(s, db, &[], &["--trades", "5"]);
    assert_eq!(r.code(), Some(0), "{}", r.diag());
}

/// `warden restore --db DB args...`, to the end.
fn restore(s: &Scratch, db: &Path, args: &[&str]) -> Done {
    let mut c = s.warden();
    c.args(["restore", "--db"]).arg(db).args(args);
    run_to_end(c, Duration::from_secs(120))
}

fn drill(s: &Scratch, db: &Path, args: &[&str]) -> Done {
    let mut c = s.warden();
    c.args(["drill", "--db"]).arg(db).args(args);
    run_to_end(c, Duration::from_secs(120))
}

// ---------------------------------------------------------------------------------------------
// Files, backups, data
// ---------------------------------------------------------------------------------------------

/// Every manifest in the store, newest first.
fn newest_manifests(db: &Path) -> Vec<Value> {
    let mut v = manifests(&backups_of(db));
    v.reverse();
    v
}

fn is_good(m: &Value) -> bool {
    m["verified"] == true && m["kind"] != "post_crash"
}

/// (id, data file) of the newest good backup, and of the one before it.
fn good_backups(db: &Path) -> Vec<(String, PathBuf)> {
    newest_manifests(db)
        .into_iter()
        .filter(is_good)
        .map(|m| (m["id"].as_str().unwrap().to_owned(), backups_of(db).join(m["file"].as_str().unwrap())))
        .collect()
}

/// Every trade, read with plain read-only rusqlite (the files are rollback-journal files, so
/// a read-only open creates nothing beside them).
fn trades(path: &Path) -> Vec<Trade> {
    let c = rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    trades_upto(&c, i64::MAX)
}

fn page_size(path: &Path) -> usize {
    let mut h = [0u8; 18];
    std::fs::File::open(path).unwrap().read_exact(&mut h).unwrap();
    match u16::from_be_bytes([h[16], h[17]]) {
        1 => 65536,
        n => usize::from(n),
    }
}

/// Overwrites page 2 with garbage: the database is damaged, plainly.
fn damage_page(db: &Path) {
    let ps = page_size(db);
    let mut bytes = std::fs::read(db).unwrap();
    assert!(bytes.len() >= 2 * ps, "{} has a second page", db.display());
    bytes[ps..2 * ps].fill(0xAB);
    std::fs::write(db, bytes).unwrap();
}

/// The crashed-looking set the restores replace: a damaged database plus a garbage `-wal` and
/// `-shm` beside it. Returns the set's bytes (`""`, `-wal`, `-shm`, `-journal`).
fn make_damaged_set(db: &Path) -> Vec<(&'static str, Option<Vec<u8>>)> {
    damage_page(db);
    std::fs::write(sidecar(db, "-wal"), b"not a wal, but it must travel with the database").unwrap();
    std::fs::write(sidecar(db, "-shm"), vec![0x5Au8; 32768]).unwrap();
    set_bytes(db, &SET)
}

/// Every file under `dir` (relative path, SHA-256 of the content; directories as `dir`),
/// sorted, except the audit log and the files whose name ends with one of `except`.
fn tree(dir: &Path, except: &[&str]) -> Vec<(PathBuf, String)> {
    fn walk(root: &Path, dir: &Path, except: &[&str], out: &mut Vec<(PathBuf, String)>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().to_owned();
            if rel.starts_with("audit") || except.iter().any(|x| p.to_string_lossy().ends_with(x)) {
                continue;
            }
            if p.is_dir() {
                out.push((rel, "dir".into()));
                walk(root, &p, except, out);
            } else {
                out.push((rel, sha256(&p)));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, except, &mut out);
    out.sort();
    out
}

/// The directories in `replaced/` that hold exactly `set` (byte for byte).
fn dirs_holding(db: &Path, set: &[(&'static str, Option<Vec<u8>>)]) -> Vec<PathBuf> {
    let name = db.file_name().unwrap().to_string_lossy().into_owned();
    names(&replaced_of(db))
        .into_iter()
        .map(|d| replaced_of(db).join(d))
        .filter(|d| set.iter().all(|(suffix, bytes)| std::fs::read(d.join(format!("{name}{suffix}"))).ok() == *bytes))
        .collect()
}

/// Nothing beside the restored database: no `-wal`, `-shm`, `-journal`, no restore copy.
fn assert_clean_beside(db: &Path, context: &str) {
    for s in ["-wal", "-shm", "-journal"] {
        assert!(!sidecar(db, s).exists(), "{context}: {s} beside the restored file");
    }
    let leftovers: Vec<String> = names(db.parent().unwrap()).into_iter().filter(|n| n.contains(TMP_MARK)).collect();
    assert!(leftovers.is_empty(), "{context}: leftover copies {leftovers:?}");
    assert!(!intent_of(db).exists(), "{context}: the intent record is still there");
}

/// Flips one byte of page 1 in the gap between its cell pointer array and its cell content:
/// space no pragma reads. Returns the offset.
fn flip_unused_byte(path: &Path) -> usize {
    let mut bytes = std::fs::read(path).unwrap();
    let h = 100; // page 1's b-tree header follows the database header
    assert!(bytes[h] == 0x0D || bytes[h] == 0x05, "page 1 is a table b-tree page");
    let header_len = if bytes[h] == 0x0D { 8 } else { 12 };
    let cells = usize::from(u16::from_be_bytes([bytes[h + 3], bytes[h + 4]]));
    let content = usize::from(u16::from_be_bytes([bytes[h + 5], bytes[h + 6]]));
    let gap_start = h + header_len + 2 * cells;
    assert!(content > gap_start + 16, "page 1 has unused space ({gap_start}..{content})");
    let at = (gap_start + content) / 2;
    bytes[at] ^= 0xFF;
    std::fs::write(path, bytes).unwrap();
    at
}

// ---------------------------------------------------------------------------------------------
// 1. Round trip
// ---------------------------------------------------------------------------------------------

#[test]
fn round_trip_brings_back_the_newest_good_backup_and_keeps_the_damaged_set() {
    let s = Scratch::with_file_backups();
    let db = s.path("e.db");
    two_sessions(&s, &db);
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o640)).unwrap();
    let good = good_backups(&db);
    let (newest_id, newest_file) = good[0].clone();
    let expected = trades(&newest_file);
    assert_eq!(expected.len(), 10, "the newest good backup is the second session's post backup");

    let damaged = make_damaged_set(&db);
    let refused = session(&s, &db, &[], &["--trades", "1"]);
    assert_ne!(refused.code(), Some(0), "the gate refuses the damaged set: {}", refused.diag());
    let damaged_now = set_bytes(&db, &SET);
    assert_eq!(damaged_now, damaged, "the refused session changed nothing");

    let r = restore(&s, &db, &["--json"]);
    assert_eq!(r.code(), Some(0), "{}", r.diag());
    let rep = r.json();
    assert_eq!(rep["outcome"], "restored", "{rep:#}");
    assert_eq!(rep["in_place"], true);
    assert_eq!(rep["backup"]["id"], newest_id.as_str());
    assert_eq!(rep["verification"]["ok"], true);
    assert_eq!(rep["verification"]["hash_ok"], true);
    // The copy hashes to content that passed a full check when it was written: the same
    // bytes give the same verdict, so it is not checked again (issue 14, P4) and says why.
    assert!(rep["verification"]["integrity"].is_null(), "{rep:#}");
    let before = rep["verification"]["checked_before"].as_str().unwrap_or_default();
    assert!(before.contains("passed a full check"), "{rep:#}");
    assert_eq!(rep["mode"], "0640");
    let moved: Vec<&str> = rep["moved_aside"].as_array().unwrap().iter().map(|m| m["from"].as_str().unwrap()).collect();
    let want: Vec<String> = ["", "-wal", "-shm"].iter().map(|x| sidecar(&db, x).display().to_string()).collect();
    assert_eq!(moved, want, "the database first, then its sidecars: {rep:#}");

    // The data is exactly the backup's; the file is the backup, byte for byte.
    assert_eq!(sha256(&db), sha256(&newest_file));
    assert_eq!(trades(&db), expected);
    assert_eq!(mode(&db), 0o640, "the replaced file's mode is kept");
    assert_clean_beside(&db, "after the restore");
    // The damaged set is kept, byte for byte, in the directory the report names.
    let kept = dirs_holding(&db, &damaged);
    assert_eq!(kept.len(), 1, "{:?}", names(&replaced_of(&db)));
    assert_eq!(rep["replaced_dir"].as_str().map(PathBuf::from), Some(kept[0].clone()));
    assert_eq!(mode(&kept[0]), 0o700);

    // The audit log says which backup, its hash, what was moved aside and by whom.
    let audit = s.audit_lines();
    let restored: Vec<&Value> = audit.iter().filter(|r| r["event"] == "restored").collect();
    assert_eq!(restored.len(), 1, "{audit:#?}");
    let reason = restored[0]["reason"].as_str().unwrap();
    assert!(reason.contains(&newest_id) && reason.contains(&sha256(&newest_file)), "{reason}");
    assert!(reason.contains("e.db-wal") && reason.contains("replaced"), "{reason}");
    assert_eq!(restored[0]["db"], db.display().to_string());
    assert!(restored[0]["pid"].is_u64() && restored[0]["uid"].is_u64());
    assert!(audit.iter().any(|r| r["event"] == "restore_started"), "started is recorded before moving");

    // A session afterwards passes the gate, and the engine sees no change outside warden.
    let before = s.audit_lines().len();
    let r = session(&s, &db, &[], &["--trades", "5"]);
    assert_eq!(r.code(), Some(0), "{}", r.diag());
    assert_eq!(trades(&db).len(), 15);
    let after = s.audit_lines();
    assert!(
        after[before..]
            .iter()
            .all(|r| r["event"] != "changed_outside_warden" && r["event"] != "unclean_previous_close"),
        "a restore is a change through warden: {:#?}",
        &after[before..]
    );
}

// ---------------------------------------------------------------------------------------------
// 2. One flipped byte no pragma sees
// ---------------------------------------------------------------------------------------------

#[test]
fn a_flipped_byte_the_pragmas_miss_is_refused_by_the_hash() {
    let s = Scratch::with_file_backups();
    let db = s.path("f.db");
    two_sessions(&s, &db);
    let good = good_backups(&db);
    let (newest_id, newest_file) = good[0].clone();
    let data = trades(&newest_file);
    flip_unused_byte(&newest_file);

    // The pragmas pass on the flipped copy: only the hash can catch it.
    let probe = s.path("probe.sqlite");
    std::fs::copy(&newest_file, &probe).unwrap();
    let (report, _) =
        sqlite_warden::copies::backup::check_file(&probe, sqlite_warden::copies::backup::CheckMode::Full, None, None);
    assert!(report.ok, "integrity_check and foreign_key_check pass on the flipped copy: {report:?}");
    assert_eq!(trades(&probe), data, "the data itself is intact");
    std::fs::remove_file(&probe).unwrap();

    // Taking the writer lock rewrites its holder record; nothing else may change.
    let before = tree(s.dir.path(), &["-warden.lock"]);
    let r = restore(&s, &db, &["--json"]);
    assert_eq!(r.code(), Some(65), "{}", r.diag());
    let rep = r.json();
    assert_eq!(rep["outcome"], "verification_failed", "{rep:#}");
    assert_eq!(rep["backup"]["id"], newest_id.as_str());
    assert_eq!(rep["verification"]["hash_ok"], false);
    assert!(rep["verification"]["integrity"].is_null(), "the hash is checked first: {rep:#}");
    assert!(rep["verification"]["failure"].as_str().unwrap().contains("sha256"), "{rep:#}");
    assert_eq!(rep["next_candidate"], good[1].0.as_str(), "the next good backup is suggested");
    assert_eq!(tree(s.dir.path(), &["-warden.lock"]), before, "nothing was moved, created or left behind");
    assert!(s.audit_lines().iter().any(|r| r["event"] == "restore_refused"));

    // Human output says why, and what to do.
    let r = restore(&s, &db, &[]);
    assert_eq!(r.code(), Some(65));
    assert!(r.stderr.contains("sha256 mismatch") && r.stderr.contains(&good[1].0), "{}", r.diag());
    assert_eq!(tree(s.dir.path(), &["-warden.lock"]), before);
    let lock = sqlite_warden::guard::lock::inspect(&db).unwrap();
    assert_eq!(lock.state, sqlite_warden::guard::lock::LockState::Free, "the lock is released");

    // The operator picks the previous one.
    let r = restore(&s, &db, &["--from", &good[1].0]);
    assert_eq!(r.code(), Some(0), "{}", r.diag());
    assert_eq!(sha256(&db), sha256(&good[1].1));
}

// ---------------------------------------------------------------------------------------------
// 3. A running session holds the database
// ---------------------------------------------------------------------------------------------

#[test]
fn restore_while_a_session_runs_is_refused_and_the_drill_still_runs() {
    let s = Scratch::with_file_backups();
    let db = s.path("r.db");
    let r = session(&s, &db, &["--create"], &["--create", "--trades", "5"]);
    assert_eq!(r.code(), Some(0), "{}", r.diag());

    let mut c = s.warden();
    c.args(["run", "-q", "--db"]).arg(&db).args(["--", ENGINE, "--trades", "3", "--hold-ms", "20000"]);
    let mut running = Proc::spawn(c);
    running.wait_line(false, "\"ready\"", Duration::from_secs(30));
    let deadline = Instant::now() + Duration::from_secs(30);
    while rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .and_then(|c| c.query_row("SELECT count(*) FROM trades", [], |r| r.get::<_, i64>(0)))
        .unwrap_or(0)
        < 8
    {
        assert!(Instant::now() < deadline, "the engine never committed its trades");
        std::thread::sleep(Duration::from_millis(10));
    }
    let before = set_bytes(&db, &SET);

    for args in [&[][..], &["--dry-run"][..], &["--json"][..]] {
        let r = restore(&s, &db, args);
        assert_eq!(r.code(), Some(75), "{args:?}: {}", r.diag());
        let holder = format!("pid {}", running.pid());
        assert!(r.stderr.contains(&holder) && r.stderr.contains("session"), "names the holder: {}", r.diag());
        if args.contains(&"--json") {
            let j = r.json();
            assert_eq!(j["exit_code"], 75);
            assert!(j["error"].as_str().unwrap().contains(&holder));
        }
    }
    assert_eq!(set_bytes(&db, &SET), before, "nothing changed");
    assert!(!replaced_of(&db).exists() && !intent_of(&db).exists());

    // The drill never touches the live database or its lock: it runs during the session.
    let d = drill(&s, &db, &["--json"]);
    assert_eq!(d.code(), Some(0), "{}", d.diag());
    assert_eq!(set_bytes(&db, &SET), before);

    running.signal(Signal::SIGTERM);
    let done = running.finish(Duration::from_secs(60));
    assert_eq!(done.code(), Some(0), "{}", done.diag());
}

// ---------------------------------------------------------------------------------------------
// 4. kill -9 at every step
// ---------------------------------------------------------------------------------------------

/// Each pause point, and what the next restore must find there: `None` when nothing was
/// recorded yet (before the intent) or any more (after it was removed).
const POINTS: [(&str, Option<&str>); 8] = [
    ("restore-verified", None),
    ("restore-intent-written", Some("rolled_forward")),
    ("restore-moved-db", Some("rolled_forward")),
    ("restore-moved-wal", Some("rolled_forward")),
    ("restore-moved-journal", Some("rolled_forward")),
    ("restore-moved-shm", Some("rolled_forward")),
    ("restore-installed", Some("completed")),
    ("restore-finished", None),
];

/// A fresh copy of `template`'s directory.
fn clone_of(template: &Scratch) -> Scratch {
    let s = Scratch::with_file_backups();
    let st =
        Command::new("cp").arg("-a").arg(format!("{}/.", template.dir.path().display())).arg(s.dir.path()).status();
    assert!(st.unwrap().success());
    s
}

/// `warden restore` stopped at `point` and killed there.
fn kill_restore_at(s: &Scratch, db: &Path, point: &str, while_paused: impl FnOnce()) {
    let mut c = s.warden();
    c.env("WARDEN_PAUSE_AT", point).args(["restore", "--db"]).arg(db);
    let mut p = Proc::spawn(c);
    p.wait_line(true, &format!("paused at {point}"), Duration::from_secs(60));
    wait_state(p.pid(), 'T', Duration::from_secs(10));
    while_paused();
    p.signal(Signal::SIGKILL);
    let _ = p.finish(Duration::from_secs(30));
}

#[test]
#[cfg_attr(
    not(feature = "testing"),
    ignore = "needs the test seams: cargo test --features testing (scripts/test does)"
)]
fn kill_9_at_every_restore_step_never_loses_a_database() {
    let template = Scratch::with_file_backups();
    let tdb = template.path("k.db");
    two_sessions(&template, &tdb);
    let old = make_damaged_set(&tdb);
    let old_db = old[0].1.clone().unwrap();

    for (point, expected) in POINTS {
        let s = clone_of(&template);
        let db = s.path("k.db");
        let (newest_id, newest_file) = good_backups(&db)[0].clone();
        let new_db = std::fs::read(&newest_file).unwrap();

        kill_restore_at(&s, &db, point, || {
            if point == "restore-moved-db" {
                // The restore holds the writer lock throughout: no session can start mid-restore.
                let r = session(&s, &db, &["--create"], &["--create", "--trades", "1"]);
                assert_eq!(r.code(), Some(75), "{point}: {}", r.diag());
                assert!(!db.exists(), "{point}: the refused session created nothing");
            }
        });

        // The user has the old database or the restored one, or both pieces on record.
        let at_path = std::fs::read(&db).ok();
        let intent = intent_of(&db).exists().then(|| read_json(&intent_of(&db)));
        assert_eq!(intent.is_some(), expected.is_some(), "{point}: intent record {intent:?}");
        match (&at_path, &intent) {
            (Some(b), _) if *b == old_db || *b == new_db => {}
            (None, Some(i)) => {
                let temp = std::fs::read(i["temp"].as_str().unwrap()).ok();
                assert_eq!(temp.as_ref(), Some(&new_db), "{point}: the verified copy is named in the intent");
                let kept = PathBuf::from(i["replaced_dir"].as_str().unwrap()).join("k.db");
                assert_eq!(std::fs::read(kept).ok(), Some(old_db.clone()), "{point}: the old database is kept");
            }
            _ => panic!("{point}: neither the old nor the restored database is recoverable ({intent:?})"),
        }

        // The next restore finishes the job.
        let r = restore(&s, &db, &["--json"]);
        assert_eq!(r.code(), Some(0), "{point}: {}", r.diag());
        let rep = r.json();
        assert_eq!(rep["outcome"], "restored", "{point}: {rep:#}");
        assert_eq!(rep["backup"]["id"], newest_id.as_str());
        match expected {
            Some(action) => {
                assert_eq!(rep["recovery"]["performed"], true, "{point}: {rep:#}");
                assert_eq!(rep["recovery"]["action"], action, "{point}: {rep:#}");
                assert!(
                    s.audit_lines().iter().any(|r| r["event"] == "restore_recovered"),
                    "{point}: recovery is audited"
                );
            }
            None => assert!(rep["recovery"].is_null(), "{point}: {rep:#}"),
        }
        assert_eq!(std::fs::read(&db).unwrap(), new_db, "{point}: the database is the backup");
        assert_clean_beside(&db, point);
        assert_eq!(dirs_holding(&db, &old).len(), 1, "{point}: the old set is kept whole, once");
    }
}

#[test]
#[cfg_attr(
    not(feature = "testing"),
    ignore = "needs the test seams: cargo test --features testing (scripts/test does)"
)]
fn an_interrupted_restore_whose_copy_was_damaged_is_rolled_back() {
    let template = Scratch::with_file_backups();
    let tdb = template.path("b.db");
    two_sessions(&template, &tdb);
    let s = clone_of(&template);
    let db = s.path("b.db");
    let old = make_damaged_set(&db);
    let newest = good_backups(&db)[0].1.clone();

    kill_restore_at(&s, &db, "restore-moved-wal", || {});
    let intent = read_json(&intent_of(&db));
    let temp = PathBuf::from(intent["temp"].as_str().unwrap());
    let mut bytes = std::fs::read(&temp).unwrap();
    bytes[200] ^= 0x10;
    std::fs::write(&temp, bytes).unwrap();

    // A dry run says what would happen, and does nothing.
    let before = tree(s.dir.path(), &[]);
    let r = restore(&s, &db, &["--dry-run", "--json"]);
    assert_eq!(r.code(), Some(0), "{}", r.diag());
    let plan = r.json();
    assert_eq!(plan["recovery"]["action"], "rolled_back", "{plan:#}");
    assert_eq!(plan["recovery"]["performed"], false);
    assert_eq!(tree(s.dir.path(), &[]), before);

    // The real run puts the old set back, then restores afresh from the (intact) backup.
    let r = restore(&s, &db, &["--json"]);
    assert_eq!(r.code(), Some(0), "{}", r.diag());
    let rep = r.json();
    assert_eq!(rep["recovery"]["action"], "rolled_back", "{rep:#}");
    assert_eq!(rep["recovery"]["performed"], true);
    assert!(!temp.exists(), "the damaged copy is gone");
    assert_eq!(sha256(&db), sha256(&newest));
    assert_clean_beside(&db, "after the roll-back and the new restore");
    let kept = dirs_holding(&db, &old);
    assert_eq!(kept.len(), 1, "{:?}", names(&replaced_of(&db)));
    assert_eq!(names(&replaced_of(&db)).len(), 1, "the rolled-back directory was removed");
}

// ---------------------------------------------------------------------------------------------
// 5. --dry-run and --to
// ---------------------------------------------------------------------------------------------

#[test]
fn dry_run_changes_nothing_and_to_restores_elsewhere_without_overwriting() {
    let s = Scratch::with_file_backups();
    let db = s.path("d.db");
    two_sessions(&s, &db);
    let (newest_id, newest_file) = good_backups(&db)[0].clone();
    damage_page(&db);

    let before = tree(s.dir.path(), &[]);
    let r = restore(&s, &db, &["--dry-run", "--json"]);
    assert_eq!(r.code(), Some(0), "{}", r.diag());
    let plan = r.json();
    assert_eq!(plan["outcome"], "planned", "{plan:#}");
    assert_eq!(plan["dry_run"], true);
    assert_eq!(plan["backup"]["id"], newest_id.as_str());
    assert_eq!(plan["verification"]["ok"], true, "the plan includes the verification: {plan:#}");
    assert_eq!(plan["moved_aside"][0]["from"], db.display().to_string());
    assert!(plan["replaced_dir"].as_str().unwrap().contains("/replaced/"));
    let r = restore(&s, &db, &["--dry-run"]);
    assert_eq!(r.code(), Some(0), "{}", r.diag());
    assert!(r.stdout.contains("would restore") && r.stdout.contains("would move aside"), "{}", r.diag());
    assert_eq!(tree(s.dir.path(), &[]), before, "a dry run changes nothing, not even the lock file");

    // --to: a new file, the live database untouched, no lock needed.
    let damaged = std::fs::read(&db).unwrap();
    let other = s.path("elsewhere/copy.db");
    std::fs::create_dir(s.path("elsewhere")).unwrap();
    let r = restore(&s, &db, &["--to", other.to_str().unwrap(), "--json"]);
    assert_eq!(r.code(), Some(0), "{}", r.diag());
    let rep = r.json();
    assert_eq!(rep["in_place"], false);
    assert_eq!(rep["target"], other.display().to_string());
    assert_eq!(sha256(&other), sha256(&newest_file));
    assert_eq!(mode(&other), 0o600);
    assert_eq!(std::fs::read(&db).unwrap(), damaged, "the live database is untouched");
    assert!(!replaced_of(&db).exists());
    assert_clean_beside(&other, "--to");

    // Never over an existing file, nor beside a stale -wal.
    let r = restore(&s, &db, &["--to", other.to_str().unwrap()]);
    assert_eq!(r.code(), Some(73), "{}", r.diag());
    assert!(r.stderr.contains("already exists"), "{}", r.diag());
    assert_eq!(sha256(&other), sha256(&newest_file));
    let third = s.path("elsewhere/third.db");
    std::fs::write(sidecar(&third, "-wal"), b"stale").unwrap();
    let r = restore(&s, &db, &["--to", third.to_str().unwrap()]);
    assert_eq!(r.code(), Some(73), "{}", r.diag());
    assert!(!third.exists());
    // A directory means <dir>/<db name>.
    let r = restore(&s, &db, &["--to", s.path("elsewhere").to_str().unwrap()]);
    assert_eq!(r.code(), Some(0), "{}", r.diag());
    assert_eq!(sha256(&s.path("elsewhere/d.db")), sha256(&newest_file));
    // --to the database itself is a usage error.
    let r = restore(&s, &db, &["--to", db.to_str().unwrap()]);
    assert_eq!(r.code(), Some(64), "{}", r.diag());

    // --from a path: a backup carried elsewhere with its manifest.
    let carried = s.path("carried");
    std::fs::create_dir(&carried).unwrap();
    let file = newest_file.file_name().unwrap();
    std::fs::copy(&newest_file, carried.join(file)).unwrap();
    std::fs::copy(backups_of(&db).join(format!("{newest_id}.json")), carried.join(format!("{newest_id}.json")))
        .unwrap();
    let from = carried.join(file);
    let out = s.path("from-path.db");
    let r = restore(&s, &db, &["--from", from.to_str().unwrap(), "--to", out.to_str().unwrap()]);
    assert_eq!(r.code(), Some(0), "{}", r.diag());
    assert_eq!(sha256(&out), sha256(&newest_file));
}

// ---------------------------------------------------------------------------------------------
// 6. Which backups may be restored
// ---------------------------------------------------------------------------------------------

#[test]
fn missing_unknown_and_crash_copies() {
    let s = Scratch::with_file_backups();
    let db = s.path("m.db");
    let r = restore(&s, &db, &[]);
    assert_eq!(r.code(), Some(66), "no backup at all: {}", r.diag());

    let r = session(&s, &db, &["--create"], &["--create", "--trades", "4"]);
    assert_eq!(r.code(), Some(0), "{}", r.diag());
    let r = restore(&s, &db, &["--from", "no-such-backup"]);
    assert_eq!(r.code(), Some(66), "{}", r.diag());

    // The engine fails: its post-crash copy is evidence, never restored unless asked for.
    let r = session(&s, &db, &[], &["--trades", "2", "--exit-code", "3"]);
    assert_eq!(r.code(), Some(3), "{}", r.diag());
    let crash = newest_manifests(&db).into_iter().find(|m| m["kind"] == "post_crash").expect("a crash copy");
    let crash_id = crash["id"].as_str().unwrap();
    let r = restore(&s, &db, &["--json"]);
    assert_eq!(r.code(), Some(0), "{}", r.diag());
    assert_ne!(r.json()["backup"]["id"], crash_id, "the newest good backup is never a crash copy");
    let r = restore(&s, &db, &["--from", crash_id]);
    assert_eq!(r.code(), Some(65), "{}", r.diag());
    assert!(r.stderr.contains("post-crash") && r.stderr.contains("--allow-crash-copy"), "{}", r.diag());
    let r = restore(&s, &db, &["--from", crash_id, "--allow-crash-copy"]);
    assert_eq!(r.code(), Some(0), "it passes every check, so it may be restored on request: {}", r.diag());
    assert_eq!(trades(&db).len(), 6);

    // The database is lost entirely: the restore puts the newest good backup back, and there
    // is nothing to move aside.
    let replaced_before = names(&replaced_of(&db));
    std::fs::remove_file(&db).unwrap();
    let r = restore(&s, &db, &["--json"]);
    assert_eq!(r.code(), Some(0), "{}", r.diag());
    let rep = r.json();
    assert!(rep["replaced_dir"].is_null() && rep["moved_aside"] == serde_json::json!([]), "{rep:#}");
    assert_eq!(rep["mode"], "0600", "no file to take the mode from");
    assert_eq!(mode(&db), 0o600);
    assert_eq!(sha256(&db), sha256(&good_backups(&db)[0].1));
    assert_eq!(names(&replaced_of(&db)), replaced_before, "no empty directory in replaced/");

    // With --json, even a usage or config failure is one JSON document.
    let mut c = s.warden();
    c.args(["restore", "--json"]);
    let r = run_to_end(c, Duration::from_secs(120));
    assert_eq!(r.code(), Some(78), "no database given: {}", r.diag());
    assert_eq!(r.json()["outcome"], "error");
    assert_eq!(r.json()["exit_code"], 78);
}

// ---------------------------------------------------------------------------------------------
// 7. Drills
// ---------------------------------------------------------------------------------------------

#[test]
fn drill_passes_on_good_backups_and_fails_on_one_damaged_after_publication() {
    let s = Scratch::with_file_backups();
    let db = s.path("g.db");
    let record = state_dir(&db).join("drills/latest.json");

    let d = drill(&s, &db, &["--json"]);
    assert_eq!(d.code(), Some(66), "no backup: {}", d.diag());
    assert_eq!(d.json()["outcome"], "no_backup");
    // Nothing is created for a database warden has never backed up (issue 11, defect 9):
    // no `<db>.warden/` for a mistyped path; the report and stderr say so.
    assert!(!state_dir(&db).exists(), "a drill of a path with no backups created {}", state_dir(&db).display());
    assert!(d.stderr.contains("no drill record written"), "{}", d.diag());

    two_sessions(&s, &db);
    let (newest_id, newest_file) = good_backups(&db)[0].clone();
    let live = set_bytes(&db, &SET);
    let lock = std::fs::read(sidecar(&db, "-warden.lock")).unwrap();
    let d = drill(&s, &db, &["--json"]);
    assert_eq!(d.code(), Some(0), "{}", d.diag());
    let rep = d.json();
    let rec = read_json(&record);
    assert_eq!(rec["schema"], 1);
    assert_eq!(rec["ok"], true, "{rec:#}");
    assert_eq!(rec["outcome"], "ok");
    assert_eq!(rec["backup"]["id"], newest_id.as_str());
    assert_eq!(rec["hash_ok"], true);
    assert!(rec["integrity"].is_null(), "content that passed a full check is not checked again: {rec:#}");
    assert!(rec["checked_before"].as_str().unwrap_or_default().contains("passed a full check"), "{rec:#}");
    assert!(rec["bytes"].as_u64().unwrap() > 0 && rec["mb_per_s"].is_number() && rec["duration_ms"].is_u64());
    assert!(rec["finished_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(rep["record_path"], record.display().to_string());
    assert_eq!(rep["backup"], rec["backup"], "stdout carries the record");
    assert_eq!(mode(&record) & 0o777, 0o640);
    let scratch_parent = state_dir(&db);
    assert!(
        names(&scratch_parent).iter().all(|n| !n.contains(TMP_MARK)),
        "the scratch directory is removed: {:?}",
        names(&scratch_parent)
    );
    assert_eq!(set_bytes(&db, &SET), live, "the live database is never touched");
    assert_eq!(std::fs::read(sidecar(&db, "-warden.lock")).unwrap(), lock, "nor its lock");
    let d = drill(&s, &db, &[]);
    assert_eq!(d.code(), Some(0), "{}", d.diag());
    assert!(d.stdout.contains("drill passed") && d.stdout.contains("MB/s"), "{}", d.diag());
    assert!(d.stdout.contains("not checked again") && d.stdout.contains("--recheck"), "{}", d.diag());
    // --recheck (the nightly drill's) runs the full check on the restored copy anyway.
    let d = drill(&s, &db, &["--json", "--recheck"]);
    assert_eq!(d.code(), Some(0), "{}", d.diag());
    let rec = read_json(&record);
    assert_eq!(rec["integrity"]["ok"], true, "{rec:#}");
    assert_eq!(rec["integrity"]["mode"], "full", "{rec:#}");
    assert!(rec["checked_before"].is_null(), "{rec:#}");

    // A byte of the newest good backup changes after publication: the drill fails.
    let mut bytes = std::fs::read(&newest_file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&newest_file, bytes).unwrap();
    let d = drill(&s, &db, &["--json"]);
    assert_eq!(d.code(), Some(65), "{}", d.diag());
    let rec = read_json(&record);
    assert_eq!(rec["ok"], false);
    assert_eq!(rec["outcome"], "failed");
    assert_eq!(rec["hash_ok"], false);
    assert!(rec["messages"][0].as_str().unwrap().contains("sha256"), "{rec:#}");
    let d = drill(&s, &db, &["--scratch", s.path("scratch").to_str().unwrap()]);
    assert_eq!(d.code(), Some(65), "{}", d.diag());
    assert!(d.stdout.contains("FAILED"), "{}", d.diag());
    assert!(names(&s.path("scratch")).is_empty(), "a --scratch directory is left empty");
    assert!(s.audit_lines().iter().filter(|r| r["event"] == "restore_drill").count() >= 4);
}

//! Sealed sessions (issue 12): nothing changes unseen between sessions.
//!
//! `PRAGMA integrity_check` proves structure, not content: a payload bit flip, a page put
//! back to an older version, a half-old page, a main file that lost what its `-wal` held, a
//! truncated file all pass it (each case below asserts that first), and before seals the
//! gate let the engine start on such a file. Now a clean close seals the database and the
//! next `warden run` refuses any difference (exit 67) before the engine starts, naming the
//! pages and what they belong to; `warden check` says the same and `warden status` is
//! unhealthy; restoring the sealed backup or `warden accept` is the way out; honest
//! sessions, crashed sessions and restores never trip it.
//!
//! Real processes (`warden`, the demo engine), real files, damage made in place with the
//! inode kept and the modification time put back, so only the content differs.

mod common;

use std::os::unix::fs::{FileExt as _, MetadataExt as _};
use std::path::Path;
use std::time::Duration;

use common::Scratch;
use common::proc::*;

const MINUTE: Duration = Duration::from_secs(60);

fn session(s: &Scratch, db: &Path, extra: &[&str], engine_args: &[&str]) -> Done {
    let mut c = s.warden();
    c.args(["run", "-q", "--db"]).arg(db).args(extra).arg("--").arg(ENGINE).args(engine_args);
    run_to_end(c, Duration::from_secs(120))
}

fn warden(s: &Scratch, args: &[&str], db: &Path) -> Done {
    let mut c = s.warden();
    c.args(args).arg(db);
    run_to_end(c, MINUTE)
}

/// A sealed database of a few hundred trades (several leaf pages).
fn sealed(s: &Scratch) -> std::path::PathBuf {
    let db = s.path("e.db");
    let r = session(s, &db, &["--create"], &["--create", "--trades", "300"]);
    assert_eq!(r.code(), Some(0), "{}", r.diag());
    assert!(state_dir(&db).join("seal").is_file(), "a clean close writes the seal");
    let art = read_json(&newest_artifact(&db));
    assert_eq!(art["post_backup"]["seal"]["sealed"], true, "the artifact records the seal: {art}");
    assert!(art["post_backup"]["seal"]["note"].as_str().unwrap().contains("cannot be told apart"));
    db
}

/// The artifact written last (ids sort by second only, then by a random suffix).
fn newest_artifact(db: &Path) -> std::path::PathBuf {
    let dir = sessions_of(db);
    let mut all: Vec<(std::time::SystemTime, std::path::PathBuf)> = names(&dir)
        .into_iter()
        .filter(|n| n.ends_with(".json"))
        .map(|n| (std::fs::metadata(dir.join(&n)).unwrap().modified().unwrap(), dir.join(n)))
        .collect();
    all.sort();
    all.pop().expect("an artifact").1
}

/// Runs `damage` on the database in place, keeping its inode and putting its modification
/// time back: only the content differs.
fn in_place(db: &Path, damage: impl FnOnce(&std::fs::File)) {
    let before = std::fs::metadata(db).unwrap();
    let f = std::fs::OpenOptions::new().read(true).write(true).open(db).unwrap();
    damage(&f);
    f.sync_all().unwrap();
    drop(f);
    let at = nix::sys::time::TimeSpec::new(before.mtime(), before.mtime_nsec());
    nix::sys::stat::utimensat(nix::fcntl::AT_FDCWD, db, &at, &at, nix::sys::stat::UtimensatFlags::FollowSymlink)
        .unwrap();
    let after = std::fs::metadata(db).unwrap();
    assert_eq!((after.ino(), after.mtime(), after.mtime_nsec()), (before.ino(), before.mtime(), before.mtime_nsec()));
}

fn page_size(db: &Path) -> u64 {
    let c = rusqlite::Connection::open(db).unwrap();
    c.query_row("PRAGMA page_size", [], |r| r.get::<_, i64>(0)).map(|v| v as u64).unwrap()
}

/// A leaf page of the trades table (from `dbstat`).
fn trades_leaf(db: &Path) -> u64 {
    let c = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    c.query_row("SELECT max(pageno) FROM dbstat WHERE name = 'trades' AND pagetype = 'leaf'", [], |r| {
        r.get::<_, i64>(0)
    })
    .map(|v| v as u64)
    .unwrap()
}

/// What the pragmas say about the file as it is: the damage below passes them.
fn pragmas_pass(db: &Path) -> bool {
    let c = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let r: String = c.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    r == "ok"
}

/// The refusal every damage gets: run exits 67 with the engine never started, check 67,
/// status 11 (`changed_since_seal`), each naming `page` when given.
fn refused(s: &Scratch, db: &Path, page: Option<u64>, what: &str) {
    let marker = s.path("engine-started");
    let _ = std::fs::remove_file(&marker);
    let mut c = s.warden();
    c.args(["run", "--db"]).arg(db).args(["--", "touch"]).arg(&marker);
    let r = run_to_end(c, MINUTE);
    assert_eq!(r.code(), Some(67), "{what}: run must refuse: {}", r.diag());
    assert!(!marker.exists(), "{what}: the engine started");
    assert!(r.stderr.contains("is not what session"), "{what}: {}", r.diag());
    assert!(r.stderr.contains("warden restore --db") && r.stderr.contains("warden accept --db"), "{}", r.diag());
    if let Some(p) = page {
        assert!(r.stderr.contains(&format!("page {p} (trades")), "{what}: names page {p}: {}", r.diag());
    }
    let art = read_json(&newest_artifact(db));
    assert_eq!(art["gate"]["failure"], "seal", "{what}: {art}");
    assert!(art["pre_backup"].is_null(), "{what}: the unexpected content was published as a good backup");

    let d = warden(s, &["check", "--json"], db);
    assert_eq!(d.code(), Some(67), "{what}: check: {}", d.diag());
    let v = d.json();
    assert_eq!(v["seal"]["verdict"], "differs", "{v}");
    assert!(v["seal"]["differing_pages"].as_u64().unwrap() >= 1);
    if let Some(p) = page {
        let named = v["seal"]["pages"].as_array().unwrap();
        assert!(named.iter().any(|x| x["page"] == p && x["object"].as_str().unwrap().starts_with("trades")), "{v}");
    }
    let st = warden(s, &["status", "--json", "--db"], db);
    assert_eq!(st.code(), Some(11), "{what}: status: {}", st.diag());
    assert!(st.stdout.contains("changed_since_seal") || st.stdout.contains("gate_failed"), "{}", st.diag());
}

#[test]
fn damage_between_sessions_is_refused_by_page_and_never_reaches_the_engine() {
    // 1. A payload bit flip in a leaf of `trades`.
    let s = Scratch::new();
    let db = sealed(&s);
    let (ps, leaf) = (page_size(&db), trades_leaf(&db));
    in_place(&db, |f| {
        let at = (leaf - 1) * ps + ps - 40;
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, at).unwrap();
        f.write_all_at(&[b[0] ^ 0x01], at).unwrap();
    });
    assert!(pragmas_pass(&db), "the flip must pass integrity_check, or the test proves nothing");
    refused(&s, &db, Some(leaf), "bit flip");

    // 2. A page put back to an older version (from the first pre-session state), and 3. half
    // of one.
    let s = Scratch::new();
    let db = s.path("e.db");
    assert_eq!(session(&s, &db, &["--create"], &["--create", "--trades", "300"]).code(), Some(0));
    let old = std::fs::read(&db).unwrap();
    assert_eq!(session(&s, &db, &[], &["--trades", "1"]).code(), Some(0));
    let now = std::fs::read(&db).unwrap();
    let ps = page_size(&db) as usize;
    let changed: Vec<usize> =
        (1..old.len() / ps).filter(|&p| old[p * ps..(p + 1) * ps] != now[p * ps..(p + 1) * ps]).collect();
    let p = *changed.first().expect("the last session changed a page besides the header");
    in_place(&db, |f| f.write_all_at(&old[p * ps..(p + 1) * ps], (p * ps) as u64).unwrap());
    refused(&s, &db, None, "a page reverted");
    assert_eq!(warden(&s, &["accept", "--db"], &db).code(), Some(0), "accept repairs it for the next case");
    let now = std::fs::read(&db).unwrap();
    in_place(&db, |f| f.write_all_at(&old[p * ps..p * ps + ps / 2], (p * ps) as u64).unwrap());
    if now[p * ps..p * ps + ps / 2] != old[p * ps..p * ps + ps / 2] {
        refused(&s, &db, None, "a half-old page");
    }

    // 4. A truncated file (the last page gone): the raw scan sees the header's page count
    // disagree and refuses first (65), before any copy; the engine never starts.
    let s = Scratch::new();
    let db = sealed(&s);
    let len = std::fs::metadata(&db).unwrap().len();
    in_place(&db, |f| f.set_len(len - page_size(&db)).unwrap());
    let marker = s.path("engine-started");
    let mut c = s.warden();
    c.args(["run", "--db"]).arg(&db).args(["--", "touch"]).arg(&marker);
    let r = run_to_end(c, MINUTE);
    assert_eq!(r.code(), Some(65), "truncated: {}", r.diag());
    assert!(!marker.exists() && r.stderr.contains("size_mismatch"), "{}", r.diag());
}

#[test]
fn a_main_file_that_lost_its_wal_is_refused() {
    // A writer outside warden commits in WAL mode, a checkpoint moves part of it into the
    // main file, and the -wal with the rest is lost: the main file is neither the sealed
    // state nor the writer's.
    let s = Scratch::new();
    let db = sealed(&s);
    // A real second process that dies without closing (no final checkpoint).
    let script = r#"
import sqlite3, sys, os
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("PRAGMA journal_mode=WAL"); c.execute("PRAGMA wal_autocheckpoint=0")
c.execute("INSERT INTO trades(symbol, qty, price) SELECT symbol, qty, price FROM trades LIMIT 50")
c.execute("PRAGMA wal_checkpoint(PASSIVE)")
c.execute("UPDATE ledger SET trades = trades + 50")
os._exit(0)
"#;
    let out = std::process::Command::new("python3").args(["-c", script]).arg(&db).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(std::fs::metadata(sidecar(&db, "-wal")).unwrap().len() > 0, "the -wal holds the last commit");
    std::fs::remove_file(sidecar(&db, "-wal")).unwrap();
    let _ = std::fs::remove_file(sidecar(&db, "-shm"));
    assert!(pragmas_pass(&db));
    refused(&s, &db, None, "lost -wal");
}

#[test]
fn restore_of_the_sealed_backup_and_accept_are_the_ways_out() {
    let s = Scratch::new();
    let db = sealed(&s);
    let sealed_bytes = std::fs::read(&db).unwrap();
    let leaf = trades_leaf(&db);
    let ps = page_size(&db);
    in_place(&db, |f| f.write_all_at(b"X", (leaf - 1) * ps + ps - 10).unwrap());
    refused(&s, &db, Some(leaf), "before restore");
    // The refusal printed the restore command; it names the sealed post-session backup.
    let art = read_json(&newest_artifact(&db));
    let cmd = art["gate"]["seal"]["restore_command"].as_str().unwrap().to_owned();
    let from = cmd.rsplit(' ').next().unwrap();
    let r = warden(&s, &["restore", "--from", from, "--db"], &db);
    assert_eq!(r.code(), Some(0), "{}", r.diag());
    assert_eq!(std::fs::read(&db).unwrap().len(), sealed_bytes.len());
    let r = session(&s, &db, &[], &["--trades", "3"]);
    assert_eq!(r.code(), Some(0), "the sealed backup restored: the next gate passes at once: {}", r.diag());

    // accept: runs the gate, seals what is there, audited; the next run passes.
    let leaf = trades_leaf(&db);
    in_place(&db, |f| f.write_all_at(b"Y", (leaf - 1) * ps + ps - 12).unwrap());
    refused(&s, &db, Some(leaf), "before accept");
    let a = warden(&s, &["accept", "--json", "--db"], &db);
    assert_eq!(a.code(), Some(0), "{}", a.diag());
    assert!(a.json()["sealed"].as_str().is_some_and(|c| c.len() == 64), "{}", a.diag());
    let events = s.events();
    assert!(events.iter().any(|e| e == "seal_chain_started"), "accept is audited: {events:?}");
    assert!(events.iter().any(|e| e == "seal_mismatch"), "the refusals are audited: {events:?}");
    assert_eq!(warden(&s, &["check"], &db).code(), Some(0), "accepted: check passes");
    assert_eq!(warden(&s, &["status", "--db"], &db).code(), Some(0), "accepted: healthy");
    let r = session(&s, &db, &[], &["--trades", "3"]);
    assert_eq!(r.code(), Some(0), "{}", r.diag());
}

#[test]
fn twenty_honest_sessions_a_crash_and_a_damaged_seal() {
    let s = Scratch::new();
    let db = s.path("e.db");
    for i in 0..20 {
        let extra: &[&str] = if i == 0 { &["--create"] } else { &[] };
        let eng: &[&str] = if i == 0 { &["--create", "--trades", "20"] } else { &["--trades", "20"] };
        let r = session(&s, &db, extra, eng);
        assert_eq!(r.code(), Some(0), "honest session {i} was refused: {}", r.diag());
        let st = warden(&s, &["status", "--db"], &db);
        assert_eq!(st.code(), Some(0), "after honest session {i}: {}", st.diag());
    }
    assert_eq!(trade_count(&db), 400);

    // An engine that crashes mid-session: the seal is superseded, never a false refusal.
    let r = session(&s, &db, &[], &["--trades", "20", "--exit-code", "3"]);
    assert_ne!(r.code(), Some(0), "{}", r.diag());
    let d = warden(&s, &["check", "--json"], &db);
    assert_eq!(d.code(), Some(0), "{}", d.diag());
    assert_eq!(d.json()["seal"]["verdict"], "superseded", "{}", d.diag());
    let r = session(&s, &db, &[], &["--trades", "5"]);
    assert_eq!(r.code(), Some(0), "the session after a crash starts: {}", r.diag());
    assert_eq!(warden(&s, &["check"], &db).code(), Some(0), "and seals again");

    // A damaged seal is never trusted: refused (67) until accepted.
    let seal = state_dir(&db).join("seal");
    let mut bytes = std::fs::read(&seal).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x20;
    std::fs::write(&seal, &bytes).unwrap();
    let r = session(&s, &db, &[], &["--trades", "5"]);
    assert_eq!(r.code(), Some(67), "{}", r.diag());
    assert!(r.stderr.contains("is damaged"), "{}", r.diag());
    assert_eq!(warden(&s, &["status", "--db"], &db).code(), Some(11));
    assert_eq!(warden(&s, &["accept", "--db"], &db).code(), Some(0));
    assert_eq!(session(&s, &db, &[], &["--trades", "5"]).code(), Some(0));
}

#[test]
fn a_guarded_engine_outside_a_session_supersedes_the_seal_and_plain_sqlite_does_not() {
    let s = Scratch::new();
    let db = sealed(&s);
    // Through the guard (the demo engine opens with `open_engine`): an audited writer under
    // the writer lock. The seal is marked superseded, never a false refusal.
    let mut c = s.engine();
    c.arg("--db").arg(&db).args(["--trades", "7"]);
    assert_eq!(run_to_end(c, MINUTE).code(), Some(0));
    let d = warden(&s, &["check", "--json"], &db);
    assert_eq!(d.code(), Some(0), "{}", d.diag());
    assert_eq!(d.json()["seal"]["verdict"], "superseded", "{}", d.diag());
    assert!(d.json()["seal"]["message"].as_str().unwrap().contains("a guarded open outside a session"));
    assert_eq!(session(&s, &db, &[], &["--trades", "1"]).code(), Some(0));
    assert_eq!(warden(&s, &["check", "--json"], &db).json()["seal"]["verdict"], "matches");
    // Plain SQLite, bypassing warden: refused at the next start.
    let c = rusqlite::Connection::open(&db).unwrap();
    c.execute_batch("UPDATE ledger SET trades = trades + 1;").unwrap();
    drop(c);
    refused(&s, &db, None, "plain sqlite write");
}

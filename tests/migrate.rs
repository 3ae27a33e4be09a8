//! The move from the old host to the VPS, end to end with real files and processes:
//! `warden migrate export` (also while an engine commits, and from a database on a real sshfs
//! mount, read through SQLite's locking) and `warden migrate import` (the data reproduced
//! row for row, WAL on the local disk, owner and mode, artifacts and audit carried over, the
//! import audited); every kind of tampered bundle refused with nothing written; network and
//! existing targets refused; and `warden sessions export` for analysis elsewhere.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::Scratch;
use common::proc::*;
use rusqlite::{Connection, OpenFlags};
use serde_json::Value;

const MINUTE: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// `warden ARGS` to the end.
fn warden(s: &Scratch, args: &[&str]) -> Done {
    let mut c = s.warden();
    c.args(args);
    run_to_end(c, MINUTE)
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// `warden run --db DB -q -- demo-engine --trades N` (plus `--create` the first time).
fn session(s: &Scratch, db: &Path, trades: u32) {
    let mut c = s.warden();
    c.args(["run", "-q", "--db", p(db)]);
    if !db.exists() {
        c.arg("--create");
    }
    c.arg("--").arg(ENGINE).args(["--trades", &trades.to_string()]);
    let d = run_to_end(c, MINUTE);
    assert_eq!(d.code(), Some(0), "{}", d.diag());
}

/// `warden migrate export --db DB --to BUNDLE --json`: the report.
fn export(s: &Scratch, db: &Path, bundle: &Path) -> Value {
    let d = warden(s, &["migrate", "export", "--db", p(db), "--to", p(bundle), "--json"]);
    assert_eq!(d.code(), Some(0), "{}", d.diag());
    d.json()
}

/// `warden migrate import BUNDLE --db TARGET ARGS --json`.
fn import(s: &Scratch, bundle: &Path, target: &Path, extra: &[&str]) -> Done {
    let mut args = vec!["migrate", "import", p(bundle), "--db", p(target), "--json"];
    args.extend_from_slice(extra);
    warden(s, &args)
}

/// Every regular file under `dir`, relative, `/`-separated.
fn files_under(dir: &Path) -> BTreeSet<String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                walk(root, &e.path(), out);
            } else {
                out.insert(e.path().strip_prefix(root).unwrap().to_str().unwrap().to_owned());
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(dir, dir, &mut out);
    out
}

/// The bundle's files are exactly its manifest's (plus the manifest), with those sizes and
/// hashes. Returns the manifest.
fn check_bundle(dir: &Path) -> Value {
    let m = read_json(&dir.join("MANIFEST.json"));
    assert_eq!(m["schema"], 1);
    let mut listed = BTreeSet::new();
    for e in m["files"].as_array().unwrap() {
        let path = e["path"].as_str().unwrap();
        listed.insert(path.to_owned());
        let f = dir.join(path);
        assert_eq!(std::fs::metadata(&f).unwrap().len(), e["size"].as_u64().unwrap(), "{path}");
        assert_eq!(sha256(&f), e["sha256"].as_str().unwrap(), "{path}");
    }
    listed.insert("MANIFEST.json".into());
    assert_eq!(files_under(dir), listed);
    m
}

/// Every table of a database, every row (in rowid order), as text.
fn dump(db: &Path) -> BTreeMap<String, Vec<Vec<String>>> {
    let c = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let tables: Vec<String> = c
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut out = BTreeMap::new();
    for t in tables {
        let mut st = c.prepare(&format!("SELECT * FROM \"{t}\" ORDER BY rowid")).unwrap();
        let n = st.column_count();
        let rows = st
            .query_map([], |r| {
                (0..n).map(|i| r.get::<_, rusqlite::types::Value>(i).map(|v| format!("{v:?}"))).collect()
            })
            .unwrap()
            .collect::<Result<Vec<Vec<String>>, _>>()
            .unwrap();
        out.insert(t, rows);
    }
    out
}

fn events(s: &Scratch) -> Vec<Value> {
    s.audit_lines()
}

fn has_event(s: &Scratch, event: &str, db: &Path) -> Option<Value> {
    events(s).into_iter().find(|v| v["event"] == event && v["db"].as_str() == Some(p(db)))
}

/// Nothing of an import at `target`: no database, no sidecars, no state directory, no lock
/// file, and no temporary file in its directory.
fn assert_nothing_written(target: &Path) {
    for suffix in ["", "-wal", "-shm", "-journal", ".warden", "-warden.lock"] {
        assert!(!sidecar(target, suffix).exists(), "{} exists", sidecar(target, suffix).display());
    }
    let dir = target.parent().unwrap();
    let left: Vec<String> = names(dir).into_iter().filter(|n| n.contains(TMP_MARK)).collect();
    assert!(left.is_empty(), "temporary files left: {left:?}");
}

fn copy_dir(from: &Path, to: &Path) {
    let st = std::process::Command::new("cp").arg("-a").arg(from).arg(to).status().unwrap();
    assert!(st.success());
}

fn current_user() -> (String, u32, u32) {
    let u = nix::unistd::User::from_uid(nix::unistd::getuid()).unwrap().unwrap();
    (u.name, u.uid.as_raw(), u.gid.as_raw())
}

/// The old host: a database with two sessions behind it.
fn old_host(s: &Scratch) -> PathBuf {
    std::fs::create_dir(s.path("old")).unwrap();
    let db = s.path("old/engine.db");
    session(s, &db, 5);
    session(s, &db, 7);
    db
}

// ---------------------------------------------------------------------------------------------
// Round trip
// ---------------------------------------------------------------------------------------------

#[test]
fn export_then_import_reproduces_the_data_exactly() {
    let s = Scratch::new();
    let db = old_host(&s);
    let bundle = s.path("bundle");
    let report = export(&s, &db, &bundle);
    assert_eq!(report["bundle"], p(&bundle));

    // The bundle: exactly what the manifest lists, each hash right, private.
    let m = check_bundle(&bundle);
    assert_eq!(report["manifest"], m);
    assert_eq!(report["manifest_sha256"], sha256(&bundle.join("MANIFEST.json")));
    assert_eq!(mode(&bundle), 0o700);
    let files: BTreeSet<String> =
        m["files"].as_array().unwrap().iter().map(|e| e["path"].as_str().unwrap().into()).collect();
    assert!(files.contains("database.sqlite") && files.contains("audit/audit.jsonl"), "{files:?}");
    let sessions: Vec<String> = names(&sessions_of(&db));
    assert_eq!(sessions.len(), 2);
    for name in &sessions {
        assert!(files.contains(&format!("sessions/{name}")), "{name} in {files:?}");
    }
    assert_eq!(m["source"]["db"], p(&db));
    assert_eq!(m["source"]["storage"]["kind"], "local");
    assert_eq!(m["database"]["journal_mode"], "delete");
    assert_eq!(m["database"]["integrity"]["ok"], true);
    assert_eq!(m["database"]["row_counts"]["trades"], 12);
    assert_eq!(m["database"]["method"], "backup_api");
    let h = std::fs::read(bundle.join("database.sqlite")).unwrap();
    assert_eq!((h[18], h[19]), (1, 1), "the bundled database is in rollback mode");
    assert!(!sidecar(&bundle.join("database.sqlite"), "-wal").exists());
    assert!(
        has_event(&s, "migration_exported", &db)
            .is_some_and(|v| v["reason"].as_str().unwrap().contains(report["manifest_sha256"].as_str().unwrap()))
    );

    // The import: owner (another account when root, or ourselves), mode, WAL, data.
    std::fs::create_dir(s.path("vps")).unwrap();
    let target = s.path("vps/engine.db");
    let (me, my_uid, my_gid) = current_user();
    let nobody = nix::unistd::User::from_name("nobody").ok().flatten();
    let (owner, uid, gid) = match (&nobody, my_uid) {
        (Some(n), 0) => (format!("nobody:{}", n.gid.as_raw()), n.uid.as_raw(), n.gid.as_raw()),
        _ => (me.clone(), my_uid, my_gid),
    };
    let d = import(&s, &bundle, &target, &["--owner", &owner, "--mode", "0640"]);
    assert_eq!(d.code(), Some(0), "{}", d.diag());
    let r = d.json();
    assert_eq!(r["target"], p(&target));
    assert_eq!(r["manifest_sha256"], report["manifest_sha256"]);
    assert_eq!(r["database"]["journal_mode"], "wal");
    assert_eq!(r["database"]["header_wal"], true);
    assert_eq!(r["database"]["integrity"]["ok"], true);
    assert_eq!(r["mode"], "0640");
    assert_eq!(r["storage"]["kind"], "local");

    assert_eq!(dump(&target), dump(&db), "every table, every row");
    assert_eq!(dump(&target)["trades"].len(), 12);
    let h = std::fs::read(&target).unwrap();
    assert_eq!((h[18], h[19]), (2, 2), "the header says WAL");
    let md = std::fs::metadata(&target).unwrap();
    assert_eq!(md.mode() & 0o7777, 0o640);
    assert_eq!((md.uid(), md.gid()), (uid, gid), "owner {owner}");
    let lock = sidecar(&target, "-warden.lock");
    let lmd = std::fs::metadata(&lock).unwrap();
    assert_eq!((lmd.uid(), lmd.gid()), (uid, gid), "the engine user must be able to lock");
    let state = state_dir(&target);
    assert_eq!((std::fs::metadata(&state).unwrap().uid(), mode(&state)), (uid, 0o750));

    // Artifacts and the old audit log, byte for byte; the old log not mixed into ours.
    assert_eq!(names(&sessions_of(&target)), sessions);
    for name in &sessions {
        assert_eq!(sha256(&sessions_of(&target).join(name)), sha256(&sessions_of(&db).join(name)));
        assert_eq!(mode(&sessions_of(&target).join(name)), 0o640);
    }
    let imported = state.join("imported-audit.jsonl");
    assert_eq!(r["imported_audit"], p(&imported));
    assert_eq!(sha256(&imported), sha256(&bundle.join("audit/audit.jsonl")));
    let listed = warden(&s, &["sessions", "--db", p(&target), "--json"]);
    assert_eq!(listed.code(), Some(0), "{}", listed.diag());
    assert_eq!(listed.json()["sessions"].as_array().unwrap().len(), 2);

    // The audit log: the export, the engine open that switched the copy to WAL before it
    // was put in place (so the install is the last change), the import.
    let imp = has_event(&s, "migration_imported", &target).expect("migration_imported");
    let reason = imp["reason"].as_str().unwrap();
    assert!(reason.contains(report["manifest_sha256"].as_str().unwrap()), "{reason}");
    assert!(reason.contains(&format!("host {}", m["source"]["host"].as_str().unwrap())), "{reason}");
    assert!(
        events(&s).iter().any(|v| v["event"] == "open"
            && v["role"] == "engine"
            && v["db"].as_str().is_some_and(|d| d.starts_with(&format!(
                "{}/.{}.import.warden-tmp.",
                p(target.parent().unwrap()),
                target.file_name().unwrap().to_str().unwrap()
            )))),
        "the switch to WAL went through the engine role, on the copy beside the target"
    );
    let lock = warden(&s, &["lock", p(&target), "--json"]).json();
    assert_eq!(lock["state"], "free");
    assert!(lock["record"]["last_close"].is_object(), "{lock}");

    // The next session runs on it without a word about changes outside warden.
    if my_uid == 0 || uid == my_uid {
        session(&s, &target, 3);
        assert!(has_event(&s, "changed_outside_warden", &target).is_none());
        assert_eq!(trade_count(&target), 15);
    }
}

#[test]
fn chown_not_permitted_is_77_with_nothing_written() {
    let s = Scratch::new();
    let db = old_host(&s);
    let bundle = s.path("bundle");
    export(&s, &db, &bundle);
    std::fs::create_dir(s.path("vps")).unwrap();
    let target = s.path("vps/engine.db");
    // As root, run the import as `nobody` (who owns the bundle and the directory) and ask for
    // root as the owner; otherwise, the test user asks for root.
    let mut c = s.warden();
    if nix::unistd::getuid().is_root() {
        let Some(nobody) = nix::unistd::User::from_name("nobody").ok().flatten() else {
            skip_or_fail("chown_not_permitted_is_77_with_nothing_written", "no user `nobody`");
            return;
        };
        let (uid, gid) = (nobody.uid.as_raw().to_string(), nobody.gid.as_raw().to_string());
        let st = std::process::Command::new("chown")
            .args(["-R", &format!("{uid}:{gid}")])
            .arg(s.path("vps"))
            .arg(&bundle)
            .arg(s.audit_dir())
            .status()
            .unwrap();
        assert!(st.success());
        std::fs::set_permissions(s.dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        c = std::process::Command::new("setpriv");
        c.args(["--reuid", &uid, "--regid", &gid, "--clear-groups", WARDEN])
            .current_dir(s.dir.path())
            .env("WARDEN_AUDIT_DIR", s.audit_dir())
            .env_remove("WARDEN_CONFIG");
    }
    c.args(["migrate", "import", p(&bundle), "--db", p(&target), "--owner", "root:root"]);
    let d = run_to_end(c, MINUTE);
    assert_eq!(d.code(), Some(77), "{}", d.diag());
    assert!(d.stderr.contains("not permitted"), "{}", d.stderr);
    assert_nothing_written(&target);
    assert!(names(&s.path("vps")).is_empty());
}

// ---------------------------------------------------------------------------------------------
// Tampering
// ---------------------------------------------------------------------------------------------

fn edit_manifest(bundle: &Path, f: impl FnOnce(&mut Value)) {
    let path = bundle.join("MANIFEST.json");
    let mut m = read_json(&path);
    f(&mut m);
    std::fs::write(&path, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
}

fn entry(path: &str, bytes: &[u8]) -> Value {
    use sha2::{Digest, Sha256};
    let sha: String = Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect();
    serde_json::json!({"path": path, "size": bytes.len(), "sha256": sha})
}

#[test]
fn tampered_bundles_are_refused_with_nothing_written() {
    let s = Scratch::new();
    let db = old_host(&s);
    let good = s.path("good-bundle");
    export(&s, &db, &good);
    let first_session = names(&good.join("sessions"))[0].clone();

    type Tamper = Box<dyn Fn(&Path, &Path)>;
    let cases: Vec<(&str, &str, Tamper)> = vec![
        (
            "one flipped byte in the database",
            "hashes to",
            Box::new(|b: &Path, _: &Path| {
                let f = b.join("database.sqlite");
                let mut bytes = std::fs::read(&f).unwrap();
                let mid = bytes.len() / 2 + 7;
                bytes[mid] ^= 0x01;
                std::fs::write(&f, bytes).unwrap();
            }),
        ),
        (
            "a truncated audit log",
            "bytes; the manifest says",
            Box::new(|b: &Path, _: &Path| {
                let f = b.join("audit/audit.jsonl");
                let len = std::fs::metadata(&f).unwrap().len();
                std::fs::OpenOptions::new().write(true).open(&f).unwrap().set_len(len / 2).unwrap();
            }),
        ),
        (
            "a `../evil` entry (and the file)",
            "path traversal",
            Box::new(|b: &Path, parent: &Path| {
                std::fs::write(parent.join("evil"), b"#!/bin/sh\necho pwned\n").unwrap();
                edit_manifest(b, |m| {
                    m["files"].as_array_mut().unwrap().push(entry("../evil", b"#!/bin/sh\necho pwned\n"));
                });
            }),
        ),
        (
            "an absolute path entry",
            "absolute path",
            Box::new(|b: &Path, _: &Path| {
                edit_manifest(b, |m| m["files"].as_array_mut().unwrap().push(entry("/etc/cron.d/evil", b"x")));
            }),
        ),
        (
            "an unlisted extra file",
            "is not listed",
            Box::new(|b: &Path, _: &Path| std::fs::write(b.join("sessions/extra.json"), b"{}").unwrap()),
        ),
        (
            "a listed file that is missing",
            "listed but missing",
            Box::new(move |b: &Path, _: &Path| std::fs::remove_file(b.join("audit/audit.jsonl")).unwrap()),
        ),
        (
            "a symbolic link (to an identical copy)",
            "symbolic link",
            Box::new({
                let name = first_session.clone();
                move |b: &Path, parent: &Path| {
                    let f = b.join("sessions").join(&name);
                    let outside = parent.join("outside.json");
                    std::fs::copy(&f, &outside).unwrap();
                    std::fs::remove_file(&f).unwrap();
                    std::os::unix::fs::symlink(&outside, &f).unwrap();
                }
            }),
        ),
        (
            "a manifest of a newer schema",
            "schema 2",
            Box::new(|b: &Path, _: &Path| edit_manifest(b, |m| m["schema"] = 2.into())),
        ),
        (
            "no manifest",
            "no MANIFEST.json",
            Box::new(|b: &Path, _: &Path| std::fs::remove_file(b.join("MANIFEST.json")).unwrap()),
        ),
    ];
    for (i, (what, expect, tamper)) in cases.iter().enumerate() {
        let case = s.path(&format!("case{i}"));
        std::fs::create_dir(&case).unwrap();
        let bundle = case.join("bundle");
        copy_dir(&good, &bundle);
        tamper(&bundle, &case);
        std::fs::create_dir(case.join("vps")).unwrap();
        let target = case.join("vps/engine.db");
        let d = import(&s, &bundle, &target, &[]);
        assert_eq!(d.code(), Some(65), "{what}: {}", d.diag());
        assert!(d.stderr.contains(expect), "{what}: expected {expect:?} in\n{}", d.stderr);
        assert!(d.stderr.contains("nothing was written"), "{what}: {}", d.stderr);
        let j = d.json();
        assert_eq!((j["outcome"].as_str(), j["exit_code"].as_u64()), (Some("error"), Some(65)), "{what}");
        assert_nothing_written(&target);
        assert!(names(&case.join("vps")).is_empty(), "{what}: {:?}", names(&case.join("vps")));
    }
    // The refusals are on record.
    assert!(events(&s).iter().filter(|v| v["event"] == "migration_refused").count() >= cases.len());
    // The untouched bundle still imports.
    std::fs::create_dir(s.path("vps")).unwrap();
    let d = import(&s, &good, &s.path("vps/engine.db"), &[]);
    assert_eq!(d.code(), Some(0), "{}", d.diag());
}

#[test]
fn a_database_that_fails_the_gate_is_refused() {
    // A bundle whose hashes are all right (re-signed after the damage) but whose database is
    // damaged: the gate, not the hash, refuses it.
    let s = Scratch::new();
    let db = old_host(&s);
    let bundle = s.path("bundle");
    export(&s, &db, &bundle);
    let f = bundle.join("database.sqlite");
    let mut bytes = std::fs::read(&f).unwrap();
    let page = usize::from(u16::from_be_bytes([bytes[16], bytes[17]]));
    // Page 2's b-tree page type byte: an invalid type is damage every check sees.
    bytes[page] = 0x07;
    std::fs::write(&f, &bytes).unwrap();
    let fixed = entry("database.sqlite", &bytes);
    edit_manifest(&bundle, |m| {
        for e in m["files"].as_array_mut().unwrap() {
            if e["path"] == "database.sqlite" {
                *e = fixed.clone();
            }
        }
        m["database"]["sha256"] = fixed["sha256"].clone();
    });
    std::fs::create_dir(s.path("vps")).unwrap();
    let target = s.path("vps/engine.db");
    let d = import(&s, &bundle, &target, &[]);
    assert_eq!(d.code(), Some(65), "{}", d.diag());
    assert!(d.stderr.contains("fails the integrity gate"), "{}", d.stderr);
    assert_nothing_written(&target);
}

// ---------------------------------------------------------------------------------------------
// Targets
// ---------------------------------------------------------------------------------------------

#[test]
fn existing_targets_and_missing_bundles_are_refused_untouched() {
    let s = Scratch::new();
    let db = old_host(&s);
    let bundle = s.path("bundle");
    export(&s, &db, &bundle);
    std::fs::create_dir(s.path("vps")).unwrap();

    // The database exists.
    let target = s.path("vps/engine.db");
    std::fs::write(&target, b"precious").unwrap();
    let d = import(&s, &bundle, &target, &[]);
    assert_eq!(d.code(), Some(73), "{}", d.diag());
    assert_eq!(std::fs::read(&target).unwrap(), b"precious");
    assert!(!state_dir(&target).exists());
    assert_eq!(names(&s.path("vps")), ["engine.db"]);

    // Its -wal exists (a set someone left there).
    let t2 = s.path("vps/second.db");
    std::fs::write(sidecar(&t2, "-wal"), b"wal").unwrap();
    assert_eq!(import(&s, &bundle, &t2, &[]).code(), Some(73));
    assert!(!t2.exists());

    // Its state directory exists.
    let t3 = s.path("vps/third.db");
    std::fs::create_dir(state_dir(&t3)).unwrap();
    assert_eq!(import(&s, &bundle, &t3, &[]).code(), Some(73));
    assert!(!t3.exists());

    // Its directory does not.
    assert_eq!(import(&s, &bundle, &s.path("nowhere/engine.db"), &[]).code(), Some(73));

    // No bundle.
    let d = import(&s, &s.path("no-bundle"), &s.path("vps/fourth.db"), &[]);
    assert_eq!(d.code(), Some(66), "{}", d.diag());
    assert_nothing_written(&s.path("vps/fourth.db"));

    // Export never overwrites a bundle either.
    let d = warden(&s, &["migrate", "export", "--db", p(&db), "--to", p(&bundle)]);
    assert_eq!(d.code(), Some(73), "{}", d.diag());
    check_bundle(&bundle);
    // And a missing database is 66, with nothing published.
    let d = warden(&s, &["migrate", "export", "--db", p(&s.path("old/none.db")), "--to", p(&s.path("b2"))]);
    assert_eq!(d.code(), Some(66), "{}", d.diag());
    assert!(!s.path("b2").exists());
    assert!(names(s.dir.path()).iter().all(|n| !n.contains(TMP_MARK)));
}

// ---------------------------------------------------------------------------------------------
// A live engine
// ---------------------------------------------------------------------------------------------

#[test]
fn export_while_the_engine_commits_is_consistent() {
    let s = Scratch::new();
    let db = s.path("live.db");
    let mut c = s.engine();
    c.args(["--db", p(&db), "--create", "--trades", "100000", "--interval-ms", "2"]);
    let mut engine = Proc::spawn(c);
    let pid = engine.wait_engine_ready(MINUTE);
    let deadline = std::time::Instant::now() + MINUTE;
    while trade_count(&db) < 50 {
        assert!(std::time::Instant::now() < deadline, "the engine commits nothing");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut seen = Vec::new();
    for i in 0..3 {
        let bundle = s.path(&format!("bundle{i}"));
        let r = export(&s, &db, &bundle);
        assert!(alive(pid), "the engine was live during the export");
        check_bundle(&bundle);
        let copy = bundle.join("database.sqlite");
        let c = Connection::open_with_flags(&copy, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
        let count: i64 = c.query_row("SELECT count(*) FROM trades", [], |r| r.get(0)).unwrap();
        let ledger: i64 = c.query_row("SELECT trades FROM ledger", [], |r| r.get(0)).unwrap();
        let check: String = c.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
        assert_eq!(count, ledger, "one committed state");
        assert_eq!(check, "ok");
        assert_eq!(r["manifest"]["database"]["row_counts"]["trades"], count);
        seen.push(count);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "each export is a later state: {seen:?}");
    drop(engine);
}

// ---------------------------------------------------------------------------------------------
// The old host's SMB share: a real network filesystem (sshfs over loopback)
// ---------------------------------------------------------------------------------------------

/// A fresh directory on the sshfs mount, or `None` (with a loud message) outside CI.
fn on_mount(name: &str) -> Option<PathBuf> {
    let Some(mnt) = std::env::var_os("WARDEN_SSHFS_MNT").map(PathBuf::from) else {
        skip_or_fail(name, "no sshfs mount (WARDEN_SSHFS_MNT unset); run scripts/test");
        return None;
    };
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        info.lines().any(|l| l.contains(" fuse.sshfs ") && l.contains(&format!(" {} ", mnt.display()))),
        "{} is not a live sshfs mount",
        mnt.display()
    );
    let dir = mnt.join(format!("{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    Some(dir)
}

#[test]
fn export_from_sshfs_works_and_import_there_is_refused() {
    let Some(share) = on_mount("migrate") else { return };
    let s = Scratch::new();
    // The old host's database on the share, in rollback mode (as an engine there has it).
    let db = share.join("engine.db");
    {
        let c = Connection::open(&db).unwrap();
        c.execute_batch(
            "PRAGMA journal_mode=DELETE;
             CREATE TABLE trades(id INTEGER PRIMARY KEY, symbol TEXT NOT NULL, qty INTEGER NOT NULL);
             CREATE TABLE ledger(id INTEGER PRIMARY KEY CHECK (id = 1), trades INTEGER NOT NULL);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000)
               INSERT INTO trades(symbol, qty) SELECT 'ACME', i FROM n;
             INSERT INTO ledger VALUES (1, 2000);",
        )
        .unwrap();
    }
    let before = sha256(&db);
    let bundle = s.path("bundle");
    let r = export(&s, &db, &bundle);
    let m = check_bundle(&bundle);
    assert_eq!(m["source"]["storage"]["kind"], "network");
    assert_eq!(m["source"]["storage"]["fstype"], "fuse.sshfs");
    assert_eq!(r["manifest"]["database"]["row_counts"]["trades"], 2000);
    assert_eq!(sha256(&db), before, "the share's database is only read");
    // Read through SQLite's locking: a tooling open of the database on the share.
    assert!(
        events(&s)
            .iter()
            .any(|v| v["event"] == "open" && v["role"] == "tool" && v["db"] == p(&db) && v["fs"]["kind"] == "network"),
        "no tooling open of {} in the audit log",
        db.display()
    );
    // The gate passes on the bundle.
    let check = warden(&s, &["check", p(&bundle.join("database.sqlite")), "--json"]);
    assert_eq!(check.code(), Some(0), "{}", check.diag());

    // The VPS is local: the import works.
    std::fs::create_dir(s.path("vps")).unwrap();
    let target = s.path("vps/engine.db");
    let d = import(&s, &bundle, &target, &[]);
    assert_eq!(d.code(), Some(0), "{}", d.diag());
    assert_eq!(dump(&target), dump(&db));

    // Importing onto the share itself is refused, with nothing written there.
    let on_share = share.join("new/engine.db");
    std::fs::create_dir(share.join("new")).unwrap();
    let d = import(&s, &bundle, &on_share, &[]);
    assert_eq!(d.code(), Some(69), "{}", d.diag());
    assert!(d.stderr.contains("fuse.sshfs"), "{}", d.stderr);
    assert_nothing_written(&on_share);
    assert!(names(&share.join("new")).is_empty());
    let _ = std::fs::remove_dir_all(&share);
}

// ---------------------------------------------------------------------------------------------
// Sessions export
// ---------------------------------------------------------------------------------------------

#[test]
fn sessions_export_collects_artifacts_and_the_latest_snapshot() {
    let s = Scratch::new();
    let db = old_host(&s);

    // Without a snapshot: the artifacts, and a note saying there is none.
    let out0 = s.path("analysis0");
    let d = warden(&s, &["sessions", "export", "--db", p(&db), "--to", p(&out0), "--json"]);
    assert_eq!(d.code(), Some(0), "{}", d.diag());
    let r = d.json();
    assert!(r["snapshot"].is_null());
    assert!(r["messages"].as_array().unwrap().iter().any(|m| m.as_str().unwrap().contains("no snapshot")), "{r}");
    let m = check_bundle(&out0);
    assert_eq!(m["kind"], "sessions");
    assert_eq!(r["sessions"], 2);

    // With the newest snapshot.
    let snap = warden(&s, &["snapshot", "--db", p(&db), "--json"]);
    assert_eq!(snap.code(), Some(0), "{}", snap.diag());
    let latest = snapshots_of(&db).join("latest.sqlite");
    let out = s.path("analysis");
    let d = warden(&s, &["sessions", "export", "--db", p(&db), "--to", p(&out), "--json"]);
    assert_eq!(d.code(), Some(0), "{}", d.diag());
    let r = d.json();
    let m = check_bundle(&out);
    for name in names(&sessions_of(&db)) {
        assert_eq!(sha256(&out.join("sessions").join(&name)), sha256(&sessions_of(&db).join(&name)));
    }
    let file = r["snapshot"]["file"].as_str().unwrap();
    assert_eq!(sha256(&out.join(file)), sha256(&latest), "the newest snapshot");
    assert_eq!(m["snapshot"]["sha256"], sha256(&latest));
    assert!(out.join(r["snapshot"]["manifest_file"].as_str().unwrap()).is_file());
    assert_eq!(mode(&out), 0o700);

    // It refuses an existing directory, which stays as it was.
    let before = files_under(&out);
    let d = warden(&s, &["sessions", "export", "--db", p(&db), "--to", p(&out)]);
    assert_eq!(d.code(), Some(73), "{}", d.diag());
    assert_eq!(files_under(&out), before);
    check_bundle(&out);

    // --snapshot takes a fresh one first.
    session(&s, &db, 2);
    let out2 = s.path("analysis2");
    let d = warden(&s, &["sessions", "export", "--db", p(&db), "--to", p(&out2), "--snapshot", "--json"]);
    assert_eq!(d.code(), Some(0), "{}", d.diag());
    let r = d.json();
    assert!(r["snapshot_taken"].is_string(), "{r}");
    assert_eq!(r["sessions"], 3);
    let c = Connection::open_with_flags(
        out2.join(r["snapshot"]["file"].as_str().unwrap()),
        OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    assert_eq!(c.query_row("SELECT count(*) FROM trades", [], |r| r.get::<_, i64>(0)).unwrap(), 14);
    assert!(names(s.dir.path()).iter().all(|n| !n.contains(TMP_MARK)));
}

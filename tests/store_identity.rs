//! Backups belong to a database, not to a file name; and every command refuses what
//! `warden run` refuses.
//!
//! The story (issue 11): the backup store matched backups by file-name prefix. Two databases
//! called `engine.db` sharing a `backup_dir` restored, pruned and reported each other's
//! backups: `warden restore` installed the other database's newest verified backup, which
//! passes every check because it *is* a good database, just the wrong one. A database named
//! `e.db-x` collided with `e.db`. A data file without a manifest was deleted on recovery.
//! `warden backup`/`snapshot` of a 0-byte database published a "verified, good" 4 KiB backup
//! that became the newest good one; on sshfs they wrote backups onto the mount; and `run`
//! accepted session, snapshot and audit directories on network mounts.

mod common;

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::Scratch;
use common::proc::{WARDEN, skip_or_fail};

fn warden(s: &Scratch) -> Command {
    let mut c = Command::new(WARDEN);
    c.current_dir(s.dir.path()).env("WARDEN_AUDIT_DIR", s.audit_dir()).env_remove("WARDEN_CONFIG");
    c
}

fn run(s: &Scratch, args: &[&str]) -> (Option<i32>, String, String) {
    let o = warden(s).args(args).output().unwrap();
    (o.status.code(), String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

fn db_with(path: &Path, tag: &str) {
    let c = rusqlite::Connection::open(path).unwrap();
    c.execute_batch("CREATE TABLE IF NOT EXISTS who(tag TEXT)").unwrap();
    c.execute("DELETE FROM who", []).unwrap();
    c.execute("INSERT INTO who VALUES (?1)", [tag]).unwrap();
}

fn tag_of(path: &Path) -> String {
    rusqlite::Connection::open(path).unwrap().query_row("SELECT tag FROM who", [], |r| r.get(0)).unwrap()
}

fn backup_ids(s: &Scratch, db: &Path, dir: &Path) -> Vec<String> {
    let (code, out, err) =
        run(s, &["backups", "--json", "--db", db.to_str().unwrap(), "--backup-dir", dir.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let list = v["backups"].as_array().cloned().unwrap_or_else(|| panic!("no backups list: {out}"));
    list.iter().map(|b| b["id"].as_str().or_else(|| b["manifest"]["id"].as_str()).unwrap().to_owned()).collect()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn two_databases_of_one_name_sharing_a_backup_dir_never_restore_each_other() {
    let s = Scratch::new();
    for d in ["a", "b", "shared"] {
        std::fs::create_dir(s.path(d)).unwrap();
    }
    let (a, b, shared) = (s.path("a/engine.db"), s.path("b/engine.db"), s.path("shared"));
    db_with(&a, "A");
    db_with(&b, "B");
    let (code, _, err) = run(&s, &["backup", "-q", "--db", path(&a), "--backup-dir", path(&shared)]);
    assert_eq!(code, Some(0), "{err}");
    let (code, _, err) = run(&s, &["backup", "-q", "--db", path(&b), "--backup-dir", path(&shared)]);
    assert_eq!(code, Some(0), "{err}");
    let ids_a = backup_ids(&s, &a, &shared);
    let ids_b = backup_ids(&s, &b, &shared);
    assert_eq!((ids_a.len(), ids_b.len()), (1, 1), "each database lists only its own backup: {ids_a:?} {ids_b:?}");
    assert_ne!(ids_a, ids_b);

    // A's database is damaged beyond use; the restore picks A's newest good backup, never B's
    // (which is newer and also good).
    db_with(&a, "damaged");
    let (code, _, err) = run(&s, &["restore", "-q", "--db", path(&a), "--backup-dir", path(&shared)]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(tag_of(&a), "A", "restore installed another database's backup");

    // Naming B's backup for A is refused, unless asked for explicitly.
    let (code, _, err) =
        run(&s, &["restore", "-q", "--db", path(&a), "--backup-dir", path(&shared), "--from", &ids_b[0]]);
    assert_eq!(code, Some(65), "{err}");
    assert!(err.contains("another database") && err.contains("--allow-foreign"), "{err}");
    assert_eq!(tag_of(&a), "A");
    let (code, _, err) = run(
        &s,
        &["restore", "-q", "--db", path(&a), "--backup-dir", path(&shared), "--from", &ids_b[0], "--allow-foreign"],
    );
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(tag_of(&a), "B");

    // Pruning A with "keep 0" style retention never touches B's backups.
    let (code, _, err) = run(&s, &["prune", "--db", path(&a), "--backup-dir", path(&shared), "--keep-last", "1"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(backup_ids(&s, &b, &shared), ids_b);
}

#[test]
fn a_database_whose_name_only_shares_the_prefix_is_another_database() {
    let s = Scratch::new();
    let (e, ex, dir) = (s.path("e.db"), s.path("e.db-x"), s.path("backups"));
    db_with(&e, "E");
    db_with(&ex, "EX");
    assert_eq!(run(&s, &["backup", "-q", "--db", path(&ex), "--backup-dir", path(&dir)]).0, Some(0));
    assert!(backup_ids(&s, &e, &dir).is_empty(), "e.db lists e.db-x's backup as its own");
    let (code, _, err) = run(&s, &["restore", "-q", "--db", path(&e), "--backup-dir", path(&dir)]);
    assert_eq!(code, Some(66), "nothing of e.db to restore: {err}");
    assert_eq!(tag_of(&e), "E");
}

#[test]
fn a_data_file_without_its_manifest_is_quarantined_not_deleted() {
    let s = Scratch::new();
    let (db, dir) = (s.path("e.db"), s.path("backups"));
    db_with(&db, "E");
    std::fs::create_dir(&dir).unwrap();
    let orphan = dir.join("e.db-20260101T000000.000Z-manual.sqlite");
    std::fs::copy(&db, &orphan).unwrap();
    let before = std::fs::read(&orphan).unwrap();
    assert_eq!(run(&s, &["backup", "-q", "--db", path(&db), "--backup-dir", path(&dir)]).0, Some(0));
    assert!(!orphan.exists());
    let kept = dir.join("quarantine").join(orphan.file_name().unwrap());
    assert_eq!(std::fs::read(&kept).expect("the orphan is kept in quarantine/"), before);
}

#[test]
fn backup_and_snapshot_of_an_empty_database_publish_nothing() {
    let s = Scratch::new();
    let (db, dir) = (s.path("empty.db"), s.path("backups"));
    std::fs::write(&db, b"").unwrap();
    let (code, _, err) = run(&s, &["backup", "-q", "--db", path(&db), "--backup-dir", path(&dir)]);
    assert_eq!(code, Some(66), "{err}");
    assert!(err.contains("empty file"), "{err}");
    assert!(backup_ids(&s, &db, &dir).is_empty(), "a backup of nothing was published");
    let snaps = s.path("snaps");
    let (code, _, err) = run(&s, &["snapshot", "--db", path(&db), "--snapshot-dir", path(&snaps)]);
    assert_eq!(code, Some(66), "{err}");
    assert!(
        std::fs::read_dir(&snaps)
            .map(|d| d.filter_map(Result::ok).filter(|e| e.path().extension().is_some_and(|x| x == "sqlite")).count())
            .unwrap_or(0)
            == 0
    );
}

/// A fresh directory on the real sshfs mount, or `None` (a loud skip; a failure in CI).
fn on_sshfs(test: &str) -> Option<PathBuf> {
    let Some(mnt) = std::env::var_os("WARDEN_SSHFS_MNT") else {
        skip_or_fail(test, "no sshfs mount (scripts/test brings one up)");
        return None;
    };
    let d = PathBuf::from(mnt).join(format!("{test}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    Some(d)
}

fn entries(d: &Path) -> usize {
    std::fs::read_dir(d).map(|r| r.count()).unwrap_or(0)
}

#[test]
fn every_command_refuses_network_storage_for_what_it_reads_and_writes() {
    let Some(remote) = on_sshfs("every_command_refuses_network_storage_for_what_it_reads_and_writes") else { return };
    let s = Scratch::new();
    // A database on the mount: backup and snapshot refuse it (69), writing nothing there.
    let on_mount = remote.join("e.db");
    db_with(&on_mount, "R");
    let before = entries(&remote);
    assert_eq!(run(&s, &["backup", "-q", "--db", path(&on_mount)]).0, Some(69));
    assert_eq!(run(&s, &["snapshot", "--db", path(&on_mount)]).0, Some(69));
    assert_eq!(entries(&remote), before, "backups or snapshots were written onto the mount");

    // A local database with its backups, snapshots, sessions or audit log on the mount.
    let local = s.path("l.db");
    db_with(&local, "L");
    let rb = remote.join("backups");
    assert_eq!(run(&s, &["backup", "-q", "--db", path(&local), "--backup-dir", path(&rb)]).0, Some(69));
    assert_eq!(run(&s, &["snapshot", "--db", path(&local), "--snapshot-dir", path(&remote.join("snaps"))]).0, Some(69));
    let marker = s.path("ran");
    for flag in ["--session-dir", "--audit-dir", "--backup-dir"] {
        let d = remote.join(flag.trim_start_matches('-'));
        let o = warden(&s)
            .args(["run", "-q", "--db", path(&local), flag, path(&d), "--", "touch", path(&marker)])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(69), "{flag}: {}", String::from_utf8_lossy(&o.stderr));
        assert!(!marker.exists(), "{flag} on the mount: the engine started");
    }
    assert_eq!(entries(&remote), before, "something was written onto the mount");
    // A symlinked state directory onto the mount is the same thing.
    let local2 = s.path("m.db");
    db_with(&local2, "M");
    std::fs::create_dir(remote.join("state")).unwrap();
    symlink(remote.join("state"), s.path("m.db.warden")).unwrap();
    assert_eq!(run(&s, &["backup", "-q", "--db", path(&local2)]).0, Some(69));
    assert_eq!(entries(&remote.join("state")), 0);
}

//! One database, one identity: every promise is about the file, not the name typed.
//!
//! The story (issue 11): warden derived its decisions from the path as given. A symlink on
//! local disk pointing into an sshfs mount was judged "local, ext4" and `warden run` started
//! the engine there; 50 symlink aliases of one database gave 50 concurrent writers, and a
//! hard link or a bind-mounted file (a container's `-v /host/e.db:/data/e.db`) let two
//! engines both become writers; a lock file deleted under a live engine let a second engine
//! in. Each test below reaches one database by several names, with real processes, and
//! checks there is exactly one writer and one verdict.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::proc::{ENGINE, WARDEN, skip_or_fail};
use common::{Scratch, local_guard};
use sqlite_warden::OpenError;
use sqlite_warden::guard::connect::{EngineOptions, open_engine};
use sqlite_warden::guard::lock::LockError;

fn engine(s: &Scratch, db: &Path) -> Command {
    let mut c = Command::new(ENGINE);
    c.arg("--db").arg(db).env("WARDEN_AUDIT_DIR", s.audit_dir()).stdout(Stdio::piped()).stderr(Stdio::piped());
    c
}

/// The engine's first JSON line: `ready`, `busy` or a refusal.
fn first_event(child: &mut Child) -> String {
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON: {line:?}: {e}"));
    v["event"].as_str().unwrap_or("?").to_owned()
}

/// Starts every engine at once (each waits for `go`), then counts who became the writer.
fn race(s: &Scratch, names: &[PathBuf]) -> (usize, usize) {
    let go = s.path("go");
    let _ = std::fs::remove_file(&go);
    let mut kids: Vec<Child> = names
        .iter()
        .map(|n| engine(s, n).arg("--wait-for").arg(&go).args(["--hold-ms", "3000"]).spawn().unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(&go, b"").unwrap();
    let (mut ready, mut refused) = (0, 0);
    for k in &mut kids {
        match first_event(k).as_str() {
            "ready" => ready += 1,
            _ => refused += 1,
        }
    }
    for k in &mut kids {
        k.wait().unwrap();
    }
    (ready, refused)
}

fn create_db(s: &Scratch, db: &Path) {
    let out = engine(s, db).arg("--create").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn symlink_aliases_give_exactly_one_session() {
    // `warden run` takes the writer lock before anything else, from the path it was given:
    // every alias must find the one lock of the one file.
    let s = Scratch::new();
    let db = s.path("real.db");
    create_db(&s, &db);
    let mut runs: Vec<Child> = (0..12)
        .map(|i| {
            let alias = s.path(&format!("alias-{i}.db"));
            symlink(&db, &alias).unwrap();
            warden(&s)
                .args(["run", "--quiet", "--db"])
                .arg(&alias)
                .args(["--", "sh", "-c"])
                .arg(format!("touch {}; sleep 4", s.path(&format!("ran-{i}")).display()))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let codes: Vec<Option<i32>> = runs.iter_mut().map(|r| r.wait().unwrap().code()).collect();
    let ran = (0..12).filter(|i| s.path(&format!("ran-{i}")).exists()).count();
    assert_eq!(ran, 1, "sessions through symlink aliases of one database ran at once: {codes:?}");
    assert_eq!(codes.iter().filter(|c| **c == Some(0)).count(), 1, "{codes:?}");
    assert_eq!(codes.iter().filter(|c| **c == Some(75)).count(), 11, "the others are refused as locked: {codes:?}");
    assert!(!s.path("alias-0.db-warden.lock").exists(), "the lock file belongs beside the real file");
}

#[test]
fn hard_links_give_exactly_one_writer() {
    let s = Scratch::new();
    std::fs::create_dir(s.path("a")).unwrap();
    std::fs::create_dir(s.path("b")).unwrap();
    let db = s.path("a/e.db");
    create_db(&s, &db);
    let names: Vec<PathBuf> = (0..10)
        .map(|i| {
            let link = s.path(&format!("b/link-{i}.db"));
            std::fs::hard_link(&db, &link).unwrap();
            link
        })
        .chain([db.clone()])
        .collect();
    assert_eq!(race(&s, &names), (1, 10), "a hard link is the same file: one writer");
}

#[test]
fn a_bind_mounted_file_has_exactly_one_writer() {
    let s = Scratch::new();
    let db = s.path("host.db");
    create_db(&s, &db);
    std::fs::create_dir(s.path("container")).unwrap();
    let inside = s.path("container/data.db");
    std::fs::write(&inside, b"").unwrap();
    let mounted = Command::new("mount").arg("--bind").arg(&db).arg(&inside).output();
    if !mounted.as_ref().is_ok_and(|o| o.status.success()) {
        skip_or_fail("a_bind_mounted_file_has_exactly_one_writer", "mount --bind needs root");
        return;
    }
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(inside.clone());
    for _ in 0..3 {
        assert_eq!(race(&s, &[db.clone(), inside.clone()]), (1, 1), "one file seen through a bind mount: one writer");
    }
}

#[test]
fn a_lock_file_removed_under_a_live_engine_lets_no_second_writer_in() {
    let s = Scratch::new();
    let g = local_guard(&s);
    let db = s.path("e.db");
    let opts = EngineOptions { guard: Some(g.clone()), create: true, ..Default::default() };
    let conn = open_engine(&db, &opts).unwrap();
    conn.execute_batch("CREATE TABLE t(v); INSERT INTO t VALUES (1);").unwrap();
    std::fs::remove_file(s.path("e.db-warden.lock")).unwrap();
    // Another process now finds no lock file, creates one and locks it: the database's own
    // inode lock still refuses it.
    let mut other = engine(&s, &db).args(["--hold-ms", "100"]).spawn().unwrap();
    let event = first_event(&mut other);
    other.wait().unwrap();
    assert_ne!(event, "ready", "a second engine became a writer after the lock file was deleted");
    // The engine that lost its lock file may not write on as if nothing happened.
    let e = conn.execute("INSERT INTO t VALUES (2)", []).unwrap_err();
    assert!(e.to_string().contains("readonly") || e.to_string().contains("locked"), "{e}");
    assert!(s.events().iter().any(|e| e == "open_refused"), "{:?}", s.events());
    let refusal = sqlite_warden::guard::vfs::take_last_refusal().expect("the refusal is recorded");
    assert!(refusal.message.contains("removed or replaced"), "{}", refusal.message);
}

#[test]
fn in_one_process_two_names_of_one_file_share_the_hold() {
    let s = Scratch::new();
    let g = local_guard(&s);
    std::fs::create_dir(s.path("a")).unwrap();
    let db = s.path("a/e.db");
    let opts = EngineOptions { guard: Some(g.clone()), create: true, ..Default::default() };
    let first = open_engine(&db, &opts).unwrap();
    first.execute_batch("CREATE TABLE t(v);").unwrap();
    symlink(s.path("a"), s.path("b")).unwrap();
    // The same file by another path, in the same process: joins the hold (WriterScope::Process).
    let second = open_engine(s.path("b/e.db"), &opts).unwrap();
    second.execute("INSERT INTO t VALUES (1)", []).unwrap();
    drop(second);
    drop(first);
    // A hard link in this process while another process holds the file: refused, naming
    // the cause.
    std::fs::hard_link(&db, s.path("h.db")).unwrap();
    let mut holder = engine(&s, &db).args(["--hold-ms", "20000"]).spawn().unwrap();
    assert_eq!(first_event(&mut holder), "ready");
    let e = open_engine(s.path("h.db"), &opts).map(|_| ()).unwrap_err();
    holder.kill().unwrap();
    holder.wait().unwrap();
    assert!(matches!(e, OpenError::WriterLocked(LockError::HeldElsewhere { .. } | LockError::Held { .. })), "{e:?}");
}

/// A fresh directory on the real sshfs mount, or `None` (skipped loudly; a failure in CI).
fn on_sshfs(test: &str) -> Option<PathBuf> {
    let Some(mnt) = std::env::var_os("WARDEN_SSHFS_MNT") else {
        skip_or_fail(test, "no sshfs mount (scripts/test brings one up)");
        return None;
    };
    let d = PathBuf::from(mnt).join(format!("{test}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    Some(d)
}

fn warden(s: &Scratch) -> Command {
    let mut c = Command::new(WARDEN);
    c.current_dir(s.dir.path()).env("WARDEN_AUDIT_DIR", s.audit_dir()).env_remove("WARDEN_CONFIG");
    c
}

#[test]
fn a_symlink_into_the_sshfs_mount_is_judged_by_its_target() {
    let Some(remote) = on_sshfs("a_symlink_into_the_sshfs_mount_is_judged_by_its_target") else { return };
    let s = Scratch::new();
    let target = remote.join("e.db");
    rusqlite::Connection::open(&target).unwrap().execute_batch("CREATE TABLE t(v);").unwrap();
    let link = s.path("l.db");
    symlink(&target, &link).unwrap();
    let fs = warden(&s).arg("fs").arg(&link).output().unwrap();
    assert_eq!(fs.status.code(), Some(1), "{}", String::from_utf8_lossy(&fs.stdout));
    assert!(String::from_utf8_lossy(&fs.stdout).contains("fuse.sshfs"), "{}", String::from_utf8_lossy(&fs.stdout));
    let marker = s.path("engine-ran");
    let run = warden(&s).args(["run", "--db"]).arg(&link).arg("--").arg("touch").arg(&marker).output().unwrap();
    assert_eq!(run.status.code(), Some(69), "{}", String::from_utf8_lossy(&run.stderr));
    assert!(!marker.exists(), "the engine started on the network mount through a symlink");

    // A symlinked directory anywhere on the path.
    let ldir = s.path("ldir");
    symlink(&remote, &ldir).unwrap();
    let run =
        warden(&s).args(["run", "--db"]).arg(ldir.join("e.db")).arg("--").arg("touch").arg(&marker).output().unwrap();
    assert_eq!(run.status.code(), Some(69), "{}", String::from_utf8_lossy(&run.stderr));
    assert!(!marker.exists());

    // A local database whose `<db>.warden` state directory is a symlink onto the mount: the
    // backups would land on the network.
    let local = s.path("local.db");
    rusqlite::Connection::open(&local).unwrap().execute_batch("CREATE TABLE t(v);").unwrap();
    std::fs::create_dir(remote.join("state")).unwrap();
    symlink(remote.join("state"), s.path("local.db.warden")).unwrap();
    let run = warden(&s).args(["run", "--db"]).arg(&local).arg("--").arg("touch").arg(&marker).output().unwrap();
    assert_eq!(run.status.code(), Some(69), "{}", String::from_utf8_lossy(&run.stderr));
    assert!(!marker.exists(), "the session started with its backups on the network mount");
    assert_eq!(std::fs::read_dir(remote.join("state")).unwrap().count(), 0, "nothing written on the mount");
}

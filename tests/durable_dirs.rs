//! Every directory warden creates is made durable in its parent (issue 11, defect 10): a
//! directory created without an fsync of the directory it was made in can vanish after a
//! power cut, together with the first backup, artifact or audit record written into it.
//!
//! The proof watches a real `warden run` (and `warden snapshot`) on a fresh database under
//! `strace -y`, which names the file behind every descriptor: each successful `mkdir` of a
//! directory D must be followed by an `fsync` of D's parent.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::proc::*;

/// The directories `warden args` created, each checked to be fsynced into its parent.
fn traced(s: &common::Scratch, args: &[&str]) -> Option<Vec<PathBuf>> {
    let log = s.path("strace.log");
    let mut c = Command::new("strace");
    c.args(["-f", "-y", "-qq", "-e", "trace=mkdir,mkdirat,fsync,fdatasync", "-o"])
        .arg(&log)
        .arg(WARDEN)
        .args(args)
        .current_dir(s.dir.path())
        .env("WARDEN_AUDIT_DIR", s.path("fresh-audit"))
        .env_remove("WARDEN_CONFIG");
    let out = c.output().ok()?;
    assert!(out.status.success(), "warden {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(&log).ok()?;
    let mut made = Vec::new();
    let mut synced = Vec::new();
    for (i, line) in text.lines().enumerate() {
        // `1234 mkdir("/tmp/x/e.db.warden", 0750) = 0` or `mkdirat(AT_FDCWD, "...", 0700) = 0`
        if (line.contains(" mkdir(") || line.contains(" mkdirat(")) && line.trim_end().ends_with("= 0") {
            let path = line.split('"').nth(1).expect("a quoted path");
            made.push((i, PathBuf::from(path)));
        }
        // `1234 fsync(5</tmp/x>) = 0`
        if (line.contains(" fsync(") || line.contains(" fdatasync(")) && line.trim_end().ends_with("= 0") {
            let inner = line.split('<').nth(1).and_then(|r| r.split('>').next()).expect("strace -y names the fd");
            synced.push((i, PathBuf::from(inner)));
        }
    }
    let mut dirs = Vec::new();
    for (at, dir) in made {
        let parent = dir.parent().unwrap().to_owned();
        assert!(
            synced.iter().any(|(j, p)| *j > at && p == &parent),
            "`{}` was created, and its parent `{}` was never fsynced after it:\n{text}",
            dir.display(),
            parent.display()
        );
        dirs.push(dir);
    }
    Some(dirs)
}

fn strace_works() -> bool {
    Command::new("strace").args(["-qq", "-e", "trace=none", "true"]).status().is_ok_and(|s| s.success())
}

#[test]
fn every_directory_a_session_creates_is_fsynced_into_its_parent() {
    if !strace_works() {
        skip_or_fail("every_directory_a_session_creates_is_fsynced_into_its_parent", "strace cannot trace here");
        return;
    }
    let s = common::Scratch::new();
    let db = s.path("e.db");
    common::make_db(&db, "delete");
    let dbs = db.to_str().unwrap();
    let dirs = traced(&s, &["run", "--db", dbs, "--", "true"]).expect("strace ran");
    let state = state_dir(&db);
    for want in [state.clone(), state.join("backups"), state.join("sessions"), s.path("fresh-audit")] {
        assert!(dirs.contains(&want), "`{}` was not created by the run (created: {dirs:?})", want.display());
    }
    let dirs = traced(&s, &["snapshot", "--db", dbs]).expect("strace ran");
    assert!(dirs.iter().any(|d| d.starts_with(Path::new(&state))), "the snapshot created no directory: {dirs:?}");
}

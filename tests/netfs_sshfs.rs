//! A real network filesystem: sshfs mounted over loopback by `scripts/test`
//! (`scripts/sshfs.sh`), exported to the tests as `WARDEN_SSHFS_MNT`.
//!
//! This is the hazard warden exists for: plain SQLite accepts `journal_mode=WAL` on the
//! mount without a word, while warden refuses the engine there and names the mount.

use std::path::PathBuf;
use std::process::Command;

use rusqlite::Connection;
use sqlite_warden::guard::connect::{EngineOptions, ToolOptions, open_engine, open_tool};
use sqlite_warden::guard::error::OpenError;
use sqlite_warden::guard::policy::{NetworkPolicy, Policy};
use sqlite_warden::guard::vfs::{self, GuardConfig};

/// A fresh directory on the sshfs mount, or `None` (with a loud message) outside CI when
/// the mount could not be made. In CI a missing mount fails the test.
fn on_mount(name: &str) -> Option<PathBuf> {
    let Some(mnt) = std::env::var_os("WARDEN_SSHFS_MNT").map(PathBuf::from) else {
        assert!(std::env::var_os("CI").is_none(), "CI must run the sshfs tests: run them through scripts/test");
        eprintln!("\n!!!!! SKIPPED {name}: no sshfs mount (WARDEN_SSHFS_MNT unset); run scripts/test !!!!!\n");
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

fn audit_dir(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("warden-sshfs-audit-{name}-{}", std::process::id()))
}

#[test]
fn plain_sqlite_silently_accepts_wal_but_warden_refuses_the_engine() {
    let Some(dir) = on_mount("engine") else {
        return;
    };
    // The hazard: the default VFS says yes.
    let plain = Connection::open(dir.join("plain.db")).unwrap();
    let mode: String = plain.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0)).unwrap();
    assert_eq!(mode, "wal", "plain SQLite accepts WAL on sshfs");
    plain.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);").unwrap();
    drop(plain);

    // warden, with the real probe: refused, naming the filesystem.
    let g = vfs::register(
        &format!("sshfs-refuse-{}", std::process::id()),
        GuardConfig { audit_dir: audit_dir("refuse"), ..GuardConfig::default() },
    )
    .unwrap();
    let db = dir.join("engine.db");
    let e =
        open_engine(&db, &EngineOptions { guard: Some(g.clone()), create: true, ..Default::default() }).unwrap_err();
    match &e {
        OpenError::NetworkFilesystem { verdict, .. } => {
            assert_eq!(verdict.fstype, "fuse.sshfs");
            assert_eq!(verdict.magic, Some(sqlite_warden::storage::magic::FUSE_SUPER_MAGIC));
            assert!(verdict.source.as_deref().unwrap().contains("127.0.0.1"));
        }
        other => panic!("expected NetworkFilesystem, got {other}"),
    }
    assert!(!db.exists());
    // The WAL-mode database plain SQLite left there is refused even to readers.
    let e = open_tool(dir.join("plain.db"), &ToolOptions { guard: Some(g), ..Default::default() }).unwrap_err();
    assert!(matches!(e, OpenError::WalRefused { .. }), "{e}");
}

#[test]
fn rollback_only_on_sshfs_refuses_wal_with_the_message() {
    let Some(dir) = on_mount("rollback") else {
        return;
    };
    let g = vfs::register(
        &format!("sshfs-rollback-{}", std::process::id()),
        GuardConfig {
            policy: Policy { network: NetworkPolicy::RollbackOnly, ..Policy::default() },
            audit_dir: audit_dir("rollback"),
            ..GuardConfig::default()
        },
    )
    .unwrap();
    let db = dir.join("r.db");
    let c = open_engine(&db, &EngineOptions { guard: Some(g), create: true, ..Default::default() }).unwrap();
    c.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);").unwrap();
    let mode: String = c.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
    assert_eq!(mode, "delete");
    let e = c.query_row("PRAGMA journal_mode=WAL", [], |r| r.get::<_, String>(0)).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("journal_mode=WAL refused")
            && msg.contains("fuse.sshfs")
            && msg.contains(&db.display().to_string()),
        "{msg}"
    );
    assert!(!PathBuf::from(format!("{}-wal", db.display())).exists());
}

#[test]
fn warden_fs_says_not_safe() {
    let Some(dir) = on_mount("cli") else { return };
    let out = Command::new(env!("CARGO_BIN_EXE_warden")).args(["fs", "--json"]).arg(&dir).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let v = &v["verdicts"][0];
    assert_eq!(v["engine_safe"], false);
    assert_eq!(v["verdict"]["kind"], "network");
    assert_eq!(v["verdict"]["fstype"], "fuse.sshfs");
}

//! Shared test helpers: scratch databases and guards over simulated mounts.
#![allow(dead_code)]

pub mod proc;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use sqlite_warden::guard::policy::{NetworkPolicy, Policy};
use sqlite_warden::guard::vfs::{self, Guard, GuardConfig};
use sqlite_warden::storage::SimulatedProbe;

/// The `[backups]` section that keeps full files.
pub const FILE_BACKUPS: &str = "[backups]\nstore = \"files\"\n";

/// A scratch directory with its own audit directory.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Self {
        Scratch { dir: tempfile::tempdir().unwrap() }
    }
    /// A scratch directory whose `warden.toml` keeps backups as full files (`[backups]
    /// store = "files"`): for tests that pin the file format (they open, flip and count
    /// data files); `tests/page_store.rs` covers the page store, the default.
    pub fn with_file_backups() -> Self {
        let s = Scratch::new();
        std::fs::write(s.path("warden.toml"), FILE_BACKUPS).unwrap();
        s
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    pub fn audit_dir(&self) -> PathBuf {
        self.dir.path().join("audit")
    }
    pub fn audit_lines(&self) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(self.audit_dir().join("audit.jsonl")).unwrap_or_default();
        text.lines().map(|l| serde_json::from_str(l).expect("every audit line is JSON")).collect()
    }
    pub fn events(&self) -> Vec<String> {
        self.audit_lines().iter().map(|v| v["event"].as_str().unwrap().to_owned()).collect()
    }
}

fn unique(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("{prefix}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// A guard whose probe says `dir` is a mount of `fstype` with `options`.
pub fn guard_on(scratch: &Scratch, dir: &Path, fstype: &str, options: &str, network: NetworkPolicy) -> Guard {
    let probe = SimulatedProbe::local_root().mount(dir, fstype, "//nas/trading", options);
    let config = GuardConfig {
        probe: Arc::new(probe),
        policy: Policy { network, ..Policy::default() },
        audit_dir: scratch.audit_dir(),
        parent: "unix".into(),
    };
    vfs::register(&unique(&format!("t-{}", fstype.replace('.', "_"))), config).unwrap()
}

/// A guard on a plain local disk (simulated ext4 root), auditing into the scratch dir.
pub fn local_guard(scratch: &Scratch) -> Guard {
    let config = GuardConfig {
        probe: Arc::new(SimulatedProbe::local_root()),
        audit_dir: scratch.audit_dir(),
        ..GuardConfig::default()
    };
    vfs::register(&unique("t-local"), config).unwrap()
}

/// A plain SQLite database (default unix VFS) with a table and rows.
pub fn make_db(path: &Path, journal: &str) {
    let c = rusqlite::Connection::open(path).unwrap();
    c.execute_batch(&format!(
        "PRAGMA journal_mode={journal}; CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t(v) VALUES ('a'),('b');"
    ))
    .unwrap();
}

//! What the guard costs: the shim against SQLite's plain `unix` VFS, measured in one run.
//!
//! - `commit/*`: many small commits in WAL mode on local disk (the engine's hot path);
//!   goal: warden ≤ 1.01× plain.
//! - `open/*`: open + first read + close with a 5000-mount table (the probe's worst case);
//!   goal: ≤ 1.10× plain for tooling opens. Engine opens also take the writer lock and
//!   write audit lines, and are reported separately.
//!
//! `scripts/bench` runs this and prints the ratios of the medians.
#![allow(missing_docs)] // criterion_group! generates undocumented items

use std::path::Path;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use rusqlite::{Connection, OpenFlags};
use sqlite_warden::guard::vfs::{self, Guard, GuardConfig};
use sqlite_warden::storage::RealProbe;

fn big_mountinfo(dir: &Path) -> std::path::PathBuf {
    let mut text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    for i in 0..5000 {
        text.push_str(&format!(
            "{} 1 0:{} / /run/bench/m{i} rw,nosuid - tmpfs tmpfs rw,size=1024k\n",
            100_000 + i,
            5000 + i
        ));
    }
    let p = dir.join("mountinfo");
    std::fs::write(&p, text).unwrap();
    p
}

fn guard(dir: &Path) -> Guard {
    let config = GuardConfig {
        probe: Arc::new(RealProbe::with_mountinfo_file(big_mountinfo(dir))),
        audit_dir: dir.join("audit"),
        ..GuardConfig::default()
    };
    vfs::register("warden-bench", config).unwrap()
}

fn setup(path: &Path, vfs: &str) -> Connection {
    let c = Connection::open_with_flags_and_vfs(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
        vfs,
    )
    .unwrap();
    c.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v BLOB);").unwrap();
    c
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let g = guard(dir.path());

    let mut commit = c.benchmark_group("commit");
    let plain = setup(&dir.path().join("plain.db"), "unix");
    let guarded = setup(&dir.path().join("guarded.db"), g.engine_vfs());
    let blob = vec![7u8; 200];
    for (name, conn) in [("plain", &plain), ("warden", &guarded)] {
        let mut stmt = conn.prepare("INSERT INTO t(v) VALUES (?1)").unwrap();
        commit.bench_function(name, |b| b.iter(|| stmt.execute([&blob]).unwrap()));
    }
    commit.finish();
    drop((plain, guarded));

    let mut open = c.benchmark_group("open");
    let db = dir.path().join("open.db");
    drop(setup(&db, "unix"));
    let read = |vfs: &str, flags: OpenFlags| {
        let c = Connection::open_with_flags_and_vfs(&db, flags, vfs).unwrap();
        let n: i64 = c.query_row("SELECT count(*) FROM t", [], |r| r.get(0)).unwrap();
        n
    };
    let ro = OpenFlags::SQLITE_OPEN_READ_ONLY;
    let rw = OpenFlags::SQLITE_OPEN_READ_WRITE;
    open.bench_function("plain", |b| b.iter(|| read("unix", ro)));
    open.bench_function("warden_tool", |b| b.iter(|| read(g.tool_vfs(), ro)));
    open.bench_function("plain_rw", |b| b.iter(|| read("unix", rw)));
    open.bench_function("warden_engine", |b| b.iter(|| read(g.engine_vfs(), rw)));
    open.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(60).measurement_time(std::time::Duration::from_secs(4));
    targets = bench
}
criterion_main!(benches);

//! The page store on a large database (1 GiB by default), measured in one run: a full first
//! backup, post-session restore points after 1 % and 10 % of the pages changed and after
//! no change, and `warden drill` from the store (and `drill --recheck`) against `cp` +
//! `quick_check` of a plain copy.
//!
//! Each row is the median of `WARDEN_BENCH_REPS` runs (default 3) with a warm page cache and
//! no dirty pages left by the step before (`sync` before each timed step).
//! Goals (issue 14): a post-session point after 1 % changed takes ≤ 0.1 × the full backup
//! and writes ≤ 2 % of the database; an unchanged state writes ≈ 0 bytes; drill ÷
//! (cp + quick_check) ≤ 1.2. A post-session point is measured both ways warden can take
//! it: `post_check = "next_gate"` (read straight from the file under the writer lock, its
//! check left to the next gate, which checks that content anyway) and `at_close` (a copy
//! checked before it is published).
//!
//! `scripts/bench store` runs it. `WARDEN_BENCH_DB_MB` sets the size, `WARDEN_BENCH_DIR`
//! the directory (default `target/bench-data/page_store`, needs about 3× the size free).
#![allow(missing_docs)]

use std::path::{Path, PathBuf};
use std::time::Instant;

use rusqlite::Connection;
use sqlite_warden::copies::backup::{BackupOptions, BackupStore, CheckMode, StoreFormat, check_file};
use sqlite_warden::copies::restore::{DrillOptions, drill};
use sqlite_warden::guard::vfs::{self, GuardConfig};

const ROW: usize = 3000;

fn dir() -> PathBuf {
    std::env::var_os("WARDEN_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-data/page_store"))
}

fn build(db: &Path, mb: u64) -> u64 {
    let rows = mb * 1024 * 1024 / 4096;
    let marker = db.with_extension(format!("built-{mb}"));
    if marker.exists() && db.exists() {
        return rows;
    }
    let _ = std::fs::remove_file(db);
    let c = Connection::open(db).unwrap();
    c.execute_batch(
        "PRAGMA journal_mode=DELETE; PRAGMA synchronous=OFF; CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB);",
    )
    .unwrap();
    let tx = c.unchecked_transaction().unwrap();
    {
        let mut ins = tx.prepare("INSERT INTO t(id, v) VALUES (?1, randomblob(?2))").unwrap();
        for i in 0..rows {
            ins.execute((i as i64, ROW as i64)).unwrap();
        }
    }
    tx.commit().unwrap();
    drop(c);
    std::fs::write(&marker, b"").unwrap();
    rows
}

/// Rewrites `fraction` of the rows (about one row per page), spread over the file.
fn change(db: &Path, rows: u64, fraction: f64, seed: u64) {
    let c = Connection::open(db).unwrap();
    let n = ((rows as f64) * fraction) as u64;
    let step = (rows / n.max(1)).max(1);
    let tx = c.unchecked_transaction().unwrap();
    {
        let mut up = tx.prepare("UPDATE t SET v = randomblob(?2) WHERE id = ?1").unwrap();
        for k in 0..n {
            let id = (k * step + seed % step) % rows;
            up.execute((id as i64, ROW as i64)).unwrap();
        }
    }
    tx.commit().unwrap();
}

/// Reads `p` into the page cache, then lets the kernel write back every dirty page, so a
/// timed step neither reads from disk nor competes with the writeback of the step before.
fn warm(p: &Path) {
    let _ = std::fs::read(p);
    settle();
}

fn settle() {
    let _ = std::process::Command::new("sync").status();
}

struct Row {
    name: &'static str,
    secs: Vec<f64>,
    bytes: Vec<u64>,
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs the target without it:
    // keep that a smoke run (8 MiB, once, in its own directory).
    let testing = !std::env::args().any(|a| a == "--bench");
    let mb: u64 =
        std::env::var("WARDEN_BENCH_DB_MB").ok().and_then(|v| v.parse().ok()).unwrap_or(if testing { 8 } else { 1024 });
    let reps: usize =
        std::env::var("WARDEN_BENCH_REPS").ok().and_then(|v| v.parse().ok()).unwrap_or(if testing { 1 } else { 3 });
    let base_dir = if testing { dir().with_file_name("page_store-test") } else { dir() };
    std::fs::create_dir_all(&base_dir).unwrap();
    let base = base_dir.join(format!("base-{mb}.db"));
    eprintln!("page_store bench: {mb} MiB database at {}", base.display());
    let rows = build(&base, mb);
    let size = std::fs::metadata(&base).unwrap().len();
    let mut table: Vec<Row> = Vec::new();
    let mut push = |name, secs, bytes| match table.iter_mut().find(|r| r.name == name) {
        Some(r) => {
            r.secs.push(secs);
            r.bytes.push(bytes);
        }
        None => table.push(Row { name, secs: vec![secs], bytes: vec![bytes] }),
    };
    for rep in 0..reps {
        let work = base_dir.join(format!("run-{rep}"));
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work).unwrap();
        let db = work.join("e.db");
        std::fs::copy(&base, &db).unwrap();
        warm(&db);
        let store = BackupStore::new(work.join("backups"), &db).with_format(StoreFormat::Pages { level: 3 });
        let opts = |defer: bool| BackupOptions {
            check: CheckMode::Full,
            writer_lock_held: true,
            defer_check: defer,
            ..Default::default()
        };
        let take = |name: &'static str, defer: bool, push: &mut dyn FnMut(&'static str, f64, u64)| {
            settle();
            let t = Instant::now();
            let out = store.take(&db, &opts(defer)).unwrap();
            let secs = t.elapsed().as_secs_f64();
            let rec = out.published.expect("published");
            let bytes = rec.manifest.stored.as_ref().map_or(0, |s| s.new_bytes);
            push(name, secs, bytes);
            rec
        };
        take("full_first_backup", false, &mut push);
        take("unchanged_next_gate", true, &mut push);
        take("unchanged_at_close", false, &mut push);
        change(&db, rows, 0.01, rep as u64);
        warm(&db);
        take("post_1pct_next_gate", true, &mut push);
        change(&db, rows, 0.01, rep as u64 + 7);
        warm(&db);
        take("post_1pct_at_close", false, &mut push);
        change(&db, rows, 0.10, rep as u64 + 13);
        warm(&db);
        take("post_10pct_next_gate", true, &mut push);
        // The drill warden runs (`warden drill`): pick the newest good point, rebuild it from
        // the store into a scratch copy, hash it, and check it unless its content passed a
        // full check already; then `--recheck` (the nightly drill), which always checks.
        let guard = vfs::register(
            &format!("bench-drill-{rep}"),
            GuardConfig { audit_dir: work.join("audit"), ..GuardConfig::default() },
        )
        .unwrap();
        // Its packs in the page cache, as the database is for `cp`.
        for e in std::fs::read_dir(work.join("backups/pages")).unwrap() {
            warm(&e.unwrap().path());
        }
        // The baseline first, so that it and the drill both start from the same state: packs
        // and database in the page cache, nothing written back pending, no large file just
        // deleted (whose freed memory a VM hands out faster than memory it must fault in).
        // Its copy stays until the run's directory goes.
        let cp = work.join("cp.db");
        settle();
        let t = Instant::now();
        let status = std::process::Command::new("cp").arg(&db).arg(&cp).status().unwrap();
        assert!(status.success());
        let (r, _) = check_file(&cp, CheckMode::Quick, None, None);
        assert!(r.ok);
        push("cp_and_quick_check", t.elapsed().as_secs_f64(), 0);
        for (name, recheck) in [("drill", false), ("drill_recheck", true)] {
            settle();
            let t = Instant::now();
            let d = drill(&db, &store, &DrillOptions { guard: Some(guard.clone()), recheck, ..Default::default() })
                .unwrap()
                .record;
            assert!(d.ok, "{:?}", d.messages);
            assert_eq!(d.integrity.is_some(), recheck, "{:?}", d.checked_before);
            push(name, t.elapsed().as_secs_f64(), d.bytes);
        }
        let _ = std::fs::remove_dir_all(&work);
    }
    let full = median(&table[0].secs);
    let cp = table.iter().find(|r| r.name == "cp_and_quick_check").map_or(1.0, |r| median(&r.secs));
    println!("\npage store, {mb} MiB database ({size} bytes), medians of {reps}");
    println!("{:24} {:>9} {:>14} {:>10} {:>9}  goal", "row", "median s", "bytes written", "% of db", "ratio");
    for r in &table {
        let s = median(&r.secs);
        let mut b = r.bytes.clone();
        b.sort_unstable();
        let bytes = b[b.len() / 2];
        let (ratio, goal) = match r.name {
            "post_1pct_next_gate" => (
                s / full,
                format!("time <= 0.1 x full: {}; bytes <= 2%: {}", ok(s / full <= 0.1), ok(bytes * 50 <= size)),
            ),
            "unchanged_next_gate" | "unchanged_at_close" => {
                (s / full, format!("bytes ~ 0: {}", ok(bytes < size / 1000)))
            }
            "drill" => (s / cp, format!("<= 1.2 x cp+quick_check: {}", ok(s / cp <= 1.2))),
            "drill_recheck" => (s / cp, "full check of the copy (nightly drill)".into()),
            "cp_and_quick_check" => (1.0, "baseline".into()),
            "full_first_backup" => (1.0, "baseline".into()),
            _ => (s / full, String::new()),
        };
        println!(
            "{:24} {:9.3} {:14} {:9.2}% {:9.3}  {goal}",
            r.name,
            s,
            bytes,
            bytes as f64 * 100.0 / size as f64,
            ratio
        );
    }
}

fn ok(b: bool) -> &'static str {
    if b { "met" } else { "MISSED" }
}

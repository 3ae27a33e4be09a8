//! The pre-session gate on a large database (1 GiB by default) against doing the same by hand
//! with the sqlite3 CLI, measured in one run.
//!
//! - `warden_gate_and_backup`: exactly what `warden run` does before starting an engine: take
//!   the writer lock, then `session::gate::run` with a `Pre` backup and the full integrity
//!   check (private copy + recovery, `integrity_check` beside SHA-256 + fsync, publication).
//! - `cli_by_hand`: a user's script: `sqlite3 DB ".backup COPY"`, `sqlite3 COPY "PRAGMA
//!   integrity_check"`, `sha256sum COPY`, as separate processes.
//! - `cli_integrity_check_alone`: `sqlite3 DB "PRAGMA integrity_check"` on the original. The
//!   baseline of the goal: the gate ≤ 1.15× this.
//! - `cli_integrity_check_cache64m`: the same with `PRAGMA cache_size=-65536` first, the page
//!   cache warden's check uses: separates "cache setting" from "SQLite version".
//! - `warden_integrity_check_alone`: `session::backup::check_file` on a plain copy, i.e. the
//!   integrity check with warden's SQLite and settings, to tell "SQLite version/settings"
//!   apart from "warden's overhead" (the sqlite3 CLI is the system's, warden bundles its own).
//!
//! Cleanup (removing the published backup or the CLI's copy) is outside the timed region.
//!
//! The database is a trading engine's "fills" table with two secondary indexes, built once
//! into `WARDEN_BENCH_DIR` (default `target/bench-data/session_gate`) at `WARDEN_BENCH_DB_MB`
//! MiB (default 1024) and reused by later runs (a `<db>.built-<MB>` marker says it is
//! complete). Building 1 GiB takes about a minute. The page cache is warm when measuring: the
//! file was just built or has just been read in full. Under `cargo test --benches`
//! (criterion's test mode, each benchmark once) the default size is 8 MiB, in
//! `target/bench-data/session_gate-test`.
//!
//! Each iteration also records the CPU that other processes used meanwhile: on a 2-vCPU
//! machine a parallel build skews the later benchmarks, and `scripts/bench` says so.
//!
//! `scripts/bench gate` runs this and prints the medians, the ratios and the gate's phases
//! (from the manifests of this run's backups, written to `<criterion>/<group>/gate-run.json`).
#![allow(missing_docs)] // criterion_group! generates undocumented items

use std::cell::OnceCell;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use rusqlite::{Connection, params};
use serde_json::json;
use sqlite_warden::copies::backup::{self, BackupOptions, BackupStore, CheckMode};
use sqlite_warden::guard::lock::{WriterLock, WriterScope};
use sqlite_warden::session::BackupKind;
use sqlite_warden::session::gate::{self, GateOptions};

const MIB: u64 = 1024 * 1024;
const ROWS_PER_TX: u64 = 50_000;
const SYMBOLS: usize = 400;
const VENUES: [&str; 12] =
    ["XNAS", "XNYS", "ARCX", "BATS", "EDGX", "EDGA", "IEXG", "MEMX", "XBOS", "XPHL", "XCHI", "LTSE"];

/// `cargo bench` passes `--bench`; `cargo test --benches` does not (criterion then runs each
/// benchmark once); `-- --test` forces the test mode too.
fn test_mode() -> bool {
    let args: Vec<String> = std::env::args().collect();
    !args.iter().any(|a| a == "--bench") || args.iter().any(|a| a == "--test")
}

fn env_mb() -> u64 {
    match std::env::var("WARDEN_BENCH_DB_MB") {
        Ok(v) => v
            .trim()
            .parse()
            .ok()
            .filter(|&n| n > 0)
            .unwrap_or_else(|| panic!("WARDEN_BENCH_DB_MB must be a positive whole number of MiB, got `{v}`")),
        Err(_) if test_mode() => 8,
        Err(_) => 1024,
    }
}

fn size_label(mb: u64) -> String {
    if mb.is_multiple_of(1024) { format!("{}gib", mb / 1024) } else { format!("{mb}mib") }
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

/// Where criterion writes (same rules as criterion: `CRITERION_HOME`, else the target dir).
fn criterion_home() -> PathBuf {
    std::env::var_os("CRITERION_HOME").map(PathBuf::from).unwrap_or_else(|| target_dir().join("criterion"))
}

fn sidecar(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn remove_set(p: &Path) {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let _ = std::fs::remove_file(sidecar(p, suffix));
    }
}

/// xorshift64*: deterministic rows without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn symbols() -> Vec<String> {
    let mut rng = Rng(0x5eed_5eed_5eed_5eed);
    (0..SYMBOLS)
        .map(|_| {
            let len = 3 + (rng.next() % 3) as usize;
            (0..len).map(|_| char::from(b'A' + (rng.next() % 26) as u8)).collect()
        })
        .collect()
}

/// Builds the database the way an engine leaves it after a clean close: WAL in the header,
/// no `-wal` file. Returns the number of rows.
fn build(db: &Path, target_bytes: u64) -> rusqlite::Result<u64> {
    let started = Instant::now();
    let conn = Connection::open(db)?;
    // page_size first: it cannot change once the database is in WAL mode.
    conn.execute_batch(
        "PRAGMA page_size=4096;
         PRAGMA journal_mode=WAL;
         PRAGMA synchronous=OFF;
         CREATE TABLE fills(id INTEGER PRIMARY KEY, ts INTEGER, symbol TEXT, side INTEGER,
                            qty INTEGER, price REAL, venue TEXT);
         CREATE INDEX fills_symbol_ts ON fills(symbol, ts);
         CREATE INDEX fills_venue ON fills(venue);",
    )?;
    let syms = symbols();
    let mut rng = Rng(0x0123_4567_89ab_cdef);
    let mut ts: i64 = 1_700_000_000_000_000_000;
    let mut rows = 0u64;
    let mut last_report = Instant::now();
    let mut ins =
        conn.prepare("INSERT INTO fills(ts, symbol, side, qty, price, venue) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?;
    loop {
        conn.execute_batch("BEGIN")?;
        for _ in 0..ROWS_PER_TX {
            let r = rng.next();
            ts += 1 + (r % 2000) as i64;
            let sym = &syms[(r >> 16) as usize % syms.len()];
            let side = ((r >> 32) & 1) as i64;
            let qty = 1 + ((r >> 33) % 1000) as i64;
            let price = 1.0 + ((r >> 43) % 500_000) as f64 / 100.0;
            let venue = VENUES[(r >> 8) as usize % VENUES.len()];
            ins.execute(params![ts, sym, side, qty, price, venue])?;
        }
        conn.execute_batch("COMMIT")?;
        rows += ROWS_PER_TX;
        let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
        let bytes = u64::try_from(pages).unwrap_or(0) * 4096;
        if bytes >= target_bytes {
            break;
        }
        if last_report.elapsed() >= Duration::from_secs(5) {
            let secs = started.elapsed().as_secs_f64();
            eprintln!(
                "  building: {:>5} / {} MiB, {rows} rows, {:.0} rows/s, {secs:.0} s",
                bytes / MIB,
                target_bytes / MIB,
                rows as f64 / secs
            );
            last_report = Instant::now();
        }
    }
    drop(ins);
    let busy: i64 = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
    assert_eq!(busy, 0, "the final checkpoint of the bench database was blocked");
    conn.close().map_err(|(_, e)| e)?;
    eprintln!("  built {rows} rows in {:.1} s", started.elapsed().as_secs_f64());
    Ok(rows)
}

/// Reads the whole file: the page cache is warm for every benchmark, built or reused.
fn warm(db: &Path) -> std::io::Result<Duration> {
    let started = Instant::now();
    let mut f = std::fs::File::open(db)?;
    let mut buf = vec![0u8; 1 << 20];
    while f.read(&mut buf)? > 0 {}
    Ok(started.elapsed())
}

struct Fixture {
    dir: PathBuf,
    db: PathBuf,
    bytes: u64,
    rows: u64,
    store: BackupStore,
    /// Plain copy for `warden_integrity_check_alone`, made on first use.
    plain_copy: OnceCell<PathBuf>,
    /// Held for the whole run: two runs sharing the directory would delete each other's
    /// copies and measure each other's load.
    _dir_lock: std::fs::File,
}

fn fixture(mb: u64) -> Fixture {
    // Test mode (`cargo test --all-targets`) gets its own directory, so it never waits for,
    // or disturbs, a benchmark run.
    let default = if test_mode() { "session_gate-test" } else { "session_gate" };
    let dir = std::env::var_os("WARDEN_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("bench-data").join(default));
    std::fs::create_dir_all(&dir).unwrap();
    let lock_path = dir.join(".session_gate.lock");
    let dir_lock = std::fs::File::create(&lock_path).unwrap();
    if dir_lock.try_lock().is_err() {
        eprintln!("session_gate: another run uses {}; waiting for it to finish ...", dir.display());
        dir_lock.lock().unwrap();
    }
    let db = dir.join(format!("fills-{}.db", size_label(mb)));
    let marker = sidecar(&db, &format!(".built-{mb}"));
    let target_bytes = mb * MIB;
    let reusable = marker.exists()
        && std::fs::metadata(&db).is_ok_and(|m| m.len() >= target_bytes)
        && !std::fs::metadata(sidecar(&db, "-wal")).is_ok_and(|m| m.len() > 0)
        && !sidecar(&db, "-journal").exists();
    if reusable {
        eprintln!("session_gate: reusing {} (marker {})", db.display(), marker.display());
    } else {
        eprintln!("session_gate: building {} ({mb} MiB, WAL, 4 KiB pages; about a minute per GiB) ...", db.display());
        let _ = std::fs::remove_file(&marker);
        remove_set(&db);
        let rows = build(&db, target_bytes).unwrap();
        // Flush the build's dirty pages now, so background writeback does not disturb the
        // measurements.
        std::fs::File::open(&db).unwrap().sync_all().unwrap();
        std::fs::write(&marker, json!({ "mb": mb, "rows": rows }).to_string()).unwrap();
    }
    assert!(!sidecar(&db, "-wal").exists(), "the bench database must have no -wal (clean close)");
    let bytes = std::fs::metadata(&db).unwrap().len();
    let took = warm(&db).unwrap();
    let rows = std::fs::read(&marker)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v["rows"].as_u64())
        .unwrap_or(0);
    eprintln!(
        "session_gate: {} = {:.1} MiB, {rows} rows; read in full in {:.1} s before measuring: \
         all numbers below are WARM page-cache numbers",
        db.display(),
        bytes as f64 / MIB as f64,
        took.as_secs_f64()
    );
    let store = BackupStore::new(dir.join("backups"), &db);
    // Backups left by an interrupted earlier run.
    let lock = store.lock().unwrap();
    store.recover(&lock).unwrap();
    for rec in store.list().unwrap() {
        store.remove(&lock, &rec).unwrap();
    }
    drop(lock);
    Fixture { dir, db, bytes, rows, store, plain_copy: OnceCell::new(), _dir_lock: dir_lock }
}

/// A plain (`journal_mode=DELETE`) copy of the database, made like the gate makes its copy.
fn plain_copy(fx: &Fixture) -> PathBuf {
    let copy = fx.dir.join("plain-copy.sqlite");
    remove_set(&copy);
    std::fs::copy(&fx.db, &copy).unwrap();
    let c = Connection::open(&copy).unwrap();
    let mode: String = c.query_row("PRAGMA journal_mode=DELETE", [], |r| r.get(0)).unwrap();
    assert_eq!(mode, "delete");
    drop(c);
    std::fs::File::open(&copy).unwrap().sync_all().unwrap();
    copy
}

fn tool_present(name: &str) -> bool {
    Command::new(name).arg("--version").output().is_ok_and(|o| o.status.success())
}

/// Runs a command like a shell script would, and returns its stdout.
fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// CPU ticks of the whole machine (busy, and the number of CPUs) and of this process with its
/// waited-for children: the difference over an iteration is CPU that something else used.
/// The machine is small (2 vCPU on the target VPS), so any foreign load skews the ratios.
#[derive(Clone, Copy)]
struct CpuTicks {
    machine_busy: u64,
    ours: u64,
    cpus: u64,
}

impl CpuTicks {
    fn now() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let total: Vec<u64> = stat.lines().next()?.split_whitespace().skip(1).map(|v| v.parse().unwrap_or(0)).collect();
        // user nice system idle iowait irq softirq steal: everything but idle and iowait.
        let machine_busy = total.iter().take(8).enumerate().filter(|(i, _)| *i != 3 && *i != 4).map(|(_, v)| v).sum();
        let cpus = stat.lines().filter(|l| l.starts_with("cpu") && !l.starts_with("cpu ")).count() as u64;
        let me = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the command name (which may hold spaces): utime is the 12th.
        let fields: Vec<u64> =
            me.rsplit_once(')')?.1.split_whitespace().skip(11).take(4).map(|v| v.parse().unwrap_or(0)).collect();
        Some(CpuTicks { machine_busy, ours: fields.iter().sum(), cpus: cpus.max(1) })
    }

    /// Share of the machine's CPU capacity used by other processes since `self`.
    fn foreign_share(self, wall: Duration) -> Option<f64> {
        let now = CpuTicks::now()?;
        let foreign = now.machine_busy.saturating_sub(self.machine_busy).saturating_sub(now.ours - self.ours);
        // USER_HZ is 100 on Linux.
        let capacity = wall.as_secs_f64() * 100.0 * self.cpus as f64;
        Some(if capacity > 0.0 { (foreign as f64 / capacity).min(1.0) } else { 0.0 })
    }
}

/// Foreign CPU share per timed iteration, per benchmark.
#[derive(Default)]
struct Noise(std::cell::RefCell<serde_json::Map<String, serde_json::Value>>);

impl Noise {
    /// Times `f`, noting how much CPU other processes took meanwhile.
    fn time(&self, bench: &str, f: impl FnOnce()) -> Duration {
        let ticks = CpuTicks::now();
        let started = Instant::now();
        f();
        let wall = started.elapsed();
        if let Some(share) = ticks.and_then(|t| t.foreign_share(wall)) {
            let mut map = self.0.borrow_mut();
            let list = map.entry(bench.to_owned()).or_insert_with(|| json!([]));
            if let Some(list) = list.as_array_mut() {
                list.push(json!((share * 1000.0).round() / 1000.0));
            }
        }
        wall
    }
}

fn bench(c: &mut Criterion) {
    let mb = env_mb();
    let group_name = format!("gate_{}", size_label(mb));
    let have_sqlite3 = tool_present("sqlite3");
    let have_sha256sum = tool_present("sha256sum");
    let cli_version =
        if have_sqlite3 { run(Command::new("sqlite3").arg("--version")).trim().to_owned() } else { String::new() };
    let mut skipped = Vec::new();
    if !have_sqlite3 {
        skipped.push("cli_by_hand");
        skipped.push("cli_integrity_check_alone");
        skipped.push("cli_integrity_check_cache64m");
    } else if !have_sha256sum {
        skipped.push("cli_by_hand");
    }
    if !skipped.is_empty() {
        let missing = if have_sqlite3 { "`sha256sum`" } else { "`sqlite3`" };
        eprintln!("\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
        eprintln!("!!! session_gate: {missing} not found in PATH: SKIPPING {}", skipped.join(", "));
        eprintln!("!!! (apt-get install sqlite3 coreutils); the ratios against them will be missing");
        eprintln!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n");
    }
    eprintln!(
        "session_gate: warden's SQLite {} (bundled); sqlite3 CLI {}",
        rusqlite::version(),
        if have_sqlite3 { cli_version.as_str() } else { "missing" }
    );

    // Built on first use, so `--list` builds nothing.
    let fx: OnceCell<Fixture> = OnceCell::new();
    let fx = &fx;
    let get = || fx.get_or_init(|| fixture(mb));
    let mut gate_runs = Vec::new();
    let mut cli_runs = Vec::new();
    let noise = Noise::default();
    let noise = &noise;

    let mut g = c.benchmark_group(&group_name);
    // Each iteration takes seconds: one iteration per sample (criterion then warns that it
    // "cannot complete 10 samples" in the target time; expected, every sample is still taken).
    g.sampling_mode(SamplingMode::Flat);

    g.bench_function("warden_gate_and_backup", |b| {
        let fx = get();
        // The gate as a session runs it: comparing with a seal of exactly this content (made
        // once, untimed; the gate asserts below that it matched).
        let sealed = sqlite_warden::copies::seal::make_seal(
            &fx.db,
            sqlite_warden::copies::seal::digest_file(&fx.db).unwrap(),
            sqlite_warden::copies::seal::SealReason::Accept,
            None,
            None,
            "bench".into(),
        );
        let gate_opts = GateOptions {
            seal: Some(sqlite_warden::copies::seal::SealState::Sealed(std::sync::Arc::new(sealed))),
            ..GateOptions::default()
        };
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                let mut result = None;
                let wall = noise.time("warden_gate_and_backup", || {
                    let acquired = WriterLock::acquire(&fx.db, WriterScope::Process).unwrap();
                    let opts = BackupOptions {
                        kind: Some(BackupKind::Pre),
                        writer_lock_held: true,
                        check: CheckMode::Full,
                        check_budget: None,
                        ..Default::default()
                    };
                    result = Some(gate::run(&fx.db, &fx.store, &gate_opts, &opts).unwrap());
                    acquired.lock.release(None);
                });
                timed += wall;
                let (report, published) = result.unwrap();

                assert!(report.passed, "the gate refused the bench database: {}", report.summary());
                assert_eq!(
                    report.seal.as_ref().map(|c| c.verdict),
                    Some(sqlite_warden::copies::seal::SealVerdict::Matches),
                    "the gate compared with the seal"
                );
                let rec = published.expect("a passed gate publishes its pre-session backup");
                assert!(rec.manifest.verified);
                let t = &rec.manifest.timings;
                gate_runs.push(json!({
                    "wall_ms": ms(wall),
                    "gate_ms": report.duration_ms,
                    "copy_ms": t.copy_ms,
                    "check_ms": t.check_ms,
                    "hash_ms": t.hash_ms,
                    "total_ms": t.total_ms,
                    "method": rec.manifest.method,
                    "size": rec.manifest.size,
                }));
                let lock = fx.store.lock().unwrap();
                fx.store.remove(&lock, &rec).unwrap();
            }
            timed
        })
    });

    if have_sqlite3 && have_sha256sum {
        g.bench_function("cli_by_hand", |b| {
            let fx = get();
            let copy = fx.dir.join("cli-copy.sqlite");
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                for _ in 0..iters {
                    remove_set(&copy);
                    let (mut t1, mut t2) = (Duration::ZERO, Duration::ZERO);
                    let (mut check, mut sum) = (String::new(), String::new());
                    let t3 = noise.time("cli_by_hand", || {
                        let t0 = Instant::now();
                        run(Command::new("sqlite3").arg(&fx.db).arg(format!(".backup '{}'", copy.display())));
                        t1 = t0.elapsed();
                        check = run(Command::new("sqlite3").arg(&copy).arg("PRAGMA integrity_check"));
                        t2 = t0.elapsed();
                        sum = run(Command::new("sha256sum").arg(&copy));
                    });
                    timed += t3;
                    assert_eq!(check.trim(), "ok", "sqlite3 integrity_check of the copy");
                    assert_eq!(sum.split_whitespace().next().map(str::len), Some(64), "sha256sum output: {sum}");
                    cli_runs.push(json!({
                        "backup_ms": ms(t1),
                        "check_ms": ms(t2 - t1),
                        "sha256_ms": ms(t3 - t2),
                    }));
                    remove_set(&copy);
                }
                timed
            })
        });
    }

    // The CLI as a user runs it (SQLite's default 2 MB page cache), then with warden's cache
    // (`check_file` sets 64 MiB): the cache, not the SQLite version, is most of the difference.
    let cli_checks = [
        ("cli_integrity_check_alone", "PRAGMA integrity_check"),
        ("cli_integrity_check_cache64m", "PRAGMA cache_size=-65536; PRAGMA integrity_check"),
    ];
    for (name, sql) in cli_checks.into_iter().filter(|_| have_sqlite3) {
        g.bench_function(name, |b| {
            let fx = get();
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                for _ in 0..iters {
                    let mut out = String::new();
                    timed += noise.time(name, || {
                        out = run(Command::new("sqlite3").arg(&fx.db).arg(sql));
                    });
                    assert_eq!(out.trim(), "ok", "sqlite3 `{sql}` on the original");
                }
                timed
            })
        });
    }

    g.bench_function("warden_integrity_check_alone", |b| {
        let fx = get();
        let copy = fx.plain_copy.get_or_init(|| plain_copy(fx));
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                let mut result = None;
                timed += noise.time("warden_integrity_check_alone", || {
                    result = Some(backup::check_file(copy, CheckMode::Full, None, None));
                });
                let (report, _) = result.unwrap();
                assert!(report.ok, "warden's check of the plain copy: {}", report.summary());
            }
            timed
        })
    });
    g.finish();

    let Some(fx) = fx.get() else { return };
    if let Some(copy) = fx.plain_copy.get() {
        remove_set(copy);
    }
    if test_mode() {
        return;
    }
    let run_json = json!({
        "group": group_name,
        "db": fx.db,
        "db_bytes": fx.bytes,
        "rows": fx.rows,
        "warden_sqlite": rusqlite::version(),
        "cli_sqlite": cli_version,
        "skipped": skipped,
        "note": "gate_runs, cli_runs and foreign_cpu_share include criterion's warm-up iteration; \
                 foreign_cpu_share: CPU used by other processes during each timed iteration, as a share of all CPUs",
        "gate_runs": gate_runs,
        "cli_runs": cli_runs,
        "foreign_cpu_share": noise.0.borrow().clone(),
    });
    let out = criterion_home().join(&group_name).join("gate-run.json");
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(&out, serde_json::to_vec_pretty(&run_json).unwrap()).unwrap();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(30));
    targets = bench
}
criterion_main!(benches);

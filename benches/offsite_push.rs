//! Offsite push against a real S3-compatible server on loopback: a full first push of a
//! 1 GiB database's restore point, then an unchanged state, then a 1 % change, each with
//! the bytes sent; and a local `cp` of the database as the baseline measured in the same run
//! (these machines are noisy: read the ratios).
//!
//! `scripts/bench offsite` starts the server (`scripts/s3-server`) and runs it;
//! `WARDEN_TEST_S3_ENDPOINT` names a running one instead. `WARDEN_BENCH_DB_MB` sets the size.
//! Under `cargo test --benches` (no `--bench`) it is an 8 MiB smoke run, skipped (loudly)
//! without a server.
#![allow(missing_docs)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use rusqlite::Connection;
use sqlite_warden::copies::backup::{BackupOptions, BackupStore, CheckMode, StoreFormat};
use sqlite_warden::copies::offsite::{OffsiteConfig, PushOptions, push};
use sqlite_warden::guard::vfs::{self, GuardConfig};

fn build(db: &Path, mb: u64) -> u64 {
    let rows = mb * 1024 * 1024 / 4096;
    let c = Connection::open(db).unwrap();
    c.execute_batch(
        "PRAGMA journal_mode=DELETE; PRAGMA synchronous=OFF; CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB);",
    )
    .unwrap();
    let tx = c.unchecked_transaction().unwrap();
    {
        let mut ins = tx.prepare("INSERT INTO t(id, v) VALUES (?1, randomblob(3000))").unwrap();
        for i in 0..rows {
            ins.execute([i as i64]).unwrap();
        }
    }
    tx.commit().unwrap();
    rows
}

fn change(db: &Path, rows: u64, fraction: f64) {
    let c = Connection::open(db).unwrap();
    let n = ((rows as f64) * fraction) as u64;
    let step = (rows / n.max(1)).max(1);
    let tx = c.unchecked_transaction().unwrap();
    for k in 0..n {
        tx.execute("UPDATE t SET v = randomblob(3000) WHERE id = ?1", [((k * step) % rows) as i64]).unwrap();
    }
    tx.commit().unwrap();
}

fn curl_put_bucket(endpoint: &str, bucket: &str) {
    let ok = Command::new("curl")
        .args(["-sf", "-X", "PUT", "--aws-sigv4", "aws:amz:us-east-1:s3", "--user", "warden-test:warden-test-secret"])
        .arg(format!("{endpoint}/{bucket}"))
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "creating the bucket {bucket} at {endpoint}");
}

fn main() {
    let testing = !std::env::args().any(|a| a == "--bench");
    let Ok(endpoint) = std::env::var("WARDEN_TEST_S3_ENDPOINT") else {
        eprintln!(
            "\n!!! offsite_push bench SKIPPED: no S3 server (WARDEN_TEST_S3_ENDPOINT unset); `scripts/bench offsite` starts one\n"
        );
        return;
    };
    let mb: u64 =
        std::env::var("WARDEN_BENCH_DB_MB").ok().and_then(|v| v.parse().ok()).unwrap_or(if testing { 8 } else { 1024 });
    let work = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(if testing {
        "target/bench-data/offsite-test"
    } else {
        "target/bench-data/offsite"
    });
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    let db = work.join("e.db");
    eprintln!("offsite_push bench: {mb} MiB database at {}", db.display());
    let rows = build(&db, mb);
    let size = std::fs::metadata(&db).unwrap().len();
    let store = BackupStore::new(work.join("backups"), &db).with_format(StoreFormat::Pages { level: 3 });
    let opts = BackupOptions { check: CheckMode::Quick, writer_lock_held: true, ..Default::default() };
    let guard = vfs::register("bench-offsite", GuardConfig { audit_dir: work.join("audit"), ..GuardConfig::default() })
        .unwrap();
    let bucket = format!("bench-{}", std::process::id());
    curl_put_bucket(&endpoint, &bucket);
    let cfg = OffsiteConfig {
        url: format!("s3://{bucket}/e"),
        endpoint: Some(endpoint.clone()),
        credentials_file: Some(work.join("credentials")),
        ..Default::default()
    };
    std::fs::write(
        work.join("credentials"),
        "[default]\naws_access_key_id = warden-test\naws_secret_access_key = warden-test-secret\n",
    )
    .unwrap();
    let mut rows_out: Vec<(&str, f64, u64)> = Vec::new();
    let step = |name: &'static str, rows_out: &mut Vec<(&str, f64, u64)>| {
        store.take(&db, &opts).unwrap().published.expect("published");
        let _ = Command::new("sync").status();
        let t = Instant::now();
        let rec = push(&db, &store, &cfg, PushOptions { guard: Some(guard.clone()), ..Default::default() }).unwrap();
        rows_out.push((name, t.elapsed().as_secs_f64(), rec.bytes_pushed));
    };
    step("full_first_push", &mut rows_out);
    step("unchanged_push", &mut rows_out);
    change(&db, rows, 0.01);
    step("push_after_1pct", &mut rows_out);
    let _ = Command::new("sync").status();
    let t = Instant::now();
    std::fs::copy(&db, work.join("cp.db")).unwrap();
    let cp = t.elapsed().as_secs_f64();
    let full = rows_out[0].1;
    println!("\noffsite push, {mb} MiB database ({size} bytes), SeaweedFS on loopback");
    println!("{:18} {:>9} {:>14} {:>9} {:>12}", "row", "s", "bytes sent", "% of db", "÷ full push");
    for (name, s, b) in &rows_out {
        println!("{name:18} {s:9.3} {b:14} {:8.2}% {:12.3}", *b as f64 * 100.0 / size as f64, s / full);
    }
    println!("{:18} {cp:9.3} {:>14} {:>9} {:12.3}  (local cp of the database, baseline)", "cp", "-", "-", cp / full);
    let _ = std::fs::remove_dir_all(&work);
}

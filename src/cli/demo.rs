//! `warden demo`: the guard in action on an embedded default (a demo database and the
//! example engine the project ships), end to end, in a directory of its own.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;

use sqlite_warden::connect::{EngineOptions, ToolOptions, open_engine, open_tool};
use sqlite_warden::fs::{RealProbe, SimulatedProbe, classify};
use sqlite_warden::policy::{NetworkPolicy, Policy};
use sqlite_warden::vfs::{self, Guard, GuardConfig};

use super::CliError;

fn step(n: u32, text: &str) {
    println!("\n[{n}] {text}");
}

fn demo_err(e: impl std::fmt::Display) -> CliError {
    CliError::Demo(e.to_string())
}

fn engine_binary() -> Result<PathBuf, CliError> {
    let exe = std::env::current_exe().map_err(|source| CliError::Io { context: "locating warden".into(), source })?;
    let p = exe.with_file_name("warden-demo-engine");
    if p.exists() {
        Ok(p)
    } else {
        Err(CliError::Demo(format!(
            "the example engine `{}` is missing\n(hint: build both binaries with `cargo build --release --locked`)",
            p.display()
        )))
    }
}

fn guard(name: &str, audit: &Path, probe: Option<SimulatedProbe>, network: NetworkPolicy) -> Result<Guard, CliError> {
    let config = GuardConfig {
        probe: match probe {
            Some(p) => Arc::new(p),
            None => Arc::new(RealProbe::new()),
        },
        policy: Policy { network, ..Policy::default() },
        audit_dir: audit.to_owned(),
        parent: "unix".into(),
    };
    Ok(vfs::register(name, config)?)
}

/// Runs the demo in `dir`.
pub fn run(dir: &Path, trades: u32) -> Result<ExitCode, CliError> {
    std::fs::create_dir_all(dir)
        .map_err(|source| CliError::Io { context: format!("creating `{}`", dir.display()), source })?;
    let dir = std::fs::canonicalize(dir)
        .map_err(|source| CliError::Io { context: "resolving the demo dir".into(), source })?;
    let audit = dir.join("audit");
    let db = dir.join("demo.db");
    println!("warden demo in {}", dir.display());
    let local = guard("warden-demo", &audit, None, NetworkPolicy::Refuse)?;

    step(1, "storage verdict for the demo directory (warden fs)");
    let v = classify(&RealProbe::new(), &db)?;
    println!("    {} on {}: {}", v.kind, v.fstype, v.reason);

    step(2, &format!("the example engine opens {} as the one writer and records {trades} trades", db.display()));
    let mut engine = Command::new(engine_binary()?)
        .arg("--db")
        .arg(&db)
        .args(["--create", "--trades", &trades.to_string(), "--hold-ms", "1500"])
        .env("WARDEN_AUDIT_DIR", &audit)
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|source| CliError::Io { context: "starting the example engine".into(), source })?;
    let mut lines = BufReader::new(engine.stdout.take().ok_or_else(|| demo_err("no engine stdout"))?).lines();
    let first = lines.next().transpose().map_err(demo_err)?.unwrap_or_default();
    println!("    engine says: {first}");
    if !first.contains("\"ready\"") {
        let _ = engine.wait();
        return Err(CliError::Demo("the example engine did not start".into()));
    }

    step(3, "a second writer tries to open the same database");
    match open_engine(&db, &EngineOptions { guard: Some(local.clone()), ..Default::default() }) {
        Err(e) => println!("    refused, as it must be:\n      {}", e.to_string().replace('\n', "\n      ")),
        Ok(_) => {
            return Err(CliError::Demo("a second writer was allowed: the guard is broken".into()));
        }
    }
    let st = sqlite_warden::lock::inspect(&db)?;
    if let Some(r) = st.record {
        println!("    warden lock: held by {}", r.holder.describe());
    }

    step(4, "tooling reads while the engine writes, and cannot write");
    let tool = open_tool(&db, &ToolOptions { guard: Some(local.clone()), ..Default::default() })?;
    let n: i64 = tool.query_row("SELECT count(*) FROM trades", [], |r| r.get(0)).map_err(demo_err)?;
    println!("    read ok: {n} trades committed so far");
    match tool.execute_batch("DELETE FROM trades") {
        Err(e) => println!("    write refused: {e}"),
        Ok(()) => return Err(CliError::Demo("a tooling connection could write".into())),
    }
    drop(tool);

    for line in lines.map_while(Result::ok) {
        println!("    engine says: {line}");
    }
    let status = engine.wait().map_err(|source| CliError::Io { context: "waiting for the engine".into(), source })?;
    if !status.success() {
        return Err(CliError::Demo(format!("the example engine failed: {status}")));
    }

    step(5, "the same engine on an SMB share (simulated mount table: cifs //nas/trading)");
    let share = dir.join("smb-share");
    std::fs::create_dir_all(&share)
        .map_err(|source| CliError::Io { context: "creating the share dir".into(), source })?;
    let sim = SimulatedProbe::local_root().mount(&share, "cifs", "//nas/trading", "rw,vers=3.1.1,cache=strict");
    let smb = guard("warden-demo-smb", &audit, Some(sim.clone()), NetworkPolicy::Refuse)?;
    let opts = EngineOptions { guard: Some(smb), create: true, ..Default::default() };
    match open_engine(share.join("engine.db"), &opts) {
        Err(e) => println!("    refused:\n      {}", e.to_string().replace('\n', "\n      ")),
        Ok(_) => {
            return Err(CliError::Demo("the engine was allowed on a network share".into()));
        }
    }
    let rb = guard("warden-demo-smb-rollback", &audit, Some(sim), NetworkPolicy::RollbackOnly)?;
    let conn =
        open_engine(share.join("engine.db"), &EngineOptions { guard: Some(rb), create: true, ..Default::default() })?;
    let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).map_err(demo_err)?;
    println!("    with policy rollback-only the engine opens in journal_mode={mode}; asking for WAL:");
    match conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get::<_, String>(0)) {
        Err(e) => println!("      {e}"),
        Ok(m) => {
            return Err(CliError::Demo(format!("WAL was accepted on a network share ({m})")));
        }
    }
    drop(conn);

    step(6, "where everything landed");
    let records = sqlite_warden::audit::read_log(local.audit_path()).unwrap_or_default();
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for r in &records {
        *counts
            .entry(serde_json::to_value(r.event).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default())
            .or_default() += 1;
    }
    println!("    database:  {}", db.display());
    println!("    lock file: {}", sqlite_warden::lock::lock_path_for(&db).display());
    println!(
        "    audit log: {} ({} records: {})",
        local.audit_path().display(),
        records.len(),
        counts.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ")
    );
    println!("\ntry: warden fs {}   |   warden lock {}", dir.display(), db.display());
    Ok(ExitCode::SUCCESS)
}

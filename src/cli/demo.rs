//! `warden demo`: a full guarded session on an embedded default (a demo database and the
//! example engine the project ships), end to end, in a directory of its own; then the
//! refusals a session exists for.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlite_warden::copies::backup::BackupStore;
use sqlite_warden::guard::connect::{EngineOptions, ToolOptions, open_engine, open_tool};
use sqlite_warden::guard::policy::{NetworkPolicy, Policy};
use sqlite_warden::guard::vfs::{self, Guard, GuardConfig};
use sqlite_warden::session::SessionConfig;
use sqlite_warden::session::health::SessionStatus;
use sqlite_warden::session::run::{RunEvent, RunOptions, SignalForwarder};
use sqlite_warden::storage::{RealProbe, SimulatedProbe, classify};

use super::CliError;

fn step(n: u32, text: &str) {
    outln!("\n[{n}] {text}");
}

fn demo_err(e: impl std::fmt::Display) -> CliError {
    CliError::Demo(e.to_string())
}

fn io(context: &str) -> impl Fn(std::io::Error) -> CliError + '_ {
    move |source| CliError::Io { context: context.to_owned(), source }
}

fn engine_binary() -> Result<PathBuf, CliError> {
    let exe = std::env::current_exe().map_err(io("locating warden"))?;
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
    if let Some(g) = vfs::find_guard(name) {
        return Ok(g);
    }
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

fn indent(s: &str) -> String {
    s.replace('\n', "\n      ")
}

/// While the session's engine runs: a second session and a second engine are refused,
/// tooling reads and cannot write.
fn while_running(db: &Path, audit: &Path, local: &Guard) -> Result<(), CliError> {
    // Wait until the engine has created its table (first run) and committed something.
    let deadline = Instant::now() + Duration::from_secs(15);
    let n = loop {
        let read = open_tool(db, &ToolOptions { guard: Some(local.clone()), ..Default::default() })
            .map_err(demo_err)
            .and_then(|t| t.query_row("SELECT count(*) FROM trades", [], |r| r.get::<_, i64>(0)).map_err(demo_err));
        match read {
            Ok(n) if n > 0 => break n,
            _ if Instant::now() > deadline => return Err(CliError::Demo("the example engine never committed".into())),
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    };

    step(3, "while the session runs, a second `warden run` on the same database");
    let exe = std::env::current_exe().map_err(io("locating warden"))?;
    let out = Command::new(&exe)
        .args(["run", "--db"])
        .arg(db)
        .arg("--audit-dir")
        .arg(audit)
        .arg("--")
        .arg(engine_binary()?)
        .stdout(Stdio::null())
        .output()
        .map_err(io("starting a second warden"))?;
    let said = String::from_utf8_lossy(&out.stderr);
    let refusal = said.lines().find(|l| l.contains("writer")).unwrap_or("(no message)");
    outln!("    exit {}: {}", out.status.code().unwrap_or(-1), refusal.trim());
    if out.status.code() != Some(75) {
        return Err(CliError::Demo(format!("a second session was not refused:\n{said}")));
    }

    step(4, "and a second engine process started by hand");
    let out = Command::new(engine_binary()?)
        .arg("--db")
        .arg(db)
        .env("WARDEN_AUDIT_DIR", audit)
        .output()
        .map_err(io("starting a second engine"))?;
    outln!("    exit {}: {}", out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).trim());
    if out.status.code() != Some(75) {
        return Err(CliError::Demo("a second writer was allowed: the guard is broken".into()));
    }

    step(5, "tooling reads while the engine writes, and cannot write");
    let tool = open_tool(db, &ToolOptions { guard: Some(local.clone()), ..Default::default() })?;
    outln!("    read ok: {n} trades committed so far");
    match tool.execute_batch("DELETE FROM trades") {
        Err(e) => outln!("    write refused: {e}"),
        Ok(()) => return Err(CliError::Demo("a tooling connection could write".into())),
    }
    Ok(())
}

/// Runs the demo in `dir`.
pub fn run(dir: &Path, trades: u32) -> Result<ExitCode, CliError> {
    std::fs::create_dir_all(dir)
        .map_err(|source| CliError::Io { context: format!("creating `{}`", dir.display()), source })?;
    let dir = std::fs::canonicalize(dir).map_err(io("resolving the demo dir"))?;
    let audit = dir.join("audit");
    let db = dir.join("demo.db");
    outln!("warden demo in {}", dir.display());
    // The session's guard is the process default (`warden`), logging into the demo dir.
    let local = guard(vfs::DEFAULT_NAME, &audit, None, NetworkPolicy::Refuse)?;

    step(1, "storage verdict for the demo directory (warden fs)");
    let v = classify(&RealProbe::new(), &db)?;
    outln!("    {} on {}: {}", v.kind, v.fstype, v.reason);

    let first = !db.exists();
    step(
        2,
        &format!(
            "a guarded session: warden run --db {} {}-- warden-demo-engine --trades {trades}",
            db.display(),
            if first { "--create " } else { "" }
        ),
    );
    outln!(
        "    preflight -> writer lock -> integrity gate on a private copy -> verified pre-session backup\n    -> engine -> post-session backup -> retention -> health artifact"
    );
    let mut config = SessionConfig::new(&db);
    config.create = first;
    config.guard = Some(local.clone());
    let signals = SignalForwarder::install().map_err(io("installing signal handlers"))?;
    let command = vec![
        engine_binary()?.into_os_string(),
        "--trades".into(),
        trades.to_string().into(),
        "--interval-ms".into(),
        "1".into(),
        "--hold-ms".into(),
        "1000".into(),
    ];
    let mut side: Result<(), CliError> = Ok(());
    let report = sqlite_warden::session::run::run(config, &RunOptions { command }, &signals, &mut |ev| match ev {
        RunEvent::Ready(s) => {
            let a = s.artifact();
            if let Some(g) = &a.gate {
                outln!("    gate {} ({} ms)", g.summary(), g.duration_ms);
                if let Some(seal) = &g.seal {
                    outln!("    seal: {}", seal.message);
                }
            }
            match &a.pre_backup {
                Some(b) => outln!("    pre-session backup: {} (sha256 {}…)", b.path.display(), &b.sha256[..12]),
                None => outln!("    no pre-session backup: the database is new"),
            }
        }
        RunEvent::EngineStarted { pid } => {
            outln!("    engine started as pid {pid}, holding the session's writer lock");
            side = while_running(&db, &audit, &local);
        }
        RunEvent::EngineExited(o) => outln!("\n    engine exited with {:?}", o.exit_code),
        RunEvent::Forwarded(sig) => outln!("    forwarded {sig}"),
        RunEvent::ForeignWriter(m) => outln!("    {m}"),
        RunEvent::StoppingForForeignWriter { pid } => outln!("    stopping the engine (pid {pid})"),
    });
    side?;
    let a = &report.artifact;
    if let Some(e) = &report.error {
        return Err(CliError::Demo(format!("the session failed: {e}")));
    }
    if a.status != SessionStatus::Completed {
        return Err(CliError::Demo(format!("the session ended {:?}", a.status)));
    }
    if let Some(b) = a.post_backup.as_ref().and_then(|p| p.backup.as_ref()) {
        outln!("    post-session backup: {} (verified, sha256 {}…)", b.path.display(), &b.sha256[..12]);
    }

    step(6, "the same engine on an SMB share (simulated mount table: cifs //nas/trading)");
    let share = dir.join("smb-share");
    std::fs::create_dir_all(&share).map_err(io("creating the share dir"))?;
    let sim = SimulatedProbe::local_root().mount(&share, "cifs", "//nas/trading", "rw,vers=3.1.1,cache=strict");
    let smb = guard("warden-demo-smb", &audit, Some(sim.clone()), NetworkPolicy::Refuse)?;
    let mut on_share = SessionConfig::new(share.join("engine.db"));
    on_share.create = true;
    on_share.guard = Some(smb.clone());
    match sqlite_warden::session::Session::begin(on_share) {
        Err(f) => outln!("    session refused before anything started:\n      {}", indent(&f.error.to_string())),
        Ok(_) => return Err(CliError::Demo("a session was allowed on a network share".into())),
    }
    let opts = EngineOptions { guard: Some(smb), create: true, ..Default::default() };
    match open_engine(share.join("engine.db"), &opts) {
        Err(e) => outln!("    and the engine's own open is refused too:\n      {}", indent(&e.to_string())),
        Ok(_) => return Err(CliError::Demo("the engine was allowed on a network share".into())),
    }
    let rb = guard("warden-demo-smb-rollback", &audit, Some(sim), NetworkPolicy::RollbackOnly)?;
    let conn =
        open_engine(share.join("engine.db"), &EngineOptions { guard: Some(rb), create: true, ..Default::default() })?;
    let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).map_err(demo_err)?;
    outln!("    with policy rollback-only the engine opens in journal_mode={mode}; asking for WAL:");
    match conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get::<_, String>(0)) {
        Err(e) => outln!("      {e}"),
        Ok(m) => return Err(CliError::Demo(format!("WAL was accepted on a network share ({m})"))),
    }
    drop(conn);

    step(7, "where everything landed");
    let records = sqlite_warden::guard::audit::read_log(local.audit_path()).unwrap_or_default();
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for r in &records {
        let name = serde_json::to_value(r.event).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
        *counts.entry(name).or_default() += 1;
    }
    let store = BackupStore::new(SessionConfig::state_dir(&db).join("backups"), &db);
    let backups = store.list().unwrap_or_default();
    outln!("    database:  {}", db.display());
    outln!("    lock file: {}", sqlite_warden::guard::lock::lock_path_for(&db).display());
    outln!(
        "    backups:   {} ({} verified backups)",
        store.dir().display(),
        backups.iter().filter(|b| b.manifest.is_good()).count()
    );
    if let Some(p) = &report.artifact_path {
        outln!("    session:   {} (status {})", p.display(), serde_json::to_value(a.status).unwrap_or_default());
    }
    outln!(
        "    audit log: {} ({} records: {})",
        local.audit_path().display(),
        records.len(),
        counts.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ")
    );
    outln!("\nrun it again: the second session gates and backs up the database the first one wrote.");
    outln!("try: warden prune --db {} --dry-run   |   warden lock {}", db.display(), db.display());
    Ok(ExitCode::SUCCESS)
}

//! The example engine shipped with warden: a tiny "trading engine" that opens its database
//! through the guard's connection factory, records trades in small transactions and exits.
//!
//! It is what `warden demo` runs and what the process tests race against each other.
//! Output is one JSON object per line on stdout (`ready`, `busy`, `refused`, `done`).
//!
//! ```text
//! warden-demo-engine [--db PATH] [--trades N] [--interval-ms MS] [--create] [--hold-ms MS]
//!                    [--exit-code N] [--reopen] [--wait-for FILE] [--ignore-sigterm]
//!                    [--spawn-child CMD...]
//! ```
//!
//! Under `warden run` the database comes from `WARDEN_DB`. Each trade is one transaction
//! that also bumps `ledger.trades`, so any consistent copy satisfies
//! `SELECT count(*) FROM trades` = `SELECT trades FROM ledger`. SIGTERM, SIGINT and SIGHUP
//! stop it early and cleanly (exit 0), as a well-behaved engine would; `--ignore-sigterm`
//! plays an engine that does not (SIGTERM, also the one `warden run`'s death sends, is then
//! ignored; SIGINT and SIGHUP still stop it).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sqlite_warden::guard::connect::{EngineOptions, open_engine};
use sqlite_warden::guard::error::{LockError, OpenError};

struct Args {
    db: PathBuf,
    trades: u32,
    create: bool,
    hold: Duration,
    interval: Duration,
    exit_code: u8,
    reopen: bool,
    wait_for: Option<PathBuf>,
    ignore_sigterm: bool,
    child: Vec<String>,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        db: PathBuf::new(),
        trades: 0,
        create: false,
        hold: Duration::ZERO,
        interval: Duration::ZERO,
        exit_code: 0,
        reopen: false,
        wait_for: None,
        ignore_sigterm: false,
        child: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut val = || it.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--db" => a.db = PathBuf::from(val()?),
            "--trades" => a.trades = val()?.parse().map_err(|e| format!("--trades: {e}"))?,
            "--hold-ms" => a.hold = Duration::from_millis(val()?.parse().map_err(|e| format!("--hold-ms: {e}"))?),
            "--interval-ms" => {
                a.interval = Duration::from_millis(val()?.parse().map_err(|e| format!("--interval-ms: {e}"))?);
            }
            "--exit-code" => a.exit_code = val()?.parse().map_err(|e| format!("--exit-code: {e}"))?,
            "--wait-for" => a.wait_for = Some(PathBuf::from(val()?)),
            "--create" => a.create = true,
            "--reopen" => a.reopen = true,
            "--ignore-sigterm" => a.ignore_sigterm = true,
            "--spawn-child" => {
                a.child = it.by_ref().collect();
            }
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    if a.db.as_os_str().is_empty() {
        // Under `warden run` (later) the database comes from the environment.
        a.db = std::env::var_os("WARDEN_DB").map(PathBuf::from).ok_or("--db is required")?;
    }
    // `warden run --create` says so: the session allowed a brand-new database.
    a.create |= std::env::var_os("WARDEN_CREATE").is_some_and(|v| v == "1");
    Ok(a)
}

fn say(v: serde_json::Value) {
    println!("{v}");
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("warden-demo-engine: {e}");
            return ExitCode::from(64);
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    // With --ignore-sigterm, SIGTERM sets a flag nobody reads: handled, so it does not kill.
    let ignored = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT, signal_hook::consts::SIGHUP] {
        let flag = if sig == signal_hook::consts::SIGTERM && args.ignore_sigterm { &ignored } else { &stop };
        if let Err(e) = signal_hook::flag::register(sig, flag.clone()) {
            eprintln!("warden-demo-engine: cannot handle signals: {e}");
            return ExitCode::from(70);
        }
    }
    if let Some(f) = &args.wait_for {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !f.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let opts = EngineOptions { create: args.create, ..Default::default() };
    let conn = match open_engine(&args.db, &opts) {
        Ok(c) => c,
        Err(OpenError::WriterLocked(LockError::Held { holder, .. })) => {
            say(serde_json::json!({"event": "busy", "pid": std::process::id(), "holder": holder}));
            return ExitCode::from(75);
        }
        Err(e) => {
            say(serde_json::json!({"event": "refused", "pid": std::process::id(), "error": e.to_string()}));
            return ExitCode::from(69);
        }
    };
    let setup = conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS trades(
            id INTEGER PRIMARY KEY, ts TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ')),
            symbol TEXT NOT NULL, qty INTEGER NOT NULL CHECK (qty > 0), price REAL NOT NULL);
         CREATE TABLE IF NOT EXISTS ledger(id INTEGER PRIMARY KEY CHECK (id = 1), trades INTEGER NOT NULL);
         INSERT OR IGNORE INTO ledger VALUES (1, (SELECT count(*) FROM trades));",
    );
    if let Err(e) = setup {
        eprintln!("warden-demo-engine: {e}");
        return ExitCode::from(70);
    }
    say(serde_json::json!({"event": "ready", "pid": std::process::id()}));
    let mut child = None;
    if let Some((cmd, rest)) = args.child.split_first() {
        match std::process::Command::new(cmd)
            .args(rest)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
        {
            Ok(c) => {
                say(serde_json::json!({"event": "child", "pid": c.id()}));
                child = Some(c);
            }
            Err(e) => eprintln!("warden-demo-engine: cannot spawn {cmd}: {e}"),
        }
    }
    let mut conn = conn;
    let rounds = if args.reopen { 2 } else { 1 };
    for round in 0..rounds {
        if round > 0 {
            // Reconnect, as engines do: the writer lock must still be ours.
            drop(conn);
            conn = match open_engine(&args.db, &opts) {
                Ok(c) => c,
                Err(e) => {
                    say(serde_json::json!({"event": "refused", "pid": std::process::id(), "error": e.to_string()}));
                    return ExitCode::from(69);
                }
            };
            say(serde_json::json!({"event": "reopened", "pid": std::process::id()}));
        }
        for i in 0..args.trades {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let sym = ["ACME", "GLOBX", "INIT"][i as usize % 3];
            let trade = conn.transaction().and_then(|tx| {
                tx.execute(
                    "INSERT INTO trades(symbol, qty, price) VALUES (?1, ?2, ?3)",
                    (sym, i64::from(i % 7) + 1, 100.0 + f64::from(i % 13)),
                )?;
                tx.execute("UPDATE ledger SET trades = trades + 1 WHERE id = 1", [])?;
                tx.commit()
            });
            if let Err(e) = trade {
                eprintln!("warden-demo-engine: trade {i}: {e}");
                return ExitCode::from(74);
            }
            if !args.interval.is_zero() {
                std::thread::sleep(args.interval);
            }
        }
    }
    let until = Instant::now() + args.hold;
    while Instant::now() < until && !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(5).min(until.saturating_duration_since(Instant::now())));
    }
    let total: i64 = conn.query_row("SELECT count(*) FROM trades", [], |r| r.get(0)).unwrap_or(-1);
    drop(conn);
    let stopped = stop.load(Ordering::Relaxed);
    say(
        serde_json::json!({"event": "done", "pid": std::process::id(), "trades_total": total, "stopped_by_signal": stopped}),
    );
    // The spawned child is deliberately left running: it must not hold the lock.
    std::mem::forget(child);
    ExitCode::from(args.exit_code)
}

//! The command line: argument definitions, one library call per subcommand, rendering.
//!
//! Owns: flags, exit codes, human and `--json` output. Does not own: any decision; every
//! subcommand calls the library and renders what it returns.
//!
//! Exit codes (sysexits where one fits):
//! - `0` the answer is "safe" / the command did what was asked;
//! - `1` the answer is "not safe" (`warden fs` on storage the engine may not use);
//! - `64` usage, `66` input missing, `69` refused, `70` internal error, `74` I/O error,
//!   `75` writer lock held.

mod audit;
mod backups;
mod check;
mod demo;
mod deploy;
mod doctor;
mod migrate;
mod render;
mod restore;
mod salvage;
mod session;
mod sessions;
mod shared;
mod snapshot;
mod status;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sqlite_warden::guard::error::{LockError, OpenError, ProbeError, RegisterError};
use sqlite_warden::guard::lock::{LockState, LockStatus};
use sqlite_warden::storage::{FsKind, FsVerdict};

/// Guards a single-writer SQLite engine: refuses network filesystems and unsafe WAL,
/// enforces one writer, audits every open.
#[derive(Debug, Parser)]
#[command(name = "warden", version, about, long_about = None)]
pub struct Args {
    /// Log more (repeat for more detail); logs go to stderr.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Is this path safe for a SQLite engine? Prints the storage verdict and why.
    ///
    /// Exits 0 when every path is on local storage, 1 when any is not.
    Fs {
        /// Database files or directories (need not exist yet).
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Print JSON (one array of verdicts) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Who holds the writer lock of a database? Never takes or waits for the lock.
    Lock {
        /// The database file.
        db: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Runs the guarded demo: a demo database, the example engine, and every refusal.
    Demo {
        /// Where the demo database, audit log and lock file go.
        #[arg(long, default_value = "warden-demo")]
        dir: PathBuf,
        /// Number of trades the example engine records.
        #[arg(long, default_value_t = 500)]
        trades: u32,
    },
    /// Runs a guarded session: preflight, writer lock, integrity gate, verified pre-session
    /// backup, the engine, post-session backup, retention, health artifact.
    ///
    /// Exits with the engine's own status, or with warden's code when a step refused (the
    /// engine then never started): see the README's exit-code table.
    Run {
        #[command(flatten)]
        settings: session::SettingsArgs,
        /// Print the final health artifact as one JSON line on stdout (after the engine's
        /// own output).
        #[arg(long)]
        json: bool,
        /// Only errors on stderr.
        #[arg(short, long)]
        quiet: bool,
        /// The engine: program and arguments, after `--` (no shell).
        #[arg(last = true, value_name = "ENGINE")]
        command: Vec<std::ffi::OsString>,
    },
    /// Takes a verified backup now (safe while the engine runs; one-step backup API).
    Backup {
        #[command(flatten)]
        settings: session::SettingsArgs,
        /// Print the manifest as JSON.
        #[arg(long)]
        json: bool,
        /// Only errors on stderr.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Applies the retention policy to the backups; `--dry-run` shows each backup and why it
    /// would be kept or dropped.
    Prune {
        #[command(flatten)]
        settings: session::SettingsArgs,
        /// Change nothing; print the plan.
        #[arg(long)]
        dry_run: bool,
        /// Print the plan as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Publishes a consistent, read-only analysis snapshot (and the stable `latest` name).
    Snapshot(snapshot::SnapshotArgs),
    /// Restores the database from a verified backup (re-verified first).
    Restore(restore::RestoreArgs),
    /// Restore drill: restores the newest verified backup to a scratch place and checks it.
    Drill(restore::DrillArgs),
    /// The integrity gate on its own: read-only, safe to run any time.
    Check(check::CheckArgs),
    /// Health of a guarded database; exits non-zero when unhealthy.
    Status(status::StatusArgs),
    /// Session health artifacts: list, or `show <id>`.
    Sessions(sessions::SessionsArgs),
    /// Backups: list, or `verify [<id>|--all]`.
    Backups(backups::BackupsArgs),
    /// Tails and filters the audit log.
    Audit(audit::AuditArgs),
    /// Recovers what it can from a damaged database into a new file (never over the original).
    Salvage(salvage::SalvageArgs),
    /// Host readiness for a database: storage, space, fsync, device, permissions, SQLite,
    /// clock, foreign openers. Each check with a verdict and a fix.
    Doctor(doctor::DoctorArgs),
    /// Renders service files (systemd units and timers, logrotate) for a configuration.
    Deploy(deploy::DeployArgs),
    /// Moves a database to another host: `export` a verified bundle, `import` it.
    Migrate(migrate::MigrateArgs),
    /// Prints warden's and SQLite's versions.
    Version {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// Parses the command line (exits with usage on error).
pub fn parse() -> Args {
    Args::parse()
}

/// Sends `tracing` output to stderr: warnings by default, more with `-v`, or `RUST_LOG`.
pub fn init_logging(verbose: u8) {
    // Audit records are mirrored to tracing; the CLI prints refusals itself, so their
    // mirror is shown only with -v.
    let level = match verbose {
        0 => "warn,sqlite_warden::guard::audit=error",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

/// Everything that can make a subcommand fail.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Probe(#[from] ProbeError),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error(transparent)]
    Register(#[from] RegisterError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Demo(String),
    #[error(transparent)]
    Config(#[from] sqlite_warden::ops::config::ConfigError),
    #[error(transparent)]
    Backup(#[from] sqlite_warden::copies::backup::BackupError),
    #[error(transparent)]
    Prune(#[from] sqlite_warden::copies::prune::PruneError),
    #[error("{0}")]
    Usage(String),
    /// Any command's own failure, already rendered with its hint, and its exit code.
    #[error("{message}")]
    Failed { message: String, code: u8 },
}

impl CliError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Probe(_) => 66,
            CliError::Lock(LockError::Held { .. }) => 75,
            CliError::Lock(_) | CliError::Io { .. } => 74,
            CliError::Open(e) => open_exit_code(e),
            CliError::Register(_) | CliError::Demo(_) => 70,
            CliError::Config(_) | CliError::Prune(sqlite_warden::copies::prune::PruneError::Policy(_)) => 78,
            CliError::Usage(_) => 64,
            CliError::Failed { code, .. } => *code,
            CliError::Backup(e) | CliError::Prune(sqlite_warden::copies::prune::PruneError::Store(e)) => {
                backup_exit_code(e)
            }
        }
    }
}

fn backup_exit_code(e: &sqlite_warden::copies::backup::BackupError) -> u8 {
    use sqlite_warden::copies::backup::BackupError as B;
    match e {
        B::Missing { .. } => 66,
        B::HotJournal { .. } | B::Unsettled { .. } => 75,
        B::Changing { .. } => 65,
        B::Source { source, .. } => open_exit_code(source),
        B::Cancelled { .. } => 130,
        B::NoSpace { .. } | B::DiskFull { .. } | B::Io { .. } | B::Sqlite { .. } => 74,
    }
}

fn open_exit_code(e: &OpenError) -> u8 {
    match e {
        OpenError::WriterLocked(LockError::Held { .. }) => 75,
        OpenError::Missing { .. } => 66,
        OpenError::NotAFilePath { .. } => 64,
        _ => 69,
    }
}

/// Runs one subcommand.
///
/// # Errors
/// [`CliError`] when the command could not give an answer.
pub fn run(args: Args) -> Result<ExitCode, CliError> {
    match args.cmd {
        Cmd::Fs { paths, json } => fs_cmd(&paths, json),
        Cmd::Lock { db, json } => lock_cmd(&db, json),
        Cmd::Demo { dir, trades } => demo::run(&dir, trades),
        Cmd::Run { settings, json, quiet, command } => session::run_cmd(settings, command, json, quiet),
        Cmd::Backup { settings, json, quiet } => session::backup_cmd(settings, json, quiet),
        Cmd::Prune { settings, dry_run, json } => session::prune_cmd(settings, dry_run, json),
        Cmd::Snapshot(a) => snapshot::run(a),
        Cmd::Restore(a) => restore::run(a),
        Cmd::Drill(a) => restore::drill(a),
        Cmd::Check(a) => check::check(a),
        Cmd::Status(a) => status::status(a),
        Cmd::Sessions(a) => sessions::sessions(a),
        Cmd::Backups(a) => backups::backups(a),
        Cmd::Audit(a) => audit::audit(a),
        Cmd::Salvage(a) => salvage::run(a),
        Cmd::Doctor(a) => doctor::run(a),
        Cmd::Deploy(a) => deploy::run(a),
        Cmd::Migrate(a) => migrate::run(a),
        Cmd::Version { json } => {
            let v = serde_json::json!({
                "warden": env!("CARGO_PKG_VERSION"),
                "sqlite": rusqlite::version(),
                "sqlite_floor": "3.51.3",
            });
            if json {
                println!("{v}");
            } else {
                println!("warden {} (SQLite {}, floor 3.51.3)", env!("CARGO_PKG_VERSION"), rusqlite::version());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn fs_cmd(paths: &[PathBuf], json: bool) -> Result<ExitCode, CliError> {
    let probe = sqlite_warden::storage::RealProbe::new();
    let mut verdicts = Vec::new();
    for p in paths {
        let v = sqlite_warden::storage::classify(&probe, p)?;
        verdicts.push((p.clone(), v));
    }
    if json {
        let arr: Vec<_> = verdicts
            .iter()
            .map(|(p, v)| serde_json::json!({"path": p, "engine_safe": v.kind.is_local(), "verdict": v}))
            .collect();
        println!("{}", serde_json::Value::Array(arr));
    } else {
        for (p, v) in &verdicts {
            print_verdict(p, v);
        }
    }
    let all_local = verdicts.iter().all(|(_, v)| v.kind == FsKind::Local);
    Ok(if all_local { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn print_verdict(p: &std::path::Path, v: &FsVerdict) {
    let head = match v.kind {
        FsKind::Local => "safe for the engine",
        FsKind::Network => "NOT safe: network filesystem",
        FsKind::NoLocking => "NOT safe: locking disabled",
        FsKind::Suspect => "NOT safe: unknown storage",
    };
    println!("{}: {head}", p.display());
    println!("  verdict:     {}", v.kind);
    println!("  filesystem:  {}", v.fstype);
    if let Some(m) = v.magic {
        println!("  statfs:      {m:#x}");
    }
    if let Some(mp) = &v.mount_point {
        println!("  mount point: {}", mp.display());
    }
    if let Some(src) = &v.source {
        println!("  source:      {src}");
    }
    if !v.options.is_empty() {
        println!("  options:     {}", v.options.join(","));
    }
    println!("  reason:      {}", v.reason);
    if !v.kind.is_local() {
        println!("  hint:        move the database to a local disk; warden refuses the engine here");
    }
}

fn lock_cmd(db: &std::path::Path, json: bool) -> Result<ExitCode, CliError> {
    let st: LockStatus = sqlite_warden::guard::lock::inspect(db)?;
    if json {
        println!("{}", serde_json::to_string(&st).unwrap_or_default());
        return Ok(ExitCode::SUCCESS);
    }
    let state = match st.state {
        LockState::Held => "held",
        LockState::Free => "free",
        LockState::FreeAfterCrash => "free (the last holder died without releasing it)",
        LockState::NeverUsed => "never used (no guarded engine has opened this database)",
    };
    println!("{}: writer lock {state}", db.display());
    println!("  lock file: {}", st.lock_path.display());
    if let Some(r) = &st.record {
        let label = if st.state == LockState::Held { "holder" } else { "last holder" };
        println!("  {label}: {}", r.holder.describe());
        if let Some(c) = &r.last_close {
            println!("  last clean close: {} ({} bytes, change counter {:?})", c.at, c.size, c.change_counter);
        }
    }
    Ok(ExitCode::SUCCESS)
}

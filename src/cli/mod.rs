//! The command line: argument definitions, one library call per subcommand, rendering.
//!
//! Owns: flags, exit codes, human and `--json` output. Does not own: any decision; every
//! subcommand calls the library and renders what it returns.
//!
//! Exit codes: the one table is [`sqlite_warden::util::exit`] (sysexits where one fits; the
//! README lists the same table). A usage error (clap's) exits [`exit::USAGE`]; `--help` and
//! `--version` exit 0.

// Every line for stdout goes through `outln!`/`out!` (see `shared::out`): a closed or
// failing stdout never panics. `print!` and `println!` would.
#![deny(clippy::print_stdout)]

/// `println!` that never panics (see [`shared::out`]).
macro_rules! outln {
    () => {
        $crate::cli::shared::out(format_args!(""), true)
    };
    ($($arg:tt)*) => {
        $crate::cli::shared::out(format_args!($($arg)*), true)
    };
}

/// `print!` that never panics (see [`shared::out`]).
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::shared::out(format_args!($($arg)*), false)
    };
}

/// `eprintln!` for notes and warnings: silent under `-q` (errors use `eprintln!`).
macro_rules! note {
    ($($arg:tt)*) => {
        if !$crate::cli::term::quiet() {
            eprintln!($($arg)*);
        }
    };
}

mod accept;
mod audit;
mod backups;
mod check;
mod demo;
mod deploy;
mod doctor;
mod manual;
mod migrate;
mod offsite;
mod render;
mod restore;
mod salvage;
mod session;
mod sessions;
mod settings;
mod shared;
mod snapshot;
mod status;
mod term;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::{Parser, Subcommand};
use sqlite_warden::guard::error::{LockError, OpenError, ProbeError, RegisterError};
use sqlite_warden::guard::lock::{LockState, LockStatus};
use sqlite_warden::storage::{FsKind, FsVerdict};
use sqlite_warden::util::exit;

pub use shared::{stdout_failure, stdout_written};
pub use term::{error_json, init_logging, json_requested, priority, set_quiet, set_verbose};

/// Guards a single-writer SQLite engine: refuses network filesystems and unsafe WAL,
/// enforces one writer, audits every open.
#[derive(Debug, Parser)]
#[command(name = "warden", version, about, long_about = None)]
pub struct Args {
    /// Log more (repeat for more detail); logs go to stderr.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Only errors on stderr: no progress, no notes, no warnings.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Is this path safe for a SQLite engine? Prints the storage verdict and why.
    ///
    /// Exits 0 when every path is on local storage, 1 when any is not.
    #[command(after_help = "\
Examples:
  warden fs /var/lib/engine/engine.db
  warden fs --json /var/lib/engine /mnt/share/engine.db")]
    Fs {
        /// Database files or directories (need not exist yet).
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Print JSON (`{"schema":1,"verdicts":[…]}`) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Who holds the writer lock of a database? Never takes or waits for the lock.
    #[command(after_help = "\
Examples:
  warden lock /var/lib/engine/engine.db
  warden lock --json /var/lib/engine/engine.db")]
    Lock {
        /// The database file.
        db: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Runs the guarded demo: a demo database, the example engine, and every refusal.
    #[command(after_help = "\
Examples:
  warden demo
  warden demo --dir /tmp/warden-demo --trades 50")]
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
    #[command(after_help = "\
Examples:
  warden run --db /var/lib/engine/engine.db -- /usr/local/bin/engine --live
  warden run --config /etc/warden/warden.toml --snapshot-every 10m")]
    Run {
        /// Print the final health artifact as one JSON line on stdout (after the engine's
        /// own output).
        #[arg(long)]
        json: bool,
        /// The engine: program and arguments, after `--` (no shell).
        #[arg(last = true, value_name = "ENGINE")]
        command: Vec<std::ffi::OsString>,
        #[command(flatten)]
        settings: settings::SettingsArgs,
    },
    /// Takes a verified backup now (safe while the engine runs; one-step backup API).
    Backup(session::BackupArgs),
    /// Applies the retention policy to the backups; `--dry-run` shows each backup and why it
    /// would be kept or dropped.
    Prune(session::PruneArgs),
    /// Publishes a consistent, read-only analysis snapshot (and the stable `latest` name).
    Snapshot(snapshot::SnapshotArgs),
    /// Restores the database from a verified backup (re-verified first).
    Restore(restore::RestoreArgs),
    /// Restore drill: restores the newest verified backup to a scratch place and checks it.
    Drill(restore::DrillArgs),
    /// The integrity gate on its own: read-only, safe to run any time.
    Check(check::CheckArgs),
    /// Accepts the database as it is after a seal refused it: the full gate, a verified
    /// backup, a new seal (audited).
    Accept(accept::AcceptArgs),
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
    Deploy(Box<deploy::DeployArgs>),
    /// Moves a database to another host: `export` a verified bundle, `import` it.
    Migrate(migrate::MigrateArgs),
    /// Offsite copies in S3-compatible storage: `push`, `list`, `verify`, `restore`, `keygen`.
    Offsite(offsite::OffsiteArgs),
    /// Prints a shell completion script for warden (bash, zsh, fish, elvish, powershell).
    #[command(after_help = "\
Install with a redirection: `warden completions bash > /usr/share/bash-completion/completions/warden`.

Examples:
  warden completions bash
  warden completions zsh")]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Prints warden's manual page (roff, section 1), or writes a page for every command.
    #[command(after_help = "\
Read without installing: `warden manpage | man -l -`.

Examples:
  warden manpage
  warden manpage --dir /usr/local/share/man/man1")]
    Manpage {
        /// Write every page (warden.1, warden-run.1, warden-backups-verify.1, ...) into this
        /// directory instead, and print their paths.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Prints warden's and SQLite's versions.
    #[command(after_help = "\
Examples:
  warden version
  warden version --json")]
    Version {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// Writes a JSON document (one line, newline included) to stdout, never panicking.
pub fn print_json(doc: &str) {
    out!("{doc}");
}

/// Parses the command line. `Err` carries the exit code when there is nothing to run:
/// `--help` and `--version` (printed to stdout) exit 0; any other clap error (printed, with
/// clap's own message, to stderr) exits [`exit::USAGE`], 64.
pub fn parse() -> Result<Args, ExitCode> {
    if let Some(arg) = non_utf8_argument(std::env::args_os()) {
        eprintln!(
            "warden: the argument `{}` is not valid UTF-8: warden names every database and directory it guards as text (audit log, writer lock, artifacts, manifests)\nwarden: (hint: rename the file or directory to a UTF-8 name; `ls --quoting-style=escape` shows the bytes)",
            sqlite_warden::util::fmt::path_text(std::path::Path::new(&arg))
        );
        return Err(ExitCode::from(exit::USAGE));
    }
    if let Some(arg) = control_char_argument(std::env::args_os()) {
        eprintln!(
            "warden: the argument `{}` contains a control character (a newline, a tab, ...): warden names every database and directory it guards on one line (errors, audit log, artifacts)\nwarden: (hint: rename the file or directory; `ls --quoting-style=escape` shows the characters)",
            arg.escape_default()
        );
        return Err(ExitCode::from(exit::USAGE));
    }
    Args::try_parse().map_err(|e| {
        // A closed stdout (`warden --help | head -1`) is not an error worth reporting.
        let _ = e.print();
        let code = usage_exit_code(e.kind());
        if code != exit::OK && term::json_requested() {
            out!("{}", term::error_json(e.render().to_string().trim_start_matches("error: "), code));
        }
        ExitCode::from(code)
    })
}

/// The first of warden's own arguments that is not UTF-8; the engine command after `--`
/// may be anything (its opens are judged by the guard, which refuses such names).
fn non_utf8_argument(args: impl Iterator<Item = std::ffi::OsString>) -> Option<std::ffi::OsString> {
    args.skip(1).take_while(|a| a != "--").find(|a| a.to_str().is_none())
}

/// The first argument before `--` (the engine's own arguments may be anything) that contains
/// a control character: a path with a newline would split every message and record naming it.
fn control_char_argument(args: impl Iterator<Item = std::ffi::OsString>) -> Option<String> {
    args.skip(1)
        .take_while(|a| a != "--")
        .filter_map(|a| a.into_string().ok())
        .find(|a| a.chars().any(char::is_control))
}

/// The exit code of a clap "error": 0 for the help and version it printed, else 64.
fn usage_exit_code(kind: ErrorKind) -> u8 {
    match kind {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => exit::OK,
        _ => exit::USAGE,
    }
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
            CliError::Probe(_) => exit::NOINPUT,
            CliError::Lock(e) => e.exit_code(),
            CliError::Io { .. } => exit::IOERR,
            CliError::Open(e) => e.exit_code(),
            CliError::Register(_) | CliError::Demo(_) => exit::SOFTWARE,
            CliError::Config(_) => exit::CONFIG,
            CliError::Prune(e) => e.exit_code(),
            CliError::Usage(_) => exit::USAGE,
            CliError::Failed { code, .. } => *code,
            CliError::Backup(e) => backup_exit_code(e),
        }
    }
}

fn backup_exit_code(e: &sqlite_warden::copies::backup::BackupError) -> u8 {
    e.exit_code()
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
        Cmd::Run { settings, json, command } => session::run_cmd(settings, command, json, term::quiet()),
        Cmd::Backup(a) => session::backup_cmd(a),
        Cmd::Prune(a) => session::prune_cmd(a),
        Cmd::Snapshot(a) => snapshot::run(a),
        Cmd::Restore(a) => restore::run(a),
        Cmd::Drill(a) => restore::drill(a),
        Cmd::Check(a) => check::check(a),
        Cmd::Accept(a) => accept::run(a),
        Cmd::Status(a) => status::status(a),
        Cmd::Sessions(a) => sessions::sessions(a),
        Cmd::Backups(a) => backups::backups(a),
        Cmd::Audit(a) => audit::audit(a),
        Cmd::Salvage(a) => salvage::run(a),
        Cmd::Doctor(a) => doctor::run(a),
        Cmd::Deploy(a) => deploy::run(*a),
        Cmd::Migrate(a) => migrate::run(a),
        Cmd::Offsite(a) => offsite::run(a),
        Cmd::Completions { shell } => manual::completions(shell),
        Cmd::Manpage { dir } => manual::manpage(dir.as_deref()),
        Cmd::Version { json } => {
            let v = serde_json::json!({
                "schema": 1,
                "warden": env!("CARGO_PKG_VERSION"),
                "sqlite": rusqlite::version(),
                "sqlite_floor": "3.51.3",
            });
            if json {
                outln!("{v}");
            } else {
                outln!("warden {} (SQLite {}, floor 3.51.3)", env!("CARGO_PKG_VERSION"), rusqlite::version());
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
        out!("{}", shared::json_line(&serde_json::json!({ "verdicts": arr })));
    } else {
        for (p, v) in &verdicts {
            print_verdict(p, v);
        }
    }
    let all_local = verdicts.iter().all(|(_, v)| v.kind == FsKind::Local);
    Ok(ExitCode::from(if all_local { exit::OK } else { exit::NOT_SAFE }))
}

fn print_verdict(p: &std::path::Path, v: &FsVerdict) {
    let head = match v.kind {
        FsKind::Local => "safe for the engine",
        FsKind::Network => "NOT safe: network filesystem",
        FsKind::NoLocking => "NOT safe: locking disabled",
        FsKind::Suspect => "NOT safe: unknown storage",
    };
    outln!("{}: {head}", p.display());
    outln!("  verdict:     {}", v.kind);
    outln!("  filesystem:  {}", v.fstype);
    if let Some(m) = v.magic {
        outln!("  statfs:      {m:#x}");
    }
    if let Some(mp) = &v.mount_point {
        outln!("  mount point: {}", mp.display());
    }
    if let Some(src) = &v.source {
        outln!("  source:      {src}");
    }
    if !v.options.is_empty() {
        outln!("  options:     {}", v.options.join(","));
    }
    outln!("  reason:      {}", v.reason);
    if !v.kind.is_local() {
        outln!("  hint:        move the database to a local disk; warden refuses the engine here");
    }
}

fn lock_cmd(db: &std::path::Path, json: bool) -> Result<ExitCode, CliError> {
    let st: LockStatus = sqlite_warden::guard::lock::inspect(db)?;
    if json {
        out!("{}", shared::json_line(&st));
        return Ok(ExitCode::SUCCESS);
    }
    let state = match st.state {
        LockState::Held => "held",
        LockState::Free => "free",
        LockState::FreeAfterCrash => "free (the last holder died without releasing it)",
        LockState::NeverUsed => "never used (no guarded engine has opened this database)",
    };
    outln!("{}: writer lock {state}", db.display());
    outln!("  lock file: {}", st.lock_path.display());
    if let Some(r) = &st.record {
        let label = if st.state == LockState::Held { "holder" } else { "last holder" };
        outln!("  {label}: {}", r.holder.describe());
        if let Some(c) = &r.last_close {
            outln!("  last clean close: {} ({} bytes, change counter {:?})", c.at, c.size, c.change_counter);
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    /// `s` split into words the way a POSIX shell would for the examples: on blanks, with
    /// `'…'` quoting.
    fn shell_words(s: &str) -> Vec<String> {
        let (mut words, mut word, mut quoted, mut any) = (Vec::new(), String::new(), false, false);
        for c in s.chars() {
            match c {
                '\'' => (quoted, any) = (!quoted, true),
                c if c.is_whitespace() && !quoted => {
                    if any {
                        words.push(std::mem::take(&mut word));
                    }
                    any = false;
                }
                c => (word, any) = (word + &c.to_string(), true),
            }
        }
        assert!(!quoted, "unbalanced quote in `{s}`");
        if any {
            words.push(word);
        }
        words
    }

    /// Every subcommand (not `help`), as its words after `warden`, with its long help.
    fn subcommands(cmd: &mut clap::Command, path: &[String], out: &mut Vec<(Vec<String>, String)>) {
        let names: Vec<String> =
            cmd.get_subcommands().map(|c| c.get_name().to_owned()).filter(|n| n != "help").collect();
        for name in names {
            let sub = cmd.find_subcommand_mut(&name).unwrap();
            let mut p = path.to_vec();
            p.push(name);
            out.push((p.clone(), sub.render_long_help().to_string()));
            subcommands(sub, &p, out);
        }
    }

    #[test]
    fn the_command_line_definition_is_valid() {
        Args::command().debug_assert();
    }

    #[test]
    fn every_subcommand_help_ends_with_examples_that_parse() {
        let mut root = Args::command();
        root.build();
        let mut all = Vec::new();
        subcommands(&mut root, &[], &mut all);
        assert!(all.len() > 20, "{}", all.len());
        for (path, help) in &all {
            let path = path.join(" ");
            let (_, examples) = help
                .trim_end()
                .rsplit_once("\nExamples")
                .unwrap_or_else(|| panic!("`warden {path} --help` has no examples"));
            let lines: Vec<&str> = examples.lines().skip(1).collect();
            assert!((1..=2).contains(&lines.len()), "`warden {path} --help` ends with {} example lines", lines.len());
            for line in lines {
                let words = shell_words(line);
                let expected = format!("  warden {path}");
                assert!(line.starts_with(&expected), "`warden {path}` example `{line}` is not about it");
                if let Err(e) = Args::try_parse_from(&words) {
                    panic!("`warden {path}` example `{line}` does not parse:\n{e}");
                }
            }
        }
    }

    #[test]
    fn help_and_version_exit_0_every_other_clap_error_64() {
        assert_eq!(usage_exit_code(ErrorKind::DisplayHelp), 0);
        assert_eq!(usage_exit_code(ErrorKind::DisplayVersion), 0);
        for kind in [
            ErrorKind::UnknownArgument,
            ErrorKind::MissingRequiredArgument,
            ErrorKind::InvalidValue,
            ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand,
            ErrorKind::ArgumentConflict,
        ] {
            assert_eq!(usage_exit_code(kind), 64, "{kind:?}");
        }
        let e = Args::try_parse_from(["warden", "status", "--no-such-flag"]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::UnknownArgument);
        assert_eq!(Args::try_parse_from(["warden", "--help"]).unwrap_err().kind(), ErrorKind::DisplayHelp);
        assert_eq!(Args::try_parse_from(["warden", "status", "-h"]).unwrap_err().kind(), ErrorKind::DisplayHelp);
        assert_eq!(Args::try_parse_from(["warden", "--version"]).unwrap_err().kind(), ErrorKind::DisplayVersion);
    }
}

//! `warden restore` and `warden drill`: rendering of [`sqlite_warden::copies::restore`].
//!
//! Exit codes: `0` restored / planned / drill passed; `64` usage; `65` the backup failed
//! re-verification (hash or integrity), or a named backup is not a known-good state;
//! `66` no backup, or the named backup does not exist; `73` the target exists (`--to`) or
//! an interrupted restore is blocked by a file in the way; `74` I/O, no space, audit log
//! unwritable; `75` a writer (engine or session) holds the database.
//!
//! With `--json`, stdout carries exactly one JSON document: the report, or
//! `{"schema":1,"outcome":"error","exit_code":N,"error":"…"}` when the command could not be
//! carried out (the message also goes to stderr).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use sqlite_warden::copies::restore::{
    self, DrillOptions, DrillOutcome, DrillReport, RecoveryAction, RestoreError, RestoreOptions, RestoreOutcome,
    RestoreReport,
};

use sqlite_warden::util::exit;

use super::CliError;
use super::shared::json_line;
use super::render::{human_bytes, short_hash};
use super::settings::{AuditDirArgs, BackupDirArgs, DbArgs, GateBudgetArgs};

/// `warden restore`: restores the database from a verified backup, re-verified first.
///
/// The current database and its -wal, -journal and -shm are moved aside into
/// `<db>.warden/replaced/<UTC time>/`, never deleted. Exit codes: 0 restored (or planned),
/// 65 the backup failed re-verification, 66 no backup / not found, 73 the --to target
/// exists, 74 I/O or no space, 75 a writer holds the database.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  warden restore --db /var/lib/engine/engine.db --dry-run
  warden restore --db /var/lib/engine/engine.db --from engine.db-20260301T120000.000Z-pre")]
pub struct RestoreArgs {
    /// The backup: its id, its data file name, or a path to a data file with its manifest
    /// beside it (default: the newest verified backup that is not a crash copy).
    #[arg(long, value_name = "ID|PATH")]
    from: Option<String>,
    /// Restore to this new file instead (an existing directory means <dir>/<db name>); it
    /// must not exist. The database is not touched and its writer lock is not needed.
    #[arg(long, value_name = "PATH")]
    to: Option<PathBuf>,
    /// Verify the backup and print the plan; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Accept a post-crash (or unverified) copy named with --from; it must still pass the
    /// hash and integrity checks.
    #[arg(long, requires = "from")]
    allow_crash_copy: bool,
    /// Accept the backup named with --from even though it belongs to another database (its
    /// manifest names another identity or path, e.g. a database of the same file name that
    /// shares the backup directory).
    #[arg(long, requires = "from")]
    allow_foreign: bool,
    /// Run the full integrity check of the copy even when it hashes to content that passed
    /// one already (by default the matching SHA-256 proves it is that content).
    #[arg(long)]
    recheck: bool,
    /// Print one JSON document on stdout instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    db: DbArgs,
    #[command(flatten)]
    backup_dir: BackupDirArgs,
    #[command(flatten)]
    audit_dir: AuditDirArgs,
    #[command(flatten)]
    gate_budget: GateBudgetArgs,
}

fn failed(e: &RestoreError) -> CliError {
    CliError::Failed { message: e.to_string(), code: e.exit_code() }
}

/// With `--json`, a command that could not be carried out still prints one document.
fn json_errors(json: bool, result: Result<ExitCode, CliError>) -> Result<ExitCode, CliError> {
    if let (true, Err(e)) = (json, &result) {
        outln!(
            "{}",
            serde_json::json!({"schema": 1, "outcome": "error", "exit_code": e.exit_code(), "error": e.to_string()})
        );
    }
    result
}

/// `warden restore`.
pub fn run(args: RestoreArgs) -> Result<ExitCode, CliError> {
    let json = args.json;
    json_errors(json, restore_cmd(args))
}

fn restore_cmd(args: RestoreArgs) -> Result<ExitCode, CliError> {
    let settings = args.db.settings().with(args.backup_dir).with(args.audit_dir).with(args.gate_budget).resolve()?;
    let guard = settings.guard()?;
    let store = settings.backup_store();
    let opts = RestoreOptions {
        from: args.from,
        to: args.to,
        dry_run: args.dry_run,
        allow_crash_copy: args.allow_crash_copy,
        allow_foreign: args.allow_foreign,
        check_budget: settings.budget,
        state_dir: None,
        guard: Some(guard),
        recheck: args.recheck,
    };
    let report = restore::restore(&settings.database, &store, &opts).map_err(|e| failed(&e))?;
    if args.json {
        out!("{}", json_line(&report));
    } else {
        render(&report, super::term::quiet());
    }
    Ok(match report.outcome {
        RestoreOutcome::Restored | RestoreOutcome::Planned => ExitCode::SUCCESS,
        RestoreOutcome::VerificationFailed => ExitCode::from(exit::DATAERR),
    })
}

fn render(r: &RestoreReport, quiet: bool) {
    if let Some(rec) = &r.recovery {
        let what = match (rec.performed, rec.action) {
            (false, _) => "found an interrupted restore",
            (true, RecoveryAction::Completed) => "completed an interrupted restore",
            (true, RecoveryAction::RolledForward) => "finished an interrupted restore",
            (true, RecoveryAction::RolledBack) => "undid an interrupted restore",
        };
        eprintln!("warden: {what} of {} (started {})", rec.intent.backup.id, rec.intent.started);
        for d in &rec.details {
            eprintln!("warden:   {d}");
        }
    }
    let b = &r.backup;
    let v = &r.verification;
    if r.outcome == RestoreOutcome::VerificationFailed {
        eprintln!(
            "warden: backup {} FAILED re-verification: {}\nwarden: nothing was changed",
            b.id,
            v.failure.as_deref().unwrap_or("unknown")
        );
        let next =
            r.next_candidate.as_deref().map(|n| format!("; the next verified backup is {n}")).unwrap_or_default();
        eprintln!(
            "warden: (hint: restore another one with `warden restore --from <id>`{next}; `warden backups verify --all` checks them all)"
        );
        return;
    }
    let head = if r.dry_run { "dry run: would restore" } else { "restored" };
    outln!("{head} {} from backup {}", r.target.display(), b.id);
    if quiet {
        return;
    }
    outln!("  backup:    {} ({}, created {}, {})", b.path.display(), b.kind, b.created, human_bytes(b.size));
    let integrity = match (&v.integrity, &v.checked_before) {
        (Some(i), _) => i.summary(),
        (None, Some(before)) => format!("not checked again: {before} (--recheck checks it)"),
        (None, None) => "checked before the interruption".to_owned(),
    };
    outln!("  verified:  size ok, sha256 ok ({}…), {integrity}", short_hash(&b.sha256));
    if r.in_place {
        let verb = if r.dry_run { "would move aside" } else { "moved aside" };
        match &r.replaced_dir {
            Some(dir) if !r.moved_aside.is_empty() => {
                outln!("  {verb} to {}:", dir.display());
                for m in &r.moved_aside {
                    outln!("    {} ({})", file_name(&m.from), human_bytes(m.size));
                }
            }
            _ => outln!("  {verb}: nothing (there was no database)"),
        }
    }
    outln!("  mode:      {}", r.mode);
    for m in &r.messages {
        outln!("  note:      {m}");
    }
}

/// `warden drill`: restores the newest verified backup to a scratch place and checks it.
///
/// Checks size and SHA-256 against the manifest, integrity_check and foreign_key_check;
/// writes `<db>.warden/drills/latest.json`; never touches the live database or its writer
/// lock. Exit codes: 0 passed, 65 failed, 66 no verified backup, 74 I/O.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  warden drill --db /var/lib/engine/engine.db
  warden drill --config /etc/warden/warden.toml --scratch /var/tmp --json")]
pub struct DrillArgs {
    /// Where to make the scratch directory (default: the backup directory's parent); a
    /// fresh subdirectory is created there and always removed.
    #[arg(long, value_name = "DIR")]
    scratch: Option<PathBuf>,
    /// Run the full integrity check of the copy even when it hashes to content that passed
    /// one already (by default the matching SHA-256 proves it is that content).
    #[arg(long)]
    recheck: bool,
    /// Print the drill record as one JSON document on stdout.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    db: DbArgs,
    #[command(flatten)]
    backup_dir: BackupDirArgs,
    #[command(flatten)]
    audit_dir: AuditDirArgs,
    #[command(flatten)]
    gate_budget: GateBudgetArgs,
}

/// `warden drill`.
pub fn drill(args: DrillArgs) -> Result<ExitCode, CliError> {
    let json = args.json;
    json_errors(json, drill_cmd(args))
}

fn drill_cmd(args: DrillArgs) -> Result<ExitCode, CliError> {
    let settings = args.db.settings().with(args.backup_dir).with(args.audit_dir).with(args.gate_budget).resolve()?;
    let guard = settings.guard()?;
    let store = settings.backup_store();
    let opts = DrillOptions {
        scratch: args.scratch,
        record_path: None,
        check_budget: settings.budget,
        guard: Some(guard),
        recheck: args.recheck,
    };
    let report = restore::drill(&settings.database, &store, &opts).map_err(|e| failed(&e))?;
    if args.json {
        out!("{}", json_line(&report));
    } else {
        render_drill(&report, super::term::quiet());
    }
    if let Some(e) = &report.record_error {
        eprintln!("warden: {}", e.replace('\n', "\nwarden: "));
        if report.record.ok {
            return Ok(ExitCode::from(exit::IOERR));
        }
    }
    Ok(match report.record.outcome {
        DrillOutcome::Ok => ExitCode::SUCCESS,
        DrillOutcome::Failed => ExitCode::from(exit::DATAERR),
        DrillOutcome::NoBackup => ExitCode::from(exit::NOINPUT),
    })
}

fn render_drill(r: &DrillReport, quiet: bool) {
    let d = &r.record;
    let id = d.backup.as_ref().map_or("-", |b| b.id.as_str());
    match d.outcome {
        DrillOutcome::Ok => outln!("drill passed: backup {id} restores and checks clean"),
        DrillOutcome::Failed => outln!("drill FAILED: backup {id}"),
        DrillOutcome::NoBackup => outln!("drill FAILED: no verified backup of {}", d.db.display()),
    }
    for m in &d.messages {
        outln!("  problem:   {m}");
    }
    if quiet || d.backup.is_none() {
        if let Some(p) = &r.record_path
            && !quiet
        {
            outln!("  record:    {}", p.display());
        }
        return;
    }
    if let Some(age) = d.backup_age_s {
        outln!("  age:       {}", humantime::format_duration(std::time::Duration::from_secs(age)));
    }
    let hash = match d.hash_ok {
        Some(true) => "sha256 ok",
        Some(false) => "sha256 MISMATCH",
        None => "not hashed",
    };
    let integrity = match (&d.integrity, &d.checked_before) {
        (Some(i), _) => i.summary(),
        (None, Some(before)) => format!("not checked again: {before} (--recheck checks it)"),
        (None, None) => "integrity not checked".to_owned(),
    };
    outln!("  checks:    {hash}, {integrity}");
    outln!(
        "  restored:  {} in {} ms (copy {} ms, check {} ms; {:.1} MB/s)",
        human_bytes(d.bytes),
        d.duration_ms,
        d.copy_ms,
        d.check_ms,
        d.mb_per_s
    );
    if let Some(p) = &r.record_path {
        outln!("  record:    {}", p.display());
    }
}

fn file_name(p: &Path) -> String {
    p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

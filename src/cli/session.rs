//! `warden run`, `warden backup`, `warden prune`: rendering of the session library.

use std::ffi::OsString;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use clap::Args as ClapArgs;
use sqlite_warden::copies::backup::BackupOptions;
use sqlite_warden::copies::prune;
use sqlite_warden::copies::retention::Plan;
use sqlite_warden::session::BackupKind;
use sqlite_warden::session::health::HealthArtifact;
use sqlite_warden::session::run::{RunEvent, RunOptions, SignalForwarder};
use sqlite_warden::util::exit;
use sqlite_warden::util::progress::{Phase, Progress};

use super::CliError;
use super::shared::json_line;
use super::render::{human_bytes, short_hash};
use super::settings::{
    AuditDirArgs, BackupDirArgs, DbArgs, GateBudgetArgs, GateCheckArgs, RetentionArgs, SessionDirArgs, SettingsArgs,
};

/// `warden backup` arguments.
#[derive(Debug, ClapArgs)]
#[command(after_help = "\
Exit codes: 0 verified; 65 the copy failed its check (it is discarded); 74 I/O error or no
space; the README's table has the rest.

Examples:
  warden backup --db /var/lib/engine/engine.db
  warden backup --config /etc/warden/warden.toml --check quick --json")]
pub struct BackupArgs {
    /// Print the manifest as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    db: DbArgs,
    #[command(flatten)]
    backup_dir: BackupDirArgs,
    #[command(flatten)]
    audit_dir: AuditDirArgs,
    #[command(flatten)]
    check: GateCheckArgs,
    #[command(flatten)]
    gate_budget: GateBudgetArgs,
}

/// `warden prune` arguments.
#[derive(Debug, ClapArgs)]
#[command(after_help = "\
The backups the latest session depends on are never removed. Exit codes: 0 done; 65 a
session artifact cannot be read (nothing removed); 66 no backup directory; 78 an empty
policy or an invalid config.

Examples:
  warden prune --db /var/lib/engine/engine.db --dry-run
  warden prune --config /etc/warden/warden.toml --keep-daily 14 --keep-weekly 8")]
pub struct PruneArgs {
    /// Change nothing; print the plan.
    #[arg(long)]
    dry_run: bool,
    /// Print the plan as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    db: DbArgs,
    #[command(flatten)]
    backup_dir: BackupDirArgs,
    #[command(flatten)]
    session_dir: SessionDirArgs,
    #[command(flatten)]
    retention: RetentionArgs,
}

/// Progress on a terminal: one line on stderr, redrawn at most ten times a second.
struct TermProgress {
    last: Mutex<(Instant, Option<Phase>)>,
}

impl TermProgress {
    fn new_if_terminal(quiet: bool) -> Option<Arc<dyn Progress>> {
        (!quiet && std::io::stderr().is_terminal())
            .then(|| Arc::new(TermProgress { last: Mutex::new((Instant::now(), None)) }) as Arc<dyn Progress>)
    }
}

impl Progress for TermProgress {
    fn update(&self, phase: Phase, done: u64, total: u64) {
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        let finished = total > 0 && done >= total;
        if last.1 == Some(phase) && last.0.elapsed().as_millis() < 100 && !finished {
            return;
        }
        *last = (Instant::now(), Some(phase));
        let pct = done.saturating_mul(100).checked_div(total).unwrap_or(0);
        let what = match phase {
            Phase::Copy => "copying",
            Phase::Check => "checking (estimate)",
            Phase::Hash => "hashing",
            Phase::Scan => "scanning",
        };
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[K  warden: {what} {pct:>3}%");
        if finished {
            let _ = write!(err, "\r\x1b[K");
        }
        let _ = err.flush();
    }
}

fn clear_progress_line(p: Option<&Arc<dyn Progress>>) {
    if p.is_some() {
        eprint!("\r\x1b[K");
    }
}

/// `warden run`.
pub fn run_cmd(args: SettingsArgs, command: Vec<OsString>, json: bool, quiet: bool) -> Result<ExitCode, CliError> {
    let settings = args.resolve(command)?;
    if settings.command.is_empty() {
        return Err(CliError::Usage(
            "no engine command: give it after `--` (warden run -- /path/to/engine ARGS) or as [engine] command in warden.toml"
                .into(),
        ));
    }
    let guard = settings.guard()?;
    let signals = SignalForwarder::install()
        .map_err(|source| CliError::Io { context: "installing signal handlers".into(), source })?;
    let mut config = settings.session_config(guard);
    let progress = TermProgress::new_if_terminal(quiet);
    config.progress.clone_from(&progress);
    let say = |s: String| {
        if !quiet {
            eprintln!("warden: {s}");
        }
    };
    say(format!("session on {}", settings.database.display()));
    let opts = RunOptions { command: settings.command.clone() };
    let report = sqlite_warden::session::run::run(config, &opts, &signals, &mut |ev| match ev {
        RunEvent::Ready(s) => {
            clear_progress_line(progress.as_ref());
            let a = s.artifact();
            if let Some(v) = &a.storage {
                say(format!("storage: {} ({})", v.kind, v.describe()));
            }
            if let Some(g) = &a.gate {
                say(format!("gate {} in {} ms", g.summary(), g.duration_ms));
            }
            if let Some(b) = &a.pre_backup {
                say(format!(
                    "pre-session backup: {} ({}, sha256 {}…)",
                    b.path.display(),
                    human_bytes(b.size),
                    short_hash(&b.sha256)
                ));
            }
            say(format!("session {} holds the writer lock; starting the engine", s.id()));
        }
        RunEvent::EngineStarted { pid } => say(format!("engine running as pid {pid}")),
        RunEvent::Forwarded(sig) => say(format!("forwarded {sig} to the engine")),
        RunEvent::ForeignWriter(m) => say(format!("WARNING: {m}")),
        RunEvent::StoppingForForeignWriter { pid } => {
            say(format!("sent SIGTERM to the engine (pid {pid}): a foreign writer (on_foreign_writer = stop)"));
        }
        RunEvent::EngineExited(o) => say(match (o.exit_code, o.signal) {
            (Some(0), _) => "engine exited cleanly (0); taking the post-session backup".into(),
            (Some(c), _) => format!("engine exited with status {c}; taking a post-crash copy"),
            (None, Some(s)) => format!("engine killed by signal {s}; taking a post-crash copy"),
            _ => "engine ended".into(),
        }),
    });
    clear_progress_line(progress.as_ref());
    render_final(&report.artifact, report.artifact_path.as_deref(), report.error.as_deref(), quiet);
    if json {
        out!("{}", json_line(&report.artifact));
    }
    Ok(ExitCode::from(u8::try_from(report.exit_code.clamp(0, 255)).unwrap_or(exit::SOFTWARE)))
}

fn render_final(a: &HealthArtifact, path: Option<&std::path::Path>, error: Option<&str>, quiet: bool) {
    if let Some(e) = error {
        eprintln!("warden: {}", e.replace('\n', "\nwarden: "));
    }
    if quiet {
        return;
    }
    if let Some(p) = &a.post_backup {
        match (&p.backup, &p.error) {
            (Some(b), _) if p.ok => eprintln!(
                "warden: post-session backup: {} ({}, sha256 {}…)",
                b.path.display(),
                human_bytes(b.size),
                short_hash(&b.sha256)
            ),
            (Some(b), _) => eprintln!(
                "warden: post-crash copy (never counted as a good backup): {} [{}]",
                b.path.display(),
                p.integrity.as_deref().unwrap_or("not checked")
            ),
            (None, Some(e)) => eprintln!("warden: no post-session backup: {e}"),
            _ => {}
        }
    }
    if let Some(r) = &a.retention {
        match &r.error {
            Some(e) => eprintln!("warden: retention failed: {e}"),
            None => eprintln!(
                "warden: retention: kept {}, removed {} (freed {})",
                r.kept,
                r.removed.len(),
                human_bytes(r.freed_bytes)
            ),
        }
    }
    let status = serde_json::to_value(a.status).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
    match path {
        Some(p) => eprintln!("warden: session {} {status}; artifact {}", a.session_id, p.display()),
        None if a.failed_step == Some(sqlite_warden::session::health::Step::Database) => {
            eprintln!(
                "warden: session {status}; no artifact was written (nothing is created for a database path that cannot be used)"
            )
        }
        None => eprintln!("warden: session {status}; no artifact could be written"),
    }
}

/// `warden backup`: a manual verified backup, safe while the engine runs.
pub fn backup_cmd(args: BackupArgs) -> Result<ExitCode, CliError> {
    let BackupArgs { db, backup_dir, audit_dir, check, gate_budget, json } = args;
    let quiet = super::term::quiet();
    let settings = db.settings().with(backup_dir).with(audit_dir).with(check).with(gate_budget).resolve()?;
    let guard = settings.guard()?;
    let store = settings.backup_store();
    let progress = TermProgress::new_if_terminal(quiet);
    let opts = BackupOptions {
        kind: Some(BackupKind::Manual),
        check: settings.check,
        check_budget: settings.budget,
        guard: Some(guard),
        progress: progress.clone(),
        ..Default::default()
    };
    let out = store.take(&settings.database, &opts)?;
    clear_progress_line(progress.as_ref());
    if json {
        out!(
            "{}",
            json_line(&serde_json::json!({
                "verified": out.integrity.ok,
                "published": out.published.as_ref().map(|r| &r.path),
                "manifest": out.manifest,
            }))
        );
    } else if let Some(r) = &out.published {
        outln!("{}", r.path.display());
        if !quiet {
            eprintln!(
                "warden: verified backup of {} ({}, sha256 {}, {})",
                settings.database.display(),
                human_bytes(r.manifest.size),
                r.manifest.sha256,
                out.integrity.summary()
            );
        }
    }
    if out.integrity.ok {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "warden: the copy of {} FAILED its check and was discarded: {}\nwarden: (hint: the database itself is probably damaged; run `warden run` only after restoring a verified backup)",
            settings.database.display(),
            out.integrity.summary()
        );
        Ok(ExitCode::from(exit::DATAERR))
    }
}

/// `warden prune`: applies retention (or shows what it would do).
pub fn prune_cmd(args: PruneArgs) -> Result<ExitCode, CliError> {
    let PruneArgs { db, backup_dir, session_dir, retention, dry_run, json } = args;
    let settings = db.settings().with(backup_dir).with(session_dir).with(retention).resolve()?;
    let store = settings.backup_store();
    let protected = sqlite_warden::session::protected_by_latest_session(&settings.session_dir, &settings.database);
    // Which backups a session whose artifact cannot be read depends on is unknown: remove none.
    if !dry_run && let Some((artifact, why)) = sqlite_warden::session::health::unreadable(&settings.session_dir).pop() {
        return Err(prune::PruneError::UnreadableArtifact { db: settings.database.clone(), artifact, why }.into());
    }
    let plan = prune::prune(&store, &settings.retention, &protected, dry_run)?;
    if json {
        out!("{}", json_line(&serde_json::json!({ "dry_run": dry_run, "plan": plan })));
    } else {
        print_plan(&plan, dry_run);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_plan(plan: &Plan, dry_run: bool) {
    if plan.decisions.is_empty() {
        outln!("no backups");
        return;
    }
    let verb = if dry_run { "would remove" } else { "removed" };
    for d in &plan.decisions {
        let action = if d.keep {
            "keep  "
        } else if dry_run {
            "DROP  "
        } else {
            "DROPPED"
        };
        outln!("{action} {}  {:>10}  {}", d.id, human_bytes(d.size), d.detail);
    }
    outln!(
        "{} kept ({}), {} {verb} ({})",
        plan.kept().count(),
        human_bytes(plan.kept_bytes()),
        plan.dropped().count(),
        human_bytes(plan.freed_bytes())
    );
    if let Some(p) = plan.packs.as_ref().filter(|p| !p.packs.is_empty() || p.kept_packs > 0) {
        let gone = if dry_run { "would free" } else { "freed" };
        outln!(
            "page store: {} packs no kept backup uses, {gone} {}; {} packs kept ({})",
            p.packs.len(),
            human_bytes(p.bytes),
            p.kept_packs,
            human_bytes(p.kept_bytes)
        );
    }
}

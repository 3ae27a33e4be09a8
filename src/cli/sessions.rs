//! `warden sessions`: the session health artifacts, listed or one shown (text, or `--json`);
//! `sessions export` is handed to [`super::migrate`].
//! Does not own: reading the artifacts ([`sqlite_warden::ops::status`]).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args as ClapArgs, Subcommand};
use sqlite_warden::ops::status;
use sqlite_warden::session::gate::GateReport;
use sqlite_warden::session::health::{HealthArtifact, SessionStatus};

use super::CliError;
use super::render::{human_bytes, short_hash};
use super::settings::{AuditDirArgs, DbArgs, SessionDirArgs, SnapshotStoreArgs};
use super::shared::{emit, json_line, lookup_error, secs, short_ts, snake};

/// `warden sessions`: the health artifacts, newest first; `show <id>` prints one; `export`
/// collects them with the newest snapshot for analysis elsewhere.
#[derive(Debug, ClapArgs)]
#[command(
    args_conflicts_with_subcommands = true,
    after_help = "\
Exit codes: 0 ok; 64 an id prefix that matches several sessions; 66 no such session.
export: 65 the snapshot changed since it was published; 73 the directory exists; 74 I/O.

Examples:
  warden sessions --db /var/lib/engine/engine.db -n 10
  warden sessions show 20260301T120000Z --db /var/lib/engine/engine.db"
)]
pub struct SessionsArgs {
    #[command(subcommand)]
    cmd: Option<SessionsCmd>,
    /// Print JSON: an array of session summaries, newest first.
    #[arg(long)]
    json: bool,
    /// Only the N newest.
    #[arg(short = 'n', long = "limit", value_name = "N")]
    limit: Option<usize>,
    #[command(flatten)]
    db: DbArgs,
    #[command(flatten)]
    session_dir: SessionDirArgs,
}

#[derive(Debug, Subcommand)]
enum SessionsCmd {
    /// Prints one session artifact, by id or unique id prefix.
    #[command(after_help = "\
Exit codes: 0 ok; 64 an id prefix that matches several sessions; 66 no such session.

Examples:
  warden sessions show 20260301T120000Z-4f2a --db /var/lib/engine/engine.db
  warden sessions show 20260301T1200 --config /etc/warden/warden.toml --json")]
    Show {
        /// The session id (or a prefix that matches only one).
        id: String,
        /// Print the artifact itself, as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: DbArgs,
        #[command(flatten)]
        session_dir: SessionDirArgs,
    },
    /// Collects the artifacts and the newest snapshot (`latest.sqlite`) into a new
    /// directory, atomically, with a MANIFEST.json of hashes: for analysis elsewhere.
    #[command(after_help = "\
Exit codes: 0 exported; 65 the snapshot changed since it was published; 73 the directory
exists; 74 I/O.

Examples:
  warden sessions export --db /var/lib/engine/engine.db --to /tmp/engine-sessions
  warden sessions export --config /etc/warden/warden.toml --to /tmp/engine-sessions --snapshot")]
    Export {
        /// The directory to create; it must not exist.
        #[arg(long, value_name = "DIR")]
        to: PathBuf,
        /// Take a fresh snapshot first (through the tooling role; safe while the engine runs).
        #[arg(long)]
        snapshot: bool,
        /// Print one JSON document (the report) instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: DbArgs,
        #[command(flatten)]
        session_dir: SessionDirArgs,
        #[command(flatten)]
        audit_dir: AuditDirArgs,
        #[command(flatten)]
        snapshots: SnapshotStoreArgs,
    },
}

/// `warden sessions`.
pub fn sessions(args: SessionsArgs) -> Result<ExitCode, CliError> {
    if let Some(SessionsCmd::Export { db, session_dir, audit_dir, snapshots, to, snapshot, json }) = args.cmd {
        let settings = db.settings().with(session_dir).with(audit_dir).with(snapshots);
        return super::migrate::sessions_export(settings, to, snapshot, json);
    }
    if let Some(SessionsCmd::Show { id, db, session_dir, json }) = args.cmd {
        let settings = db.settings().with(session_dir).resolve()?;
        let (path, a) = status::find_session(&settings.session_dir, &id).map_err(lookup_error)?;
        emit(&if json { json_line(&a) } else { render_artifact(&path, &a) })?;
        return Ok(ExitCode::SUCCESS);
    }
    let settings = args.db.settings().with(args.session_dir).resolve()?;
    let mut all = status::list_sessions(&settings.session_dir).map_err(lookup_error)?;
    if let Some(n) = args.limit {
        all.truncate(n);
    }
    if args.json {
        let rows: Vec<_> = all.iter().map(|(p, a)| session_summary(p, a)).collect();
        emit(&json_line(&serde_json::json!({ "sessions": rows })))?;
        return Ok(ExitCode::SUCCESS);
    }
    if all.is_empty() {
        emit(&format!("no sessions in {}\n", settings.session_dir.display()))?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{:<22} {:<24} {:<20} {:>9}  {:<7} {:<7} POST BACKUP",
        "ID", "STATUS", "STARTED", "DURATION", "GATE", "ENGINE"
    );
    for (_, a) in &all {
        let gate = match &a.gate {
            Some(g) if g.fresh_database => "fresh",
            Some(g) if g.passed => "passed",
            Some(_) => "FAILED",
            None => "-",
        };
        let engine = match a.engine.as_ref().map(|e| (e.exit_code, e.signal)) {
            Some((Some(c), _)) => c.to_string(),
            Some((None, Some(s))) => format!("sig {s}"),
            Some(_) if a.status == SessionStatus::Running => "running".into(),
            _ => "-".into(),
        };
        let post = match &a.post_backup {
            Some(p) if p.ok => "ok".to_owned(),
            Some(p) if p.backup.is_some() => "crash copy".into(),
            Some(p) if p.error.is_some() && p.kind.is_some() => "FAILED".into(),
            _ => "-".into(),
        };
        let _ = writeln!(
            o,
            "{:<22} {:<24} {:<20} {:>9}  {:<7} {:<7} {post}",
            a.session_id,
            snake(&a.status),
            short_ts(&a.started_at),
            secs(a.durations.total_ms),
            gate,
            engine
        );
    }
    emit(&o)?;
    Ok(ExitCode::SUCCESS)
}

fn session_summary(path: &std::path::Path, a: &HealthArtifact) -> serde_json::Value {
    serde_json::json!({
        "id": a.session_id,
        "status": a.status,
        "failed_step": a.failed_step,
        "database": a.database,
        "started_at": a.started_at,
        "finished_at": a.finished_at,
        "duration_ms": a.durations.total_ms,
        "gate_passed": a.gate.as_ref().map(|g| g.passed),
        "gate": a.gate.as_ref().map(GateReport::summary),
        "engine_exit_code": a.engine.as_ref().and_then(|e| e.exit_code),
        "engine_signal": a.engine.as_ref().and_then(|e| e.signal),
        "post_backup_ok": a.post_backup.as_ref().map(|p| p.ok),
        "exit_code": a.exit_code,
        "error": a.error,
        "artifact": path,
    })
}

fn render_artifact(path: &std::path::Path, a: &HealthArtifact) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "session {}: {}", a.session_id, snake(&a.status));
    let _ = writeln!(o, "  artifact:     {}", path.display());
    let _ = writeln!(o, "  database:     {}", a.database.display());
    let _ = writeln!(o, "  started:      {}", a.started_at);
    if let Some(f) = &a.finished_at {
        let _ = writeln!(o, "  finished:     {f} ({})", secs(a.durations.total_ms));
    }
    if let Some(step) = a.failed_step {
        let _ = writeln!(o, "  failed step:  {}", snake(&step));
    }
    if let Some(e) = &a.error {
        let _ = writeln!(o, "  error:        {}", e.replace('\n', "\n                "));
    }
    if let Some(v) = &a.storage {
        let _ = writeln!(o, "  storage:      {} ({})", v.kind, v.describe());
    }
    if let Some(g) = &a.gate {
        let _ = writeln!(o, "  gate:         {} ({})", g.summary(), secs(g.duration_ms));
        for r in g.reasons.iter().skip(usize::from(!g.passed)) {
            let _ = writeln!(o, "                {r}");
        }
    }
    if let Some(b) = &a.pre_backup {
        let _ = writeln!(o, "  pre backup:   {} ({}, sha256 {}…)", b.id, human_bytes(b.size), short_hash(&b.sha256));
    }
    if let Some(e) = &a.engine {
        let how = match (e.exit_code, e.signal) {
            (Some(c), _) => format!("exit {c}"),
            (None, Some(s)) => format!("killed by signal {s}"),
            _ => "running".into(),
        };
        let pid = e.pid.map(|p| format!(" pid {p}")).unwrap_or_default();
        let dur = e.duration_ms.map(|d| format!(", ran {}", secs(d))).unwrap_or_default();
        let _ = writeln!(o, "  engine:       {how}{pid}{dur}: {}", e.command.join(" "));
        if !e.forwarded_signals.is_empty() {
            let _ = writeln!(o, "                forwarded {}", e.forwarded_signals.join(", "));
        }
    }
    if let Some(p) = &a.post_backup {
        let what = match (&p.backup, p.ok) {
            (Some(b), true) => format!("ok: {} ({}, sha256 {}…)", b.id, human_bytes(b.size), short_hash(&b.sha256)),
            (Some(b), false) => format!("{} (not a good backup): {}", b.id, p.integrity.as_deref().unwrap_or("?")),
            (None, _) => format!("none: {}", p.error.as_deref().unwrap_or("?")),
        };
        let _ = writeln!(o, "  post backup:  {what}");
    }
    if let Some(r) = &a.retention {
        let t = match &r.error {
            Some(e) => format!("failed: {e}"),
            None => format!("kept {}, removed {} ({})", r.kept, r.removed.len(), human_bytes(r.freed_bytes)),
        };
        let _ = writeln!(o, "  retention:    {t}");
    }
    if let Some(c) = a.exit_code {
        let _ = writeln!(o, "  exit code:    {c}");
    }
    o
}

//! `warden check`, `warden status`, `warden sessions`, `warden backups`, `warden audit`:
//! rendering of the operator views ([`sqlite_warden::ops::status`]) and of the integrity gate on
//! its own ([`sqlite_warden::session::gate::check_only`]).
//!
//! Every command prints text for humans, or with `--json` one JSON document on stdout (the
//! audit log: its own JSON lines, unchanged). Errors go to stderr. Exit codes are listed on
//! each command's `--help` and in the README.

use std::fmt::Write as _;
use std::io::{self, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::{Args as ClapArgs, Subcommand};
use sqlite_warden::copies::backup::{BackupError, BackupStore, CheckMode};
use sqlite_warden::guard::audit::{AuditEvent, AuditLog};
use sqlite_warden::guard::lock::LockState;
use sqlite_warden::ops::status::{
    self, AuditFilter, AuditLine, BackupInfo, BackupSelection, LookupError, StatusOptions, StatusReport, VerifyError,
    VerifyOptions, VerifyOutcome,
};
use sqlite_warden::session::gate::{self, CheckOptions, GateFailure, GateReport};
use sqlite_warden::session::health::{HealthArtifact, SessionStatus};

use super::CliError;
use super::render::{human_bytes, short_hash};
use super::session::{CheckArg, SettingsArgs};

// ---------------------------------------------------------------------------------------------
// Shared rendering helpers
// ---------------------------------------------------------------------------------------------

/// Writes `text` to stdout; a closed pipe (`warden audit | head`) is not an error.
fn emit(text: &str) -> Result<(), CliError> {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        Err(source) => Err(CliError::Io { context: "writing to stdout".into(), source }),
    }
}

fn json_line(v: &impl serde::Serialize) -> String {
    let mut s = serde_json::to_string(v).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    s.push('\n');
    s
}

/// `2026-03-01T12:00:00.123456Z` → `2026-03-01 12:00:00Z`.
fn short_ts(ts: &str) -> String {
    match ts.get(..19) {
        Some(head) if ts.len() > 19 => format!("{}Z", head.replacen('T', " ", 1)),
        _ => ts.replacen('T', " ", 1),
    }
}

fn secs(ms: u64) -> String {
    if ms < 1000 { format!("{ms} ms") } else { format!("{:.1} s", ms as f64 / 1000.0) }
}

fn snake<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_else(|| "?".into())
}

fn check_mode(c: Option<CheckArg>) -> Option<CheckMode> {
    c.map(|c| match c {
        CheckArg::Full => CheckMode::Full,
        CheckArg::Quick => CheckMode::Quick,
    })
}

fn parse_duration(flag: &str, s: &str) -> Result<Option<Duration>, CliError> {
    if matches!(s.trim(), "none" | "off" | "0") {
        return Ok(None);
    }
    humantime::parse_duration(s.trim())
        .map(Some)
        .map_err(|e| CliError::Usage(format!("{flag} `{s}`: {e} (hint: write e.g. `90s`, `30m`, `26h`, or `none`)")))
}

/// A flag set by SIGINT/SIGTERM, so long work stops cleanly (temporary files removed).
fn cancel_on_signals() -> Result<Arc<AtomicBool>, CliError> {
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, flag.clone())
            .map_err(|source| CliError::Io { context: "installing signal handlers".into(), source })?;
    }
    Ok(flag)
}

fn lookup_error(e: LookupError) -> CliError {
    let code = match &e {
        LookupError::NotFound { .. } => 66,
        LookupError::Ambiguous { .. } => 64,
        _ => 74,
    };
    CliError::Failed { message: e.to_string(), code }
}

// ---------------------------------------------------------------------------------------------
// warden check
// ---------------------------------------------------------------------------------------------

/// `warden check <db>`: the integrity gate on its own.
#[derive(Debug, ClapArgs)]
#[command(after_help = "\
Read-only and safe at any time, also while the engine runs: the raw scan of the files, then
integrity_check (or quick_check) and foreign_key_check on a private copy in a scratch
directory that is always removed. Nothing is published; the database is never written.
With a writer running, the copy is a consistent snapshot taken with the online backup API.
With no writer, warden holds the writer lock during the check (an engine starting meanwhile
is refused) so that a journal or WAL is recovered on the copy, never on the original; after a
crashed writer the lock is left alone, as evidence for `warden status`.

Exit codes:
  0   the gate passed
  65  the gate failed: damage found (or the time budget ran out)
  66  the database is missing or empty
  74  I/O error, or no room for the private copy (see --scratch-dir)
  75  a hot journal left by a writer that died needs the writer lock to be recovered:
      start a session (`warden run`), which recovers it under the lock
  130 interrupted")]
pub struct CheckArgs {
    /// The database file.
    db: PathBuf,
    /// `full` (integrity_check, default) or `quick` (quick_check).
    #[arg(long, value_enum)]
    check: Option<CheckArg>,
    /// Give up after this long (`90s`, `30m`; default `none`); a check that runs out fails.
    #[arg(long, value_name = "DURATION")]
    budget: Option<String>,
    /// Where the private copy is made (default: $TMPDIR or /tmp); needs room for one copy.
    #[arg(long, value_name = "DIR")]
    scratch_dir: Option<PathBuf>,
    /// Print the gate report as JSON (with `exit_code`).
    #[arg(long)]
    json: bool,
}

/// `warden check`.
pub fn check(args: CheckArgs) -> Result<ExitCode, CliError> {
    let db = std::path::absolute(&args.db)
        .map_err(|source| CliError::Io { context: format!("resolving `{}`", args.db.display()), source })?;
    let budget = match &args.budget {
        Some(s) => parse_duration("--budget", s)?,
        None => None,
    };
    let opts = CheckOptions {
        check: check_mode(args.check).unwrap_or_default(),
        budget,
        scratch_dir: args.scratch_dir.clone(),
        guard: None,
        cancel: Some(cancel_on_signals()?),
        progress: None,
    };
    let report = match gate::check_only(&db, &opts) {
        Ok(r) => r,
        Err(e @ BackupError::HotJournal { .. }) => {
            return Err(CliError::Failed {
                message: format!(
                    "{}\n(hint: `warden check` does not take the lock of a writer that died, to keep that evidence; a session (`warden run`) recovers the journal under the lock and gates the result)",
                    e.to_string().lines().next().unwrap_or_default()
                ),
                code: 75,
            });
        }
        Err(e) if e.is_space() => {
            return Err(CliError::Failed {
                message: format!(
                    "{e}\n(hint: `warden check --scratch-dir DIR` puts the private copy on a disk with room)"
                ),
                code: 74,
            });
        }
        Err(e) => return Err(e.into()),
    };
    let code: u8 = match (report.passed, report.failure) {
        (true, _) => 0,
        (false, Some(GateFailure::Missing | GateFailure::Empty)) => 66,
        (false, _) => 65,
    };
    if args.json {
        let mut v = serde_json::to_value(&report).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            o.insert("exit_code".into(), code.into());
        }
        emit(&json_line(&v))?;
    } else {
        emit(&render_check(&report))?;
    }
    Ok(ExitCode::from(code))
}

fn render_check(r: &GateReport) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "{}: integrity gate {}", r.db.display(), r.summary());
    let (failure_reasons, notes): (Vec<&String>, Vec<&String>) = if r.passed {
        (Vec::new(), r.reasons.iter().collect())
    } else {
        // The last reason says how the set was read; the others say why it failed.
        match r.failure {
            Some(GateFailure::Missing | GateFailure::Empty) => (r.reasons.iter().collect(), Vec::new()),
            _ => {
                let n = r.reasons.len().saturating_sub(1);
                (r.reasons[..n].iter().collect(), r.reasons[n..].iter().collect())
            }
        }
    };
    // The first reason is in the summary line already.
    for reason in failure_reasons.iter().skip(1) {
        let _ = writeln!(o, "  reason:    {reason}");
    }
    for note in &notes {
        let _ = writeln!(o, "  read:      {note}");
    }
    if let Some(s) = &r.scan {
        let warnings: Vec<_> = s.findings.iter().filter(|f| !f.is_fatal()).collect();
        let fatal = s.findings.len() - warnings.len();
        let wal = s.wal.as_ref().map(|_| ", with a -wal").unwrap_or_default();
        let verdict = if fatal > 0 { format!("{fatal} fatal finding(s)") } else { "ok".into() };
        let _ = writeln!(o, "  scan:      {verdict} ({}{wal})", human_bytes(s.db_size));
        for f in s.findings.iter() {
            let sev = if f.is_fatal() { "FATAL" } else { "warning" };
            let _ = writeln!(o, "    {sev} {}: {}", f.code, f.message);
        }
    }
    if let Some(i) = &r.integrity {
        let fk = if i.foreign_key_violations > 0 {
            format!(", {} foreign key violation(s)", i.foreign_key_violations)
        } else if i.ok {
            ", no foreign key violations".into()
        } else {
            String::new()
        };
        let _ = writeln!(o, "  check:     {}{fk} ({})", i.summary(), secs(i.duration_ms));
        if !i.ok {
            let summary = i.summary();
            for m in i.messages.iter().filter(|m| m.as_str() != "ok" && !summary.ends_with(m.as_str())).take(10) {
                let _ = writeln!(o, "    {m}");
            }
            for m in i.foreign_key_messages.iter().take(5) {
                let _ = writeln!(o, "    foreign key: {m}");
            }
        }
    }
    let _ = writeln!(o, "  took:      {}; nothing was published and the private copy is gone", secs(r.duration_ms));
    if !r.passed && !matches!(r.failure, Some(GateFailure::Missing | GateFailure::Empty)) {
        let _ = writeln!(
            o,
            "  hint:      the database was not modified; restore a verified backup (`warden restore`) or salvage what can be saved (`warden salvage`)"
        );
    }
    o
}

// ---------------------------------------------------------------------------------------------
// warden status
// ---------------------------------------------------------------------------------------------

/// `warden status`: the health of a guarded database, as an exit code.
#[derive(Debug, ClapArgs)]
#[command(after_help = "\
Reads only; never waits for or takes the writer lock. A running session (or restore) is
healthy.

Exit codes (several problems: the most severe, in this order: 11 13 14 12 15 10 16):
  0   healthy
  11  the most recent integrity gate failed, the database is missing or empty, or a
      restore was interrupted
  13  the writer lock was never released by its last holder: an engine died
  14  the database or backup directory is not on local storage, or SQLite < 3.51.3
  12  the last session ended badly (engine failed, abandoned, no post-session backup,
      engine not started, refused)
  15  free space below the floor (room for the next backup, or --min-free-bytes)
  10  no good backup, or the newest is older than --max-backup-age
  16  the last restore drill failed
JSON lists every problem; see the README for the textfile's series.")]
pub struct StatusArgs {
    #[command(flatten)]
    settings: SettingsArgs,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Also write a Prometheus textfile (node_exporter) here, atomically.
    #[arg(long, value_name = "FILE")]
    prom: Option<PathBuf>,
    /// The newest good backup may be at most this old.
    #[arg(long, value_name = "DURATION", default_value = "26h")]
    max_backup_age: String,
    /// Free-space floor in bytes for the database's and the backup directory (never below
    /// what the next backup needs).
    #[arg(long, value_name = "BYTES")]
    min_free_bytes: Option<u64>,
}

/// `warden status`.
pub fn status(args: StatusArgs) -> Result<ExitCode, CliError> {
    let settings = args.settings.resolve(Vec::new())?;
    let mut opts = StatusOptions::from_settings(&settings);
    opts.max_backup_age = parse_duration("--max-backup-age", &args.max_backup_age)?.unwrap_or(Duration::MAX);
    opts.min_free_bytes = args.min_free_bytes;
    let report = status::collect(&opts);
    if args.json {
        emit(&json_line(&report))?;
    } else {
        emit(&render_status(&report))?;
    }
    if let Some(p) = &args.prom {
        status::write_prometheus(&report, p).map_err(|source| CliError::Io {
            context: format!("writing the Prometheus textfile `{}`", p.display()),
            source,
        })?;
    }
    Ok(ExitCode::from(report.exit_code))
}

fn backup_line(b: &BackupInfo) -> String {
    format!(
        "{} ({}), {} old, {}, sha256 {}…",
        b.id,
        b.kind,
        b.age_seconds.map_or_else(|| "?".into(), status::human_age),
        human_bytes(b.size),
        short_hash(&b.sha256)
    )
}

fn render_status(r: &StatusReport) -> String {
    let mut o = String::new();
    let head = if r.healthy { "HEALTHY".to_owned() } else { format!("UNHEALTHY (exit {})", r.exit_code) };
    let _ = writeln!(o, "{}: {head}", r.db.display());
    let _ = writeln!(o, "  summary:      {}", r.summary);
    let d = &r.database;
    let db = match d.size {
        Some(s) => {
            let mut t = human_bytes(s);
            if let Some(w) = d.wal_bytes {
                t.push_str(&format!(", -wal {}", human_bytes(w)));
            }
            if let Some(j) = d.journal_bytes {
                t.push_str(&format!(", -journal {}", human_bytes(j)));
            }
            t
        }
        None => "missing".into(),
    };
    let _ = writeln!(o, "  database:     {db}");
    let storage = match (&r.storage.database, &r.storage.backup_dir) {
        (Some(a), Some(b)) => format!("{} ({}); backups {} ({})", a.kind, a.describe(), b.kind, b.describe()),
        _ => format!("unknown: {}", r.storage.error.as_deref().unwrap_or("?")),
    };
    let _ = writeln!(o, "  storage:      {storage}");
    let l = &r.writer_lock;
    let holder = l.holder.as_ref().map(|h| h.describe()).unwrap_or_else(|| "unknown".into());
    let session = l.session.as_deref().map(|s| format!(", session {s}")).unwrap_or_default();
    let lock = match l.state {
        Some(LockState::Held) => format!("held by {holder}{session}"),
        Some(LockState::Free) => "free".into(),
        Some(LockState::FreeAfterCrash) => format!("free, but its last holder DIED without releasing it ({holder})"),
        Some(LockState::NeverUsed) => "never used (no guarded engine has opened this database)".into(),
        None => format!("unknown: {}", l.error.as_deref().unwrap_or("?")),
    };
    let _ = writeln!(o, "  writer lock:  {lock}");
    match &r.last_session {
        Some(s) => {
            let mut t = format!("{} {}", s.id, snake(&s.status));
            if let Some(st) = s.failed_step {
                t.push_str(&format!(" at {}", snake(&st)));
            }
            match (s.engine_exit_code, s.engine_signal) {
                (Some(c), _) => t.push_str(&format!(", engine exit {c}")),
                (None, Some(sig)) => t.push_str(&format!(", engine killed by signal {sig}")),
                _ => {}
            }
            match &s.finished_at {
                Some(f) => t.push_str(&format!(", ended {}", short_ts(f))),
                None => t.push_str(&format!(", started {}", short_ts(&s.started_at))),
            }
            let _ = writeln!(o, "  last session: {t}");
        }
        None => {
            let _ = writeln!(o, "  last session: none recorded");
        }
    }
    if let Some(g) = &r.last_gate {
        let _ = writeln!(o, "  last gate:    {} (session {}, {})", g.summary, g.session_id, snake(&g.mode));
    }
    let b = &r.backups;
    match (&b.newest_good, &b.error) {
        (_, Some(e)) => {
            let _ = writeln!(o, "  backups:      unreadable: {e}");
        }
        (Some(n), None) => {
            let _ = writeln!(o, "  backups:      {} good of {}; newest good {}", b.good, b.total, backup_line(n));
        }
        (None, None) => {
            let _ = writeln!(o, "  backups:      no good backup ({} published)", b.total);
        }
    }
    match &r.drill {
        Some(dr) => {
            let verdict = match (dr.ok, &dr.error) {
                (_, Some(e)) => format!("unreadable: {e}"),
                (Some(true), None) => "passed".into(),
                (Some(false), None) => "FAILED".into(),
                (None, None) => "outcome not recorded".into(),
            };
            let when = dr.age_seconds.map(|a| format!(", {} ago", status::human_age(a))).unwrap_or_default();
            let of = dr.backup_id.as_deref().map(|i| format!(" ({i})")).unwrap_or_default();
            let _ = writeln!(o, "  drill:        {verdict}{of}{when}");
        }
        None => {
            let _ = writeln!(o, "  drill:        none recorded");
        }
    }
    if let Some(rs) = &r.restore {
        let state = if rs.running { "running" } else { "INTERRUPTED" };
        let of = rs.backup_id.as_deref().map(|i| format!(" of {i}")).unwrap_or_default();
        let since = rs.started.as_deref().map(|t| format!(", started {}", short_ts(t))).unwrap_or_default();
        let _ = writeln!(o, "  restore:      {state}{of}{since}");
    }
    let free = |s: &status::DirSpace| s.free_bytes.map_or_else(|| "?".into(), human_bytes);
    let _ = writeln!(
        o,
        "  disk:         {} free by the database, {} by the backups; floor {} (database {})",
        free(&r.disk.database_dir),
        free(&r.disk.backup_dir),
        human_bytes(r.disk.required_free_bytes),
        human_bytes(r.disk.db_bytes)
    );
    let ok = if r.sqlite.ok { "ok" } else { "TOO OLD" };
    let _ = writeln!(o, "  sqlite:       {} (floor {}): {ok}", r.sqlite.version, r.sqlite.floor);
    if !r.problems.is_empty() {
        let _ = writeln!(o, "problems (most severe first):");
        for p in &r.problems {
            let mut lines = p.message.lines();
            let _ = writeln!(o, "  {} {}: {}", p.code, p.kind.as_str(), lines.next().unwrap_or_default());
            for more in lines {
                let _ = writeln!(o, "       {more}");
            }
        }
    }
    o
}

// ---------------------------------------------------------------------------------------------
// warden sessions
// ---------------------------------------------------------------------------------------------

/// `warden sessions`: the health artifacts, newest first; `show <id>` prints one; `export`
/// collects them with the newest snapshot for analysis elsewhere.
#[derive(Debug, ClapArgs)]
#[command(
    args_conflicts_with_subcommands = true,
    after_help = "\
Exit codes: 0 ok; 64 an id prefix that matches several sessions; 66 no such session.
export: 65 the snapshot changed since it was published; 73 the directory exists; 74 I/O."
)]
pub struct SessionsArgs {
    #[command(subcommand)]
    cmd: Option<SessionsCmd>,
    #[command(flatten)]
    settings: SettingsArgs,
    /// Print JSON: an array of session summaries, newest first.
    #[arg(long)]
    json: bool,
    /// Only the N newest.
    #[arg(short = 'n', long = "limit", value_name = "N")]
    limit: Option<usize>,
}

#[derive(Debug, Subcommand)]
enum SessionsCmd {
    /// Prints one session artifact, by id or unique id prefix.
    Show {
        /// The session id (or a prefix that matches only one).
        id: String,
        #[command(flatten)]
        settings: SettingsArgs,
        /// Print the artifact itself, as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Collects the artifacts and the newest snapshot (`latest.sqlite`) into a new
    /// directory, atomically, with a MANIFEST.json of hashes: for analysis elsewhere.
    Export {
        #[command(flatten)]
        settings: SettingsArgs,
        /// The directory to create; it must not exist.
        #[arg(long, value_name = "DIR")]
        to: PathBuf,
        /// Take a fresh snapshot first (through the tooling role; safe while the engine runs).
        #[arg(long)]
        snapshot: bool,
        /// Print one JSON document (the report) instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// `warden sessions`.
pub fn sessions(args: SessionsArgs) -> Result<ExitCode, CliError> {
    if let Some(SessionsCmd::Export { settings, to, snapshot, json }) = args.cmd {
        return super::migrate::sessions_export(settings, to, snapshot, json);
    }
    if let Some(SessionsCmd::Show { id, settings, json }) = args.cmd {
        let settings = settings.resolve(Vec::new())?;
        let (path, a) = status::find_session(&settings.session_dir, &id).map_err(lookup_error)?;
        emit(&if json { json_line(&a) } else { render_artifact(&path, &a) })?;
        return Ok(ExitCode::SUCCESS);
    }
    let settings = args.settings.resolve(Vec::new())?;
    let mut all = status::list_sessions(&settings.session_dir).map_err(lookup_error)?;
    if let Some(n) = args.limit {
        all.truncate(n);
    }
    if args.json {
        let rows: Vec<_> = all.iter().map(|(p, a)| session_summary(p, a)).collect();
        emit(&json_line(&rows))?;
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

// ---------------------------------------------------------------------------------------------
// warden backups
// ---------------------------------------------------------------------------------------------

/// `warden backups`: list the published backups; `verify` re-hashes and re-checks them.
#[derive(Debug, ClapArgs)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BackupsArgs {
    #[command(subcommand)]
    cmd: Option<BackupsCmd>,
    #[command(flatten)]
    settings: SettingsArgs,
    /// Print JSON: an array of backups, newest first.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum BackupsCmd {
    /// Re-verifies backups without touching them: size and SHA-256 against the manifest,
    /// and the check, on a private copy. Default: the newest good backup.
    #[command(after_help = "\
Exit codes: 0 every backup verified; 65 any failed (named in the output); 66 no backup or no
such id; 64 an id prefix that matches several backups; 74 I/O error or no room for the copy.")]
    Verify {
        /// The backup id (or a prefix that matches only one).
        #[arg(conflicts_with = "all")]
        id: Option<String>,
        /// Every published backup (crash copies only need to match their hash).
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        settings: SettingsArgs,
        /// Where the private copies go (default: $TMPDIR or /tmp).
        #[arg(long, value_name = "DIR")]
        scratch_dir: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `warden backups`.
pub fn backups(args: BackupsArgs) -> Result<ExitCode, CliError> {
    if let Some(BackupsCmd::Verify { id, all, settings, scratch_dir, json }) = args.cmd {
        return verify_cmd(id, all, settings, scratch_dir, json);
    }
    let settings = args.settings.resolve(Vec::new())?;
    let store = BackupStore::new(&settings.backup_dir, &settings.database);
    let now = jiff::Timestamp::now();
    let list: Vec<BackupInfo> = store.list()?.iter().map(|r| BackupInfo::of(r, now)).collect();
    if args.json {
        emit(&json_line(&list))?;
        return Ok(ExitCode::SUCCESS);
    }
    if list.is_empty() {
        emit(&format!("no backups in {}\n", settings.backup_dir.display()))?;
        return Ok(ExitCode::SUCCESS);
    }
    let width = list.iter().map(|b| b.id.len()).max().unwrap_or(2).max(2);
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{:<width$}  {:<10} {:<20} {:>9} {:>10}  {:<8} {:<4}  {:<13} SESSION",
        "ID", "KIND", "CREATED", "AGE", "SIZE", "VERIFIED", "GOOD", "SHA256"
    );
    for b in &list {
        let _ = writeln!(
            o,
            "{:<width$}  {:<10} {:<20} {:>9} {:>10}  {:<8} {:<4}  {:<13} {}",
            b.id,
            b.kind.as_str(),
            short_ts(&b.created),
            b.age_seconds.map_or_else(|| "?".into(), status::human_age),
            human_bytes(b.size),
            if b.verified { "yes" } else { "NO" },
            if b.good { "yes" } else { "no" },
            format!("{}…", short_hash(&b.sha256)),
            b.session_id.as_deref().unwrap_or("-")
        );
    }
    let good = list.iter().filter(|b| b.good).count();
    let total: u64 = list.iter().map(|b| b.size).sum();
    let _ = writeln!(o, "{} backups ({} good), {}", list.len(), good, human_bytes(total));
    emit(&o)?;
    Ok(ExitCode::SUCCESS)
}

fn verify_cmd(
    id: Option<String>,
    all: bool,
    settings: SettingsArgs,
    scratch_dir: Option<PathBuf>,
    json: bool,
) -> Result<ExitCode, CliError> {
    let settings = settings.resolve(Vec::new())?;
    let store = BackupStore::new(&settings.backup_dir, &settings.database);
    let which = match (id, all) {
        (Some(id), _) => BackupSelection::Id(id),
        (None, true) => BackupSelection::All,
        (None, false) => BackupSelection::NewestGood,
    };
    let opts = VerifyOptions { check: settings.check, budget: None, scratch_dir };
    let report = match status::verify_backups(&store, &which, &opts) {
        Ok(r) => r,
        Err(VerifyError::NoBackups { what, dir }) => {
            return Err(CliError::Failed { message: VerifyError::NoBackups { what, dir }.to_string(), code: 66 });
        }
        Err(VerifyError::Lookup(e)) => return Err(lookup_error(e)),
        Err(VerifyError::Backup(e)) => return Err(e.into()),
        Err(e) => return Err(CliError::Failed { message: e.to_string(), code: 70 }),
    };
    if json {
        emit(&json_line(&report))?;
    } else {
        let mut o = String::new();
        for r in &report.results {
            let tag = match r.outcome {
                VerifyOutcome::Ok => "ok    ",
                VerifyOutcome::Failed => "FAILED",
                VerifyOutcome::Gone => "gone  ",
            };
            let detail = match (&r.reason, &r.integrity) {
                (Some(why), _) => why.clone(),
                (None, Some(i)) => format!("sha256 ok, {}", i.summary()),
                (None, None) => String::new(),
            };
            let _ = writeln!(o, "{tag} {} ({}, {}): {detail}", r.id, r.kind, secs(r.duration_ms));
        }
        let n = report.results.len();
        if report.ok {
            let _ = writeln!(o, "{n} backup(s) verified");
        } else {
            let _ = writeln!(
                o,
                "{} of {n} backup(s) FAILED verification\n(hint: a failed backup cannot be trusted for a restore; `warden backup` takes a fresh one, retention removes old ones)",
                report.failed
            );
        }
        emit(&o)?;
    }
    Ok(ExitCode::from(if report.ok { 0 } else { 65 }))
}

// ---------------------------------------------------------------------------------------------
// warden audit
// ---------------------------------------------------------------------------------------------

/// `warden audit`: tails and filters the audit log.
#[derive(Debug, ClapArgs)]
#[command(after_help = "\
The log: --audit-dir, else `audit_dir` of warden.toml (--config, $WARDEN_CONFIG, ./warden.toml),
else $WARDEN_AUDIT_DIR, $XDG_STATE_HOME/sqlite-warden, ~/.local/state/sqlite-warden,
/var/lib/sqlite-warden. A partial last line is not shown until it is complete. --follow keeps
reading (also across logrotate renames and truncation) until SIGINT or SIGTERM (exit 0).
Exit codes: 0 ok; 64 a bad filter; 74 the log cannot be read; 78 a bad config file.")]
pub struct AuditArgs {
    /// Config file naming the audit directory.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The audit log directory.
    #[arg(long, value_name = "DIR")]
    audit_dir: Option<PathBuf>,
    /// Print the matching records as they are in the log (JSON lines).
    #[arg(long)]
    json: bool,
    /// Show the last N matching records (0: none, e.g. with --follow).
    #[arg(short = 'n', long = "lines", value_name = "N", default_value_t = 50)]
    lines: usize,
    /// Keep printing new records as they are written.
    #[arg(short = 'f', long)]
    follow: bool,
    /// Only this event (`open`, `open_refused`, `writer_lock_busy`, ...); repeat for several.
    #[arg(long = "event", value_name = "EVENT")]
    events: Vec<String>,
    /// Only records about this database (its -wal and -journal included).
    #[arg(long, value_name = "PATH")]
    db: Option<PathBuf>,
    /// Only records since an RFC 3339 time or for a duration back from now (`15m`, `2h`).
    #[arg(long, value_name = "TIME|DURATION")]
    since: Option<String>,
    /// Only records of this process id.
    #[arg(long, value_name = "PID")]
    pid: Option<u32>,
}

fn audit_dir(args: &AuditArgs) -> Result<PathBuf, CliError> {
    if let Some(d) = &args.audit_dir {
        return Ok(d.clone());
    }
    if let Some(file) = sqlite_warden::ops::config::discover(args.config.as_deref()) {
        let fc = sqlite_warden::ops::config::load(&file)?;
        if let Some(d) = fc.audit_dir {
            let base = file.parent().map(std::path::Path::to_owned).unwrap_or_default();
            return Ok(if d.is_absolute() || base.as_os_str().is_empty() { d } else { base.join(d) });
        }
    }
    Ok(AuditLog::default_dir())
}

fn audit_filter(args: &AuditArgs) -> Result<AuditFilter, CliError> {
    let mut events = Vec::new();
    for e in &args.events {
        let ev: AuditEvent = serde_json::from_value(serde_json::Value::String(e.clone()))
            .map_err(|err| CliError::Usage(format!("--event: {err}")))?;
        events.push(ev);
    }
    let since = match &args.since {
        Some(s) => {
            Some(status::parse_since(s, jiff::Timestamp::now()).map_err(|e| CliError::Usage(format!("--since {e}")))?)
        }
        None => None,
    };
    let db = match &args.db {
        Some(p) => Some(
            std::path::absolute(p)
                .map_err(|source| CliError::Io { context: format!("resolving `{}`", p.display()), source })?,
        ),
        None => None,
    };
    Ok(AuditFilter { events, db, since, pid: args.pid })
}

fn audit_line(l: &AuditLine, json: bool) -> String {
    if json {
        return format!("{}\n", l.raw);
    }
    let r = &l.record;
    let exe = r.process.exe.as_deref().map(|e| e.rsplit('/').next().unwrap_or(e)).unwrap_or("-");
    let role = r.role.map_or_else(|| "-".into(), |x| x.to_string());
    let db = r.db.as_ref().map_or_else(|| "-".into(), |p| p.display().to_string());
    let mut s = format!("{} {:<22} {:<6} pid {:<7} {:<18} {db}", r.ts, snake(&r.event), role, r.process.pid, exe);
    if let Some(d) = &r.decision {
        s.push_str(&format!(" [{d}]"));
    }
    if let Some(why) = &r.reason {
        s.push_str(&format!(" {}", why.replace('\n', " ")));
    }
    if let Some(h) = &r.lock_holder {
        s.push_str(&format!(" (holder {})", h.describe()));
    }
    s.push('\n');
    s
}

/// `warden audit`.
pub fn audit(args: AuditArgs) -> Result<ExitCode, CliError> {
    let dir = audit_dir(&args)?;
    let filter = audit_filter(&args)?;
    let path = dir.join(sqlite_warden::guard::audit::AUDIT_FILE);
    let read_err = |source| CliError::Io { context: format!("reading the audit log `{}`", path.display()), source };
    let (last, mut reader) = status::tail_audit(&path, &filter, args.lines).map_err(read_err)?;
    let mut text = String::new();
    for l in &last {
        text.push_str(&audit_line(l, args.json));
    }
    emit(&text)?;
    if !args.follow {
        if reader.skipped() > 0 {
            eprintln!(
                "warden: {} line(s) of {} are not audit records and were skipped",
                reader.skipped(),
                path.display()
            );
        }
        if last.is_empty() && !args.json && !path.exists() {
            eprintln!("warden: no audit log at {} yet", path.display());
        }
        return Ok(ExitCode::SUCCESS);
    }
    let stop = cancel_on_signals()?;
    let broken = AtomicBool::new(false);
    while !stop.load(Ordering::Relaxed) && !broken.load(Ordering::Relaxed) {
        let mut text = String::new();
        reader
            .poll(&mut |l| {
                if filter.matches(&l.record) {
                    text.push_str(&audit_line(&l, args.json));
                }
            })
            .map_err(read_err)?;
        if !text.is_empty() {
            let mut out = io::stdout().lock();
            if out.write_all(text.as_bytes()).and_then(|()| out.flush()).is_err() {
                broken.store(true, Ordering::Relaxed);
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(ExitCode::SUCCESS)
}

//! `warden status`: the health of a guarded database ([`sqlite_warden::ops::status`]) as a
//! report (text, or `--json`), an exit code and optionally a Prometheus textfile.
//! Does not own: collecting the health.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args as ClapArgs;
use sqlite_warden::guard::lock::LockState;
use sqlite_warden::ops::status::{self, BackupInfo, StatusOptions, StatusReport};

use super::CliError;
use super::render::{human_bytes, short_hash};
use super::settings::{BackupDirArgs, DbArgs, SessionDirArgs};
use super::shared::{emit, json_line, parse_duration, short_ts, snake};

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
      engine not started, refused), or its supervisor died: the artifact says running
      but `warden run` is gone (its engine may still run, unsupervised)
  15  free space below the floor (room for the next backup, or --min-free-bytes)
  10  no good backup, or the newest is older than --max-backup-age
  16  the last restore drill failed
  18  a good restore point has been local-only longer than [offsite] max_lag
JSON lists every problem; see the README for the textfile's series.

Examples:
  warden status --db /var/lib/engine/engine.db
  warden status --config /etc/warden/warden.toml --prom")]
pub struct StatusArgs {
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Also write a Prometheus textfile for node_exporter, atomically: to FILE, or into a
    /// directory as `warden-<db file name>.prom`; `--prom` alone uses Debian's and Ubuntu's
    /// textfile directory, /var/lib/prometheus/node-exporter.
    #[arg(long, value_name = "FILE|DIR", num_args = 0..=1, default_missing_value = status::prometheus::DEFAULT_DIR)]
    prom: Option<PathBuf>,
    /// The newest good backup may be at most this old.
    #[arg(long, value_name = "DURATION", default_value = "26h")]
    max_backup_age: String,
    /// Free-space floor in bytes for the database's and the backup directory (never below
    /// what the next backup needs).
    #[arg(long, value_name = "BYTES")]
    min_free_bytes: Option<u64>,
    #[command(flatten)]
    db: DbArgs,
    #[command(flatten)]
    backup_dir: BackupDirArgs,
    #[command(flatten)]
    session_dir: SessionDirArgs,
}

/// `warden status`.
pub fn status(args: StatusArgs) -> Result<ExitCode, CliError> {
    let settings = args.db.settings().with(args.backup_dir).with(args.session_dir).resolve()?;
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
        let p = if p.is_dir() || p.as_os_str() == status::prometheus::DEFAULT_DIR {
            status::prometheus::textfile_in(p, &report.db)
        } else {
            p.clone()
        };
        status::write_prometheus(&report, &p).map_err(|source| CliError::Io {
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
            if let Some(gone) = &s.supervisor_gone {
                t.push_str(&format!(", but its supervisor (pid {}) is GONE: {gone}", s.supervisor_pid));
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
    if let Some(of) = &r.offsite {
        let last = match (of.last_push_ok, &of.last_error) {
            (None, _) => "never pushed".to_owned(),
            (Some(true), _) => format!("last push ok {}", of.last_push_at.as_deref().map(short_ts).unwrap_or_default()),
            (Some(false), e) => format!("last push FAILED: {}", e.as_deref().unwrap_or("?")),
        };
        let lag = if of.lag_seconds == 0 {
            "up to date".to_owned()
        } else {
            format!("lag {}", status::human_age(i64::try_from(of.lag_seconds).unwrap_or(i64::MAX)))
        };
        let _ = writeln!(o, "  offsite:      {lag}; {last}");
    }
    if let Some(lr) = &r.last_restore {
        let _ = writeln!(o, "  restored:     {} ({}), {}", lr.backup.id, lr.backup.kind, short_ts(&lr.finished_at));
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

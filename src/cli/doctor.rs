//! `warden doctor`: one call to [`sqlite_warden::ops::doctor::run`], rendered as text or as one
//! JSON document, and its exit code (0 pass, 10 warn, 11 fail).
//!
//! Owns: the flags and the rendering. Does not own: any check or verdict (see
//! [`sqlite_warden::ops::doctor`]).

use std::fmt::Write as _;
use std::process::ExitCode;

use sqlite_warden::ops::doctor::{self, DoctorOptions, DoctorReport, Verdict};
use sqlite_warden::util::exit;

use super::CliError;
use super::render::human_bytes;
use super::settings::{BackupDirArgs, DbArgs, SessionDirArgs};

/// `warden doctor`: host readiness for a database path.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Checks (stable ids): storage, free_space, fsync, device, permissions, sqlite, journal,
clock, foreign_openers. Each has a verdict (pass/warn/fail), the measured facts and one fix.
Doctor changes nothing: it writes only a temporary fsync file beside the database (removed),
never opens the database through SQLite and never takes the writer lock. Run it as the
engine's user, or as root to see every process for foreign_openers.

Exit codes:
  0   every check passed
  10  warnings only
  11  at least one check failed
  64/78  usage or configuration error (no --db, bad warden.toml)
--json prints one document: {verdict, exit_code, summary, checks: [{id, title, verdict,
detail, fix, data}], ...}.

Examples:
  warden doctor --db /var/lib/engine/engine.db
  warden doctor --config /etc/warden/warden.toml --json")]
pub struct DoctorArgs {
    /// Print the report as one JSON document.
    #[arg(long)]
    json: bool,
    /// Timed fsyncs in the database's directory.
    #[arg(long, value_name = "N", default_value_t = 5)]
    fsync_samples: u32,
    /// Warn when free space is below this many times the database (+ -wal + -journal).
    #[arg(long, value_name = "FACTOR", default_value_t = 3.0)]
    min_free_factor: f64,
    /// Do not ask `timedatectl` whether NTP is synchronized.
    #[arg(long)]
    no_ntp: bool,
    #[command(flatten)]
    db: DbArgs,
    #[command(flatten)]
    backup_dir: BackupDirArgs,
    #[command(flatten)]
    session_dir: SessionDirArgs,
}

/// `warden doctor`.
pub fn run(args: DoctorArgs) -> Result<ExitCode, CliError> {
    if !(args.min_free_factor.is_finite() && args.min_free_factor > 0.0) {
        return Err(CliError::Failed {
            message: format!("--min-free-factor must be a positive number, not {}", args.min_free_factor),
            code: exit::USAGE,
        });
    }
    let settings = args.db.settings().with(args.backup_dir).with(args.session_dir).resolve()?;
    let mut opts = DoctorOptions::from_settings(&settings);
    opts.fsync_samples = args.fsync_samples.max(1);
    opts.min_free_factor = args.min_free_factor;
    opts.ntp = !args.no_ntp;
    let report = doctor::run(&opts);
    let text = if args.json {
        super::shared::json_line(&report)
    } else {
        render(&report)
    };
    super::shared::emit(&text)?;
    Ok(ExitCode::from(report.exit_code))
}

fn tag(v: Verdict) -> &'static str {
    match v {
        Verdict::Pass => "PASS",
        Verdict::Warn => "WARN",
        Verdict::Fail => "FAIL",
    }
}

fn render(r: &DoctorReport) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "{}: {} (exit {}): {}", r.db.display(), tag(r.verdict), r.exit_code, r.summary);
    let size = r.database_bytes.map_or_else(|| "does not exist yet".to_owned(), human_bytes);
    let _ = writeln!(o, "  database {size}; backups in {}", r.backup_dir.display());
    for c in &r.checks {
        let _ = writeln!(o, "\n{} {:<16} {}", tag(c.verdict), c.id, c.title);
        for part in c.detail.split("; ").filter(|p| !p.is_empty()) {
            let _ = writeln!(o, "     {part}");
        }
        if !c.fix.is_empty() {
            let _ = writeln!(o, "     fix: {}", c.fix);
        }
    }
    o
}

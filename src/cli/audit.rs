//! `warden audit`: tails, filters and follows the audit log; with `--json` its own JSON lines,
//! unchanged. Does not own: reading and filtering the log ([`sqlite_warden::ops::status`]).

use std::io::{self, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Args as ClapArgs;
use sqlite_warden::guard::audit::{AuditEvent, AuditLog};
use sqlite_warden::ops::status::{self, AuditFilter, AuditLine};

use super::CliError;
use super::shared::{cancel_on_signals, emit, snake};

/// `warden audit`: tails and filters the audit log.
#[derive(Debug, ClapArgs)]
#[command(after_help = "\
The log: --audit-dir, else `audit_dir` of warden.toml (--config, $WARDEN_CONFIG, ./warden.toml),
else $WARDEN_AUDIT_DIR, $XDG_STATE_HOME/sqlite-warden, ~/.local/state/sqlite-warden,
/var/lib/sqlite-warden. A partial last line is not shown until it is complete. --follow keeps
reading (also across logrotate renames and truncation) until SIGINT or SIGTERM (exit 0).
Exit codes: 0 ok; 64 a bad filter; 74 the log cannot be read; 78 a bad config file.

Examples:
  warden audit --event open_refused --since 2h
  warden audit --config /etc/warden/warden.toml -n 0 -f --json")]
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
            sqlite_warden::storage::resolve(p)
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
            note!("warden: {} line(s) of {} are not audit records and were skipped", reader.skipped(), path.display());
        }
        if last.is_empty() && !args.json && !path.exists() {
            note!("warden: no audit log at {} yet", path.display());
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

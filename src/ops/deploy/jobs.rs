//! The periodic jobs: the check, drill, prune and status oneshot services and their timers.
//! Does not own: the engine unit or the sandbox they share ([`super::units`]).

use std::fmt::Write as _;

use super::options::DeployOptions;
use super::syntax::{exec_line, list, text};
use super::units::{header, service_common, unit_section};
use crate::util::exit;

/// `warden status` problem codes (10-18): reported through the textfile, not as unit failures.
pub const STATUS_PROBLEM_EXIT_STATUS: [u8; 9] = [
    exit::STATUS_BACKUP,
    exit::STATUS_DATABASE,
    exit::STATUS_SESSION,
    exit::STATUS_WRITER_DIED,
    exit::STATUS_STORAGE,
    exit::STATUS_DISK,
    exit::STATUS_DRILL,
    exit::FOREIGN_WRITER,
    exit::STATUS_OFFSITE,
];

/// A periodic job: a oneshot service and its timer.
pub(super) struct Job {
    pub(super) suffix: &'static str,
    pub(super) what: &'static str,
}

pub(super) const JOBS: [Job; 4] = [
    Job { suffix: "check", what: "nightly full integrity check" },
    Job { suffix: "drill", what: "nightly restore drill" },
    Job { suffix: "prune", what: "nightly retention of backups" },
    Job { suffix: "status", what: "health status and Prometheus textfile" },
];

impl DeployOptions {
    /// The names of the four timers.
    pub fn timer_names(&self) -> Vec<String> {
        JOBS.iter().map(|j| format!("{}-{}.timer", self.unit, j.suffix)).collect()
    }
}

pub(super) fn job_service(opts: &DeployOptions, job: &Job) -> String {
    let name = format!("{}-{}.service", opts.unit, job.suffix);
    let mut o = String::new();
    header(&mut o, &name, opts);
    let warden = opts.warden.to_string_lossy().into_owned();
    let config = opts.config.to_string_lossy().into_owned();
    let db_dir = opts.db_dir().to_string_lossy().into_owned();
    let s = |v: &str| v.to_owned();
    let (comment, args, timeout): (&str, Vec<String>, &str) = match job.suffix {
        "check" => (
            "# `warden check` reads through SQLite's locking, so it is safe while the engine runs; it takes
# the writer lock only when no engine runs (a session starting meanwhile exits 75 and is
# restarted). The private copy goes to a scratch directory in the database's directory.",
            vec![
                warden,
                s("check"),
                s("--check"),
                s("full"),
                s("--scratch-dir"),
                db_dir,
                opts.database.to_string_lossy().into_owned(),
            ],
            "",
        ),
        "drill" => (
            "# Restores the newest good backup into a scratch directory beside the database, checks it
# in full (--recheck: even when its hash proves it is content that passed a check before),
# removes it; never touches the live database. `warden status` reads the result (exit 16).",
            vec![warden, s("drill"), s("--recheck"), s("--config"), config, s("--scratch"), db_dir],
            "",
        ),
        "prune" => (
            "# Retention (also applied after every session); keeps the newest good backup always.",
            vec![warden, s("prune"), s("--config"), config],
            "",
        ),
        _ => (
            "# Exit codes 10-18 are health problems, not failures of this job: they are in the
# textfile (`warden_healthy`) and should alert from there, so they count as success here.
# UMask 0022: node_exporter must be able to read the textfile.",
            {
                let mut a = vec![warden, s("status"), s("--config"), config];
                if let Some(p) = opts.prom_file() {
                    a.push(s("--prom"));
                    a.push(p.to_string_lossy().into_owned());
                }
                a
            },
            "TimeoutStartSec=4min\n",
        ),
    };
    unit_section(&mut o, opts, &format!("{}: {} (sqlite-warden)", opts.unit, job.what));
    let _ = writeln!(o, "\n[Service]\nType=oneshot\n{comment}");
    let _ = writeln!(o, "ExecStart={}", exec_line(&args));
    o.push_str(timeout);
    let umask = if job.suffix == "status" {
        let _ = writeln!(o, "SuccessExitStatus={}", list(&STATUS_PROBLEM_EXIT_STATUS));
        "0022"
    } else {
        "0077"
    };
    o.push_str("Nice=10\nIOSchedulingClass=idle\n");
    let extra = if job.suffix == "status" { opts.prom_dir.as_deref() } else { None };
    service_common(&mut o, opts, &format!("{}-{}", opts.unit, job.suffix), umask, extra);
    o
}

pub(super) fn job_timer(opts: &DeployOptions, job: &Job) -> String {
    let name = format!("{}-{}.timer", opts.unit, job.suffix);
    let mut o = String::new();
    header(&mut o, &name, opts);
    let (at, delay) = match job.suffix {
        "check" => (&opts.check_at, "10min"),
        "drill" => (&opts.drill_at, "10min"),
        "prune" => (&opts.prune_at, "10min"),
        _ => (&opts.status_at, "30s"),
    };
    let _ = writeln!(o, "[Unit]\nDescription={}", text(&format!("{}: {} (timer)", opts.unit, job.what)));
    o.push_str("\n[Timer]\n");
    let _ = writeln!(o, "OnCalendar={}", text(at));
    o.push_str("# Catch up a run missed while the machine was off.\nPersistent=true\n");
    let _ = writeln!(o, "RandomizedDelaySec={delay}");
    o.push_str("AccuracySec=1s\n\n[Install]\nWantedBy=timers.target\n");
    o
}

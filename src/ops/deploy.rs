//! Service files for a guarded engine: systemd units and timers, and a logrotate snippet.
//!
//! Owns: turning a resolved configuration ([`crate::ops::config::Settings`]) plus a few deployment
//! choices ([`DeployOptions`]) into the text of the files ([`render`], pure), and writing
//! them into a directory ([`write()`]: one atomic rename per file, identical files left alone,
//! different ones replaced only when asked). Does not own: installing them into
//! `/etc/systemd/system`, `systemctl`, or anything the rendered commands do.
//!
//! What is rendered for a unit named `engine` (the default):
//!
//! ```text
//! engine.service          the whole session through warden: `warden run --config FILE`
//!                         (Type=notify: READY=1 once the gate passed and the engine runs;
//!                         watchdog fed while it runs; KillMode=mixed so SIGTERM reaches warden
//!                         only, which forwards it and then takes the post-session backup)
//! engine-check.service    nightly `warden check --check full` (timer 03:30)
//! engine-drill.service    nightly restore drill `warden drill` (timer 04:30)
//! engine-prune.service    nightly retention `warden prune` (timer 05:30)
//! engine-status.service   `warden status --prom FILE` every 5 minutes; its problem codes
//!                         10-16 are SuccessExitStatus (the textfile carries them to alerting)
//! engine-*.timer          Persistent=true, RandomizedDelaySec
//! warden-engine           logrotate: the audit log (rename, no copytruncate: warden reopens
//!                         it per record, so no line is lost) and the engine's own file logs
//! ```
//!
//! Quoting: every path and argument is written so systemd reads it back exactly: words with
//! white space are double-quoted, `%` is doubled (specifiers), `$` is doubled on `Exec*=`
//! lines (environment expansion). Paths must be absolute, normalised (no `.` or `..`), UTF-8
//! and free of control characters, `"` and `\` (logrotate has no escape for those); the
//! audit and log directories must not contain glob characters (logrotate globs them).
//! Nothing may live under `/tmp` or `/var/tmp`, which `PrivateTmp=yes` hides from the units.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use crate::ops::config::Settings;

/// Exit statuses of `warden run` that must never restart the unit: 65 gate failed,
/// 66 database missing, 69 storage refused, 70 SQLite too old / internal, 78 configuration.
pub const RESTART_PREVENT_EXIT_STATUS: [u8; 5] = [65, 66, 69, 70, 78];

/// Exit statuses of `warden run` that mean "stopped on request": 130 (SIGINT) and 143
/// (SIGTERM: `systemctl stop`, when the engine dies of the forwarded signal).
pub const RUN_SUCCESS_EXIT_STATUS: [u8; 2] = [130, 143];

/// `warden status` problem codes (10-16): reported through the textfile, not as unit failures.
pub const STATUS_PROBLEM_EXIT_STATUS: [u8; 7] = [10, 11, 12, 13, 14, 15, 16];

/// The default node_exporter textfile collector directory.
pub const DEFAULT_PROM_DIR: &str = "/var/lib/node_exporter/textfile_collector";

/// Default `OnCalendar=` of the nightly full integrity check.
pub const DEFAULT_CHECK_AT: &str = "*-*-* 03:30:00";
/// Default `OnCalendar=` of the nightly restore drill.
pub const DEFAULT_DRILL_AT: &str = "*-*-* 04:30:00";
/// Default `OnCalendar=` of the nightly retention run.
pub const DEFAULT_PRUNE_AT: &str = "*-*-* 05:30:00";
/// Default `OnCalendar=` of the status textfile (every 5 minutes).
pub const DEFAULT_STATUS_AT: &str = "*:0/5";

/// Roots that `PrivateTmp=yes` replaces with a private, empty directory.
const PRIVATE_TMP_ROOTS: [&str; 2] = ["/tmp", "/var/tmp"];
/// Roots that `ProtectHome=yes` hides; a path below one relaxes it to `read-only`.
const HOME_ROOTS: [&str; 3] = ["/home", "/root", "/run/user"];

/// Everything the rendered files depend on.
#[derive(Debug, Clone)]
pub struct DeployOptions {
    /// The unit's base name: `engine` gives `engine.service`, `engine-check.timer`, ….
    pub unit: String,
    /// `User=` of every unit.
    pub user: String,
    /// `Group=` of every unit.
    pub group: String,
    /// The warden binary on the target (absolute).
    pub warden: PathBuf,
    /// The configuration file the units pass as `--config` (absolute).
    pub config: PathBuf,
    /// The database (absolute).
    pub database: PathBuf,
    /// Backups.
    pub backup_dir: PathBuf,
    /// Session health artifacts.
    pub session_dir: PathBuf,
    /// Analysis snapshots.
    pub snapshot_dir: PathBuf,
    /// The audit log directory; `None`: [`DeployOptions::log_dir`]. The units export it as
    /// `WARDEN_AUDIT_DIR`, so commands without settings (`warden check`) log there too.
    pub audit_dir: Option<PathBuf>,
    /// The engine's own file logs (`*.log`), if it writes any; `/var/log/<unit>` by default.
    /// Directly under `/var/log` it becomes `LogsDirectory=` (systemd creates it, owned by
    /// the unit's user); elsewhere an optional `ReadWritePaths=`.
    pub log_dir: PathBuf,
    /// More paths the engine may write (`ReadWritePaths=`; they must exist).
    pub read_write: Vec<PathBuf>,
    /// node_exporter's textfile directory for `warden status --prom`; `None`: no textfile.
    pub prom_dir: Option<PathBuf>,
    /// `WatchdogSec=` of the engine unit (warden pings every half of it while the engine
    /// runs); `None`: no watchdog.
    pub watchdog: Option<Duration>,
    /// `TimeoutStartSec=` of the engine unit (the gate and the pre-session backup run before
    /// READY=1); `None`: `infinity`.
    pub start_timeout: Option<Duration>,
    /// `TimeoutStopSec=`: the engine's shutdown plus the post-session backup and retention.
    pub stop_timeout: Duration,
    /// `MemoryDenyWriteExecute=yes`: off by default, since JITs (PyPy, the JVM, V8, LuaJIT)
    /// and CPython's ctypes/cffi callbacks need writable-executable memory.
    pub memory_deny_write_execute: bool,
    /// The engine command from the configuration (recorded in a comment; checked for
    /// `ProtectHome=`/`PrivateTmp=`).
    pub engine: Vec<String>,
    /// `OnCalendar=` of the full integrity check.
    pub check_at: String,
    /// `OnCalendar=` of the restore drill.
    pub drill_at: String,
    /// `OnCalendar=` of retention.
    pub prune_at: String,
    /// `OnCalendar=` of the status textfile.
    pub status_at: String,
}

/// One rendered file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedFile {
    /// The file name (no directory): `engine.service`, `warden-engine`, ….
    pub name: String,
    /// Its contents.
    pub contents: String,
}

/// What [`write()`] did with one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteAction {
    /// The file did not exist.
    Created,
    /// The file existed with identical contents: left alone.
    Unchanged,
    /// The file existed with other contents and `force` was given.
    Replaced,
}

/// One file [`write()`] handled.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Written {
    /// Where.
    pub path: PathBuf,
    /// What happened.
    pub action: WriteAction,
}

/// Why the files cannot be rendered or written.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// A path is relative.
    #[error("{what} `{}` is not an absolute path\n(hint: unit files need absolute paths; give the full path)", path.display())]
    RelativePath {
        /// Which setting.
        what: &'static str,
        /// The path.
        path: PathBuf,
    },
    /// A path cannot be written unambiguously into a unit or logrotate file.
    #[error("{what} `{}` cannot be written into a unit file: {reason}", path.display())]
    UnsafePath {
        /// Which setting.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// Why, with a hint.
        reason: String,
    },
    /// A path lies where `PrivateTmp=yes` hides it.
    #[error("{what} `{}` is under {root}, which the units cannot see (PrivateTmp=yes gives each a private, empty {root})\n(hint: use a persistent directory such as /var/lib/<unit>)", path.display())]
    PrivateTmp {
        /// Which setting.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// `/tmp` or `/var/tmp`.
        root: &'static str,
    },
    /// Any other unusable value.
    #[error("invalid {what} `{value}`: {reason}")]
    Invalid {
        /// Which setting.
        what: &'static str,
        /// The value.
        value: String,
        /// Why, with a hint.
        reason: String,
    },
    /// The configuration names no engine command.
    #[error(
        "the configuration has no engine command: `warden run --config` would exit 64 and restart forever\n(hint: add `[engine] command = [\"/usr/local/bin/engine\", \"--live\"]` to the config)"
    )]
    NoEngineCommand,
    /// A file exists with other contents.
    #[error("`{}` exists with different contents; nothing was written\n(hint: compare it with `warden deploy … --out` into an empty directory, then pass --force to replace it)", path.display())]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// Reading or writing failed.
    #[error("{action} `{}`: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// Where.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

impl DeployError {
    /// The process exit code: 64 bad options, 73 a file exists, 74 I/O, 78 configuration.
    pub fn exit_code(&self) -> u8 {
        match self {
            DeployError::RelativePath { .. }
            | DeployError::UnsafePath { .. }
            | DeployError::PrivateTmp { .. }
            | DeployError::Invalid { .. } => 64,
            DeployError::NoEngineCommand => 78,
            DeployError::Exists { .. } => 73,
            DeployError::Io { .. } => 74,
        }
    }
}

impl DeployOptions {
    /// Options for `settings` read from `config`, with the defaults: unit and user
    /// `engine`, warden in `/usr/local/bin`, logs in `/var/log/engine`, the textfile in
    /// [`DEFAULT_PROM_DIR`], a 30 s watchdog, a start timeout of the gate's budget plus
    /// 15 min (`infinity` without a budget), a 10 min stop timeout.
    ///
    /// # Errors
    /// [`DeployError::NoEngineCommand`] when the configuration names no engine.
    pub fn from_settings(settings: &Settings, config: &Path) -> Result<DeployOptions, DeployError> {
        if settings.command.is_empty() {
            return Err(DeployError::NoEngineCommand);
        }
        let unit = "engine".to_owned();
        Ok(DeployOptions {
            log_dir: Path::new("/var/log").join(&unit),
            unit,
            user: "engine".into(),
            group: "engine".into(),
            warden: "/usr/local/bin/warden".into(),
            config: config.to_owned(),
            database: settings.database.clone(),
            backup_dir: settings.backup_dir.clone(),
            session_dir: settings.session_dir.clone(),
            snapshot_dir: settings.snapshot_dir.clone(),
            audit_dir: settings.audit_dir.clone(),
            read_write: Vec::new(),
            prom_dir: Some(DEFAULT_PROM_DIR.into()),
            watchdog: Some(Duration::from_secs(30)),
            start_timeout: settings.budget.map(|b| b + Duration::from_secs(15 * 60)),
            stop_timeout: Duration::from_secs(10 * 60),
            memory_deny_write_execute: false,
            engine: settings.command.iter().map(|a| a.to_string_lossy().into_owned()).collect(),
            check_at: DEFAULT_CHECK_AT.into(),
            drill_at: DEFAULT_DRILL_AT.into(),
            prune_at: DEFAULT_PRUNE_AT.into(),
            status_at: DEFAULT_STATUS_AT.into(),
        })
    }

    /// The audit log directory in effect.
    pub fn audit_dir(&self) -> &Path {
        self.audit_dir.as_deref().unwrap_or(&self.log_dir)
    }

    /// The directory holding the database (always writable: the database, its `-wal`,
    /// `-shm`, `-journal`, the writer lock, and by default `<db>.warden/`).
    pub fn db_dir(&self) -> &Path {
        crate::util::atomic::parent_of(&self.database)
    }

    /// The name of the engine unit: `<unit>.service`.
    pub fn service_name(&self) -> String {
        format!("{}.service", self.unit)
    }

    /// The names of the four timers.
    pub fn timer_names(&self) -> Vec<String> {
        JOBS.iter().map(|j| format!("{}-{}.timer", self.unit, j.suffix)).collect()
    }

    /// The name of the logrotate snippet (for `/etc/logrotate.d/`).
    pub fn logrotate_name(&self) -> String {
        format!("warden-{}", self.unit)
    }

    /// The textfile `warden status --prom` writes.
    pub fn prom_file(&self) -> Option<PathBuf> {
        self.prom_dir.as_ref().map(|d| d.join(format!("warden-{}.prom", self.unit)))
    }

    /// Whether the log directory is rendered as `LogsDirectory=` (directly under
    /// `/var/log`): systemd then creates it at start, owned by the unit's user.
    fn logs_directory(&self) -> Option<String> {
        let rel = self.log_dir.strip_prefix("/var/log").ok()?;
        (!rel.as_os_str().is_empty()).then(|| rel.to_string_lossy().into_owned())
    }

    /// `ReadWritePaths=` of every unit, in order: each entry and whether it must exist
    /// (`false`: `-`-prefixed, because a path above it is writable already or it is
    /// optional).
    pub fn read_write_paths(&self) -> Vec<(PathBuf, bool)> {
        let mut out: Vec<(PathBuf, bool)> = Vec::new();
        let mut covering: Vec<PathBuf> = vec![self.db_dir().to_owned()];
        if self.logs_directory().is_some() {
            covering.push(self.log_dir.clone());
        }
        out.push((self.db_dir().to_owned(), true));
        let mut push = |p: &Path, required: bool, out: &mut Vec<(PathBuf, bool)>| {
            if out.iter().any(|(q, _)| q == p) {
                return;
            }
            let covered = covering.iter().any(|c| p.starts_with(c));
            out.push((p.to_owned(), required && !covered));
            if required && !covered {
                covering.push(p.to_owned());
            }
        };
        for p in [&self.backup_dir, &self.session_dir, &self.snapshot_dir] {
            push(p, true, &mut out);
        }
        push(self.audit_dir(), true, &mut out);
        if self.logs_directory().is_none() {
            push(&self.log_dir, false, &mut out);
        }
        for p in &self.read_write {
            push(p, true, &mut out);
        }
        out
    }

    /// Directories the units need before their first start (`ReadWritePaths=` without `-`);
    /// a missing one fails the start with status 226/NAMESPACE.
    pub fn required_dirs(&self) -> Vec<PathBuf> {
        self.read_write_paths().into_iter().filter(|(_, req)| *req).map(|(p, _)| p).collect()
    }

    /// `RequiresMountsFor=`: every directory the data lives in.
    fn mounts(&self) -> Vec<PathBuf> {
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        let audit = self.audit_dir().to_owned();
        for p in [self.db_dir(), &self.backup_dir, &self.session_dir, &self.snapshot_dir, &audit] {
            if seen.insert(p.to_owned()) {
                out.push(p.to_owned());
            }
        }
        out
    }

    fn protect_home(&self) -> &'static str {
        let mut paths: Vec<&Path> = vec![&self.warden, &self.config, &self.database, &self.log_dir];
        paths.extend([self.backup_dir.as_path(), &self.session_dir, &self.snapshot_dir, self.audit_dir()]);
        paths.extend(self.read_write.iter().map(PathBuf::as_path));
        let engine = self.engine.first().map(PathBuf::from);
        paths.extend(engine.as_deref().filter(|p| p.is_absolute()));
        if paths.iter().any(|p| HOME_ROOTS.iter().any(|r| p.starts_with(r))) { "read-only" } else { "yes" }
    }

    /// Checks every value before anything is rendered.
    fn validate(&self) -> Result<(), DeployError> {
        valid_unit_name(&self.unit)?;
        valid_account("user", &self.user)?;
        valid_account("group", &self.group)?;
        if self.engine.is_empty() {
            return Err(DeployError::NoEngineCommand);
        }
        let mut paths: Vec<(&'static str, &Path)> = vec![
            ("the warden binary", &self.warden),
            ("the config file", &self.config),
            ("the database", &self.database),
            ("backup_dir", &self.backup_dir),
            ("session_dir", &self.session_dir),
            ("the snapshot dir", &self.snapshot_dir),
            ("audit_dir", self.audit_dir()),
            ("the log dir", &self.log_dir),
        ];
        paths.extend(self.read_write.iter().map(|p| ("a read-write path", p.as_path())));
        if let Some(p) = &self.prom_dir {
            paths.push(("the textfile dir", p));
        }
        for (what, p) in &paths {
            valid_path(what, p)?;
        }
        // The engine program: only when given as an absolute path (else PATH decides).
        if let Some(p) = self.engine.first().map(Path::new).filter(|p| p.is_absolute()) {
            valid_path("the engine program", p)?;
        }
        for (what, p) in [("audit_dir", self.audit_dir()), ("the log dir", &self.log_dir)] {
            if let Some(c) = p.to_string_lossy().chars().find(|c| matches!(c, '*' | '?' | '[' | ']')) {
                return Err(DeployError::UnsafePath {
                    what,
                    path: p.to_owned(),
                    reason: format!("`{c}` is a glob character for logrotate (hint: rename the directory)"),
                });
            }
        }
        for (what, v) in [
            ("check calendar", &self.check_at),
            ("drill calendar", &self.drill_at),
            ("prune calendar", &self.prune_at),
            ("status calendar", &self.status_at),
        ] {
            if v.trim().is_empty() || v.chars().any(char::is_control) {
                return Err(DeployError::Invalid {
                    what,
                    value: v.clone(),
                    reason: "not a systemd calendar expression (hint: `*-*-* 03:30:00`, `daily`, `*:0/5`; check with `systemd-analyze calendar`)".into(),
                });
            }
        }
        for (what, d) in [("watchdog", self.watchdog), ("stop timeout", Some(self.stop_timeout))] {
            if let Some(d) = d
                && d < Duration::from_secs(1)
            {
                return Err(DeployError::Invalid {
                    what,
                    value: format!("{d:?}"),
                    reason: "at least 1s (hint: `30s`, `10min`)".into(),
                });
            }
        }
        Ok(())
    }
}

fn valid_unit_name(name: &str) -> Result<(), DeployError> {
    let bad = |reason: &str| {
        Err(DeployError::Invalid { what: "unit name", value: name.to_owned(), reason: reason.to_owned() })
    };
    if name.is_empty() || name.len() > 200 {
        return bad("1 to 200 characters (hint: `engine`)");
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':')) {
        return bad("only ASCII letters, digits, `-`, `_`, `.` and `:` (hint: `engine`, `engine-eu`)");
    }
    if name.starts_with('-') || name.starts_with('.') {
        return bad("must start with a letter or digit");
    }
    if [".service", ".timer", ".socket", ".target", ".mount"].iter().any(|s| name.ends_with(s)) {
        return bad("give the base name without a suffix (hint: `engine`, not `engine.service`)");
    }
    Ok(())
}

fn valid_account(what: &'static str, name: &str) -> Result<(), DeployError> {
    let numeric = !name.is_empty() && name.chars().all(|c| c.is_ascii_digit());
    let named = name.len() <= 31
        && name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'));
    if numeric || named {
        Ok(())
    } else {
        Err(DeployError::Invalid {
            what,
            value: name.to_owned(),
            reason: "not a user or group name (hint: letters, digits, `_`, `-`, at most 31, or a numeric id)".into(),
        })
    }
}

fn valid_path(what: &'static str, p: &Path) -> Result<(), DeployError> {
    if !p.is_absolute() {
        return Err(DeployError::RelativePath { what, path: p.to_owned() });
    }
    let unsafe_path = |reason: &str| DeployError::UnsafePath { what, path: p.to_owned(), reason: reason.to_owned() };
    let Some(s) = p.to_str() else {
        return Err(unsafe_path("it is not UTF-8 (hint: rename it)"));
    };
    if s.chars().any(|c| c.is_control() || c == '"' || c == '\\') {
        return Err(unsafe_path("it contains a control character, `\"` or `\\` (hint: rename it)"));
    }
    if p.components().any(|c| matches!(c, Component::CurDir | Component::ParentDir))
        || s.contains("//")
        || s.contains("/./")
        || s.ends_with("/.")
    {
        return Err(unsafe_path("it is not normalised (`.`, `..` or `//`) (hint: give the plain path)"));
    }
    if s.len() > 1 && s.ends_with('/') {
        return Err(unsafe_path("it ends with `/` (hint: drop the trailing slash)"));
    }
    for root in PRIVATE_TMP_ROOTS {
        if p.starts_with(root) {
            return Err(DeployError::PrivateTmp { what, path: p.to_owned(), root });
        }
    }
    Ok(())
}

/// One word of a systemd setting: double-quoted when it contains white space or quotes,
/// `%` doubled (specifiers), `\` and `"` escaped, and on `Exec*=` lines (`exec`) `$`
/// doubled (environment expansion).
pub fn systemd_word(s: &str, exec: bool) -> String {
    let quote = s.is_empty() || s.chars().any(|c| c.is_whitespace() || matches!(c, '"' | '\'' | '\\' | ';'));
    let mut out = String::with_capacity(s.len() + 2);
    if quote {
        out.push('"');
    }
    for c in s.chars() {
        match c {
            '%' => out.push_str("%%"),
            '$' if exec => out.push_str("$$"),
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            _ => out.push(c),
        }
    }
    if quote {
        out.push('"');
    }
    out
}

fn path_word(p: &Path, exec: bool) -> String {
    systemd_word(&p.to_string_lossy(), exec)
}

/// A command line for `ExecStart=`.
fn exec_line(args: &[String]) -> String {
    args.iter().map(|a| systemd_word(a, true)).collect::<Vec<_>>().join(" ")
}

/// A free-text value (`Description=`): specifiers escaped, no quoting.
fn text(s: &str) -> String {
    s.replace('%', "%%")
}

/// A systemd time span: `30s`, `10min`, `2h`, `1500ms`.
pub fn timespan(d: Duration) -> String {
    let ms = d.as_millis();
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let s = d.as_secs();
    if s > 0 && s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s > 0 && s.is_multiple_of(60) {
        format!("{}min", s / 60)
    } else {
        format!("{s}s")
    }
}

fn list(nums: &[u8]) -> String {
    nums.iter().map(u8::to_string).collect::<Vec<_>>().join(" ")
}

/// A periodic job: a oneshot service and its timer.
struct Job {
    suffix: &'static str,
    what: &'static str,
}

const JOBS: [Job; 4] = [
    Job { suffix: "check", what: "nightly full integrity check" },
    Job { suffix: "drill", what: "nightly restore drill" },
    Job { suffix: "prune", what: "nightly retention of backups" },
    Job { suffix: "status", what: "health status and Prometheus textfile" },
];

fn header(o: &mut String, name: &str, opts: &DeployOptions) {
    let _ = writeln!(
        o,
        "# {name}: rendered by `warden deploy systemd` (sqlite-warden {}) from {}.",
        env!("CARGO_PKG_VERSION"),
        opts.config.display()
    );
    let _ = writeln!(o, "# Re-render rather than edit; put local changes in a drop-in (`systemctl edit {name}`).");
}

/// The sandbox and identity shared by every unit.
fn service_common(o: &mut String, opts: &DeployOptions, umask: &str, extra_rw: Option<&Path>) {
    let _ = writeln!(o, "User={}", opts.user);
    let _ = writeln!(o, "Group={}", opts.group);
    let _ = writeln!(o, "UMask={umask}");
    let _ = writeln!(o, "Environment={}", systemd_word(&format!("WARDEN_CONFIG={}", opts.config.display()), false));
    let _ =
        writeln!(o, "Environment={}", systemd_word(&format!("WARDEN_AUDIT_DIR={}", opts.audit_dir().display()), false));
    o.push_str("# Plain log lines for the journal (no ANSI colours).\nEnvironment=NO_COLOR=1\n");
    o.push_str("StandardOutput=journal\nStandardError=journal\n");
    let _ = writeln!(o, "SyslogIdentifier={}", opts.unit);
    o.push('\n');
    o.push_str("# Writable: the database directory (database, -wal, -shm, writer lock, <db>.warden/),\n");
    o.push_str("# the backup, session, snapshot and audit directories. `-`: already writable through a\n");
    o.push_str("# path above it, or optional. The others must exist before the first start.\n");
    if let Some(rel) = opts.logs_directory() {
        let _ = writeln!(o, "LogsDirectory={}", systemd_word(&rel, false));
        o.push_str("LogsDirectoryMode=0750\n");
    }
    for (p, required) in opts.read_write_paths() {
        let entry = format!("{}{}", if required { "" } else { "-" }, p.display());
        let _ = writeln!(o, "ReadWritePaths={}", systemd_word(&entry, false));
    }
    if let Some(p) = extra_rw {
        let _ = writeln!(o, "ReadWritePaths={}", systemd_word(&format!("-{}", p.display()), false));
    }
    o.push('\n');
    o.push_str("# Hardening (`systemd-analyze security <unit>` scores it).\n");
    o.push_str(
        "NoNewPrivileges=yes
ProtectSystem=strict
",
    );
    let _ = writeln!(o, "ProtectHome={}", opts.protect_home());
    o.push_str(
        "PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictNamespaces=yes
LockPersonality=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
RemoveIPC=yes
PrivateMounts=yes
ProtectProc=invisible
CapabilityBoundingSet=
AmbientCapabilities=
SystemCallArchitectures=native
SystemCallFilter=@system-service
# @resources stays allowed: engines pin threads (sched_setaffinity) and raise limits (setrlimit).
SystemCallFilter=~@privileged
SystemCallErrorNumber=EPERM
# Engines may trade over the network.
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
",
    );
    if opts.memory_deny_write_execute {
        o.push_str("MemoryDenyWriteExecute=yes\n");
    } else {
        o.push_str(
            "# MemoryDenyWriteExecute=yes breaks JITs (PyPy, JVM, Node/V8, LuaJIT) and CPython ctypes/cffi
# callbacks; render with --memory-deny-write-execute when the engine has none.
",
        );
    }
}

fn unit_section(o: &mut String, opts: &DeployOptions, description: &str) {
    o.push_str("[Unit]\n");
    let _ = writeln!(o, "Description={}", text(description));
    let mounts: Vec<String> = opts.mounts().iter().map(|p| path_word(p, false)).collect();
    let _ = writeln!(o, "RequiresMountsFor={}", mounts.join(" "));
}

fn engine_service(opts: &DeployOptions) -> String {
    let name = opts.service_name();
    let mut o = String::new();
    header(&mut o, &name, opts);
    o.push_str(
        "#
# The whole session runs through warden: preflight, writer lock, integrity gate and verified
# pre-session backup before the engine starts; then the engine (its command comes from the
# config); then a verified post-session backup, retention and the health artifact.
",
    );
    // Debug formatting: control characters and backslashes cannot end the comment line.
    let _ = writeln!(o, "# Engine (from the config): {:?}", opts.engine);
    unit_section(&mut o, opts, &format!("{}: engine session through sqlite-warden (gate, backups, engine)", opts.unit));
    o.push_str(
        "Wants=network-online.target
After=network-online.target
# A crash loop stops after 5 starts in an hour (each start runs the gate and a backup):
# `systemctl reset-failed` once the cause is fixed.
StartLimitIntervalSec=1h
StartLimitBurst=5

[Service]
# warden speaks sd_notify: READY=1 once the gate passed, the pre-session backup is verified
# and the engine runs; STOPPING=1 when the engine exited and the post-session backup starts.
Type=notify
NotifyAccess=main
",
    );
    let args = vec![
        opts.warden.to_string_lossy().into_owned(),
        "run".into(),
        "--config".into(),
        opts.config.to_string_lossy().into_owned(),
    ];
    let _ = writeln!(o, "ExecStart={}", exec_line(&args));
    match opts.watchdog {
        Some(w) => {
            o.push_str("# Fed every WatchdogSec/2 while the engine runs; a wedged warden is aborted and restarted.\n");
            let _ = writeln!(o, "WatchdogSec={}", timespan(w));
        }
        None => o.push_str("# No watchdog (rendered with --watchdog off).\n"),
    }
    o.push_str("# Starting covers the integrity gate and the pre-session backup (warden also extends it).\n");
    match opts.start_timeout {
        Some(t) => {
            let _ = writeln!(o, "TimeoutStartSec={}", timespan(t));
        }
        None => o.push_str("TimeoutStartSec=infinity\n"),
    }
    o.push_str(
        "# SIGTERM goes to warden only; warden forwards it to the engine (its own process group),
# waits for it, then takes the post-session backup. Whatever is left after TimeoutStopSec
# gets SIGKILL.
KillMode=mixed
KillSignal=SIGTERM
",
    );
    let _ = writeln!(o, "TimeoutStopSec={}", timespan(opts.stop_timeout));
    o.push_str(
        "Restart=on-failure
RestartSec=30s
# Gate failed (65), database missing (66), storage refused (69), SQLite too old (70) and
# configuration (78) never fix themselves: no restart loop over a damaged database.
",
    );
    let _ = writeln!(o, "RestartPreventExitStatus={}", list(&RESTART_PREVENT_EXIT_STATUS));
    o.push_str("# 128+SIGINT / 128+SIGTERM: the engine died of the stop signal warden forwarded.\n");
    let _ = writeln!(o, "SuccessExitStatus={}", list(&RUN_SUCCESS_EXIT_STATUS));
    service_common(&mut o, opts, "0077", None);
    o.push_str("\n[Install]\nWantedBy=multi-user.target\n");
    o
}

fn job_service(opts: &DeployOptions, job: &Job) -> String {
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
            "# Restores the newest good backup into a scratch directory beside the database, checks it,
# removes it; never touches the live database. `warden status` reads the result (exit 16).",
            vec![warden, s("drill"), s("--config"), config, s("--scratch"), db_dir],
            "",
        ),
        "prune" => (
            "# Retention (also applied after every session); keeps the newest good backup always.",
            vec![warden, s("prune"), s("--config"), config],
            "",
        ),
        _ => (
            "# Exit codes 10-16 are health problems, not failures of this job: they are in the
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
    service_common(&mut o, opts, umask, extra);
    o
}

fn job_timer(opts: &DeployOptions, job: &Job) -> String {
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

fn logrotate_word(p: &Path) -> String {
    format!("\"{}\"", p.display())
}

fn logrotate(opts: &DeployOptions) -> String {
    let mut o = String::new();
    let name = opts.logrotate_name();
    let _ = writeln!(
        o,
        "# /etc/logrotate.d/{name}: rendered by `warden deploy systemd` (sqlite-warden {}).",
        env!("CARGO_PKG_VERSION")
    );
    let _ = writeln!(
        o,
        "#
# warden and the engine log to the journal (StandardOutput/StandardError=journal): nothing to
# rotate there. Cap the journal instead, e.g. /etc/systemd/journald.conf.d/50-warden.conf:
#   [Journal]
#   SystemMaxUse=1G
#   MaxRetentionSec=1month
# then `systemctl restart systemd-journald`. Read it with `journalctl -u {}`.
#
# Backups, session artifacts, snapshots and drill records are not logs: warden's retention
# owns them. Never rotate anything under the backup or snapshot directories.",
        opts.service_name()
    );
    let su = format!("    su {} {}\n", opts.user, opts.group);
    let common =
        "    daily\n    rotate 14\n    maxsize 100M\n    compress\n    delaycompress\n    missingok\n    notifempty\n";
    let audit = opts.audit_dir().join(crate::guard::audit::AUDIT_FILE);
    let _ = writeln!(
        o,
        "
# The audit log. warden opens it (O_APPEND|O_CREAT) for every record and writes each record
# with one write(2), so a plain rename loses no line: a record being written lands whole in
# the renamed file, the next one creates a new file. No copytruncate (lines written between
# the copy and the truncate would be lost), no postrotate signal, and nocreate: warden
# creates the new file itself (mode 0640, less the unit's UMask). `warden audit -f` follows
# the rename."
    );
    let _ = writeln!(o, "{} {{\n{common}    nocreate\n{su}}}", logrotate_word(&audit));
    let _ = writeln!(
        o,
        "
# The engine's own file logs, if it writes any. copytruncate works with any engine but can
# lose the lines written during the copy. If the engine reopens its log on SIGHUP (warden
# forwards SIGHUP to it), use instead:
#     create 0640 {user} {group}
#     postrotate
#         systemctl kill --kill-whom=main --signal=SIGHUP {service}
#     endscript
# (Never send SIGHUP to an engine that does not handle it: it would die and restart.)",
        user = opts.user,
        group = opts.group,
        service = opts.service_name()
    );
    let _ = writeln!(o, "{} {{\n{common}    copytruncate\n{su}}}", logrotate_word(&opts.log_dir.join("*.log")));
    o
}

/// Renders every file for `opts` (pure: reads and writes nothing).
///
/// # Errors
/// [`DeployError`] for a value that cannot be rendered safely: a relative or unquotable
/// path, one under `/tmp`, a bad unit, user or group name, no engine command.
pub fn render(opts: &DeployOptions) -> Result<Vec<RenderedFile>, DeployError> {
    opts.validate()?;
    let mut files = vec![RenderedFile { name: opts.service_name(), contents: engine_service(opts) }];
    for job in &JOBS {
        files.push(RenderedFile {
            name: format!("{}-{}.service", opts.unit, job.suffix),
            contents: job_service(opts, job),
        });
        files
            .push(RenderedFile { name: format!("{}-{}.timer", opts.unit, job.suffix), contents: job_timer(opts, job) });
    }
    files.push(RenderedFile { name: opts.logrotate_name(), contents: logrotate(opts) });
    Ok(files)
}

/// Writes `files` into `dir` (created if missing, mode 0755): each file atomically (a
/// temporary file, fsync, rename), mode 0644. A file with identical contents is left alone;
/// one with different contents is replaced only with `force`, and otherwise nothing at all
/// is written.
///
/// # Errors
/// [`DeployError::Exists`] (nothing written) or [`DeployError::Io`].
pub fn write(dir: &Path, files: &[RenderedFile], force: bool) -> Result<Vec<Written>, DeployError> {
    use std::os::unix::fs::DirBuilderExt;
    let mut plan = Vec::with_capacity(files.len());
    for f in files {
        if f.name.is_empty() || f.name.contains('/') || f.name.starts_with('.') {
            return Err(DeployError::Invalid {
                what: "file name",
                value: f.name.clone(),
                reason: "a plain file name".into(),
            });
        }
        let path = dir.join(&f.name);
        let action = match std::fs::read(&path) {
            Ok(old) if old == f.contents.as_bytes() => WriteAction::Unchanged,
            Ok(_) if force => WriteAction::Replaced,
            Ok(_) => return Err(DeployError::Exists { path }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => WriteAction::Created,
            Err(source) => return Err(DeployError::Io { action: "reading", path, source }),
        };
        plan.push((path, action, f));
    }
    std::fs::DirBuilder::new().recursive(true).mode(0o755).create(dir).map_err(|source| DeployError::Io {
        action: "creating",
        path: dir.to_owned(),
        source,
    })?;
    let mut done = Vec::with_capacity(plan.len());
    for (path, action, f) in plan {
        if action != WriteAction::Unchanged {
            crate::util::atomic::write_atomic(&path, f.contents.as_bytes(), 0o644)
                .map_err(|source| DeployError::Io { action: "writing", path: path.clone(), source })?;
        }
        done.push(Written { path, action });
    }
    Ok(done)
}

/// Advice about `settings` for a service (not errors): settings that work interactively
/// but surprise under systemd.
pub fn advice(settings: &Settings, opts: &DeployOptions) -> Vec<String> {
    let mut out = Vec::new();
    if settings.create {
        out.push(
            "the config sets `create = true`: after the first session remove it, or a lost database is silently recreated empty on the next start"
                .to_owned(),
        );
    }
    if settings.audit_dir.is_none() {
        out.push(format!(
            "the config sets no `audit_dir`: the units use {} (WARDEN_AUDIT_DIR); add `audit_dir = \"{}\"` to the config so commands run by hand log there too",
            opts.audit_dir().display(),
            opts.audit_dir().display()
        ));
    }
    if let Some(p) = opts.engine.first()
        && !Path::new(p).is_absolute()
    {
        out.push(format!(
            "the engine program `{p}` is not an absolute path: under systemd it is looked up in /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin"
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_quoted_and_escaped() {
        assert_eq!(systemd_word("/var/lib/engine", true), "/var/lib/engine");
        assert_eq!(systemd_word("/srv/my data/e.db", true), "\"/srv/my data/e.db\"");
        assert_eq!(systemd_word("/srv/100%/e.db", false), "/srv/100%%/e.db");
        assert_eq!(systemd_word("/srv/$HOME", true), "/srv/$$HOME");
        assert_eq!(systemd_word("/srv/$HOME", false), "/srv/$HOME");
        assert_eq!(systemd_word("a\"b", false), "\"a\\\"b\"");
        assert_eq!(systemd_word("", true), "\"\"");
    }

    #[test]
    fn timespans() {
        assert_eq!(timespan(Duration::from_secs(30)), "30s");
        assert_eq!(timespan(Duration::from_secs(600)), "10min");
        assert_eq!(timespan(Duration::from_secs(7200)), "2h");
        assert_eq!(timespan(Duration::from_millis(1500)), "1500ms");
        assert_eq!(timespan(Duration::from_secs(90)), "90s");
    }

    #[test]
    fn names_and_accounts() {
        assert!(valid_unit_name("engine").is_ok());
        assert!(valid_unit_name("engine-eu_1").is_ok());
        for bad in ["", "engine.service", "a b", "a/b", "-x", "a@b", "a%b"] {
            assert!(valid_unit_name(bad).is_err(), "{bad}");
        }
        assert!(valid_account("user", "engine").is_ok());
        assert!(valid_account("user", "0").is_ok());
        for bad in ["", "a b", "1abc", "x:y"] {
            assert!(valid_account("user", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn paths() {
        assert!(valid_path("x", Path::new("/var/lib/engine")).is_ok());
        assert!(valid_path("x", Path::new("/srv/a b/100%")).is_ok());
        for bad in ["rel", "/a/../b", "/a/./b", "/a//b", "/a/", "/a\"b", "/a\\b", "/a\nb", "/tmp/x", "/var/tmp"] {
            assert!(valid_path("x", Path::new(bad)).is_err(), "{bad}");
        }
    }
}

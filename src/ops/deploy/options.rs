//! The deployment choices ([`DeployOptions`]), their defaults from a configuration, the paths
//! the units derive from them, and advice about settings under systemd.
//! Does not own: rendering or validation.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::error::DeployError;
use crate::ops::config::Settings;

/// The default node_exporter textfile collector directory (Debian's and Ubuntu's).
pub const DEFAULT_PROM_DIR: &str = crate::ops::status::prometheus::DEFAULT_DIR;

/// Default `OnCalendar=` of the nightly full integrity check.
pub const DEFAULT_CHECK_AT: &str = "*-*-* 03:30:00";
/// Default `OnCalendar=` of the nightly restore drill.
pub const DEFAULT_DRILL_AT: &str = "*-*-* 04:30:00";
/// Default `OnCalendar=` of the nightly retention run.
pub const DEFAULT_PRUNE_AT: &str = "*-*-* 05:30:00";
/// Default `OnCalendar=` of the status textfile (every 5 minutes).
pub const DEFAULT_STATUS_AT: &str = "*:0/5";

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
            warden: "/usr/bin/warden".into(),
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
    pub(super) fn logs_directory(&self) -> Option<String> {
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
    pub(super) fn mounts(&self) -> Vec<PathBuf> {
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

    pub(super) fn protect_home(&self) -> &'static str {
        let mut paths: Vec<&Path> = vec![&self.warden, &self.config, &self.database, &self.log_dir];
        paths.extend([self.backup_dir.as_path(), &self.session_dir, &self.snapshot_dir, self.audit_dir()]);
        paths.extend(self.read_write.iter().map(PathBuf::as_path));
        let engine = self.engine.first().map(PathBuf::from);
        paths.extend(engine.as_deref().filter(|p| p.is_absolute()));
        if paths.iter().any(|p| HOME_ROOTS.iter().any(|r| p.starts_with(r))) { "read-only" } else { "yes" }
    }
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

//! `warden deploy systemd`: rendering of [`sqlite_warden::ops::deploy`].
//!
//! Exit codes: `0` written (or already identical); `64` an option cannot be rendered safely
//! (relative or unquotable path, a path under /tmp, bad unit or user name), or a settings
//! flag that the units would not see; `73` a file exists with other contents (nothing
//! written; `--force` replaces); `74` I/O error; `78` the config is unreadable, invalid, or
//! names no engine command.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use sqlite_warden::ops::config::{Overrides, Settings};
use sqlite_warden::ops::deploy::{self, DeployError, DeployOptions, WriteAction};
use sqlite_warden::util::exit;

use super::CliError;

/// `warden deploy`: service files for a configuration.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  warden deploy systemd --config /etc/warden/warden.toml --out /root/warden-units")]
pub struct DeployArgs {
    #[command(subcommand)]
    cmd: DeployCmd,
}

#[derive(Debug, clap::Subcommand)]
enum DeployCmd {
    /// Renders the engine's systemd unit, the check/drill/prune/status timers and their
    /// services, and a logrotate snippet, into a directory.
    Systemd(SystemdArgs),
}

/// `warden deploy systemd`.
#[derive(Debug, clap::Args)]
#[command(
    mut_arg("config", |a| a
        .default_value("/etc/warden/warden.toml")
        .help("The config file the units run with (`warden run --config FILE`)")),
    after_help = "\
Renders into --out (each file atomically; identical files are left alone; a file with other
contents is refused unless --force, and then nothing is written):
  <unit>.service                   `warden run --config FILE`: Type=notify, watchdog,
                                   KillMode=mixed, RestartPreventExitStatus=17 65 66 67 69 70 78
  <unit>-{check,drill,prune,status}.service/.timer
                                   nightly full check, restore drill, retention; status and
                                   the Prometheus textfile every 5 minutes
  warden-<unit>                    logrotate snippet for /etc/logrotate.d/
Every path comes from the config; settings flags that differ from it are refused, since
the units only pass --config. Then install them (the command prints how).

Exit codes: 0 written, 64 unusable option, 73 a different file exists, 74 I/O, 78 config.

Examples:
  warden deploy systemd --config /etc/warden/warden.toml --out /root/warden-units
  warden deploy systemd --out /etc/systemd/system --unit-name engine --user engine --check-at '*-*-* 03:30:00'"
)]
struct SystemdArgs {
    /// Where the files go (created if missing); e.g. a staging directory, or
    /// /etc/systemd/system.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Base name of the units: `engine` gives engine.service, engine-check.timer, ….
    #[arg(long, value_name = "NAME", default_value = "engine")]
    unit_name: String,
    /// `User=` of the units (must exist on the target).
    #[arg(long, value_name = "USER", default_value = "engine")]
    user: String,
    /// `Group=` of the units (default: the same as --user).
    #[arg(long, value_name = "GROUP")]
    group: Option<String>,
    /// The warden binary on the target: /usr/bin/warden where the Debian package
    /// (scripts/deb) installs it; /usr/local/bin/warden for a source install.
    #[arg(long, value_name = "PATH", default_value = "/usr/bin/warden")]
    warden: PathBuf,
    /// `WatchdogSec=` of the engine unit (`off` for none); warden pings every half of it
    /// while the engine runs.
    #[arg(long, value_name = "DURATION", default_value = "30s")]
    watchdog: String,
    /// `TimeoutStopSec=`: the engine's own shutdown plus the post-session backup.
    #[arg(long, value_name = "DURATION", default_value = "10min")]
    stop_timeout: String,
    /// `TimeoutStartSec=`: the gate and the pre-session backup (`infinity`; default: the
    /// gate's budget plus 15 minutes, `infinity` without a budget).
    #[arg(long, value_name = "DURATION")]
    start_timeout: Option<String>,
    /// node_exporter's textfile collector directory (`off`: no textfile).
    #[arg(long, value_name = "DIR", default_value = deploy::DEFAULT_PROM_DIR)]
    prom_dir: String,
    /// The engine's own file logs, if any (default: /var/log/<unit>; also the audit log's
    /// directory when the config sets no `audit_dir`).
    #[arg(long, value_name = "DIR")]
    log_dir: Option<PathBuf>,
    /// Another path the engine may write (repeatable; must exist).
    #[arg(long = "read-write", value_name = "PATH")]
    read_write: Vec<PathBuf>,
    /// Add `MemoryDenyWriteExecute=yes` (breaks JITs: PyPy, the JVM, Node, LuaJIT; and
    /// CPython ctypes/cffi callbacks).
    #[arg(long)]
    memory_deny_write_execute: bool,
    /// `OnCalendar=` of the full integrity check.
    #[arg(long, value_name = "CALENDAR", default_value = deploy::DEFAULT_CHECK_AT)]
    check_at: String,
    /// `OnCalendar=` of the restore drill.
    #[arg(long, value_name = "CALENDAR", default_value = deploy::DEFAULT_DRILL_AT)]
    drill_at: String,
    /// `OnCalendar=` of retention.
    #[arg(long, value_name = "CALENDAR", default_value = deploy::DEFAULT_PRUNE_AT)]
    prune_at: String,
    /// Replace files that exist with other contents.
    #[arg(long)]
    force: bool,
    /// Print one JSON document instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    settings: super::settings::SettingsArgs,
}

/// `warden deploy`.
pub fn run(args: DeployArgs) -> Result<ExitCode, CliError> {
    match args.cmd {
        DeployCmd::Systemd(a) => systemd(a),
    }
}

fn failed(e: &DeployError) -> CliError {
    CliError::Failed { message: e.to_string(), code: e.exit_code() }
}

fn usage(message: String) -> CliError {
    CliError::Failed { message, code: exit::USAGE }
}

fn duration(flag: &str, s: &str) -> Result<Option<Duration>, CliError> {
    if matches!(s.trim(), "off" | "none" | "infinity" | "0") {
        return Ok(None);
    }
    humantime::parse_duration(s.trim())
        .map(Some)
        .map_err(|e| usage(format!("{flag} `{s}`: {e} (hint: `30s`, `10min`, `1h`, or `off`)")))
}

fn systemd(args: SystemdArgs) -> Result<ExitCode, CliError> {
    let settings = args.settings.resolve(Vec::new())?;
    let source = settings.source.clone().ok_or_else(|| usage("no config file (hint: pass --config FILE)".into()))?;
    let config = sqlite_warden::storage::resolve(&source)
        .map_err(|e| CliError::Io { context: format!("resolving `{}`", source.display()), source: e })?;
    // The units pass only --config: a flag that changes any setting would be silently lost.
    let from_file = Settings::resolve(Some(&source), Overrides::default())?;
    if format!("{from_file:?}") != format!("{settings:?}") {
        return Err(usage(format!(
            "settings flags change what `{}` says, but the units only pass --config\n(hint: put the values into the config file, then render again)",
            config.display()
        )));
    }
    let mut opts = DeployOptions::from_settings(&settings, &config).map_err(|e| failed(&e))?;
    opts.unit = args.unit_name;
    opts.group = args.group.unwrap_or_else(|| args.user.clone());
    opts.user = args.user;
    opts.warden = args.warden;
    opts.log_dir = args.log_dir.unwrap_or_else(|| Path::new("/var/log").join(&opts.unit));
    opts.read_write = args.read_write;
    opts.prom_dir = match args.prom_dir.trim() {
        "off" | "none" => None,
        d => Some(PathBuf::from(d)),
    };
    opts.watchdog = duration("--watchdog", &args.watchdog)?;
    opts.stop_timeout = duration("--stop-timeout", &args.stop_timeout)?
        .ok_or_else(|| usage("--stop-timeout: give a duration (hint: `10min`)".into()))?;
    if let Some(s) = &args.start_timeout {
        opts.start_timeout = duration("--start-timeout", s)?;
    }
    opts.memory_deny_write_execute = args.memory_deny_write_execute;
    opts.check_at = args.check_at;
    opts.drill_at = args.drill_at;
    opts.prune_at = args.prune_at;

    let files = deploy::render(&opts).map_err(|e| failed(&e))?;
    let written = deploy::write(&args.out, &files, args.force).map_err(|e| failed(&e))?;
    let missing: Vec<PathBuf> = opts.required_dirs().into_iter().filter(|d| !d.is_dir()).collect();
    let advice = deploy::advice(&settings, &opts);
    let next = next_steps(&args.out, &opts);

    if args.json {
        let v = serde_json::json!({
            "schema": 1,
            "dir": args.out,
            "unit": opts.service_name(),
            "files": written,
            "missing_dirs": missing,
            "advice": advice,
            "next": next,
        });
        outln!("{v}");
        return Ok(ExitCode::SUCCESS);
    }
    outln!("{}: {} files for {}", args.out.display(), written.len(), opts.service_name());
    for w in &written {
        let action = match w.action {
            WriteAction::Created => "created  ",
            WriteAction::Unchanged => "unchanged",
            WriteAction::Replaced => "replaced ",
        };
        outln!("  {action} {}", w.path.display());
    }
    for d in &missing {
        outln!(
            "warning: {} does not exist; the units fail to start (226/NAMESPACE) without it:\n  install -d -o {} -g {} -m 0750 {}",
            d.display(),
            opts.user,
            opts.group,
            shell_word(&d.to_string_lossy())
        );
    }
    for a in &advice {
        outln!("note: {a}");
    }
    outln!("next (as root):");
    for n in &next {
        outln!("  {n}");
    }
    Ok(ExitCode::SUCCESS)
}

/// The commands that install and start what was rendered into `out`.
fn next_steps(out: &Path, opts: &DeployOptions) -> Vec<String> {
    let system = Path::new("/etc/systemd/system");
    let units: Vec<String> = std::iter::once(opts.service_name())
        .chain(
            ["check", "drill", "prune", "status"]
                .iter()
                .flat_map(|j| [format!("{}-{j}.service", opts.unit), format!("{}-{j}.timer", opts.unit)]),
        )
        .collect();
    let mut steps = Vec::new();
    let installed: Vec<String> = units.iter().map(|u| shell_word(&system.join(u).to_string_lossy())).collect();
    if sqlite_warden::storage::resolve(out).ok().as_deref() != Some(system) {
        let sources: Vec<String> = units.iter().map(|u| shell_word(&out.join(u).to_string_lossy())).collect();
        steps.push(format!("install -m 0644 -t /etc/systemd/system {}", sources.join(" ")));
    }
    steps.push(format!(
        "install -m 0644 {} /etc/logrotate.d/{}",
        shell_word(&out.join(opts.logrotate_name()).to_string_lossy()),
        opts.logrotate_name()
    ));
    steps.push(format!("systemd-analyze verify {}", installed.join(" ")));
    steps.push("systemctl daemon-reload".into());
    steps.push(format!("systemctl enable --now {}", opts.timer_names().join(" ")));
    steps.push(format!("systemctl enable --now {}", opts.service_name()));
    steps
}

/// `s` as one POSIX shell word.
fn shell_word(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "/._-+=:,@%".contains(c)) {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

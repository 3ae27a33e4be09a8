//! The settings flags, in groups by concern. Each subcommand flattens only the groups whose
//! values it reads, so its `--help` lists only those and clap rejects the others; the
//! groups it leaves out keep `warden.toml`'s values (or the defaults).
//!
//! Owns: the flags that override `warden.toml` and the merge ([`Resolve`], over
//! [`sqlite_warden::ops::config::Settings::resolve`]). Does not own: what a setting does.
//!
//! | group | flags |
//! |---|---|
//! | [`DbArgs`] | `--config`, `--db` |
//! | [`BackupDirArgs`], [`SessionDirArgs`], [`AuditDirArgs`] | `--backup-dir`, `--session-dir`, `--audit-dir` |
//! | [`GateCheckArgs`], [`GateBudgetArgs`], [`CreateArgs`] | `--check`, `--gate-budget`, `--create` |
//! | [`RetentionArgs`] | `--keep-last`, `--keep-hourly`, `--keep-daily`, `--keep-weekly`, `--keep-monthly`, `--max-total-bytes` |
//! | [`SnapshotStoreArgs`], [`SnapshotEveryArgs`] | `--snapshot-dir`, `--snapshot-keep`; `--snapshot-every` |
//! | [`ForeignWriterArgs`] | `--on-foreign-writer`, `--foreign-writer-every` |
//! | [`SettingsArgs`] | all of them (`warden run`, `warden deploy systemd`) |

use std::ffi::OsString;
use std::path::PathBuf;

use clap::Args as ClapArgs;
use sqlite_warden::copies::backup::CheckMode;
use sqlite_warden::ops::config::{self, Overrides, Settings};

use super::CliError;

const LOCATION: &str = "Location (overrides warden.toml)";
const GATE: &str = "Integrity gate (overrides warden.toml)";
const RETENTION: &str = "Retention (overrides warden.toml)";
const SNAPSHOTS: &str = "Analysis snapshots (overrides warden.toml)";
const SESSION: &str = "While the engine runs (overrides warden.toml)";

/// Which database, by which config file: every command that reads `warden.toml`.
#[derive(Debug, Clone, ClapArgs)]
#[command(next_help_heading = LOCATION)]
pub struct DbArgs {
    /// Config file (default: $WARDEN_CONFIG, else ./warden.toml if present).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The database (`database` in warden.toml).
    #[arg(long, value_name = "PATH")]
    db: Option<PathBuf>,
}

/// `--backup-dir`.
#[derive(Debug, Clone, ClapArgs)]
#[command(next_help_heading = LOCATION)]
pub struct BackupDirArgs {
    /// Backup directory (default: <db>.warden/backups).
    #[arg(long, value_name = "DIR")]
    backup_dir: Option<PathBuf>,
}

/// `--session-dir`.
#[derive(Debug, Clone, ClapArgs)]
#[command(next_help_heading = LOCATION)]
pub struct SessionDirArgs {
    /// Session artifact directory (default: <db>.warden/sessions).
    #[arg(long, value_name = "DIR")]
    session_dir: Option<PathBuf>,
}

/// `--audit-dir`: for the commands that open the database through the guard.
#[derive(Debug, Clone, ClapArgs)]
#[command(next_help_heading = LOCATION)]
pub struct AuditDirArgs {
    /// Audit log directory (default: $WARDEN_AUDIT_DIR, $XDG_STATE_HOME/sqlite-warden, ...).
    #[arg(long, value_name = "DIR")]
    audit_dir: Option<PathBuf>,
}

/// `--check`: the check of the gate (and of `warden backups verify`).
#[derive(Debug, Clone, ClapArgs)]
#[command(next_help_heading = GATE)]
pub struct GateCheckArgs {
    /// The gate's check: `full` (integrity_check, default) or `quick` (quick_check).
    #[arg(long, value_enum)]
    check: Option<CheckArg>,
}

/// `--gate-budget`.
#[derive(Debug, Clone, ClapArgs)]
#[command(next_help_heading = GATE)]
pub struct GateBudgetArgs {
    /// The gate's time budget (`90s`, `30m`, `none`); exceeding it fails the gate.
    #[arg(long, value_name = "DURATION")]
    gate_budget: Option<String>,
}

/// `--create`: only a session lets the engine create its database.
#[derive(Debug, Clone, ClapArgs)]
#[command(next_help_heading = GATE)]
pub struct CreateArgs {
    /// Allow a missing or empty database: the engine creates it (first run only).
    #[arg(long)]
    create: bool,
}

/// The retention policy's flags (`[retention]`).
#[derive(Debug, Clone, ClapArgs)]
#[command(next_help_heading = RETENTION)]
pub struct RetentionArgs {
    /// Retention: keep the N newest verified backups.
    #[arg(long, value_name = "N")]
    keep_last: Option<u32>,
    /// Retention: keep the newest backup of each of the last N hours that have one.
    #[arg(long, value_name = "N")]
    keep_hourly: Option<u32>,
    /// Retention: ... of each of the last N days.
    #[arg(long, value_name = "N")]
    keep_daily: Option<u32>,
    /// Retention: ... of each of the last N ISO weeks.
    #[arg(long, value_name = "N")]
    keep_weekly: Option<u32>,
    /// Retention: ... of each of the last N months.
    #[arg(long, value_name = "N")]
    keep_monthly: Option<u32>,
    /// Retention: drop the oldest unprotected backups beyond this many bytes in total.
    #[arg(long, value_name = "BYTES")]
    max_total_bytes: Option<u64>,
}

/// Where analysis snapshots go and how many stay (`[snapshots]` `dir`, `keep`).
#[derive(Debug, Clone, ClapArgs)]
#[command(next_help_heading = SNAPSHOTS)]
pub struct SnapshotStoreArgs {
    /// Analysis snapshot directory (default: <db>.warden/snapshots).
    #[arg(long, value_name = "DIR")]
    snapshot_dir: Option<PathBuf>,
    /// Analysis snapshots to keep (default 5; the one `latest.sqlite` points to always stays).
    #[arg(long, value_name = "N")]
    snapshot_keep: Option<u32>,
}

/// Periodic snapshots during a session (`[snapshots]` `every`).
#[derive(Debug, Clone, ClapArgs)]
#[command(next_help_heading = SNAPSHOTS)]
pub struct SnapshotEveryArgs {
    /// During `warden run`: publish an analysis snapshot this often (`10m`, `1h`; default off).
    #[arg(long, value_name = "DURATION")]
    snapshot_every: Option<String>,
}

/// The foreign-writer watch during a session (`[session]`).
#[derive(Debug, Clone, ClapArgs)]
#[command(next_help_heading = SESSION)]
pub struct ForeignWriterArgs {
    /// When another process has the database open for writing while the engine runs: `warn`
    /// (default: audit, artifact, `warden status`) or `stop` (also SIGTERM to the engine; exit 17).
    #[arg(long, value_enum, value_name = "ACTION")]
    on_foreign_writer: Option<ForeignWriterArg>,
    /// How often to look at /proc for foreign writers (default `2s`; at least `100ms`).
    #[arg(long, value_name = "DURATION")]
    foreign_writer_every: Option<String>,
}

/// `--on-foreign-writer` values.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ForeignWriterArg {
    /// Record it; the engine keeps running.
    Warn,
    /// Record it and stop the engine.
    Stop,
}

/// Every settings flag: for `warden run`, which uses them all, and `warden deploy systemd`,
/// which refuses any that changes what the config file says.
#[derive(Debug, Clone, ClapArgs)]
pub struct SettingsArgs {
    #[command(flatten)]
    db: DbArgs,
    #[command(flatten)]
    create: CreateArgs,
    #[command(flatten)]
    backup_dir: BackupDirArgs,
    #[command(flatten)]
    session_dir: SessionDirArgs,
    #[command(flatten)]
    audit_dir: AuditDirArgs,
    #[command(flatten)]
    check: GateCheckArgs,
    #[command(flatten)]
    gate_budget: GateBudgetArgs,
    #[command(flatten)]
    retention: RetentionArgs,
    #[command(flatten)]
    snapshot_every: SnapshotEveryArgs,
    #[command(flatten)]
    snapshots: SnapshotStoreArgs,
    #[command(flatten)]
    foreign_writer: ForeignWriterArgs,
}

/// `--check` values.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum CheckArg {
    /// `PRAGMA integrity_check`.
    Full,
    /// `PRAGMA quick_check`.
    Quick,
}

impl From<CheckArg> for CheckMode {
    fn from(c: CheckArg) -> Self {
        match c {
            CheckArg::Full => CheckMode::Full,
            CheckArg::Quick => CheckMode::Quick,
        }
    }
}

/// A group of flags: sets its keys of the overrides.
pub(crate) trait Group {
    fn apply(self, o: &mut Overrides);
}

impl Group for BackupDirArgs {
    fn apply(self, o: &mut Overrides) {
        o.backup_dir = self.backup_dir;
    }
}

impl Group for SessionDirArgs {
    fn apply(self, o: &mut Overrides) {
        o.session_dir = self.session_dir;
    }
}

impl Group for AuditDirArgs {
    fn apply(self, o: &mut Overrides) {
        o.audit_dir = self.audit_dir;
    }
}

impl Group for GateCheckArgs {
    fn apply(self, o: &mut Overrides) {
        o.check = self.check.map(CheckMode::from);
    }
}

impl Group for GateBudgetArgs {
    fn apply(self, o: &mut Overrides) {
        o.budget = self.gate_budget;
    }
}

impl Group for CreateArgs {
    fn apply(self, o: &mut Overrides) {
        o.create = self.create;
    }
}

impl Group for RetentionArgs {
    fn apply(self, o: &mut Overrides) {
        o.keep_last = self.keep_last;
        o.keep_hourly = self.keep_hourly;
        o.keep_daily = self.keep_daily;
        o.keep_weekly = self.keep_weekly;
        o.keep_monthly = self.keep_monthly;
        o.max_total_bytes = self.max_total_bytes;
    }
}

impl Group for SnapshotStoreArgs {
    fn apply(self, o: &mut Overrides) {
        o.snapshot_dir = self.snapshot_dir;
        o.snapshot_keep = self.snapshot_keep;
    }
}

impl Group for ForeignWriterArgs {
    fn apply(self, o: &mut Overrides) {
        o.on_foreign_writer = self.on_foreign_writer.map(|a| {
            match a {
                ForeignWriterArg::Warn => "warn",
                ForeignWriterArg::Stop => "stop",
            }
            .to_owned()
        });
        o.foreign_writer_every = self.foreign_writer_every;
    }
}

impl Group for SnapshotEveryArgs {
    fn apply(self, o: &mut Overrides) {
        o.snapshot_every = self.snapshot_every;
    }
}

/// The merge of a command's flag groups over `warden.toml`: start with [`DbArgs::settings`],
/// add each group the command has with [`Resolve::with`], then [`Resolve::resolve`]. Keys of
/// the groups left out are `None` (the file's value, or the default).
#[derive(Debug)]
pub(crate) struct Resolve {
    config: Option<PathBuf>,
    overrides: Overrides,
}

impl DbArgs {
    /// Starts the merge with `--config` and `--db`.
    pub(crate) fn settings(self) -> Resolve {
        Resolve { config: self.config, overrides: Overrides { database: self.db, ..Overrides::default() } }
    }
}

impl Resolve {
    /// Adds one group's flags.
    pub(crate) fn with(mut self, group: impl Group) -> Self {
        group.apply(&mut self.overrides);
        self
    }

    /// The engine command given after `--`.
    pub(crate) fn command(mut self, command: Vec<OsString>) -> Self {
        self.overrides.command = command;
        self
    }

    /// Merges the flags over `warden.toml` (see [`sqlite_warden::ops::config`]).
    pub(crate) fn resolve(self) -> Result<Settings, CliError> {
        let file = config::discover(self.config.as_deref());
        Ok(Settings::resolve(file.as_deref(), self.overrides)?)
    }
}

impl SettingsArgs {
    /// Merges every flag over `warden.toml`, with `command` as the engine command.
    pub(crate) fn resolve(self, command: Vec<OsString>) -> Result<Settings, CliError> {
        self.db
            .settings()
            .with(self.create)
            .with(self.backup_dir)
            .with(self.session_dir)
            .with(self.audit_dir)
            .with(self.check)
            .with(self.gate_budget)
            .with(self.retention)
            .with(self.snapshot_every)
            .with(self.snapshots)
            .with(self.foreign_writer)
            .command(command)
            .resolve()
    }
}

//! `warden migrate export|import` and `warden sessions export`: rendering of
//! [`sqlite_warden::ops::migrate`].
//!
//! Exit codes: `0` done; `64` usage (a bad `--mode`, an unknown `--owner`); `65` the bundle
//! does not match its manifest (tampered, truncated, path traversal, symbolic link, unlisted
//! file) or its database fails the gate, or the copy of the source fails its check; `66` no
//! database / no bundle; `69` the import target is on network (or unknown) storage, or the
//! guard refused to read the source; `73` the bundle directory or the import target (or its
//! state directory) already exists; `74` I/O, no space; `75` a writer holds the target, or
//! the source has a hot journal; `77` chown not permitted; `130` interrupted.
//!
//! With `--json`, stdout carries exactly one JSON document: the report, or
//! `{"schema":1,"outcome":"error","exit_code":N,"error":"…"}` when the command failed (the
//! message also goes to stderr).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use clap::Subcommand;
use sqlite_warden::ops::migrate::{
    self, BackupsInBundle, ExportOptions, ExportReport, ImportOptions, ImportReport, MigrateError, Owner,
    SessionsExportOptions, SessionsExportReport,
};

use super::CliError;
use super::shared::json_line;
use super::render::{human_bytes, short_hash};
use super::settings::{AuditDirArgs, BackupDirArgs, DbArgs, GateBudgetArgs, Resolve, SessionDirArgs};

/// `warden migrate`: moves a database to another host as one verified bundle.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
The move, in short: `export` on the old host, copy the whole bundle directory to the new one
(e.g. `rsync -a /tmp/engine-bundle/ vps:/tmp/engine-bundle/`), `import` there.

Exit codes:
  0   done
  64  usage: a bad --mode, an unknown --owner
  65  the bundle does not match its manifest (changed, truncated, `..` or absolute paths,
      symbolic links, unlisted files), or the database fails the integrity gate
  66  no database to export / no bundle to import
  69  the import target is on a network (or unknown) filesystem, or the guard refused to
      read the source
  73  the bundle directory, or the target database or its <db>.warden, already exists
  74  I/O error, no space
  75  a writer holds the target, or the source has a hot journal
  77  chown to --owner not permitted (run as root)
  130 interrupted

Examples (old host first, then the new one):
  warden migrate export --db /srv/share/engine.db --to /tmp/engine-bundle
  warden migrate import /tmp/engine-bundle --db /var/lib/engine/engine.db --owner engine:engine")]
pub struct MigrateArgs {
    #[command(subcommand)]
    cmd: MigrateCmd,
}

#[derive(Debug, Subcommand)]
enum MigrateCmd {
    /// On the old host: a verified bundle of the database (online backup API, through
    /// SQLite's locking; safe while the engine runs and on an SMB share), the session
    /// artifacts, the audit log and a MANIFEST.json of hashes.
    Export(ExportArgs),
    /// On the new host: verifies every hash, runs the gate, refuses network filesystems,
    /// installs the database with owner and mode, switches it to WAL and records the import.
    Import(ImportArgs),
}

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  warden migrate export --db /srv/share/engine.db --to /tmp/engine-bundle
  warden migrate export --config /etc/warden/warden.toml --to /tmp/engine-bundle --backups manifests")]
struct ExportArgs {
    /// The bundle directory to create; it must not exist.
    #[arg(long, value_name = "BUNDLE_DIR")]
    to: PathBuf,
    /// Backups to include: `none` (default), `manifests` (the history, not the data), `all`.
    #[arg(long, value_enum, default_value = "none")]
    backups: BackupsArg,
    /// Print one JSON document (the report) instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    db: DbArgs,
    #[command(flatten)]
    backup_dir: BackupDirArgs,
    #[command(flatten)]
    session_dir: SessionDirArgs,
    #[command(flatten)]
    audit_dir: AuditDirArgs,
    #[command(flatten)]
    gate_budget: GateBudgetArgs,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum BackupsArg {
    None,
    Manifests,
    All,
}

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  warden migrate import /tmp/engine-bundle --db /var/lib/engine/engine.db --owner engine:engine
  warden migrate import /tmp/engine-bundle --db /var/lib/engine/engine.db --mode 0600 --json")]
struct ImportArgs {
    /// The bundle directory `warden migrate export` made.
    #[arg(value_name = "BUNDLE_DIR")]
    bundle: PathBuf,
    /// Owner of the database, its lock file and its state directory: USER or USER:GROUP
    /// (names or numbers; default group: the user's). Needs root.
    #[arg(long, value_name = "USER[:GROUP]")]
    owner: Option<String>,
    /// Permission bits of the database, octal (never world-writable).
    #[arg(long, value_name = "MODE", default_value = "0640", value_parser = parse_mode)]
    mode: u32,
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
    gate_budget: GateBudgetArgs,
}

fn parse_mode(s: &str) -> Result<u32, String> {
    let digits = s.trim().trim_start_matches("0o");
    match u32::from_str_radix(digits, 8) {
        Ok(m) if m <= 0o7777 => Ok(m),
        _ => Err(format!("`{s}` is not an octal mode such as 0640")),
    }
}

fn failed(e: &MigrateError) -> CliError {
    CliError::Failed { message: e.to_string(), code: e.exit_code() }
}

/// With `--json`, a command that could not be carried out still prints one document.
fn json_errors(json: bool, result: Result<ExitCode, CliError>) -> Result<ExitCode, CliError> {
    if let (true, Err(e)) = (json, &result) {
        outln!(
            "{}",
            serde_json::json!({"schema": 1, "outcome": "error", "exit_code": e.exit_code(), "error": e.to_string()})
        );
    }
    result
}

/// A flag set by SIGINT/SIGTERM, so a long export stops cleanly (its temporary directory
/// removed).
fn cancel_on_signals() -> Result<Arc<AtomicBool>, CliError> {
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, flag.clone())
            .map_err(|source| CliError::Io { context: "installing signal handlers".into(), source })?;
    }
    Ok(flag)
}

/// `warden migrate`.
pub fn run(args: MigrateArgs) -> Result<ExitCode, CliError> {
    match args.cmd {
        MigrateCmd::Export(a) => {
            let json = a.json;
            json_errors(json, export(a))
        }
        MigrateCmd::Import(a) => {
            let json = a.json;
            json_errors(json, import(a))
        }
    }
}

fn export(a: ExportArgs) -> Result<ExitCode, CliError> {
    let settings =
        a.db.settings().with(a.backup_dir).with(a.session_dir).with(a.audit_dir).with(a.gate_budget).resolve()?;
    let guard = settings.guard()?;
    let opts = ExportOptions {
        session_dir: Some(settings.session_dir.clone()),
        audit_log: None,
        backup_dir: Some(settings.backup_dir.clone()),
        backups: match a.backups {
            BackupsArg::None => BackupsInBundle::None,
            BackupsArg::Manifests => BackupsInBundle::Manifests,
            BackupsArg::All => BackupsInBundle::All,
        },
        check_budget: settings.budget,
        guard: Some(guard),
        cancel: Some(cancel_on_signals()?),
    };
    let report = migrate::export(&settings.database, &a.to, &opts).map_err(|e| failed(&e))?;
    if a.json {
        out!("{}", json_line(&report));
    } else {
        out!("{}", render_export(&report));
    }
    Ok(ExitCode::SUCCESS)
}

fn render_export(r: &ExportReport) -> String {
    use std::fmt::Write as _;
    let m = &r.manifest;
    let mut o = String::new();
    let _ = writeln!(o, "exported {} to {}", m.source.db.display(), r.bundle.display());
    if let Some(v) = &m.source.storage {
        let _ = writeln!(
            o,
            "  source:      {} on host {} ({} storage, {})",
            m.source.db.display(),
            m.source.host,
            v.kind,
            v.fstype
        );
    }
    if let Some(d) = &m.database {
        let rows: u64 = d.row_counts.values().sum();
        let _ = writeln!(
            o,
            "  database:    {} ({}, sha256 {}…), {}, {} tables, {rows} rows",
            d.file,
            human_bytes(d.size),
            short_hash(&d.sha256),
            d.integrity.summary(),
            d.row_counts.len()
        );
    }
    let _ = writeln!(o, "  sessions:    {} artifact(s)", m.sessions().count());
    match m.entry(migrate::AUDIT_FILE) {
        Some(e) => {
            let _ = writeln!(o, "  audit log:   {} ({})", e.path, human_bytes(e.size));
        }
        None => {
            let _ = writeln!(o, "  audit log:   none");
        }
    }
    let backups = m.files.iter().filter(|e| e.path.starts_with(migrate::BACKUPS_DIR)).count();
    if backups > 0 {
        let _ = writeln!(o, "  backups:     {backups} file(s)");
    }
    let _ = writeln!(
        o,
        "  manifest:    {} sha256 {} ({} files, {})",
        migrate::MANIFEST_FILE,
        r.manifest_sha256,
        m.files.len(),
        human_bytes(r.bytes)
    );
    for n in &r.messages {
        let _ = writeln!(o, "  note:        {n}");
    }
    let _ = writeln!(
        o,
        "next: copy the whole directory to the new host, then `warden migrate import {} --db PATH`",
        r.bundle.display()
    );
    o
}

fn import(a: ImportArgs) -> Result<ExitCode, CliError> {
    let settings = a.db.settings().with(a.session_dir).with(a.audit_dir).with(a.gate_budget).resolve()?;
    let guard = settings.guard()?;
    let owner = match &a.owner {
        Some(spec) => Some(Owner::resolve(spec).map_err(|e| failed(&e))?),
        None => None,
    };
    let opts = ImportOptions {
        owner,
        mode: a.mode,
        session_dir: Some(settings.session_dir.clone()),
        check_budget: settings.budget,
        guard: Some(guard),
    };
    let report = migrate::import(&a.bundle, &settings.database, &opts).map_err(|e| failed(&e))?;
    if a.json {
        out!("{}", json_line(&report));
    } else {
        out!("{}", render_import(&report));
    }
    Ok(ExitCode::SUCCESS)
}

fn render_import(r: &ImportReport) -> String {
    use std::fmt::Write as _;
    let d = &r.database;
    let mut o = String::new();
    let _ = writeln!(o, "imported {} as {}", r.bundle.display(), r.target.display());
    let _ =
        writeln!(o, "  from:        host {} (`{}`), exported {}", r.source.host, r.source.db.display(), r.exported_at);
    let _ = writeln!(o, "  bundle:      every hash matches MANIFEST.json (sha256 {})", r.manifest_sha256);
    let rows: u64 = d.row_counts.values().sum();
    let _ =
        writeln!(o, "  gate:        {}, {} tables, {rows} rows as exported", d.integrity.summary(), d.row_counts.len());
    let _ = writeln!(o, "  storage:     {} ({})", r.storage.kind, r.storage.describe());
    let owner = r.owner.as_ref().map_or_else(|| "unchanged".to_owned(), Owner::describe);
    let _ = writeln!(
        o,
        "  installed:   {} ({}, sha256 {}…), mode {}, owner {owner}",
        r.target.display(),
        human_bytes(d.size),
        short_hash(&d.sha256),
        r.mode
    );
    let _ = writeln!(o, "  journal:     {} (header says WAL: {})", d.journal_mode, d.header_wal);
    let _ = writeln!(o, "  sessions:    {} artifact(s) in {}", r.sessions.len(), r.state_dir.display());
    if let Some(p) = &r.imported_audit {
        let _ = writeln!(o, "  old audit:   {}", p.display());
    }
    let _ = writeln!(o, "  lock file:   {}", r.lock_file.display());
    for n in &r.messages {
        let _ = writeln!(o, "  note:        {n}");
    }
    o
}

/// `warden sessions export`: the artifacts and the newest snapshot, for analysis elsewhere.
pub(crate) fn sessions_export(
    settings: Resolve,
    to: PathBuf,
    take_snapshot: bool,
    json: bool,
) -> Result<ExitCode, CliError> {
    json_errors(json, sessions_export_cmd(settings, to, take_snapshot, json))
}

fn sessions_export_cmd(settings: Resolve, to: PathBuf, take_snapshot: bool, json: bool) -> Result<ExitCode, CliError> {
    let settings = settings.resolve()?;
    let take_snapshot = if take_snapshot { Some(settings.snapshot_options(settings.guard()?)) } else { None };
    let opts = SessionsExportOptions {
        session_dir: Some(settings.session_dir.clone()),
        snapshot_dir: Some(settings.snapshot_dir.clone()),
        take_snapshot,
    };
    let report = migrate::export_sessions(&settings.database, &to, &opts).map_err(|e| failed(&e))?;
    if json {
        out!("{}", json_line(&report));
    } else {
        out!("{}", render_sessions_export(&report));
    }
    Ok(ExitCode::SUCCESS)
}

fn render_sessions_export(r: &SessionsExportReport) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "exported {} session artifact(s) of {} to {}",
        r.sessions,
        r.manifest.source.db.display(),
        r.dir.display()
    );
    match &r.snapshot {
        Some(s) => {
            let taken = if r.snapshot_taken.is_some() { ", taken now" } else { "" };
            let _ = writeln!(
                o,
                "  snapshot:    {} ({}, sha256 {}…, from {}{taken})",
                s.file,
                human_bytes(s.size),
                short_hash(&s.sha256),
                s.created
            );
        }
        None => {
            let _ = writeln!(o, "  snapshot:    none");
        }
    }
    let _ = writeln!(
        o,
        "  manifest:    {} sha256 {} ({} files, {})",
        migrate::MANIFEST_FILE,
        r.manifest_sha256,
        r.manifest.files.len(),
        human_bytes(r.bytes)
    );
    for n in &r.messages {
        let _ = writeln!(o, "  note:        {n}");
    }
    o
}

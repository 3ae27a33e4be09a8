//! `warden snapshot`: publishes one analysis snapshot and re-points `latest.sqlite` at it.
//!
//! Output: the snapshot's path and `latest` on stdout (two lines, `snapshot  PATH` and
//! `latest    PATH`), a one-line summary on stderr; with `--json`, one JSON document on
//! stdout instead (the [`SnapshotReport`]: `path`, `manifest_path`, `latest`, `dir`,
//! `manifest`, `removed`, `recovered`, `retention_error`; consumers ignore unknown fields).
//! Exit codes: 0 published; 65 the copy failed its check (the database is probably
//! damaged); 66 no database; 69 refused by the guard; 74 I/O or disk space; 75 a hot
//! journal (an engine died mid-transaction).

use std::process::ExitCode;

use sqlite_warden::copies::snapshot::{self, SnapshotReport};
use sqlite_warden::ops::config;

use super::CliError;
use super::shared::json_line;
use super::settings::{AuditDirArgs, DbArgs, SnapshotStoreArgs};

/// `warden snapshot` arguments.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Exit codes: 0 published; 65 the copy failed its check; 66 no database; 69 refused by the
guard; 74 I/O error or no space; 75 a hot journal (an engine died mid-transaction).

Examples:
  warden snapshot --db /var/lib/engine/engine.db
  warden snapshot --config /etc/warden/warden.toml --verify full --json")]
pub struct SnapshotArgs {
    /// The check of the copy: `quick` (quick_check, default), `full` (integrity_check) or
    /// `none` (overrides `[snapshots] check`).
    #[arg(long, value_name = "CHECK", value_parser = ["quick", "full", "none"])]
    verify: Option<String>,
    /// Print one JSON document instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    db: DbArgs,
    #[command(flatten)]
    audit_dir: AuditDirArgs,
    #[command(flatten)]
    snapshots: SnapshotStoreArgs,
}

/// Takes one snapshot.
///
/// # Errors
/// [`CliError::Failed`] with the snapshot error's message (and hint) and exit code; config
/// and guard errors as usual.
pub fn run(args: SnapshotArgs) -> Result<ExitCode, CliError> {
    let mut settings = args.db.settings().with(args.audit_dir).with(args.snapshots).resolve()?;
    if let Some(v) = args.verify.as_deref() {
        settings.snapshot_check = config::parse_snapshot_check(Some(v))?;
    }
    let guard = settings.guard()?;
    let opts = settings.snapshot_options(guard);
    let report = snapshot::take(&settings.database, &opts)
        .map_err(|e| CliError::Failed { message: e.to_string(), code: e.exit_code() })?;
    if args.json {
        out!("{}", json_line(&report));
    } else {
        outln!("snapshot  {}", report.path.display());
        outln!("latest    {}", report.latest.display());
        note!("warden: {}", summary(&report));
    }
    if let Some(e) = &report.retention_error {
        note!("warden: snapshot retention failed (the snapshot is published): {e}");
    }
    Ok(ExitCode::SUCCESS)
}

fn summary(r: &SnapshotReport) -> String {
    let m = &r.manifest;
    let check = m.check.as_ref().map_or_else(|| "not checked".to_owned(), |c| c.summary());
    let mut s = format!(
        "snapshot of {} ({} bytes, {check}, {} ms); latest re-pointed",
        m.source.display(),
        m.size,
        m.timings.total_ms
    );
    if !r.removed.is_empty() {
        s.push_str(&format!("; removed {} old snapshot(s)", r.removed.len()));
    }
    if !r.recovered.is_empty() {
        s.push_str(&format!("; cleaned {} leftover(s) of an interrupted run", r.recovered.len()));
    }
    s
}

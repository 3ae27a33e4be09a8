//! `warden backups`: the published backups, listed (text, or `--json`), and `verify`
//! re-hashing and re-checking them.
//! Does not own: the backup store or the verification ([`sqlite_warden::ops::status`]).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args as ClapArgs, Subcommand};
use sqlite_warden::ops::config::Settings;
use sqlite_warden::ops::status::{self, BackupInfo, BackupSelection, VerifyError, VerifyOptions, VerifyOutcome};
use sqlite_warden::util::exit;

use super::CliError;
use super::render::{human_bytes, short_hash};
use super::settings::{BackupDirArgs, DbArgs, GateCheckArgs};
use super::shared::{emit, json_line, lookup_error, secs, short_ts};

/// `warden backups`: list the published backups; `verify` re-hashes and re-checks them.
#[derive(Debug, ClapArgs)]
#[command(
    args_conflicts_with_subcommands = true,
    after_help = "\
Examples:
  warden backups --db /var/lib/engine/engine.db
  warden backups verify --all --config /etc/warden/warden.toml"
)]
pub struct BackupsArgs {
    #[command(subcommand)]
    cmd: Option<BackupsCmd>,
    /// Print JSON: an array of backups, newest first.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    db: DbArgs,
    #[command(flatten)]
    backup_dir: BackupDirArgs,
}

#[derive(Debug, Subcommand)]
enum BackupsCmd {
    /// Re-verifies backups without touching them: size and SHA-256 against the manifest,
    /// and the check, on a private copy. Default: the newest good backup.
    #[command(after_help = "\
Exit codes: 0 every backup verified; 65 any failed (named in the output); 66 no backup or no
such id; 64 an id prefix that matches several backups; 74 I/O error or no room for the copy.

Examples:
  warden backups verify --db /var/lib/engine/engine.db
  warden backups verify --all --db /var/lib/engine/engine.db --check quick --scratch-dir /var/tmp")]
    Verify {
        /// The backup id (or a prefix that matches only one).
        #[arg(conflicts_with = "all")]
        id: Option<String>,
        /// Every published backup (crash copies only need to match their hash).
        #[arg(long)]
        all: bool,
        /// Where the private copies go (default: $TMPDIR or /tmp).
        #[arg(long, value_name = "DIR")]
        scratch_dir: Option<PathBuf>,
        /// A quick spot check: re-hash every K-th stored page of each restore point (a file
        /// backup: its whole file); nothing is rebuilt or checked.
        #[arg(long, value_name = "K", value_parser = clap::value_parser!(u64).range(1..))]
        sample: Option<u64>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: DbArgs,
        #[command(flatten)]
        backup_dir: BackupDirArgs,
        #[command(flatten)]
        check: GateCheckArgs,
    },
}

/// `warden backups`.
pub fn backups(args: BackupsArgs) -> Result<ExitCode, CliError> {
    if let Some(BackupsCmd::Verify { id, all, db, backup_dir, check, scratch_dir, sample, json }) = args.cmd {
        let settings = db.settings().with(backup_dir).with(check).resolve()?;
        return verify_cmd(
            id,
            all,
            &settings,
            VerifyOptions { check: settings.check, budget: None, scratch_dir, sample },
            json,
        );
    }
    let settings = args.db.settings().with(args.backup_dir).resolve()?;
    let store = settings.backup_store();
    let now = jiff::Timestamp::now();
    let list: Vec<BackupInfo> = store.list()?.iter().map(|r| BackupInfo::of(r, now)).collect();
    if args.json {
        emit(&json_line(&serde_json::json!({ "backups": list })))?;
        return Ok(ExitCode::SUCCESS);
    }
    if list.is_empty() {
        emit(&format!("no backups in {}\n", settings.backup_dir.display()))?;
        return Ok(ExitCode::SUCCESS);
    }
    let width = list.iter().map(|b| b.id.len()).max().unwrap_or(2).max(2);
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{:<width$}  {:<10} {:<20} {:>9} {:>10} {:>10}  {:<8} {:<4}  {:<13} SESSION",
        "ID", "KIND", "CREATED", "AGE", "SIZE", "ADDED", "VERIFIED", "GOOD", "SHA256"
    );
    for b in &list {
        let _ = writeln!(
            o,
            "{:<width$}  {:<10} {:<20} {:>9} {:>10} {:>10}  {:<8} {:<4}  {:<13} {}",
            b.id,
            b.kind.as_str(),
            short_ts(&b.created),
            b.age_seconds.map_or_else(|| "?".into(), status::human_age),
            human_bytes(b.size),
            b.stored_bytes.map_or_else(|| "file".into(), human_bytes),
            if b.check_pending {
                "pending"
            } else if b.verified {
                "yes"
            } else {
                "NO"
            },
            if b.good { "yes" } else { "no" },
            format!("{}…", short_hash(&b.sha256)),
            b.session_id.as_deref().unwrap_or("-")
        );
    }
    let good = list.iter().filter(|b| b.good).count();
    let total: u64 = list.iter().map(|b| b.size).sum();
    let _ = writeln!(o, "{} backups ({} good), {} of restore points", list.len(), good, human_bytes(total));
    if let Ok(packs) = store.pages().packs()
        && !packs.is_empty()
    {
        let on_disk: u64 = packs.iter().map(|(_, n)| n).sum();
        let _ = writeln!(o, "page store: {} in {} packs", human_bytes(on_disk), packs.len());
    }
    let pending = list.iter().filter(|b| b.check_pending).count();
    if pending > 0 {
        let _ = writeln!(o, "{pending} waiting for their check (the next `warden run` gate checks them)");
    }
    emit(&o)?;
    Ok(ExitCode::SUCCESS)
}

fn verify_cmd(
    id: Option<String>,
    all: bool,
    settings: &Settings,
    opts: VerifyOptions,
    json: bool,
) -> Result<ExitCode, CliError> {
    let store = settings.backup_store();
    let which = match (id, all) {
        (Some(id), _) => BackupSelection::Id(id),
        (None, true) => BackupSelection::All,
        (None, false) => BackupSelection::NewestGood,
    };
    // `--all` means every published manifest: one that cannot be read is a failed backup.
    let unreadable = if matches!(which, BackupSelection::All) { store.unreadable_manifests()? } else { vec![] };
    for (path, why) in &unreadable {
        note!(
            "warden: FAILED `{}`: the manifest cannot be read ({why}); its backup cannot be verified or restored\n(hint: a damaged manifest is evidence: keep it; `warden backup` takes a fresh backup)",
            path.display()
        );
    }
    let report = match status::verify_backups(&store, &which, &opts) {
        Ok(r) => r,
        Err(VerifyError::NoBackups { what, dir }) => {
            return Err(CliError::Failed {
                message: VerifyError::NoBackups { what, dir }.to_string(),
                code: exit::NOINPUT,
            });
        }
        Err(VerifyError::Lookup(e)) => return Err(lookup_error(e)),
        Err(VerifyError::Backup(e)) => return Err(e.into()),
        Err(e) => return Err(CliError::Failed { message: e.to_string(), code: exit::SOFTWARE }),
    };
    if json {
        emit(&json_line(&report))?;
    } else {
        let mut o = String::new();
        for r in &report.results {
            let tag = match r.outcome {
                VerifyOutcome::Ok => "ok    ",
                VerifyOutcome::Failed => "FAILED",
                VerifyOutcome::Gone => "gone  ",
            };
            let detail = match (&r.reason, &r.integrity) {
                (Some(why), _) => why.clone(),
                (None, Some(i)) => format!("sha256 ok, {}", i.summary()),
                (None, None) => String::new(),
            };
            let _ = writeln!(o, "{tag} {} ({}, {}): {detail}", r.id, r.kind, secs(r.duration_ms));
        }
        let n = report.results.len();
        if report.ok {
            let _ = writeln!(o, "{n} backup(s) verified");
        } else {
            let _ = writeln!(
                o,
                "{} of {n} backup(s) FAILED verification\n(hint: a failed backup cannot be trusted for a restore; `warden backup` takes a fresh one, retention removes old ones)",
                report.failed
            );
        }
        emit(&o)?;
    }
    Ok(ExitCode::from(if report.ok && unreadable.is_empty() { exit::OK } else { exit::DATAERR }))
}

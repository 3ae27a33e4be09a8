//! `warden offsite`: push, list, verify, restore and keygen, rendering of
//! [`sqlite_warden::copies::offsite`].
//!
//! Exit codes: `0` done / every remote point verified; `65` a remote point failed
//! verification, a restore did not verify, or a remote point differs from the local one;
//! `66` no such remote point; `69` the remote is unreachable or refused a request; `73` the
//! restore target exists; `74` local I/O; `78` no (or a bad) `[offsite]`, credentials or
//! key. With `--json`, stdout carries exactly one JSON document.

use std::path::PathBuf;
use std::process::ExitCode;

use sqlite_warden::copies::offsite::{self, OffsiteConfig, OffsiteError, PushOptions};
use sqlite_warden::ops::config;
use sqlite_warden::util::exit;

use super::CliError;
use super::shared::json_line;
use super::render::human_bytes;
use super::settings::{AuditDirArgs, BackupDirArgs, DbArgs};

/// `warden offsite`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  warden offsite push --config /etc/warden/warden.toml
  warden offsite restore --config warden.toml --to /var/lib/engine/engine.db")]
pub struct OffsiteArgs {
    #[command(subcommand)]
    cmd: OffsiteCmd,
}

#[derive(Debug, clap::Subcommand)]
enum OffsiteCmd {
    /// Uploads the restore points the remote lacks (packs first, manifest last), then
    /// applies remote retention.
    #[command(after_help = "\
Examples:
  warden offsite push --config /etc/warden/warden.toml
  warden offsite push --db engine.db --url s3://backups/engine --endpoint http://127.0.0.1:8333")]
    Push {
        #[command(flatten)]
        db: DbArgs,
        #[command(flatten)]
        backup_dir: BackupDirArgs,
        #[command(flatten)]
        audit_dir: AuditDirArgs,
        #[command(flatten)]
        remote: RemoteArgs,
        /// Print the push record as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Lists the restore points on the remote, newest first.
    #[command(after_help = "\
Examples:
  warden offsite list --config /etc/warden/warden.toml
  warden offsite list --url s3://backups/engine --endpoint http://127.0.0.1:8333 --json")]
    List {
        #[command(flatten)]
        remote: RemoteArgs,
        /// Config file (only its `[offsite]` is read; no database is needed).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Checks every remote restore point: complete, and every pack it uses hashes to its
    /// name (all of them, or a `--sample` fraction).
    #[command(after_help = "\
Examples:
  warden offsite verify --config /etc/warden/warden.toml
  warden offsite verify --config /etc/warden/warden.toml --sample 0.1 --json")]
    Verify {
        #[command(flatten)]
        remote: RemoteArgs,
        /// Config file (only its `[offsite]` is read).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Download only this fraction of the packs (e.g. 0.1); completeness is always
        /// checked for every point.
        #[arg(long, value_name = "FRACTION")]
        sample: Option<f64>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Restores a remote point to a new file, byte for byte, re-verified (hash and full
    /// integrity check); never over an existing file.
    #[command(after_help = "\
Examples:
  warden offsite restore --config warden.toml --to /var/lib/engine/engine.db
  warden offsite restore --config warden.toml --to /tmp/old.db --point engine.db-20261201")]
    Restore {
        /// The new file.
        #[arg(long, value_name = "PATH")]
        to: PathBuf,
        /// The point: its id or a unique prefix (default: the newest good one).
        #[arg(long, value_name = "ID")]
        point: Option<String>,
        #[command(flatten)]
        remote: RemoteArgs,
        /// Config file (only its `[offsite]` is read).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Writes a new encryption key file (mode 0600; never over an existing file). Keep a
    /// copy off this host: without it, encrypted offsite copies cannot be restored.
    #[command(after_help = "\
Examples:
  warden offsite keygen --to /etc/warden/offsite.key")]
    Keygen {
        /// The key file to create.
        #[arg(long, value_name = "PATH")]
        to: PathBuf,
    },
}

/// Flags over `[offsite]`.
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Offsite (overrides warden.toml [offsite])")]
struct RemoteArgs {
    /// `s3://bucket/prefix`.
    #[arg(long, value_name = "URL")]
    url: Option<String>,
    /// The S3-compatible service's endpoint URL (default: AWS).
    #[arg(long, value_name = "URL")]
    endpoint: Option<String>,
    /// Region.
    #[arg(long)]
    region: Option<String>,
    /// The encryption key file.
    #[arg(long, value_name = "PATH")]
    key_file: Option<PathBuf>,
}

impl RemoteArgs {
    fn over(self, base: Option<OffsiteConfig>) -> Result<OffsiteConfig, CliError> {
        let mut c = match (base, &self.url) {
            (Some(c), _) => c,
            (None, Some(_)) => OffsiteConfig::default(),
            (None, None) => {
                return Err(failed(&OffsiteError::NotConfigured {
                    message: "no [offsite] url in the config, no --url".into(),
                }));
            }
        };
        if let Some(u) = self.url {
            c.url = u;
        }
        if self.endpoint.is_some() {
            c.endpoint = self.endpoint;
        }
        if self.region.is_some() {
            c.region = self.region;
        }
        if self.key_file.is_some() {
            c.key_file = self.key_file;
        }
        c.bucket_and_prefix().map_err(|message| failed(&OffsiteError::NotConfigured { message }))?;
        Ok(c)
    }
}

fn failed(e: &OffsiteError) -> CliError {
    CliError::Failed { message: e.to_string(), code: e.exit_code() }
}

/// `[offsite]` of the config file alone (a fresh host has no database yet).
fn offsite_only(path: Option<PathBuf>) -> Result<Option<OffsiteConfig>, CliError> {
    let Some(file) = config::discover(path.as_deref()) else { return Ok(None) };
    let fc = config::load(&file)?;
    let base = file.parent().map(std::path::Path::to_owned).unwrap_or_default();
    sqlite_warden::ops::offsite_config::resolve(fc.offsite, &base)
        .map_err(|(key, message)| CliError::Config(config::ConfigError::Invalid { key, message }))
}

/// `warden offsite …`.
pub fn run(args: OffsiteArgs) -> Result<ExitCode, CliError> {
    let json = match &args.cmd {
        OffsiteCmd::Push { json, .. }
        | OffsiteCmd::List { json, .. }
        | OffsiteCmd::Verify { json, .. }
        | OffsiteCmd::Restore { json, .. } => *json,
        OffsiteCmd::Keygen { .. } => false,
    };
    let result = run_cmd(args.cmd, json);
    if let (true, Err(e)) = (json, &result) {
        outln!(
            "{}",
            serde_json::json!({"schema": 1, "outcome": "error", "exit_code": e.exit_code(), "error": e.to_string()})
        );
    }
    result
}

fn run_cmd(cmd: OffsiteCmd, json: bool) -> Result<ExitCode, CliError> {
    match cmd {
        OffsiteCmd::Push { db, backup_dir, audit_dir, remote, .. } => {
            let settings = db.settings().with(backup_dir).with(audit_dir).resolve()?;
            let cfg = remote.over(settings.offsite.clone())?;
            let guard = settings.guard()?;
            let store = settings.backup_store();
            let mut last = std::time::Instant::now();
            let mut progress = |sent: u64, total: u64| {
                if !json && last.elapsed().as_secs() >= 2 {
                    note!("warden: pushed {} of {}", human_bytes(sent), human_bytes(total));
                    last = std::time::Instant::now();
                }
            };
            let opts = PushOptions { guard: Some(guard), progress: Some(&mut progress), record_path: None };
            let rec = offsite::push(&settings.database, &store, &cfg, opts).map_err(|e| failed(&e))?;
            if json {
                out!("{}", json_line(&rec));
            } else {
                outln!(
                    "pushed {} restore point(s), {} pack(s), {} to {}",
                    rec.points_pushed.len(),
                    rec.packs_pushed,
                    human_bytes(rec.bytes_pushed),
                    rec.remote
                );
                outln!("  on the remote: {} of {} local good points", rec.points_remote, rec.points_local);
                if !rec.points_deleted.is_empty() || rec.packs_deleted > 0 {
                    outln!(
                        "  remote retention: {} point(s), {} pack(s) deleted",
                        rec.points_deleted.len(),
                        rec.packs_deleted
                    );
                }
                for m in &rec.messages {
                    outln!("  note: {m}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        OffsiteCmd::List { remote, config, .. } => {
            let cfg = remote.over(offsite_only(config)?)?;
            let (url, points) = offsite::list(&cfg).map_err(|e| failed(&e))?;
            if json {
                out!("{}", json_line(&serde_json::json!({"remote": url, "points": points})));
            } else {
                outln!("{} restore point(s) at {url}", points.len());
                for p in &points {
                    let state = if p.complete { "" } else { "  INCOMPLETE" };
                    outln!("  {}  {}  {}{state}", p.id, p.kind, human_bytes(p.size));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        OffsiteCmd::Verify { remote, config, sample, .. } => {
            if let Some(f) = sample
                && !(f > 0.0 && f <= 1.0)
            {
                return Err(CliError::Usage(format!("--sample {f}: a fraction above 0 and at most 1 (e.g. 0.1)")));
            }
            let cfg = remote.over(offsite_only(config)?)?;
            let rep = offsite::verify(&cfg, sample).map_err(|e| failed(&e))?;
            if json {
                out!("{}", json_line(&rep));
            } else {
                let what = rep.sample.map_or("all".to_owned(), |f| format!("a {:.0}% sample", f * 100.0));
                outln!(
                    "{}: {} restore point(s) at {}; {} of {} pack(s) downloaded ({what}), {}",
                    if rep.ok { "verified" } else { "FAILED" },
                    rep.points.len(),
                    rep.remote,
                    rep.packs_checked,
                    rep.packs_used,
                    human_bytes(rep.bytes_downloaded)
                );
                for p in rep.points.iter().filter(|p| !p.ok) {
                    outln!("  BAD {}", p.id);
                    for why in &p.problems {
                        outln!("      {why}");
                    }
                }
                if rep.packs_unused > 0 {
                    outln!(
                        "  {} pack(s) no point uses (an interrupted push; the next one reuses them)",
                        rep.packs_unused
                    );
                }
            }
            Ok(if rep.ok { ExitCode::SUCCESS } else { ExitCode::from(exit::DATAERR) })
        }
        OffsiteCmd::Restore { to, point, remote, config, .. } => {
            let cfg = remote.over(offsite_only(config)?)?;
            let r = offsite::restore(&cfg, &to, point.as_deref()).map_err(|e| failed(&e))?;
            if json {
                out!("{}", json_line(&r));
            } else {
                outln!("restored {} from {} to {}", r.point, r.remote, r.to.display());
                outln!("  checks:   sha256 ok ({}), {}", &r.sha256[..12.min(r.sha256.len())], r.integrity.summary());
                outln!(
                    "  size:     {}, {} downloaded in {} ms",
                    human_bytes(r.size),
                    human_bytes(r.bytes_downloaded),
                    r.duration_ms
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        OffsiteCmd::Keygen { to } => {
            offsite::crypt::keygen(&to).map_err(|e| CliError::Failed {
                message: format!(
                    "cannot write the key file `{}`: {e}\n(hint: the file must not exist yet; pick a new path)",
                    to.display()
                ),
                code: if e.kind() == std::io::ErrorKind::AlreadyExists { exit::CANTCREAT } else { exit::IOERR },
            })?;
            outln!("wrote a new offsite key to {}", to.display());
            outln!(
                "  set [offsite] key_file = \"{}\" and keep a copy OFF this host and outside the bucket:",
                to.display()
            );
            outln!("  without it, nothing encrypted with it can be restored");
            Ok(ExitCode::SUCCESS)
        }
    }
}

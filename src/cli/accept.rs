//! `warden accept`: the operator's explicit "the database is right as it is" after a seal
//! refused it ([`sqlite_warden::session::sealing::accept`]). Owns the flags and the
//! rendering; the gate, the backup and the new seal are the library's.

use std::fmt::Write as _;
use std::process::ExitCode;

use clap::Args as ClapArgs;
use sqlite_warden::util::exit;

use super::CliError;
use super::check::render_seal;
use super::settings::{AuditDirArgs, BackupDirArgs, DbArgs, GateBudgetArgs, GateCheckArgs};
use super::shared::{emit, json_line};

/// `warden accept` arguments.
#[derive(Debug, ClapArgs)]
#[command(after_help = "\
Runs the full integrity gate on the database as it is now (under the writer lock, so never
during a session), publishes its verified copy as a backup and seals exactly that content:
the next `warden run` passes without comparing it with the old seal. Audited
(`seal_chain_started`). Use it after a refusal for a seal (exit 67) once you know the change
is right; otherwise restore the sealed backup the refusal names.

Exit codes: 0 accepted and sealed; 65 the gate failed (nothing sealed); 75 a writer holds
the database; the README's table has the rest.

Examples:
  warden accept --db /var/lib/engine/engine.db
  warden accept --config /etc/warden/warden.toml --json")]
pub struct AcceptArgs {
    /// Print one JSON document on stdout instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    db: DbArgs,
    #[command(flatten)]
    backup_dir: BackupDirArgs,
    #[command(flatten)]
    audit_dir: AuditDirArgs,
    #[command(flatten)]
    check: GateCheckArgs,
    #[command(flatten)]
    gate_budget: GateBudgetArgs,
}

/// `warden accept`.
pub fn run(args: AcceptArgs) -> Result<ExitCode, CliError> {
    let AcceptArgs { json, db, backup_dir, audit_dir, check, gate_budget } = args;
    let settings = db.settings().with(backup_dir).with(audit_dir).with(check).with(gate_budget).resolve()?;
    let guard = settings.guard()?;
    let store = settings.backup_store();
    let report = sqlite_warden::session::sealing::accept(
        &settings.database,
        &store,
        settings.check,
        settings.budget,
        Some(guard),
    )
    .map_err(|e| CliError::Failed { message: e.to_string(), code: e.exit_code() })?;
    let code = if report.sealed.is_some() {
        exit::OK
    } else if report.gate.passed {
        exit::IOERR
    } else {
        exit::DATAERR
    };
    if code != exit::OK {
        // Not accepted: said where errors go too, with the way out.
        let (why, hint) = if code == exit::IOERR {
            (report.error.clone().unwrap_or_else(|| "the seal was not written".into()), "once the disk is fixed, run")
        } else {
            (
                format!("the gate failed: {}", report.gate.summary()),
                "restore a good backup (`warden restore`), or fix the cause and run",
            )
        };
        eprintln!(
            "warden: `{}` was not accepted: {why}\n(hint: {hint} `warden accept --db {}` again)",
            report.db.display(),
            report.db.display()
        );
    }
    if json {
        let mut v = serde_json::to_value(&report).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            o.insert("exit_code".into(), code.into());
        }
        emit(&json_line(&v))?;
        return Ok(ExitCode::from(code));
    }
    let mut o = String::new();
    match &report.sealed {
        Some(content) => {
            let _ = writeln!(
                o,
                "{}: accepted as it is and sealed (content {}, backup {})",
                report.db.display(),
                &content[..content.len().min(12)],
                report.backup_id.as_deref().unwrap_or("-")
            );
        }
        None => {
            let _ = writeln!(o, "{}: NOT accepted: {}", report.db.display(), report.error.as_deref().unwrap_or("?"));
        }
    }
    let _ = writeln!(o, "  gate:      {}", report.gate.summary());
    let _ = writeln!(o, "  replaced:");
    render_seal(&mut o, &report.replaced);
    emit(&o)?;
    Ok(ExitCode::from(code))
}

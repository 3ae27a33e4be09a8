//! `warden salvage <db> --to <new file>`: recovers what it can into a new file and says
//! plainly that the result is suspect.

use std::path::PathBuf;
use std::process::ExitCode;

use sqlite_warden::copies::salvage::{self, Method};

use super::CliError;
use super::shared::json_line;

/// `warden salvage`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Exit codes: 0 salvaged (the result is suspect); 65 nothing readable; 66 no database; 69 no
sqlite3 shell for --method recover; 73 the target exists; 74 I/O error.

Examples:
  warden salvage /var/lib/engine/engine.db --to /var/tmp/engine-salvaged.db
  warden salvage /var/lib/engine/engine.db --to /var/tmp/engine-rows.db --method rows --json")]
pub struct SalvageArgs {
    /// The damaged database (only read, never modified).
    db: PathBuf,
    /// The new file to write (must not exist).
    #[arg(long, value_name = "FILE")]
    to: PathBuf,
    /// `auto` (sqlite3's `.recover` when available, else `rows`), `recover`, or `rows`.
    #[arg(long, value_enum, default_value = "auto")]
    method: MethodArg,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// `--method` values.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum MethodArg {
    /// `recover` when the sqlite3 shell is available, else `rows`.
    Auto,
    /// The sqlite3 shell's `.recover`: reads pages directly.
    Recover,
    /// warden's row-by-row copy, skipping damaged ranges.
    Rows,
}

/// Runs `warden salvage`.
pub fn run(args: SalvageArgs) -> Result<ExitCode, CliError> {
    let method = match args.method {
        MethodArg::Auto => Method::Auto,
        MethodArg::Recover => Method::Recover,
        MethodArg::Rows => Method::Rows,
    };
    let report = salvage::salvage(&args.db, &args.to, method)
        .map_err(|e| CliError::Failed { message: e.to_string(), code: e.exit_code() })?;
    if args.json {
        out!("{}", json_line(&report));
        return Ok(ExitCode::SUCCESS);
    }
    outln!("{}", report.output.display());
    note!(
        "warden: SUSPECT DATA: salvaged {} rows from {} into {} ({:?} method, {} ms).",
        report.total_rows,
        report.source.display(),
        report.output.display(),
        report.method,
        report.duration_ms
    );
    note!("warden: the original is untouched. Whatever sat on damaged pages is missing or wrong here, and");
    note!("warden: nothing here was verified against a known-good state: prefer `warden restore` from a");
    note!("warden: verified backup, and use this file only to recover what happened since that backup.");
    if let Some(why) = &report.fallback_reason {
        note!("warden: (used `rows` because `.recover` was not available: {why})");
    }
    for t in &report.tables {
        let errs =
            if t.errors > 0 { format!(", {} read errors: {}", t.errors, t.messages.join("; ")) } else { String::new() };
        note!("warden:   {:<24} {:>10} rows{errs}", t.name, t.rows);
    }
    for e in &report.schema_errors {
        note!("warden:   schema: {e}");
    }
    note!("warden: output integrity_check: {}", report.output_integrity.join("; "));
    note!("warden: report: {}.salvage.json", report.output.display());
    Ok(ExitCode::SUCCESS)
}

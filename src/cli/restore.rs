//! `warden restore` (being written).

use std::process::ExitCode;

use super::CliError;

/// Arguments (placeholder).
#[derive(Debug, clap::Args)]
pub struct RestoreArgs {}

/// Not yet implemented.
pub fn run(_args: RestoreArgs) -> Result<ExitCode, CliError> {
    Err(CliError::Failed { message: "not implemented yet".into(), code: 70 })
}

/// Arguments (placeholder).
#[derive(Debug, clap::Args)]
pub struct DrillArgs {}

/// Not yet implemented.
pub fn drill(_args: DrillArgs) -> Result<ExitCode, CliError> {
    Err(CliError::Failed { message: "not implemented yet".into(), code: 70 })
}

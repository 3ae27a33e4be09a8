//! `warden migrate` (being written).

use std::process::ExitCode;

use super::CliError;

/// Arguments (placeholder).
#[derive(Debug, clap::Args)]
pub struct MigrateArgs {}

/// Not yet implemented.
pub fn run(_args: MigrateArgs) -> Result<ExitCode, CliError> {
    Err(CliError::Failed { message: "not implemented yet".into(), code: 70 })
}

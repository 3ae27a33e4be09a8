//! `warden doctor` (being written).

use std::process::ExitCode;

use super::CliError;

/// Arguments (placeholder).
#[derive(Debug, clap::Args)]
pub struct DoctorArgs {}

/// Not yet implemented.
pub fn run(_args: DoctorArgs) -> Result<ExitCode, CliError> {
    Err(CliError::Failed { message: "not implemented yet".into(), code: 70 })
}

//! `warden check/status/sessions/backups/audit` (being written).

use std::process::ExitCode;

use super::CliError;

/// Arguments (placeholder).
#[derive(Debug, clap::Args)]
pub struct CheckArgs {}

/// Not yet implemented.
pub fn check(_args: CheckArgs) -> Result<ExitCode, CliError> {
    Err(CliError::Failed { message: "not implemented yet".into(), code: 70 })
}

/// Arguments (placeholder).
#[derive(Debug, clap::Args)]
pub struct StatusArgs {}

/// Not yet implemented.
pub fn status(_args: StatusArgs) -> Result<ExitCode, CliError> {
    Err(CliError::Failed { message: "not implemented yet".into(), code: 70 })
}

/// Arguments (placeholder).
#[derive(Debug, clap::Args)]
pub struct SessionsArgs {}

/// Not yet implemented.
pub fn sessions(_args: SessionsArgs) -> Result<ExitCode, CliError> {
    Err(CliError::Failed { message: "not implemented yet".into(), code: 70 })
}

/// Arguments (placeholder).
#[derive(Debug, clap::Args)]
pub struct BackupsArgs {}

/// Not yet implemented.
pub fn backups(_args: BackupsArgs) -> Result<ExitCode, CliError> {
    Err(CliError::Failed { message: "not implemented yet".into(), code: 70 })
}

/// Arguments (placeholder).
#[derive(Debug, clap::Args)]
pub struct AuditArgs {}

/// Not yet implemented.
pub fn audit(_args: AuditArgs) -> Result<ExitCode, CliError> {
    Err(CliError::Failed { message: "not implemented yet".into(), code: 70 })
}

//! Rendering every file for a deployment ([`render`], pure): validation, then the units, timers
//! and logrotate snippet as [`RenderedFile`]s. Does not own: writing them ([`super::write`]).

use super::error::DeployError;
use super::jobs::{JOBS, job_service, job_timer};
use super::logrotate::logrotate;
use super::options::DeployOptions;
use super::units::engine_service;

/// One rendered file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedFile {
    /// The file name (no directory): `engine.service`, `warden-engine`, ….
    pub name: String,
    /// Its contents.
    pub contents: String,
}

/// Renders every file for `opts` (pure: reads and writes nothing).
///
/// # Errors
/// [`DeployError`] for a value that cannot be rendered safely: a relative or unquotable
/// path, one under `/tmp`, a bad unit, user or group name, no engine command.
pub fn render(opts: &DeployOptions) -> Result<Vec<RenderedFile>, DeployError> {
    opts.validate()?;
    let mut files = vec![RenderedFile { name: opts.service_name(), contents: engine_service(opts) }];
    for job in &JOBS {
        files.push(RenderedFile {
            name: format!("{}-{}.service", opts.unit, job.suffix),
            contents: job_service(opts, job),
        });
        files
            .push(RenderedFile { name: format!("{}-{}.timer", opts.unit, job.suffix), contents: job_timer(opts, job) });
    }
    files.push(RenderedFile { name: opts.logrotate_name(), contents: logrotate(opts) });
    Ok(files)
}

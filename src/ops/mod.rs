//! Operator features the CLI renders: configuration, status, doctor, migration, deploy.
//!
//! Reachable for the CLI and tests, but not the crate's face: engines use `guard`,
//! `session` and `copies`.

pub mod config;
pub mod deploy;
pub mod doctor;
pub mod migrate;
pub mod offsite_config;
pub mod status;

//! Why the service files cannot be rendered or written ([`DeployError`]), and its exit code.
//! Does not own: the checks that raise it.

use std::path::PathBuf;

/// Why the files cannot be rendered or written.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// A path is relative.
    #[error("{what} `{}` is not an absolute path\n(hint: unit files need absolute paths; give the full path)", path.display())]
    RelativePath {
        /// Which setting.
        what: &'static str,
        /// The path.
        path: PathBuf,
    },
    /// A path cannot be written unambiguously into a unit or logrotate file.
    #[error("{what} `{}` cannot be written into a unit file: {reason}", path.display())]
    UnsafePath {
        /// Which setting.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// Why, with a hint.
        reason: String,
    },
    /// A path lies where `PrivateTmp=yes` hides it.
    #[error("{what} `{}` is under {root}, which the units cannot see (PrivateTmp=yes gives each a private, empty {root})\n(hint: use a persistent directory such as /var/lib/<unit>)", path.display())]
    PrivateTmp {
        /// Which setting.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// `/tmp` or `/var/tmp`.
        root: &'static str,
    },
    /// Any other unusable value.
    #[error("invalid {what} `{value}`: {reason}")]
    Invalid {
        /// Which setting.
        what: &'static str,
        /// The value.
        value: String,
        /// Why, with a hint.
        reason: String,
    },
    /// The configuration names no engine command.
    #[error(
        "the configuration has no engine command: `warden run --config` would exit 64 and restart forever\n(hint: add `[engine] command = [\"/usr/local/bin/engine\", \"--live\"]` to the config)"
    )]
    NoEngineCommand,
    /// A file exists with other contents.
    #[error("`{}` exists with different contents; nothing was written\n(hint: compare it with `warden deploy … --out` into an empty directory, then pass --force to replace it)", path.display())]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// Reading or writing failed.
    #[error("{action} `{}`: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// Where.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

impl DeployError {
    /// The process exit code: 64 bad options, 73 a file exists, 74 I/O, 78 configuration.
    pub fn exit_code(&self) -> u8 {
        use crate::util::exit;
        match self {
            DeployError::RelativePath { .. }
            | DeployError::UnsafePath { .. }
            | DeployError::PrivateTmp { .. }
            | DeployError::Invalid { .. } => exit::USAGE,
            DeployError::NoEngineCommand => exit::CONFIG,
            DeployError::Exists { .. } => exit::CANTCREAT,
            DeployError::Io { .. } => exit::IOERR,
        }
    }
}

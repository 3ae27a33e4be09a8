//! The kinds of backup warden takes, shared by the backup store, retention and the health
//! artifact.

use serde::{Deserialize, Serialize};

/// Why a backup was taken. Part of its file name and of its manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackupKind {
    /// Before a session started (doubles as the integrity gate's private copy).
    Pre,
    /// After the engine closed cleanly (exit status 0).
    Post,
    /// After the engine exited uncleanly: evidence, never the "last good" backup.
    PostCrash,
    /// Asked for by an operator (`warden backup`).
    Manual,
}

impl BackupKind {
    /// The name used in file names and text output.
    pub fn as_str(self) -> &'static str {
        match self {
            BackupKind::Pre => "pre",
            BackupKind::Post => "post",
            BackupKind::PostCrash => "post-crash",
            BackupKind::Manual => "manual",
        }
    }

    /// Parses [`BackupKind::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pre" => BackupKind::Pre,
            "post" => BackupKind::Post,
            "post-crash" => BackupKind::PostCrash,
            "manual" => BackupKind::Manual,
            _ => return None,
        })
    }

    /// A copy of this kind may be restored as a known-good state once verified.
    pub fn can_be_good(self) -> bool {
        self != BackupKind::PostCrash
    }
}

impl std::fmt::Display for BackupKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

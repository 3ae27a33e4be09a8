//! What a scan reports: [`ScanReport`], its [`Finding`]s and their [`Severity`], and the
//! [`WalSummary`]. Owns no judgement: the checks that push findings live in `db_header`,
//! `wal` and `journal`.

use serde::{Deserialize, Serialize};

/// How bad a [`Finding`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// The set is damaged, or SQLite would silently lose committed data: blocks a session.
    Fatal,
    /// Worth reporting, but benign: SQLite handles it correctly.
    Warning,
}

/// One thing a scan found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// Stable, machine-readable reason, e.g. `not_a_database` (the table in the module docs).
    pub code: String,
    /// Whether it blocks a session.
    pub severity: Severity,
    /// For humans: names the file and the numbers involved.
    pub message: String,
}

impl Finding {
    fn new(code: &str, severity: Severity, message: String) -> Self {
        Finding { code: code.to_owned(), severity, message }
    }

    /// True for [`Severity::Fatal`].
    pub fn is_fatal(&self) -> bool {
        self.severity == Severity::Fatal
    }
}

/// What one scan of a database set saw.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanReport {
    /// Size of the database file in bytes.
    pub db_size: u64,
    /// Page size from the database header, when the header is valid enough to hold one.
    pub page_size: Option<u32>,
    /// The in-header database size in pages, only when SQLite would trust it (nonzero, and the
    /// change counter equals the version-valid-for number).
    pub header_pages: Option<u32>,
    /// The WAL, when a non-empty `-wal` file exists.
    pub wal: Option<WalSummary>,
    /// Size of the `-journal` file in bytes, when one exists (0 is a finished TRUNCATE journal).
    pub journal_bytes: Option<u64>,
    /// Everything found, in the order found.
    pub findings: Vec<Finding>,
}

impl ScanReport {
    /// The findings that block a session.
    pub fn fatal(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(|f| f.is_fatal())
    }

    /// True when nothing fatal was found.
    pub fn is_ok(&self) -> bool {
        self.fatal().next().is_none()
    }

    pub(super) fn push(&mut self, code: &str, severity: Severity, message: String) {
        self.findings.push(Finding::new(code, severity, message));
    }
}

/// What the frames of a WAL say.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalSummary {
    /// Size of the `-wal` file in bytes.
    pub size: u64,
    /// Page size from the WAL header (0 when the header is shorter than 32 bytes).
    pub page_size: u32,
    /// Frames in the valid prefix: right salts, nonzero page number, checksum chain intact.
    pub valid_frames: u64,
    /// Frames up to and including the last commit frame of the valid prefix: what SQLite's
    /// recovery will use.
    pub committed_frames: u64,
    /// Intact frames of the current generation (the header's salts, a checksum that chains from
    /// the frame before) found after the first break. SQLite drops them silently.
    pub frames_after_break: u64,
    /// The WAL ends in a partial frame, or in a broken frame of the current generation with no
    /// intact frame after it: the signature of an append cut short by a crash. Benign.
    pub torn_tail: bool,
    /// Frames after the valid prefix that carry other salts than the header's: leftovers of
    /// earlier generations (benign after a checkpoint-and-restart), or of a header rewritten
    /// over committed frames.
    #[serde(default)]
    pub stale_frames: u64,
    /// Pages that committed transactions among those frames write and that were compared with
    /// the database file: only for frames whose pages must be there (see `wal_header_reset`
    /// and `wal_stale_commits`), less pages the current generation wrote or truncated.
    #[serde(default)]
    pub stale_pages_checked: u64,
    /// How many of those the database file does not hold. Nonzero means SQLite silently drops
    /// committed data.
    #[serde(default)]
    pub stale_pages_not_in_db: u64,
}

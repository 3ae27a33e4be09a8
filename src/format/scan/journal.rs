//! The `-journal` beside the database: its size, whether its header makes it hot, and the
//! `hot_journal` warning. Does not own recovering a hot journal (the gate does, on its copy).

use std::io::{self, Read};

use super::report::{ScanReport, Severity};
use crate::sys::sqlite::VfsFile;

/// The rollback journal header magic (fileformat2 §3): a journal whose header still carries it
/// has not been finished (DELETE, TRUNCATE and PERSIST all remove or zero it at commit).
const JOURNAL_MAGIC: [u8; 8] = [0xd9, 0xd5, 0x05, 0xf9, 0x20, 0xa1, 0x63, 0xd7];

/// What the `-journal` beside the database looks like.
pub(super) struct JournalState {
    size: u64,
    pub(super) hot: bool,
}

impl JournalState {
    /// Reads the size and the header magic of an open `-journal`.
    pub(super) fn read(file: &VfsFile) -> io::Result<JournalState> {
        let mut head = Vec::with_capacity(JOURNAL_MAGIC.len());
        file.reader().take(JOURNAL_MAGIC.len() as u64).read_to_end(&mut head)?;
        Ok(JournalState { size: file.len(), hot: head == JOURNAL_MAGIC })
    }

    /// Records the journal in `report`: its size, and a `hot_journal` warning when it is hot.
    pub(super) fn note(&self, report: &mut ScanReport, db: &str) {
        report.journal_bytes = Some(self.size);
        if self.hot {
            report.push(
                "hot_journal",
                Severity::Warning,
                format!(
                    "`{db}-journal` ({} bytes) holds an unfinished transaction; SQLite rolls it back \
                     on open, which the gate does on its private copy",
                    self.size
                ),
            );
        }
    }
}

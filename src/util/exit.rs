//! The process exit codes of `warden`: the whole table, in one place.
//!
//! sysexits(3) names where one fits (`USAGE` 64 … `CONFIG` 78), and warden's own codes: `1`
//! for `warden fs` ("not safe"), the health codes `10`–`16` of `warden status` and
//! `warden doctor`, [`FOREIGN_WRITER`] (`17`, the same for `warden run` and `warden status`),
//! the engine-start failures `126`/`127` and the signal base `128` of
//! `warden run`, and `130` for an interrupted command. `warden run` otherwise exits with the
//! engine's own status, which may be any number.
//!
//! Two numbers mean different things to different commands, and the table names both:
//! `10` is [`STATUS_BACKUP`] for `warden status` and [`DOCTOR_WARN`] for `warden doctor`;
//! `11` is [`STATUS_DATABASE`] and [`DOCTOR_FAIL`].
//!
//! Every `exit_code()` of the crate and of the CLI returns one of these constants. The
//! README's section "Exit codes" lists exactly [`TABLE`]; a test keeps the two identical.

/// One row of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// The exit code (for [`SIGNAL_BASE`]: the base of `128 + N`).
    pub code: u8,
    /// The constant's name, e.g. `"DATAERR"`.
    pub name: &'static str,
    /// What it means, and for which commands.
    pub meaning: &'static str,
}

macro_rules! exit_codes {
    ($($name:ident = $code:literal: $meaning:literal;)*) => {
        $(
            #[doc = $meaning]
            pub const $name: u8 = $code;
        )*
        /// Every exit code, in ascending order; a code that means different things to
        /// different commands has one row per meaning.
        pub const TABLE: &[Entry] = &[$(Entry { code: $code, name: stringify!($name), meaning: $meaning }),*];
    };
}

exit_codes! {
    OK = 0: "Success: the command did what was asked; the answer is \"safe\", \"healthy\", \"passed\".";
    NOT_SAFE = 1: "`warden fs`: a path is not safe for the engine (network, no locking, or unknown storage).";
    STATUS_BACKUP = 10: "`warden status`: no good backup, the newest is older than `--max-backup-age`, or the backups cannot be listed.";
    DOCTOR_WARN = 10: "`warden doctor`: warnings only.";
    STATUS_DATABASE = 11: "`warden status`: the last integrity gate failed, the database is missing or empty, or a restore was interrupted.";
    DOCTOR_FAIL = 11: "`warden doctor`: at least one check failed.";
    STATUS_SESSION = 12: "`warden status`: the last session ended badly (engine failed, abandoned, no post-session backup, refused), or the artifacts cannot be read.";
    STATUS_WRITER_DIED = 13: "`warden status`: the writer lock was never released by its last holder (an engine died), or it cannot be inspected.";
    STATUS_STORAGE = 14: "`warden status`: the database or the backups are not on local storage (or it cannot be judged), or SQLite is older than 3.51.3.";
    STATUS_DISK = 15: "`warden status`: free space below the floor (room for the next backup, or `--min-free-bytes`).";
    STATUS_DRILL = 16: "`warden status`: the last restore drill failed, or its record cannot be read.";
    FOREIGN_WRITER = 17: "A process other than warden and its engine had the database open for writing during a session: `warden run` stopped the engine for it (`on_foreign_writer = \"stop\"`); `warden status`: the last session saw one.";
    STATUS_OFFSITE = 18: "`warden status`: offsite copies are configured and a good restore point has been on this host only for longer than `[offsite] max_lag`, or no push record can be read.";
    USAGE = 64: "Usage: a bad flag or argument (a path that is not UTF-8 among them), no engine command, an ambiguous id prefix, an option `warden deploy` cannot render safely.";
    DATAERR = 65: "Data damaged: the integrity gate or a check failed, the file is not an SQLite database, a backup or bundle does not match its manifest or is not a known-good state, a manifest or artifact cannot be read, the set changed while it was copied.";
    NOINPUT = 66: "Input missing: no database (or an empty one without `--create`), a directory or other non-file where the database should be, no backup, no such id, no bundle.";
    UNSEALED = 67: "Changed unseen: the database is not what the last clean close sealed (changed without a guarded session), or its seal is damaged; `warden run` did not start the engine, `warden check` failed (the way out: restore the sealed backup, or `warden accept`).";
    UNAVAILABLE = 69: "Refused: storage not local, unsafe WAL, the guard refused the open; `warden salvage`: no sqlite3 shell; `warden offsite`: the remote is unreachable or refused a request.";
    SOFTWARE = 70: "Internal error, or SQLite older than 3.51.3 (`warden run`).";
    CANTCREAT = 73: "Cannot create: the target exists (or a file is in the way, e.g. a directory named `<db>-warden.lock`), not enough free space for the pre-session backup, the artifact cannot be written.";
    IOERR = 74: "I/O error or disk full, or an audit record could not be written (a command that lost one never exits 0); `warden run`: the engine exited 0 but the post-session backup failed.";
    TEMPFAIL = 75: "Busy: the writer lock is held by another session or engine, a hot journal needs a session to recover it, a restore is unfinished.";
    NOPERM = 77: "Not permitted: this user may not read (or write) the database or create it in its directory; `warden migrate import --owner` without root.";
    CONFIG = 78: "Invalid configuration: an unreadable or invalid config file or value, an empty retention policy, no `[engine] command` to deploy; `warden offsite`: no (or a bad) `[offsite]`, no credentials, a missing or wrong encryption key.";
    ENGINE_NOT_EXECUTABLE = 126: "`warden run`: the engine could not be executed.";
    ENGINE_NOT_FOUND = 127: "`warden run`: the engine was not found.";
    SIGNAL_BASE = 128: "`warden run`: `128 + N` when signal N killed the engine (so 130 is also an engine killed by SIGINT).";
    CANCELLED = 130: "Interrupted (SIGINT or SIGTERM) before the work was done.";
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rows of the markdown table under `## Exit codes` in the README:
    /// `(code, name, meaning)` per row.
    fn readme_table(readme: &str) -> Vec<(u8, String, String)> {
        let section = readme
            .split("\n## ")
            .find(|s| s.starts_with("Exit codes\n"))
            .expect("the README has a section `## Exit codes`");
        let mut rows = Vec::new();
        for line in section.lines().filter(|l| l.starts_with('|')) {
            let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
            if cells.len() < 3 || cells[0] == "exit" || cells[0].starts_with("---") {
                continue;
            }
            let code = cells[0].strip_suffix(" + N").unwrap_or(cells[0]);
            let code: u8 = code.parse().unwrap_or_else(|_| panic!("README exit code `{}` is not a number", cells[0]));
            rows.push((code, cells[1].trim_matches('`').to_owned(), cells[2..].join("|")));
        }
        rows
    }

    fn readme() -> String {
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap()
    }

    #[test]
    fn the_readme_lists_exactly_this_table() {
        let rows = readme_table(&readme());
        assert!(!rows.is_empty(), "no rows in the README's exit-code table");
        for (code, name, meaning) in &rows {
            let Some(e) = TABLE.iter().find(|e| e.code == *code && e.name == name) else {
                panic!("the README lists exit {code} as `{name}`, which util::exit::TABLE does not have");
            };
            assert_eq!(meaning, e.meaning, "the README's meaning of exit {code} `{name}` differs from util::exit");
        }
        for e in TABLE {
            assert!(
                rows.iter().any(|(c, n, _)| *c == e.code && n == e.name),
                "util::exit::{} ({}) is missing from the README's exit-code table",
                e.name,
                e.code
            );
        }
        assert_eq!(rows.len(), TABLE.len(), "the README lists a code twice");
    }

    /// The per-command tables of the README (`| exit | … |`) name only codes of the table.
    #[test]
    fn every_code_the_readme_names_is_in_the_table() {
        let text = readme();
        let mut in_table = false;
        for line in text.lines() {
            let line = line.trim();
            if !line.starts_with('|') {
                in_table = false;
                continue;
            }
            let first = line.trim_matches('|').split('|').next().unwrap_or_default().trim();
            if first == "exit" {
                in_table = true;
                continue;
            }
            if !in_table {
                continue;
            }
            for part in first.split(',') {
                let part = part.trim().trim_end_matches(" + N");
                if let Ok(code) = part.parse::<u8>() {
                    assert!(TABLE.iter().any(|e| e.code == code), "the README names exit {code}: not in the table");
                }
            }
        }
    }

    #[test]
    fn the_table_is_sorted_and_names_are_unique() {
        for w in TABLE.windows(2) {
            assert!(w[0].code <= w[1].code, "{} before {}", w[0].name, w[1].name);
        }
        for e in TABLE {
            assert_eq!(TABLE.iter().filter(|x| x.name == e.name).count(), 1, "{}", e.name);
            assert!(!e.meaning.is_empty());
        }
        // A code shared by two meanings is shared only by the commands that say so.
        let shared: Vec<u8> =
            TABLE.iter().map(|e| e.code).filter(|c| TABLE.iter().filter(|e| e.code == *c).count() > 1).collect();
        assert!(shared.iter().all(|c| [10, 11].contains(c)), "{shared:?}");
        assert_eq!(
            (USAGE, DATAERR, NOINPUT, UNSEALED, UNAVAILABLE, SOFTWARE, CANTCREAT, IOERR, TEMPFAIL, CONFIG),
            (64, 65, 66, 67, 69, 70, 73, 74, 75, 78)
        );
    }
}

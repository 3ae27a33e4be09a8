//! The integrity check of a private copy, and its report.
//!
//! Owns: [`CheckMode`], [`IntegrityReport`] and [`check_file`], which every verified copy
//! (backups, snapshots, restores, imports) runs. Does not own making the copy or deciding
//! what a failed check means for a session.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};
use serde::{Deserialize, Serialize};

use crate::util::fmt::ms;

/// The VFS private copies are opened on: SQLite's own `unix`, never a guard. Nothing else
/// opens a private copy, so there is nothing to guard; and the guard's policy (storage,
/// writer lock, audit) is about the live database, whose parent VFS is configured per guard
/// (`GuardConfig::parent`).
pub(crate) const PRIVATE_VFS: &std::ffi::CStr = c"unix";

/// How thoroughly a copy is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckMode {
    /// `PRAGMA integrity_check`: every b-tree, every index entry against its table, UNIQUE,
    /// CHECK and NOT NULL constraints. O(N log N). The default.
    #[default]
    Full,
    /// `PRAGMA quick_check`: the same minus index-versus-table and UNIQUE checks. O(N),
    /// roughly five times faster; for very large databases with a nightly full check.
    Quick,
}

impl CheckMode {
    /// The pragma's name: `integrity_check` or `quick_check`.
    pub fn pragma(self) -> &'static str {
        match self {
            CheckMode::Full => "integrity_check",
            CheckMode::Quick => "quick_check",
        }
    }
}

/// The result of checking a copy. A failed check is a report, not an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntegrityReport {
    /// Which pragma ran.
    pub mode: CheckMode,
    /// True only when the pragma returned exactly one row, `ok`, and no foreign key is
    /// violated, and nothing failed or timed out.
    pub ok: bool,
    /// The pragma's rows (at most 100, SQLite's own cap), or the error it raised.
    pub messages: Vec<String>,
    /// Rows of `PRAGMA foreign_key_check`.
    pub foreign_key_violations: u64,
    /// The first few violations, as `table rowid -> parent`.
    pub foreign_key_messages: Vec<String>,
    /// Set when the check could not run to the end (an error, the time budget, a cancel).
    pub error: Option<String>,
    /// The time budget ran out (the check fails closed).
    pub timed_out: bool,
    /// Wall time of the check.
    pub duration_ms: u64,
}

impl IntegrityReport {
    /// A failed check: `error` is its one message; `elapsed` is how long it ran.
    pub(crate) fn failed(mode: CheckMode, error: String, elapsed: Duration) -> Self {
        IntegrityReport {
            mode,
            ok: false,
            messages: vec![error.clone()],
            foreign_key_violations: 0,
            foreign_key_messages: Vec::new(),
            error: Some(error),
            timed_out: false,
            duration_ms: ms(elapsed),
        }
    }

    /// One line: `ok`, or the first problem.
    pub fn summary(&self) -> String {
        if self.ok {
            return format!("{}: ok", self.mode.pragma());
        }
        if self.timed_out {
            return format!("{}: timed out after {} ms (fails closed)", self.mode.pragma(), self.duration_ms);
        }
        if let Some(e) = &self.error {
            return e.clone();
        }
        let lines = self.problem_lines();
        if let Some(first) = lines.first() {
            let more = lines.len() - 1;
            let more = if more > 0 { format!(" (+{more} more)") } else { String::new() };
            return format!("{}: {first}{more}", self.mode.pragma());
        }
        format!(
            "foreign_key_check: {} violation(s), first: {}",
            self.foreign_key_violations,
            self.foreign_key_messages.first().map(String::as_str).unwrap_or("?")
        )
    }
}

/// Where the damage a check found lies: one b-tree (by its root page, `None` for what
/// belongs to no tree: freelist, unused pages) and the pages named in its messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DamageSite {
    /// Root page of the b-tree (`sqlite_schema.rootpage`), when the messages name one.
    pub tree: Option<u64>,
    /// Pages named, ascending.
    pub pages: Vec<u64>,
    /// How many problems.
    pub problems: usize,
}

impl IntegrityReport {
    /// Every problem the pragma reported, one line each: SQLite puts several into one row
    /// (`*** in database main ***` and what follows), and the heading is no problem.
    pub fn problem_lines(&self) -> Vec<&str> {
        self.messages
            .iter()
            .flat_map(|m| m.lines())
            .map(str::trim)
            .filter(|l| !l.is_empty() && *l != "ok" && !(l.starts_with("***") && l.ends_with("***")))
            .collect()
    }

    /// The problems grouped by b-tree and page (`Tree 2 page 6 cell 3: …`, `Page 12: never
    /// used`, `… of page 6`), largest group first: a damage report reads by object and page,
    /// not as forty near-identical lines.
    pub fn damage_sites(&self) -> Vec<DamageSite> {
        let mut sites: Vec<DamageSite> = Vec::new();
        for line in self.problem_lines() {
            let lower = line.to_ascii_lowercase();
            let number_after = |word: &str| -> Option<u64> {
                let at = lower.find(word)? + word.len();
                let digits: String = lower[at..].chars().take_while(char::is_ascii_digit).collect();
                digits.parse().ok()
            };
            let tree = number_after("tree ");
            let page = number_after("page ");
            let i = match sites.iter().position(|s| s.tree == tree) {
                Some(i) => i,
                None => {
                    sites.push(DamageSite { tree, pages: Vec::new(), problems: 0 });
                    sites.len() - 1
                }
            };
            let site = &mut sites[i];
            site.problems += 1;
            if let Some(p) = page
                && !site.pages.contains(&p)
            {
                site.pages.push(p);
            }
        }
        for s in &mut sites {
            s.pages.sort_unstable();
        }
        sites.sort_by_key(|s| std::cmp::Reverse(s.problems));
        sites
    }
}

/// Runs the check pragma and `foreign_key_check` on a read-write connection to `path`.
/// Never returns `ok` unless exactly one row `ok` came back, with no error, interruption or
/// foreign key violation. Returns the report (a failed check, including a copy that cannot
/// be opened, is a report, not an error) and the copy's page size and page count.
pub fn check_file(
    path: &Path,
    mode: CheckMode,
    budget: Option<Duration>,
    cancel: Option<Arc<AtomicBool>>,
) -> (IntegrityReport, (u32, u64)) {
    let started = Instant::now();
    // Read-write on purpose: SQLite attaches CHECK constraints only to writable schemas.
    let mut conn = match Connection::open_with_flags_and_vfs(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        PRIVATE_VFS,
    ) {
        Ok(c) => c,
        Err(e) => return (IntegrityReport::failed(mode, format!("open failed: {e}"), started.elapsed()), (0, 0)),
    };
    let timed_out = Arc::new(AtomicBool::new(false));
    {
        let deadline = budget.map(|b| started + b);
        let timed_out = timed_out.clone();
        let installed = conn.progress_handler(
            10_000,
            Some(move || {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    timed_out.store(true, Ordering::Relaxed);
                    return true;
                }
                cancel.as_ref().is_some_and(|c| c.load(Ordering::Relaxed))
            }),
        );
        if let Err(e) = installed {
            return (
                IntegrityReport::failed(mode, format!("cannot set the time budget: {e}"), started.elapsed()),
                (0, 0),
            );
        }
    }
    let _ = conn.execute_batch("PRAGMA query_only=ON; PRAGMA cache_size=-65536;");
    let rows: rusqlite::Result<Vec<String>> = (|| {
        let mut st = conn.prepare(&format!("PRAGMA {}", mode.pragma()))?;
        let it = st.query_map([], |r| r.get::<_, String>(0))?;
        it.collect()
    })();
    let mut report = match rows {
        Ok(rows) => IntegrityReport {
            mode,
            ok: rows.len() == 1 && rows[0] == "ok",
            messages: rows,
            foreign_key_violations: 0,
            foreign_key_messages: Vec::new(),
            error: None,
            timed_out: false,
            duration_ms: 0,
        },
        Err(e) => IntegrityReport::failed(mode, format!("{} failed: {e}", mode.pragma()), started.elapsed()),
    };
    if report.ok {
        let fk: rusqlite::Result<Vec<String>> = (|| {
            let mut st = conn.prepare("PRAGMA foreign_key_check")?;
            let it = st.query_map([], |r| {
                let table: String = r.get(0)?;
                let rowid: Option<i64> = r.get(1)?;
                let parent: String = r.get(2)?;
                Ok(format!("{table} rowid {} -> {parent}", rowid.map_or("?".into(), |v| v.to_string())))
            })?;
            it.collect()
        })();
        match fk {
            Ok(v) => {
                report.foreign_key_violations = v.len() as u64;
                report.ok = v.is_empty();
                report.foreign_key_messages = v.into_iter().take(20).collect();
            }
            Err(e) => {
                report.ok = false;
                report.error = Some(format!("foreign_key_check failed: {e}"));
            }
        }
    }
    if timed_out.load(Ordering::Relaxed) {
        report.ok = false;
        report.timed_out = true;
        report.error =
            Some(format!("time budget of {} s exceeded", budget.map(|b| b.as_secs_f64()).unwrap_or_default()));
    }
    let page_size: u32 = conn.query_row("PRAGMA page_size", [], |r| r.get(0)).unwrap_or(0);
    let page_count: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0)).unwrap_or(0);
    let page_count = u64::try_from(page_count).unwrap_or(0);
    report.duration_ms = ms(started.elapsed());
    (report, (page_size, page_count))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_damage_report_reads_by_tree_and_page() {
        let mut r = IntegrityReport::failed(CheckMode::Full, String::new(), Duration::ZERO);
        r.error = None;
        r.messages = vec![
            "*** in database main ***\nTree 2 page 6 cell 67: invalid page number 2021161080\nTree 2 page 6 cell 66: Rowid -1 out of order".into(),
            "Tree 2 page 7 cell 1: Rowid 63 out of order".into(),
            "Multiple uses for byte 287 of page 6".into(),
            "Page 12: never used".into(),
            "Tree 9 page 40: btreeInitPage() returns error code 11".into(),
        ];
        let lines = r.problem_lines();
        assert_eq!(lines.len(), 6, "{lines:?}");
        assert!(!lines.iter().any(|l| l.starts_with("***")));
        assert_eq!(r.summary(), "integrity_check: Tree 2 page 6 cell 67: invalid page number 2021161080 (+5 more)");
        assert!(!r.summary().contains('\n'));
        let sites = r.damage_sites();
        assert_eq!(
            sites,
            vec![
                DamageSite { tree: Some(2), pages: vec![6, 7], problems: 3 },
                DamageSite { tree: None, pages: vec![6, 12], problems: 2 },
                DamageSite { tree: Some(9), pages: vec![40], problems: 1 },
            ]
        );
    }
}

//! The `storage` check (local storage for the database and its backups) and the `free_space`
//! check (room for the next backup). Does not own the storage verdict ([`crate::storage`]).

use std::path::{Path, PathBuf};

use serde_json::json;

use super::facts::bytes;
use super::model::{Check, Ctx, Verdict, mk};
use crate::copies::backup::{BackupStore, sidecar};

pub(super) fn storage(cx: &Ctx<'_>) -> Check {
    let mut parts = Vec::new();
    let mut bad = Vec::new();
    for (what, path, v) in [("database", &cx.db, &cx.db_verdict), ("backups", &cx.backup_dir, &cx.backup_verdict)] {
        match v {
            Ok(v) => {
                parts.push(format!("{what} `{}`: {} on {}: {}", path.display(), v.kind, v.describe(), v.reason));
                if !v.kind.is_local() {
                    bad.push(what);
                }
            }
            Err(e) => {
                parts.push(format!("{what} `{}`: cannot be examined: {e}", path.display()));
                bad.push(what);
            }
        }
    }
    let verdict = if bad.is_empty() { Verdict::Pass } else { Verdict::Fail };
    let fix = format!(
        "move the {} to a local disk (ext4/xfs on this host's own volume; `warden migrate export`/`import` does it verified); warden refuses the engine on network or unknown storage",
        bad.join(" and ")
    );
    let data = json!({
        "database": cx.db_verdict.as_ref().ok(),
        "backups": cx.backup_verdict.as_ref().ok(),
        "errors": [cx.db_verdict.as_ref().err(), cx.backup_verdict.as_ref().err()],
    });
    mk("storage", "local storage for the database and its backups", verdict, parts.join("; "), fix, data)
}

fn size_of(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// `p`, or its nearest existing ancestor.
fn nearest_existing(p: &Path) -> PathBuf {
    let mut at = p.to_owned();
    while !at.exists() {
        match at.parent() {
            Some(q) if !q.as_os_str().is_empty() => at = q.to_owned(),
            _ => return PathBuf::from("/"),
        }
    }
    at
}

pub(super) fn free_space(cx: &Ctx<'_>) -> Check {
    let db_bytes = size_of(&cx.db);
    let wal = size_of(&sidecar(&cx.db, "-wal"));
    let jrnl = size_of(&sidecar(&cx.db, "-journal"));
    let total = db_bytes + wal + jrnl;
    let needed = BackupStore::space_needed(&cx.db);
    let factor = if cx.opts.min_free_factor.is_finite() && cx.opts.min_free_factor > 0.0 {
        cx.opts.min_free_factor
    } else {
        3.0
    };
    let comfortable = needed.max((total as f64 * factor) as u64);
    let mut verdict = Verdict::Pass;
    let mut parts = vec![format!(
        "database {} (-wal {}, -journal {}); one backup needs {} (+10 % +1 MiB); warn below {factor}× the database ({})",
        bytes(db_bytes),
        bytes(wal),
        bytes(jrnl),
        bytes(needed),
        bytes(comfortable)
    )];
    let mut dirs = Vec::new();
    let mut short = None;
    for (what, dir) in [("database", &cx.dir), ("backups", &cx.backup_dir)] {
        let at = nearest_existing(dir);
        let shown = if &at == dir {
            format!("`{}`", at.display())
        } else {
            format!("`{}` (nearest existing: `{}`)", dir.display(), at.display())
        };
        match crate::copies::copy::free_bytes(&at) {
            Ok(free) => {
                let v = if free < needed {
                    Verdict::Fail
                } else if free < comfortable {
                    Verdict::Warn
                } else {
                    Verdict::Pass
                };
                if v > verdict {
                    verdict = v;
                }
                if v == Verdict::Fail {
                    short = Some((at.clone(), needed - free));
                }
                parts.push(format!("{what} dir {shown}: {} free", bytes(free)));
                dirs.push(json!({"dir": what, "path": at, "free_bytes": free, "verdict": v}));
            }
            Err(e) => {
                verdict = verdict.max(Verdict::Warn);
                parts.push(format!("{what} dir {shown}: free space cannot be measured: {e}"));
                dirs.push(json!({"dir": what, "path": at, "free_bytes": null, "error": e.to_string()}));
            }
        }
    }
    let fix = match (verdict, short) {
        (Verdict::Fail, Some((at, missing))) => format!(
            "free at least {} in `{}` (or point --backup-dir at a larger local disk): the next backup would fail for lack of space",
            bytes(missing),
            at.display()
        ),
        _ => format!(
            "keep at least {factor}× the database free where it and its backups live (retention keeps several copies, the database grows): free space or lower retention"
        ),
    };
    let data = json!({
        "database_bytes": db_bytes, "wal_bytes": wal, "journal_bytes": jrnl,
        "backup_needs_bytes": needed, "warn_below_bytes": comfortable, "dirs": dirs,
    });
    mk("free_space", "free space for the database and its backups", verdict, parts.join("; "), fix, data)
}

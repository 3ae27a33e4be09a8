//! Small helpers every step shares: file names and existence, directories, leftovers of killed
//! runs, the space preflight, row counts, audit records, the guard, hashing. Owns no step itself.

use std::collections::BTreeMap;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use super::error::{MigrateError, io_err};
use crate::copies::copy;
use crate::guard::audit::{AuditEvent, AuditRecord};
use crate::guard::vfs::Guard;
use crate::util::atomic;

pub(super) fn exists(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok()
}

pub(super) fn file_name(p: &Path) -> String {
    p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "db".into())
}

pub(super) fn sync_dir(dir: &Path) -> Result<(), MigrateError> {
    atomic::sync_dir(dir).map_err(io_err("syncing", dir))
}

pub(super) fn make_dir(dir: &Path, mode: u32) -> Result<(), MigrateError> {
    std::fs::DirBuilder::new().recursive(true).mode(mode).create(dir).map_err(io_err("creating", dir))
}

/// Removes the entries of `dir` named `<prefix>…` whose owner process (see
/// [`atomic::temp_owner`]) is gone: what a killed export or import left.
pub(super) fn remove_dead_temps(dir: &Path, prefix: &str) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for entry in rd.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with(prefix) {
            continue;
        }
        if atomic::temp_owner(&name).is_some_and(atomic::pid_alive) {
            continue;
        }
        let p = entry.path();
        let removed = if p.is_dir() { std::fs::remove_dir_all(&p) } else { std::fs::remove_file(&p) };
        if removed.is_ok() {
            tracing::warn!(path = %p.display(), "removed the leftover of a killed export or import");
        }
    }
}

pub(super) fn space_preflight(dir: &Path, raw: u64) -> Result<(), MigrateError> {
    let needed = copy::with_headroom(raw);
    let available = copy::free_bytes(dir).map_err(|e| io_err("statvfs", dir)(e.into()))?;
    if available < needed {
        return Err(MigrateError::NoSpace { dir: dir.to_owned(), needed, available });
    }
    Ok(())
}

/// `count(*)` of every ordinary table of the database at `path` (virtual tables are skipped;
/// their shadow tables are counted).
pub(super) fn row_counts(path: &Path) -> rusqlite::Result<BTreeMap<String, u64>> {
    let c = Connection::open_with_flags_and_vfs(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        c"unix",
    )?;
    let names: Vec<String> = {
        let mut st = c.prepare(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND coalesce(sql, '') NOT LIKE 'CREATE VIRTUAL%' ORDER BY name",
        )?;
        st.query_map([], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?
    };
    let mut out = BTreeMap::new();
    for n in names {
        let q = format!("SELECT count(*) FROM \"{}\"", n.replace('"', "\"\""));
        let count: i64 = c.query_row(&q, [], |r| r.get(0))?;
        out.insert(n, u64::try_from(count).unwrap_or(0));
    }
    Ok(out)
}

/// Appends an audit record through `guard` (or to the default log); a lost record is
/// returned as a message for the report (the operation stands either way).
pub(super) fn audit(
    guard: Option<&Guard>,
    event: AuditEvent,
    db: &Path,
    decision: &str,
    reason: String,
) -> Option<String> {
    let mut r = AuditRecord::decided(event, db, decision, reason);
    crate::guard::vfs::audit_with(guard, &mut r).err().map(|e| format!("the audit record was lost: {e}"))
}

pub(super) fn guard_or_default(guard: Option<&Guard>) -> Result<Guard, MigrateError> {
    match guard {
        Some(g) => Ok(g.clone()),
        None => crate::guard::vfs::default_guard().map_err(|e| MigrateError::Usage { message: e.to_string() }),
    }
}

pub(super) fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    crate::util::fmt::hex(&Sha256::digest(bytes))
}

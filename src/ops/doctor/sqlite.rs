//! The `sqlite` check (linked SQLite vs. the floor) and the `journal` check (journal mode from
//! the header, sidecars, what `synchronous` the factory sets). Does not open the database
//! through SQLite.

use std::io;

use serde_json::json;

use super::facts::bytes;
use super::model::{Check, Ctx, Verdict, mk};
use crate::copies::backup::sidecar;
use crate::guard::lock::LockState;
use crate::guard::sqlite_host::version_text;

pub(super) fn sqlite() -> Check {
    let n = crate::guard::vfs::sqlite_version_number();
    let floor = crate::guard::vfs::SQLITE_FLOOR;
    let linked = rusqlite::version();
    let build = if cfg!(feature = "bundled") {
        "the SQLite compiled into warden (bundled build, tested with 3.54.x)"
    } else {
        "the host's SQLite library (not the bundled build)"
    };
    let ok = crate::guard::sqlite_host::wal_reset_fixed(n);
    let detail = format!(
        "linked SQLite {linked}, {build}; floor {} (3.7.0–3.51.2 carry the WAL-reset corruption bug){}; an engine that loads warden as an extension runs on its host's SQLite (the `extension` check)",
        version_text(floor),
        if ok { "" } else { ": TOO OLD" }
    );
    mk(
        "sqlite",
        "SQLite library version",
        if ok { Verdict::Pass } else { Verdict::Fail },
        detail,
        format!("rebuild warden with the bundled SQLite (3.54.x) or upgrade libsqlite3 to ≥ {}", version_text(floor)),
        json!({"version": linked, "version_number": n, "floor": version_text(floor), "bundled": cfg!(feature = "bundled")}),
    )
}

/// Where the loadable extension is installed: `WARDEN_EXTENSION` (as the units set it, with
/// or without `.so`), the Debian package's path, the runbook's older source-install path.
fn installed_extensions() -> Vec<std::path::PathBuf> {
    let mut candidates: Vec<std::path::PathBuf> = Vec::new();
    if let Some(p) = std::env::var_os("WARDEN_EXTENSION").filter(|p| !p.is_empty()) {
        let p = std::path::PathBuf::from(p);
        candidates.push(if p.extension().is_some_and(|e| e == "so") { p } else { p.with_extension("so") });
    }
    candidates.push("/usr/lib/sqlite3/libwarden.so".into());
    candidates.push("/usr/local/lib/warden/libwarden.so".into());
    candidates.dedup();
    candidates.into_iter().filter(|p| p.is_file()).collect()
}

/// The loadable extension's mode on this host's shared SQLite (the one Debian's python3 and
/// sqlite3 shell run on): full, rollback-journal-only, or refused.
pub(super) fn extension() -> Check {
    use crate::guard::sqlite_host::{SQLITE_OLDEST, extension_mode, system_sqlite, version_text};
    const ID: &str = "extension";
    const TITLE: &str = "loadable extension on the system SQLite";
    let installed = installed_extensions();
    let where_ = if installed.is_empty() {
        "the loadable extension is not installed (Rust engines do not need it)".to_owned()
    } else {
        format!("extension {}", installed.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))
    };
    let Some((v, lib)) = system_sqlite() else {
        return mk(
            ID,
            TITLE,
            Verdict::Pass,
            format!("{where_}; no system libsqlite3.so.0: a host that bundles its SQLite (apsw, pysqlite3) decides the mode"),
            String::new(),
            json!({"installed": installed, "system_sqlite": null, "mode": null}),
        );
    };
    let mode = extension_mode(v);
    let meaning = match mode {
        "full" => "full guard, WAL allowed on local storage".to_owned(),
        "rollback_only" => format!(
            "rollback-journal-only mode: SQLite {} lacks the WAL-reset fix (3.51.3, or the backports 3.50.7 and 3.44.6), so WAL is refused on every storage and a WAL-mode database is refused for the engine",
            version_text(v)
        ),
        _ => format!("the extension refuses to load: SQLite {} is older than {}", version_text(v), version_text(SQLITE_OLDEST)),
    };
    let refused = mode == "refused" && !installed.is_empty();
    mk(
        ID,
        TITLE,
        if refused { Verdict::Warn } else { Verdict::Pass },
        format!(
            "{where_}; hosts on {} (SQLite {}) get the {meaning}; apsw and pysqlite3 bring their own SQLite",
            lib.display(),
            version_text(v)
        ),
        "run the engine on a host with its own SQLite ≥ 3.40 (`pip install apsw`), or upgrade libsqlite3".into(),
        json!({"installed": installed, "system_sqlite": version_text(v), "library": lib, "mode": mode}),
    )
}

pub(super) fn journal(cx: &Ctx<'_>) -> Check {
    const ID: &str = "journal";
    const TITLE: &str = "journal mode and synchronous";
    let sync_note = match &cx.lock {
        Ok(st) if st.state == LockState::Held => {
            let who = st.record.as_ref().map(|r| r.holder.describe()).unwrap_or_else(|| "an engine".into());
            format!(
                "the writer lock is held by {who}: the engine opened through warden's factory, which sets synchronous=FULL unless the engine chose NORMAL/EXTRA (EngineOptions::synchronous)"
            )
        }
        Ok(st) if st.state == LockState::NeverUsed => {
            "no guarded engine has opened this database yet; warden's factory sets synchronous=FULL by default".into()
        }
        Ok(_) => {
            "no engine runs now; warden's factory sets synchronous=FULL by default (EngineOptions::synchronous)".into()
        }
        Err(e) => format!("the writer lock cannot be read ({e}); warden's factory sets synchronous=FULL by default"),
    };
    let unknowable = "synchronous is per connection and cannot be read from outside the engine";
    // Through SQLite's VFS, like every read of a database that may be live.
    let header = crate::format::header::read_raw_header(&cx.db);
    let header = match header {
        Ok(h) => h,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return mk(
                ID,
                TITLE,
                Verdict::Warn,
                format!(
                    "the database `{}` does not exist yet; on local storage warden's factory creates it in WAL mode; {sync_note}",
                    cx.db.display()
                ),
                "create or import it (`warden migrate import`, or `warden run --create` once) before the first session"
                    .into(),
                json!({"journal": null, "synchronous_default": "FULL"}),
            );
        }
        Err(e) => {
            return mk(
                ID,
                TITLE,
                Verdict::Warn,
                format!("the header of `{}` cannot be read: {e}; {sync_note}", cx.db.display()),
                "run doctor as the engine's user so it can read the database header".into(),
                json!({"journal": null, "error": e.to_string()}),
            );
        }
    };
    let n = header.len();
    if n == 0 {
        return mk(
            ID,
            TITLE,
            Verdict::Warn,
            format!("the database `{}` is empty (0 bytes): no journal mode yet; {sync_note}", cx.db.display()),
            "let the engine initialise it (`warden run --create`) or import the real database".into(),
            json!({"journal": null, "bytes": 0}),
        );
    }
    if n < 100 || &header[..16] != b"SQLite format 3\0" {
        return mk(
            ID,
            TITLE,
            Verdict::Fail,
            format!("`{}` is not a SQLite database (first {n} bytes do not carry the SQLite header)", cx.db.display()),
            "check the path: --db must name the engine's SQLite file".into(),
            json!({"journal": null, "bytes": n}),
        );
    }
    let (w, r) = (header[18], header[19]);
    let wal_bytes = std::fs::metadata(sidecar(&cx.db, "-wal")).ok().map(|m| m.len());
    let shm = sidecar(&cx.db, "-shm").exists();
    let jrnl = std::fs::metadata(sidecar(&cx.db, "-journal")).ok().map(|m| m.len());
    let local = cx.db_verdict.as_ref().is_ok_and(|v| v.kind.is_local());
    let fstype = cx.db_verdict.as_ref().map(|v| v.fstype.clone()).unwrap_or_else(|_| "unknown storage".into());
    let (mode, verdict, what, fix) = match (w, r) {
        (2, 2) => {
            let side = format!(
                "-wal {}, -shm {}",
                wal_bytes.map(bytes).unwrap_or_else(|| "absent".into()),
                if shm { "present" } else { "absent" }
            );
            if local {
                (
                    "wal",
                    Verdict::Pass,
                    format!("WAL (header bytes 18/19 = 2/2) on local storage; {side}"),
                    String::new(),
                )
            } else {
                (
                    "wal",
                    Verdict::Warn,
                    format!("WAL (header bytes 18/19 = 2/2) on {fstype}, which is not local storage: WAL's shared memory only works on one host; {side}"),
                    "stop every opener, switch to a rollback journal (`PRAGMA journal_mode=DELETE`) and move the database to a local disk".into(),
                )
            }
        }
        (1, 1) => {
            let hot = match jrnl {
                Some(b) if b > 0 => {
                    format!("; a -journal of {} is present: a transaction is running or was interrupted", bytes(b))
                }
                _ => String::new(),
            };
            let next = if local {
                "warden's factory switches it to WAL at the next engine open"
            } else {
                "kept in rollback mode: warden refuses WAL on non-local storage"
            };
            (
                "rollback",
                Verdict::Pass,
                format!(
                    "rollback journal (header bytes 18/19 = 1/1): DELETE, TRUNCATE or PERSIST, the header cannot tell which; {next}{hot}"
                ),
                String::new(),
            )
        }
        _ => (
            "unknown",
            Verdict::Fail,
            format!("unknown file format versions in header bytes 18/19 = {w}/{r}"),
            "the file may be damaged: run `warden check` and keep the last verified backup at hand".into(),
        ),
    };
    let data = json!({"journal": mode, "header_write_version": w, "header_read_version": r,
        "wal_bytes": wal_bytes, "shm": shm, "journal_bytes": jrnl, "local_storage": local,
        "synchronous_default": "FULL",
        "lock_state": cx.lock.as_ref().ok().map(|s| s.state)});
    mk(ID, TITLE, verdict, format!("{what}; {sync_note}; {unknowable}"), fix, data)
}

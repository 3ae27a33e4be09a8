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
        "linked SQLite {linked}, {build}; floor {} (3.7.0–3.51.2 carry the WAL-reset corruption bug){}; an engine that loads warden as an extension runs on its host's libsqlite3: check that one too",
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

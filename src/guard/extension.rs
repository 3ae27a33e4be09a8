//! The guard as a SQLite loadable extension: what happens when a host (Python's sqlite3,
//! apsw, the sqlite3 shell, Node, …) loads `libwarden.so`.
//!
//! Owns: the extension's configuration (environment variables, below), registering the
//! `warden` / `warden-ro` VFS pair once per process on the *host's* SQLite, optionally as the
//! default VFS, and the SQL functions that let a host ask the guard. Does not own: the entry
//! symbol (`sqlite3_warden_init`, in the `ext/` crate, which is built with the
//! `loadable_extension` feature so that it links no SQLite of its own) or the guard itself
//! ([`crate::guard::vfs`]): the extension enforces exactly what the Rust factory enforces.
//!
//! Loading is idempotent: a second load (same or another connection) neither wraps the VFS
//! twice nor fails, and the extension asks to stay loaded (`SQLITE_OK_LOAD_PERMANENTLY`), so
//! the VFS outlives the connection that loaded it. A host whose SQLite lacks the WAL-reset
//! fix (before 3.51.3, apart from the backports 3.50.7+ and 3.44.6+; Debian 12's and
//! Ubuntu 24.04's python3) gets the guard in rollback-journal-only mode: WAL is refused in
//! every layer on every storage, and `warden_status`/`warden_version` say `"mode":
//! "rollback_only"`. A host older than 3.40 is refused.
//!
//! Environment (read at the first load):
//! - `WARDEN_AUDIT_DIR`: where the audit log goes (as for the Rust factory);
//! - `WARDEN_NETWORK_POLICY`: `refuse` (default) or `rollback-only`;
//! - `WARDEN_DEFAULT_VFS=1`: make `warden` the default VFS, so a host that cannot name a VFS
//!   still opens through the guard (tooling then opens with `vfs=warden-ro`);
//! - `WARDEN_MOUNTINFO`: read the mount table from this file instead of
//!   `/proc/self/mountinfo` (tests of simulated mounts; `statfs` stays real);
//! - `WARDEN_LOCK_FD`: the writer lock handed over by `warden run` (see [`crate::guard::lock`]).
//!
//! SQL functions, on the connection that loaded the extension:
//! - `warden_status(path)`: JSON with the storage verdict, whether WAL is allowed there, and
//!   the writer lock (held, by whom);
//! - `warden_version()`: warden's version, the host's SQLite, and the VFS names.
//!
//! On every connection opened through the guard, `PRAGMA warden_status` answers for that
//! connection (role, verdict, lock, I/O counters) as it does in Rust.
//!
//! Registering the guard also registers, once per process, SQLite's auto-extension hook on
//! the host's SQLite: every connection the host opens afterwards with its main database on
//! `warden-ro` is restricted before the host gets it (attached databases read-only, and
//! `ATTACH` only of in-memory databases or through `warden-ro` itself), exactly as the Rust
//! factory's tooling connections are; see `guard::open::restrict_tool_connection`.

use std::path::Path;
use std::sync::Arc;

use rusqlite::Connection;
use rusqlite::functions::FunctionFlags;

use crate::guard::policy::{NetworkPolicy, Policy};
use crate::guard::vfs::{self, GuardConfig};
use crate::storage::{FsProbe, RealProbe};

fn config_from_env() -> Result<GuardConfig, String> {
    let network = match std::env::var("WARDEN_NETWORK_POLICY").ok().as_deref().map(str::trim) {
        None | Some("" | "refuse") => NetworkPolicy::Refuse,
        Some("rollback-only" | "rollback_only") => NetworkPolicy::RollbackOnly,
        Some(other) => {
            return Err(format!("WARDEN_NETWORK_POLICY={other} is not a policy (hint: `refuse` or `rollback-only`)"));
        }
    };
    let probe: Arc<dyn FsProbe> = match std::env::var_os("WARDEN_MOUNTINFO").filter(|v| !v.is_empty()) {
        Some(p) => Arc::new(RealProbe::with_mountinfo_file(p)),
        None => Arc::new(RealProbe::new()),
    };
    Ok(GuardConfig { probe, policy: Policy { network, ..Policy::default() }, ..GuardConfig::default() })
}

fn user_error(msg: String) -> rusqlite::Error {
    rusqlite::Error::UserFunctionError(msg.into())
}

/// Registers the guard (once per process) and the SQL functions on `conn`. Returns `true`:
/// the extension stays loaded.
///
/// # Errors
/// A message for the host when the guard cannot be registered: SQLite older than 3.51.3, a
/// bad configuration, or a VFS name taken by something else.
pub fn init(conn: &Connection) -> rusqlite::Result<bool> {
    if vfs::sqlite_version_number() < vfs::SQLITE_OLDEST {
        return Err(user_error(format!(
            "sqlite-warden refuses to load into SQLite {}: it needs 3.40.0 or newer\n(hint: use a host with a newer SQLite, e.g. apsw for Python)",
            rusqlite::version()
        )));
    }
    if let Some(v) = vfs::wal_reset_bug() {
        // Once per process: the host's SQLite is the same for every connection.
        static SAID: std::sync::Once = std::sync::Once::new();
        SAID.call_once(|| {
            tracing::warn!(
                "sqlite-warden: the host's SQLite {} carries the WAL-reset corruption bug (fixed in 3.51.3, 3.50.7, 3.44.6): rollback-journal-only mode, WAL refused",
                crate::guard::sqlite_host::version_text(v)
            );
        });
    }
    let guard = match vfs::find_guard(vfs::DEFAULT_NAME) {
        Some(g) => g,
        None => {
            let config = config_from_env().map_err(user_error)?;
            let g = vfs::register(vfs::DEFAULT_NAME, config).map_err(|e| user_error(e.to_string()))?;
            if std::env::var("WARDEN_DEFAULT_VFS").is_ok_and(|v| v == "1")
                && !crate::sys::sqlite::make_default(g.engine_vfs())
            {
                return Err(user_error("could not make `warden` the default VFS".into()));
            }
            g
        }
    };
    let status_guard = guard.clone();
    conn.create_scalar_function(c"warden_status", 1, FunctionFlags::SQLITE_UTF8, move |ctx| {
        let path: String = ctx.get(0)?;
        let path = Path::new(&path);
        let verdict = status_guard.classify(path).map_err(|e| user_error(e.to_string()))?;
        let lock = crate::guard::lock::inspect(path).map_err(|e| user_error(e.to_string()))?;
        Ok(serde_json::json!({
            "db": path,
            "fs": verdict,
            "engine_allowed": verdict.kind.is_local(),
            "wal_allowed": verdict.kind.is_local() && vfs::wal_reset_bug().is_none(),
            "mode": vfs::sqlite_mode(),
            "sqlite": rusqlite::version(),
            "wal_reset_bug": vfs::wal_reset_bug().is_some(),
            "writer_lock": lock,
            "vfs": status_guard.engine_vfs(),
            "tool_vfs": status_guard.tool_vfs(),
            "audit_log": status_guard.audit_path(),
        })
        .to_string())
    })?;
    let names = (guard.engine_vfs().to_owned(), guard.tool_vfs().to_owned());
    conn.create_scalar_function(c"warden_version", 0, FunctionFlags::SQLITE_UTF8, move |_ctx| {
        Ok(serde_json::json!({
            "warden": env!("CARGO_PKG_VERSION"),
            "sqlite": rusqlite::version(),
            "sqlite_floor": "3.51.3",
            "mode": vfs::sqlite_mode(),
            "vfs": names.0,
            "tool_vfs": names.1,
        })
        .to_string())
    })?;
    if crate::util::testing::ext_selftest() {
        // For the tests of the panic path: a panic inside a callback must become an SQL
        // error, never take the host process down.
        conn.create_scalar_function(
            c"warden_selftest_panic",
            0,
            FunctionFlags::SQLITE_UTF8,
            |_ctx| -> rusqlite::Result<i64> { panic!("warden_selftest_panic") },
        )?;
    }
    Ok(true)
}

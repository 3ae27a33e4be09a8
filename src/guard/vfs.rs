//! The guarded VFS: configuration and registration of a guard.
//!
//! Owns: [`GuardConfig`], registering a guard as a pair of VFS objects (`<name>` for the
//! engine role, `<name>-ro` for tooling) over a parent VFS (`unix`), the guard registry and
//! the thread's last refusal. Does not own: the decisions of a single open (in
//! `guard::open`), or pointer handling and forwarding to the parent (in `sys`, the only
//! module allowed `unsafe`).
//!
//! WAL is refused on non-local storage in four layers, each closing a hole in the others:
//! 1. `PRAGMA journal_mode=WAL` fails with a message naming the path and filesystem
//!    (`SQLITE_FCNTL_PRAGMA`);
//! 2. the file gets io_methods version 1, without `xShmMap`, so SQLite cannot use WAL even
//!    when the pragma reaches an attached database that never saw the file control;
//! 3. opening a `-wal` file of such a database is refused (WAL in `locking_mode=EXCLUSIVE`
//!    needs no shared memory, so layer 2 alone would let it through);
//! 4. a database whose header says WAL, or that has a hot `-wal` beside it, is refused at
//!    open. Nothing is ever deleted: a hot `-wal` holds committed transactions.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use crate::guard::audit::{AuditLog, AuditRecord};
use crate::guard::open::{RoleVfs, Shared};
use crate::guard::policy::{Policy, Role};
use crate::storage::{self, FsProbe, FsVerdict, RealProbe};
use crate::sys::shim::{RegisterFailure, Shim};

pub use crate::guard::sqlite_host::{
    SQLITE_FLOOR, SQLITE_OLDEST, sqlite_mode, sqlite_version_number, wal_reset_bug, wal_reset_fixed,
};

/// Name of the default guard's engine VFS; the tooling VFS is this plus `-ro`.
pub const DEFAULT_NAME: &str = "warden";

/// Everything a guard needs to decide. One config serves both VFS objects of a guard.
#[derive(Debug, Clone)]
pub struct GuardConfig {
    /// Where filesystem facts come from: [`RealProbe`] by default; tests pass a
    /// [`storage::SimulatedProbe`].
    pub probe: Arc<dyn FsProbe>,
    /// The rules.
    pub policy: Policy,
    /// Directory of the audit log (see [`crate::guard::audit`] for the default).
    pub audit_dir: PathBuf,
    /// The VFS being wrapped (`unix`).
    pub parent: String,
}

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig {
            probe: Arc::new(RealProbe::new()),
            policy: Policy::default(),
            audit_dir: AuditLog::default_dir(),
            parent: "unix".to_owned(),
        }
    }
}

/// A registered guard: two VFS names sharing one config. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Guard {
    shared: Arc<Shared>,
    config: Arc<GuardConfig>,
}

impl Guard {
    /// The engine role's VFS name (`warden`).
    pub fn engine_vfs(&self) -> &str {
        &self.shared.engine_name
    }

    /// The tooling role's VFS name (`warden-ro`).
    pub fn tool_vfs(&self) -> &str {
        &self.shared.tool_name
    }

    /// The VFS name for `role`.
    pub fn vfs_name(&self, role: Role) -> &str {
        self.shared.vfs_name(role)
    }

    /// The config this guard was registered with.
    pub fn config(&self) -> &GuardConfig {
        &self.config
    }

    /// The audit log file.
    pub fn audit_path(&self) -> &Path {
        self.shared.audit.path()
    }

    /// The storage verdict for `path`, through this guard's probe.
    ///
    /// # Errors
    /// [`crate::storage::ProbeError`] when the path or mount table cannot be examined.
    pub fn classify(&self, path: &Path) -> Result<FsVerdict, crate::storage::ProbeError> {
        storage::classify(self.shared.probe.as_ref(), path)
    }

    /// Appends a record to this guard's audit log (the caller applies its own failure policy).
    ///
    /// # Errors
    /// [`crate::guard::audit::AuditError`] when the log cannot be written.
    pub fn audit(&self, rec: &mut AuditRecord) -> Result<(), crate::guard::audit::AuditError> {
        self.shared.audit.append(rec)
    }
}

/// Appends a record through `guard`'s audit log, or to the default log
/// ([`AuditLog::default_dir`](crate::guard::audit::AuditLog::default_dir)) without one: for
/// operations (restore, migrate, seal chains) that may run without a registered guard.
///
/// # Errors
/// [`crate::guard::audit::AuditError`] when the log cannot be written.
pub fn audit_with(guard: Option<&Guard>, rec: &mut AuditRecord) -> Result<(), crate::guard::audit::AuditError> {
    use crate::guard::audit::AuditLog;
    match guard {
        Some(g) => g.audit(rec),
        None => AuditLog::in_dir(AuditLog::default_dir()).append(rec),
    }
}

fn guards() -> std::sync::MutexGuard<'static, HashMap<String, Guard>> {
    static G: OnceLock<Mutex<HashMap<String, Guard>>> = OnceLock::new();
    G.get_or_init(Mutex::default).lock().unwrap_or_else(PoisonError::into_inner)
}

/// Registers a guard as `name` (engine role) and `name-ro` (tooling role).
///
/// Registering is process-wide and permanent (SQLite keeps pointers to the VFS objects, so
/// they are never freed). Neither VFS becomes SQLite's default.
///
/// # Errors
/// [`RegisterError::SqliteTooOld`] below [`SQLITE_OLDEST`] (from there to
/// [`SQLITE_FLOOR`], without the fix, it registers in rollback-journal-only mode);
/// [`RegisterError::NameTaken`] if
/// either name is already registered (by warden or anyone else);
/// [`RegisterError::ParentMissing`] / [`RegisterError::SelfWrap`] for a bad parent.
pub fn register(name: &str, config: GuardConfig) -> Result<Guard, RegisterError> {
    let found = sqlite_version_number();
    if found < SQLITE_OLDEST {
        return Err(RegisterError::SqliteTooOld {
            found: rusqlite::version().to_owned(),
            required: "3.40.0".to_owned(),
        });
    }
    let mut reg = guards();
    if reg.contains_key(name) {
        return Err(RegisterError::NameTaken { name: name.to_owned() });
    }
    let audit = AuditLog::in_dir(&config.audit_dir);
    let parent = config.parent.clone();
    let shared = Arc::new(Shared {
        probe: Arc::clone(&config.probe),
        policy: config.policy.clone(),
        audit,
        engine_name: name.to_owned(),
        tool_name: format!("{name}-ro"),
    });
    let objects = [Role::Engine, Role::Tool]
        .into_iter()
        .map(|role| {
            let shim: Arc<dyn Shim> = Arc::new(RoleVfs { shared: Arc::clone(&shared), role });
            (shared.vfs_name(role).to_owned(), shim)
        })
        .collect();
    // Before any connection can open on the new objects: the per-connection hook through
    // which every tooling connection is restricted as it opens (`open::restrict_tool_connection`).
    crate::sys::hooks::install()
        .map_err(|code| RegisterError::Sqlite { name: "sqlite3_auto_extension".to_owned(), code })?;
    crate::sys::vfs::register(&parent, objects).map_err(|f| match f {
        RegisterFailure::InvalidName(name) => RegisterError::InvalidName { name },
        RegisterFailure::ParentMissing(name) => RegisterError::ParentMissing { name },
        RegisterFailure::SelfWrap(name) => RegisterError::SelfWrap { name },
        RegisterFailure::NameTaken(name) => RegisterError::NameTaken { name },
        RegisterFailure::Sqlite { name, code } => RegisterError::Sqlite { name, code },
    })?;
    let guard = Guard { shared, config: Arc::new(config) };
    reg.insert(name.to_owned(), guard.clone());
    Ok(guard)
}

/// The process's default guard (`warden` / `warden-ro`, real probe, default policy, audit
/// in the default directory), registered on first use.
///
/// # Errors
/// As [`register`]. A failed registration is not cached: the next call tries again (and
/// typically fails the same way, with the same error).
pub fn default_guard() -> Result<Guard, RegisterError> {
    static LOCK: Mutex<()> = Mutex::new(());
    let _one_at_a_time = LOCK.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(g) = find_guard(DEFAULT_NAME) {
        return Ok(g);
    }
    register(DEFAULT_NAME, GuardConfig::default())
}

/// The guard registered under `name`, if any.
pub fn find_guard(name: &str) -> Option<Guard> {
    guards().get(name).cloned()
}

pub use crate::guard::open::take_last_refusal;

/// Registering the guard VFS failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegisterError {
    /// The linked SQLite is older than the floor.
    #[error(
        "SQLite {found} is too old: warden needs {required} or newer (older releases carry the WAL-reset corruption bug)\n(hint: build with rusqlite's `bundled` feature or upgrade the system libsqlite3)"
    )]
    SqliteTooOld {
        /// Version found, e.g. `3.40.1`.
        found: String,
        /// Minimum version, e.g. `3.51.3`.
        required: String,
    },
    /// Another VFS object already uses the name.
    #[error("a different VFS is already registered as `{name}`\n(hint: pick another name for this guard)")]
    NameTaken {
        /// The name.
        name: String,
    },
    /// The parent VFS does not exist.
    #[error("parent VFS `{name}` is not registered in this SQLite")]
    ParentMissing {
        /// The parent's name.
        name: String,
    },
    /// The parent VFS is itself a warden guard.
    #[error("parent VFS `{name}` is a warden guard; a guard must wrap a real VFS, not itself")]
    SelfWrap {
        /// The parent's name.
        name: String,
    },
    /// SQLite refused the registration.
    #[error("sqlite3_vfs_register(`{name}`) failed with code {code}")]
    Sqlite {
        /// The name.
        name: String,
        /// SQLite's result code.
        code: i32,
    },
    /// A name with a NUL byte.
    #[error("invalid VFS name `{name}`")]
    InvalidName {
        /// The name.
        name: String,
    },
}

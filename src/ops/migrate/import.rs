//! Import of a migration bundle on the new host ([`import`]): preflight, verification, the gate on
//! a private copy, installation under the writer lock, the switch to WAL, the record. Does not own:
//! verifying the bundle's files ([`super::verify`]) or resolving the owner ([`super::owner`]).

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::common::{
    audit, exists, file_name, guard_or_default, make_dir, remove_dead_temps, row_counts, space_preflight, sync_dir,
};
use super::error::{MigrateError, full_in, io_err};
use super::manifest::{AUDIT_FILE, BACKUPS_DIR, BundleKind, BundleSource, SESSIONS_DIR};
use super::owner::Owner;
use super::verify::{VerifiedBundle, verify_bundle};
use crate::copies::backup::{CheckMode, IntegrityReport, check_file, sidecar};
use crate::copies::copy::{self, TempGuard};
use crate::format::header::change_counter as read_change_counter;
use crate::format::names;
use crate::guard::audit::AuditEvent;
use crate::guard::connect::{EngineOptions, JournalChoice, open_engine};
use crate::guard::error::{LockError, OpenError};
use crate::guard::lock::{self, CloseState, WriterLock, WriterScope};
use crate::guard::vfs::Guard;
use crate::storage::{FsKind, FsVerdict};
use crate::util::atomic::{self, TMP_MARK};
use crate::util::fmt::ms;

/// Where an import puts the old host's audit log, in the target's state directory.
pub const IMPORTED_AUDIT: &str = "imported-audit.jsonl";
/// Default permission bits of an imported database.
pub const DEFAULT_MODE: u32 = 0o640;
const IMPORT_TMP: &str = ".import";

/// How to import. [`Default`] gives the documented defaults.
#[derive(Clone, Debug)]
pub struct ImportOptions {
    /// Owner of the database, its lock file and its state (default: unchanged, the importing
    /// user).
    pub owner: Option<Owner>,
    /// Permission bits of the database (default [`DEFAULT_MODE`], `0640`); world-writable
    /// modes are refused. The lock file gets the same bits; directories `0750`, artifacts
    /// `0640`.
    pub mode: u32,
    /// Where the artifacts go (default `<db>.warden/sessions`).
    pub session_dir: Option<PathBuf>,
    /// Time budget of the integrity gate (exceeding it fails the import); `None`: none.
    pub check_budget: Option<Duration>,
    /// The guard: its probe judges the target's storage, its engine role switches the
    /// database to WAL, its log records the import. `None`: the default guard.
    pub guard: Option<Guard>,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions { owner: None, mode: DEFAULT_MODE, session_dir: None, check_budget: None, guard: None }
    }
}

/// The installed database, as [`import`] checked it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImportedDatabase {
    /// Bytes (as installed, before the switch to WAL).
    pub size: u64,
    /// SHA-256 (equal to the manifest's).
    pub sha256: String,
    /// The gate on this host.
    pub integrity: IntegrityReport,
    /// `count(*)` per table, equal to the manifest's.
    pub row_counts: BTreeMap<String, u64>,
    /// `wal` after the switch.
    pub journal_mode: String,
    /// The header's read/write versions say WAL.
    pub header_wal: bool,
}

/// What [`import`] did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImportReport {
    /// Report schema (1).
    pub schema: u32,
    /// The bundle.
    pub bundle: PathBuf,
    /// SHA-256 of its `MANIFEST.json`.
    pub manifest_sha256: String,
    /// Where it came from.
    pub source: BundleSource,
    /// When it was exported.
    pub exported_at: String,
    /// The installed database.
    pub target: PathBuf,
    /// Its storage verdict here.
    pub storage: FsVerdict,
    /// What was checked and installed.
    pub database: ImportedDatabase,
    /// Permission bits, octal (`0640`).
    pub mode: String,
    /// The owner given, if any.
    pub owner: Option<Owner>,
    /// The writer lock file.
    pub lock_file: PathBuf,
    /// The state directory (`<db>.warden`).
    pub state_dir: PathBuf,
    /// The artifacts installed.
    pub sessions: Vec<PathBuf>,
    /// The old host's audit log, installed beside this host's state.
    pub imported_audit: Option<PathBuf>,
    /// Wall time.
    pub duration_ms: u64,
    /// Notes for the operator.
    pub messages: Vec<String>,
}

/// What an import put in place, removed again if a later step fails.
#[derive(Default)]
struct Undo {
    files: Vec<PathBuf>,
    dirs: Vec<PathBuf>,
    armed: bool,
}

impl Undo {
    fn run(&mut self) {
        if !self.armed {
            return;
        }
        for f in self.files.drain(..) {
            let _ = std::fs::remove_file(&f);
        }
        for d in self.dirs.drain(..) {
            let _ = std::fs::remove_dir_all(&d);
        }
    }
}

impl Drop for Undo {
    fn drop(&mut self) {
        self.run();
    }
}

/// Checks the target: its directory, that nothing is in the way, local storage.
/// The marker of an import that has not put its database in place yet.
const PENDING: &str = ".import-pending.json";

/// Takes back out what an import killed before its commit left: a state directory holding
/// [`PENDING`] beside no database, whose importer is gone. Once the database is in place
/// only the marker is left over, and that goes (the import had finished).
fn settle_interrupted(target: &Path, state_dir: &Path) {
    let parent = atomic::parent_of(target);
    remove_dead_temps(parent, &format!(".{}{IMPORT_TMP}{TMP_MARK}", file_name(target)));
    remove_dead_temps(parent, &format!(".{}{TMP_MARK}", file_name(state_dir)));
    crate::copies::sweep_state(target);
    let marker = state_dir.join(PENDING);
    let Ok(bytes) = std::fs::read(&marker) else { return };
    let pid = serde_json::from_slice::<serde_json::Value>(&bytes).ok().and_then(|v| v["pid"].as_u64());
    if pid.is_some_and(|p| u32::try_from(p).is_ok_and(atomic::pid_alive)) {
        return;
    }
    let settled = if exists(target) {
        std::fs::remove_file(&marker).and_then(|()| atomic::sync_dir(state_dir))
    } else {
        std::fs::remove_dir_all(state_dir).and_then(|()| atomic::sync_dir(atomic::parent_of(state_dir)))
    };
    match settled {
        Ok(()) => tracing::warn!(state = %state_dir.display(), "settled what an interrupted import left"),
        Err(e) => tracing::warn!(state = %state_dir.display(), error = %e, "cannot settle an interrupted import"),
    }
}

fn import_preflight(target: &Path, state_dir: &Path, guard: &Guard) -> Result<FsVerdict, MigrateError> {
    let parent = atomic::parent_of(target);
    if !parent.is_dir() {
        return Err(MigrateError::CannotCreate {
            path: target.to_owned(),
            why: format!(
                "`{}` is not a directory\n(hint: create it first, with the owner and mode the engine needs)",
                parent.display()
            ),
        });
    }
    for suffix in ["", "-wal", "-journal", "-shm"] {
        let p = sidecar(target, suffix);
        if exists(&p) {
            return Err(MigrateError::TargetExists { path: p });
        }
    }
    if exists(state_dir) {
        return Err(MigrateError::TargetExists { path: state_dir.to_owned() });
    }
    let verdict = guard.classify(parent).map_err(|source| MigrateError::Probe { dir: parent.to_owned(), source })?;
    if verdict.kind != FsKind::Local {
        return Err(MigrateError::NetworkTarget { dir: parent.to_owned(), verdict: Box::new(verdict) });
    }
    Ok(verdict)
}

/// Copies the bundled database to `tmp` (hashed as it is copied), runs the gate there,
/// compares the row counts, re-hashes.
fn gate_copy(
    vb: &VerifiedBundle,
    tmp: &Path,
    budget: Option<Duration>,
) -> Result<(IntegrityReport, BTreeMap<String, u64>, u64), MigrateError> {
    let dbm = vb.manifest.database.as_ref().ok_or_else(|| MigrateError::Tampered {
        bundle: vb.dir.clone(),
        reason: "it is not a migration bundle (no database)".into(),
    })?;
    let gate_failed = |reason: String, report: Option<IntegrityReport>| MigrateError::GateFailed {
        bundle: vb.dir.clone(),
        reason,
        report: report.map(Box::new),
    };
    let src = vb.dir.join(&dbm.file);
    let (sha, n) = copy::copy_hashed(&src, tmp)
        .map_err(io_err("copying the bundled database to", tmp))
        .map_err(full_in(atomic::parent_of(tmp)))?;
    if sha != dbm.sha256 || n != dbm.size {
        return Err(MigrateError::Tampered {
            bundle: vb.dir.clone(),
            reason: format!("`{}` changed after it was verified (sha256 now {sha})", dbm.file),
        });
    }
    let (report, _) = check_file(tmp, CheckMode::Full, budget, None);
    if !report.ok {
        return Err(gate_failed(report.summary(), Some(report)));
    }
    let counts = row_counts(tmp).map_err(|source| MigrateError::Sqlite {
        action: "counting the rows of",
        path: tmp.to_owned(),
        source,
    })?;
    if counts != dbm.row_counts {
        let diff: Vec<String> = dbm
            .row_counts
            .keys()
            .chain(counts.keys())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .filter(|t| dbm.row_counts.get(*t) != counts.get(*t))
            .map(|t| format!("{t}: manifest {:?}, copy {:?}", dbm.row_counts.get(t), counts.get(t)))
            .collect();
        return Err(gate_failed(format!("row counts differ from the manifest: {}", diff.join(", ")), Some(report)));
    }
    let (again, _) = copy::sha256_file(tmp, None).map_err(io_err("re-hashing", tmp))?;
    if again != dbm.sha256 {
        return Err(gate_failed(format!("the copy changed while it was checked (sha256 now {again})"), Some(report)));
    }
    Ok((report, counts, n))
}

/// Copies `rel` of the bundle to `dst` (new file), hashed against the manifest; mode and
/// owner applied.
fn install_file(vb: &VerifiedBundle, rel: &str, dst: &Path, owner: Option<&Owner>) -> Result<(), MigrateError> {
    let e = vb
        .manifest
        .entry(rel)
        .ok_or_else(|| MigrateError::Tampered { bundle: vb.dir.clone(), reason: format!("`{rel}` is not listed") })?;
    let src = vb.dir.join(rel);
    let (sha, n) = copy::copy_hashed(&src, dst).map_err(|source| {
        if source.kind() == io::ErrorKind::AlreadyExists {
            MigrateError::TargetExists { path: dst.to_owned() }
        } else {
            io_err("copying", &src)(source)
        }
    })?;
    if sha != e.sha256 || n != e.size {
        return Err(MigrateError::Tampered {
            bundle: vb.dir.clone(),
            reason: format!("`{rel}` changed after it was verified (sha256 now {sha})"),
        });
    }
    std::fs::set_permissions(dst, std::fs::Permissions::from_mode(0o640)).map_err(io_err("chmod", dst))?;
    if let Some(o) = owner {
        o.apply(dst)?;
    }
    Ok(())
}

/// Opens `target` through the guard's engine role with WAL, closes it, and reads the header.
fn switch_to_wal(target: &Path, guard: &Guard) -> Result<(String, bool), MigrateError> {
    let wal_err = |message: String, source: Option<Box<OpenError>>| MigrateError::Wal {
        path: target.to_owned(),
        message,
        source,
    };
    let opts = EngineOptions { guard: Some(guard.clone()), journal: JournalChoice::Wal, ..Default::default() };
    let conn = open_engine(target, &opts).map_err(|e| wal_err(e.to_string(), Some(Box::new(e))))?;
    let mode: String =
        conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).map_err(|e| wal_err(e.to_string(), None))?;
    conn.close().map_err(|(_, e)| wal_err(format!("closing: {e}"), None))?;
    // Header bytes 18 and 19, the file format write and read versions: 2 means WAL.
    let header_wal = crate::format::header::read_raw_header(target)
        .is_ok_and(|h| h.len() >= 20 && &h[..16] == crate::format::header::MAGIC && h[18] == 2 && h[19] == 2);
    if !mode.eq_ignore_ascii_case("wal") || !header_wal {
        return Err(wal_err(format!("journal_mode is `{mode}` and the header says WAL: {header_wal}"), None));
    }
    Ok((mode.to_ascii_lowercase(), header_wal))
}

/// Imports the migration bundle at `bundle` as the new database `target` (see the module
/// docs for every step and exit code).
///
/// # Errors
/// [`MigrateError`]; nothing is left at the target then (a failure after the database was
/// installed undoes the installation).
pub fn import(bundle: &Path, target: &Path, opts: &ImportOptions) -> Result<ImportReport, MigrateError> {
    let started = Instant::now();
    if opts.mode & !0o7777 != 0 || opts.mode & 0o002 != 0 {
        return Err(MigrateError::Usage {
            message: format!(
                "mode {:04o} is not acceptable for a database\n(hint: use 0640 or 0600; never world-writable)",
                opts.mode
            ),
        });
    }
    let guard = guard_or_default(opts.guard.as_ref())?;
    let target = crate::storage::resolve(target).map_err(io_err("resolving", target))?;
    let state_dir = names::state_dir(&target);
    let session_dir = opts.session_dir.clone().unwrap_or_else(|| state_dir.join(SESSIONS_DIR));
    let session_dir = crate::storage::resolve(&session_dir).map_err(io_err("resolving", &session_dir))?;
    if !bundle.is_dir() {
        return Err(MigrateError::BundleMissing { path: bundle.to_owned() });
    }

    // 1. Preflight, 2. verify (nothing written by either, but what a killed import left).
    settle_interrupted(&target, &state_dir);
    let storage = import_preflight(&target, &state_dir, &guard)?;
    let refused = |e: MigrateError| {
        if matches!(e, MigrateError::Tampered { .. } | MigrateError::GateFailed { .. }) {
            let _ = audit(
                Some(&guard),
                AuditEvent::MigrationRefused,
                &target,
                "refuse",
                format!(
                    "import of `{}` refused: {}; nothing was written; by {}",
                    bundle.display(),
                    first_line(&e),
                    crate::util::identity::who()
                ),
            );
        }
        e
    };
    let vb = verify_bundle(bundle).map_err(refused)?;
    if vb.manifest.kind != BundleKind::Migration || vb.manifest.database.is_none() {
        return Err(refused(MigrateError::Tampered {
            bundle: vb.dir.clone(),
            reason: "it is not a migration bundle (a sessions export holds no database to import)".into(),
        }));
    }
    if !session_dir.starts_with(&state_dir) {
        for e in vb.manifest.sessions() {
            let p = session_dir.join(file_name(Path::new(&e.path)));
            if exists(&p) {
                return Err(MigrateError::TargetExists { path: p });
            }
        }
    }
    let parent = atomic::parent_of(&target).to_owned();
    space_preflight(&parent, vb.manifest.bytes())?;

    // 3. The gate on a private copy beside the target.
    let tmp = atomic::temp_path_for(&target.with_file_name(format!("{}{IMPORT_TMP}", file_name(&target))));
    let mut tmp_guard = TempGuard::with_sidecars(&tmp);
    let (integrity, counts, size) = gate_copy(&vb, &tmp, opts.check_budget).map_err(refused)?;
    let sha256 = vb.manifest.database.as_ref().map(|d| d.sha256.clone()).unwrap_or_default();

    // 4. Mode and owner on the copy; the state directory under a temporary name.
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(opts.mode)).map_err(io_err("chmod", &tmp))?;
    if let Some(o) = &opts.owner {
        o.apply(&tmp)?;
    }
    let state_tmp = atomic::temp_path_for(&state_dir);
    let _state_guard = TempGuard::new(vec![state_tmp.clone()]);
    make_dir(&state_tmp, 0o750)?;
    let sessions_in = |d: &Path| session_dir.strip_prefix(&state_dir).ok().map(|rel| d.join(rel));
    let session_tmp = sessions_in(&state_tmp).unwrap_or_else(|| session_dir.clone());
    let mut undo = Undo::default();
    if !session_dir.starts_with(&state_dir) && !exists(&session_dir) {
        undo.dirs.push(session_dir.clone());
    }
    undo.armed = true;
    make_dir(&session_tmp, 0o750)?;
    let mut sessions = Vec::new();
    for e in vb.manifest.sessions() {
        let name = file_name(Path::new(&e.path));
        let dst = session_tmp.join(&name);
        if session_tmp == session_dir {
            undo.files.push(dst.clone());
        }
        install_file(&vb, &e.path, &dst, opts.owner.as_ref())?;
        sessions.push(session_dir.join(name));
    }
    let imported_audit = match vb.manifest.entry(AUDIT_FILE) {
        Some(_) => {
            install_file(&vb, AUDIT_FILE, &state_tmp.join(IMPORTED_AUDIT), opts.owner.as_ref())?;
            Some(state_dir.join(IMPORTED_AUDIT))
        }
        None => None,
    };
    if let Some(o) = &opts.owner {
        // The state directory and every directory made inside it (or a session directory
        // elsewhere, when this import made it).
        let mut dirs: Vec<&Path> = session_tmp.ancestors().take_while(|d| d.starts_with(&state_tmp)).collect();
        dirs.push(&state_tmp);
        if undo.dirs.contains(&session_dir) {
            dirs.push(&session_dir);
        }
        for d in dirs {
            o.apply(d)?;
        }
    }
    // WAL on the copy, through the engine role on the target's own storage: the rename
    // below is then the last change, and the header already says WAL.
    let (journal_mode, header_wal) = switch_to_wal(&tmp, &guard)?;
    let _ = std::fs::remove_file(lock::lock_path_for(&tmp));
    // Until the database is in place, the state directory says whose it is: a killed
    // import leaves a state directory that the next one recognises and takes back out.
    let marker = state_tmp.join(PENDING);
    let pending = serde_json::json!({ "pid": std::process::id(), "bundle": vb.dir, "target": target });
    atomic::write_atomic(&marker, pending.to_string().as_bytes(), 0o600).map_err(io_err("writing", &marker))?;
    sync_dir(&session_tmp)?;
    sync_dir(&state_tmp)?;

    // 5. The writer lock, the state directory, then the database into place (the commit).
    let lock_file = lock::lock_path_for(&target);
    let lock_existed = exists(&lock_file);
    let lock = match WriterLock::acquire(&target, WriterScope::Process) {
        Ok(a) => a.lock,
        Err(LockError::Held { holder, .. }) => {
            let holder = holder.map_or_else(|| "holder unknown".to_owned(), |h| h.describe());
            return Err(MigrateError::WriterLocked { db: target.clone(), holder });
        }
        Err(source) => return Err(MigrateError::Lock { source }),
    };
    if !lock_existed {
        undo.files.push(lock_file.clone());
        let _ = std::fs::set_permissions(&lock_file, std::fs::Permissions::from_mode(opts.mode & 0o666));
    }
    if let Some(o) = &opts.owner {
        o.apply(&lock_file)?;
    }
    match atomic::rename_noreplace(&state_tmp, &state_dir) {
        Ok(()) => undo.dirs.push(state_dir.clone()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists || e.raw_os_error() == Some(libc::ENOTEMPTY) => {
            return Err(MigrateError::TargetExists { path: state_dir.clone() });
        }
        Err(e) => return Err(io_err("installing", &state_dir)(e)),
    }
    sync_dir(&parent)?;
    match atomic::rename_noreplace(&tmp, &target) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(MigrateError::TargetExists { path: target.clone() });
        }
        Err(e) => return Err(io_err("installing", &target)(e)),
    }
    tmp_guard.disarm();
    undo.files.extend(["", "-wal", "-shm", "-journal"].iter().map(|s| sidecar(&target, s)));
    sync_dir(&parent)?;
    // 6. Committed: the database is in place, the marker goes.
    let marker = state_dir.join(PENDING);
    std::fs::remove_file(&marker).map_err(io_err("removing", &marker))?;
    sync_dir(&state_dir)?;
    lock.release(CloseState::observe(&target, read_change_counter(&target)));
    undo.armed = false;
    // A new seal chain on this host: the first session's gate must find what was imported.
    let sealed = crate::copies::seal::digest_file(&target).map_err(|e| e.to_string()).and_then(|d| {
        let detail = format!("import of the bundle `{}` by {}", vb.dir.display(), crate::util::identity::who());
        crate::copies::seal::start_chain(
            &target,
            d,
            crate::copies::seal::SealReason::Import,
            None,
            detail,
            Some(&guard),
        )
        .map_err(|e| e.to_string())
    });

    // 7. The record.
    let mut messages = Vec::new();
    let src = &vb.manifest.source;
    let reason = format!(
        "imported the bundle `{}` (manifest sha256 {}) exported from host {} (`{}`) at {}: database sha256 {sha256}, {} sessions, journal_mode={journal_mode}, mode {:04o}{}; by {}",
        vb.dir.display(),
        vb.manifest_sha256,
        src.host,
        src.db.display(),
        vb.manifest.created,
        sessions.len(),
        opts.mode,
        opts.owner.as_ref().map(|o| format!(", owner {}", o.describe())).unwrap_or_default(),
        crate::util::identity::who()
    );
    messages.extend(audit(Some(&guard), AuditEvent::MigrationImported, &target, "allow", reason));
    if let Err(e) = sealed {
        messages.push(format!("imported, but not sealed ({e}): the first gate has no seal to compare with"));
    }
    if vb.manifest.files.iter().any(|e| e.path.starts_with(&format!("{BACKUPS_DIR}/"))) {
        messages.push(format!(
            "the bundle's {BACKUPS_DIR}/ was verified but not installed: backups on this host start with the first session"
        ));
    }
    Ok(ImportReport {
        schema: 1,
        bundle: vb.dir.clone(),
        manifest_sha256: vb.manifest_sha256.clone(),
        source: vb.manifest.source.clone(),
        exported_at: vb.manifest.created.clone(),
        target: target.clone(),
        storage,
        database: ImportedDatabase { size, sha256, integrity, row_counts: counts, journal_mode, header_wal },
        mode: format!("{:04o}", opts.mode),
        owner: opts.owner.clone(),
        lock_file,
        state_dir,
        sessions,
        imported_audit,
        duration_ms: ms(started.elapsed()),
        messages,
    })
}

fn first_line(e: &MigrateError) -> String {
    e.to_string().lines().next().unwrap_or_default().to_owned()
}

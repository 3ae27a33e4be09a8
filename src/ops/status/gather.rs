//! Gathering and judging the health of one database ([`collect`]): reads the lock, the files,
//! the storage verdicts, the session artifacts, the backups, the drill record and free space,
//! and turns what is wrong into [`Problem`]s. Does not own the report's types ([`super::model`]).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use jiff::Timestamp;

use super::lookup::newest_first;
use super::model::{
    BackupInfo, BackupsInfo, DatabaseInfo, DirSpace, DiskInfo, DrillInfo, GateInfo, LockInfo, Problem, ProblemKind,
    RestoreInfo, SCHEMA, SQLITE_FLOOR, SessionInfo, SqliteInfo, StatusOptions, StatusReport, StorageInfo, human_age,
    severity_rank,
};
use crate::copies::backup::{self, BackupStore};
use crate::copies::kind::BackupKind;
use crate::guard::lock::LockState;
use crate::session::health::{self, HealthArtifact, SessionStatus, Step};
use crate::storage::{FsProbe, RealProbe};

fn size_of(p: &Path) -> Option<u64> {
    std::fs::metadata(p).ok().map(|m| m.len())
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

/// Free bytes for unprivileged users in `dir`, or in its nearest existing ancestor.
fn free_space(dir: &Path, required: u64) -> DirSpace {
    let mut at = dir.to_owned();
    while !at.exists() {
        match at.parent() {
            Some(p) if !p.as_os_str().is_empty() => at = p.to_owned(),
            _ => {
                at = PathBuf::from(".");
                break;
            }
        }
    }
    match crate::copies::copy::free_bytes(&at) {
        Ok(free) => DirSpace { path: at, free_bytes: Some(free), ok: free >= required, error: None },
        Err(e) => DirSpace { path: at, free_bytes: None, ok: false, error: Some(e.to_string()) },
    }
}

fn same_db(a: &Path, b: &Path) -> bool {
    a == b || crate::storage::resolve(a).ok() == crate::storage::resolve(b).ok()
}

/// Collects the health of a guarded database. Reads only; never takes the writer lock or
/// waits for anything, so it is safe (and cheap) while the engine runs.
pub fn collect(opts: &StatusOptions) -> StatusReport {
    let now = opts.now.unwrap_or_else(Timestamp::now);
    let db = opts.db.as_path();
    let mut problems = Vec::new();

    // SQLite.
    let sqlite = SqliteInfo {
        version: rusqlite::version().to_owned(),
        floor: SQLITE_FLOOR.to_owned(),
        ok: crate::guard::vfs::wal_reset_bug().is_none(),
    };
    if !sqlite.ok {
        problems.push(Problem::new(
            ProblemKind::SqliteTooOld,
            format!(
                "SQLite {} is older than {SQLITE_FLOOR} (WAL-reset corruption bug): sessions are refused\n(hint: rebuild warden with the bundled SQLite)",
                sqlite.version
            ),
        ));
    }

    // The writer lock (first: a running engine explains other observations).
    let writer_lock = match crate::guard::lock::inspect(db) {
        Ok(st) => LockInfo {
            state: Some(st.state),
            lock_path: st.lock_path,
            holder: st.record.as_ref().map(|r| r.holder.clone()),
            session: st.record.and_then(|r| r.session),
            error: None,
        },
        Err(e) => LockInfo {
            state: None,
            lock_path: crate::guard::lock::lock_path_for(db),
            holder: None,
            session: None,
            error: Some(e.to_string()),
        },
    };
    let held = writer_lock.state == Some(LockState::Held);
    match (writer_lock.state, &writer_lock.error) {
        (Some(LockState::FreeAfterCrash), _) => problems.push(Problem::new(
            ProblemKind::WriterDied,
            format!(
                "the last writer ({}) never released the writer lock: it crashed or was killed\n(hint: `warden check {}` checks the database now; the next `warden run` gates it and clears this)",
                crate::guard::error::holder_text(writer_lock.holder.as_ref()),
                db.display()
            ),
        )),
        (None, Some(e)) => problems.push(Problem::new(ProblemKind::LockUnreadable, format!("cannot inspect the writer lock: {e}"))),
        _ => {}
    }

    // The database file.
    let database = DatabaseInfo {
        path: db.to_owned(),
        exists: db.exists(),
        size: size_of(db).filter(|_| db.is_file()),
        wal_bytes: size_of(&backup::sidecar(db, "-wal")),
        journal_bytes: size_of(&backup::sidecar(db, "-journal")),
    };
    let unusable = match crate::storage::check_database(db, crate::storage::Need::Read)
        .and_then(|()| crate::storage::target::require_sqlite(db))
    {
        Ok(()) | Err(crate::storage::TargetError::Missing { .. }) => None,
        Err(e) => Some(e),
    };
    if let Some(e) = unusable {
        problems.push(Problem::new(ProblemKind::DatabaseUnusable, e.to_string()));
    } else if !held && database.size.unwrap_or(0) == 0 && database.wal_bytes.unwrap_or(0) == 0 {
        let what = if database.exists { "is an empty file" } else { "does not exist" };
        problems.push(Problem::new(
            ProblemKind::DatabaseMissing,
            format!(
                "`{}` {what}: a session's gate refuses it\n(hint: check the path or the disk; restore a verified backup with `warden restore`; `--create` only for a brand-new database)",
                db.display()
            ),
        ));
    }

    // The seal: a cheap look (identity, size, status change time), never the pages.
    // Read once: the cheap comparison below, and when a new chain began (further down).
    let resolved_db = crate::storage::resolve(db).unwrap_or_else(|_| db.to_owned());
    let sealed = crate::copies::seal::file::load(&resolved_db);
    let chain_started = match &sealed {
        Ok(Some(img)) if img.seal.reason != crate::copies::seal::SealReason::Session => {
            img.seal.sealed_at.parse::<Timestamp>().ok()
        }
        _ => None,
    };
    let seal = (!held).then(|| seal_status(&resolved_db, sealed));

    // An interrupted restore (its intent record); one holding the lock is just running.
    let restore = match crate::copies::restore::pending(db) {
        Ok(None) => None,
        Ok(Some(i)) => Some(RestoreInfo {
            started: Some(i.started),
            backup_id: Some(i.backup.id),
            pid: Some(i.process.pid),
            running: held,
            error: None,
        }),
        Err(e) => {
            Some(RestoreInfo { started: None, backup_id: None, pid: None, running: held, error: Some(e.to_string()) })
        }
    };
    if let Some(r) = restore.as_ref().filter(|r| !r.running) {
        let what = match (&r.error, &r.backup_id) {
            (Some(e), _) => format!("a restore record is there but unreadable: {e}"),
            (None, id) => format!(
                "a restore{} (pid {}, started {}) was interrupted",
                id.as_deref().map(|i| format!(" of {i}")).unwrap_or_default(),
                r.pid.map_or_else(|| "?".into(), |p| p.to_string()),
                r.started.as_deref().unwrap_or("?")
            ),
        };
        problems.push(Problem::new(
            ProblemKind::RestoreInterrupted,
            format!(
                "{what}: sessions refuse to start until it is finished\n(hint: run `warden restore --db {}` again: it first rolls the interrupted one forward or back)",
                db.display()
            ),
        ));
    }

    // Storage.
    let probe: Arc<dyn FsProbe> = opts.probe.clone().unwrap_or_else(|| Arc::new(RealProbe::new()));
    let mut storage = StorageInfo { database: None, backup_dir: None, error: None };
    let mut storage_errors = Vec::new();
    for (what, path) in [("database", db), ("backup directory", opts.backup_dir.as_path())] {
        match crate::storage::classify(probe.as_ref(), path) {
            Ok(v) => {
                if !v.kind.is_local() {
                    problems.push(Problem::new(
                        ProblemKind::StorageNotLocal,
                        format!(
                            "the {what} `{}` is on {}, {} storage ({}): warden refuses sessions there\n(hint: move it to a local disk; see `warden fs {}`)",
                            path.display(),
                            v.describe(),
                            v.kind,
                            v.reason,
                            path.display()
                        ),
                    ));
                }
                if what == "database" {
                    storage.database = Some(v);
                } else {
                    storage.backup_dir = Some(v);
                }
            }
            Err(e) => {
                problems.push(Problem::new(
                    ProblemKind::StorageUnknown,
                    format!("cannot judge the storage of the {what}: {e}"),
                ));
                storage_errors.push(format!("{what}: {e}"));
            }
        }
    }
    if !storage_errors.is_empty() {
        storage.error = Some(storage_errors.join("; "));
    }

    // The last restore: sessions and gates from before it were about the database it replaced.
    let last_restore = crate::copies::restore::latest_restore(&opts.restore_record).filter(|r| same_db(&r.db, db));
    let restored_at = last_restore.as_ref().and_then(|r| r.finished_at.parse::<Timestamp>().ok());
    // Likewise a new seal chain (`warden accept`, a restore, an import): the database was
    // explicitly accepted or replaced then, and what was refused before is settled.
    let restored_at = restored_at.max(chain_started);
    let before_restore =
        |started_at: &str| restored_at.is_some_and(|r| started_at.parse::<Timestamp>().is_ok_and(|t| t < r));

    // Sessions.
    let (last_session, last_gate) = match health::list(&opts.session_dir) {
        Ok(mut all) => {
            newest_first(&mut all);
            let mine: Vec<&(PathBuf, HealthArtifact)> = all.iter().filter(|(_, a)| same_db(&a.database, db)).collect();
            // A session refused only because another held the lock changed nothing.
            let telling =
                |a: &HealthArtifact| !(a.status == SessionStatus::Refused && a.failed_step == Some(Step::WriterLock));
            let running = writer_lock
                .session
                .as_deref()
                .filter(|_| held)
                .and_then(|id| mine.iter().find(|(_, a)| a.session_id == id));
            let last = running.or_else(|| mine.iter().find(|(_, a)| telling(a))).map(|(p, a)| SessionInfo::of(p, a));
            let gate = mine.iter().filter(|(_, a)| telling(a)).find_map(|(_, a)| {
                a.gate.as_ref().map(|g| GateInfo {
                    session_id: a.session_id.clone(),
                    at: a.started_at.clone(),
                    passed: g.passed,
                    mode: g.mode,
                    failure: g.failure,
                    summary: g.summary(),
                })
            });
            (last, gate)
        }
        Err(e) => {
            problems.push(Problem::new(
                ProblemKind::SessionsUnreadable,
                format!("cannot read the session artifacts in `{}`: {e}", opts.session_dir.display()),
            ));
            (None, None)
        }
    };
    // An artifact that cannot be read is a session whose end nobody can tell.
    for (path, why) in health::unreadable(&opts.session_dir) {
        problems.push(Problem::new(
            ProblemKind::SessionsUnreadable,
            format!(
                "the session artifact `{}` cannot be read ({why}): how that session ended is unknown\n(hint: look at it; it is evidence: move it aside (`mv {} {}.damaged`) once understood)",
                path.display(),
                path.display(),
                path.display()
            ),
        ));
    }
    if let Some(g) = last_gate.as_ref().filter(|g| !g.passed && !before_restore(&g.at)) {
        problems.push(Problem::new(
            ProblemKind::GateFailed,
            format!(
                "the integrity gate of session {} refused the database: {}\n(hint: `warden check {}` for details; restore a verified backup (`warden restore`) or salvage (`warden salvage`))",
                g.session_id,
                g.summary.strip_prefix("FAILED: ").unwrap_or(&g.summary),
                db.display()
            ),
        ));
    }
    if let Some(s) = last_session.as_ref().filter(|s| !before_restore(&s.started_at)) {
        if let Some(p) = judge_session(s, held, last_gate.as_ref(), db) {
            problems.push(p);
        }
        if let Some(p) = foreign_writers(s, db) {
            problems.push(p);
        }
    }

    // Backups.
    let store = BackupStore::new(&opts.backup_dir, db);
    let mut backups = BackupsInfo {
        dir: opts.backup_dir.clone(),
        total: 0,
        good: 0,
        newest_good: None,
        newest: None,
        newest_good_by_kind: Vec::new(),
        error: None,
    };
    match store.list() {
        Ok(list) => {
            backups.total = list.len();
            backups.good = list.iter().filter(|r| r.manifest.is_good()).count();
            backups.newest = list.first().map(|r| BackupInfo::of(r, now));
            backups.newest_good = list.iter().find(|r| r.manifest.is_good()).map(|r| BackupInfo::of(r, now));
            for kind in [BackupKind::Pre, BackupKind::Post, BackupKind::Manual] {
                if let Some(r) = list.iter().find(|r| r.manifest.is_good() && r.manifest.kind == kind) {
                    backups.newest_good_by_kind.push(BackupInfo::of(r, now));
                }
            }
            match &backups.newest_good {
                None => problems.push(Problem::new(
                    ProblemKind::NoGoodBackup,
                    format!(
                        "no good backup in `{}`{}\n(hint: `warden backup` takes one now; every `warden run` takes two)",
                        opts.backup_dir.display(),
                        if backups.total > 0 {
                            format!(" ({} unverified or crash copies only)", backups.total)
                        } else {
                            String::new()
                        }
                    ),
                )),
                Some(b) => {
                    let max = i64::try_from(opts.max_backup_age.as_secs()).unwrap_or(i64::MAX);
                    match b.age_seconds {
                        Some(age) if age <= max => {}
                        age => problems.push(Problem::new(
                            ProblemKind::BackupStale,
                            format!(
                                "the newest good backup {} is {} old (limit {})\n(hint: is the engine's session running on schedule? `warden backup` takes one now)",
                                b.id,
                                age.map_or_else(|| "of unknown age".into(), human_age),
                                human_age(max)
                            ),
                        )),
                    }
                }
            }
        }
        Err(e) => {
            problems.push(Problem::new(ProblemKind::BackupsUnreadable, format!("cannot list the backups: {e}")));
            backups.error = Some(e.to_string());
        }
    }
    // A manifest that cannot be read is a backup that can be neither verified nor restored.
    for (path, why) in store.unreadable_manifests().unwrap_or_default() {
        problems.push(Problem::new(
            ProblemKind::BackupsUnreadable,
            format!(
                "the backup manifest `{}` cannot be read ({why}): its backup can be neither verified nor restored\n(hint: `warden backups verify --all` names every damaged one; `warden backup` takes a fresh one)",
                path.display()
            ),
        ));
    }

    // The newest drill.
    let drill = read_drill(&opts.drill_record, now);
    if let Some(d) = &drill {
        let bad = match (&d.error, d.ok) {
            (Some(e), _) => Some(format!("the restore drill record `{}` is unreadable: {e}", d.path.display())),
            (None, Some(true)) => None,
            (None, Some(false)) => Some(format!(
                "the last restore drill{}{} FAILED: {}\n(hint: the backups may not be restorable; `warden backups verify --all`)",
                d.finished_at.as_deref().map(|t| format!(" ({t})")).unwrap_or_default(),
                d.backup_id.as_deref().map(|b| format!(" of {b}")).unwrap_or_default(),
                d.messages.first().map_or("no message recorded", String::as_str)
            )),
            (None, None) => {
                Some(format!("the restore drill record `{}` does not say whether it passed", d.path.display()))
            }
        };
        if let Some(m) = bad {
            problems.push(Problem::new(ProblemKind::DrillFailed, m));
        }
    }

    // Offsite copies.
    let offsite = opts.offsite_max_lag.map(|max| {
        let (info, problem) = super::offsite::gather(db, &store, max, now);
        problems.extend(problem);
        info
    });

    // Disk headroom.
    let db_bytes = database.size.unwrap_or(0) + database.wal_bytes.unwrap_or(0) + database.journal_bytes.unwrap_or(0);
    let required = BackupStore::space_needed(db).max(opts.min_free_bytes.unwrap_or(0));
    let disk = DiskInfo {
        db_bytes,
        required_free_bytes: required,
        database_dir: free_space(crate::util::atomic::parent_of(db), required),
        backup_dir: free_space(&opts.backup_dir, required),
    };
    for (what, d) in [("database", &disk.database_dir), ("backup", &disk.backup_dir)] {
        if d.ok {
            continue;
        }
        let m = match (d.free_bytes, &d.error) {
            (Some(free), _) => format!(
                "only {free} bytes free in the {what} directory `{}`; {required} needed (the next backup, or --min-free-bytes)\n(hint: free space, lower retention, or move backups to another local disk)",
                d.path.display()
            ),
            (None, e) => format!(
                "cannot measure free space in the {what} directory `{}`: {}",
                d.path.display(),
                e.as_deref().unwrap_or("unknown error")
            ),
        };
        problems.push(Problem::new(ProblemKind::DiskHeadroom, m));
    }

    // A refusal of the last gate already says it (and names the pages): said once.
    if let Some(c) = seal.as_ref().filter(|c| c.fails())
        && !problems.iter().any(|p| p.kind == ProblemKind::GateFailed)
    {
        problems.push(Problem::new(ProblemKind::ChangedSinceSeal, c.message.clone()));
    }
    problems.sort_by_key(|p| severity_rank(p.code));
    let exit_code = problems.first().map_or(crate::util::exit::OK, |p| p.code);
    let summary = match problems.first() {
        Some(p) => {
            let more = problems.len() - 1;
            let more = if more > 0 { format!(" (+{more} more)") } else { String::new() };
            format!("UNHEALTHY ({}): {}{more}", p.code, first_line(&p.message))
        }
        None => {
            let running = if held {
                match (&writer_lock.session, &writer_lock.holder) {
                    _ if restore.is_some() => "restore running".into(),
                    (Some(s), _) => format!("session running ({s})"),
                    (None, Some(h)) => {
                        let exe = h.process.exe.as_deref().map(|e| e.rsplit('/').next().unwrap_or(e));
                        format!(
                            "writer running (pid {}{})",
                            h.process.pid,
                            exe.map(|e| format!(", {e}")).unwrap_or_default()
                        )
                    }
                    (None, None) => "writer running".into(),
                }
            } else {
                "idle".into()
            };
            let backup = backups
                .newest_good
                .as_ref()
                .and_then(|b| b.age_seconds)
                .map(|a| format!("; newest good backup {} old", human_age(a)))
                .unwrap_or_default();
            format!("healthy: {running}{backup}")
        }
    };
    StatusReport {
        seal,
        schema: SCHEMA,
        db: db.to_owned(),
        checked_at: now.to_string(),
        healthy: problems.is_empty(),
        exit_code,
        summary,
        problems,
        database,
        storage,
        writer_lock,
        last_session,
        last_gate,
        backups,
        drill,
        offsite,
        restore,
        last_restore,
        disk,
        sqlite,
        max_backup_age_seconds: opts.max_backup_age.as_secs(),
    }
}

/// The problem the last session poses, if any. A failed gate is reported from
/// `last_gate` already.
fn judge_session(s: &SessionInfo, lock_held: bool, last_gate: Option<&GateInfo>, db: &Path) -> Option<Problem> {
    let why = s.error.as_deref().map(|e| format!(": {}", first_line(e))).unwrap_or_default();
    let bad = |m: String| Some(Problem::new(ProblemKind::SessionEndedBadly, m));
    match s.status {
        // A stopped session is reported as the foreign writer that stopped it.
        SessionStatus::Completed | SessionStatus::Aborted | SessionStatus::ForeignWriterStopped => None,
        SessionStatus::Running => match &s.supervisor_gone {
            Some(gone) => Some(Problem::new(ProblemKind::SupervisorDied, supervisor_died(s, gone, lock_held, db))),
            None if lock_held => None,
            None => bad(format!(
                "session {} is still marked running but nobody holds the writer lock: warden was killed mid-session (no post-session backup)",
                s.id
            )),
        },
        SessionStatus::CompletedWithoutBackup => {
            bad(format!("session {}: the engine closed cleanly but the post-session backup failed{why}", s.id))
        }
        SessionStatus::EngineFailed => {
            let how = match (s.engine_exit_code, s.engine_signal) {
                (Some(c), _) => format!("exited with status {c}"),
                (None, Some(sig)) => format!("was killed by signal {sig}"),
                _ => "failed".into(),
            };
            bad(format!(
                "session {}: the engine {how}; only a post-crash copy was taken\n(hint: see `warden sessions show {}`)",
                s.id, s.id
            ))
        }
        SessionStatus::EngineNotStarted => bad(format!("session {}: the engine could not be started{why}", s.id)),
        SessionStatus::Abandoned => bad(format!(
            "session {} was abandoned: warden was killed mid-session, so no post-session backup was taken",
            s.id
        )),
        SessionStatus::Refused => {
            let gate_reported = last_gate.is_some_and(|g| g.session_id == s.id && !g.passed);
            if gate_reported {
                None
            } else if s.exit_code == Some(crate::util::exit::DATAERR.into()) {
                Some(Problem::new(ProblemKind::GateFailed, format!("session {} was refused for damage{why}", s.id)))
            } else {
                let step = s
                    .failed_step
                    .and_then(|st| serde_json::to_value(st).ok())
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_else(|| "?".into());
                bad(format!("session {} was refused at step `{step}`{why}", s.id))
            }
        }
    }
}

/// The problem of foreign writers during the last session, if it saw any.
fn foreign_writers(s: &SessionInfo, db: &Path) -> Option<Problem> {
    if s.foreign_writers.is_empty() {
        return None;
    }
    let who = s
        .foreign_writers
        .iter()
        .map(|w| {
            let when = match &w.gone_at {
                Some(g) => format!("seen from {} until {g}", w.first_seen_at),
                None => format!("first seen {}, still open at the last look", w.first_seen_at),
            };
            format!("{} had {} open for writing ({when})", w.process.describe(), w.process.describe_files(true))
        })
        .collect::<Vec<_>>()
        .join("; ");
    let then = match s.status {
        SessionStatus::ForeignWriterStopped => "warden stopped the engine for it (on_foreign_writer = stop)",
        SessionStatus::Running => "the session is still running",
        _ => "the session went on (on_foreign_writer = warn)",
    };
    let pids = s.foreign_writers.iter().map(|w| w.process.pid.to_string()).collect::<Vec<_>>().join(" ");
    Some(Problem::new(
        ProblemKind::ForeignWriter,
        format!(
            "foreign writer during session {}: {who}; {then}\n(hint: find out what it is (`ps -o pid,user,args -p {pids}`) and stop it; what it wrote is in the database and its post-session backup and cannot be told from the engine's writes by content: check the data (`warden check {}`), or restore the session's pre-session backup (`warden backups`, `warden restore --from ID`); the next session without a foreign writer clears this)",
            s.id,
            db.display()
        ),
    ))
}

/// The message of a `running` session whose supervisor is gone (`gone` says how that is
/// known): what became of the engine, and what to do.
fn supervisor_died(s: &SessionInfo, gone: &str, lock_held: bool, db: &Path) -> String {
    let engine = match (s.engine_pid, lock_held) {
        (Some(e), true) => format!("its engine (pid {e}) is still running unsupervised and holds the writer lock"),
        (Some(e), false) => format!("its engine (pid {e}) is no longer running"),
        (None, true) => "the writer lock is still held".to_owned(),
        (None, false) => "its engine had not started".to_owned(),
    };
    let hint = match (s.engine_pid, lock_held) {
        (Some(e), true) => format!(
            "stop the engine (`kill {e}`), then `warden check {}` and start a new session with `warden run`",
            db.display()
        ),
        _ => format!(
            "`warden check {}`, then start a new session with `warden run`, which gates the database and takes fresh backups; if the check fails, restore a verified backup with `warden restore`",
            db.display()
        ),
    };
    format!(
        "supervisor died: `warden run` (pid {}) of session {} is gone ({gone}) while the session was running; {engine}; no post-session backup will be taken\n(hint: {hint})",
        s.supervisor_pid, s.id
    )
}

fn read_drill(path: &Path, now: Timestamp) -> Option<DrillInfo> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
        Err(e) => {
            return Some(DrillInfo {
                path: path.to_owned(),
                finished_at: None,
                age_seconds: None,
                ok: None,
                backup_id: None,
                messages: Vec::new(),
                error: Some(e.to_string()),
            });
        }
    };
    let mut d = DrillInfo {
        path: path.to_owned(),
        finished_at: None,
        age_seconds: None,
        ok: None,
        backup_id: None,
        messages: Vec::new(),
        error: None,
    };
    match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(v) => {
            d.finished_at = v.get("finished_at").and_then(|x| x.as_str()).map(str::to_owned);
            d.age_seconds = d
                .finished_at
                .as_deref()
                .and_then(|t| t.parse::<Timestamp>().ok())
                .map(|t| (now.as_second() - t.as_second()).max(0));
            d.ok = v
                .get("ok")
                .and_then(serde_json::Value::as_bool)
                .or_else(|| v.get("outcome").and_then(|o| o.as_str()).map(|o| o == "ok"));
            d.backup_id = v
                .get("backup_id")
                .or_else(|| v.get("backup").and_then(|b| b.get("id")))
                .and_then(|x| x.as_str())
                .map(str::to_owned);
            d.messages = match v.get("messages") {
                Some(serde_json::Value::Array(a)) => {
                    a.iter().map(|m| m.as_str().map_or_else(|| m.to_string(), str::to_owned)).collect()
                }
                Some(serde_json::Value::String(s)) => vec![s.clone()],
                _ => Vec::new(),
            };
        }
        Err(e) => d.error = Some(format!("not JSON: {e}")),
    }
    Some(d)
}

/// The seal of `db` against the file as it is now, from `stat` alone: a write moves the
/// status change time even when the modification time is put back.
fn seal_status(
    db: &Path,
    sealed: Result<Option<crate::copies::seal::SealedImage>, crate::copies::seal::SealFileError>,
) -> crate::copies::seal::SealCheck {
    use crate::copies::seal::{self, SealState, SealVerdict};
    let state = seal::state_from(db, sealed);
    let mut check = seal::check(db, &state, None);
    if let SealState::Sealed(image) = &state
        && let Some(then) = &image.seal.live
    {
        let now = seal::LiveStat::of(db);
        let moved = match &now {
            None => Some("the database file is gone".to_owned()),
            Some(n) if (n.dev, n.ino) != (then.dev, then.ino) => {
                Some("the database is another file now (replaced)".into())
            }
            Some(n) if n.size != then.size => Some(format!("its size is {} bytes, sealed at {}", n.size, then.size)),
            Some(n) if n.ctime_ns != then.ctime_ns => Some("it was written (or its metadata changed) since".into()),
            _ => None,
        };
        if let Some(why) = moved {
            check.verdict = SealVerdict::Differs;
            check.message = format!(
                "`{}` changed since {} sealed it at {}: {why}, and no guarded session ran since\n(hint: `warden check {}` names the pages that differ; then restore the sealed backup or `warden accept --db {}`)",
                db.display(),
                check.sealed_by.as_deref().unwrap_or("the last clean close"),
                check.sealed_at.as_deref().unwrap_or("?"),
                db.display(),
                db.display()
            );
        }
    }
    check
}

//! Sealed sessions: what the database must be when the next session starts.
//!
//! `PRAGMA integrity_check` proves structure, not content: a flipped payload bit, a page
//! put back to an older version or a torn leaf write pass it. But warden holds the only
//! writer lock and sees every clean close, so it can record what the database *is* at that
//! close and refuse any difference at the next start.
//!
//! Owns: the seal (per-page digests of the post-session backup, which is the database's
//! exact content at the close, see [`digest`]), its file and the open marker ([`file`]),
//! the [`SealState`] a gate starts from, and the [`SealCheck`] a gate, `warden check` and
//! `warden status` report: which pages differ, what they belong to (table or index, from
//! `dbstat` on the verified copy), when the file last changed, and the way forward (restore
//! the sealed backup, or `warden accept`). Does not own when sessions seal (that is
//! [`crate::session`]) or the copies whose bytes are digested ([`crate::copies::copy`]).
//!
//! The chain: a session's clean close seals; the next session's gate compares and, once it
//! passed, marks the seal open (a crash then leaves it superseded, never falsely failed);
//! `accept`, `restore` and `migrate import` start a new chain from what they installed.
//! Writes by another process *during* a session cannot be told apart from the engine's by
//! content: the session's descriptor watch is the evidence for those.

pub mod digest;
pub mod file;

use std::path::Path;

use serde::{Deserialize, Serialize};

pub use digest::{PageDigests, PageHasher, digest_file, digest_reader};
pub use file::{LiveStat, OpenMarker, Seal, SealFileError, SealReason, SealedImage};

/// How many differing pages a report names one by one.
pub const NAMED_PAGES: usize = 100;

/// What the last seal says, before the gate looks at the database.
#[derive(Debug, Clone)]
pub enum SealState {
    /// No seal yet: the database was never closed cleanly by a guarded session here.
    None,
    /// A session began after the seal and has not closed cleanly: it may have changed the
    /// database, so the seal no longer says what it must be.
    Open(OpenMarker),
    /// Sealed: the next session must find exactly this (shared with the copy that is
    /// compared against it, never cloned).
    Sealed(std::sync::Arc<SealedImage>),
    /// The seal cannot be trusted (damaged, or of another database identity).
    Broken(String),
}

/// The seal state of `db` (resolved).
pub fn state(db: &Path) -> SealState {
    state_from(db, file::load(db))
}

/// The seal state of `db` from its seal file as already read (`file::load`), for a caller
/// that needs the record itself too.
pub fn state_from(db: &Path, loaded: Result<Option<SealedImage>, SealFileError>) -> SealState {
    let loaded = match loaded {
        Ok(l) => l,
        Err(e) => return SealState::Broken(e.to_string()),
    };
    if let Some(m) = file::open_marker(db) {
        return SealState::Open(m);
    }
    let Some(image) = loaded else { return SealState::None };
    match (image.seal.db_id.as_deref(), crate::copies::identity::load(db)) {
        (Some(sealed), Some(ours)) if sealed != ours => SealState::Broken(format!(
            "the seal `{}` was made for database identity {sealed}, and `{}` is now {ours}: it is another database\n(hint: `warden accept --db {}` checks this database as it is and seals it)",
            file::seal_path(db).display(),
            db.display(),
            db.display()
        )),
        (Some(_), None) => SealState::Broken(format!(
            "`{}` has a seal but its identity file is gone: warden cannot tell it is the database that was sealed\n(hint: `warden accept --db {}` checks it as it is and seals it)",
            db.display(),
            db.display()
        )),
        _ => SealState::Sealed(std::sync::Arc::new(image)),
    }
}

/// The verdict of comparing a database with its seal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SealVerdict {
    /// No seal to compare with.
    None,
    /// Exactly what was sealed.
    Matches,
    /// A session began after the seal and never closed cleanly; nothing to compare.
    Superseded,
    /// Not what was sealed: changed without a guarded session.
    Differs,
    /// The seal cannot be trusted.
    Broken,
}

/// One differing page and what it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageChange {
    /// Page number (1-based).
    pub page: u32,
    /// The table or index it belongs to now, or what it is (`free or unused page`).
    pub object: String,
}

/// The comparison of a database with its seal, for reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealCheck {
    /// The verdict.
    pub verdict: SealVerdict,
    /// In words, with the way forward when it fails.
    pub message: String,
    /// When the seal was made.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub sealed_at: Option<String>,
    /// The session (or the accept, restore, import) that made it.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub sealed_by: Option<String>,
    /// The backup that holds the sealed content.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub backup_id: Option<String>,
    /// How many pages differ.
    #[serde(default)]
    pub differing_pages: u64,
    /// The first [`NAMED_PAGES`] of them, named.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub pages: Vec<PageChange>,
    /// Pages when sealed / now.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub page_count_sealed: Option<u32>,
    /// Pages now.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub page_count_now: Option<u32>,
    /// The database file's modification time now (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub file_modified: Option<String>,
    /// Its status change time now: a write moves it even when the modification time is put
    /// back.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub file_changed: Option<String>,
    /// The command that restores the sealed content.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub restore_command: Option<String>,
    /// The command that accepts the database as it is.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub accept_command: Option<String>,
}

impl SealCheck {
    /// The database must not be used as it is.
    pub fn fails(&self) -> bool {
        matches!(self.verdict, SealVerdict::Differs | SealVerdict::Broken)
    }

    fn bare(verdict: SealVerdict, message: String) -> Self {
        SealCheck {
            verdict,
            message,
            sealed_at: None,
            sealed_by: None,
            backup_id: None,
            differing_pages: 0,
            pages: Vec::new(),
            page_count_sealed: None,
            page_count_now: None,
            file_modified: None,
            file_changed: None,
            restore_command: None,
            accept_command: None,
        }
    }
}

/// What the copy's pages were compared to, found before the copy is discarded (see
/// [`crate::copies::backup::BackupOptions::expect_seal`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealDiff {
    /// Every differing page number.
    pub pages: Vec<u32>,
    /// The first [`NAMED_PAGES`], named from the copy.
    pub named: Vec<PageChange>,
    /// Pages of the copy.
    pub page_count_now: u32,
}

/// Compares the digests of a verified copy with what was sealed, naming the differing
/// pages from `copy` (still on disk).
pub fn diff(sealed: &SealedImage, now: &PageDigests, copy: &Path) -> Option<SealDiff> {
    let pages = sealed.digests.differing(now);
    if pages.is_empty() {
        return None;
    }
    let named = name_pages(copy, &pages[..pages.len().min(NAMED_PAGES)], now.page_count());
    Some(SealDiff { pages, named, page_count_now: now.page_count() })
}

/// The table or index each page belongs to in `copy` (`dbstat`), or what it is.
fn name_pages(copy: &Path, pages: &[u32], count_now: u32) -> Vec<PageChange> {
    let mut owner: std::collections::HashMap<u32, String> = std::collections::HashMap::new();
    let wanted: std::collections::HashSet<u32> = pages.iter().copied().collect();
    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
    if let Ok(conn) = rusqlite::Connection::open_with_flags_and_vfs(copy, flags, crate::copies::check::PRIVATE_VFS)
        && let Ok(mut st) = conn.prepare("SELECT pageno, name, pagetype FROM dbstat")
        && let Ok(rows) =
            st.query_map([], |r| Ok((r.get::<_, u32>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?)))
    {
        for (page, name, kind) in rows.flatten() {
            if wanted.contains(&page) {
                owner.insert(page, format!("{name} ({kind})"));
            }
        }
    }
    pages
        .iter()
        .map(|&page| PageChange {
            page,
            object: match owner.remove(&page) {
                Some(o) if page == 1 => format!("{o}; the database header"),
                Some(o) => o,
                None if page > count_now => "gone: the file is shorter than when it was sealed".into(),
                None => "free or unused page (freelist, pointer map or lock-byte page)".into(),
            },
        })
        .collect()
}

/// The report for `state` and, when it was sealed, the comparison `diff` (`None`: no
/// page differs).
pub fn check(db: &Path, state: &SealState, diff: Option<&SealDiff>) -> SealCheck {
    let sealed = match state {
        SealState::None => {
            return SealCheck::bare(
                SealVerdict::None,
                "no seal yet: the first clean close of a guarded session seals the database".into(),
            );
        }
        SealState::Open(m) => {
            return SealCheck::bare(
                SealVerdict::Superseded,
                format!(
                    "session {} (pid {}, since {}) began after the last seal and did not close cleanly: nothing to compare until the next clean close",
                    m.session_id, m.pid, m.since
                ),
            );
        }
        SealState::Broken(why) => {
            let mut c = SealCheck::bare(SealVerdict::Broken, why.clone());
            c.accept_command = Some(accept_command(db));
            return c;
        }
        SealState::Sealed(image) => image,
    };
    let s = &sealed.seal;
    let by = match (&s.reason, &s.session_id) {
        (SealReason::Session, Some(id)) => format!("session {id}"),
        (r, _) => serde_json::to_value(r).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default(),
    };
    let mut c = SealCheck::bare(SealVerdict::Matches, format!("exactly as sealed by {by} at {}", s.sealed_at));
    c.sealed_at = Some(s.sealed_at.clone());
    c.sealed_by = Some(by.clone());
    c.backup_id.clone_from(&s.backup_id);
    c.page_count_sealed = Some(s.page_count);
    let Some(d) = diff else { return c };
    c.verdict = SealVerdict::Differs;
    c.differing_pages = d.pages.len() as u64;
    c.pages = d.named.clone();
    c.page_count_now = Some(d.page_count_now);
    let stat = std::fs::metadata(db).ok();
    let when = |t: std::io::Result<std::time::SystemTime>| {
        t.ok().and_then(|t| jiff::Timestamp::try_from(t).ok()).map(|t| t.to_string())
    };
    c.file_modified = stat.as_ref().and_then(|m| when(m.modified()));
    c.file_changed = stat.as_ref().and_then(|m| {
        use std::os::unix::fs::MetadataExt as _;
        jiff::Timestamp::new(m.ctime(), i32::try_from(m.ctime_nsec()).unwrap_or(0)).ok().map(|t| t.to_string())
    });
    c.accept_command = Some(accept_command(db));
    c.restore_command = s.backup_id.as_ref().map(|id| format!("warden restore --db {} --from {id}", db.display()));
    let shown: Vec<String> = d.named.iter().take(5).map(|p| format!("page {} ({})", p.page, p.object)).collect();
    c.message = format!(
        "`{}` is not what {by} sealed at {}: {} of {} page(s) differ ({}{}); the file last changed {}, and no guarded session ran since\n(hint: restore the sealed state with `{}`, or accept the database as it is with `{}`)",
        db.display(),
        s.sealed_at,
        d.pages.len(),
        s.page_count.max(d.page_count_now),
        shown.join(", "),
        if d.pages.len() > shown.len() { ", …" } else { "" },
        c.file_changed.as_deref().unwrap_or("at an unknown time"),
        c.restore_command.as_deref().unwrap_or("warden restore"),
        accept_command(db)
    );
    c
}

fn accept_command(db: &Path) -> String {
    format!("warden accept --db {}", db.display())
}

/// The seal of a verified image whose digests are `digests`.
pub fn make_seal(
    db: &Path,
    digests: PageDigests,
    reason: SealReason,
    session_id: Option<String>,
    backup_id: Option<String>,
    detail: String,
) -> SealedImage {
    let header = crate::format::header::HeaderInfo::from_prefix(&digests.header);
    SealedImage {
        seal: Seal {
            schema: 1,
            db: db.to_owned(),
            db_id: crate::copies::identity::load(db),
            sealed_at: crate::util::identity::now_rfc3339(),
            reason,
            session_id,
            detail,
            backup_id,
            page_size: digests.page_size,
            page_count: digests.page_count(),
            content: digests.content_digest(),
            change_counter: header.as_ref().map(|h| h.change_counter),
            schema_cookie: header.as_ref().map(|h| h.schema_cookie),
            live: LiveStat::of(db),
        },
        digests,
    }
}

/// Writes the seal of content that was just installed or accepted, and audits the start of
/// a new chain. `digests` are those of the installed file (or its verified copy).
///
/// # Errors
/// The seal could not be written.
pub fn start_chain(
    db: &Path,
    digests: PageDigests,
    reason: SealReason,
    backup_id: Option<String>,
    detail: String,
    guard: Option<&crate::guard::vfs::Guard>,
) -> Result<SealedImage, SealFileError> {
    let db = crate::storage::resolve(db).unwrap_or_else(|_| db.to_owned());
    let previous = file::load(&db).ok().flatten().map(|i| i.seal.content);
    let image = make_seal(&db, digests, reason, None, backup_id, detail.clone());
    file::store(&db, &image)?;
    let reason = format!(
        "a new seal chain starts: {detail}; content {} ({} pages){}",
        crate::util::fmt::short_hash(&image.seal.content),
        image.seal.page_count,
        previous.map(|p| format!("; the previous seal was {}", crate::util::fmt::short_hash(&p))).unwrap_or_default()
    );
    let mut r = crate::guard::audit::AuditRecord::decided(
        crate::guard::audit::AuditEvent::SealChainStarted,
        &db,
        "info",
        reason,
    );
    // The seal is written either way; a lost record is logged by the audit log itself.
    let _ = crate::guard::vfs::audit_with(guard, &mut r);
    Ok(image)
}

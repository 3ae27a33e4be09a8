//! The push to the offsite copy at the end of a session: after the post-session restore
//! point is published and the writer lock released, never able to fail the session. Owns
//! only that policy; the push itself is `copies::offsite`.

use std::path::Path;

use crate::copies::backup::BackupStore;
use crate::copies::offsite::{OffsiteConfig, PushOptions, PushRecord, push};
use crate::guard::vfs::Guard;

/// Pushes, and turns any failure into a record (the push wrote its own record and audit
/// line already, whatever happened).
pub(super) fn push_after_session(
    db: &Path,
    store: &BackupStore,
    cfg: &OffsiteConfig,
    guard: Option<Guard>,
) -> PushRecord {
    match push(db, store, cfg, PushOptions { guard, ..Default::default() }) {
        Ok(rec) => rec,
        Err(e) => {
            let rec = crate::copies::offsite::latest_push(db).filter(|r| !r.ok);
            let mut rec =
                rec.unwrap_or_else(|| PushRecord { schema: 1, remote: cfg.url.clone(), ..Default::default() });
            let text = e.to_string();
            tracing::warn!(db = %db.display(), "the offsite push failed (the session is not failed by it): {text}");
            rec.error = Some(text.lines().next().unwrap_or_default().to_owned());
            rec
        }
    }
}

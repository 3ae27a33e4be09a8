//! The offsite part of `warden status`: the last push (its record, written by every push)
//! and the lag, how long the oldest good restore point the remote lacks has existed only on
//! this host. Owns the `offsite_lag` problem (18). Does not talk to the remote: status stays
//! local and fast; the record says what the last push saw.

use std::time::Duration;

use jiff::Timestamp;

use super::model::{OffsiteInfo, Problem, ProblemKind};
use crate::copies::backup::BackupStore;

/// The offsite section and its problem, when offsite copies are configured (`max_lag`).
pub(super) fn gather(
    db: &std::path::Path,
    store: &BackupStore,
    max_lag: Duration,
    now: Timestamp,
) -> (OffsiteInfo, Option<Problem>) {
    let rec = crate::copies::offsite::latest_push(db);
    let pushed_up_to =
        rec.as_ref().and_then(|r| r.newest_remote_created.as_deref()).and_then(|t| t.parse::<Timestamp>().ok());
    let oldest_missing = store
        .list()
        .unwrap_or_default()
        .iter()
        .filter(|r| r.manifest.is_good() && !r.manifest.check_pending())
        .filter_map(|r| r.manifest.created_at())
        .filter(|t| pushed_up_to.is_none_or(|p| *t > p))
        .min();
    let lag = oldest_missing.map_or(0, |t| u64::try_from(now.as_second() - t.as_second()).unwrap_or(0));
    let info = OffsiteInfo {
        remote: rec.as_ref().map(|r| r.remote.clone()),
        last_push_ok: rec.as_ref().map(|r| r.ok),
        last_push_at: rec.as_ref().map(|r| r.finished_at.clone()),
        last_error: rec.as_ref().and_then(|r| r.error.clone()),
        newest_remote: rec.as_ref().and_then(|r| r.newest_remote.clone()),
        lag_seconds: lag,
        max_lag_seconds: max_lag.as_secs(),
    };
    let problem = (lag > max_lag.as_secs()).then(|| {
        Problem::new(
            ProblemKind::OffsiteLag,
            format!(
                "a good restore point has been on this host only for {} (more than [offsite] max_lag, {}){}\n(hint: `warden offsite push` uploads it; check the endpoint and credentials)",
                humantime::format_duration(Duration::from_secs(lag)),
                humantime::format_duration(max_lag),
                info.last_error.as_deref().map(|e| format!("; the last push failed: {e}")).unwrap_or_default()
            ),
        )
    });
    (info, problem)
}

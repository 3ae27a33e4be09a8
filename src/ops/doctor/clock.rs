//! The `clock` check: system time vs. the newest timestamp warden recorded for the database,
//! and NTP synchronisation (`timedatectl`). Does not set the clock.

use std::collections::BTreeSet;
use std::io::{self, Read};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use jiff::Timestamp;
use serde_json::json;

use super::model::{Check, Ctx, Verdict, mk};
use crate::copies::backup::BackupStore;
use crate::session::SessionConfig;

/// A clock before this (2024-01-01T00:00:00Z) is certainly wrong.
const PLAUSIBLE_EPOCH_SECS: i64 = 1_704_067_200;

/// The newest timestamp warden recorded for this database, and what it was.
fn newest_recorded(cx: &Ctx<'_>) -> (Option<(Timestamp, String)>, usize) {
    let mut newest: Option<(Timestamp, String)> = None;
    let mut seen = 0usize;
    let mut consider = |t: Timestamp, what: String| {
        seen += 1;
        if newest.as_ref().is_none_or(|(n, _)| t > *n) {
            newest = Some((t, what));
        }
    };
    if let Ok(list) = BackupStore::new(&cx.backup_dir, &cx.db).list() {
        for r in list {
            if let Some(t) = r.manifest.created_at() {
                consider(t, format!("backup {} (manifest `created`)", r.manifest.id));
            }
        }
    }
    if let Ok(list) = crate::session::health::list(&cx.session_dir) {
        for (_, a) in list {
            for (ts, what) in [(Some(&a.started_at), "started_at"), (a.finished_at.as_ref(), "finished_at")] {
                if let Some(t) = ts.and_then(|s| s.parse::<Timestamp>().ok()) {
                    consider(t, format!("session {} ({what})", a.session_id));
                }
            }
        }
    }
    if let Ok(st) = &cx.lock
        && let Some(r) = &st.record
    {
        if let Ok(t) = r.holder.since.parse::<Timestamp>() {
            consider(t, "writer lock record (since)".into());
        }
        if let Some(c) = &r.last_close
            && let Ok(t) = c.at.parse::<Timestamp>()
        {
            consider(t, "writer lock record (last clean close)".into());
        }
    }
    // Modification times of everything in <db>.warden/ (two levels deep) and its backup
    // and session directories, wherever they are.
    let mut dirs = vec![SessionConfig::state_dir(&cx.db), cx.backup_dir.clone(), cx.session_dir.clone()];
    dirs.sort();
    dirs.dedup();
    let mut stack: Vec<(PathBuf, u32)> = dirs.into_iter().map(|d| (d, 0)).collect();
    let mut visited = BTreeSet::new();
    while let Some((d, depth)) = stack.pop() {
        if !visited.insert(d.clone()) {
            continue;
        }
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let Ok(md) = e.metadata() else { continue };
            if md.is_dir() {
                if depth < 2 {
                    stack.push((e.path(), depth + 1));
                }
                continue;
            }
            if let Ok(t) = md.modified().and_then(|m| Timestamp::try_from(m).map_err(io::Error::other)) {
                consider(t, format!("file `{}` (mtime)", e.path().display()));
            }
        }
    }
    (newest, seen)
}

/// `timedatectl show -p NTPSynchronized --value`: `Some(true/false)`, or why it is unknown.
fn ntp_synchronized() -> Result<bool, String> {
    let mut child = Command::new("timedatectl")
        .args(["show", "-p", "NTPSynchronized", "--value"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("timedatectl not available ({e})"))?;
    let deadline = Instant::now() + Duration::from_secs(3);
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err("timedatectl did not answer within 3 s".into());
            }
            Err(e) => return Err(format!("timedatectl: {e}")),
        }
    };
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut out);
    }
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    if !status.success() {
        let first = err.lines().next().unwrap_or("").trim().to_owned();
        return Err(format!("timedatectl failed ({status}): {first}"));
    }
    match out.trim() {
        "yes" => Ok(true),
        "no" => Ok(false),
        other => Err(format!("timedatectl said {other:?}")),
    }
}

pub(super) fn clock(cx: &Ctx<'_>) -> Check {
    const ID: &str = "clock";
    const TITLE: &str = "clock sanity";
    let now = Timestamp::try_from(SystemTime::now()).unwrap_or(Timestamp::UNIX_EPOCH);
    let mut verdict = Verdict::Pass;
    let mut parts = vec![format!("system time {now}")];
    let mut fix = String::new();
    if now.as_second() < PLAUSIBLE_EPOCH_SECS {
        verdict = Verdict::Fail;
        parts.push("before 2024-01-01: the clock is certainly wrong".into());
        fix = "set the clock and enable NTP (`timedatectl set-ntp true`) before running sessions".into();
    }
    let (newest, seen) = newest_recorded(cx);
    let ahead = newest.as_ref().map(|(t, _)| t.as_second() - now.as_second());
    match &newest {
        Some((t, what)) => {
            let ahead = ahead.unwrap_or(0);
            let tol = cx.opts.clock_tolerance.as_secs() as i64;
            if ahead > tol {
                verdict = Verdict::Fail;
                parts.push(format!(
                    "the newest of {seen} recorded timestamps, {what}, is {t}: {} in the future (tolerance {}): retention and backup-age alarms would be wrong",
                    crate::ops::status::human_age(ahead),
                    crate::ops::status::human_age(tol)
                ));
                fix = "set the system clock right (enable NTP: `timedatectl set-ntp true`), then check the future-dated backups and artifacts before pruning".into();
            } else {
                parts.push(format!("newest of {seen} recorded timestamps: {what} at {t} (not in the future)"));
            }
        }
        None => parts.push("no backups or artifacts recorded yet to compare with".into()),
    }
    let ntp = if cx.opts.ntp { Some(ntp_synchronized()) } else { None };
    match &ntp {
        Some(Ok(true)) => parts.push("NTP synchronized (timedatectl)".into()),
        Some(Ok(false)) => {
            if verdict < Verdict::Warn {
                verdict = Verdict::Warn;
                fix = "enable time synchronisation: `timedatectl set-ntp true` (systemd-timesyncd or chrony)".into();
            }
            parts.push("NTP not synchronized (timedatectl)".into());
        }
        Some(Err(why)) => parts.push(format!("NTP state unknown: {why}")),
        None => parts.push("NTP not asked".into()),
    }
    let data = json!({
        "now": now.to_string(),
        "newest_recorded": newest.as_ref().map(|(t, w)| json!({"at": t.to_string(), "what": w})),
        "seconds_ahead": ahead,
        "tolerance_seconds": cx.opts.clock_tolerance.as_secs(),
        "ntp_synchronized": ntp.as_ref().and_then(|r| r.as_ref().ok().copied()),
    });
    mk(ID, TITLE, verdict, parts.join("; "), fix, data)
}

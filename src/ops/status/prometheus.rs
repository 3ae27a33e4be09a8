//! The node_exporter textfile made from a [`StatusReport`] ([`prometheus_text`],
//! [`write_prometheus`]): metric names, labels and escaping. Does not own the report's facts.

use std::io;
use std::path::Path;

use jiff::Timestamp;

use super::model::{ProblemKind, StatusReport};
use crate::copies::backup::CheckMode;
use crate::guard::lock::LockState;
use crate::session::health::SessionStatus;

/// Where node_exporter reads textfiles on Debian and Ubuntu (`prometheus-node-exporter`'s
/// `--collector.textfile.directory`).
pub const DEFAULT_DIR: &str = "/var/lib/prometheus/node-exporter";

/// The textfile for database `db` in directory `dir`: `warden-<file name>.prom` (one per
/// database, so several guarded databases on a host never overwrite each other's).
pub fn textfile_in(dir: &Path, db: &Path) -> std::path::PathBuf {
    let name = db.file_name().map_or_else(|| "db".into(), |n| n.to_string_lossy().into_owned());
    dir.join(format!("warden-{name}.prom"))
}

/// Escapes a label value per the text exposition format: backslash, double quote and line
/// feed.
pub fn escape_label_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

struct Families {
    out: String,
    db: String,
}

impl Families {
    fn family(&mut self, name: &str, help: &str, samples: &[(Vec<(&str, String)>, String)]) {
        if samples.is_empty() {
            return;
        }
        self.out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n"));
        for (labels, value) in samples {
            let mut l = format!("db=\"{}\"", escape_label_value(&self.db));
            for (k, v) in labels {
                l.push_str(&format!(",{k}=\"{}\"", escape_label_value(v)));
            }
            self.out.push_str(&format!("{name}{{{l}}} {value}\n"));
        }
    }

    fn one(&mut self, name: &str, help: &str, value: impl ToString) {
        self.family(name, help, &[(Vec::new(), value.to_string())]);
    }
}

fn bit(b: bool) -> u8 {
    u8::from(b)
}

fn ts_seconds(rfc3339: &str) -> Option<String> {
    let t: Timestamp = rfc3339.parse().ok()?;
    Some(format!("{:.3}", t.as_millisecond() as f64 / 1000.0))
}

/// The report as a node_exporter textfile (see the module docs for the series).
pub fn prometheus_text(r: &StatusReport) -> String {
    let mut f = Families { out: String::new(), db: r.db.display().to_string() };
    let by_kind: Vec<_> = r
        .backups
        .newest_good_by_kind
        .iter()
        .filter_map(|b| Some((vec![("kind", b.kind.as_str().to_owned())], ts_seconds(&b.created)?)))
        .collect();
    f.family(
        "warden_backup_last_success_timestamp_seconds",
        "Creation time of the newest good (verified, restorable) backup, per kind.",
        &by_kind,
    );
    if let Some(age) = r.backups.newest_good.as_ref().and_then(|b| b.age_seconds) {
        f.one("warden_backup_age_seconds", "Age of the newest good backup.", age);
    }
    if r.backups.error.is_none() {
        f.one("warden_backups_good", "Good backups retained.", r.backups.good);
    }
    if let Some(b) = &r.backups.newest_good {
        f.one("warden_backup_bytes", "Size of the newest good backup.", b.size);
    }
    if let Some(g) = &r.last_gate {
        let mode = match g.mode {
            CheckMode::Full => "full",
            CheckMode::Quick => "quick",
        };
        f.family(
            "warden_integrity_ok",
            "1 when the most recent integrity gate passed.",
            &[(vec![("mode", mode.to_owned())], bit(g.passed).to_string())],
        );
    }
    if let Some(s) = &r.last_session {
        let ok =
            !r.problems.iter().any(|p| matches!(p.kind, ProblemKind::SessionEndedBadly | ProblemKind::SupervisorDied))
                && !matches!(s.status, SessionStatus::Refused | SessionStatus::ForeignWriterStopped);
        f.one("warden_last_session_ok", "1 when the last session completed or is running.", bit(ok));
    }
    if let Some(state) = r.writer_lock.state {
        f.one("warden_writer_lock_held", "1 while a writer holds the lock.", bit(state == LockState::Held));
    }
    if let Some(v) = &r.storage.database {
        f.one(
            "warden_db_on_network_fs",
            "1 when the database is not on storage judged local (network, lock-less or unknown).",
            bit(!v.kind.is_local()),
        );
    }
    let free: Vec<_> = [("database", &r.disk.database_dir), ("backups", &r.disk.backup_dir)]
        .into_iter()
        .filter_map(|(dir, d)| Some((vec![("dir", dir.to_owned())], d.free_bytes?.to_string())))
        .collect();
    f.family("warden_free_bytes", "Free bytes in the database's and the backup directory.", &free);
    f.one("warden_db_bytes", "Size of the database file.", r.database.size.unwrap_or(0));
    f.family(
        "warden_sqlite_version_ok",
        "1 when the linked SQLite is at least 3.51.3.",
        &[(vec![("version", r.sqlite.version.clone())], bit(r.sqlite.ok).to_string())],
    );
    if let Some(d) = &r.drill {
        f.one("warden_drill_ok", "1 when the last restore drill passed.", bit(d.ok == Some(true) && d.error.is_none()));
        if let Some(t) = d.finished_at.as_deref().and_then(ts_seconds) {
            f.one("warden_drill_last_timestamp_seconds", "When the last restore drill finished.", t);
        }
    }
    if let Some(o) = &r.offsite {
        f.one(
            "warden_offsite_lag_seconds",
            "Seconds the oldest good restore point not yet offsite has existed (0: none).",
            o.lag_seconds,
        );
        f.one(
            "warden_offsite_push_ok",
            "1 when the last offsite push put every local good point on the remote.",
            bit(o.last_push_ok == Some(true)),
        );
    }
    f.one("warden_healthy", "1 when warden status finds no problem.", bit(r.healthy));
    f.one("warden_status_code", "Exit code of warden status (0 healthy; see the README).", r.exit_code);
    let now = ts_seconds(&r.checked_at).unwrap_or_else(|| "0".into());
    f.one("warden_status_timestamp_seconds", "When this status was collected.", now);
    f.out
}

/// Writes [`prometheus_text`] to `path` atomically (mode `0644`, readable by
/// node_exporter).
///
/// # Errors
/// The I/O error (a missing directory says so, with the way out); the previous file is
/// then intact.
pub fn write_prometheus(r: &StatusReport, path: &Path) -> io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.is_dir()
    {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "the directory `{}` does not exist (hint: node_exporter reads its textfiles from there: `apt install prometheus-node-exporter` creates {DEFAULT_DIR}; or pass `--prom FILE` in the directory your node_exporter's --collector.textfile.directory names)",
                dir.display()
            ),
        ));
    }
    crate::util::atomic::write_atomic(path, prometheus_text(r).as_bytes(), 0o644)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::status::{StatusOptions, collect};

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label_value(r#"a\b"c"#), r#"a\\b\"c"#);
        assert_eq!(escape_label_value("x\ny"), "x\\ny");
        assert_eq!(escape_label_value("/plain/path.db"), "/plain/path.db");
    }

    #[test]
    fn prometheus_text_has_help_and_type_before_samples() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("we\"ird.db");
        let r = collect(&StatusOptions::new(&db));
        assert_eq!(r.exit_code, 11, "{:#?}", r.problems);
        let text = prometheus_text(&r);
        assert!(text.ends_with('\n'));
        let mut typed = std::collections::BTreeSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                typed.insert(rest.split(' ').next().unwrap().to_owned());
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let name = line.split('{').next().unwrap();
            assert!(typed.contains(name), "{name} sampled before its TYPE");
            assert!(line.contains("db=\"") && line.contains("we\\\"ird.db"), "{line}");
        }
        assert!(text.contains("warden_healthy{"), "{text}");
    }
}

//! `warden.toml`: one file naming a database, where its backups, artifacts and audit log
//! go, the gate, retention, and the engine command. Every key is also a command-line flag;
//! flags win.
//!
//! Owns: the file format, finding the file, resolving relative paths (against the file's
//! directory), merging flags over it, and the defaults. Does not own: what the settings do
//! ([`crate::session`]).
//!
//! ```toml
//! # warden.toml (every key optional; shown with its default)
//! database    = "engine.db"          # required here or as --db
//! create      = false                # allow a missing/empty database (first run only)
//! backup_dir  = "engine.db.warden/backups"
//! session_dir = "engine.db.warden/sessions"
//! audit_dir   = "…"                  # default: $WARDEN_AUDIT_DIR, $XDG_STATE_HOME/sqlite-warden,
//!                                    # ~/.local/state/sqlite-warden, /var/lib/sqlite-warden
//!
//! [gate]
//! check  = "full"                    # "full" (integrity_check) or "quick" (quick_check)
//! budget = "30m"                     # the gate fails closed when the check takes longer
//!
//! [retention]                        # restic-style; see `session::retention`
//! keep_last = 10
//! keep_hourly = 0
//! keep_daily = 7
//! keep_weekly = 4
//! keep_monthly = 6
//! keep_crash_copies = 3
//! # max_total_bytes = 10_000_000_000
//!
//! [backups]                         # how backups are kept; see `copies::store`
//! store       = "pages"              # the deduplicated page store; "files": one full copy each
//! compression = 3                    # zstd level of stored pages, 0 (off) to 19
//! post_check  = "at_close"           # "next_gate": the post-session restore point is read
//!                                    # straight from the file and checked by the next gate
//!
//! [engine]
//! command = ["/usr/local/bin/engine", "--live"]   # no shell; `warden run -- …` overrides
//!
//! [snapshots]                        # analysis snapshots; see `session::snapshot`
//! dir   = "engine.db.warden/snapshots"
//! every = "off"                      # during `warden run`: e.g. "10m"; at least 1s
//! keep  = 5                          # newest N; the one `latest.sqlite` points to stays
//! check = "quick"                    # "quick", "full" or "none"
//!
//! [offsite]                          # offsite copies to S3; see `ops::offsite_config`
//! url = "s3://bucket/prefix"
//!
//! [session]                          # while `warden run`'s engine runs; see `session::watch`
//! on_foreign_writer    = "warn"      # or "stop": SIGTERM to the engine, exit 17
//! foreign_writer_every = "2s"        # how often /proc is looked at; at least 100ms
//! ```
//!
//! Where the file is found: `--config PATH`, else `$WARDEN_CONFIG`, else `./warden.toml`
//! when it exists. No file at all is fine when `--db` is given.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::copies::backup::{BackupStore, CheckMode, StoreFormat};
use crate::copies::retention::RetentionPolicy;
use crate::session::SessionConfig;
use crate::session::watch::OnForeignWriter;

/// The file as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// The database.
    pub database: Option<PathBuf>,
    /// Allow a missing or empty database.
    pub create: Option<bool>,
    /// Backup directory.
    pub backup_dir: Option<PathBuf>,
    /// Artifact directory.
    pub session_dir: Option<PathBuf>,
    /// Audit log directory.
    pub audit_dir: Option<PathBuf>,
    /// `[gate]`.
    #[serde(default)]
    pub gate: GateSection,
    /// `[retention]`.
    pub retention: Option<RetentionPolicy>,
    /// `[engine]`.
    #[serde(default)]
    pub engine: EngineSection,
    /// `[snapshots]`.
    #[serde(default)]
    pub snapshots: SnapshotsSection,
    /// `[session]`.
    #[serde(default)]
    pub session: SessionSection,
    /// `[backups]`.
    #[serde(default)]
    pub backups: BackupsSection,
    /// `[offsite]` (see `ops::offsite_config`).
    #[serde(default)]
    pub offsite: super::offsite_config::OffsiteSection,
}

/// `[backups]`: how new backups are kept.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupsSection {
    /// `pages` (default) or `files`.
    pub store: Option<String>,
    /// zstd level of stored pages, 0 (off) to 19 (default 3).
    pub compression: Option<i64>,
    /// `at_close` (default) or `next_gate`.
    pub post_check: Option<String>,
}

/// `[backups]` as a [`StoreFormat`].
///
/// # Errors
/// [`ConfigError::Invalid`] for an unknown store or a level out of range.
fn parse_backups(b: &BackupsSection) -> Result<StoreFormat, ConfigError> {
    let level = match b.compression {
        None => 3,
        Some(l @ 0..=19) => l as i32,
        Some(l) => {
            return Err(ConfigError::Invalid {
                key: "backups.compression",
                message: format!("{l} (hint: a zstd level from 0, off, to 19; 3 is the default)"),
            });
        }
    };
    match b.store.as_deref() {
        None | Some("pages") => Ok(StoreFormat::Pages { level }),
        Some("files") if b.compression.is_none() => Ok(StoreFormat::Files),
        Some("files") => Err(ConfigError::Invalid {
            key: "backups.compression",
            message: "set with store = \"files\", which never compresses (hint: drop it, or use store = \"pages\")"
                .into(),
        }),
        Some(other) => Err(ConfigError::Invalid {
            key: "backups.store",
            message: format!("{other:?} (hint: \"pages\" for the deduplicated page store, or \"files\")"),
        }),
    }
}

/// `[session]`: what happens while `warden run`'s engine runs.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionSection {
    /// `warn` (default) or `stop`.
    pub on_foreign_writer: Option<String>,
    /// How often to look for foreign writers (`2s`).
    pub foreign_writer_every: Option<String>,
}

/// `[snapshots]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotsSection {
    /// Snapshot directory.
    pub dir: Option<PathBuf>,
    /// Interval of periodic snapshots during `warden run` (`10m`, `off`).
    pub every: Option<String>,
    /// Snapshots kept.
    pub keep: Option<u32>,
    /// `quick`, `full` or `none`.
    pub check: Option<String>,
}

/// `[gate]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GateSection {
    /// `full` or `quick`.
    pub check: Option<CheckMode>,
    /// A duration such as `90s`, `30m`, `2h`.
    pub budget: Option<String>,
}

/// `[engine]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineSection {
    /// Program and arguments.
    pub command: Option<Vec<String>>,
}

/// Why the configuration is unusable (exit code 78).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read the config `{path}`: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid.
    #[error("invalid config `{path}`: {message}\n(hint: see the keys documented in the README, section Configuration)")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A value is not acceptable.
    #[error("invalid setting `{key}`: {message}")]
    Invalid {
        /// The key or flag.
        key: &'static str,
        /// Why, with a hint.
        message: String,
    },
    /// No database was named.
    #[error("no database given\n(hint: pass --db PATH, or set `database = \"…\"` in warden.toml)")]
    NoDatabase,
}

/// Values given on the command line; `None` leaves the file's value (or the default).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--db`.
    pub database: Option<PathBuf>,
    /// `--create`.
    pub create: bool,
    /// `--backup-dir`.
    pub backup_dir: Option<PathBuf>,
    /// `--session-dir`.
    pub session_dir: Option<PathBuf>,
    /// `--audit-dir`.
    pub audit_dir: Option<PathBuf>,
    /// `--check`.
    pub check: Option<CheckMode>,
    /// `--gate-budget`.
    pub budget: Option<String>,
    /// `--keep-last` and friends.
    pub keep_last: Option<u32>,
    /// `--keep-hourly`.
    pub keep_hourly: Option<u32>,
    /// `--keep-daily`.
    pub keep_daily: Option<u32>,
    /// `--keep-weekly`.
    pub keep_weekly: Option<u32>,
    /// `--keep-monthly`.
    pub keep_monthly: Option<u32>,
    /// `--max-total-bytes`.
    pub max_total_bytes: Option<u64>,
    /// `--snapshot-dir`.
    pub snapshot_dir: Option<PathBuf>,
    /// `--snapshot-every` (`10m`, `off`).
    pub snapshot_every: Option<String>,
    /// `--snapshot-keep`.
    pub snapshot_keep: Option<u32>,
    /// `--on-foreign-writer` (`warn`, `stop`).
    pub on_foreign_writer: Option<String>,
    /// `--foreign-writer-every`.
    pub foreign_writer_every: Option<String>,
    /// The command after `--`.
    pub command: Vec<OsString>,
}

/// The merged settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The config file used, if any.
    pub source: Option<PathBuf>,
    /// The database.
    pub database: PathBuf,
    /// Allow creation.
    pub create: bool,
    /// Backups.
    pub backup_dir: PathBuf,
    /// Artifacts.
    pub session_dir: PathBuf,
    /// Audit log directory (`None`: the guard's default).
    pub audit_dir: Option<PathBuf>,
    /// The gate's check.
    pub check: CheckMode,
    /// The gate's budget.
    pub budget: Option<Duration>,
    /// Retention.
    pub retention: RetentionPolicy,
    /// The engine command.
    pub command: Vec<OsString>,
    /// Analysis snapshots.
    pub snapshot_dir: PathBuf,
    /// Periodic snapshots during `warden run` (`None`: off, the default).
    pub snapshot_every: Option<Duration>,
    /// Snapshots kept (at least 1).
    pub snapshot_keep: u32,
    /// The check of each snapshot (`None`: unchecked).
    pub snapshot_check: Option<CheckMode>,
    /// What a foreign writer during `warden run` does.
    pub on_foreign_writer: OnForeignWriter,
    /// How often `warden run` looks for foreign writers.
    pub foreign_writer_every: Duration,
    /// How new backups are kept (`[backups]`).
    pub backup_format: StoreFormat,
    /// `[backups] post_check = "next_gate"`.
    pub defer_post_check: bool,
    /// `[offsite]`, when it names a url.
    pub offsite: Option<crate::copies::offsite::OffsiteConfig>,
}

/// Finds the config file: `explicit`, else `$WARDEN_CONFIG`, else `./warden.toml` if present.
pub fn discover(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_owned());
    }
    if let Some(p) = std::env::var_os("WARDEN_CONFIG").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let local = PathBuf::from("warden.toml");
    local.exists().then_some(local)
}

/// Reads and parses a config file.
///
/// # Errors
/// [`ConfigError::Read`] or [`ConfigError::Parse`].
pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
    parse(&text).map_err(|message| ConfigError::Parse { path: path.to_owned(), message })
}

/// Parses config text.
///
/// # Errors
/// The parser's message (with line and column).
pub fn parse(text: &str) -> Result<FileConfig, String> {
    toml::from_str(text).map_err(|e| e.to_string().trim_end().to_owned())
}

/// A time limit or interval as operators write it: `90s`, `30m`, `2h`; `none` or `off` for
/// no limit (or, for an interval, never). Zero in any spelling (`0`, `0s`, `0m`) is refused:
/// it reads as "no limit" to some and "no time at all" to others, and warden will not guess.
///
/// # Errors
/// The message to show (with a hint) for an unparsable or zero value.
pub fn parse_limit(s: &str) -> Result<Option<Duration>, String> {
    let t = s.trim();
    if matches!(t, "none" | "off") {
        return Ok(None);
    }
    match humantime::parse_duration(t) {
        Ok(d) if d.is_zero() => Err(format!(
            "`{s}` is ambiguous (no limit, or no time at all?) (hint: write `none` for no limit, or a positive duration such as `30m`)"
        )),
        Ok(d) => Ok(Some(d)),
        Err(e) => Err(format!("`{s}`: {e} (hint: write e.g. `90s`, `30m`, `2h`, or `none`)")),
    }
}

fn parse_duration(key: &'static str, s: &str) -> Result<Option<Duration>, ConfigError> {
    parse_limit(s).map_err(|message| ConfigError::Invalid { key, message })
}

impl Settings {
    /// Merges `overrides` over the config file at `file` (if any) over the defaults.
    ///
    /// # Errors
    /// [`ConfigError`] for an unreadable or invalid file, a bad value, or no database.
    pub fn resolve(file: Option<&Path>, overrides: Overrides) -> Result<Settings, ConfigError> {
        let (fc, base) = match file {
            Some(p) => (load(p)?, p.parent().map(Path::to_owned).unwrap_or_default()),
            None => (FileConfig::default(), PathBuf::new()),
        };
        // An empty path would silently mean "the working directory" (backups, audit log and
        // all): refused, whether it came from the file or a flag.
        let empty = |p: &Option<PathBuf>| p.as_ref().is_some_and(|p| p.as_os_str().is_empty());
        for (key, bad) in [
            ("database", empty(&fc.database) || empty(&overrides.database)),
            ("backup_dir", empty(&fc.backup_dir) || empty(&overrides.backup_dir)),
            ("session_dir", empty(&fc.session_dir) || empty(&overrides.session_dir)),
            ("audit_dir", empty(&fc.audit_dir) || empty(&overrides.audit_dir)),
            ("snapshots.dir", empty(&fc.snapshots.dir) || empty(&overrides.snapshot_dir)),
        ] {
            if bad {
                return Err(ConfigError::Invalid {
                    key,
                    message: "an empty path, which would mean the working directory\n(hint: leave the setting out for its default, or give a path)".into(),
                });
            }
        }
        let rel = |p: PathBuf| if p.is_absolute() || base.as_os_str().is_empty() { p } else { base.join(p) };
        let database = overrides.database.or_else(|| fc.database.map(rel)).ok_or(ConfigError::NoDatabase)?;
        let database = crate::storage::resolve(&database)
            .map_err(|e| ConfigError::Invalid { key: "database", message: format!("`{}`: {e}", database.display()) })?;
        let backup_dir = overrides
            .backup_dir
            .or_else(|| fc.backup_dir.map(rel))
            .unwrap_or_else(|| SessionConfig::state_dir(&database).join("backups"));
        let session_dir = overrides
            .session_dir
            .or_else(|| fc.session_dir.map(rel))
            .unwrap_or_else(|| SessionConfig::state_dir(&database).join("sessions"));
        let audit_dir = overrides.audit_dir.or_else(|| fc.audit_dir.map(rel));
        let check = overrides.check.or(fc.gate.check).unwrap_or_default();
        let budget = match overrides.budget.or(fc.gate.budget) {
            Some(s) => parse_duration("gate.budget", &s)?,
            None => Some(Duration::from_secs(30 * 60)),
        };
        let mut retention = fc.retention.unwrap_or_default();
        let set = |slot: &mut u32, v: Option<u32>| {
            if let Some(v) = v {
                *slot = v;
            }
        };
        set(&mut retention.keep_last, overrides.keep_last);
        set(&mut retention.keep_hourly, overrides.keep_hourly);
        set(&mut retention.keep_daily, overrides.keep_daily);
        set(&mut retention.keep_weekly, overrides.keep_weekly);
        set(&mut retention.keep_monthly, overrides.keep_monthly);
        if overrides.max_total_bytes.is_some() {
            retention.max_total_bytes = overrides.max_total_bytes;
        }
        retention.validate().map_err(|e| ConfigError::Invalid { key: "retention", message: e.to_string() })?;
        let snapshot_dir = overrides
            .snapshot_dir
            .or_else(|| fc.snapshots.dir.map(rel))
            .unwrap_or_else(|| crate::copies::snapshot::default_dir(&database));
        let snapshot_every = match overrides.snapshot_every.or(fc.snapshots.every) {
            Some(s) => parse_duration("snapshots.every", &s)?,
            None => None,
        };
        if let Some(every) = snapshot_every
            && every < Duration::from_secs(1)
        {
            return Err(ConfigError::Invalid {
                key: "snapshots.every",
                message: format!(
                    "{} is too short (hint: at least `1s`; each snapshot copies the whole database)",
                    humantime::format_duration(every)
                ),
            });
        }
        let snapshot_keep =
            overrides.snapshot_keep.or(fc.snapshots.keep).unwrap_or(crate::copies::snapshot::DEFAULT_KEEP);
        if snapshot_keep == 0 {
            return Err(ConfigError::Invalid {
                key: "snapshots.keep",
                message: "0 (hint: at least 1: `latest.sqlite` always points at a kept snapshot)".into(),
            });
        }
        let snapshot_check = parse_snapshot_check(fc.snapshots.check.as_deref())?;
        let on_foreign_writer = match overrides.on_foreign_writer.or(fc.session.on_foreign_writer) {
            Some(s) => OnForeignWriter::parse(&s)
                .map_err(|message| ConfigError::Invalid { key: "session.on_foreign_writer", message })?,
            None => OnForeignWriter::default(),
        };
        let foreign_writer_every = match overrides.foreign_writer_every.or(fc.session.foreign_writer_every) {
            Some(s) => parse_foreign_writer_every(&s)?,
            None => crate::session::watch::DEFAULT_EVERY,
        };
        let backup_format = parse_backups(&fc.backups)?;
        let offsite = super::offsite_config::resolve(fc.offsite.clone(), &base)
            .map_err(|(key, message)| ConfigError::Invalid { key, message })?;
        let defer_post_check = match fc.backups.post_check.as_deref() {
            None | Some("at_close") => false,
            Some("next_gate") if backup_format != StoreFormat::Files => true,
            Some("next_gate") => {
                return Err(ConfigError::Invalid {
                    key: "backups.post_check",
                    message: "\"next_gate\" needs store = \"pages\" (hint: drop post_check, or use the page store)"
                        .into(),
                });
            }
            Some(other) => {
                return Err(ConfigError::Invalid {
                    key: "backups.post_check",
                    message: format!("{other:?} (hint: \"at_close\" or \"next_gate\")"),
                });
            }
        };
        let command = if overrides.command.is_empty() {
            fc.engine.command.unwrap_or_default().into_iter().map(OsString::from).collect()
        } else {
            overrides.command
        };
        Ok(Settings {
            source: file.map(Path::to_owned),
            database,
            create: overrides.create || fc.create.unwrap_or(false),
            backup_dir,
            session_dir,
            audit_dir,
            check,
            budget,
            retention,
            command,
            snapshot_dir,
            snapshot_every,
            snapshot_keep,
            snapshot_check,
            on_foreign_writer,
            foreign_writer_every,
            backup_format,
            defer_post_check,
            offsite,
        })
    }

    /// The backup store these settings name.
    pub fn backup_store(&self) -> BackupStore {
        BackupStore::new(&self.backup_dir, &self.database).with_format(self.backup_format)
    }

    /// The options of one snapshot under these settings.
    pub fn snapshot_options(&self, guard: crate::guard::vfs::Guard) -> crate::copies::snapshot::SnapshotOptions {
        crate::copies::snapshot::SnapshotOptions {
            dir: Some(self.snapshot_dir.clone()),
            keep: self.snapshot_keep,
            check: self.snapshot_check,
            guard: Some(guard),
            ..Default::default()
        }
    }

    /// The guard these settings call for: the default one, or one logging to `audit_dir`.
    ///
    /// # Errors
    /// [`crate::guard::error::RegisterError`] if the guard cannot be registered.
    pub fn guard(&self) -> Result<crate::guard::vfs::Guard, crate::guard::error::RegisterError> {
        match &self.audit_dir {
            None => crate::guard::vfs::default_guard(),
            Some(dir) => {
                if let Some(g) = crate::guard::vfs::find_guard(crate::guard::vfs::DEFAULT_NAME)
                    && g.config().audit_dir == *dir
                {
                    return Ok(g);
                }
                let config = crate::guard::vfs::GuardConfig { audit_dir: dir.clone(), ..Default::default() };
                crate::guard::vfs::register(crate::guard::vfs::DEFAULT_NAME, config)
            }
        }
    }

    /// The session configuration (without progress or cancel hooks).
    pub fn session_config(&self, guard: crate::guard::vfs::Guard) -> SessionConfig {
        SessionConfig {
            db: self.database.clone(),
            backup_dir: Some(self.backup_dir.clone()),
            session_dir: Some(self.session_dir.clone()),
            create: self.create,
            check: self.check,
            check_budget: self.budget,
            retention: self.retention.clone(),
            guard: Some(guard),
            progress: None,
            cancel: None,
            snapshot_dir: Some(self.snapshot_dir.clone()),
            snapshot_every: self.snapshot_every,
            snapshot_keep: self.snapshot_keep,
            snapshot_check: self.snapshot_check,
            on_foreign_writer: self.on_foreign_writer,
            foreign_writer_every: self.foreign_writer_every,
            store_format: self.backup_format,
            defer_post_check: self.defer_post_check,
            offsite: if self.offsite.as_ref().is_some_and(|o| o.push_after_session) {
                self.offsite.clone()
            } else {
                None
            },
        }
    }
}

/// `[session] foreign_writer_every`: a duration of at least 100 ms (the watch cannot be
/// turned off).
///
/// # Errors
/// [`ConfigError::Invalid`] for `off`, an unparsable value or one too short.
pub fn parse_foreign_writer_every(s: &str) -> Result<Duration, ConfigError> {
    const KEY: &str = "session.foreign_writer_every";
    let min = crate::session::watch::MIN_EVERY;
    match parse_limit(s).map_err(|message| ConfigError::Invalid { key: KEY, message })? {
        Some(d) if d >= min => Ok(d),
        Some(d) => Err(ConfigError::Invalid {
            key: KEY,
            message: format!(
                "{} is too short (hint: at least `100ms`; the default is `2s`)",
                humantime::format_duration(d)
            ),
        }),
        None => Err(ConfigError::Invalid {
            key: KEY,
            message: format!("`{s}`: the foreign-writer watch cannot be turned off (hint: a duration such as `2s`)"),
        }),
    }
}

/// `quick` (the default), `full` or `none` (also `off`).
///
/// # Errors
/// [`ConfigError::Invalid`] for anything else.
pub fn parse_snapshot_check(s: Option<&str>) -> Result<Option<CheckMode>, ConfigError> {
    match s.map(str::trim) {
        None | Some("quick") => Ok(Some(CheckMode::Quick)),
        Some("full") => Ok(Some(CheckMode::Full)),
        Some("none" | "off") => Ok(None),
        Some(other) => Err(ConfigError::Invalid {
            key: "snapshots.check",
            message: format!("`{other}` (hint: `quick`, `full` or `none`)"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_file_parses_and_paths_resolve_against_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("warden.toml");
        std::fs::write(
            &p,
            r#"
database = "data/engine.db"
create = true
audit_dir = "/var/log/warden"
[gate]
check = "quick"
budget = "90s"
[retention]
keep_last = 3
keep_daily = 0
[engine]
command = ["/bin/engine", "--live"]
"#,
        )
        .unwrap();
        let s = Settings::resolve(Some(&p), Overrides::default()).unwrap();
        assert_eq!(s.database, dir.path().join("data/engine.db"));
        assert_eq!(s.backup_dir, dir.path().join("data/engine.db.warden/backups"));
        assert_eq!(s.audit_dir.as_deref(), Some(Path::new("/var/log/warden")));
        assert_eq!(s.check, CheckMode::Quick);
        assert_eq!(s.budget, Some(Duration::from_secs(90)));
        assert_eq!(s.retention.keep_last, 3);
        assert_eq!(s.retention.keep_daily, 0);
        assert_eq!(s.retention.keep_weekly, RetentionPolicy::default().keep_weekly);
        assert!(s.create);
        assert_eq!(s.command, vec![OsString::from("/bin/engine"), OsString::from("--live")]);
    }

    #[test]
    fn empty_paths_are_refused_not_taken_as_the_working_directory() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("warden.toml");
        for (body, key) in [
            ("database = \"\"\n", "database"),
            ("database = \"a.db\"\nbackup_dir = \"\"\n", "backup_dir"),
            ("database = \"a.db\"\nsession_dir = \"\"\n", "session_dir"),
            ("database = \"a.db\"\naudit_dir = \"\"\n", "audit_dir"),
            ("database = \"a.db\"\n[snapshots]\ndir = \"\"\n", "snapshots.dir"),
        ] {
            std::fs::write(&p, body).unwrap();
            match Settings::resolve(Some(&p), Overrides::default()) {
                Err(ConfigError::Invalid { key: k, .. }) => assert_eq!(k, key, "{body}"),
                other => panic!("{body}: {other:?}"),
            }
        }
        let flags =
            Overrides { database: Some(PathBuf::from("a.db")), backup_dir: Some(PathBuf::new()), ..Default::default() };
        assert!(matches!(Settings::resolve(None, flags), Err(ConfigError::Invalid { key: "backup_dir", .. })));
    }

    #[test]
    fn flags_win_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("warden.toml");
        std::fs::write(&p, "database = \"a.db\"\n[gate]\nbudget = \"1h\"\n[engine]\ncommand = [\"x\"]\n").unwrap();
        let o = Overrides {
            database: Some("/tmp/b.db".into()),
            budget: Some("none".into()),
            keep_last: Some(1),
            command: vec!["y".into()],
            ..Default::default()
        };
        let s = Settings::resolve(Some(&p), o).unwrap();
        assert_eq!(s.database, Path::new("/tmp/b.db"));
        assert_eq!(s.budget, None);
        assert_eq!(s.retention.keep_last, 1);
        assert_eq!(s.command, vec![OsString::from("y")]);
    }

    #[test]
    fn snapshots_section_and_flags() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("warden.toml");
        std::fs::write(
            &p,
            "database = \"e.db\"\n[snapshots]\ndir = \"snaps\"\nevery = \"10m\"\nkeep = 3\ncheck = \"full\"\n",
        )
        .unwrap();
        let s = Settings::resolve(Some(&p), Overrides::default()).unwrap();
        assert_eq!(s.snapshot_dir, dir.path().join("snaps"));
        assert_eq!(s.snapshot_every, Some(Duration::from_secs(600)));
        assert_eq!(s.snapshot_keep, 3);
        assert_eq!(s.snapshot_check, Some(CheckMode::Full));
        let o = Overrides { snapshot_every: Some("off".into()), snapshot_keep: Some(1), ..Default::default() };
        let s = Settings::resolve(Some(&p), o).unwrap();
        assert_eq!(s.snapshot_every, None);
        assert_eq!(s.snapshot_keep, 1);
        let c = s.session_config(crate::guard::vfs::default_guard().unwrap());
        assert_eq!(c.snapshot_dir(), dir.path().join("snaps"));

        // Defaults: off, 5, quick, <db>.warden/snapshots.
        let s = Settings::resolve(None, Overrides { database: Some("/x/e.db".into()), ..Default::default() }).unwrap();
        assert_eq!(s.snapshot_dir, Path::new("/x/e.db.warden/snapshots"));
        assert_eq!((s.snapshot_every, s.snapshot_keep, s.snapshot_check), (None, 5, Some(CheckMode::Quick)));

        for (o, key) in [
            (Overrides { snapshot_keep: Some(0), ..Default::default() }, "snapshots.keep"),
            (Overrides { snapshot_every: Some("200ms".into()), ..Default::default() }, "snapshots.every"),
        ] {
            let o = Overrides { database: Some("/x/e.db".into()), ..o };
            match Settings::resolve(None, o) {
                Err(ConfigError::Invalid { key: k, message }) => {
                    assert_eq!(k, key);
                    assert!(message.contains("hint"), "{message}");
                }
                other => panic!("{key}: {other:?}"),
            }
        }
        assert!(parse("[snapshots]\nevery_n = 1").is_err());
        assert!(matches!(parse_snapshot_check(Some("thorough")), Err(ConfigError::Invalid { .. })));
    }

    #[test]
    fn session_section_and_flags() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("warden.toml");
        std::fs::write(
            &p,
            "database = \"e.db\"\n[session]\non_foreign_writer = \"stop\"\nforeign_writer_every = \"5s\"\n",
        )
        .unwrap();
        let s = Settings::resolve(Some(&p), Overrides::default()).unwrap();
        assert_eq!((s.on_foreign_writer, s.foreign_writer_every), (OnForeignWriter::Stop, Duration::from_secs(5)));
        let c = s.session_config(crate::guard::vfs::default_guard().unwrap());
        assert_eq!((c.on_foreign_writer, c.foreign_writer_every), (OnForeignWriter::Stop, Duration::from_secs(5)));
        let o = Overrides { on_foreign_writer: Some("warn".into()), ..Default::default() };
        assert_eq!(Settings::resolve(Some(&p), o).unwrap().on_foreign_writer, OnForeignWriter::Warn);
        // Defaults: warn, every 2 s.
        let s = Settings::resolve(None, Overrides { database: Some("/x/e.db".into()), ..Default::default() }).unwrap();
        assert_eq!((s.on_foreign_writer, s.foreign_writer_every), (OnForeignWriter::Warn, Duration::from_secs(2)));
        for (o, key) in [
            (Overrides { on_foreign_writer: Some("kill".into()), ..Default::default() }, "session.on_foreign_writer"),
            (
                Overrides { foreign_writer_every: Some("off".into()), ..Default::default() },
                "session.foreign_writer_every",
            ),
            (
                Overrides { foreign_writer_every: Some("10ms".into()), ..Default::default() },
                "session.foreign_writer_every",
            ),
        ] {
            let o = Overrides { database: Some("/x/e.db".into()), ..o };
            match Settings::resolve(None, o) {
                Err(ConfigError::Invalid { key: k, message }) => {
                    assert_eq!(k, key);
                    assert!(message.contains("hint"), "{message}");
                }
                other => panic!("{key}: {other:?}"),
            }
        }
        assert!(parse("[session]\non_foreign_writers = \"stop\"").is_err());
    }

    #[test]
    fn mistakes_are_reported_with_where_and_how() {
        let e = parse("databse = \"x\"").unwrap_err();
        assert!(e.contains("databse") && e.contains("line 1"), "{e}");
        let e = parse("[gate]\ncheck = \"thorough\"").unwrap_err();
        assert!(e.contains("thorough"), "{e}");
        let o = Overrides { database: Some("/x.db".into()), budget: Some("soon".into()), ..Default::default() };
        let e = Settings::resolve(None, o).unwrap_err();
        assert!(e.to_string().contains("hint"), "{e}");
        assert!(matches!(Settings::resolve(None, Overrides::default()), Err(ConfigError::NoDatabase)));
        let o = Overrides {
            database: Some("/x.db".into()),
            keep_last: Some(0),
            keep_daily: Some(0),
            keep_weekly: Some(0),
            keep_monthly: Some(0),
            ..Default::default()
        };
        assert!(matches!(Settings::resolve(None, o), Err(ConfigError::Invalid { key: "retention", .. })));
    }
}

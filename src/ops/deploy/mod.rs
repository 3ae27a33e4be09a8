//! Service files for a guarded engine: systemd units and timers, and a logrotate snippet.
//!
//! Owns: turning a resolved configuration ([`crate::ops::config::Settings`]) plus a few deployment
//! choices ([`DeployOptions`]) into the text of the files ([`render`](fn@render), pure), and writing
//! them into a directory ([`write()`]: one atomic rename per file, identical files left alone,
//! different ones replaced only when asked). Does not own: installing them into
//! `/etc/systemd/system`, `systemctl`, or anything the rendered commands do.
//!
//! What is rendered for a unit named `engine` (the default):
//!
//! ```text
//! engine.service          the whole session through warden: `warden run --config FILE`
//!                         (Type=notify: READY=1 once the gate passed and the engine runs;
//!                         watchdog fed while it runs; KillMode=mixed so SIGTERM reaches warden
//!                         only, which forwards it and then takes the post-session backup)
//! engine-check.service    nightly `warden check --check full` (timer 03:30)
//! engine-drill.service    nightly restore drill `warden drill` (timer 04:30)
//! engine-prune.service    nightly retention `warden prune` (timer 05:30)
//! engine-status.service   `warden status --prom FILE` every 5 minutes; its problem codes
//!                         10-18 are SuccessExitStatus (the textfile carries them to alerting)
//! engine-*.timer          Persistent=true, RandomizedDelaySec
//! warden-engine           logrotate: the audit log (rename, no copytruncate: warden reopens
//!                         it per record, so no line is lost) and the engine's own file logs
//! ```
//!
//! Quoting: every path and argument is written so systemd reads it back exactly: words with
//! white space are double-quoted, `%` is doubled (specifiers), `$` is doubled on `Exec*=`
//! lines (environment expansion). Paths must be absolute, normalised (no `.` or `..`), UTF-8
//! and free of control characters, `"` and `\` (logrotate has no escape for those); the
//! audit and log directories must not contain glob characters (logrotate globs them).
//! Nothing may live under `/tmp` or `/var/tmp`, which `PrivateTmp=yes` hides from the units.

mod error;
mod jobs;
mod logrotate;
mod options;
mod render;
mod syntax;
mod units;
mod validate;
mod write;

pub use error::DeployError;
pub use jobs::STATUS_PROBLEM_EXIT_STATUS;
pub use options::{
    DEFAULT_CHECK_AT, DEFAULT_DRILL_AT, DEFAULT_PROM_DIR, DEFAULT_PRUNE_AT, DEFAULT_STATUS_AT, DeployOptions, advice,
};
pub use render::{RenderedFile, render};
pub use syntax::{systemd_word, timespan};
pub use units::{RESTART_PREVENT_EXIT_STATUS, RUN_SUCCESS_EXIT_STATUS};
pub use write::{WriteAction, Written, write};

//! The logrotate snippet (`warden-<unit>`): the audit log and the engine's own file logs.
//! Does not own: the systemd units.

use std::fmt::Write as _;
use std::path::Path;

use super::options::DeployOptions;

fn logrotate_word(p: &Path) -> String {
    format!("\"{}\"", p.display())
}

pub(super) fn logrotate(opts: &DeployOptions) -> String {
    let mut o = String::new();
    let name = opts.logrotate_name();
    let _ = writeln!(
        o,
        "# /etc/logrotate.d/{name}: rendered by `warden deploy systemd` (sqlite-warden {}).",
        env!("CARGO_PKG_VERSION")
    );
    let _ = writeln!(
        o,
        "#
# warden and the engine log to the journal (StandardOutput/StandardError=journal): nothing to
# rotate there. Cap the journal instead, e.g. /etc/systemd/journald.conf.d/50-warden.conf:
#   [Journal]
#   SystemMaxUse=1G
#   MaxRetentionSec=1month
# then `systemctl restart systemd-journald`. Read it with `journalctl -u {}`.
#
# Backups, session artifacts, snapshots and drill records are not logs: warden's retention
# owns them. Never rotate anything under the backup or snapshot directories.",
        opts.service_name()
    );
    let su = format!("    su {} {}\n", opts.user, opts.group);
    let common =
        "    daily\n    rotate 14\n    maxsize 100M\n    compress\n    delaycompress\n    missingok\n    notifempty\n";
    let audit = opts.audit_dir().join(crate::guard::audit::AUDIT_FILE);
    let _ = writeln!(
        o,
        "
# The audit log. warden opens it (O_APPEND|O_CREAT) for every record and writes each record
# with one write(2), so a plain rename loses no line: a record being written lands whole in
# the renamed file, the next one creates a new file. No copytruncate (lines written between
# the copy and the truncate would be lost), no postrotate signal, and nocreate: warden
# creates the new file itself (mode 0640, less the unit's UMask). `warden audit -f` follows
# the rename."
    );
    let _ = writeln!(o, "{} {{\n{common}    nocreate\n{su}}}", logrotate_word(&audit));
    let _ = writeln!(
        o,
        "
# The engine's own file logs, if it writes any. copytruncate works with any engine but can
# lose the lines written during the copy. If the engine reopens its log on SIGHUP (warden
# forwards SIGHUP to it), use instead:
#     create 0640 {user} {group}
#     postrotate
#         systemctl kill --kill-whom=main --signal=SIGHUP {service}
#     endscript
# (Never send SIGHUP to an engine that does not handle it: it would die and restart.)",
        user = opts.user,
        group = opts.group,
        service = opts.service_name()
    );
    let _ = writeln!(o, "{} {{\n{common}    copytruncate\n{su}}}", logrotate_word(&opts.log_dir.join("*.log")));
    o
}

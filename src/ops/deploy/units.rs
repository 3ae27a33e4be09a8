//! The engine unit (`<unit>.service`) and the parts every unit shares: the header comment, the
//! `[Unit]` section, identity and sandbox. Does not own: the periodic jobs or logrotate.

use std::fmt::Write as _;
use std::path::Path;

use super::options::DeployOptions;
use super::syntax::{exec_line, list, path_word, systemd_word, text, timespan};

/// Exit statuses of `warden run` that must never restart the unit: 17 a foreign writer
/// stopped the session (`on_foreign_writer = "stop"`), 65 gate failed,
/// 66 database missing, 67 not what the seal says, 69 storage refused, 70 SQLite too old /
/// internal, 78 configuration.
pub const RESTART_PREVENT_EXIT_STATUS: [u8; 7] = [17, 65, 66, 67, 69, 70, 78];

/// Exit statuses of `warden run` that mean "stopped on request": 130 (SIGINT) and 143
/// (SIGTERM: `systemctl stop`, when the engine dies of the forwarded signal).
pub const RUN_SUCCESS_EXIT_STATUS: [u8; 2] = [130, 143];

pub(super) fn header(o: &mut String, name: &str, opts: &DeployOptions) {
    let _ = writeln!(
        o,
        "# {name}: rendered by `warden deploy systemd` (sqlite-warden {}) from {}.",
        env!("CARGO_PKG_VERSION"),
        opts.config.display()
    );
    let _ = writeln!(o, "# Re-render rather than edit; put local changes in a drop-in (`systemctl edit {name}`).");
}

/// The sandbox and identity shared by every unit; `ident` is the unit's own journal
/// identifier (its name without `.service`).
pub(super) fn service_common(o: &mut String, opts: &DeployOptions, ident: &str, umask: &str, extra_rw: Option<&Path>) {
    let _ = writeln!(o, "User={}", opts.user);
    let _ = writeln!(o, "Group={}", opts.group);
    let _ = writeln!(o, "UMask={umask}");
    let _ = writeln!(o, "Environment={}", systemd_word(&format!("WARDEN_CONFIG={}", opts.config.display()), false));
    let _ =
        writeln!(o, "Environment={}", systemd_word(&format!("WARDEN_AUDIT_DIR={}", opts.audit_dir().display()), false));
    o.push_str("# Plain log lines for the journal (no ANSI colours).\nEnvironment=NO_COLOR=1\n");
    o.push_str("StandardOutput=journal\nStandardError=journal\n");
    let _ = writeln!(o, "SyslogIdentifier={ident}");
    o.push('\n');
    o.push_str("# Writable: the database directory (database, -wal, -shm, writer lock, <db>.warden/),\n");
    o.push_str("# the backup, session, snapshot and audit directories. `-`: already writable through a\n");
    o.push_str("# path above it, or optional. The others must exist before the first start.\n");
    if let Some(rel) = opts.logs_directory() {
        let _ = writeln!(o, "LogsDirectory={}", systemd_word(&rel, false));
        o.push_str("LogsDirectoryMode=0750\n");
    }
    for (p, required) in opts.read_write_paths() {
        let entry = format!("{}{}", if required { "" } else { "-" }, p.display());
        let _ = writeln!(o, "ReadWritePaths={}", systemd_word(&entry, false));
    }
    if let Some(p) = extra_rw {
        let _ = writeln!(o, "ReadWritePaths={}", systemd_word(&format!("-{}", p.display()), false));
    }
    o.push('\n');
    o.push_str("# Hardening (`systemd-analyze security <unit>` scores it).\n");
    o.push_str(
        "NoNewPrivileges=yes
ProtectSystem=strict
",
    );
    let _ = writeln!(o, "ProtectHome={}", opts.protect_home());
    o.push_str(
        "PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictNamespaces=yes
LockPersonality=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
RemoveIPC=yes
PrivateMounts=yes
ProtectProc=invisible
CapabilityBoundingSet=
AmbientCapabilities=
SystemCallArchitectures=native
SystemCallFilter=@system-service
# @resources stays allowed: engines pin threads (sched_setaffinity) and raise limits (setrlimit).
SystemCallFilter=~@privileged
SystemCallErrorNumber=EPERM
# Engines may trade over the network.
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
",
    );
    if opts.memory_deny_write_execute {
        o.push_str("MemoryDenyWriteExecute=yes\n");
    } else {
        o.push_str(
            "# MemoryDenyWriteExecute=yes breaks JITs (PyPy, JVM, Node/V8, LuaJIT) and CPython ctypes/cffi
# callbacks; render with --memory-deny-write-execute when the engine has none.
",
        );
    }
}

pub(super) fn unit_section(o: &mut String, opts: &DeployOptions, description: &str) {
    o.push_str("[Unit]\n");
    let _ = writeln!(o, "Description={}", text(description));
    let mounts: Vec<String> = opts.mounts().iter().map(|p| path_word(p, false)).collect();
    let _ = writeln!(o, "RequiresMountsFor={}", mounts.join(" "));
}

pub(super) fn engine_service(opts: &DeployOptions) -> String {
    let name = opts.service_name();
    let mut o = String::new();
    header(&mut o, &name, opts);
    o.push_str(
        "#
# The whole session runs through warden: preflight, writer lock, integrity gate and verified
# pre-session backup before the engine starts; then the engine (its command comes from the
# config); then a verified post-session backup, retention and the health artifact.
",
    );
    // Debug formatting: control characters and backslashes cannot end the comment line.
    let _ = writeln!(o, "# Engine (from the config): {:?}", opts.engine);
    unit_section(&mut o, opts, &format!("{}: engine session through sqlite-warden (gate, backups, engine)", opts.unit));
    o.push_str(
        "Wants=network-online.target
After=network-online.target
# A crash loop stops after 5 starts in an hour (each start runs the gate and a backup):
# `systemctl reset-failed` once the cause is fixed.
StartLimitIntervalSec=1h
StartLimitBurst=5

[Service]
# warden speaks sd_notify: READY=1 once the gate passed, the pre-session backup is verified
# and the engine runs; STOPPING=1 when the engine exited and the post-session backup starts.
Type=notify
NotifyAccess=main
",
    );
    let args = vec![
        opts.warden.to_string_lossy().into_owned(),
        "run".into(),
        "--config".into(),
        opts.config.to_string_lossy().into_owned(),
    ];
    let _ = writeln!(o, "ExecStart={}", exec_line(&args));
    match opts.watchdog {
        Some(w) => {
            o.push_str("# Fed every WatchdogSec/2 while the engine runs; a wedged warden is aborted and restarted.\n");
            let _ = writeln!(o, "WatchdogSec={}", timespan(w));
        }
        None => o.push_str("# No watchdog (rendered with --watchdog off).\n"),
    }
    o.push_str("# Starting covers the integrity gate and the pre-session backup (warden also extends it).\n");
    match opts.start_timeout {
        Some(t) => {
            let _ = writeln!(o, "TimeoutStartSec={}", timespan(t));
        }
        None => o.push_str("TimeoutStartSec=infinity\n"),
    }
    o.push_str(
        "# SIGTERM goes to warden only; warden forwards it to the engine (its own process group),
# waits for it, then takes the post-session backup. Whatever is left after TimeoutStopSec
# gets SIGKILL.
KillMode=mixed
KillSignal=SIGTERM
",
    );
    let _ = writeln!(o, "TimeoutStopSec={}", timespan(opts.stop_timeout));
    o.push_str(
        "Restart=on-failure
RestartSec=30s
# Gate failed (65), database missing (66), storage refused (69), SQLite too old (70) and
# configuration (78) never fix themselves: no restart loop over a damaged database.
",
    );
    let _ = writeln!(o, "RestartPreventExitStatus={}", list(&RESTART_PREVENT_EXIT_STATUS));
    o.push_str("# 128+SIGINT / 128+SIGTERM: the engine died of the stop signal warden forwarded.\n");
    let _ = writeln!(o, "SuccessExitStatus={}", list(&RUN_SUCCESS_EXIT_STATUS));
    service_common(&mut o, opts, &opts.unit, "0077", None);
    o.push_str("\n[Install]\nWantedBy=multi-user.target\n");
    o
}

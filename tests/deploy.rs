//! `warden deploy systemd` and the runbook `docs/vps-migration.md`.
//!
//! - the rendered units pass `systemd-analyze verify` (no running systemd needed) with paths
//!   that contain spaces and `%`, and score "OK" in `systemd-analyze security --offline`;
//! - content: exit codes that never restart, KillMode, timeouts, every configured directory
//!   writable, the hardening keys, persistent timers;
//! - quoting and refusals; re-rendering identical files is a no-op, different ones are
//!   refused without `--force`;
//! - the logrotate snippet passes `logrotate -d`, and forced rotations while warden appends
//!   to the audit log lose no record;
//! - the runbook: every `warden` command and flag it uses exists; and its configuration,
//!   export, import, check, doctor and deploy command lines, run here with the paths moved
//!   into a scratch directory, migrate a database and give units whose `ExecStart=` lines
//!   really run a session, the check, the drill, retention and the status textfile.
//!
//! `systemd-analyze` and `logrotate` come from the `systemd` and `logrotate` packages
//! (`scripts/test` installs them). Without them these tests skip loudly, and fail under `CI`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use sqlite_warden::ops::deploy::{self, DeployError, DeployOptions, RenderedFile, WriteAction};

const WARDEN: &str = env!("CARGO_BIN_EXE_warden");
const ENGINE: &str = env!("CARGO_BIN_EXE_warden-demo-engine");
const RUNBOOK: &str = include_str!("../docs/vps-migration.md");

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// A scratch directory whose name has a space and a `%` in it, outside /tmp (the units
/// refuse /tmp: PrivateTmp=yes hides it).
fn scratch(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(&format!("{prefix} 100% ")).tempdir_in(scratch_base()).unwrap()
}

fn under_private_tmp(p: &Path) -> bool {
    p.starts_with("/tmp") || p.starts_with("/var/tmp")
}

/// Where scratch directories go: the target dir, unless the checkout itself is under /tmp
/// (a CI clone may be), then a directory under /var/lib (root) or the home directory.
fn scratch_base() -> PathBuf {
    let candidates = [
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")),
        Path::new(env!("CARGO_MANIFEST_DIR")).join("target/deploy-tests"),
        PathBuf::from("/var/lib/sqlite-warden-tests"),
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/sqlite-warden-tests")).unwrap_or_default(),
    ];
    for base in candidates {
        if base.is_absolute() && !under_private_tmp(&base) && std::fs::create_dir_all(&base).is_ok() {
            return base;
        }
    }
    panic!("no scratch directory outside /tmp could be created (the units refuse /tmp)");
}

/// The warden binary at a path the units accept: itself, or a link to it in `dir` when the
/// build lives under /tmp.
fn warden_exe(dir: &Path) -> PathBuf {
    outside_tmp(dir, WARDEN)
}

/// The example engine at a path the units accept (see [`warden_exe`]).
fn engine_exe(dir: &Path) -> PathBuf {
    outside_tmp(dir, ENGINE)
}

fn outside_tmp(dir: &Path, exe: &str) -> PathBuf {
    if !under_private_tmp(Path::new(exe)) {
        return PathBuf::from(exe);
    }
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let link = bin.join(Path::new(exe).file_name().unwrap());
    if !link.exists() {
        std::os::unix::fs::symlink(exe, &link).unwrap();
    }
    link
}

/// Whether `tool` is installed; a loud skip without it, a failure under CI.
fn have(tool: &str, package: &str) -> bool {
    let found =
        Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().is_ok_and(|o| o.status.success());
    if !found {
        let msg = format!(
            "`{tool}` is not installed (apt package `{package}`; scripts/test installs it): SKIPPING this test"
        );
        if std::env::var_os("CI").is_some() {
            panic!("CI is set: {msg}");
        }
        eprintln!("\n{}\n## {msg}\n{}\n", "#".repeat(100), "#".repeat(100));
    }
    found
}

fn warden(args: &[&str]) -> Output {
    Command::new(WARDEN).args(args).env_remove("WARDEN_CONFIG").output().unwrap()
}

fn text(o: &Output) -> String {
    format!("stdout:\n{}\nstderr:\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// How systemd reads the value of a setting back into words: white space separates,
/// double quotes group, `\\` and `\"` escape; then `%%` is `%` and, on `Exec*=`, `$$` is `$`.
fn words(value: &str, exec: bool) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quoted = false;
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                cur.push(chars.next().expect("a dangling backslash"));
                in_word = true;
            }
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    assert!(!quoted, "unbalanced quotes in {value}");
    if in_word {
        out.push(cur);
    }
    out.into_iter()
        .map(|w| {
            let w = w.replace("%%", "\u{0}").replace('\u{0}', "%");
            if exec { w.replace("$$", "$") } else { w }
        })
        .collect()
}

/// Every value of `key=` in `unit` (settings that accumulate appear once per line).
fn values<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    unit.lines().filter_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('='))).collect()
}

fn one<'a>(unit: &'a str, key: &str) -> &'a str {
    let v = values(unit, key);
    assert_eq!(v.len(), 1, "{key}= appears {} times in\n{unit}", v.len());
    v[0]
}

fn file<'a>(files: &'a [RenderedFile], name: &str) -> &'a str {
    &files.iter().find(|f| f.name == name).unwrap_or_else(|| panic!("no {name}")).contents
}

/// Options with every directory in its own place under `root`.
fn options(root: &Path) -> DeployOptions {
    let db_dir = root.join("var lib/engine");
    DeployOptions {
        unit: "engine".into(),
        user: "root".into(),
        group: "root".into(),
        warden: "/usr/local/bin/warden".into(),
        config: root.join("etc/warden/warden.toml"),
        database: db_dir.join("engine.db"),
        backup_dir: root.join("backups/engine"),
        session_dir: db_dir.join("engine.db.warden/sessions"),
        snapshot_dir: root.join("snapshots"),
        audit_dir: Some(root.join("audit")),
        log_dir: root.join("log"),
        read_write: vec![root.join("engine-data")],
        prom_dir: Some(root.join("prom")),
        watchdog: Some(Duration::from_secs(30)),
        start_timeout: Some(Duration::from_secs(45 * 60)),
        stop_timeout: Duration::from_secs(600),
        memory_deny_write_execute: false,
        engine: vec!["/usr/local/bin/engine".into(), "--live".into()],
        check_at: deploy::DEFAULT_CHECK_AT.into(),
        drill_at: deploy::DEFAULT_DRILL_AT.into(),
        prune_at: deploy::DEFAULT_PRUNE_AT.into(),
        status_at: deploy::DEFAULT_STATUS_AT.into(),
    }
}

const HARDENING: [&str; 22] = [
    "NoNewPrivileges=yes",
    "ProtectSystem=strict",
    "PrivateTmp=yes",
    "PrivateDevices=yes",
    "ProtectKernelTunables=yes",
    "ProtectKernelModules=yes",
    "ProtectKernelLogs=yes",
    "ProtectControlGroups=yes",
    "ProtectClock=yes",
    "ProtectHostname=yes",
    "RestrictNamespaces=yes",
    "LockPersonality=yes",
    "RestrictRealtime=yes",
    "RestrictSUIDSGID=yes",
    "SystemCallArchitectures=native",
    "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
    "CapabilityBoundingSet=",
    "SystemCallFilter=@system-service",
    "StandardOutput=journal",
    "StandardError=journal",
    "Environment=NO_COLOR=1",
    "ProtectProc=invisible",
];

const SERVICES: [&str; 5] =
    ["engine.service", "engine-check.service", "engine-drill.service", "engine-prune.service", "engine-status.service"];
const TIMERS: [&str; 4] = ["engine-check.timer", "engine-drill.timer", "engine-prune.timer", "engine-status.timer"];

// ---------------------------------------------------------------------------------------
// Rendering (library)
// ---------------------------------------------------------------------------------------

#[test]
fn the_engine_unit_runs_the_session_through_warden() {
    let root = Path::new("/srv/engine");
    let files = deploy::render(&options(root)).unwrap();
    let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
    let mut want: Vec<&str> = SERVICES.iter().chain(TIMERS.iter()).copied().collect();
    want.push("warden-engine");
    assert_eq!(names.iter().copied().collect::<BTreeSet<_>>(), want.iter().copied().collect::<BTreeSet<_>>());

    let unit = file(&files, "engine.service");
    assert_eq!(
        words(one(unit, "ExecStart"), true),
        ["/usr/local/bin/warden", "run", "--config", "/srv/engine/etc/warden/warden.toml"],
        "{unit}"
    );
    assert_eq!(one(unit, "Type"), "notify");
    assert_eq!(one(unit, "NotifyAccess"), "main");
    assert_eq!(one(unit, "WatchdogSec"), "30s");
    assert_eq!(one(unit, "KillMode"), "mixed");
    assert_eq!(one(unit, "TimeoutStopSec"), "10min");
    assert_eq!(one(unit, "TimeoutStartSec"), "45min");
    assert_eq!(one(unit, "Restart"), "on-failure");
    assert_eq!(one(unit, "RestartPreventExitStatus"), "17 65 66 67 69 70 78");
    assert_eq!(one(unit, "SuccessExitStatus"), "130 143");
    assert_eq!(one(unit, "UMask"), "0077");
    assert_eq!(one(unit, "User"), "root");
    assert_eq!(one(unit, "WantedBy"), "multi-user.target");
    assert!(!unit.lines().any(|l| l.starts_with("MemoryDenyWriteExecute=")), "MDWE is opt-in");

    // Every configured directory is writable; the ones below the database's directory
    // only optionally (they are writable through it and may not exist yet).
    let rw: Vec<String> = values(unit, "ReadWritePaths").iter().flat_map(|v| words(v, false)).collect();
    assert_eq!(
        rw,
        [
            "/srv/engine/var lib/engine",
            "/srv/engine/backups/engine",
            "-/srv/engine/var lib/engine/engine.db.warden/sessions",
            "/srv/engine/snapshots",
            "/srv/engine/audit",
            "-/srv/engine/log",
            "/srv/engine/engine-data",
        ]
    );
    let mounts = words(one(unit, "RequiresMountsFor"), false);
    for dir in ["/srv/engine/var lib/engine", "/srv/engine/backups/engine", "/srv/engine/audit"] {
        assert!(mounts.iter().any(|m| m == dir), "{dir} in {mounts:?}");
    }
    let env: Vec<String> = values(unit, "Environment").iter().flat_map(|v| words(v, false)).collect();
    assert!(env.contains(&"WARDEN_AUDIT_DIR=/srv/engine/audit".to_owned()), "{env:?}");
    assert!(env.contains(&"WARDEN_CONFIG=/srv/engine/etc/warden/warden.toml".to_owned()), "{env:?}");

    let mut o = options(root);
    o.memory_deny_write_execute = true;
    o.watchdog = None;
    o.start_timeout = None;
    let unit = deploy::render(&o).unwrap().remove(0).contents;
    assert_eq!(one(&unit, "MemoryDenyWriteExecute"), "yes");
    assert!(values(&unit, "WatchdogSec").is_empty());
    assert_eq!(one(&unit, "TimeoutStartSec"), "infinity");
}

#[test]
fn every_unit_is_hardened_and_every_timer_persistent() {
    let files = deploy::render(&options(Path::new("/srv/engine"))).unwrap();
    for name in SERVICES {
        let unit = file(&files, name);
        for key in HARDENING {
            assert!(unit.lines().any(|l| l == key), "{name}: no `{key}`\n{unit}");
        }
        // One identifier per unit: `journalctl -t engine-drill` is the drill's alone.
        assert_eq!(one(unit, "SyslogIdentifier"), name.trim_end_matches(".service"), "{name}");
        assert_eq!(one(unit, "ProtectHome"), "yes", "{name}");
        let rw: Vec<String> = values(unit, "ReadWritePaths").iter().flat_map(|v| words(v, false)).collect();
        assert!(rw.contains(&"/srv/engine/var lib/engine".to_owned()), "{name}: {rw:?}");
        assert!(rw.contains(&"/srv/engine/audit".to_owned()), "{name}: {rw:?}");
        if name != "engine.service" {
            assert_eq!(one(unit, "Type"), "oneshot", "{name}");
            assert_eq!(one(unit, "Nice"), "10", "{name}");
            assert_eq!(one(unit, "IOSchedulingClass"), "idle", "{name}");
            assert!(values(unit, "WantedBy").is_empty(), "{name}: started by its timer only");
        }
    }
    for name in TIMERS {
        let timer = file(&files, name);
        assert_eq!(one(timer, "Persistent"), "true", "{name}");
        assert!(!one(timer, "RandomizedDelaySec").is_empty(), "{name}");
        assert!(!one(timer, "OnCalendar").is_empty(), "{name}");
        assert_eq!(one(timer, "WantedBy"), "timers.target", "{name}");
    }

    let check = file(&files, "engine-check.service");
    assert_eq!(
        words(one(check, "ExecStart"), true),
        [
            "/usr/local/bin/warden",
            "check",
            "--check",
            "full",
            "--scratch-dir",
            "/srv/engine/var lib/engine",
            "/srv/engine/var lib/engine/engine.db"
        ]
    );
    assert_eq!(one(file(&files, "engine-check.timer"), "OnCalendar"), "*-*-* 03:30:00");
    let status = file(&files, "engine-status.service");
    let exec = words(one(status, "ExecStart"), true);
    assert_eq!(
        exec[1..],
        ["status", "--config", "/srv/engine/etc/warden/warden.toml", "--prom", "/srv/engine/prom/warden-engine.prom"]
    );
    assert_eq!(one(status, "SuccessExitStatus"), "10 11 12 13 14 15 16 17 18");
    assert_eq!(one(status, "UMask"), "0022", "node_exporter must read the textfile");
    assert!(values(status, "ReadWritePaths").contains(&"-/srv/engine/prom"));
    assert_eq!(one(file(&files, "engine-status.timer"), "OnCalendar"), "*:0/5");
    let drill = words(one(file(&files, "engine-drill.service"), "ExecStart"), true);
    assert_eq!(
        drill[1..],
        [
            "drill",
            "--recheck",
            "--config",
            "/srv/engine/etc/warden/warden.toml",
            "--scratch",
            "/srv/engine/var lib/engine"
        ]
    );
    let prune = words(one(file(&files, "engine-prune.service"), "ExecStart"), true);
    assert_eq!(prune[1..], ["prune", "--config", "/srv/engine/etc/warden/warden.toml"]);
}

#[test]
fn default_layout_uses_logs_directory_and_home_relaxes_protect_home() {
    let mut o = options(Path::new("/srv/engine"));
    o.log_dir = "/var/log/engine".into();
    o.audit_dir = None;
    o.database = "/var/lib/engine/engine.db".into();
    o.backup_dir = "/var/lib/engine/engine.db.warden/backups".into();
    o.session_dir = "/var/lib/engine/engine.db.warden/sessions".into();
    o.snapshot_dir = "/var/lib/engine/engine.db.warden/snapshots".into();
    o.read_write.clear();
    let files = deploy::render(&o).unwrap();
    let unit = file(&files, "engine.service");
    assert_eq!(one(unit, "LogsDirectory"), "engine");
    assert_eq!(
        values(unit, "ReadWritePaths"),
        [
            "/var/lib/engine",
            "-/var/lib/engine/engine.db.warden/backups",
            "-/var/lib/engine/engine.db.warden/sessions",
            "-/var/lib/engine/engine.db.warden/snapshots",
            "-/var/log/engine"
        ]
    );
    assert_eq!(o.required_dirs(), [PathBuf::from("/var/lib/engine")]);
    assert!(values(unit, "Environment").contains(&"WARDEN_AUDIT_DIR=/var/log/engine"));
    let lr = file(&files, "warden-engine");
    assert!(lr.contains("\"/var/log/engine/audit.jsonl\" {"), "{lr}");
    assert!(lr.contains("\"/var/log/engine/*.log\" {"), "{lr}");

    o.database = "/home/trader/engine/engine.db".into();
    o.backup_dir = "/home/trader/engine/backups".into();
    let unit = deploy::render(&o).unwrap().remove(0).contents;
    assert_eq!(one(&unit, "ProtectHome"), "read-only");
}

#[test]
fn paths_with_spaces_percent_and_dollar_are_escaped() {
    let mut o = options(Path::new("/srv/my data/100%"));
    o.config = "/etc/warden/$conf %n.toml".into();
    let files = deploy::render(&o).unwrap();
    let unit = file(&files, "engine.service");
    let exec = one(unit, "ExecStart");
    assert!(exec.ends_with(" \"/etc/warden/$$conf %%n.toml\""), "{exec}");
    assert_eq!(words(exec, true)[3], "/etc/warden/$conf %n.toml");
    assert!(values(unit, "ReadWritePaths").contains(&"\"/srv/my data/100%%/var lib/engine\""), "{unit}");
    assert!(one(unit, "RequiresMountsFor").starts_with("\"/srv/my data/100%%/var lib/engine\" "), "{unit}");
    // Outside Exec lines `$` is literal; `%` is a specifier everywhere.
    assert!(values(unit, "Environment").contains(&"\"WARDEN_CONFIG=/etc/warden/$conf %%n.toml\""), "{unit}");
    for f in files.iter().filter(|f| f.name.ends_with(".service") || f.name.ends_with(".timer")) {
        for line in f.contents.lines().filter(|l| !l.starts_with('#')) {
            // Every `%` is doubled (no specifier slips through).
            assert!(!line.replace("%%", "").contains('%'), "{}: {line}", f.name);
        }
    }
    let lr = file(&files, "warden-engine");
    assert!(lr.contains("\"/srv/my data/100%/audit/audit.jsonl\" {"), "{lr}");
}

#[test]
fn unsafe_values_are_refused() {
    let base = options(Path::new("/srv/engine"));
    type Change = Box<dyn Fn(&mut DeployOptions)>;
    let cases: Vec<(&str, Change, u8)> = vec![
        ("relative warden", Box::new(|o| o.warden = "warden".into()), 64),
        ("relative db", Box::new(|o| o.database = "var/engine.db".into()), 64),
        ("relative backup dir", Box::new(|o| o.backup_dir = "backups".into()), 64),
        ("db under /tmp", Box::new(|o| o.database = "/tmp/e/engine.db".into()), 64),
        ("audit under /var/tmp", Box::new(|o| o.audit_dir = Some("/var/tmp/audit".into())), 64),
        ("dot-dot", Box::new(|o| o.snapshot_dir = "/srv/../etc".into()), 64),
        ("quote", Box::new(|o| o.config = "/etc/w\"x.toml".into()), 64),
        ("newline", Box::new(|o| o.log_dir = "/var/log/a\nb".into()), 64),
        ("glob in audit dir", Box::new(|o| o.audit_dir = Some("/srv/audit*".into())), 64),
        ("unit with suffix", Box::new(|o| o.unit = "engine.service".into()), 64),
        ("unit with space", Box::new(|o| o.unit = "my engine".into()), 64),
        ("user", Box::new(|o| o.user = "bad user".into()), 64),
        ("calendar", Box::new(|o| o.check_at = "daily\nExecStart=/bin/sh".into()), 64),
        ("no engine", Box::new(|o| o.engine.clear()), 78),
    ];
    for (what, change, code) in cases {
        let mut o = base.clone();
        change(&mut o);
        match deploy::render(&o) {
            Err(e) => {
                assert_eq!(e.exit_code(), code, "{what}: {e}");
                assert!(e.to_string().contains("hint"), "{what}: {e}");
            }
            Ok(_) => panic!("{what}: rendered"),
        }
    }
}

#[test]
fn writing_is_atomic_idempotent_and_refuses_changes_without_force() {
    let d = scratch("write");
    let out = d.path().join("units");
    let o = options(d.path());
    let files = deploy::render(&o).unwrap();
    let first = deploy::write(&out, &files, false).unwrap();
    assert!(first.iter().all(|w| w.action == WriteAction::Created));
    let again = deploy::write(&out, &files, false).unwrap();
    assert!(again.iter().all(|w| w.action == WriteAction::Unchanged), "{again:?}");

    let mut changed = o.clone();
    changed.watchdog = Some(Duration::from_secs(60));
    let files2 = deploy::render(&changed).unwrap();
    let before = std::fs::read_to_string(out.join("engine.service")).unwrap();
    match deploy::write(&out, &files2, false) {
        Err(e @ DeployError::Exists { .. }) => assert_eq!(e.exit_code(), 73),
        other => panic!("{other:?}"),
    }
    assert_eq!(std::fs::read_to_string(out.join("engine.service")).unwrap(), before, "nothing written");
    let forced = deploy::write(&out, &files2, true).unwrap();
    for w in &forced {
        let expect = if w.path.ends_with("engine.service") { WriteAction::Replaced } else { WriteAction::Unchanged };
        assert_eq!(w.action, expect, "{}", w.path.display());
    }
    assert!(std::fs::read_to_string(out.join("engine.service")).unwrap().contains("WatchdogSec=1min"));
    let leftovers: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

// ---------------------------------------------------------------------------------------
// The command
// ---------------------------------------------------------------------------------------

/// A config in `root` (database under `root/var lib/engine`), its path.
fn write_config(root: &Path, extra: &str) -> PathBuf {
    let cfg = root.join("etc/warden/warden.toml");
    std::fs::create_dir_all(cfg.parent().unwrap()).unwrap();
    std::fs::create_dir_all(root.join("var lib/engine")).unwrap();
    std::fs::create_dir_all(root.join("var log/engine")).unwrap();
    std::fs::write(
        &cfg,
        format!(
            "database = \"{}\"\naudit_dir = \"{}\"\n{extra}[engine]\ncommand = [\"{}\", \"--trades\", \"5\"]\n",
            root.join("var lib/engine/engine.db").display(),
            root.join("var log/engine").display(),
            engine_exe(root).display()
        ),
    )
    .unwrap();
    cfg
}

/// `warden deploy systemd` with the config's paths, as root, with the given extra flags.
fn deploy_cmd(cfg: &Path, out: &Path, extra: &[&str]) -> Output {
    let exe = warden_exe(out.parent().unwrap_or(out));
    let mut args = vec!["deploy", "systemd", "--config", cfg.to_str().unwrap(), "--out", out.to_str().unwrap()];
    args.extend_from_slice(&["--user", "root", "--warden", exe.to_str().unwrap()]);
    args.extend_from_slice(extra);
    warden(&args)
}

#[test]
fn the_command_renders_reports_and_refuses() {
    let d = scratch("cli");
    let log_dir = d.path().join("var log/engine");
    let log_flag = ["--log-dir", log_dir.to_str().unwrap()];
    let cfg = write_config(d.path(), "");
    let out = d.path().join("units");
    let o = deploy_cmd(&cfg, &out, &log_flag);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(stdout.matches("created").count(), 10, "{stdout}");
    assert!(stdout.contains("systemctl daemon-reload"), "{stdout}");
    assert!(stdout.contains("/etc/logrotate.d/warden-engine"), "{stdout}");

    let o = deploy_cmd(&cfg, &out, &log_flag);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout).matches("unchanged").count(), 10, "{}", text(&o));

    let mut changed = log_flag.to_vec();
    changed.extend_from_slice(&["--watchdog", "off"]);
    let before = std::fs::read_to_string(out.join("engine.service")).unwrap();
    let o = deploy_cmd(&cfg, &out, &changed);
    assert_eq!(o.status.code(), Some(73), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--force"), "{}", text(&o));
    assert_eq!(std::fs::read_to_string(out.join("engine.service")).unwrap(), before);
    changed.push("--force");
    let o = deploy_cmd(&cfg, &out, &changed);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("replaced"), "{}", text(&o));
    assert!(!std::fs::read_to_string(out.join("engine.service")).unwrap().contains("WatchdogSec="));

    let json = deploy_cmd(&cfg, &d.path().join("units2"), &[&log_flag[..], &["--json"][..]].concat());
    assert_eq!(json.status.code(), Some(0), "{}", text(&json));
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["files"].as_array().unwrap().len(), 10);
    assert_eq!(v["files"][0]["action"], "created");

    // Refusals: a relative path, a flag the units would not see, no engine, no config.
    let o = warden(&["deploy", "systemd", "--config", cfg.to_str().unwrap(), "--out", "x", "--warden", "bin/warden"]);
    assert_eq!(o.status.code(), Some(64), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("absolute"), "{}", text(&o));
    let o = deploy_cmd(&cfg, &d.path().join("u3"), &[&log_flag[..], &["--db", "/srv/other.db"][..]].concat());
    assert_eq!(o.status.code(), Some(64), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("only pass --config"), "{}", text(&o));
    assert!(!d.path().join("u3").exists());
    let bare = d.path().join("bare.toml");
    std::fs::write(&bare, format!("database = \"{}\"\n", d.path().join("x.db").display())).unwrap();
    let o = deploy_cmd(&bare, &d.path().join("u4"), &log_flag);
    assert_eq!(o.status.code(), Some(78), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("[engine]"), "{}", text(&o));
    let o = deploy_cmd(&d.path().join("missing.toml"), &d.path().join("u5"), &log_flag);
    assert_eq!(o.status.code(), Some(78), "{}", text(&o));
}

// ---------------------------------------------------------------------------------------
// systemd-analyze and logrotate
// ---------------------------------------------------------------------------------------

fn unit_paths(dir: &Path) -> Vec<PathBuf> {
    SERVICES.iter().chain(TIMERS.iter()).map(|n| dir.join(n)).collect()
}

/// `systemd-analyze verify` must accept the units without a single message.
fn verify(dir: &Path) {
    let o = Command::new("systemd-analyze").arg("verify").args(unit_paths(dir)).output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    // A container without systemd as PID 1 may add notes about the host; none may name our files.
    let ours: Vec<&str> =
        stderr.lines().filter(|l| l.contains(dir.to_str().unwrap()) || l.contains("engine")).collect();
    assert!(o.status.success() && ours.is_empty(), "systemd-analyze verify:\n{}", text(&o));
}

#[test]
fn units_pass_systemd_analyze_verify() {
    if !have("systemd-analyze", "systemd") {
        return;
    }
    let d = scratch("verify");
    // The warden binary itself behind a path with a space and a `%`: systemd must find it.
    let bin = d.path().join("usr local/bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(WARDEN, bin.join("warden")).unwrap();
    let cfg = write_config(d.path(), "");
    let out = d.path().join("units");
    let log_dir = d.path().join("var log/engine");
    let o = warden(&[
        "deploy",
        "systemd",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--user",
        "root",
        "--warden",
        bin.join("warden").to_str().unwrap(),
        "--log-dir",
        log_dir.to_str().unwrap(),
        "--prom-dir",
        d.path().join("prom").to_str().unwrap(),
        "--read-write",
        d.path().join("var lib").to_str().unwrap(),
        "--memory-deny-write-execute",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    verify(&out);

    // The default layout (LogsDirectory=, no optional flags) too, rendered by the library.
    let mut opts = options(d.path());
    (opts.warden, opts.engine) = (warden_exe(d.path()), vec![engine_exe(d.path()).to_string_lossy().into_owned()]);
    opts.log_dir = "/var/log/engine".into();
    opts.audit_dir = None;
    opts.read_write.clear();
    std::fs::create_dir_all(d.path().join("engine-data")).unwrap();
    let out2 = d.path().join("units2");
    deploy::write(&out2, &deploy::render(&opts).unwrap(), false).unwrap();
    verify(&out2);

    // A broken unit is caught (the check above is not vacuous).
    let bad = d.path().join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    for p in unit_paths(&out2) {
        let t = std::fs::read_to_string(&p).unwrap().replace("ReadWritePaths=\"", "ReadWritePaths=%z\"");
        std::fs::write(bad.join(p.file_name().unwrap()), t).unwrap();
    }
    let o = Command::new("systemd-analyze").arg("verify").args(unit_paths(&bad)).output().unwrap();
    assert!(String::from_utf8_lossy(&o.stderr).contains("specifier"), "{}", text(&o));

    // Exposure: "OK" (below 3.0 on systemd's 0-10 scale) even as root.
    let o = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--threshold=30", "--no-pager"])
        .arg(out.join("engine.service"))
        .output()
        .unwrap();
    assert!(o.status.success(), "systemd-analyze security:\n{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("OK"), "{}", text(&o));
}

fn whoami() -> (String, String) {
    let id = |flag: &str| {
        let o = Command::new("id").arg(flag).output().unwrap();
        String::from_utf8_lossy(&o.stdout).trim().to_owned()
    };
    (id("-un"), id("-gn"))
}

#[test]
fn logrotate_accepts_the_snippet() {
    if !have("logrotate", "logrotate") {
        return;
    }
    let d = scratch("logrotate");
    let mut o = options(d.path());
    (o.user, o.group) = whoami();
    let audit = d.path().join("audit");
    std::fs::create_dir_all(&audit).unwrap();
    std::fs::create_dir_all(&o.log_dir).unwrap();
    std::fs::write(audit.join("audit.jsonl"), "{}\n").unwrap();
    std::fs::write(o.log_dir.join("engine.log"), "x\n").unwrap();
    let files = deploy::render(&o).unwrap();
    let conf = d.path().join("warden-engine");
    std::fs::write(&conf, file(&files, "warden-engine")).unwrap();
    let out = Command::new("logrotate").arg("-d").arg("-s").arg(d.path().join("state")).arg(&conf).output().unwrap();
    let all = text(&out);
    assert!(out.status.success(), "logrotate -d:\n{all}");
    assert!(!all.contains("error"), "logrotate -d:\n{all}");
    assert!(all.contains(&format!("considering log {}", audit.join("audit.jsonl").display())), "{all}");
    assert!(all.contains(&format!("considering log {}", o.log_dir.join("engine.log").display())), "{all}");
}

#[test]
fn forced_rotations_while_warden_appends_lose_no_audit_record() {
    if !have("logrotate", "logrotate") || !have("gzip", "gzip") {
        return;
    }
    let d = scratch("rotate");
    let mut o = options(d.path());
    (o.user, o.group) = whoami();
    let audit = d.path().join("audit");
    std::fs::create_dir_all(&audit).unwrap();
    std::fs::create_dir_all(&o.log_dir).unwrap();
    let conf = d.path().join("warden-engine");
    std::fs::write(&conf, file(&deploy::render(&o).unwrap(), "warden-engine")).unwrap();

    // The writer appends as fast as it can until six forced rotations are done.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (dir, flag) = (audit.clone(), stop.clone());
    let writer = std::thread::spawn(move || {
        let log = sqlite_warden::guard::audit::AuditLog::in_dir(&dir);
        let mut n = 0u64;
        while !flag.load(std::sync::atomic::Ordering::Relaxed) || n < 100 {
            let mut rec = sqlite_warden::guard::audit::AuditRecord::new(sqlite_warden::guard::audit::AuditEvent::Open);
            log.append(&mut rec).unwrap();
            n += 1;
        }
        n
    });
    const ROTATIONS: usize = 6;
    for _ in 0..ROTATIONS {
        std::thread::sleep(Duration::from_millis(20));
        let out =
            Command::new("logrotate").arg("-f").arg("-s").arg(d.path().join("state")).arg(&conf).output().unwrap();
        assert!(out.status.success(), "logrotate -f:\n{}", text(&out));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let n = writer.join().unwrap();
    let mut seqs = Vec::new();
    for entry in std::fs::read_dir(&audit).unwrap() {
        let p = entry.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with("audit.jsonl"), "{name}");
        let body = if name.ends_with(".gz") {
            let out = Command::new("gzip").arg("-dc").arg(&p).output().unwrap();
            assert!(out.status.success());
            String::from_utf8(out.stdout).unwrap()
        } else {
            std::fs::read_to_string(&p).unwrap()
        };
        for line in body.lines() {
            let v: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("{name}: torn line {e}: {line}"));
            seqs.push(v["seq"].as_u64().unwrap());
        }
    }
    seqs.sort_unstable();
    let files = std::fs::read_dir(&audit).unwrap().count();
    assert!(files >= 4, "only {files} files: the rotations did not happen");
    assert_eq!(seqs, (1..=n).collect::<Vec<_>>(), "{ROTATIONS} rotations lost or duplicated some of {n} records");
}

// ---------------------------------------------------------------------------------------
// The runbook
// ---------------------------------------------------------------------------------------

/// The fenced `sh` blocks of the runbook, line by line.
fn runbook_sh_lines() -> Vec<&'static str> {
    let mut lines = Vec::new();
    let mut in_sh = false;
    for line in RUNBOOK.lines() {
        if let Some(lang) = line.strip_prefix("```") {
            in_sh = !in_sh && lang.trim() == "sh";
            continue;
        }
        if in_sh {
            lines.push(line);
        }
    }
    lines
}

/// Every `warden …` invocation in the runbook: in `sh` blocks, and in inline code.
fn runbook_warden_invocations() -> Vec<Vec<String>> {
    let mut sources: Vec<String> = runbook_sh_lines().iter().map(|l| (*l).to_owned()).collect();
    let mut prose = String::new();
    let mut in_block = false;
    for line in RUNBOOK.lines() {
        if line.starts_with("```") {
            in_block = !in_block;
        } else if !in_block {
            prose.push_str(line);
            prose.push(' ');
        }
    }
    sources.extend(prose.split('`').skip(1).step_by(2).map(str::to_owned));
    let mut out = Vec::new();
    for src in sources {
        let toks: Vec<&str> = src.split_whitespace().collect();
        for (i, t) in toks.iter().enumerate() {
            if *t != "warden" {
                continue;
            }
            let cmd: Vec<String> = toks[i + 1..]
                .iter()
                .take_while(|t| !matches!(**t, "|" | "&&" | ";" | "||"))
                .map(|t| (*t).to_owned())
                .collect();
            if cmd.first().is_some_and(|s| s.chars().all(|c| c.is_ascii_lowercase())) {
                out.push(cmd);
            }
        }
    }
    out
}

#[test]
fn runbook_commands_exist() {
    let invocations = runbook_warden_invocations();
    assert!(invocations.len() >= 20, "{invocations:?}");
    let mut checked = BTreeSet::new();
    for cmd in &invocations {
        // `warden deploy systemd`, `warden migrate export`, ...: the subcommand's own help.
        let mut path = vec![cmd[0].clone()];
        if let Some(next) = cmd.get(1).filter(|s| s.chars().all(|c| c.is_ascii_lowercase()) && !s.is_empty()) {
            let o = warden(&[cmd[0].as_str(), next.as_str(), "--help"]);
            if o.status.success() {
                path.push(next.clone());
            }
        }
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        let o = warden(&args);
        assert!(o.status.success(), "`warden {}` from the runbook does not exist:\n{}", path.join(" "), text(&o));
        let help = String::from_utf8_lossy(&o.stdout);
        for flag in cmd.iter().filter(|t| t.starts_with("--")) {
            let flag = flag.split('=').next().unwrap();
            let known = help.lines().any(|l| {
                l.trim_start().split([' ', ',', '=', '<', '[']).any(|w| w == flag)
                    || l.contains(&format!(", {flag} "))
                    || l.contains(&format!(", {flag}\n"))
            }) || help.contains(&format!("{flag} <"))
                || help.contains(&format!("{flag}\n"));
            assert!(known, "`warden {}` has no `{flag}` (runbook: warden {})\n{help}", path.join(" "), cmd.join(" "));
        }
        checked.insert(path.join(" "));
    }
    for must in ["deploy systemd", "migrate export", "migrate import", "doctor", "status", "restore", "check"] {
        assert!(checked.contains(must), "the runbook should use `warden {must}`: {checked:?}");
    }
}

/// The runbook's paths, moved under `root`.
fn relocate(s: &str, root: &Path) -> String {
    let r = root.display();
    s.replace("/etc/warden", &format!("{r}/etc/warden"))
        .replace("/var/lib/engine", &format!("{r}/var/lib/engine"))
        .replace("/var/log/engine", &format!("{r}/var/log/engine"))
        .replace("/var/lib/prometheus/node-exporter", &format!("{r}/var/lib/prometheus/node-exporter"))
        .replace("/root/warden-units", &format!("{r}/root/warden-units"))
}

/// Runs one unit's `ExecStart=` as systemd would (its words, its `Environment=`).
fn exec_start(unit: &str) -> Output {
    let argv = words(one(unit, "ExecStart"), true);
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]);
    for var in ["WARDEN_CONFIG", "WARDEN_AUDIT_DIR", "WARDEN_DB", "NOTIFY_SOCKET", "WATCHDOG_USEC"] {
        cmd.env_remove(var);
    }
    for v in values(unit, "Environment") {
        for w in words(v, false) {
            let (k, v) = w.split_once('=').unwrap();
            cmd.env(k, v);
        }
    }
    cmd.output().unwrap()
}

#[test]
fn runbook_units_run_here() {
    let d = scratch("runbook");
    let root = d.path();
    // 1.5: the configuration block, with its paths moved and the demo engine as the engine.
    let start = "cat > /etc/warden/warden.toml <<'EOF'\n";
    let body = RUNBOOK.split_once(start).expect("the runbook writes /etc/warden/warden.toml").1;
    let config = body.split_once("\nEOF\n").expect("the heredoc ends with EOF").0;
    assert!(config.contains("[engine]\ncommand = ["), "{config}");
    let config: String = relocate(config, root)
        .lines()
        .map(|l| {
            if l.starts_with("command = [") {
                format!("command = [\"{}\", \"--trades\", \"20\"]", engine_exe(root).display())
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    for dir in ["etc/warden", "var/lib/engine", "var/log/engine", "var/lib/prometheus/node-exporter", "root"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    let cfg = root.join("etc/warden/warden.toml");
    std::fs::write(&cfg, format!("{config}\n")).unwrap();

    // 4.1: the deploy command line, with its paths moved, as root, this machine's warden.
    let line = runbook_sh_lines()
        .into_iter()
        .find(|l| l.starts_with("warden deploy systemd "))
        .expect("the runbook renders the units");
    let mut args: Vec<String> = line.split_whitespace().skip(1).map(|a| relocate(a, root)).collect();
    let log_dir = root.join("var/log/engine");
    let exe = warden_exe(root);
    args.extend(
        ["--user", "root", "--warden", exe.to_str().unwrap(), "--log-dir", log_dir.to_str().unwrap()].map(String::from),
    );
    let o = Command::new(WARDEN).args(&args).env_remove("WARDEN_CONFIG").output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = root.join("root/warden-units");
    let unit = |name: &str| std::fs::read_to_string(out.join(name)).unwrap();
    if have("systemd-analyze", "systemd") {
        verify(&out);
    }
    if have("logrotate", "logrotate") {
        let o = Command::new("logrotate")
            .arg("-d")
            .arg("-s")
            .arg(root.join("state"))
            .arg(out.join("warden-engine"))
            .output()
            .unwrap();
        assert!(o.status.success() && !text(&o).contains("error"), "{}", text(&o));
    }

    // 2.3 and 3: the old box's database (a few sessions there), exported and imported with
    // the runbook's own command lines; the bundle is imported where it was exported (scp).
    let old = root.join("old box");
    std::fs::create_dir_all(&old).unwrap();
    let old_db = old.join("engine.db");
    let o = Command::new(WARDEN)
        .args(["run", "-q", "--create", "--db", old_db.to_str().unwrap(), "--", ENGINE, "--trades", "25"])
        .env_remove("WARDEN_CONFIG")
        .env("WARDEN_AUDIT_DIR", old.join("audit"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "old box session: {}", text(&o));
    let bundle = root.join("engine bundle");
    let owner = whoami().0;
    let runbook_line = |prefix: &str| -> Vec<String> {
        let line = runbook_sh_lines()
            .into_iter()
            .find(|l| l.contains(prefix))
            .unwrap_or_else(|| panic!("the runbook has no `{prefix}` line"));
        let toks: Vec<&str> = line.split_whitespace().collect();
        let at = toks.iter().position(|t| *t == "warden").unwrap();
        let mut out: Vec<String> = Vec::new();
        for (i, t) in toks.iter().enumerate().skip(at + 1) {
            let t = match *t {
                "\"$OLD_DB\"" => old_db.to_str().unwrap().to_owned(),
                "/var/tmp/engine-bundle" | "/root/engine-bundle" => bundle.to_str().unwrap().to_owned(),
                "engine" if toks[i - 1] == "--owner" => owner.clone(),
                t => relocate(t, root),
            };
            assert!(!t.contains('$'), "unexpanded shell variable in `{line}`");
            out.push(t);
        }
        out
    };
    let run_line = |prefix: &str, audit: &Path| -> Output {
        Command::new(WARDEN)
            .args(runbook_line(prefix))
            .env_remove("WARDEN_CONFIG")
            .env("WARDEN_AUDIT_DIR", audit)
            .output()
            .unwrap()
    };
    let o = run_line("warden migrate export ", &old.join("audit"));
    assert_eq!(o.status.code(), Some(0), "runbook export: {}", text(&o));
    let o = run_line("warden migrate import ", &log_dir);
    assert_eq!(o.status.code(), Some(0), "runbook import: {}", text(&o));
    let db = root.join("var/lib/engine/engine.db");
    let count = |p: &Path| -> i64 {
        let c = rusqlite::Connection::open_with_flags(p, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
        c.query_row("SELECT count(*) FROM trades", [], |r| r.get(0)).unwrap()
    };
    assert_eq!(count(&db), 25, "the imported database has the old box's trades");
    assert_eq!(count(&old_db), 25);
    let o = run_line("warden check ", &log_dir);
    assert_eq!(o.status.code(), Some(0), "runbook check: {}", text(&o));
    let o = run_line("warden doctor ", &log_dir);
    // Pass, warn or fail depends on this machine (NTP, the disk); it must give a verdict.
    assert!(matches!(o.status.code(), Some(0 | 10 | 11)), "runbook doctor: {}", text(&o));

    // Each unit's ExecStart, as systemd would run it.
    let run = exec_start(&unit("engine.service"));
    assert_eq!(run.status.code(), Some(0), "engine.service: {}", text(&run));
    for job in ["check", "drill", "prune"] {
        let o = exec_start(&unit(&format!("engine-{job}.service")));
        assert_eq!(o.status.code(), Some(0), "engine-{job}.service: {}", text(&o));
    }
    let status = exec_start(&unit("engine-status.service"));
    assert_eq!(status.status.code(), Some(0), "engine-status.service: {}", text(&status));
    let prom = std::fs::read_to_string(root.join("var/lib/prometheus/node-exporter/warden-engine.prom")).unwrap();
    assert!(prom.contains("warden_healthy"), "{prom}");
    assert!(prom.lines().any(|l| l.starts_with("warden_healthy{") && l.ends_with(" 1")), "{prom}");
    // The audit log went where the config and the units say.
    assert!(log_dir.join("audit.jsonl").exists());
}

//! The command line as people's hands meet it (issue 16): one table of cases, each run as a
//! real `warden` process with stderr and stdout piped: usage errors exit 64, `-q` leaves
//! only errors, no ANSI escape reaches a pipe (or anything with `NO_COLOR`), `--json` turns
//! an error into JSON on stdout carrying the exit code, the journal gets priority prefixes
//! and no second timestamp, `status --prom` says what to do about a missing directory, and
//! completions and the manual page come out of the clap definitions.

use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::process::{Command, Output};

const WARDEN: &str = env!("CARGO_BIN_EXE_warden");

fn warden(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(WARDEN);
    c.args(args).current_dir(dir).env_remove("RUST_LOG").env_remove("NO_COLOR").env_remove("JOURNAL_STREAM");
    c.env("WARDEN_AUDIT_DIR", dir.join("audit"));
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn db(dir: &Path) -> String {
    let p = dir.join("e.db");
    let c = rusqlite::Connection::open(&p).unwrap();
    c.execute_batch("PRAGMA journal_mode=DELETE; CREATE TABLE t(x); INSERT INTO t VALUES (1);").unwrap();
    p.to_str().unwrap().to_owned()
}

#[test]
fn the_table_of_exit_codes_quiet_and_escapes() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let good = db(dir);
    let missing = dir.join("missing.db").to_str().unwrap().to_owned();
    // (args, env, expected exit code, stderr must be empty, stderr must contain)
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, i32, bool, &'a str);
    let cases: Vec<Case> = vec![
        (vec!["no-such-command"], vec![], 64, false, "unrecognized subcommand"),
        (vec!["backup", "--no-such-flag"], vec![], 64, false, "unexpected argument"),
        (vec!["lock"], vec![], 64, false, "required"),
        (vec!["check", "--check", "sideways", &good], vec![], 64, false, "invalid value"),
        (vec!["-q", "-v", "version"], vec![], 64, false, "cannot be used with"),
        // -q: a success says nothing on stderr, in every position clap accepts it.
        (vec!["backup", "--db", &good, "-q"], vec![], 0, true, ""),
        (vec!["-q", "check", &good], vec![], 0, true, ""),
        (vec!["status", "--db", &good, "--quiet"], vec![], 0, true, ""),
        (vec!["-q", "backups", "--db", &good], vec![], 0, true, ""),
        (vec!["-q", "snapshot", "--db", &good], vec![], 0, true, ""),
        (vec!["snapshot", "--db", &good], vec![], 0, false, "latest re-pointed"),
        (vec!["salvage", &good, "--to", "salvaged.db", "--quiet"], vec![], 0, true, ""),
        // An error is still said under -q.
        (vec!["-q", "backup", "--db", &missing], vec![], 66, false, "does not exist"),
        // Logs in a pipe: no escapes (checked for every case below), with and without NO_COLOR.
        (vec!["backup", "--db", &good], vec![("RUST_LOG", "debug")], 0, false, "DEBUG"),
        (vec!["backup", "--db", &good], vec![("RUST_LOG", "debug"), ("NO_COLOR", "1")], 0, false, "DEBUG"),
    ];
    for (args, env, code, quiet, needle) in cases {
        let o = warden(dir, &args, &env);
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(code), "warden {args:?}: {err}");
        assert!(!err.contains('\x1b'), "warden {args:?} wrote ANSI escapes into a pipe: {err:?}");
        assert!(!text(&o.stdout).contains('\x1b'), "warden {args:?} wrote ANSI escapes to stdout");
        if quiet {
            assert_eq!(err, "", "warden {args:?} is quiet on success");
        }
        assert!(err.contains(needle), "warden {args:?}: stderr lacks {needle:?}: {err}");
        // Rust debug structs never reach users.
        assert!(!err.contains(" { ") || err.contains("DEBUG"), "warden {args:?}: {err}");
    }
}

#[test]
fn with_json_an_error_is_json_on_stdout_with_its_exit_code() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let missing = dir.join("missing.db").to_str().unwrap().to_owned();
    let good = db(dir);
    for args in [
        vec!["backup", "--db", missing.as_str(), "--json"],
        vec!["backups", "verify", "no-such-id", "--json", "--db", good.as_str()],
        vec!["backup", "--json", "--no-such-flag"],
    ] {
        let o = warden(dir, &args, &[]);
        let code = o.status.code().unwrap();
        assert_ne!(code, 0, "{args:?}");
        let v: serde_json::Value = serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("warden {args:?}: stdout is not JSON ({e}): {}", text(&o.stdout)));
        assert_eq!(v["schema"], "warden.error/1", "{v}");
        assert_eq!(v["exit_code"], code, "{v}");
        assert_eq!(v["ok"], false);
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
        // The person at the terminal still reads it on stderr.
        assert!(!o.stderr.is_empty(), "{args:?}");
    }
    // Without --json, stdout stays empty on an error.
    let o = warden(dir, &["backup", "--db", &missing], &[]);
    assert_eq!((o.status.code(), o.stdout.len()), (Some(66), 0));
}

/// Every `--json` answer of every command is an object that names its `schema` (before
/// issue 16, `fs`, `sessions` and `backups` printed bare arrays and a dozen commands had no
/// `schema`: a script could not tell one shape from the next).
#[test]
fn every_json_answer_names_its_schema() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let good = db(dir);
    let g = good.as_str();
    let o = warden(dir, &["run", "--db", g, "--json", "--", "true"], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let session: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let id = session["session_id"].as_str().unwrap().to_owned();
    let cases: Vec<Vec<&str>> = vec![
        vec!["version", "--json"],
        vec!["fs", g, "--json"],
        vec!["lock", g, "--json"],
        vec!["backup", "--db", g, "--json"],
        vec!["prune", "--db", g, "--json", "--dry-run"],
        vec!["prune", "--db", g, "--json"],
        vec!["snapshot", "--db", g, "--json"],
        vec!["check", g, "--json"],
        vec!["status", "--db", g, "--json"],
        vec!["sessions", "--db", g, "--json"],
        vec!["sessions", "show", &id, "--db", g, "--json"],
        vec!["backups", "--db", g, "--json"],
        vec!["backups", "verify", "--all", "--db", g, "--json"],
        vec!["audit", "--json"],
        vec!["doctor", "--db", g, "--json", "--no-ntp"],
        vec!["drill", "--db", g, "--json"],
        vec!["restore", "--db", g, "--to", "restored.db", "--json"],
        vec!["salvage", g, "--to", "salvaged.db", "--json"],
        vec!["accept", "--db", g, "--json"],
        vec!["deploy", "systemd", "--db", g, "--out", "units", "--json"],
        vec!["migrate", "export", "--db", g, "--to", "bundle", "--json"],
        vec!["sessions", "export", "--db", g, "--to", "artifacts", "--json"],
    ];
    for args in cases {
        let o = warden(dir, &args, &[]);
        let out = text(&o.stdout);
        assert!(!out.trim().is_empty(), "warden {args:?} printed nothing (exit {:?}): {}", o.status, text(&o.stderr));
        // One document, or JSON lines (audit): each line an object with a schema.
        for line in out.lines() {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("warden {args:?}: not JSON ({e}): {line}"));
            assert!(v.is_object(), "warden {args:?}: not an object: {line}");
            assert!(
                v["schema"].is_u64() || v["schema"].is_string(),
                "warden {args:?}: no schema in {line}; stderr: {}",
                text(&o.stderr)
            );
        }
    }
}

#[test]
fn under_the_journal_lines_carry_priorities_and_no_timestamps() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let missing = dir.join("missing.db").to_str().unwrap().to_owned();
    let good = db(dir);
    // systemd names the stream by device and inode; a file stands in for the journal socket.
    let log = dir.join("journal");
    let f = std::fs::File::create(&log).unwrap();
    let md = f.metadata().unwrap();
    let stream = format!("{}:{}", md.dev(), md.ino());
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let f = std::fs::OpenOptions::new().write(true).truncate(true).open(&log).unwrap();
        let mut c = Command::new(WARDEN);
        c.args(args).current_dir(dir).env("WARDEN_AUDIT_DIR", dir.join("audit")).env("JOURNAL_STREAM", &stream);
        c.env_remove("RUST_LOG");
        for (k, v) in env {
            c.env(k, v);
        }
        let st = c.stderr(f).status().unwrap();
        (st.code(), std::fs::read_to_string(&log).unwrap())
    };
    let (code, err) = run(&["backup", "--db", &missing], &[]);
    assert_eq!(code, Some(66));
    assert!(err.starts_with("<3>warden: "), "an error has priority 3: {err:?}");
    let (code, err) = run(&["backup", "--db", &good], &[("RUST_LOG", "debug")]);
    assert_eq!(code, Some(0), "{err}");
    let logs: Vec<&str> = err.lines().filter(|l| l.starts_with('<')).collect();
    assert!(!logs.is_empty(), "{err}");
    for l in &logs {
        assert!(l.starts_with("<7>") || l.starts_with("<6>") || l.starts_with("<4>"), "{l}");
        // `<7>target: message`: the journal keeps the time; no colour in its records.
        assert!(l[3..].starts_with("sqlite_warden") && !l.contains('\x1b'), "no timestamp, no colour: {l}");
    }
    // A stream that is not stderr's (the unit redirected it) is not taken for the journal.
    let o = warden(dir, &["backup", "--db", &missing], &[("JOURNAL_STREAM", "1:1")]);
    assert!(text(&o.stderr).starts_with("warden: "), "{}", text(&o.stderr));
}

#[test]
fn status_prom_without_a_file_goes_to_the_node_exporter_directory_or_says_how() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let good = db(dir);
    let o = warden(dir, &["status", "--db", &good, "--prom", "/nonexistent-textfiles/warden.prom"], &[]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(74), "{err}");
    assert!(err.contains("/nonexistent-textfiles") && err.contains("prometheus-node-exporter"), "{err}");
    // A directory gets one file per database.
    let textfiles = dir.join("textfiles");
    std::fs::create_dir(&textfiles).unwrap();
    let o = warden(dir, &["status", "--db", &good, "--prom", textfiles.to_str().unwrap()], &[]);
    assert_eq!(o.status.code(), Some(10), "{}", text(&o.stderr));
    let prom = std::fs::read_to_string(textfiles.join("warden-e.db.prom")).unwrap();
    assert!(prom.contains("warden_backups_good{") && !prom.contains("_good_total"), "{prom}");
    // `--prom` alone: Debian's and Ubuntu's directory.
    let default = Path::new("/var/lib/prometheus/node-exporter");
    let o = warden(dir, &["status", "--db", &good, "--prom"], &[]);
    if default.is_dir() {
        assert_eq!(o.status.code(), Some(10), "{}", text(&o.stderr));
        let written = default.join("warden-e.db.prom");
        assert!(written.exists());
        std::fs::remove_file(written).unwrap();
    } else {
        assert_eq!(o.status.code(), Some(74));
        assert!(text(&o.stderr).contains("/var/lib/prometheus/node-exporter"), "{}", text(&o.stderr));
    }
}

#[test]
fn completions_and_the_manual_page_come_from_the_flags() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let o = warden(dir, &["completions", shell], &[]);
        assert_eq!(o.status.code(), Some(0), "{shell}");
        let script = text(&o.stdout);
        // Every subcommand and a flag of one are offered.
        for word in ["backup", "drill", "offsite", "completions", "recheck"] {
            assert!(script.contains(word), "{shell} completion lacks {word}");
        }
    }
    let bash = dir.join("warden.bash");
    std::fs::write(&bash, warden(dir, &["completions", "bash"], &[]).stdout).unwrap();
    let o = Command::new("bash").arg("-n").arg(&bash).output().unwrap();
    assert!(o.status.success(), "the bash completion parses: {}", text(&o.stderr));
    let o = warden(dir, &["completions", "tcsh"], &[]);
    assert_eq!(o.status.code(), Some(64));
    let o = warden(dir, &["manpage"], &[]);
    assert_eq!(o.status.code(), Some(0));
    let man = text(&o.stdout);
    assert!(man.contains(".TH warden 1") && man.contains(".SH NAME") && man.contains("drill"), "{man}");
    // --dir: a page per command, written there, each path printed.
    let o = warden(dir, &["manpage", "--dir", "man/man1"], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let listed: Vec<String> = text(&o.stdout).lines().map(str::to_owned).collect();
    assert!(listed.len() > 20, "{listed:?}");
    for page in ["warden.1", "warden-run.1", "warden-backups-verify.1", "warden-offsite-restore.1"] {
        let p = dir.join("man/man1").join(page);
        assert!(listed.contains(&format!("man/man1/{page}")), "{page} not listed: {listed:?}");
        assert!(std::fs::read_to_string(&p).unwrap().contains(".SH NAME"), "{page}");
    }
    if Path::new("/usr/bin/man").exists() {
        let page = dir.join("warden.1");
        std::fs::write(&page, &man).unwrap();
        let o = Command::new("man").arg("-l").arg(&page).env("MANPAGER", "cat").env("MANWIDTH", "80").output().unwrap();
        assert!(o.status.success() && text(&o.stdout).contains("warden"), "{}", text(&o.stderr));
    }
}

#[test]
fn a_damage_report_reads_like_one() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let p = dir.join("damaged.db");
    {
        let c = rusqlite::Connection::open(&p).unwrap();
        c.execute_batch(
            "PRAGMA journal_mode=DELETE; CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); CREATE INDEX iv ON t(v);",
        )
        .unwrap();
        let tx = c.unchecked_transaction().unwrap();
        for i in 0..3000 {
            tx.execute("INSERT INTO t(v) VALUES (?1)", [format!("{}{i}", "x".repeat(50))]).unwrap();
        }
        tx.commit().unwrap();
    }
    // One page overwritten in its middle: a few dozen messages from integrity_check.
    let mut bytes = std::fs::read(&p).unwrap();
    bytes[4096 * 5 + 200..4096 * 5 + 500].fill(0xff);
    std::fs::write(&p, &bytes).unwrap();
    let db = p.to_str().unwrap();
    let o = warden(dir, &["check", db], &[]);
    assert_eq!(o.status.code(), Some(65), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    let json = warden(dir, &["check", db, "--json"], &[]);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let all: Vec<String> = v["integrity"]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|m| m.as_str().unwrap().lines().map(str::to_owned).collect::<Vec<_>>())
        .filter(|l| l.contains("page"))
        .collect();
    assert!(all.len() > 5, "a real multi-message report: {all:?}");
    // Each message at most once, the first few only, grouped by tree and page.
    // (the first is the headline and heads the examples: twice, never three times as before)
    assert!(out.matches(all[0].as_str()).count() <= 2, "{out}");
    assert_eq!(out.matches(all[1].as_str()).count(), 1, "{out}");
    assert_eq!(out.matches(all[5].as_str()).count(), 0, "only the first few without -v: {out}");
    assert!(out.lines().count() <= 20, "{} lines:\n{out}", out.lines().count());
    assert!(out.contains("b-tree rooted at page") && out.contains("problem(s) on page"), "{out}");
    assert!(out.contains("more (all of them: `-v`, or `--json`)"), "{out}");
    // -v: every message.
    let verbose = text(&warden(dir, &["check", db, "-v"], &[]).stdout);
    for m in &all {
        assert!(verbose.contains(m.trim()), "-v lacks {m}:\n{verbose}");
    }
}

//! Every `warden.toml` setting with a bad value (issue 13, item 5, the config half of the
//! bad-input sweep): each is refused with 78, the message names the setting (or the file and
//! line), the commands that read the config create nothing and change nothing.
//!
//! Found by it: an empty path (`backup_dir = ""`, `audit_dir = ""`, `database = ""`, ...) was
//! taken as the working directory: the audit log landed in the cwd, the backup directory
//! failed with 74 "creating the backup directory ``", the database was "a directory".

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::Scratch;

/// (what, the rest of warden.toml after `database = "e.db"`, what the message must name).
const CELLS: &[(&str, &str, &str)] = &[
    ("database of the wrong type", "create = \"yes\"\n", "create"),
    ("empty backup_dir", "backup_dir = \"\"\n", "backup_dir"),
    ("empty session_dir", "session_dir = \"\"\n", "session_dir"),
    ("empty audit_dir", "audit_dir = \"\"\n", "audit_dir"),
    ("unknown key", "databse = \"x.db\"\n", "databse"),
    ("gate.budget not a duration", "[gate]\nbudget = \"soon\"\n", "gate.budget"),
    ("gate.budget zero", "[gate]\nbudget = \"0s\"\n", "gate.budget"),
    ("gate.check unknown", "[gate]\ncheck = \"deep\"\n", "deep"),
    ("retention negative", "[retention]\nkeep_last = -3\n", "keep_last"),
    ("retention absurd", "[retention]\nkeep_daily = 99999999999999999999\n", "keep_daily"),
    ("retention bytes not a number", "[retention]\nmax_total_bytes = \"lots\"\n", "max_total_bytes"),
    ("retention unknown key", "[retention]\nkeep_forever = 1\n", "keep_forever"),
    ("engine.command not a list", "[engine]\ncommand = \"/bin/true\"\n", "command"),
    ("snapshots.dir empty", "[snapshots]\ndir = \"\"\n", "snapshots.dir"),
    ("snapshots.every zero", "[snapshots]\nevery = \"0s\"\n", "snapshots.every"),
    ("snapshots.keep zero", "[snapshots]\nkeep = 0\n", "snapshots.keep"),
    ("snapshots.check unknown", "[snapshots]\ncheck = \"maybe\"\n", "snapshots.check"),
    ("session.on_foreign_writer unknown", "[session]\non_foreign_writer = \"explode\"\n", "session.on_foreign_writer"),
    (
        "session.foreign_writer_every too short",
        "[session]\nforeign_writer_every = \"1ns\"\n",
        "session.foreign_writer_every",
    ),
    ("section of the wrong type", "gate = 5\n", "gate"),
];

/// Commands that read `warden.toml` (found in the working directory).
const COMMANDS: &[&[&str]] = &[
    &["run", "--", "/bin/true"],
    &["backup"],
    &["prune", "--keep-last", "1"],
    &["snapshot"],
    &["status"],
    &["drill"],
    &["backups"],
    &["accept"],
];

fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                out.insert(p.clone(), Vec::new());
                stack.push(p);
            } else if !p.to_string_lossy().ends_with("-warden.lock") {
                out.insert(p.clone(), std::fs::read(&p).unwrap_or_default());
            }
        }
    }
    out
}

#[test]
fn every_config_setting_with_a_bad_value_is_78_naming_it_and_changes_nothing() {
    let mut failures = Vec::new();
    let mut cells = 0;
    for (what, body, needle) in CELLS {
        let s = Scratch::new();
        common::make_db(&s.path("e.db"), "delete");
        std::fs::write(s.path("warden.toml"), format!("database = \"e.db\"\n{body}")).unwrap();
        std::fs::create_dir_all(s.audit_dir()).unwrap();
        let before = tree(s.dir.path());
        for args in COMMANDS {
            cells += 1;
            let out = s.warden().args(*args).output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            let cell = format!("{what} × {}", args[0]);
            if out.status.code() != Some(78) {
                failures.push(format!("{cell}: exit {:?}, documented 78: {stderr}", out.status.code()));
            } else if !stderr.contains(needle) {
                failures.push(format!("{cell}: the message does not name `{needle}`: {stderr}"));
            } else if !stderr.contains("hint") {
                failures.push(format!("{cell}: no hint: {stderr}"));
            }
            let after = tree(s.dir.path());
            if after != before {
                let changed: Vec<_> = after
                    .iter()
                    .filter(|(p, c)| before.get(*p) != Some(c))
                    .map(|(p, _)| p.strip_prefix(s.dir.path()).unwrap().display().to_string())
                    .chain(before.keys().filter(|p| !after.contains_key(*p)).map(|p| format!("lost {}", p.display())))
                    .collect();
                failures.push(format!("{cell}: changed or created {changed:?}"));
            }
        }
    }
    assert!(cells >= CELLS.len() * COMMANDS.len());
    assert!(failures.is_empty(), "{} of {cells} cells failed:\n{}", failures.len(), failures.join("\n"));
}

//! The table-driven bad-input sweep (issue 13, item 5): rows are bad inputs, columns are
//! commands, and every cell runs the real `warden` binary and asserts (a) the documented exit
//! code (never 0, 101 or a signal on bad input unless the table says so), (b) one stderr line
//! `warden: …` (or clap's `error: …`) naming the offending path or value, with a hint where
//! the table says one is reliably given, (c) nothing created and (d) nothing lost or changed:
//! the scratch tree (names, kinds, sizes, mtimes, contents; all but the test's own audit
//! directory) is identical before and after.
//!
//! Fixed in `src/` from cells of this sweep (details in [`FIXED`]): `cli::parse` refuses
//! arguments with control characters (64); `copies::prune::prune` creates no store for a
//! missing backup directory (66); `prune_cmd` removes nothing while a session artifact is
//! unreadable (65); `copies::salvage::salvage` and `ops::migrate::export` refuse a directory
//! or an empty file (66); `restore_in_place` says "no backup" before creating the lock;
//! `RestoreError::exit_code` gives a lock directory 73; `backups verify --all` fails (65) on
//! an unreadable manifest; `ops::status::gather` reports unreadable manifests (10) and
//! artifacts (12).
//!
//! Defects the sweep found and that were fixed in `src/` are listed in [`FIXED`]; cells
//! asserting the correct behaviour of defects not fixed yet are in [`KNOWN_DEFECTS`], printed
//! and counted (they never pass silently, and one that starts passing fails the test until it
//! is taken off the list). `SWEEP_DISCOVER=1` prints every cell's observed code and stderr
//! instead of asserting.

mod common;

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::Scratch;
use common::proc::*;

/// Fixes in `src/` that cells of this sweep found (file:function: what).
pub const FIXED: &[&str] = &[
    "src/storage/target.rs:require_sqlite (backup, snapshot, accept, status): a file that is not an SQLite \
     database made backup and snapshot create their store directories and locks, and accept the lock and \
     `<db>.warden/`, before failing; status called it `no backup` (10); now 65 `is not an SQLite database` \
     before anything is created, and status says `database_unusable` (11); accept on an empty file is 66",
    "src/copies/copy.rs:first_not_local, BackupError/SnapshotError/MigrateError/TargetError::exit_code: a \
     permission denied while judging or reading was 74 (I/O); now 77 (not permitted)",
    "src/cli/mod.rs:parse (control_char_argument): a path with a newline was printed raw, splitting every \
     error over lines and naming the file nowhere whole; now refused with 64, escaped, with a hint",
    "src/copies/prune.rs:prune: `warden prune` on a missing (or directory, empty, mistyped) database created \
     `<db>.warden/backups/.warden-store.lock` (and a missing parent directory) and exited 0; now 66 \
     `PruneError::NoStore` naming the directory, nothing created (`--dry-run` still plans nothing, exit 0)",
    "src/copies/salvage.rs:salvage: an empty file was `salvaged` into a new file with exit 0, and a directory \
     failed with 74 `SQLite read error 266`; now 66 `SalvageError::NotADatabase`, nothing created",
    "src/ops/migrate/export.rs:export: an empty file was exported as a bundle with exit 0, and a directory \
     was called `does not exist`; now 66 `MigrateError::NotADatabase`, no bundle",
    "src/copies/restore/in_place.rs:restore_in_place: `warden restore` with no backup directory created \
     `<db>-warden.lock` before saying there is no backup; now it says so first and creates nothing",
    "src/cli/backups.rs:verify_cmd (+ BackupStore::unreadable_manifests): `backups verify --all` exited 0 \
     past a truncated manifest (only a log WARN); now each is a named failure and the exit is 65",
    "src/copies/restore/error.rs:RestoreError::exit_code: a directory named `<db>-warden.lock` made \
     `restore` exit 74 where every other command exits 73; now the lock error's own code (73)",
    "src/cli/session.rs:prune_cmd (+ session::health::unreadable): with the latest session artifact \
     truncated, `prune --keep-last 1` deleted the post-session backup that session depended on; now 65 \
     `PruneError::UnreadableArtifact` naming the artifact, nothing removed",
    "src/ops/status/gather.rs:gather: `status` said healthy (0) with a truncated backup manifest or session \
     artifact (only a log WARN); now `backups_unreadable` (10) / `sessions_unreadable` (12) naming the file",
];

/// Cells `(row, column)` that assert the correct behaviour of a defect not fixed yet.
const KNOWN_DEFECTS: &[(&str, &str, &str)] = &[];

// ---------------------------------------------------------------------------------------------
// Columns
// ---------------------------------------------------------------------------------------------

const COLS: [&str; 13] = [
    "run", "backup", "prune", "snapshot", "restore", "drill", "check", "accept", "status", "backups", "verify",
    "salvage", "export",
];

/// What a row hands to the columns: the `X` of every command and the row's extra arguments.
struct Target {
    x: OsString,
    extra: Vec<OsString>,
    /// The text stderr must name (the path's file name, or the bad value).
    needle: String,
}

fn os(s: &str) -> OsString {
    OsString::from(s)
}

/// The argument vector of column `col` on `t` (salvage and export write into the scratch).
fn argv(col: &str, t: &Target, s: &Scratch) -> Vec<OsString> {
    let x = t.x.clone();
    let mut v: Vec<OsString> = match col {
        "run" => vec![os("run"), os("--db"), x],
        "backup" => vec![os("backup"), os("--db"), x],
        "prune" => {
            let mut v = vec![os("prune"), os("--db"), x];
            if !t.extra.iter().any(|a| a == "--keep-last") {
                v.extend([os("--keep-last"), os("1")]);
            }
            v
        }
        "snapshot" => vec![os("snapshot"), os("--db"), x],
        "restore" => vec![os("restore"), os("--db"), x],
        "drill" => vec![os("drill"), os("--db"), x],
        "check" => vec![os("check"), x],
        "accept" => vec![os("accept"), os("--db"), x],
        "status" => vec![os("status"), os("--db"), x],
        "backups" => vec![os("backups"), os("--db"), x],
        "verify" => vec![os("backups"), os("verify"), os("--all"), os("--db"), x],
        "salvage" => vec![os("salvage"), x, os("--to"), s.path("salvaged.db").into_os_string()],
        "export" => vec![os("migrate"), os("export"), os("--db"), x, os("--to"), s.path("bundle").into_os_string()],
        other => unreachable!("{other}"),
    };
    v.extend(t.extra.iter().cloned());
    if col == "run" {
        v.extend([os("--"), os("/bin/true")]);
    }
    v
}

// ---------------------------------------------------------------------------------------------
// Rows
// ---------------------------------------------------------------------------------------------

/// A plain database with a table, beside nothing.
fn plain_db(s: &Scratch) -> PathBuf {
    let db = s.path("e.db");
    common::make_db(&db, "wal");
    db
}

/// A database with a real history: a guarded session (pre- and post-session backups, a
/// seal, a session artifact) and one more backup.
fn guarded_db(s: &Scratch) -> PathBuf {
    let db = plain_db(s);
    for args in [&["run", "--db", "e.db", "--", "/bin/true"][..], &["backup", "--db", "e.db"]] {
        let mut c = s.warden();
        c.args(args);
        let d = run_to_end(c, Duration::from_secs(60));
        assert_eq!(d.code(), Some(0), "setup `warden {args:?}`: {}", d.diag());
    }
    db
}

fn path_target(s: &Scratch, p: PathBuf, needle: &str) -> Target {
    let _ = s;
    Target { x: p.into_os_string(), extra: vec![], needle: needle.to_owned() }
}

fn with_extra(db: PathBuf, extra: &[&str], needle: &str) -> Target {
    Target { x: db.into_os_string(), extra: extra.iter().map(|a| os(a)).collect(), needle: needle.to_owned() }
}

/// The newest `*.json` in `dir` by name (ids sort by time).
fn newest_json(dir: &Path) -> PathBuf {
    let mut v: Vec<String> = names(dir).into_iter().filter(|n| n.ends_with(".json") && !n.starts_with('.')).collect();
    v.sort();
    dir.join(v.last().unwrap_or_else(|| panic!("no JSON in {}", dir.display())))
}

fn truncate_half(p: &Path) {
    let bytes = std::fs::read(p).unwrap();
    std::fs::write(p, &bytes[..bytes.len() / 2]).unwrap();
}

type Setup = fn(&Scratch) -> Target;

const ROWS: &[(&str, Setup)] = &[
    ("missing file", |s| path_target(s, s.path("nope.db"), "nope.db")),
    ("missing parent", |s| path_target(s, s.path("nodir/x.db"), "nodir/x.db")),
    ("empty file", |s| {
        std::fs::write(s.path("empty.db"), b"").unwrap();
        path_target(s, s.path("empty.db"), "empty.db")
    }),
    ("not a database", |s| {
        std::fs::write(s.path("hello.db"), b"hello").unwrap();
        path_target(s, s.path("hello.db"), "hello.db")
    }),
    ("a directory", |s| {
        std::fs::create_dir(s.path("d.db")).unwrap();
        path_target(s, s.path("d.db"), "d.db")
    }),
    ("symlink to a directory", |s| {
        std::fs::create_dir(s.path("realdir")).unwrap();
        std::os::unix::fs::symlink(s.path("realdir"), s.path("link.db")).unwrap();
        path_target(s, s.path("link.db"), "link.db|realdir")
    }),
    ("dangling symlink", |s| {
        std::os::unix::fs::symlink(s.path("nowhere.db"), s.path("dangle.db")).unwrap();
        path_target(s, s.path("dangle.db"), "dangle.db|nowhere.db")
    }),
    ("spaces+unicode, missing", |s| {
        std::fs::create_dir(s.path("dir é")).unwrap();
        path_target(s, s.path("dir é/ü x.db"), "dir é/ü x.db")
    }),
    ("newline, missing", |s| path_target(s, s.path("new\nline.db"), "new\\nline.db")),
    ("non-UTF-8 name", |s| {
        let p = s.dir.path().join(OsStr::from_bytes(b"\xff.db"));
        common::make_db(&p, "wal");
        path_target(s, p, "\\xff.db")
    }),
    ("--config garbage", |s| {
        let db = guarded_db(s);
        std::fs::write(s.path("garbage.toml"), b"\x01 this is [[not toml = =\n").unwrap();
        with_extra(db, &["--config", "garbage.toml"], "garbage.toml")
    }),
    ("warden.toml unknown key", |s| {
        let db = guarded_db(s);
        std::fs::write(s.path("warden.toml"), b"databse = \"e.db\"\n").unwrap();
        with_extra(db, &[], "warden.toml")
    }),
    ("warden.toml wrong type", |s| {
        let db = guarded_db(s);
        std::fs::write(s.path("warden.toml"), b"create = \"yes\"\n").unwrap();
        with_extra(db, &[], "warden.toml")
    }),
    ("--keep-last huge", |s| {
        with_extra(guarded_db(s), &["--keep-last", "99999999999999999999999"], "99999999999999999999999")
    }),
    ("--keep-last -1", |s| with_extra(guarded_db(s), &["--keep-last", "-1"], "-1")),
    ("--gate-budget 10parsecs", |s| with_extra(guarded_db(s), &["--gate-budget", "10parsecs"], "10parsecs")),
    ("--gate-budget 0", |s| with_extra(guarded_db(s), &["--gate-budget", "0"], "0")),
    ("truncated manifest", |s| {
        let db = guarded_db(s);
        let m = newest_json(&backups_of(&db));
        truncate_half(&m);
        let name = m.file_name().unwrap().to_string_lossy().into_owned();
        with_extra(db, &[], &name)
    }),
    ("garbled seal", |s| {
        let db = guarded_db(s);
        std::fs::write(state_dir(&db).join("seal"), b"garbage, not a seal\n").unwrap();
        with_extra(db, &[], "seal")
    }),
    ("truncated artifact", |s| {
        let db = guarded_db(s);
        let a = newest_json(&sessions_of(&db));
        truncate_half(&a);
        let name = a.file_name().unwrap().to_string_lossy().into_owned();
        with_extra(db, &[], &name)
    }),
    ("lock file is a directory", |s| {
        let db = guarded_db(s);
        let lock = sidecar(&db, "-warden.lock");
        let _ = std::fs::remove_file(&lock);
        std::fs::create_dir(&lock).unwrap();
        with_extra(db, &[], "e.db-warden.lock")
    }),
];

// ---------------------------------------------------------------------------------------------
// The table: per row, per column, the expected exit code and whether a hint is reliable
// ---------------------------------------------------------------------------------------------

/// What a cell may change in the scratch tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum May {
    /// Nothing: no entry created, none lost, none changed.
    Nothing,
    /// New entries only (a refused `warden run` records its refusal in a session artifact,
    /// as its hint says); nothing that existed is lost or changed.
    Create,
    /// The command legitimately did its work on a database that is fine apart from the
    /// damaged piece of state (a new backup, a restore, a re-seal by `accept`): it may
    /// create and change, and may move SQLite's `-wal`/`-shm` aside; it loses nothing else.
    Work,
}

/// What a cell expects.
#[derive(Clone, Copy, Debug)]
struct Exp {
    code: i32,
    /// stderr carries a hint (`hint:` or a `warden …` command to run).
    hint: bool,
    /// 2: a `warden: …` (or clap `error: …`) line on stderr names the needle; 1: stdout or
    /// stderr names it somewhere (a report, `check`'s verdict line); 0: not asserted.
    names: u8,
    may: May,
}

/// Not applicable: the command has no such flag (clap refuses it), or does not read the
/// file the row damages.
const NA: Option<Exp> = None;

/// Exit `code`, a `warden:` line names the path/value, a hint; nothing changes.
const fn h(code: i32) -> Option<Exp> {
    Some(Exp { code, hint: true, names: 2, may: May::Nothing })
}
/// Exit `code`, a `warden:`/`error:` line names the path/value; nothing changes.
const fn n(code: i32) -> Option<Exp> {
    Some(Exp { code, hint: false, names: 2, may: May::Nothing })
}
/// Exit `code`, the output names the path somewhere (stdout report); nothing changes.
const fn c(code: i32) -> Option<Exp> {
    Some(Exp { code, hint: false, names: 1, may: May::Nothing })
}
/// Exit `code`, nothing changes, naming not asserted (the damage is not this command's
/// business, e.g. `prune` beside a damaged seal).
const fn q(code: i32) -> Option<Exp> {
    Some(Exp { code, hint: false, names: 0, may: May::Nothing })
}
/// A refused `warden run` with a hint: exit `code`, may create its session artifact.
const fn a(code: i32) -> Option<Exp> {
    Some(Exp { code, hint: true, names: 2, may: May::Create })
}
/// Legitimate work on a database that is fine but for the damaged state: exit `code`.
const fn w(code: i32) -> Option<Exp> {
    Some(Exp { code, hint: false, names: 0, may: May::Work })
}

type Line = [Option<Exp>; 13];

/// `backups` of a database that has no backup directory lists "no backups in DIR" and exits
/// 0: a listing of nothing, recorded as such (`c(0)`: it names the directory).
#[rustfmt::skip]
const TABLE: &[(&str, Line)] = &[
    //                            run    backup prune  snapsh restore drill check  accept status backups verify salvage export
    ("missing file",             [h(66), n(66), n(66), h(66), h(66), n(66), c(66), h(66), c(11), c(0),  h(66), n(66), h(66)]),
    ("missing parent",           [h(66), n(66), n(66), h(66), h(73), n(66), c(66), h(66), c(11), c(0),  h(66), n(66), h(66)]),
    ("empty file",               [a(66), h(66), n(66), h(66), h(66), n(66), c(66), c(66), c(11), c(0),  h(66), n(66), h(66)]),
    ("not a database",           [a(65), h(65), n(66), h(65), h(66), n(66), c(65), c(65), c(11), c(0),  h(66), h(65), h(65)]),
    ("a directory",              [h(66), h(66), n(66), h(66), h(64), n(66), h(66), h(66), c(11), c(0),  h(66), n(66), h(66)]),
    ("symlink to a directory",   [h(66), h(66), n(66), h(66), h(64), n(66), h(66), h(66), c(11), c(0),  h(66), n(66), h(66)]),
    ("dangling symlink",         [h(66), n(66), n(66), h(66), h(66), n(66), c(66), h(66), c(11), c(0),  h(66), n(66), h(66)]),
    ("spaces+unicode, missing",  [h(66), n(66), n(66), h(66), h(66), n(66), c(66), h(66), c(11), c(0),  h(66), n(66), h(66)]),
    ("newline, missing",         [h(64), h(64), h(64), h(64), h(64), h(64), h(64), h(64), h(64), h(64), h(64), h(64), h(64)]),
    ("non-UTF-8 name",           [h(64), h(64), h(64), h(64), h(64), h(64), h(64), h(64), h(64), h(64), h(64), h(64), h(64)]),
    ("--config garbage",         [h(78), h(78), h(78), h(78), h(78), h(78), NA,    h(78), h(78), h(78), h(78), NA,    h(78)]),
    ("warden.toml unknown key",  [h(78), h(78), h(78), h(78), h(78), h(78), NA,    h(78), h(78), h(78), h(78), NA,    h(78)]),
    ("warden.toml wrong type",   [h(78), h(78), h(78), h(78), h(78), h(78), NA,    h(78), h(78), h(78), h(78), NA,    h(78)]),
    ("--keep-last huge",         [n(64), NA,    n(64), NA,    NA,    NA,    NA,    NA,    NA,    NA,    NA,    NA,    NA   ]),
    ("--keep-last -1",           [n(64), NA,    n(64), NA,    NA,    NA,    NA,    NA,    NA,    NA,    NA,    NA,    NA   ]),
    ("--gate-budget 10parsecs",  [h(78), h(78), NA,    NA,    h(78), h(78), NA,    h(78), NA,    NA,    NA,    NA,    h(78)]),
    ("--gate-budget 0",          [h(78), h(78), NA,    NA,    h(78), h(78), NA,    h(78), NA,    NA,    NA,    NA,    h(78)]),
    ("truncated manifest",       [w(0),  w(0),  q(0),  w(0),  w(0),  w(0),  q(0),  w(0),  c(10), c(0),  c(65), w(0),  w(0) ]),
    ("garbled seal",             [a(67), w(0),  q(0),  w(0),  w(0),  w(0),  c(67), w(0),  q(11), q(0),  q(0),  w(0),  w(0) ]),
    ("truncated artifact",       [w(0),  w(0),  q(65), w(0),  w(0),  w(0),  q(0),  w(0),  c(12), q(0),  q(0),  w(0),  w(0) ]),
    ("lock file is a directory", [h(73), h(73), q(0),  h(73), h(73), w(0),  h(73), h(73), q(11), q(0),  q(0),  w(0),  w(0) ]),
];

// ---------------------------------------------------------------------------------------------
// Tree snapshots
// ---------------------------------------------------------------------------------------------

/// One entry of a tree: kind, size, mtime, and the bytes of a file or the target of a link.
#[derive(Debug, PartialEq, Eq, Clone)]
struct Entry {
    kind: char,
    size: u64,
    mtime: (i64, i64),
    content: Vec<u8>,
}

fn tree(root: &Path, skip: &[&str]) -> BTreeMap<PathBuf, Entry> {
    let mut out = BTreeMap::new();
    walk(root, root, skip, &mut out);
    out
}

fn walk(root: &Path, dir: &Path, skip: &[&str], out: &mut BTreeMap<PathBuf, Entry>) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd {
        let e = e.unwrap();
        let p = e.path();
        let rel = p.strip_prefix(root).unwrap().to_owned();
        if dir == root && skip.iter().any(|s| OsStr::new(s) == e.file_name()) {
            continue;
        }
        let Ok(md) = std::fs::symlink_metadata(&p) else { continue };
        let ft = md.file_type();
        let (kind, content) = if ft.is_symlink() {
            ('l', std::fs::read_link(&p).unwrap().into_os_string().into_vec())
        } else if ft.is_dir() {
            ('d', vec![])
        } else if ft.is_file() {
            ('f', std::fs::read(&p).unwrap_or_default())
        } else {
            ('?', vec![])
        };
        // A directory's size and mtime change with its entries, which the walk compares.
        let (size, mtime) = if kind == 'd' { (0, (0, 0)) } else { (md.len(), (md.mtime(), md.mtime_nsec())) };
        out.insert(rel, Entry { kind, size, mtime, content });
        if kind == 'd' {
            walk(root, &p, skip, out);
        }
    }
}

use std::os::unix::ffi::OsStringExt as _;

/// What changed between two trees, one line per path.
fn diff(before: &BTreeMap<PathBuf, Entry>, after: &BTreeMap<PathBuf, Entry>) -> Vec<String> {
    let mut v = Vec::new();
    for (p, e) in before {
        match after.get(p) {
            None => v.push(format!("lost {}", p.display())),
            Some(a) if a.content != e.content || a.kind != e.kind => v.push(format!("changed {}", p.display())),
            Some(a) if a != e => v.push(format!("touched {} (size/mtime)", p.display())),
            _ => {}
        }
    }
    for p in after.keys().filter(|p| !before.contains_key(*p)) {
        v.push(format!("created {}", p.display()));
    }
    v
}

// ---------------------------------------------------------------------------------------------
// Running the cells
// ---------------------------------------------------------------------------------------------

struct Observed {
    code: Option<i32>,
    stderr: String,
    stdout: String,
    changes: Vec<String>,
}

fn run_cell(s: &Scratch, col: &str, t: &Target) -> Observed {
    let before = tree(s.dir.path(), &["audit"]);
    let mut c = s.warden();
    c.args(argv(col, t, s));
    let d = run_to_end(c, Duration::from_secs(60));
    let after = tree(s.dir.path(), &["audit"]);
    Observed { code: d.code(), stderr: d.stderr, stdout: d.stdout, changes: diff(&before, &after) }
}

fn has_hint(text: &str) -> bool {
    text.contains("hint:") || text.contains("`warden ") || text.contains("run warden ")
}

/// The problems of one cell against its expectation; empty when it is as documented.
fn judge(exp: Exp, o: &Observed, needle: &str) -> Vec<String> {
    let mut bad = Vec::new();
    match o.code {
        None => bad.push("killed by a signal".to_owned()),
        Some(101) => bad.push("exit 101 (panic)".to_owned()),
        Some(code) if code != exp.code => bad.push(format!("exit {code}, documented {}", exp.code)),
        Some(code) if !sqlite_warden::util::exit::TABLE.iter().any(|e| i32::from(e.code) == code) => {
            bad.push(format!("exit {code} is not in util::exit::TABLE"))
        }
        _ => {}
    }
    if o.stderr.contains("panicked") {
        bad.push("stderr says panicked".to_owned());
    }
    let needles: Vec<&str> = needle.split('|').collect();
    let names = |l: &str| needles.iter().any(|n| l.contains(n));
    let said = match exp.names {
        2 => o.stderr.lines().any(|l| (l.starts_with("warden: ") || l.starts_with("error: ")) && names(l)),
        1 => o.stderr.lines().chain(o.stdout.lines()).any(names),
        _ => true,
    };
    if !said {
        bad.push(format!("no line names {needle:?}"));
    }
    if exp.hint && !has_hint(&o.stderr) {
        bad.push("no hint on stderr".to_owned());
    }
    for ch in &o.changes {
        // warden's own lock record and SQLite's shared-memory index are rewritten by any
        // reader; they are never the user's data.
        let own = ch.ends_with("-warden.lock") || ch.ends_with("-shm") || ch.ends_with("-shm (size/mtime)");
        if own && !ch.starts_with("created") {
            continue;
        }
        let allowed = match exp.may {
            May::Nothing => false,
            May::Create => ch.starts_with("created"),
            May::Work => !ch.starts_with("lost") || ch.ends_with("-wal") || ch.ends_with("-shm"),
        };
        if !allowed {
            bad.push(ch.clone());
        }
    }
    bad
}

fn discover() -> bool {
    std::env::var_os("SWEEP_DISCOVER").is_some()
}

#[test]
fn every_bad_input_gets_its_documented_code_a_named_error_and_changes_nothing() {
    if !discover() {
        assert_eq!(ROWS.len(), TABLE.len(), "one table line per row");
    }
    let mut cells = 0;
    let mut na = 0;
    let mut failures: Vec<String> = Vec::new();
    let mut known_seen: Vec<String> = Vec::new();
    let rows: Vec<(usize, &(&str, Setup))> = ROWS.iter().enumerate().collect();
    let results = std::sync::Mutex::new(Vec::new());
    // Two workers (the machine has two cores), each a whole row at a time.
    std::thread::scope(|sc| {
        for part in rows.chunks(ROWS.len().div_ceil(2)) {
            let results = &results;
            sc.spawn(move || {
                for &(i, &(row, setup)) in part {
                    let line = match TABLE.get(i) {
                        Some(&(trow, line)) if trow == row => line,
                        _ if discover() => [NA; 13],
                        _ => panic!("table line {i} is not for row {row:?}"),
                    };
                    let mut s = Scratch::new();
                    let mut t = setup(&s);
                    for (j, col) in COLS.iter().enumerate() {
                        let Some(exp) = line[j].or(if discover() { c(-1) } else { None }) else {
                            results.lock().unwrap().push((i, j, None));
                            continue;
                        };
                        let o = run_cell(&s, col, &t);
                        let bad = if discover() { vec![] } else { judge(exp, &o, &t.needle) };
                        let changed = !o.changes.is_empty();
                        results.lock().unwrap().push((i, j, Some((o, bad))));
                        if changed {
                            // The next cell gets the row's state afresh.
                            s = Scratch::new();
                            t = setup(&s);
                        }
                    }
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort_by_key(|r| (r.0, r.1));
    for (i, j, r) in results {
        let (row, col) = (ROWS[i].0, COLS[j]);
        let Some((o, bad)) = r else {
            na += 1;
            continue;
        };
        cells += 1;
        if discover() {
            let first: Vec<&str> = o.stderr.lines().take(3).collect();
            eprintln!(
                "CELL {row:?} {col}: exit {:?} hint={} changes={:?}\n    stderr: {first:?}\n    stdout: {:?}",
                o.code,
                has_hint(&o.stderr),
                o.changes,
                o.stdout.lines().next()
            );
            continue;
        }
        let known = KNOWN_DEFECTS.iter().find(|k| k.0 == row && k.1 == col);
        match (known, bad.is_empty()) {
            (Some(k), false) => known_seen.push(format!("{row} × {col}: {} ({})", k.2, bad.join("; "))),
            (Some(k), true) => failures.push(format!("{row} × {col}: passes now, take it off KNOWN_DEFECTS ({})", k.2)),
            (None, false) => failures.push(format!(
                "{row} × {col}: {}\n      argv {:?}\n      stderr {:?}",
                bad.join("; "),
                COLS[j],
                o.stderr.lines().take(3).collect::<Vec<_>>()
            )),
            (None, true) => {}
        }
    }
    eprintln!("bad-input sweep: {} rows × {} columns: {cells} cells run, {na} N/A", ROWS.len(), COLS.len());
    eprintln!("fixed in src/ by this sweep: {}", FIXED.len());
    for f in FIXED {
        eprintln!("  fixed: {f}");
    }
    eprintln!("KNOWN DEFECTS (asserting the correct behaviour, not fixed yet): {}", known_seen.len());
    for k in &known_seen {
        eprintln!("  KNOWN DEFECT: {k}");
    }
    assert!(discover() || cells >= 100, "the sweep covers at least 100 cells, not {cells}");
    assert!(failures.is_empty(), "{} cells are not as documented:\n  {}", failures.len(), failures.join("\n  "));
}

/// The directory of the database belongs to root and `nobody` may not write it: every
/// command that must write beside the database says so with 77 (run as `nobody` via setpriv,
/// a counted skip where that cannot run warden).
#[test]
fn a_foreign_owned_directory_is_not_permitted_and_nothing_is_created() {
    let s = Scratch::new();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(s.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let audit = s.path("nobody-audit");
    std::fs::create_dir(&audit).unwrap();
    std::fs::set_permissions(&audit, std::fs::Permissions::from_mode(0o777)).unwrap();
    let db = guarded_db(&s);
    for p in [db.clone(), sidecar(&db, "-wal"), sidecar(&db, "-shm")] {
        if p.exists() {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
    if !can_run_as_nobody() {
        skip_or_fail("a_foreign_owned_directory_is_not_permitted_and_nothing_is_created", "setpriv to nobody fails");
        return;
    }
    let t = Target { x: db.clone().into_os_string(), extra: vec![], needle: "e.db".to_owned() };
    let expect: &[(&str, i32)] = &[("run", 77), ("backup", 77), ("snapshot", 77), ("accept", 77), ("export", 77)];
    let mut failures = Vec::new();
    for &(col, code) in expect {
        let before = tree(s.dir.path(), &["audit", "nobody-audit"]);
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", WARDEN])
            .args(argv(col, &t, &s))
            .current_dir(s.dir.path())
            .env("WARDEN_AUDIT_DIR", &audit)
            .env_remove("WARDEN_CONFIG");
        let d = run_to_end(c, Duration::from_secs(60));
        let o = Observed {
            code: d.code(),
            stderr: d.stderr,
            stdout: d.stdout,
            changes: diff(&before, &tree(s.dir.path(), &["audit", "nobody-audit"])),
        };
        if discover() {
            eprintln!("NOBODY {col}: exit {:?} {:?} changes={:?}", o.code, o.stderr.lines().next(), o.changes);
            continue;
        }
        let bad = judge(Exp { code, hint: false, names: 2, may: May::Nothing }, &o, &t.needle);
        let known = KNOWN_DEFECTS.iter().find(|k| k.0 == "as nobody" && k.1 == col);
        match (known, bad.is_empty()) {
            (Some(k), false) => eprintln!("  KNOWN DEFECT: as nobody × {col}: {} ({})", k.2, bad.join("; ")),
            (Some(k), true) => failures.push(format!("{col}: passes now, take it off KNOWN_DEFECTS ({})", k.2)),
            (None, false) => failures.push(format!("{col}: {} (stderr {:?})", bad.join("; "), o.stderr.lines().next())),
            (None, true) => {}
        }
    }
    assert!(failures.is_empty(), "as nobody:\n  {}", failures.join("\n  "));
}

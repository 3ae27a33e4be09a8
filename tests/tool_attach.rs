//! Tooling connections cannot write the engine's database through `ATTACH` (issue 11,
//! defect 7). A connection whose main database runs on the tooling VFS (`warden-ro`) is
//! read-only, but `ATTACH 'file:engine.db?vfs=unix' AS y` opened the same file again on
//! SQLite's own `unix` VFS, which the guard never sees, and `INSERT INTO y.t ...` committed.
//! Whoever has a SQL prompt on a tooling connection (the threat here: no C API, only SQL)
//! must not be able to do that, whichever host opened the connection:
//!
//! - a Rust program that opens the tooling VFS by name with plain rusqlite;
//! - the connection factory's [`open_tool`], even after the host raises
//!   `SQLITE_LIMIT_ATTACHED` (which it can; SQL cannot);
//! - Python (apsw) through the loadable extension, with URI filenames on, opened the way
//!   Python's `sqlite3.connect("file:…?vfs=warden-ro&mode=ro", uri=True)` opens it, and
//!   even after the host installs its own authorizer (which replaces the guard's).
//!
//! In every case the ATTACH of the engine file through another VFS is refused (or, where the
//! host replaced the guard's authorizer, the attached file is read-only), the INSERT fails,
//! and the engine file is byte-identical; attaching `:memory:` or another file through the
//! tooling VFS still works, read-only.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{Scratch, local_guard};
use rusqlite::{Connection, OpenFlags};
use sqlite_warden::guard::connect::{EngineOptions, ToolOptions, open_engine, open_tool};

/// The engine's database, written through the guard and closed; returns its bytes.
fn engine_db(s: &Scratch, g: &sqlite_warden::guard::vfs::Guard, name: &str) -> (PathBuf, Vec<u8>) {
    let db = s.path(name);
    let e = open_engine(&db, &EngineOptions { guard: Some(g.clone()), create: true, ..Default::default() }).unwrap();
    e.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);").unwrap();
    drop(e);
    let bytes = std::fs::read(&db).unwrap();
    (db, bytes)
}

fn uri(db: &Path, query: &str) -> String {
    format!("file:{}?{query}", db.display())
}

#[test]
fn a_raw_tool_connection_cannot_attach_the_engine_file_through_another_vfs() {
    let s = Scratch::new();
    let g = local_guard(&s);
    let (db, before) = engine_db(&s, &g, "engine.db");
    let other = s.path("other.db");
    common::make_db(&other, "delete");
    // Opened by name, read-write requested, URIs on: what any rusqlite user can do.
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_URI;
    let tool = Connection::open_with_flags_and_vfs(&db, flags, g.tool_vfs()).unwrap();
    for (query, why) in [
        ("vfs=unix", "SQLite's own VFS"),
        ("vfs=unix&mode=rw", "read-write on unix"),
        ("v%66s=unix", "a percent-encoded vfs="),
        (&format!("vfs={}", g.engine_vfs()), "the engine role's VFS"),
        ("vfs=unix-none", "a lock-less VFS"),
    ] {
        let target = uri(&db, query);
        let attached = tool.execute("ATTACH ?1 AS y", [&target]);
        assert!(attached.is_err(), "{why}: ATTACH '{target}' was allowed");
        let literal = tool.execute_batch(&format!("ATTACH '{target}' AS y"));
        assert!(literal.is_err(), "{why}: ATTACH '{target}' (literal) was allowed");
        assert!(tool.execute("INSERT INTO y.t VALUES (2)", []).is_err(), "{why}");
    }
    // Even a name built by an expression (the authorizer cannot see it) is refused.
    let built = format!("ATTACH 'file:' || '{}' || '?vfs=unix' AS y", db.display());
    assert!(tool.execute_batch(&built).is_err(), "{built}");
    assert_eq!(std::fs::read(&db).unwrap(), before, "the engine file is byte-identical");

    // What a reader legitimately attaches still works, read-only.
    tool.execute_batch("ATTACH ':memory:' AS m").unwrap();
    tool.execute_batch(&format!("ATTACH '{}' AS o", other.display())).unwrap();
    let n: i64 = tool.query_row("SELECT count(*) FROM o.t", [], |r| r.get(0)).unwrap();
    assert_eq!(n, 2);
    assert!(tool.execute("INSERT INTO o.t(v) VALUES ('x')", []).is_err(), "attached through warden-ro: read-only");
    tool.execute_batch(&format!("DETACH o; ATTACH '{}' AS o2", uri(&other, &format!("vfs={}", g.tool_vfs())))).unwrap();
    drop(tool);
    assert_eq!(std::fs::read(&db).unwrap(), before);
    let refused: Vec<_> = s.audit_lines().into_iter().filter(|r| r["event"] == "ro_violation").collect();
    assert!(
        refused.iter().any(|r| r["reason"].as_str().is_some_and(|m| m.contains("ATTACH") && m.contains("vfs=unix"))),
        "the refusals are audited: {refused:?}"
    );
}

#[test]
fn open_tool_refuses_attach_even_after_the_host_raises_the_attach_limit() {
    let s = Scratch::new();
    let g = local_guard(&s);
    let (db, before) = engine_db(&s, &g, "engine.db");
    let tool = open_tool(&db, &ToolOptions { guard: Some(g.clone()), ..Default::default() }).unwrap();
    // The host (not SQL) can raise the limit the factory sets to 0.
    tool.set_limit(rusqlite::limits::Limit::SQLITE_LIMIT_ATTACHED, 10).unwrap();
    let target = uri(&db, "vfs=unix");
    assert!(tool.execute_batch(&format!("ATTACH '{target}' AS y")).is_err(), "ATTACH through unix was allowed");
    assert!(tool.execute("INSERT INTO y.t VALUES (2)", []).is_err());
    drop(tool);
    assert_eq!(std::fs::read(&db).unwrap(), before, "the engine file is byte-identical");
}

// ---------------------------------------------------------------------------------------------
// Through the loadable extension (apsw)
// ---------------------------------------------------------------------------------------------

fn skip(test: &str, why: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("{test} cannot run under CI: {why}");
    }
    eprintln!("\n{bar}\n!!! SKIPPED {test}: {why}\n{bar}\n", bar = "!".repeat(90));
}

/// The built extension, without its `.so` suffix (as hosts load it), and a python3 with apsw.
fn extension(test: &str) -> Option<PathBuf> {
    let p = std::env::var_os("WARDEN_EXT_LIB")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("ext/target/release/libwarden.so"));
    if !p.exists() {
        skip(test, "libwarden.so is not built (cargo build --release --manifest-path ext/Cargo.toml)");
        return None;
    }
    let apsw = Command::new("python3").args(["-c", "import apsw"]).output().is_ok_and(|o| o.status.success());
    if !apsw {
        skip(test, "python3 has no apsw (python3 -m pip install apsw)");
        return None;
    }
    Some(p.with_extension(""))
}

fn py(dir: &Path, ext: &Path, code: &str) -> Output {
    let prelude = format!(
        "import apsw\nloader = apsw.Connection(':memory:')\nloader.enable_load_extension(True)\nloader.load_extension({:?})\n",
        ext.to_str().unwrap()
    );
    Command::new("python3")
        .arg("-c")
        .arg(prelude + code)
        .env("WARDEN_AUDIT_DIR", dir.join("audit"))
        .current_dir(dir)
        .output()
        .unwrap()
}

#[test]
fn python_tooling_through_the_extension_cannot_write_the_engine_file_through_attach() {
    let test = "python_tooling_through_the_extension_cannot_write_the_engine_file_through_attach";
    let Some(ext) = extension(test) else { return };
    let s = Scratch::new();
    let g = local_guard(&s);
    let (db, before) = engine_db(&s, &g, "engine.db");
    let other = s.path("other.db");
    common::make_db(&other, "delete");
    let code = format!(
        r#"
RW, RO, URI, CREATE = apsw.SQLITE_OPEN_READWRITE, apsw.SQLITE_OPEN_READONLY, apsw.SQLITE_OPEN_URI, apsw.SQLITE_OPEN_CREATE
db, other = {db:?}, {other:?}
def attempt(conn, label, sql):
    try:
        conn.execute(sql)
        print(label, "ALLOWED")
    except apsw.Error as e:
        print(label, "refused:", type(e).__name__)
tools = {{
    # How Python's sqlite3.connect("file:...?vfs=warden-ro&mode=ro", uri=True) opens it.
    "stdlib-style": apsw.Connection("file:" + db + "?vfs=warden-ro&mode=ro", flags=RW | CREATE | URI),
    "rw-uri": apsw.Connection(db, vfs="warden-ro", flags=RW | URI),
    "ro-uri": apsw.Connection(db, vfs="warden-ro", flags=RO | URI),
}}
for name, t in tools.items():
    t.limit(apsw.SQLITE_LIMIT_ATTACHED, 10)
    attempt(t, name + " attach-unix", "ATTACH 'file:" + db + "?vfs=unix' AS y")
    attempt(t, name + " insert", "INSERT INTO y.t VALUES (2)")
    attempt(t, name + " attach-engine-vfs", "ATTACH 'file:" + db + "?vfs=warden' AS z")
    attempt(t, name + " insert-z", "INSERT INTO z.t VALUES (3)")
    attempt(t, name + " vacuum-into-unix", "VACUUM INTO 'file:" + db + ".copy?vfs=unix'")
# The host replaces the guard's authorizer: ATTACH goes through, but never for writing.
t = tools["rw-uri"]
t.authorizer = lambda *args: apsw.SQLITE_OK
attempt(t, "own-authorizer attach-unix", "ATTACH 'file:" + db + "?vfs=unix' AS w")
attempt(t, "own-authorizer insert", "INSERT INTO w.t VALUES (4)")
# Legitimate reads still work.
r = tools["stdlib-style"]
r.execute("ATTACH ':memory:' AS m")
r.execute("ATTACH '" + other + "' AS o")
print("other rows", r.execute("SELECT count(*) FROM o.t").fetchone()[0])
print("engine rows", r.execute("SELECT count(*) FROM main.t").fetchone()[0])
"#
    );
    let o = py(s.dir.path(), &ext, &code);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "python failed: {out}\n{}", String::from_utf8_lossy(&o.stderr));
    let allowed: Vec<&str> = out.lines().filter(|l| l.contains("ALLOWED")).collect();
    assert!(allowed.iter().all(|l| l.starts_with("own-authorizer attach-unix")), "allowed: {allowed:?}\n{out}");
    for name in ["stdlib-style", "rw-uri", "ro-uri"] {
        for what in ["attach-unix", "insert", "attach-engine-vfs", "insert-z", "vacuum-into-unix"] {
            assert!(out.contains(&format!("{name} {what} refused")), "{name} {what}: {out}");
        }
    }
    assert!(out.contains("own-authorizer insert refused"), "{out}");
    assert!(out.contains("other rows 2") && out.contains("engine rows 1"), "{out}");
    assert_eq!(std::fs::read(&db).unwrap(), before, "the engine file is byte-identical");
    assert!(!s.path("engine.db.copy").exists(), "VACUUM INTO through unix wrote nothing");
}

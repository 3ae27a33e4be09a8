//! The loadable extension (`ext/`, libwarden.so) in real hosts: Python with apsw (SQLite
//! 3.54), Debian's Python and sqlite3 shell (SQLite 3.40, refused), the Rust example engine as
//! the other writer. `scripts/test` builds the extension and installs apsw; run alone without
//! them, these tests say loudly that they skipped (and fail under `CI`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const WARDEN: &str = env!("CARGO_BIN_EXE_warden");
const ENGINE: &str = env!("CARGO_BIN_EXE_warden-demo-engine");

fn skip(test: &str, why: &str) -> bool {
    if std::env::var_os("CI").is_some() {
        panic!("{test} cannot run under CI: {why}");
    }
    eprintln!("\n{bar}\n!!! SKIPPED {test}: {why}\n{bar}\n", bar = "!".repeat(90));
    true
}

/// The built extension, without its `.so` suffix (as hosts load it).
fn ext() -> Option<PathBuf> {
    let p = std::env::var_os("WARDEN_EXT_LIB")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("ext/target/release/libwarden.so"));
    p.exists().then(|| p.with_extension(""))
}

fn apsw_python() -> Option<&'static str> {
    Command::new("python3").args(["-c", "import apsw"]).output().is_ok_and(|o| o.status.success()).then_some("python3")
}

fn setup(test: &str) -> Option<(PathBuf, &'static str)> {
    let Some(e) = ext() else {
        skip(test, "libwarden.so is not built (cargo build --release --manifest-path ext/Cargo.toml)");
        return None;
    };
    let Some(py) = apsw_python() else {
        skip(test, "python3 has no apsw (python3 -m pip install apsw)");
        return None;
    };
    Some((e, py))
}

/// Runs a Python snippet with apsw and the extension loaded (`ext` and `c` are defined).
fn py(dir: &Path, ext: &Path, code: &str, env: &[(&str, &str)]) -> Output {
    let prelude = format!(
        "import apsw, json, os, sys\nc = apsw.Connection(':memory:')\nc.enable_load_extension(True)\next = {:?}\nc.load_extension(ext)\n",
        ext.to_str().unwrap()
    );
    let mut cmd = Command::new("python3");
    cmd.arg("-c").arg(prelude + code).env("WARDEN_AUDIT_DIR", dir.join("audit")).current_dir(dir);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn ok(o: &Output) -> String {
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "python failed: {out}\n{}", String::from_utf8_lossy(&o.stderr));
    out
}

fn audit_records(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("audit/audit.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn the_extension_exports_its_entry_point_and_links_no_sqlite() {
    let Some(e) = ext() else {
        skip("symbols", "libwarden.so is not built");
        return;
    };
    let so = e.with_extension("so");
    let nm = Command::new("nm").args(["-D", "--defined-only"]).arg(&so).output().unwrap();
    let syms = String::from_utf8_lossy(&nm.stdout);
    assert!(syms.lines().any(|l| l.ends_with(" sqlite3_warden_init")), "{syms}");
    let own: Vec<&str> =
        syms.lines().filter(|l| l.contains(" sqlite3_") && !l.ends_with("sqlite3_warden_init")).collect();
    assert!(own.is_empty(), "the extension defines SQLite symbols of its own: {own:?}");
    let undefined = Command::new("nm").args(["-D", "--undefined-only"]).arg(&so).output().unwrap();
    let undefined = String::from_utf8_lossy(&undefined.stdout);
    assert!(!undefined.contains("sqlite3_open"), "it must call the host through the API table: {undefined}");
    let ldd = Command::new("ldd").arg(&so).output().unwrap();
    assert!(!String::from_utf8_lossy(&ldd.stdout).contains("libsqlite3"), "linked to a system libsqlite3");
}

#[test]
fn python_gets_the_same_guard_as_rust() {
    let Some((e, _)) = setup("python_gets_the_same_guard_as_rust") else { return };
    let d = tempfile::tempdir().unwrap();
    let db = d.path().join("e.db");
    let out = ok(&py(
        d.path(),
        &e,
        &format!(
            r#"
c.load_extension(ext)   # twice: neither fails nor wraps again
db = {db:?}
w = apsw.Connection(db, vfs="warden", flags=apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE)
w.execute("CREATE TABLE t(x)")
w.execute("PRAGMA journal_mode=WAL")
w.execute("INSERT INTO t VALUES (1)")
st = json.loads(w.execute("PRAGMA warden_status").fetchone()[0])
print("role", st["role"], st["vfs"])
conns = [apsw.Connection(db, vfs="warden-ro", flags=apsw.SQLITE_OPEN_READONLY) for _ in range(50)]
print("readers", sum(r.execute("SELECT count(*) FROM t").fetchone()[0] for r in conns))
try:
    conns[0].execute("INSERT INTO t VALUES (2)")
    print("tool wrote")
except apsw.Error as e:
    print("tool write refused", type(e).__name__)
rw = apsw.Connection(db, vfs="warden-ro", flags=apsw.SQLITE_OPEN_READWRITE)
try:
    rw.execute("DELETE FROM t")
    print("tool wrote")
except apsw.Error as e:
    print("tool write refused", type(e).__name__)
print("version", json.loads(c.execute("SELECT warden_version()").fetchone()[0])["sqlite"])
"#
        ),
        &[],
    ));
    assert!(out.contains("role engine warden"), "{out}");
    assert!(out.contains("readers 50"), "{out}");
    assert_eq!(out.matches("tool write refused").count(), 2, "{out}");
    assert!(!out.contains("tool wrote"), "{out}");

    // The audit lines have the same shape as the Rust factory's.
    let rust_db = d.path().join("r.db");
    let o = Command::new(ENGINE)
        .arg("--db")
        .arg(&rust_db)
        .args(["--create", "--trades", "1"])
        .env("WARDEN_AUDIT_DIR", d.path().join("audit"))
        .output()
        .unwrap();
    assert!(o.status.success());
    let recs = audit_records(d.path());
    let shape = |db: &Path, role: &str| -> std::collections::BTreeSet<String> {
        let r = recs
            .iter()
            .find(|r| r["event"] == "open" && r["role"] == role && r["db"] == db.to_str().unwrap())
            .unwrap_or_else(|| panic!("no {role} open of {}", db.display()));
        r.as_object().unwrap().keys().cloned().collect()
    };
    assert_eq!(shape(&db, "engine"), shape(&rust_db, "engine"), "audit records differ in shape");
    assert!(recs.iter().any(|r| r["event"] == "open_downgraded" && r["db"] == db.to_str().unwrap()));
}

#[test]
fn wal_is_refused_on_network_storage() {
    let Some((e, _)) = setup("wal_is_refused_on_network_storage") else { return };
    let d = tempfile::tempdir().unwrap();
    let share = d.path().join("share");
    std::fs::create_dir_all(&share).unwrap();
    // A simulated SMB mount: the real mount table plus a cifs line for `share`.
    let md = std::fs::metadata(&share).unwrap();
    use std::os::unix::fs::MetadataExt;
    let (maj, min) = (nix::sys::stat::major(md.dev()), nix::sys::stat::minor(md.dev()));
    let mut table = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    table.push_str(&format!(
        "9999 1 {maj}:{min} / {} rw,relatime shared:1 - cifs //nas/trading rw,vers=3.1.1,cache=strict\n",
        share.display()
    ));
    let mi = d.path().join("mountinfo");
    std::fs::write(&mi, table).unwrap();
    let mut targets = vec![(share.join("e.db"), "cifs")];
    match std::env::var_os("WARDEN_SSHFS_MNT") {
        Some(m) => {
            let dir = PathBuf::from(m).join(format!("ext-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            targets.push((dir.join("e.db"), "fuse.sshfs"));
        }
        None => {
            skip(
                "wal_is_refused_on_network_storage (real sshfs part)",
                "WARDEN_SSHFS_MNT is not set (scripts/test mounts it)",
            );
        }
    }
    for (db, fstype) in targets {
        let env = [("WARDEN_MOUNTINFO", mi.to_str().unwrap())];
        let refused = ok(&py(
            d.path(),
            &e,
            &format!(
                r#"
try:
    apsw.Connection({db:?}, vfs="warden", flags=apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE)
    print("engine allowed")
except apsw.Error as e:
    print("engine refused", type(e).__name__)
print(json.loads(c.execute("SELECT warden_status(?)", ({db:?},)).fetchone()[0])["fs"]["fstype"])
"#
            ),
            &env,
        ));
        assert!(refused.contains("engine refused") && refused.contains(fstype), "{fstype}: {refused}");
        let rollback = ok(&py(
            d.path(),
            &e,
            &format!(
                r#"
w = apsw.Connection({db:?}, vfs="warden", flags=apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE)
w.execute("CREATE TABLE IF NOT EXISTS t(x)")
try:
    print("mode", w.execute("PRAGMA journal_mode=WAL").fetchone()[0])
except apsw.Error as e:
    print("wal refused:", e)
print("now", w.execute("PRAGMA journal_mode").fetchone()[0])
"#
            ),
            &[("WARDEN_MOUNTINFO", mi.to_str().unwrap()), ("WARDEN_NETWORK_POLICY", "rollback-only")],
        ));
        assert!(rollback.contains("wal refused:") && rollback.contains("WAL cannot work"), "{fstype}: {rollback}");
        assert!(rollback.contains("now delete"), "{fstype}: {rollback}");
        assert!(!Path::new(&format!("{}-wal", db.display())).exists());
    }
}

#[test]
fn a_second_writer_is_refused_across_languages() {
    let Some((e, _)) = setup("a_second_writer_is_refused_across_languages") else { return };
    let d = tempfile::tempdir().unwrap();
    let db = d.path().join("e.db");
    let engine_py = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/python_engine.py");
    let mut python = Command::new("python3")
        .arg(&engine_py)
        .arg("--db")
        .arg(&db)
        .args(["--create", "--trades", "3", "--hold-ms", "20000"])
        .env("WARDEN_EXTENSION", &e)
        .env("WARDEN_AUDIT_DIR", d.path().join("audit"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(python.stdout.as_mut().unwrap()), &mut line).unwrap();
    assert!(line.contains("\"ready\""), "{line}");
    let rust =
        Command::new(ENGINE).arg("--db").arg(&db).env("WARDEN_AUDIT_DIR", d.path().join("audit")).output().unwrap();
    let said = String::from_utf8_lossy(&rust.stdout);
    assert_eq!(rust.status.code(), Some(75), "{said}");
    assert!(said.contains(&format!("\"pid\":{}", python.id())), "the holder is the Python engine: {said}");
    let other = Command::new("python3")
        .arg(&engine_py)
        .arg("--db")
        .arg(&db)
        .env("WARDEN_EXTENSION", &e)
        .env("WARDEN_AUDIT_DIR", d.path().join("audit"))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&other.stdout);
    assert_eq!(other.status.code(), Some(75), "{said}");
    assert!(said.contains("\"busy\"") && said.contains(&python.id().to_string()), "{said}");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(python.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    assert!(python.wait().unwrap().success());
}

#[test]
#[cfg_attr(
    not(feature = "testing"),
    ignore = "needs the test seams: cargo test --features testing (scripts/test does)"
)]
fn panics_and_old_hosts_leave_the_host_alive() {
    let Some((e, _)) = setup("panics_and_old_hosts_leave_the_host_alive") else { return };
    let d = tempfile::tempdir().unwrap();
    let out = ok(&py(
        d.path(),
        &e,
        r#"
try:
    c.execute("SELECT warden_selftest_panic()").fetchall()
    print("no error")
except apsw.Error as e:
    print("panic became", type(e).__name__)
print("still alive", c.execute("SELECT 40 + 2").fetchone()[0])
"#,
        &[("WARDEN_EXT_SELFTEST", "1")],
    ));
    assert!(out.contains("panic became") && out.contains("still alive 42"), "{out}");

    // Debian's Python and sqlite3 shell link SQLite 3.40.1: refused, clearly, host alive.
    if Path::new("/usr/bin/python3").exists() {
        let o = Command::new("/usr/bin/python3")
            .arg("-c")
            .arg(format!(
                "import sqlite3\nc = sqlite3.connect(':memory:')\nc.enable_load_extension(True)\ntry:\n    c.load_extension({:?})\n    print('loaded', sqlite3.sqlite_version)\nexcept Exception as e:\n    print('refused:', e)\nprint('alive')",
                e.to_str().unwrap()
            ))
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&o.stdout);
        if out.contains("loaded 3.") && !out.contains("loaded 3.4") {
            eprintln!("this host's SQLite is new enough; nothing to refuse: {out}");
        } else {
            assert!(out.contains("refused:") && out.contains("3.51.3") && out.contains("alive"), "{out}");
        }
    }
    if let Ok(o) = Command::new("sqlite3").arg(":memory:").arg(format!(".load {}", e.display())).output() {
        let err = String::from_utf8_lossy(&o.stderr);
        let v = Command::new("sqlite3").arg("--version").output().unwrap();
        if String::from_utf8_lossy(&v.stdout).starts_with("3.4") {
            assert!(err.contains("needs 3.51.3"), "{err}");
        }
    }
}

#[test]
fn warden_run_supervises_a_python_engine() {
    let Some((e, _)) = setup("warden_run_supervises_a_python_engine") else { return };
    let d = tempfile::tempdir().unwrap();
    let db = d.path().join("p.db");
    let engine_py = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/python_engine.py");
    for create in [true, false] {
        let mut c = Command::new(WARDEN);
        c.args(["run", "-q", "--json", "--db"]).arg(&db);
        if create {
            c.arg("--create");
        }
        let o = c
            .arg("--")
            .arg("python3")
            .arg(&engine_py)
            .args(["--trades", "25"])
            .env("WARDEN_EXTENSION", &e)
            .env("WARDEN_AUDIT_DIR", d.path().join("audit"))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&o.stdout);
        assert_eq!(o.status.code(), Some(0), "{stdout}\n{}", String::from_utf8_lossy(&o.stderr));
        let artifact: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
        assert_eq!(artifact["status"], "completed");
        assert_eq!(artifact["post_backup"]["ok"], true);
    }
    let n: i64 =
        rusqlite::Connection::open(&db).unwrap().query_row("SELECT count(*) FROM trades", [], |r| r.get(0)).unwrap();
    assert_eq!(n, 50);
    // The Python engine took the session's lock through the extension (WARDEN_LOCK_FD).
    let recs = audit_records(d.path());
    let handed = recs
        .iter()
        .filter(|r| {
            r["event"] == "writer_lock_acquired" && r["reason"].as_str().is_some_and(|s| s.contains("handed over"))
        })
        .count();
    assert_eq!(handed, 2, "{recs:?}");
}

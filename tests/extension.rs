//! The loadable extension (`ext/`, libwarden.so) in real hosts: Python with apsw (SQLite
//! 3.54), Debian's Python and sqlite3 shell (SQLite 3.40: the guard in rollback-journal-only mode), the Rust example engine as
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
fn a_panic_leaves_the_host_alive() {
    let Some((e, _)) = setup("a_panic_leaves_the_host_alive") else { return };
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
}

/// Debian's own python3 (stdlib `sqlite3`, SQLite 3.40.1: before the WAL-reset fix), as a
/// Python engine author on Debian 12 or Ubuntu 24.04 has it: the extension loads, runs the
/// guard with a rollback journal only and says so, refuses WAL in every way it can be asked
/// for, writes through the rollback journal, gives tooling read-only connections, and still
/// refuses the engine on network storage.
#[test]
fn debian_python_runs_the_guard_in_rollback_only_mode() {
    let test = "debian_python_runs_the_guard_in_rollback_only_mode";
    let Some(e) = ext() else {
        skip(test, "libwarden.so is not built (cargo build --release --manifest-path ext/Cargo.toml)");
        return;
    };
    let debian = Path::new("/usr/bin/python3");
    let version = Command::new(debian).args(["-c", "import sqlite3; print(sqlite3.sqlite_version)"]).output();
    let Some(version) =
        version.ok().filter(|o| o.status.success()).map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    else {
        skip(test, "no /usr/bin/python3 with its sqlite3 module (apt install python3)");
        return;
    };
    let fixed = |v: &str| {
        let n: Vec<u32> = v.split('.').filter_map(|p| p.parse().ok()).collect();
        let (mi, pa) = (n.get(1).copied().unwrap_or(0), n.get(2).copied().unwrap_or(0));
        mi > 51 || (mi == 51 && pa >= 3) || (mi == 50 && pa >= 7) || (mi == 44 && pa >= 6)
    };
    if fixed(&version) {
        skip(
            test,
            &format!("/usr/bin/python3 links SQLite {version}, which has the fix: no rollback-only mode to test"),
        );
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let db = dir.join("engine.db");
    let walled = dir.join("walled.db");
    {
        // A database already in WAL mode (made by warden's own, fixed SQLite).
        let c = rusqlite::Connection::open(&walled).unwrap();
        c.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES (1);").unwrap();
    }
    let run = |code: &str, env: &[(&str, &str)]| {
        let prelude = format!(
            "import sqlite3, json, os\nc = sqlite3.connect(':memory:')\nc.enable_load_extension(True)\nc.load_extension({:?})\n",
            e.to_str().unwrap()
        );
        let mut cmd = Command::new(debian);
        cmd.arg("-c").arg(prelude + code).env("WARDEN_AUDIT_DIR", dir.join("audit")).current_dir(dir);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let o = cmd.output().unwrap();
        assert!(
            o.status.success(),
            "python failed: {}\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
    };
    let (out, err) = run(
        &format!(
            r#"
v = json.loads(c.execute("SELECT warden_version()").fetchone()[0])
print("mode", v["mode"], "sqlite", v["sqlite"])
s = json.loads(c.execute("SELECT warden_status(?)", ({db:?},)).fetchone()[0])
print("status", s["mode"], s["wal_allowed"], s["wal_reset_bug"])
w = sqlite3.connect("file:{db}?vfs=warden", uri=True)
w.execute("CREATE TABLE t(x)")
w.execute("INSERT INTO t VALUES (1), (2)")
w.commit()
try:
    print("wal asked:", w.execute("PRAGMA journal_mode=WAL").fetchone()[0])
except sqlite3.Error as e:
    print("wal refused:", e)
print("journal", w.execute("PRAGMA journal_mode").fetchone()[0])
w.execute("INSERT INTO t VALUES (3)")
w.commit()
print("rows", w.execute("SELECT count(*) FROM t").fetchone()[0])
try:
    sqlite3.connect("file:{walled}?vfs=warden", uri=True).execute("SELECT * FROM t").fetchall()
    print("walled opened")
except sqlite3.Error as e:
    print("walled refused:", e)
r = sqlite3.connect("file:{db}?vfs=warden-ro", uri=True)
print("tool reads", r.execute("SELECT count(*) FROM t").fetchone()[0])
try:
    r.execute("INSERT INTO t VALUES (4)")
    r.commit()
    print("tool wrote")
except sqlite3.Error as e:
    print("tool refused:", e)
try:
    r.execute("ATTACH 'file:{other}?vfs=unix' AS o")
    r.execute("CREATE TABLE o.x(y)")
    print("tool attached a file")
except sqlite3.Error as e:
    print("attach refused:", e)
"#,
            db = db.display(),
            walled = walled.display(),
            other = dir.join("other.db").display()
        ),
        &[],
    );
    assert!(out.contains(&format!("mode rollback_only sqlite {version}")), "{out}\n{err}");
    assert!(out.contains("status rollback_only False True"), "{out}");
    // WAL is never entered: asked for, it stays a rollback journal (or is refused).
    assert!(out.contains("journal delete"), "{out}");
    assert!(!out.contains("wal asked: wal"), "{out}");
    assert!(!Path::new(&format!("{}-wal", db.display())).exists());
    assert!(out.contains("rows 3"), "{out}");
    assert!(out.contains("walled refused:") && !out.contains("walled opened"), "{out}");
    assert!(out.contains("tool reads 3") && out.contains("tool refused:"), "{out}");
    // Without SQLITE_DBCONFIG_ENABLE_ATTACH_WRITE (3.49), the authorizer alone still keeps
    // tooling from attaching and writing another file.
    assert!(out.contains("attach refused:") && !out.contains("tool attached"), "{out}");
    assert!(!dir.join("other.db").exists());
    // The audit log says why, naming the host's release and the bug.
    let audit = std::fs::read_to_string(dir.join("audit/audit.jsonl")).unwrap();
    assert!(audit.contains("WAL-reset") && audit.contains(&version), "{audit}");
    let refused = audit.lines().find(|l| l.contains("walled.db") && l.contains("refus")).unwrap_or_default();
    assert!(refused.contains("WAL-reset") && refused.contains("journal_mode=DELETE"), "{refused}");
    // Network storage: refused for the engine, as on any host.
    let mut targets = Vec::new();
    if let Some(m) = std::env::var_os("WARDEN_SSHFS_MNT") {
        let sub = PathBuf::from(m).join(format!("debian-py-{}", std::process::id()));
        std::fs::create_dir_all(&sub).unwrap();
        targets.push(sub.join("e.db"));
    } else {
        skip(&format!("{test} (sshfs part)"), "WARDEN_SSHFS_MNT is not set (scripts/test mounts it)");
    }
    for net in targets {
        let (out, _) = run(
            &format!(
                r#"
try:
    sqlite3.connect("file:{net}?vfs=warden", uri=True).execute("CREATE TABLE t(x)")
    print("engine allowed")
except sqlite3.Error as e:
    print("engine refused:", e)
"#,
                net = net.display()
            ),
            &[],
        );
        assert!(out.contains("engine refused:") && !out.contains("engine allowed"), "{out}");
        assert!(!net.exists() || std::fs::metadata(&net).unwrap().len() == 0, "nothing was written on the share");
    }
    // Debian's sqlite3 shell (the same SQLite) loads it too.
    if let Ok(o) = Command::new("sqlite3")
        .arg(":memory:")
        .arg(format!(".load {}", e.display()))
        .arg("SELECT warden_version();")
        .output()
    {
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(out.contains("rollback_only"), "{out} {}", String::from_utf8_lossy(&o.stderr));
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

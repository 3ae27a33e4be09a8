//! The single-writer lock across real processes: the example engine binary races itself,
//! gets `kill -9`ed, and forks children, and the kernel lock must hold up every time.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::Scratch;
use sqlite_warden::guard::lock::{LockState, inspect};

const ENGINE: &str = env!("CARGO_BIN_EXE_warden-demo-engine");

fn engine(s: &Scratch, db: &Path) -> Command {
    let mut c = Command::new(ENGINE);
    c.arg("--db").arg(db).env("WARDEN_AUDIT_DIR", s.audit_dir()).stdout(Stdio::piped()).stderr(Stdio::piped());
    c
}

/// Reads the engine's first JSON line (ready / busy / refused).
fn first_event(child: &mut Child) -> serde_json::Value {
    let out = child.stdout.as_mut().unwrap();
    let mut line = String::new();
    BufReader::new(out).read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON: {line:?}: {e}"))
}

fn wait_state(db: &Path, want: LockState) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while inspect(db).unwrap().state != want {
        assert!(Instant::now() < deadline, "lock never became {want:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn second_writer_is_refused_fast_with_holder_details() {
    let s = Scratch::new();
    let db = s.path("e.db");
    let mut holder = engine(&s, &db).args(["--create", "--hold-ms", "20000"]).spawn().unwrap();
    assert_eq!(first_event(&mut holder)["event"], "ready");
    let t = Instant::now();
    let out = engine(&s, &db).output().unwrap();
    let took = t.elapsed();
    assert_eq!(out.status.code(), Some(75), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["event"], "busy");
    assert_eq!(v["holder"]["pid"], holder.id());
    assert!(v["holder"]["exe"].as_str().unwrap().contains("warden-demo-engine"));
    assert!(v["holder"]["boot_id"].is_string());
    assert!(took < Duration::from_secs(2), "refusal must not wait: {took:?}");
    // Status readers are never blocked and see the holder.
    let st = inspect(&db).unwrap();
    assert_eq!(st.state, LockState::Held);
    assert_eq!(st.record.unwrap().holder.process.pid, holder.id());
    // A tooling reader in another process reads while the writer holds the lock.
    let c = rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let _: i64 = c.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0)).unwrap();
    holder.kill().unwrap();
    holder.wait().unwrap();
    let events = s.events();
    assert!(events.contains(&"writer_lock_busy".to_owned()), "{events:?}");
}

#[test]
fn kill_9_frees_the_lock_at_once_and_is_recorded() {
    let s = Scratch::new();
    let db = s.path("k.db");
    let mut holder = engine(&s, &db).args(["--create", "--trades", "50", "--hold-ms", "60000"]).spawn().unwrap();
    assert_eq!(first_event(&mut holder)["event"], "ready");
    assert_eq!(inspect(&db).unwrap().state, LockState::Held);
    // SIGKILL: no destructor, no clean release.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(holder.id() as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    holder.wait().unwrap();
    assert_eq!(inspect(&db).unwrap().state, LockState::FreeAfterCrash);
    let t = Instant::now();
    let out = engine(&s, &db).args(["--trades", "1"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(t.elapsed() < Duration::from_secs(5));
    assert!(s.events().contains(&"unclean_previous_close".to_owned()));
    assert_eq!(inspect(&db).unwrap().state, LockState::Free);
}

#[test]
fn fifty_processes_race_and_exactly_one_wins() {
    let s = Scratch::new();
    let db = s.path("race.db");
    // Create the database first so every racer only competes for the lock.
    assert!(engine(&s, &db).arg("--create").output().unwrap().status.success());
    let go = s.path("go");
    let mut kids: Vec<Child> = (0..50)
        .map(|_| engine(&s, &db).arg("--wait-for").arg(&go).args(["--hold-ms", "3000"]).spawn().unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(&go, b"").unwrap();
    let mut ready = 0;
    let mut busy = 0;
    for k in &mut kids {
        match first_event(k)["event"].as_str().unwrap() {
            "ready" => ready += 1,
            "busy" => busy += 1,
            other => panic!("unexpected {other}"),
        }
    }
    for k in &mut kids {
        k.wait().unwrap();
    }
    assert_eq!((ready, busy), (1, 49));
}

#[test]
fn an_execed_child_does_not_inherit_the_lock() {
    let s = Scratch::new();
    let db = s.path("c.db");
    // The engine spawns a long-lived child (fork + exec), then closes and exits.
    let out = engine(&s, &db).args(["--create", "--spawn-child", "sleep", "30"]).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("\"ready\""), "{text}");
    let child_pid: i32 = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["event"] == "child")
        .and_then(|v| v["pid"].as_i64())
        .expect("child spawned") as i32;
    assert!(nix::sys::signal::kill(nix::unistd::Pid::from_raw(child_pid), None).is_ok(), "child still alive");
    wait_state(&db, LockState::Free);
    let out = engine(&s, &db).output().unwrap();
    assert!(
        out.status.success(),
        "a new writer must win while the child lives: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child_pid), nix::sys::signal::Signal::SIGKILL);
}

#[test]
fn audit_lines_from_many_processes_never_interleave() {
    let s = Scratch::new();
    let dbs: Vec<_> = (0..16).map(|i| s.path(&format!("p{i}.db"))).collect();
    let kids: Vec<Child> =
        dbs.iter().map(|db| engine(&s, db).args(["--create", "--trades", "20"]).spawn().unwrap()).collect();
    for k in kids {
        assert!(k.wait_with_output().unwrap().status.success());
    }
    let text = std::fs::read_to_string(s.audit_dir().join("audit.jsonl")).unwrap();
    let mut per_pid = std::collections::HashMap::<u64, usize>::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("torn line {line:?}: {e}"));
        *per_pid.entry(v["pid"].as_u64().unwrap()).or_default() += 1;
    }
    assert_eq!(per_pid.len(), 16);
    // Each engine: open, writer_lock_acquired, close, writer_lock_released.
    assert!(per_pid.values().all(|&n| n == 4), "{per_pid:?}");
}

/// An engine that reconnects while another of its threads starts processes was refused as
/// "already has a writer: pid <itself>": each child holds a copy of the lock's open file
/// description from `fork` until its `exec`, so the lock just released still looked held.
/// Found by `tests/engine_faults.rs` running its kill -9 children beside the I/O-fault
/// workload.
#[test]
fn reconnecting_while_another_thread_spawns_is_not_refused_as_busy() {
    let s = Scratch::new();
    let guard = common::local_guard(&s);
    let db = s.path("spawny.db");
    let opts = sqlite_warden::EngineOptions { guard: Some(guard), create: true, ..Default::default() };
    drop(sqlite_warden::open_engine(&db, &opts).unwrap());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let spawner = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut n = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = Command::new("true").stdout(Stdio::null()).status();
                n += 1;
            }
            n
        })
    };
    let mut refused = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(4);
    let mut opens = 0;
    while Instant::now() < deadline {
        match sqlite_warden::open_engine(&db, &opts) {
            Ok(c) => drop(c),
            Err(e) => refused.push(e.to_string()),
        }
        opens += 1;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let spawned = spawner.join().unwrap();
    assert!(spawned > 20 && opens > 20, "the race was not exercised ({spawned} spawns, {opens} opens)");
    assert!(
        refused.is_empty(),
        "{} of {opens} reopens refused while {spawned} children were spawned, e.g.: {}",
        refused.len(),
        refused[0]
    );
}

//! Shared helpers of the end-to-end tests that run `warden` and the demo engine as real
//! processes: commands with the test's own audit directory and no inherited seams,
//! processes that are always killed and reaped (and the engines they started), output read
//! as it comes, process states, tmpfs mounts, and reading what the runs leave on disk (file
//! names, modes, hashes, JSON, the demo engine's trades).
//!
//! Declared from `mod.rs` (`pub mod proc;`). `corpus.rs` does not use it (some tests include
//! `corpus.rs` on its own, by path).

use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::Scratch;

/// The `warden` binary.
pub const WARDEN: &str = env!("CARGO_BIN_EXE_warden");
/// The demo engine.
pub const ENGINE: &str = env!("CARGO_BIN_EXE_warden-demo-engine");
/// What every temporary name of warden contains.
pub const TMP_MARK: &str = ".warden-tmp.";
/// The database and the sidecars SQLite may create beside it.
pub const SET: [&str; 4] = ["", "-wal", "-shm", "-journal"];

// ---------------------------------------------------------------------------------------------
// Commands and paths
// ---------------------------------------------------------------------------------------------

impl Scratch {
    /// `warden` with this test's own audit directory, cwd, and no inherited seams.
    pub fn warden(&self) -> Command {
        let mut c = Command::new(WARDEN);
        c.current_dir(self.dir.path())
            .env("WARDEN_AUDIT_DIR", self.audit_dir())
            .env_remove("WARDEN_PAUSE_AT")
            .env_remove("WARDEN_CONFIG")
            .env_remove("WARDEN_LOCK_FD")
            .env_remove("RUST_LOG");
        c
    }

    /// The demo engine run directly (not under `warden run`), auditing into this test's
    /// directory.
    pub fn engine(&self) -> Command {
        let mut c = Command::new(ENGINE);
        c.current_dir(self.dir.path()).env("WARDEN_AUDIT_DIR", self.audit_dir()).env_remove("WARDEN_DB");
        c
    }
}

/// `p` with `suffix` appended (`-wal`, `.warden`, ...).
pub fn sidecar(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// `<db>.warden`.
pub fn state_dir(db: &Path) -> PathBuf {
    sidecar(db, ".warden")
}

/// The default backup directory of `db`.
pub fn backups_of(db: &Path) -> PathBuf {
    state_dir(db).join("backups")
}

/// The default session artifact directory of `db`.
pub fn sessions_of(db: &Path) -> PathBuf {
    state_dir(db).join("sessions")
}

/// The default snapshot directory of `db`.
pub fn snapshots_of(db: &Path) -> PathBuf {
    state_dir(db).join("snapshots")
}

// ---------------------------------------------------------------------------------------------
// Processes: always killed and reaped, output read incrementally
// ---------------------------------------------------------------------------------------------

/// A spawned process. On drop it is SIGKILLed and reaped if still running, and so is every
/// engine pid registered with [`Proc::also_kill`] (engines run in their own process group and
/// survive a `kill -9` of warden).
pub struct Proc {
    child: Child,
    status: Option<ExitStatus>,
    also_kill: Vec<u32>,
    out_rx: Receiver<String>,
    err_rx: Receiver<String>,
    out: Arc<Mutex<String>>,
    err: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
}

/// A process that has exited, with all it printed.
pub struct Done {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Done {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Status and output, for assertion messages.
    pub fn diag(&self) -> String {
        format!("status {:?}\n--- stdout\n{}\n--- stderr\n{}", self.status, self.stdout, self.stderr)
    }

    /// The `--json` contract: exactly one JSON document, one line, on stdout.
    pub fn json(&self) -> Value {
        let lines: Vec<&str> = self.stdout.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "one JSON document on stdout: {}", self.diag());
        serde_json::from_str(lines[0]).unwrap_or_else(|e| panic!("not JSON: {e}: {}", self.diag()))
    }

    /// The last stdout line, parsed (a run's JSON after the engine's own output).
    pub fn last_json(&self) -> Value {
        let last = self.stdout.lines().last().unwrap_or_else(|| panic!("no stdout: {}", self.diag()));
        serde_json::from_str(last).unwrap_or_else(|e| panic!("last stdout line is not JSON: {e}: {}", self.diag()))
    }
}

/// The last line of `stdout`, parsed (the `--json` contract of `warden run`).
pub fn last_json_line(stdout: &str) -> Value {
    let last = stdout.lines().last().unwrap_or_else(|| panic!("no stdout at all"));
    serde_json::from_str(last).unwrap_or_else(|e| panic!("last stdout line is not JSON: {e}: {last:?}"))
}

fn reader(stream: impl Read + Send + 'static, buf: Arc<Mutex<String>>, tx: mpsc::Sender<String>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut r = BufReader::new(stream);
        let mut line = Vec::new();
        loop {
            line.clear();
            match r.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let text = String::from_utf8_lossy(&line).into_owned();
                    buf.lock().unwrap().push_str(&text);
                    let _ = tx.send(text.trim_end_matches('\n').to_owned());
                }
            }
        }
    })
}

impl Proc {
    /// Spawns `cmd` with stdin closed and stdout and stderr read as they come.
    pub fn spawn(mut cmd: Command) -> Proc {
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot spawn {cmd:?}: {e}"));
        let (out_tx, out_rx) = mpsc::channel();
        let (err_tx, err_rx) = mpsc::channel();
        let out = Arc::new(Mutex::new(String::new()));
        let err = Arc::new(Mutex::new(String::new()));
        let readers = vec![
            reader(child.stdout.take().unwrap(), out.clone(), out_tx),
            reader(child.stderr.take().unwrap(), err.clone(), err_tx),
        ];
        Proc { child, status: None, also_kill: Vec::new(), out_rx, err_rx, out, err, readers }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status, once a wait has seen it.
    pub fn exited(&self) -> Option<ExitStatus> {
        self.status
    }

    /// Kills the demo engine `pid` too when this is dropped.
    pub fn also_kill(&mut self, pid: u32) {
        self.also_kill.push(pid);
    }

    pub fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.pid() as i32), sig).unwrap_or_else(|e| panic!("{sig} to {}: {e}", self.pid()));
    }

    /// Everything printed on stdout so far.
    pub fn stdout(&self) -> String {
        self.out.lock().unwrap().clone()
    }

    /// Everything printed on stderr so far.
    pub fn stderr(&self) -> String {
        self.err.lock().unwrap().clone()
    }

    /// Waits for a line containing `what` on stderr (or stdout) and returns it.
    pub fn wait_line(&self, on_stderr: bool, what: &str, timeout: Duration) -> String {
        let rx = if on_stderr { &self.err_rx } else { &self.out_rx };
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.contains(what) => return line,
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => panic!(
                    "no line containing {what:?} within {timeout:?}\n--- stdout\n{}\n--- stderr\n{}",
                    self.stdout(),
                    self.stderr()
                ),
            }
        }
    }

    /// Waits for the demo engine's `ready` line on stdout, and kills that engine on drop.
    /// Returns its pid.
    pub fn wait_engine_ready(&mut self, timeout: Duration) -> u32 {
        let line = self.wait_line(false, "\"ready\"", timeout);
        let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("ready line {line:?}: {e}"));
        let pid = v["pid"].as_u64().unwrap() as u32;
        self.also_kill(pid);
        pid
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        if let Some(s) = self.status {
            return s;
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                self.status = Some(s);
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "pid {} did not exit within {timeout:?}\n--- stdout\n{}\n--- stderr\n{}",
                self.pid(),
                self.stdout(),
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for the exit, then (briefly) for the output pipes to close.
    pub fn finish(&mut self, timeout: Duration) -> Done {
        let status = self.wait_exit(timeout);
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.readers.iter().any(|h| !h.is_finished()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        Done { status, stdout: self.stdout(), stderr: self.stderr() }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        for pid in self.also_kill.drain(..) {
            kill_engine_if_alive(pid);
        }
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `cmd` to its end (at most `timeout`).
pub fn run_to_end(cmd: Command, timeout: Duration) -> Done {
    Proc::spawn(cmd).finish(timeout)
}

/// The state letter of `/proc/PID/stat` (`R`, `S`, `T`, `Z`, ...), `None` once it is gone.
pub fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..].trim_start().chars().next()
}

/// Running (not gone, not a zombie).
pub fn alive(pid: u32) -> bool {
    !matches!(proc_state(pid), None | Some('Z') | Some('X'))
}

/// Waits until `pid` is in state `want` (`T`: stopped at a pause point).
pub fn wait_state(pid: u32, want: char, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while proc_state(pid) != Some(want) {
        assert!(Instant::now() < deadline, "pid {pid} never reached state {want} (now {:?})", proc_state(pid));
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// SIGKILLs `pid` if it is a live demo engine, and waits until it is gone (or a zombie).
pub fn kill_engine_if_alive(pid: u32) {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    if !alive(pid) || !String::from_utf8_lossy(&cmdline).contains("warden-demo-engine") {
        return;
    }
    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Reports a test that cannot run here: a failure under CI, a loud skip otherwise.
pub fn skip_or_fail(test: &str, why: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("{test} cannot run under CI: {why}");
    }
    eprintln!("\n{bar}\n!!! SKIPPED {test}: {why}\n!!! (under CI=1 this is a failure)\n{bar}\n", bar = "!".repeat(100));
}

/// A tmpfs mounted for one test (needs root); unmounted on drop (lazily if busy).
pub struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    pub fn mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("mount: {e}"))?;
        if !out.status.success() {
            return Err(format!("mount -t tmpfs failed: {}", String::from_utf8_lossy(&out.stderr)));
        }
        let t = Tmpfs { dir: dir.to_owned() };
        if Command::new("mountpoint").arg("-q").arg(dir).status().is_ok_and(|s| !s.success()) {
            return Err(format!("{} is not a mount point after mount", dir.display()));
        }
        Ok(t)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        if !Command::new("umount").arg(&self.dir).status().is_ok_and(|s| s.success()) {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// What the runs leave on disk
// ---------------------------------------------------------------------------------------------

/// The names in `dir`, sorted; none when it does not exist.
pub fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// Permission bits.
pub fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// SHA-256 of a file, lowercase hex.
pub fn sha256(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect()
}

pub fn read_json(path: &Path) -> Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// Every manifest in a backup directory (published `*.json`), parsed, oldest first; panics on
/// one that does not parse.
pub fn manifests(dir: &Path) -> Vec<Value> {
    let mut v: Vec<Value> = names(dir)
        .into_iter()
        .filter(|n| n.ends_with(".json") && !n.starts_with('.'))
        .map(|n| read_json(&dir.join(n)))
        .collect();
    v.sort_by(|a, b| a["created"].as_str().cmp(&b["created"].as_str()));
    v
}

/// The bytes of `db` and of each of its `suffixes` (`None`: no such file).
pub fn set_bytes(db: &Path, suffixes: &[&'static str]) -> Vec<(&'static str, Option<Vec<u8>>)> {
    suffixes.iter().map(|&s| (s, std::fs::read(sidecar(db, s)).ok())).collect()
}

/// A row of the demo engine's `trades`.
pub type Trade = (i64, String, String, i64, f64);

/// The trades with ids up to `n`, in order.
pub fn trades_upto(c: &rusqlite::Connection, n: i64) -> Vec<Trade> {
    let mut st = c.prepare("SELECT id, ts, symbol, qty, price FROM trades WHERE id <= ?1 ORDER BY id").unwrap();
    st.query_map([n], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// `count(*)` of the trades, read with plain read-only rusqlite; 0 when it cannot be read.
pub fn trade_count(db: &Path) -> i64 {
    rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .and_then(|c| c.query_row("SELECT count(*) FROM trades", [], |r| r.get(0)))
        .unwrap_or(0)
}

/// True when this machine lets the tests run `warden` as `nobody` through `setpriv` (the
/// permission cases need a real unprivileged user).
pub fn can_run_as_nobody() -> bool {
    Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", WARDEN, "version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|st| st.success())
}

//! Honest WAL histories never yield a fatal scan finding (issue 12, item 4: the WAL-gap
//! findings must not fail honest crash states). Everything here is written by the real SQLite
//! this crate links:
//!
//! - a property test over generated histories in one process: commits small and large,
//!   transactions that spill pages and rewrite them, deletes, `VACUUM`, checkpoints of every
//!   mode (`PASSIVE`, `FULL`, `RESTART`, `TRUNCATE`), `wal_autocheckpoint`, a reader holding a
//!   snapshot, closing and reopening the writer, a second connection that commits or checkpoints
//!   (one that never ran recovery: it restarts a WAL with new random salts); the set is scanned
//!   after every step, and after
//!   every complete checkpoint also with the header a restart writes and no frame after it (a
//!   writer killed right there);
//! - a writer process killed with `kill -9` at random moments of such a history;
//! - the same writer killed right before its k-th `pwrite`, for every k, with `strace` fault
//!   injection: among them right after a restarted WAL header and in the middle of the checksum
//!   rewrite of a commit that spilled; skipped, loudly, where `strace` cannot trace.
//!
//! - scans of the files of that writer while it runs (what `warden check` does beside a live
//!   engine) never report dropped commits.
//!
//! After every kill the set is scanned (no fatal finding) and opened by SQLite on a private
//! copy (`integrity_check` is `ok`): the states are real crash states SQLite recovers from.
//!
//! On main before this change `writer_killed_before_each_write_leaves_no_fatal_finding` fails:
//! a writer killed after spilling a page it then changed again leaves a chain broken before
//! intact frames, which `wal_frames_after_break` refused although nothing there ever committed.

mod common;
#[path = "common/wal_sets.rs"]
mod wal_sets;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use proptest::prelude::*;
use rusqlite::Connection;
use sqlite_warden::format::scan::{ScanReport, scan_bytes, scan_set};
use wal_sets::*;

/// One step of a history.
#[derive(Debug, Clone)]
enum Step {
    /// One transaction inserting this many rows.
    Commit(usize),
    /// One transaction that spills pages (a tiny page cache) and changes them again.
    SpillAndRewrite(u8),
    Delete(u8),
    Vacuum,
    /// `PRAGMA wal_checkpoint(<mode>)`.
    Checkpoint(&'static str),
    /// `PRAGMA wal_autocheckpoint=<n>`.
    AutoCheckpoint(u32),
    /// Opens a reader holding a snapshot, or closes it.
    ToggleReader,
    /// Closes the writer (the last connection checkpoints and deletes the WAL) and reopens it.
    Reopen,
    /// A second connection, opened for this step only, commits a row (`None`) or runs a
    /// checkpoint: it never ran recovery, so its checkpoint sequence starts at 0 and a WAL
    /// another connection restarted gets new random salts from it.
    Other(Option<&'static str>),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (1usize..60).prop_map(Step::Commit),
        2 => any::<u8>().prop_map(Step::SpillAndRewrite),
        1 => any::<u8>().prop_map(Step::Delete),
        1 => Just(Step::Vacuum),
        2 => prop_oneof![Just("PASSIVE"), Just("FULL"), Just("RESTART"), Just("TRUNCATE")].prop_map(Step::Checkpoint),
        1 => prop_oneof![Just(0u32), Just(3), Just(40)].prop_map(Step::AutoCheckpoint),
        1 => Just(Step::ToggleReader),
        1 => Just(Step::Reopen),
        1 => prop_oneof![Just(None), Just(Some("PASSIVE")), Just(Some("RESTART")), Just(Some("TRUNCATE"))]
            .prop_map(Step::Other),
    ]
}

/// Every connection here skips fsync: syncing decides what survives a power cut, not what bytes
/// SQLite writes or in what order (no padding frames on the `unix` VFS, which overwrites
/// powersafe), and a `kill -9` loses nothing the kernel was given. The suite stays fast on a
/// busy disk.
/// And nothing waits: a `RESTART` or `TRUNCATE` checkpoint that a reader blocks returns busy at
/// once instead of after rusqlite's default five-second busy timeout.
const NO_SYNC: &str = "PRAGMA synchronous=OFF; PRAGMA busy_timeout=0;";

/// The writer of a history and its optional reader.
struct History {
    db: PathBuf,
    writer: Option<Connection>,
    reader: Option<Connection>,
    tag: i64,
}

impl History {
    fn new(db: &Path) -> Self {
        let writer = open_writer(db);
        writer.execute_batch(NO_SYNC).unwrap();
        History { db: db.to_owned(), writer: Some(writer), reader: None, tag: 0 }
    }

    fn writer(&self) -> &Connection {
        self.writer.as_ref().unwrap()
    }

    /// Runs one step; returns true when it was a checkpoint that copied every frame.
    fn apply(&mut self, step: &Step) -> bool {
        self.tag += 1;
        let w = self.writer();
        match step {
            Step::Commit(rows) => commit_rows(w, *rows, self.tag),
            Step::SpillAndRewrite(k) => w
                .execute_batch(&format!(
                    "PRAGMA cache_size=2; BEGIN;
                     UPDATE ledger SET note = note || 's' WHERE id % 4 = {m};
                     UPDATE ledger SET amount = amount + 1 WHERE id % 4 = {m};
                     INSERT INTO ledger(account, amount, note) VALUES ({k}, {k}, 'spill');
                     COMMIT; PRAGMA cache_size=-2000;",
                    m = k % 4
                ))
                .unwrap(),
            Step::Delete(k) => {
                w.execute(&format!("DELETE FROM ledger WHERE id % 7 = {}", k % 7), []).map(drop).unwrap()
            }
            Step::Vacuum => {
                // VACUUM needs no open read transaction on its own connection only.
                w.execute_batch("VACUUM").unwrap();
            }
            Step::Checkpoint(mode) => {
                let (busy, log, done) = checkpoint(w, mode);
                return busy == 0 && log > 0 && log == done;
            }
            Step::AutoCheckpoint(n) => w.execute_batch(&format!("PRAGMA wal_autocheckpoint={n}")).unwrap(),
            Step::ToggleReader => {
                if self.reader.take().is_none() {
                    let r = Connection::open(&self.db).unwrap();
                    r.execute_batch(NO_SYNC).unwrap();
                    r.execute_batch("BEGIN").unwrap();
                    let _: i64 = r.query_row("SELECT count(*) FROM ledger", [], |row| row.get(0)).unwrap();
                    self.reader = Some(r);
                }
            }
            Step::Other(checkpoint_mode) => {
                let other = Connection::open(&self.db).unwrap();
                other.execute_batch(NO_SYNC).unwrap();
                match checkpoint_mode {
                    None => commit_rows(&other, 2, -self.tag),
                    Some(mode) => {
                        let (busy, log, done) = checkpoint(&other, mode);
                        return busy == 0 && log > 0 && log == done;
                    }
                }
            }
            Step::Reopen => {
                drop(self.writer.take());
                let w = open_writer(&self.db);
                w.execute_batch(NO_SYNC).unwrap();
                self.writer = Some(w);
            }
        }
        false
    }
}

fn assert_no_fatal(report: &ScanReport, what: &str) {
    assert!(report.is_ok(), "{what}: an honest state has a fatal finding: {:#?}", report.fatal().collect::<Vec<_>>());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn honest_histories_never_yield_a_fatal_finding(steps in proptest::collection::vec(step(), 10..50), salt in any::<u32>()) {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("engine.db");
        let mut history = History::new(&db);
        for (i, step) in steps.iter().enumerate() {
            let complete = history.apply(step);
            let (db_bytes, wal) = read_set(&db);
            let what = format!("after step {i} ({step:?}) of {steps:?}");
            let report = scan_bytes(&db_bytes, (!wal.is_empty()).then_some(&wal[..]));
            assert_no_fatal(&report, &what);
            if complete && wal.len() > 32 {
                // The next writer restarts the WAL: a kill right after its new header leaves
                // every old frame behind a header that matches none of them.
                let mut restarted = wal.clone();
                restart_header(&mut restarted, salt);
                let report = scan_bytes(&db_bytes, Some(&restarted));
                assert_no_fatal(&report, &format!("{what}, restarted header"));
                prop_assert_eq!(report.wal.unwrap().valid_frames, 0);
            }
        }
    }
}

/// The scripted history the killed writer runs, in this process: no fatal finding after any
/// step, and it reaches the states the new findings judge (so the property above and the kills
/// below are not vacuous): a reused WAL whose previous generation's commits were compared page
/// by page with the database file, and a restarted header over checkpointed frames.
#[test]
fn scripted_history_reaches_reused_and_restarted_wals() {
    let dir = tempfile::tempdir().unwrap();
    let db = prepared(dir.path());
    let mut history = History::new(&db);
    let (mut reused, mut restarted, mut compared) = (0, 0, 0u64);
    for (i, step) in script(40).iter().enumerate() {
        let complete = history.apply(step);
        let (db_bytes, wal) = read_set(&db);
        let report = scan_bytes(&db_bytes, (!wal.is_empty()).then_some(&wal[..]));
        assert_no_fatal(&report, &format!("after step {i} ({step:?})"));
        if let Some(w) = &report.wal {
            reused += usize::from(w.valid_frames > 0 && w.stale_frames > 0);
            compared += w.stale_pages_checked;
        }
        if complete && wal.len() > 32 {
            let mut header = wal.clone();
            restart_header(&mut header, 0xfeed_0000 + i as u32);
            let report = scan_bytes(&db_bytes, Some(&header));
            assert_no_fatal(&report, &format!("after step {i} ({step:?}), restarted header"));
            let w = report.wal.unwrap();
            assert!(w.stale_pages_checked > 0, "step {i}: the old frames were compared: {w:?}");
            restarted += 1;
        }
    }
    println!("{reused} reused WALs, {compared} old pages compared, {restarted} restarted headers");
    assert!(
        reused >= 5 && compared > 20 && restarted >= 2,
        "reused {reused}, compared {compared}, restarted {restarted}"
    );
}

// ---------------------------------------------------------------------------------------------
// A writer process, killed
// ---------------------------------------------------------------------------------------------

const CHILD_DB: &str = "WAL_HONEST_CHILD_DB";
const CHILD_STEPS: &str = "WAL_HONEST_CHILD_STEPS";

/// The scripted history the killed writer runs: every kind of step, in an order that makes
/// restarts (complete checkpoints with no reader), partial checkpoints (a reader holding a
/// snapshot), spilled transactions and reopens happen.
fn script(rounds: u64) -> Vec<Step> {
    let mut steps = vec![Step::Commit(40), Step::Commit(5)];
    for r in 0..rounds {
        steps.push(Step::Commit(1 + (r as usize * 7) % 30));
        if r % 3 == 0 {
            steps.push(Step::SpillAndRewrite(r as u8));
        }
        match r % 8 {
            1 => steps.push(Step::Checkpoint("PASSIVE")),
            2 => steps.push(Step::ToggleReader),
            3 => steps.push(Step::Checkpoint("FULL")),
            4 => steps.push(Step::ToggleReader),
            5 => steps.push(Step::Checkpoint("RESTART")),
            6 => steps.push(Step::AutoCheckpoint([3, 0, 40][(r as usize / 8) % 3])),
            7 => steps.push(Step::Checkpoint("TRUNCATE")),
            _ => steps.push(Step::Delete(r as u8)),
        }
        if r % 11 == 10 {
            steps.push(Step::Reopen);
        }
        if r % 6 == 5 {
            steps.push(Step::Other(if r % 12 == 5 { Some("RESTART") } else { None }));
        }
        if r % 13 == 12 {
            steps.push(Step::Vacuum);
        }
    }
    steps
}

/// The writer process: runs the history of `WAL_HONEST_CHILD_STEPS` rounds (0: forever) on
/// `WAL_HONEST_CHILD_DB`, then prints `done`. Run only by the tests below, as a child.
#[test]
#[ignore = "the child process of the kill -9 tests; runs only when they start it"]
fn child_writer() {
    let db = PathBuf::from(std::env::var_os(CHILD_DB).expect("started by a kill -9 test"));
    let rounds: u64 = std::env::var(CHILD_STEPS).unwrap().parse().unwrap();
    let mut history = History::new(&db);
    if rounds == 0 {
        println!("ready");
        loop {
            for step in script(64) {
                history.apply(&step);
            }
        }
    }
    for step in script(rounds) {
        history.apply(&step);
    }
    // Closing writes too (the last connection checkpoints and deletes the WAL).
    drop(history);
    println!("done");
}

/// The database the killed writer starts from: an existing WAL-mode ledger, cleanly closed (a
/// kill before its first write would otherwise leave an empty file, a new database and the
/// gate's decision, not a WAL state).
fn prepared(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let db = dir.join("engine.db");
    let conn = open_writer(&db);
    commit_rows(&conn, 40, 0);
    drop(conn);
    assert!(!sidecar(&db, "-wal").exists(), "closed cleanly");
    db
}

fn child(db: &Path, rounds: u64) -> Command {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args(["--exact", "child_writer", "--ignored", "--nocapture", "--test-threads=1", "-q"])
        .env(CHILD_DB, db)
        .env(CHILD_STEPS, rounds.to_string())
        .stdin(Stdio::null());
    c
}

/// What a killed writer left: no fatal finding, and SQLite recovers an intact database.
fn judge_crash_state(db: &Path, what: &str) -> ScanReport {
    let report = scan_set(db).unwrap_or_else(|e| panic!("{what}: scan failed: {e}"));
    assert_no_fatal(&report, what);
    let (db_bytes, wal) = read_set(db);
    let (integrity, _) = recovered(&db_bytes, &wal);
    assert_eq!(integrity, ["ok"], "{what}: SQLite does not recover an intact database");
    report
}

#[test]
fn writer_killed_at_random_moments_leaves_no_fatal_finding() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = 0x9e37_79b9_u64;
    let mut with_wal = 0;
    for round in 0..16 {
        let db = prepared(&dir.path().join(format!("r{round}")));
        let mut writer = child(&db, 0).stdout(Stdio::piped()).spawn().unwrap();
        let out = std::io::BufReader::new(writer.stdout.take().unwrap());
        let ready = std::io::BufRead::lines(out).map_while(Result::ok).any(|l| l == "ready");
        assert!(ready, "the writer did not start");
        rng = rng.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        std::thread::sleep(Duration::from_millis(20 + (rng >> 33) % 400));
        writer.kill().unwrap(); // SIGKILL
        writer.wait().unwrap();
        let report = judge_crash_state(&db, &format!("kill -9 in round {round}"));
        with_wal += usize::from(report.wal.is_some_and(|w| w.size > 32));
    }
    assert!(with_wal >= 8, "most kills must leave a WAL behind ({with_wal} of 16)");
}

#[test]
fn scans_of_a_live_writer_never_report_dropped_commits() {
    // `warden check` scans the files of a running engine. The writer appends over old frames and
    // checkpoints while the scan reads: what the scan saw of the WAL may be gone from it by the
    // time it reads the database file. That must never turn into `wal_header_reset` or
    // `wal_stale_commits` (the scan reads the WAL again and calls a moved one inconclusive).
    let dir = tempfile::tempdir().unwrap();
    let db = prepared(dir.path());
    let mut writer = child(&db, 0).stdout(Stdio::piped()).spawn().unwrap();
    let out = std::io::BufReader::new(writer.stdout.take().unwrap());
    let ready = std::io::BufRead::lines(out).map_while(Result::ok).any(|l| l == "ready");
    assert!(ready, "the writer did not start");
    let deadline = std::time::Instant::now() + Duration::from_secs(4);
    let (mut scans, mut judged, mut moved) = (0, 0u64, 0);
    let mut wrong = Vec::new();
    while std::time::Instant::now() < deadline {
        // A scan may fail outright when a checkpoint truncates the WAL under it: that is an
        // I/O error for the gate's retry, not a finding.
        let Ok(report) = scan_set(&db) else { continue };
        scans += 1;
        judged += report.wal.as_ref().map_or(0, |w| w.stale_pages_checked);
        moved += usize::from(report.findings.iter().any(|f| f.code == "wal_changed_during_scan"));
        wrong.extend(report.fatal().filter(|f| f.code == "wal_header_reset" || f.code == "wal_stale_commits").cloned());
    }
    writer.kill().unwrap();
    writer.wait().unwrap();
    println!("{scans} scans of a live writer, {judged} old pages compared, {moved} inconclusive");
    assert!(wrong.is_empty(), "a live writer made the scan report dropped commits: {wrong:#?}");
    assert!(scans > 20 && judged > 0, "the scans saw reused WALs ({scans} scans, {judged} pages compared)");
}

/// One `pwrite64` of the writer, as `strace` printed it: its size and offset.
struct Write {
    size: u64,
    offset: u64,
}

fn strace_works() -> Result<(), String> {
    match Command::new("strace").args(["-qq", "-e", "trace=none", "true"]).output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!("strace cannot trace here: {}", String::from_utf8_lossy(&out.stderr).trim())),
        Err(e) => Err(format!("no strace: {e}")),
    }
}

/// Runs the scripted writer under `strace`, killed before its `kill_at`-th `pwrite64`
/// (never when `None`), logging its writes; returns them and whether it finished.
fn traced(db: &Path, rounds: u64, kill_at: Option<usize>) -> (Vec<Write>, bool) {
    let log = db.with_extension("strace");
    let mut c = Command::new("strace");
    c.args(["-f", "-qq", "-e", "trace=pwrite64", "-e", "signal=none", "-o"]).arg(&log);
    if let Some(k) = kill_at {
        c.args(["-e", &format!("inject=pwrite64:signal=KILL:when={k}")]);
    }
    let inner = child(db, rounds);
    c.arg(inner.get_program()).args(inner.get_args());
    for (key, value) in inner.get_envs() {
        c.env(key, value.unwrap());
    }
    let out = c.stdin(Stdio::null()).stderr(Stdio::piped()).output().unwrap();
    let finished = String::from_utf8_lossy(&out.stdout).lines().any(|l| l == "done");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let writes = text
        .lines()
        .filter(|l| l.contains("pwrite64(") && !l.contains("= ?"))
        .filter_map(|l| {
            let args = &l[..l.rfind(')')?];
            let mut tail = args.rsplit(", ");
            let offset = tail.next()?.trim().parse().ok()?;
            let size = tail.next()?.trim().parse().ok()?;
            Some(Write { size, offset })
        })
        .collect();
    let _ = std::fs::remove_file(&log);
    (writes, finished)
}

#[test]
fn writer_killed_before_each_write_leaves_no_fatal_finding() {
    if let Err(why) = strace_works() {
        common::proc::skip_or_fail("writer_killed_before_each_write_leaves_no_fatal_finding", &why);
        return;
    }
    const ROUNDS: u64 = 12;
    let dir = tempfile::tempdir().unwrap();
    let dry = prepared(&dir.path().join("dry"));
    let (writes, finished) = traced(&dry, ROUNDS, None);
    assert!(finished, "the scripted writer runs to its end under strace");
    assert!(writes.len() > 200, "{} writes", writes.len());

    // Every write is a kill point (reliability-notes §1: loop the fault over every I/O step). The
    // script must reach the ones that matter: WAL headers (32 bytes at offset 0; the write after
    // one is frame 1, so a kill there leaves a restarted header over old frames), and frame
    // headers rewritten by a commit that spilled (24-byte writes in a row: `walRewriteChecksums()`
    // after the commit frame, so a kill there leaves a chain broken before a commit frame).
    let headers = writes.iter().filter(|w| w.size == 32 && w.offset == 0).count();
    let rewrites = writes.windows(2).filter(|w| w[0].size == 24 && w[1].size == 24).count();
    assert!(headers > 2, "the script restarts the WAL");
    assert!(rewrites > 0, "the script commits transactions that rewrite spilled pages");
    let points: Vec<usize> = (1..=writes.len()).collect();

    let (mut with_wal, mut reset, mut broken) = (0, 0, 0);
    for &k in &points {
        let db = prepared(&dir.path().join(format!("k{k}")));
        let (_, finished) = traced(&db, ROUNDS, Some(k));
        assert!(!finished, "the writer was killed before write {k}");
        let report = judge_crash_state(&db, &format!("killed before write {k} of {}", writes.len()));
        broken += usize::from(report.findings.iter().any(|f| f.code == "wal_frames_after_break"));
        if let Some(w) = report.wal {
            with_wal += usize::from(w.size > 32);
            // A restarted header and no new frame: every old frame compared with the database.
            reset += usize::from(w.valid_frames == 0 && w.stale_frames > 0 && w.stale_pages_checked > 0);
        }
        std::fs::remove_dir_all(db.parent().unwrap()).unwrap();
    }
    println!(
        "{} writes ({headers} WAL headers, {rewrites} checksum rewrites): {with_wal} kills left a WAL, {reset} a \
         restarted header over old frames, {broken} a chain broken before frames that follow",
        writes.len()
    );
    assert!(with_wal * 2 > points.len(), "most kills leave a WAL ({with_wal} of {})", points.len());
    assert!(reset > 0 && broken > 0, "the kills reach both states the new severities are about");
}

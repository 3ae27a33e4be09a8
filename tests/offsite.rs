//! Offsite copies against a real S3-compatible server on loopback (SeaweedFS, started by
//! `scripts/test` and named by `WARDEN_TEST_S3_ENDPOINT`; the server-stop test starts its
//! own with `scripts/s3-server`). Real sessions, real `kill -9`, a real fault proxy.
//! Proves issue 15: push after a session, resume after kill -9 and after the server went
//! away, 5xx and dropped connections survived, tampering found by verify, a byte-identical
//! restore on a fresh directory, and no plaintext in the bucket under encryption.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::Scratch;
use common::proc::*;
use nix::sys::signal::Signal;

const KEY: &str = "warden-test";
const SECRET: &str = "warden-test-secret";

fn endpoint(test: &str) -> Option<String> {
    let e = std::env::var("WARDEN_TEST_S3_ENDPOINT").ok();
    if e.is_none() {
        skip_or_fail(test, "no S3 server (WARDEN_TEST_S3_ENDPOINT unset); scripts/test starts one");
    }
    e
}

/// A fresh bucket for one test.
fn bucket(endpoint: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let b = format!("t{}-{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst));
    let out = curl(endpoint, "PUT", &format!("/{b}"), None);
    assert!(out.0 == 200, "creating bucket {b}: {out:?}");
    b
}

/// A signed request with curl: (status, body).
fn curl(endpoint: &str, method: &str, path: &str, body: Option<&Path>) -> (u16, Vec<u8>) {
    let mut c = Command::new("curl");
    c.args(["-s", "-o", "-", "-w", "\n%{http_code}", "-X", method, "--aws-sigv4", "aws:amz:us-east-1:s3", "--user"])
        .arg(format!("{KEY}:{SECRET}"));
    if let Some(b) = body {
        c.arg("-T").arg(b);
    }
    let out = c.arg(format!("{endpoint}{path}")).output().expect("curl");
    let mut all = out.stdout;
    let nl = all.iter().rposition(|&b| b == b'\n').unwrap_or(0);
    let code = String::from_utf8_lossy(&all[nl + 1..]).trim().parse().unwrap_or(0);
    all.truncate(nl);
    (code, all)
}

/// Every object key under `prefix` of `bucket`.
fn keys(endpoint: &str, bucket: &str, prefix: &str) -> Vec<String> {
    let prefix = prefix.replace('/', "%2F");
    let (code, body) = curl(endpoint, "GET", &format!("/{bucket}?list-type=2&prefix={prefix}"), None);
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    let text = String::from_utf8_lossy(&body).into_owned();
    text.split("<Key>").skip(1).filter_map(|s| s.split("</Key>").next()).map(str::to_owned).collect()
}

fn config(s: &Scratch, db: &str, url: &str, endpoint: &str, extra: &str) {
    std::fs::write(
        s.path("warden.toml"),
        format!("database = \"{db}\"\n[backups]\ncompression = 0\n[offsite]\nurl = \"{url}\"\nendpoint = \"{endpoint}\"\nretries = 2\ntimeout = \"5s\"\n{extra}"),
    )
    .unwrap();
}

fn warden(s: &Scratch) -> Command {
    let mut c = s.warden();
    c.env("AWS_ACCESS_KEY_ID", KEY).env("AWS_SECRET_ACCESS_KEY", SECRET).env_remove("AWS_PROFILE");
    c
}

fn run(s: &Scratch, args: &[&str]) -> Done {
    let mut c = warden(s);
    c.args(args);
    run_to_end(c, Duration::from_secs(180))
}

fn session(s: &Scratch, create: bool, trades: &str) -> Done {
    let mut c = warden(s);
    c.args(["run", "-q", "--json"]);
    if create {
        c.arg("--create");
    }
    c.arg("--").arg(ENGINE);
    if create {
        c.arg("--create");
    }
    c.args(["--trades", trades]);
    run_to_end(c, Duration::from_secs(180))
}

fn sha256_file(p: &Path) -> String {
    use sha2::Digest;
    let bytes = std::fs::read(p).unwrap();
    sqlite_warden::util::fmt::hex(&sha2::Sha256::digest(&bytes))
}

/// The local good restore points' manifests, newest first.
fn local_points(db: &Path) -> Vec<serde_json::Value> {
    let mut v: Vec<serde_json::Value> =
        manifests(&backups_of(db)).into_iter().filter(|m| m["verified"] == true).collect();
    v.reverse();
    v
}

#[test]
fn push_after_session_then_restore_on_a_fresh_directory_is_byte_identical() {
    let Some(ep) = endpoint("push_after_session") else { return };
    let s = Scratch::new();
    let b = bucket(&ep);
    config(&s, "e.db", &format!("s3://{b}/engine"), &ep, "");
    let db = s.path("e.db");
    let r = session(&s, true, "20");
    assert_eq!(r.code(), Some(0), "{}", r.diag());
    let art = r.last_json();
    assert_eq!(art["offsite"]["ok"], true, "the session pushed: {art:#}");
    assert!(!art["offsite"]["points_pushed"].as_array().unwrap().is_empty(), "{art:#}");
    let r = session(&s, false, "30");
    assert_eq!(r.code(), Some(0), "{}", r.diag());
    let art = r.last_json();
    assert_eq!(art["offsite"]["ok"], true, "{art:#}");
    // The pre-session point of the second session has the content of the first's post:
    // its pages are on the remote already, so it costs a manifest.
    let local = local_points(&db);
    assert!(local.len() >= 3, "{local:?}");

    // Credentials never reach an artifact, a record, the audit log or --json.
    let everything = [
        r.stdout.clone(),
        std::fs::read_to_string(state_dir(&db).join("offsite/latest.json")).unwrap(),
        std::fs::read_to_string(s.audit_dir().join("audit.jsonl")).unwrap(),
    ]
    .join("\n");
    assert!(!everything.contains(SECRET), "the secret key leaked");
    assert!(s.audit_lines().iter().any(|a| a["event"] == "offsite_push" && a["decision"] == "allow"));

    let list = run(&s, &["offsite", "list", "--json"]);
    assert_eq!(list.code(), Some(0), "{}", list.diag());
    let points = list.json()["points"].as_array().unwrap().clone();
    assert_eq!(points.len(), local.len(), "every local good point is remote: {points:?}");
    assert!(points.iter().all(|p| p["complete"] == true));
    let v = run(&s, &["offsite", "verify", "--json"]);
    assert_eq!(v.code(), Some(0), "{}", v.diag());
    assert_eq!(v.json()["packs_checked"], v.json()["packs_used"]);

    // A fresh host: only the config and the credentials; restore the newest point.
    let fresh = Scratch::new();
    std::fs::copy(s.path("warden.toml"), fresh.path("warden.toml")).unwrap();
    let to = fresh.path("new/host/e.db");
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    let r = run(&fresh, &["offsite", "restore", "--json", "--to", to.to_str().unwrap()]);
    assert_eq!(r.code(), Some(0), "{}", r.diag());
    let rep = r.json();
    assert_eq!(rep["point"], local[0]["id"], "the newest good point: {rep:#}");
    assert_eq!(rep["integrity"]["ok"], true);
    assert_eq!(sha256_file(&to), local[0]["sha256"].as_str().unwrap(), "byte-identical to the point");
    // And to what the local store restores.
    let here = s.path("local-restore.db");
    let lr = run(&s, &["restore", "--to", here.to_str().unwrap(), "--from", local[0]["id"].as_str().unwrap()]);
    assert_eq!(lr.code(), Some(0), "{}", lr.diag());
    assert_eq!(std::fs::read(&here).unwrap(), std::fs::read(&to).unwrap());
    assert_eq!(trade_count(&to), 50);
    // Never over an existing file.
    let again = run(&fresh, &["offsite", "restore", "--to", to.to_str().unwrap()]);
    assert_eq!(again.code(), Some(73), "{}", again.diag());
    assert!(again.stderr.contains("never overwrites"), "{}", again.diag());
    // Never onto a network filesystem (the sshfs loopback mount scripts/test makes).
    match std::env::var_os("WARDEN_SSHFS_MNT") {
        Some(mnt) => {
            let there = PathBuf::from(mnt).join(format!("offsite-{}.db", std::process::id()));
            let r = run(&fresh, &["offsite", "restore", "--to", there.to_str().unwrap()]);
            assert_eq!(r.code(), Some(69), "{}", r.diag());
            assert!(r.stderr.contains("refusing to restore into") && r.stderr.contains("sshfs"), "{}", r.diag());
            assert!(!there.exists());
        }
        None => skip_or_fail("offsite restore onto sshfs", "no sshfs mount (WARDEN_SSHFS_MNT unset)"),
    }
    // An older point by id prefix.
    let oldest = local.last().unwrap()["id"].as_str().unwrap();
    let to2 = fresh.path("old.db");
    let r = run(&fresh, &["offsite", "restore", "--to", to2.to_str().unwrap(), "--point", oldest]);
    assert_eq!(r.code(), Some(0), "{}", r.diag());
    assert_eq!(sha256_file(&to2), local.last().unwrap()["sha256"].as_str().unwrap());
}

#[test]
fn a_push_killed_mid_way_leaves_no_restore_point_and_the_next_one_finishes_it() {
    let Some(ep) = endpoint("kill_mid_push") else { return };
    let s = Scratch::new();
    let b = bucket(&ep);
    config(&s, "e.db", &format!("s3://{b}/p"), &ep, "push_after_session = false\n");
    let db = s.path("e.db");
    assert_eq!(session(&s, true, "40").code(), Some(0));
    // Paused after every pack is up, before the first manifest: kill -9 there.
    let mut c = warden(&s);
    c.args(["offsite", "push"]).env("WARDEN_PAUSE_AT", "offsite-points");
    let p = Proc::spawn(c);
    p.wait_line(true, "paused at offsite-points", Duration::from_secs(60));
    p.signal(Signal::SIGKILL);
    let objects = keys(&ep, &b, "p/");
    assert!(objects.iter().any(|k| k.starts_with("p/packs/")), "the packs went up: {objects:?}");
    assert!(!objects.iter().any(|k| k.starts_with("p/points/")), "no restore point is listed: {objects:?}");
    let l = run(&s, &["offsite", "list", "--json"]);
    assert_eq!(l.json()["points"].as_array().unwrap().len(), 0, "{}", l.diag());
    let v = run(&s, &["offsite", "verify", "--json"]);
    assert_eq!(v.code(), Some(0), "nothing listed is incomplete: {}", v.diag());
    assert!(v.json()["packs_unused"].as_u64().unwrap() >= 1, "{}", v.diag());

    // The next push finishes the job without sending a pack again.
    let r = run(&s, &["offsite", "push", "--json"]);
    assert_eq!(r.code(), Some(0), "{}", r.diag());
    let rec = r.json();
    assert_eq!(rec["packs_pushed"], 0, "the packs of the killed push are reused: {rec:#}");
    assert_eq!(rec["points_pushed"].as_array().unwrap().len(), local_points(&db).len(), "{rec:#}");
    let v = run(&s, &["offsite", "verify", "--json"]);
    assert_eq!(v.code(), Some(0), "{}", v.diag());
    assert_eq!(v.json()["packs_unused"], 0);
}

/// A private server: started and stopped by this test with `scripts/s3-server`.
struct Server {
    dir: PathBuf,
    port: u16,
}

impl Server {
    fn script() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/s3-server")
    }
    fn start(dir: &Path, port: u16) -> Server {
        let out = Command::new(Self::script()).arg("start").arg(dir).arg(port.to_string()).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        Server { dir: dir.to_owned(), port }
    }
    fn stop(&self) {
        let _ = Command::new(Self::script()).arg("stop").arg(&self.dir).output();
    }
    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

#[test]
fn the_server_going_away_mid_push_fails_the_push_not_the_session_and_the_next_push_resumes() {
    if endpoint("server_stopped_mid_push").is_none() {
        return;
    }
    let s = Scratch::new();
    let port = 20000 + (std::process::id() % 20000) as u16;
    let srv = Server::start(&s.path("srv"), port);
    let ep = srv.endpoint();
    let b = bucket(&ep);
    config(&s, "e.db", &format!("s3://{b}/x"), &ep, "max_lag = \"1s\"\n");
    let db = s.path("e.db");
    assert_eq!(session(&s, true, "10").code(), Some(0));
    // More local points than the remote has.
    assert_eq!(run(&s, &["backup"]).code(), Some(0));
    let mut c = warden(&s);
    c.args(["offsite", "push", "--json"]).env("WARDEN_PAUSE_AT", "offsite-points");
    let mut p = Proc::spawn(c);
    p.wait_line(true, "paused at offsite-points", Duration::from_secs(60));
    srv.stop();
    p.signal(Signal::SIGCONT);
    let done = p.finish(Duration::from_secs(120));
    assert_eq!(done.code(), Some(69), "{}", done.diag());
    assert!(
        done.stderr.contains("unreachable") && done.stderr.contains("continues where this stopped"),
        "{}",
        done.diag()
    );
    let rec = latest(&db);
    assert_eq!(rec["ok"], false);
    assert!(rec["error"].as_str().unwrap().contains("unreachable"), "{rec:#}");
    assert!(s.audit_lines().iter().any(|a| a["event"] == "offsite_push" && a["decision"] == "refuse"));

    // A session with the server down: the session succeeds, its artifact says the push failed.
    let r = session(&s, false, "5");
    assert_eq!(r.code(), Some(0), "a failed push never fails the session: {}", r.diag());
    let art = r.last_json();
    assert_eq!(art["offsite"]["ok"], false, "{art:#}");
    assert!(art["offsite"]["error"].is_string(), "{art:#}");
    std::thread::sleep(Duration::from_millis(2100));
    let st = run(&s, &["status", "--json"]);
    assert_eq!(st.code(), Some(18), "past max_lag, status is unhealthy: {}", st.diag());
    let rep = st.json();
    assert_eq!(rep["offsite"]["last_push_ok"], false, "{rep:#}");
    assert!(rep["offsite"]["lag_seconds"].as_u64().unwrap() >= 2, "{rep:#}");
    assert!(rep["problems"].as_array().unwrap().iter().any(|p| p["kind"] == "offsite_lag"), "{rep:#}");

    let _srv = Server::start(&s.path("srv"), port);
    // A restarted SeaweedFS answers 500 for a moment after its gateway is up: wait for the bucket.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while curl(&ep, "GET", &format!("/{b}?list-type=2"), None).0 != 200 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
    }
    let r = run(&s, &["offsite", "push", "--json"]);
    assert_eq!(r.code(), Some(0), "{}", r.diag());
    let v = run(&s, &["offsite", "verify", "--json"]);
    assert_eq!(v.code(), Some(0), "{}", v.diag());
    assert_eq!(v.json()["points"].as_array().unwrap().len(), local_points(&db).len());
    let st = run(&s, &["status", "--json"]);
    assert_eq!(st.code(), Some(0), "caught up: {}", st.diag());
    assert_eq!(st.json()["offsite"]["lag_seconds"], 0);
}

fn latest(db: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(state_dir(db).join("offsite/latest.json")).unwrap()).unwrap()
}

/// A loopback proxy that answers some requests with 503, drops some connections without a
/// word, and forwards the rest (one request per connection).
struct FaultProxy {
    port: u16,
    errors: Arc<AtomicUsize>,
    drops: Arc<AtomicUsize>,
}

fn read_request(c: &mut TcpStream) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    let head_end = loop {
        let n = c.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)))
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = c.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some(buf)
}

impl FaultProxy {
    fn start(upstream: &str) -> FaultProxy {
        let up = upstream.trim_start_matches("http://").to_owned();
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let errors = Arc::new(AtomicUsize::new(0));
        let drops = Arc::new(AtomicUsize::new(0));
        let (e2, d2) = (errors.clone(), drops.clone());
        std::thread::spawn(move || {
            for (i, c) in l.incoming().enumerate() {
                let Ok(mut c) = c else { continue };
                let (up, e2, d2) = (up.clone(), e2.clone(), d2.clone());
                std::thread::spawn(move || {
                    let Some(mut req) = read_request(&mut c) else { return };
                    match i % 4 {
                        1 => {
                            e2.fetch_add(1, Ordering::SeqCst);
                            let body = "<Error><Code>SlowDown</Code><Message>injected</Message></Error>";
                            let _ = write!(
                                c,
                                "HTTP/1.1 503 Slow Down\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                                body.len()
                            );
                        }
                        3 => {
                            d2.fetch_add(1, Ordering::SeqCst);
                            let _ = c.shutdown(std::net::Shutdown::Both);
                        }
                        _ => {
                            // One request per upstream connection, closed after the answer.
                            let head_end = req.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 2;
                            req.splice(head_end..head_end, b"Connection: close\r\n".iter().copied());
                            let Ok(mut u) = TcpStream::connect(&up) else { return };
                            let _ = u.write_all(&req);
                            let mut resp = Vec::new();
                            let _ = u.read_to_end(&mut resp);
                            let _ = c.write_all(&resp);
                        }
                    }
                });
            }
        });
        FaultProxy { port, errors, drops }
    }
}

#[test]
fn pushes_and_restores_through_5xx_and_dropped_connections() {
    let Some(ep) = endpoint("fault_proxy") else { return };
    let s = Scratch::new();
    let b = bucket(&ep);
    let proxy = FaultProxy::start(&ep);
    let via = format!("http://127.0.0.1:{}", proxy.port);
    config(&s, "e.db", &format!("s3://{b}/f"), &via, "push_after_session = false\n");
    let db = s.path("e.db");
    assert_eq!(session(&s, true, "30").code(), Some(0));
    assert_eq!(session(&s, false, "30").code(), Some(0));
    let r = run(&s, &["offsite", "push", "--json"]);
    assert_eq!(r.code(), Some(0), "{}", r.diag());
    let v = run(&s, &["offsite", "verify", "--json"]);
    assert_eq!(v.code(), Some(0), "{}", v.diag());
    let to = s.path("through-proxy.db");
    let r = run(&s, &["offsite", "restore", "--to", to.to_str().unwrap()]);
    assert_eq!(r.code(), Some(0), "{}", r.diag());
    assert_eq!(sha256_file(&to), local_points(&db)[0]["sha256"].as_str().unwrap());
    assert!(proxy.errors.load(Ordering::SeqCst) >= 1, "the proxy injected no 5xx");
    assert!(proxy.drops.load(Ordering::SeqCst) >= 1, "the proxy dropped no connection");
}

#[test]
fn a_tampered_pack_is_found_by_verify_for_exactly_the_points_that_use_it() {
    let Some(ep) = endpoint("tampered_remote") else { return };
    let s = Scratch::new();
    let b = bucket(&ep);
    config(&s, "e.db", &format!("s3://{b}/t"), &ep, "");
    let db = s.path("e.db");
    assert_eq!(session(&s, true, "10").code(), Some(0));
    assert_eq!(session(&s, false, "10").code(), Some(0));
    let points = local_points(&db);
    // The newest pack: used by the newest points only.
    let newest_packs: Vec<String> =
        points[0]["pages"]["packs"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_owned()).collect();
    let victim = newest_packs.last().unwrap().clone();
    let users: Vec<&str> = points
        .iter()
        .filter(|m| m["pages"]["packs"].as_array().unwrap().iter().any(|p| p == victim.as_str()))
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(users.len() < points.len(), "some point does not use the victim pack");
    let object = format!("/{b}/t/packs/{victim}");
    let (code, mut body) = curl(&ep, "GET", &object, None);
    assert_eq!(code, 200);
    let mid = body.len() / 2;
    body[mid] ^= 0x40;
    let f = s.path("tampered.bin");
    std::fs::write(&f, &body).unwrap();
    assert_eq!(curl(&ep, "PUT", &object, Some(&f)).0, 200);

    let v = run(&s, &["offsite", "verify", "--json"]);
    assert_eq!(v.code(), Some(65), "{}", v.diag());
    let rep = v.json();
    let bad: Vec<&str> = rep["points"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["ok"] == false)
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    let mut want = users.clone();
    want.sort_unstable();
    let mut got = bad.clone();
    got.sort_unstable();
    assert_eq!(got, want, "exactly the points using the pack: {rep:#}");
    assert!(rep["packs_bad"][&victim].as_str().unwrap().contains("hashes to"), "{rep:#}");
    // A restore of a damaged point refuses and leaves nothing.
    let to = s.path("never.db");
    let r = run(&s, &["offsite", "restore", "--to", to.to_str().unwrap(), "--point", users[0]]);
    assert_eq!(r.code(), Some(65), "{}", r.diag());
    assert!(!to.exists());
    assert!(names(s.dir.path()).iter().all(|n| !n.contains(TMP_MARK)), "no scratch left");
    // A sampled verify still sees every point is complete.
    let v = run(&s, &["offsite", "verify", "--sample", "0.5", "--json"]);
    assert!(v.json()["packs_checked"].as_u64().unwrap() >= 1, "{}", v.diag());
}

#[test]
fn with_encryption_the_bucket_holds_no_plaintext_and_needs_the_key() {
    let Some(ep) = endpoint("encryption") else { return };
    let s = Scratch::new();
    let b = bucket(&ep);
    let marker = "MARKER-plaintext-trade-record-7d1f";
    // Control: without encryption the marker is in the bucket (the grep can fail).
    config(&s, "e.db", &format!("s3://{b}/plain"), &ep, "");
    let db = s.path("e.db");
    assert_eq!(session(&s, true, "5").code(), Some(0));
    let c = rusqlite::Connection::open(&db).unwrap();
    c.execute_batch(&format!("CREATE TABLE notes(v TEXT); INSERT INTO notes VALUES ('{marker}');")).unwrap();
    drop(c);
    assert_eq!(run(&s, &["backup"]).code(), Some(0));
    assert_eq!(run(&s, &["offsite", "push"]).code(), Some(0));
    let all = |prefix: &str| -> Vec<u8> {
        keys(&ep, &b, prefix).iter().flat_map(|k| curl(&ep, "GET", &format!("/{b}/{k}"), None).1).collect()
    };
    let plain = all("plain/");
    let has = |hay: &[u8], needle: &str| hay.windows(needle.len()).any(|w| w == needle.as_bytes());
    assert!(has(&plain, marker) && has(&plain, "SQLite format 3") && has(&plain, "page_count"));

    let key = s.path("offsite.key");
    let r = run(&s, &["offsite", "keygen", "--to", key.to_str().unwrap()]);
    assert_eq!(r.code(), Some(0), "{}", r.diag());
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode_bits(), 0o600);
    config(&s, "e.db", &format!("s3://{b}/sealed"), &ep, &format!("key_file = \"{}\"\n", key.display()));
    let r = run(&s, &["offsite", "push", "--json"]);
    assert_eq!(r.code(), Some(0), "{}", r.diag());
    assert_eq!(r.json()["encrypted"], true);
    let sealed = all("sealed/");
    assert!(sealed.len() > 4096, "objects were pushed");
    for needle in [marker, "SQLite format 3", "page_count", "sha256", "trades"] {
        assert!(!has(&sealed, needle), "{needle:?} is in the bucket in plaintext");
    }
    let v = run(&s, &["offsite", "verify", "--json"]);
    assert_eq!(v.code(), Some(0), "{}", v.diag());

    // Restore without the key: a clear refusal; with it: byte-identical.
    let fresh = Scratch::new();
    std::fs::write(fresh.path("warden.toml"), format!("[offsite]\nurl = \"s3://{b}/sealed\"\nendpoint = \"{ep}\"\n"))
        .unwrap();
    let to = fresh.path("e.db");
    let r = run(&fresh, &["offsite", "restore", "--to", to.to_str().unwrap()]);
    assert_eq!(r.code(), Some(78), "{}", r.diag());
    assert!(r.stderr.contains("is encrypted") && r.stderr.contains("key_file"), "{}", r.diag());
    assert!(!to.exists());
    let wrong = fresh.path("wrong.key");
    assert_eq!(run(&fresh, &["offsite", "keygen", "--to", wrong.to_str().unwrap()]).code(), Some(0));
    let r = run(&fresh, &["offsite", "restore", "--to", to.to_str().unwrap(), "--key-file", wrong.to_str().unwrap()]);
    assert_eq!(r.code(), Some(78), "{}", r.diag());
    assert!(r.stderr.contains("was encrypted with key"), "{}", r.diag());
    let r = run(&fresh, &["offsite", "restore", "--to", to.to_str().unwrap(), "--key-file", key.to_str().unwrap()]);
    assert_eq!(r.code(), Some(0), "{}", r.diag());
    assert_eq!(sha256_file(&to), local_points(&db)[0]["sha256"].as_str().unwrap());
    let c = rusqlite::Connection::open(&to).unwrap();
    let v: String = c.query_row("SELECT v FROM notes", [], |r| r.get(0)).unwrap();
    assert_eq!(v, marker);
}

trait ModeBits {
    fn mode_bits(&self) -> u32;
}

impl ModeBits for std::fs::Permissions {
    fn mode_bits(&self) -> u32 {
        std::os::unix::fs::PermissionsExt::mode(self) & 0o777
    }
}

#[test]
fn remote_retention_deletes_old_points_and_their_packs_and_a_key_without_delete_is_told_what_to_set() {
    let Some(ep) = endpoint("remote_retention") else { return };
    let s = Scratch::new();
    let b = bucket(&ep);
    let retention = "push_after_session = false\n[offsite.retention]\nkeep_last = 1\nkeep_daily = 0\nkeep_weekly = 0\nkeep_monthly = 0\n";
    config(&s, "e.db", &format!("s3://{b}/r"), &ep, retention);
    let db = s.path("e.db");
    assert_eq!(session(&s, true, "10").code(), Some(0));
    assert_eq!(session(&s, false, "10").code(), Some(0));
    // A key that may not delete: the push succeeds and says what to set.
    let mut c = s.warden();
    c.env("AWS_ACCESS_KEY_ID", "warden-nodelete").env("AWS_SECRET_ACCESS_KEY", "warden-nodelete-secret");
    c.args(["offsite", "push", "--json"]);
    let r = run_to_end(c, Duration::from_secs(120));
    assert_eq!(r.code(), Some(0), "{}", r.diag());
    let rec = r.json();
    assert!(rec["messages"][0].as_str().unwrap_or_default().contains("never_delete"), "{rec:#}");
    assert_eq!(keys(&ep, &b, "r/points/").len(), local_points(&db).len(), "nothing was deleted");
    // Every page rewritten: the old packs are used by the old points only.
    let c = rusqlite::Connection::open(&db).unwrap();
    c.execute_batch(
        "DELETE FROM trades; CREATE TABLE filler(v BLOB); INSERT INTO filler VALUES (randomblob(20000)); VACUUM;",
    )
    .unwrap();
    drop(c);
    assert_eq!(run(&s, &["backup"]).code(), Some(0));
    // With delete permission: one point left, the packs only it uses, and it restores.
    let r = run(&s, &["offsite", "push", "--json"]);
    assert_eq!(r.code(), Some(0), "{}", r.diag());
    let rec = r.json();
    assert_eq!(rec["points_deleted"].as_array().unwrap().len(), local_points(&db).len() - 1, "{rec:#}");
    assert!(rec["packs_deleted"].as_u64().unwrap() >= 1, "{rec:#}");
    let v = run(&s, &["offsite", "verify", "--json"]);
    assert_eq!(v.code(), Some(0), "{}", v.diag());
    let rep = v.json();
    assert_eq!(rep["points"].as_array().unwrap().len(), 1);
    assert_eq!(rep["packs_unused"], 0, "{rep:#}");
    let to = s.path("kept.db");
    assert_eq!(run(&s, &["offsite", "restore", "--to", to.to_str().unwrap()]).code(), Some(0));
    assert_eq!(sha256_file(&to), local_points(&db)[0]["sha256"].as_str().unwrap());
}

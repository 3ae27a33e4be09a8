//! The page store end to end (issue 14): real `warden run` sessions with
//! `[backups] store = "pages"`, real restores, real damage to a pack, real `kill -9` of
//! `warden prune` at every file step of its collection.
//!
//! Each test names the failure it prevents: a restore point that does not come back byte
//! for byte, a damaged pack that is silent or blamed on the wrong points, and a collection
//! that a crash turns into a lost restore point.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::Scratch;
use common::proc::*;

const MINUTE: Duration = Duration::from_secs(60);

fn config(s: &Scratch, extra: &str) {
    let text = format!(
        "database = \"e.db\"\ncreate = true\n[backups]\nstore = \"pages\"\n{extra}\n[retention]\nkeep_last = 200\n"
    );
    std::fs::write(s.path("warden.toml"), text).unwrap();
}

fn session(s: &Scratch, trades: u64) -> Done {
    let mut c = s.warden();
    c.args(["run", "-q", "--", ENGINE, "--create", "--trades", &trades.to_string()]);
    run_to_end(c, Duration::from_secs(120))
}

fn warden(s: &Scratch, args: &[&str]) -> Done {
    let mut c = s.warden();
    c.args(args);
    run_to_end(c, MINUTE)
}

/// A small deterministic generator: the same "random" sessions on every run.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % below
    }
}

fn store_bytes(db: &Path) -> u64 {
    let dir = backups_of(db).join("pages");
    names(&dir).iter().filter(|n| n.ends_with(".pack")).map(|n| std::fs::metadata(dir.join(n)).unwrap().len()).sum()
}

/// Thirty sessions of random size, post-session checks left to the next gate. Every
/// restore point restores byte for byte (its recorded SHA-256), every post-session point
/// is exactly the file the session left (read straight from it), every pending check is
/// settled by the next gate, and the store holds far less than the full copies would.
#[test]
fn thirty_sessions_every_restore_point_restores_byte_exact() {
    let s = Scratch::new();
    config(&s, "post_check = \"next_gate\"");
    let db = s.path("e.db");
    let mut rng = Lcg(14);
    // The live file after each session, by session id.
    let mut after: BTreeMap<String, String> = BTreeMap::new();
    for i in 0..30 {
        let r = session(&s, 1 + rng.next(if i % 5 == 0 { 2000 } else { 150 }));
        assert_eq!(r.code(), Some(0), "session {i}: {}", r.diag());
        let art = newest_artifact(&db);
        let id = art["post_backup"]["backup"]["id"].as_str().unwrap_or_else(|| panic!("no post backup: {art}"));
        after.insert(id.to_owned(), sha256(&db));
    }
    let all = manifests(&backups_of(db.as_path()));
    assert_eq!(all.len(), 59, "a pre and a post point per session (the first has no pre: a new database)");
    let mut full_copies = 0u64;
    for m in &all {
        assert!(m["pages"].is_object(), "every new backup is in the page store: {m}");
        assert!(m["file"].as_str().unwrap().is_empty());
        full_copies += m["size"].as_u64().unwrap();
    }
    let last_post = all.iter().rev().find(|m| m["kind"] == "post").unwrap()["id"].as_str().unwrap().to_owned();
    for m in &all {
        let id = m["id"].as_str().unwrap();
        let checked = &m["checked"]["when"];
        if m["kind"] == "post" && id != last_post {
            assert_eq!(checked, "by_gate", "the next gate settled {id}: {m}");
            assert_eq!(m["verified"], true, "{m}");
        } else if id == last_post {
            assert_eq!(checked, "pending", "no gate has run since the last session: {m}");
            assert_eq!(m["verified"], false, "a pending check is never good: {m}");
        } else {
            assert_eq!(checked, "at_write", "{m}");
        }
        let to = s.path(&format!("restored-{id}.db"));
        let r = warden(&s, &["restore", "--from", id, "--to", to.to_str().unwrap()]);
        if m["verified"] == true {
            assert_eq!(r.code(), Some(0), "restore {id}: {}", r.diag());
            assert_eq!(sha256(&to), m["sha256"].as_str().unwrap(), "{id} restores to its recorded bytes");
            if let Some(live) = after.get(id) {
                assert_eq!(&sha256(&to), live, "{id} is exactly the file its session left");
            }
        }
    }
    let stored = store_bytes(&db);
    assert!(stored * 5 < full_copies, "the store holds {stored} bytes for {full_copies} bytes of restore points");
    // `backups verify --all` re-hashes every page (and checks the pending point).
    let v = warden(&s, &["backups", "verify", "--all"]);
    assert_eq!(v.code(), Some(0), "{}", v.diag());
}

/// The artifact written last.
fn newest_artifact(db: &Path) -> serde_json::Value {
    let dir = sessions_of(db);
    let mut all: Vec<(std::time::SystemTime, PathBuf)> = names(&dir)
        .into_iter()
        .filter(|n| n.ends_with(".json"))
        .map(|n| (std::fs::metadata(dir.join(&n)).unwrap().modified().unwrap(), dir.join(n)))
        .collect();
    all.sort();
    read_json(&all.pop().expect("an artifact").1)
}

/// Flips one byte inside the newest pack: `backups verify --all` fails exactly the restore
/// points whose map names that pack, and no other; a restore of one of them is refused.
#[test]
fn a_flipped_byte_in_a_pack_fails_exactly_the_points_that_use_it() {
    let s = Scratch::new();
    config(&s, "");
    let db = s.path("e.db");
    for trades in [400, 30, 30, 600] {
        let r = session(&s, trades);
        assert_eq!(r.code(), Some(0), "{}", r.diag());
    }
    let all = manifests(&backups_of(&db));
    let uses = |m: &serde_json::Value, pack: &str| {
        m["pages"]["packs"].as_array().unwrap().iter().any(|p| p.as_str() == Some(pack))
    };
    // The pack of the second session's post backup: used by it and the points after it
    // that kept those pages, not by the first session's.
    let second_post = all.iter().filter(|m| m["kind"] == "post").nth(1).unwrap();
    // The first page of a pack the first backup does not use, and every point whose map
    // lists that page (entry 0 of the pack).
    let packs: Vec<&str> =
        second_post["pages"]["packs"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
    let pack = *packs.iter().find(|p| !uses(&all[0], p)).expect("a pack the first backup does not use");
    let uses_first_page = |m: &serde_json::Value| {
        let Some(i) = m["pages"]["packs"].as_array().unwrap().iter().position(|p| p.as_str() == Some(pack)) else {
            return false;
        };
        m["pages"]["runs"].as_array().unwrap().iter().any(|r| r[0] == i as u64 && r[1] == 0)
    };
    let affected: BTreeSet<String> =
        all.iter().filter(|m| uses_first_page(m)).map(|m| m["id"].as_str().unwrap().to_owned()).collect();
    assert!(!affected.is_empty() && affected.len() < all.len(), "some points use it, some do not");
    let path = backups_of(&db).join("pages").join(format!("{pack}.pack"));
    let f = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
    let mut b = [0u8; 1];
    std::os::unix::fs::FileExt::read_exact_at(&f, &mut b, 10).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &[b[0] ^ 0x20], 10).unwrap();
    drop(f);
    let v = warden(&s, &["backups", "verify", "--all", "--json"]);
    assert_ne!(v.code(), Some(0), "a damaged pack fails verify: {}", v.diag());
    let out = v.json();
    let failed: BTreeSet<String> = out["results"]
        .as_array()
        .unwrap_or_else(|| panic!("{out}"))
        .iter()
        .filter(|b| b["outcome"] != "ok")
        .map(|b| b["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(failed, affected, "exactly the points that use the pack: {out}");
    // The spot check re-hashing every stored page (k = 1) finds the same points.
    let spot = warden(&s, &["backups", "verify", "--all", "--sample", "1", "--json"]);
    assert_ne!(spot.code(), Some(0), "{}", spot.diag());
    let spotted: BTreeSet<String> = spot.json()["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["outcome"] != "ok")
        .map(|b| b["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(spotted, affected, "the spot check blames the same points");
    let victim = affected.iter().next().unwrap();
    let to = s.path("restored.db");
    let r = warden(&s, &["restore", "--from", victim, "--to", to.to_str().unwrap()]);
    assert_ne!(r.code(), Some(0), "a damaged point is never restored: {}", r.diag());
    assert!(!to.exists(), "nothing is left where the restore would have gone");
}

/// `warden prune` with removals, a merge of small packs and a collection to do, killed
/// (`SIGKILL`, the fault layer) before each of its file steps in turn: every restore point whose manifest survives restores byte for
/// byte, and the next clean prune leaves exactly the packs the kept points use.
#[test]
fn prune_and_collection_killed_at_every_step_keep_every_kept_point_restorable() {
    let s = Scratch::new();
    config(&s, "");
    let db = s.path("e.db");
    // Two sessions, then eighteen manual backups of changes made outside a session (a
    // manual backup runs no retention, so nothing merges them yet): every backup writes a
    // small pack, so the prune also merges them (more than 16 small packs in use) before it
    // collects.
    let mut rng = Lcg(7);
    for _ in 0..2 {
        let r = session(&s, 20 + rng.next(300));
        assert_eq!(r.code(), Some(0), "{}", r.diag());
    }
    for _ in 0..18 {
        let mut e = s.engine();
        e.arg("--db").arg(&db).args(["--trades", &(20 + rng.next(300)).to_string()]);
        let r = run_to_end(e, MINUTE);
        assert_eq!(r.code(), Some(0), "{}", r.diag());
        let b = warden(&s, &["backup", "--db", "e.db"]);
        assert_eq!(b.code(), Some(0), "{}", b.diag());
    }
    let packs_before = names(&backups_of(&db).join("pages")).iter().filter(|n| n.ends_with(".pack")).count();
    assert!(packs_before > 16, "{packs_before} packs");
    // The fixture: 21 points. Each faulted run starts from a copy of it.
    let fixture = s.path("fixture");
    copy_tree(&state_dir(&db), &fixture.join("e.db.warden"));
    std::fs::copy(&db, fixture.join("e.db")).unwrap();
    let prune = |root: &Path, spec: Option<&str>| {
        let mut c = s.warden();
        c.current_dir(root).args(["prune", "--db", "e.db", "--keep-last", "2"]);
        if let Some(spec) = spec {
            c.env("WARDEN_FAULT", spec)
                .env("WARDEN_FAULT_ROOT", root)
                .env("WARDEN_FAULT_TRACE", s.path("trace"))
                .env("WARDEN_FAULT_EXE", Path::new(WARDEN).file_name().unwrap());
        }
        run_to_end(c, MINUTE)
    };
    let fresh = |k: u64| {
        let root = s.path(&format!("run-{k}"));
        let _ = std::fs::remove_dir_all(&root);
        copy_tree(&fixture, &root);
        root
    };
    let root = fresh(0);
    let traced = prune(&root, Some("trace"));
    assert_eq!(traced.code(), Some(0), "{}", traced.diag());
    let steps = std::fs::read_to_string(s.path("trace")).unwrap().lines().count() as u64;
    assert!(steps >= 8, "removals and pack deletions are file steps: {steps}");
    let before = manifests(&backups_of(&fixture.join("e.db")));
    let reference = manifests(&backups_of(&root.join("e.db"))).len();
    let packs_after =
        names(&backups_of(&root.join("e.db")).join("pages")).iter().filter(|n| n.ends_with(".pack")).count();
    assert!(packs_after < 4, "the small packs were merged and the unused collected: {packs_after} left");
    assert!(reference < before.len(), "the prune drops points ({reference} of {})", before.len());
    for k in 1..=steps {
        let root = fresh(k);
        let killed = prune(&root, Some(&format!("kill@{k}")));
        assert_eq!(killed.code(), None, "step {k}: killed by the signal: {}", killed.diag());
        let rdb = root.join("e.db");
        for m in manifests(&backups_of(&rdb)) {
            let id = m["id"].as_str().unwrap();
            assert!(before.iter().any(|b| b["id"] == id), "step {k}: {id} was there before");
            let to = root.join(format!("r-{id}.db"));
            let mut c = s.warden();
            c.current_dir(&root).args(["restore", "--db", "e.db", "--from", id, "--to", to.to_str().unwrap()]);
            let r = run_to_end(c, MINUTE);
            assert_eq!(r.code(), Some(0), "step {k}: kept point {id} no longer restores: {}", r.diag());
            assert_eq!(sha256(&to), m["sha256"].as_str().unwrap(), "step {k}: {id}");
        }
        let clean = prune(&root, None);
        assert_eq!(clean.code(), Some(0), "step {k}: the next prune: {}", clean.diag());
        let kept = manifests(&backups_of(&rdb));
        assert_eq!(kept.len(), reference, "step {k}: the same points as an uninterrupted prune keeps");
        let used: BTreeSet<String> = kept
            .iter()
            .flat_map(|m| m["pages"]["packs"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_owned()))
            .collect();
        let present: BTreeSet<String> = names(&backups_of(&rdb).join("pages"))
            .into_iter()
            .filter_map(|n| n.strip_suffix(".pack").map(str::to_owned))
            .collect();
        assert_eq!(present, used, "step {k}: exactly the packs the kept points use");
        std::fs::remove_dir_all(&root).unwrap();
    }
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let t = e.file_type().unwrap();
        if t.is_dir() {
            copy_tree(&e.path(), &to.join(e.file_name()));
        } else if t.is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

//! A corpus of damaged and intact database sets, built by the real SQLite this crate links.
//!
//! reliability-notes §6.1: "Build your own corpus of damaged files from a realistic source
//! database [...] plus intact controls". Every case is a directory holding `engine.db` and, when
//! the case needs them, `engine.db-wal`, `engine.db-journal` and `engine.db-shm`. The source and
//! every WAL or journal in it are written by plain `rusqlite` (not the warden guard); damage is
//! then done to the bytes by means other than SQLite, as SQLite's own `corrupt*.test` do.
//!
//! `Case::expect` names the check meant to catch a damaged case: `scan:<code>` (a fatal
//! finding of `session::scan`), `integrity` (`PRAGMA integrity_check` on a read-write private
//! copy returns anything but one row `ok`, or fails), `open` (SQLite refuses the copy: the pragma
//! fails with an error), `foreign_key_check` (rows from `PRAGMA foreign_key_check`). Controls
//! say `accept`.
#![allow(dead_code)]

use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use rusqlite::{Connection, params};
use sha2::{Digest, Sha256};

/// One database set of the corpus.
pub struct Case {
    /// Unique, also the name of the case's directory.
    pub name: &'static str,
    /// True when the set must be refused, false for intact controls that must be accepted.
    pub damaged: bool,
    /// The case's own directory.
    pub dir: PathBuf,
    /// `dir/engine.db`; its sidecars, when the case has any, are beside it.
    pub db: PathBuf,
    /// Which check should catch it (see the module docs); `accept` for controls.
    pub expect: &'static str,
}

/// Page size of the source database.
pub const PAGE: usize = 4096;
/// The rollback journal header magic.
pub const JOURNAL_MAGIC: [u8; 8] = [0xd9, 0xd5, 0x05, 0xf9, 0x20, 0xa1, 0x63, 0xd7];
const WAL_HEADER: usize = 32;
const FRAME_HEADER: usize = 24;

/// Builds every case under `root` (which must exist) and returns them, damaged ones first.
/// Scratch work happens in `root/_work`.
pub fn build_corpus(root: &Path) -> Vec<Case> {
    let work = root.join("_work");
    fs::create_dir_all(&work).unwrap();
    let source = work.join("source.db");
    build_source(&source);
    let src = fs::read(&source).unwrap();
    let mut cases = Vec::new();
    let mut add = |name: &'static str, damaged: bool, expect: &'static str| -> PathBuf {
        let dir = root.join(name);
        fs::create_dir_all(&dir).unwrap();
        let db = dir.join("engine.db");
        cases.push(Case { name, damaged, dir, db: db.clone(), expect });
        db
    };

    // ---- Damaged: pages of the database file ----

    // Bit flips in a leaf page of `trade`: two cell pointers and a rowid varint. A flip that
    // lands only in a value is silent (see `payload_flip_is_silent` in tests/scan_corpus.rs).
    {
        let db = add("bitflip_table_leaf", true, "integrity");
        fs::write(&db, &src).unwrap();
        let leaves = pages_of(&db, "trade", "leaf");
        let page = leaves[leaves.len() / 2];
        let bytes = read_page(&db, page);
        let first_cell = usize::from(u16::from_be_bytes([bytes[8 + 2 * 3], bytes[8 + 2 * 3 + 1]]));
        flip(&db, page, 8 + 2 * 3 + 1, 0x10); // cell pointer #3, low byte
        flip(&db, page, 8 + 2 * 5, 0x01); // cell pointer #5, high byte
        flip(&db, page, first_cell + 1, 0x20); // inside cell #3's header (payload size/rowid varints)
    }
    // Bit flips inside index keys: the index no longer matches the table rows.
    {
        let db = add("bitflip_index_page", true, "integrity");
        fs::write(&db, &src).unwrap();
        let leaves = pages_of(&db, "trade_symbol", "leaf");
        let page = leaves[leaves.len() / 2];
        let bytes = read_page(&db, page);
        for cell in [2usize, 7, 11] {
            let at = usize::from(u16::from_be_bytes([bytes[8 + 2 * cell], bytes[8 + 2 * cell + 1]]));
            // Payload size (1 byte), record header (4 bytes: size, symbol, id): the symbol text.
            flip(&db, page, at + 6, 0x04);
        }
    }
    // A zeroed interior page of `trade`.
    {
        let db = add("zeroed_interior_page", true, "integrity");
        fs::write(&db, &src).unwrap();
        let interior = pages_of(&db, "trade", "internal");
        assert!(!interior.is_empty(), "the trade table needs an interior page");
        write_at(&db, page_offset(interior[0]), &[0u8; PAGE]);
    }
    // Truncation in the middle of a page.
    {
        let db = add("truncated_mid_page", true, "scan:size_not_page_multiple");
        fs::write(&db, &src[..src.len() - 3 * PAGE - 1000]).unwrap();
    }
    // Truncation on a page boundary: the last three pages are gone.
    {
        let db = add("truncated_page_aligned", true, "scan:size_mismatch");
        fs::write(&db, &src[..src.len() - 3 * PAGE]).unwrap();
    }
    // Header damage: the magic string.
    {
        let db = add("header_bad_magic", true, "scan:not_a_database");
        let mut bytes = src.clone();
        bytes[..16].copy_from_slice(b"SQLite format 4\0");
        fs::write(&db, &bytes).unwrap();
    }
    // Header damage: a page size that is not a power of two (3072).
    {
        let db = add("header_bad_page_size", true, "scan:bad_page_size");
        let mut bytes = src.clone();
        bytes[16..18].copy_from_slice(&[0x0c, 0x00]);
        fs::write(&db, &bytes).unwrap();
    }
    // Freelist trunk damage: the trunk claims more leaves than a page can hold.
    {
        let db = add("freelist_trunk_damage", true, "integrity");
        fs::write(&db, &src).unwrap();
        let trunk = be32(&src, 32);
        assert!(trunk != 0, "the source database needs a freelist");
        write_at(&db, page_offset(trunk) + 4, &5000u32.to_be_bytes());
    }
    // An overflow chain cut short: a middle page's next-page pointer set to 0.
    {
        let db = add("overflow_chain_broken", true, "integrity");
        fs::write(&db, &src).unwrap();
        let overflow = pages_of(&db, "document", "overflow");
        let middle = overflow
            .iter()
            .copied()
            .find(|&p| be32(&read_page(&db, p), 0) != 0)
            .expect("an overflow page with a successor");
        write_at(&db, page_offset(middle), &0u32.to_be_bytes());
    }
    // Index/table disagreement: the one-page UNIQUE index of `venue` is put back to its content
    // before an UPDATE of the table (a lost write of one page).
    {
        let db = add("index_table_disagreement", true, "integrity");
        fs::write(&db, &src).unwrap();
        let root: u32 = Connection::open(&db)
            .unwrap()
            .query_row("SELECT rootpage FROM sqlite_schema WHERE name = 'sqlite_autoindex_venue_1'", [], |r| r.get(0))
            .unwrap();
        assert!(pages_of(&db, "sqlite_autoindex_venue_1", "leaf").len() <= 1, "the venue index fits one page");
        let old = read_page(&db, root);
        let conn = Connection::open(&db).unwrap();
        conn.execute_batch("UPDATE venue SET code = code || '-moved' WHERE id IN (7, 19)").unwrap();
        drop(conn);
        write_at(&db, page_offset(root), &old);
    }
    // A CHECK constraint violated (written with the constraints ignored).
    {
        let db = add("check_violation", true, "integrity");
        fs::write(&db, &src).unwrap();
        run_sql(&db, "PRAGMA ignore_check_constraints=ON; UPDATE account SET balance = -250.0 WHERE id IN (3, 77);");
    }
    // A foreign key violated (written with enforcement off): integrity_check does not look.
    {
        let db = add("foreign_key_violation", true, "foreign_key_check");
        fs::write(&db, &src).unwrap();
        run_sql(
            &db,
            "PRAGMA foreign_keys=OFF;
             INSERT INTO trade(account_id, venue_id, symbol, qty, price) VALUES (99999, 1, 'ORPH', 5, 1.5);",
        );
    }
    // Schema edit: the SQL of a table no longer parses.
    {
        let db = add("schema_unparseable", true, "open");
        fs::write(&db, &src).unwrap();
        run_sql(
            &db,
            "PRAGMA writable_schema=ON;
             UPDATE sqlite_schema SET sql = 'CREATE TABLE trade(id INTEGER PRIMARY KEY, account_id INTEGER,,'
              WHERE name = 'trade';
             PRAGMA writable_schema=OFF;",
        );
    }
    // Not a database at all.
    {
        let db = add("not_a_database", true, "scan:not_a_database");
        let text = "2024-05-01T10:00:00Z INFO engine started\n".repeat(200);
        fs::write(&db, text).unwrap();
    }
    // An empty file where the database should be.
    {
        let db = add("empty_file", true, "scan:empty_database");
        fs::write(&db, b"").unwrap();
    }

    // ---- Damaged: a database copied mid-transaction (rollback mode) ----
    let (mid_db, mid_journal) = mid_transaction(&work, &source);
    {
        // The db file alone, without the journal that would roll it back.
        let db = add("copied_mid_transaction", true, "integrity");
        fs::write(&db, &mid_db).unwrap();
    }

    // ---- Damaged: WAL sets ----
    let (wal_db, wal) = hot_wal(&work, "wal", &source, 6);
    let frames = (wal.len() - WAL_HEADER) / (FRAME_HEADER + PAGE);
    assert!(frames >= 8, "the hot WAL needs frames to damage ({frames})");
    // A middle frame's page damaged: its checksum fails, intact committed frames follow.
    {
        let db = add("wal_frame_checksum_break", true, "scan:wal_frames_after_break");
        fs::write(&db, &wal_db).unwrap();
        let mut bytes = wal.clone();
        bytes[frame_offset(frames / 2) + FRAME_HEADER + 1500] ^= 0x08;
        fs::write(sidecar(&db, "-wal"), &bytes).unwrap();
    }
    // A middle frame with the wrong salt: recovery stops there too.
    {
        let db = add("wal_frame_salt_break", true, "scan:wal_frames_after_break");
        fs::write(&db, &wal_db).unwrap();
        let mut bytes = wal.clone();
        bytes[frame_offset(frames / 3) + 8] ^= 0x80;
        fs::write(sidecar(&db, "-wal"), &bytes).unwrap();
    }
    // The WAL header checksum is wrong while frames follow: SQLite ignores every frame.
    {
        let db = add("wal_bad_header_checksum", true, "scan:wal_bad_header_checksum");
        fs::write(&db, &wal_db).unwrap();
        let mut bytes = wal.clone();
        bytes[13] ^= 0x01; // checkpoint sequence number, covered by the header checksum
        fs::write(sidecar(&db, "-wal"), &bytes).unwrap();
    }
    // A WAL from another database with 1024-byte pages.
    {
        let db = add("wal_from_other_db_page_size", true, "scan:wal_page_size_mismatch");
        fs::write(&db, &wal_db).unwrap();
        fs::write(sidecar(&db, "-wal"), other_wal(&work, "other1024", 1024)).unwrap();
    }
    // A WAL from another database with the same page size, whose base is in its own db file:
    // SQLite overlays foreign pages on ours.
    {
        let db = add("wal_from_other_db_same_page_size", true, "integrity");
        fs::write(&db, &wal_db).unwrap();
        fs::write(sidecar(&db, "-wal"), other_wal(&work, "other4096", 4096)).unwrap();
    }
    // The header a WAL restart writes (checkpoint sequence and salt-1 plus one, a new salt-2),
    // over frames that were never checkpointed: SQLite treats the WAL as empty.
    {
        let db = add("wal_header_reset_over_commits", true, "scan:wal_header_reset");
        fs::write(&db, &wal_db).unwrap();
        let mut bytes = wal.clone();
        restart_wal_header(&mut bytes);
        fs::write(sidecar(&db, "-wal"), &bytes).unwrap();
    }
    // A WAL beside an empty database file: SQLite deletes the WAL on open.
    {
        let db = add("wal_beside_empty_db", true, "scan:wal_beside_empty_db");
        fs::write(&db, b"").unwrap();
        fs::write(sidecar(&db, "-wal"), &wal).unwrap();
    }

    // ---- Intact controls ----
    {
        let db = add("plain", false, "accept");
        fs::write(&db, &src).unwrap();
    }
    {
        let db = add("hot_wal", false, "accept");
        fs::write(&db, &wal_db).unwrap();
        fs::write(sidecar(&db, "-wal"), &wal).unwrap();
    }
    {
        // The db and its hot journal, copied together mid-transaction: SQLite rolls back.
        let db = add("hot_journal", false, "accept");
        fs::write(&db, &mid_db).unwrap();
        fs::write(sidecar(&db, "-journal"), &mid_journal).unwrap();
    }
    {
        // A clean WAL-mode database beside a -shm full of garbage (SQLite rebuilds it).
        let db = add("garbage_shm", false, "accept");
        fs::write(&db, wal_mode_clean(&work, &source)).unwrap();
        fs::write(sidecar(&db, "-shm"), noise(32768, 7)).unwrap();
    }
    {
        // Noise in freelist leaf pages (never read); the trunks are left alone.
        let db = add("garbage_free_pages", false, "accept");
        fs::write(&db, &src).unwrap();
        let leaves = freelist_leaves(&src);
        assert!(!leaves.is_empty(), "the source database needs freelist leaves");
        for (i, leaf) in leaves.iter().enumerate() {
            write_at(&db, page_offset(*leaf), &noise(PAGE, i as u64 + 11));
        }
    }
    {
        // The WAL ends 1000 bytes short of its last frame: the last transaction is lost,
        // the state before it is intact.
        let db = add("torn_wal_tail_cut", false, "accept");
        fs::write(&db, &wal_db).unwrap();
        fs::write(sidecar(&db, "-wal"), &wal[..wal.len() - 1000]).unwrap();
    }
    {
        // The last frame is whole but its page is half garbage: its checksum fails and nothing
        // follows it.
        let db = add("torn_wal_tail_garbled", false, "accept");
        fs::write(&db, &wal_db).unwrap();
        let mut bytes = wal.clone();
        let at = frame_offset(frames) + FRAME_HEADER + PAGE / 2;
        bytes[at..at + PAGE / 2].copy_from_slice(&noise(PAGE / 2, 5));
        fs::write(sidecar(&db, "-wal"), &bytes).unwrap();
    }
    {
        // A reused WAL: new-generation frames followed by checkpointed frames of the previous
        // generation (other salts), as SQLite leaves them after a restart.
        let db = add("wal_reused_old_generation", false, "accept");
        let (db_bytes, wal_bytes) = reused_wal(&work, &source);
        fs::write(&db, &db_bytes).unwrap();
        fs::write(sidecar(&db, "-wal"), &wal_bytes).unwrap();
    }
    {
        // The same restarted header over frames a complete checkpoint already copied into the
        // database file: a writer killed right after writing it leaves this, and loses nothing.
        let db = add("wal_restarted_over_checkpointed", false, "accept");
        let (db_bytes, wal_bytes) = checkpointed_wal(&work, &source);
        let mut bytes = wal_bytes.clone();
        restart_wal_header(&mut bytes);
        fs::write(&db, &db_bytes).unwrap();
        fs::write(sidecar(&db, "-wal"), &bytes).unwrap();
    }
    {
        // A db copied without its WAL, where the WAL held the whole schema and every row: the
        // file alone is page 1 of an empty database, an intact but older state. No check can
        // tell it from a real empty WAL-mode database (reliability-notes §3, hermes-agent#110848:
        // "the main file copied without its sidecars passed integrity_check"), so it is a
        // control: accepted, and a known blind spot. The other half of that story, a db whose
        // WAL was lost after later commits, is likewise an older consistent state.
        let db = add("db_without_wal_older_state", false, "accept");
        let (db_bytes, wal_bytes) = fresh_wal_only(&work);
        assert!(!wal_bytes.is_empty());
        fs::write(&db, &db_bytes).unwrap();
    }
    cases
}

/// The realistic source: 4096-byte pages, INTEGER PRIMARY KEYs, TEXT and REAL columns, a UNIQUE
/// index, secondary indexes, CHECK constraints, foreign keys, a BLOB column long enough for
/// overflow chains, and a freelist left by deletes. Rollback (DELETE) mode, a few hundred KB.
pub fn build_source(path: &Path) {
    let conn = Connection::open(path).unwrap();
    conn.execute_batch(
        "PRAGMA page_size=4096; PRAGMA journal_mode=DELETE; PRAGMA foreign_keys=ON;
         CREATE TABLE account(
             id INTEGER PRIMARY KEY,
             name TEXT NOT NULL UNIQUE,
             balance REAL NOT NULL CHECK (balance >= 0),
             opened TEXT NOT NULL
         );
         CREATE TABLE venue(id INTEGER PRIMARY KEY, code TEXT NOT NULL UNIQUE);
         CREATE TABLE trade(
             id INTEGER PRIMARY KEY,
             account_id INTEGER NOT NULL REFERENCES account(id),
             venue_id INTEGER REFERENCES venue(id),
             symbol TEXT NOT NULL,
             qty INTEGER NOT NULL CHECK (qty <> 0),
             price REAL NOT NULL CHECK (price > 0),
             note TEXT
         );
         CREATE INDEX trade_symbol ON trade(symbol, id);
         CREATE INDEX trade_account ON trade(account_id);
         CREATE TABLE document(
             id INTEGER PRIMARY KEY,
             account_id INTEGER NOT NULL REFERENCES account(id),
             title TEXT NOT NULL,
             body BLOB NOT NULL
         );",
    )
    .unwrap();
    let mut rng = Lcg(0x5eed);
    const SYMBOLS: [&str; 12] =
        ["AAPL", "MSFT", "GOOG", "AMZN", "NVDA", "TSLA", "META", "BRK", "JPM", "XOM", "UNH", "V"];
    conn.execute_batch("BEGIN").unwrap();
    for id in 1..=200u32 {
        conn.execute(
            "INSERT INTO account(id, name, balance, opened) VALUES (?1, ?2, ?3, ?4)",
            params![
                id,
                format!("acct-{id:04}-{}", rng.word(6)),
                rng.below(10_000_000) as f64 / 100.0,
                format!("2023-{:02}-{:02}", 1 + rng.below(12), 1 + rng.below(28))
            ],
        )
        .unwrap();
    }
    for id in 1..=40u32 {
        conn.execute("INSERT INTO venue(id, code) VALUES (?1, ?2)", params![id, format!("V{id:03}")]).unwrap();
    }
    for id in 1..=3000u32 {
        let qty = 1 + rng.below(999);
        let note_len = 10 + rng.below(50) as usize;
        let note = (rng.below(3) != 0).then(|| rng.word(note_len));
        conn.execute(
            "INSERT INTO trade(id, account_id, venue_id, symbol, qty, price, note) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                id,
                1 + rng.below(200),
                1 + rng.below(40),
                SYMBOLS[rng.below(SYMBOLS.len() as u64) as usize],
                if rng.below(2) == 0 { qty } else { -qty },
                1.0 + rng.below(100_000) as f64 / 100.0,
                note
            ],
        )
        .unwrap();
    }
    for id in 1..=30u32 {
        let len = 4000 + rng.below(6000) as usize;
        conn.execute(
            "INSERT INTO document(id, account_id, title, body) VALUES (?1, ?2, ?3, ?4)",
            params![id, 1 + rng.below(200), format!("statement {id}"), noise(len, u64::from(id))],
        )
        .unwrap();
    }
    conn.execute_batch("COMMIT; DELETE FROM trade WHERE id % 7 = 0; DELETE FROM document WHERE id % 3 = 0;").unwrap();
    assert_eq!(integrity(&conn), ["ok"]);
    let fk: i64 = conn.query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| r.get(0)).unwrap();
    assert_eq!(fk, 0);
    let free: i64 = conn.query_row("PRAGMA freelist_count", [], |r| r.get(0)).unwrap();
    assert!(free > 10, "deletes must leave a freelist ({free} pages)");
}

/// `PRAGMA integrity_check` rows.
pub fn integrity(conn: &Connection) -> Vec<String> {
    let mut stmt = conn.prepare("PRAGMA integrity_check").unwrap();
    stmt.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
}

/// `<db>` plus a suffix, as SQLite names its sidecars.
/// SHA-256 of each file of the set (`engine.db`, `-wal`, `-journal`, `-shm`), `None` when
/// absent: to prove a check left the originals byte-identical.
pub fn hashes(db: &Path) -> Vec<(PathBuf, Option<[u8; 32]>)> {
    ["", "-wal", "-journal", "-shm"]
        .iter()
        .map(|suffix| {
            let path = sidecar(db, suffix);
            let hash = fs::read(&path).ok().map(|bytes| Sha256::digest(&bytes).into());
            (path, hash)
        })
        .collect()
}

pub fn sidecar(db: &Path, suffix: &str) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// A copy of `source` at `work/<tag>/engine.db`.
fn work_copy(work: &Path, tag: &str, source: &Path) -> PathBuf {
    let dir = work.join(tag);
    fs::create_dir_all(&dir).unwrap();
    let db = dir.join("engine.db");
    fs::copy(source, &db).unwrap();
    db
}

/// A connection to `db`, switched to WAL mode.
fn open_wal(db: &Path) -> Connection {
    let conn = Connection::open(db).unwrap();
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0)).unwrap();
    assert_eq!(mode, "wal");
    conn
}

/// Runs `sql` on `db` with a plain connection (damage written through SQLite itself).
fn run_sql(db: &Path, sql: &str) {
    Connection::open(db).unwrap().execute_batch(sql).unwrap();
}

/// Copies `source` into `work/tag/engine.db`, switches it to WAL mode without automatic
/// checkpoints, commits `txns` transactions, and returns the bytes of the db file and of its WAL
/// taken while the writer is still open (so the WAL holds committed, uncheckpointed frames).
fn hot_wal(work: &Path, tag: &str, source: &Path, txns: u32) -> (Vec<u8>, Vec<u8>) {
    let db = work_copy(work, tag, source);
    let conn = open_wal(&db);
    conn.execute_batch("PRAGMA wal_autocheckpoint=0;").unwrap();
    for t in 0..txns {
        conn.execute_batch(&format!(
            "BEGIN;
             UPDATE trade SET note = 'txn {t} ' || id WHERE id BETWEEN {lo} AND {hi};
             INSERT INTO venue(code) VALUES ('W{t}');
             UPDATE account SET balance = balance + 1 WHERE id = {acct};
             COMMIT;",
            lo = 100 + t * 400,
            hi = 140 + t * 400,
            acct = 1 + t * 13,
        ))
        .unwrap();
    }
    let out = (fs::read(&db).unwrap(), fs::read(sidecar(&db, "-wal")).unwrap());
    drop(conn);
    out
}

/// A WAL of another database, with frames over a base that lives in its own db file.
fn other_wal(work: &Path, tag: &str, page_size: u32) -> Vec<u8> {
    let dir = work.join(tag);
    fs::create_dir_all(&dir).unwrap();
    let db = dir.join("other.db");
    let conn = Connection::open(&db).unwrap();
    conn.execute_batch(&format!(
        "PRAGMA page_size={page_size};
         CREATE TABLE metrics(ts INTEGER PRIMARY KEY, host TEXT, value REAL);
         CREATE INDEX metrics_host ON metrics(host);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000)
         INSERT INTO metrics SELECT i, 'host-' || (i % 17), i * 0.5 FROM n;
         PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0;
         UPDATE metrics SET value = value + 1 WHERE ts % 3 = 0;
         INSERT INTO metrics(host, value) VALUES ('late', 1.0);"
    ))
    .unwrap();
    let wal = fs::read(sidecar(&db, "-wal")).unwrap();
    drop(conn);
    wal
}

/// Starts a rollback-mode transaction big enough to spill dirty pages into the db file, and
/// returns the db file and its journal as they are mid-transaction.
fn mid_transaction(work: &Path, source: &Path) -> (Vec<u8>, Vec<u8>) {
    let db = work_copy(work, "midtxn", source);
    let before = fs::read(&db).unwrap();
    let conn = Connection::open(&db).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode=DELETE; PRAGMA cache_size=1; PRAGMA cache_spill=ON;
         BEGIN;
         UPDATE trade SET symbol = symbol || '.X', note = printf('%s-%.60c', coalesce(note, ''), 'u');",
    )
    .unwrap();
    let db_bytes = fs::read(&db).unwrap();
    let journal = fs::read(sidecar(&db, "-journal")).unwrap();
    conn.execute_batch("ROLLBACK").unwrap();
    drop(conn);
    assert_ne!(db_bytes, before, "the transaction must have spilled pages into the db file");
    assert_eq!(journal[..8], JOURNAL_MAGIC, "the journal must be hot");
    (db_bytes, journal)
}

/// The source switched to WAL mode and cleanly closed (the WAL checkpointed and deleted).
fn wal_mode_clean(work: &Path, source: &Path) -> Vec<u8> {
    let db = work_copy(work, "walclean", source);
    let conn = open_wal(&db);
    conn.execute_batch("UPDATE venue SET code = code WHERE id = 1;").unwrap();
    drop(conn);
    assert!(!sidecar(&db, "-wal").exists());
    fs::read(&db).unwrap()
}

/// A WAL that was fully checkpointed and then restarted: fewer new frames than old ones.
fn reused_wal(work: &Path, source: &Path) -> (Vec<u8>, Vec<u8>) {
    let db = work_copy(work, "reused", source);
    let conn = open_wal(&db);
    conn.execute_batch(
        "PRAGMA wal_autocheckpoint=0;
         UPDATE trade SET note = 'first generation ' || id WHERE id % 5 = 0;",
    )
    .unwrap();
    let first = fs::read(sidecar(&db, "-wal")).unwrap();
    let (busy, log, done): (i64, i64, i64) =
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap();
    assert_eq!((busy, log), (0, done), "the checkpoint must complete");
    conn.execute_batch("UPDATE venue SET code = code || '+' WHERE id = 3;").unwrap();
    let out = (fs::read(&db).unwrap(), fs::read(sidecar(&db, "-wal")).unwrap());
    drop(conn);
    assert_eq!(out.1.len(), first.len(), "the WAL is reused in place, not truncated");
    assert_ne!(out.1[16..24], first[16..24], "the restart changes the salts");
    out
}

/// A WAL whose every frame a complete checkpoint copied into the db file, taken (with the db
/// file) while the writer is still open, before anything restarts it.
fn checkpointed_wal(work: &Path, source: &Path) -> (Vec<u8>, Vec<u8>) {
    let db = work_copy(work, "checkpointed", source);
    let conn = open_wal(&db);
    conn.execute_batch(
        "PRAGMA wal_autocheckpoint=0;
         UPDATE trade SET note = 'checkpointed ' || id WHERE id % 4 = 0;
         INSERT INTO venue(code) VALUES ('CKPT');",
    )
    .unwrap();
    let (busy, log, done): (i64, i64, i64) =
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap();
    assert_eq!((busy, log), (0, done), "the checkpoint must complete");
    let out = (fs::read(&db).unwrap(), fs::read(sidecar(&db, "-wal")).unwrap());
    drop(conn);
    out
}

/// Rewrites a WAL header as a restart does (`walRestartHdr()` then `walFrames()`): checkpoint
/// sequence and salt-1 plus one, a new salt-2, the header checksum recomputed; no frame changes.
fn restart_wal_header(wal: &mut [u8]) {
    let sequence = be32(wal, 12).wrapping_add(1);
    let salt1 = be32(wal, 16).wrapping_add(1);
    wal[12..16].copy_from_slice(&sequence.to_be_bytes());
    wal[16..20].copy_from_slice(&salt1.to_be_bytes());
    wal[20..24].copy_from_slice(&0x2545_f491u32.to_be_bytes());
    let big_endian = wal[3] & 1 == 1;
    let (mut s0, mut s1) = (0u32, 0u32);
    for pair in wal[..24].chunks_exact(8) {
        let word = |b: &[u8]| {
            let b = [b[0], b[1], b[2], b[3]];
            if big_endian { u32::from_be_bytes(b) } else { u32::from_le_bytes(b) }
        };
        s0 = s0.wrapping_add(word(&pair[..4])).wrapping_add(s1);
        s1 = s1.wrapping_add(word(&pair[4..])).wrapping_add(s0);
    }
    wal[24..28].copy_from_slice(&s0.to_be_bytes());
    wal[28..32].copy_from_slice(&s1.to_be_bytes());
}

/// A brand-new WAL-mode database whose schema and rows are all still in the WAL: the db file
/// and the WAL, taken while the writer is open.
pub fn fresh_wal_only(work: &Path) -> (Vec<u8>, Vec<u8>) {
    let dir = work.join("freshwal");
    fs::create_dir_all(&dir).unwrap();
    let db = dir.join("engine.db");
    let conn = Connection::open(&db).unwrap();
    conn.execute_batch(
        "PRAGMA page_size=4096; PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0;
         CREATE TABLE trade(id INTEGER PRIMARY KEY, symbol TEXT NOT NULL, qty INTEGER NOT NULL);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 500)
         INSERT INTO trade SELECT i, 'SYM' || (i % 9), i FROM n;",
    )
    .unwrap();
    let out = (fs::read(&db).unwrap(), fs::read(sidecar(&db, "-wal")).unwrap());
    drop(conn);
    assert_eq!(out.0.len(), PAGE, "the db file holds page 1 only");
    out
}

/// Pages of b-tree `name` of type `pagetype` (`internal`, `leaf`, `overflow`), from `dbstat`.
pub fn pages_of(db: &Path, name: &str, pagetype: &str) -> Vec<u32> {
    let conn = Connection::open(db).unwrap();
    let mut stmt = conn.prepare("SELECT pageno FROM dbstat WHERE name = ?1 AND pagetype = ?2 ORDER BY pageno").unwrap();
    stmt.query_map(params![name, pagetype], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
}

/// Leaf pages of the freelist, by walking its trunks from header offset 32.
fn freelist_leaves(db: &[u8]) -> Vec<u32> {
    let mut leaves = Vec::new();
    let mut trunk = be32(db, 32);
    while trunk != 0 {
        let page = &db[page_offset(trunk) as usize..][..PAGE];
        let count = be32(page, 4) as usize;
        leaves.extend((0..count).map(|i| be32(page, 8 + 4 * i)));
        trunk = be32(page, 0);
    }
    leaves
}

/// Byte offset of page `pgno` (1-based).
pub fn page_offset(pgno: u32) -> u64 {
    u64::from(pgno - 1) * PAGE as u64
}

fn frame_offset(index: usize) -> usize {
    WAL_HEADER + (index - 1) * (FRAME_HEADER + PAGE)
}

pub fn read_page(db: &Path, pgno: u32) -> Vec<u8> {
    fs::read(db).unwrap()[page_offset(pgno) as usize..][..PAGE].to_vec()
}

/// Overwrites bytes of a file in place, as a rogue write would.
pub fn write_at(path: &Path, offset: u64, bytes: &[u8]) {
    let mut file = fs::OpenOptions::new().write(true).open(path).unwrap();
    file.seek(SeekFrom::Start(offset)).unwrap();
    file.write_all(bytes).unwrap();
}

/// XORs one byte of page `pgno` with `mask`.
pub fn flip(db: &Path, pgno: u32, at: usize, mask: u8) {
    let byte = read_page(db, pgno)[at] ^ mask;
    write_at(db, page_offset(pgno) + at as u64, &[byte]);
}

fn be32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap())
}

/// Deterministic pseudo-random bytes.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = Lcg(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    (0..len).map(|_| rng.next() as u8).collect()
}

/// A small linear congruential generator: the corpus is the same on every run.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
    fn below(&mut self, n: u64) -> i64 {
        (self.next() % n) as i64
    }
    fn word(&mut self, len: usize) -> String {
        (0..len).map(|_| char::from(b'a' + self.below(26) as u8)).collect()
    }
}

//! Salvage: recovering what can be read from a database the gate refused, into a new file.
//!
//! Owns: copying the damaged set privately, extracting what SQLite can still read into a
//! brand-new database, and a report that says plainly the result is suspect. Does not own:
//! deciding whether to use the result (an operator does, after reading the report), or
//! restoring a verified backup, which is always the better way back ([`crate::copies::restore`]).
//!
//! Never over the original: the target must not exist and must not be the database or one of
//! its sidecars; the damaged set is copied into a private scratch directory first (SQLite's
//! own recovery of a hot journal or WAL happens on that copy), and the original files are
//! only ever read.
//!
//! Two methods:
//! - **`recover`**: SQLite's recovery extension, through the `sqlite3` command-line shell's
//!   `.recover` (the bundled library is built without it). It reads every page and rebuilds
//!   rows from intact b-tree leaves even when interior pages are gone; rows it cannot place
//!   land in a `lost_and_found` table.
//! - **`rows`**: warden's own, needing nothing else: the schema is recreated, then every
//!   table is read in rowid order; when a read fails, the scan jumps past the damaged rowid
//!   range (probing forward in growing steps) and goes on, so one bad page costs the rows on
//!   it, not the rest of the table. Indexes are recreated last; one that cannot be built
//!   (a UNIQUE index over rows that now collide) is reported and left out.
//!
//! `auto` (the default) uses `recover` when the shell is available and works, else `rows`.
//! Either way the output gets `PRAGMA integrity_check`, and the report lists per table what
//! was recovered and what failed.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use rusqlite::{Connection, OpenFlags};
use serde::{Deserialize, Serialize};

use rusqlite::types::Value;

use crate::copies::backup::sidecar;
use crate::copies::copy::{self, Failure, TempGuard};
use crate::format::pages::{PageFile, RawRow};
use crate::util::atomic;

/// How to salvage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// `recover` when the sqlite3 shell is available, else `rows`.
    #[default]
    Auto,
    /// The sqlite3 shell's `.recover`.
    Recover,
    /// warden's row-by-row copy.
    Rows,
}

/// What was recovered from one table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableReport {
    /// Table name.
    pub name: String,
    /// Rows written to the new file.
    pub rows: u64,
    /// Read errors met (each skipped a range of rows).
    pub errors: u64,
    /// Of `rows`, found only by reading the table's leaf pages directly (past damaged
    /// interior pages SQLite could not descend).
    pub rows_from_pages: u64,
    /// Of `rows`, from leaf pages no table reaches any more, placed here because this is
    /// the only table with their number of columns. The most suspect rows of all.
    pub rows_attributed_by_shape: u64,
    /// The first errors, verbatim.
    pub messages: Vec<String>,
}

/// The salvage report, also written beside the output as `<output>.salvage.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SalvageReport {
    /// Always true: a salvaged database is suspect until a human has checked it.
    pub suspect: bool,
    /// The damaged database (never modified).
    pub source: PathBuf,
    /// The new file.
    pub output: PathBuf,
    /// The method used.
    pub method: Method,
    /// Per table (for `rows`; for `recover`, counted in the output afterwards).
    pub tables: Vec<TableReport>,
    /// Rows in all tables of the output.
    pub total_rows: u64,
    /// Rows the `recover` method could not place (its `lost_and_found` table).
    pub lost_and_found_rows: u64,
    /// Schema objects that could not be recreated.
    pub schema_errors: Vec<String>,
    /// `PRAGMA integrity_check` of the output: `ok` or its first problems.
    pub output_integrity: Vec<String>,
    /// Why `auto` fell back from `recover`, if it did.
    pub fallback_reason: Option<String>,
    /// Wall time.
    pub duration_ms: u64,
}

/// Why a salvage could not be done.
#[derive(Debug, thiserror::Error)]
pub enum SalvageError {
    /// The target exists, or is the source.
    #[error("refusing to write `{target}`: {why}\n(hint: salvage into a new file; the original is never overwritten)")]
    Target {
        /// The target.
        target: PathBuf,
        /// Why.
        why: &'static str,
    },
    /// The source does not exist.
    #[error("`{db}` does not exist")]
    Missing {
        /// The source.
        db: PathBuf,
    },
    /// The source is a directory, or an empty file: there is nothing to salvage, and a
    /// "salvaged" file of nothing must not be made.
    #[error(
        "`{db}` {what}; there is nothing to salvage\n(hint: name the damaged database file itself; `warden backups` lists the last good backups)"
    )]
    NotADatabase {
        /// The source.
        db: PathBuf,
        /// `is a directory, not a database file` or `is an empty file: no tables, no data`.
        what: &'static str,
    },
    /// The sqlite3 shell was asked for and is not usable.
    #[error(
        "the `recover` method needs the sqlite3 shell with `.recover`: {why}\n(hint: `apt-get install sqlite3`, or use --method rows)"
    )]
    NoShell {
        /// Why.
        why: String,
    },
    /// Not even the schema could be read.
    #[error(
        "nothing could be read from `{db}`: {message}\n(hint: try --method recover, which reads pages directly; then restore a verified backup)"
    )]
    Unreadable {
        /// The source.
        db: PathBuf,
        /// SQLite's message.
        message: String,
    },
    /// A file operation failed.
    #[error("{action} `{path}`: {source}")]
    Io {
        /// What.
        action: &'static str,
        /// Where.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A SQLite call on the new file failed.
    #[error("{action} `{path}`: {source}")]
    Sqlite {
        /// What.
        action: &'static str,
        /// Where.
        path: PathBuf,
        /// The error.
        #[source]
        source: rusqlite::Error,
    },
}

impl SalvageError {
    /// The exit code (sysexits).
    pub fn exit_code(&self) -> u8 {
        use crate::util::exit;
        match self {
            SalvageError::Target { .. } => exit::CANTCREAT,
            SalvageError::Missing { .. } | SalvageError::NotADatabase { .. } => exit::NOINPUT,
            SalvageError::NoShell { .. } => exit::UNAVAILABLE,
            SalvageError::Unreadable { .. } => exit::DATAERR,
            SalvageError::Io { .. } | SalvageError::Sqlite { .. } => exit::IOERR,
        }
    }
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl Fn(std::io::Error) -> SalvageError + 'a {
    move |source| SalvageError::Io { action, path: path.to_owned(), source }
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (crate::storage::resolve(a), crate::storage::resolve(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Salvages `db` into the new file `to`.
///
/// # Errors
/// [`SalvageError`] when nothing could be written; a salvage that recovered little is still
/// a success, and its report says how little.
pub fn salvage(db: &Path, to: &Path, method: Method) -> Result<SalvageReport, SalvageError> {
    let started = Instant::now();
    if !db.exists() {
        return Err(SalvageError::Missing { db: db.to_owned() });
    }
    if db.is_dir() {
        return Err(SalvageError::NotADatabase { db: db.to_owned(), what: "is a directory, not a database file" });
    }
    if crate::copies::copy::is_empty_db(db) {
        return Err(SalvageError::NotADatabase { db: db.to_owned(), what: "is an empty file: no tables, no data" });
    }
    for suffix in ["", "-wal", "-journal", "-shm", "-warden.lock"] {
        if same_file(to, &sidecar(db, suffix)) {
            return Err(SalvageError::Target {
                target: to.to_owned(),
                why: "it is the damaged database or one of its files",
            });
        }
    }
    if to.exists() || sidecar(to, "-journal").exists() || sidecar(to, "-wal").exists() {
        return Err(SalvageError::Target { target: to.to_owned(), why: "it already exists" });
    }
    let parent = atomic::parent_of(to);
    let scratch = atomic::temp_path_for(&parent.join("salvage"));
    let _cleanup = TempGuard::new(vec![scratch.clone()]);
    std::fs::create_dir(&scratch).map_err(io_err("creating a scratch directory in", parent))?;
    // The damaged set, privately: SQLite may roll back a hot journal on this copy.
    let copy = scratch.join("damaged.db");
    copy::copy_set(db, &copy, None).map_err(|f| match f {
        Failure::Io { source, .. } => io_err("copying", db)(source),
        other => io_err("copying", db)(std::io::Error::other(other.to_string())),
    })?;
    let out_tmp = scratch.join("salvaged.db");
    let mut report = SalvageReport {
        suspect: true,
        source: db.to_owned(),
        output: to.to_owned(),
        method,
        tables: Vec::new(),
        total_rows: 0,
        lost_and_found_rows: 0,
        schema_errors: Vec::new(),
        output_integrity: Vec::new(),
        fallback_reason: None,
        duration_ms: 0,
    };
    let used = match method {
        Method::Recover => {
            recover_with_shell(&copy, &out_tmp).map_err(|why| SalvageError::NoShell { why })?;
            Method::Recover
        }
        Method::Rows => {
            salvage_rows(&copy, &out_tmp, &mut report)?;
            Method::Rows
        }
        Method::Auto => match recover_with_shell(&copy, &out_tmp) {
            Ok(()) => Method::Recover,
            Err(why) => {
                report.fallback_reason = Some(why);
                let _ = std::fs::remove_file(&out_tmp);
                salvage_rows(&copy, &out_tmp, &mut report)?;
                Method::Rows
            }
        },
    };
    report.method = used;
    let sq = |action: &'static str| {
        let path = to.to_owned();
        move |source| SalvageError::Sqlite { action, path, source }
    };
    let out = Connection::open_with_flags(&out_tmp, OpenFlags::SQLITE_OPEN_READ_WRITE).map_err(sq("opening"))?;
    out.execute_batch("PRAGMA journal_mode=DELETE;").map_err(sq("finishing"))?;
    if used == Method::Recover {
        report.tables = count_tables(&out).map_err(sq("counting rows of"))?;
        report.lost_and_found_rows =
            report.tables.iter().filter(|t| t.name.starts_with("lost_and_found")).map(|t| t.rows).sum();
    }
    report.total_rows = report.tables.iter().map(|t| t.rows).sum();
    report.output_integrity = {
        let mut st = out.prepare("PRAGMA integrity_check").map_err(sq("checking"))?;
        let rows = st.query_map([], |r| r.get::<_, String>(0)).map_err(sq("checking"))?;
        rows.take(20).collect::<Result<_, _>>().map_err(sq("checking"))?
    };
    drop(out);
    std::fs::File::open(&out_tmp).and_then(|f| f.sync_all()).map_err(io_err("syncing", to))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&out_tmp, std::fs::Permissions::from_mode(0o600)).map_err(io_err("chmod", to))?;
    }
    report.duration_ms = crate::util::fmt::ms(started.elapsed());
    // Publish without ever replacing anything: link fails if the target appeared meanwhile.
    std::fs::hard_link(&out_tmp, to).map_err(io_err("publishing", to))?;
    atomic::sync_dir(parent).map_err(io_err("syncing", parent))?;
    let json = serde_json::to_vec_pretty(&report).map_err(|e| io_err("encoding", to)(e.into()))?;
    atomic::write_atomic(&sidecar(to, ".salvage.json"), &json, 0o600).map_err(io_err("writing the report for", to))?;
    Ok(report)
}

/// Runs `sqlite3 COPY .recover | sqlite3 OUT`.
fn recover_with_shell(copy: &Path, out: &Path) -> Result<(), String> {
    let mut dump = Command::new("sqlite3")
        .arg(copy)
        .arg(".recover")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run sqlite3: {e}"))?;
    let Some(stdout) = dump.stdout.take() else { return Err("no output from sqlite3 .recover".into()) };
    let load = Command::new("sqlite3")
        .arg(out)
        .stdin(stdout)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("cannot run sqlite3: {e}"))?;
    let dumped = dump.wait_with_output().map_err(|e| format!("sqlite3 .recover: {e}"))?;
    let err = String::from_utf8_lossy(&dumped.stderr);
    if !dumped.status.success() || err.contains("unknown command") || err.contains("Error: unknown") {
        return Err(format!("sqlite3 .recover failed ({}): {}", dumped.status, err.trim()));
    }
    if !load.status.success() {
        return Err(format!("loading the recovered SQL failed: {}", String::from_utf8_lossy(&load.stderr).trim()));
    }
    if !out.exists() {
        return Err("sqlite3 .recover produced nothing".into());
    }
    Ok(())
}

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn count_tables(conn: &Connection) -> rusqlite::Result<Vec<TableReport>> {
    let names: Vec<String> = {
        let mut st = conn
            .prepare("SELECT name FROM sqlite_schema WHERE type='table' AND name NOT LIKE 'sqlite_%' ORDER BY name")?;
        st.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?
    };
    names
        .into_iter()
        .map(|name| {
            let rows: i64 = conn.query_row(&format!("SELECT count(*) FROM {}", quote(&name)), [], |r| r.get(0))?;
            Ok(TableReport { name, rows: u64::try_from(rows).unwrap_or(0), ..Default::default() })
        })
        .collect()
}

struct SchemaRow {
    kind: String,
    name: String,
    table: String,
    root: Option<i64>,
    sql: Option<String>,
}

/// warden's own method: recreate the schema, copy readable rows, skip damaged ranges.
fn salvage_rows(copy: &Path, out_path: &Path, report: &mut SalvageReport) -> Result<(), SalvageError> {
    let unreadable =
        |e: rusqlite::Error| SalvageError::Unreadable { db: report.source.clone(), message: e.to_string() };
    let src = Connection::open_with_flags(copy, OpenFlags::SQLITE_OPEN_READ_WRITE).map_err(unreadable)?;
    // Read damaged schemas as far as possible; never write the copy's schema back.
    let _ = src.execute_batch("PRAGMA writable_schema=ON; PRAGMA query_only=ON;");
    let schema: Vec<SchemaRow> = {
        let mut st = src
            .prepare(
                "SELECT type, name, tbl_name, rootpage, sql FROM sqlite_schema ORDER BY (type='table') DESC, rowid",
            )
            .map_err(unreadable)?;
        st.query_map([], |r| {
            Ok(SchemaRow { kind: r.get(0)?, name: r.get(1)?, table: r.get(2)?, root: r.get(3).ok(), sql: r.get(4)? })
        })
        .map_err(unreadable)?
        .collect::<Result<_, _>>()
        .map_err(unreadable)?
    };
    let sq = |action: &'static str| {
        let path = out_path.to_owned();
        move |source| SalvageError::Sqlite { action, path, source }
    };
    let mut out = Connection::open(out_path).map_err(sq("creating"))?;
    out.execute_batch("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;").map_err(sq("preparing"))?;
    let tables: Vec<&SchemaRow> =
        schema.iter().filter(|s| s.kind == "table" && !s.name.starts_with("sqlite_") && s.sql.is_some()).collect();
    for t in &tables {
        if let Err(e) = out.execute_batch(t.sql.as_deref().unwrap_or_default()) {
            report.schema_errors.push(format!("table {}: {e}", t.name));
        }
    }
    for t in &tables {
        let mut tr = TableReport { name: t.name.clone(), ..Default::default() };
        copy_table(&src, &mut out, t, &mut tr);
        report.tables.push(tr);
    }
    drop(src);
    // Second pass, below SQLite: rows on leaf pages that reads through the b-tree missed.
    if let Ok(pages) = PageFile::open(copy) {
        let tx = out.transaction().map_err(sq("writing"))?;
        from_pages(&pages, &tx, &schema, &tables, report).map_err(sq("writing"))?;
        tx.commit().map_err(sq("writing"))?;
    }
    for s in schema.iter().filter(|s| s.kind != "table" && s.sql.is_some() && !s.name.starts_with("sqlite_")) {
        if let Err(e) = out.execute_batch(s.sql.as_deref().unwrap_or_default()) {
            report.schema_errors.push(format!("{} {} on {}: {e} (left out)", s.kind, s.name, s.table));
        }
    }
    Ok(())
}

/// Column count and INTEGER PRIMARY KEY position of `table` in the new file.
fn shape(out: &Connection, table: &str) -> rusqlite::Result<(usize, Option<usize>)> {
    let mut st = out.prepare(&format!("PRAGMA table_info({})", quote(table)))?;
    let cols: Vec<(String, i64)> =
        st.query_map([], |r| Ok((r.get::<_, String>(2)?, r.get::<_, i64>(5)?)))?.collect::<Result<_, _>>()?;
    let pks: Vec<usize> = cols.iter().enumerate().filter(|(_, c)| c.1 > 0).map(|(i, _)| i).collect();
    let ipk = match pks.as_slice() {
        [i] if cols[*i].0.eq_ignore_ascii_case("integer") => Some(*i),
        _ => None,
    };
    Ok((cols.len(), ipk))
}

/// Inserts a raw row into `table` unless its rowid is already there; true if inserted.
fn insert_raw(out: &Connection, table: &str, width: usize, ipk: Option<usize>, row: &RawRow) -> rusqlite::Result<bool> {
    if row.values.len() > width {
        return Ok(false);
    }
    let mut values = row.values.clone();
    values.resize(width, Value::Null);
    if let Some(i) = ipk
        && values[i] == Value::Null
    {
        values[i] = Value::Integer(row.rowid);
    }
    let cols: Vec<String> = {
        let st = out.prepare(&format!("SELECT * FROM {} LIMIT 0", quote(table)))?;
        st.column_names().map(quote).collect()
    };
    let sql = format!(
        "INSERT OR IGNORE INTO {}(rowid,{}) VALUES ({})",
        quote(table),
        cols.join(","),
        vec!["?"; width + 1].join(",")
    );
    let n = out.execute(&sql, rusqlite::params_from_iter(std::iter::once(Value::Integer(row.rowid)).chain(values)))?;
    Ok(n == 1)
}

fn from_pages(
    pages: &PageFile,
    out: &Connection,
    schema: &[SchemaRow],
    tables: &[&SchemaRow],
    report: &mut SalvageReport,
) -> rusqlite::Result<()> {
    let mut seen = std::collections::HashSet::new();
    // Index b-trees are not rows; mark their pages so they never count as orphans.
    for s in schema.iter().filter(|s| s.kind == "index") {
        if let Some(root) = s.root.and_then(|r| u32::try_from(r).ok()) {
            seen.insert(root);
        }
    }
    let mut shapes = Vec::new();
    for t in tables {
        let rowid = is_rowid_table(t.sql.as_deref().unwrap_or_default());
        let Ok((width, ipk)) = shape(out, &t.name) else { continue };
        shapes.push((t.name.clone(), width, ipk, rowid));
        let Some(root) = t.root.and_then(|r| u32::try_from(r).ok()).filter(|_| rowid) else { continue };
        for leaf in pages.table_leaves(root, &mut seen) {
            for row in pages.leaf_rows(leaf) {
                if insert_raw(out, &t.name, width, ipk, &row)?
                    && let Some(tr) = report.tables.iter_mut().find(|r| r.name == t.name)
                {
                    tr.rows += 1;
                    tr.rows_from_pages += 1;
                }
            }
        }
    }
    // Leaf pages no table reaches (their parent page is gone), except free pages, whose
    // rows were deleted on purpose.
    let free = pages.freelist();
    let mut lost = 0u64;
    for p in 2..=pages.page_count() {
        if seen.contains(&p) || free.contains(&p) || !pages.is_table_leaf(p) {
            continue;
        }
        for row in pages.leaf_rows(p) {
            let fits: Vec<&(String, usize, Option<usize>, bool)> =
                shapes.iter().filter(|(_, w, _, rowid)| *rowid && *w == row.values.len()).collect();
            if let [(name, width, ipk, _)] = fits.as_slice() {
                if insert_raw(out, name, *width, *ipk, &row)?
                    && let Some(tr) = report.tables.iter_mut().find(|r| &r.name == name)
                {
                    tr.rows += 1;
                    tr.rows_attributed_by_shape += 1;
                }
                continue;
            }
            if lost == 0 {
                out.execute_batch("CREATE TABLE IF NOT EXISTS lost_and_found(page INTEGER, rowid INTEGER, ncol INTEGER, value_json TEXT)")?;
            }
            let json: Vec<serde_json::Value> = row
                .values
                .iter()
                .map(|v| match v {
                    Value::Null => serde_json::Value::Null,
                    Value::Integer(i) => (*i).into(),
                    Value::Real(f) => (*f).into(),
                    Value::Text(t) => t.clone().into(),
                    Value::Blob(b) => b.iter().map(|x| format!("{x:02x}")).collect::<String>().into(),
                })
                .collect();
            out.execute(
                "INSERT INTO lost_and_found VALUES (?1, ?2, ?3, ?4)",
                rusqlite::params![
                    p,
                    row.rowid,
                    i64::try_from(row.values.len()).unwrap_or(-1),
                    serde_json::Value::Array(json).to_string()
                ],
            )?;
            lost += 1;
        }
    }
    report.lost_and_found_rows += lost;
    Ok(())
}

fn is_rowid_table(sql: &str) -> bool {
    !sql.to_ascii_uppercase().replace(char::is_whitespace, "").contains("WITHOUTROWID")
}

/// Copies the readable rows of one table, jumping over rowid ranges that fail to read.
fn copy_table(src: &Connection, out: &mut Connection, t: &SchemaRow, tr: &mut TableReport) {
    let name = quote(&t.name);
    let cols: Vec<String> = match src.prepare(&format!("SELECT * FROM {name} LIMIT 0")) {
        Ok(st) => st.column_names().map(quote).collect(),
        Err(e) => {
            tr.errors += 1;
            tr.messages.push(format!("cannot read the table: {e}"));
            return;
        }
    };
    let placeholders = vec!["?"; cols.len() + 1].join(",");
    let insert = format!("INSERT OR IGNORE INTO {name}(rowid,{}) VALUES ({placeholders})", cols.join(","));
    let rowid = is_rowid_table(t.sql.as_deref().unwrap_or_default());
    let Ok(tx) = out.transaction() else { return };
    let mut after: i64 = i64::MIN;
    let note = |tr: &mut TableReport, msg: String| {
        tr.errors += 1;
        if tr.messages.len() < 10 {
            tr.messages.push(msg);
        }
    };
    'ranges: loop {
        let sql = if rowid {
            format!("SELECT rowid, * FROM {name} WHERE rowid > ?1 ORDER BY rowid")
        } else {
            format!("SELECT NULL, * FROM {name} WHERE ?1 IS NOT NULL")
        };
        let mut st = match src.prepare(&sql) {
            Ok(s) => s,
            Err(e) => {
                note(tr, format!("cannot read the table: {e}"));
                break;
            }
        };
        let mut rows = match st.query([after]) {
            Ok(r) => r,
            Err(e) => {
                note(tr, format!("after rowid {after}: {e}"));
                break;
            }
        };
        loop {
            match rows.next() {
                Ok(Some(row)) => {
                    let values: Vec<rusqlite::types::Value> =
                        (0..=cols.len()).map(|i| row.get(i).unwrap_or(rusqlite::types::Value::Null)).collect();
                    if let Ok(id) = row.get::<_, i64>(0) {
                        after = id;
                    }
                    if !rowid {
                        let vals = &values[1..];
                        let ins = format!(
                            "INSERT OR IGNORE INTO {name}({}) VALUES ({})",
                            cols.join(","),
                            vec!["?"; cols.len()].join(",")
                        );
                        if tx.execute(&ins, rusqlite::params_from_iter(vals)).is_ok() {
                            tr.rows += 1;
                        }
                        continue;
                    }
                    if tx.execute(&insert, rusqlite::params_from_iter(&values)).is_ok() {
                        tr.rows += 1;
                    }
                }
                Ok(None) => break 'ranges,
                Err(e) => {
                    note(tr, format!("reading after rowid {after}: {e}"));
                    if !rowid {
                        break 'ranges;
                    }
                    // Probe forward for the next readable rowid, in growing steps.
                    let mut step: i64 = 1;
                    loop {
                        let probe = after.saturating_add(step);
                        let ok = src
                            .query_row(
                                &format!("SELECT rowid FROM {name} WHERE rowid > ?1 ORDER BY rowid LIMIT 1"),
                                [probe],
                                |r| r.get::<_, i64>(0),
                            )
                            .map(Some)
                            .or_else(
                                |e| if matches!(e, rusqlite::Error::QueryReturnedNoRows) { Ok(None) } else { Err(e) },
                            );
                        match ok {
                            Ok(Some(_)) => {
                                after = probe;
                                continue 'ranges;
                            }
                            Ok(None) => break 'ranges,
                            // Every seek past here fails: the rest is unreachable this way.
                            Err(_) if step == i64::MAX || probe == i64::MAX => break 'ranges,
                            Err(_) => step = step.saturating_mul(2),
                        }
                    }
                }
            }
        }
    }
    let _ = tx.commit();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_rowid_is_recognised() {
        assert!(!is_rowid_table("CREATE TABLE t(a PRIMARY KEY) WITHOUT  ROWID"));
        assert!(is_rowid_table("CREATE TABLE t(a)"));
    }
}

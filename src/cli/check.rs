//! `warden check`: the integrity gate on its own ([`sqlite_warden::session::gate::check_only`])
//! and its report, as text or with `--json` one JSON document (errors on stderr).
//! Does not own: the gate itself.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args as ClapArgs;
use sqlite_warden::session::gate::{self, CheckOptions, GateFailure, GateReport};
use sqlite_warden::util::exit;

use super::CliError;
use super::render::human_bytes;
use super::settings::CheckArg;
use super::shared::{cancel_on_signals, check_mode, emit, json_line, parse_duration, secs};

/// `warden check <db>`: the integrity gate on its own.
#[derive(Debug, ClapArgs)]
#[command(after_help = "\
Read-only and safe at any time, also while the engine runs: the raw scan of the files, then
integrity_check (or quick_check) and foreign_key_check on a private copy in a scratch
directory that is always removed. Nothing is published; the database is never written.
With a writer running, the copy is a consistent snapshot taken with the online backup API.
With no writer, warden holds the writer lock during the check (an engine starting meanwhile
is refused); after a crashed writer, or beside a database no guarded engine uses, the lock is
left alone (as evidence for `warden status`, and to create no lock file). Either way a
journal or WAL (a hot journal of a writer that died included) is recovered on the private
copy, never on the original: the database and its -wal, -journal and -shm stay
byte-identical, and nothing is created beside them.

Exit codes:
  0   the gate passed
  65  the gate failed: damage found (or the time budget ran out)
  66  the database is missing or empty
  74  I/O error, or no room for the private copy (see --scratch-dir)
  75  a writer outside warden kept changing the files while they were copied: check
      again once it is idle
  130 interrupted

Examples:
  warden check /var/lib/engine/engine.db
  warden check --check quick --budget 10m --json /var/lib/engine/engine.db")]
pub struct CheckArgs {
    /// The database file.
    db: PathBuf,
    /// `full` (integrity_check, default) or `quick` (quick_check).
    #[arg(long, value_enum)]
    check: Option<CheckArg>,
    /// Give up after this long (`90s`, `30m`; default `none`); a check that runs out fails.
    #[arg(long, value_name = "DURATION")]
    budget: Option<String>,
    /// Where the private copy is made (default: $TMPDIR or /tmp); needs room for one copy.
    #[arg(long, value_name = "DIR")]
    scratch_dir: Option<PathBuf>,
    /// Print the gate report as JSON (with `exit_code`).
    #[arg(long)]
    json: bool,
}

/// `warden check`.
pub fn check(args: CheckArgs) -> Result<ExitCode, CliError> {
    let db = sqlite_warden::storage::resolve(&args.db)
        .map_err(|source| CliError::Io { context: format!("resolving `{}`", args.db.display()), source })?;
    let budget = match &args.budget {
        Some(s) => parse_duration("--budget", s)?,
        None => None,
    };
    let opts = CheckOptions {
        check: check_mode(args.check).unwrap_or_default(),
        budget,
        scratch_dir: args.scratch_dir.clone(),
        guard: None,
        cancel: Some(cancel_on_signals()?),
        progress: None,
    };
    let report = match gate::check_only(&db, &opts) {
        Ok(r) => r,
        Err(e) if e.is_space() => {
            return Err(CliError::Failed {
                message: format!(
                    "{e}\n(hint: `warden check --scratch-dir DIR` puts the private copy on a disk with room)"
                ),
                code: exit::IOERR,
            });
        }
        Err(e) => return Err(e.into()),
    };
    let code: u8 = match (report.passed, report.failure) {
        (true, _) => exit::OK,
        (false, Some(GateFailure::Missing | GateFailure::Empty)) => exit::NOINPUT,
        (false, Some(GateFailure::Seal)) => exit::UNSEALED,
        (false, _) => exit::DATAERR,
    };
    if args.json {
        let mut v = serde_json::to_value(&report).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            o.insert("exit_code".into(), code.into());
        }
        emit(&json_line(&v))?;
    } else {
        emit(&render_check(&report))?;
    }
    Ok(ExitCode::from(code))
}

fn render_check(r: &GateReport) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "{}: integrity gate {}", r.db.display(), r.summary());
    let (failure_reasons, notes): (Vec<&String>, Vec<&String>) = if r.passed {
        (Vec::new(), r.reasons.iter().collect())
    } else {
        // The last reason says how the set was read; the others say why it failed.
        match r.failure {
            Some(GateFailure::Missing | GateFailure::Empty) => (r.reasons.iter().collect(), Vec::new()),
            _ => {
                let n = r.reasons.len().saturating_sub(1);
                (r.reasons[..n].iter().collect(), r.reasons[n..].iter().collect())
            }
        }
    };
    // The first reason is in the summary line already.
    for reason in failure_reasons.iter().skip(1) {
        let _ = writeln!(o, "  reason:    {reason}");
    }
    for note in &notes {
        let _ = writeln!(o, "  read:      {note}");
    }
    if let Some(s) = &r.scan {
        let warnings: Vec<_> = s.findings.iter().filter(|f| !f.is_fatal()).collect();
        let fatal = s.findings.len() - warnings.len();
        let wal = s.wal.as_ref().map(|_| ", with a -wal").unwrap_or_default();
        let verdict = if fatal > 0 { format!("{fatal} fatal finding(s)") } else { "ok".into() };
        let _ = writeln!(o, "  scan:      {verdict} ({}{wal})", human_bytes(s.db_size));
        for f in s.findings.iter() {
            let sev = if f.is_fatal() { "FATAL" } else { "warning" };
            let _ = writeln!(o, "    {sev} {}: {}", f.code, f.message);
        }
    }
    if let Some(i) = &r.integrity {
        let fk = if i.foreign_key_violations > 0 {
            format!(", {} foreign key violation(s)", i.foreign_key_violations)
        } else if i.ok {
            ", no foreign key violations".into()
        } else {
            String::new()
        };
        let lines = i.problem_lines();
        if i.ok || lines.is_empty() {
            let _ = writeln!(o, "  check:     {}{fk} ({})", i.summary(), secs(i.duration_ms));
        } else {
            let _ = writeln!(
                o,
                "  check:     {} FAILED: {} problem(s){fk} ({})",
                i.mode.pragma(),
                lines.len(),
                secs(i.duration_ms)
            );
            for site in i.damage_sites() {
                let what =
                    site.tree.map_or_else(|| "outside any b-tree".to_owned(), |t| format!("b-tree rooted at page {t}"));
                let pages = match site.pages.len() {
                    0 => String::new(),
                    1 => format!(" on page {}", site.pages[0]),
                    n if n <= 8 => format!(" on pages {}", join(&site.pages)),
                    n => format!(" on {n} pages ({}, …)", join(&site.pages[..8])),
                };
                let _ = writeln!(o, "    {what}: {} problem(s){pages}", site.problems);
            }
            // The first few, as SQLite said them; all of them with -v or in --json.
            let shown = if super::term::verbose() { lines.len() } else { lines.len().min(3) };
            for l in &lines[..shown] {
                let _ = writeln!(o, "      {l}");
            }
            if lines.len() > shown {
                let _ = writeln!(o, "      … {} more (all of them: `-v`, or `--json`)", lines.len() - shown);
            }
        }
        if !i.ok {
            for m in i.foreign_key_messages.iter().take(5) {
                let _ = writeln!(o, "    foreign key: {m}");
            }
        }
    }
    if let Some(c) = &r.seal {
        render_seal(&mut o, c);
    }
    let _ = writeln!(o, "  took:      {}; nothing was published and the private copy is gone", secs(r.duration_ms));
    if !r.passed && !matches!(r.failure, Some(GateFailure::Missing | GateFailure::Empty | GateFailure::Seal)) {
        let _ = writeln!(
            o,
            "  hint:      the database was not modified; restore a verified backup (`warden restore`) or salvage what can be saved (`warden salvage`)"
        );
    }
    o
}

fn join(pages: &[u64]) -> String {
    pages.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
}

/// The seal lines of a gate report (`warden check`, `warden run`, `warden accept`).
pub(super) fn render_seal(o: &mut String, c: &sqlite_warden::copies::seal::SealCheck) {
    use sqlite_warden::copies::seal::SealVerdict;
    let head = match c.verdict {
        SealVerdict::None => "none yet".to_owned(),
        SealVerdict::Matches => format!("matches ({})", c.message),
        SealVerdict::Superseded => format!("superseded: {}", c.message),
        SealVerdict::Differs => format!(
            "DIFFERS: {} page(s) are not what {} sealed at {}",
            c.differing_pages,
            c.sealed_by.as_deref().unwrap_or("the last clean close"),
            c.sealed_at.as_deref().unwrap_or("?")
        ),
        SealVerdict::Broken => format!("BROKEN: {}", c.message.lines().next().unwrap_or_default()),
    };
    let _ = writeln!(o, "  seal:      {head}");
    for p in c.pages.iter().take(20) {
        let _ = writeln!(o, "    page {:>8}  {}", p.page, p.object);
    }
    if c.pages.len() > 20 || c.differing_pages > c.pages.len() as u64 {
        let _ = writeln!(o, "    … {} page(s) in all (--json lists the first {})", c.differing_pages, c.pages.len());
    }
    if let Some(t) = &c.file_changed {
        let _ =
            writeln!(o, "    file last changed {t} (modification time {})", c.file_modified.as_deref().unwrap_or("?"));
    }
    if let Some(cmd) = &c.restore_command {
        let _ = writeln!(o, "  restore:   {cmd}   (the sealed state)");
    }
    if c.fails()
        && let Some(cmd) = &c.accept_command
    {
        let _ = writeln!(o, "  accept:    {cmd}   (checks it as it is, and seals it)");
    }
}

//! Reading the audit log: filtering records ([`AuditFilter`], [`parse_since`]), following the
//! file across rotation and truncation ([`AuditReader`]) and its tail ([`tail_audit`]).
//! Does not own writing it or the record format ([`crate::guard::audit`]).

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use jiff::Timestamp;

use crate::guard::audit::{AuditEvent, AuditRecord};

/// Which audit records to show. Empty fields match everything; several events are ORed.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Only these events.
    pub events: Vec<AuditEvent>,
    /// Only records about this database (its `-wal`, `-journal` included).
    pub db: Option<PathBuf>,
    /// Only records at or after this time.
    pub since: Option<Timestamp>,
    /// Only records of this process id.
    pub pid: Option<u32>,
}

impl AuditFilter {
    /// True when `r` passes every given condition.
    pub fn matches(&self, r: &AuditRecord) -> bool {
        if !self.events.is_empty() && !self.events.contains(&r.event) {
            return false;
        }
        if self.pid.is_some_and(|p| p != r.process.pid) {
            return false;
        }
        if let Some(since) = self.since {
            match r.ts.parse::<Timestamp>() {
                Ok(t) if t >= since => {}
                _ => return false,
            }
        }
        if let Some(want) = &self.db {
            let Some(got) = &r.db else { return false };
            let (w, g) = (want.as_os_str().to_string_lossy(), got.as_os_str().to_string_lossy());
            let same = g == w
                || ["-wal", "-journal", "-shm"].iter().any(|s| g.strip_suffix(s) == Some(w.as_ref()))
                || std::fs::canonicalize(want).ok().is_some_and(|c| c == *got);
            if !same {
                return false;
            }
        }
        true
    }
}

/// Parses `--since`: an RFC 3339 time (`2026-03-01T12:00:00Z`) or a duration back from
/// `now` (`90s`, `15m`, `2h`, `7d`).
///
/// # Errors
/// A message saying what is accepted.
pub fn parse_since(s: &str, now: Timestamp) -> Result<Timestamp, String> {
    if let Ok(t) = s.parse::<Timestamp>() {
        return Ok(t);
    }
    let d = humantime::parse_duration(s.trim()).map_err(|_| {
        format!("`{s}` is neither an RFC 3339 time (2026-03-01T12:00:00Z) nor a duration (15m, 2h, 7d)")
    })?;
    let d = jiff::SignedDuration::try_from(d).map_err(|e| format!("`{s}`: {e}"))?;
    now.checked_sub(d).map_err(|e| format!("`{s}`: {e}"))
}

/// One complete line of the audit log: its text exactly as written, and its record.
#[derive(Debug, Clone)]
pub struct AuditLine {
    /// The JSON line (without its newline), so `--json` passes unknown fields through.
    pub raw: String,
    /// The parsed record.
    pub record: AuditRecord,
}

/// Reads an audit log incrementally: complete lines only (a partial last line waits for its
/// newline), across `logrotate` renames (the rest of the old file is read, then the new
/// file from its start) and truncation (`copytruncate`: read again from the start).
#[derive(Debug)]
pub struct AuditReader {
    path: PathBuf,
    file: Option<(File, (u64, u64))>,
    offset: u64,
    partial: Vec<u8>,
    skipped: u64,
}

impl AuditReader {
    /// A reader of the log at `path` (which need not exist yet), from its beginning.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        AuditReader { path: path.into(), file: None, offset: 0, partial: Vec::new(), skipped: 0 }
    }

    /// Lines that were not valid records (garbage, a schema this warden cannot read).
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Calls `each` for every complete line added since the last call.
    ///
    /// # Errors
    /// I/O errors other than the log not existing (yet).
    pub fn poll(&mut self, each: &mut dyn FnMut(AuditLine)) -> io::Result<()> {
        if self.file.is_none() && !self.reopen()? {
            return Ok(());
        }
        self.drain(each)?;
        // Rotated: the path now names another file. Finish nothing more from the old one
        // (drained above) and start the new one from its beginning.
        if let Ok(md) = std::fs::metadata(&self.path)
            && self.file.as_ref().is_some_and(|(_, id)| *id != (md.dev(), md.ino()))
            && self.reopen()?
        {
            self.drain(each)?;
        }
        Ok(())
    }

    fn reopen(&mut self) -> io::Result<bool> {
        match File::open(&self.path) {
            Ok(f) => {
                let md = f.metadata()?;
                self.file = Some((f, (md.dev(), md.ino())));
                self.offset = 0;
                self.partial.clear();
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn drain(&mut self, each: &mut dyn FnMut(AuditLine)) -> io::Result<()> {
        let Some((f, _)) = self.file.as_mut() else { return Ok(()) };
        if f.metadata()?.len() < self.offset {
            // Truncated in place (copytruncate): start over.
            self.offset = 0;
            self.partial.clear();
        }
        f.seek(SeekFrom::Start(self.offset))?;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = match f.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.offset += n as u64;
            let mut chunk = &buf[..n];
            while let Some(nl) = chunk.iter().position(|&b| b == b'\n') {
                self.partial.extend_from_slice(&chunk[..nl]);
                chunk = &chunk[nl + 1..];
                let line = std::mem::take(&mut self.partial);
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                match serde_json::from_slice::<AuditRecord>(&line) {
                    Ok(record) => each(AuditLine { raw: String::from_utf8_lossy(&line).into_owned(), record }),
                    Err(_) => self.skipped += 1,
                }
            }
            self.partial.extend_from_slice(chunk);
        }
        Ok(())
    }
}

/// The last `n` records of the log at `path` that match `filter`, oldest first, and the
/// reader positioned after them (for `--follow`). A missing log is empty.
///
/// # Errors
/// I/O errors reading the log.
pub fn tail_audit(path: &Path, filter: &AuditFilter, n: usize) -> io::Result<(Vec<AuditLine>, AuditReader)> {
    let mut reader = AuditReader::new(path);
    let mut last: VecDeque<AuditLine> = VecDeque::with_capacity(n.min(4096));
    reader.poll(&mut |l| {
        if n > 0 && filter.matches(&l.record) {
            if last.len() == n {
                last.pop_front();
            }
            last.push_back(l);
        }
    })?;
    Ok((last.into(), reader))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn since_takes_times_and_durations() {
        let now: Timestamp = "2026-03-01T12:00:00Z".parse().unwrap();
        assert_eq!(parse_since("2026-03-01T11:00:00Z", now).unwrap(), "2026-03-01T11:00:00Z".parse().unwrap());
        assert_eq!(parse_since("90m", now).unwrap(), "2026-03-01T10:30:00Z".parse().unwrap());
        assert!(parse_since("yesterday", now).is_err());
    }

    #[test]
    fn audit_reader_waits_for_complete_lines_and_follows_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("audit.jsonl");
        let rec = |seq: u64| {
            let mut r = AuditRecord::new(AuditEvent::Open);
            r.seq = seq;
            serde_json::to_string(&r).unwrap()
        };
        let mut reader = AuditReader::new(&p);
        let mut seen = Vec::new();
        reader.poll(&mut |l| seen.push(l.record.seq)).unwrap();
        assert!(seen.is_empty(), "no log yet");
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&p).unwrap();
        let second = rec(2);
        let (head, tail) = second.split_at(10);
        write!(f, "{}\ngarbage\n{head}", rec(1)).unwrap();
        reader.poll(&mut |l| seen.push(l.record.seq)).unwrap();
        assert_eq!(seen, [1], "the partial line waits");
        writeln!(f, "{tail}").unwrap();
        reader.poll(&mut |l| seen.push(l.record.seq)).unwrap();
        assert_eq!(seen, [1, 2]);
        assert_eq!(reader.skipped(), 1);
        // logrotate: rename, one late line into the old file, then a new file.
        std::fs::rename(&p, dir.path().join("audit.jsonl.1")).unwrap();
        writeln!(f, "{}", rec(3)).unwrap();
        std::fs::write(&p, format!("{}\n", rec(4))).unwrap();
        reader.poll(&mut |l| seen.push(l.record.seq)).unwrap();
        assert_eq!(seen, [1, 2, 3, 4]);
        // copytruncate: emptied in place, then written again.
        std::fs::OpenOptions::new().write(true).open(&p).unwrap().set_len(0).unwrap();
        reader.poll(&mut |l| seen.push(l.record.seq)).unwrap();
        std::fs::write(&p, format!("{}\n", rec(5))).unwrap();
        reader.poll(&mut |l| seen.push(l.record.seq)).unwrap();
        assert_eq!(seen, [1, 2, 3, 4, 5]);
    }
}

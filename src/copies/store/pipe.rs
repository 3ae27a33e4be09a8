//! The other core: the whole file's SHA-256 runs on a worker thread while the page loop
//! reads, hashes, compresses or decompresses pages, and when a restore point is
//! materialized a second worker writes each chunk before it is hashed (hashing and writing
//! each cost as much as decoding, so neither waits for the other). The loop fills chunks of
//! whole pages and hands them over; they come back to be refilled, so memory stays at a
//! few chunks whatever the file's size.
//! Owns nothing of the format (that is `pack`) nor which pages go where (that is `mod`).

use std::fs::File;
use std::io::{self, IoSlice, Write};
use std::os::fd::OwnedFd;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use nix::fcntl::{FcntlArg, OFlag, SpliceFFlags, fcntl, splice, vmsplice};
use sha2::{Digest, Sha256};

/// Bytes per chunk: a whole number of pages of any size (512 .. 65536).
pub(super) const CHUNK: usize = 1 << 20;
/// Chunks in flight: one being filled, the rest queued, being written or being hashed.
const CHUNKS: usize = 6;

/// What the writer hands back: the file after its last write, or the first write error.
type Written = io::Result<File>;

/// Workers hashing (and, with a sink, first writing) every chunk in order.
pub(super) struct Whole {
    to: Option<SyncSender<Vec<u8>>>,
    back: Receiver<Vec<u8>>,
    hasher: Option<JoinHandle<String>>,
    writer: Option<JoinHandle<Written>>,
    spare: Vec<Vec<u8>>,
}

impl Whole {
    /// Starts the hashing worker; every chunk sent is hashed.
    pub(super) fn start() -> Whole {
        Self::spawn(None)
    }

    /// Starts both workers: every chunk sent is written to `sink`, then hashed.
    pub(super) fn start_writing(sink: File) -> Whole {
        Self::spawn(Some(sink))
    }

    fn spawn(sink: Option<File>) -> Whole {
        let (to, rx) = sync_channel::<Vec<u8>>(CHUNKS);
        let (tx_back, back) = sync_channel::<Vec<u8>>(CHUNKS);
        let (to_hash, writer) = match sink {
            None => (rx, None),
            Some(file) => {
                let (tx_hash, rx_hash) = sync_channel::<Vec<u8>>(CHUNKS);
                let writer = std::thread::Builder::new()
                    .name("warden-write".into())
                    .spawn(move || {
                        let mut out = Sink::new(file);
                        let mut failed: Option<io::Error> = None;
                        for chunk in rx {
                            if failed.is_none()
                                && let Err(e) = out.write_all(&chunk)
                            {
                                failed = Some(e);
                            }
                            // The hasher ends only when this sender is dropped.
                            let _ = tx_hash.send(chunk);
                        }
                        failed.map_or(Ok(out.file), Err)
                    })
                    .expect("spawning a thread");
                (rx_hash, Some(writer))
            }
        };
        let hasher = std::thread::Builder::new()
            .name("warden-hash".into())
            .spawn(move || {
                let mut whole = Sha256::new();
                for chunk in to_hash {
                    whole.update(&chunk);
                    // The loop may have stopped taking chunks back; that is fine.
                    let _ = tx_back.send(chunk);
                }
                crate::util::fmt::hex(&whole.finalize())
            })
            .expect("spawning a thread");
        Whole { to: Some(to), back, hasher: Some(hasher), writer, spare: (0..CHUNKS).map(|_| Vec::new()).collect() }
    }

    /// A chunk to fill, `CHUNK` bytes long (waits for one to come back when all are in
    /// flight). Its bytes are whatever it held before: the caller overwrites them, and
    /// truncates it to what it filled before sending it (zeroing a megabyte per chunk first
    /// would cost a tenth of a restore).
    pub(super) fn chunk(&mut self) -> Vec<u8> {
        let mut c = match self.spare.pop() {
            Some(c) => c,
            // The workers hold every chunk; the hasher sends each back. They end only when
            // `to` is dropped, which happens in `finish`.
            None => self.back.recv().unwrap_or_default(),
        };
        // Only the first use of a chunk, or the tail a short last chunk left, is zeroed.
        c.resize(CHUNK, 0);
        c
    }

    /// Hands a filled chunk over (in file order).
    pub(super) fn send(&mut self, chunk: Vec<u8>) {
        if let Some(to) = &self.to {
            // The workers only stop when `to` is dropped, or by a panic, which `finish` reports.
            let _ = to.send(chunk);
        }
    }

    /// Waits for the workers: the whole file's SHA-256 (hex), and the sink after its last
    /// write (`None` without one).
    ///
    /// # Errors
    /// A worker panicked.
    pub(super) fn finish(mut self) -> io::Result<(String, Option<Written>)> {
        drop(self.to.take());
        let panicked = || io::Error::other("a worker thread panicked");
        let written = match self.writer.take().map(JoinHandle::join) {
            None => None,
            Some(Ok(w)) => Some(w),
            Some(Err(_)) => return Err(panicked()),
        };
        match self.hasher.take().map(JoinHandle::join) {
            Some(Ok(sha)) => Ok((sha, written)),
            _ => Err(panicked()),
        }
    }
}

impl Drop for Whole {
    fn drop(&mut self) {
        drop(self.to.take());
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
        if let Some(h) = self.hasher.take() {
            let _ = h.join();
        }
    }
}

/// A file written through a pipe: `vmsplice` lends the chunk's pages to the pipe, `splice`
/// moves them into the file's page cache, all before `write_all` returns (so the chunk may
/// be refilled at once). Where the file system cannot splice, it falls back to `write(2)`.
struct Sink {
    file: File,
    pipe: Option<(OwnedFd, OwnedFd)>,
}

impl Sink {
    fn new(file: File) -> Sink {
        let pipe = nix::unistd::pipe2(OFlag::O_CLOEXEC).ok();
        if let Some((_, w)) = &pipe {
            // A bigger pipe means fewer round trips; the default (64 KiB) works too.
            let _ = fcntl(w, FcntlArg::F_SETPIPE_SZ(CHUNK as i32));
        }
        Sink { file, pipe }
    }

    fn write_all(&mut self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            let Some((r, w)) = &self.pipe else { return self.file.write_all(buf) };
            let lent = match vmsplice(w, &[IoSlice::new(buf)], SpliceFFlags::empty()) {
                Ok(n) => n,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => {
                    self.pipe = None;
                    continue;
                }
            };
            let mut moved = 0;
            let mut cannot = false;
            while moved < lent {
                match splice(r, None, &self.file, None, lent - moved, SpliceFFlags::empty()) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => moved += n,
                    Err(nix::errno::Errno::EINTR) => {}
                    Err(nix::errno::Errno::EINVAL) if moved == 0 => {
                        cannot = true;
                        break;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            if cannot {
                // This file system does not splice: the pipe holds the same bytes as the
                // chunk, so drop it and write the chunk with write(2) from here on.
                self.pipe = None;
                continue;
            }
            buf = &buf[lent..];
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(w: &mut Whole) -> Vec<u8> {
        let mut expect = Vec::new();
        for i in 0..11u8 {
            let mut c = w.chunk();
            assert_eq!(c.len(), CHUNK);
            c.truncate(CHUNK / 2 + usize::from(i) * 4097);
            c.fill(i);
            expect.extend_from_slice(&c);
            w.send(c);
        }
        expect
    }

    #[test]
    fn hashes_every_chunk_in_order() {
        let mut w = Whole::start();
        let expect = chunks(&mut w);
        let (sha, written) = w.finish().unwrap();
        assert_eq!(sha, crate::util::fmt::hex(&Sha256::digest(&expect)));
        assert!(written.is_none());
        assert_eq!(Whole::start().finish().unwrap().0, crate::util::fmt::hex(&Sha256::digest(b"")));
    }

    #[test]
    fn writes_every_chunk_in_order_through_the_pipe_then_hashes_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        let mut w = Whole::start_writing(File::create(&path).unwrap());
        let expect = chunks(&mut w);
        let (sha, written) = w.finish().unwrap();
        let file = written.unwrap().unwrap();
        assert_eq!(file.metadata().unwrap().len(), expect.len() as u64);
        assert_eq!(sha, crate::util::fmt::hex(&Sha256::digest(&expect)));
        assert_eq!(std::fs::read(&path).unwrap(), expect);
    }

    #[test]
    fn a_sink_that_cannot_splice_falls_back_to_write() {
        // A sink without a pipe is the path taken where splicing fails.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        let mut s = Sink { file: File::create(&path).unwrap(), pipe: None };
        s.write_all(b"abc").unwrap();
        s.write_all(&[7u8; 100_000]).unwrap();
        let got = std::fs::read(&path).unwrap();
        assert_eq!(&got[..3], b"abc");
        assert_eq!(got.len(), 100_003);
    }

    #[test]
    fn a_write_error_is_reported_and_hashing_goes_on() {
        // A file opened read-only refuses every write (EBADF), whichever path is taken.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ro");
        std::fs::write(&path, b"").unwrap();
        let mut w = Whole::start_writing(File::open(&path).unwrap());
        let expect = chunks(&mut w);
        let (sha, written) = w.finish().unwrap();
        assert!(written.unwrap().is_err());
        assert_eq!(sha, crate::util::fmt::hex(&Sha256::digest(&expect)));
    }
}

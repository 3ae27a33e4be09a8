//! The second core: the whole file's SHA-256 (and, when a restore point is materialized, the
//! writes) run on a worker thread while the page loop reads, hashes, compresses or
//! decompresses pages. The loop fills chunks of whole pages and hands them over; they come
//! back to be refilled, so memory stays at a few chunks whatever the file's size.
//! Owns nothing of the format (that is `pack`) nor which pages go where (that is `mod`).

use std::fs::File;
use std::io::{self, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use sha2::{Digest, Sha256};

/// Bytes per chunk: a whole number of pages of any size (512 .. 65536).
pub(super) const CHUNK: usize = 1 << 20;
/// Chunks in flight: one being filled, the rest queued or being hashed.
const CHUNKS: usize = 4;

/// What the worker hands back: the whole file's digest and the sink, or the write error.
type Finished = (String, io::Result<Option<File>>);

/// A worker hashing (and optionally writing) every chunk in order.
pub(super) struct Whole {
    to: Option<SyncSender<Vec<u8>>>,
    back: Receiver<Vec<u8>>,
    worker: Option<JoinHandle<Finished>>,
    spare: Vec<Vec<u8>>,
}

impl Whole {
    /// Starts the worker; every chunk sent is hashed and, with `sink`, written to it.
    pub(super) fn start(sink: Option<File>) -> Whole {
        let (to, rx) = sync_channel::<Vec<u8>>(CHUNKS);
        let (tx_back, back) = sync_channel::<Vec<u8>>(CHUNKS);
        let worker = std::thread::Builder::new()
            .name("warden-hash".into())
            .spawn(move || {
                let mut whole = Sha256::new();
                let mut sink = sink;
                let mut failed: Option<io::Error> = None;
                for chunk in rx {
                    whole.update(&chunk);
                    if failed.is_none()
                        && let Some(f) = sink.as_mut()
                        && let Err(e) = f.write_all(&chunk)
                    {
                        failed = Some(e);
                    }
                    // The loop may have stopped taking chunks back; that is fine.
                    let _ = tx_back.send(chunk);
                }
                let digest = crate::util::fmt::hex(&whole.finalize());
                (digest, failed.map_or(Ok(sink), Err))
            })
            .expect("spawning a thread");
        Whole {
            to: Some(to),
            back,
            worker: Some(worker),
            spare: (0..CHUNKS).map(|_| Vec::with_capacity(CHUNK)).collect(),
        }
    }

    /// An empty chunk to fill (waits for one to come back when all are in flight).
    pub(super) fn chunk(&mut self) -> Vec<u8> {
        let mut c = match self.spare.pop() {
            Some(c) => c,
            // The worker holds every chunk; it sends each back after hashing it. It ends
            // only when `to` is dropped, which happens in `finish`.
            None => self.back.recv().unwrap_or_else(|_| Vec::with_capacity(CHUNK)),
        };
        c.clear();
        c
    }

    /// Hands a filled chunk over (in file order).
    pub(super) fn send(&mut self, chunk: Vec<u8>) {
        if let Some(to) = &self.to {
            // The worker only stops when `to` is dropped, or by a panic, which `finish` reports.
            let _ = to.send(chunk);
        }
    }

    /// Waits for the worker: the whole file's SHA-256 (hex) and the sink after its last write.
    ///
    /// # Errors
    /// The sink's write error.
    pub(super) fn finish(mut self) -> Finished {
        drop(self.to.take());
        match self.worker.take().map(JoinHandle::join) {
            Some(Ok(done)) => done,
            _ => (String::new(), Err(io::Error::other("the hashing thread panicked"))),
        }
    }
}

impl Drop for Whole {
    fn drop(&mut self) {
        drop(self.to.take());
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_every_chunk_in_order_and_writes_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        let mut w = Whole::start(Some(File::create(&path).unwrap()));
        let mut expect = Vec::new();
        for i in 0..11u8 {
            let mut c = w.chunk();
            c.resize(CHUNK / 2 + usize::from(i), i);
            expect.extend_from_slice(&c);
            w.send(c);
        }
        let (sha, sink) = w.finish();
        drop(sink.unwrap());
        assert_eq!(sha, crate::util::fmt::hex(&Sha256::digest(&expect)));
        assert_eq!(std::fs::read(&path).unwrap(), expect);
    }

    #[test]
    fn without_a_sink_it_only_hashes() {
        let w = Whole::start(None);
        let (sha, sink) = w.finish();
        assert!(sink.unwrap().is_none());
        assert_eq!(sha, crate::util::fmt::hex(&Sha256::digest(b"")));
    }
}

//! SHA-256 while writing, for any backend: inline for small blobs, on a helper thread beside the
//! writes for large ones (SHA-256 was about half of a large upload's writer time).

use crate::types::Sha256;
use bytes::Bytes;
use sha2::Digest;

/// Blobs larger than this are hashed on a helper thread beside the writes.
const PARALLEL_HASH_AFTER: u64 = 4 * 1024 * 1024;
/// Chunks queued between the writing thread and the hashing thread.
const HASH_DEPTH: usize = 16;

/// Hashes and counts the bytes of one blob while a sink writes them.
#[derive(Clone, Default)]
pub struct BlobHasher {
    state: sha2::Sha256,
    size: u64,
}

impl BlobHasher {
    /// A hasher that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes seen so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Passes every chunk of `chunks` to `sink` and hashes it. Past the first few MiB the hashing
    /// runs on a scoped helper thread that lives only for this call: it ends when the chunks at
    /// hand do, so no thread is left waiting for the next bytes of a slow client.
    pub fn burst(
        &mut self,
        chunks: &mut dyn Iterator<Item = Bytes>,
        mut sink: impl FnMut(&Bytes) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        while self.size < PARALLEL_HASH_AFTER {
            let Some(chunk) = chunks.next() else {
                return Ok(());
            };
            self.state.update(&chunk);
            self.size += chunk.len() as u64;
            sink(&chunk)?;
        }
        let Some(first) = chunks.next() else {
            return Ok(());
        };
        let size = &mut self.size;
        let state = &mut self.state;
        std::thread::scope(|s| {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Bytes>(HASH_DEPTH);
            let mut local = state.clone();
            let helper = std::thread::Builder::new()
                .name("depot-hash".into())
                .spawn_scoped(s, move || {
                    for chunk in rx {
                        local.update(&chunk);
                    }
                    local
                });
            let Ok(helper) = helper else {
                // No thread to be had: hash inline.
                for chunk in std::iter::once(first).chain(chunks) {
                    state.update(&chunk);
                    *size += chunk.len() as u64;
                    sink(&chunk)?;
                }
                return Ok(());
            };
            let mut res = Ok(());
            for chunk in std::iter::once(first).chain(chunks) {
                *size += chunk.len() as u64;
                // A send fails only if the helper is gone (panicked): join reports it.
                let _ = tx.send(chunk.clone());
                if let Err(e) = sink(&chunk) {
                    res = Err(e);
                    break;
                }
            }
            drop(tx);
            match helper.join() {
                Ok(done) => *state = done,
                Err(_) => return Err(std::io::Error::other("hashing thread panicked")),
            }
            res
        })
    }

    /// The SHA-256 of everything seen.
    pub fn finish(self) -> Sha256 {
        Sha256(self.state.finalize().into())
    }
}

impl std::fmt::Debug for BlobHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobHasher")
            .field("size", &self.size)
            .finish()
    }
}

//! Blobs on the local filesystem: `<data>/blobs/sha256/ab/cd/<hex>`, written via `<data>/tmp/`.

use super::{BlobInfo, BlobReader, BlobStore, TempBlob};
use crate::error::{Error, Result};
use crate::types::Sha256;
use std::fs;
use std::path::{Path, PathBuf};

/// [`BlobStore`] on a local directory. Temp and blob dirs share one filesystem, so a rename is
/// atomic.
pub struct LocalStore {
    tmp: PathBuf,
    blobs: PathBuf,
    quarantine: PathBuf,
}

fn io(context: &str) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::from_io(context, e)
}

/// fsync a directory so a rename or create inside it survives a crash.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

impl LocalStore {
    /// Opens the store under `data_dir`, creating its directories.
    pub fn open(data_dir: &Path) -> Result<Self> {
        let tmp = data_dir.join("tmp");
        let blobs = data_dir.join("blobs").join("sha256");
        fs::create_dir_all(&tmp).map_err(io("creating temp dir"))?;
        fs::create_dir_all(&blobs).map_err(io("creating blob dir"))?;
        let quarantine = data_dir.join("quarantine");
        Ok(Self {
            tmp,
            blobs,
            quarantine,
        })
    }

    /// Where the blob `sha` lives.
    pub fn blob_path(&self, sha: &Sha256) -> PathBuf {
        let hex = sha.to_hex();
        self.blobs.join(&hex[0..2]).join(&hex[2..4]).join(hex)
    }
}

impl BlobStore for LocalStore {
    fn create_temp(&self) -> Result<TempBlob> {
        let path = self.tmp.join(format!("{}.part", ulid::Ulid::new()));
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io("creating temp file"))?;
        Ok(TempBlob::new(path, file))
    }

    fn commit(&self, mut temp: TempBlob, sha: &Sha256) -> Result<()> {
        let dest = self.blob_path(sha);
        if dest.exists() {
            return Ok(()); // dropping `temp` removes the duplicate bytes
        }
        let dir = dest.parent().expect("blob path has a parent");
        if !dir.exists() {
            fs::create_dir_all(dir).map_err(io("creating blob dir"))?;
            // The new fan-out dirs must themselves be durable entries of their parents.
            sync_dir(dir.parent().expect("fan-out dir has a parent")).map_err(io("syncing dir"))?;
            sync_dir(&self.blobs).map_err(io("syncing dir"))?;
        }
        temp.file.take();
        fs::rename(&temp.path, &dest).map_err(io("moving blob into place"))?;
        temp.path = PathBuf::new(); // committed: nothing for Drop to remove
        sync_dir(dir).map_err(io("syncing blob dir"))?;
        Ok(())
    }

    fn open(&self, sha: &Sha256) -> Result<Option<(Box<dyn BlobReader>, u64)>> {
        match fs::File::open(self.blob_path(sha)) {
            Ok(f) => {
                let len = f.metadata().map_err(io("reading blob"))?.len();
                Ok(Some((Box::new(f), len)))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::from_io("opening blob", e)),
        }
    }

    fn remove(&self, sha: &Sha256) -> Result<()> {
        let path = self.blob_path(sha);
        match fs::remove_file(&path) {
            Ok(()) => {
                if let Some(dir) = path.parent() {
                    let _ = sync_dir(dir);
                }
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::from_io("removing blob", e)),
        }
    }

    fn list(&self) -> Result<Vec<BlobInfo>> {
        let mut out = Vec::new();
        let read = |p: &Path| fs::read_dir(p).map_err(io("listing blobs"));
        for a in read(&self.blobs)? {
            let a = a.map_err(io("listing blobs"))?.path();
            if !a.is_dir() {
                continue;
            }
            for b in read(&a)? {
                let b = b.map_err(io("listing blobs"))?.path();
                if !b.is_dir() {
                    continue;
                }
                for f in read(&b)? {
                    let f = f.map_err(io("listing blobs"))?;
                    let meta = f.metadata().map_err(io("listing blobs"))?;
                    let name = f.file_name();
                    // Anything not named by a hash is not ours to judge; fsck reports it via
                    // the records that miss their blob.
                    let Some(sha) = name.to_str().and_then(|n| n.parse::<Sha256>().ok()) else {
                        continue;
                    };
                    out.push(BlobInfo {
                        sha,
                        len: meta.len(),
                        modified: meta.modified().map_err(io("listing blobs"))?,
                    });
                }
            }
        }
        Ok(out)
    }

    fn quarantine(&self, sha: &Sha256) -> Result<()> {
        fs::create_dir_all(&self.quarantine).map_err(io("creating quarantine dir"))?;
        fs::rename(self.blob_path(sha), self.quarantine.join(sha.to_hex()))
            .map_err(io("quarantining blob"))?;
        sync_dir(&self.quarantine).map_err(io("syncing quarantine dir"))
    }

    fn sweep_temp(&self) -> Result<usize> {
        let mut removed = 0;
        for entry in fs::read_dir(&self.tmp).map_err(io("reading temp dir"))? {
            let entry = entry.map_err(io("reading temp dir"))?;
            if fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sizes around the page-cache head and the O_DIRECT blocks, fed in chunks of several
    /// shapes: what is read back is what was written.
    #[test]
    fn temp_blobs_keep_every_byte_across_the_direct_write_boundaries() {
        const MIB: usize = 1024 * 1024;
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let data: Vec<u8> = (0..3 * MIB + 12_345)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for size in [
            0,
            1,
            4095,
            MIB - 1,
            MIB,
            MIB + 1,
            2 * MIB + 4096,
            3 * MIB + 12_345,
        ] {
            for chunk in [size.max(1), 7919, 300 * 1024] {
                let mut temp = store.create_temp().unwrap();
                for part in data[..size].chunks(chunk) {
                    temp.write_all(part).unwrap();
                }
                temp.sync().unwrap();
                let back = fs::read(&temp.path).unwrap();
                assert_eq!(back.len(), size, "size {size}, chunks of {chunk}");
                assert!(back == data[..size], "size {size}, chunks of {chunk}");
            }
        }
    }
}

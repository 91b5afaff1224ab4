//! Image variants on download (issue 16): `GET /file/<id>.<ext>?w=320&format=webp` is read with
//! the same access checks as the file itself, then answered from a stored variant, or the
//! variant is computed once (in a decode lane, bounded in time) and stored as an ordinary
//! content-addressed blob with a variant record holding one reference on it.
//!
//! - Identity: the source blob's SHA-256 and the normalized parameters
//!   ([`crate::meta::VariantKey`]): two files with the same bytes share their variants.
//! - Single flight: concurrent requests for one new variant wait on one gate per key; the
//!   first computes, the others find the record. At most `max_pending` keys are in flight.
//! - Life: a variant goes with its source blob ([`Service::drop_variants`], called wherever a
//!   blob's last reference goes), so fsck and gc stay exact.
//! - Usage: each record keeps its size against its source (`variants_of(source)`): a future
//!   usage report sums them for the source's owners.

use super::files::{path_matches, read_whole, Body, SMALL_FILE};
use super::sessions::decode_reader;
use super::{blocking, BlobGuard, Service};
use crate::auth::Caller;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::media::transform::{self, Params, Request, Rules};
use crate::meta::{FileRecord, VariantKey, VariantRecord};
use crate::store::BlobHandle;
use crate::types::{now_millis, FileId, InstanceId, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The transform rules and the variants being computed.
pub struct Runtime {
    pub(crate) rules: Rules,
    timeout: Duration,
    max_pending: usize,
    /// One gate per variant being computed (or waited for).
    gates: Mutex<HashMap<VariantKey, Arc<tokio::sync::Mutex<()>>>>,
}

impl Runtime {
    /// From `[transforms]`; a configuration that does not validate (only possible when the
    /// config was built without [`Config::load`]) turns transforms off.
    pub fn from_config(config: &Config) -> Self {
        let c = &config.transforms;
        let rules = Rules::from_config(c).unwrap_or_else(|e| {
            tracing::error!("image transforms are off: [transforms] {e}");
            Rules::disabled()
        });
        Self {
            rules,
            timeout: Duration::from_secs(c.timeout_secs.max(1)),
            max_pending: c.max_pending.max(1),
            gates: Mutex::default(),
        }
    }

    /// The gate of `key`, or 429 when `max_pending` other variants are in flight.
    fn gate(&self, key: &VariantKey) -> Result<Gate<'_>> {
        let mut g = self.gates.lock().unwrap_or_else(|p| p.into_inner());
        if !g.contains_key(key) && g.len() >= self.max_pending {
            return Err(Error::TooManyRequests(
                "too many image variants are being computed; try again shortly".into(),
            ));
        }
        let gate = g.entry(key.clone()).or_default().clone();
        Ok(Gate {
            runtime: self,
            key: key.clone(),
            gate,
        })
    }
}

/// A handle on a variant's gate; the map entry goes when its last holder does.
struct Gate<'a> {
    runtime: &'a Runtime,
    key: VariantKey,
    gate: Arc<tokio::sync::Mutex<()>>,
}

impl Drop for Gate<'_> {
    fn drop(&mut self) {
        let mut g = self.runtime.gates.lock().unwrap_or_else(|p| p.into_inner());
        // The map's reference and ours: nobody else waits.
        if Arc::strong_count(&self.gate) <= 2 {
            g.remove(&self.key);
        }
    }
}

/// A variant's bytes, opened.
struct Opened {
    len: u64,
    body: Body,
}

impl Opened {
    fn streamed(h: Box<dyn BlobHandle>) -> Self {
        Self {
            len: h.len(),
            body: Body::Open(h),
        }
    }
}

/// A variant opened for download.
pub struct VariantDownload {
    /// The source file (its name and modification time).
    pub file: FileRecord,
    pub variant: VariantRecord,
    /// Whether any caller may read it (the caller had no token): shared caches may keep it.
    pub public: bool,
    pub len: u64,
    pub body: Body,
}

impl VariantDownload {
    /// The download name: the source's stem with the size and the format's extension.
    pub fn name(&self) -> String {
        let stem = self
            .file
            .name
            .rsplit_once('.')
            .map_or(self.file.name.as_str(), |(s, _)| s);
        let ext = match self.variant.mime.as_str() {
            "image/jpeg" => "jpg",
            "image/png" => "png",
            "image/webp" => "webp",
            _ => "bin",
        };
        format!(
            "{stem}-{}x{}.{ext}",
            self.variant.width, self.variant.height
        )
    }
}

/// The decode lane's account: the caller's, else (no token) the file owner's, so anonymous
/// traffic on one owner's images queues behind itself.
fn lane_account(caller: &Caller, file: &FileRecord) -> String {
    match caller {
        Caller::User(p) => format!("{}/{}", p.instance, p.account.0),
        Caller::Anonymous => format!("{}/{}", file.instance, file.created_by.0),
    }
}

impl Service {
    /// Opens the variant `req` asks of a file, computing it first when new. Access is checked
    /// exactly as for the file's own download (missing and forbidden look the same).
    pub async fn open_variant(
        self: &Arc<Self>,
        caller: Caller,
        instance: Option<InstanceId>,
        id: FileId,
        ext: Option<String>,
        req: Request,
    ) -> Result<VariantDownload> {
        let svc = self.clone();
        let who = caller.clone();
        let (file, params, key, found) = blocking(move || {
            let (file, _, _) = svc.readable_in(&who, id)?;
            if !path_matches(&file, instance, ext.as_deref()) || file.is_directory() {
                return Err(Error::not_found());
            }
            let params = req.normalize(&file.mime, &svc.transforms.rules)?;
            let key = VariantKey::new(&file.sha256, &params.canonical());
            let found = svc.stored_variant(&key)?;
            Ok((file, params, key, found))
        })
        .await?;
        let public = matches!(caller, Caller::Anonymous);
        let (variant, opened) = match found {
            Some(found) => found,
            None => {
                let deadline = Instant::now() + self.transforms.timeout;
                let account = lane_account(&caller, &file);
                let work = self.compute_once(account, file.clone(), params, key, deadline);
                match tokio::time::timeout(self.transforms.timeout, work).await {
                    Ok(done) => done?,
                    Err(_) => {
                        metrics::counter!("depot_transform_timeouts_total").increment(1);
                        return Err(Error::Timeout(
                            "the image transform did not finish in time; try again later".into(),
                        ));
                    }
                }
            }
        };
        Ok(VariantDownload {
            file,
            len: opened.len,
            variant,
            public,
            body: opened.body,
        })
    }

    /// The stored variant and its bytes (read whole when small, in this same blocking call,
    /// as small downloads are); `None` when not computed (or its blob is gone, which the next
    /// computation repairs).
    fn stored_variant(&self, key: &VariantKey) -> Result<Option<(VariantRecord, Opened)>> {
        let Some(v) = self.meta.variant(key)? else {
            return Ok(None);
        };
        let Some(mut h) = self.blobs.open(&v.sha)? else {
            return Ok(None);
        };
        let len = h.len();
        let body = if len <= SMALL_FILE {
            Body::Read(read_whole(h.as_mut(), &v.key)?)
        } else {
            Body::Open(h)
        };
        Ok(Some((v, Opened { len, body })))
    }

    /// Computes the variant unless a concurrent request did: one computation per key.
    async fn compute_once(
        self: &Arc<Self>,
        account: String,
        file: FileRecord,
        params: Params,
        key: VariantKey,
        deadline: Instant,
    ) -> Result<(VariantRecord, Opened)> {
        let gate = self.transforms.gate(&key)?;
        let _turn = gate.gate.lock().await;
        let svc = self.clone();
        let k = key.clone();
        if let Some(found) = blocking(move || svc.stored_variant(&k)).await? {
            return Ok(found);
        }
        let Some(lane) = self.sessions.decode.acquire(&account).await else {
            return Err(Error::Internal("the decode lanes are closed".into()));
        };
        let svc = self.clone();
        blocking(move || {
            let _lane = lane;
            svc.compute(&file, &params, key, deadline)
        })
        .await
    }

    /// Decodes, transforms, stores. Blocking.
    fn compute(
        &self,
        file: &FileRecord,
        params: &Params,
        key: VariantKey,
        deadline: Instant,
    ) -> Result<(VariantRecord, Opened)> {
        let rules = &self.transforms.rules;
        let Some(source) = self.blobs.open(&file.sha256)? else {
            return Err(Error::ContentMissing(format!(
                "the content of file {} is missing from storage",
                file.id
            )));
        };
        if source.len() > rules.max_input_bytes {
            return Err(Error::Transform(
                crate::error::TransformFault::ImageTooLarge,
                format!(
                    "the file is {} bytes; images up to {} bytes are transformed",
                    source.len(),
                    rules.max_input_bytes
                ),
            ));
        }
        let started = Instant::now();
        let out = transform::apply(
            decode_reader(source, deadline),
            &file.mime,
            rules.max_input_pixels,
            params,
        )?;
        metrics::histogram!("depot_transform_seconds").record(started.elapsed().as_secs_f64());
        let mut writer = self.blobs.writer()?;
        crate::store::write_bytes(writer.as_mut(), bytes::Bytes::from(out.bytes))?;
        let staged = writer.finish()?;
        let sha = staged.sha();
        let record = VariantRecord {
            key,
            source: file.sha256,
            sha,
            size: staged.size(),
            mime: params.format.mime().to_string(),
            width: out.width,
            height: out.height,
            created: now_millis(),
            charged_to: Some((file.instance, file.created_by.clone())),
        };
        {
            // The source's lock: it cannot lose its last reference (and its variants) while
            // this one is recorded. The variant's: its bytes cannot be removed between commit
            // and reference.
            let guard = self.lock_blobs([&file.sha256, &sha])?;
            if self.meta.blob_refs(&file.sha256)? == 0 {
                return Err(Error::not_found());
            }
            if sha == file.sha256 {
                // The transform changed nothing: the source itself is the answer. No record (a
                // variant referencing its own source would keep it alive forever).
                drop(staged);
                let h = self.blobs.open(&sha)?.ok_or_else(Error::not_found)?;
                return Ok((record, Opened::streamed(h)));
            }
            staged.commit()?;
            let kept = self.meta.put_variant(&record)?;
            if kept.sha != sha && self.meta.blob_refs(&sha)? == 0 {
                // Another node recorded this variant first, with other bytes: ours go.
                self.remove_blob(&guard, &sha)?;
            }
            let h = self.blobs.open(&kept.sha)?.ok_or_else(|| {
                Error::ContentMissing("a stored image variant is missing from storage".into())
            })?;
            metrics::counter!("depot_transform_variants_total").increment(1);
            Ok((kept, Opened::streamed(h)))
        }
    }

    /// Removes the variants of a blob whose last reference went (under `guard`, its lock), and
    /// the variant blobs nothing else references. A variant blob on a lock stripe another
    /// thread holds is left (unreferenced) for `gc` rather than waited for: waiting for a second
    /// lock while holding one could deadlock with a holder of both in the other order.
    pub(super) fn drop_variants(&self, guard: &BlobGuard<'_>, source: &Sha256) -> Result<()> {
        for (v, left) in self.meta.delete_variants_of(source)? {
            if left > 0 {
                continue;
            }
            let Some(more) = self.try_lock_more(guard, &v.sha) else {
                tracing::info!(blob = %v.sha, "image variant left for gc (its lock is busy)");
                continue;
            };
            if self.meta.blob_refs(&v.sha)? == 0 {
                self.remove_blob(&more, &v.sha)?;
            }
        }
        Ok(())
    }

    /// The lock of one more blob for a holder of `guard`, without waiting: `None` when another
    /// thread (or node) holds it.
    fn try_lock_more(&self, guard: &BlobGuard<'_>, sha: &Sha256) -> Option<BlobGuard<'_>> {
        let i = usize::from(sha.0[0]) % self.blob_locks.len();
        let local = if guard.stripes.contains(&i) {
            Vec::new()
        } else {
            match self.blob_locks[i].try_lock() {
                Ok(g) => vec![g],
                Err(std::sync::TryLockError::Poisoned(p)) => vec![p.into_inner()],
                Err(std::sync::TryLockError::WouldBlock) => return None,
            }
        };
        let nodes = self.meta.lock_blobs(&[*sha]).ok()?;
        Some(BlobGuard {
            nodes,
            _local: local,
            stripes: vec![i],
        })
    }
}

//! Hygraph's `createAsset(data: {uploadUrl})`: the asset is pending at once and a background
//! task fetches the URL through the SSRF-safe fetcher ([`crate::fetch`]: public addresses only
//! unless `remote_fetch.allow_hosts`, vetted on every redirect, size-capped, timed), streaming
//! the body into the one ingest, then completes or fails the asset.
//!
//! Bounds: at most `remote_fetch.max_concurrent` fetches run at once (more wait their turn,
//! holding nothing but a task), and an account may have `max_concurrent_per_account` pending
//! (429 beyond). The task's URL is in the session, so a restart resumes every pending ingest
//! ([`Service::resume_ingests`]); one that cannot resume is marked failed, never left pending.
//!
//! A temp file's `downloadUrl` of this server is recognised and verified, and its blob shared
//! by content address: no network fetch.

use super::assets::{asset_file, Asset};
use super::{blocking, names, Service};
use crate::auth::sign::Purpose;
use crate::auth::Principal;
use crate::error::{Error, Result};
use crate::fetch::{FetchError, Fetcher};
use crate::meta::{SessionKind, SessionState, UploadSession};
use crate::service::sessions::Capability;
use crate::types::{now_millis, FileId, InstanceId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// In-memory state of remote ingests: the fetcher, the overall lanes and the pending count per
/// account.
pub struct Runtime {
    fetcher: Fetcher,
    lanes: Arc<tokio::sync::Semaphore>,
    pending: Mutex<HashMap<(InstanceId, String), usize>>,
}

impl Runtime {
    /// From `remote_fetch.*`; the body cap is the smaller of `remote_fetch.max_bytes` and
    /// `max_file_size`.
    pub fn from_config(cfg: &crate::config::Config) -> Self {
        let mut rf = cfg.remote_fetch.clone();
        rf.max_bytes = rf.max_bytes.min(cfg.max_file_size);
        // allow_hosts was validated at start-up; an invalid list cannot get here.
        let fetcher = Fetcher::from_config(&rf).unwrap_or_else(|e| {
            tracing::error!("remote_fetch.allow_hosts: {e}; no host is allowed");
            rf.allow_hosts.clear();
            Fetcher::from_config(&rf).unwrap_or_else(|_| unreachable_fetcher(&rf))
        });
        Self {
            fetcher,
            lanes: Arc::new(tokio::sync::Semaphore::new(rf.max_concurrent.max(1))),
            pending: Mutex::default(),
        }
    }
}

fn unreachable_fetcher(rf: &crate::config::RemoteFetchConfig) -> Fetcher {
    Fetcher::new(
        Vec::new(),
        crate::fetch::Limits {
            max_bytes: rf.max_bytes,
            total: std::time::Duration::from_secs(rf.timeout_secs.max(1)),
            stall: std::time::Duration::from_secs(rf.stall_secs.max(1)),
            max_redirects: rf.max_redirects,
        },
    )
}

/// One pending ingest counted against its account; dropping it uncounts it.
struct Pending {
    svc: Arc<Service>,
    key: (InstanceId, String),
}

impl Drop for Pending {
    fn drop(&mut self) {
        let mut p = self
            .svc
            .ingests
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = p.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                p.remove(&self.key);
            }
        }
    }
}

/// The name an asset fetched from `url` gets: the last path segment, else `asset`.
fn name_of(url: &reqwest::Url) -> String {
    let last = url
        .path_segments()
        .and_then(|mut s| s.next_back())
        .map(percent_decode)
        .unwrap_or_default();
    let name = names::sanitize_filename(&last);
    if name.is_empty() {
        "asset".into()
    } else {
        name
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(s.get(i + 1..i + 3).unwrap_or("zz"), 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Service {
    /// Hygraph's `createAsset(data: {uploadUrl})`. `base` is this server's public base URL: a
    /// temp file's `downloadUrl` under it is made permanent from our own store.
    pub async fn create_asset_from_url(
        self: &Arc<Self>,
        p: &Principal,
        upload_url: &str,
        base: &str,
    ) -> Result<Asset> {
        let url = reqwest::Url::parse(upload_url.trim())
            .map_err(|e| Error::BadRequest(format!("uploadUrl is not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Error::BadRequest(format!(
                "uploadUrl must be an http or https URL, not {}:",
                url.scheme()
            )));
        }
        if let Some(cap) = own_temp_file(&url, base) {
            return self.asset_from_temp(p, cap).await;
        }
        let s = self.start_remote(p, &url, name_of(&url), None).await?;
        Ok(Asset {
            id: s.file.unwrap_or_else(FileId::new),
            file: None,
            session: Some(s),
        })
    }

    /// Re-upload by URL: `file`'s bytes are replaced by what `url` serves, in the background.
    pub(crate) async fn reupload_from_url(
        self: &Arc<Self>,
        p: &Principal,
        file: &crate::meta::FileRecord,
        url: &str,
        _base: &str,
    ) -> Result<Asset> {
        let url = reqwest::Url::parse(url.trim())
            .map_err(|e| Error::BadRequest(format!("uploadUrl is not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Error::BadRequest(format!(
                "uploadUrl must be an http or https URL, not {}:",
                url.scheme()
            )));
        }
        let s = self
            .start_remote(p, &url, file.name.clone(), Some(file.id))
            .await?;
        Ok(Asset {
            id: file.id,
            file: Some(file.clone()),
            session: Some(s),
        })
    }

    /// Opens a remote ingest session (counted against the account's pending ingests) and
    /// starts its task.
    async fn start_remote(
        self: &Arc<Self>,
        p: &Principal,
        url: &reqwest::Url,
        name: String,
        replaces: Option<FileId>,
    ) -> Result<UploadSession> {
        let key = (self.caller_instance(p).await?, p.account.0.clone());
        let pending = {
            let cap = self.config.remote_fetch.max_concurrent_per_account;
            let mut map = self
                .ingests
                .pending
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let n = map.entry(key.clone()).or_insert(0);
            if *n >= cap {
                return Err(Error::TooManyRequests(format!(
                    "this account has {cap} remote URL ingests pending; wait for one to finish"
                )));
            }
            *n += 1;
            Pending {
                svc: self.clone(),
                key,
            }
        };
        let rf = &self.config.remote_fetch;
        // Long enough to wait for a lane and run a whole fetch; then the sweep removes it.
        let expires = now_millis() + (2 * rf.timeout_secs + 3600) * 1000;
        let mut metadata = serde_json::json!({ "uploadUrl": url.as_str() });
        if replaces.is_some() {
            metadata[super::reupload::REUPLOAD] = serde_json::json!(true);
        }
        let s = self
            .open_asset_session(
                p,
                SessionKind::RemoteIngest,
                name,
                expires,
                Some(metadata),
                replaces,
            )
            .await?;
        self.spawn_ingest(s.clone(), pending);
        Ok(s)
    }

    async fn caller_instance(self: &Arc<Self>, p: &Principal) -> Result<InstanceId> {
        let svc = self.clone();
        let domain = p.instance.clone();
        blocking(move || Ok(svc.meta.ensure_instance(&domain)?.id)).await
    }

    /// Runs one ingest in the background: waits for a lane, fetches, completes or fails.
    fn spawn_ingest(self: &Arc<Self>, s: UploadSession, pending: Pending) {
        let svc = self.clone();
        tokio::spawn(async move {
            let _pending = pending;
            let id = s.id;
            let outcome = match svc.ingests.lanes.clone().acquire_owned().await {
                Ok(_lane) => svc.run_ingest(s).await,
                Err(e) => Err(Error::Internal(format!("ingest lanes: {e}"))),
            };
            match outcome {
                Ok(file) => {
                    tracing::info!(asset = %file.id, size = file.size, "remote URL ingested")
                }
                Err(e) => {
                    tracing::info!(session = %id, error = %e, "remote URL ingest failed");
                    svc.fail_asset(id, e.to_string()).await;
                }
            }
        });
    }

    async fn run_ingest(self: &Arc<Self>, s: UploadSession) -> Result<crate::meta::FileRecord> {
        let url = s
            .metadata
            .as_ref()
            .and_then(|m| m.get("uploadUrl"))
            .and_then(|u| u.as_str())
            .ok_or_else(|| Error::Internal("ingest session without a URL".into()))?
            .to_string();
        let fail = |e: FetchError| Error::BadRequest(format!("{}: {e}", e.code()));
        let mut body = self.ingests.fetcher.get(&url).await.map_err(fail)?;
        let mut writer = self.begin_part(&s.name);
        while let Some(chunk) = body.chunk().await.map_err(fail)? {
            writer.write(chunk).await?;
        }
        let staged = writer.finish().await?;
        self.complete_asset(s, staged).await
    }

    /// Resumes every pending remote ingest after a restart; one whose session ran out is
    /// marked failed. Called once at start-up.
    pub fn resume_ingests(self: &Arc<Self>) -> Result<usize> {
        let mut resumed = 0;
        let now = now_millis();
        let mut stale = Vec::new();
        let mut todo = Vec::new();
        for s in self.meta.all_sessions() {
            let s = s?;
            if s.kind != SessionKind::RemoteIngest
                || s.state != SessionState::Open
                || s.error.is_some()
            {
                continue;
            }
            if s.expired(now) {
                stale.push(s.id);
            } else {
                todo.push(s);
            }
        }
        for id in stale {
            let why = "the ingest was interrupted and ran out of time";
            let _events = self.upload_failed_events(id, why)?;
            self.meta.set_session_error(id, Some(why))?;
        }
        for s in todo {
            let key = (s.instance, s.account.0.clone());
            *self
                .ingests
                .pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(key.clone())
                .or_insert(0) += 1;
            let pending = Pending {
                svc: self.clone(),
                key,
            };
            self.spawn_ingest(s, pending);
            resumed += 1;
        }
        Ok(resumed)
    }

    /// A temp file's bytes become a permanent asset (a File owned by the caller, in `/`),
    /// sharing the temp file's blob: one more reference, no copy, no fetch.
    async fn asset_from_temp(self: &Arc<Self>, p: &Principal, cap: Capability) -> Result<Asset> {
        let (temp, _) = self
            .open_capability(Purpose::TempGet, SessionKind::TempFile, cap)
            .await?;
        let bytes = temp
            .bytes
            .clone()
            .filter(|_| temp.state == SessionState::Uploaded)
            .ok_or_else(|| Error::BadRequest("nothing was uploaded to this temp file".into()))?;
        let svc = self.clone();
        let p = p.clone();
        let file = blocking(move || {
            let instance = svc.meta.ensure_instance(&p.instance)?;
            let ext = match bytes.mime.as_str() {
                "image/jpeg" => Some("jpg"),
                other => {
                    mime_guess::get_mime_extensions_str(other).and_then(|e| e.first().copied())
                }
            };
            let name = match ext {
                Some(ext) => format!("temp-file.{ext}"),
                None => "temp-file".into(),
            };
            let id = FileId::new();
            let shape = UploadSession {
                instance: instance.id,
                account: p.account.clone(),
                name,
                directory: "/".into(),
                ..temp
            };
            let (file, image) = asset_file(id, &shape, &bytes);
            svc.within_directory(instance.id, &p.account, "/", &[bytes.sha], |_| {
                // Under the blob's lock: a sweep that removed the temp bytes first is seen.
                if svc.blobs.open(&bytes.sha)?.is_none() {
                    return Err(Error::Session(
                        crate::error::SessionFault::Expired,
                        "the temp file has expired".into(),
                    ));
                }
                let _events = svc.file_events(
                    &p.account,
                    crate::meta::webhooks::WebhookEvent::FileCreated,
                    [&file],
                )?;
                let _room = svc.admit(
                    instance.id,
                    &p.account,
                    super::quota::Incoming::file(file.size),
                )?;
                svc.meta.insert_files(&[(file.clone(), image)])
            })?;
            Ok(file)
        })
        .await?;
        Ok(Asset {
            id: file.id,
            file: Some(file),
            session: None,
        })
    }
}

/// The capability of a temp file `downloadUrl` of this server (`{base}/temp-files/{i}/{id}`).
fn own_temp_file(url: &reqwest::Url, base: &str) -> Option<Capability> {
    let base = reqwest::Url::parse(base).ok()?;
    if url.origin() != base.origin() {
        return None;
    }
    let prefix = base.path().trim_end_matches('/');
    let rest = url
        .path()
        .strip_prefix(prefix)?
        .strip_prefix("/temp-files/")?;
    let (instance, session) = rest.split_once('/')?;
    if session.contains('/') {
        return None;
    }
    let mut expires = None;
    let mut sig = None;
    for (k, v) in url.query_pairs() {
        match k.as_ref() {
            "expires" => expires = v.parse().ok(),
            "sig" => sig = Some(v.into_owned()),
            _ => {}
        }
    }
    Some(Capability {
        instance: instance.to_string(),
        session: session.to_string(),
        expires: expires?,
        sig: sig?,
    })
}

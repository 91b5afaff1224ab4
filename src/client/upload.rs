//! `depot upload FILE...`: each file over depot's tus endpoint (`POST /tus/`, then one `PATCH`
//! streaming the file from its offset to its end, or with `--chunk-size` one `PATCH` per chunk
//! with a SHA-256 `Upload-Checksum` each), N files at once. A streamed upload is checked end to
//! end: the File's `sha256` must be the SHA-256 the client read. The upload URL is saved in
//! the cache dir as soon as the server made it, keyed by (server, instance, absolute path,
//! size, mtime, directory); a rerun asks the server for its offset (`HEAD`) and sends only the
//! rest. A failed PATCH (connection lost, 409 offset conflict, 5xx) is retried from the offset
//! the server reports, a few times with a growing pause.

use super::{header, network, server_error, Bars, Pacer, Progress, Result, StateDir, Target};
use crate::error::ClientError;
use base64::Engine;
use bytes::Bytes;
use futures_util::StreamExt;
use reqwest::Method;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// The state kind (sub-directory of the cache dir) of uploads.
const KIND: &str = "uploads";

/// depot refuses an upload's 10,000th PATCH; chunks grow so a file needs fewer than this.
const MAX_PATCHES: u64 = 9_000;

/// Bytes handed to the connection at a time (the progress bar and `--limit-rate` step).
const SLICE: usize = 64 * 1024;

/// Failed PATCHes in a row before the upload gives up.
const RETRIES: u32 = 5;

/// How `depot upload` runs.
#[derive(Debug, Clone)]
pub struct UploadOptions {
    /// The directory the Files go to (`--dir`); the server's default (`/`) when `None`.
    pub directory: Option<String>,
    /// Files uploaded at once.
    pub parallel: usize,
    /// Bytes per PATCH (each is read into memory once, to checksum it); `None`: one PATCH
    /// streams the file from the server's offset to its end.
    pub chunk_size: Option<u64>,
    /// Most bytes per second per file.
    pub limit_rate: Option<u64>,
    /// No notes on stderr (errors are still printed by the caller).
    pub quiet: bool,
    /// Draw progress bars.
    pub progress: bool,
}

/// What the cache dir remembers of an upload in progress.
#[derive(Debug, Serialize, Deserialize)]
struct UploadState {
    /// The upload's URL (`Location` of `POST /tus/`).
    upload_url: String,
    /// The source file, for a person reading the cache dir.
    path: String,
    size: u64,
}

/// The server's view of an upload (`HEAD`, `POST` and `PATCH` answers).
#[derive(Debug)]
struct Status {
    offset: u64,
    length: Option<u64>,
    /// The upload became a File (`Depot-File-Id`).
    complete: bool,
}

fn status_of(res: &reqwest::Response) -> Result<Status> {
    let number = |name: &str| header(res, name).and_then(|v| v.trim().parse::<u64>().ok());
    Ok(Status {
        offset: number("upload-offset").ok_or_else(|| {
            ClientError::Protocol(format!(
                "the server's {} answer has no Upload-Offset; is {} a depot server?",
                res.status(),
                res.url()
            ))
        })?,
        length: number("upload-length"),
        complete: header(res, "depot-file-id").is_some(),
    })
}

/// Uploads every file, at most `opts.parallel` at once; one result (the File JSON) per file, in
/// the order given. One file failing does not stop the others.
pub async fn upload_files(
    target: &Target,
    state: &StateDir,
    files: &[PathBuf],
    opts: &UploadOptions,
) -> Vec<Result<serde_json::Value>> {
    let total: u64 = files
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum();
    state.sweep(KIND);
    let bars = Bars::new(opts.progress, files.len(), total);
    let results = futures_util::stream::iter(
        files
            .iter()
            .map(|f| upload_one(target, state, f, opts, &bars)),
    )
    .buffered(opts.parallel.max(1))
    .collect()
    .await;
    bars.finish();
    results
}

/// One file, created or resumed, to its File.
async fn upload_one(
    target: &Target,
    state: &StateDir,
    path: &Path,
    opts: &UploadOptions,
    bars: &Bars,
) -> Result<serde_json::Value> {
    let io = |what: &'static str| ClientError::io(what, path);
    let abs = std::fs::canonicalize(path).map_err(io("cannot read"))?;
    let meta = std::fs::metadata(&abs).map_err(io("cannot read"))?;
    if !meta.is_file() {
        return Err(ClientError::Usage(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    let size = meta.len();
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    let abs_text = abs.to_string_lossy();
    let key = StateDir::key(&[
        &target.base,
        target.instance.as_deref().unwrap_or(""),
        &abs_text,
        &size.to_string(),
        &mtime.to_string(),
        opts.directory.as_deref().unwrap_or(""),
    ]);
    let name = abs
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| abs_text.to_string());
    let progress = bars.file(&name, size);
    let result = async {
        let (url, status) = match resume(target, state, &key, size).await? {
            Some((url, status)) => {
                if !opts.quiet {
                    bars.note(&format!(
                        "depot: resuming {} at byte {} of {size}",
                        path.display(),
                        status.offset
                    ));
                }
                (url, status)
            }
            None => {
                let (url, status) = create(target, &abs, &name, size, opts).await?;
                state.save(
                    KIND,
                    &key,
                    &UploadState {
                        upload_url: url.clone(),
                        path: abs_text.to_string(),
                        size,
                    },
                )?;
                (url, status)
            }
        };
        let sha = send_rest(
            target,
            &url,
            Source { abs: &abs, size },
            status,
            opts,
            &progress,
            bars,
        )
        .await?;
        let file = finished(target, &url).await?;
        // The upload is a File now: nothing is left to resume, whatever the check below says.
        state.remove(KIND, &key);
        if let Some(sha) = sha {
            let read = sha.iter().map(|b| format!("{b:02x}")).collect::<String>();
            let stored = file.get("sha256").and_then(|v| v.as_str()).unwrap_or("");
            if stored != read {
                return Err(ClientError::Protocol(format!(
                    "{}: the server stored bytes with SHA-256 {stored:?}, the file read here \
                     has {read} (did it change during the upload?)",
                    path.display()
                )));
            }
        }
        Ok(file)
    }
    .await;
    match &result {
        Ok(_) => progress.finish(),
        Err(_) => progress.abandon(),
    }
    result
}

/// The saved upload of this file, if the server still has it (404 or 410: it expired or was
/// removed, and the state is dropped).
async fn resume(
    target: &Target,
    state: &StateDir,
    key: &str,
    size: u64,
) -> Result<Option<(String, Status)>> {
    let Some(saved) = state.load::<UploadState>(KIND, key) else {
        return Ok(None);
    };
    match head(target, &saved.upload_url).await? {
        Some(st) if st.length == Some(size) && st.offset <= size => {
            Ok(Some((saved.upload_url, st)))
        }
        _ => {
            state.remove(KIND, key);
            Ok(None)
        }
    }
}

/// A tus request: the caller's headers and `Tus-Resumable`.
fn tus(target: &Target, method: Method, url: &str) -> reqwest::RequestBuilder {
    target
        .request(method, url)
        .header("Tus-Resumable", super::TUS_VERSION)
}

/// `HEAD` of an upload: its status, or `None` when the server no longer has it.
async fn head(target: &Target, url: &str) -> Result<Option<Status>> {
    let res = target.send(tus(target, Method::HEAD, url), url).await?;
    match res.status().as_u16() {
        200 | 204 => status_of(&res).map(Some),
        404 | 410 => Ok(None),
        _ => Err(server_error(res).await),
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// `POST /tus/`: a new upload of `size` bytes named `name`; its URL (absolute) and status.
async fn create(
    target: &Target,
    abs: &Path,
    name: &str,
    size: u64,
    opts: &UploadOptions,
) -> Result<(String, Status)> {
    let mut metadata = vec![format!("filename {}", b64(name.as_bytes()))];
    if let Some(t) = mime_guess::from_path(abs).first_raw() {
        metadata.push(format!("filetype {}", b64(t.as_bytes())));
    }
    if let Some(d) = &opts.directory {
        metadata.push(format!("directory {}", b64(d.as_bytes())));
    }
    let endpoint = format!("{}/tus/", target.base);
    let res = target
        .send(
            tus(target, Method::POST, &endpoint)
                .header("Upload-Length", size.to_string())
                .header("Upload-Metadata", metadata.join(",")),
            &endpoint,
        )
        .await?;
    if res.status().as_u16() != 201 {
        return Err(server_error(res).await);
    }
    let location = header(&res, "location").ok_or_else(|| {
        ClientError::Protocol(format!("POST {endpoint} answered 201 without a Location"))
    })?;
    let url = res
        .url()
        .join(location)
        .map_err(|e| ClientError::Protocol(format!("Location {location:?} is not a URL: {e}")))?
        .to_string();
    // A server may leave the offset out of a creation answer: a new upload is at 0.
    let status = status_of(&res).unwrap_or(Status {
        offset: 0,
        length: Some(size),
        complete: false,
    });
    Ok((url, status))
}

/// Whether a failed PATCH is worth another try from the server's offset.
fn retryable(e: &ClientError) -> bool {
    match e {
        ClientError::Network { .. } => true,
        ClientError::Server { status, .. } => {
            matches!(status, 408 | 409 | 429 | 460 | 500 | 502 | 503 | 504)
        }
        _ => false,
    }
}

/// The local side of one upload: the file and its size when it was looked at.
struct Source<'a> {
    abs: &'a Path,
    size: u64,
}

/// Bytes read from the file at a time by a streamed PATCH without `--limit-rate` (with it,
/// [`SLICE`]: the pace is kept in smaller steps).
const STREAM_READ: usize = 1024 * 1024;

/// The SHA-256 of a file's first `at` bytes, as far as the client has read them in order.
struct Digest {
    at: u64,
    hasher: sha2::Sha256,
}

/// PATCHes the bytes from the server's offset to the end: one PATCH streaming the rest of the
/// file, or (`--chunk-size`) one PATCH per chunk. Returns the SHA-256 of the whole file when
/// it was streamed (read once, in order, while sending), for the end-to-end check.
async fn send_rest(
    target: &Target,
    url: &str,
    src: Source<'_>,
    mut status: Status,
    opts: &UploadOptions,
    progress: &Progress,
    bars: &Bars,
) -> Result<Option<[u8; 32]>> {
    let Source { abs, size } = src;
    let io = |what: &'static str| ClientError::io(what, abs);
    let chunk_size = opts
        .chunk_size
        .map(|c| c.max(size.div_ceil(MAX_PATCHES)).max(1));
    let pacer = Arc::new(Pacer::new(opts.limit_rate));
    let digest = Arc::new(std::sync::Mutex::new(Digest {
        at: 0,
        hasher: sha2::Digest::new(),
    }));
    let mut failures = 0u32;
    // An empty file still needs one (empty) PATCH to become a File.
    let mut empty_sent = false;
    while !status.complete {
        if status.offset > size {
            return Err(ClientError::Protocol(format!(
                "the server holds {} bytes of a {size}-byte upload",
                status.offset
            )));
        }
        if status.offset == size && (size > 0 || empty_sent) {
            // Every byte is there; GET tells whether it became a File.
            break;
        }
        progress.set(status.offset);
        empty_sent = true;
        let (len, sent) = match chunk_size {
            Some(chunk_size) => {
                let len = chunk_size.min(size - status.offset);
                let mut buf = vec![0u8; usize::try_from(len).unwrap_or(usize::MAX)];
                let mut file = tokio::fs::File::open(abs)
                    .await
                    .map_err(io("cannot read"))?;
                file.seek(std::io::SeekFrom::Start(status.offset))
                    .await
                    .map_err(io("cannot read"))?;
                file.read_exact(&mut buf).await.map_err(io("cannot read"))?;
                let sent = patch(
                    target,
                    url,
                    status.offset,
                    Bytes::from(buf),
                    progress,
                    &pacer,
                )
                .await;
                (len, sent)
            }
            None => {
                let len = size - status.offset;
                digest_to(abs, &digest, status.offset).await?;
                let body = Streamed {
                    abs: abs.to_path_buf(),
                    offset: status.offset,
                    left: len,
                    digest: digest.clone(),
                };
                let sent = patch_stream(target, url, status.offset, body, progress, &pacer).await;
                (len, sent)
            }
        };
        match sent {
            Ok(next) if next.offset > status.offset || next.complete || len == 0 => {
                failures = 0;
                status = next;
            }
            Ok(next) => {
                return Err(ClientError::Protocol(format!(
                    "a PATCH of {len} bytes at {} left the upload at {}",
                    status.offset, next.offset
                )))
            }
            Err(e) if retryable(&e) && failures < RETRIES => {
                failures += 1;
                if !opts.quiet {
                    bars.note(&format!(
                        "depot: {}: {e}; retrying from the server's offset",
                        abs.display()
                    ));
                }
                status = resync(target, url, e).await?;
            }
            Err(e) => return Err(e),
        }
    }
    progress.set(size);
    if chunk_size.is_some() {
        return Ok(None);
    }
    // The whole file was read in order (a retry that found fewer bytes kept on the server
    // than were read hashed the file again up to its offset).
    digest_to(abs, &digest, size).await?;
    let d = digest
        .lock()
        .map_err(|_| ClientError::Protocol("the upload's hash was lost".into()))?;
    Ok(Some(sha2::Digest::finalize(d.hasher.clone()).into()))
}

/// Brings `digest` to cover exactly the file's first `to` bytes, reading what it lacks (from
/// the start when it went past `to`: bytes sent that the server did not keep).
async fn digest_to(abs: &Path, digest: &Arc<std::sync::Mutex<Digest>>, to: u64) -> Result<()> {
    let from = {
        let mut d = digest
            .lock()
            .map_err(|_| ClientError::Protocol("the upload's hash was lost".into()))?;
        if d.at > to {
            *d = Digest {
                at: 0,
                hasher: sha2::Digest::new(),
            };
        }
        d.at
    };
    if from == to {
        return Ok(());
    }
    let (path, digest) = (abs.to_path_buf(), digest.clone());
    tokio::task::spawn_blocking(move || {
        let mut file = open_at(&path, from)?;
        let mut left = to - from;
        while left > 0 {
            let want = usize::try_from(left).unwrap_or(usize::MAX).min(STREAM_READ);
            read_hashed(&mut file, &digest, want)?;
            left -= want as u64;
        }
        Ok(())
    })
    .await
    .map_err(|e| ClientError::Protocol(format!("hashing {}: {e}", abs.display())))?
    .map_err(ClientError::io("cannot read", abs))
}

/// `path` opened for reading at `offset`.
fn open_at(path: &Path, offset: u64) -> std::io::Result<std::fs::File> {
    use std::io::Seek;
    let mut file = std::fs::File::open(path)?;
    file.seek(std::io::SeekFrom::Start(offset))?;
    Ok(file)
}

/// The file's next `want` bytes, added to `digest` (which then covers them).
fn read_hashed(
    file: &mut std::fs::File,
    digest: &std::sync::Mutex<Digest>,
    want: usize,
) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut buf = vec![0u8; want];
    file.read_exact(&mut buf)?;
    let mut d = digest
        .lock()
        .map_err(|_| std::io::Error::other("the upload's hash was lost"))?;
    sha2::Digest::update(&mut d.hasher, &buf);
    d.at += want as u64;
    Ok(buf)
}

/// The rest of a file, read as it is sent and hashed on the way (see [`Digest`]).
struct Streamed {
    abs: PathBuf,
    offset: u64,
    left: u64,
    digest: Arc<std::sync::Mutex<Digest>>,
}

/// Reads ahead of the connection: at most this many buffers wait to be sent.
const READ_AHEAD: usize = 4;

/// One PATCH streaming `body` from `offset` to the end of the file, without a checksum
/// header (the client checks the File's `sha256` once it is made). A thread of its own reads
/// and hashes the file a few buffers ahead, so reading, hashing and sending overlap.
async fn patch_stream(
    target: &Target,
    url: &str,
    offset: u64,
    body: Streamed,
    progress: &Progress,
    pacer: &Arc<Pacer>,
) -> Result<Status> {
    let len = body.left;
    let read = if pacer.limited() { SLICE } else { STREAM_READ };
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(READ_AHEAD);
    let reader = std::thread::spawn(move || read_ahead(body, read, &tx));
    let (progress, pacer) = (progress.clone(), pacer.clone());
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
    .then(move |item| {
        let (progress, pacer) = (progress.clone(), pacer.clone());
        async move {
            let chunk = item?;
            pacer.take(chunk.len() as u64).await;
            progress.inc(chunk.len() as u64);
            Ok::<_, std::io::Error>(chunk)
        }
    });
    let sent = send_patch(
        target,
        url,
        offset,
        len,
        None,
        reqwest::Body::wrap_stream(stream),
    )
    .await;
    // The reader ends once the body is read or dropped; its hash is final before a retry
    // looks at it.
    let _ = tokio::task::spawn_blocking(move || reader.join()).await;
    sent
}

/// Sends one PATCH of `len` bytes at `offset` (with a SHA-256 `Upload-Checksum` when given);
/// the upload's status after it.
async fn send_patch(
    target: &Target,
    url: &str,
    offset: u64,
    len: u64,
    sha256: Option<String>,
    body: reqwest::Body,
) -> Result<Status> {
    let mut req = tus(target, Method::PATCH, url)
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/offset+octet-stream",
        )
        .header("Upload-Offset", offset.to_string())
        .header(reqwest::header::CONTENT_LENGTH, len.to_string());
    if let Some(sum) = sha256 {
        req = req.header("Upload-Checksum", format!("sha256 {sum}"));
    }
    let res = req.body(body).send().await.map_err(|e| network(url, &e))?;
    match res.status().as_u16() {
        200 | 204 => status_of(&res),
        _ => Err(server_error(res).await),
    }
}

/// [`patch_stream`]'s reading thread: the file from `body.offset` in `read`-byte buffers,
/// each hashed into `body.digest`, then queued for the connection. Ends at the end of the
/// range, on an error (queued for the connection) or when the connection is gone.
fn read_ahead(body: Streamed, read: usize, tx: &tokio::sync::mpsc::Sender<std::io::Result<Bytes>>) {
    let Streamed {
        abs,
        offset,
        mut left,
        digest,
    } = body;
    let fail = |e: std::io::Error| {
        let _ = tx.blocking_send(Err(std::io::Error::new(
            e.kind(),
            format!("cannot read {}: {e}", abs.display()),
        )));
    };
    let mut file = match open_at(&abs, offset) {
        Ok(f) => f,
        Err(e) => return fail(e),
    };
    while left > 0 {
        let want = usize::try_from(left).unwrap_or(usize::MAX).min(read);
        let buf = match read_hashed(&mut file, &digest, want) {
            Ok(buf) => buf,
            Err(e) => return fail(e),
        };
        left -= want as u64;
        if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
            return;
        }
    }
}

/// After a failed PATCH: waits, then asks the server where the upload is; a server that is
/// restarting gets a few tries (2, 4, 8, 8, 8 s apart) before `last` is the answer.
async fn resync(target: &Target, url: &str, mut last: ClientError) -> Result<Status> {
    for attempt in 1..=RETRIES {
        tokio::time::sleep(Duration::from_secs(1 << attempt.min(3))).await;
        match head(target, url).await {
            Ok(Some(status)) => return Ok(status),
            Ok(None) => {
                return Err(ClientError::Server {
                    status: 404,
                    code: "NOT_FOUND".into(),
                    message: format!("the upload {url} is gone (expired or removed) after: {last}"),
                })
            }
            Err(e) if retryable(&e) => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

/// One PATCH of `data` at `offset`, streamed in slices (progress, `--limit-rate`) with its
/// SHA-256 in `Upload-Checksum` (the server keeps nothing of a PATCH that does not match).
async fn patch(
    target: &Target,
    url: &str,
    offset: u64,
    data: Bytes,
    progress: &Progress,
    pacer: &Arc<Pacer>,
) -> Result<Status> {
    use sha2::Digest;
    let checksum = b64(&sha2::Sha256::digest(&data));
    let len = data.len();
    let (progress_s, pacer_s) = (progress.clone(), pacer.clone());
    let body = futures_util::stream::unfold(0usize, move |at| {
        let (data, progress, pacer) = (data.clone(), progress_s.clone(), pacer_s.clone());
        async move {
            if at >= data.len() {
                return None;
            }
            let end = (at + SLICE).min(data.len());
            pacer.take((end - at) as u64).await;
            progress.inc((end - at) as u64);
            Some((Ok::<_, std::io::Error>(data.slice(at..end)), end))
        }
    });
    send_patch(
        target,
        url,
        offset,
        len as u64,
        Some(checksum),
        reqwest::Body::wrap_stream(body),
    )
    .await
}

/// `GET` of a complete upload: the File it became.
async fn finished(target: &Target, url: &str) -> Result<serde_json::Value> {
    let res = target.send(tus(target, Method::GET, url), url).await?;
    if res.status().as_u16() != 200 {
        return Err(server_error(res).await);
    }
    let body = super::read_capped(res, super::JSON_BODY_MAX)
        .await
        .map_err(|e| network(url, &e))?;
    serde_json::from_slice(&body)
        .map_err(|e| ClientError::Protocol(format!("GET {url}: the File is not JSON: {e}")))
}

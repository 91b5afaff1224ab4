//! `depot download PATH -o FILE`: streams a File to `FILE.part`, then renames it. When
//! `FILE.part` exists the request asks only for the rest (`Range: bytes=<len>-`), with
//! `If-Range` set to the ETag the earlier run saw (kept in the cache dir), so a file that
//! changed since comes whole instead of spliced. The total length is checked, and depot's ETag
//! (the content's SHA-256) is checked against the bytes on disk: a `.part` that did not belong
//! to this file is detected, dropped, and the download starts over once.

use super::{header, network, server_error, Bars, Pacer, Result, StateDir, Target};
use crate::error::ClientError;
use reqwest::Method;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The state kind (sub-directory of the cache dir) of downloads.
const KIND: &str = "downloads";

/// How `depot download` runs.
#[derive(Debug, Clone)]
pub struct DownloadOptions {
    /// Most bytes per second.
    pub limit_rate: Option<u64>,
    /// No notes on stderr (errors are still printed by the caller).
    pub quiet: bool,
    /// Draw a progress bar.
    pub progress: bool,
}

/// What the cache dir remembers of a download in progress.
#[derive(Debug, Serialize, Deserialize)]
struct DownloadState {
    url: String,
    /// The validator of the bytes in `.part`.
    etag: Option<String>,
}

/// The SHA-256 a strong depot ETag names (`"<64 hex>"`), if it is one.
fn etag_sha256(etag: &str) -> Option<String> {
    let hex = etag.trim().strip_prefix('"')?.strip_suffix('"')?;
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| hex.to_ascii_lowercase())
}

/// `bytes <start>-<end>/<total>` of a 206.
fn content_range(v: &str) -> Option<(u64, u64)> {
    let (range, total) = v.trim().strip_prefix("bytes ")?.split_once('/')?;
    let (start, _) = range.split_once('-')?;
    Some((start.trim().parse().ok()?, total.trim().parse().ok()?))
}

/// The file name at the end of a URL's path (`-o` defaults to it).
fn url_file_name(url: &str) -> Option<String> {
    let parsed = url::Url::parse(url).ok()?;
    let last = parsed.path_segments()?.next_back()?.to_string();
    let name = percent_encoding::percent_decode_str(&last)
        .decode_utf8()
        .ok()?
        .into_owned();
    (!name.is_empty() && name != "." && name != ".." && !name.contains('/')).then_some(name)
}

/// Downloads `what` (a `/file/...` path or a full URL) to `output` (default: the URL's file
/// name in the current directory); answers the path written and its length.
pub async fn download(
    target: &Target,
    state: &StateDir,
    what: &str,
    output: Option<PathBuf>,
    opts: &DownloadOptions,
) -> Result<(PathBuf, u64)> {
    let url = target.resolve(what)?;
    let out = match output {
        Some(o) => o,
        None => PathBuf::from(
            url_file_name(&url)
                .ok_or_else(|| ClientError::Usage(format!("{url} names no file; give -o FILE")))?,
        ),
    };
    let name = out
        .file_name()
        .ok_or_else(|| ClientError::Usage(format!("-o {} is not a file name", out.display())))?
        .to_os_string();
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let dir = std::fs::canonicalize(&parent).map_err(|source| ClientError::Io {
        what: "cannot use directory",
        path: parent.clone(),
        source,
    })?;
    let mut part_name = name.clone();
    part_name.push(".part");
    let part = dir.join(part_name);
    let abs_out = dir.join(&name);
    let key = StateDir::key(&[
        &url,
        target.instance.as_deref().unwrap_or(""),
        &abs_out.to_string_lossy(),
    ]);
    state.sweep(KIND);
    let bars = Bars::new(opts.progress, 1, 0);
    let progress = bars.file(&name.to_string_lossy(), 0);
    let mut restarted = false;
    loop {
        let have = std::fs::metadata(&part).map_or(0, |m| m.len());
        let saved = state
            .load::<DownloadState>(KIND, &key)
            .filter(|s| s.url == url);
        let mut req = target.request(Method::GET, &url);
        if have > 0 {
            req = req.header(reqwest::header::RANGE, format!("bytes={have}-"));
            if let Some(etag) = saved.as_ref().and_then(|s| s.etag.as_deref()) {
                req = req.header(reqwest::header::IF_RANGE, etag);
            }
        }
        let res = target.send(req, &url).await?;
        let (append, total) = match res.status().as_u16() {
            206 if have > 0 => {
                let (start, total) = header(&res, "content-range")
                    .and_then(content_range)
                    .ok_or_else(|| {
                        ClientError::Protocol(format!("206 from {url} without a Content-Range"))
                    })?;
                if start != have {
                    return Err(ClientError::Protocol(format!(
                        "asked {url} for bytes from {have}, got them from {start}"
                    )));
                }
                (true, total)
            }
            200 => {
                let total = res.content_length().ok_or_else(|| {
                    ClientError::Protocol(format!("{url} answered without a Content-Length"))
                })?;
                (false, total)
            }
            // The .part is as long as the file or longer: it cannot be continued.
            416 if have > 0 => {
                remove_part(&part)?;
                continue;
            }
            _ => return Err(server_error(res).await),
        };
        let etag = header(&res, "etag").map(str::to_string);
        state.save(
            KIND,
            &key,
            &DownloadState {
                url: url.clone(),
                etag: etag.clone(),
            },
        )?;
        if append && !opts.quiet {
            bars.note(&format!(
                "depot: resuming download of {} at byte {have} of {total}",
                out.display()
            ));
        }
        progress.set_length(total);
        let written = receive(res, &url, &part, append, have, opts, &progress).await?;
        if written.0 != total {
            // Keep .part and the state: a rerun continues from here.
            return Err(ClientError::Mismatch(format!(
                "the server sent {} of {total} bytes of {url}; run again to resume",
                written.0
            )));
        }
        let want = etag.as_deref().and_then(etag_sha256);
        if let (Some(want), Some(got)) = (want, written.1) {
            if want != got {
                remove_part(&part)?;
                state.remove(KIND, &key);
                if append && !restarted {
                    restarted = true;
                    if !opts.quiet {
                        bars.note(&format!(
                            "depot: {} did not belong to this file (SHA-256 differs); downloading it again",
                            part.display()
                        ));
                    }
                    continue;
                }
                return Err(ClientError::Mismatch(format!(
                    "the bytes of {url} do not match its ETag (SHA-256 {want}, got {got})"
                )));
            }
        }
        std::fs::rename(&part, &abs_out).map_err(|source| ClientError::Io {
            what: "cannot rename the download to",
            path: abs_out.clone(),
            source,
        })?;
        state.remove(KIND, &key);
        progress.finish();
        return Ok((out, total));
    }
}

fn remove_part(part: &Path) -> Result<()> {
    match std::fs::remove_file(part) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(ClientError::Io {
            what: "cannot remove",
            path: part.to_path_buf(),
            source: e,
        }),
        _ => Ok(()),
    }
}

/// Streams the body into `.part` (appended after `have` bytes, or from the start), fsyncs it;
/// answers the file's length and its SHA-256 (hex; the kept bytes are hashed first).
async fn receive(
    mut res: reqwest::Response,
    url: &str,
    part: &Path,
    append: bool,
    have: u64,
    opts: &DownloadOptions,
    progress: &super::Progress,
) -> Result<(u64, Option<String>)> {
    use sha2::Digest;
    let io = |what: &'static str| ClientError::io(what, part);
    let mut hasher = sha2::Sha256::new();
    let mut len = 0u64;
    if append {
        let mut kept = tokio::fs::File::open(part)
            .await
            .map_err(io("cannot read"))?;
        let mut buf = vec![0u8; 256 * 1024];
        while len < have {
            let n = kept.read(&mut buf).await.map_err(io("cannot read"))?;
            if n == 0 {
                break;
            }
            let n = n.min(usize::try_from(have - len).unwrap_or(usize::MAX));
            hasher.update(&buf[..n]);
            len += n as u64;
        }
    }
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(append)
        .truncate(!append)
        .open(part)
        .await
        .map_err(io("cannot write"))?;
    progress.set(len);
    let pacer = Pacer::new(opts.limit_rate);
    while let Some(chunk) = res.chunk().await.map_err(|e| network(url, &e))? {
        pacer.take(chunk.len() as u64).await;
        file.write_all(&chunk).await.map_err(io("cannot write"))?;
        hasher.update(&chunk);
        len += chunk.len() as u64;
        progress.inc(chunk.len() as u64);
    }
    file.flush().await.map_err(io("cannot write"))?;
    file.sync_all().await.map_err(io("cannot write"))?;
    Ok((len, Some(hex::encode(hasher.finalize()))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_parse() {
        assert_eq!(content_range("bytes 10-99/100"), Some((10, 100)));
        assert_eq!(content_range("bytes */100"), None);
        let sha = "a".repeat(64);
        assert_eq!(etag_sha256(&format!("\"{sha}\"")), Some(sha));
        assert_eq!(etag_sha256("W/\"abc\""), None);
    }

    #[test]
    fn default_names() {
        assert_eq!(
            url_file_name("http://h/file/i-f.png?x=1").as_deref(),
            Some("i-f.png")
        );
        assert_eq!(url_file_name("http://h/"), None);
    }
}

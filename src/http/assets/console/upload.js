// The upload queue: many files at once, a few sending at a time, progress per file and overall,
// cancel and retry. How one file travels is `sendFile`, and only there.

import { ApiError, authHeaders, encodePath } from './api.js';

// Files sending at once; the rest wait their turn.
const PARALLEL = 3;

// Files at least this large go over tus 1.0 (`/tus/`): sent in chunks, and a retry after a
// cancel or a dropped connection continues from what depot already holds.
const TUS_FROM = 8 * 1024 * 1024;
// Bytes per PATCH: what a drop can cost, and how often the offset is confirmed.
const TUS_CHUNK = 5 * 1024 * 1024;
// Upload URLs of unfinished tus uploads, by file and directory, so a retry resumes them.
const unfinished = new Map();

// Sends one file into `dir`; resolves with its File record. `onProgress(sentBytes)` as bytes
// leave. Returns `{ done, cancel, via }`. Small files take Hypi's `POST /upload/**`, large ones
// tus: the queue only sees this contract.
export function sendFile(file, dir, onProgress) {
  return file.size >= TUS_FROM ? tus(file, dir, onProgress) : multipart(file, dir, onProgress);
}

// Base64 of a string's UTF-8 bytes (tus's Upload-Metadata values).
function b64(text) {
  let bin = '';
  for (const b of new TextEncoder().encode(text)) bin += String.fromCharCode(b);
  return btoa(bin);
}

function tusHeaders(extra = {}) {
  return { ...authHeaders(), 'Tus-Resumable': '1.0.0', ...extra };
}

async function failure(res) {
  return ApiError.of(res.status, await res.json().catch(() => null));
}

// tus 1.0: create (or find again) the upload, PATCH it chunk by chunk from the offset depot
// reports, then read the File it became.
function tus(file, dir, onProgress) {
  const key = [dir, file.name, file.size, file.lastModified].join('\n');
  let xhr = null;
  let cancelled = false;
  const stop = () => new ApiError(0, 'CANCELLED', 'cancelled');
  const done = (async () => {
    let path = unfinished.get(key);
    let offset = 0;
    if (path) {
      const res = await fetch(path, { method: 'HEAD', headers: tusHeaders(), cache: 'no-store' });
      if (res.ok) offset = Number(res.headers.get('Upload-Offset') || 0);
      else path = null; // expired or removed: start again
    }
    if (!path) {
      const meta = [['filename', file.name], ['filetype', file.type || 'application/octet-stream'], ['directory', dir]]
        .map(([k, v]) => `${k} ${b64(v)}`)
        .join(',');
      const res = await fetch('/tus/', {
        method: 'POST',
        headers: tusHeaders({ 'Upload-Length': String(file.size), 'Upload-Metadata': meta }),
      });
      if (res.status !== 201) throw await failure(res);
      path = new URL(res.headers.get('Location'), window.location.href).pathname;
      unfinished.set(key, path);
    }
    onProgress(offset);
    while (offset < file.size) {
      if (cancelled) throw stop();
      const from = offset;
      const chunk = file.slice(from, Math.min(file.size, from + TUS_CHUNK));
      offset = await patch(path, chunk, from, (sent) => onProgress(from + sent), (x) => {
        xhr = x;
      });
    }
    unfinished.delete(key);
    // The upload URL answers with the File it became.
    const res = await fetch(path, { headers: tusHeaders({ Accept: 'application/json' }), cache: 'no-store' });
    if (!res.ok) throw await failure(res);
    return res.json();
  })();
  return {
    done,
    via: 'tus',
    cancel: () => {
      cancelled = true;
      if (xhr) xhr.abort();
    },
  };
}

// One PATCH with XMLHttpRequest (for upload progress); resolves with the new offset.
function patch(path, chunk, offset, onSent, onStart) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    onStart(xhr);
    xhr.open('PATCH', path);
    for (const [k, v] of Object.entries(tusHeaders({ 'Upload-Offset': String(offset) }))) xhr.setRequestHeader(k, v);
    xhr.setRequestHeader('Content-Type', 'application/offset+octet-stream');
    xhr.upload.onprogress = (e) => onSent(e.loaded);
    xhr.onload = () => {
      if (xhr.status === 204) {
        resolve(Number(xhr.getResponseHeader('Upload-Offset')));
        return;
      }
      let body = null;
      try {
        body = JSON.parse(xhr.responseText);
      } catch {
        body = null;
      }
      reject(ApiError.of(xhr.status, body));
    };
    xhr.onerror = () => reject(new ApiError(0, 'NETWORK', 'the connection to depot failed'));
    xhr.onabort = () => reject(new ApiError(0, 'CANCELLED', 'cancelled'));
    xhr.send(chunk);
  });
}

// Hypi's multipart upload with XMLHttpRequest, the browser API that reports upload progress.
function multipart(file, dir, onProgress) {
  const xhr = new XMLHttpRequest();
  const done = new Promise((resolve, reject) => {
    xhr.open('POST', `/upload${encodePath(dir)}`);
    for (const [k, v] of Object.entries(authHeaders())) xhr.setRequestHeader(k, v);
    xhr.setRequestHeader('Accept', 'application/json');
    xhr.upload.onprogress = (e) => {
      // The body is the file plus a few hundred bytes of multipart framing.
      if (e.lengthComputable && e.total > 0) onProgress(Math.min(file.size, (e.loaded / e.total) * file.size));
    };
    xhr.onload = () => {
      let body = null;
      try {
        body = JSON.parse(xhr.responseText);
      } catch {
        body = null;
      }
      if (xhr.status >= 200 && xhr.status < 300 && body && typeof body === 'object') {
        const record = Object.values(body)[0];
        if (record) {
          resolve(record);
          return;
        }
      }
      reject(ApiError.of(xhr.status, body));
    };
    xhr.onerror = () => reject(new ApiError(0, 'NETWORK', 'the connection to depot failed'));
    xhr.onabort = () => reject(new ApiError(0, 'CANCELLED', 'cancelled'));
    const form = new FormData();
    form.append('file', file, file.name);
    xhr.send(form);
  });
  return { done, via: 'multipart', cancel: () => xhr.abort() };
}

// One file in the queue.
class Item {
  constructor(file, dir) {
    this.file = file;
    this.dir = dir;
    this.state = 'queued'; // queued | sending | done | failed | cancelled
    this.sent = 0;
    this.error = null;
    this.handle = null;
    this.record = null;
  }
}

// The queue. `onChange(item)` after any change of an item; `onUploaded(record)` after each
// stored file.
export class UploadQueue {
  constructor({ onChange, onUploaded }) {
    this.items = [];
    this.onChange = onChange;
    this.onUploaded = onUploaded;
  }

  add(files, dir) {
    const added = [...files].map((f) => new Item(f, dir));
    this.items.push(...added);
    added.forEach((i) => this.onChange(i));
    this.pump();
    return added;
  }

  cancel(item) {
    if (item.state === 'sending') item.handle.cancel();
    else if (item.state === 'queued') {
      item.state = 'cancelled';
      this.onChange(item);
    }
  }

  retry(item) {
    if (item.state !== 'failed' && item.state !== 'cancelled') return;
    item.state = 'queued';
    item.sent = 0;
    item.error = null;
    this.onChange(item);
    this.pump();
  }

  // Removes finished and cancelled items from the list.
  clearFinished() {
    this.items = this.items.filter((i) => i.state === 'queued' || i.state === 'sending' || i.state === 'failed');
  }

  // Bytes sent and bytes to send over every item not cancelled.
  totals() {
    let sent = 0;
    let total = 0;
    for (const i of this.items) {
      if (i.state === 'cancelled') continue;
      total += i.file.size;
      sent += i.state === 'done' ? i.file.size : i.sent;
    }
    return { sent, total };
  }

  pump() {
    while (this.items.filter((i) => i.state === 'sending').length < PARALLEL) {
      const next = this.items.find((i) => i.state === 'queued');
      if (!next) return;
      this.start(next);
    }
  }

  start(item) {
    item.state = 'sending';
    item.handle = sendFile(item.file, item.dir, (sent) => {
      item.sent = sent;
      this.onChange(item);
    });
    this.onChange(item);
    item.handle.done.then(
      (record) => {
        item.state = 'done';
        item.sent = item.file.size;
        item.record = record;
        this.onChange(item);
        this.onUploaded(record);
      },
      (err) => {
        item.state = err instanceof ApiError && err.code === 'CANCELLED' ? 'cancelled' : 'failed';
        item.error = err;
        this.onChange(item);
      },
    ).finally(() => this.pump());
  }
}

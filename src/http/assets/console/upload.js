// The upload queue: many files at once, a few sending at a time, progress per file and overall,
// cancel and retry. How one file travels is `sendFile`, and only there.

import { ApiError, authHeaders, encodePath } from './api.js';

// Files sending at once; the rest wait their turn.
const PARALLEL = 3;

// Sends one file into `dir`; resolves with its File record. `onProgress(sentBytes)` as bytes
// leave. Returns `{ done, cancel }`.
//
// Every file goes through `POST /upload/**` today. When depot serves the resumable tus protocol,
// large files switch to it here (and nowhere else): the queue only sees this contract.
export function sendFile(file, dir, onProgress) {
  return multipart(file, dir, onProgress);
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
  return { done, cancel: () => xhr.abort() };
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

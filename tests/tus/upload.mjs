// tus-js-client (node) against depot's /tus/, for tests/tus.rs and scripts/bench.
//
//   node upload.mjs '<json config>'
//
// Config: endpoint, token, domain, file (a path), chunkSize (bytes, or null for one PATCH),
// name, and for the resume scenario abortAfter (bytes) and state (a file for FileUrlStorage).
// Prints one JSON line: what happened (offsets, the File's id and path, elapsed ms).
//
// Resume scenario: upload with FileUrlStorage, abort once `abortAfter` bytes went out (mid
// chunk), wait until HEAD reports more than the acknowledged chunks (the server kept the cut
// PATCH's bytes), then a new Upload finds the stored URL (findPreviousUploads) and resumes.

import fs from 'node:fs'
import * as tus from 'tus-js-client'

const cfg = JSON.parse(process.argv[2])
const headers = { Authorization: cfg.token, 'hypi-domain': cfg.domain }
const started = Date.now()

function options(extra) {
  return {
    endpoint: cfg.endpoint,
    headers,
    chunkSize: cfg.chunkSize ?? Infinity,
    metadata: { filename: cfg.name, filetype: 'application/octet-stream', directory: cfg.directory ?? '/' },
    // 409 while the server still stores an aborted PATCH's bytes: retry after a moment.
    retryDelays: [100, 300, 1000, 3000],
    ...extra,
  }
}

function run(upload) {
  return new Promise((resolve, reject) => {
    upload.options.onSuccess = () => resolve()
    upload.options.onError = (e) => reject(e)
    upload.start()
  })
}

async function head(url) {
  const res = await fetch(url, { method: 'HEAD', headers: { ...headers, 'Tus-Resumable': '1.0.0' } })
  if (res.status !== 200) throw new Error(`HEAD ${url}: ${res.status}`)
  return Number(res.headers.get('upload-offset'))
}

let fileId = null
let fileUrl = null
const afterResponse = (_req, res) => {
  if (res.getHeader('Depot-File-Id')) {
    fileId = res.getHeader('Depot-File-Id')
    fileUrl = res.getHeader('Depot-File-Url')
  }
}

const out = {}
if (cfg.abortAfter != null) {
  const storage = new tus.FileUrlStorage(cfg.state)
  let acked = 0
  let first
  const aborted = new Promise((resolve, reject) => {
    first = new tus.Upload(fs.createReadStream(cfg.file), options({
      urlStorage: storage,
      onChunkComplete: (_size, accepted) => { acked = accepted },
      onProgress: (sent) => {
        if (sent >= cfg.abortAfter && !out.abortedAt) {
          out.abortedAt = sent
          first.abort().then(resolve, reject)
        }
      },
      onSuccess: () => reject(new Error('the upload finished before it was aborted')),
      onError: reject,
    }))
    first.start()
  })
  await aborted
  out.acked = acked
  out.url = first.url
  // The cut PATCH's bytes are stored once the server saw the body end; wait for them.
  let offset = await head(first.url)
  for (let i = 0; i < 100 && offset <= acked; i++) {
    await new Promise((r) => setTimeout(r, 100))
    offset = await head(first.url)
  }
  out.headOffset = offset
  const second = new tus.Upload(fs.createReadStream(cfg.file), options({
    urlStorage: storage,
    onAfterResponse: afterResponse,
  }))
  const previous = await second.findPreviousUploads()
  out.previous = previous.length
  if (previous.length === 0) throw new Error('findPreviousUploads found nothing to resume')
  second.resumeFromPreviousUpload(previous[0])
  await run(second)
  out.resumedUrl = second.url
} else {
  const upload = new tus.Upload(fs.createReadStream(cfg.file), options({ onAfterResponse: afterResponse }))
  await run(upload)
  out.url = upload.url
}
out.fileId = fileId
out.fileUrl = fileUrl
out.elapsedMs = Date.now() - started
console.log(JSON.stringify(out))

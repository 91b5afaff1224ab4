// tus-js-client (node) against depot's /tus/, for tests/tus.rs and scripts/bench.
//
//   node upload.mjs '<json config>'
//
// Config: endpoint, token, domain, file (a path), chunkSize (bytes, or null for one PATCH),
// name, and for the resume scenario abortAfter (bytes) and state (a file for FileUrlStorage).
// Prints one JSON line: what happened (offsets, the File's id and path, elapsed ms).
//
// Resume scenario: upload through a proxy that cuts the connection once `abortAfter` bytes went
// to the server (mid chunk); wait until HEAD reports more than the acknowledged chunks (the
// server kept the cut PATCH's bytes), then a new Upload finds the stored URL in FileUrlStorage
// (findPreviousUploads) and resumes from the server's offset.

import fs from 'node:fs'
import net from 'node:net'
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

// A TCP proxy in front of depot that cuts the connection once `cutAfter` bytes went upstream
// (once): the server sees a PATCH body end mid-chunk, as when a network drops.
function cuttingProxy(target, cutAfter) {
  const { hostname, port } = new URL(target)
  let sent = 0
  let cut = false
  const server = net.createServer((client) => {
    const upstream = net.connect(Number(port), hostname)
    client.on('data', (d) => {
      if (cut || sent + d.length <= cutAfter) {
        sent += d.length
        upstream.write(d)
        return
      }
      upstream.write(d.subarray(0, cutAfter - sent))
      sent = cutAfter
      cut = true
      // Let the last bytes reach the server, then drop both sides.
      upstream.end(() => client.destroy())
    })
    upstream.on('data', (d) => client.write(d))
    client.on('error', () => upstream.destroy())
    upstream.on('error', () => client.destroy())
    client.on('close', () => upstream.destroy())
    upstream.on('close', () => client.destroy())
  })
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)))
}

const out = {}
if (cfg.abortAfter != null) {
  const proxy = await cuttingProxy(cfg.endpoint, cfg.abortAfter)
  const endpoint = `http://127.0.0.1:${proxy.address().port}${new URL(cfg.endpoint).pathname}`
  const storage = new tus.FileUrlStorage(cfg.state)
  let acked = 0
  // No retries: the cut surfaces as an error, and the second Upload below resumes.
  const first = new tus.Upload(fs.createReadStream(cfg.file), options({
    endpoint,
    urlStorage: storage,
    retryDelays: null,
    onChunkComplete: (_size, accepted) => { acked = accepted },
  }))
  try {
    await run(first)
    throw new Error('the upload finished although its connection was cut')
  } catch (e) {
    out.error = String(e).slice(0, 200)
  }
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
    endpoint,
    urlStorage: storage,
    onAfterResponse: afterResponse,
  }))
  const previous = await second.findPreviousUploads()
  out.previous = previous.length
  if (previous.length === 0) throw new Error('findPreviousUploads found nothing to resume')
  second.resumeFromPreviousUpload(previous[0])
  second.options.onChunkComplete = (_size, accepted) => {
    if (out.firstAcceptedAfterResume == null) out.firstAcceptedAfterResume = accepted
  }
  await run(second)
  out.resumedUrl = second.url
  proxy.close()
} else {
  const upload = new tus.Upload(fs.createReadStream(cfg.file), options({ onAfterResponse: afterResponse }))
  await run(upload)
  out.url = upload.url
}
out.fileId = fileId
out.fileUrl = fileUrl
out.elapsedMs = Date.now() - started
console.log(JSON.stringify(out))

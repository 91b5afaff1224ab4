-- wrk script for scripts/bench. Configured through the environment:
--   BENCH_MODE      "get" (plain requests; headers come from wrk -H) or "upload"
--   BENCH_FIELD     multipart field name (upload; depot: "0", rustypaste: "file")
--   BENCH_FILENAME  file name of the part (upload)
--   BENCH_SIZE      bytes of file content per upload (default 4096)
--   BENCH_AUTH      Authorization header value (upload; optional)
--   BENCH_DOMAIN    hypi-domain header value (upload; optional)
-- Every upload carries different bytes (thread number and a counter at the start of the
-- file), so a content-addressed store cannot skip the write.
-- done() prints one line, "BENCH {json}", that the driver reads.

local mode = os.getenv("BENCH_MODE") or "get"
local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end

if mode == "upload" then
  local boundary = "----depotbench0c5f3e9a1b7d"
  local counter = 0
  local head, tail, filler

  function init(args)
    local field = os.getenv("BENCH_FIELD") or "file"
    local fname = os.getenv("BENCH_FILENAME") or "bench.bin"
    local size = tonumber(os.getenv("BENCH_SIZE") or "4096")
    wrk.method = "POST"
    wrk.headers["Content-Type"] = "multipart/form-data; boundary=" .. boundary
    local auth = os.getenv("BENCH_AUTH")
    if auth and auth ~= "" then wrk.headers["Authorization"] = auth end
    local domain = os.getenv("BENCH_DOMAIN")
    if domain and domain ~= "" then wrk.headers["hypi-domain"] = domain end
    head = "--" .. boundary .. "\r\n"
      .. "Content-Disposition: form-data; name=\"" .. field .. "\"; filename=\"" .. fname .. "\"\r\n"
      .. "Content-Type: application/octet-stream\r\n\r\n"
    tail = "\r\n--" .. boundary .. "--\r\n"
    local pattern = "depot-bench-payload-0123456789abcdefghijklmnopqrstuvwxyz\n"
    filler = string.rep(pattern, math.ceil(size / #pattern) + 1):sub(1, size - 24)
  end

  function request()
    counter = counter + 1
    local tag = string.format("%07d-%015d\n", tid or 0, counter) -- 24 bytes
    return wrk.format(nil, nil, nil, head .. tag .. filler .. tail)
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests":%d,"duration_us":%d,"bytes":%d,"status":%d,"connect":%d,'
      .. '"read":%d,"write":%d,"timeout":%d,"latency_p50_us":%d,"latency_p99_us":%d}\n',
    summary.requests, summary.duration, summary.bytes, e.status, e.connect, e.read, e.write,
    e.timeout, latency:percentile(50), latency:percentile(99)))
end

#!/usr/bin/env python3
"""Driver for scripts/bench (issue 5). Run it through scripts/bench, which installs the tools,
builds depot and passes the paths in. Standard library only."""

import argparse
import datetime
import hashlib
import http.client
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import direct  # noqa: E402 - the direct-upload rows, beside this file
import nodes  # noqa: E402 - 1 node vs 2 nodes on PostgreSQL + S3 (opt-in), beside this file

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
DOMAIN = "bench.test"
direct.DOMAIN = DOMAIN
HERE = os.path.dirname(os.path.abspath(__file__))
ALL_CASES = ("sizes", "get", "up4k", "rss1", "rssN", "presigned", "confirm", "multipart", "tus",
             "transform")
# Run only when named in --only: they need scripts/services (PostgreSQL, moto_server).
OPT_IN_CASES = ("nodes",)
# every transfer is bounded; subprocess timeouts back this up
CURL = ["curl", "-sS", "--connect-timeout", "10", "--max-time", "600"]


def pct(vals, p):
    """The p-th percentile of vals (nearest rank)."""
    v = sorted(vals)
    return v[min(len(v) - 1, max(0, -(-p * len(v) // 100) - 1))]


def human(n):
    for unit, div in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= div and n % div == 0:
            return f"{n // div} {unit}"
    return f"{n} B"


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class BenchError(Exception):
    pass


# ---------------------------------------------------------------------------------------------
# processes

class Procs:
    """Servers started in their own process group; recorded in the pid file that the bash
    wrapper's trap reads, and stopped here on exit."""

    def __init__(self, pidfile):
        self.pidfile = pidfile
        self.procs = []

    def start(self, argv, log_path, cwd, env=None):
        logf = open(log_path, "ab")
        p = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             cwd=cwd, env=env, start_new_session=True)
        logf.close()
        self.procs.append(p)
        with open(self.pidfile, "a") as f:
            f.write(f"{p.pid}\n")
        return p

    def stop(self, p):
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait(timeout=10)
        if p in self.procs:
            self.procs.remove(p)

    def stop_all(self):
        for p in list(self.procs):
            self.stop(p)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(port, path, proc, what, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"{what} exited with {proc.returncode} while starting")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", path)
            c.getresponse().read()
            c.close()
            return
        except OSError:
            time.sleep(0.1)
    raise BenchError(f"{what} did not answer on port {port} within {timeout}s")


def run(argv, timeout, **kw):
    """subprocess.run with a hard timeout; returns CompletedProcess (text)."""
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)


# ---------------------------------------------------------------------------------------------
# servers

class _SizesSkipped(Exception):
    """BENCH_SIZES left the big size out: its main-table rows are not measured."""


class Depot:
    def __init__(self, b, data_dir, name, env=None):
        """`env`: extra DEPOT_* variables for the server and `depot token` (the nodes case)."""
        self.b = b
        self.data = data_dir
        # One account runs the 64-concurrent-upload case: lift the per-account upload cap (32
        # by default) above it. The multipart case sends 5 GiB, over the 2 GiB default (issue
        # 12: larger must work).
        self.env = dict(os.environ, DEPOT_MAX_UPLOADS_PER_ACCOUNT="128",
                        DEPOT_MULTIPART_MAX_SIZE=str(8 * GiB), **(env or {}))
        os.makedirs(data_dir, exist_ok=True)
        # Mint the token before the server starts: it creates data/jwt.secret on first use.
        self.token = self.mint("bench")
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc = b.procs.start([b.depot, "serve", "--listen", f"127.0.0.1:{self.port}",
                                   "--data-dir", data_dir],
                                  os.path.join(b.run_dir, f"{name}.log"), cwd=b.run_dir,
                                  env=self.env)
        wait_http(self.port, "/health", self.proc, "depot")

    def mint(self, sub, admin=False):
        r = run([self.b.depot, "token", "--data-dir", self.data, "--sub", sub, "--instance", DOMAIN,
                 *(["--admin"] if admin else [])], timeout=30, cwd=self.b.run_dir, env=self.env)
        if r.returncode != 0:
            raise BenchError(f"depot token failed: {r.stderr.strip()}")
        return r.stdout.strip()

    def call(self, method, path, body, token):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        c.request(method, path, body=json.dumps(body),
                  headers={"Authorization": token, "hypi-domain": DOMAIN,
                           "Content-Type": "application/json"})
        resp = c.getresponse()
        data = resp.read()
        c.close()
        if resp.status not in (200, 201):
            raise BenchError(f"depot {method} {path} answered {resp.status}: {data[:300]!r}")

    def share(self, file_id, members):
        """Grants a read of the file to `members` (account ids, or "anonymous")."""
        self.call("POST", "/access-rights", {
            "resource": file_id, "resourceType": "File", "operationType": "Query", "operation": "*",
            "permissionType": "RBP", "approved": True,
            "members": [{"hypi": {"id": m}} for m in members]}, self.token)

    def auth_headers(self):
        return ["-H", f"Authorization: {self.token}", "-H", f"hypi-domain: {DOMAIN}"]

    def upload(self, path, directory="bench"):
        """curl -F upload; returns (seconds, file id, url path)."""
        # one answer file per thread: the nodes case uploads from several at once
        out = os.path.join(self.b.run_dir, f"upload-{threading.get_ident()}.json")
        r = run([*CURL, "-o", out, "-w", "%{http_code} %{time_total}",
                 *self.auth_headers(), "-F", f"0=@{path}", f"{self.base}/upload/{directory}"],
                timeout=900)
        code, secs = (r.stdout.split() + ["", ""])[:2]
        if r.returncode != 0 or code != "200":
            body = open(out, errors="replace").read(300) if os.path.exists(out) else ""
            raise BenchError(f"depot upload answered {code or r.stderr.strip()}: {body}")
        rec = next(iter(json.load(open(out)).values()))
        return float(secs), rec["hypi"]["id"], rec["url"]["path"]

    def delete(self, file_id):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        c.request("DELETE", f"/files/{file_id}",
                  headers={"Authorization": self.token, "hypi-domain": DOMAIN})
        resp = c.getresponse()
        resp.read()
        c.close()
        if resp.status not in (200, 204):
            raise BenchError(f"depot DELETE /files/{file_id} answered {resp.status}")

    def download(self, url_path):
        return curl_get(f"{self.base}{url_path}", ["-H", f"Authorization: {self.token}"])

    def rss(self):
        return proc_status(self.proc.pid)

    def stop(self):
        self.b.procs.stop(self.proc)


class Nginx:
    def __init__(self, b):
        self.b = b
        self.dir = os.path.join(b.run_dir, "nginx")
        self.www = os.path.join(self.dir, "www")
        for d in (self.www, os.path.join(self.www, "put"), os.path.join(self.www, "dl"),
                  os.path.join(self.dir, "tmp", "body"), os.path.join(self.dir, "tmp", "proxy")):
            os.makedirs(d, exist_ok=True)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        user = "user root;\n" if os.geteuid() == 0 else ""
        conf = os.path.join(self.dir, "nginx.conf")
        with open(conf, "w") as f:
            f.write(f"""# written by scripts/bench
{user}worker_processes auto;
daemon off;
pid {self.dir}/nginx.pid;
error_log {self.dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    default_type application/octet-stream;
    client_max_body_size 0;
    client_body_temp_path {self.dir}/tmp/body;
    proxy_temp_path {self.dir}/tmp/proxy;
    server {{
        listen 127.0.0.1:{self.port};
        root {self.www};
        location /put/ {{
            dav_methods PUT;
            create_full_put_path on;
        }}
    }}
}}
""")
        self.proc = b.procs.start([b.nginx, "-p", self.dir, "-c", conf, "-e", f"{self.dir}/error.log"],
                                  os.path.join(b.run_dir, "nginx.log"), cwd=self.dir)
        wait_http(self.port, "/", self.proc, "nginx")

    def put(self, path, name):
        r = run([*CURL, "-o", "/dev/null", "-w", "%{http_code} %{time_total}",
                 "-T", path, f"{self.base}/put/{name}"], timeout=900)
        code, secs = (r.stdout.split() + ["", ""])[:2]
        if r.returncode != 0 or code not in ("201", "204"):
            raise BenchError(f"nginx PUT answered {code or r.stderr.strip()}")
        return float(secs)

    def stop(self):
        self.b.procs.stop(self.proc)


class Rustypaste:
    def __init__(self, b):
        self.b = b
        self.dir = os.path.join(b.run_dir, "rustypaste")
        os.makedirs(os.path.join(self.dir, "upload"), exist_ok=True)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        conf = os.path.join(self.dir, "config.toml")
        with open(conf, "w") as f:
            f.write(f"""# written by scripts/bench
[server]
address = "127.0.0.1:{self.port}"
max_content_length = "100MB"
upload_path = "{self.dir}/upload"
timeout = "60s"

[paste]
random_url = {{ type = "alphanumeric", length = 16 }}
default_extension = "txt"
mime_override = []
mime_blacklist = []
duplicate_files = true
""")
        env = dict(os.environ, CONFIG=conf, RUST_LOG="warn")
        for k in ("AUTH_TOKEN", "AUTH_TOKENS_FILE", "DELETE_TOKEN", "DELETE_TOKENS_FILE"):
            env.pop(k, None)
        self.proc = b.procs.start([b.rustypaste], os.path.join(b.run_dir, "rustypaste.log"),
                                  cwd=self.dir, env=env)
        wait_http(self.port, "/", self.proc, "rustypaste")

    def clear(self):
        with os.scandir(os.path.join(self.dir, "upload")) as it:
            for e in it:
                if e.is_file(follow_symlinks=False):
                    os.remove(e.path)

    def stop(self):
        self.b.procs.stop(self.proc)


def curl_get(url, headers=()):
    r = run([*CURL, "-o", "/dev/null", "-w", "%{http_code} %{time_total} %{size_download}",
             *headers, url], timeout=900)
    parts = (r.stdout.split() + ["", "", ""])[:3]
    if r.returncode != 0 or parts[0] != "200":
        raise BenchError(f"GET {url} answered {parts[0] or r.stderr.strip()}")
    return float(parts[1]), int(parts[2])


def proc_status(pid):
    """(VmRSS, VmHWM) in bytes."""
    vals = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                vals[k] = int(v.split()[0]) * 1024
    return vals.get("VmRSS", 0), vals.get("VmHWM", 0)


def dd_write(src, dst):
    r = run(["dd", f"if={src}", f"of={dst}", "bs=1M", "conv=fdatasync"], timeout=900,
            env=dict(os.environ, LC_ALL="C"))
    m = re.search(r"copied, ([0-9.e+-]+) s", r.stderr)
    if r.returncode != 0 or not m:
        raise BenchError(f"dd failed: {r.stderr.strip()}")
    return float(m.group(1))


def wrk(url, conns, secs, env_extra, headers=()):
    env = dict(os.environ, **env_extra)
    argv = ["wrk", "-t2", f"-c{conns}", f"-d{secs}s", "--timeout", "10s",
            "-s", os.path.join(HERE, "wrk.lua"), *headers, url]
    r = run(argv, timeout=secs + 60, env=env)
    m = re.search(r"^BENCH (\{.*\})$", r.stdout, re.M)
    if r.returncode != 0 or not m:
        raise BenchError(f"wrk failed ({r.returncode}): {(r.stderr or r.stdout).strip()[:300]}")
    s = json.loads(m.group(1))
    ok = s["requests"] - s["status"]
    if ok <= 0:
        raise BenchError(f"wrk: no successful response ({s})")
    s["ok_per_s"] = ok / (s["duration_us"] / 1e6)
    return s


def proc_cpu_secs(pid):
    """User + system CPU seconds a process (all its threads) has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk_cpu(pid, *args, **kw):
    """wrk(...) with the CPU time `pid` spent per successful request (`cpu_us_per_req`)."""
    before = proc_cpu_secs(pid)
    s = wrk(*args, **kw)
    ok = s["requests"] - s["status"]
    s["cpu_us_per_req"] = (proc_cpu_secs(pid) - before) * 1e6 / ok
    return s


# ---------------------------------------------------------------------------------------------
# stats and the table

def med(xs):
    return statistics.median(xs) if xs else None


def fmt(v, unit=""):
    if v is None:
        return "n/a"
    if v >= 100:
        s = f"{v:,.0f}"
    elif v >= 10:
        s = f"{v:.1f}"
    else:
        s = f"{v:.2f}"
    return f"{s}{unit}"


class Bench:
    def __init__(self, a):
        self.a = a
        self.quick = a.quick
        self.depot, self.nginx, self.rustypaste = a.depot, a.nginx, a.rustypaste
        self.bench_dir = a.bench_dir
        self.run_dir = os.path.join(a.bench_dir, "run")
        self.files_dir = os.path.join(a.bench_dir, "files")
        self.procs = Procs(a.pids)
        self.raw = []      # (case, series, values) for the raw section
        self.rows = []     # main table rows
        self.size_rows = []
        self.notes = []
        self.errors = 0
        env_runs = int(os.environ["BENCH_RUNS"]) if os.environ.get("BENCH_RUNS") else None
        if self.quick:
            self.sizes = [(4 * KiB, 10), (1 * MiB, 5), (64 * MiB, 1)]
            self.big = 64 * MiB
            self.runs_small = self.runs_big = env_runs or 2
            self.wrk_secs = int(os.environ.get("BENCH_SECS") or 3)
            self.wrk_runs = env_runs or 1
            self.rss_one = 256 * MiB
            self.rss_n, self.rss_each = 16, 8 * MiB
        else:
            # (size, transfers per run): small files are timed over several transfers each run
            self.sizes = [(4 * KiB, 20), (1 * MiB, 10), (64 * MiB, 1), (1 * GiB, 1)]
            self.big = 1 * GiB
            # 5 runs even at 1 GiB: the reference (dd through a VM's disk cache) swings by 5x
            # from one run to the next, and 3 runs leave the median to chance
            self.runs_small = env_runs or 5
            self.runs_big = env_runs or 5
            self.wrk_secs = int(os.environ.get("BENCH_SECS") or 10)
            self.wrk_runs = env_runs or 3
            self.rss_one = 2 * GiB
            self.rss_n, self.rss_each = 64, 32 * MiB
        # BENCH_SIZES=4096,1048576 keeps only those sizes of the sizes case (a quicker look at
        # some rows; the big-file rows of the main table are then not measured)
        if os.environ.get("BENCH_SIZES"):
            keep = {int(x) for x in os.environ["BENCH_SIZES"].split(",") if x.strip()}
            self.sizes = [(size, reps) for size, reps in self.sizes if size in keep]
        self.cases = a.only.split(",") if a.only else list(ALL_CASES)
        for c in self.cases:
            if c not in ALL_CASES + OPT_IN_CASES:
                raise SystemExit(f"unknown case {c!r}; cases: {','.join(ALL_CASES + OPT_IN_CASES)}")

    # -- inputs ------------------------------------------------------------------------------

    def source(self, size):
        """A file of random-looking bytes of this size, kept across runs in files/."""
        os.makedirs(self.files_dir, exist_ok=True)
        path = os.path.join(self.files_dir, f"src-{size}.bin")
        if os.path.exists(path) and os.path.getsize(path) == size:
            return path
        log(f"generating {human(size)} source file")
        block = os.urandom(min(size, 16 * MiB))
        with open(path + ".tmp", "wb") as f:
            left, i = size, 0
            while left > 0:
                chunk = block[:min(left, len(block))]
                # a different 16-byte stamp per block: no two blocks are equal
                stamp = i.to_bytes(16, "little")
                f.write(stamp[:len(chunk)] + chunk[16:])
                left -= len(chunk)
                i += 1
        os.replace(path + ".tmp", path)
        return path

    # -- cases -------------------------------------------------------------------------------

    def case_sizes(self, depot, ngx):
        """Upload: depot curl -F vs dd fdatasync into depot's data dir vs nginx PUT.
        Download (warm): depot GET vs nginx GET. Per size; the 1 GiB (quick: 64 MiB) row feeds
        the first three rows of the main table."""
        results = {}
        for size, reps in self.sizes:
            runs = self.runs_big if size >= 64 * MiB else self.runs_small
            src = self.source(size)
            label = human(size)
            log(f"sizes: {label}, {runs} runs x {reps} transfer(s)")
            up = {"depot": [], "dd": [], "nginx": []}
            each = {"depot": [], "nginx": []}   # seconds per upload, for p50 / p99
            dd_dst = os.path.join(depot.data, "bench-dd.out")
            for r in range(runs):
                t = {"depot": 0.0, "dd": 0.0, "nginx": 0.0}
                for k in range(reps):
                    # interleaved, each from a clean page cache state (nothing dirty)
                    os.sync()
                    t["dd"] += dd_write(src, dd_dst)
                    os.remove(dd_dst)
                    os.sync()
                    name = f"up-{size}-{r}-{k}.bin"
                    secs = ngx.put(src, name)
                    t["nginx"] += secs
                    each["nginx"].append(secs)
                    os.remove(os.path.join(ngx.www, "put", name))  # drop it before writeback
                    os.sync()
                    secs, fid, _ = depot.upload(src)
                    t["depot"] += secs
                    each["depot"].append(secs)
                    depot.delete(fid)   # the next upload of the same bytes writes them again
                for key in t:
                    up[key].append(reps * size / MiB / t[key])
            # download, warm cache: the same bytes stored once in each
            os.sync()
            _, _, url = depot.upload(src, "keep")
            shutil.copyfile(src, os.path.join(ngx.www, "dl", f"{size}.bin"))
            ngx_url = f"{ngx.base}/dl/{size}.bin"
            for _ in range(2):   # warm both
                depot.download(url)
                curl_get(ngx_url)
            down = {"depot": [], "nginx": []}
            for r in range(runs):
                t = {"depot": 0.0, "nginx": 0.0}
                for k in range(reps):
                    secs, n = curl_get(ngx_url)
                    t["nginx"] += secs
                    secs, n2 = depot.download(url)
                    if n2 != size:
                        raise BenchError(f"depot download returned {n2} bytes, expected {size}")
                    t["depot"] += secs
                for key in t:
                    down[key].append(reps * size / MiB / t[key])
            if size < 64 * MiB:
                self.notes.append(f"upload {label} sequential latency p50 / p99 over {len(each['depot'])} "
                                  "uploads: " + "; ".join(
                                      f"{k} {pct(v, 50) * 1000:.2f} / {pct(v, 99) * 1000:.2f} ms"
                                      for k, v in each.items()))
            for key, vals in up.items():
                self.raw.append((f"upload {label}", key, vals, "MiB/s"))
            for key, vals in down.items():
                self.raw.append((f"download {label}", key, vals, "MiB/s"))
            m = {f"up_{k}": med(v) for k, v in up.items()}
            m.update({f"down_{k}": med(v) for k, v in down.items()})
            results[size] = m
            self.size_rows.append((label, m, runs, reps))
        return results

    def case_get(self, depot, ngx):
        src = self.source(4 * KiB)
        _, file_id, url = depot.upload(src, "get")
        shutil.copyfile(src, os.path.join(ngx.www, "get.bin"))
        # The same file read by its owner, by another account through a grant naming it, and
        # by anonymous callers (a grant to `anonymous`, the instance switch on).
        admin = depot.mint("bench-admin", admin=True)
        depot.call("PUT", f"/instances/{DOMAIN}", {"anonymousRequests": True}, admin)
        depot.share(file_id, ["grantee"])
        depot.share(file_id, ["anonymous"])
        grantee = depot.mint("grantee")
        callers = {"owner": ["-H", f"Authorization: {depot.token}"],
                   "grantee": ["-H", f"Authorization: {grantee}"],
                   "anonymous": []}
        for headers in callers.values():
            curl_get(f"{depot.base}{url}", headers)
        curl_get(f"{ngx.base}/get.bin")
        series = ["nginx", *callers]
        vals = {k: [] for k in series}
        lat = {k: ([], []) for k in series}
        cpu = {k: [] for k in callers}
        log(f"get: 4 KiB GET, 64 connections, {self.wrk_runs} x {self.wrk_secs}s each, "
            f"callers: {', '.join(series)}")
        for _ in range(self.wrk_runs):
            for k in series:
                if k == "nginx":
                    s = wrk(f"{ngx.base}/get.bin", 64, self.wrk_secs, {"BENCH_MODE": "get"})
                else:
                    s = wrk_cpu(depot.proc.pid, f"{depot.base}{url}", 64, self.wrk_secs,
                                {"BENCH_MODE": "get"}, callers[k])
                    cpu[k].append(s["cpu_us_per_req"])
                    if s["status"]:
                        self.notes.append(f"depot GET ({k}): {s['status']} non-2xx answers in one "
                                          "run (not counted)")
                vals[k].append(s["ok_per_s"])
                lat[k][0].append(s["latency_p50_us"])
                lat[k][1].append(s["latency_p99_us"])
        for k, v in vals.items():
            self.raw.append(("GET 4 KiB x64", k, v, "req/s"))
        self.notes.append("GET 4 KiB x64 latency, median of runs' p50 / p99 (wrk): " + "; ".join(
            f"{k} {med(lat[k][0]) / 1000:.2f} / {med(lat[k][1]) / 1000:.2f} ms" for k in series))
        self.notes.append("GET 4 KiB x64, depot CPU time per request (user + system, all "
                          "threads; median of runs): " + "; ".join(
                              f"{k} {med(v):.0f} us" for k, v in cpu.items()))
        return {k: med(v) for k, v in vals.items()}

    def case_up4k(self, depot):
        if not os.access(self.rustypaste, os.X_OK):
            raise BenchError(f"rustypaste is not installed ({self.rustypaste})")
        rp = Rustypaste(self)
        try:
            vals = {"depot": [], "rustypaste": []}
            lat = {"depot": ([], []), "rustypaste": ([], [])}
            up_cpu = []
            log(f"up4k: 4 KiB multipart uploads, 32 connections, {self.wrk_runs} x {self.wrk_secs}s each")
            common = {"BENCH_MODE": "upload", "BENCH_SIZE": "4096", "BENCH_FILENAME": "bench.bin"}
            for _ in range(self.wrk_runs):
                # rustypaste globs its upload directory on every upload, so it slows down as the
                # directory fills: every run starts it from an empty one (its best case).
                rp.clear()
                os.sync()
                s = wrk(f"{rp.base}/", 32, self.wrk_secs, dict(common, BENCH_FIELD="file"))
                if s["status"]:
                    self.notes.append(f"rustypaste upload: {s['status']} non-2xx answers in one run (not counted)")
                vals["rustypaste"].append(s["ok_per_s"])
                lat["rustypaste"][0].append(s["latency_p50_us"])
                lat["rustypaste"][1].append(s["latency_p99_us"])
                os.sync()
                s = wrk_cpu(depot.proc.pid, f"{depot.base}/upload/up4k", 32, self.wrk_secs,
                            dict(common, BENCH_FIELD="0", BENCH_AUTH=depot.token,
                                 BENCH_DOMAIN=DOMAIN))
                up_cpu.append(s["cpu_us_per_req"])
                if s["status"]:
                    self.notes.append(f"depot upload: {s['status']} non-2xx answers in one run (not counted)")
                vals["depot"].append(s["ok_per_s"])
                lat["depot"][0].append(s["latency_p50_us"])
                lat["depot"][1].append(s["latency_p99_us"])
            for k, v in vals.items():
                self.raw.append(("upload 4 KiB x32", k, v, "uploads/s"))
            self.notes.append("4 KiB uploads x32 latency, median of runs' p50 / p99 (wrk): " + "; ".join(
                f"{k} {med(p50) / 1000:.2f} / {med(p99) / 1000:.2f} ms" for k, (p50, p99) in lat.items())
                + f"; depot CPU time per upload {med(up_cpu):.0f} us (user + system, all threads)")
            self.notes.append("rustypaste globs its upload directory on every upload, so its rate falls "
                              "as a run's files pile up: the ratio depends on the run length "
                              f"({self.wrk_secs}s here); it does not fsync, depot does")
            return med(vals["depot"]), med(vals["rustypaste"])
        finally:
            rp.stop()

    def rss_case(self, name, n, each):
        """A fresh depot (VmHWM cannot be reset); n concurrent uploads of `each` bytes streamed
        from memory (different bytes per upload). Returns (peak VmHWM, start RSS, seconds)."""
        data = os.path.join(self.run_dir, f"depot-{name}")
        depot = Depot(self, data, f"depot-{name}")
        try:
            start_rss, _ = depot.rss()
            peak_poll = [0]
            stop = threading.Event()

            def poll():
                while not stop.is_set():
                    try:
                        peak_poll[0] = max(peak_poll[0], depot.rss()[0])
                    except OSError:
                        return
                    stop.wait(0.02)

            poller = threading.Thread(target=poll, daemon=True)
            poller.start()
            errors = []
            block = os.urandom(1 * MiB)

            def one(i):
                try:
                    stream_upload(depot, f"rss-{i}.bin", each, block, i)
                except Exception as e:  # noqa: BLE001 - reported below
                    errors.append(f"upload {i}: {e}")

            t0 = time.monotonic()
            ths = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(n)]
            for t in ths:
                t.start()
            for t in ths:
                t.join(timeout=max(60, 900 - (time.monotonic() - t0)))
            secs = time.monotonic() - t0
            stop.set()
            poller.join(timeout=5)
            _, hwm = depot.rss()
            if any(t.is_alive() for t in ths):
                errors.append("uploads still running after the time limit")
            if errors:
                raise BenchError(f"{len(errors)} of {n} uploads failed: {errors[0]}")
            self.raw.append((f"RSS {name}", "depot VmHWM MiB", [hwm / MiB], "MiB"))
            self.notes.append(f"{name}: {n} x {human(each)} in {secs:.1f}s "
                              f"({n * each / MiB / secs:.0f} MiB/s); RSS at start "
                              f"{start_rss / MiB:.1f} MiB, VmRSS polled peak {peak_poll[0] / MiB:.1f} MiB, "
                              f"VmHWM {hwm / MiB:.1f} MiB")
            return hwm
        finally:
            depot.stop()
            shutil.rmtree(data, ignore_errors=True)

    def case_presigned(self, depot, ngx):
        """Foir's presigned PUT (create, curl -T to the uploadUrl) against nginx's PUT of the same
        file, interleaved, each from a clean page cache state. The confirm is not timed."""
        src = self.source(self.big)
        log(f"presigned: {human(self.big)} PUT, {self.runs_big} runs")
        vals = {"depot": [], "nginx": []}
        for r in range(self.runs_big):
            os.sync()
            name = f"presigned-{r}.bin"
            secs = ngx.put(src, name)
            vals["nginx"].append(self.big / MiB / secs)
            os.remove(os.path.join(ngx.www, "put", name))
            os.sync()
            secs, upload_id = direct.presigned_put(run, CURL, depot, src)
            vals["depot"].append(self.big / MiB / secs)
            _, f = direct.confirm(depot, upload_id)
            depot.delete(f["id"])
        for k, v in vals.items():
            self.raw.append((f"presigned PUT {human(self.big)}", k, v, "MiB/s"))
        return med(vals["depot"]), med(vals["nginx"])

    def case_multipart(self, depot, ngx):
        """Amplience's multipart temp file: the file in 8 parts PUT at once (8 connections),
        then the complete request (assembly: the parts streamed into one blob, hashed as a
        whole), against nginx's single PUT of the same file, interleaved. depot's time is the
        parts plus the complete: the file is only downloadable after both."""
        src = self.source(self.big)
        log(f"multipart: {human(self.big)} in 8 parallel parts + complete, {self.runs_big} runs")
        vals = {"depot": [], "nginx": []}
        split = []
        for r in range(self.runs_big):
            os.sync()
            name = f"multipart-{r}.bin"
            secs = ngx.put(src, name)
            vals["nginx"].append(self.big / MiB / secs)
            os.remove(os.path.join(ngx.www, "put", name))
            os.sync()
            t_parts, t_complete, _ = direct.multipart_upload(
                depot, self.big, 8, lambda i, off, n: direct.file_chunks(src, off, n))
            vals["depot"].append(self.big / MiB / (t_parts + t_complete))
            split.append((t_parts, t_complete))
        for k, v in vals.items():
            self.raw.append((f"multipart {human(self.big)}, 8 parts", k, v, "MiB/s"))
        self.notes.append("multipart: seconds of the 8 part PUTs + the complete, per run: " +
                          ", ".join(f"{p:.2f}+{c:.2f}" for p, c in split))
        return med(vals["depot"]), med(vals["nginx"])

    def case_multipart_large(self, depot):
        """A multipart temp file over the 2 GiB default limit (raised for the bench): 5 GiB
        (320 MiB with --quick) in 8 parts streamed from memory, completed, then checked by its
        download's ETag (the SHA-256 of the whole, hashed here from the same bytes) and length.
        Returns (seconds of parts + complete, bytes)."""
        size = 320 * MiB if self.quick else 5 * GiB
        block = os.urandom(1 * MiB)

        def chunks_of(i, off, n):
            # part i's bytes: blocks stamped with their index in the file (nothing deduplicates)
            k = off // len(block)
            left = n
            while left > 0:
                m = min(left, len(block))
                yield k.to_bytes(16, "little") + block[16:m] if m > 16 else block[:m]
                left -= m
                k += 1

        t_parts, t_complete, url = direct.multipart_upload(depot, size, 8, chunks_of)
        want = hashlib.sha256()
        for off in range(0, size, len(block)):
            for c in chunks_of(0, off, min(len(block), size - off)):
                want.update(c)
        c = http.client.HTTPConnection("127.0.0.1", depot.port, timeout=120)
        from urllib.parse import urlsplit
        u = urlsplit(url)
        c.request("HEAD", f"{u.path}?{u.query}")
        resp = c.getresponse()
        resp.read()
        c.close()
        etag = (resp.getheader("ETag") or "").strip('"')
        length = int(resp.getheader("Content-Length") or -1)
        if resp.status != 200 or etag != want.hexdigest() or length != size:
            raise BenchError(f"the {human(size)} file came back as {resp.status}, {length} bytes, "
                             f"ETag {etag[:16]}.. (want {want.hexdigest()[:16]}..)")
        over = "" if self.quick else " (over the 2 GiB default)"
        self.notes.append(f"multipart {human(size)}{over}: parts {t_parts:.1f}s, "
                          f"complete {t_complete:.1f}s; served whole (ETag = SHA-256, length)")
        return t_parts + t_complete, size

    def case_multipart_rss(self):
        """Peak RSS of a fresh depot while a file of rss_one bytes (2 GiB) is sent in 8
        parallel parts streamed from memory and assembled by the complete request."""
        data = os.path.join(self.run_dir, "depot-mprss")
        depot = Depot(self, data, "depot-mprss")
        try:
            peak = [0]
            stop = threading.Event()

            def poll():
                while not stop.is_set():
                    try:
                        peak[0] = max(peak[0], depot.rss()[0])
                    except OSError:
                        return
                    stop.wait(0.02)

            poller = threading.Thread(target=poll, daemon=True)
            poller.start()
            block = os.urandom(1 * MiB)

            def chunks_of(i, off, n):
                left, k = n, 0
                mv = memoryview(block)
                while left > 0:
                    m = min(left, len(block))
                    # a different first 16 bytes in every block and part
                    yield i.to_bytes(8, "little") + k.to_bytes(8, "little") + bytes(mv[16:m]) \
                        if m > 16 else bytes(mv[:m])
                    left -= m
                    k += 1

            at_parts = []
            t_parts, t_complete, _ = direct.multipart_upload(
                depot, self.rss_one, 8, chunks_of, between=lambda: at_parts.append(peak[0]))
            stop.set()
            poller.join(timeout=5)
            _, hwm = depot.rss()
            self.raw.append(("RSS multipart", "depot VmHWM MiB", [hwm / MiB], "MiB"))
            self.notes.append(f"multipart RSS: {human(self.rss_one)} in 8 parts in {t_parts:.1f}s, "
                              f"complete (assembly) {t_complete:.1f}s; VmRSS polled peak "
                              f"{at_parts[0] / MiB:.1f} MiB during the parts, {peak[0] / MiB:.1f} "
                              f"MiB in all, VmHWM {hwm / MiB:.1f} MiB")
            return hwm
        finally:
            depot.stop()
            shutil.rmtree(data, ignore_errors=True)

    def case_confirm(self, depot):
        """confirmFileUpload of a 6000 x 4000 JPEG: the decode (dimensions, blurhash) runs in the
        confirm, so its time is the time of the call."""
        os.makedirs(self.files_dir, exist_ok=True)
        path = os.path.join(self.files_dir, "24mp.jpg")
        if not os.path.exists(path):
            log("writing a 6000 x 4000 JPEG")
            direct.write_jpeg(path, 6000, 4000)
        runs = 3 if self.quick else 5
        log(f"confirm: 24-megapixel JPEG, {runs} runs")
        times = []
        for i in range(runs):
            _, upload_id = direct.presigned_put(run, CURL, depot, path, "image/jpeg")
            secs, f = direct.confirm(depot, upload_id)
            if (f.get("width"), f.get("height")) != (6000, 4000) or not f.get("blurhash"):
                raise BenchError(f"confirm did not describe the image: {json.dumps(f)[:300]}")
            times.append(secs)
            depot.delete(f["id"])
        self.raw.append(("confirmFileUpload 24 MP JPEG", "depot", [t * 1000 for t in times], "ms"))
        self.notes.append(f"confirmFileUpload of a 24-megapixel JPEG ({os.path.getsize(path) / MiB:.1f} MiB"
                          f" baseline, written by scripts/bench.d/direct.py): median "
                          f"{med(times) * 1000:.0f} ms over {runs} runs")
        return med(times)

    def case_tus(self, depot, ngx):
        """tus 1.0 with the real clients, each against nginx's PUT of the same file, interleaved,
        each from a clean page cache state: tus-js-client in node (tests/tus/upload.mjs, one
        PATCH from an fs.ReadStream; the client's own clock times the upload, node's start-up
        and module loading are not counted) and `depot upload` (its default: one streamed PATCH,
        the File's sha256 checked; timed as a whole process). Creation and the File's making
        are counted. Returns {client: (depot MiB/s, nginx MiB/s)}."""
        script = os.path.join(self.a.repo, "tests", "tus", "upload.mjs")
        if not os.path.isdir(os.path.join(self.a.repo, "tests", "tus", "node_modules", "tus-js-client")):
            raise BenchError("tests/tus/node_modules is missing (npm ci --prefix tests/tus)")
        src = self.source(self.big)
        log(f"tus: {human(self.big)} with tus-js-client and depot upload, {self.runs_big} runs")
        vals = {"tus-js-client": [], "depot upload": [], "nginx": []}
        cache = os.path.join(self.run_dir, "cli-cache")
        for r in range(self.runs_big):
            os.sync()
            name = f"tus-{r}.bin"
            secs = ngx.put(src, name)
            vals["nginx"].append(self.big / MiB / secs)
            os.remove(os.path.join(ngx.www, "put", name))
            os.sync()
            cfg = {"endpoint": f"{depot.base}/tus/", "token": depot.token, "domain": DOMAIN,
                   "file": src, "name": name, "directory": "/bench-tus", "chunkSize": None}
            p = run(["node", script, json.dumps(cfg)], timeout=900)
            if p.returncode != 0:
                raise BenchError(f"tus-js-client failed: {p.stderr.strip()[-300:]}")
            out = json.loads(p.stdout.strip().splitlines()[-1])
            if not out.get("fileId"):
                raise BenchError(f"the tus upload made no File: {out}")
            vals["tus-js-client"].append(self.big / MiB / (out["elapsedMs"] / 1000))
            depot.delete(out["fileId"])
            os.sync()
            t0 = time.monotonic()
            p = run([self.depot, "upload", "--url", depot.base, "--token", depot.token,
                     "--instance", DOMAIN, "--dir", "/bench-cli", src], timeout=900,
                    env=dict(os.environ, XDG_CACHE_HOME=cache))
            secs = time.monotonic() - t0
            if p.returncode != 0:
                raise BenchError(f"depot upload failed: {p.stderr.strip()[-300:]}")
            rec = json.loads(p.stdout.strip().splitlines()[-1])
            vals["depot upload"].append(self.big / MiB / secs)
            depot.delete(rec["hypi"]["id"])
        for k, v in vals.items():
            self.raw.append((f"tus {human(self.big)}", k, v, "MiB/s"))
        return {c: (med(vals[c]), med(vals["nginx"])) for c in ("tus-js-client", "depot upload")}

    def case_transform(self, depot, ngx):
        """Image transforms (issue 16): the first request for a 320 px WebP of a 24-megapixel
        JPEG (decode, resize, encode, store), the same request answered from the stored variant,
        and the cached variant's GET rate against nginx serving the same bytes."""
        os.makedirs(self.files_dir, exist_ok=True)
        path = os.path.join(self.files_dir, "24mp.jpg")
        if not os.path.exists(path):
            log("writing a 6000 x 4000 JPEG")
            direct.write_jpeg(path, 6000, 4000)
        query = "?w=320&format=webp"
        owner = ["-H", f"Authorization: {depot.token}"]
        runs = 2 if self.quick else 5
        log(f"transform: 24-megapixel JPEG to a 320 px WebP, {runs} first and cached runs")
        first, cached = [], []
        url = None
        for i in range(runs):
            # A fresh source each run (its variants go with it), so each first request computes.
            if url:
                depot.delete(file_id)
            _, file_id, url = depot.upload(path, f"transform{i}")
            secs, _ = curl_get(f"{depot.base}{url}{query}", owner)
            first.append(secs)
            for _ in range(3):
                cached.append(curl_get(f"{depot.base}{url}{query}", owner)[0])
        variant = os.path.join(ngx.www, "variant.webp")
        r = run([*CURL, "-o", variant, "-w", "%{http_code}", *owner, f"{depot.base}{url}{query}"],
                timeout=120)
        if r.stdout.strip() != "200":
            raise BenchError(f"variant GET answered {r.stdout.strip() or r.stderr.strip()}")
        vals = {"nginx": [], "depot": []}
        for _ in range(self.wrk_runs):
            vals["nginx"].append(wrk(f"{ngx.base}/variant.webp", 64, self.wrk_secs,
                                     {"BENCH_MODE": "get"})["ok_per_s"])
            s = wrk(f"{depot.base}{url}{query}", 64, self.wrk_secs, {"BENCH_MODE": "get"}, owner)
            if s["status"]:
                self.notes.append(f"depot variant GET: {s['status']} non-2xx answers in one run")
            vals["depot"].append(s["ok_per_s"])
        self.raw.append(("transform 24 MP JPEG -> 320 px WebP, first", "depot",
                         [t * 1000 for t in first], "ms"))
        self.raw.append(("transform 24 MP JPEG -> 320 px WebP, cached", "depot",
                         [t * 1000 for t in cached], "ms"))
        for k, v in vals.items():
            self.raw.append((f"cached variant GET ({os.path.getsize(variant)} B) x64", k, v,
                             "req/s"))
        return med(first), med(cached), med(vals["depot"]), med(vals["nginx"])

    # -- driver ------------------------------------------------------------------------------

    def add_row(self, case, reference, depot_v, ref_v, unit, target, op=">="):
        """target: a ratio (op >=) or an absolute bound in MiB (op <=, ref_v None)."""
        if op == ">=":
            ratio = depot_v / ref_v if depot_v and ref_v else None
            verdict = "n/a" if ratio is None else ("PASS" if ratio >= target else "MISS")
            self.rows.append((case, reference, fmt(depot_v, unit), fmt(ref_v, unit),
                              "n/a" if ratio is None else f"{ratio:.2f}x",
                              f">= {target}x", verdict))
        else:
            verdict = "n/a" if depot_v is None else ("PASS" if depot_v <= target else "MISS")
            self.rows.append((case, reference, fmt(depot_v, unit), "-", "-", f"<= {target}{unit}",
                              verdict))

    def error_row(self, case, reference, target, err):
        self.errors += 1
        log(f"ERROR in {case}: {err}")
        self.notes.append(f"{case}: ERROR {err}")
        self.rows.append((case, reference, "error", "error", "-", target, "ERROR"))

    def main(self):
        t_start = time.monotonic()
        if os.path.exists(self.run_dir):
            log("removing the previous run's data")
            shutil.rmtree(self.run_dir, ignore_errors=True)
        os.makedirs(self.run_dir)
        big = human(self.big)
        depot = ngx = None
        phase_times = []
        try:
            if any(c in self.cases for c in ("sizes", "get", "up4k", "presigned", "confirm",
                                             "multipart", "tus", "transform")):
                depot = Depot(self, os.path.join(self.run_dir, "depot-data"), "depot")
            if any(c in self.cases for c in ("sizes", "get", "presigned", "multipart", "tus",
                                             "transform")):
                ngx = Nginx(self)

            # Direct uploads (issue 11): scripts/bench.d/direct.py
            t = time.monotonic()
            if "presigned" in self.cases:
                try:
                    d, n = self.case_presigned(depot, ngx)
                    self.add_row(f"presigned PUT {big} (Foir `uploadUrl`)",
                                 "nginx `dav_methods PUT` (no fsync, no hash)", d, n, " MiB/s", 0.95)
                except (BenchError, RuntimeError, subprocess.TimeoutExpired, OSError, KeyError,
                        ValueError) as e:
                    self.error_row(f"presigned PUT {big}", "nginx PUT", ">= 0.95x", e)
                phase_times.append(("presigned", time.monotonic() - t))
            t = time.monotonic()
            if "multipart" in self.cases:
                name = f"multipart {big}, 8 parallel part PUTs + complete (Amplience)"
                try:
                    d, n = self.case_multipart(depot, ngx)
                    self.add_row(name, "nginx `dav_methods PUT` (no fsync, no hash)", d, n,
                                 " MiB/s", 1.0)
                except (BenchError, RuntimeError, subprocess.TimeoutExpired, OSError, KeyError,
                        ValueError) as e:
                    self.error_row(name, "nginx PUT", ">= 1.0x", e)
                name = "multipart over the 2 GiB default: completes and is served whole"
                try:
                    secs, size = self.case_multipart_large(depot)
                    self.rows.append((f"multipart {human(size)}, 8 parts (limit raised)", "-",
                                      fmt(size / MiB / secs, " MiB/s"), "-", "-", "works", "PASS"))
                except (BenchError, RuntimeError, subprocess.TimeoutExpired, OSError, KeyError,
                        ValueError) as e:
                    self.error_row(name, "-", "works", e)
                name = f"peak RSS, {human(self.rss_one)} multipart upload + assembly"
                try:
                    hwm = self.case_multipart_rss()
                    self.add_row(name, "-", hwm / MiB, None, " MiB", 64, op="<=")
                except (BenchError, RuntimeError, subprocess.TimeoutExpired, OSError, KeyError,
                        ValueError) as e:
                    self.error_row(name, "-", "<= 64 MiB", e)
                phase_times.append(("multipart", time.monotonic() - t))
            if "tus" in self.cases:
                try:
                    for client, (d, n) in self.case_tus(depot, ngx).items():
                        self.add_row(f"tus {big} ({client}, one PATCH)",
                                     "nginx `dav_methods PUT` (no fsync, no hash)", d, n, " MiB/s",
                                     0.8)
                except (BenchError, RuntimeError, subprocess.TimeoutExpired, OSError, KeyError,
                        ValueError) as e:
                    self.error_row(f"tus {big}", "nginx PUT", ">= 0.8x", e)
                phase_times.append(("tus", time.monotonic() - t))
            t = time.monotonic()
            if "confirm" in self.cases:
                name = "`confirmFileUpload`, 24-megapixel JPEG (decode, blurhash)"
                try:
                    secs = self.case_confirm(depot)
                    self.rows.append((name, "-", fmt(secs * 1000, " ms"), "-", "-", "reported",
                                      "info"))
                except (BenchError, RuntimeError, subprocess.TimeoutExpired, OSError, KeyError,
                        ValueError) as e:
                    self.error_row(name, "-", "reported", e)
                phase_times.append(("confirm", time.monotonic() - t))

            t = time.monotonic()
            if "transform" in self.cases:
                name = "image transform, 24 MP JPEG -> 320 px WebP"
                try:
                    first, cached, d, n = self.case_transform(depot, ngx)
                    self.rows.append((f"{name}, first request", "-", fmt(first * 1000, " ms"),
                                      "-", "-", "reported", "info"))
                    self.rows.append((f"{name}, cached variant", "-", fmt(cached * 1000, " ms"),
                                      "-", "-", "reported", "info"))
                    self.add_row("GET cached variant, 64 conns, owner",
                                 "nginx, the same variant bytes, no auth", d, n, " req/s", 0.8)
                except (BenchError, RuntimeError, subprocess.TimeoutExpired, OSError, KeyError,
                        ValueError) as e:
                    self.error_row(name, "-", "reported", e)
                phase_times.append(("transform", time.monotonic() - t))

            t = time.monotonic()
            if "sizes" in self.cases:
                try:
                    every = self.case_sizes(depot, ngx)
                    # Issue 14's small-upload rows: sequential, each durable before its answer
                    # (nginx does not fsync).
                    for size, target in ((4 * KiB, 0.5), (MiB, 0.7)):
                        if size in every:
                            self.add_row(f"upload {human(size)} sequential, `curl -F`",
                                         "nginx `dav_methods PUT` (no fsync, no hash)",
                                         every[size]["up_depot"], every[size]["up_nginx"],
                                         " MiB/s", target)
                    if self.big not in every:
                        raise _SizesSkipped()
                    res = every[self.big]
                    self.add_row(f"upload {big}, `curl -F`", f"`dd conv=fdatasync` {big} into the data dir",
                                 res["up_depot"], res["up_dd"], " MiB/s", 0.9)
                    self.add_row(f"upload {big}, raw body", "nginx `dav_methods PUT` (no fsync, no hash)",
                                 res["up_depot"], res["up_nginx"], " MiB/s", 1.0)
                    self.add_row(f"download {big}, warm cache", "nginx, sendfile on",
                                 res["down_depot"], res["down_nginx"], " MiB/s", 0.9)
                except _SizesSkipped:
                    pass
                except (BenchError, subprocess.TimeoutExpired, OSError, KeyError, ValueError) as e:
                    self.error_row(f"upload/download {big}", "dd / nginx", ">= 0.9x / 1.0x / 0.9x", e)
                phase_times.append(("sizes", time.monotonic() - t))

            t = time.monotonic()
            if "get" in self.cases:
                try:
                    g = self.case_get(depot, ngx)
                    ref = "nginx `worker_processes auto`, same file, no auth"
                    self.add_row("GET 4 KiB, 64 conns, owner", ref, g["owner"], g["nginx"],
                                 " req/s", 0.8)
                    self.add_row("GET 4 KiB, 64 conns, grantee", ref, g["grantee"], g["nginx"],
                                 " req/s", 0.8)
                    self.add_row("GET 4 KiB, 64 conns, anonymous", ref, g["anonymous"], g["nginx"],
                                 " req/s", 0.8)
                except (BenchError, subprocess.TimeoutExpired, OSError, KeyError, ValueError) as e:
                    self.error_row("GET 4 KiB, 64 conns", "nginx", ">= 0.8x", e)
                phase_times.append(("get", time.monotonic() - t))
            if ngx:
                ngx.stop()
                shutil.rmtree(ngx.www, ignore_errors=True)

            t = time.monotonic()
            if "up4k" in self.cases:
                try:
                    d, r = self.case_up4k(depot)
                    self.add_row("4 KiB multipart uploads, 32 conns",
                                 "rustypaste, same files (no fsync; empty upload dir each run)",
                                 d, r, " uploads/s", 3.0)
                except (BenchError, subprocess.TimeoutExpired, OSError, KeyError, ValueError) as e:
                    self.error_row("4 KiB multipart uploads, 32 conns", "rustypaste", ">= 3.0x", e)
                phase_times.append(("up4k", time.monotonic() - t))
            if depot:
                depot.stop()   # its data dir goes after the report: thousands of small files

            t = time.monotonic()
            if "rss1" in self.cases:
                name = f"peak RSS, one {human(self.rss_one)} upload"
                try:
                    log(f"rss1: one {human(self.rss_one)} upload into a fresh depot")
                    hwm = self.rss_case("rss1", 1, self.rss_one)
                    self.add_row(name, "-", hwm / MiB, None, " MiB", 64, op="<=")
                except (BenchError, subprocess.TimeoutExpired, OSError, KeyError, ValueError) as e:
                    self.error_row(name, "-", "<= 64 MiB", e)
                phase_times.append(("rss1", time.monotonic() - t))
            t = time.monotonic()
            if "rssN" in self.cases:
                name = f"peak RSS, {self.rss_n} concurrent {human(self.rss_each)} uploads"
                try:
                    log(f"rssN: {self.rss_n} concurrent {human(self.rss_each)} uploads into a fresh depot")
                    hwm = self.rss_case("rssN", self.rss_n, self.rss_each)
                    self.add_row(name, "-", hwm / MiB, None, " MiB", 256, op="<=")
                except (BenchError, subprocess.TimeoutExpired, OSError, KeyError, ValueError) as e:
                    self.error_row(name, "-", "<= 256 MiB", e)
                phase_times.append(("rssN", time.monotonic() - t))
            t = time.monotonic()
            if "nodes" in self.cases:
                try:
                    nodes.case_nodes(self, sys.modules[__name__])
                except (BenchError, RuntimeError, subprocess.TimeoutExpired, OSError, KeyError,
                        ValueError) as e:
                    self.error_row("2 nodes vs 1 node (PG + S3)", "1 node", "reported", e)
                phase_times.append(("nodes", time.monotonic() - t))
        finally:
            self.procs.stop_all()
        total = time.monotonic() - t_start
        self.report(total, phase_times)
        t = time.monotonic()
        for d in ("depot-data", "nginx", "rustypaste",
                  *(d for d in os.listdir(self.run_dir) if d.startswith("nodes"))):
            shutil.rmtree(os.path.join(self.run_dir, d), ignore_errors=True)
        log(f"removed the run's data in {time.monotonic() - t:.0f}s (logs stay in {self.run_dir})")
        return 1 if self.errors else 0

    def report(self, total, phase_times):
        out = []
        now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
        cores = os.cpu_count()
        out.append(f"# depot benchmark{' (QUICK MODE)' if self.quick else ''}")
        out.append("")
        if self.quick:
            out.append("**QUICK MODE: small files, short and few runs. These numbers are for development "
                       "and are NOT measured against the real targets.**")
            out.append("")
        out.append(f"- date: {now}")
        out.append(f"- machine: {cores} cores, {mem_total()}, {platform.system()} {platform.release()}")
        out.append(f"- depot: {self.a.depot}, repository at {git_desc(self.a.repo)}")
        out.append(f"- tools: {tool_versions(self)}")
        out.append(f"- runs: {self.runs_small} (small files) / {self.runs_big} (>= 64 MiB) per size, "
                   f"wrk {self.wrk_runs} x {self.wrk_secs}s; medians; ratio = depot / reference; "
                   f"all on 127.0.0.1, data under {self.bench_dir}")
        out.append(f"- wall time: {total:.0f}s ({', '.join(f'{n} {s:.0f}s' for n, s in phase_times)})")
        out.append("")
        out.append("| case | reference (same run) | depot | reference | ratio | target | result |")
        out.append("| --- | --- | --- | --- | --- | --- | --- |")
        for r in self.rows:
            out.append("| " + " | ".join(r) + " |")
        if self.size_rows:
            out.append("")
            out.append("Throughput by file size (MiB/s, medians; upload ratios are depot `curl -F` / "
                       "reference, download ratio is depot / nginx, warm cache)")
            out.append("")
            out.append("| size | runs x transfers | depot upload | dd fdatasync | vs dd | nginx PUT | vs nginx "
                       "| depot download | nginx download | vs nginx |")
            out.append("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
            for label, m, runs, reps in self.size_rows:
                def ratio(a, b):
                    return f"{a / b:.2f}x" if a and b else "n/a"
                out.append(f"| {label} | {runs} x {reps} | {fmt(m['up_depot'])} | {fmt(m['up_dd'])} | "
                           f"{ratio(m['up_depot'], m['up_dd'])} | {fmt(m['up_nginx'])} | "
                           f"{ratio(m['up_depot'], m['up_nginx'])} | {fmt(m['down_depot'])} | "
                           f"{fmt(m['down_nginx'])} | {ratio(m['down_depot'], m['down_nginx'])} |")
        if self.notes:
            out.append("")
            out.append("Notes:")
            out.append("")
            for n in self.notes:
                out.append(f"- {n}")
        table = "\n".join(out) + "\n"
        raw = ["", "<details><summary>every run</summary>", "", "| case | series | values |",
               "| --- | --- | --- |"]
        for case, series, vals, unit in self.raw:
            raw.append(f"| {case} | {series} | {', '.join(fmt(v) for v in vals)} {unit} |")
        raw += ["", "</details>", ""]
        print()
        print(table)
        path = os.path.join(self.bench_dir, "results-quick.md" if self.quick else "results.md")
        with open(path, "w") as f:
            f.write(table + "\n".join(raw))
        log(f"wrote {path}")
        if total > 15 * 60:
            log(f"warning: the run took {total / 60:.1f} minutes, over the 15 minute budget")


def stream_upload(depot, name, size, block, i):
    """POST one multipart file part of `size` bytes to depot without a source file."""
    boundary = "----depotbenchrss7f3a"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"0\"; filename=\"{name}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    stamp = i.to_bytes(8, "little")

    def body():
        yield head
        left, k = size, 0
        mv = memoryview(block)
        while left > 0:
            n = min(left, len(block))
            # a different first 16 bytes in every block and upload: nothing is deduplicated
            yield stamp + k.to_bytes(8, "little") + bytes(mv[16:n]) if n > 16 else bytes(mv[:n])
            left -= n
            k += 1
        yield tail

    c = http.client.HTTPConnection("127.0.0.1", depot.port, timeout=300)
    c.request("POST", "/upload/rss", body=body(), headers={
        "Authorization": depot.token, "hypi-domain": DOMAIN,
        "Content-Type": f"multipart/form-data; boundary={boundary}",
        "Content-Length": str(len(head) + size + len(tail))})
    resp = c.getresponse()
    text = resp.read()
    c.close()
    if resp.status != 200:
        raise BenchError(f"answered {resp.status}: {text[:200]!r}")


def mem_total():
    try:
        with open("/proc/meminfo") as f:
            kb = int(f.readline().split()[1])
        return f"{kb / (1 << 20):.0f} GiB RAM"
    except OSError:
        return "? RAM"


def git_desc(repo):
    try:
        r = run(["git", "-C", repo, "rev-parse", "--short", "HEAD"], timeout=10)
        if r.returncode != 0:
            return f"{repo} (not a git checkout)"
        rev = r.stdout.strip()
        dirty = run(["git", "-C", repo, "status", "--porcelain", "--untracked-files=no"],
                    timeout=10).stdout.strip()
        return f"{rev}{' (with uncommitted changes)' if dirty else ''}"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def tool_versions(b):
    def first(argv, pattern):
        try:
            r = run(argv, timeout=10)
            m = re.search(pattern, r.stdout + r.stderr)
            return m.group(1) if m else "?"
        except (OSError, subprocess.TimeoutExpired):
            return "missing"
    return ", ".join([
        "nginx " + first([b.nginx, "-v"], r"nginx/(\S+)"),
        "wrk " + first(["wrk", "-v"], r"wrk (\S+)"),
        "curl " + first(["curl", "--version"], r"curl (\S+)"),
        # (rustypaste has no --version flag: ask cargo what it installed)
        "rustypaste " + first(["cargo", "install", "--list", "--root",
                               os.path.dirname(os.path.dirname(b.rustypaste))],
                              r"rustypaste v(\S+):"),
    ])


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true", help="small files, short runs; not the real targets")
    p.add_argument("--only", help=f"comma-separated cases: {','.join(ALL_CASES + OPT_IN_CASES)}")
    p.add_argument("--bench-dir", required=True)
    p.add_argument("--depot", required=True)
    p.add_argument("--nginx", required=True)
    p.add_argument("--rustypaste", required=True)
    p.add_argument("--pids", required=True)
    p.add_argument("--repo", required=True)
    a = p.parse_args()
    b = Bench(a)

    def on_signal(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    try:
        sys.exit(b.main())
    finally:
        b.procs.stop_all()


if __name__ == "__main__":
    main()

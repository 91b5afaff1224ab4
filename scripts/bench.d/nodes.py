"""The `nodes` case of scripts/bench (issue 13): one depot node against two on the same host,
both on PostgreSQL metadata and one S3 bucket (moto_server and the PostgreSQL cluster that
`scripts/services start` runs). Aggregate upload and download throughput (concurrent curl
transfers spread round robin over the nodes) and 4 KiB GET requests per second with their p99
(one wrk per node, the connections split between them, run at the same time).

Opt-in (`scripts/bench --only nodes`): the default run stays on the local store. Both nodes share
the host's 2 cores with PostgreSQL, moto_server (Python) and the load generators, so the numbers
say what a second node costs or gains on one machine, not what a second machine would add.
Standard library only."""

import os
import secrets
import subprocess
import threading
import time
import urllib.request

MiB = 1 << 20


def services_env():
    """The services' endpoints from the environment (scripts/bench starts them when unset)."""
    pg = os.environ.get("DEPOT_TEST_PG_URL")
    s3 = os.environ.get("DEPOT_TEST_S3_ENDPOINT")
    if not pg or not s3:
        raise RuntimeError("nodes: DEPOT_TEST_PG_URL / DEPOT_TEST_S3_ENDPOINT unset "
                           "(eval \"$(scripts/services start)\")")
    return pg, s3


def fresh_store(pg, s3, tag):
    """A new bucket and a new schema, so each setup starts empty; returns the nodes' env."""
    name = f"bench-{tag}-{os.getpid()}-{int(time.time())}"
    req = urllib.request.Request(f"{s3}/{name}", method="PUT")   # moto takes unsigned requests
    with urllib.request.urlopen(req, timeout=30) as r:
        if r.status != 200:
            raise RuntimeError(f"nodes: creating bucket {name}: {r.status}")
    schema = name.replace("-", "_")
    r = subprocess.run(["psql", "-q", "-v", "ON_ERROR_STOP=1", pg, "-c", f"CREATE SCHEMA {schema}"],
                       capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError(f"nodes: psql CREATE SCHEMA failed: {r.stderr.strip()[:300]}")
    sep = "&" if "?" in pg else "?"
    return {
        "DEPOT_META_KIND": "postgres",
        "DEPOT_META_URL": f"{pg}{sep}options=-csearch_path%3D{schema}",
        "DEPOT_STORE_KIND": "s3",
        "DEPOT_STORE_BUCKET": name,
        "DEPOT_STORE_ENDPOINT": s3,
        "DEPOT_STORE_REGION": "us-east-1",
        "DEPOT_STORE_ACCESS_KEY_ID": "bench",
        "DEPOT_STORE_SECRET_ACCESS_KEY": "bench-secret",
        "DEPOT_STORE_ALLOW_HTTP": "true",
        # Every node signs and checks with the same keys.
        "DEPOT_JWT_SECRET": secrets.token_hex(32),
        "DEPOT_URL_SIGNING_KEY": secrets.token_hex(32),
    }


def parallel(jobs):
    """Runs the callables at once; returns their results in order (re-raises the first error)."""
    out = [None] * len(jobs)
    errs = []

    def one(i, f):
        try:
            out[i] = f()
        except Exception as e:   # noqa: BLE001 - re-raised below, in the caller's thread
            errs.append(e)

    threads = [threading.Thread(target=one, args=(i, f)) for i, f in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errs:
        raise errs[0]
    return out


def measure(b, bench, n_nodes, env):
    """Starts `n_nodes` nodes on one store and measures them; returns a dict of results."""
    nodes = []
    try:
        for i in range(n_nodes):
            data = os.path.join(b.run_dir, f"nodes{n_nodes}-{i}")
            nodes.append(bench.Depot(b, data, f"depot-nodes{n_nodes}-{i}", env=env))
        size, count = (8 * MiB, 8) if b.quick else (64 * MiB, 16)
        src = b.source(size)
        # Uploads: `count` at once, round robin over the nodes; distinct bytes per upload (the
        # same source would be deduplicated), so each is written to the bucket.
        srcs = []
        for i in range(count):
            p = os.path.join(b.files_dir, f"nodes-{size}-{i}.bin")
            if not (os.path.exists(p) and os.path.getsize(p) == size):
                with open(src, "rb") as f, open(p + ".tmp", "wb") as g:
                    g.write(i.to_bytes(16, "little") + f.read()[16:])
                os.replace(p + ".tmp", p)
            srcs.append(p)
        t = time.monotonic()
        ups = parallel([lambda i=i: nodes[i % n_nodes].upload(srcs[i], "nodes")
                        for i in range(count)])
        up_secs = time.monotonic() - t
        urls = [u[2] for u in ups]
        # Downloads: the same files, each from the node that did not store it when there are two.
        t = time.monotonic()
        got = parallel([lambda i=i: nodes[(i + 1) % n_nodes].download(urls[i])
                        for i in range(count)])
        down_secs = time.monotonic() - t
        if any(n != size for _, n in got):
            raise bench.BenchError("nodes: a download returned the wrong size")
        # GET 4 KiB: 64 connections split over the nodes, one wrk per node at the same time.
        _, _, small = nodes[0].upload(b.source(4096), "nodes-get")
        for d in nodes:
            d.download(small)   # warm each node's cache
        rps, p99 = [], []
        for _ in range(b.wrk_runs):
            runs = parallel([
                lambda d=d: bench.wrk(f"{d.base}{small}", 64 // n_nodes, b.wrk_secs,
                                      {"BENCH_MODE": "get"},
                                      ["-H", f"Authorization: {nodes[0].token}"])
                for d in nodes])
            bad = sum(r["status"] for r in runs)
            if bad:
                b.notes.append(f"nodes ({n_nodes}): {bad} non-2xx GET answers in one run (not counted)")
            rps.append(sum(r["ok_per_s"] for r in runs))
            # The slower node's p99: what a client behind a balancer sees at worst.
            p99.append(max(r["latency_p99_us"] for r in runs) / 1000)
        return {
            "up": count * size / MiB / up_secs,
            "down": count * size / MiB / down_secs,
            "rps": bench.med(rps),
            "p99": bench.med(p99),
            "label": f"{count} x {size // MiB} MiB",
        }
    finally:
        for d in nodes:
            d.stop()


def case_nodes(b, bench):
    """Rows of the main table: 2 nodes against 1 node, same setup, same run."""
    pg, s3 = services_env()
    bench.log(f"nodes: 1 node, then 2 nodes, on PostgreSQL + S3 (moto_server at {s3})")
    one = measure(b, bench, 1, fresh_store(pg, s3, "n1"))
    two = measure(b, bench, 2, fresh_store(pg, s3, "n2"))
    for key, unit, what in (("up", " MiB/s", f"upload {one['label']} at once, aggregate"),
                            ("down", " MiB/s", f"download {one['label']} at once, aggregate"),
                            ("rps", " req/s", "GET 4 KiB, 64 conns over the nodes"),
                            ("p99", " ms", "GET 4 KiB p99 (slower node), lower is better")):
        ratio = two[key] / one[key] if one[key] and two[key] else None
        b.rows.append((f"2 nodes (PG + S3): {what}", "1 node, same setup and run",
                       bench.fmt(two[key], unit), bench.fmt(one[key], unit),
                       "n/a" if ratio is None else f"{ratio:.2f}x", "reported", "info"))
        b.raw.append((f"nodes: {what}", "1 node / 2 nodes", [one[key], two[key]], unit.strip()))
    b.notes.append("nodes: both nodes, PostgreSQL, moto_server (Python, the S3 side) and the load "
                   "generators share this host's cores: a second node on the same host adds no "
                   "CPU, so these ratios show the cost of coordination, not a second machine's gain")

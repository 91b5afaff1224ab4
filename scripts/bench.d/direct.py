"""The direct-upload rows of scripts/bench (issue 11): Foir's presigned PUT of a big file
against nginx's PUT, and `confirmFileUpload` of a 24-megapixel JPEG (decode, dimensions,
blurhash). Standard library only: the JPEG is written by the small baseline encoder below."""

import http.client
import json
import os
import statistics
import struct
import time

DOMAIN = "bench.test"   # set by bench.py


def _post(depot, path, body, token):
    c = http.client.HTTPConnection("127.0.0.1", depot.port, timeout=600)
    c.request("POST", path, body=json.dumps(body) if body is not None else None,
              headers={"Authorization": token, "hypi-domain": DOMAIN,
                       "Content-Type": "application/json"})
    resp = c.getresponse()
    data = resp.read()
    c.close()
    if resp.status not in (200, 201):
        raise RuntimeError(f"depot POST {path} answered {resp.status}: {data[:300]!r}")
    return json.loads(data)


def create_upload(depot, name, mime, size):
    v = _post(depot, "/uploads/presigned",
              {"filename": name, "mimeType": mime, "size": size}, depot.token)
    return v["uploadId"], v["uploadUrl"]


def confirm(depot, upload_id):
    t = time.monotonic()
    v = _post(depot, f"/uploads/{upload_id}/confirm", None, depot.token)
    return time.monotonic() - t, v


def presigned_put(run, curl, depot, path, mime="application/octet-stream"):
    """Creates an upload and PUTs `path` to its uploadUrl with curl (`-T`, as a client would);
    returns (seconds of the PUT, upload id)."""
    size = os.path.getsize(path)
    upload_id, url = create_upload(depot, os.path.basename(path), mime, size)
    r = run([*curl, "-o", "/dev/null", "-w", "%{http_code} %{time_total}",
             "-H", f"Content-Type: {mime}", "-T", path, url], timeout=900)
    code, secs = (r.stdout.split() + ["", ""])[:2]
    if r.returncode != 0 or code != "200":
        raise RuntimeError(f"presigned PUT answered {code or r.stderr.strip()}")
    return float(secs), upload_id


# ---------------------------------------------------------------------------------------------
# a baseline JPEG, YCbCr 4:2:0, written block by block: a diagonal gradient with noise in luma
# (DC and 12 AC coefficients per block), flat chroma

def _huff(nsym, length):
    """A table of `nsym` symbols 0..nsym-1 (or given) all coded in `length` bits: canonical codes
    0, 1, 2, ...; returns the DHT counts (16 entries)."""
    counts = [0] * 16
    counts[length - 1] = nsym
    return counts


def write_jpeg(path, width, height):
    qt = bytes([8] * 64)
    dc_syms = list(range(12))             # categories 0..11, 4-bit codes 0..11
    ac_syms = [0x00] + list(range(1, 11))  # EOB and (run 0, size 1..10), 4-bit codes 0..10
    ac_code = {s: i for i, s in enumerate(ac_syms)}
    out = bytearray(b"\xff\xd8")
    out += b"\xff\xdb" + struct.pack(">HB", 67, 0) + qt
    out += b"\xff\xc0" + struct.pack(">HBHHB", 17, 8, height, width, 3)
    out += bytes([1, 0x22, 0, 2, 0x11, 0, 3, 0x11, 0])
    for cls, syms in ((0x00, dc_syms), (0x10, ac_syms)):
        body = bytes([cls]) + bytes(_huff(len(syms), 4)) + bytes(syms)
        out += b"\xff\xc4" + struct.pack(">H", 2 + len(body)) + body
    out += b"\xff\xda" + struct.pack(">HB", 12, 3) + bytes([1, 0, 2, 0, 3, 0, 0, 63, 0])

    data = bytearray()
    acc = 0       # bit accumulator
    nbits = 0

    def put(code, n):
        nonlocal acc, nbits
        acc = (acc << n) | code
        nbits += n
        while nbits >= 8:
            nbits -= 8
            b = (acc >> nbits) & 0xFF
            data.append(b)
            if b == 0xFF:
                data.append(0)
        acc &= (1 << nbits) - 1

    def value(v):
        """(category, bits) of a coefficient value."""
        c = abs(v).bit_length()
        return c, (v if v >= 0 else v + (1 << c) - 1)

    eob = ac_code[0x00]
    flat = (0 << 4) | eob   # chroma block: DC diff 0 (category 0, code 0) then EOB
    mcus_x, mcus_y = (width + 15) // 16, (height + 15) // 16
    prev = 0
    seed = 1
    for my in range(mcus_y):
        for mx in range(mcus_x):
            for by, bx in ((0, 0), (0, 1), (1, 0), (1, 1)):
                gx, gy = mx * 2 + bx, my * 2 + by
                dc = ((gx * 3 + gy * 2) % 160) - 80
                c, bits = value(dc - prev)
                prev = dc
                put((c << c) | bits, 4 + c)
                # 12 AC coefficients of camera-like noise: about 6 MB for 24 megapixels,
                # near a real photo's size, so entropy decoding costs about what it would
                for _ in range(12):
                    seed = (seed * 1103515245 + 12345) & 0x7FFFFFFF
                    ac = (seed >> 16) % 121 - 60
                    ac = ac or 1
                    c, bits = value(ac)
                    put((ac_code[c] << c) | bits, 4 + c)
                put(eob, 4)
            put(flat, 8)
            put(flat, 8)
    if nbits:
        put((1 << (8 - nbits)) - 1, 8 - nbits)   # pad with 1 bits
    out += data + b"\xff\xd9"
    with open(path + ".tmp", "wb") as f:
        f.write(out)
    os.replace(path + ".tmp", path)


def med(xs):
    return statistics.median(xs) if xs else None


# ---------------------------------------------------------------------------------------------
# Amplience's multipart temp files (issue 12): parts PUT in parallel, then the complete request

def create_multipart(depot, size):
    """POST /temp-files/multipart: {uploadPartUrls, completeUrl, downloadUrl, ...}."""
    return _post(depot, "/temp-files/multipart", {"filesize": size}, depot.token)


def _split_url(url):
    from urllib.parse import urlsplit
    u = urlsplit(url)
    return u.port, f"{u.path}?{u.query}"


def _put_part(url, length, chunks):
    """PUTs one part (Content-Length `length`, bytes from the iterable `chunks`); its ETag."""
    port, path = _split_url(url)
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=900)
    c.request("PUT", path, body=chunks, headers={"Content-Length": str(length)})
    resp = c.getresponse()
    data = resp.read()
    c.close()
    if resp.status != 200:
        raise RuntimeError(f"part PUT answered {resp.status}: {data[:300]!r}")
    return resp.getheader("ETag")


def file_chunks(path, offset, length, step=1 << 20):
    with open(path, "rb") as f:
        f.seek(offset)
        left = length
        while left > 0:
            b = f.read(min(step, left))
            if not b:
                raise RuntimeError(f"{path} ended early")
            left -= len(b)
            yield b


def part_ranges(size, parts):
    """`parts` (offset, length) ranges covering `size` bytes, all but the last equal and at least
    5 MiB (S3's minimum)."""
    each = max(5 << 20, -(-size // parts))
    out, off = [], 0
    while off < size:
        out.append((off, min(each, size - off)))
        off += each
    return out


def multipart_upload(depot, size, parts, chunks_of, between=None):
    """Creates a multipart temp file of `size` bytes, PUTs its parts (`chunks_of(i, offset,
    length)` yields part i's bytes) all at once, one thread each, then completes it (`between()`
    is called after the parts, before the complete). Returns (seconds of the parts, seconds of
    the complete, download URL)."""
    import threading
    v = create_multipart(depot, size)
    ranges = part_ranges(size, parts)
    if len(ranges) > len(v["uploadPartUrls"]):
        raise RuntimeError("more parts than part URLs")
    etags, errors = [None] * len(ranges), []

    def one(i):
        off, n = ranges[i]
        try:
            etags[i] = _put_part(v["uploadPartUrls"][i], n, chunks_of(i, off, n))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(f"part {i + 1}: {e}")

    t0 = time.monotonic()
    ths = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(len(ranges))]
    for t in ths:
        t.start()
    for t in ths:
        t.join()
    t_parts = time.monotonic() - t0
    if errors:
        raise RuntimeError(errors[0])
    if between:
        between()
    xml = ['<?xml version="1.0" encoding="UTF-8"?>', '<CompleteMultipartUpload xmlns="">']
    for i, e in enumerate(etags):
        xml.append(f"<Part><ETag>{e}</ETag><PartNumber>{i + 1}</PartNumber></Part>")
    xml.append("</CompleteMultipartUpload>")
    port, path = _split_url(v["completeUrl"])
    t1 = time.monotonic()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=900)
    c.request("POST", path, body="\n".join(xml).encode(),
              headers={"Content-Type": "application/xml"})
    resp = c.getresponse()
    data = resp.read()
    c.close()
    if resp.status != 200:
        raise RuntimeError(f"complete answered {resp.status}: {data[:300]!r}")
    return t_parts, time.monotonic() - t1, v["downloadUrl"]

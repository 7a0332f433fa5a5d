#!/usr/bin/env python3
"""Many clients against a real `zfvis serve`: requests/s and p50/p95/p99 per route.

Starts the server (a fresh cache directory, so top-9 pictures and sweeps are computed, not read
back), then runs N concurrent clients for a fixed time. Each client uploads a photo, then loops
over a classroom's mix: uploads and predictions (a third of them new photos, the rest the demo
photos everyone has), the layer grid, a unit's view, deconvnet projections, top-9 views over the
probe set with one of their pictures, and activation maps. A 503 is the server's documented
answer to a full queue: the client waits its Retry-After (at most 5 s) and counts it. Anything
else that is not 2xx is an error.

Usage (needs aiohttp; ~/.cache/zfvis/pyref has it):
  ~/.cache/zfvis/pyref/bin/python tools/load.py --clients 50 --seconds 60 [--bin PATH]
      [--weights W] [--probe DIR] [--serve-arg=--max-queued-jobs=64 ...] [--url URL]
With --url it loads a server that is already running instead of starting one; --cache DIR
starts it on that cache folder (e.g. one warmed by `serve --warm-top9`). --mix predict=1 (or
upload=1,predict=1 …) replaces the classroom mix, and --new-photos 1.0 makes every upload and
prediction a new photo: a forward-bound load, where `serve --max-batch 1` against the default shows
what batching forwards across requests gains.
"""
import argparse
import asyncio
import collections
import glob
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time

import aiohttp

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
CACHE = os.environ.get("ZFVIS_CACHE", os.path.expanduser("~/.cache/zfvis"))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(CACHE, "target"))
# routes that run the model (forward, deconvnet or top-9 rendering) rather than read a cache
MODEL_BOUND = {"upload", "predict", "projection", "top9"}
MIX = [  # (route, weight)
    ("upload", 10), ("predict", 10), ("layer", 15), ("unit", 15), ("projection", 20),
    ("top9", 15), ("activation", 15),
]
CONV_MAPS = [96, 256, 384, 384, 256]


def start_server(args):
    if args.cache:
        cache = args.cache
    else:
        cache = tempfile.mkdtemp(prefix="zfvis-load-")
        # the probe index is reused from the main cache (building it is not the load)
        for f in glob.glob(os.path.join(CACHE, "index-*.json")) + glob.glob(
                os.path.join(ROOT, ".zfvis-cache", "index-*.json")):
            shutil.copy(f, cache)
    cmd = [args.bin, "serve", "--addr", "127.0.0.1:0", "--weights", args.weights,
           "--cache-dir", cache] + (["--probe", args.probe] if args.probe else []) + args.serve_arg
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 60
    url = None
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        m = re.search(r"(http://127\.0\.0\.1:\d+)", line)
        if m:
            url = m.group(1)
            break
    if url is None:
        proc.kill()
        sys.exit(f"load: the server did not start: {' '.join(cmd)}")
    # keep draining its log so it never blocks on a full pipe
    asyncio.get_event_loop().run_in_executor(None, lambda: [None for _ in proc.stdout])
    return proc, url, cache


async def wait_ready(session, url):
    while True:
        async with session.get(f"{url}/api/health") as r:
            h = await r.json()
        state = (h.get("probe_index") or {}).get("state")
        if state in (None, "ready"):
            return h
        print(f"load: waiting for the probe index ({state}) …", file=sys.stderr)
        await asyncio.sleep(2)


class Stats:
    def __init__(self):
        self.times = collections.defaultdict(list)
        self.codes = collections.defaultdict(collections.Counter)

    def add(self, route, seconds, status):
        self.codes[route][status] += 1
        if 200 <= status < 300:
            self.times[route].append(seconds)


def photos():
    out = []
    for f in sorted(glob.glob(os.path.join(ROOT, "web/assets/demo/*"))):
        if f.endswith((".jpg", ".png")):
            with open(f, "rb") as fh:
                out.append((os.path.basename(f), fh.read()))
    return out


async def client(i, session, url, stats, until, pics, rng, mix, new_share):
    def photo():
        name, data = rng.choice(pics)
        if rng.random() < new_share:  # a new photo: same pixels, different bytes, a new content id
            data = data + os.urandom(16) if name.endswith(".jpg") else data + b"\0" * rng.randint(1, 64)
        return name, data

    async def call(route, method, path, **kw):
        t = time.perf_counter()
        try:
            async with session.request(method, url + path, **kw) as r:
                body = await r.read()
                stats.add(route, time.perf_counter() - t, r.status)
                if r.status == 503:
                    await asyncio.sleep(min(float(r.headers.get("Retry-After", "1")), 5.0))
                return r.status, body, r
        except (aiohttp.ClientError, asyncio.TimeoutError) as e:
            stats.add(route, time.perf_counter() - t, f"{type(e).__name__}")
            return None, b"", None

    async def upload(route="upload", endpoint="/api/images"):
        name, data = photo()
        form = aiohttp.FormData()
        form.add_field("image", data, filename=name)
        return await call(route, "POST", endpoint, data=form)

    ids = []
    while time.time() < until:
        if not ids:
            status, body, _ = await upload()
            if status == 200:
                ids.append(json.loads(body)["id"])
            continue
        route = rng.choices([m for m, _ in mix], [w for _, w in mix])[0]
        layer = rng.randint(1, 5)
        m = rng.randrange(CONV_MAPS[layer - 1])
        img = rng.choice(ids)
        if route == "upload":
            status, body, _ = await upload()
            if status == 200:
                ids = (ids + [json.loads(body)["id"]])[-4:]
        elif route == "predict":
            await upload("predict", "/api/predict")
        elif route == "layer":
            await call(route, "GET", f"/api/images/{img}/layers/{layer}")
        elif route == "unit":
            await call(route, "GET", f"/visualize/{layer}/{m}?image={img}&mode=unit")
        elif route == "projection":
            await call(route, "GET", f"/api/images/{img}/projection/{layer}/{m}")
        elif route == "activation":
            await call(route, "GET", f"/api/images/{img}/activation/{layer}/{m}")
        elif route == "top9":
            # a class explores few maps: most top-9 requests hit maps someone already opened
            m = rng.randrange(8) if rng.random() < 0.7 else m
            status, body, _ = await call(route, "GET", f"/visualize/{layer}/{m}")
            if status == 200:
                entries = json.loads(body).get("entries", [])
                if entries:
                    e = rng.choice(entries)
                    await call("top9-picture", "GET", e["reconstruction_url"])


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))] if xs else float("nan")


async def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--bin", default=os.path.join(TARGET, "debug", "zfvis"))
    ap.add_argument("--weights", default="model-weights/zfnet-imagenette.safetensors")
    ap.add_argument("--probe", default=os.path.join(ROOT, "..", "shared/datasets/imagenette/val"))
    ap.add_argument("--serve-arg", action="append", default=[])
    ap.add_argument("--url")
    ap.add_argument("--cache", help="the server's --cache-dir (default: a fresh one, so top-9 "
                    "pictures are rendered during the load; give a warmed one to measure a "
                    "server after `serve --warm-top9`)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--mix", help="route=weight,… instead of the classroom mix, e.g. predict=1")
    ap.add_argument("--new-photos", type=float, default=1 / 3,
                    help="share of uploads and predictions that are new photos (default 1/3)")
    args = ap.parse_args()
    mix = MIX
    if args.mix:
        mix = [(r, float(w)) for r, w in (p.split("=") for p in args.mix.split(","))]
        unknown = [r for r, _ in mix if r not in dict(MIX)]
        if unknown:
            sys.exit(f"load: unknown route(s) in --mix: {', '.join(unknown)}; routes: {', '.join(dict(MIX))}")
    if args.probe and not os.path.isdir(args.probe):
        print(f"load: no probe folder {args.probe}; using the demo photos", file=sys.stderr)
        args.probe = os.path.join(ROOT, "web/assets/demo")
    proc = cache = None
    url = args.url
    if url is None:
        proc, url, cache = start_server(args)
    stats = Stats()
    pics = photos()
    conn = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=120)
    try:
        async with aiohttp.ClientSession(connector=conn, timeout=timeout) as session:
            health = await wait_ready(session, url)
            print(f"load: {args.clients} clients for {args.seconds:.0f} s against {url} "
                  f"({health.get('device', '?')}, {os.cpu_count()} cores)")
            start = time.time()
            until = start + args.seconds
            await asyncio.gather(*(client(i, session, url, stats, until, pics, random.Random(args.seed * 1000 + i),
                                          mix, args.new_photos)
                                   for i in range(args.clients)))
            elapsed = time.time() - start
    finally:
        if proc:
            proc.terminate()
            proc.wait(10)
            if not args.cache:
                shutil.rmtree(cache, ignore_errors=True)
    total = sum(sum(c.values()) for c in stats.codes.values())
    ok = sum(len(t) for t in stats.times.values())
    busy = sum(c[503] for c in stats.codes.values())
    errors = total - ok - busy
    print(f"{'route':<13} {'ok':>6} {'503':>5} {'errors':>6} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}")
    for route in sorted(stats.codes):
        c, t = stats.codes[route], stats.times[route]
        err = sum(v for k, v in c.items() if not (isinstance(k, int) and (200 <= k < 300 or k == 503)))
        print(f"{route:<13} {len(t):>6} {c[503]:>5} {err:>6} {pct(t, 50) * 1e3:>8.0f} "
              f"{pct(t, 95) * 1e3:>8.0f} {pct(t, 99) * 1e3:>8.0f}")
        if err:
            print(f"{'':<13} {dict((k, v) for k, v in c.items() if k != 200)}")
    bound = [x for r in MODEL_BOUND for x in stats.times[r]]
    print(f"total: {ok / elapsed:.1f} requests/s answered 2xx ({ok} in {elapsed:.0f} s), "
          f"{busy} × 503, {errors} errors; model-bound p95 {pct(bound, 95):.2f} s, "
          f"p99 {pct(bound, 99):.2f} s")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

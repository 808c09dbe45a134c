"""Load test of the HTTP API (`mvk serve`) on loopback: concurrent clients sending text queries to a synthetic
index at MVK scale; requests/s, p50/p99 latency and errors. Not a test: results go to BENCHMARKS.md.

    python3 benchmarks/bench_api.py --frames 44000 --clients 8 --duration 60 --json out.json

The index holds ``--frames`` frames over ``--sites`` sites with ``--objects`` object vectors per frame (clustered
random unit vectors, d = 512, as in bench_query.py) and the encoder identity of ViT-B-32 with random weights, so
the server encodes every query with the real text tower (same cost as pretrained weights). The server is a
separate ``python -m app serve`` process on 127.0.0.1; each client is a thread with its own connection that
sends one query after the other. Everything is bounded: the run stops after ``--duration`` seconds or
``--max-requests`` requests, whichever comes first, and the server is stopped at the end. Only 127.0.0.1.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

WORDS = "turtle diver shark coral reef wreck sand fish school jellyfish ray kelp octopus eel crab".split()


def build_index(root: Path, frames: int, sites: int, objects: int, seed: int = 0) -> dict:
    """A synthetic index: ``frames`` frames over ``sites`` shards, ``objects`` objects per frame."""
    from bench_query import clustered

    from search.encoder import load_encoder
    from search.store import init_index, write_shard
    from search.testing import frame_rows, object_rows

    encoder = load_encoder("ViT-B-32", random_weights=True)
    ident = encoder.identity()
    init_index(root, {"encoder": ident})
    per_site = -(-frames // sites)
    vectors = clustered(frames * (1 + objects), ident["dim"], seed)
    used = 0
    for s in range(sites):
        n = min(per_site, frames - s * per_site)
        site = f"Site{s}_Jun2022"
        fr = frame_rows(site, n, videos=max(1, n // 300), date="2022-06")
        obj = object_rows(np.repeat(np.arange(n), objects), track_id=np.tile(np.arange(objects), n))
        fv = vectors[used:used + n]
        ov = vectors[used + n:used + n + len(obj)]
        used += n + len(obj)
        write_shard(root, site, fr, fv, obj, ov, {})
    return ident


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 300.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        try:
            if httpx.get(url + "/health", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.5)
    raise RuntimeError("the server did not answer /health in time")


def load(url: str, clients: int, duration: float, max_requests: int, k: int, seed: int = 0) -> dict:
    """``clients`` threads sending text queries until ``duration`` s or ``max_requests`` requests in all."""
    import httpx

    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    count = [0]
    stop_at = time.monotonic() + duration

    def worker(i: int) -> None:
        rng = np.random.default_rng(seed + i)
        with httpx.Client(base_url=url, timeout=60) as http:
            while time.monotonic() < stop_at:
                with lock:
                    if count[0] >= max_requests:
                        return
                    count[0] += 1
                q = " ".join(rng.choice(WORDS, 5))
                t0 = time.perf_counter()
                try:
                    resp = http.get("/search", params={"q": q, "k": k})
                    ok = resp.status_code == 200 and len(resp.json()["results"]) == k
                    why = f"HTTP {resp.status_code}"
                except (httpx.HTTPError, ValueError) as exc:
                    ok, why = False, type(exc).__name__
                dt = time.perf_counter() - t0
                with lock:
                    latencies.append(dt)
                    if not ok:
                        errors.append(why)

    started = time.monotonic()
    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=duration + 120)
    elapsed = time.monotonic() - started
    ms = np.array(latencies) * 1000
    return {"clients": clients, "requests": len(latencies), "errors": len(errors),
            "error_kinds": sorted(set(errors))[:5], "seconds": round(elapsed, 1),
            "requests_per_s": round(len(latencies) / elapsed, 2),
            "p50_ms": round(float(np.percentile(ms, 50)), 1) if len(ms) else None,
            "p99_ms": round(float(np.percentile(ms, 99)), 1) if len(ms) else None}


def library(root: Path, duration: float, max_requests: int, k: int, seed: int = 300) -> dict:
    """The same queries through ``SearchService.search`` in this process, one after the other: the cost of the
    search itself (text encoding + scoring), to set the HTTP numbers against (the server adds the rest)."""
    from app.service import SearchService

    service = SearchService(root)
    service.search("warm up", k=k)
    rng = np.random.default_rng(seed)
    times = []
    stop_at = time.monotonic() + duration
    while time.monotonic() < stop_at and len(times) < max_requests:
        q = " ".join(rng.choice(WORDS, 5))
        t0 = time.perf_counter()
        service.search(q, k=k)
        times.append(time.perf_counter() - t0)
    ms = np.array(times) * 1000
    return {"clients": "in-process library call", "requests": len(times),
            "p50_ms": round(float(np.percentile(ms, 50)), 1), "p99_ms": round(float(np.percentile(ms, 99)), 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=44_000)
    ap.add_argument("--sites", type=int, default=10)
    ap.add_argument("--objects", type=int, default=2, help="object vectors per frame (default 2)")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of load per phase (default 60)")
    ap.add_argument("--max-requests", type=int, default=20_000, help="requests per phase at most")
    ap.add_argument("--baseline", type=float, default=15.0,
                    help="seconds of an in-process library phase and of a single-client phase first (latency "
                         "without contention; 0: skip both)")
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch/BLAS threads per process (default 1: concurrent requests share the cores)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    results: dict = {"frames": args.frames, "sites": args.sites, "objects_per_frame": args.objects, "k": args.k,
                     "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="bench_api_") as tmp:
        root = Path(tmp) / "index"
        t0 = time.perf_counter()
        build_index(root, args.frames, args.sites, args.objects)
        results["build_s"] = round(time.perf_counter() - t0, 1)
        if args.baseline > 0:
            import torch

            torch.set_num_threads(args.threads)
            results["library"] = library(root, args.baseline, args.max_requests, args.k)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "PYTHONPATH": str(REPO), "MVK_LOG": str(Path(tmp) / "events.jsonl"),
               "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
        env.pop("MVK_API_TOKEN", None)
        proc = subprocess.Popen([sys.executable, "-m", "app", "serve", "--index", str(root), "--host", "127.0.0.1",
                                 "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            wait_ready(url, proc)
            load(url, 1, 3.0, 20, args.k)                      # warm-up: first touch of the mapped files, first matmuls
            phases = []
            if args.baseline > 0:
                phases.append(load(url, 1, args.baseline, args.max_requests, args.k, seed=100))
            phases.append(load(url, args.clients, args.duration, args.max_requests, args.k, seed=200))
            results["phases"] = phases
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        results["logged_queries"] = sum(1 for _ in open(Path(tmp) / "events.jsonl"))
    print(json.dumps(results, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

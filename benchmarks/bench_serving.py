"""Serving an index bigger than memory: time to open, resident memory after opening and after the first
query, and query latency (p50/p99, approximate ivf-flat candidates and exact scoring) on a generated index.

    python3 benchmarks/bench_serving.py generate ROOT [--frames 1e6 --objects 3e6 --sites 10]
    python3 benchmarks/bench_serving.py measure ROOT [--queries 50 --threads 2] [--verify quick]
    python3 benchmarks/bench_serving.py blocks [--vectors 3e5 --threads 1]

``blocks`` times exact scoring of one generated table (flat and ivf-flat, memory-mapped) by block size and
number of queries: the float32 blocks of ``search.faiss_index.inner_products`` against FAISS's IVF list
scanner (a range search probing every list).

``generate`` writes an index through ``search.store.write_shard`` (one site at a time, so it never holds
more than one site's vectors): clustered random unit vectors (d = 512, 2000 topics plus noise, a stand-in
for CLIP vectors), ``--thumb-bytes`` of incompressible bytes per frame as the thumbnail (a 256 px JPEG is
4-10 KB), three objects per frame on average with real RLE mask strings. ``measure`` runs in a fresh
process with ``--threads`` BLAS/FAISS threads: resident memory (VmRSS) and peak (VmHWM) come from
/proc/self/status, so they count only this index and the Python libraries (the baseline after imports is
printed too). Queries are query vectors (no text encoder), near random stored vectors.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def rss_mib() -> tuple[float, float]:
    """(resident, peak resident) MiB of this process."""
    got = status_mib()
    return got.get("VmRSS", float("nan")), got.get("VmHWM", float("nan"))


def status_mib() -> dict[str, float]:
    """VmRSS, VmHWM, RssAnon (memory the process owns) and RssFile (pages of mapped files: clean page
    cache the kernel can drop and read again) in MiB, from /proc/self/status."""
    got = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            got[key] = int(value.split()[0]) / 1024
    return got


def split_mib() -> str:
    """'anon + file' of the resident set, rounded."""
    got = status_mib()
    return f"{got.get('RssAnon', float('nan')):.0f} + {got.get('RssFile', float('nan')):.0f}"


def clustered(rng, centres, n: int):
    import numpy as np
    x = centres[rng.integers(0, len(centres), n)] + 0.5 * rng.standard_normal((n, centres.shape[1]), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def generate(args) -> None:
    import numpy as np
    import pandas as pd

    from search import faiss_index, store, testing
    faiss_index.MAX_TRAIN = args.train      # k-means sample per table; search cost does not depend on it
    root = Path(args.root)
    frames, objects, sites, dim = int(float(args.frames)), int(float(args.objects)), args.sites, args.dim
    store.init_index(root, {"encoder": testing.encoder_identity(dim, model="bench-serving")})
    centres = np.random.default_rng(0).standard_normal((2000, dim), dtype=np.float32)
    templates = testing.object_rows(np.zeros(997, np.int64), mask_hw=(27, 48))["mask_rle"].to_numpy()
    t_all = time.perf_counter()
    for s in range(sites):
        t0 = time.perf_counter()
        site = f"Site{s:03d}_2022-0{1 + s % 9}"
        rng = np.random.default_rng(1 + s)
        nf = frames // sites + (1 if s < frames % sites else 0)
        no = objects // sites + (1 if s < objects % sites else 0)
        f = testing.frame_rows(site, nf, videos=max(1, nf // 600), fps=1.0, width=1920, height=1080)
        f["thumbnail"] = [rng.bytes(args.thumb_bytes) for _ in range(nf)]
        fr = np.sort(rng.integers(0, nf, no))
        x0 = rng.integers(0, 1800, no)
        y0 = rng.integers(0, 1000, no)
        o = pd.DataFrame({
            "frame_row": fr, "track_id": rng.integers(0, 50, no), "level": np.zeros(no, np.int64),
            "x0": x0, "y0": y0, "x1": x0 + rng.integers(10, 120, no), "y1": y0 + rng.integers(10, 80, no),
            "area": rng.random(no) * 0.2, "is_background": rng.random(no) < 0.1,
            "mask_rle": templates[np.arange(no) % len(templates)],
        })
        store.write_shard(root, site, f, clustered(rng, centres, nf), o, clustered(rng, centres, no), {},
                          index_type=args.type)
        print(f"{site}: {nf} frames, {no} objects, {time.perf_counter() - t0:.1f} s", flush=True)
    size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    print(f"generated {frames} frames, {objects} objects in {sites} sites: {size / 2**30:.2f} GiB on disk, "
          f"{time.perf_counter() - t_all:.0f} s")


def measure_here(args) -> dict:
    import faiss
    import numpy as np

    from search import query, store
    faiss.omp_set_num_threads(args.threads)
    base = rss_mib()[0]
    kwargs = {"verify": args.verify} if args.verify else {}
    t0 = time.perf_counter()
    index = store.open_index(args.root, **kwargs)
    t_open = time.perf_counter() - t0
    rss_open = rss_mib()[0]
    split_open = split_mib()
    n_frames = sum(len(s.frames) for s in index.shards.values())
    n_objects = sum(len(s.objects) for s in index.shards.values())
    rng = np.random.default_rng(7)
    dim = int(index.manifest["encoder"]["dim"])
    centres = np.random.default_rng(0).standard_normal((2000, dim), dtype=np.float32)
    qs = clustered(rng, centres, args.queries + 1)
    out = {"frames": n_frames, "objects": n_objects, "sites": len(index.shards), "errors": len(index.errors),
           "threads": args.threads, "verify": args.verify or "default", "rss_after_imports_mib": round(base),
           "open_s": round(t_open, 2), "rss_after_open_mib": round(rss_open),
           "anon_plus_file_after_open_mib": split_open}
    t0 = time.perf_counter()
    query.search(index, None, qs[0], k=20, exact=False)
    out["first_query_ivf_s"] = round(time.perf_counter() - t0, 3)
    out["rss_after_first_query_mib"] = round(rss_mib()[0])
    out["anon_plus_file_after_first_query_mib"] = split_mib()
    for mode, exact in (("ivf", False), ("exact", True)):
        if mode not in args.modes.split(","):
            continue
        times = []
        n = args.queries if mode == "ivf" else max(3, args.queries // 5)
        for q in qs[1:n + 1]:
            t0 = time.perf_counter()
            query.search(index, None, q, k=20, exact=exact)
            times.append(time.perf_counter() - t0)
        a = np.array(times) * 1000
        out[f"{mode}_queries"] = n
        out[f"{mode}_p50_ms"] = round(float(np.percentile(a, 50)), 1)
        out[f"{mode}_p99_ms"] = round(float(np.percentile(a, 99)), 1)
        out[f"rss_after_{mode}_mib"] = round(rss_mib()[0])
        out[f"anon_plus_file_after_{mode}_mib"] = split_mib()
    out["peak_rss_mib"] = round(rss_mib()[1])
    return out


def blocks(args) -> None:
    import tempfile

    import faiss
    import numpy as np
    import torch

    from search import faiss_index
    faiss.omp_set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    faiss_index.MAX_TRAIN = 20000
    rng = np.random.default_rng(0)
    n = int(float(args.vectors))
    centres = rng.standard_normal((2000, args.dim), dtype=np.float32)
    x = clustered(rng, centres, n)
    q = clustered(np.random.default_rng(1), centres, 64)
    with tempfile.TemporaryDirectory() as tmp:
        tables = {}
        for kind in ("flat", "ivf-flat"):
            path = f"{tmp}/{kind}.faiss"
            faiss.write_index(faiss_index.build(x, kind).index, path)
            tables[kind] = faiss_index.read(path)[0]
        del x

        def median_ms(f, repeat=args.repeat):
            f()
            times = []
            for _ in range(repeat):
                t0 = time.perf_counter()
                f()
                times.append(time.perf_counter() - t0)
            return round(float(np.median(times)) * 1000, 1)

        print(f"{n} vectors, d = {args.dim}, {args.threads} thread(s), medians of {args.repeat} (ms per call)")
        print("| table | queries | " + " | ".join(f"blocks of {b}" for b in args.block_sizes) + " | IVF list scanner |")
        print("|---|---|" + "---|" * (len(args.block_sizes) + 1))
        for kind, idx in tables.items():
            for nq in (1, 4, 16, 64):
                qq = q[:nq]
                row = [median_ms(lambda b=b: faiss_index.scores_by_blocks(idx, qq, b)) for b in args.block_sizes]
                scan = median_ms(lambda: faiss_index.scores_by_list_scan(idx, qq)) if kind != "flat" else "-"
                print(f"| {kind} | {nq} | " + " | ".join(map(str, row)) + f" | {scan} |", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate")
    g.add_argument("root")
    g.add_argument("--frames", default="1e6")
    g.add_argument("--objects", default="3e6")
    g.add_argument("--sites", type=int, default=10)
    g.add_argument("--dim", type=int, default=512)
    g.add_argument("--type", default="ivf-flat")
    g.add_argument("--thumb-bytes", type=int, default=4096)
    g.add_argument("--train", type=int, default=20000, help="IVF k-means sample per table (default 20000)")
    m = sub.add_parser("measure")
    m.add_argument("root")
    m.add_argument("--queries", type=int, default=50)
    m.add_argument("--threads", type=int, default=2)
    m.add_argument("--modes", default="ivf,exact")
    m.add_argument("--verify", default=None, help="open_index(verify=...): full or quick (default: open_index's)")
    m.add_argument("--here", action="store_true", help=argparse.SUPPRESS)
    b = sub.add_parser("blocks")
    b.add_argument("--vectors", default="3e5")
    b.add_argument("--dim", type=int, default=512)
    b.add_argument("--threads", type=int, default=1)
    b.add_argument("--repeat", type=int, default=5)
    b.add_argument("--block-sizes", type=lambda v: [int(x) for x in v.split(",")], default=[1024, 4096, 16384])
    args = ap.parse_args()
    if args.cmd == "blocks":
        blocks(args)
        return 0
    if args.cmd == "generate":
        generate(args)
        return 0
    if args.here:
        print(json.dumps(measure_here(args)), flush=True)
        return 0
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), OPENBLAS_NUM_THREADS=str(args.threads),
               MKL_NUM_THREADS=str(args.threads), PYTHONPATH=str(ROOT))
    cmd = [sys.executable, __file__, *sys.argv[1:], "--here"]
    return subprocess.run(cmd, env=env).returncode


if __name__ == "__main__":
    raise SystemExit(main())

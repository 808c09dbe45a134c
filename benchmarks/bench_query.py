"""Query latency of the search stage: text encoding (ViT-B-32, random weights) and top-k search for
10^4, 10^5, 10^6 stored vectors (d = 512) per index type, plus build time, bytes per stored vector and
recall@10 against exact search. Not a test: results go to BENCHMARKS.md.

    python3 benchmarks/bench_query.py --sizes 10000,100000,1000000 --threads 2 --json out.json

Vectors are clustered random unit vectors (a stand-in for CLIP embeddings: 2000 topics plus noise).
Search runs one query at a time (the interactive case) with ``--threads`` threads; builds may use more
(``--build-threads``) to keep the run short. 'exact' is a float32 matmul over all vectors in numpy, on a
float32 copy of the stored float16 vectors: score_frames' path until the index was memory-mapped; it now
reads the float16 codes instead (``bench_serving.py blocks`` times that path).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def clustered(n: int, d: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((2000, d), dtype=np.float32)
    out = np.empty((n, d), np.float32)
    step = 100_000
    for s in range(0, n, step):
        m = min(step, n - s)
        x = centres[rng.integers(0, 2000, m)] + 0.5 * rng.standard_normal((m, d), dtype=np.float32)
        out[s:s + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def pct(times: list[float]) -> dict:
    a = np.array(times) * 1000
    return {"p50_ms": round(float(np.percentile(a, 50)), 3), "p99_ms": round(float(np.percentile(a, 99)), 3)}


def bench_text(threads: int, n: int) -> dict:
    import torch

    from search.encoder import load_encoder
    torch.set_num_threads(threads)
    enc = load_encoder("ViT-B-32", random_weights=True)
    words = "turtle diver shark coral reef wreck sand fish school jellyfish ray kelp".split()
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(words, 6)) for _ in range(n + 5)]
    for t in texts[:5]:
        enc.encode_text([t])
    times = []
    for t in texts[5:]:
        t0 = time.perf_counter()
        enc.encode_text([t])
        times.append(time.perf_counter() - t0)
    return {"stage": "text encoding ViT-B-32 (random weights)", **pct(times), "queries": n}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--types", default="exact,flat,ivf-flat,ivf-pq,hnsw")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2, help="threads for search and text encoding (default 2)")
    ap.add_argument("--build-threads", type=int, default=0, help="threads for building (default: --threads)")
    ap.add_argument("--no-text", action="store_true", help="skip the text-encoding measurement")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()

    import faiss

    from search import faiss_index as fi
    results: list[dict] = []
    if not args.no_text:
        r = bench_text(args.threads, args.queries)
        print(json.dumps(r), flush=True)
        results.append(r)
    for n in [int(float(s)) for s in args.sizes.split(",")]:
        x = clustered(n, args.dim)
        rng = np.random.default_rng(1)
        q = x[rng.integers(0, n, args.queries)] + 0.3 * rng.standard_normal((args.queries, args.dim)).astype(np.float32)
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        x16 = x.astype(np.float16)
        truth = []
        for i in range(0, args.queries, 50):
            s = np.concatenate([(x16[j:j + 200_000].astype(np.float32) @ q[i:i + 50].T) for j in range(0, n, 200_000)])
            truth.append(np.argsort(-s, axis=0)[:args.k].T)
        truth = np.concatenate(truth)
        for kind in args.types.split(","):
            row: dict = {"n": n, "type": kind}
            if kind == "exact":
                x32 = x16.astype(np.float32)        # the reference: a float32 copy (score_frames kept one until mmap)
                times = []
                for qi in q:
                    t0 = time.perf_counter()
                    s = x32 @ qi
                    np.argpartition(-s, args.k)[:args.k]
                    times.append(time.perf_counter() - t0)
                row.update(pct(times), bytes_per_vector=2 * args.dim, build_s=0.0, recall_at_10=1.0)
                print(json.dumps(row), flush=True)
                results.append(row)
                continue
            faiss.omp_set_num_threads(args.build_threads or args.threads)
            t0 = time.perf_counter()
            built = fi.build(x, kind)
            row["build_s"] = round(time.perf_counter() - t0, 2)
            row["params"] = built.params
            with tempfile.TemporaryDirectory() as tmp:
                path = os.path.join(tmp, "i.faiss")
                faiss.write_index(built.index, path)
                row["bytes_per_vector"] = round(os.path.getsize(path) / n, 1)
            faiss.omp_set_num_threads(args.threads)
            for qi in q[:5]:
                built.index.search(qi[None], args.k)
            times, got = [], []
            for qi in q:
                t0 = time.perf_counter()
                _, ids = built.index.search(qi[None], args.k)
                times.append(time.perf_counter() - t0)
                got.append(ids[0])
            row["recall_at_10"] = round(float(np.mean([len(set(a) & set(b)) / args.k for a, b in zip(truth, got)])), 3)
            row.update(pct(times))
            print(json.dumps(row), flush=True)
            results.append(row)
            del built
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

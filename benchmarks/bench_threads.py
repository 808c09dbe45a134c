"""Queries at the hardware's limit (issue "Queries at the hardware's limit"): measured in one process, interleaved.

    python3 benchmarks/bench_threads.py [--frames 43797 --objects 131391 --repeats 7 --kis-queries 128]
        [--texts 4000 --single-texts 48 --text-threads 1] [--skip-text] [--skip-index]

1. scoring: every frame and object vector (d = 512, float16 on disk, memory-mapped) against one query at
   1 thread: the stored-code scan that exact scoring uses now (FAISS's scalar-quantizer scanner), the float32
   block path of before, and a plain float32 ``faiss.IndexFlatIP`` top-100 over the same vectors (the bar);
   the top-100 of the scan must equal IndexFlatIP's.
2. threads: one whole exact query (``search.query.search``, k = 20) and KIS ranking (``score_frames_batch``,
   --kis-queries queries, 4 fusions) at 1 and 2 threads (``search.threads``), new and old scoring path.
3. text encoding: the real ViT-B-32 text tower with random weights (same cost as trained): one text at a time
   through the whole context (before) and only up to its end token (now),
   batches of 16, 64 and 256, and --texts texts batched into an empty cache then again from the cache.

Prints one line per measurement (median of --repeats interleaved runs) and the ratios.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from search import faiss_index as fi  # noqa: E402
from search import store  # noqa: E402
from search.query import search, score_frames_batch  # noqa: E402
from search.testing import encoder_identity, frame_rows, object_rows, random_unit  # noqa: E402
from search.threads import threads  # noqa: E402


def build(root: Path, n_frames: int, n_objects: int, dim: int) -> None:
    store.init_index(root, {"encoder": encoder_identity(dim)})
    per = -(-n_objects // n_frames)
    rows = np.repeat(np.arange(n_frames), per)[:n_objects]
    store.write_shard(root, "Site_Jan2022", frame_rows("Site_Jan2022", n_frames, videos=max(1, n_frames // 300)),
                      random_unit(n_frames, dim, 1), object_rows(rows), random_unit(n_objects, dim, 2), {})


def interleaved(fns: dict, repeats: int) -> dict[str, float]:
    """Median seconds of each function, the order rotated every repeat."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    names = list(fns)
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            t = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def show(results: dict[str, float], unit: str = "ms") -> None:
    for k, v in results.items():
        print(f"  {k:55s} {v * 1000:9.1f} ms" if unit == "ms" else f"  {k:55s} {v:9.3f} s")


def bench_scoring(index, repeats: int) -> None:
    import faiss
    shard = next(iter(index.shards.values()))
    tables = [shard.table("frames").cpu, shard.table("objects").cpu]
    flats = []
    for t in tables:
        flat = faiss.IndexFlatIP(t.d)
        flat.add(fi.reconstruct_all(t).astype(np.float32))
        flats.append(flat)
    q = random_unit(1, tables[0].d, 7)

    def blocks():
        return [fi.scores_by_blocks(t, q, fi.SCORE_BLOCK) for t in tables]

    with threads("query", 1):
        scan = [fi.scores_by_code_scan(t, q) for t in tables]
        for s, flat in zip(scan, flats):
            top = np.argsort(-s[0], kind="stable")[:100]
            _, ids = flat.search(q, 100)
            assert np.array_equal(top, ids[0]), "the scan's top-100 differs from IndexFlatIP's"
        res = interleaved({
            "IndexFlatIP top-100, float32 (the bar)": lambda: [f.search(q, 100) for f in flats],
            "code scan, float16 (exact scoring now)": lambda: [fi.scores_by_code_scan(t, q) for t in tables],
            "float32 blocks of 1024 (exact scoring before)": blocks,
        }, repeats)
    print(f"scoring {sum(t.ntotal for t in tables):,} vectors, 1 thread (top-100 of the scan == IndexFlatIP's):")
    show(res)
    bar = res["IndexFlatIP top-100, float32 (the bar)"]
    print(f"  ratio to IndexFlatIP: scan {res['code scan, float16 (exact scoring now)'] / bar:.2f}x, "
          f"blocks {res['float32 blocks of 1024 (exact scoring before)'] / bar:.2f}x")


def bench_threads(index, repeats: int, n_kis: int) -> None:
    q = random_unit(1, 512, 8)[0]
    kq = random_unit(n_kis, 512, 9)
    fusions = ["frame", "object", "max", "weighted"]

    def query(n: int, old: bool):
        def run():
            saved = fi.RANGE_QUERIES
            fi.RANGE_QUERIES = 0 if old else saved
            try:
                with threads("query", n):
                    return search(index, None, q, k=20, exact=True)
            finally:
                fi.RANGE_QUERIES = saved
        return run

    def kis(n: int):
        def run():
            with threads("batch", n):
                return score_frames_batch(index, kq, fusions=fusions)
        return run

    same = query(1, False)()["gid"].tolist() == query(2, False)()["gid"].tolist() == query(1, True)()["gid"].tolist()
    res = interleaved({"query, new path, 1 thread": query(1, False), "query, new path, 2 threads": query(2, False),
                       "query, old path, 1 thread": query(1, True), "query, old path, 2 threads": query(2, True)},
                      repeats)
    print(f"one exact query (search, k=20; same results on every path and thread count: {same}):")
    show(res)
    print(f"  2 threads / 1 thread: new {res['query, new path, 2 threads'] / res['query, new path, 1 thread']:.2f}x, "
          f"old {res['query, old path, 2 threads'] / res['query, old path, 1 thread']:.2f}x; "
          f"new / old at 1 thread: {res['query, new path, 1 thread'] / res['query, old path, 1 thread']:.2f}x")
    a, b = kis(1)(), kis(2)()
    same = all(np.array_equal(a[f], b[f]) for f in fusions)
    res = interleaved({f"KIS ranking, {n_kis} queries x 4 fusions, 1 thread": kis(1),
                       f"KIS ranking, {n_kis} queries x 4 fusions, 2 threads": kis(2)}, max(3, repeats // 2))
    print(f"KIS ranking (score_frames_batch; identical scores at 1 and 2 threads: {same}):")
    show(res)
    v = list(res.values())
    print(f"  2 threads / 1 thread: {v[1] / v[0]:.2f}x")


def bench_text(n_texts: int, n_single: int, repeats: int, cache_root: Path, n_threads: int) -> None:
    from search.encoder import load_encoder
    from search.textcache import TextVectorCache, encode_texts
    enc = load_encoder("ViT-B-32", random_weights=True)
    words = "turtle diver shark coral reef wreck sand fish school jellyfish ray kelp green blue small".split()
    rng = np.random.default_rng(0)
    texts = [f"{i} " + " ".join(rng.choice(words, 8)) for i in range(n_texts)]
    with threads("batch", n_threads):
        import torch
        enc.encode_text(texts[:8], batch_size=8)                   # warm up
        t = time.perf_counter()
        with torch.inference_mode():
            for text in texts[:n_single]:
                enc.model.encode_text(enc.tokenizer([text]))       # before: the whole 77-token context
        before = (time.perf_counter() - t) / n_single
        t = time.perf_counter()
        for text in texts[:n_single]:
            enc.encode_text([text])
        single = (time.perf_counter() - t) / n_single
        sample = texts[:256]
        res = interleaved({f"batch {b}": (lambda b=b: enc.encode_text(sample, batch_size=b))
                           for b in (16, 64, 256)}, 1)
        per_text = {k: v / len(sample) for k, v in res.items()}
        t = time.perf_counter()
        cold = encode_texts(enc, texts, cache=TextVectorCache(cache_root, enc.identity()))
        cold_s = time.perf_counter() - t
        t = time.perf_counter()
        warm = encode_texts(enc, texts, cache=TextVectorCache(cache_root, enc.identity()))
        warm_s = time.perf_counter() - t
    assert np.array_equal(cold, warm)
    print(f"text encoding, ViT-B-32 random weights, {n_threads} thread(s):")
    print(f"  one at a time, 77-token context (before, {n_single} texts)  {before * 1000:9.1f} ms/text")
    print(f"  one at a time, up to its end token ({n_single} texts)    {single * 1000:9.1f} ms/text")
    for k, v in per_text.items():
        print(f"  {k:20s} (256 texts)                    {v * 1000:9.1f} ms/text  ({single / v:.1f}x)")
    one_at_a_time = before * n_texts
    print(f"  {n_texts} texts one at a time as before (extrapolated)  {one_at_a_time:9.1f} s")
    print(f"  {n_texts} texts batched, empty cache                   {cold_s:9.1f} s  ({one_at_a_time / cold_s:.1f}x)")
    print(f"  {n_texts} texts again, from the cache                  {warm_s:9.3f} s  "
          f"({one_at_a_time / warm_s:.0f}x)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=43797)
    p.add_argument("--objects", type=int, default=131391)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--kis-queries", type=int, default=128)
    p.add_argument("--texts", type=int, default=4000)
    p.add_argument("--single-texts", type=int, default=48)
    p.add_argument("--text-threads", type=int, default=1)
    p.add_argument("--skip-text", action="store_true")
    p.add_argument("--skip-index", action="store_true")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_index:
            root = Path(tmp) / "idx"
            t = time.perf_counter()
            build(root, args.frames, args.objects, 512)
            print(f"built {args.frames:,} frames + {args.objects:,} objects in {time.perf_counter() - t:.0f} s")
            index = store.open_index(root)
            bench_scoring(index, args.repeats)
            bench_threads(index, args.repeats, args.kis_queries)
        if not args.skip_text:
            bench_text(args.texts, args.single_texts, args.repeats, Path(tmp) / "textcache", args.text_threads)


if __name__ == "__main__":
    main()

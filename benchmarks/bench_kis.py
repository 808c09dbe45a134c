"""Speed of the KIS benchmark at MVK scale: ranking every target among all frames (search.query.score_frames
one query at a time, score_frames_batch as mvk kis and the app do, and kis.run_benchmark end to end), text
encoding of the queries, and CoCa captioning. Random vectors and random weights (same cost as trained ones).

    python3 benchmarks/bench_kis.py [--frames 43797 --objects-per-frame 3 --queries 300 --repeats 3
        --single-queries 20 --batch-size 64]
        [--encode] [--caption N]

Prints one line per measurement: median over --repeats of the wall time.
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

from mvk_tools import kis  # noqa: E402
from mvk_tools.querysets import make_queries, write_queryset  # noqa: E402
from search import store  # noqa: E402
from search.query import score_frames, score_frames_batch  # noqa: E402
from search.testing import encoder_identity, frame_rows, object_rows, random_unit  # noqa: E402


def build(root: Path, n_frames: int, per_frame: int, dim: int, sites: int) -> None:
    store.init_index(root, {"encoder": encoder_identity(dim)})
    per_site = -(-n_frames // sites)
    for s in range(sites):
        n = min(per_site, n_frames - s * per_site)
        site = f"Site{s}_Jan2022"
        frames = frame_rows(site, n, videos=max(1, n // 30), fps=1.0)
        objects = object_rows(np.repeat(np.arange(n), per_frame))
        store.write_shard(root, site, frames, random_unit(n, dim, seed=s),
                          objects, random_unit(len(objects), dim, seed=1000 + s), {})


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=43797)
    ap.add_argument("--objects-per-frame", type=int, default=3)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--sites", type=int, default=11)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--single-queries", type=int, default=20, help="queries timed through score_frames")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--encode", action="store_true", help="also time ViT-B-32 text encoding (random weights)")
    ap.add_argument("--caption", type=int, default=0, help="also time CoCa ViT-B-32 captions of N images")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "idx"
        t = time.perf_counter()
        build(root, args.frames, args.objects_per_frame, args.dim, args.sites)
        print(f"built index: {args.frames} frames, {args.frames * args.objects_per_frame} objects, dim {args.dim}, "
              f"{args.sites} shards in {time.perf_counter() - t:.1f} s")
        index = store.open_index(root)
        t = time.perf_counter()
        score_frames(index, random_unit(1, args.dim, seed=3)[0])
        print(f"first score_frames call (blocks over the memory-mapped float16 codes, no float32 copy): "
              f"{time.perf_counter() - t:.2f} s; {store.memory_use(index).describe()}")
        rng = np.random.default_rng(0)
        pick = rng.choice(len(index.frames), args.queries, replace=False)
        f = index.frames.iloc[pick]
        queries = make_queries([{"query_id": f"q{i}", "query_type": "novice", "text": "x",
                                 "target_site": r.site, "target_video": r.video_id, "target_frame": int(r.frame_index),
                                 "target_time": None} for i, r in enumerate(f.itertuples())])
        vectors = random_unit(args.queries, args.dim, seed=7)
        few = min(args.queries, args.single_queries)
        sec = median_time(lambda: kis.rank_queries(
            queries.iloc[:few], vectors[:few], index.frames, lambda v, fu: score_frames(index, v, fusion=fu),
            fusions=("frame", "object"), tolerance=0.5, default_fps=1.0), args.repeats)
        print(f"rank {few} queries x fusions frame,object, one score_frames call each: {sec:.2f} s "
              f"({1000 * sec / (2 * few):.0f} ms per query and fusion)")
        for fusions in (("frame",), ("frame", "object"), ("frame", "object", "max", "weighted")):
            sec = median_time(lambda: kis.rank_queries(
                queries, vectors, index.frames, None, batch_size=args.batch_size, fusions=fusions,
                batch_scorer=lambda v, fus: score_frames_batch(index, v, fusions=fus),
                tolerance=0.5, default_fps=1.0), args.repeats)
            print(f"rank {args.queries} queries x fusions {','.join(fusions)}, score_frames_batch batch "
                  f"{args.batch_size}: {sec:.2f} s ({1000 * sec / args.queries:.1f} ms per query)")
        queries["vector"] = list(vectors)
        qfile = write_queryset(queries, Path(tmp) / "queries.csv", with_vectors=True)
        sec = median_time(lambda: kis.run_benchmark(index, [qfile], use_file_vectors=True, fusions=("frame", "object"),
                                                    default_fps=1.0, rank_batch=args.batch_size), args.repeats)
        print(f"kis.run_benchmark (mvk kis / app path) on {args.queries} queries with file vectors, fusions "
              f"frame,object: {sec:.2f} s")
        sec = median_time(lambda: kis.resolve_targets(queries, index.frames), args.repeats)
        print(f"resolve {args.queries} targets: {sec * 1000:.0f} ms")

    if args.encode:
        from search.encoder import load_encoder
        enc = load_encoder("ViT-B-32", "openai", random_weights=True)
        texts = [f"a yellow fish number {i} swimming over a coral reef near a diver" for i in range(args.queries)]
        sec = median_time(lambda: enc.encode_text(texts, batch_size=256), args.repeats)
        print(f"encode {args.queries} texts, ViT-B-32 random weights, batch 256: {sec:.2f} s")
    if args.caption:
        from mvk_tools.captions import DEFAULT_MODEL, load_captioner
        cap = load_captioner(DEFAULT_MODEL, None, random_weights=True)
        images = [np.random.default_rng(i).integers(0, 255, (256, 455, 3), dtype=np.uint8) for i in range(args.caption)]
        for max_tokens in (10, 20):
            sec = median_time(lambda: cap.caption(images, max_tokens=max_tokens, batch_size=16), 1)
            print(f"caption {args.caption} images, {DEFAULT_MODEL} random weights, greedy {max_tokens} tokens, "
                  f"batch 16: {sec:.1f} s ({sec / args.caption:.2f} s per image)")


if __name__ == "__main__":
    main()

"""Object modes side by side: one index per mode (pool = ClearCLIP dense features, pool-raw = raw last-layer
tokens, crop = one CLIP pass per object, pool at a larger --dense-size, and none = frames only, for the
cost baseline) on the same collection, the same query set ranked through ``mvk kis``, one table with the
cost per frame and the ranks.

    python3 benchmarks/bench_object_modes.py --random-weights            # cost only: ranks mean nothing
    python3 benchmarks/bench_object_modes.py                              # pretrained: which mode wins
    python3 benchmarks/bench_object_modes.py --collection MVK --site Oahu_Jul2022 --queries kis.csv

Without --collection it makes a synthetic collection (``mvk_tools.synth``: textured shapes moving over
a blue-green background) and a query set from its metadata: one query per object and video, "a red
striped ellipse", whose target is the sampled frame where that object covers the most pixels. Models are
loaded once and shared by every mode, so the cost columns are the per-frame stage times of the indexer
(model loading excluded). The KIS columns come from ``mvk kis`` (``app.cli.main(["kis", ...])``) on each
index; the frame fusion is the same for every mode (the frame vectors are), the object and weighted
fusions show what the object vectors add.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

COLOUR_NAMES = {(235, 50, 40): "red", (250, 215, 30): "yellow", (215, 60, 215): "magenta", (250, 140, 20): "orange",
                (245, 245, 245): "white", (120, 50, 210): "violet", (150, 240, 40): "lime", (120, 70, 30): "brown"}
TEXTURE_WORDS = {"stripes": "striped", "checker": "checkered", "dots": "dotted", "rings": "ringed"}


def synthetic(work: Path, args: argparse.Namespace) -> tuple[Path, Path]:
    """A synthetic collection and its query set (tidy CSV): one query per object and video."""
    from mvk_tools.synth import SYNTH_SITES, load_masks, make_collection
    from mvk_tools.querysets import make_queries, write_queryset
    sites = SYNTH_SITES[:args.sites]
    coll = make_collection(work / "collection", sites=sites, videos_per_site=args.videos, n_frames=args.frames,
                           size=(args.width, args.height), fps=args.fps, n_objects=args.objects_per_video, seed=7)
    step = max(1, round(args.every * args.fps))
    records = []
    for site in sites:
        for meta_path in sorted((coll / "information" / "metadata" / site).glob("*.json")):
            meta = json.loads(meta_path.read_text())
            video = meta["video_id"]
            masks = load_masks(coll, site, video)[::step]           # the frames the indexer samples
            for obj in meta["objects"]:
                area = (masks == obj["id"]).reshape(len(masks), -1).sum(axis=1)
                if area.max() == 0:
                    continue
                best = int(np.argmax(area)) * step
                colour = COLOUR_NAMES.get(tuple(obj["color"]), "bright")
                text = f"a {colour} {TEXTURE_WORDS.get(obj['texture'], obj['texture'])} {obj['shape']}"
                records.append({"query_id": f"{site}/{video}/{obj['id']}", "query_type": "synthetic", "text": text,
                                "target_site": site, "target_video": video, "target_frame": best,
                                "target_time": None, "source": "bench_object_modes"})
    return coll, write_queryset(make_queries(records), work / "queries.csv")


def modes_to_run(args: argparse.Namespace) -> list[tuple[str, str, int | None]]:
    """(label, --objects, --dense-size) of every index to build."""
    out = [("none (frames only)", "none", None), ("pool", "pool", None), ("pool-raw", "pool-raw", None),
           ("crop", "crop", None)]
    out += [(f"pool @ {s} px", "pool", s) for s in args.dense_sizes]
    return out


def embedding_cost(encoder, args: argparse.Namespace) -> dict[str, float]:
    """Median ms per frame of the CLIP work of each mode alone (``indexer.embed.embed_batch``: frame vectors
    and object vectors), on ``--cost-frames`` random frames with ``--cost-objects`` box masks each, so
    crop pays for a realistic number of objects whatever the segmentation finds; modes interleaved in
    each of ``--repeats`` rounds, so load drifts on a shared machine hit every mode alike."""
    from indexer.embed import embed_batch
    from indexer.segment import ObjectMask
    rng = np.random.default_rng(0)
    h, w = args.height, args.width
    images = [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for _ in range(args.cost_frames)]
    objects = []
    for _ in images:
        objs = []
        for k in range(args.cost_objects):
            bw, bh = int(rng.integers(w // 10, w // 3)), int(rng.integers(h // 10, h // 3))
            x0, y0 = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
            m = np.zeros((h, w), bool)
            m[y0:y0 + bh, x0:x0 + bw] = True
            objs.append(ObjectMask(k, 0, m, (x0, y0, x0 + bw, y0 + bh), float(m.mean()), False))
        objects.append(objs)
    times: dict[str, list[float]] = {label: [] for label, _, _ in modes_to_run(args)}
    for r in range(args.repeats + 1):                     # round 0 warms up and is dropped
        for label, objects_mode, size in modes_to_run(args):
            t = time.perf_counter()
            embed_batch(encoder, images, objects, objects_mode, dense_size=size,  # type: ignore[arg-type]
                        batch_size=args.batch_size)
            if r:
                times[label].append(time.perf_counter() - t)
    return {label: 1000 * statistics.median(v) / len(images) for label, v in times.items()}


def build(coll: Path, root: Path, objects: str, dense_size: int | None, encoder, extractor, args) -> dict:
    from indexer.pipeline import IndexConfig, index_collection
    config = IndexConfig(every_seconds=args.every, objects=objects, dense_size=dense_size,  # type: ignore[arg-type]
                         batch_size=args.batch_size, decode_max_side=args.max_side)
    shutil.rmtree(root, ignore_errors=True)
    t = time.perf_counter()
    result = index_collection(coll, root, encoder=encoder, extractor=extractor if objects != "none" else None,
                              config=config, sites=args.site or None)
    wall = time.perf_counter() - t
    if result.errors:
        raise SystemExit(f"indexing with --objects {objects} failed: {result.errors}")
    return {"wall": wall, "frames": result.frames_computed, "objects": sum(s.objects for s in result.sites),
            **result.seconds}


def kis(root: Path, queries: list[str], out: Path, args: argparse.Namespace) -> dict:
    """``mvk kis`` on one index; its summary.json."""
    from app.cli import main as mvk
    argv = ["kis", *queries, "--index", str(root), "--out", str(out), "--fusion", "frame,object,weighted",
            "--tolerance", str(args.tolerance), "--device", args.device]
    if args.random_weights:
        argv.append("--random-weights")
    code = mvk(argv)
    if code != 0:
        raise SystemExit(f"mvk kis failed on {root} (exit {code})")
    return json.loads((out / "summary.json").read_text())


def group(summary: dict, fusion: str) -> dict:
    """The all-queries row of one fusion (the first group of that fusion when there is no 'all' row)."""
    rows = [g for g in summary["groups"] if g.get("fusion") == fusion]
    every = [g for g in rows if str(g.get("query_type")) in ("all", "ALL", "*")]
    return (every or rows or [{}])[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--collection", help="collection folder (default: a synthetic one, with its own queries)")
    ap.add_argument("--queries", nargs="+", default=[], help="query sets for mvk kis (needed with --collection)")
    ap.add_argument("--site", nargs="+", default=[], help="index only these sites")
    ap.add_argument("--dense-sizes", nargs="*", type=int, default=[448], help="extra pool indexes at these sizes")
    ap.add_argument("--model", default="ViT-B-32")
    ap.add_argument("--pretrained", default="openai")
    ap.add_argument("--backbone", default="dino-vits16")
    ap.add_argument("--random-weights", action="store_true", help="real architectures, random weights: cost only")
    ap.add_argument("--every", type=float, default=1.0)
    ap.add_argument("--max-side", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--tolerance", type=float, default=0.5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--sites", type=int, default=2, help="synthetic: sites")
    ap.add_argument("--videos", type=int, default=2, help="synthetic: videos per site")
    ap.add_argument("--frames", type=int, default=96, help="synthetic: frames per video")
    ap.add_argument("--fps", type=float, default=12.0, help="synthetic: frame rate")
    ap.add_argument("--width", type=int, default=640, help="synthetic: frame width")
    ap.add_argument("--height", type=int, default=360, help="synthetic: frame height")
    ap.add_argument("--objects-per-video", type=int, default=4, help="synthetic: objects per video")
    ap.add_argument("--cost-frames", type=int, default=16, help="embedding cost: random frames per round")
    ap.add_argument("--cost-objects", type=int, default=3, help="embedding cost: box masks per frame")
    ap.add_argument("--repeats", type=int, default=3, help="embedding cost: rounds (median)")
    ap.add_argument("--cost-only", action="store_true", help="only the embedding cost table (no indexes, no KIS)")
    ap.add_argument("--json", metavar="FILE", help="also write the raw figures here")
    args = ap.parse_args()
    if args.collection and not args.queries:
        ap.error("--collection needs --queries (query sets for mvk kis)")

    import torch
    from indexer.models import load_models
    from search.errors import MvkError

    try:
        encoder, extractor = load_models(objects="none" if args.cost_only else "pool", model=args.model,
                                         pretrained=args.pretrained, backbone=args.backbone,
                                         random_weights=args.random_weights, device=args.device)
    except MvkError as exc:
        raise SystemExit(f"error: {exc}") from None
    print(f"{args.model} ({'RANDOM weights' if args.random_weights else args.pretrained}) + {args.backbone}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; device {args.device}", flush=True)
    cost = embedding_cost(encoder, args)
    rows: dict[str, dict] = {label: {"clip_ms": cost[label]} for label in cost}
    if not args.cost_only:
        work = Path(tempfile.mkdtemp(prefix="bench-object-modes-"))
        try:
            if args.collection:
                coll, queries = Path(args.collection), list(args.queries)
            else:
                coll, qfile = synthetic(work, args)
                queries = [str(qfile)]
            print(f"collection {coll}; query sets {', '.join(queries)}", flush=True)
            for label, objects, size in modes_to_run(args):
                root = work / f"idx-{objects}-{size or 'own'}"
                rows[label]["index"] = build(coll, root, objects, size, encoder, extractor, args)
                report = kis(root, queries, work / f"kis-{objects}-{size or 'own'}", args)
                rows[label]["kis"] = {f: group(report, f) for f in ("frame", "object", "weighted")}
                shutil.rmtree(root, ignore_errors=True)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    print_table(rows, args)
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1, default=str))


def print_table(rows: dict[str, dict], args: argparse.Namespace) -> None:
    """The side-by-side table (markdown), and which mode wins (or why nothing can be said)."""
    def ms(cost: dict, *keys: str) -> float:
        return 1000 * sum(cost[k] for k in keys) / max(1, cost["frames"])

    def rank(g: dict) -> str:
        if not g or not g.get("n"):
            return "-"
        return f"{g['median_rank']:.1f} / {100 * g['mrr']:.1f}% / {100 * g['hit@10']:.0f}%"

    base = rows["none (frames only)"]["clip_ms"]
    print(f"\nCLIP ms/frame: frame + object vectors of {args.cost_frames} random {args.width}x{args.height} frames "
          f"with {args.cost_objects} box masks each (indexer.embed.embed_batch, batch {args.batch_size}), median of "
          f"{args.repeats} interleaved rounds")
    indexed = all("index" in r for r in rows.values())
    if indexed:
        first = next(iter(rows.values()))
        n = max((r["kis"]["object"].get("n") or 0) for r in rows.values())
        print(f"index: `mvk index` stages on the collection ({first['index']['frames']} frames): objects per frame "
              f"found by the segmentation, ms per frame of segmentation and of the whole run; KIS (`mvk kis`, "
              f"{n} queries, tolerance {args.tolerance:g} s): median rank / MRR / hit@10 per fusion")
        print("| mode | CLIP ms/frame | x frame-only | objects/frame | segmentation ms/f | index ms/f "
              "| KIS frame | KIS object | KIS weighted |")
        print("|---|---|---|---|---|---|---|---|---|")
    else:
        print("| mode | CLIP ms/frame | x frame-only |")
        print("|---|---|---|")
    for label, row in rows.items():
        cells = [label, f"{row['clip_ms']:.1f}", f"{row['clip_ms'] / base:.2f}"]
        if indexed:
            c = row["index"]
            cells += [f"{c['objects'] / max(1, c['frames']):.1f}", f"{ms(c, 'segmentation'):.0f}",
                      f"{1000 * c['wall'] / max(1, c['frames']):.0f}",
                      *(rank(row["kis"][f]) for f in ("frame", "object", "weighted"))]
        print("| " + " | ".join(cells) + " |")
    if not indexed:
        return
    if args.random_weights:
        print("\nRANDOM WEIGHTS: the ranks mean nothing (a random model); only the cost columns do.")
        return
    scored = {k: v["kis"]["object"]["mrr"] for k, v in rows.items() if v["kis"]["object"].get("n")}
    if scored:
        best = max(scored, key=lambda k: scored[k])
        print(f"\nbest object-fusion MRR: {best} ({100 * scored[best]:.1f}%); "
              + ", ".join(f"{k} {100 * v:.1f}%" for k, v in scored.items()))


if __name__ == "__main__":
    main()

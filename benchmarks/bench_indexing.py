"""Indexing throughput per stage (decode, segmentation, object embedding, frame embedding, write), object-aware
(``pool`` and ``crop``) against frame-only (``none``) indexing, and decoding overlapped with the models
(the local engine's default) against one stage after the other, measured in the same run.

    python3 benchmarks/bench_indexing.py [--source brackish|synth] [--repeats 3] [--objects pool crop]
                                         [--overlap both|on|off] [--model ViT-B-32] [--backbone dino-vits16]
                                         [--device cpu] [--brackish DIR]

Real architectures with random weights (same cost as trained ones). The collection is the two brackish
clips of ../shared/data (1920x1080, ~15 s each) when present, else a synthetic one of the same shape.
Each mode indexes the whole collection into a fresh index ``--repeats`` times after a warm-up; the order of
the modes rotates from one repeat to the next (a fixed order biases the later modes while load changes); the
figures are medians. Segmentation is split into the DINO forward pass (timed around the backbone) and the
rest (attention, clustering, masks). Goals: object-aware indexing at most 3x the cost of frame-only
indexing; with overlap, wall time near max(decode, models) rather than their sum.
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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
BRACKISH = REPO.parent / "shared" / "data" / "brackish"


class TimedBackbone:
    """The segmentation backbone with the seconds of its forward passes counted (the DINO stage)."""

    def __init__(self, extractor) -> None:
        self.inner, self.seconds = extractor, 0.0

    def qk(self, frames):
        t = time.perf_counter()
        try:
            return self.inner.qk(frames)
        finally:
            self.seconds += time.perf_counter() - t

    def __getattr__(self, name):
        return getattr(self.inner, name)


def collection(source: str, work: Path, brackish: Path = BRACKISH) -> Path:
    """A collection folder: the brackish clips as one site (symlinked), or a synthetic site."""
    if source == "brackish" and brackish.is_dir():
        site = work / "collection" / "videos" / "Limfjord_Jan2020"
        site.mkdir(parents=True)
        for i, clip in enumerate(sorted(brackish.glob("*.mp4"))):
            (site / f"{i + 1:04d}.mp4").symlink_to(clip)
        return work / "collection"
    from mvk_tools.synth import make_collection
    return make_collection(work / "collection", sites=("Oahu_Jul2022",), videos_per_site=2, n_frames=180,
                           size=(640, 360), fps=12.0, n_objects=3)


def run_mode(coll: Path, work: Path, key: str, encoder, extractor, args: argparse.Namespace, tag: str) -> dict:
    from indexer.engines.local import LocalExecutor
    from indexer.pipeline import IndexConfig, index_collection
    mode, _, how = key.partition(" ")
    root = work / f"idx-{mode}-{how}-{tag}"
    shutil.rmtree(root, ignore_errors=True)
    from indexer.segment import SegmentParams
    seg = SegmentParams() if args.short_side is None else SegmentParams(short_side=args.short_side)
    config = IndexConfig(every_seconds=args.every, objects=mode, batch_size=args.batch_size,
                         decode_max_side=args.max_side, segment=seg, follow_outside_links=True)
    timed = TimedBackbone(extractor) if mode != "none" else None
    executor = LocalExecutor(encoder, timed, overlap=how == "overlap")
    t = time.perf_counter()
    result = index_collection(coll, root, encoder=encoder, extractor=timed, config=config, executor=executor)
    wall = time.perf_counter() - t
    if result.errors:
        raise SystemExit(f"indexing failed: {result.errors}")
    shutil.rmtree(root, ignore_errors=True)
    dino = timed.seconds if timed is not None else 0.0
    return {"wall": wall, "frames": result.frames_computed, **result.seconds, "dino": dino,
            "clustering": result.seconds["segmentation"] - dino,
            "clip": result.seconds["object_embedding"] + result.seconds["frame_embedding"],
            "objects": sum(s.objects for s in result.sites)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", choices=("brackish", "synth"), default="brackish")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--objects", nargs="+", default=["pool", "crop"], choices=("pool", "crop"))
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--backbone", default="dino-vits16")
    parser.add_argument("--every", type=float, default=1.0)
    parser.add_argument("--max-side", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--short-side", type=int, default=None, help="segmentation input size (default: SegmentParams')")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--overlap", choices=("both", "on", "off"), default="both",
                        help="decode ahead in a producer thread (on), one stage after the other (off), or both")
    parser.add_argument("--brackish", type=Path, default=BRACKISH, help="folder of the brackish clips")
    parser.add_argument("--json", metavar="FILE", help="also write the raw figures here")
    args = parser.parse_args()

    import torch
    from indexer.backbone import load_backbone
    from mvk_tools.layout import discover
    from search.encoder import load_encoder

    work = Path(tempfile.mkdtemp(prefix="bench-indexing-"))
    try:
        coll = collection(args.source, work, args.brackish)
        cat = discover(coll)
        print(f"collection: {len(cat)} videos, {cat['duration'].sum():.1f} s, "
              f"{int(cat['width'].iloc[0])}x{int(cat['height'].iloc[0])}; torch threads {torch.get_num_threads()}; "
              f"device {args.device}", flush=True)
        encoder = load_encoder(args.model, None, random_weights=True, device=args.device)
        extractor = load_backbone(args.backbone, random_weights=True, device=args.device)
        hows = {"both": ("sequential", "overlap"), "on": ("overlap",), "off": ("sequential",)}[args.overlap]
        modes = [f"{m} {h}" for m in ("none", *args.objects) for h in hows]
        runs: dict[str, list[dict]] = {m: [] for m in modes}
        for m in modes:                                           # warm-up (first-call costs)
            run_mode(coll, work, m, encoder, extractor, args, "warm")
        for r in range(args.repeats):                             # interleaved and rotated, so load drifts
            for m in modes[r % len(modes):] + modes[:r % len(modes)]:   # hit every mode alike
                runs[m].append(run_mode(coll, work, m, encoder, extractor, args, str(r)))
                print(f"  repeat {r + 1} {m}: {runs[m][-1]['wall']:.2f} s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    stages = ("decode", "segmentation", "object_embedding", "frame_embedding", "write")
    parts = ("decode", "dino", "clustering", "clip", "write")
    med = {m: {k: statistics.median(run[k] for run in runs[m]) for k in ("wall", *stages, *parts)} for m in modes}
    frames = runs[modes[0]][0]["frames"]
    from indexer.segment import SegmentParams
    short = args.short_side or SegmentParams().short_side
    print(f"\n{args.model} + {args.backbone} (segmentation short side {short}), random weights, {frames} frames "
          f"(one per {args.every:g} s, decoded at max side {args.max_side}), median of {args.repeats}")
    print("frames per second of each stage; total: wall seconds of the whole run, its frames/s, and its cost "
          "relative to frame-only indexing")
    print("(best: the fastest of the repeats, the least disturbed by other work on a shared machine)")
    print("| mode | objects | decode | segmentation | object emb. | frame emb. | write | total s | frames/s "
          "| x frame-only | best s | best x |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    best = {m: min(run["wall"] for run in runs[m]) for m in modes}
    for m in modes:
        base = f"none {m.split(' ', 1)[1]}"
        cells = [f"{frames / med[m][k]:.1f}" if med[m][k] > 1e-3 else "-" for k in stages]
        print(f"| {m} | {runs[m][0]['objects']} | {' | '.join(cells)} | {med[m]['wall']:.2f} | "
              f"{frames / med[m]['wall']:.2f} | {med[m]['wall'] / med[base]['wall']:.2f} | {best[m]:.2f} | "
              f"{best[m] / best[base]:.2f} |")
    print("\nstage breakdown, seconds (medians): DINO = the backbone's forward passes, clustering = the rest of "
          "segmentation (attention, clustering, masks), CLIP = object and frame embedding; sum = the stages "
          "added up (with overlap the decode stage runs beside the others); wall / sum < 1 is the overlap")
    print("| mode | decode | DINO | clustering | CLIP | write | sum | wall | wall / sum | wall / max(decode, rest) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for m in modes:
        total = sum(med[m][k] for k in parts)
        rest = total - med[m]["decode"]
        print(f"| {m} | {' | '.join(f'{med[m][k]:.2f}' for k in parts)} | {total:.2f} | {med[m]['wall']:.2f} | "
              f"{med[m]['wall'] / total:.2f} | {med[m]['wall'] / max(med[m]['decode'], rest):.2f} |")
    for m in modes:
        if m.endswith(" overlap") and m.replace("overlap", "sequential") in med:
            seq = m.replace("overlap", "sequential")
            print(f"{m.split()[0]}: overlap / sequential wall = {med[m]['wall'] / med[seq]['wall']:.2f} (medians), "
                  f"{best[m] / best[seq]:.2f} (best)")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "runs": runs, "median": med}, indent=1,
                                              default=str))


if __name__ == "__main__":
    main()

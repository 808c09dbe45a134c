"""Track-count accuracy: do the tracks count objects right (what MaxN in ``mvk survey`` rests on)?

Every clip goes through the indexing path's segmentation (``segment_stream``); its non-background tracks
are matched to the ground-truth objects by IoU per frame (``indexer.metrics.track_counts``): MaxN error
per video (most tracks visible at once minus most objects visible at once), the over-count a perfect
query for one object would see (``obj MaxN err``), fragmentation (tracks per true object), identity
switches, spurious tracks, and segmentation time per frame.

Clips: a fresh ``mvk synth`` collection (ground-truth masks of every frame) and the DAVIS-2016 sequences
(one annotated foreground object each; skipped when ../shared/data/davis2016 is absent). Backbones: the
colour baseline (accuracy) and DINO ViT-S/16 with RANDOM weights (cost only: its tracks mean nothing).

    python3 benchmarks/bench_tracks.py [--backbone color dino-vits16] [--merge-comoving on|off] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from indexer.backbone import load_backbone  # noqa: E402
from indexer.evaluate import davis_clips, synth_clips  # noqa: E402
from indexer.metrics import track_counts  # noqa: E402
from indexer.segment import SegmentParams, label_volume, segment_stream  # noqa: E402
from mvk_tools.synth import make_collection  # noqa: E402

DAVIS = next((p / "shared" / "data" / "davis2016" for p in Path(__file__).resolve().parents
              if (p / "shared" / "data" / "davis2016").is_dir()), Path("../shared/data/davis2016"))
COLUMNS = ("gt_maxn", "pred_maxn", "maxn_error", "object_maxn_error", "count_mae", "fragmentation", "id_switches",
           "spurious_tracks", "tracks", "objects", "missed_objects")


def run_clip(clip, extractor, params: SegmentParams) -> dict:
    gt = clip.masks()
    started = time.perf_counter()
    segmented = list(segment_stream(clip.frames(), extractor, params))
    seconds = time.perf_counter() - started
    pred = label_volume(segmented, include_background=False)
    counts = track_counts(gt, pred, min_area=params.min_area)
    return {"clip": clip.name, **asdict(counts), "frames": int(gt.shape[0]), "ms_per_frame": 1000 * seconds / len(segmented)}


def table(rows: list[dict], title: str) -> str:
    head = "| clip | frames | GT MaxN | track MaxN | MaxN err | obj MaxN err | count MAE | tracks/object | ID switches | spurious | ms/frame |"
    lines = [f"**{title}**", "", head, "|" + "---|" * 11]
    for r in rows + [mean_row(rows)]:
        lines.append(f"| {r['clip']} | {r['frames']} | {r['gt_maxn']} | {r['pred_maxn']} | {r['maxn_error']:+} | "
                     f"{r['object_maxn_error']:.2f} | {r['count_mae']:.2f} | {r['fragmentation']:.2f} | "
                     f"{r['id_switches']} | {r['spurious_tracks']} | {r['ms_per_frame']:.0f} |")
    return "\n".join(lines)


def mean_row(rows: list[dict]) -> dict:
    out = {"clip": "**mean**"}
    for k in ("frames", "gt_maxn", "pred_maxn", "maxn_error", "id_switches", "spurious_tracks"):
        out[k] = round(float(np.mean([r[k] for r in rows])), 1)
    for k in ("object_maxn_error", "count_mae", "fragmentation", "ms_per_frame"):
        out[k] = float(np.nanmean([r[k] for r in rows]))
    out["maxn_error"] = float(out["maxn_error"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", nargs="+", default=["color", "dino-vits16"])
    ap.add_argument("--synth", default=None, help="an mvk synth collection (default: a fresh one, 2 sites x 2 videos)")
    ap.add_argument("--davis", default=str(DAVIS))
    ap.add_argument("--davis-every", type=int, default=3, help="every n-th DAVIS frame (default 3)")
    ap.add_argument("--davis-max-frames", type=int, default=24)
    ap.add_argument("--short-side", type=int, default=96, help="segmentation short side (default 96: the synthetic "
                    "frames' own size)")
    ap.add_argument("--link-tau", type=float, default=None, help="SegmentParams.link_tau")
    ap.add_argument("--merge-comoving", choices=("on", "off"), default=None,
                    help="SegmentParams.merge_comoving (default: its default)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    params = SegmentParams(short_side=args.short_side, link_tau=args.link_tau)
    if args.merge_comoving is not None:
        params = replace(params, merge_comoving=args.merge_comoving == "on")
    with tempfile.TemporaryDirectory() as tmp:
        coll = Path(args.synth) if args.synth else make_collection(Path(tmp) / "synth", videos_per_site=2)
        sets = {"synth": synth_clips(coll)}
        if Path(args.davis).is_dir():
            sets["davis2016"] = davis_clips(args.davis, every_nth=args.davis_every, max_frames=args.davis_max_frames)
        else:
            print(f"no DAVIS at {args.davis}: skipped", file=sys.stderr)
        results = {}
        for backbone in args.backbone:
            random = backbone != "color"
            extractor = load_backbone(backbone, random_weights=random)
            for name, clips in sets.items():
                rows = []
                for c in clips:
                    rows.append(run_clip(c, extractor, params))
                    print(f"{backbone} {c.name}: {rows[-1]}", file=sys.stderr, flush=True)
                key = f"{name} / {backbone}{' (RANDOM weights: cost only)' if random else ''}"
                results[key] = rows
                print(table(rows, key), "\n", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"params": asdict(params), "results": results}, indent=2, default=float))


if __name__ == "__main__":
    main()

"""Simulated-user benchmark of relevance feedback: does liking and disliking what is shown bring a known target up?

On an ``mvk synth`` collection (ground-truth masks of every frame), indexed with the tiny random CLIP and the
colour segmentation: for each target (an indexed frame), the user starts from a base query, sees the first
``--display`` results and, for up to ``--rounds`` rounds, likes every displayed frame of the target's video that
shows one of the target's objects (from the generator's ground truth) and dislikes the others; the service
re-ranks (SOMHunter's Bayesian update, or Rocchio). Reported: the target's median rank per round against the
no-feedback baseline (round 0).

The base query here is "more like" a frame of another video at the same site (a stand-in for a text query: with
random weights a text means nothing). This checks the mechanism, not retrieval quality: that needs the
pretrained weights and real queries (``mvk kis``).

    python3 benchmarks/bench_feedback.py [--sites 2 --videos 3 --frames 48 --targets 24 --display 20
        --rounds 3 --method bayes]
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


def ground_truth(collection: Path, site: str, video: str) -> np.ndarray:
    """(T, H, W) object labels of every frame of a synthetic video (0 = background)."""
    return np.load(collection / "information" / "masks" / site / f"{video}.npz")["masks"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sites", type=int, default=2)
    parser.add_argument("--videos", type=int, default=3)
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--targets", type=int, default=24)
    parser.add_argument("--display", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--method", choices=("bayes", "rocchio"), default="bayes")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from indexer.models import load_models
    from indexer.pipeline import IndexConfig, index_collection
    from mvk_tools.synth import SYNTH_SITES, make_collection
    from search.queries import FeedbackQuery, ItemRef, LikeQuery, Options
    from search.service import QueryService

    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        collection = make_collection(Path(tmp) / "c", sites=SYNTH_SITES[:args.sites], videos_per_site=args.videos,
                                     n_frames=args.frames, seed=args.seed)
        encoder, extractor = load_models(model="mvk-tiny-vit", pretrained=None, backbone="color",
                                         random_weights=True)
        index_collection(collection, Path(tmp) / "idx", encoder=encoder, extractor=extractor,
                         config=IndexConfig(every_seconds=0.5))
        service = QueryService(Path(tmp) / "idx")
        frames = service.index().frames
        print(f"collection and index: {len(frames)} frames, {time.perf_counter() - started:.0f} s", file=sys.stderr)
        rng = np.random.default_rng(args.seed)
        truth = {}
        ranks: list[list[int]] = [[] for _ in range(args.rounds + 1)]
        for gid in rng.choice(len(frames), size=min(args.targets, len(frames)), replace=False):
            target = frames.iloc[int(gid)]
            key = (str(target["site"]), str(target["video_id"]))
            if key not in truth:
                truth[key] = ground_truth(collection, *key)
            wanted = set(np.unique(truth[key][int(target["frame_index"])])) - {0}
            others = frames[(frames["site"] == target["site"]) & (frames["video_id"] != target["video_id"])]
            if others.empty or not wanted:
                continue
            start = others.iloc[int(rng.integers(len(others)))]
            base = LikeQuery(ItemRef(str(start["site"]), str(start["video_id"]), int(start["frame_index"])))
            likes: list[ItemRef] = []
            dislikes: list[ItemRef] = []
            query = base
            for round_no in range(args.rounds + 1):
                rows = service.run(query, Options(k=len(frames) - 1)).rows
                hit = np.flatnonzero(rows["gid"].to_numpy() == int(gid))
                ranks[round_no].append(int(hit[0]) + 1 if hit.size else len(frames))
                if round_no == args.rounds:
                    break
                for row in rows.head(args.display).itertuples():
                    ref = ItemRef(str(row.site), str(row.video_id), int(row.frame_index))
                    if ref in likes or ref in dislikes:
                        continue
                    same = (str(row.site), str(row.video_id)) == key
                    shows = same and bool(wanted & (set(np.unique(truth[key][int(row.frame_index)])) - {0}))
                    (likes if shows else dislikes).append(ref)
                query = FeedbackQuery(base, tuple(likes), tuple(dislikes), args.method, display=args.display)
        print(f"{args.method}: {len(ranks[0])} targets among {len(frames)} frames, display {args.display}")
        for round_no, values in enumerate(ranks):
            label = "no feedback" if round_no == 0 else f"round {round_no}"
            print(f"  {label:12s} median rank {statistics.median(values):6.1f}   "
                  f"top-{args.display} {np.mean(np.asarray(values) <= args.display):5.0%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The cost of a further embedding space at indexing time (``indexer.spaces``), against an index of one space, in
the same run:

- ``one``: a fresh index, ViT-B-32 only (segmentation + one CLIP pass per frame, objects pooled);
- ``add``: that index given ``--model ViT-B-32 --model ViT-B-16-SigLIP``: only the SigLIP space is computed (the
  video decoded again, the frames checked against the index, masks read back, one SigLIP pass per frame);
- ``both``: a fresh index with both spaces at once (= ``one`` + ``add``: the space stage follows the first);
- ``siglip``: a fresh one-space index of the SigLIP model (what a second model cost before spaces: segmentation
  again, a second index folder);
- ``decode``: decoding the sampled frames alone (the share of ``add`` that re-reading costs).

    python3 benchmarks/bench_space_indexing.py [--repeats 2] [--space ViT-B-16-SigLIP] [--source brackish|synth]

Real architectures with random weights (the image towers only: SigLIP's tokenizer needs files this machine
cannot fetch, and indexing never encodes text), DINO ViT-S/16 random. Modes rotate per repeat; medians.
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
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_indexing import BRACKISH, collection  # noqa: E402
from bench_models import vision_encoder  # noqa: E402

MODES = ("one", "add", "both", "siglip", "decode")


def run(mode: str, coll: Path, work: Path, first, space, extractor, config) -> float:
    """Seconds of one mode (``add`` times only the run that adds the space to a prepared one-space index)."""
    from indexer.pipeline import index_collection
    root = work / f"idx-{mode}"
    shutil.rmtree(root, ignore_errors=True)
    if mode == "decode":
        from indexer.plan import video_tasks
        from indexer.work import sampled_frames
        from mvk_tools.layout import discover
        catalog = discover(coll)
        t = time.perf_counter()
        for site in catalog["site"].astype(str).unique():
            for task in video_tasks(coll, site, catalog[catalog["site"].astype(str) == site], config):
                sum(1 for _ in sampled_frames(task, config))
        return time.perf_counter() - t
    if mode == "add":
        index_collection(coll, root, encoder=first, extractor=extractor, config=config)
    encoder, spaces = {"one": (first, ()), "add": (first, (space,)), "both": (first, (space,)),
                       "siglip": (space, ())}[mode]
    t = time.perf_counter()
    result = index_collection(coll, root, encoder=encoder, extractor=extractor, config=config, spaces=spaces)
    seconds = time.perf_counter() - t
    problems = result.errors + [(s.site, "", n) for s in result.sites for n in s.notes if "not added" in n]
    if problems:
        raise SystemExit(f"{mode}: {problems}")
    shutil.rmtree(root, ignore_errors=True)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--space", default="ViT-B-16-SigLIP")
    parser.add_argument("--source", choices=("brackish", "synth"), default="brackish")
    parser.add_argument("--brackish", type=Path, default=BRACKISH)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()

    from indexer.models import load_backbone
    from indexer.pipeline import IndexConfig
    first, space = vision_encoder(args.model), vision_encoder(args.space)
    extractor = load_backbone("dino-vits16", random_weights=True)
    config = IndexConfig(follow_outside_links=True)     # the collection links to the shared clips
    times: dict[str, list[float]] = {m: [] for m in MODES}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        coll = collection(args.source, work, args.brackish)
        run("one", coll, work, first, space, extractor, config)            # warm-up
        for r in range(args.repeats):
            for mode in MODES[r % len(MODES):] + MODES[:r % len(MODES)]:
                times[mode].append(run(mode, coll, work, first, space, extractor, config))
                print(f"repeat {r + 1} {mode}: {times[mode][-1]:.2f} s", file=sys.stderr)
    med = {m: statistics.median(v) for m, v in times.items()}
    print(f"| mode | seconds (median of {args.repeats}) | x one |")
    print("|---|---|---|")
    for m in MODES:
        print(f"| {m} | {med[m]:.2f} | {med[m] / med['one']:.2f} |")
    print(f"\nadd / siglip (a space against a second index): {med['add'] / med['siglip']:.2f}; "
          f"decode share of add: {med['decode'] / med['add']:.0%}")
    if args.json:
        Path(args.json).write_text(json.dumps({"times": times, "median": med, "args": vars(args)}, indent=2,
                                              default=str))


if __name__ == "__main__":
    main()

"""The work stage's engines on one machine: local against ray (the overhead ratio), ray with 1 against 2 workers.

    python3 benchmarks/bench_engines.py [--videos 4] [--seconds 10] [--repeats 2] [--ray-cpus 4]
                                        [--model ViT-B-32] [--backbone dino-vits16] [--objects pool]

A synthetic collection (one site, ``--videos`` clips of ``--seconds`` at 640x360, one frame per second) is
indexed into a fresh index by each engine, ``--repeats`` times; the figures are medians of the wall time of
``index_collection`` (models already loaded on the driver; for ray the workers' start and model loading
are part of every run, the cluster's start is not and is reported apart). Real architectures with random
weights (same cost as trained ones). ``--ray-cpus`` is the number of logical CPUs the local Ray instance
offers (2 workers and their decoding need at least 3).
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


def run(coll: Path, work: Path, tag: str, encoder, extractor, config, executor) -> dict:
    from indexer.pipeline import index_collection
    root = work / f"idx-{tag}"
    shutil.rmtree(root, ignore_errors=True)
    t = time.perf_counter()
    result = index_collection(coll, root, encoder=encoder, extractor=extractor, config=config, executor=executor)
    wall = time.perf_counter() - t
    if result.errors:
        raise SystemExit(f"indexing failed: {result.errors}")
    shutil.rmtree(root, ignore_errors=True)
    return {"wall": wall, "frames": result.frames_computed, **result.seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--ray-cpus", type=int, default=4)
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--backbone", default="dino-vits16")
    parser.add_argument("--objects", default="pool", choices=("pool", "crop", "none"))
    parser.add_argument("--json", metavar="FILE", help="also write the raw figures here")
    args = parser.parse_args()

    import os

    import ray

    from indexer.engines import ModelSpec
    from indexer.engines.local import LocalExecutor
    from indexer.engines.raydata import RayExecutor, model_memory
    from indexer.models import load_models
    from indexer.pipeline import IndexConfig
    from mvk_tools.synth import make_collection

    work = Path(tempfile.mkdtemp(prefix="bench-engines-"))
    fps = 12.0
    coll = make_collection(work / "collection", sites=("Oahu_Jul2022",), videos_per_site=args.videos,
                           n_frames=int(args.seconds * fps), size=(640, 360), fps=fps, n_objects=3)
    spec = ModelSpec(model=args.model, pretrained=None, backbone=args.backbone, random_weights=True)
    encoder, extractor = load_models(objects=args.objects, **spec.kwargs())
    config = IndexConfig(every_seconds=1.0, objects=args.objects)
    t = time.perf_counter()
    ray.init(num_cpus=args.ray_cpus, include_dashboard=False, logging_level="ERROR", log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})
    ray_start = time.perf_counter() - t
    memory = model_memory(encoder, extractor)
    engines = {"local": lambda: LocalExecutor(encoder, extractor),
               "ray-1": lambda: RayExecutor(spec, workers=1, actor_memory=memory),
               "ray-2": lambda: RayExecutor(spec, workers=2, actor_memory=memory)}
    runs: dict[str, list[dict]] = {k: [] for k in engines}
    try:
        for i in range(args.repeats):
            for name, make in engines.items():
                runs[name].append(run(coll, work, f"{name}-{i}", encoder, extractor, config, make()))
                print(f"{name} #{i + 1}: {runs[name][-1]['wall']:.1f}s", file=sys.stderr, flush=True)
    finally:
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    med = {k: statistics.median(r["wall"] for r in v) for k, v in runs.items()}
    frames = runs["local"][0]["frames"]
    print(f"{frames} frames ({args.videos} videos x {args.seconds:g} s, 640x360, 1 fps), {args.model} + "
          f"{args.backbone} (random weights), objects {args.objects}, {os.cpu_count()} cores, Ray started in "
          f"{ray_start:.1f}s with {args.ray_cpus} logical CPUs; medians of {args.repeats}")
    print(f"{'engine':8} {'wall s':>8} {'frames/s':>9}")
    for name, wall in med.items():
        print(f"{name:8} {wall:8.1f} {frames / wall:9.2f}")
    print(f"overhead ray-1 / local: {med['ray-1'] / med['local']:.2f}x; speed-up ray-2 over ray-1: "
          f"{med['ray-1'] / med['ray-2']:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": runs, "medians": med, "ray_start": ray_start}, indent=1))


if __name__ == "__main__":
    main()

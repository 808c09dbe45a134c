"""The work stage's engines: local against ray (the overhead ratio), ray with 1 against 2 workers on one machine;
a real cluster of 1 against 2 worker nodes; the peak memory of Ray's worker processes on one long video.

    python3 benchmarks/bench_engines.py [--videos 4] [--seconds 10] [--repeats 2] [--ray-cpus 4]
                                        [--model ViT-B-32] [--backbone dino-vits16] [--objects pool]
    python3 benchmarks/bench_engines.py --nodes [--videos 4] [--seconds 10] [--repeats 2] ...     (root)
    python3 benchmarks/bench_engines.py --memory [--minutes 10] [--side 640] [--code DIR] ...     (root)

``--nodes`` and ``--memory`` build a multi-node Ray cluster in network namespaces on this machine
(tests/netns_cluster.py: the head and each worker node in their own namespace, the README's `ray start` lines;
the head drives only, each worker node offers two logical CPUs) and run `mvk index --engine ray --ray-address HEAD:6379` from the head's namespace.
``--nodes``: wall time with 1 and with 2 worker nodes (medians, ratio); the cluster's start is timed apart.
``--memory``: one video of ``--minutes`` at ``--side`` x 9/16 px, one frame per second, indexed by a cluster of
one worker node (two logical CPUs) while every Ray worker process's peak resident memory (VmHWM) is polled; ``--code DIR`` runs
another checkout of this project (the engine before a change) with the same flags.

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


def long_video(path: Path, minutes: float, side: int) -> Path:
    """A ``minutes``-long H.264 video at ``side`` x side*9/16, 1 frame per second: moving coloured squares on a
    gradient (cheap to render, so a 10-minute video is written in seconds; `mvk synth` renders far slower)."""
    import av
    import numpy as np
    w, h = side, side * 9 // 16 // 2 * 2
    path.parent.mkdir(parents=True, exist_ok=True)
    base = np.zeros((h, w, 3), np.uint8)
    base[..., 2] = np.linspace(40, 160, h, dtype=np.uint8)[:, None]
    base[..., 1] = np.linspace(60, 120, w, dtype=np.uint8)[None, :]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=1)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for t in range(int(minutes * 60)):
            img = base.copy()
            for k, colour in enumerate(((230, 60, 40), (250, 220, 40), (40, 200, 90))):
                s = h // 5
                x, y = (t * (7 + 5 * k) + k * w // 3) % (w - s), (t * (3 + k) + k * h // 4) % (h - s)
                img[y:y + s, x:x + s] = colour
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def index_line(coll: Path, idx: Path, address: str, args: argparse.Namespace) -> list[str]:
    """The `mvk index` command a cluster runs (the README's, with this benchmark's models and sampling)."""
    return [sys.executable, "-m", "app", "index", str(coll), "--all", "--index", str(idx), "--engine", "ray",
            "--ray-address", address, "--model", args.model, "--backbone", args.backbone, "--random-weights",
            "--objects", args.objects, "--every", "1", "--no-progress", *args.index_flags.split()]


def cluster_main(args: argparse.Namespace) -> None:
    """--nodes and --memory: a Ray cluster in network namespaces (needs root and iproute2)."""
    import os
    import threading

    from tests.netns_cluster import NetnsCluster, can_make_namespaces, readme_steps, start_ray
    reason = can_make_namespaces()
    if reason:
        raise SystemExit(f"cannot build the cluster: {reason}")
    work = Path(tempfile.mkdtemp(prefix="bench-engines-"))
    code = str(Path(args.code).resolve()) if args.code else str(REPO)
    try:
        if args.memory:
            coll = work / "collection"
            t = time.perf_counter()
            long_video(coll / "videos" / "Long_Site" / "0001.mp4", args.minutes, args.side)
            print(f"video: {args.minutes:g} min at {args.side} px, 1 fps, written in {time.perf_counter() - t:.0f}s",
                  file=sys.stderr, flush=True)
            layouts = [1]
        else:
            from mvk_tools.synth import make_collection
            coll = make_collection(work / "collection", sites=("Oahu_Jul2022",), videos_per_site=args.videos,
                                   n_frames=int(args.seconds * 12), size=(640, 360), fps=12.0, n_objects=3)
            layouts = [1, 2]
        walls: dict[int, list[float]] = {n: [] for n in layouts}
        starts: dict[int, float] = {}
        peaks: dict[int, tuple[str, int]] = {}
        for n in layouts:
            with NetnsCluster(1 + n, pythonpath=code) as cluster:
                t = time.perf_counter()
                start_ray(cluster, readme_steps()["head"], readme_steps()["worker"])
                starts[n] = time.perf_counter() - t
                for i in range(args.repeats):
                    idx = work / f"idx-{n}-{i}"
                    done = threading.Event()

                    def poll() -> None:
                        while not done.is_set():
                            for pid, (title, peak) in cluster.peak_memory().items():
                                if peak > peaks.get(pid, ("", 0))[1]:
                                    peaks[pid] = (title, peak)
                            done.wait(0.2)
                    poller = threading.Thread(target=poll, daemon=True)
                    poller.start()
                    t = time.perf_counter()
                    out = cluster.run(cluster.head, index_line(coll, idx, cluster.address, args), timeout=args.timeout,
                                      check=False, cwd=code)
                    walls[n].append(time.perf_counter() - t)
                    done.set()
                    poller.join()
                    if out.returncode != 0 or "written" not in out.stdout:
                        raise SystemExit(f"mvk index failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
                    print(f"{n} worker node(s) #{i + 1}: {walls[n][-1]:.1f}s", file=sys.stderr, flush=True)
                    shutil.rmtree(idx, ignore_errors=True)
        med = {n: statistics.median(v) for n, v in walls.items()}
        print(f"{os.cpu_count()} cores; cluster = head + N worker nodes in network namespaces, 2 logical CPUs each; "
              f"{args.model} + {args.backbone} (random weights), objects {args.objects}, index flags "
              f"'{args.index_flags}'; code {code}; medians of {args.repeats}")
        for n in layouts:
            print(f"{n} worker node(s): cluster start {starts[n]:.1f}s, index {med[n]:.1f}s")
        if len(layouts) == 2:
            print(f"speed-up 2 nodes over 1: {med[1] / med[2]:.2f}x")
        if args.memory:
            print(f"peak resident memory per Ray worker process ({args.minutes:g}-minute video at {args.side} px):")
            for pid, (title, peak) in sorted(peaks.items(), key=lambda kv: -kv[1][1]):
                print(f"  {peak / 2**20:8.0f} MiB  {title[:70]}  (pid {pid})")
        if args.json:
            Path(args.json).write_text(json.dumps({"walls": walls, "starts": starts,
                                                   "peaks": {str(k): v for k, v in peaks.items()}}, indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)


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
    parser.add_argument("--nodes", action="store_true", help="a cluster in network namespaces: 1 against 2 worker nodes")
    parser.add_argument("--memory", action="store_true",
                        help="peak memory of Ray's worker processes on one long video (a cluster of one worker node)")
    parser.add_argument("--minutes", type=float, default=10.0, help="--memory: length of the video")
    parser.add_argument("--side", type=int, default=640, help="--memory: width of the video (16:9)")
    parser.add_argument("--code", metavar="DIR", help="--nodes/--memory: run this checkout of the project instead")
    parser.add_argument("--index-flags", default="", help="--nodes/--memory: more `mvk index` flags, one string")
    parser.add_argument("--timeout", type=float, default=1800.0, help="--nodes/--memory: seconds per index run")
    args = parser.parse_args()
    if args.nodes or args.memory:
        cluster_main(args)
        return

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

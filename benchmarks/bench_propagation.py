"""Mask propagation cost per frame: backbone (last-block tokens), the affinity/top-k step, upsampling.

DINO label propagation at the published settings (short side 480, n_last_frames 7, neighbourhood 12,
top-k 5) with DINO ViTs of RANDOM weights (the same cost as trained ones; the masks are meaningless) and
the colour baseline (short side 240). Frames: DAVIS-2016 blackswan (854x480) when ../shared/data is
present, else a synthetic clip of that size. The first frame is the seed; the next ``--frames`` frames
are timed one by one after the context has filled (so every timed step sees 1 + 7 context frames), and
the median per frame is reported, in wall seconds and in CPU seconds of this process (all threads; on a
shared machine the CPU time is the steadier figure). Peak MB: resident memory above the level before
the run.

    python3 benchmarks/bench_propagation.py [--backbones dino-vits16 color] [--frames 4] [--device cpu]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from indexer.backbone import load_backbone
from indexer.propagation import (
    PropagateParams,
    features,
    labels_from_soft,
    neighborhood_bias,
    propagate_step,
    seed_ids,
    seed_to_grid,
    short_side_for,
)
from indexer.segment import model_size, resize_frames

SHARED = Path(os.environ.get("MVK_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def clip(n: int) -> tuple[list[np.ndarray], np.ndarray, str]:
    davis = SHARED / "davis2016"
    frames_dir = davis / "JPEGImages" / "480p" / "blackswan"
    if frames_dir.is_dir():
        from PIL import Image
        paths = sorted(frames_dir.glob("*.jpg"))[:n]
        seed = np.asarray(Image.open(davis / "Annotations" / "480p" / "blackswan" / "00000.png"))
        return [np.asarray(Image.open(p).convert("RGB")) for p in paths], (seed > 0).astype(np.uint8), "blackswan"
    from mvk_tools.synth import render_clip
    c = render_clip(n_frames=n, size=(854, 480), n_objects=2, seed=0)
    return list(c.frames), c.masks[0], "synthetic 854x480"


def run(name: str, images: list[np.ndarray], seed: np.ndarray, timed: int, device: str) -> dict:
    params = PropagateParams()
    ex = load_backbone(name, random_weights=name != "color", device=device)
    size = images[0].shape[:2]
    msize = model_size(*size, ex.patch_size, short_side_for(ex, params))
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    base = rss()
    peak = base
    ids = seed_ids(seed)
    _, k0, grid = features(ex, resize_frames(np.stack([images[0]]), msize, device), params.temperature)
    seg0 = seed_to_grid(seed, ids, grid, k0.device)
    bias = neighborhood_bias(grid, params.neighborhood, k0.device)
    recent: list[tuple[torch.Tensor, torch.Tensor]] = []
    times: dict[str, list[float]] = {"backbone": [], "step": [], "upsample": []}
    cpu: list[float] = []
    for i, image in enumerate(images[1:]):
        c0 = time.process_time()
        t0 = time.perf_counter()
        q, k, _ = features(ex, resize_frames(np.stack([image]), msize, device), params.temperature)
        sync()
        t1 = time.perf_counter()
        keys = torch.stack([k0[0], *(e[0] for e in recent)])
        labels = torch.stack([seg0, *(e[1] for e in recent)])
        soft = propagate_step(q[0], keys, labels, grid, topk=params.topk, neighborhood=params.neighborhood,
                              bias=bias)
        sync()
        t2 = time.perf_counter()
        labels_from_soft(soft, ids, grid, size)
        t3 = time.perf_counter()
        c1 = time.process_time()
        recent = (recent + [(k[0], soft)])[-params.n_last_frames:]
        peak = max(peak, rss())
        if i >= params.n_last_frames:
            times["backbone"].append(t1 - t0)
            times["step"].append(t2 - t1)
            times["upsample"].append(t3 - t2)
            cpu.append(c1 - c0)
    med = {k: statistics.median(v) for k, v in times.items()}
    total = sum(med.values())
    return {"backbone": name, "random_weights": name != "color", "model_size": list(msize), "grid": list(grid),
            "timed_frames": len(times["step"]), **{f"{k}_s": round(v, 4) for k, v in med.items()},
            "total_s": round(total, 4), "cpu_s": round(statistics.median(cpu), 4), "fps": round(1 / total, 3), "peak_mb": round((peak - base) / 2**20)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbones", nargs="+", default=["color", "dino-vits16", "dino-vitb16", "dino-vits8"])
    ap.add_argument("--frames", type=int, default=4, help="timed frames per backbone (after 7 warm-up)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", dest="json_out")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    images, seed, what = clip(1 + PropagateParams().n_last_frames + args.frames)
    print(f"frames: {what}, device {args.device}, torch threads {torch.get_num_threads()}")
    rows = []
    for name in args.backbones:
        r = run(name, images, seed, args.frames, args.device)
        rows.append(r)
        print(f"{name:<12} {r['model_size'][1]}x{r['model_size'][0]} grid {r['grid'][1]}x{r['grid'][0]}  "
              f"backbone {r['backbone_s']:.3f} s  step {r['step_s']:.3f} s  upsample {r['upsample_s']:.3f} s  "
              f"total {r['total_s']:.3f} s ({r['fps']:.2f} fps)  cpu {r['cpu_s']:.3f} s  peak {r['peak_mb']} MB", flush=True)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"frames": what, "device": args.device, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()

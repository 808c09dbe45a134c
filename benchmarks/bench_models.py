"""Cost per frame of the embedding models the project knows, on their real architectures with random
weights (the cost of trained weights is the same), as ratios to ViT-B-32 measured in one run.

    python3 benchmarks/bench_models.py                         # every architecture of search.models, CPU
    python3 benchmarks/bench_models.py --models ViT-B-32 ViT-B-16-SigLIP --frames 2 --repeats 3
    python3 benchmarks/bench_models.py --write                 # also store search/models_data/costs.json

Per architecture, two library paths of ``indexer.embed.embed_batch`` on the same frames (512x288 RGB,
MVK's decode size) with four masks per frame:

- frame only (``--objects none``): the preprocessing and the image tower's pass;
- object-aware: ``--objects pool`` where the tower has a dense path (ClearCLIP for CLIP ViTs, MaskCLIP's
  value path for SigLIP's attention-pooling head), else ``crop`` (one more pass per object).

Only the image tower is built: the whole model is created on torch's meta device (no memory, no weights)
and its ``visual`` module is then materialised on the CPU and filled with random numbers, so the ~4 GB
text+image ViT-H-14 fits a small machine. Text encoding is not part of the per-frame cost. Each
architecture runs in its own process (memory is returned between models) with ``--threads`` torch threads
(default 1); one warm-up batch (unless ``--no-warmup``), then the median of ``--repeats`` timed batches.
The ratio to ViT-B-32 is paired in time: each timed batch of a model sits between two of ViT-B-32 in the
same process, so the load of a shared machine, which drifts over minutes, cancels out of it (the
milliseconds alone do not compare across models there).
Segmentation (DINO) is not included: it is the same for every model.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DEFAULT_ARCHS = ("ViT-B-32", "ViT-B-16-SigLIP", "ViT-L-14", "ViT-H-14", "ViT-SO400M-14-SigLIP-384", "ViT-B-16")


def vision_encoder(name: str, device: str = "cpu"):
    """An ``Encoder`` whose model is only ``name``'s image tower, randomly initialised (seeded), with the
    preprocessing of the architecture's own pretrained config (the first tag open_clip lists)."""
    import open_clip
    import torch
    from open_clip.pretrained import list_pretrained_tags_by_model

    from search import encoder as enc

    enc._register_model_configs()
    with torch.device("meta"):
        model = open_clip.create_model(name, pretrained=None, device="meta")
    visual = model.visual.to_empty(device=device)
    gen = torch.Generator(device=device).manual_seed(enc.RANDOM_SEED)
    with torch.no_grad():
        for p in visual.parameters():
            p.normal_(0.0, 0.02, generator=gen)
        for b in visual.buffers():
            if b.is_floating_point():
                b.zero_()
    visual.eval()

    class VisionOnly(torch.nn.Module):
        def __init__(self, tower):
            super().__init__()
            self.visual = tower

        def encode_image(self, x):
            return self.visual(x)

    tags = list_pretrained_tags_by_model(name)
    pp = enc.model_preprocess(name, tags[0] if tags else None)
    out = object.__new__(enc.Encoder)       # the image side of an Encoder; no text tower, no tokenizer
    out.model, out.tokenizer, out.model_name, out.pretrained = VisionOnly(visual), None, name, None
    out.checkpoint, out.random_weights, out.device = None, True, device
    size = visual.image_size
    out.image_size = int(size[0] if isinstance(size, (tuple, list)) else size)
    out.mean = tuple(pp.get("mean", (0.48145466, 0.4578275, 0.40821073)))
    out.std = tuple(pp.get("std", (0.26862954, 0.26130258, 0.27577711)))
    out.interpolation, out.resize_mode = pp.get("interpolation", "bicubic"), pp.get("resize_mode", "shortest")
    out.context_length = 0
    with torch.inference_mode():
        out.dim = int(out.model.encode_image(torch.zeros(1, 3, out.image_size, out.image_size)).shape[-1])
    return out


def frames_and_masks(n: int, height: int = 288, width: int = 512, per_frame: int = 4):
    """``n`` random frames and ``per_frame`` rectangular object masks on each."""
    import numpy as np

    from indexer.segment import ObjectMask
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (height, width, 3), dtype=np.uint8) for _ in range(n)]
    objects = []
    for _ in range(n):
        objs = []
        for k in range(per_frame):
            x0, y0 = int(rng.integers(0, width // 2)), int(rng.integers(0, height // 2))
            x1, y1 = x0 + width // 4, y0 + height // 4
            mask = np.zeros((height, width), bool)
            mask[y0:y1, x0:x1] = True
            objs.append(ObjectMask(k, 0, mask, (x0, y0, x1, y1), float(mask.mean()), False))
        objects.append(objs)
    return frames, objects


def _time(encoder, images, objects, mode: str, batch: int) -> float:
    """ms per frame of one ``embed_batch`` call."""
    from indexer.embed import embed_batch
    t = time.perf_counter()
    embed_batch(encoder, images, objects, mode, batch_size=batch)
    return (time.perf_counter() - t) * 1000.0 / len(images)


def measure(name: str, frames: int, repeats: int, batch: int, device: str, warmup: bool = True,
            threads: int = 1) -> dict:
    """Median ms per frame of frame-only and object-aware embedding of one architecture, and its ratio to
    ViT-B-32 paired in time: every timed batch of the model sits between two of ViT-B-32 (loaded in the
    same process), so a shared machine's load, which drifts over minutes, cancels out of the ratio."""
    import torch
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    encoder = vision_encoder(name, device)
    build_s = time.perf_counter() - t0
    reference = vision_encoder("ViT-B-32", device) if name != "ViT-B-32" else None
    objects_mode = "pool" if encoder.aligned_variant() else "crop"
    images, objects = frames_and_masks(frames)
    result = {"arch": name, "embed_dim": encoder.dim, "image_size": encoder.image_size,
              "objects_mode": objects_mode, "dense_variant": encoder.aligned_variant(),
              "build_s": round(build_s, 1)}
    for key, mode in (("frame", "none"), ("objects", objects_mode)):
        if warmup:
            _time(encoder, images[:1], objects[:1], mode, batch)
        times, ratios = [], []
        for _ in range(repeats):
            before = _time(reference, images, objects, mode, batch) if reference else None
            times.append(_time(encoder, images, objects, mode, batch))
            if reference:
                after = _time(reference, images, objects, mode, batch)
                ratios.append(times[-1] / ((before + after) / 2.0))
        result[f"{key}_ms"] = round(statistics.median(times), 1)
        result[f"{key}_ratio"] = round(statistics.median(ratios), 2) if ratios else 1.0
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_ARCHS), help="open_clip architectures")
    parser.add_argument("--frames", type=int, default=2, help="frames per timed batch (default 2)")
    parser.add_argument("--repeats", type=int, default=3, help="timed batches per path (default 3)")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--no-warmup", action="store_true",
                        help="no untimed warm-up batch (big models on a small CPU: the median of the timed "
                             "batches drops the first one's extra cost)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: on a shared machine two threads waiting for each other "
                             "made ViT-B-32 3-4x slower than one)")
    parser.add_argument("--write", action="store_true", help="store the results in search/models_data/costs.json")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)      # the child process: one model
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure(args.one, args.frames, args.repeats, args.batch_size, args.device,
                                 warmup=not args.no_warmup, threads=args.threads)))
        return 0
    results = {}
    for name in args.models:
        cmd = [sys.executable, __file__, "--one", name, "--frames", str(args.frames), "--repeats", str(args.repeats),
               "--batch-size", str(args.batch_size), "--device", args.device, "--threads", str(args.threads),
               *(["--no-warmup"] if args.no_warmup else [])]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"{name}: failed: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode}")
            continue
        results[name] = json.loads(proc.stdout.strip().splitlines()[-1])
        r = results[name]
        print(f"{name}: frame {r['frame_ms']} ms (x{r['frame_ratio']} B-32, paired), objects ({r['objects_mode']}) "
              f"{r['objects_ms']} ms (x{r['objects_ratio']})", flush=True)
        if args.write:                  # after every model, so a long run stopped early keeps what it measured
            write_costs(results, args)
    print(format_table(results))
    return 0


def format_table(results: dict) -> str:
    """Per architecture: dim, input size, ms per frame and the paired ratio to ViT-B-32, both paths."""
    lines = [f"\n{'architecture':28} {'dim':>5} {'px':>4} {'frame ms':>9} {'x B-32':>7} {'objects':>8} "
             f"{'obj ms':>9} {'x B-32':>7}"]
    for name, r in results.items():
        lines.append(f"{name:28} {r['embed_dim']:>5} {r['image_size']:>4} {r['frame_ms']:>9.1f} "
                     f"{r['frame_ratio']:>7.1f} {r['objects_mode']:>8} {r['objects_ms']:>9.1f} {r['objects_ratio']:>7.1f}")
    return "\n".join(lines)


def write_costs(results: dict, args: argparse.Namespace) -> None:
    """search/models_data/costs.json: what ``mvk models`` shows."""
    from search.models import COSTS_FILE
    device = args.device if args.device != "cpu" else \
        f"cpu, {args.threads} thread(s) on a shared {len(os.sched_getaffinity(0))}-core " \
        f"{platform.processor() or platform.machine()} machine"
    data = {"device": device, "frames": args.frames, "repeats": args.repeats, "batch_size": args.batch_size,
            "warmup": not args.no_warmup,
            "note": f"random weights, image tower only; ms per 512x288 frame with 4 masks, median of {args.repeats} "
                    f"timed batch(es) of {args.frames} frame(s); benchmarks/bench_models.py --write",
            "models": results}
    COSTS_FILE.parent.mkdir(parents=True, exist_ok=True)
    COSTS_FILE.write_text(json.dumps(data, indent=1) + "\n")

if __name__ == "__main__":
    raise SystemExit(main())

"""Segmentation speed and memory per stage: backbone, attention, clustering, upsampling.

For T sampled frames (default 30, 60, 120) at the default resolution (short side 224: 854x480 frames
-> 224x400, 14x25 patches), DINO ViT-S/16 with RANDOM weights (same cost as trained ones), key-frame
stride r = 10 and r = 1. Frames are real DAVIS-2016 frames (cycled) when ../shared/data/davis2016 is
present, else synthetic. The run follows segment_stream: chunks of 64 frames, windows of 8.

The backbone does not depend on r, so it runs once per T and both r reuse its q, k. Random weights give
near-uniform attention, which the clustering merges into one cluster in a single cheap round; so the
clustering is also measured on the attention of the colour baseline extractor at the same patch grid
("structured" rows, tens of clusters), the cost a trained model's rows are closer to.

Memory: peak resident memory above the level before the stage, sampled every 2 ms while the stage runs.

    python3 benchmarks/bench_segmentation.py [--frames 30 60 120] [--reps 1] [--threads N] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from indexer.attention import attention_rows, flatten_keys, key_frame_indices  # noqa: E402
from indexer.backbone import load_backbone  # noqa: E402
from indexer.clustering import windowed_cluster  # noqa: E402
from indexer.color_extractor import ColorExtractor  # noqa: E402
from indexer.segment import SegmentParams, model_size, objects_in_frame, resize_frames, upsample_labels  # noqa: E402

PAGE = os.sysconf("SC_PAGE_SIZE")


class RssSampler:
    """Peak RSS above a baseline while a stage runs (a thread reads /proc/self/statm every 2 ms)."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @staticmethod
    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * PAGE

    def __enter__(self) -> "RssSampler":
        self.base = self.rss()
        self.peak = self.base

        def loop() -> None:
            while not self._stop.is_set():
                self.peak = max(self.peak, self.rss())
                time.sleep(0.002)

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join()
        self.peak = max(self.peak, self.rss())

    @property
    def mb(self) -> float:
        return (self.peak - self.base) / 2**20


def load_frames(n: int) -> tuple[np.ndarray, str]:
    davis = Path(__file__).resolve().parents[2] / "shared" / "data" / "davis2016" / "JPEGImages" / "480p" / "blackswan"
    if davis.is_dir():
        from PIL import Image
        paths = sorted(davis.glob("*.jpg"))
        imgs = [np.asarray(Image.open(p).convert("RGB")) for p in paths[:min(n, len(paths))]]
        return np.stack([imgs[i % len(imgs)] for i in range(n)]), "DAVIS-2016 blackswan 854x480 (cycled)"
    from mvk_tools.synth import render_clip
    return render_clip(n_frames=n, size=(854, 480), seed=0).frames, "synthetic 854x480"


def timed(fn, *args, **kwargs):
    with RssSampler() as mem:
        t = time.perf_counter()
        out = fn(*args, **kwargs)
        dt = time.perf_counter() - t
    return out, dt, mem.mb


def run_chunk(q: torch.Tensor, k: torch.Tensor, grid: tuple[int, int], src: tuple[int, int],
              params: SegmentParams) -> dict:
    n_frames = q.shape[0]
    keys = flatten_keys(k, key_frame_indices(n_frames, params.key_stride))
    bounds = [(s, min(s + params.window, n_frames)) for s in range(0, n_frames, params.window)]
    attn = {"s": 0.0, "mb": 0.0}

    def rows_of(w: int) -> torch.Tensor:
        with RssSampler() as mem:
            t = time.perf_counter()
            rows = attention_rows(q[bounds[w][0]:bounds[w][1]], keys)
            attn["s"] += time.perf_counter() - t
        attn["mb"] = max(attn["mb"], mem.mb)
        return rows

    result, total, mem_total = timed(windowed_cluster, rows_of, len(bounds), params.tau,
                                     window_max_clusters=params.window_max_clusters)
    h, w = grid
    labels = result.labels.view(n_frames, h, w).cpu().numpy()

    def upsample() -> int:
        count = 0
        for s in range(0, n_frames, 8):
            for m in upsample_labels(labels[s:s + 8], src):
                count += len(objects_in_frame(m, list(range(int(labels.max()) + 1)), level=0, background=(0,),
                                              min_area=params.min_area))
        return count

    _, up_s, up_mb = timed(upsample)
    return {"attention_s": attn["s"], "attention_mb": attn["mb"], "clustering_s": total - attn["s"],
            "clustering_mb": mem_total, "upsampling_s": up_s, "upsampling_mb": up_mb,
            "clusters": int(result.centroids[-1].shape[0]), "window_clusters": result.window_clusters,
            "columns": int(keys.shape[1])}


def run(frames_list: list[int], reps: int, structured: bool) -> dict:
    params10 = SegmentParams()
    ex = load_backbone("dino-vits16", random_weights=True)
    color = ColorExtractor(patch_size=16)
    out: dict = {"machine": f"{os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}",
                 "torch": torch.__version__, "runs": []}
    for t in frames_list:
        images, source = load_frames(t)
        out["frames_source"] = source
        src = images.shape[1:3]
        size = model_size(src[0], src[1], ex.patch_size, params10.short_side)
        resized = resize_frames(images, size)
        bb_times, bb_mb = [], []
        for _ in range(reps if t < 120 else 1):
            (q, k, grid), dt, mb = timed(ex.qk, resized)
            bb_times.append(dt)
            bb_mb.append(mb)
        backbone_s = statistics.median(bb_times)
        cq, ck, _ = color.qk(resized) if structured else (None, None, None)
        for r in (10, 1):
            params = SegmentParams(key_stride=r)
            stages: dict[str, float] = {}
            struct: dict[str, float] = {}
            for s in range(0, t, params.chunk):     # chunks, as segment_stream
                sl = slice(s, min(s + params.chunk, t))
                res = run_chunk(q[sl], k[sl], grid, src, params)
                for key, value in res.items():
                    stages[key] = stages.get(key, 0) + value if key.endswith("_s") or key in ("clusters",) \
                        else max(stages.get(key, 0), value)
                if structured:
                    sres = run_chunk(cq[sl], ck[sl], grid, src, params)
                    for key in ("attention_s", "clustering_s", "clusters", "window_clusters"):
                        struct[key] = struct.get(key, 0) + sres[key]
            total = backbone_s + stages["attention_s"] + stages["clustering_s"] + stages["upsampling_s"]
            row = {"T": t, "r": r, "grid": list(grid), "backbone_s": backbone_s, "backbone_mb": max(bb_mb),
                   **stages, "total_s": total, "fps_total": t / total,
                   **{f"fps_{name}": t / max(stages.get(f"{name}_s", backbone_s if name == "backbone" else 0), 1e-9)
                      for name in ("backbone", "attention", "clustering", "upsampling")}}
            if structured:
                row["structured"] = struct
            out["runs"].append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    return out


def table(result: dict) -> str:
    lines = ["| T | r | key cols | backbone s (fps) | attention s | clustering s (random / colour rows) | "
             "upsampling s | total s (fps) | peak MB bb/attn/clust/up |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in result["runs"]:
        st = r.get("structured", {})
        lines.append(
            f"| {r['T']} | {r['r']} | {r['columns']} | {r['backbone_s']:.2f} ({r['fps_backbone']:.1f}) | "
            f"{r['attention_s']:.2f} | {r['clustering_s']:.2f} / {st.get('clustering_s', float('nan')):.2f} | "
            f"{r['upsampling_s']:.2f} | {r['total_s']:.2f} ({r['fps_total']:.1f}) | "
            f"{r['backbone_mb']:.0f}/{r['attention_mb']:.0f}/{r['clustering_mb']:.0f}/{r['upsampling_mb']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, nargs="+", default=[30, 60, 120])
    parser.add_argument("--reps", type=int, default=3, help="backbone repetitions for T < 120 (median)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--no-structured", action="store_true", help="skip the colour-rows clustering run")
    parser.add_argument("--json", dest="json_out", help="write the raw results here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    with torch.inference_mode():
        result = run(args.frames, args.reps, not args.no_structured)
    print(table(result))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

"""Frames per second of MVK's selected frames as a frame source, against decoding them from the video.

For each real clip in ../shared/data/brackish (1920x1080, 15 fps), one frame per second at irregular
offsets is written as a full-size JPEG named by ordinal (as MVK's selected frames are). Then, per video:

- decode:   ``mvk_tools.video.iter_frames(indices=true frames, max_side)`` (what --selected-frames did when
            the numbers were taken for frame indices; needs the true indices, which MVK does not give);
- selected: ``indexer.selected.selected_frames`` (decode once at thumbnail size, locate every image by
            content, read the JPEGs at max_side): what --selected-frames does now;
- and its two parts: ``locate`` alone, reading the JPEGs alone.

Each image is checked to be located at its true frame. CLIP embedding (the same in both) is not included.

    python3 benchmarks/bench_selected.py [--repeats 3 --max-side 512 --every 15]

Prints one line per path: median wall and CPU seconds over --repeats for all clips, images per second of
each, and the ratios (CPU time is the steadier figure on a shared machine).
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

from indexer.selected import read_image, selected_frames  # noqa: E402
from mvk_tools.layout import SelectedImage  # noqa: E402
from mvk_tools.locate import locate_files  # noqa: E402
from mvk_tools.video import iter_frames, output_size, probe  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "brackish"


def make_selected(video: Path, out: Path, every: int, seed: int) -> tuple[list[SelectedImage], list[int]]:
    """Full-size JPEGs of one frame per ``every`` frames (random offset in the first half), ordinal names."""
    from PIL import Image
    info = probe(video)
    rng = np.random.default_rng(seed)
    frames = [int(rng.integers(s, min(s + max(1, every // 2), info.frame_count)))
              for s in range(0, info.frame_count - 1, every)]
    images = []
    for n, f in enumerate(iter_frames(video, indices=frames), start=1):
        path = out / f"{video.stem}_{n:05d}.jpg"
        Image.fromarray(f.image).save(path, quality=90)
        images.append(SelectedImage(path.name, n, path))
    return images, frames


def median_time(fn, repeats: int) -> tuple[float, float]:
    """Median wall and CPU (process, all threads) seconds of ``fn()``."""
    wall, cpu = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return statistics.median(wall), statistics.median(cpu)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-side", type=int, default=512)
    ap.add_argument("--every", type=int, default=15, help="frames between selected frames (15 fps clips: 1 s)")
    args = ap.parse_args()
    videos = sorted(DATA.glob("*.mp4"))
    if not videos:
        sys.exit(f"no clips in {DATA}")
    with tempfile.TemporaryDirectory() as tmp:
        sel = {}
        for i, v in enumerate(videos):
            sel[v] = make_selected(v, Path(tmp), args.every, seed=i)
        n_images = sum(len(s[0]) for s in sel.values())
        for v, (images, frames) in sel.items():
            found = [f.index for f in selected_frames(v, images, max_side=args.max_side)]
            assert found == frames, (v.name, found, frames)

        def decode() -> None:
            for v, (_, frames) in sel.items():
                for _ in iter_frames(v, indices=frames, max_side=args.max_side):
                    pass

        def selected() -> None:
            for v, (images, _) in sel.items():
                for _ in selected_frames(v, images, max_side=args.max_side):
                    pass

        def locate_only() -> None:
            for v, (images, _) in sel.items():
                locate_files(v, [im.path for im in images])

        def jpegs_only() -> None:
            for v, (images, _) in sel.items():
                info = probe(v, check_end=False)
                size = output_size(info.width, info.height, max_side=args.max_side)
                for im in images:
                    read_image(im.path, size)

        info = probe(videos[0])
        print(f"{len(videos)} clips {info.width}x{info.height} at {info.fps:g} fps, {n_images} selected frames "
              f"(full-size JPEGs), max side {args.max_side}, median of {args.repeats}; every image located at "
              f"its true frame")
        results = {}
        for name, fn in (("decode (iter_frames, true indices)", decode), ("selected (locate + JPEGs)", selected),
                         ("  locate only", locate_only), ("  JPEGs only", jpegs_only)):
            sec, cpu = median_time(fn, args.repeats)
            results[name] = (sec, cpu)
            print(f"{name:36s} wall {sec:7.2f} s  {n_images / sec:8.1f} images/s   cpu {cpu:7.2f} s  "
                  f"{n_images / cpu:8.1f} images/cpu-s")
        sel, dec = results["selected (locate + JPEGs)"], results["decode (iter_frames, true indices)"]
        print(f"selected / decode: wall {sel[0] / dec[0]:.2f}, cpu {sel[1] / dec[1]:.2f}")


if __name__ == "__main__":
    main()

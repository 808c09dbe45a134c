"""Frames per second of MVK's selected frames as a frame source, against decoding them from the video.

For each real clip in ../shared/data/brackish (1920x1080, 15 fps), one frame per second at irregular
offsets is written as a full-size JPEG named by ordinal (as MVK's selected frames are). Then, per video:

- decode:   ``mvk_tools.video.iter_frames(indices=true frames, max_side)`` (what --selected-frames did when
            the numbers were taken for frame indices; needs the true indices, which MVK does not give);
- selected: ``indexer.selected.selected_frames`` (decode once at thumbnail size, locate every image by
            content, read the JPEGs at max_side): what --selected-frames does now;
- and its two parts: ``locate`` alone, reading the JPEGs alone.

Each image is checked to be located at its true frame. CLIP embedding (the same in both) is not included.

Then the placement alone, on thumbnails already decoded: every image's nearest frame on its own (per-image
matching, what ``locate`` did before the alignment) against all images of a video at once (``locate`` with
the numbers: distances, the monotonic dynamic programme, margins), on the clips and on synthetic cost sizes
of longer videos (random normalised thumbnails: the cost does not depend on the content).

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
from mvk_tools.locate import (  # noqa: E402
    VideoThumbs,
    distances,
    image_thumbs,
    locate,
    locate_files,
    normalise,
    video_thumbs,
)
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
    ap.add_argument("--data", type=Path, default=DATA, help="folder of the clips (default: ../shared/data/brackish)")
    args = ap.parse_args()
    videos = sorted(args.data.glob("*.mp4"))
    if not videos:
        sys.exit(f"no clips in {args.data}")
    with tempfile.TemporaryDirectory() as tmp:
        sel = {}
        for i, v in enumerate(videos):
            sel[v] = make_selected(v, Path(tmp), args.every, seed=i)
        sel_all = dict(sel)
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
        placement(sel_thumbs(sel_images(sel_all)), args.repeats)


def sel_images(sel: dict) -> list:
    return [(v, images, frames) for v, (images, frames) in sel.items()]


def sel_thumbs(items: list) -> list[tuple[np.ndarray, VideoThumbs, list[int], list[int]]]:
    """(image thumbnails, video thumbnails, numbers, true frames) per clip."""
    out = []
    for v, images, frames in items:
        thumbs = video_thumbs(v)
        out.append((image_thumbs([im.path for im in images], thumbs.size), thumbs,
                    [im.number for im in images], frames))
    return out


def synthetic(n_images: int, n_frames: int, fps: float = 30.0, seed: int = 0):
    """Random normalised 96x54 thumbnails: ``n_frames`` frames, ``n_images`` images one a second."""
    rng = np.random.default_rng(seed)
    frames = normalise(rng.normal(size=(n_frames, 96 * 54))).astype(np.float16)
    pick = np.minimum((np.arange(n_images) * fps).astype(int), n_frames - 1)
    images = frames[pick].astype(np.float32) + 0.1 * rng.normal(size=(n_images, 96 * 54)).astype(np.float32)
    thumbs = VideoThumbs(np.arange(n_frames), np.arange(n_frames) / fps, frames, (96, 54))
    return normalise(images), thumbs, list(range(1, n_images + 1)), pick.tolist()


def placement(cases: list, repeats: int) -> None:
    """Per-image nearest frames (the matching before the alignment: one distance matrix, an argmin per image)
    against the alignment (``locate`` with the numbers: the same matrix, the dynamic programme, margins,
    flags), on the same thumbnails."""
    sizes = [("clips", cases), ("60 s at 30 fps, 60 images", [synthetic(60, 1800)]),
             ("10 min at 30 fps, 600 images", [synthetic(600, 18000)])]
    print("placement alone (thumbnails decoded): per-image nearest frame vs all images at once")
    for name, group in sizes:
        for images, thumbs, numbers, truth in group:
            got = locate(images, thumbs, numbers=numbers)
            assert got.frame_index.tolist() == list(truth), name
        per, per_cpu = median_time(lambda g=group: [distances(i, t.thumbs).argmin(axis=1) for i, t, _, _ in g],
                                   repeats)
        ali, ali_cpu = median_time(lambda g=group: [locate(i, t, numbers=n) for i, t, n, _ in g], repeats)
        print(f"  {name:32s} per-image wall {per * 1e3:8.1f} ms cpu {per_cpu * 1e3:8.1f} ms | aligned wall "
              f"{ali * 1e3:8.1f} ms cpu {ali_cpu * 1e3:8.1f} ms | aligned / per-image cpu {ali_cpu / per_cpu:.2f}")


if __name__ == "__main__":
    main()

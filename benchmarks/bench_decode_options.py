"""FFmpeg decoder options for sparse sampling (one frame per second) at max side 512, per codec: what each
option gains per core over full decoding, and what it does to the images.

    PYTHONPATH=. python3 benchmarks/bench_decode_options.py [--repeat 3] [--brackish DIR]

Clips: the brackish MPEG-4 Part 2 clips and the two 1080p H.264 clips of bench_video.py (x264 defaults; a key
frame every 2 s with 2 B-frames). Baseline: the decoder of commit 59cad99 (every frame decoded, one thread).
Variants (all one decoder thread unless named): the sparse decoder as it is (``sparse``), with FFmpeg's
``skip_loop_filter=all`` and ``flags2=+fast`` (H.264), with ``lowres`` forced to 0 or 2 (MPEG-4), as the
indexer decodes (``detail`` 256: the models' need), and with 2 threads of type FRAME or SLICE. Indices and
times are compared with the baseline (they must be equal); images by their mean absolute difference.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_video as bv  # noqa: E402
from mvk_tools import video as V  # noqa: E402


def variant(options: dict | None, thread_type: str | None, threads: int, lowres: int | None):
    """A replacement of mvk_tools.video's _open and _set_output that applies these options."""
    opened, set_output = bv.ORIGINAL_OPEN, bv.ORIGINAL_SET_OUTPUT

    def op(path, t=None, hwaccel=None):
        container, stream = opened(path, threads)
        if thread_type:
            stream.thread_type = thread_type
        if options:
            stream.codec_context.options = {**dict(stream.codec_context.options or {}), **options}
        return container, stream

    def out(stream, size, max_side, hwaccel=None, detail=None):
        if lowres is None:
            return set_output(stream, size, max_side, hwaccel, detail)
        if lowres:
            stream.codec_context.options = {**dict(stream.codec_context.options or {}), "lowres": str(lowres)}
    return op, out


def sampled(video: Path, *, options=None, thread_type=None, threads=1, lowres=None, detail=None) -> list:
    V._open, V._set_output = variant(options, thread_type, threads, lowres)
    try:
        return list(V.iter_frames(video, every_seconds=1.0, max_side=512, threads=threads, detail=detail))
    finally:
        V._open, V._set_output = bv.ORIGINAL_OPEN, bv.ORIGINAL_SET_OUTPUT


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--brackish", type=Path, default=bv.BRACKISH)
    args = parser.parse_args()
    bv.ORIGINAL_OPEN, bv.ORIGINAL_SET_OUTPUT = V._open, V._set_output
    videos = bv.clips(args.brackish)
    before = bv.load_before("59cad99")
    print(f"max side 512, every 1 s, medians of {args.repeat}; x = full decoding's CPU (or wall) s / the variant's")
    print("| video | variant | CPU s | x CPU | wall s | x wall | same indices, times | mean abs diff (max, median) |")
    print("|---|---|---|---|---|---|---|---|")
    for video in videos:
        codec = V.probe(video).codec
        cb, wb, ref = bv.measure(lambda: list(before.iter_frames(video, every_seconds=1.0, max_side=512)),
                                 args.repeat)
        print(f"| {video.name} ({codec}) | full decoding (59cad99) | {cb:.2f} | 1.0 | {wb:.2f} | 1.0 | | |")
        variants = {"sparse": {}, "sparse, detail 256 (mvk index)": {"detail": 256}}
        if codec == "h264":
            variants |= {"skip_loop_filter=all": {"options": {"skip_loop_filter": "all"}},
                         "flags2=+fast": {"options": {"flags2": "+fast"}}}
        else:
            variants |= {"lowres 0": {"lowres": 0}, "lowres 2": {"lowres": 2}}
        variants |= {"2 threads, FRAME": {"threads": 2, "thread_type": "FRAME"},
                     "2 threads, SLICE": {"threads": 2, "thread_type": "SLICE"}}
        for name, kw in variants.items():
            c, w, out = bv.measure(lambda: sampled(video, **kw), args.repeat)
            same = [(f.index, f.time) for f in out] == [(f.index, f.time) for f in ref]
            diff = [float(np.abs(a.image.astype(np.int16) - b.image).mean()) for a, b in zip(ref, out)]
            print(f"| | {name} | {c:.2f} | {cb / c:.1f} | {w:.2f} | {wb / w:.1f} | {same} | "
                  f"{max(diff):.2f}, {statistics.median(diff):.2f} |", flush=True)


if __name__ == "__main__":
    t = time.perf_counter()
    main()
    print(f"({time.perf_counter() - t:.0f} s)")

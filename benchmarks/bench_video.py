"""Speed of decoding, seeking, probing and `mvk synth` (medians of a few runs).

    python3 benchmarks/bench_video.py [VIDEO]     (default: ../shared/data/brackish/crab_test.mp4)
"""
from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

from mvk_tools.layout import discover
from mvk_tools.synth import make_collection
from mvk_tools.video import iter_frames, probe, read_frame_at


def median_seconds(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    video = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[2] / "shared" / "data"
                 / "brackish" / "crab_test.mp4")
    info = probe(video)
    print(f"{video.name}: {info.width}x{info.height} {info.codec} {info.fps:g} fps, {info.frame_count} frames")
    t = median_seconds(lambda: list(iter_frames(video)))
    print(f"decode every frame, full size RGB: {t:.2f} s = {info.frame_count / t:.0f} frames/s")
    t = median_seconds(lambda: list(iter_frames(video, every_seconds=1.0, max_side=224)))
    print(f"every 1 s, max side 224:           {t:.2f} s = {info.duration / t:.0f}x real time")
    times = [info.duration * k / 10 for k in range(10)]
    t = median_seconds(lambda: [read_frame_at(video, s, max_side=224) for s in times]) / len(times)
    print(f"read_frame_at (seek), max side 224: {t * 1000:.0f} ms per frame")
    t = median_seconds(lambda: probe(video), repeat=5)
    print(f"probe (header + end check):        {t * 1000:.1f} ms")
    with tempfile.TemporaryDirectory() as tmp:
        counter = iter(range(100))
        t = median_seconds(lambda: make_collection(Path(tmp) / str(next(counter))))
        print(f"mvk synth defaults (4 videos):     {t:.2f} s")
        t = median_seconds(lambda: discover(Path(tmp) / "0"))
        print(f"catalog of that collection:        {t * 1000:.0f} ms")


if __name__ == "__main__":
    main()

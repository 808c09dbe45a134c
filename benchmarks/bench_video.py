"""Speed of decoding, seeking, probing and `mvk synth` (medians of a few runs), and sparse sampling
(one frame per second) per core, before (the decoder of git revision --before, which decodes every
frame) and now, on the brackish MPEG-4 Part 2 clips and on 1080p H.264 clips made from them.

    python3 benchmarks/bench_video.py [VIDEO]              (default: ../shared/data/brackish/crab_test.mp4)
    python3 benchmarks/bench_video.py --sparse [--before 59cad99] [--repeat 3]

"Per core" is sampled frames per CPU second of this process with one decoder thread (process time, so a
busy shared machine slows the wall clock but not the figure much).
"""
from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

from mvk_tools.layout import discover
from mvk_tools.synth import make_collection
from mvk_tools.video import iter_frames, probe, read_frame_at

ROOT = Path(__file__).resolve().parents[1]
BRACKISH = ROOT.parent / "shared" / "data" / "brackish"


def median_seconds(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def general(video: Path) -> None:
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


# -- sparse sampling -------------------------------------------------------------------------------

def make_h264(path: Path, sources: list[Path], *, keyint: int | None = None, bframes: int | None = None) -> Path:
    """A 1080p 30 fps H.264 clip (libx264 veryfast, crf 23) of the frames of ``sources`` (real footage, each
    frame distinct). Default GOP and B-frames are x264's (keyint 250, scene cuts); ``keyint`` fixes the
    GOP like a camera does."""
    import av
    options = {"preset": "veryfast", "crf": "23"}
    if keyint:
        options["x264-params"] = f"keyint={keyint}:min-keyint={keyint}:scenecut=0:bframes={bframes or 0}"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=30, options=options)
        stream.width, stream.height, stream.pix_fmt = 1920, 1080, "yuv420p"
        i = 0
        for source in sources:
            with av.open(str(source)) as src:
                for frame in src.decode(video=0):
                    frame = frame.reformat(width=1920, height=1080, format="yuv420p")
                    frame.pts, frame.time_base = i, Fraction(1, 30)
                    frame.pict_type = av.video.frame.PictureType.NONE   # let x264 place its own key frames
                    i += 1
                    for packet in stream.encode(frame):
                        out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def load_before(rev: str):
    """mvk_tools/video.py as it was at ``rev``, imported as its own module."""
    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:mvk_tools/video.py"], check=True,
                            capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "video_before.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("video_before", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["video_before"] = module
    spec.loader.exec_module(module)
    opened = module._open

    def one_thread(p, *args, **kwargs):
        container, stream = opened(p, *args, **kwargs)
        stream.codec_context.thread_count = 1
        return container, stream
    module._open = one_thread
    return module


def measure(fn, repeat: int) -> tuple[float, float, list]:
    """Median CPU seconds, median wall seconds, and the last result."""
    cpu, wall, out = [], [], None
    for _ in range(repeat):
        c, w = time.process_time(), time.perf_counter()
        out = fn()
        cpu.append(time.process_time() - c)
        wall.append(time.perf_counter() - w)
    return statistics.median(cpu), statistics.median(wall), out


def clips(brackish: Path = BRACKISH) -> list[Path]:
    """The two brackish clips and the 1080p H.264 clips made from them (cached in the temp folder)."""
    sources = [brackish / "crab_test.mp4", brackish / "fish_test1.mp4"]
    cache = Path(tempfile.gettempdir()) / "mvk_bench_video"
    cache.mkdir(exist_ok=True)
    made = {"h264_x264_defaults.mp4": {}, "h264_gop2s_2b.mp4": {"keyint": 60, "bframes": 2}}
    videos = list(sources)
    for name, kw in made.items():
        if not (cache / name).exists():
            make_h264(cache / f".{name}", sources, **kw).rename(cache / name)
        videos.append(cache / name)
    return videos


def sparse(before_rev: str, repeat: int, brackish: Path = BRACKISH) -> None:
    import numpy as np
    before = load_before(before_rev)
    videos = clips(brackish)
    print(f"before = {before_rev}; one decoder thread; every 1 s; medians of {repeat}; CPU s = process time")
    print(f"{'video':24} {'max side':>8} {'samples':>7} {'before f/CPU-s':>14} {'now f/CPU-s':>11} "
          f"{'ratio':>6} {'wall before':>11} {'wall now':>8}  same indices/times")
    for video in videos:
        info = probe(video)
        for max_side in (224, 512):
            cb, wb, old = measure(lambda: list(before.iter_frames(video, every_seconds=1.0, max_side=max_side)),
                                  repeat)
            cn, wn, new = measure(lambda: list(iter_frames(video, every_seconds=1.0, max_side=max_side,
                                                           threads=1)), repeat)
            same = [(f.index, f.time) for f in old] == [(f.index, f.time) for f in new]
            diff = max(float(np.abs(a.image.astype(np.int16) - b.image).mean()) for a, b in zip(old, new))
            print(f"{video.name[:24]:24} {max_side:>8} {len(new):>7} {len(old) / cb:>14.1f} {len(new) / cn:>11.1f} "
                  f"{cb / cn:>5.1f}x {wb:>10.2f}s {wn:>7.2f}s  {same} (mean |image diff| <= {diff:.2f})"
                  + ("" if max_side != 512 else f"   [{info.codec} {info.fps:g} fps, {info.frame_count} frames]"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("video", nargs="?", type=Path, default=BRACKISH / "crab_test.mp4")
    parser.add_argument("--sparse", action="store_true", help="sparse sampling before/after per core")
    parser.add_argument("--before", default="59cad99", help="git revision of the 'before' decoder")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--brackish", type=Path, default=BRACKISH, help="folder of the brackish clips")
    args = parser.parse_args()
    if args.sparse:
        sparse(args.before, args.repeat, args.brackish)
    else:
        general(args.video)


if __name__ == "__main__":
    sys.exit(main())

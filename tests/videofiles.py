"""Small video files for tests, made with PyAV: each frame is one flat grey level that encodes its index,
so a test can tell which frame was decoded. Also audio-only, truncated and non-video files."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np


def level(index: int) -> int:
    """The grey level of frame ``index`` (robust to lossy coding: levels 8 apart, 30 frames at most)."""
    return 8 + 8 * index


def index_of(image: np.ndarray) -> int:
    """The frame index read back from a decoded image's grey level."""
    return int(round((float(image.mean()) - 8) / 8))


def write_video(path: Path, n_frames: int = 24, size: tuple[int, int] = (64, 48), fps: int = 12, *,
                pts_ms: list[int] | None = None, codec: str = "mpeg4", gop: int = 6,
                faststart: bool = False, bframes: int = 0) -> Path:
    """Write a video whose frame i is flat grey ``level(i)``. ``pts_ms`` gives every frame's time in ms
    (variable frame rate); otherwise frames are 1/fps apart. Odd sizes need a codec/pixel format that
    takes them (yuv444p with libx264). ``faststart`` puts the index first, so a truncated copy still opens.
    ``bframes``: at most this many B-frames in a row (frames decoded out of presentation order)."""
    import av

    w, h = size
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), mode="w", options=options) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = w, h
        stream.pix_fmt = "yuv420p" if (w % 2 == 0 and h % 2 == 0) else "yuv444p"
        stream.codec_context.gop_size = gop
        if pts_ms is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        if codec == "libx264":
            stream.options = {"preset": "ultrafast", "crf": "10"}
            if bframes:
                stream.options = {**stream.options, "x264-params": f"bframes={bframes}:b-pyramid=normal:"
                                  f"keyint={gop}:min-keyint={gop}:scenecut=0"}
        else:
            stream.options = {"qscale": "2"}
            stream.codec_context.max_b_frames = bframes
        for i in range(n_frames):
            frame = av.VideoFrame.from_ndarray(np.full((h, w, 3), level(i), np.uint8), format="rgb24")
            if pts_ms is not None:
                frame.pts, frame.time_base = pts_ms[i], Fraction(1, 1000)
            else:
                frame.pts, frame.time_base = i, Fraction(1, fps)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_audio_only(path: Path, seconds: float = 1.0) -> Path:
    """An .mp4 (AAC) with one audio stream and no video."""
    import av

    rate = 16000
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("aac", rate=rate)
        stream.layout = "mono"
        samples = (np.sin(np.arange(int(rate * seconds)) / 10) * 0.3).astype(np.float32)
        for start in range(0, samples.size, 1024):
            chunk = samples[start:start + 1024][None]
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
            frame.sample_rate, frame.pts = rate, start
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_truncated(source: Path, path: Path, keep: float = 0.5) -> Path:
    """The first ``keep`` fraction of ``source``'s bytes."""
    data = Path(source).read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path

"""Video a browser can play: the source file when its codec and container play in every browser, otherwise a
segment transcoded to H.264 in MP4 on demand (PyAV), kept in a cache folder bounded in bytes.

MVK's and Brackish's files are MPEG-4 Part 2, which no browser decodes: handed to a ``<video>`` element they
show a black player. The app and the HTTP API both call ``playable_segment`` and serve the file it returns.
A transcoded segment keeps the source's times (its first frame at ``start``, not at 0), so a browser's
player shows source times and a player seeks to the source time itself (Chromium starts such a file at its
first frame and reports ``currentTime`` in the file's times).
"""
from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from search.errors import MvkError

BROWSER_CODECS = frozenset({"h264", "vp8", "vp9", "av1"})        # what Chrome, Firefox and Safari decode
BROWSER_FORMATS = ("mp4", "mov", "webm", "matroska")            # containers they open (by demuxer name)
DEFAULT_MAX_BYTES = 512 * 2**20      # the whole cache folder
DEFAULT_MAX_SIDE = 960               # transcoded segments are scaled down to this longer side (never up)
ENCODER = "libx264"
VERSION = 2                          # part of the cache key: bump when the encoding settings change
_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


class PlaybackError(MvkError):
    """A video cannot be made playable in a browser; the message names the file and says why."""


@dataclass(frozen=True)
class Playable:
    """A file a browser plays: the source itself, or an H.264 MP4 of the segment ``start``–``end`` (seconds
    of the source) that keeps the source's times; ``zero`` is the source time of the file's time 0 (0 for
    both)."""
    path: Path
    start: float
    end: float
    transcoded: bool
    codec: str               # the source's codec
    mime: str = "video/mp4"
    zero: float = 0.0

    def offset(self, time: float) -> float:
        """Where source time ``time`` lies in this file."""
        return max(0.0, float(time) - self.zero)


def _open(path: Path):
    from mvk_tools.video import VideoError, _open as open_video

    try:
        return open_video(path)
    except VideoError as exc:
        raise PlaybackError(str(exc)) from None


def source_codec(path: str | Path) -> tuple[str, str]:
    """(codec name, container format name) of a video's first video stream."""
    container, stream = _open(Path(path))
    try:
        return stream.codec_context.name, container.format.name
    finally:
        container.close()


def browser_plays(codec: str, container_format: str) -> bool:
    """Whether every major browser plays this codec in this container as it is."""
    formats = set(container_format.split(","))
    return codec in BROWSER_CODECS and any(f in formats for f in BROWSER_FORMATS)


def mime_of(path: Path) -> str:
    return "video/webm" if path.suffix.lower() in (".webm", ".mkv") else "video/mp4"


def playable_segment(path: str | Path, start: float, end: float, cache_dir: str | Path,
                     max_bytes: int = DEFAULT_MAX_BYTES, *, max_side: int = DEFAULT_MAX_SIDE) -> Playable:
    """A browser-playable file for seconds ``start``–``end`` of the video at ``path``.

    When the source plays in browsers it is returned as it is (``start`` 0, the whole video). Otherwise the
    segment is transcoded to H.264 (scaled to ``max_side``, no audio) into ``cache_dir``, named by the
    source's path, size and mtime and the segment, so a second request is a file lookup; the folder's
    transcoded files are kept under ``max_bytes`` in total by removing the least recently used (the one just
    made always stays). PlaybackError names the file when it cannot be read or no H.264 encoder exists."""
    path = Path(path).resolve()
    if not (start >= 0 and end > start):
        raise ValueError(f"a segment needs 0 <= start < end, got {start}..{end}")
    codec, container_format = source_codec(path)
    if browser_plays(codec, container_format):
        return Playable(path, 0.0, float("inf"), False, codec, mime_of(path))
    import av

    if ENCODER not in av.codecs_available:
        raise PlaybackError(f"{path}: its codec {codec} does not play in browsers, and this PyAV has no "
                            f"{ENCODER} encoder to convert it (install PyAV's binary wheel: pip install av)")
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    stat = path.stat()
    key = hashlib.sha256(f"{VERSION}|{path}|{stat.st_size}|{stat.st_mtime_ns}|{start:.3f}|{end:.3f}|{max_side}"
                         .encode()).hexdigest()[:32]
    target = cache / f"{key}.mp4"
    with _lock(key):
        if target.is_file() and target.stat().st_size > 0:
            os.utime(target)                      # most recently used
        else:
            first, last = _transcode(path, start, end, target, max_side)
            target.with_suffix(".span").write_text(f"{first} {last}")
            _evict(cache, max_bytes, keep=target)
    first, last = _read_span(target, start, end)
    return Playable(target, first, last, True, codec)


def _lock(key: str) -> threading.Lock:
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(key, threading.Lock())


def _read_span(target: Path, start: float, end: float) -> tuple[float, float]:
    """The source times of a cached segment's first and last frames (the request's bounds if unrecorded)."""
    try:
        first, last = (float(v) for v in target.with_suffix(".span").read_text().split())
        return first, last
    except (OSError, ValueError):
        return start, end


def _even_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    scale = min(1.0, max_side / max(width, height))
    return max(2, int(width * scale) // 2 * 2), max(2, int(height * scale) // 2 * 2)


def _transcode(path: Path, start: float, end: float, target: Path, max_side: int) -> tuple[float, float]:
    """Write frames of ``path`` from ``start`` to ``end`` as H.264 MP4 at ``target`` (atomically); returns the
    source times of the first and last frames written."""
    import av

    from mvk_tools.video import _reason, _start

    container, stream = _open(path)
    tmp = target.with_name(f".{target.stem}.{os.getpid()}.{threading.get_ident()}.tmp.mp4")
    first = last = None
    try:
        t0 = _start(stream)
        width, height = _even_size(stream.codec_context.width, stream.codec_context.height, max_side)
        rate = stream.average_rate or stream.guessed_rate or Fraction(25)
        with av.open(str(tmp), mode="w", format="mp4", options={"movflags": "+faststart"}) as out:
            video = out.add_stream(ENCODER, rate=rate)
            video.width, video.height, video.pix_fmt = width, height, "yuv420p"
            video.codec_context.time_base = Fraction(1, 1000)
            video.options = {"preset": "veryfast", "crf": "23", "profile": "main"}
            if start > 0:
                container.seek(t0 + int(start / stream.time_base), stream=stream, backward=True, any_frame=False)
            previous = -1
            for frame in container.decode(stream):
                if frame.pts is None:
                    continue
                time = float((frame.pts - t0) * stream.time_base)
                if time < start - 1e-3:
                    continue
                if time > end:
                    break
                first = time if first is None else first
                pts = int(round(time * 1000))          # the source's time: the player shows it
                if pts <= previous:
                    continue
                previous, last = pts, time
                picture = frame.reformat(width=width, height=height, format="yuv420p")
                picture.pts, picture.time_base = pts, Fraction(1, 1000)
                for packet in video.encode(picture):
                    out.mux(packet)
            for packet in video.encode():
                out.mux(packet)
        if first is None:
            raise PlaybackError(f"{path}: no frame between {start:.1f} s and {end:.1f} s to play")
        os.replace(tmp, target)
    except (av.FFmpegError, OSError) as exc:
        raise PlaybackError(f"{path}: cannot convert it for the browser ({_reason(exc)})") from None
    finally:
        container.close()
        tmp.unlink(missing_ok=True)
    return first, last


def _evict(cache: Path, max_bytes: int, *, keep: Path) -> None:
    """Remove the least recently used segments until the folder's segments total at most ``max_bytes``."""
    files = []
    for item in cache.glob("*.mp4"):
        try:
            st = item.stat()
        except OSError:
            continue
        files.append((st.st_mtime, st.st_size, item))
    total = sum(size for _, size, _ in files)
    for _, size, item in sorted(files, key=lambda f: f[0]):
        if total <= max_bytes:
            break
        if item == keep:
            continue
        item.unlink(missing_ok=True)
        item.with_suffix(".span").unlink(missing_ok=True)
        total -= size

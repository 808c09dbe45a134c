"""PyAV decoding: stream sampled frames with exact indices and timestamps; fetch one frame by time.

Memory stays bounded: frames are yielded one at a time, never a whole video.

Conventions, the same in every function here:
- a frame's ``index`` counts the frames the decoder outputs (presentation order), from 0;
- a frame's ``time`` is its presentation timestamp in seconds, measured from the video stream's start
  time, so the first frame is at (or very near) 0 and variable frame rate is handled exactly;
- a frame whose timestamp lies within ``TIME_TOLERANCE`` (1 ms) before a sampling instant counts as at
  it: containers round timestamps (MPEG-4 files store 1/15 s as 0.066655 s, for example).

Sparse sampling (one frame per second from 30 fps) does not decode every frame. The packets are read
once without decoding (cheap): their presentation timestamps give every frame's exact index and time,
so the sampled frames are chosen before decoding. Then only the packets a sampled frame depends on go
to the decoder: from the last intra frame before it (a container key frame, or an MPEG-4 Part 2 I-VOP
the container does not mark), with non-reference frames that are not sampled skipped by the decoder
(``skip_frame``). Files whose packets do not allow this (missing or repeated timestamps, fewer packets
than the header says, discarded packets) are decoded frame by frame as before. When the output is at
most half the source size, codecs that can (MPEG-1/2/4 Part 2, MJPEG) decode at a reduced resolution
(FFmpeg's ``lowres``, at most 1/4 per side), the same way in every mode so images do not depend on it; a
caller that needs less detail than the output size (``detail``: the indexer's models see 224-pixel inputs)
lets it go one level lower. H.264 has no reduced-resolution decoding in FFmpeg.
"""
from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from search.cpus import usable_cores
from search.errors import MvkError
from search.inputs import regular_file

TIME_TOLERANCE = 1e-3   # seconds
LOWRES_CODECS = frozenset({"mpeg4", "mpeg1video", "mpeg2video", "mjpeg"})   # FFmpeg decoders with lowres
MAX_LOWRES = 2          # 1/4 per side at most: mean error 0.3 grey levels at 224 px on the brackish clips
VOP_START = b"\x00\x00\x01\xb6"


class VideoError(MvkError):
    """A video file cannot be opened or decoded; the message names the file."""


@dataclass(frozen=True)
class VideoInfo:
    path: Path
    duration: float      # seconds
    fps: float           # average frame rate
    frame_count: int     # exact when the container says so, else estimated from duration*fps
    width: int
    height: int
    codec: str


@dataclass(frozen=True)
class Frame:
    index: int           # 0-based index of the frame in decode order of the source video
    time: float          # presentation time in seconds
    image: np.ndarray    # (H, W, 3) uint8 RGB


def _av():
    import av
    return av


# Leading bytes of files that are often misnamed as videos -> what they are
_NOT_VIDEO_SIGNATURES = (
    (b"\xff\xd8\xff", "a JPEG image"), (b"\x89PNG\r\n\x1a\n", "a PNG image"), (b"GIF8", "a GIF image"),
    (b"BM", "a BMP image"), (b"II*\x00", "a TIFF image"), (b"MM\x00*", "a TIFF image"), (b"%PDF", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive"), (b"\x1f\x8b", "a gzip archive"), (b"7z\xbc\xaf", "a 7-Zip archive"),
)


def sniff_not_video(path: str | Path) -> str | None:
    """What a file is when its first bytes say it is no video (``"a JPEG image"``), else None."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
    except OSError:
        return None
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "a WebP image"
    for signature, what in _NOT_VIDEO_SIGNATURES:
        if head.startswith(signature):
            return what
    return None


def decoder_threads() -> int:
    """Decoder threads: the cores this process may run on (its CPU affinity, as a Ray worker or a
    container gets), not the machine's count."""
    return usable_cores()


def gpu_decoding(device_type: str = "cuda") -> bool:
    """True when this FFmpeg build decodes on ``device_type`` (``cuda``: NVDEC) and such a device is present.
    Decoding there is tried per file and falls back to the CPU decoder when the codec is not supported."""
    try:
        from av.codec.hwaccel import hwdevices_available
    except ImportError:
        return False
    if device_type not in hwdevices_available():
        return False
    if device_type == "cuda":
        try:
            import torch
        except ImportError:
            return False
        return bool(torch.cuda.is_available())
    return True


def _container(av, path: Path, hwaccel: str | None):
    """``av.open`` of ``path``, decoding on ``hwaccel`` (a device type) when given and it opens there."""
    if hwaccel:
        try:
            from av.codec.hwaccel import HWAccel
            return av.open(str(path), mode="r", hwaccel=HWAccel(device_type=hwaccel, allow_software_fallback=True))
        except (ImportError, av.FFmpegError, ValueError, TypeError):
            pass                       # no such device after all: the CPU decoder below
    return av.open(str(path), mode="r")


def _open(path: str | Path, threads: int | None = None, hwaccel: str | None = None):
    """Open ``path`` and return (container, video stream) with ``threads`` decoder threads (default: the
    cores this process has), decoding on the ``hwaccel`` device type when given (NVDEC: ``cuda``) and
    available; VideoError naming it otherwise."""
    av = _av()
    path = Path(path)
    if not path.exists():
        raise VideoError(f"{path}: no such file")
    if path.is_dir():
        raise VideoError(f"{path}: is a folder, not a video file")
    regular_file(path, error=VideoError)
    if os.path.getsize(path) == 0:
        raise VideoError(f"{path}: empty file (0 bytes)")
    what = sniff_not_video(path)
    if what is not None:
        raise VideoError(f"{path}: not a video file (it is {what})")
    try:
        container = _container(av, path, hwaccel)
    except (av.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise VideoError(f"{path}: not a readable video ({_reason(exc)})") from None
    if not container.streams.video:
        kinds = ", ".join(sorted({s.type for s in container.streams})) or "no streams"
        container.close()
        raise VideoError(f"{path}: not a readable video: no video stream (found {kinds})")
    stream = container.streams.video[0]
    if not stream.codec_context.width or not stream.codec_context.height:
        container.close()
        raise VideoError(f"{path}: video stream has no frame size")
    stream.thread_type = "AUTO"
    stream.codec_context.thread_count = int(threads) if threads else decoder_threads()
    return container, stream


def _lowres(stream, out: tuple[int, int], detail: int | None = None) -> int:
    """The FFmpeg ``lowres`` level (decode at 1/2**level per side) whose frames are still at least ``out``,
    or, given ``detail``, whose short side is still at least ``detail`` (and at least half of ``out``'s)."""
    cc = stream.codec_context
    if cc.name not in LOWRES_CODECS:
        return 0
    if detail is not None:
        short = max(int(detail), -(-min(out) // 2))
        w, h = (short * out[0] / min(out), short * out[1] / min(out))
        out = (min(out[0], math.ceil(w)), min(out[1], math.ceil(h)))
    level = 0
    while level < MAX_LOWRES and -(-cc.width >> (level + 1)) >= out[0] and -(-cc.height >> (level + 1)) >= out[1]:
        level += 1
    return level


def _set_output(stream, size: tuple[int, int] | None, max_side: int | None, hwaccel: str | None = None,
                detail: int | None = None) -> None:
    """Let the decoder work at a reduced resolution when every frame will be shrunk at least 2x anyway, or
    down to ``detail`` pixels on the short side (not on a hardware decoder: it decodes at full size)."""
    cc = stream.codec_context
    if hwaccel:
        return
    level = _lowres(stream, output_size(cc.width, cc.height, size, max_side), detail)
    if level:
        cc.options = {**dict(cc.options or {}), "lowres": str(level)}


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return text.split(": '")[0] if text else type(exc).__name__


def _start(stream) -> int:
    return stream.start_time if stream.start_time is not None else 0


def _rate(stream) -> float:
    """Average frame rate; the nominal rate when it agrees within 2 % (the average counts the last frame's span)."""
    avg = float(stream.average_rate) if stream.average_rate else 0.0
    guessed = float(stream.guessed_rate) if stream.guessed_rate else 0.0
    if avg and guessed and abs(avg - guessed) <= 0.02 * guessed:
        return guessed
    return avg or guessed


def _duration(container, stream) -> float:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000
    return 0.0


def _info(path: Path, container, stream) -> VideoInfo:
    fps = _rate(stream)
    duration = _duration(container, stream)
    frame_count = int(stream.frames) if stream.frames else int(round(duration * fps))
    return VideoInfo(path=path, duration=duration, fps=fps, frame_count=frame_count,
                     width=int(stream.codec_context.width), height=int(stream.codec_context.height),
                     codec=stream.codec_context.name)


def probe(path: str | Path, *, check_end: bool = True) -> VideoInfo:
    """Read a video's stream header. Raises VideoError naming the file if it is not a decodable video.

    ``check_end`` also reads (without decoding) the packets of the last second, so a file cut short
    after an intact header is reported here, not only when it is decoded; it costs one seek."""
    path = Path(path).resolve()
    container, stream = _open(path)
    try:
        info = _info(path, container, stream)
        if info.frame_count <= 0 or info.duration <= 0:
            raise VideoError(f"{path}: video stream has no frames")
        if check_end:
            _check_end(path, container, stream, info)
    finally:
        container.close()
    return info


def _check_end(path: Path, container, stream, info: VideoInfo) -> None:
    """VideoError when the packets stop well before the duration the header announces (a truncated file)."""
    av = _av()
    start = _start(stream)
    slack = max(0.1, 3 / info.fps if info.fps else 0.5)   # the last frame may last longer than 1/fps
    last = None
    try:
        container.seek(start + int(max(0.0, info.duration - 1.0) / stream.time_base), stream=stream,
                       backward=True, any_frame=False)
        for packet in container.demux(stream):
            if packet.pts is not None and packet.size:
                last = max(last or packet.pts, packet.pts)
    except (av.FFmpegError, OSError):
        pass
    end = None if last is None else float((last - start) * stream.time_base)
    expected = info.duration - (1 / info.fps if info.fps else 0.0)
    if end is None or end < expected - slack:
        seen = "no packets" if end is None else f"packets stop at {end:.2f} s"
        raise VideoError(f"{path}: truncated or damaged: {seen}, the header says {info.duration:.2f} s")


def output_size(width: int, height: int, size: tuple[int, int] | None = None,
                max_side: int | None = None) -> tuple[int, int]:
    """The (W, H) a frame of ``width`` x ``height`` is decoded to: ``size`` as given, or scaled so its
    longer side is ``max_side`` (never enlarged, aspect kept), or unchanged."""
    if size is not None and max_side is not None:
        raise ValueError("give size or max_side, not both")
    if size is not None:
        w, h = int(size[0]), int(size[1])
        if w < 1 or h < 1:
            raise ValueError(f"size must be positive, got {size}")
        return w, h
    if max_side is not None:
        if max_side < 1:
            raise ValueError(f"max_side must be positive, got {max_side}")
        scale = min(1.0, max_side / max(width, height))
        return max(1, round(width * scale)), max(1, round(height * scale))
    return width, height


def _to_rgb(frame, size: tuple[int, int] | None, max_side: int | None,
            source: tuple[int, int] | None = None) -> np.ndarray:
    """RGB at the output size of a ``source`` (W, H) frame (the frame itself may be decoded smaller)."""
    w, h = output_size(*(source or (frame.width, frame.height)), size, max_side)
    if (w, h) == (frame.width, frame.height):
        return frame.to_ndarray(format="rgb24")
    return frame.to_ndarray(format="rgb24", width=w, height=h, interpolation="AREA")


def _frame_time(frame, stream, start: int, previous: float | None, fps: float) -> float:
    if frame.pts is not None:
        return float((frame.pts - start) * stream.time_base)
    return 0.0 if previous is None else previous + (1.0 / fps if fps else 0.0)


def _decoded(path: Path, container, stream) -> Iterator[tuple[int, float, object]]:
    """(index, time, av frame) for every frame; VideoError naming ``path`` when decoding breaks off."""
    av = _av()
    start, fps = _start(stream), _rate(stream)
    index, time = -1, None
    try:
        for frame in container.decode(stream):
            index += 1
            time = _frame_time(frame, stream, start, time, fps)
            yield index, time, frame
    except (av.FFmpegError, OSError) as exc:
        raise VideoError(f"{path}: decoding stopped after {index + 1} frames ({_reason(exc)})") from None
    expected = int(stream.frames or 0)
    if index + 1 == 0:
        raise VideoError(f"{path}: no frame could be decoded")
    if expected and index + 1 < expected:
        raise VideoError(f"{path}: truncated or damaged: decoded {index + 1} of {expected} frames")


def iter_frames(path: str | Path, *, every_seconds: float | None = None, every_nth: int | None = None,
                indices: Sequence[int] | None = None, size: tuple[int, int] | None = None,
                max_side: int | None = None, threads: int | None = None,
                hwaccel: str | None = None, detail: int | None = None) -> Iterator[Frame]:
    """Yield sampled frames in order: one per ``every_seconds`` (first frame at or after each multiple),
    every ``every_nth`` frame, or exactly the frame ``indices`` given. At most one sampling mode;
    none means every frame. ``size`` (W, H) or ``max_side`` resizes on decode. ``threads``: decoder
    threads (default: the cores this process has). ``hwaccel``: decode on that device type (``cuda``:
    NVDEC) where FFmpeg can, else on the CPU (see ``gpu_decoding``). ``detail``: the short side (pixels)
    the caller's use of a frame needs, when below the output size: a codec with reduced-resolution
    decoding may then decode down to it (at most 2x below the output) and scale up (default: decode at
    least at the output size). Raises VideoError naming the file on unreadable input; a truncated file
    yields what it can, then raises VideoError.

    Indices and times are exact in every mode. With a sampling mode only the packets the sampled frames
    depend on are decoded (see the module docstring); with ``indices`` reading stops after the last
    wanted index; wanted indices past the end of the video raise VideoError after the others are yielded."""
    modes = sum(x is not None for x in (every_seconds, every_nth, indices))
    if modes > 1:
        raise ValueError("give at most one of every_seconds, every_nth, indices")
    if every_seconds is not None and not every_seconds > 0:
        raise ValueError(f"every_seconds must be > 0, got {every_seconds}")
    if every_nth is not None and every_nth < 1:
        raise ValueError(f"every_nth must be >= 1, got {every_nth}")
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    wanted: list[int] = []
    if indices is not None:
        wanted = sorted(set(int(i) for i in indices))
        if wanted and wanted[0] < 0:
            raise ValueError(f"frame indices must be >= 0, got {wanted[0]}")
        if not wanted:
            return
    output_size(1, 1, size, max_side)  # validate before opening
    path = Path(path).resolve()
    sampler = _Sampler(every_seconds, every_nth, wanted)
    if modes:
        plan = _plan(path, sampler, threads)
        if plan is not None:
            yield from _sparse(path, plan, _Sampler(every_seconds, every_nth, wanted), size, max_side, threads,
                               hwaccel, detail)
            return
    container, stream = _open(path, threads, hwaccel)
    try:
        _set_output(stream, size, max_side, hwaccel, detail)
        yield from _sample(path, container, stream, sampler, size, max_side)
    finally:
        container.close()


class _Sampler:
    """Which frames a sampling mode takes, given each frame's index and time in presentation order."""

    def __init__(self, every_seconds: float | None, every_nth: int | None, wanted: list[int]):
        self.every_seconds, self.every_nth, self.wanted = every_seconds, every_nth, wanted
        self.next_time = 0.0
        self.position = 0          # into ``wanted``

    def take(self, index: int, time: float) -> bool:
        if self.every_seconds is not None:
            if time < self.next_time - TIME_TOLERANCE:
                return False
            self.next_time = (math.floor((time + TIME_TOLERANCE) / self.every_seconds) + 1) * self.every_seconds
            return True
        if self.every_nth is not None:
            return index % self.every_nth == 0
        if self.wanted:
            if index != self.wanted[self.position]:
                return False
            self.position += 1
        return True

    @property
    def done(self) -> bool:
        """True once every wanted index was taken (never in the other modes)."""
        return bool(self.wanted) and self.position == len(self.wanted)

    def missing(self, path: Path, n_frames: int) -> VideoError:
        missing = self.wanted[self.position:]
        shown = ", ".join(map(str, missing[:5])) + (" ..." if len(missing) > 5 else "")
        return VideoError(f"{path}: frame indices {shown} are past the end (the video has {n_frames} frames)")


def _sample(path: Path, container, stream, sampler: _Sampler, size: tuple[int, int] | None,
            max_side: int | None) -> Iterator[Frame]:
    """Decode every frame, keep the sampled ones."""
    source = (stream.codec_context.width, stream.codec_context.height)
    last = -1
    for index, time, frame in _decoded(path, container, stream):
        last = index
        if not sampler.take(index, time):
            continue
        yield Frame(index=index, time=time, image=_to_rgb(frame, size, max_side, source))
        if sampler.done:
            return
    if sampler.wanted and not sampler.done:
        raise sampler.missing(path, last + 1)


@dataclass(frozen=True)
class _Plan:
    """What sparse decoding sends to the decoder: per packet in decode order, whether it is needed, and
    the sampled frames by presentation timestamp -> (index, time)."""
    needed: np.ndarray              # bool, one per packet with data, decode order
    sampled: dict[int, tuple[int, float]]
    n_frames: int
    missing: VideoError | None      # wanted indices past the end


def _is_intra(packet, codec: str) -> bool:
    """Decoding may start at this packet: a container key frame, or an MPEG-4 Part 2 I-VOP (camera files
    often mark only every third one as a key frame)."""
    if packet.is_keyframe:
        return True
    if codec != "mpeg4":
        return False
    head = bytes(memoryview(packet)[:512])
    at = head.find(VOP_START)
    return 0 <= at and at + 4 < len(head) and head[at + 4] >> 6 == 0


def _plan(path: Path, sampler: _Sampler, threads: int | None) -> _Plan | None:
    """Read the packets without decoding and choose what to decode; None when the packets do not give
    exact indices (then every frame is decoded, as the decoder's own count is the reference)."""
    av = _av()
    container, stream = _open(path, threads)
    pts: list[int] = []
    intra: list[bool] = []
    try:
        codec = stream.codec_context.name
        has_header = bool(stream.codec_context.extradata)
        for packet in container.demux(stream):
            if not packet.size:
                continue
            if packet.pts is None or packet.is_discard or packet.is_corrupt:
                return None
            pts.append(int(packet.pts))
            intra.append(_is_intra(packet, codec))
        expected = int(stream.frames or 0)
        start, time_base = _start(stream), stream.time_base
    except (av.FFmpegError, OSError):
        return None
    finally:
        container.close()
    n = len(pts)
    if n == 0 or (expected and n != expected) or time_base is None:
        return None
    decode_pts = np.asarray(pts, dtype=np.int64)
    order = np.argsort(decode_pts, kind="stable")        # presentation rank -> decode position
    shown = decode_pts[order]
    if np.any(np.diff(shown) == 0):
        return None
    times = [float((int(t) - start) * time_base) for t in shown]   # as the full decode computes them
    sampled: dict[int, tuple[int, float]] = {}
    chosen: list[int] = []
    for index in range(n):
        if sampler.take(index, float(times[index])):
            sampled[int(shown[index])] = (index, float(times[index]))
            chosen.append(int(order[index]))
            if sampler.done:
                break
    missing = sampler.missing(path, n) if sampler.wanted and not sampler.done else None
    needed = np.zeros(n, bool)
    if not has_header:
        needed[0] = True   # the stream's headers may come with its first packet only
    last_intra = np.maximum.accumulate(np.where(np.asarray(intra), np.arange(n), 0))
    for j in chosen:
        k = int(last_intra[j])
        while k > 0 and decode_pts[k] > decode_pts[j]:   # a leading frame: it refers to the previous group
            k = int(last_intra[k - 1])
        needed[k:j + 1] = True
    return _Plan(needed=needed, sampled=sampled, n_frames=n, missing=missing)


def _sparse(path: Path, plan: _Plan, sampler: _Sampler, size: tuple[int, int] | None, max_side: int | None,
            threads: int | None, hwaccel: str | None = None, detail: int | None = None) -> Iterator[Frame]:
    """Decode the planned packets only; non-reference frames that are not sampled are skipped."""
    av = _av()
    container, stream = _open(path, threads, hwaccel)
    try:
        _set_output(stream, size, max_side, hwaccel, detail)
        cc = stream.codec_context
        source = (cc.width, cc.height)
        last = int(np.flatnonzero(plan.needed)[-1]) if plan.needed.any() else -1
        found = 0
        position = -1
        try:
            for packet in container.demux(stream):
                if not packet.size:
                    continue
                position += 1
                if position > last:
                    break
                if not plan.needed[position]:
                    continue
                cc.skip_frame = "DEFAULT" if packet.pts in plan.sampled else "NONREF"
                for frame in cc.decode(packet):
                    if frame.pts in plan.sampled:
                        index, time = plan.sampled[frame.pts]
                        found += 1
                        yield Frame(index=index, time=time, image=_to_rgb(frame, size, max_side, source))
            cc.skip_frame = "DEFAULT"
            for frame in cc.decode(None):
                if frame.pts in plan.sampled:
                    index, time = plan.sampled[frame.pts]
                    found += 1
                    yield Frame(index=index, time=time, image=_to_rgb(frame, size, max_side, source))
        except (av.FFmpegError, OSError) as exc:
            raise VideoError(f"{path}: decoding stopped after {found} sampled frames ({_reason(exc)})") from None
        if found < len(plan.sampled):
            raise VideoError(f"{path}: {len(plan.sampled) - found} of {len(plan.sampled)} sampled frames could "
                             f"not be decoded (damaged file)")
        if plan.missing is not None:
            raise plan.missing
    finally:
        container.close()


def _index_of(path: Path, stream_pts: int) -> int:
    """Index of the frame with timestamp ``stream_pts``: the number of packets presented before it, read
    from packet timestamps only (no decoding). Reading stops once decode timestamps pass ``stream_pts``."""
    container, stream = _open(path)
    count = 0
    try:
        for packet in container.demux(stream):
            if packet.dts is not None and packet.dts > stream_pts:
                break
            if packet.pts is not None and packet.pts < stream_pts:
                count += 1
    finally:
        container.close()
    return count


def read_frame_at(path: str | Path, time: float, *, size: tuple[int, int] | None = None,
                  max_side: int | None = None) -> Frame:
    """The frame shown at ``time`` seconds, found by seeking to the preceding key frame (fast on long videos).

    That is the last frame whose timestamp is at or before ``time`` (within TIME_TOLERANCE). Its index is
    counted from packet timestamps (no decoding): round(time x rate) is wrong on real files that drop or
    repeat a frame, and on variable frame rate.
    Raises VideoError naming the file when ``time`` lies outside the video or decoding fails."""
    if time < 0 or not math.isfinite(time):
        raise ValueError(f"time must be a finite number >= 0, got {time}")
    output_size(1, 1, size, max_side)
    path = Path(path).resolve()
    av = _av()
    container, stream = _open(path)
    try:
        duration = _duration(container, stream)
        if duration and time > duration + TIME_TOLERANCE:
            raise VideoError(f"{path}: time {time:.3f} s is past the end of the video ({duration:.3f} s)")
        start = _start(stream)
        _set_output(stream, size, max_side)
        source = (stream.codec_context.width, stream.codec_context.height)
        target = start + int(math.floor((time + TIME_TOLERANCE) / stream.time_base))
        found = None
        for offset in (target, start):  # a seek can land after the target on odd files: then decode from the start
            try:
                container.seek(offset, stream=stream, backward=True, any_frame=False)
                found = None
                for frame in container.decode(stream):
                    if frame.pts is None:
                        continue
                    if frame.pts > target:
                        break
                    found = frame
            except (av.FFmpegError, OSError) as exc:
                if found is None:
                    raise VideoError(f"{path}: cannot decode the frame at {time:.3f} s ({_reason(exc)})") from None
            if found is not None:
                break
        if found is None:
            raise VideoError(f"{path}: no frame at {time:.3f} s")
        frame_time = float((found.pts - start) * stream.time_base)
        index = _index_of(path, found.pts)
        return Frame(index=index, time=frame_time, image=_to_rgb(found, size, max_side, source))
    finally:
        container.close()


_LUMA_FIRST = frozenset({"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "yuv411p",
                         "yuv440p", "nv12", "nv21", "gray"})


def _luma(frame) -> np.ndarray:
    """The frame's brightness (H, W) uint8: its 8-bit luma plane copied as is, else a conversion to grey."""
    if frame.format.name in _LUMA_FIRST:
        plane = frame.planes[0]
        rows = np.frombuffer(plane, np.uint8).reshape(frame.height, plane.line_size)
        return np.array(rows[:, :frame.width])
    return frame.to_ndarray(format="gray")


def iter_luma(path: str | Path) -> Iterator[tuple[int, float, np.ndarray]]:
    """(index, time, luma (H, W) uint8) of every frame, without colour conversion or resizing (cheap: what
    locating still images in a video by content needs). Raises VideoError naming the file."""
    path = Path(path).resolve()
    container, stream = _open(path)
    try:
        for index, time, frame in _decoded(path, container, stream):
            yield index, time, _luma(frame)
    finally:
        container.close()

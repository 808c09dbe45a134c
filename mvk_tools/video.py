"""PyAV decoding: stream sampled frames with exact indices and timestamps; fetch one frame by time.

Memory stays bounded: frames are yielded one at a time, never a whole video.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from search.errors import MvkError


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


def probe(path: str | Path) -> VideoInfo:
    """Read a video's stream header. Raises VideoError naming the file if it is not a decodable video."""
    raise NotImplementedError


def iter_frames(path: str | Path, *, every_seconds: float | None = None, every_nth: int | None = None,
                indices: Sequence[int] | None = None, size: tuple[int, int] | None = None,
                max_side: int | None = None) -> Iterator[Frame]:
    """Yield sampled frames in order: one per ``every_seconds`` (first frame at or after each multiple),
    every ``every_nth`` frame, or exactly the frame ``indices`` given. At most one sampling mode;
    none means every frame. ``size`` (W, H) or ``max_side`` resizes on decode. Raises VideoError
    naming the file on unreadable input; a truncated file yields what it can, then raises VideoError."""
    raise NotImplementedError


def read_frame_at(path: str | Path, time: float, *, size: tuple[int, int] | None = None,
                  max_side: int | None = None) -> Frame:
    """The frame shown at ``time`` seconds, found by seeking to the preceding key frame (fast on long videos)."""
    raise NotImplementedError

"""Video -> object tracks: attention rows -> hierarchical clustering -> masks, boxes, areas.

The streaming entry point ``segment_stream`` is what the indexing pipeline uses: frames go in one at a
time, are segmented in chunks of bounded memory, tracks are linked across chunks, and each frame comes
back with its objects.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from indexer.backbone import QKExtractor
from mvk_tools.video import Frame


@dataclass(frozen=True)
class SegmentParams:
    tau: float = 1.0              # merge threshold on symmetric KL (1.6 merges the foreground into one)
    key_stride: int = 10          # r: every r-th sampled frame is a key frame
    window: int = 8               # frames per first-pass clustering window
    chunk: int = 64               # frames per chunk of bounded memory; tracks linked across chunks
    short_side: int = 224         # frames resized so the short side is about this, sides multiples of the patch
    min_area: float = 0.005       # objects smaller than this fraction of the frame are dropped
    level: int | None = None      # hierarchy level to output (None: the last, i.e. tau's result)


@dataclass(frozen=True)
class ObjectMask:
    track_id: int                 # stable for one object across the whole video
    level: int
    mask: np.ndarray              # (H, W) bool at the source frame's resolution
    bbox: tuple[int, int, int, int]   # x0, y0, x1, y1 (exclusive) in source pixels
    area: float                   # fraction of the frame
    is_background: bool


@dataclass(frozen=True)
class SegmentedFrame:
    frame: Frame
    objects: tuple[ObjectMask, ...]


def segment_stream(frames: Iterable[Frame], extractor: QKExtractor,
                   params: SegmentParams = SegmentParams()) -> Iterator[SegmentedFrame]:
    """Segment a stream of sampled frames of one video; yields every input frame, in order, with its objects."""
    raise NotImplementedError

"""Locate still images in their video by content: which decoded frame each image shows.

MVK's selected frames are JPEGs named ``<video>_<n>.jpg``; ``n`` counts the selected frames of a video
(about one per second), it is not a frame index, and nothing in the file says which frame it is. So each
image is compared with every frame of its video: the video is decoded once at low resolution, every
frame and every image becomes a small luma thumbnail (96 pixels on the longest side), normalised (zero mean, unit RMS) so brightness
and contrast changes from re-encoding do not count, and each image takes the frame at the smallest RMS
difference (one matrix product for all pairs). Where the numbers do happen to be frame indices, the
located frames say so (``numbering``).

Distance: the RMS difference of the two normalised thumbnails, 0 for the same picture, about 1.4 for
unrelated ones (``sqrt(2 (1 - correlation))``). An image whose best distance exceeds ``POOR_MATCH`` is
flagged: it does not come from that video (or the video is damaged).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

THUMB_SIDE = 96          # longest side of the luma thumbnails compared (48 confused neighbouring frames of a
                         # slow real clip; 96 placed every test image of ../shared/data/brackish exactly)
POOR_MATCH = 0.5         # RMS distance above which an image is not taken to come from the video (corr < 0.875)


@dataclass(frozen=True)
class VideoThumbs:
    """Every frame of a video as a normalised luma thumbnail."""
    index: np.ndarray     # (N,) int64 frame index (decode order)
    time: np.ndarray      # (N,) float64 seconds
    thumbs: np.ndarray    # (N, h*w) float16 (half the memory of a long video), rows normalised
    size: tuple[int, int]  # (w, h) of the thumbnails


@dataclass(frozen=True)
class Located:
    """Where each image was found: nearest frame, its time, the distance, and whether it is a poor match."""
    frame_index: np.ndarray   # (M,) int64
    time: np.ndarray          # (M,) float64
    distance: np.ndarray      # (M,) float32
    poor: np.ndarray          # (M,) bool: distance > threshold


def thumb_size(width: int, height: int, side: int = THUMB_SIDE) -> tuple[int, int]:
    """(w, h) of a thumbnail of a ``width`` x ``height`` frame with its longest side ``side``."""
    scale = side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def normalise(grey: np.ndarray) -> np.ndarray:
    """(N, h, w) or (N, D) grey values -> (N, D) float32 rows with zero mean and unit RMS (flat rows stay 0)."""
    x = np.asarray(grey, dtype=np.float32).reshape(len(grey), -1)
    x = x - x.mean(axis=1, keepdims=True)
    rms = np.sqrt((x * x).mean(axis=1, keepdims=True))
    return x / np.where(rms > 1e-6, rms, 1.0)


def shrink(grey: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W) uint8 grey -> (h, w) float32 at ``size`` (w, h) by box averaging: the one resizer both the
    video frames and the images go through, so the two thumbnails of the same picture agree."""
    from PIL import Image
    im = Image.fromarray(grey)
    k = min(im.size[0] // size[0], im.size[1] // size[1]) // 2
    if k >= 2:                     # an integer box reduction first: the same average, several times faster
        im = im.reduce(k)
    return np.asarray(im.resize(size, Image.BOX), dtype=np.float32)


def video_thumbs(path: str | Path, *, side: int = THUMB_SIDE) -> VideoThumbs:
    """Decode every frame of a video once and keep its luma as a thumbnail (no colour conversion: the luma
    plane is read as decoded). Raises VideoError naming the file."""
    from mvk_tools.video import iter_luma, probe

    info = probe(path, check_end=False)
    size = thumb_size(info.width, info.height, side)
    index, times, thumbs = [], [], []
    for i, t, luma in iter_luma(path):
        index.append(i)
        times.append(t)
        thumbs.append(normalise(shrink(luma, size)[None])[0].astype(np.float16))
    stack = np.stack(thumbs) if thumbs else np.zeros((0, size[0] * size[1]), np.float16)
    return VideoThumbs(np.asarray(index, np.int64), np.asarray(times, np.float64), stack, size)


def image_thumbs(paths: Sequence[str | Path], size: tuple[int, int]) -> np.ndarray:
    """(M, h*w) normalised luma thumbnails of image files at ``size`` (w, h). JPEGs are decoded at a
    reduced scale (``draft``, at least 8 times the thumbnail, so the DCT's own downscaling barely shows),
    which is most of the speed. Raises OSError/ValueError for unreadable files."""
    from PIL import Image

    out = np.empty((len(paths), size[0] * size[1]), np.float32)
    for i, p in enumerate(paths):
        with Image.open(p) as im:
            im.draft("L", (size[0] * 8, size[1] * 8))
            luma = np.asarray(im.convert("L"))
        out[i] = normalise(shrink(luma, size)[None])[0]
    return out


def nearest(queries: np.ndarray, frames: np.ndarray, *, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """For each row of ``queries`` (M, D), the row of ``frames`` (N, D) at the smallest RMS distance and
    that distance. Vectorised: squared distances from one matrix product per chunk of frames."""
    m, d = queries.shape
    best = np.full(m, np.inf, np.float32)
    arg = np.zeros(m, np.int64)
    qn = (queries * queries).sum(axis=1)
    for start in range(0, len(frames), chunk):
        f = frames[start:start + chunk].astype(np.float32)
        sq = qn[:, None] + (f * f).sum(axis=1)[None, :] - 2.0 * queries @ f.T
        j = np.argmin(sq, axis=1)
        val = sq[np.arange(m), j]
        better = val < best
        best[better], arg[better] = val[better], j[better] + start
    return arg, np.sqrt(np.maximum(best, 0.0) / max(d, 1)).astype(np.float32)


def locate(images: np.ndarray, video: VideoThumbs, *, poor: float = POOR_MATCH) -> Located:
    """Nearest frame of ``video`` for each normalised image thumbnail (rows of ``images``)."""
    if len(video.index) == 0:
        raise ValueError("the video has no decoded frame")
    arg, dist = nearest(images, video.thumbs)
    return Located(video.index[arg], video.time[arg], dist, dist > poor)


def locate_files(video_path: str | Path, image_paths: Sequence[str | Path], *, side: int = THUMB_SIDE,
                 poor: float = POOR_MATCH) -> Located:
    """Decode ``video_path`` once and locate every image file in it (see the module docstring)."""
    thumbs = video_thumbs(video_path, side=side)
    return locate(image_thumbs(image_paths, thumbs.size), thumbs, poor=poor)


def numbering(numbers: Sequence[int], frame_index: Sequence[int], poor: Sequence[bool] | None = None) -> str:
    """What the numbers in a video's selected-frame names turn out to be, judged from the images located
    well (``poor`` False): ``"frame index"`` (every number is its frame's index), ``"ordinal"`` (they grow
    with time but are not frame indices: MVK's case), else ``"other"``; ``"unknown"`` when no image was
    located well."""
    ok = ~np.asarray(poor, bool) if poor is not None else np.ones(len(numbers), bool)
    nums = np.asarray(numbers, np.int64)[ok]
    frames = np.asarray(frame_index, np.int64)[ok]
    if not len(nums):
        return "unknown"
    if np.array_equal(nums, frames):
        return "frame index"
    order = np.argsort(frames, kind="stable")
    return "ordinal" if np.all(np.diff(nums[order]) > 0) else "other"

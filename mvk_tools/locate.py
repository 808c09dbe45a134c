"""Locate still images in their video by content: which decoded frame each image shows.

MVK's selected frames are JPEGs named ``<video>_<n>.jpg``; ``n`` counts the selected frames of a video
(about one per second), it is not a frame index, and nothing in the file says which frame it is. So each
image is compared with every frame of its video: the video is decoded once at low resolution, every
frame and every image becomes a small luma thumbnail (96 pixels on the longest side), normalised (zero mean,
unit RMS) so brightness and contrast changes from re-encoding do not count; the distances of all pairs come
from one matrix product.

Distance: the RMS difference of the two normalised thumbnails, 0 for the same picture, about 1.4 for
unrelated ones (``sqrt(2 (1 - correlation))``).

Placement (``align``): all images of a video at once, in the order of their numbers (image n+1 after image
n), by dynamic programming over the frames with the distance as the cost and a weak pull toward the time
the numbers suggest; so in static footage, where every frame is about as close as the true one, order and
spacing decide instead of noise. The order is imposed only when the images whose place is certain agree with
it. Per image: ``distance`` of the frame chosen, ``margin`` (the best frame more than WINDOW frames away,
minus that distance: how unique the match is) and ``ambiguous`` (a margin within the frame-to-frame noise
of the distances: the content cannot tell, see ``ambiguous_flags``). ``poor``: the image's best distance anywhere in the video is an outlier of
that video's own matches (``poor_threshold``, robust statistics; the fixed POOR_MATCH only for videos with
too few images to have statistics). Whether an image rather comes from another video is decided by
comparison (``foreign_flags`` over small probe thumbnails), not by a fixed distance. ``numbering`` says what
the numbers turned out to be, from the images placed with certainty only.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

THUMB_SIDE = 96          # longest side of the luma thumbnails compared (48 confused neighbouring frames of a
                         # slow real clip; 96 placed every test image of ../shared/data/brackish exactly)
POOR_MATCH = 0.5         # RMS distance of an unrelated picture (corr < 0.875): the poor-match bound only for
                         # videos with fewer than MIN_STATS images (no statistics of their own)
MIN_STATS = 5            # images a video needs for its own robust statistics
ROBUST_K = 6.0           # an outlier lies this many robust standard deviations (1.4826 MAD) above the median
MIN_POOR = 0.05          # ... and above this distance (exact copies have distances near 0: MAD 0)
WINDOW = 1               # frames either side of a match that count as the same place ("within one frame")
AMBIGUOUS_Z = 3.0        # ambiguous: the margin is under 3 times the frame-to-frame jitter of the distances ...
AMBIGUOUS_ABS = 1e-4     # ... plus this (identical frames of a fully static video have margin 0 and no jitter)
SECONDS_PER_NUMBER = 1.0  # MVK's selected frames: about one per second
PRIOR_WEIGHT = 0.05      # pull toward the expected time: this share of the typical match distance per second
PRIOR_CAP = 10.0         # seconds beyond which the pull grows no more
MAX_DP_CELLS = 32_000_000  # image x frame pairs aligned at full resolution (back pointers: 4 bytes each)
FOREIGN_REL = 0.25       # another video must beat the own by at least this share of the median own distance
PROBE_SIDE = 32          # longest side of the probe thumbnails kept per video for the foreign-frame check


@dataclass(frozen=True)
class VideoThumbs:
    """Every frame of a video as a normalised luma thumbnail."""
    index: np.ndarray     # (N,) int64 frame index (decode order)
    time: np.ndarray      # (N,) float64 seconds
    thumbs: np.ndarray    # (N, h*w) float16 (half the memory of a long video), rows normalised
    size: tuple[int, int]  # (w, h) of the thumbnails


@dataclass(frozen=True)
class Located:
    """Where each image was placed: frame, its time, the distance, poor match, margin and ambiguity."""
    frame_index: np.ndarray   # (M,) int64
    time: np.ndarray          # (M,) float64
    distance: np.ndarray      # (M,) float32
    poor: np.ndarray          # (M,) bool: an outlier of the video's own matches (``poor_threshold``)
    margin: np.ndarray | None = None      # (M,) float32: best frame outside the window minus ``distance``
    ambiguous: np.ndarray | None = None   # (M,) bool: the content cannot tell where the image is


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


def locate(images: np.ndarray, video: VideoThumbs, *, poor: float = POOR_MATCH,
           numbers: Sequence[int] | None = None, fps: float | None = None) -> Located:
    """Where each normalised image thumbnail (rows of ``images``) lies in ``video``. Without ``numbers``:
    each image's nearest frame on its own. With them (the images' selected-frame numbers): all images of the
    video at once (``align``), so order and spacing decide where the content cannot. Either way each image
    gets its margin, ``ambiguous`` flag and ``poor`` flag (see the module docstring)."""
    if len(video.index) == 0:
        raise ValueError("the video has no decoded frame")
    cost = distances(images, video.thumbs)
    own = cost.min(axis=1) if len(images) else np.zeros(0, np.float32)
    bad = poor_flags(own, poor)
    if numbers is None:
        arg = np.argmin(cost, axis=1) if len(images) else np.zeros(0, np.int64)
    else:
        arg = align(cost, np.asarray(numbers, np.int64), video.time, fps=fps, exclude=bad)
    rows = np.arange(len(images))
    dist = cost[rows, arg].astype(np.float32)
    marg = margins(cost, arg)
    amb = ambiguous_flags(marg, jitter(cost), bad)
    return Located(video.index[arg], video.time[arg], dist, bad | (dist > poor_threshold(own, poor)),
                   marg, amb)


def distances(images: np.ndarray, frames: np.ndarray, *, chunk: int = 4096) -> np.ndarray:
    """(M, N) float32 RMS distances between every normalised image thumbnail and every frame thumbnail
    (one matrix product per chunk of frames)."""
    m, d = images.shape
    out = np.empty((m, len(frames)), np.float32)
    q = images.astype(np.float32)
    qn = (q * q).sum(axis=1)
    for start in range(0, len(frames), chunk):
        f = frames[start:start + chunk].astype(np.float32)
        sq = qn[:, None] + (f * f).sum(axis=1)[None, :] - 2.0 * q @ f.T
        out[:, start:start + len(f)] = np.sqrt(np.maximum(sq, 0.0) / max(d, 1))
    return out


def poor_threshold(own: np.ndarray, poor: float = POOR_MATCH) -> float:
    """The distance above which an image is an outlier of its video: from the video's own best-match
    distances (median + ROBUST_K robust standard deviations (1.4826 MAD), and at least twice the median),
    so heavily re-encoded collections are judged against themselves; with fewer than MIN_STATS images there
    are no statistics and the fixed ``poor`` bound (an unrelated picture) is used."""
    own = np.asarray(own, np.float64)
    if len(own) < MIN_STATS:
        return float(poor)
    med = float(np.median(own))
    mad = float(np.median(np.abs(own - med)))
    return max(med + ROBUST_K * 1.4826 * mad, 2.0 * med, MIN_POOR)


def poor_flags(own: np.ndarray, poor: float = POOR_MATCH) -> np.ndarray:
    """Images whose best distance anywhere in the video is an outlier (``poor_threshold``)."""
    return np.asarray(own) > poor_threshold(own, poor)


def margins(cost: np.ndarray, arg: np.ndarray, window: int = WINDOW) -> np.ndarray:
    """How unique each image's place is: the smallest distance to a frame more than ``window`` frames from
    the chosen one, minus the chosen frame's distance (inf when the video has no such frame)."""
    if not len(cost):
        return np.zeros(0, np.float32)
    cols = np.arange(cost.shape[1])[None, :]
    far = np.abs(cols - arg[:, None]) > window
    other = np.where(far, cost, np.inf).min(axis=1)
    return (other - cost[np.arange(len(cost)), arg]).astype(np.float32)


def jitter(cost: np.ndarray) -> np.ndarray:
    """(M,) how much each image's distances wobble from frame to frame by noise alone: the robust standard
    deviation (1.4826 MAD) of the second differences along the frames, over sqrt(6) (the second difference of
    independent noise has 6 times its variance). Smooth changes of content barely count; sensor noise and
    re-encoding do. 0 with fewer than 3 frames."""
    if cost.shape[1] < 3 or not len(cost):
        return np.zeros(len(cost), np.float32)
    second = np.abs(np.diff(cost, n=2, axis=1))
    return (1.4826 * np.median(second, axis=1) / np.sqrt(6.0)).astype(np.float32)


def ambiguous_flags(margin: np.ndarray, noise: np.ndarray, poor: np.ndarray | None = None) -> np.ndarray:
    """Images whose place the content cannot tell (static footage): the best frame outside the window is
    closer to the chosen one's distance than AMBIGUOUS_Z times the distances' own noise (``jitter``), plus
    AMBIGUOUS_ABS for identical frames. On real footage a near-exact copy is told from the frames two away
    by margins far under its distance but far over that noise; in static footage the margin is noise. Poor
    matches are not called ambiguous."""
    amb = np.asarray(margin) < AMBIGUOUS_Z * np.asarray(noise) + AMBIGUOUS_ABS
    return amb & ~np.asarray(poor, bool) if poor is not None else amb


def expected_positions(numbers: np.ndarray, anchors: np.ndarray, arg0: np.ndarray, time: np.ndarray,
                       period: float = SECONDS_PER_NUMBER) -> np.ndarray:
    """Expected time of each image from its number: interpolated between the images placed with certainty
    (``anchors``: their numbers against their frames' times), extended at the ends at their own pace (or
    ``period`` seconds per number, MVK's one a second, with fewer than two anchors); numbers that cannot
    fit the video at that pace are spread over it evenly."""
    nums = numbers.astype(np.float64)
    t_end = float(time[-1]) if len(time) else 0.0
    a_num, a_t = nums[anchors], time[arg0[anchors]]
    if len(a_num) >= 2 and np.ptp(a_num) > 0:
        pace = float(np.ptp(a_t) / np.ptp(a_num))
    else:
        pace = period
    if len(a_num) == 0:
        lo = nums.min() if len(nums) else 0.0
        span = (nums.max() - lo) * pace if len(nums) else 0.0
        if span > t_end and span > 0:
            return (nums - lo) * (t_end / span)
        return (nums - lo) * pace + min(period / 4, t_end)
    order = np.argsort(a_num)
    a_num, a_t = a_num[order], a_t[order]
    out = np.interp(nums, a_num, a_t)
    out = np.where(nums < a_num[0], a_t[0] - (a_num[0] - nums) * pace, out)
    out = np.where(nums > a_num[-1], a_t[-1] + (nums - a_num[-1]) * pace, out)
    return np.clip(out, 0.0, t_end)


def monotonic_path(cost: np.ndarray, *, strict: bool = True) -> np.ndarray:
    """Dynamic programming over frames: the frames j_0 < j_1 < ... (``<=`` unless ``strict``) that minimise
    the sum of ``cost[m, j_m]`` (M, N). One vectorised pass per image (a running minimum over the previous
    image's totals), back pointers (M, N) int32; ``strict`` needs N >= M."""
    m, n = cost.shape
    back = np.zeros((m, n), np.int32)
    total = cost[0].astype(np.float64)
    idx = np.arange(n)
    for i in range(1, m):
        run = np.minimum.accumulate(total)
        # position of the running minimum: where the running value last changed
        changed = np.r_[True, run[1:] < run[:-1]]
        pos = np.maximum.accumulate(np.where(changed, idx, 0))
        if strict:
            prev_val = np.r_[np.inf, run[:-1]]
            prev_pos = np.r_[0, pos[:-1]]
        else:
            prev_val, prev_pos = run, pos
        back[i] = prev_pos
        total = cost[i] + prev_val
    path = np.empty(m, np.int64)
    path[-1] = int(np.argmin(total))
    for i in range(m - 1, 0, -1):
        path[i - 1] = back[i, path[i]]
    return path


def align(cost: np.ndarray, numbers: np.ndarray, time: np.ndarray, *, fps: float | None = None,
          exclude: np.ndarray | None = None, max_cells: int = MAX_DP_CELLS) -> np.ndarray:
    """Frame (column of ``cost``) of each image, all images of a video at once: images placed in the order
    of their numbers (``monotonic_path``) with the content distance as the cost, plus a small pull toward
    each image's expected time (``expected_positions``, weighted by PRIOR_WEIGHT times the video's typical
    match distance per second, capped at PRIOR_CAP seconds), so stretches the content cannot tell apart are
    resolved by order and spacing, not by noise. The order is only imposed when the images placed with
    certainty agree with it (else the numbers are not in time order: each image takes its nearest frame).
    ``exclude`` (poor matches) take their nearest frame and do not constrain the others. A video with more
    than ``max_cells`` image-frame pairs is aligned on blocks of k frames (each block's best frame), then
    frame by frame within a block either side of that path."""
    m, n = cost.shape
    arg0 = np.argmin(cost, axis=1) if m else np.zeros(0, np.int64)
    if m < 2:
        return arg0
    skip = np.zeros(m, bool) if exclude is None else np.asarray(exclude, bool)
    dist0 = cost[np.arange(m), arg0]
    sure = ~skip & ~ambiguous_flags(margins(cost, arg0), jitter(cost), skip)
    order = np.argsort(numbers[sure], kind="stable")
    if np.any(np.diff(arg0[sure][order]) < 0):
        return arg0                                 # the numbers do not follow time: no order to impose
    use = np.flatnonzero(~skip)
    if len(use) < 2:
        return arg0
    use = use[np.argsort(numbers[use], kind="stable")]
    expected = expected_positions(numbers, sure, arg0, time)
    scale = float(np.median(dist0[use])) or 1e-3
    prior = PRIOR_WEIGHT * scale * np.minimum(np.abs(time[None, :] - expected[use, None]), PRIOR_CAP)
    full = cost[use] + prior.astype(np.float32)
    strict = len(use) <= n
    step = max(1, int(np.ceil(len(use) * n / max_cells)))
    if step == 1:
        path = monotonic_path(full, strict=strict)
    else:
        blocks = -(-n // step)
        pad = np.pad(full, ((0, 0), (0, blocks * step - n)), constant_values=np.inf)
        coarse = monotonic_path(pad.reshape(len(use), blocks, step).min(axis=2), strict=False) * step
        path = _refine(full, coarse, step, strict)
    out = arg0.copy()
    out[use] = path
    return out


def _refine(full: np.ndarray, coarse: np.ndarray, step: int, strict: bool) -> np.ndarray:
    """``monotonic_path`` inside a band around a coarse path of block starts (long videos): the block and
    one block either side."""
    m, n = full.shape
    width = 3 * step
    cols = np.clip(coarse[:, None] + np.arange(-step, 2 * step)[None, :], 0, n - 1)
    band = full[np.arange(m)[:, None], cols].astype(np.float64)
    total = band[0].copy()
    back = np.zeros((m, width), np.int64)
    for i in range(1, m):
        order = np.argsort(cols[i - 1], kind="stable")
        pc, pt = cols[i - 1][order], total[order]
        run = np.minimum.accumulate(pt)
        arg = np.maximum.accumulate(np.where(np.r_[True, run[1:] < run[:-1]], np.arange(width), 0))
        k = np.searchsorted(pc, cols[i], side="left" if strict else "right") - 1
        ok = k >= 0
        kk = np.maximum(k, 0)
        back[i] = order[arg[kk]]
        total = band[i] + np.where(ok, run[kk], np.inf)
    pos = np.empty(m, np.int64)
    pos[-1] = int(np.argmin(total))
    for i in range(m - 1, 0, -1):
        pos[i - 1] = back[i, pos[i]]
    return cols[np.arange(m), pos]


def foreign_flags(own: np.ndarray, others: dict[str, np.ndarray]) -> list[str]:
    """Per image, the name of another video whose best match beats the image's own video by more than the
    own matches' robust spread (1.4826 MAD, at least FOREIGN_REL of their median), else "". ``own``: (M,)
    best distances in the image's video; ``others``: video name -> (M,) best distances in that video, all
    measured the same way (``probe_distances``)."""
    own = np.asarray(own, np.float64)
    if not len(own) or not others:
        return [""] * len(own)
    med = float(np.median(own))
    slack = max(1.4826 * float(np.median(np.abs(own - med))), FOREIGN_REL * med)
    names = list(others)
    stack = np.stack([np.asarray(others[k], np.float64) for k in names])
    best = np.argmin(stack, axis=0)
    beat = stack[best, np.arange(len(own))] < own - slack
    return [names[b] if hit else "" for b, hit in zip(best, beat)]


def probe_thumbs(grey: np.ndarray, side: int = PROBE_SIDE) -> np.ndarray:
    """(N, h*w) normalised float16 luma thumbnails at PROBE_SIDE from (N, H, W) normalised thumbnails
    (``VideoThumbs.thumbs`` reshaped): the small signature kept per video for the foreign-frame check."""
    if not len(grey):
        return np.zeros((0, 0), np.float16)
    _, h, w = grey.shape
    size = thumb_size(w, h, side)
    out = [normalise(shrink_float(g, size)[None])[0] for g in grey]
    return np.stack(out).astype(np.float16)


def shrink_float(grey: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W) float grey -> (h, w) at ``size`` (w, h) by box averaging (PIL's float mode)."""
    from PIL import Image
    return np.asarray(Image.fromarray(np.asarray(grey, np.float32), mode="F").resize(size, Image.BOX), np.float32)


def probe_distances(images: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """(M,) best RMS distance of each probe image thumbnail among a video's probe frame thumbnails (inf when
    the sizes differ or the video has none)."""
    if not len(frames) or not len(images) or frames.shape[1] != images.shape[1]:
        return np.full(len(images), np.inf)
    return distances(images.astype(np.float32), frames).min(axis=1)


def locate_files(video_path: str | Path, image_paths: Sequence[str | Path], *, side: int = THUMB_SIDE,
                 poor: float = POOR_MATCH, numbers: Sequence[int] | None = None) -> Located:
    """Decode ``video_path`` once and locate every image file in it (see the module docstring); with
    ``numbers`` all at once (``align``)."""
    thumbs = video_thumbs(video_path, side=side)
    return locate(image_thumbs(image_paths, thumbs.size), thumbs, poor=poor, numbers=numbers)


AMBIGUOUS_NUMBERING = "ambiguous (static footage)"


def numbering(numbers: Sequence[int], frame_index: Sequence[int], poor: Sequence[bool] | None = None,
              ambiguous: Sequence[bool] | None = None) -> str:
    """What the numbers in a video's selected-frame names turn out to be, judged only from the images placed
    with certainty (neither ``poor`` nor ``ambiguous``): ``"frame index"`` (every number is its frame's
    index), ``"ordinal"`` (they grow with time but are not frame indices: MVK's case), ``"other"``;
    AMBIGUOUS_NUMBERING when too few images are certain to tell (static footage: at least two are needed
    where the video has two or more well-matched images); ``"unknown"`` when no image was located well."""
    ok = ~np.asarray(poor, bool) if poor is not None else np.ones(len(numbers), bool)
    sure = ok & ~np.asarray(ambiguous, bool) if ambiguous is not None else ok
    nums = np.asarray(numbers, np.int64)[sure]
    frames = np.asarray(frame_index, np.int64)[sure]
    if not ok.any():
        return "unknown"
    if len(nums) < min(2, int(ok.sum())):
        return AMBIGUOUS_NUMBERING
    if np.array_equal(nums, frames):
        return "frame index"
    order = np.argsort(frames, kind="stable")
    return "ordinal" if np.all(np.diff(nums[order]) > 0) else "other"

"""What a user points at, as a seed label map (H, W) uint8 for propagation: a label PNG (palette or
binary), a box, or a click turned into the unsupervised segment under it.

Each function checks its input against the seed frame and raises InputError naming the problem (a mask
of another shape, an empty mask, a click or box outside the frame)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from search.errors import InputError

ASPECT_TOLERANCE = 0.02    # a mask whose aspect ratio is within 2% of the frame's is resized (with a note)


@dataclass(frozen=True)
class MaskSeed:
    """A label image file, or a label map already in memory (0 background, 1..255 object ids)."""
    source: str | Path | np.ndarray


@dataclass(frozen=True)
class BoxSeed:
    box: tuple[float, float, float, float]     # x0, y0, x1, y1 in frame pixels (x1, y1 exclusive)


@dataclass(frozen=True)
class PointSeed:
    point: tuple[float, float]                 # x, y in frame pixels


Seed = MaskSeed | BoxSeed | PointSeed


def read_label_png(path: str | Path) -> np.ndarray:
    """(H, W) uint8 ids from a label image: a palette PNG gives its indices (DAVIS-2017), a binary or
    0/255 image gives 0/1 (DAVIS-2016), other grey images their values, RGB images one id per colour."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise InputError(f"mask {path}: no such file")
    try:
        with Image.open(path) as img:
            mode = img.mode
            arr = np.asarray(img)
    except (OSError, UnidentifiedImageError) as exc:
        raise InputError(f"mask {path}: not a readable image ({exc})") from exc
    if mode == "P":
        return arr.astype(np.uint8)
    if arr.ndim == 3:
        flat = arr[..., :3].reshape(-1, min(3, arr.shape[2]))
        colours, inverse = np.unique(flat, axis=0, return_inverse=True)
        is_black = (colours == 0).all(1)
        if int((~is_black).sum()) > 255:
            raise InputError(f"mask {path}: {len(colours)} colours; a label image has at most 255 objects")
        ids = np.cumsum(~is_black) * ~is_black
        return ids[inverse.ravel()].reshape(arr.shape[:2]).astype(np.uint8)
    values = np.unique(arr)
    if arr.dtype == bool or set(values.tolist()) <= {0, 255} or len(values) <= 2:
        return (arr > 0).astype(np.uint8)
    if values.max() > 255:
        raise InputError(f"mask {path}: values up to {int(values.max())}; object ids must be 0..255")
    return arr.astype(np.uint8)


def fit_mask(labels: np.ndarray, size: tuple[int, int], name: str) -> tuple[np.ndarray, str | None]:
    """The label map at the frame ``size`` (H, W): as is, resized (nearest) with a note when only the
    scale differs, refused when the aspect ratio differs."""
    h, w = size
    mh, mw = labels.shape
    if (mh, mw) == (h, w):
        return labels, None
    if abs((mw / mh) / (w / h) - 1) > ASPECT_TOLERANCE:
        raise InputError(f"mask {name} is {mw}x{mh} but the frames are {w}x{h} (another aspect ratio): "
                         "give the mask of this video's frames")
    from PIL import Image
    resized = np.asarray(Image.fromarray(labels).resize((w, h), Image.NEAREST))
    return resized, f"mask {name} is {mw}x{mh}, resized to the frames' {w}x{h}"


def mask_seed(seed: MaskSeed, size: tuple[int, int]) -> tuple[np.ndarray, str | None]:
    """The seed label map at ``size`` and a note when it was resized; InputError when it marks nothing."""
    if isinstance(seed.source, np.ndarray):
        labels, name = seed.source, "array"
        if labels.ndim != 2:
            raise InputError(f"a seed mask must be (H, W), got shape {labels.shape}")
        if labels.dtype == bool:
            labels = labels.astype(np.uint8)
        if labels.size and (labels.min() < 0 or labels.max() > 255):
            raise InputError("seed mask ids must be 0..255")
        labels = labels.astype(np.uint8)
    else:
        labels, name = read_label_png(seed.source), str(seed.source)
    if not labels.any():
        raise InputError(f"mask {name} is empty: it marks no object (all pixels are background)")
    fitted, note = fit_mask(labels, size, name)
    if not fitted.any():
        raise InputError(f"mask {name} is empty once resized to the frames: its object is too small")
    return fitted, note


def check_point(point: tuple[float, float], size: tuple[int, int]) -> tuple[int, int]:
    """(x, y) as integer pixels; InputError when it lies outside the frame."""
    h, w = size
    x, y = point
    if not (0 <= x < w and 0 <= y < h):
        raise InputError(f"click ({x:g}, {y:g}) is outside the frame ({w}x{h}: x in 0..{w - 1}, y in 0..{h - 1})")
    return int(x), int(y)


def check_box(box: tuple[float, float, float, float], size: tuple[int, int]) -> tuple[int, int, int, int]:
    """The box clipped to the frame; InputError when it is inverted or has nothing inside the frame."""
    h, w = size
    x0, y0, x1, y1 = box
    if x1 <= x0 or y1 <= y0:
        raise InputError(f"box {x0:g},{y0:g},{x1:g},{y1:g} is empty: expected x0,y0,x1,y1 with x1 > x0 and y1 > y0")
    cx0, cy0 = max(0, int(np.floor(x0))), max(0, int(np.floor(y0)))
    cx1, cy1 = min(w, int(np.ceil(x1))), min(h, int(np.ceil(y1)))
    if cx1 <= cx0 or cy1 <= cy0:
        raise InputError(f"box {x0:g},{y0:g},{x1:g},{y1:g} is outside the frame ({w}x{h})")
    return cx0, cy0, cx1, cy1


def segment_labels(image: np.ndarray, extractor: object, params: object | None = None) -> np.ndarray:
    """(H, W) int32 unsupervised segment ids of one frame (-1: none), the segmentation's own path."""
    from indexer.segment import SegmentParams, segment_frames, upsample_labels

    seg = segment_frames(np.stack([image]), extractor, params or SegmentParams())
    return upsample_labels(seg.labels, image.shape[:2], getattr(extractor, "device", "cpu"))[0]


def point_seed(seed: PointSeed, image: np.ndarray, extractor: object, params: object | None = None
               ) -> np.ndarray:
    """Object 1 = the unsupervised segment under the click."""
    x, y = check_point(seed.point, image.shape[:2])
    labels = segment_labels(image, extractor, params)
    under = labels[y, x]
    if under < 0:
        raise InputError(f"click ({x}, {y}) falls on no segment (a region smaller than the minimum area)")
    return (labels == under).astype(np.uint8)


def box_seed(seed: BoxSeed, image: np.ndarray, extractor: object, params: object | None = None
             ) -> tuple[np.ndarray, str | None]:
    """Object 1 = the unsupervised segments lying mostly (over half their area) inside the box, cut to
    the box; the box itself (with a note) when no segment does."""
    x0, y0, x1, y1 = check_box(seed.box, image.shape[:2])
    inside = np.zeros(image.shape[:2], dtype=bool)
    inside[y0:y1, x0:x1] = True
    labels = segment_labels(image, extractor, params)
    ids, total = np.unique(labels[labels >= 0], return_counts=True)
    within = np.array([np.count_nonzero(inside & (labels == i)) for i in ids.tolist()])
    chosen = ids[within > total / 2] if len(ids) else ids
    mask = np.isin(labels, chosen) & inside
    if not mask.any():
        return inside.astype(np.uint8), "no segment lies mostly inside the box: the box itself is the seed"
    return mask.astype(np.uint8), None


def resolve_seed(seed: Seed, image: np.ndarray, extractor: object, segment_params: object | None = None
                 ) -> tuple[np.ndarray, str | None]:
    """The seed label map (H, W) uint8 of ``image`` and a note for the user (or None)."""
    size = image.shape[:2]
    if isinstance(seed, MaskSeed):
        return mask_seed(seed, size)
    if isinstance(seed, BoxSeed):
        return box_seed(seed, image, extractor, segment_params)
    if isinstance(seed, PointSeed):
        return point_seed(seed, image, extractor, segment_params), None
    raise InputError(f"unknown seed {seed!r}: give a mask, a box or a point")

"""Run-length encoding of binary masks for the object table (compact, text, exact round trip)."""
from __future__ import annotations

import numpy as np

from search.errors import InputError


def encode(mask: np.ndarray) -> str:
    """``"H W c0 c1 c2 ..."``: row-major runs of a (H, W) bool mask, starting with a run of False."""
    m = np.asarray(mask)
    if m.ndim != 2:
        raise InputError(f"a mask to run-length encode must be 2-D, got shape {m.shape}")
    flat = m.astype(bool).ravel()
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate(([0], change, [flat.size]))
    counts = np.diff(bounds)
    if flat.size and flat[0]:
        counts = np.concatenate(([0], counts))
    return " ".join(map(str, (m.shape[0], m.shape[1], *counts.tolist())))


def decode(rle: str) -> np.ndarray:
    """The (H, W) bool mask back from ``encode``."""
    try:
        numbers = np.array(rle.split(), dtype=np.int64)
    except (ValueError, AttributeError) as exc:
        raise InputError(f"not a mask run-length string: {str(rle)[:60]!r}") from exc
    if numbers.size < 2 or (numbers < 0).any():
        raise InputError(f"not a mask run-length string: {str(rle)[:60]!r}")
    h, w = int(numbers[0]), int(numbers[1])
    counts = numbers[2:]
    if int(counts.sum()) != h * w:
        raise InputError(f"mask run-length string covers {int(counts.sum())} pixels, its {h}x{w} header "
                         f"says {h * w}")
    values = (np.arange(counts.size) % 2).astype(bool)
    return np.repeat(values, counts).reshape(h, w)


def resize(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize of a bool mask to ``height`` x ``width`` (index arrays, no loops)."""
    ys = np.minimum((np.arange(height) * mask.shape[0]) // height, mask.shape[0] - 1)
    xs = np.minimum((np.arange(width) * mask.shape[1]) // width, mask.shape[1] - 1)
    return mask[ys[:, None], xs[None, :]]


def decode_at(rle: str, height: int, width: int) -> np.ndarray:
    """The (height, width) bool mask of a stored run-length string (stored masks are at thumbnail size; a frame,
    a drawing or a seed wants them at its own)."""
    return resize(decode(rle).astype(bool), int(height), int(width))


def box(rle: str) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) of the mask in its own resolution (x1/y1 exclusive), None when empty."""
    m = decode(rle)
    ys, xs = np.nonzero(m)
    if ys.size == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1

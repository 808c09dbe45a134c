"""Query heatmaps: where in a frame a text matches, from the same dense CLIP features the index pools inside
object masks (``Encoder.encode_image_tokens``, ClearCLIP's last block): cosine similarity of the text vector with
every patch feature, upsampled to the frame and drawn over it.
"""
from __future__ import annotations

import io

import numpy as np

from search.errors import QueryError


def similarity_map(tokens: np.ndarray, query: np.ndarray) -> np.ndarray:
    """(gh, gw) cosine similarity of each patch feature of ``tokens`` (gh, gw, d) with the vector ``query``."""
    t = np.asarray(tokens, np.float32)
    q = np.asarray(query, np.float32).reshape(-1)
    if t.ndim != 3 or t.shape[-1] != q.size:
        raise QueryError(f"dense features of shape {t.shape} do not match a query of dimension {q.size}")
    norms = np.linalg.norm(t, axis=-1)
    return (t @ q) / np.maximum(norms, 1e-12) / max(float(np.linalg.norm(q)), 1e-12)


def frame_map(sim: np.ndarray, height: int, width: int, side: int) -> np.ndarray:
    """The patch map of a letterboxed square (the model's input of ``side`` px, the frame's long side scaled to
    it and centred) resized back onto the frame: (height, width) float32, the padding cut away."""
    import torch
    import torch.nn.functional as F
    scale = side / max(height, width)
    nh, nw = max(1, round(height * scale)), max(1, round(width * scale))
    top, left = (side - nh) // 2, (side - nw) // 2
    x = torch.from_numpy(np.ascontiguousarray(sim, np.float32))[None, None]
    square = F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False)
    inside = square[:, :, top:top + nh, left:left + nw]
    return F.interpolate(inside, size=(height, width), mode="bilinear", align_corners=False)[0, 0].numpy()


def overlay_png(image: np.ndarray, values: np.ndarray, *, alpha: float = 0.55, colormap: str = "inferno") -> bytes:
    """PNG of ``image`` (H, W, 3) uint8 with ``values`` (H, W) drawn over it, scaled from their own minimum to
    maximum (a map shows where a text matches best in this frame, not how well)."""
    from matplotlib import colormaps
    from PIL import Image

    v = np.asarray(values, np.float64)
    lo, hi = float(np.nanmin(v)), float(np.nanmax(v))
    norm = (v - lo) / (hi - lo) if hi > lo else np.zeros_like(v)
    colour = colormaps[colormap](norm)[..., :3] * 255.0
    weight = alpha * (0.35 + 0.65 * norm)[..., None]        # the best-matching parts cover the most
    blended = (1.0 - weight) * np.asarray(image, np.float64) + weight * colour
    out = io.BytesIO()
    Image.fromarray(np.clip(blended, 0, 255).astype(np.uint8)).save(out, format="PNG")
    return out.getvalue()


def peak(values: np.ndarray) -> tuple[int, int]:
    """(row, column) of the highest value."""
    return tuple(int(i) for i in np.unravel_index(int(np.nanargmax(values)), np.asarray(values).shape))

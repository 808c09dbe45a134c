"""Colours and sizes for drawing objects over frames, shared by the app's thumbnails and the indexer's overlay
PNGs: an outline that stands out from the object it surrounds, and text that stays readable on big frames."""
from __future__ import annotations

import numpy as np

DARK = (0, 0, 0)
LIGHT = (255, 255, 255)
MIN_CONTRAST = 60.0          # luma difference (0-255) below which an outline is lost against the object


def luma(rgb) -> np.ndarray:
    """Perceived brightness (ITU-R BT.601) of RGB values, last axis the channels."""
    rgb = np.asarray(rgb, dtype=np.float32)
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def outline_colour(pixels: np.ndarray, preferred) -> tuple[int, int, int]:
    """``preferred`` when it stands out from ``pixels`` (the object's own pixels, (N, 3)), else black or white,
    whichever stands out more: a yellow outline on a yellow fish would be invisible."""
    preferred = tuple(int(v) for v in preferred)
    if len(pixels) == 0:
        return preferred
    around = float(luma(np.asarray(pixels, dtype=np.float32).reshape(-1, 3).mean(axis=0)))
    if abs(float(luma(preferred)) - around) >= MIN_CONTRAST:
        return preferred
    return DARK if around >= 128 else LIGHT


def line_width(height: int) -> int:
    """Outline thickness in pixels for a frame ``height`` pixels high (1 on thumbnails, 3 at 1080p)."""
    return max(1, int(height) // 360)


def text_size(height: int) -> int:
    """Label font size in pixels for a frame ``height`` pixels high (11 on small frames, 27 at 1080p)."""
    return max(11, int(height) // 40)

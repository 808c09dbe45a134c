"""Run-length encoding of binary masks for the object table (compact, text, exact round trip)."""
from __future__ import annotations

import numpy as np


def encode(mask: np.ndarray) -> str:
    """``"H W c0 c1 c2 ..."``: row-major runs of a (H, W) bool mask, starting with a run of False."""
    raise NotImplementedError


def decode(rle: str) -> np.ndarray:
    """The (H, W) bool mask back from ``encode``."""
    raise NotImplementedError

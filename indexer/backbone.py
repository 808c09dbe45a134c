"""DINO ViT backbones through timm: each head's query and key of every patch token of the last block.

Weights rule as in search.encoder: timm pretrained names (fetched online, cached after) or a local
checkpoint; offline without them MissingWeightsError says what to fetch; ``random_weights`` only for
tests and benchmarks, and ``identity()`` records it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
import torch

DEFAULT_BACKBONE = "dino-vits16"


class QKExtractor(Protocol):
    """Anything that turns frames into per-head patch queries and keys (DINO, or the test extractor)."""

    patch_size: int

    def qk(self, frames: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
        """From (T, H, W, 3) uint8 frames (H, W multiples of ``patch_size``): q and k of shape
        (T, heads, h*w, d) (no CLS or register tokens) and the patch grid (h, w)."""
        ...

    def identity(self) -> dict:
        """Name, weights and whether they are random, for manifests."""
        ...


def load_backbone(name: str = DEFAULT_BACKBONE, *, checkpoint: str | Path | None = None,
                  random_weights: bool = False, device: str = "cpu") -> QKExtractor:
    """One of BACKBONES (dino-vits16, dino-vits8, dino-vitb16, dino-vitb8, dinov2-vits14, dinov2-vitb14)."""
    raise NotImplementedError

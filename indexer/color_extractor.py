"""A deterministic, non-learned stand-in for DINO: patch queries and keys from colour statistics.

Each patch gets a small feature (chromaticity of its median colour, optionally brightness) and q, k are built so that
``q · k / √d = −|f − f'|² / (2σ²)``: attention becomes a Gaussian kernel on colour, so patches of one
flat-coloured object attend to the same key patches and their rows cluster together. It implements the
``QKExtractor`` protocol and runs the exact attention -> clustering -> masks path, which lets the tests
and offline demos measure FG-ARI and mIoU on synthetic clips without any weights. It is a baseline, not
a model: on real footage it segments by colour only.
"""
from __future__ import annotations

import math

import numpy as np
import torch


class ColorExtractor:
    """Colour-statistics queries and keys (one head). ``sigma``: kernel width in feature units."""

    name = "color"

    def __init__(self, patch_size: int = 8, *, sigma: float = 0.06, brightness_weight: float = 0.0,
                 device: str = "cpu") -> None:
        if patch_size < 1 or sigma <= 0:
            raise ValueError(f"ColorExtractor needs patch_size >= 1 and sigma > 0 (got {patch_size}, {sigma})")
        self.patch_size = patch_size
        self.sigma = sigma
        self.brightness_weight = brightness_weight
        self.device = torch.device(device)

    def features(self, frames: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
        """(T, h*w, 4) per-patch features: chromaticity r, g, b (sum 1) and weighted brightness, from the
        patch's median colour (a patch on an object's edge takes the colour of its majority)."""
        t, hh, ww, _ = frames.shape
        p = self.patch_size
        if hh % p or ww % p:
            raise ValueError(f"frame size {ww}x{hh} is not a multiple of the patch size {p}")
        h, w = hh // p, ww // p
        x = torch.from_numpy(np.ascontiguousarray(frames)).to(self.device).float() / 255.0
        pix = x.reshape(t, h, p, w, p, 3).permute(0, 1, 3, 5, 2, 4).reshape(t, h, w, 3, p * p)
        median = pix.median(-1).values                                  # (T, h, w, 3)
        total = median.sum(-1, keepdim=True)
        chroma = median / total.clamp_min(1e-3)
        bright = total / 3.0 * self.brightness_weight
        return torch.cat([chroma, bright], -1).reshape(t, h * w, 4), (h, w)

    def qk(self, frames: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
        f, grid = self.features(frames)
        sq = (f * f).sum(-1, keepdim=True) / 2
        one = torch.ones_like(sq)
        d = f.shape[-1] + 2
        c = math.sqrt(math.sqrt(d)) / self.sigma                        # c² = √d / σ²
        q = c * torch.cat([f, -sq, one], -1)
        k = c * torch.cat([f, one, -sq], -1)
        return q[:, None], k[:, None], grid

    def identity(self) -> dict:
        return {"backbone": "color", "kind": "colour-statistics baseline (not a learned model)",
                "patch_size": self.patch_size, "sigma": self.sigma, "weights": None, "checkpoint": None,
                "random_weights": False}

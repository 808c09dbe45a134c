"""Synthetic MVK-like collections: textured shapes moving (occluding, leaving, re-entering) over a
textured background, with the ground-truth object mask of every frame. Seeded and fast; used by tests,
demos and the segmentation metrics."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

SYNTH_SITES = ("Oahu_Jul2022", "PhuQuoc1_Jun2022", "Tulamben2_Jun2022")


@dataclass(frozen=True)
class SynthClip:
    frames: np.ndarray   # (T, H, W, 3) uint8 RGB
    masks: np.ndarray    # (T, H, W) uint8: 0 background, 1..K object ids, the same id for an object in every frame
    fps: float


def render_clip(*, n_frames: int = 48, size: tuple[int, int] = (160, 96), n_objects: int = 3,
                fps: float = 12.0, seed: int = 0) -> SynthClip:
    """Render one clip in memory. ``size`` is (W, H)."""
    raise NotImplementedError


def make_collection(out: str | Path, *, sites: tuple[str, ...] = SYNTH_SITES[:2], videos_per_site: int = 2,
                    n_frames: int = 48, size: tuple[int, int] = (160, 96), fps: float = 12.0,
                    n_objects: int = 3, seed: int = 0) -> Path:
    """Write an MVK-layout collection under ``out`` and return ``out``:
    videos/<site>/<NNNN>.mp4, information/metadata/<site>/<NNNN>.json,
    information/selected_frames/<site>/<NNNN>_<FFFFF>.jpg (about one per second),
    information/masks/<site>/<NNNN>.npz (key ``masks``: (T, H, W) uint8 ground truth of every frame)."""
    raise NotImplementedError


def load_masks(collection: str | Path, site: str, video_id: str) -> np.ndarray:
    """The ground-truth masks written by ``make_collection`` for one video: (T, H, W) uint8."""
    raise NotImplementedError

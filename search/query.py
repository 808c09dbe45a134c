"""Text or image -> ranked frames, fusing frame and object evidence.

Fusion of a frame's score s_f with its best object's score s_o (max over its non-background objects):
``frame``: s_f; ``object``: s_o (frames without objects fall back to s_f); ``max``: max(s_f, s_o);
``weighted``: (1 - w) * s_f + w * s_o.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from search.encoder import Encoder
from search.store import Index

Fusion = Literal["frame", "object", "max", "weighted"]
FUSIONS: tuple[str, ...] = ("frame", "object", "max", "weighted")


@dataclass(frozen=True)
class Filters:
    sites: tuple[str, ...] = ()
    places: tuple[str, ...] = ()
    date_from: str = ""      # "YYYY-MM", inclusive
    date_to: str = ""        # "YYYY-MM", inclusive


def score_frames(index: Index, query: np.ndarray, *, fusion: Fusion = "max", weight: float = 0.5) -> np.ndarray:
    """Exact fused score of every frame of ``index`` (length N, in ``index.frames.gid`` order) for one
    L2-normalised query vector. The KIS benchmark ranks targets with this."""
    raise NotImplementedError


def search(index: Index, encoder: Encoder, query: str | np.ndarray, *, k: int = 20, fusion: Fusion = "max",
           weight: float = 0.5, filters: Filters = Filters(), group_by: Literal["video"] | None = None) -> pd.DataFrame:
    """Ranked frames for a text (or an (H, W, 3) uint8 image: "more like this"). Columns: rank, score,
    frame_score, object_score, gid, site, video_id, video_path, frame_index, time, place, date, and the
    best object's track_id, x0, y0, x1, y1, mask_rle (empty when none). Raises QueryError for an empty
    query or an unknown site in ``filters``."""
    raise NotImplementedError

"""Hand-made shard tables for tests and benchmarks: rows with every column the store wants, no videos."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from search import rle


def frame_rows(site: str, n: int, *, videos: int = 1, fps: float = 1.0, place: str = "",
               date: str = "", width: int = 64, height: int = 36) -> pd.DataFrame:
    """``n`` frame rows of ``site`` spread over ``videos`` videos, one frame per 1/fps seconds."""
    per = max(1, -(-n // max(videos, 1)))
    vid = np.arange(n) // per
    idx = np.arange(n) - vid * per
    return pd.DataFrame({
        "site": site, "video_id": [f"{site}-v{v}" for v in vid], "video_path": [f"{site}/v{v}.mp4" for v in vid],
        "frame_index": idx.astype(np.int64), "time": (idx / fps).astype(np.float64),
        "width": np.int64(width), "height": np.int64(height), "place": place or site.split("_")[0],
        "date": date, "thumbnail": [b""] * n,
    })


def object_rows(frame_row: Sequence[int], *, track_id: Sequence[int] | None = None,
                is_background: Sequence[bool] | None = None, mask_hw: tuple[int, int] = (9, 16)) -> pd.DataFrame:
    """Object rows on the given frame rows; each mask is a small rectangle whose box is recorded."""
    fr = np.asarray(frame_row, dtype=np.int64)
    n = len(fr)
    h, w = mask_hw
    masks = []
    boxes = []
    for j in range(n):
        m = np.zeros((h, w), bool)
        x0, y0 = j % (w - 2), j % (h - 2)
        m[y0:y0 + 2, x0:x0 + 2] = True
        masks.append(rle.encode(m))
        boxes.append((x0 * 4, y0 * 4, (x0 + 2) * 4, (y0 + 2) * 4))
    b = np.array(boxes, dtype=np.int64).reshape(n, 4)
    return pd.DataFrame({
        "frame_row": fr, "track_id": np.asarray(track_id if track_id is not None else np.arange(n), np.int64),
        "level": np.zeros(n, np.int64), "x0": b[:, 0], "y0": b[:, 1], "x1": b[:, 2], "y1": b[:, 3],
        "area": np.full(n, 4.0 / (h * w)),
        "is_background": np.asarray(is_background if is_background is not None else np.zeros(n, bool), bool),
        "mask_rle": masks,
    })


def unit(rows: np.ndarray) -> np.ndarray:
    x = np.asarray(rows, dtype=np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def random_unit(n: int, d: int, seed: int = 0) -> np.ndarray:
    return unit(np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32))


def encoder_identity(dim: int, model: str = "hand-made", **extra) -> dict:
    """An encoder identity for indexes of hand-made vectors."""
    ident = {"model": model, "pretrained": None, "checkpoint": None, "dim": dim, "random_weights": True,
             "fit": "letterbox"}
    ident.update(extra)
    return ident

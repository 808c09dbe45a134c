"""The on-disk index: one shard per dive site, FAISS + parquet + manifests.

index/
  manifest.json            format, encoder identity, segmentation parameters, versions, shard list
  sites/<site>/
    manifest.json          counts, source files (size, mtime), per-video errors, index type
    frames.parquet         FRAME_COLUMNS, row i <-> vector i of frames.faiss
    objects.parquet        OBJECT_COLUMNS, row j <-> vector j of objects.faiss
    frames.faiss, objects.faiss

A shard is written to a temporary folder beside its final place and swapped in with renames, so
readers never see a half-written shard and a failed write leaves the old shard in place.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

FORMAT_VERSION = 1

FRAME_COLUMNS = (
    "site", "video_id", "video_path",   # video_path relative to the collection root
    "frame_index", "time",              # index in the source video, seconds
    "width", "height",                  # source frame size
    "place", "date",                    # from the site name; date "YYYY-MM" or ""
    "thumbnail",                        # JPEG bytes, longest side ~256 px
)
OBJECT_COLUMNS = (
    "frame_row",                        # row of the frame in this shard's frames table
    "track_id",                         # object id, stable across the frames of one video
    "level",                            # hierarchy level the object comes from (0 = finest)
    "x0", "y0", "x1", "y1",             # box in source-frame pixels, x1/y1 exclusive
    "area",                             # fraction of the frame covered by the mask
    "is_background",                    # the likely background cluster
    "mask_rle",                         # search.rle string of the mask at a reduced resolution
)

IndexType = Literal["flat", "ivf-flat", "ivf-pq", "hnsw"]


@dataclass
class Shard:
    site: str
    path: Path
    manifest: dict
    frames: pd.DataFrame
    objects: pd.DataFrame
    frame_index: "object"    # faiss.Index
    object_index: "object"   # faiss.Index


@dataclass
class Index:
    """All readable shards of an index folder. ``frames``/``objects`` concatenate the shards: column
    ``gid`` is the global frame row (0..N-1, the order of ``score_frames``), objects carry ``frame_gid``."""
    root: Path
    manifest: dict
    shards: dict[str, Shard]
    frames: pd.DataFrame
    objects: pd.DataFrame
    errors: dict[str, str] = field(default_factory=dict)   # site -> why its shard was skipped


def init_index(root: str | Path, manifest: dict) -> dict:
    """Create ``root/manifest.json`` or check that the existing one has the same encoder identity and
    segmentation parameters (ModelMismatchError naming both otherwise). Returns the manifest on disk."""
    raise NotImplementedError


def write_shard(root: str | Path, site: str, frames: pd.DataFrame, frame_vectors: np.ndarray,
                objects: pd.DataFrame, object_vectors: np.ndarray, manifest: dict, *,
                index_type: IndexType = "flat") -> Path:
    """Write one site's shard atomically (temporary folder + rename) and add it to the root manifest."""
    raise NotImplementedError


def open_index(root: str | Path, *, expect: dict | None = None, device: str = "cpu") -> Index:
    """Open every shard; a missing or corrupt shard is skipped and reported in ``Index.errors``. Raises
    IndexFormatError when ``root`` is no index, ModelMismatchError when ``expect`` (an encoder identity)
    differs from the manifest's."""
    raise NotImplementedError

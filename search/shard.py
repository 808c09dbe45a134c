"""The opened index in memory: ``Shard`` (one site's rows and vector tables) and ``Index`` (every readable
shard, with index-wide frame and object tables)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from search.errors import IndexFormatError


@dataclass
class Shard:
    site: str
    path: Path
    manifest: dict
    frames: pd.DataFrame
    objects: pd.DataFrame
    frame_index: "object"    # faiss.Index
    object_index: "object"   # faiss.Index
    cpu_frame_index: "object" = None    # the CPU copy (the GPU copy cannot reconstruct vectors)
    cpu_object_index: "object" = None
    _vectors: dict = field(default_factory=dict, repr=False)

    @property
    def index_type(self) -> str:
        return str(self.manifest.get("index_type", "flat"))

    def vectors(self, table: Literal["frames", "objects"]) -> np.ndarray:
        """The stored (n, d) float16 vectors of one table, decoded whole (a copy: for tests and tools; the
        query path scores in blocks with ``scores`` instead)."""
        from search.faiss_index import reconstruct_all
        return reconstruct_all(self.cpu_frame_index if table == "frames" else self.cpu_object_index)

    def scores(self, table: Literal["frames", "objects"], queries: np.ndarray) -> np.ndarray:
        """(q, n) float32 inner products of L2-normalised ``queries`` with the stored vectors of ``table``,
        block by block over the (memory-mapped) stored float16 codes; a row whose stored vector holds NaN
        or infinity (never written so: a corrupt file whose checksum was not checked, or an old index) scores
        -inf, so scoring leaves it out instead of returning NaN."""
        from search.faiss_index import inner_products
        out = inner_products(self.cpu_frame_index if table == "frames" else self.cpu_object_index, queries)
        out[~np.isfinite(out)] = -np.inf
        return out

    def column(self, table: Literal["frames", "objects"], name: str, rows: np.ndarray) -> list:
        """Values of one column for ``rows`` of ``table``: from memory when the column was loaded, else read
        from the parquet file by row group (thumbnails are read this way, on demand)."""
        loaded = self.frames if table == "frames" else self.objects
        rows = np.asarray(rows, dtype=np.int64)
        if name in loaded.columns:
            return loaded[name].to_numpy()[rows].tolist()
        return _read_rows(self.path / f"{table}.parquet", name, rows)



def _read_rows(path: Path, name: str, rows: np.ndarray) -> list:
    """``rows`` of column ``name`` of a parquet file, reading only the row groups that hold them."""
    import pyarrow.parquet as pq
    try:
        pf = pq.ParquetFile(path, memory_map=True)
    except FileNotFoundError:
        raise IndexFormatError(f"{path} is gone (a newer version of the shard replaced it): reopen the "
                               f"index") from None
    except Exception as exc:
        raise IndexFormatError(f"{path} is not a readable parquet file: {exc}") from exc
    sizes = [pf.metadata.row_group(i).num_rows for i in range(pf.metadata.num_row_groups)]
    starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    if len(rows) and (rows.min() < 0 or rows.max() >= starts[-1]):
        raise IndexFormatError(f"{path} has {starts[-1]} rows, asked for row {int(rows.max())}")
    out: list = [None] * len(rows)
    groups = np.searchsorted(starts, rows, side="right") - 1
    for g in np.unique(groups):
        where = np.flatnonzero(groups == g)
        column = pf.read_row_group(int(g), columns=[name]).column(0)
        values = column.take(rows[where] - starts[g]).to_pylist()
        for i, v in zip(where, values):
            out[i] = v
    return out



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
    notes: list[str] = field(default_factory=list)
    device: str = "cpu"

    @property
    def encoder(self) -> dict:
        """The encoder identity recorded at build time."""
        return dict(self.manifest.get("encoder") or {})

    def locate(self, gids: np.ndarray) -> list[tuple[str, np.ndarray, np.ndarray]]:
        """Global frame rows grouped by shard: (site, positions in ``gids``, rows in that shard)."""
        gids = np.asarray(gids, dtype=np.int64)
        sites = list(self.shards)
        starts = np.array([self.frame_offset(site) for site in sites] + [len(self.frames)], np.int64)
        if len(gids) and (gids.min() < 0 or gids.max() >= starts[-1]):
            raise IndexError(f"frame gid out of range 0..{starts[-1] - 1}")
        which = np.searchsorted(starts, gids, side="right") - 1
        return [(sites[k], np.flatnonzero(which == k), gids[which == k] - starts[k]) for k in np.unique(which)]

    def thumbnails(self, gids) -> list[bytes]:
        """The stored JPEG thumbnails of frames ``gids`` (b"" where none), read on demand from the shards'
        parquet files (a few row groups), not kept in ``frames``."""
        gids = np.asarray(list(gids) if not isinstance(gids, np.ndarray) else gids, dtype=np.int64)
        out: list[bytes] = [b""] * len(gids)
        for site, positions, rows in self.locate(gids):
            for i, value in zip(positions, self.shards[site].column("frames", "thumbnail", rows)):
                out[i] = bytes(value or b"")
        return out

    def thumbnail(self, gid: int) -> bytes:
        return self.thumbnails([int(gid)])[0]

    def with_thumbnails(self, rows: pd.DataFrame, gid_column: str = "gid") -> pd.DataFrame:
        """``rows`` (of frames, or joined with them) with a ``thumbnail`` column, read for these rows only."""
        if "thumbnail" in rows.columns:
            return rows
        out = rows.copy()
        out["thumbnail"] = self.thumbnails(rows[gid_column].to_numpy(np.int64)) if len(rows) else []
        return out

    def frame_offset(self, site: str) -> int:
        """Global row (gid) of the first frame of ``site``'s shard."""
        return self._offsets()[site][0]

    def object_offset(self, site: str) -> int:
        return self._offsets()[site][1]

    def _offsets(self) -> dict[str, tuple[int, int]]:
        out, f, o = {}, 0, 0
        for site, shard in self.shards.items():
            out[site] = (f, o)
            f += len(shard.frames)
            o += len(shard.objects)
        return out

"""The opened index in memory: ``Shard`` (one site's rows and vector tables) and ``Index`` (every readable
shard, with index-wide frame and object tables)."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from search.errors import IndexFormatError


class VectorTable:
    """One table of stored vectors (a shard's frames or objects), row i <-> vector i: the whole interface that
    scoring uses, so a second vector back end implements these few methods. FAISS implements it here
    (``search.faiss_index``): ``index`` searches (a GPU copy where asked), ``cpu`` holds the stored codes."""

    def __init__(self, index: Any, cpu: Any) -> None:
        self.index = index
        self.cpu = cpu if cpu is not None else index

    def __len__(self) -> int:
        return int(self.cpu.ntotal)

    @property
    def dim(self) -> int:
        return int(self.cpu.d)

    def scores(self, queries: np.ndarray) -> np.ndarray:
        """(q, n) float32 inner products of L2-normalised ``queries`` with every stored vector, block by block
        over the (memory-mapped) stored codes; a stored vector holding NaN or infinity (never written so: a
        corrupt file whose checksum was not checked) scores -inf, so scoring leaves it out."""
        from search.faiss_index import inner_products
        out = inner_products(self.cpu, queries)
        out[~np.isfinite(out)] = -np.inf
        return out

    def top(self, queries: np.ndarray, n: int, *, nprobe: int | None = None,
            ef_search: int | None = None) -> tuple[np.ndarray | None, np.ndarray]:
        """(scores or None, ids) of the top ``n`` vectors per query, ids -1 where fewer; scores are None when
        they come from a copy that rounds differently from the stored codes (a GPU index), so callers re-score."""
        from search.faiss_index import search_scored
        scores, ids = search_scored(self.index, queries, n, nprobe=nprobe, ef_search=ef_search)
        return (scores if self.index is self.cpu else None), ids

    def scores_of(self, ids: np.ndarray, query: np.ndarray) -> np.ndarray:
        """Inner products of one query with the stored vectors of the sorted unique ``ids`` (NaN where invalid)."""
        from search.faiss_index import scores_of_ids
        return scores_of_ids(self.cpu, ids, query)

    def get(self, ids: np.ndarray) -> np.ndarray:
        """The stored vectors of ``ids`` as (len(ids), d) float32 (a "more like this" query, feedback examples)."""
        from search.faiss_index import reconstruct_ids
        ids = np.asarray(ids, np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= len(self)):
            raise IndexError(f"vector ids outside 0..{len(self) - 1}")
        return reconstruct_ids(self.cpu, ids)

    def vectors(self) -> np.ndarray:
        """The stored (n, d) float16 vectors, decoded whole (a copy: for tests and tools)."""
        from search.faiss_index import reconstruct_all
        return reconstruct_all(self.cpu)


class MaskedTable(VectorTable):
    """A vector table with some rows left out (rows whose frame metadata failed its checksum, and their
    objects): they score -inf, ``top`` never returns them and ``scores_of`` gives NaN for them."""

    def __init__(self, index: Any, cpu: Any, excluded: np.ndarray) -> None:
        super().__init__(index, cpu)
        self.excluded = np.asarray(excluded, bool)

    def scores(self, queries: np.ndarray) -> np.ndarray:
        out = super().scores(queries)
        out[:, self.excluded] = -np.inf
        return out

    def top(self, queries: np.ndarray, n: int, *, nprobe: int | None = None,
            ef_search: int | None = None) -> tuple[np.ndarray | None, np.ndarray]:
        wide = min(len(self), n + int(self.excluded.sum()))
        scores, ids = super().top(queries, wide, nprobe=nprobe, ef_search=ef_search)
        drop = (ids >= 0) & self.excluded[np.clip(ids, 0, None)]
        order = np.argsort(drop | (ids < 0), axis=1, kind="stable")          # the rows kept first, in order
        ids = np.take_along_axis(np.where(drop, -1, ids), order, 1)[:, :n]
        if scores is not None:
            scores = np.take_along_axis(np.where(drop, -np.inf, scores), order, 1)[:, :n]
        return scores, ids

    def scores_of(self, ids: np.ndarray, query: np.ndarray) -> np.ndarray:
        out = np.array(super().scores_of(ids, query), dtype=np.float32)
        out[self.excluded[np.asarray(ids, np.int64)]] = np.nan
        return out


class MissingTable(VectorTable):
    """The table of a space a shard has no vectors in yet (added to the index after this shard was written, and
    not embedded yet): nothing scores, nothing is found, so a fused query ranks the shard by its other spaces."""

    def __init__(self, n: int, dim: int, space: str) -> None:
        super().__init__(None, None)
        self.n, self._dim, self.space = int(n), int(dim), space

    def __len__(self) -> int:
        return self.n

    @property
    def dim(self) -> int:
        return self._dim

    def scores(self, queries: np.ndarray) -> np.ndarray:
        return np.full((len(np.atleast_2d(queries)), self.n), -np.inf, np.float32)

    def top(self, queries: np.ndarray, n: int, *, nprobe: int | None = None,
            ef_search: int | None = None) -> tuple[np.ndarray | None, np.ndarray]:
        q = len(np.atleast_2d(queries))
        return np.full((q, n), -np.inf, np.float32), np.full((q, n), -1, np.int64)

    def scores_of(self, ids: np.ndarray, query: np.ndarray) -> np.ndarray:
        return np.full(len(ids), np.nan, np.float32)

    def get(self, ids: np.ndarray) -> np.ndarray:
        from search.errors import SpaceMissingError
        raise SpaceMissingError(f"this shard has no vectors in the space {self.space!r} yet (mvk index adds them)")

    def vectors(self) -> np.ndarray:
        return np.full((self.n, self._dim), np.nan, np.float16)


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
    left_out: np.ndarray | None = None   # frame rows whose metadata failed its row-group checksum (never served)
    damage: list[str] = field(default_factory=list)   # one line per damaged row group found so far
    _checked: dict = field(default_factory=dict, repr=False)   # (table, column) -> {row group: ok}
    space_tables: dict = field(default_factory=dict)   # further space -> (frames, objects, cpu frames, cpu objects)
    missing_space: tuple[str, int] | None = None       # (space, dim) this view has no vectors of

    def in_space(self, name: str, dim: int) -> "Shard":
        """This shard with the vector tables of the further space ``name`` (tables that score nothing when the
        shard has no vectors in it yet); the rows are shared."""
        tables = self.space_tables.get(name)
        if tables is None:
            return replace(self, missing_space=(name, int(dim)))
        return replace(self, frame_index=tables[0], object_index=tables[1], cpu_frame_index=tables[2],
                       cpu_object_index=tables[3], missing_space=None)

    @property
    def index_type(self) -> str:
        return str(self.manifest.get("index_type", "flat"))

    def table(self, table: Literal["frames", "objects"]) -> VectorTable:
        """The vector table of ``frames`` or ``objects``: how scoring reaches the stored vectors."""
        masked = self.left_out is not None and bool(self.left_out.any())
        if self.missing_space is not None and table in ("frames", "objects"):
            n = len(self.frames) if table == "frames" else len(self.objects)
            return MissingTable(n, self.missing_space[1], self.missing_space[0])
        if table == "frames":
            if masked:
                return MaskedTable(self.frame_index, self.cpu_frame_index, self.left_out)
            return VectorTable(self.frame_index, self.cpu_frame_index)
        if table == "objects":
            if masked:
                rows = self.objects["frame_row"].to_numpy(np.int64)
                return MaskedTable(self.object_index, self.cpu_object_index, self.left_out[rows])
            return VectorTable(self.object_index, self.cpu_object_index)
        raise ValueError(f"a shard has the tables frames and objects, not {table!r}")

    def vectors(self, table: Literal["frames", "objects"]) -> np.ndarray:
        """The stored (n, d) float16 vectors of one table, decoded whole (a copy: for tests and tools; the
        query path scores in blocks with ``scores`` instead)."""
        return self.table(table).vectors()

    def scores(self, table: Literal["frames", "objects"], queries: np.ndarray) -> np.ndarray:
        """(q, n) float32 inner products of ``queries`` with the stored vectors of ``table`` (-inf for an
        invalid stored vector): ``VectorTable.scores``."""
        return self.table(table).scores(queries)

    def column(self, table: Literal["frames", "objects"], name: str, rows: np.ndarray) -> list:
        """Values of one column for ``rows`` of ``table``: from memory when the column was loaded, else read
        from the parquet file by row group (thumbnails are read this way, on demand)."""
        loaded = self.frames if table == "frames" else self.objects
        rows = np.asarray(rows, dtype=np.int64)
        if name in loaded.columns:
            return loaded[name].to_numpy()[rows].tolist()
        digests = ((self.manifest.get("row_groups") or {}).get(f"{table}.parquet") or {}).get(name)
        checked = self._checked.setdefault((table, name), {}) if digests else None
        values = _read_rows(self.path / f"{table}.parquet", name, rows, digests, checked, self.damage)
        if self.left_out is not None and table == "frames":
            values = [None if self.left_out[r] else v for r, v in zip(rows, values)]
        return values



def _read_rows(path: Path, name: str, rows: np.ndarray, digests: list[str] | None = None,
               checked: dict | None = None, damage: list[str] | None = None) -> list:
    """``rows`` of column ``name`` of a parquet file, reading only the row groups that hold them. With
    ``digests`` (one per row group), a group is checked against its digest the first time it is read
    (``checked`` remembers the verdicts): the rows of a damaged group come back as None, named in ``damage``."""
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
        if digests is not None and checked is not None and int(g) not in checked:
            from search.rowgroups import damaged, describe
            column_index = pf.schema_arrow.names.index(name)
            checked[int(g)] = not damaged(path, pf, digests, [column_index], [int(g)])
            if not checked[int(g)] and damage is not None:
                damage.append(describe(path, pf, int(g), f"{name} values"))
        if checked is not None and not checked.get(int(g), True):
            continue
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
    _offset_cache: tuple | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def encoder(self) -> dict:
        """The encoder identity recorded at build time (of this view's space)."""
        return dict(self.manifest.get("encoder") or {})

    @property
    def space(self) -> str:
        """The embedding space this view searches (the index's first one unless ``in_space`` chose another)."""
        from search.spaces import space_name
        return str(self.manifest.get("space") or space_name(self.encoder))

    def spaces(self) -> list[str]:
        """The names of the index's embedding spaces, the first one first."""
        from search.spaces import names
        return names(self.manifest)

    def in_space(self, name: str) -> "Index":
        """A view of this index in the embedding space ``name``: the same rows and gids, that space's vector
        tables and encoder identity (QueryError naming the spaces when there is no such space). A shard with no
        vectors in it yet scores nothing there, with a note."""
        from search.spaces import find
        space = find(self.manifest, name)
        if space.primary:
            return self
        missing = [site for site, shard in self.shards.items() if name not in shard.space_tables]
        indexing = {**(self.manifest.get("indexing") or {}), "objects": space.objects,
                    "pool_features": space.pool_features}
        return replace(self, manifest={**self.manifest, "encoder": space.encoder, "indexing": indexing,
                                       "space": name},
                       shards={site: shard.in_space(name, space.dim) for site, shard in self.shards.items()},
                       notes=[*self.notes, *[f"site {site} has no vectors in the space {name} yet (the next mvk "
                                             f"index adds them)" for site in missing]])

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
        """(first frame gid, first object row) of every shard: computed once per set of shards (scoring asks
        for them a few times per shard and query)."""
        key = (id(self.shards), tuple(self.shards))
        if self._offset_cache is not None and self._offset_cache[0] == key:
            return self._offset_cache[1]
        out, f, o = {}, 0, 0
        for site, shard in self.shards.items():
            out[site] = (f, o)
            f += len(shard.frames)
            o += len(shard.objects)
        self._offset_cache = (key, out)
        return out

"""Scoring: query vectors in, frame scores out. Frame and object evidence fused per frame.

Fusion of a frame's score s_f with its best object's score s_o (max over its non-background objects):
``frame``: s_f; ``object``: s_o (frames without objects fall back to s_f); ``max``: max(s_f, s_o);
``weighted``: (1 - w) * s_f + w * s_o (frames without objects: s_o = s_f).

Small indexes (or flat ones) are scored exactly: every stored frame vector and every object vector against
the query and a per-frame max, read from the stored (memory-mapped) float16 codes through each shard's
``VectorTable`` (FAISS's own float16 scanners for a few queries, float32 blocks multiplied by many queries at
once; no float32 copy of the vectors is kept); ``score_frames_batch`` scores many queries and fusion modes per matmul. Big approximate indexes (IVF,
HNSW, any FAISS factory string) first take top candidates from each table (frames and objects) per shard,
then score the union of candidate frames and their objects exactly (the table's own scores for its hits, the
stored codes for the rest). Nothing here reaches a FAISS handle: only ``VectorTable`` methods.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from search.cpus import usable_cores
from search.errors import IndexFormatError, QueryError
from search.shard import Index, Shard


@dataclass(frozen=True)
class SearchParams:
    """Query-time knobs of approximate tables: ``nprobe`` (IVF lists probed), ``ef_search`` (HNSW nodes
    explored). None keeps the value stored with the index."""
    nprobe: int | None = None
    ef_search: int | None = None


Fusion = Literal["frame", "object", "max", "weighted"]


FUSIONS: tuple[str, ...] = ("frame", "object", "max", "weighted")


EXACT_LIMIT = 200_000        # vectors (frames + objects) of the searched shards scored exactly


CANDIDATES = 1024            # FAISS candidates per table and shard, at least (more for bigger k)


_THREADS = usable_cores()      # shards whose candidates are re-scored at once


QUERY_BLOCK = 64             # queries per matmul in score_frames_batch: bounds the (queries, objects) matrix


def _best_objects(n_frames: int, frame_row: np.ndarray, sims: np.ndarray, valid: np.ndarray,
                  obj_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per frame: the max object similarity (-inf when none) and the id of that object (-1 when none)."""
    best = np.full(n_frames, -np.inf, np.float32)
    fr, s, ids = frame_row[valid], sims[valid], obj_ids[valid]
    np.maximum.at(best, fr, s)
    arg = np.full(n_frames, -1, np.int64)
    win = s >= best[fr]
    arg[fr[win][::-1]] = ids[win][::-1]        # first object wins among equals
    return best, arg


def fuse(frame_scores: np.ndarray, object_scores: np.ndarray, fusion: Fusion = "max",
         weight: float = 0.5) -> np.ndarray:
    """Fused scores; ``object_scores`` is -inf where a frame has no object."""
    _check_fusion(fusion, weight)
    s_o = np.where(np.isfinite(object_scores), object_scores, frame_scores)
    if fusion == "frame":
        return frame_scores.astype(np.float32, copy=True)
    if fusion == "object":
        return s_o.astype(np.float32)
    if fusion == "max":
        return np.maximum(frame_scores, s_o).astype(np.float32)
    return ((1.0 - weight) * frame_scores + weight * s_o).astype(np.float32)


def _check_fusion(fusion: str, weight: float) -> None:
    if fusion not in FUSIONS:
        raise QueryError(f"unknown fusion {fusion!r}; choose one of {', '.join(FUSIONS)}")
    if not 0.0 <= float(weight) <= 1.0:
        raise QueryError(f"fusion weight must lie in [0, 1], got {weight}")


def _shard_exact(shard: Shard, q: np.ndarray, allowed: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frame sims, best object sims and best object rows of every frame of one shard (``allowed``: the
    objects that may count, over the shard's object rows; None: every non-background object)."""
    fs = shard.table("frames").scores(q[None, :])[0]
    objects = shard.objects
    if len(objects) == 0:
        return fs, np.full(len(fs), -np.inf, np.float32), np.full(len(fs), -1, np.int64)
    os_ = shard.table("objects").scores(q[None, :])[0]
    valid = ~objects["is_background"].to_numpy(dtype=bool) & (os_ > -np.inf)
    if allowed is not None:
        valid &= allowed
    best, arg = _best_objects(len(fs), objects["frame_row"].to_numpy(np.int64), os_, valid,
                              np.arange(len(objects), dtype=np.int64))
    return fs, best, arg


def _allowed(object_mask: np.ndarray | None, index: Index, site: str) -> np.ndarray | None:
    """The slice of an index-wide object mask that belongs to ``site``'s shard."""
    if object_mask is None:
        return None
    start = index.object_offset(site)
    return object_mask[start:start + len(index.shards[site].objects)]


def _exact(index: Index, q: np.ndarray, sites: list[str],
           object_mask: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
    """(gids, frame sims, object sims, best object global rows) over every frame of ``sites``;
    ``object_mask`` (over ``index.objects``) limits the objects that may count."""
    parts = []
    for site in sites:
        shard = index.shards[site]
        fs, best, arg = _shard_exact(shard, q, _allowed(object_mask, index, site))
        gids = np.arange(len(fs), dtype=np.int64) + index.frame_offset(site)
        parts.append((gids, fs, best, np.where(arg >= 0, arg + index.object_offset(site), -1)))
    if not parts:
        return (np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))
    return tuple(np.concatenate(p) for p in zip(*parts))


def _object_runs(shard: Shard) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For one reduceat over a shard's objects (stored sorted by frame row): the background objects, the
    first object of each frame that has objects, and that frame's row."""
    rows = shard.objects["frame_row"].to_numpy(np.int64)
    if np.any(np.diff(rows) < 0):
        raise IndexFormatError(f"{shard.path / 'objects.parquet'}: objects are not sorted by frame_row "
                               f"(rewrite the shard with mvk index)")
    starts = np.flatnonzero(np.r_[True, np.diff(rows) > 0])
    return shard.objects["is_background"].to_numpy(dtype=bool), starts, rows[starts]


def _shard_batch(shard: Shard, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Frame sims and best non-background object sims (-inf when none), each (B, n_frames), of one shard
    for B normalised queries (B, d). Frames and objects whose stored vector is invalid score -inf."""
    fs = shard.table("frames").scores(q)
    best = np.full(fs.shape, -np.inf, np.float32)
    if len(shard.objects):
        background, starts, frame_rows = _object_runs(shard)
        sims = shard.table("objects").scores(q)
        sims[:, background] = -np.inf
        best[:, frame_rows] = np.maximum.reduceat(sims, starts, axis=1)
    return fs, best


def _score_batch(index: Index, q: np.ndarray, fusions: list[str], weight: float) -> dict[str, np.ndarray]:
    n = sum(len(shard.frames) for shard in index.shards.values())
    out = {f: np.empty((len(q), n), np.float32) for f in fusions}
    for start in range(0, len(q), QUERY_BLOCK):
        block = q[start:start + QUERY_BLOCK]
        parts = [_shard_batch(shard, block) for shard in index.shards.values()]
        fs = np.concatenate([p[0] for p in parts], axis=1) if parts else np.zeros((len(block), 0), np.float32)
        best = np.concatenate([p[1] for p in parts], axis=1) if parts else fs
        invalid = fs == -np.inf          # an invalid stored frame vector (Shard.scores)
        for f in fusions:
            fused = fuse(fs, best, f, weight)
            fused[invalid] = -np.inf     # never NaN, never scored by objects alone
            out[f][start:start + len(block)] = fused
    return out


def score_frames_batch(index: Index, queries: np.ndarray, *, fusions: tuple[str, ...] | list[str] = ("max",),
                       weight: float = 0.5) -> dict[str, np.ndarray]:
    """Exact fused scores of every frame of ``index`` for many queries and fusion modes at once:
    ``{fusion: (q, N) float32}``, row i for ``queries[i]`` (rows L2-normalised here; a zero or non-finite
    row is a QueryError naming it), columns in ``index.frames.gid`` order. Per shard and block of
    QUERY_BLOCK queries: one matmul over the frame vectors, one over the object vectors and each frame's
    best non-background object by ``np.maximum.reduceat``. ``score_frames`` is the one-query case."""
    fusions = list(dict.fromkeys(fusions))
    for f in fusions:
        _check_fusion(f, weight)
    return _score_batch(index, _as_query_matrix(index, queries), fusions, weight)


def score_frames(index: Index, query: np.ndarray, *, fusion: Fusion = "max", weight: float = 0.5) -> np.ndarray:
    """Exact fused score of every frame of ``index`` (length N, in ``index.frames.gid`` order) for one
    L2-normalised query vector. The KIS benchmark ranks targets with this (``score_frames_batch`` for
    many queries)."""
    _check_fusion(fusion, weight)
    q = _as_query_vector(index, query)
    return _score_batch(index, q[None, :], [fusion], weight)[fusion][0]


def _candidates(index: Index, q: np.ndarray, sites: list[str], n_cand: int,
                params: SearchParams = SearchParams(),
                object_mask: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
    """Like ``_exact`` but only for the union of FAISS's top frames and the frames of its top objects, shard
    by shard in threads (FAISS and numpy release the GIL; re-scoring reads scattered codes of
    memory-mapped files, so it waits on page faults as much as on arithmetic)."""
    from concurrent.futures import ThreadPoolExecutor
    work = [(site, index.frame_offset(site), index.object_offset(site)) for site in sites]
    if len(work) > 1 and _THREADS > 1:
        with ThreadPoolExecutor(min(_THREADS, len(work)), thread_name_prefix="candidates") as pool:
            parts = list(pool.map(lambda w: _shard_candidates(index.shards[w[0]], q, n_cand, w[1], w[2], params,
                                                            _allowed(object_mask, index, w[0])), work))
    else:
        parts = [_shard_candidates(index.shards[site], q, n_cand, f0, o0, params,
                                   _allowed(object_mask, index, site)) for site, f0, o0 in work]
    parts = [p for p in parts if p is not None]
    if not parts:
        return (np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))
    return tuple(np.concatenate(p) for p in zip(*parts))


def _shard_candidates(shard: Shard, q: np.ndarray, n_cand: int, frame_offset: int, object_offset: int,
                      params: SearchParams = SearchParams(),
                      allowed: np.ndarray | None = None) -> tuple[np.ndarray, ...] | None:
    """(gids, frame sims, best object sims, best object global rows) of one shard's candidate frames. Scores
    a table returned with its hits are kept where it trusts them (scored from the stored codes, as
    re-scoring does); only the other candidate frames and objects are re-scored from their stored vectors."""
    nf, no = len(shard.frames), len(shard.objects)
    qq = q[None, :].astype(np.float32)
    fr_all = shard.objects["frame_row"].to_numpy(np.int64)
    hits = {}
    for table, n in (("frames", nf), ("objects", no)):
        if n:
            scores, ids = shard.table(table).top(qq, min(n, n_cand), nprobe=params.nprobe,
                                                 ef_search=params.ef_search)
            found = ids[0] >= 0
            hits[table] = (ids[0][found], scores[0][found] if scores is not None else None)
    rows = [hits["frames"][0]] if "frames" in hits else []
    if "objects" in hits:
        rows.append(fr_all[hits["objects"][0]])
    cand = np.unique(np.concatenate(rows)) if rows else np.zeros(0, np.int64)
    if cand.size == 0:
        return None
    fs = _rescore(shard.table("frames"), cand, q, hits.get("frames"))
    # objects are stored sorted by frame row: each candidate frame's objects are one slice
    lo = np.searchsorted(fr_all, cand, side="left")
    hi = np.searchsorted(fr_all, cand, side="right")
    counts = hi - lo
    obj = np.repeat(lo - np.cumsum(counts) + counts, counts) + np.arange(counts.sum())
    local = np.repeat(np.arange(cand.size), counts)
    os_ = _rescore(shard.table("objects"), obj, q, hits.get("objects")) if obj.size \
        else np.zeros(0, np.float32)
    valid = ~shard.objects["is_background"].to_numpy(bool)[obj]
    if allowed is not None:
        valid &= allowed[obj]
    best, arg = _best_objects(cand.size, local, os_, valid, obj)
    return (cand + frame_offset, fs, best, np.where(arg >= 0, arg + object_offset, -1))


def _rescore(table, ids: np.ndarray, q: np.ndarray, hit: tuple | None) -> np.ndarray:
    """Scores of the sorted ``ids``: FAISS's own where ``hit`` (ids, scores) has them, else the stored
    vectors times ``q``; NaN (an invalid stored vector) becomes -inf."""
    out = np.empty(ids.size, np.float32)
    known = np.zeros(ids.size, bool)
    if hit is not None and hit[1] is not None and hit[0].size:
        pos = np.searchsorted(ids, hit[0])
        inside = pos < ids.size
        inside[inside] &= ids[pos[inside]] == hit[0][inside]
        out[pos[inside]] = hit[1][inside]
        known[pos[inside]] = True
    if not known.all():
        out[~known] = table.scores_of(ids[~known], q)
    return _finite(out)


def _finite(scores: np.ndarray) -> np.ndarray:
    """Scores with NaN (from an invalid stored vector) replaced by -inf."""
    return np.where(np.isnan(scores), -np.inf, scores).astype(np.float32)


def _as_query_vector(index: Index, query: np.ndarray) -> np.ndarray:
    q = np.asarray(query, dtype=np.float32).reshape(-1)
    dim = (index.manifest.get("encoder") or {}).get("dim")
    if dim is not None and q.size != dim:
        raise QueryError(f"query vector has dimension {q.size}, the index's vectors {dim}")
    norm = float(np.linalg.norm(q))
    if not np.isfinite(norm) or norm == 0:
        raise QueryError("query vector is zero or not finite")
    return q / norm


def _as_query_matrix(index: Index, queries: np.ndarray) -> np.ndarray:
    """(q, d) float32 rows L2-normalised; a single (d,) vector is one row."""
    q = np.asarray(queries, dtype=np.float32)
    if q.ndim == 1:
        q = q[None, :]
    if q.ndim != 2:
        raise QueryError(f"query vectors must be a (queries, dimension) array, got shape {q.shape}")
    dim = (index.manifest.get("encoder") or {}).get("dim")
    if dim is not None and q.shape[1] != dim:
        raise QueryError(f"query vectors have dimension {q.shape[1]}, the index's vectors {dim}")
    norms = np.linalg.norm(q, axis=1)
    bad = np.flatnonzero(~np.isfinite(norms) | (norms == 0))
    if bad.size:
        raise QueryError(f"query vector {int(bad[0])} (of {len(q)}) is zero or not finite"
                         + (f", and {bad.size - 1} more" if bad.size > 1 else ""))
    return q / norms[:, None]

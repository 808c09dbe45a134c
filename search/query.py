"""Text or image -> ranked frames, fusing frame and object evidence.

Fusion of a frame's score s_f with its best object's score s_o (max over its non-background objects):
``frame``: s_f; ``object``: s_o (frames without objects fall back to s_f); ``max``: max(s_f, s_o);
``weighted``: (1 - w) * s_f + w * s_o (frames without objects: s_o = s_f).

Small indexes (or flat ones) are scored exactly: every stored frame vector and every object vector against
the query and a per-frame max, read from the stored (memory-mapped) float16 codes (``Shard.scores``: blocks
for flat tables, FAISS's list scanner for IVF ones; no float32 copy of the vectors is kept);
``score_frames_batch`` scores many queries and fusion modes per matmul. Big approximate indexes (IVF, HNSW)
first take top candidates from FAISS (frames and objects) per shard, then score the union of candidate
frames and their objects exactly (FAISS's own scores for its hits, the stored codes for the rest); when
filters leave fewer than k candidates, the exact path runs instead.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from search.cpus import usable_cores
from search.encoder import Encoder
from search.errors import IndexFormatError, ModelMismatchError, QueryError
from search.store import Index, Shard

Fusion = Literal["frame", "object", "max", "weighted"]
FUSIONS: tuple[str, ...] = ("frame", "object", "max", "weighted")

EXACT_LIMIT = 200_000        # vectors (frames + objects) of the searched shards scored exactly
CANDIDATES = 1024            # FAISS candidates per table and shard, at least (more for bigger k)
_THREADS = usable_cores()      # shards whose candidates are re-scored at once
QUERY_BLOCK = 64             # queries per matmul in score_frames_batch: bounds the (queries, objects) matrix
RESULT_COLUMNS = ("rank", "score", "frame_score", "object_score", "gid", "site", "video_id", "video_path",
                  "frame_index", "time", "place", "date", "track_id", "x0", "y0", "x1", "y1", "mask_rle")
_MONTH = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")


@dataclass(frozen=True)
class Filters:
    sites: tuple[str, ...] = ()
    places: tuple[str, ...] = ()
    date_from: str = ""      # "YYYY-MM", inclusive
    date_to: str = ""        # "YYYY-MM", inclusive


# -- scoring ---------------------------------------------------------------------------------------

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


def _shard_exact(shard: Shard, q: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frame sims, best object sims and best object rows of every frame of one shard."""
    fs = shard.scores("frames", q[None, :])[0]
    objects = shard.objects
    if len(objects) == 0:
        return fs, np.full(len(fs), -np.inf, np.float32), np.full(len(fs), -1, np.int64)
    os_ = shard.scores("objects", q[None, :])[0]
    valid = ~objects["is_background"].to_numpy(dtype=bool) & (os_ > -np.inf)
    best, arg = _best_objects(len(fs), objects["frame_row"].to_numpy(np.int64), os_, valid,
                              np.arange(len(objects), dtype=np.int64))
    return fs, best, arg


def _exact(index: Index, q: np.ndarray, sites: list[str]) -> tuple[np.ndarray, ...]:
    """(gids, frame sims, object sims, best object global rows) over every frame of ``sites``."""
    parts = []
    for site in sites:
        shard = index.shards[site]
        fs, best, arg = _shard_exact(shard, q)
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
    fs = shard.scores("frames", q)
    best = np.full(fs.shape, -np.inf, np.float32)
    if len(shard.objects):
        background, starts, frame_rows = _object_runs(shard)
        sims = shard.scores("objects", q)
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


def _candidates(index: Index, q: np.ndarray, sites: list[str], n_cand: int) -> tuple[np.ndarray, ...]:
    """Like ``_exact`` but only for the union of FAISS's top frames and the frames of its top objects, shard
    by shard in threads (FAISS and numpy release the GIL; re-scoring reads scattered codes of
    memory-mapped files, so it waits on page faults as much as on arithmetic)."""
    from concurrent.futures import ThreadPoolExecutor
    work = [(site, index.frame_offset(site), index.object_offset(site)) for site in sites]
    if len(work) > 1 and _THREADS > 1:
        with ThreadPoolExecutor(min(_THREADS, len(work)), thread_name_prefix="candidates") as pool:
            parts = list(pool.map(lambda w: _shard_candidates(index.shards[w[0]], q, n_cand, w[1], w[2]), work))
    else:
        parts = [_shard_candidates(index.shards[site], q, n_cand, f0, o0) for site, f0, o0 in work]
    parts = [p for p in parts if p is not None]
    if not parts:
        return (np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))
    return tuple(np.concatenate(p) for p in zip(*parts))


def _shard_candidates(shard: Shard, q: np.ndarray, n_cand: int, frame_offset: int,
                      object_offset: int) -> tuple[np.ndarray, ...] | None:
    """(gids, frame sims, best object sims, best object global rows) of one shard's candidate frames. Scores
    FAISS returned with its hits are kept (the CPU index scores the stored codes, as re-scoring does);
    only the other candidate frames and objects are re-scored from their stored vectors."""
    from search.faiss_index import search_scored
    nf, no = len(shard.frames), len(shard.objects)
    qq = q[None, :].astype(np.float32)
    fr_all = shard.objects["frame_row"].to_numpy(np.int64)
    hits = {}
    for table, faiss_idx, cpu_idx, n in (("frames", shard.frame_index, shard.cpu_frame_index, nf),
                                         ("objects", shard.object_index, shard.cpu_object_index, no)):
        if n:
            scores, ids = search_scored(faiss_idx, qq, min(n, n_cand))
            found = ids[0] >= 0
            trusted = faiss_idx is cpu_idx           # a GPU copy may score with other rounding
            hits[table] = (ids[0][found], scores[0][found] if trusted else None)
    rows = [hits["frames"][0]] if "frames" in hits else []
    if "objects" in hits:
        rows.append(fr_all[hits["objects"][0]])
    cand = np.unique(np.concatenate(rows)) if rows else np.zeros(0, np.int64)
    if cand.size == 0:
        return None
    fs = _rescore(shard.cpu_frame_index, cand, q, hits.get("frames"))
    # objects are stored sorted by frame row: each candidate frame's objects are one slice
    lo = np.searchsorted(fr_all, cand, side="left")
    hi = np.searchsorted(fr_all, cand, side="right")
    counts = hi - lo
    obj = np.repeat(lo - np.cumsum(counts) + counts, counts) + np.arange(counts.sum())
    local = np.repeat(np.arange(cand.size), counts)
    os_ = _rescore(shard.cpu_object_index, obj, q, hits.get("objects")) if obj.size \
        else np.zeros(0, np.float32)
    valid = ~shard.objects["is_background"].to_numpy(bool)[obj]
    best, arg = _best_objects(cand.size, local, os_, valid, obj)
    return (cand + frame_offset, fs, best, np.where(arg >= 0, arg + object_offset, -1))


def _rescore(faiss_idx, ids: np.ndarray, q: np.ndarray, hit: tuple | None) -> np.ndarray:
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
        from search.faiss_index import scores_of_ids
        out[~known] = scores_of_ids(faiss_idx, ids[~known], q)
    return _finite(out)


def _finite(scores: np.ndarray) -> np.ndarray:
    """Scores with NaN (from an invalid stored vector) replaced by -inf."""
    return np.where(np.isnan(scores), -np.inf, scores).astype(np.float32)


# -- queries and filters ---------------------------------------------------------------------------

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


def encode_query(index: Index, encoder: Encoder | None, query: str | np.ndarray) -> tuple[np.ndarray, list[str]]:
    """The query vector and notes for the caller: a text (empty refused, long ones truncated and said so),
    an (H, W, 3) image ("more like this") or a ready vector."""
    from search.encoder import describe, same_space
    notes: list[str] = []
    if isinstance(query, np.ndarray) and query.ndim == 1:
        return _as_query_vector(index, query), notes
    if encoder is None:
        raise QueryError("an encoder is needed to encode a text or image query")
    built = index.manifest.get("encoder")
    if built and not same_space(built, encoder.identity()):
        raise ModelMismatchError(f"the index at {index.root} was built with {describe(built)}, the query "
                                 f"encoder is {describe(encoder.identity())}")
    if encoder.random_weights:
        notes.append("the query encoder has random weights: scores are meaningless (tests and benchmarks only)")
    if isinstance(query, str):
        text = " ".join(query.split())
        if not text:
            raise QueryError("the query text is empty")
        if not encoder.fits_context(text):
            notes.append(f"the query is longer than the text encoder's context of {encoder.context_length} "
                         f"tokens and was truncated")
        return encoder.encode_text([text])[0], notes
    img = np.asarray(query)
    if img.ndim not in (2, 3) or img.size == 0:
        raise QueryError(f"an image query must be (H, W, 3) RGB, got shape {img.shape}")
    return encoder.encode_images([img])[0], notes


def _check_month(value: str, what: str) -> str:
    if value and not _MONTH.match(value):
        raise QueryError(f"{what} must be YYYY-MM, got {value!r}")
    return value


def selected_sites(index: Index, filters: Filters) -> list[str]:
    """The shards a query reads; QueryError for a site the index does not know."""
    if not filters.sites:
        return list(index.shards)
    for site in filters.sites:
        if site not in index.shards:
            if site in index.errors:
                raise QueryError(f"the shard of site {site!r} could not be read: {index.errors[site]}")
            at_place = sorted(set(index.frames.loc[index.frames["place"].astype(str).str.lower() == site.lower(),
                                                   "site"].astype(str)))
            if at_place:
                raise QueryError(f"unknown site {site!r}: that is a place; filter by place with --place {site} "
                                 f"(its sites: {', '.join(at_place)})")
            raise QueryError(f"unknown site {site!r}; the index has: {', '.join(index.shards) or 'no sites'}")
    return [s for s in index.shards if s in set(filters.sites)]


def filter_mask(index: Index, filters: Filters) -> np.ndarray:
    """Boolean mask over all frames (gid order) of the frames the filters keep."""
    f = index.frames
    keep = np.ones(len(f), bool)
    if filters.sites:
        selected_sites(index, filters)
        keep &= f["site"].isin(filters.sites).to_numpy()
    if filters.places:
        known = sorted(set(f["place"].astype(str)))
        lower = {p.lower() for p in known}
        unknown = [p for p in filters.places if p.lower() not in lower]
        if unknown:
            raise QueryError(f"unknown place {unknown[0]!r}; the index has: {', '.join(known) or 'no places'}")
        keep &= f["place"].astype(str).str.lower().isin({p.lower() for p in filters.places}).to_numpy()
    d_from = _check_month(filters.date_from, "--date-from")
    d_to = _check_month(filters.date_to, "--date-to")
    if d_from and d_to and d_from > d_to:
        raise QueryError(f"the date range is empty: {d_from} is after {d_to}")
    if d_from or d_to:
        dates = f["date"].astype(str).to_numpy()
        has = dates != ""
        if d_from:
            has &= dates >= d_from
        if d_to:
            has &= dates <= d_to
        keep &= has
    return keep


def _score(index: Index, q: np.ndarray, sites: list[str], keep: np.ndarray, k: int,
           exact: bool | None) -> tuple[tuple[np.ndarray, ...], list[str]]:
    notes: list[str] = []
    n_vectors = sum(len(index.shards[s].frames) + len(index.shards[s].objects) for s in sites)
    approximate = any(index.shards[s].index_type != "flat" for s in sites)
    if exact is None:
        exact = not approximate or n_vectors <= EXACT_LIMIT
    if not exact:
        got = _candidates(index, q, sites, max(CANDIDATES, 20 * k))
        if int(keep[got[0]].sum()) >= k:
            return got, notes
        notes.append("too few approximate candidates passed the filters: scored every frame exactly")
    return _exact(index, q, sites), notes


def _rows(index: Index, gids: np.ndarray, fused: np.ndarray, fs: np.ndarray, best: np.ndarray,
          arg: np.ndarray) -> pd.DataFrame:
    frames = index.frames
    take = frames.iloc[gids]
    out = pd.DataFrame({
        "rank": np.arange(1, len(gids) + 1), "score": fused, "frame_score": fs,
        "object_score": np.where(np.isfinite(best), best, np.nan).astype(np.float32), "gid": gids,
    })
    for col in ("site", "video_id", "video_path", "frame_index", "time", "place", "date"):
        out[col] = take[col].to_numpy()
    has = arg >= 0
    objs = index.objects
    track = np.full(len(gids), -1, np.int64)
    box = np.full((len(gids), 4), -1, np.int64)
    masks = np.full(len(gids), "", dtype=object)
    if has.any():
        o = objs.iloc[arg[has]]
        track[has] = o["track_id"].to_numpy(np.int64)
        box[has] = o[["x0", "y0", "x1", "y1"]].to_numpy(np.int64)
        masks[has] = o["mask_rle"].to_numpy()
    out["track_id"] = track
    out[["x0", "y0", "x1", "y1"]] = box
    out["mask_rle"] = masks
    return out


def search(index: Index, encoder: Encoder, query: str | np.ndarray, *, k: int = 20, fusion: Fusion = "max",
           weight: float = 0.5, filters: Filters = Filters(), group_by: Literal["video"] | None = None,
           exact: bool | None = None) -> pd.DataFrame:
    """Ranked frames for a text (or an (H, W, 3) uint8 image: "more like this"). Columns: rank, score,
    frame_score, object_score, gid, site, video_id, video_path, frame_index, time, place, date, and the
    best object's track_id, x0, y0, x1, y1, mask_rle (empty when none). Raises QueryError for an empty
    query or an unknown site in ``filters``. ``df.attrs['notes']`` says what the caller should know
    (truncated text, skipped shards, random weights). ``exact`` forces (True) or forbids (False) the
    exact path; None chooses by index type and size."""
    _check_fusion(fusion, weight)
    if k < 1:
        raise QueryError(f"k must be at least 1, got {k}")
    if group_by not in (None, "video"):
        raise QueryError(f"group_by must be 'video' or None, got {group_by!r}")
    sites = selected_sites(index, filters)
    keep = filter_mask(index, filters)
    q, notes = encode_query(index, encoder, query)
    notes += [f"site {s} skipped: {why}" for s, why in index.errors.items()] + list(index.notes)
    (gids, fs, best, arg), more = _score(index, q, sites, keep, k, exact)
    notes += more
    fused = fuse(fs, best, fusion, weight)
    valid = np.isfinite(fs)
    if not valid.all():
        notes.append(f"{int((~valid).sum())} frame(s) whose stored vector is invalid were left out "
                     f"(mvk check names the broken files; mvk index rewrites them)")
    sel = keep[gids] & valid
    gids, fs, best, arg, fused = gids[sel], fs[sel], best[sel], arg[sel], fused[sel]
    order = np.lexsort((gids, -fused))
    if group_by == "video":
        vid = index.frames["site"].astype(str).to_numpy()[gids[order]] + "\0" + \
            index.frames["video_id"].astype(str).to_numpy()[gids[order]]
        _, first = np.unique(vid, return_index=True)
        order = order[np.sort(first)]
    order = order[:k]
    out = _rows(index, gids[order], fused[order], fs[order], best[order], arg[order])
    out.attrs["notes"] = notes
    return out


# -- temporal queries ------------------------------------------------------------------------------

TEMPORAL_COLUMNS = ("rank", "score", "site", "video_id", "video_path", "place", "date",
                    "first_gid", "first_time", "first_score", "then_gid", "then_time", "then_score", "gap")


def temporal_search(index: Index, encoder: Encoder, first: str | np.ndarray, then: str | np.ndarray, *,
                    within: float = 10.0, k: int = 20, fusion: Fusion = "max", weight: float = 0.5,
                    filters: Filters = Filters(), group_by: Literal["video"] | None = None,
                    candidates: int = 2000) -> pd.DataFrame:
    """"``first`` then ``then`` within ``within`` seconds in the same video": pairs of frames (a, b) of one
    video with t_a < t_b <= t_a + within, scored by the mean of their fused scores; one row per first
    frame (its best follower), best first. First frames are searched among the ``candidates`` best
    frames for ``first`` (all frames are candidates for ``then``)."""
    if not within > 0:
        raise QueryError(f"--within must be a positive number of seconds, got {within}")
    if k < 1:
        raise QueryError(f"k must be at least 1, got {k}")
    _check_fusion(fusion, weight)
    sites = selected_sites(index, filters)
    keep = filter_mask(index, filters)
    qa, notes = encode_query(index, encoder, first)
    qb, more = encode_query(index, encoder, then)
    notes += [n for n in more if n not in notes]
    notes += [f"site {s} skipped: {why}" for s, why in index.errors.items()]
    gids, fs_a, best_a, _ = _exact(index, qa, sites)
    _, fs_b, best_b, _ = _exact(index, qb, sites)
    sa = np.where(keep[gids] & np.isfinite(fs_a), fuse(fs_a, best_a, fusion, weight), -np.inf)
    sb = np.where(keep[gids] & np.isfinite(fs_b), fuse(fs_b, best_b, fusion, weight), -np.inf)
    frames = index.frames.iloc[gids]
    video = pd.factorize(frames["site"].astype(str) + "\0" + frames["video_id"].astype(str))[0]
    t = frames["time"].to_numpy(np.float64)
    order = np.lexsort((t, video))                       # frames sorted by video, then time
    vs, ts = video[order], t[order]
    pos = np.empty_like(order)
    pos[order] = np.arange(order.size)
    m = min(int(candidates), int(np.isfinite(sa).sum()))
    if m == 0:
        out = pd.DataFrame({c: [] for c in TEMPORAL_COLUMNS})
        out.attrs["notes"] = notes
        return out
    cand = np.argpartition(-sa, m - 1)[:m] if m < sa.size else np.arange(sa.size)
    cand = cand[np.isfinite(sa[cand])]
    # followers of each candidate: the sorted slice (t_a, t_a + within] of the same video
    key = vs.astype(np.float64) * (ts.max() - ts.min() + 2 * within + 1.0) + (ts - ts.min())
    ka = key[pos[cand]]
    lo = np.searchsorted(key, ka, side="right")
    hi = np.searchsorted(key, ka + within, side="right")
    counts = hi - lo
    if counts.sum() == 0:
        out = pd.DataFrame({c: [] for c in TEMPORAL_COLUMNS})
        out.attrs["notes"] = notes + [f"no frame follows a candidate within {within} s"]
        return out
    a_idx = np.repeat(cand, counts)
    b_idx = order[np.repeat(lo - np.cumsum(counts) + counts, counts) + np.arange(counts.sum())]
    pair = (sa[a_idx] + sb[b_idx]) / 2.0
    ok = np.isfinite(pair)
    a_idx, b_idx, pair = a_idx[ok], b_idx[ok], pair[ok]
    best_first = np.lexsort((-pair, a_idx))              # per first frame, its best follower first
    _, keep_first = np.unique(a_idx[best_first], return_index=True)
    sel = best_first[keep_first]
    sel = sel[np.lexsort((gids[a_idx[sel]], -pair[sel]))]
    if group_by == "video":
        _, one = np.unique(video[a_idx[sel]], return_index=True)
        sel = sel[np.sort(one)]
    sel = sel[:k]
    a, b = a_idx[sel], b_idx[sel]
    fa = frames.iloc[a]
    out = pd.DataFrame({
        "rank": np.arange(1, len(sel) + 1), "score": pair[sel].astype(np.float32),
        "site": fa["site"].to_numpy(), "video_id": fa["video_id"].to_numpy(),
        "video_path": fa["video_path"].to_numpy(), "place": fa["place"].to_numpy(), "date": fa["date"].to_numpy(),
        "first_gid": gids[a], "first_time": t[a], "first_score": sa[a].astype(np.float32),
        "then_gid": gids[b], "then_time": t[b], "then_score": sb[b].astype(np.float32), "gap": t[b] - t[a],
    })
    out.attrs["notes"] = notes
    return out

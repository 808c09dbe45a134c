"""Queries: a text, an image or a vector (and sequences of them) -> ranked frames, with filters, grouping and
position constraints. Scoring itself (vectors in, fused frame scores out) is ``search.scoring``; the query
types a front end sends, and the service that runs them, are ``search.queries`` and ``search.service``.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from search.encoder import Encoder
from search.errors import QueryError
from search.identity import check_space
from search.scoring import (CANDIDATES, EXACT_LIMIT, FUSIONS, Fusion, SearchParams, _as_query_vector,
                            _candidates, _check_fusion, _exact, fuse, score_frames, score_frames_batch)

__all__ = ["FUSIONS", "RESULT_COLUMNS", "TEMPORAL_COLUMNS", "Filters", "Fusion", "SearchParams", "encode_query",
           "filter_mask", "fuse", "parse_cells", "score_frames", "score_frames_batch", "search", "selected_sites",
           "sequence_search", "temporal_search"]
from search.shard import Index

RESULT_COLUMNS = ("rank", "score", "frame_score", "object_score", "gid", "site", "video_id", "video_path",
                  "frame_index", "time", "place", "date", "track_id", "x0", "y0", "x1", "y1", "mask_rle")
_MONTH = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")

# Position queries: the frame is cut into a 3x3 grid, cells numbered row by row (0 = top left, 8 = bottom right).
GRID = 3
CELL_NAMES = {"top-left": 0, "top": 1, "top-right": 2, "left": 3, "center": 4, "right": 5,
              "bottom-left": 6, "bottom": 7, "bottom-right": 8}
POSITION_PENALTY = 0.1      # subtracted from the fused score of a frame with no matching object in the cells


@dataclass(frozen=True)
class Filters:
    sites: tuple[str, ...] = ()
    places: tuple[str, ...] = ()
    date_from: str = ""      # "YYYY-MM", inclusive
    date_to: str = ""        # "YYYY-MM", inclusive


# -- queries and filters ---------------------------------------------------------------------------





def encode_query(index: Index, encoder: Encoder | None, query: str | np.ndarray) -> tuple[np.ndarray, list[str]]:
    """The query vector and notes for the caller: a text (empty refused, long ones truncated and said so),
    an (H, W, 3) image ("more like this") or a ready vector."""
    notes: list[str] = []
    if isinstance(query, np.ndarray) and query.ndim == 1:
        return _as_query_vector(index, query), notes
    if encoder is None:
        raise QueryError("an encoder is needed to encode a text or image query")
    check_space(index.manifest.get("encoder") or {}, encoder.identity(), index.root)
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


def parse_cells(text: str | Sequence[int | str]) -> tuple[int, ...]:
    """Grid cells from names (``top-left``, ``center``, ...) or numbers 0..8, comma-separated or a sequence;
    QueryError naming a value outside the grid."""
    items = [s.strip() for s in text.split(",")] if isinstance(text, str) else [str(s).strip() for s in text]
    cells = []
    for item in items:
        if not item:
            continue
        if item.lower() in CELL_NAMES:
            cells.append(CELL_NAMES[item.lower()])
            continue
        try:
            cell = int(item)
        except ValueError:
            cell = -1
        if not 0 <= cell < GRID * GRID:
            raise QueryError(f"cell {item!r} is outside the {GRID}x{GRID} grid: give 0..{GRID * GRID - 1} (row by "
                             f"row from the top left) or one of {', '.join(CELL_NAMES)}")
        cells.append(cell)
    if not cells:
        raise QueryError("no grid cell given for a position query")
    return tuple(sorted(set(cells)))


def object_cells(index: Index) -> np.ndarray:
    """The grid cell (0..8) of every object's box centre, over ``index.objects``."""
    objs = index.objects
    if not len(objs):
        return np.zeros(0, np.int64)
    frames = index.frames
    gid = objs["frame_gid"].to_numpy(np.int64)
    w = np.maximum(frames["width"].to_numpy(np.float64)[gid], 1.0)
    h = np.maximum(frames["height"].to_numpy(np.float64)[gid], 1.0)
    cx = (objs["x0"].to_numpy(np.float64) + objs["x1"].to_numpy(np.float64)) / 2 / w
    cy = (objs["y0"].to_numpy(np.float64) + objs["y1"].to_numpy(np.float64)) / 2 / h
    col = np.clip((cx * GRID).astype(np.int64), 0, GRID - 1)
    row = np.clip((cy * GRID).astype(np.int64), 0, GRID - 1)
    return row * GRID + col


def _score(index: Index, q: np.ndarray, sites: list[str], keep: np.ndarray, k: int, exact: bool | None,
           params: SearchParams = SearchParams(),
           object_mask: np.ndarray | None = None) -> tuple[tuple[np.ndarray, ...], list[str]]:
    notes: list[str] = []
    n_vectors = sum(len(index.shards[s].frames) + len(index.shards[s].objects) for s in sites)
    approximate = any(index.shards[s].index_type != "flat" for s in sites)
    if exact is None:
        tuned = params.nprobe is not None or params.ef_search is not None
        exact = not approximate or (n_vectors <= EXACT_LIMIT and not tuned)
    if not exact:
        got = _candidates(index, q, sites, max(CANDIDATES, 20 * k), params, object_mask)
        if int(keep[got[0]].sum()) >= k:
            return got, notes
        notes.append("too few approximate candidates passed the filters: scored every frame exactly")
    return _exact(index, q, sites, object_mask), notes


def check_search_params(index: Index, params: SearchParams) -> None:
    """QueryError when ``nprobe`` is asked of an index with no IVF table, or ``ef_search`` of one with no HNSW
    table (or either is below 1)."""
    types = {shard.index_type for shard in index.shards.values()}
    for name, value, kind, test in (("nprobe", params.nprobe, "IVF", lambda t: "ivf" in t.lower()),
                                    ("ef_search", params.ef_search, "HNSW", lambda t: "hnsw" in t.lower())):
        if value is None:
            continue
        if int(value) < 1:
            raise QueryError(f"{name} must be at least 1, got {value}")
        if not any(test(t) for t in types):
            raise QueryError(f"{name} applies to {kind} indexes; this index is {', '.join(sorted(types)) or 'empty'}")


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


def search(index: Index, encoder: Encoder | None, query: str | np.ndarray, *, k: int = 20, fusion: Fusion = "max",
           weight: float = 0.5, filters: Filters = Filters(), group_by: Literal["video"] | None = None,
           exact: bool | None = None, params: SearchParams = SearchParams(),
           cells: Sequence[int] = ()) -> pd.DataFrame:
    """Ranked frames for a text, an (H, W, 3) uint8 image or a query vector (d,). Columns: rank, score,
    frame_score, object_score, gid, site, video_id, video_path, frame_index, time, place, date, and the
    best object's track_id, x0, y0, x1, y1, mask_rle (empty when none). Raises QueryError for an empty
    query or an unknown site in ``filters``. ``df.attrs['notes']`` says what the caller should know
    (truncated text, skipped shards, random weights). ``exact`` forces (True) or forbids (False) the
    exact path; None chooses by index type and size (``params`` given: approximate). ``cells`` (grid cells
    0..8): a position query: only objects whose box centre lies in those cells count as a frame's best object;
    a frame with none there is scored as a whole frame (its own vector) less ``POSITION_PENALTY``: down-weighted,
    never dropped."""
    _check_fusion(fusion, weight)
    if k < 1:
        raise QueryError(f"k must be at least 1, got {k}")
    if group_by not in (None, "video"):
        raise QueryError(f"group_by must be 'video' or None, got {group_by!r}")
    check_search_params(index, params)
    sites = selected_sites(index, filters)
    keep = filter_mask(index, filters)
    q, notes = encode_query(index, encoder, query)
    notes += [f"site {s} skipped: {why}" for s, why in index.errors.items()] + list(index.notes)
    object_mask = np.isin(object_cells(index), np.asarray(parse_cells(list(cells)))) if len(cells) else None
    (gids, fs, best, arg), more = _score(index, q, sites, keep, k, exact, params, object_mask)
    notes += more
    fused = fuse(fs, best, fusion, weight)
    if object_mask is not None:
        fused = np.where(np.isfinite(best), fused, fused - POSITION_PENALTY).astype(np.float32)
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
                    "first_gid", "first_time", "first_score", "then_gid", "then_time", "then_score", "gap",
                    "step_gids", "step_times", "step_scores")


def _empty_temporal(notes: list[str]) -> pd.DataFrame:
    out = pd.DataFrame({c: [] for c in TEMPORAL_COLUMNS})
    out.attrs["notes"] = notes
    return out


def temporal_search(index: Index, encoder: Encoder | None, first: str | np.ndarray, then: str | np.ndarray, *,
                    within: float = 10.0, k: int = 20, fusion: Fusion = "max", weight: float = 0.5,
                    filters: Filters = Filters(), group_by: Literal["video"] | None = None,
                    candidates: int = 2000) -> pd.DataFrame:
    """"``first`` then ``then`` within ``within`` seconds in the same video": ``sequence_search`` of two steps."""
    return sequence_search(index, encoder, [first, then], within=within, k=k, fusion=fusion, weight=weight,
                           filters=filters, group_by=group_by, candidates=candidates)


def sequence_search(index: Index, encoder: Encoder | None, steps: Sequence[str | np.ndarray], *,
                    within: float = 10.0, k: int = 20, fusion: Fusion = "max", weight: float = 0.5,
                    filters: Filters = Filters(), group_by: Literal["video"] | None = None,
                    candidates: int = 2000) -> pd.DataFrame:
    """"A then B then C ..." in one video, each step's frame at most ``within`` seconds after the previous one
    (t_1 < t_2 <= t_1 + within, ...): chains of frames scored by the mean of their fused step scores; one row
    per first frame (its best chain), best first. First frames are searched among the ``candidates`` best
    frames of the first step; later steps extend every chain to each frame that may follow, keeping the best
    chain per (first frame, current frame), so the work stays linear in the steps. Columns ``first_*`` are the
    first step, ``then_*`` the last, ``step_*`` every step in order."""
    if len(steps) < 2:
        raise QueryError(f"a temporal query needs at least two steps, got {len(steps)}")
    if not within > 0:
        raise QueryError(f"--within must be a positive number of seconds, got {within}")
    if k < 1:
        raise QueryError(f"k must be at least 1, got {k}")
    _check_fusion(fusion, weight)
    sites = selected_sites(index, filters)
    keep = filter_mask(index, filters)
    notes: list[str] = []
    vectors = []
    for number, step in enumerate(steps, 1):
        if isinstance(step, str) and not " ".join(step.split()):
            raise QueryError(f"the text of step {number} is empty" if number > 1 else "the query text is empty")
        q, more = encode_query(index, encoder, step)
        vectors.append(q)
        notes += [n for n in more if n not in notes]
    notes += [f"site {s} skipped: {why}" for s, why in index.errors.items()]
    scores = []
    gids = np.zeros(0, np.int64)
    for q in vectors:
        gids, fs, best, _ = _exact(index, q, sites)
        scores.append(np.where(keep[gids] & np.isfinite(fs), fuse(fs, best, fusion, weight), -np.inf))
    frames = index.frames.iloc[gids]
    video = pd.factorize(frames["site"].astype(str) + "\0" + frames["video_id"].astype(str))[0]
    t = frames["time"].to_numpy(np.float64)
    order = np.lexsort((t, video))                       # frames sorted by video, then time
    n = order.size
    m = min(int(candidates), int(np.isfinite(scores[0]).sum()))
    if m == 0:
        return _empty_temporal(notes)
    pos = np.empty_like(order)
    pos[order] = np.arange(n)
    vs, ts = video[order], t[order]
    key = vs.astype(np.float64) * (ts.max() - ts.min() + 2 * within + 1.0) + (ts - ts.min())
    s0 = scores[0]
    cand = np.argpartition(-s0, m - 1)[:m] if m < s0.size else np.arange(s0.size)
    cand = cand[np.isfinite(s0[cand])]
    start, end, total, path = cand, cand, s0[cand].astype(np.float64), [cand]
    for step in scores[1:]:
        # followers of each chain's end: the sorted slice (t_end, t_end + within] of the same video
        ke = key[pos[end]]
        lo = np.searchsorted(key, ke, side="right")
        hi = np.searchsorted(key, ke + within, side="right")
        counts = hi - lo
        if counts.sum() == 0:
            return _empty_temporal(notes + [f"no frame follows a candidate within {within} s"])
        chain = np.repeat(np.arange(end.size), counts)
        follower = order[np.repeat(lo - np.cumsum(counts) + counts, counts) + np.arange(counts.sum())]
        extended = total[chain] + step[follower]
        ok = np.isfinite(extended)
        chain, follower, extended = chain[ok], follower[ok], extended[ok]
        if chain.size == 0:
            return _empty_temporal(notes + [f"no frame follows a candidate within {within} s"])
        pair_key = start[chain] * n + follower               # keep the best chain per (first frame, this frame)
        best_first = np.lexsort((-extended, pair_key))
        _, first_of = np.unique(pair_key[best_first], return_index=True)
        kept = best_first[first_of]
        path = [p[chain[kept]] for p in path] + [follower[kept]]
        start, end, total = start[chain[kept]], follower[kept], extended[kept]
    mean = total / len(scores)
    best_per_first = np.lexsort((-mean, start))                # per first frame, its best chain first
    _, one = np.unique(start[best_per_first], return_index=True)
    sel = best_per_first[one]
    sel = sel[np.lexsort((gids[start[sel]], -mean[sel]))]
    if group_by == "video":
        _, one = np.unique(video[start[sel]], return_index=True)
        sel = sel[np.sort(one)]
    sel = sel[:k]
    a, b = path[0][sel], path[-1][sel]
    steps_idx = np.stack([p[sel] for p in path], axis=1) if sel.size else np.zeros((0, len(path)), np.int64)
    step_scores = np.stack([s[steps_idx[:, i]] for i, s in enumerate(scores)], axis=1) if sel.size \
        else np.zeros((0, len(path)))
    fa = frames.iloc[a]
    out = pd.DataFrame({
        "rank": np.arange(1, len(sel) + 1), "score": mean[sel].astype(np.float32),
        "site": fa["site"].to_numpy(), "video_id": fa["video_id"].to_numpy(),
        "video_path": fa["video_path"].to_numpy(), "place": fa["place"].to_numpy(), "date": fa["date"].to_numpy(),
        "first_gid": gids[a], "first_time": t[a], "first_score": scores[0][a].astype(np.float32),
        "then_gid": gids[b], "then_time": t[b], "then_score": scores[-1][b].astype(np.float32), "gap": t[b] - t[a],
        "step_gids": [gids[row].tolist() for row in steps_idx],
        "step_times": [t[row].round(3).tolist() for row in steps_idx],
        "step_scores": [[round(float(v), 4) for v in row] for row in step_scores],
    })
    out.attrs["notes"] = notes
    return out

"""Fusing the rankings of several embedding spaces into one: reciprocal-rank fusion (the default) or the mean of
z-normalised scores. Pure functions over score arrays (every frame scored in every space: ``mvk kis``) and over
ranked result lists (each space's top results: the query service).

RRF (Cormack, Clarke & Buettcher, SIGIR 2009) adds 1 / (60 + rank) over the spaces that rank an item: it needs
no score calibration between models whose similarities live on different scales (CLIP's cosines near 0.3,
SigLIP's near 0.1), which is why the VBS systems that combine models fuse ranks. ``zscore`` (CombSUM over
z-normalised scores, Montague & Aslam 2001) keeps how far ahead an item is in each space; an item a space did
not return counts as that space's lowest score.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from search.errors import QueryError
from search.spaces import RRF_K, SPACE_FUSIONS


def ranks_of(scores: np.ndarray) -> np.ndarray:
    """1-based rank of every item by descending score (ties by position); inf where the score is not finite.

    Float32 scores (what scoring returns) are ranked by one sort of 64-bit keys, the score's bits in an order-
    preserving form above the item's position: unique keys, so the vectorised sort gives the stable order (7x
    faster than ``lexsort`` on 43,797 scores; ``mvk kis`` ranks every frame per query, space and fusion)."""
    s = np.asarray(scores)
    if s.dtype != np.float32:
        s = np.asarray(s, np.float64)
    finite = np.isfinite(s)
    key = np.where(finite, -s, np.inf).astype(s.dtype) + s.dtype.type(0)     # + 0: -0.0 ties with 0.0
    if s.dtype == np.float32 and s.size < 2**32:
        bits = key.view(np.uint32).astype(np.uint64)
        bits = np.where(bits >= 0x80000000, bits ^ 0xFFFFFFFF, bits | 0x80000000)    # float order as unsigned
        keys = np.sort((bits << np.uint64(32)) | np.arange(s.size, dtype=np.uint64))
        order = (keys & np.uint64(0xFFFFFFFF)).astype(np.intp)
    else:
        order = np.lexsort((np.arange(s.size), key))
    ranks = np.empty(s.size, np.float64)
    ranks[order] = np.arange(1, s.size + 1)
    ranks[~finite] = np.inf
    return ranks


def rrf(ranks: Sequence[np.ndarray], k: int = RRF_K) -> np.ndarray:
    """Σ 1 / (k + rank) over the spaces (an inf rank adds nothing); -inf where no space ranks the item."""
    stack = np.stack([np.asarray(r, np.float64) for r in ranks])
    out = np.where(np.isfinite(stack), 1.0 / (k + stack), 0.0).sum(axis=0)
    return np.where(np.isfinite(stack).any(axis=0), out, -np.inf)


def zscores(scores: np.ndarray) -> np.ndarray:
    """(s - mean) / std over the finite scores; NaN where a score is not finite."""
    s = np.asarray(scores, np.float64)
    finite = np.isfinite(s)
    if not finite.any():
        return np.full(s.shape, np.nan)
    mean, std = s[finite].mean(), s[finite].std()
    return np.where(finite, (s - mean) / (std if std > 0 else 1.0), np.nan)


def zscore_mean(scores: Sequence[np.ndarray]) -> np.ndarray:
    """The mean over spaces of z-normalised scores; a space without a score for an item counts its lowest z;
    -inf where no space scores the item."""
    stack = np.stack([zscores(s) for s in scores])
    seen = np.isfinite(stack)
    low = np.array([row[ok].min() if ok.any() else 0.0 for row, ok in zip(stack, seen)])
    filled = np.where(seen, stack, low[:, None])
    return np.where(seen.any(axis=0), filled.mean(axis=0), -np.inf)


def check_method(method: str) -> None:
    if method not in SPACE_FUSIONS:
        raise QueryError(f"unknown space fusion {method!r}; choose one of {', '.join(SPACE_FUSIONS)}")


def fuse_scores(scores: Sequence[np.ndarray], method: str = "rrf") -> np.ndarray:
    """One fused score per item from aligned score arrays of several spaces (-inf: not scored there)."""
    check_method(method)
    if len(scores) == 1:
        return np.asarray(scores[0], np.float64)
    if method == "rrf":
        return rrf([ranks_of(s) for s in scores])
    return zscore_mean(scores)


def fuse_ranked(lists: Sequence[pd.DataFrame], names: Sequence[str], method: str = "rrf", *,
                key: str = "gid") -> pd.DataFrame:
    """One ranked list from each space's ranked results (best first, keyed by ``key``): the rows in fused order,
    each taken from the first space that returned it, ``score`` replaced by the fused score, ``rank`` renumbered
    and a column ``spaces`` giving the item's rank in each space (None where it was not returned).

    Vectorised: the query service fuses 1,000 results per space on every query (BENCHMARKS.md, "Several spaces
    in one index")."""
    check_method(method)
    every = np.concatenate([np.asarray(df[key], np.int64) for df in lists]) if lists else np.zeros(0, np.int64)
    keys, first, inverse = np.unique(every, return_index=True, return_inverse=True)
    bounds = np.cumsum([0, *(len(df) for df in lists)])
    ranks, scores = [], []
    for i, df in enumerate(lists):
        where = inverse.reshape(-1)[bounds[i]:bounds[i + 1]]
        r = np.full(keys.size, np.inf)
        s = np.full(keys.size, -np.inf)
        r[where] = np.arange(1, len(df) + 1)
        s[where] = df["score"].to_numpy(np.float64)
        ranks.append(r)
        scores.append(s)
    fused = rrf(ranks) if method == "rrf" else zscore_mean(scores)
    order = np.lexsort((keys, -fused))
    rows = pd.concat(lists, ignore_index=True).iloc[first[order]].reset_index(drop=True)
    rows["score"] = fused[order].astype(np.float32)
    if "rank" in rows.columns:
        rows["rank"] = np.arange(1, len(rows) + 1)
    rows["spaces"] = [dict(zip(names, per_space)) for per_space in zip(*(_ranks_or_none(r[order]) for r in ranks))]
    return rows


def _ranks_or_none(ranks: np.ndarray) -> list:
    """Ranks as Python ints, None where not finite (the item was not returned)."""
    finite = np.isfinite(ranks)
    out = np.full(ranks.size, None, dtype=object)
    out[finite] = ranks[finite].astype(np.int64).tolist()
    return out.tolist()

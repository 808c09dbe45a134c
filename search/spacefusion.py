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
    """1-based rank of every item by descending score (ties by position); inf where the score is not finite."""
    s = np.asarray(scores, np.float64)
    finite = np.isfinite(s)
    order = np.lexsort((np.arange(s.size), -np.where(finite, s, -np.inf)))
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
    and a column ``spaces`` giving the item's rank in each space (None where it was not returned)."""
    check_method(method)
    keys = pd.unique(np.concatenate([np.asarray(df[key], np.int64) for df in lists])) if lists else np.zeros(0)
    keys = np.asarray(keys, np.int64)
    position = {int(k): i for i, k in enumerate(keys)}
    ranks, scores = [], []
    for df in lists:
        r = np.full(keys.size, np.inf)
        s = np.full(keys.size, -np.inf)
        where = np.array([position[int(k)] for k in df[key]], np.int64)
        r[where] = np.arange(1, len(df) + 1)
        s[where] = df["score"].to_numpy(np.float64)
        ranks.append(r)
        scores.append(s)
    fused = rrf(ranks) if method == "rrf" else zscore_mean(scores)
    order = np.lexsort((keys, -fused))
    rows = pd.concat([df.assign(_space=i) for i, df in enumerate(lists)], ignore_index=True)
    rows = rows.drop_duplicates(key, keep="first").set_index(key, drop=False).loc[keys[order]].reset_index(drop=True)
    rows = rows.drop(columns="_space")
    rows["score"] = fused[order].astype(np.float32)
    if "rank" in rows.columns:
        rows["rank"] = np.arange(1, len(rows) + 1)
    rows["spaces"] = [{name: (int(r[i]) if np.isfinite(r[i]) else None) for name, r in zip(names, ranks)}
                      for i in order]
    return rows

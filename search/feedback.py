"""Relevance feedback: re-ranking from results a user liked and disliked. Pure functions over vectors and scores.

Two models:

- ``bayes_log_scores``: SOMHunter's Bayesian update (Kratochvil et al., "SOMHunter: Video Search with Minimal
  Interaction", MMM 2020; ``ScoreModel::apply_bayes`` in its code, also PraK's). Each frame x carries a relevance
  score; for every liked example l shown among the other displayed results O (at most 64 of them),
  score(x) *= e(x, l) / (e(x, l) + sum_{o in O} e(x, o)), with e(x, y) = exp(-d(x, y) / sigma), d = 1 - cosine
  similarity and sigma = 0.1 (SOMHunter's constant). Explicit dislikes are always among O (SOMHunter treats every
  shown, non-liked frame as O; a dislike says so for certain). The prior is the base query's fused score on the
  same scale, exp(s(x) / sigma), or flat when there is no base query. Computed in log space.
- ``rocchio``: Rocchio's vector update, q' = alpha q + beta mean(liked) - gamma mean(disliked), with SMART's
  classic alpha = 1, beta = 0.75, gamma = 0.15 (Salton and Buckley 1990), then searched like any vector.

Similarities to the examples come from ``search.scoring.score_frames_batch``: an example may be a frame vector
or an object vector, and its similarity to a frame fuses that frame's own vector and its best object's, as every
query does.
"""
from __future__ import annotations

import numpy as np

from search.errors import QueryError

SIGMA = 0.1              # SOMHunter's Bayes constant (distance scale)
MAX_OTHERS = 64          # displayed non-liked results taken into the update (SOMHunter: 64)
ROCCHIO = (1.0, 0.75, 0.15)


def rocchio(base: np.ndarray | None, positives: np.ndarray, negatives: np.ndarray,
            weights: tuple[float, float, float] = ROCCHIO) -> np.ndarray:
    """The updated, L2-normalised query vector; QueryError when nothing is left to search with."""
    alpha, beta, gamma = weights
    d = (base if base is not None else (positives[0] if len(positives) else negatives[0])).shape[-1]
    q = np.zeros(d, np.float64)
    if base is not None:
        q += alpha * np.asarray(base, np.float64)
    if len(positives):
        q += beta * np.asarray(positives, np.float64).mean(axis=0)
    if len(negatives):
        q -= gamma * np.asarray(negatives, np.float64).mean(axis=0)
    norm = float(np.linalg.norm(q))
    if not np.isfinite(norm) or norm < 1e-9:
        raise QueryError("the liked and disliked results cancel out: like at least one result, or keep the query")
    return (q / norm).astype(np.float32)


def bayes_log_scores(prior: np.ndarray | None, liked: np.ndarray, others: np.ndarray,
                     disliked: np.ndarray | None = None, sigma: float = SIGMA) -> np.ndarray:
    """Log relevance of every frame after SOMHunter's update (see the module docstring).

    ``prior``: (N,) base fused scores or None (flat); ``liked``: (L, N) similarity of each liked example to every
    frame; ``others``: (O, N) of each other displayed result; ``disliked``: (K, N) of each disliked one. A like
    multiplies by e(x, l) / (e(x, l) + sum_o e(x, o)) over the others and the dislikes; a dislike by the
    complement of that factor, 1 - e(x, d) / (e(x, d) + sum_o e(x, o)), over the others and the likes.
    Frames whose similarities are not finite get -inf."""
    n = max(np.shape(liked)[-1] if np.size(liked) else 0, np.shape(others)[-1] if np.size(others) else 0,
            np.shape(disliked)[-1] if disliked is not None and np.size(disliked) else 0,
            0 if prior is None else len(prior))
    empty = np.zeros((0, n))
    liked = np.asarray(liked, np.float64) if np.size(liked) else empty
    others = np.asarray(others, np.float64) if np.size(others) else empty
    disliked = np.asarray(disliked, np.float64) if disliked is not None and np.size(disliked) else empty
    out = np.zeros(n, np.float64) if prior is None else np.asarray(prior, np.float64) / sigma
    log_e = lambda sims: -(1.0 - sims) / sigma                      # noqa: E731  (e(x, y) in log space)
    for chosen, competitors, complement in ((liked, np.concatenate([others, disliked]), False),
                                            (disliked, np.concatenate([others, liked]), True)):
        if not len(chosen):
            continue
        log_c = log_e(chosen)                                            # (C, N)
        log_rest = np.logaddexp.reduce(log_e(competitors), axis=0) if len(competitors) else np.full(n, -np.inf)
        log_factor = log_c - np.logaddexp(log_c, log_rest[None, :])     # log e / (e + rest)
        if complement:
            log_factor = np.log1p(-np.minimum(np.exp(log_factor), 1.0 - 1e-12))
        out = out + log_factor.sum(axis=0)
    out[~np.isfinite(out)] = -np.inf
    return out

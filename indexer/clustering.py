"""Hierarchical clustering of attention rows with a symmetric-KL distance (seed 000, Algorithm 1).

Every row starts as a cluster. A round walks the clusters in order; each cluster not yet merged in
this round absorbs every not-yet-merged cluster whose distance to it is below ``tau``, and the group's
new centroid is the plain mean of the absorbed centroids. Rounds repeat until one merges nothing; each
round is one level of the hierarchy (fine -> coarse). Finally every row goes to its nearest centroid.

Vectorised: distances are matrix products (Σ p log p terms plus two cross terms). The greedy walk is
sequential by definition; it runs as a loop over clusters, each step one boolean vector operation, and
computes distance rows in blocks only for the clusters it reaches untaken (``greedy_groups_lazy``):
rows of clusters already absorbed are never computed. ``windowed_cluster`` keeps the cost near-linear in the number of frames: a first pass
inside short windows of frames shrinks each window to a few clusters, then Algorithm 1 runs on all the
window centroids together, so ids are shared by the whole clip (object tracks).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

EPS = 1e-8   # guard for the logs: a probability of 0 contributes 0·log(eps) = 0 to entropy terms


def safe_log(p: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """log(max(p, eps)): finite everywhere, exact where p >= eps."""
    return torch.log(p.clamp_min(eps))


def sym_kl(p: torch.Tensor, q: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Symmetric KL between every row of ``p`` (n, D) and every row of ``q`` (m, D): (n, m).

    KL(p||q) + KL(q||p) = Σ p log p + Σ q log q − Σ p log q − Σ q log p, the cross terms as matrix
    products. Rows should be probability distributions; tiny negatives from rounding are clipped to 0.
    """
    p = p.float()
    q = q.float()
    lp, lq = safe_log(p, eps), safe_log(q, eps)
    ent_p = (p * lp).sum(1)
    ent_q = (q * lq).sum(1)
    d = ent_p[:, None] + ent_q[None, :] - p @ lq.T - lp @ q.T
    return d.clamp_min_(0.0)


def sym_kl_self(p: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """``sym_kl(p, p)`` with one matrix product instead of two (the cross terms are transposes), and an
    exact zero diagonal."""
    p = p.float()
    lp = safe_log(p, eps)
    ent = (p * lp).sum(1)
    cross = p @ lp.T
    d = ent[:, None] + ent[None, :] - cross - cross.T
    d.clamp_min_(0.0)
    d.fill_diagonal_(0.0)
    return d


def nearest_centroid(rows: torch.Tensor, centroids: torch.Tensor, eps: float = EPS,
                     block: int = 8192) -> torch.Tensor:
    """Index of the nearest centroid (symmetric KL) of every row, (n,) long; rows in blocks to bound memory."""
    out = [sym_kl(rows[i:i + block], centroids, eps).argmin(1) for i in range(0, rows.shape[0], block)]
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long, device=rows.device)


def greedy_groups(close: np.ndarray) -> np.ndarray:
    """The greedy walk of one round: ``close`` (K, K) bool, True where two clusters are within tau.
    Cluster i, if not yet taken, takes itself and every untaken j with close[i, j]. Returns the new group
    of every cluster, (K,) int64, groups numbered in walk order."""
    k = close.shape[0]
    group = np.full(k, -1, dtype=np.int64)
    free = np.ones(k, dtype=bool)
    g = 0
    for i in range(k):
        if not free[i]:
            continue
        members = close[i] & free
        members[i] = True
        group[members] = g
        free[members] = False
        g += 1
    return group


def greedy_groups_lazy(centroids: torch.Tensor, tau: float, eps: float = EPS, first_block: int = 32,
                       max_block: int = 512) -> np.ndarray:
    """The same walk as ``greedy_groups`` without the full (K, K) matrix: distance rows are computed only
    for clusters the walk reaches untaken, a block of upcoming ones at a time (block size doubling up to
    ``max_block``). Rows of clusters absorbed before the walk reaches them are never computed, which
    makes a round that merges a lot far cheaper than K²·D; a round that merges nothing costs the same."""
    k = centroids.shape[0]
    p = centroids.float()
    lp = safe_log(p, eps)
    ent = (p * lp).sum(1)
    group = np.full(k, -1, dtype=np.int64)
    free = np.ones(k, dtype=bool)
    g = 0
    pos = 0
    block = first_block
    while pos < k:
        cand = np.flatnonzero(free[pos:])[:block] + pos
        if len(cand) == 0:
            break
        idx = torch.from_numpy(cand).to(p.device)
        dist = ent[idx, None] + ent[None, :] - p[idx] @ lp.T - lp[idx] @ p.T
        close = (dist < tau).cpu().numpy()
        for r, i in enumerate(cand.tolist()):
            if not free[i]:
                continue
            members = close[r] & free
            members[i] = True
            group[members] = g
            free[members] = False
            g += 1
        pos = int(cand[-1]) + 1
        block = min(2 * block, max_block)
    return group


def merge_round(centroids: torch.Tensor, tau: float, eps: float = EPS) -> tuple[torch.Tensor, torch.Tensor]:
    """One round of Algorithm 1: (group of every input cluster (K,) long, new centroids (G, D))."""
    group = torch.from_numpy(greedy_groups_lazy(centroids, tau, eps)).to(centroids.device)
    n_groups = int(group.max()) + 1 if group.numel() else 0
    sums = torch.zeros(n_groups, centroids.shape[1], dtype=torch.float32, device=centroids.device)
    sums.index_add_(0, group, centroids.float())
    counts = torch.bincount(group, minlength=n_groups).to(sums.dtype)
    return group, sums / counts[:, None]


@dataclass
class Hierarchy:
    """Every round of Algorithm 1 on one set of rows.

    ``levels[l]``: (N,) long, the cluster of every input row after round l+1 (by membership), each level a
    coarsening of the one before; ``centroids[l]``: (K_l, D) the centroids of that level. ``labels``:
    (N,) long, every row assigned to its nearest centroid of the last level (the algorithm's output).
    A first round that merges nothing still gives one level (every row alone).
    """

    levels: list[torch.Tensor]
    centroids: list[torch.Tensor]
    labels: torch.Tensor

    @property
    def n_levels(self) -> int:
        return len(self.levels)


def _check_rows(rows: torch.Tensor) -> None:
    if rows.ndim != 2 or rows.shape[0] == 0:
        raise ValueError(f"clustering needs a non-empty (N, D) matrix of rows, got shape {tuple(rows.shape)}")
    if not torch.isfinite(rows).all():
        raise ValueError("clustering rows contain NaN or infinity")


def run_rounds(centroids: torch.Tensor, tau: float, eps: float = EPS, *, max_rounds: int | None = None,
               stop_at: int = 0) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Rounds of Algorithm 1 from ``centroids`` until a round merges nothing (or ``max_rounds``, or the
    count is at most ``stop_at``). Returns the group of every input centroid after each round and the
    centroids after each round; at least one round is always run and kept."""
    member = torch.arange(centroids.shape[0], device=centroids.device)
    levels: list[torch.Tensor] = []
    cents: list[torch.Tensor] = []
    current = centroids.float()
    while True:
        group, merged = merge_round(current, tau, eps)
        changed = merged.shape[0] < current.shape[0]
        if changed or not levels:
            member = group[member]
            levels.append(member)
            cents.append(merged)
        current = merged
        if not changed or (max_rounds is not None and len(levels) >= max_rounds) or current.shape[0] <= stop_at:
            return levels, cents


def hierarchical_cluster(rows: torch.Tensor, tau: float = 1.0, eps: float = EPS) -> Hierarchy:
    """Algorithm 1 on all ``rows`` (N, D) at once: O(N²·D) for the first round, so for a few thousand rows;
    long clips go through ``windowed_cluster``."""
    _check_rows(rows)
    levels, cents = run_rounds(rows, tau, eps)
    return Hierarchy(levels, cents, nearest_centroid(rows, cents[-1], eps))


@dataclass
class WindowedClustering:
    """Result of ``windowed_cluster``: ``hierarchy`` is Algorithm 1 over the window centroids; the row
    labels are mapped through it. ``levels[l]``: (N,) long per row, membership after global round l+1;
    ``labels``: (N,) nearest centroid of level ``assigned_level``; ``window_clusters``: how many clusters
    the first pass left in total."""

    levels: list[torch.Tensor]
    centroids: list[torch.Tensor]
    labels: torch.Tensor
    assigned_level: int
    window_clusters: int

    @property
    def n_levels(self) -> int:
        return len(self.levels)


def windowed_cluster(rows_of: Callable[[int], torch.Tensor], n_windows: int, tau: float = 1.0,
                     eps: float = EPS, *, window_max_clusters: int = 32, level: int | None = None,
                     cache_bytes: int = 512 * 2**20) -> WindowedClustering:
    """Algorithm 1 in two passes so the cost grows about linearly with the clip.

    ``rows_of(w)`` gives the rows (n_w, D) of window w (all windows share the same columns: the same
    key frames). First pass, per window: merge rounds until a round merges nothing or at most
    ``window_max_clusters`` clusters are left (at least one round). Second pass: Algorithm 1 on all the
    window centroids together; its rounds are the levels. Final: every row to its nearest centroid of
    ``level`` (None or past the last: the last). Rows are kept between the passes up to ``cache_bytes``
    and recomputed by ``rows_of`` after that.
    """
    if n_windows < 1:
        raise ValueError("windowed_cluster needs at least one window")
    cache: dict[int, torch.Tensor] = {}
    cached = 0
    window_of_row: list[torch.Tensor] = []
    window_cents: list[torch.Tensor] = []
    offset = 0
    for w in range(n_windows):
        rows = rows_of(w)
        if rows.ndim != 2 or rows.shape[0] == 0:
            raise ValueError(f"window {w}: expected a non-empty (n, D) matrix of rows, got {tuple(rows.shape)}")
        levels, cents = run_rounds(rows, tau, eps, stop_at=window_max_clusters)
        window_of_row.append(levels[-1] + offset)
        window_cents.append(cents[-1])
        offset += cents[-1].shape[0]
        size = rows.numel() * rows.element_size()
        if cached + size <= cache_bytes:
            cache[w] = rows
            cached += size
    all_cents = torch.cat(window_cents)
    row_to_wc = torch.cat(window_of_row)
    g_levels, g_cents = run_rounds(all_cents, tau, eps)
    levels = [lv[row_to_wc] for lv in g_levels]
    chosen = len(g_levels) - 1 if level is None else max(0, min(level, len(g_levels) - 1))
    target = g_cents[chosen]
    labels = torch.cat([nearest_centroid(cache[w] if w in cache else rows_of(w), target, eps)
                        for w in range(n_windows)])
    return WindowedClustering(levels, g_cents, labels, chosen, int(all_cents.shape[0]))

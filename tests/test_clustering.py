"""Algorithm 1 on constructed distributions with known groups: recovery, tau, hierarchy, determinism, KL edges."""
from __future__ import annotations

import numpy as np
import torch

from indexer.clustering import (greedy_groups, greedy_groups_lazy, hierarchical_cluster, sym_kl, sym_kl_self,
                                windowed_cluster)
from indexer.metrics import adjusted_rand_index


def grouped_rows(n_groups: int = 4, per_group: int = 25, dim: int = 80, noise: float = 0.3,
                 seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """Rows near one of ``n_groups`` distributions with disjoint supports, shuffled; returns (rows, truth)."""
    g = torch.Generator().manual_seed(seed)
    width = dim // n_groups
    rows, truth = [], []
    for i in range(n_groups):
        base = torch.zeros(dim)
        base[i * width:(i + 1) * width] = 1.0
        for _ in range(per_group):
            r = base + noise * torch.rand(dim, generator=g)
            rows.append(r / r.sum())
            truth.append(i)
    perm = torch.randperm(len(rows), generator=g)
    return torch.stack(rows)[perm], np.array(truth)[perm.numpy()]


def reference_sym_kl(p: torch.Tensor, q: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Σ (p − q)(log p − log q) by broadcasting: the definition, for small inputs."""
    lp, lq = torch.log(p.clamp_min(eps)), torch.log(q.clamp_min(eps))
    return ((p[:, None] - q[None]) * (lp[:, None] - lq[None])).sum(-1)


def test_sym_kl_matches_definition_and_is_symmetric() -> None:
    g = torch.Generator().manual_seed(1)
    p = torch.softmax(torch.randn(7, 30, generator=g) * 3, 1)
    q = torch.softmax(torch.randn(5, 30, generator=g) * 3, 1)
    assert torch.allclose(sym_kl(p, q), reference_sym_kl(p, q), atol=1e-4)
    assert torch.allclose(sym_kl(p, q), sym_kl(q, p).T, atol=1e-4)
    assert torch.allclose(sym_kl_self(p), reference_sym_kl(p, p), atol=1e-4)


def test_kl_edge_cases_zeros_and_identical_rows() -> None:
    one_hot = torch.eye(4)                                   # rows full of exact zeros
    d = sym_kl(one_hot, one_hot)
    assert torch.isfinite(d).all()
    assert torch.all(torch.diag(d) == 0)
    assert d[0, 1] > 30                                      # disjoint supports: large, capped by eps
    same = torch.full((3, 10), 0.1)
    assert torch.all(sym_kl_self(same) < 1e-5)
    assert torch.all(sym_kl(same, same) < 1e-5)
    h = hierarchical_cluster(torch.cat([one_hot, one_hot]), tau=1.0)
    assert h.labels.tolist()[:4] == h.labels.tolist()[4:]    # identical rows end together
    assert len(set(h.labels.tolist())) == 4


def test_exact_recovery_of_known_groups() -> None:
    rows, truth = grouped_rows()
    h = hierarchical_cluster(rows, tau=1.0)
    assert adjusted_rand_index(truth, h.labels.numpy()) == 1.0
    assert h.centroids[-1].shape[0] == 4
    assert torch.allclose(h.centroids[-1].sum(1), torch.ones(4), atol=1e-5)   # centroids stay distributions


def test_tau_behaviour() -> None:
    rows, truth = grouped_rows()
    within = sym_kl_self(rows)[torch.from_numpy(truth[:, None] == truth[None])]
    tiny = hierarchical_cluster(rows, tau=float(within[within > 0].min()) / 2)
    assert len(tiny.labels.unique()) == len(rows)            # nothing is that close: every row alone
    assert tiny.n_levels == 1
    huge = hierarchical_cluster(rows, tau=1e4)
    assert len(huge.labels.unique()) == 1
    counts = [len(hierarchical_cluster(rows, tau=t).labels.unique()) for t in (0.05, 0.3, 1.0, 100.0)]
    assert counts == sorted(counts, reverse=True)            # larger tau, never more clusters
    assert counts[2] == 4


def test_hierarchy_coarsens_monotonically() -> None:
    # noisy groups: the first round leaves many small clusters, whose means are close enough to merge later
    rows, truth = grouped_rows(noise=1.0, per_group=30)
    h = hierarchical_cluster(rows, tau=0.5)
    assert h.n_levels >= 2
    sizes = [int(lv.max()) + 1 for lv in h.levels]
    assert sizes == sorted(sizes, reverse=True) and sizes[0] > sizes[-1]
    for fine, coarse in zip(h.levels, h.levels[1:]):          # each level a coarsening of the one before
        pairs = set(zip(fine.tolist(), coarse.tolist()))
        assert len({f for f, _ in pairs}) == len(pairs)
    for lv, c in zip(h.levels, h.centroids):
        assert c.shape[0] == int(lv.max()) + 1
    assert adjusted_rand_index(truth, h.labels.numpy()) == 1.0


def test_deterministic() -> None:
    rows, _ = grouped_rows(noise=1.5, seed=4)
    a = hierarchical_cluster(rows, tau=0.3)
    b = hierarchical_cluster(rows.clone(), tau=0.3)
    assert torch.equal(a.labels, b.labels)
    assert all(torch.equal(x, y) for x, y in zip(a.levels, b.levels))


def test_lazy_walk_equals_full_matrix_walk() -> None:
    g = torch.Generator().manual_seed(5)
    for scale in (0.5, 3.0, 8.0):
        rows = torch.softmax(torch.randn(400, 50, generator=g) * scale, 1)
        for tau in (0.3, 1.0, 3.0):
            full = greedy_groups((sym_kl_self(rows) < tau).numpy())
            assert np.array_equal(full, greedy_groups_lazy(rows, tau, first_block=8, max_block=64))


def test_windowed_recovers_groups_with_shared_ids_across_windows() -> None:
    rows, truth = grouped_rows(per_group=40)
    windows = torch.split(rows, 32)
    calls: list[int] = []

    def rows_of(w: int) -> torch.Tensor:
        calls.append(w)
        return windows[w]

    res = windowed_cluster(rows_of, len(windows), tau=1.0, window_max_clusters=1, cache_bytes=0)
    assert adjusted_rand_index(truth, res.labels.numpy()) == 1.0
    assert calls == list(range(len(windows))) * 2              # nothing cached: recomputed for the assignment
    assert res.window_clusters >= 4
    for fine, coarse in zip(res.levels, res.levels[1:]):
        assert len(set(zip(fine.tolist(), coarse.tolist()))) == len(set(fine.tolist()))

"""Spatio-temporal attention rows: every patch of every frame attends to the patches of the key frames.

For query patches of all T sampled frames and key patches of T' key frames (every r-th frame, at least
one, the tail of the clip covered), ``softmax(q · kᵀ / √d)`` per head, averaged over heads, gives one
probability row of length T'·h·w per patch. The matrix is (T·h·w) x (T'·h·w): memory grows with T·T',
never T². Rows are computed for a block of query frames at a time (``attention_rows``), so a caller can
stream windows of frames without holding every row.
"""
from __future__ import annotations

import math

import torch


def key_frame_indices(n_frames: int, stride: int) -> list[int]:
    """One key frame per block of ``stride`` consecutive frames, the middle frame of the block; the last
    block may be shorter and still gets one, so the tail of the clip is covered and T' = ceil(T / r)."""
    if n_frames < 1:
        raise ValueError("key_frame_indices needs at least one frame")
    if stride < 1:
        raise ValueError(f"key-frame stride must be >= 1, got {stride}")
    starts = range(0, n_frames, stride)
    return [s + (min(stride, n_frames - s) - 1) // 2 for s in starts]


def flatten_keys(k: torch.Tensor, key_idx: list[int] | torch.Tensor) -> torch.Tensor:
    """Keys of the key frames, (T, heads, n, d) -> (heads, T'·n, d), key frames in order, patches row-major."""
    idx = torch.as_tensor(key_idx, device=k.device, dtype=torch.long)
    kk = k.index_select(0, idx)                      # (T', heads, n, d)
    t, heads, n, d = kk.shape
    return kk.permute(1, 0, 2, 3).reshape(heads, t * n, d)


def attention_rows(q: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """Head-averaged attention of every query patch over all key patches.

    ``q``: (T, heads, n, d) queries of a block of frames; ``keys``: (heads, M, d) from ``flatten_keys``.
    Returns (T·n, M) float32 rows, each summing to 1. Heads are accumulated one at a time so the peak
    holds two (T·n, M) buffers, not one per head.
    """
    t, heads, n, d = q.shape
    if keys.shape[0] != heads or keys.shape[2] != d:
        raise ValueError(f"queries {tuple(q.shape)} and keys {tuple(keys.shape)} disagree on heads or dim")
    scale = 1.0 / math.sqrt(d)
    qf = q.float().permute(1, 0, 2, 3).reshape(heads, t * n, d)
    kf = keys.float()
    out = torch.zeros(t * n, kf.shape[1], dtype=torch.float32, device=q.device)
    for h in range(heads):
        logits = (qf[h] * scale) @ kf[h].T
        out += torch.softmax(logits, dim=-1)
    out /= heads
    return out


def spatiotemporal_attention(q: torch.Tensor, k: torch.Tensor, key_stride: int = 10) -> torch.Tensor:
    """All rows at once for a whole clip: (T·n, T'·n). Convenient for small clips and tests; the
    segmentation streams windows through ``attention_rows`` instead."""
    keys = flatten_keys(k, key_frame_indices(q.shape[0], key_stride))
    return attention_rows(q, keys)

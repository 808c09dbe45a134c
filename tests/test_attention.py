"""Spatio-temporal attention rows: key-frame choice, the softmax itself, memory T x T'."""
from __future__ import annotations

import math

import pytest
import torch

from indexer.attention import attention_rows, flatten_keys, key_frame_indices, spatiotemporal_attention


def test_key_frames_every_rth_with_tail_covered() -> None:
    assert key_frame_indices(60, 10) == [4, 14, 24, 34, 44, 54]
    assert key_frame_indices(25, 10) == [4, 14, 22]          # the 5-frame tail gets its own key frame
    assert key_frame_indices(3, 10) == [1]                   # at least one
    assert key_frame_indices(1, 10) == [0]
    assert key_frame_indices(5, 1) == [0, 1, 2, 3, 4]
    for t in range(1, 40):
        keys = key_frame_indices(t, 7)
        assert len(keys) == math.ceil(t / 7)
        assert all(abs(f - k) < 7 for f in range(t) for k in keys[f // 7:f // 7 + 1])
    with pytest.raises(ValueError):
        key_frame_indices(0, 10)
    with pytest.raises(ValueError):
        key_frame_indices(5, 0)


def test_rows_equal_head_averaged_softmax() -> None:
    g = torch.Generator().manual_seed(0)
    t, heads, n, d = 4, 3, 6, 8
    q = torch.randn(t, heads, n, d, generator=g)
    k = torch.randn(t, heads, n, d, generator=g)
    rows = spatiotemporal_attention(q, k, key_stride=2)       # key frames 0 and 2
    assert rows.shape == (t * n, 2 * n)
    kk = torch.cat([k[0], k[2]], dim=1)                        # (heads, 2n, d)
    expected = torch.stack([torch.softmax(q[:, h].reshape(t * n, d) @ kk[h].T / math.sqrt(d), -1)
                            for h in range(heads)]).mean(0)
    assert torch.allclose(rows, expected, atol=1e-6)
    assert torch.allclose(rows.sum(1), torch.ones(t * n), atol=1e-5)
    # row order: frame-major, then patch; column order: key frame, then patch
    assert torch.allclose(attention_rows(q[1:2], flatten_keys(k, [0, 2])), rows[n:2 * n], atol=1e-6)


def test_mismatched_heads_are_refused() -> None:
    with pytest.raises(ValueError, match="disagree"):
        attention_rows(torch.zeros(1, 2, 3, 4), torch.zeros(3, 5, 4))


def test_memory_grows_with_t_times_key_frames() -> None:
    q = torch.randn(40, 1, 4, 2)
    assert spatiotemporal_attention(q, q, key_stride=10).shape == (160, 16)   # 4 key frames, not 40

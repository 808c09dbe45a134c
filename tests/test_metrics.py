"""Segmentation metrics on hand-made volumes with known answers."""
from __future__ import annotations

import numpy as np
import pytest

from indexer.metrics import (adjusted_rand_index, boundary_f_frames, boundary_map, davis_unsupervised, fg_ari,
                             jaccard_frames, miou)


def two_objects(t: int = 3, h: int = 20, w: int = 30) -> np.ndarray:
    gt = np.zeros((t, h, w), dtype=np.uint8)
    gt[:, 2:10, 3:12] = 1
    gt[:, 12:18, 15:28] = 2
    return gt


def test_ari_known_values() -> None:
    a = np.array([0, 0, 1, 1])
    assert adjusted_rand_index(a, np.array([5, 5, 7, 7])) == 1.0            # renaming does not matter
    assert adjusted_rand_index(a, np.array([0, 1, 0, 1])) == pytest.approx(-0.5)
    # sklearn's adjusted_rand_score([0,0,1,1,2,2],[0,0,1,2,2,2]) = 0.4444...
    assert adjusted_rand_index(np.array([0, 0, 1, 1, 2, 2]), np.array([0, 0, 1, 2, 2, 2])) == pytest.approx(4 / 9)


def test_fg_ari_ignores_background_and_sees_track_switches() -> None:
    gt = two_objects()
    pred = gt.astype(np.int64) + 10
    pred[gt == 0] = np.arange((gt == 0).sum()) % 5           # background labels are irrelevant
    assert fg_ari(gt, pred) == 1.0
    switched = pred.copy()
    switched[1][gt[1] == 1] = 99                              # object 1 changes id in frame 1
    assert fg_ari(gt, switched) < 0.9
    assert np.isnan(fg_ari(np.zeros_like(gt), pred))
    assert np.isnan(fg_ari((gt > 0).astype(np.uint8), pred))  # one object: ARI is degenerate


def test_miou_hungarian() -> None:
    gt = two_objects()
    pred = np.full(gt.shape, -1)
    pred[gt == 1] = 7
    assert miou(gt, pred) == pytest.approx(0.5)               # object 2 unmatched counts 0
    pred[gt == 2] = 7                                         # one prediction covers both: matched once
    area1, area2 = (gt == 1).sum(), (gt == 2).sum()
    assert miou(gt, pred) == pytest.approx(max(area1, area2) / (area1 + area2) / 2)
    pred[gt == 2] = 3
    assert miou(gt, pred) == 1.0


def test_jaccard_and_boundary_f() -> None:
    gt = two_objects() > 0
    assert np.all(jaccard_frames(gt, gt) == 1)
    empty = np.zeros_like(gt)
    assert np.all(jaccard_frames(empty, empty) == 1)
    assert np.all(jaccard_frames(gt, empty) == 0)
    half = gt.copy()
    half[:, :, :15] = False
    assert jaccard_frames(gt, half)[0] == pytest.approx(half[0].sum() / gt[0].sum())
    assert np.all(boundary_f_frames(gt, gt) == 1)
    shifted = np.roll(gt, 1, axis=2)
    assert np.all(boundary_f_frames(gt, shifted, bound_th=2) == 1)     # within the tolerance
    tight = boundary_f_frames(gt, shifted, bound_th=0.0001)     # vertical edges missed, horizontal ones kept
    assert np.all((tight > 0.3) & (tight < 0.9))
    b = boundary_map(gt[0])
    assert b.sum() > 0 and not b[0].any()                     # image border is not a boundary


def test_davis_unsupervised_matching() -> None:
    gt = two_objects()
    pred = np.zeros(gt.shape, dtype=np.int64)                 # 0 = a background cluster, ignored
    pred[gt == 1] = 4
    pred[gt == 2] = 9
    score = davis_unsupervised(gt, pred, ignore=(0,))
    assert score.matching == {1: 4, 2: 9}
    assert score.j == 1.0 and score.f == 1.0
    pred[2][gt[2] == 2] = 4                                   # frame 2: both objects get the same id
    score = davis_unsupervised(gt, pred, ignore=(0,))
    assert score.matching == {1: 4, 2: 9}
    assert score.per_object[2][0] == pytest.approx(2 / 3)     # object 2 missing in one frame of three
    assert davis_unsupervised(gt, np.zeros_like(pred), ignore=(0,)).j == 0.0


def test_shape_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="shape"):
        fg_ari(np.zeros((2, 3, 4)), np.zeros((2, 3, 5)))


def _gt_two_objects(t: int = 6) -> np.ndarray:
    gt = np.zeros((t, 20, 20), np.uint8)
    gt[:, 2:8, 2:8] = 1
    gt[:, 10:18, 10:18] = 2
    return gt


def test_track_counts_perfect_tracks_count_right() -> None:
    from indexer.metrics import track_counts
    gt = _gt_two_objects()
    pred = gt.astype(np.int32) - 1            # object k -> track k-1, background -> -1
    c = track_counts(gt, pred)
    assert (c.gt_maxn, c.pred_maxn, c.maxn_error, c.id_switches, c.spurious_tracks) == (2, 2, 0, 0, 0)
    assert c.fragmentation == 1.0 and c.object_maxn_error == 0.0 and c.count_mae == 0.0


def test_track_counts_see_fragments_in_time_and_in_space() -> None:
    from indexer.metrics import track_counts
    gt = _gt_two_objects()
    pred = gt.astype(np.int32) - 1
    pred[3:][gt[3:] == 2] = 7                  # object 2 changes track half way: a fragment in time
    c = track_counts(gt, pred)
    assert c.id_switches == 1 and c.fragmentation == 1.5 and c.maxn_error == 0 and c.object_maxn_error == 0.0
    pred = gt.astype(np.int32) - 1
    pred[:, 10:18, 14:18] = 9                  # object 2 split in two tracks at once: MaxN over-counts
    c = track_counts(gt, pred)
    assert c.pred_maxn == 3 and c.maxn_error == 1 and c.object_maxn_error == 0.5 and c.spurious_tracks == 1

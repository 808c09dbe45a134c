"""End to end on synthetic clips with the colour extractor: attention -> clustering -> masks -> metrics."""
from __future__ import annotations

import numpy as np
import pytest

from indexer.color_extractor import ColorExtractor
from indexer.metrics import fg_ari, miou
from indexer.segment import (SegmentParams, label_volume, model_size, segment_frames, segment_stream,
                             upsample_labels)
from mvk_tools.synth import render_clip
from mvk_tools.video import Frame
from search.errors import InputError

PARAMS = SegmentParams(short_side=96, key_stride=5)


@pytest.fixture(scope="module")
def clip():
    return render_clip(n_frames=24, seed=0)


def as_frames(images: np.ndarray) -> list[Frame]:
    return [Frame(index=i, time=i / 12, image=im) for i, im in enumerate(images)]


def test_model_size_multiple_of_patch() -> None:
    assert model_size(480, 854, 16, 224) == (224, 400)
    assert model_size(96, 160, 8, 96) == (96, 160)
    assert model_size(10, 1000, 16, 4) == (16, 400)       # at least one patch


def test_synthetic_objects_are_recovered(clip) -> None:
    out = list(segment_stream(as_frames(clip.frames), ColorExtractor(), PARAMS))
    pred = label_volume(out)
    assert fg_ari(clip.masks, pred) > 0.7
    assert miou(clip.masks, pred) > 0.7


def test_tracks_survive_chunking(clip) -> None:
    """Three chunks of 8 frames, linked by the tracks' query samples: ids must stay consistent."""
    whole = fg_ari(clip.masks, label_volume(segment_stream(as_frames(clip.frames), ColorExtractor(), PARAMS)))
    chunked_params = SegmentParams(short_side=96, key_stride=4, chunk=8)
    chunked = label_volume(segment_stream(as_frames(clip.frames), ColorExtractor(), chunked_params))
    assert fg_ari(clip.masks, chunked) > whole - 0.1
    assert fg_ari(clip.masks, chunked) > 0.65


def test_output_contract(clip) -> None:
    frames = as_frames(clip.frames[:10])
    out = list(segment_stream(frames, ColorExtractor(), SegmentParams(short_side=96, key_stride=5, chunk=6)))
    assert [sf.frame.index for sf in out] == list(range(10))
    for sf in out:
        ids = [o.track_id for o in sf.objects]
        assert len(ids) == len(set(ids))
        assert any(o.is_background for o in sf.objects)
        covered = np.zeros(clip.frames.shape[1:3], dtype=int)
        for o in sf.objects:
            assert o.mask.shape == clip.frames.shape[1:3] and o.mask.dtype == bool
            ys, xs = np.nonzero(o.mask)
            assert o.bbox == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
            assert o.area == pytest.approx(o.mask.mean()) and o.area >= 0.005
            covered += o.mask
        assert covered.max() == 1                            # objects never overlap


def test_hierarchy_levels_coarsen(clip) -> None:
    seg = segment_frames(clip.frames[:16], ColorExtractor(), PARAMS)
    sizes = [len(np.unique(lv)) for lv in seg.levels]
    assert sizes == sorted(sizes, reverse=True)
    for fine, coarse in zip(seg.levels, seg.levels[1:]):
        assert len(set(zip(fine.ravel().tolist(), coarse.ravel().tolist()))) == len(np.unique(fine))
    assert seg.labels.shape == (16, 12, 20)
    finest = segment_frames(clip.frames[:16], ColorExtractor(), SegmentParams(short_side=96, key_stride=5,
                                                                               level=0, min_area=0))
    assert finest.level == 0 and finest.n_clusters >= seg.n_clusters
    coarse = segment_frames(clip.frames[:16], ColorExtractor(), SegmentParams(short_side=96, key_stride=5,
                                                                               tau=50.0))
    assert coarse.n_clusters < seg.n_clusters


def test_deterministic(clip) -> None:
    a = segment_frames(clip.frames[:8], ColorExtractor(), PARAMS)
    b = segment_frames(clip.frames[:8].copy(), ColorExtractor(), PARAMS)
    assert np.array_equal(a.labels, b.labels)


def test_upsampling_is_smooth_and_keeps_ids() -> None:
    labels = np.array([[[0, 0, 1], [0, 2, 1], [-1, 2, 2]]])
    up = upsample_labels(labels, (30, 30))
    assert up.shape == (1, 30, 30)
    assert set(np.unique(up)) == {-1, 0, 1, 2}
    assert up[0, 5, 5] == 0 and up[0, 15, 15] == 2 and up[0, 25, 2] == -1


def test_bad_frames_are_reported(clip) -> None:
    bad = [Frame(0, 0.0, clip.frames[0]), Frame(1, 0.1, clip.frames[1].astype(np.float32))]
    with pytest.raises(InputError, match="frame 1"):
        list(segment_stream(bad, ColorExtractor(), PARAMS))
    assert list(segment_stream([], ColorExtractor(), PARAMS)) == []
    with pytest.raises(InputError):
        segment_frames(np.zeros((0, 8, 8, 3), np.uint8), ColorExtractor(), PARAMS)


def test_size_change_mid_stream_starts_a_new_chunk(clip) -> None:
    small = clip.frames[:4, ::2, ::2].copy()
    frames = as_frames(np.concatenate([clip.frames[:4]])) + [Frame(4 + i, 1.0, im) for i, im in enumerate(small)]
    out = list(segment_stream(frames, ColorExtractor(), PARAMS))
    assert [sf.frame.index for sf in out] == list(range(8))
    assert out[5].objects[0].mask.shape == small.shape[1:3]


def test_comoving_fragments_merge_and_crossing_or_still_objects_do_not() -> None:
    from indexer.segment import comoving_groups
    t, h, w = 8, 16, 24
    labels = np.full((t, h, w), 0, np.int64)          # 0: background
    for i in range(t):
        labels[i, 1:5, 2 + 2 * i:6 + 2 * i] = 1      # a moving square ...
        labels[i, 2:4, 6 + 2 * i:7 + 2 * i] = 2      # ... and a small fragment at its edge, moving with it
        labels[i, 8:11, 20 - 2 * i:23 - 2 * i] = 3   # another object moving the other way
        labels[i, 8:11, 0:2] = 4                     # a still thing ...
        labels[i, 8:11, 2:4] = 5                     # ... touching another still thing
        labels[i, 12:15, 2 + i:5 + i] = 6            # two animals of one size swimming side by side
        labels[i, 12:15, 5 + i:8 + i] = 7
    groups = comoving_groups(labels, background=(0,))
    assert groups[2] == groups[1] == 1
    assert len({groups[1], groups[3], groups[4], groups[5], groups[6], groups[7]}) == 6 and groups[0] == 0


def test_merging_comoving_fragments_brings_track_counts_to_the_truth() -> None:
    from dataclasses import replace

    from indexer.metrics import track_counts
    clip = render_clip(n_frames=48, seed=0)
    params = SegmentParams(short_side=96)
    errors = {}
    for merge in (False, True):
        out = list(segment_stream(as_frames(clip.frames), ColorExtractor(), replace(params, merge_comoving=merge)))
        errors[merge] = track_counts(clip.masks, label_volume(out, include_background=False))
    assert errors[True].object_maxn_error < errors[False].object_maxn_error
    assert abs(errors[True].maxn_error) < abs(errors[False].maxn_error)
    assert errors[True].missed_objects == 0

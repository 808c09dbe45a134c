"""Mask propagation: the affinity/top-k step against a plain loop of DINO's formula, the DINO path on a
tiny random ViT, the colour baseline on synth clips (occlusion, leaving and coming back), seeds, tracks
and COCO RLE."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from indexer.backbone import build_timm_extractor, load_backbone
from indexer.metrics import jaccard_frames
from indexer.propagation import (
    PropagateParams,
    features,
    labels_from_soft,
    propagate_frames,
    propagate_step,
    seed_to_grid,
)
from indexer.tracks import coco_rle_decode, coco_rle_encode
from mvk_tools.synth import render_clip
from mvk_tools.video import Frame
from search.errors import InputError

TINY = {"embed_dim": 32, "depth": 2, "num_heads": 2, "patch_size": 8}


def reference_step(target: torch.Tensor, sources: torch.Tensor, labels: torch.Tensor, grid: tuple[int, int],
                   topk: int, radius: int, temperature: float) -> torch.Tensor:
    """DINO's label_propagation written as loops: aff = exp(cos / T), zero beyond the neighbourhood,
    everything below the k-th largest zeroed, normalised, labels summed."""
    h, w = grid
    n = h * w
    t = F.normalize(target.double(), dim=-1)
    s = F.normalize(sources.double(), dim=-1)
    out = torch.zeros(n, labels.shape[-1], dtype=torch.float64)
    for i in range(n):
        aff = []
        for f in range(s.shape[0]):
            for j in range(n):
                near = abs(i // w - j // w) <= radius and abs(i % w - j % w) <= radius
                aff.append(float(torch.exp((t[i] @ s[f, j]) / temperature)) if (radius == 0 or near) else 0.0)
        kth = sorted(aff, reverse=True)[topk - 1]
        kept = [a if a >= kth else 0.0 for a in aff]
        total = sum(kept)
        for idx, a in enumerate(kept):
            if a:
                out[i] += a / total * labels.reshape(-1, labels.shape[-1])[idx].double()
    return out


@pytest.mark.parametrize("radius,topk", [(1, 5), (0, 3), (2, 7)])
def test_step_agrees_with_plain_loop(radius, topk) -> None:
    g = torch.Generator().manual_seed(radius * 10 + topk)
    grid = (4, 5)
    target = torch.randn(20, 6, generator=g)
    sources = torch.randn(3, 20, 6, generator=g)
    sources[1, 7] = target[3]          # an exact match, and ties between two context frames
    sources[2, 7] = target[3]
    labels = torch.softmax(torch.randn(3, 20, 3, generator=g), -1)
    q = F.normalize(target, dim=-1) / 0.1
    k = F.normalize(sources, dim=-1)
    got = propagate_step(q, k, labels, grid, topk=topk, neighborhood=radius, block=37)
    want = reference_step(target, sources, labels, grid, topk, radius, 0.1)
    assert torch.allclose(got.double(), want, atol=1e-5)


def test_step_keeps_ties_at_the_kth_value_like_dinos_threshold() -> None:
    grid = (1, 4)
    q = torch.ones(4, 2)
    keys = torch.ones(1, 4, 2)               # every source equally similar
    labels = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]])
    out = propagate_step(q, keys, labels, grid, topk=1, neighborhood=0)
    assert torch.allclose(out, torch.full((4, 2), 0.5))


def test_dino_path_on_a_tiny_random_vit_matches_the_loop_reference() -> None:
    ex = build_timm_extractor("vit_small_patch16_224", random_weights=True, **TINY)
    clip = render_clip(n_frames=4, size=(48, 32), n_objects=2, seed=3)
    frames = [Frame(i, float(i), im) for i, im in enumerate(clip.frames)]
    params = PropagateParams(short_side=32, n_last_frames=2, neighborhood=2, topk=4)
    out = list(propagate_frames(frames, clip.masks[0], ex, params))
    assert [o.frame.index for o in out] == [0, 1, 2, 3]
    assert np.array_equal(out[0].labels, clip.masks[0])

    q, k, tokens, grid = ex.qk_tokens(clip.frames)            # tokens of the same pass as the q/k
    q2, k2, _ = ex.qk(clip.frames)
    assert torch.allclose(q, q2) and torch.allclose(k, k2) and tokens.shape == (4, grid[0] * grid[1], 32)
    ids = np.unique(clip.masks[0])
    context = [(tokens[0], seed_to_grid(clip.masks[0], ids, grid, "cpu"))]
    for t in (1, 2, 3):
        used = [context[0], *context[1:][-2:]]
        soft = reference_step(tokens[t], torch.stack([c[0] for c in used]), torch.stack([c[1] for c in used]),
                              grid, 4, 2, 0.1).float()
        context.append((tokens[t], soft))
        assert np.array_equal(out[t].labels, labels_from_soft(soft, ids, grid, (32, 48))), t


def test_query_and_key_features_of_the_colour_baseline_give_its_kernel() -> None:
    ex = load_backbone("color")
    images = render_clip(n_frames=1, size=(32, 32), n_objects=1, seed=1).frames
    q, k, _ = features(ex, images, 0.1)
    f, _ = ex.features(images)
    d2 = torch.cdist(f[0], f[0]) ** 2
    assert torch.allclose(q[0] @ k[0].T, -d2 / (2 * ex.sigma ** 2), atol=1e-2)


@pytest.fixture(scope="module")
def synth():
    clip = render_clip(n_frames=48, size=(160, 96), n_objects=3, seed=0)
    frames = [Frame(i, i / 12, im) for i, im in enumerate(clip.frames)]
    return clip, frames


def test_colour_baseline_follows_synth_objects_through_occlusion_and_exit(synth) -> None:
    """Floors: J >= 0.65 on average over the frames where each object is visible, J >= 0.75 over the whole
    clip for the objects that stay (they occlude each other), and the object that leaves is found again
    (J >= 0.7 over the frames after it comes back) while its false area when absent stays under 2%."""
    clip, frames = synth
    pred = np.stack([o.labels for o in propagate_frames(frames, clip.masks[0], load_backbone("color"),
                                                        PropagateParams(short_side=96))])
    for oid in (1, 2, 3):
        gt = clip.masks == oid
        visible = gt.reshape(len(gt), -1).any(1)
        j = jaccard_frames(gt, pred == oid)
        assert j[visible].mean() >= 0.65, (oid, j)
        if visible.all():
            assert j.mean() >= 0.75, (oid, j)
    gt1 = clip.masks == 1
    visible = gt1.reshape(48, -1).any(1)
    assert not visible.all() and visible[0]
    gone = np.flatnonzero(~visible)
    back = np.flatnonzero(visible & (np.arange(48) > gone[-1]))
    assert len(back) >= 5
    assert jaccard_frames(gt1[back], pred[back] == 1).mean() >= 0.7
    assert (pred[gone] == 1).mean() < 0.02


def test_streaming_keeps_only_the_context(synth, monkeypatch) -> None:
    """Memory does not grow with the video: at most 1 + n_last_frames context frames are ever used."""
    import indexer.propagation as prop
    clip, frames = synth
    seen = []
    real = prop.propagate_step

    def spy(query, keys, labels, grid, **kw):
        seen.append(keys.shape[0])
        return real(query, keys, labels, grid, **kw)

    monkeypatch.setattr(prop, "propagate_step", spy)
    list(propagate_frames(frames[:12], clip.masks[0], load_backbone("color"), PropagateParams(short_side=64,
                                                                                             n_last_frames=3)))
    assert seen == [1, 2, 3, 4, 4, 4, 4, 4, 4, 4, 4]


def test_seed_errors(synth) -> None:
    _, frames = synth
    ex = load_backbone("color")
    with pytest.raises(InputError, match="empty"):
        list(propagate_frames(frames[:2], np.zeros((96, 160), np.uint8), ex))
    with pytest.raises(InputError, match="160x96"):
        list(propagate_frames(frames[:2], np.ones((10, 10), np.uint8), ex))


def test_coco_rle_round_trip_and_known_strings() -> None:
    assert coco_rle_encode(np.zeros((2, 2), bool)) == {"size": [2, 2], "counts": "4"}
    # column-major [0, 1, 1, 1] -> counts [1, 3]
    assert coco_rle_encode(np.array([[0, 1], [1, 1]], bool))["counts"] == "13"
    rng = np.random.default_rng(0)
    for shape in ((1, 1), (7, 5), (64, 48)):
        for density in (0.0, 0.3, 0.97, 1.0):
            m = rng.random(shape) < density
            rle = coco_rle_encode(m)
            assert np.array_equal(coco_rle_decode(rle), m)
    assert np.array_equal(coco_rle_decode({"size": [2, 2], "counts": [1, 3]}), [[0, 1], [1, 1]])
    big = np.zeros((300, 400), bool)
    big[50:250, 100:390] = True        # long runs: counts above 31 need several characters, deltas negative
    assert np.array_equal(coco_rle_decode(coco_rle_encode(big)), big)
    with pytest.raises(InputError):
        coco_rle_decode({"size": [2, 2], "counts": "5"})

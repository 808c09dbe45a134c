"""Object and frame embeddings: mask -> token-grid area weights, one-matmul pooling, crops, crop vs pool."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from indexer.embed import (NEUTRAL_RGB, embed_batch, mask_grid_weights, object_crop, pool_tokens,
                           square_geometry)
from indexer.segment import ObjectMask


def _brute_weights(mask: np.ndarray, grid: int, fit: str) -> np.ndarray:
    """Area weights by replicating every pixel ``grid`` times so cells fall on whole (sub)pixels."""
    h, w = mask.shape
    side, top, left = square_geometry(h, w, fit)
    k = grid
    big = np.repeat(np.repeat(mask.astype(float), k, 0), k, 1)
    canvas = np.zeros((int(side * k), int(side * k)))
    ty, tx = int(round(top * k)), int(round(left * k))
    ys, xs = slice(max(ty, 0), min(ty + h * k, canvas.shape[0])), slice(max(tx, 0), min(tx + w * k, canvas.shape[1]))
    canvas[ys, xs] = big[ys.start - ty:ys.stop - ty, xs.start - tx:xs.stop - tx]
    cell = canvas.shape[0] // grid
    sums = canvas.reshape(grid, cell, grid, cell).sum(axis=(1, 3)).reshape(-1)
    return sums / sums.sum() if sums.sum() else sums


def test_letterbox_weights_hand_made() -> None:
    # 2x4 image letterboxed into a 4x4 square: rows land on square rows 1 and 2, i.e. one in each cell row
    mask = np.zeros((2, 4), bool)
    mask[:, :2] = True
    w = mask_grid_weights(mask, (2, 2), fit="letterbox")
    assert torch.allclose(w, torch.tensor([[0.5, 0.0, 0.5, 0.0]]))


@pytest.mark.parametrize("fit", ["letterbox", "crop"])
@pytest.mark.parametrize("shape", [(37, 53), (53, 37), (30, 30)])
def test_weights_match_brute_force_on_odd_sizes(fit: str, shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(0)
    masks = rng.random((3, *shape)) > 0.6
    masks[2] = False
    masks[2, 5:20, 10:30] = True
    w = mask_grid_weights(masks, (7, 7), fit=fit).numpy()
    for i in range(3):
        np.testing.assert_allclose(w[i], _brute_weights(masks[i], 7, fit), atol=1e-5)


def test_crop_fit_mask_outside_square_falls_back_to_frame_vector() -> None:
    mask = np.zeros((4, 8), bool)
    mask[:, :2] = True                          # the centre crop keeps columns 2..5 only
    w = mask_grid_weights(mask, (2, 2), fit="crop")
    assert float(w.sum()) == 0.0
    tokens = torch.randn(1, 2, 2, 3)
    fallback = torch.tensor([[0.0, 3.0, 4.0]])
    out = pool_tokens(tokens, np.array([0]), w, fallback=fallback)
    assert torch.allclose(out, torch.tensor([[0.0, 0.6, 0.8]]))


def test_pool_tokens_on_hand_made_grid() -> None:
    tokens = torch.zeros(2, 2, 2, 3)
    tokens[1, 1, 1] = torch.tensor([0.0, 0.0, 2.0])     # frame 1, bottom-right cell
    tokens[1, 0, 0] = torch.tensor([4.0, 0.0, 0.0])     # frame 1, top-left cell
    tokens[0, 0, 1] = torch.tensor([0.0, 5.0, 0.0])     # frame 0, top-right cell
    weights = torch.tensor([[0.0, 0.0, 0.0, 1.0],       # object on frame 1, bottom-right only
                            [0.25, 0.0, 0.0, 0.75],     # object on frame 1, mixed 1:3
                            [0.0, 1.0, 0.0, 0.0]])      # object on frame 0, top-right
    out = pool_tokens(tokens, np.array([1, 1, 0]), weights)
    expected = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 1.5], [0.0, 1.0, 0.0]])
    expected = expected / expected.norm(dim=1, keepdim=True)
    assert torch.allclose(out, expected, atol=1e-6)
    assert torch.allclose(out.norm(dim=1), torch.ones(3))


def test_object_crop_neutralises_outside_and_keeps_margin() -> None:
    img = np.full((20, 30, 3), 200, np.uint8)
    mask = np.zeros((20, 30), bool)
    mask[5:10, 10:20] = True
    crop = object_crop(img, mask, (10, 5, 20, 10), margin=0.2)   # pad 2 px on each side
    assert crop.shape == (9, 14, 3)
    assert (crop[2:7, 2:12] == 200).all()
    assert (crop[0, 0] == NEUTRAL_RGB).all() and (crop[-1, -1] == NEUTRAL_RGB).all()
    edge = object_crop(img, mask | (np.arange(30) < 2)[None, :], (0, 0, 20, 20), margin=0.5)
    assert edge.shape == (20, 30, 3)                             # clipped to the frame


@pytest.fixture(scope="module")
def encoder():
    from search.encoder import TEST_MODEL, load_encoder
    return load_encoder(TEST_MODEL, None, random_weights=True)


def _objects(h: int, w: int) -> list[ObjectMask]:
    out = []
    for i, (x0, y0, x1, y1) in enumerate([(0, 0, w, h), (2, 3, w // 2, h // 2), (w // 2, h // 3, w, h)]):
        m = np.zeros((h, w), bool)
        m[y0:y1, x0:x1] = True
        out.append(ObjectMask(i, 0, m, (x0, y0, x1, y1), float(m.mean()), i == 0))
    return out


@pytest.mark.parametrize("mode", ["crop", "pool", "pool-raw", "none"])
def test_embed_batch_shapes_and_norms(encoder, mode: str) -> None:
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 255, (48, 80, 3), dtype=np.uint8) for _ in range(3)]
    objects = [_objects(48, 80), _objects(48, 80)[:1], []]
    out = embed_batch(encoder, images, objects, mode, batch_size=2)
    assert out.frame_vectors.shape == (3, encoder.dim)
    n = 0 if mode == "none" else 4
    assert out.object_vectors.shape == (n, encoder.dim)
    assert out.frame_of_object.tolist() == ([0, 0, 0, 1] if n else [])
    np.testing.assert_allclose(np.linalg.norm(out.frame_vectors, axis=1), 1.0, atol=1e-5)
    if n:
        np.testing.assert_allclose(np.linalg.norm(out.object_vectors, axis=1), 1.0, atol=1e-5)
    frames_only = encoder.encode_images(images)
    np.testing.assert_allclose(out.frame_vectors, frames_only, atol=1e-4)


@pytest.mark.parametrize("dense_size", [None, 128])
def test_pool_whole_frame_mask_is_mean_of_image_tokens(encoder, dense_size) -> None:
    rng = np.random.default_rng(2)
    img = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)      # square: no letterbox padding
    obj = _objects(64, 64)[:1]
    out = embed_batch(encoder, [img], [obj], "pool", dense_size=dense_size)
    _, tokens = encoder.encode_image_tokens([img], dense_size=dense_size)
    assert tokens.shape[1:3] == encoder.token_grid(dense_size)
    mean = tokens[0].reshape(-1, tokens.shape[-1]).mean(axis=0)
    np.testing.assert_allclose(out.object_vectors[0], mean / np.linalg.norm(mean), atol=1e-4)

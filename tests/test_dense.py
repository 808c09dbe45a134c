"""search.dense: ClearCLIP dense features against a plain reference written here (loops per head and per
token), interpolated position embeddings, dense sizes, and towers without such a block."""
import math

import numpy as np
import pytest
import torch

from search import dense
from search import encoder as enc
from search.errors import InputError

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                  reason="no CUDA device"))]


def _images(n: int, shape=(36, 64, 3)) -> list[np.ndarray]:
    return [np.random.default_rng(i).integers(0, 255, shape, dtype=np.uint8) for i in range(n)]


def _reference_block_input(visual, x: torch.Tensor) -> torch.Tensor:
    """(L, D) input of the last block for one image (1, 3, S, S) at the model's own size: patches, class
    token and position embeddings added by hand, then every block but the last."""
    w = visual.conv1.weight                                   # (D, 3, p, p), stride p, no bias
    d, p = w.shape[0], w.shape[-1]
    g = x.shape[-1] // p
    rows = [visual.class_embedding]
    for i in range(g):
        for j in range(g):
            rows.append((w * x[0, :, i * p:(i + 1) * p, j * p:(j + 1) * p]).sum(dim=(1, 2, 3)))
    h = torch.stack(rows) + visual.positional_embedding
    h = visual.ln_pre(h)[None]
    for block in visual.transformer.resblocks[:-1]:
        h = block(h)
    return h[0]


def _reference_clearclip_tokens(visual, h: torch.Tensor) -> torch.Tensor:
    """(L-1, dim): ClearCLIP's last block, ln_post and proj, one head and one token at a time."""
    block = visual.transformer.resblocks[-1]
    attn = block.attn
    y = block.ln_1(h)
    length, d = y.shape
    heads = attn.num_heads
    hd = d // heads
    w, b = attn.in_proj_weight, attn.in_proj_bias
    out = torch.zeros(length, d)
    for head in range(heads):
        qs = slice(head * hd, (head + 1) * hd)
        vs = slice(2 * d + head * hd, 2 * d + (head + 1) * hd)
        q = [w[qs] @ y[j] + b[qs] for j in range(length)]
        v = [w[vs] @ y[j] + b[vs] for j in range(length)]
        for i in range(length):
            scores = torch.stack([q[i] @ q[j] / math.sqrt(hd) for j in range(length)])
            p = torch.softmax(scores, dim=0)
            out[i, qs] = sum(p[j] * v[j] for j in range(length))
    out = out @ attn.out_proj.weight.T + attn.out_proj.bias
    tokens = visual.ln_post(out[1:])
    return tokens @ visual.proj


@pytest.mark.parametrize("device", DEVICES)
def test_vectorised_clearclip_matches_per_head_per_token_reference(device: str) -> None:
    tiny = enc.load_encoder(enc.TEST_MODEL, random_weights=True, device=device)
    ims = _images(3)
    pooled, tokens = tiny.encode_image_tokens(ims, batch_size=2)
    gh, gw = tiny.token_grid()
    assert tokens.shape == (3, gh, gw, tiny.dim)
    np.testing.assert_allclose(pooled, tiny.encode_images(ims), atol=1e-5)      # frame vectors unchanged
    visual = tiny.model.visual
    with torch.inference_mode():
        for i in range(3):
            x = tiny.preprocess(ims[i:i + 1]).cpu()
            cpu_visual = visual.to("cpu")
            ref = _reference_clearclip_tokens(cpu_visual, _reference_block_input(cpu_visual, x))
            visual.to(device)
            np.testing.assert_allclose(tokens[i].reshape(gh * gw, -1), ref.numpy(), atol=2e-5, rtol=1e-4)


def test_raw_variant_is_the_last_layer_tokens_and_differs_from_clearclip() -> None:
    tiny = enc.load_encoder(enc.TEST_MODEL, random_weights=True)
    ims = _images(2)
    _, raw = tiny.encode_image_tokens(ims, variant="raw")
    _, clear = tiny.encode_image_tokens(ims, variant="clearclip")
    visual = tiny.model.visual
    gh, gw = tiny.token_grid()
    with torch.inference_mode():
        h = _reference_block_input(visual, tiny.preprocess(ims[:1]))
        out = visual.transformer.resblocks[-1](h[None])[0]
        manual = (visual.ln_post(out[1:]) @ visual.proj).reshape(gh, gw, -1).numpy()
    np.testing.assert_allclose(raw[0], manual, atol=1e-5)
    assert not np.allclose(raw, clear, atol=1e-3)


def test_position_embeddings_resized_to_the_same_grid_are_unchanged() -> None:
    tiny = enc.load_encoder(enc.TEST_MODEL, random_weights=True)
    visual = tiny.model.visual
    grid = tuple(visual.grid_size)
    with torch.no_grad():
        same = dense.resize_positions(visual.positional_embedding, grid, grid)
        np.testing.assert_allclose(same.numpy(), visual.positional_embedding.numpy(), atol=1e-5)
        const = torch.ones(1 + grid[0] * grid[1], 8) * torch.arange(8.0)
        big = dense.resize_positions(const, grid, (2 * grid[0], 2 * grid[1]))
    assert big.shape == (1 + 4 * grid[0] * grid[1], 8)
    np.testing.assert_allclose(big.numpy(), np.broadcast_to(np.arange(8.0), big.shape), atol=1e-5)


def test_dense_pass_at_the_models_own_size_equals_the_single_pass() -> None:
    tiny = enc.load_encoder(enc.TEST_MODEL, random_weights=True)
    ims = _images(2)
    x = tiny.preprocess(ims)
    with torch.inference_mode():
        _, h_hook, _ = dense.encode_with_last_block(tiny.model, x)
        h_own = dense.last_block_input(tiny.model.visual, x)       # the interpolating path, at 64 px
    np.testing.assert_allclose(h_own.numpy(), h_hook.numpy(), atol=1e-5)
    _, a = tiny.encode_image_tokens(ims)
    _, b = tiny.encode_image_tokens(ims, dense_size=tiny.image_size)
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_larger_dense_size_gives_a_finer_grid_and_keeps_the_frame_vector() -> None:
    tiny = enc.load_encoder(enc.TEST_MODEL, random_weights=True)
    ims = _images(3)
    side = 2 * tiny.image_size
    pooled, tokens = tiny.encode_image_tokens(ims, dense_size=side, batch_size=2)
    gh, gw = tiny.token_grid()
    assert tiny.token_grid(side) == (2 * gh, 2 * gw)
    assert tokens.shape == (3, 2 * gh, 2 * gw, tiny.dim) and np.isfinite(tokens).all()
    np.testing.assert_allclose(pooled, tiny.encode_images(ims), atol=1e-5)
    with torch.inference_mode():        # the dense pass at 2x is the own-size path on the 2x input
        h = dense.last_block_input(tiny.model.visual, tiny.preprocess(ims[:1], size=side))
        ref = dense.dense_tokens(tiny.model.visual, h, (2 * gh, 2 * gw), "clearclip")
    np.testing.assert_allclose(tokens[0], ref[0].numpy(), atol=1e-5)


def test_dense_size_must_be_a_multiple_of_the_patch_size() -> None:
    tiny = enc.load_encoder(enc.TEST_MODEL, random_weights=True)
    with pytest.raises(InputError, match=r"not a positive multiple of the patch size .*\(16 px\): try 96 or 112"):
        tiny.encode_image_tokens(_images(1), dense_size=100)
    with pytest.raises(InputError, match="multiple"):
        tiny.token_grid(0)


def test_towers_without_a_vit_block_name_the_modes_that_work() -> None:
    from open_clip.modified_resnet import ModifiedResNet
    resnet = ModifiedResNet(layers=(1, 1, 1, 1), output_dim=32, heads=2, image_size=64, width=8)
    for variant in dense.VARIANTS:
        with pytest.raises(InputError, match=r"ModifiedResNet.*--objects crop.*--objects none"):
            dense.check_tower(resnet, "RN-tiny", variant)
    tiny = enc.load_encoder(enc.TEST_MODEL, random_weights=True)
    tiny.check_dense("clearclip")
    tiny.check_dense("raw")

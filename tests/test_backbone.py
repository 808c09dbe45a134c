"""timm ViT q/k extraction through tiny random models; weights rules; the real architecture on DAVIS frames."""
from __future__ import annotations

import math
import resource

import numpy as np
import pytest
import torch

from indexer.backbone import build_timm_extractor, load_backbone
from indexer.color_extractor import ColorExtractor
from search.errors import InputError, MissingWeightsError

TINY = {"embed_dim": 32, "depth": 2, "num_heads": 2, "patch_size": 8}


def tiny(**extra):
    return build_timm_extractor("vit_small_patch16_224", random_weights=True, **TINY, **extra)


def frames(t: int = 2, h: int = 32, w: int = 48, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (t, h, w, 3), dtype=np.uint8)


def manual_qk(ex, images: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """q, k of the last block computed by hand from the model's own modules."""
    m = ex.model
    x = (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255 - ex.mean) / ex.std
    with torch.no_grad():
        tokens = m.norm_pre(m._pos_embed(m.patch_embed(x)))
        for blk in m.blocks[:-1]:
            tokens = blk(tokens)
        attn = m.blocks[-1].attn
        qkv = attn.qkv(m.blocks[-1].norm1(tokens))
    b, n, _ = qkv.shape
    qkv = qkv.reshape(b, n, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    return qkv[0][:, :, ex.prefix_tokens:], qkv[1][:, :, ex.prefix_tokens:]


def test_qk_shapes_and_values_match_the_last_block() -> None:
    ex = tiny()
    images = frames()
    q, k, grid = ex.qk(images)
    assert grid == (4, 6)
    assert q.shape == k.shape == (2, 2, 24, 16) and q.dtype == torch.float32
    mq, mk = manual_qk(ex, images)
    assert torch.allclose(q, mq, atol=1e-5) and torch.allclose(k, mk, atol=1e-5)
    assert ex.identity()["random_weights"] is True and ex.identity()["weights"] == "random"


def test_register_tokens_are_dropped() -> None:
    ex = tiny(reg_tokens=4, class_token=True)
    assert ex.prefix_tokens == 5
    q, _, grid = ex.qk(frames(1, 16, 24))
    assert q.shape[2] == grid[0] * grid[1] == 6


def test_frame_size_must_be_a_multiple_of_the_patch() -> None:
    with pytest.raises(ValueError, match="multiple"):
        tiny().qk(frames(1, 30, 48))


def test_checkpoint_round_trip_and_bad_files(tmp_path) -> None:
    ex = tiny()
    path = tmp_path / "tiny.pth"
    torch.save(ex.model.state_dict(), path)
    loaded = build_timm_extractor("vit_small_patch16_224", checkpoint=path, **TINY)
    images = frames(seed=3)
    assert torch.allclose(loaded.qk(images)[0], ex.qk(images)[0], atol=1e-6)
    assert loaded.identity()["random_weights"] is False and loaded.identity()["checkpoint"] == str(path)
    broken = tmp_path / "broken.pth"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="broken.pth"):
        build_timm_extractor("vit_small_patch16_224", checkpoint=broken, **TINY)
    with pytest.raises(MissingWeightsError, match="missing.pth"):
        load_backbone("dino-vits16", checkpoint=tmp_path / "missing.pth")


def test_offline_without_weights_says_what_to_fetch(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(MissingWeightsError) as exc:
        load_backbone("dinov2-vits14")
    message = str(exc.value)
    assert "vit_small_patch14_dinov2.lvd142m" in message and "--checkpoint" in message
    assert "huggingface" in message


def test_names() -> None:
    with pytest.raises(InputError, match="unknown backbone"):
        load_backbone("dino-vitx99")
    assert isinstance(load_backbone("color"), ColorExtractor)


def test_dino_random_weights_on_real_davis_frames(davis_dir) -> None:
    """The real ViT-S/16 architecture (random weights) through segment_frames on 854x480 DAVIS frames."""
    from indexer.evaluate import frames_from_folder
    from indexer.segment import SegmentParams, segment_frames

    folder = next(p for p in sorted((davis_dir / "JPEGImages").rglob("*")) if p.is_dir() and any(p.glob("*.jpg")))
    images = np.stack([f.image for f in frames_from_folder(folder, every_nth=10, max_frames=4)])
    assert images.shape[1:] == (480, 854, 3) and images.dtype == np.uint8
    ex = load_backbone("dino-vits16", random_weights=True)
    q, k, grid = ex.qk(images[:, :224, :400].copy())
    assert grid == (14, 25) and q.shape == (4, 6, 350, 64) and torch.isfinite(q).all()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    seg = segment_frames(images, ex, SegmentParams(key_stride=2))
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert seg.model_size == (224, 400) and seg.labels.shape == (4, 14, 25) and seg.labels.dtype == np.int64
    assert seg.centroids.shape[1] == 2 * 350                  # ceil(4 / 2) key frames x 350 patches
    assert math.isclose(float(seg.centroids.sum(1).mean()), 1.0, rel_tol=1e-4)
    assert grown_mb < 1024                                    # rows are 1400 x 700 floats: a few MB


def test_the_weights_messages_spell_the_cache_folder_one_way() -> None:
    import os

    from indexer import backbone
    from search import encoder

    text = " ".join([encoder.fetch_instructions(), backbone.fetch_instructions(),
                     backbone.missing_weights_message("dino-vits16", "vit_small_patch16_224.dino", "timm/x")])
    folder = encoder.hub_cache_dir()
    assert text.count(folder) == 3                                   # each message names it, the same way
    rest = text.replace(folder, "")
    assert ".cache/huggingface" not in rest and os.path.expanduser("~") + "/" not in rest, text

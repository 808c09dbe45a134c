"""SigLIP-shaped towers (timm ViT trunk, attention-pooling "MAP" head) with the tiny random `mvk-tiny-siglip`:
the MaskCLIP dense path against a per-token reference, the model's own preprocessing (mean 0.5, crop fill),
indexing and searching with the default `--objects pool`, the crop fallback of towers without a dense path,
presets and `mvk models`."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from app.cli import main
from search import encoder as enc
from search.errors import InputError
from tests.test_index_cli import index_args

SITES = ("Oahu_Jul2022", "PhuQuoc1_Jun2022")
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                  reason="no CUDA device"))]


def _images(n: int, shape=(36, 64, 3)) -> list[np.ndarray]:
    return [np.random.default_rng(i).integers(0, 255, shape, dtype=np.uint8) for i in range(n)]


@pytest.fixture(scope="module")
def siglip() -> enc.Encoder:
    return enc.load_encoder(enc.TEST_SIGLIP_MODEL, random_weights=True)


@pytest.fixture(scope="module")
def collection(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mvk_tools.synth import make_collection
    return make_collection(tmp_path_factory.mktemp("coll"), sites=SITES, videos_per_site=1, n_frames=12,
                           size=(96, 64), fps=12.0, n_objects=2, seed=3)


def _reference_maskclip_tokens(visual, x: torch.Tensor) -> torch.Tensor:
    """(gh*gw, dim) for one image: the trunk's features through timm's own forward_features, then for each
    patch alone the MAP head as trained, on a sequence of that one token (its latent query can only attend to
    it), then the layers after the pool: the pooled vector the head gives when it sees that patch only."""
    trunk = visual.trunk
    feats = trunk.forward_features(x)[0, trunk.num_prefix_tokens:]
    rows = []
    for token in feats:
        y = trunk.attn_pool(token[None, None])
        rows.append(visual.head(trunk.head(trunk.fc_norm(y)))[0])
    return torch.stack(rows)


def test_tiny_siglip_is_siglip_shaped(siglip) -> None:
    from open_clip.timm_model import TimmModel
    from timm.layers import AttentionPoolLatent
    assert isinstance(siglip.model.visual, TimmModel)
    assert isinstance(siglip.model.visual.trunk.attn_pool, AttentionPoolLatent)
    assert siglip.mean == (0.5, 0.5, 0.5) and siglip.std == (0.5, 0.5, 0.5)
    assert siglip.interpolation == "bilinear" and siglip.resize_mode == "squash"
    assert siglip.aligned_variant() == "maskclip"
    assert siglip.identity()["mean"] == [0.5, 0.5, 0.5]


@pytest.mark.parametrize("device", DEVICES)
def test_maskclip_tokens_match_the_per_token_reference(device: str) -> None:
    tiny = enc.load_encoder(enc.TEST_SIGLIP_MODEL, random_weights=True, device=device)
    ims = _images(3)
    pooled, tokens = tiny.encode_image_tokens(ims, batch_size=2, variant="maskclip")
    gh, gw = tiny.token_grid()
    assert (gh, gw) == (4, 4) and tokens.shape == (3, gh, gw, tiny.dim)
    np.testing.assert_allclose(pooled, tiny.encode_images(ims), atol=1e-5)       # frame vectors unchanged
    visual = tiny.model.visual
    with torch.inference_mode():
        for i in range(3):
            ref = _reference_maskclip_tokens(visual, tiny.preprocess(ims[i:i + 1]))
            np.testing.assert_allclose(tokens[i].reshape(gh * gw, -1), ref.cpu().numpy(), atol=2e-5, rtol=1e-4)
    assert not np.allclose(tokens[0], tokens[0].mean(axis=(0, 1)), atol=1e-3)   # per-patch, not one vector


def test_other_variants_and_sizes_are_refused_by_name(siglip) -> None:
    with pytest.raises(InputError, match=r"pools its patches with an attention head.*--objects pool"):
        siglip.check_dense("raw")
    with pytest.raises(InputError, match=r"own input size only \(64 px\)"):
        siglip.dense_side(128)
    vit = enc.load_encoder(enc.TEST_MODEL, random_weights=True)
    assert vit.aligned_variant() == "clearclip"
    with pytest.raises(InputError, match="per-patch tokens"):
        vit.check_dense("maskclip")


def test_crop_fill_is_the_models_own_mean(siglip) -> None:
    from indexer.embed import embed_batch, object_crop
    from indexer.segment import ObjectMask
    assert siglip.fill_rgb.tolist() == [128, 128, 128]
    assert enc.load_encoder(enc.TEST_MODEL, random_weights=True).fill_rgb.tolist() == [123, 117, 104]
    image = np.full((40, 60, 3), 200, np.uint8)
    mask = np.zeros((40, 60), bool)
    mask[10:20, 10:30] = True
    obj = ObjectMask(0, 0, mask, (10, 10, 30, 20), float(mask.mean()), False)
    crop = object_crop(image, mask, obj.bbox, margin=0.2, fill=siglip.fill_rgb)
    assert (crop[0, 0] == 128).all() and (crop[crop.shape[0] // 2, crop.shape[1] // 2] == 200).all()
    batch = embed_batch(siglip, [image], [[obj]], "crop", margin=0.2)
    np.testing.assert_allclose(batch.object_vectors, siglip.encode_images([crop]), atol=1e-6)
    x = siglip.preprocess([np.broadcast_to(siglip.fill_rgb, (8, 8, 3)).copy()])
    assert float(x.abs().max()) < 0.01                     # the fill colour is zero at the model's input


def test_tiny_siglip_indexes_and_searches_with_objects_pool(collection, tmp_path, capsys) -> None:
    idx = tmp_path / "siglip"
    assert main(index_args(collection, idx, "--site", SITES[0], model=enc.TEST_SIGLIP_MODEL)) == 0
    manifest = json.loads((idx / "manifest.json").read_text())
    assert manifest["indexing"]["objects"] == "pool"
    assert manifest["indexing"]["pool_features"] == {"variant": "maskclip", "size": 64}
    assert manifest["encoder"]["mean"] == [0.5, 0.5, 0.5]
    from search.store import open_index
    index = open_index(idx)
    assert len(index.objects) > 0
    capsys.readouterr()
    assert main(["search", "a red fish", "--index", str(idx), "--json", "-k", "5"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["encoder"]["model"] == enc.TEST_SIGLIP_MODEL and len(data["results"]) == len(index.frames)
    assert any(r.get("object_score") is not None for r in data["results"]), data["results"][0]


def test_default_objects_fall_back_to_crop_without_a_dense_path(collection, tmp_path, capsys) -> None:
    idx = tmp_path / "rn"
    assert main(index_args(collection, idx, "--site", SITES[0], model="mvk-tiny-rn")) == 0
    err = capsys.readouterr().err
    notes = [line for line in err.splitlines() if "no per-patch features" in line]
    assert len(notes) == 1 and "--objects crop" in notes[0]
    manifest = json.loads((idx / "manifest.json").read_text())
    assert manifest["indexing"]["objects"] == "crop"
    assert main(index_args(collection, idx, "--site", SITES[1], model="mvk-tiny-rn")) == 0   # joins as crop


def test_preset_picks_the_model_and_refuses_a_second_choice(tmp_path, capsys) -> None:
    import argparse

    from indexer.commands.index import apply_preset
    from search.models import PRESETS
    args = argparse.Namespace(preset="balanced", model=None, pretrained=None)
    apply_preset(args)
    assert (args.model, args.pretrained) == ("ViT-B-16-SigLIP", "webli")
    assert set(PRESETS) == {"fast", "balanced", "best", "species"}
    assert main(["index", str(tmp_path), "--index", str(tmp_path / "i"), "--preset", "best",
                 "--model", "ViT-B-32"]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("mvk index: error:") and "--preset best names the model itself" in last


def test_models_lists_a_siglip_model_with_a_measured_cost(capsys) -> None:
    from search.models import model_rows
    rows = model_rows(cached=lambda name, tag: False)
    siglip = [r for r in rows if "SigLIP" in r["name"] and r["frame_ms"]]
    assert siglip and all(r["frame_ms"] > 0 and r["objects_mode"] == "pool" for r in siglip)
    best = next(r for r in rows if r["preset"] == "best")
    assert best["retrieval"]["flickr_image_r1"] == pytest.approx(0.8296)
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("ViT-B-16-SigLIP "))
    assert "webli" in line and "balanced" in line and " 768 " in line and "0.747" in line
    assert "mvk kis" in out and "create_model_and_transforms('ViT-B-16-SigLIP', pretrained='webli')" in out


def test_species_preset_offline_names_what_to_fetch(collection, tmp_path, capsys) -> None:
    idx = tmp_path / "bio"
    assert main(["index", str(collection), "--index", str(idx), "--preset", "species", "--backbone", "color",
                 "--no-progress"]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("mvk index: error:") and "'hf-hub:imageomics/bioclip' is not in the local" in last
    assert not (idx / "manifest.json").exists()


def test_a_grid_that_covers_less_than_the_input_weighs_only_what_it_sees(siglip) -> None:
    """SigLIP-384: 27 patches of 14 px cover 378 of 384 px; mask weights follow the covered part only."""
    from indexer.embed import mask_grid_weights
    assert siglip.token_extent() == 1.0 and siglip.token_grid() == (4, 4)
    extent = 378 / 384
    full = np.ones((1, 384, 384), bool)
    w = mask_grid_weights(full, (27, 27), extent=extent).numpy()
    np.testing.assert_allclose(w, np.full((1, 27 * 27), 1 / 27 ** 2), rtol=1e-4)
    strip = np.zeros((1, 384, 384), bool)
    strip[:, :, 380:] = True                                   # only the 6 px the patches never see
    assert mask_grid_weights(strip, (27, 27), extent=extent).abs().sum() == 0
    corner = np.zeros((1, 384, 384), bool)
    corner[:, 364:378, 364:378] = True                         # exactly the last covered cell
    w = mask_grid_weights(corner, (27, 27), extent=extent).numpy().reshape(27, 27)
    assert w[26, 26] == pytest.approx(1.0, abs=1e-4)


def test_dense_features_default_to_the_towers_own_variant(siglip) -> None:
    ims = _images(2)
    _, default = siglip.encode_image_tokens(ims)
    _, named = siglip.encode_image_tokens(ims, variant="maskclip")
    np.testing.assert_array_equal(default, named)
    vit = enc.load_encoder(enc.TEST_MODEL, random_weights=True)
    np.testing.assert_array_equal(vit.encode_image_tokens(ims)[1], vit.encode_image_tokens(ims, variant="clearclip")[1])

"""search.encoder with the tiny random open_clip model: shapes, normalisation, letterbox, tokens, cache,
context, missing weights."""
import numpy as np
import pytest

from search import encoder as enc
from search.errors import InputError, MissingWeightsError


@pytest.fixture(scope="module")
def tiny():
    return enc.load_encoder(enc.TEST_MODEL, random_weights=True)


def test_text_vectors_normalised(tiny):
    v = tiny.encode_text(["a turtle", "a diver", "a turtle"])
    assert v.shape == (3, tiny.dim) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    assert np.allclose(v[0], v[2], atol=1e-6) and not np.allclose(v[0], v[1])


def test_batches_do_not_change_results(tiny):
    texts = [f"fish number {i}" for i in range(7)]
    assert np.allclose(tiny.encode_text(texts, batch_size=3), tiny.encode_text(texts), atol=1e-5)
    ims = [np.random.default_rng(i).integers(0, 255, (36, 64, 3), dtype=np.uint8) for i in range(5)]
    assert np.allclose(tiny.encode_images(ims, batch_size=2), tiny.encode_images(ims), atol=1e-5)


def test_letterbox_keeps_the_sides_crop_does_not(tiny):
    wide = np.zeros((36, 128, 3), np.uint8)
    other = wide.copy()
    other[:, :20] = 255                                    # only the left edge differs
    lb = tiny.encode_images([wide, other], fit="letterbox")
    cr = tiny.encode_images([wide, other], fit="crop")
    assert not np.allclose(lb[0], lb[1], atol=1e-4)
    assert np.allclose(cr[0], cr[1], atol=1e-5)
    x = tiny.preprocess([wide], fit="letterbox")
    s = tiny.image_size
    assert x.shape == (1, 3, s, s)
    assert float(x[0, :, 0].abs().max()) == 0.0           # padding is the mean colour (0 once normalised)


def test_mixed_sizes_and_grey(tiny):
    ims = [np.zeros((20, 30, 3), np.uint8), np.full((64, 48), 128, np.uint8), np.zeros((36, 64, 3), np.uint8)]
    assert tiny.encode_images(ims).shape == (3, tiny.dim)


def test_bad_image(tiny):
    with pytest.raises(InputError):
        tiny.encode_images([np.zeros((0, 4, 3), np.uint8)])
    with pytest.raises(InputError):
        tiny.encode_images([np.zeros((4, 4, 3), np.uint8)], fit="stretch")


def test_tokens_project_into_joint_space(tiny):
    ims = [np.random.default_rng(i).integers(0, 255, (36, 64, 3), dtype=np.uint8) for i in range(3)]
    pooled, tokens = tiny.encode_image_tokens(ims, batch_size=2, variant="raw")
    gh, gw = tiny.token_grid()
    assert tokens.shape == (3, gh, gw, tiny.dim) and pooled.shape == (3, tiny.dim)
    assert np.allclose(pooled, tiny.encode_images(ims), atol=1e-5)
    # the tokens went through ln_post and proj: their mean is in the same space as the pooled vector
    import torch

    from search.dense import embed_patches
    v = tiny.model.visual
    with torch.inference_mode():
        h = v.transformer(embed_patches(v, tiny.preprocess(ims[:1])))
        manual = (v.ln_post(h[:, 1:]) @ v.proj).reshape(1, gh, gw, -1).numpy()
    assert np.allclose(tokens[:1], manual, atol=1e-5)


def test_context(tiny):
    assert tiny.fits_context("a small fish")
    long = " ".join(["coral"] * 200)
    assert not tiny.fits_context(long)
    assert tiny.encode_text([long]).shape == (1, tiny.dim)     # truncated, not an error


def test_cached_and_seeded(tiny):
    assert enc.load_encoder(enc.TEST_MODEL, random_weights=True) is tiny
    net, _, tok = enc.create_open_clip(enc.TEST_MODEL, None, random_weights=True)
    import torch
    with torch.inference_mode():
        v = torch.nn.functional.normalize(net.encode_text(tok(["a turtle"])), dim=-1).numpy()
    assert np.allclose(v, tiny.encode_text(["a turtle"]), atol=1e-5)   # same seed, same random model


def test_identity(tiny):
    ident = tiny.identity()
    assert ident["model"] == enc.TEST_MODEL and ident["random_weights"] is True
    assert ident["dim"] == tiny.dim and ident["pretrained"] is None and ident["fit"] == "letterbox"
    assert enc.same_space(ident, dict(ident, fit="crop"))
    assert not enc.same_space(ident, dict(ident, model="ViT-B-32"))
    assert "random weights" in enc.describe(ident)


def test_missing_weights_offline(monkeypatch):
    monkeypatch.setattr(enc, "_is_cached", lambda m, p: False)
    monkeypatch.setattr(enc, "_hub_reachable", lambda *a, **k: False)
    with pytest.raises(MissingWeightsError) as err:
        enc.load_encoder("ViT-B-32", "openai")
    msg = str(err.value)
    assert "ViT-B-32" in msg and "openai" in msg and "--checkpoint" in msg and "internet" in msg


def test_missing_checkpoint_and_bad_names(tmp_path):
    with pytest.raises(MissingWeightsError, match="nope.pt"):
        enc.load_encoder("ViT-B-32", checkpoint=tmp_path / "nope.pt")
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(MissingWeightsError, match="broken.pt"):
        enc.load_encoder(enc.TEST_MODEL, checkpoint=broken)
    with pytest.raises(InputError, match="no pretrained tag"):
        enc.load_encoder("ViT-B-32", "no-such-tag")
    with pytest.raises(InputError, match="unknown open_clip model"):
        enc.load_encoder("no-such-model", random_weights=True)


def test_checkpoint_file_loads(tmp_path, tiny):
    import torch
    path = tmp_path / "tiny.pt"
    torch.save(tiny.model.state_dict(), path)
    e = enc.load_encoder(enc.TEST_MODEL, checkpoint=path)
    assert e.identity()["checkpoint"] == {"name": "tiny.pt", "size": path.stat().st_size}
    assert e.identity()["random_weights"] is False
    assert np.allclose(e.encode_text(["x"]), tiny.encode_text(["x"]), atol=1e-5)


def test_open_clips_random_init_warning_gives_way_to_the_projects_own_line(caplog):
    """Random weights are asked for explicitly; the commands label them in their own words, so open_clip's
    root-logger warning about them is not printed as well."""
    import logging

    from search.encoder import TEST_MODEL, create_open_clip

    with caplog.at_level(logging.WARNING):
        create_open_clip(TEST_MODEL, None, random_weights=True)
    assert not [r for r in caplog.records if "No pretrained weights loaded" in r.getMessage()]
    logging.getLogger().warning("No pretrained weights loaded elsewhere")     # only while the model is built
    assert [r for r in caplog.records if "No pretrained weights loaded" in r.getMessage()]


def test_clip_and_dino_weights_follow_one_offline_rule(monkeypatch):
    """HF_HUB_OFFLINE switches the hub off for the CLIP encoder as for the DINO backbone: no network is tried
    (search.weights is the one rule both use)."""
    import socket

    from indexer import backbone as bb
    from search import encoder as enc
    from search import weights

    def no_network(*args, **kwargs):
        raise AssertionError("the network was tried although HF_HUB_OFFLINE is set")
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert weights.hub_reachable() is False
    assert enc._hub_reachable() is False and bb._hub_reachable() is False
    assert enc.hub_cache_dir() == bb.hub_cache_dir() == weights.hub_cache_dir()

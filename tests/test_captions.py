"""Captions with a tiny random CoCa: seeded target choice, greedy decoding, the query set and its labels."""
from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from mvk_tools import captions
from mvk_tools.querysets import read_queryset, write_queryset
from search.errors import MissingWeightsError


@pytest.fixture(scope="module")
def tiny() -> captions.Captioner:
    return captions.load_captioner(captions.TEST_MODEL, None, random_weights=True)


def jpeg(seed: int, size: tuple[int, int] = (48, 32)) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG")
    return buf.getvalue()


def frames_table(n: int) -> pd.DataFrame:
    return pd.DataFrame({"gid": np.arange(n), "site": "Oahu_Jul2022", "video_id": [f"{i // 3 + 1:04d}" for i in range(n)],
                         "video_path": [f"videos/Oahu_Jul2022/{i // 3 + 1:04d}.mp4" for i in range(n)],
                         "frame_index": [30 * (i % 3) for i in range(n)], "time": [float(i % 3) for i in range(n)],
                         "thumbnail": [jpeg(i) for i in range(n)]})


def test_pick_targets_is_seeded_and_without_replacement() -> None:
    frames = frames_table(12)
    a = captions.pick_targets(frames, 5, seed=7)
    assert list(a["gid"]) == list(captions.pick_targets(frames, 5, seed=7)["gid"])
    assert list(a["gid"]) != list(captions.pick_targets(frames, 5, seed=8)["gid"])
    assert a["gid"].is_unique and len(a) == 5
    assert sorted(captions.pick_targets(frames, 50, seed=0)["gid"]) == list(range(12))


def test_greedy_decoding_batches_and_stops_at_end_of_text(tiny: captions.Captioner) -> None:
    images = [np.asarray(Image.open(io.BytesIO(jpeg(i)))) for i in range(3)]
    texts = tiny.caption(images, max_tokens=6, batch_size=2)
    assert len(texts) == 3 and all(t.strip() for t in texts)
    assert texts == tiny.caption(images, max_tokens=6, batch_size=3)      # deterministic, batch-independent
    x = torch.stack([tiny.preprocess(Image.fromarray(im)) for im in images])
    tokens = captions.greedy_decode(tiny.model, x, max_tokens=6)
    assert tokens.shape[0] == 3 and 2 <= tokens.shape[1] <= 7 and (tokens[:, 0] == 49406).all()
    assert (tokens[:, 1:3] != 49407).all()                                # no end-of-text before MIN_TOKENS


def test_decode_cuts_at_end_of_text(tiny: captions.Captioner) -> None:
    ids = tiny.tokenizer.encode("a turtle over coral")
    row = torch.tensor([[49406, *ids, 49407, *tiny.tokenizer.encode("junk"), 49407]])
    assert captions.decode_tokens(tiny.tokenizer, row) == ["a turtle over coral"]


def test_caption_queryset_is_labelled_random_and_round_trips(tiny: captions.Captioner, tmp_path) -> None:
    frames = frames_table(9)
    frames.loc[4, "thumbnail"] = b"not a jpeg"
    targets = captions.pick_targets(frames, 9, seed=0)
    images, positions, issues = captions.frame_images(targets)
    assert len(images) == 8 and len(issues) == 1 and "Oahu_Jul2022/0002 frame 30" in str(issues[0])
    texts = tiny.caption(images, max_tokens=5)
    qs = captions.caption_queryset(targets.iloc[positions], texts, source=tiny.describe(), random_weights=True)
    assert len(qs) == 8 and set(qs["query_type"]) == {"clipcap-random-weights"}
    assert "RANDOM WEIGHTS" in qs["source"].iat[0]
    assert qs["query_id"].is_unique
    back = read_queryset(write_queryset(qs, tmp_path / "captions.csv"))
    assert back.issues == [] and list(back.queries["text"]) == list(qs["text"])
    assert list(back.queries["target_frame"]) == list(targets.iloc[positions]["frame_index"])


def test_missing_weights_offline_say_what_to_fetch(monkeypatch: pytest.MonkeyPatch) -> None:
    import search.encoder as enc
    monkeypatch.setattr(enc, "_is_cached", lambda *a: False)
    monkeypatch.setattr(enc, "_hub_reachable", lambda *a, **k: False)
    with pytest.raises(MissingWeightsError, match="coca_ViT-B-32"):
        captions.load_captioner()

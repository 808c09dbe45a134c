"""`mvk segment`: --eval on a synth collection, overlays for a video, clear errors."""
from __future__ import annotations

import json

import pytest

from indexer.cli import main
from mvk_tools.synth import make_collection

FAST = ["--short-side", "96", "--key-stride", "5"]


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    return make_collection(tmp_path_factory.mktemp("synth"), sites=("Oahu_Jul2022",), videos_per_site=1,
                           n_frames=16)


def test_eval_on_synth_prints_table_and_json(collection, tmp_path, capsys) -> None:
    out_json = tmp_path / "r.json"
    assert main(["segment", "--eval", str(collection), "--backbone", "color", "--json", str(out_json), *FAST]) == 0
    out = capsys.readouterr().out
    assert "colour baseline" in out and "Oahu_Jul2022/0001" in out and "fg_ari" in out
    result = json.loads(out_json.read_text())
    assert json.loads(out[out.index("{"):]) == result
    assert result["scored"] == 1 and result["backbone"]["backbone"] == "color"
    assert result["mean"]["fg_ari"] > 0.6 and result["mean"]["miou"] > 0.6


def test_overlays_for_a_video(collection, tmp_path, capsys) -> None:
    video = collection / "videos" / "Oahu_Jul2022" / "0001.mp4"
    out = tmp_path / "ov"
    assert main(["segment", str(video), "--out", str(out), "--backbone", "color", "--every-nth", "2",
                 "--level", "0", *FAST]) == 0
    pngs = sorted(out.glob("frame_*.png"))
    assert len(pngs) == 8 and pngs[1].name == "frame_000002.png"
    tracks = json.loads((out / "tracks.json").read_text())
    assert tracks["frames"] == 8 and tracks["random_weights"] is False
    assert any(t["background"] for t in tracks["tracks"].values())
    assert "8 frames" in capsys.readouterr().out


def test_random_weights_are_labelled(collection, tmp_path, capsys) -> None:
    video = collection / "videos" / "Oahu_Jul2022" / "0001.mp4"
    out = tmp_path / "rw"
    assert main(["segment", str(video), "--out", str(out), "--random-weights", "--max-frames", "3",
                 "--short-side", "64"]) == 0
    assert "RANDOM WEIGHTS" in capsys.readouterr().out
    assert json.loads((out / "tracks.json").read_text())["random_weights"] is True


def test_errors_are_one_line(collection, tmp_path, capsys, monkeypatch) -> None:
    assert main(["segment", "--backbone", "color"]) == 2
    assert "either VIDEO" in capsys.readouterr().err
    assert main(["segment", "--eval", str(tmp_path), "--backbone", "color"]) == 2
    assert "not an mvk synth collection" in capsys.readouterr().err
    assert main(["segment", str(tmp_path / "nope.mp4"), "--out", str(tmp_path / "o"), "--backbone", "color"]) == 2
    assert "nope.mp4" in capsys.readouterr().err
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["segment", "--eval", str(collection)]) == 2
    assert "vit_small_patch16_224.dino" in capsys.readouterr().err


def test_a_broken_clip_is_reported_and_the_rest_scored(collection, tmp_path, capsys) -> None:
    import shutil
    broken = tmp_path / "two"
    shutil.copytree(collection, broken)
    masks = broken / "information" / "masks" / "Oahu_Jul2022"
    shutil.copy(masks / "0001.npz", masks / "0002.npz")
    (broken / "videos" / "Oahu_Jul2022" / "0002.mp4").write_bytes(b"garbage")
    assert main(["segment", "--eval", str(broken), "--backbone", "color", *FAST]) == 0
    out = capsys.readouterr().out
    result = json.loads(out[out.index("{"):])
    assert result["scored"] == 1 and result["failed"] == 1
    assert "0002.mp4" in result["clips"]["Oahu_Jul2022/0002"]["error"]
    assert result["clips"]["Oahu_Jul2022/0001"]["fg_ari"] > 0.6


def _davis_folder(root, clip, names=("seqa", "seqb")):
    from PIL import Image
    for name in names:
        img_dir = root / "JPEGImages" / "480p" / name
        ann_dir = root / "Annotations" / "480p" / name
        img_dir.mkdir(parents=True)
        ann_dir.mkdir(parents=True)
        for i, (frame, mask) in enumerate(zip(clip.frames, clip.masks)):
            Image.fromarray(frame).save(img_dir / f"{i:05d}.jpg", quality=95)
            Image.fromarray(mask).save(ann_dir / f"{i:05d}.png")      # 2017-style object indices
    return root


def test_eval_on_a_davis_folder_with_a_broken_frame(tmp_path, capsys) -> None:
    from mvk_tools.synth import render_clip
    root = _davis_folder(tmp_path / "davis", render_clip(n_frames=12, seed=2))
    (root / "JPEGImages" / "480p" / "seqb" / "00003.jpg").write_bytes(b"\xff\xd8 truncated")
    assert main(["segment", "--eval", str(root), "--backbone", "color", *FAST]) == 0
    out = capsys.readouterr().out
    result = json.loads(out[out.index("{"):])
    assert "00003.jpg" in result["clips"]["seqb"]["error"]
    assert result["clips"]["seqa"]["objects"] == 3 and result["clips"]["seqa"]["fg_ari"] > 0.6
    assert main(["segment", "--eval", str(root), "--sequences", "seqz", "--backbone", "color"]) == 2
    assert "seqz" in capsys.readouterr().err


def test_eval_on_real_davis_frames(davis_dir, capsys) -> None:
    assert main(["segment", "--eval", str(davis_dir), "--sequences", "blackswan", "--every-nth", "10",
                 "--backbone", "color", "--tau", "1.6"]) == 0
    out = capsys.readouterr().out
    result = json.loads(out[out.index("{"):])
    clip = result["clips"]["blackswan"]
    assert clip["frames"] == 5 and clip["objects"] == 1 and 0.0 <= clip["J_single"] <= 1.0


def test_single_object_ground_truth_gives_strict_json(tmp_path, capsys) -> None:
    """FG-ARI is undefined with one object: the JSON says null, not NaN, so strict parsers read it."""
    import numpy as np

    from mvk_tools.synth import render_clip
    clip = render_clip(n_frames=8, seed=3)
    single = type(clip)(frames=clip.frames, masks=(clip.masks > 0).astype(np.uint8), fps=clip.fps)
    root = _davis_folder(tmp_path / "davis", single, names=("one",))
    out_json = tmp_path / "r.json"
    assert main(["segment", "--eval", str(root), "--backbone", "color", "--json", str(out_json), *FAST]) == 0

    def refuse(constant: str) -> None:
        raise ValueError(f"non-standard JSON constant {constant}")

    result = json.loads(out_json.read_text(), parse_constant=refuse)
    assert result["clips"]["one"]["fg_ari"] is None
    assert 0.0 <= result["clips"]["one"]["J_single"] <= 1.0

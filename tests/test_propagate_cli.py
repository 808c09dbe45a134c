"""Following objects end to end: propagate_video forward and backward, `mvk segment --propagate/--box/
--point`, the DAVIS semi-supervised evaluation (J and F by hand), the propagator registry, and every bad
input answered with a clear error and exit code 2."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from indexer.cli import main
from indexer.evaluate import EvalClip
from indexer.follow import FollowSettings, propagate_video
from indexer.metrics import jaccard_frames
from indexer.propagation import PropagatedFrame, PropagateParams
from indexer.propagators import PropagatorSettings, load_propagator, register_propagator
from indexer.seeds import BoxSeed, MaskSeed, PointSeed
from indexer.semi_eval import evaluate_semi
from indexer.tracks import coco_rle_decode, track_to_coco, write_track_pngs
from mvk_tools.synth import load_masks, make_collection, render_clip
from mvk_tools.video import Frame
from search.errors import InputError, MissingWeightsError

FAST = ["--backbone", "color", "--short-side", "64"]
SETTINGS = FollowSettings(propagator=PropagatorSettings(backbone="color", params=PropagateParams(short_side=64)))


@pytest.fixture(scope="module")
def clip():
    return render_clip(n_frames=24, size=(160, 96), n_objects=3, seed=0)


@pytest.fixture(scope="module")
def folder(clip, tmp_path_factory):
    """The clip as a folder of PNG frames, with its first and middle masks as label PNGs."""
    root = tmp_path_factory.mktemp("frames")
    frames = root / "frames"
    frames.mkdir()
    for i, im in enumerate(clip.frames):
        Image.fromarray(im).save(frames / f"{i:05d}.png")
    for t in (0, 12):
        img = Image.fromarray(clip.masks[t], mode="P")
        img.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 756)
        img.save(root / f"seed{t}.png")
    return root


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    coll = make_collection(tmp_path_factory.mktemp("synth"), sites=("Oahu_Jul2022",), videos_per_site=1,
                           n_frames=16)
    return coll / "videos" / "Oahu_Jul2022" / "0001.mp4", load_masks(coll, "Oahu_Jul2022", "0001")


def test_propagate_video_backward_and_forward_from_a_middle_frame(clip, folder, tmp_path) -> None:
    track = propagate_video(folder / "frames", MaskSeed(folder / "seed12.png"), 12, SETTINGS)
    assert [f.index for f in track.frames] == list(range(24)) and track.object_ids == (1, 2, 3)
    pred = np.stack([track.labels(i) for i in range(24)])
    assert np.array_equal(pred[12], clip.masks[12])
    for oid in (2, 3):        # the objects that stay in view, before and after the seed frame
        j = jaccard_frames(clip.masks == oid, pred == oid)
        assert j[:12].mean() >= 0.6 and j[13:].mean() >= 0.6, (oid, j)   # 8x13 patches at short side 64
    coco = track_to_coco(track)
    assert len(coco["images"]) == 24 and {a["track_id"] for a in coco["annotations"]} == {1, 2, 3}
    ann = coco["annotations"][0]
    assert np.array_equal(coco_rle_decode(ann["segmentation"]), track.mask(ann["image_id"], ann["track_id"]))
    pngs = write_track_pngs(track, tmp_path / "pngs")
    assert len(pngs) == 24 and np.array_equal(np.asarray(Image.open(pngs[12])), clip.masks[12])


def test_point_and_box_seeds_pick_the_segment_under_them(clip, folder) -> None:
    ys, xs = np.nonzero(clip.masks[0] == 3)
    point = (float(np.median(xs)), float(np.median(ys)))
    track = propagate_video(folder / "frames", PointSeed(point), 0, SETTINGS)
    seed = track.mask(0, 1)
    assert jaccard_frames((clip.masks[0] == 3)[None], seed[None])[0] > 0.7
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    track = propagate_video(folder / "frames", BoxSeed((x0 - 2, y0 - 2, x1 + 2, y1 + 2)), 0, SETTINGS)
    assert jaccard_frames((clip.masks[0] == 3)[None], track.mask(0, 1)[None])[0] > 0.7


def test_cli_propagates_a_video_from_a_middle_frame(video, tmp_path, capsys) -> None:
    path, masks = video
    mask = tmp_path / "m.png"
    Image.fromarray((masks[8] > 0).astype(np.uint8) * 255).save(mask)        # a binary 0/255 mask
    out = tmp_path / "out"
    assert main(["segment", str(path), "--propagate", str(mask), "--from-frame", "8", "--out", str(out), *FAST]) == 0
    assert "16 frames propagated from frame 8" in capsys.readouterr().out
    assert sorted(p.name for p in (out / "masks").glob("*.png")) == [f"{i:05d}.png" for i in range(16)]
    assert len(list(out.glob("frame_*.png"))) == 16
    tracks = json.loads((out / "tracks.json").read_text())
    assert tracks["seed_frame"] == 8 and tracks["tracks"]["1"]["first_frame"] == 0
    assert tracks["tracks"]["1"]["last_frame"] == 15 and tracks["backbone"]["backbone"] == "color"
    coco = json.loads((out / "track_coco.json").read_text())
    assert len(coco["images"]) == 16
    pred = np.stack([np.asarray(Image.open(out / "masks" / f"{i:05d}.png")) for i in range(16)]) > 0
    assert jaccard_frames(masks > 0, pred).mean() >= 0.6


def test_cli_click_and_box(video, tmp_path) -> None:
    path, masks = video
    ys, xs = np.nonzero(masks[0] == 2)
    assert main(["segment", str(path), "--point", f"{np.median(xs)},{np.median(ys)}", "--max-frames", "4",
                 "--out", str(tmp_path / "p"), *FAST]) == 0
    assert len(list((tmp_path / "p" / "masks").glob("*.png"))) == 4
    assert main(["segment", str(path), "--box", f"{xs.min()},{ys.min()},{xs.max() + 1},{ys.max() + 1}",
                 "--max-frames", "3", "--out", str(tmp_path / "b"), *FAST]) == 0
    assert len(list((tmp_path / "b" / "masks").glob("*.png"))) == 3


def test_bad_inputs_exit_2_with_the_thing_named(video, folder, tmp_path, capsys) -> None:
    path, _ = video
    frames = folder / "frames"

    def err(*argv: str) -> str:
        capsys.readouterr()
        assert main(["segment", *argv, *FAST]) == 2
        return capsys.readouterr().err

    out = ["--out", str(tmp_path / "o")]
    other = tmp_path / "other.png"
    Image.fromarray(np.ones((50, 50), np.uint8)).save(other)
    assert "another aspect ratio" in err(str(frames), "--propagate", str(other), *out)
    empty = tmp_path / "empty.png"
    Image.fromarray(np.zeros((96, 160), np.uint8)).save(empty)
    assert "empty" in err(str(frames), "--propagate", str(empty), *out)
    assert "no such file" in err(str(frames), "--propagate", str(tmp_path / "nope.png"), *out)
    assert "outside the frame" in err(str(frames), "--point", "500,10", *out)
    assert "outside the frame" in err(str(frames), "--box", "300,200,400,300", *out)
    assert "is empty" in err(str(frames), "--box", "30,20,10,40", *out)
    assert "past the end" in err(str(frames), "--propagate", str(folder / "seed0.png"), "--from-frame", "99", *out)
    assert "past the end" in err(str(path), "--point", "5,5", "--from-frame", "40", *out)
    assert "one seed" in err(str(frames), "--point", "5,5", "--box", "0,0,9,9", *out)
    assert "--semi goes with --eval" in err(str(frames), "--semi", *out)
    assert "--every-nth" in err(str(path), "--point", "5,5", "--every-seconds", "1", *out)
    assert "needs its weights" in err(str(frames), "--point", "5,5", "--propagator", "deaot", *out)
    assert "unknown propagator" in err(str(frames), "--point", "5,5", "--propagator", "nope", *out)


def test_a_mask_of_the_same_aspect_is_resized_with_a_note(folder, tmp_path, capsys) -> None:
    half = tmp_path / "half.png"
    Image.open(folder / "seed0.png").resize((80, 48), Image.NEAREST).save(half)
    assert main(["segment", str(folder / "frames"), "--propagate", str(half), "--max-frames", "2",
                 "--out", str(tmp_path / "o"), *FAST]) == 0
    assert "resized to the frames' 160x96" in capsys.readouterr().out


def test_trained_propagators_need_their_checkpoint_and_their_code(tmp_path) -> None:
    with pytest.raises(MissingWeightsError, match="aot-benchmark"):
        load_propagator(PropagatorSettings(name="deaot"))
    with pytest.raises(MissingWeightsError, match="does not exist"):
        load_propagator(PropagatorSettings(name="deaot", propagator_checkpoint=str(tmp_path / "x.pth")))
    ckpt = tmp_path / "deaot.pth"
    ckpt.write_bytes(b"not really")
    with pytest.raises(InputError, match="no DeAOT code is plugged in"):
        load_propagator(PropagatorSettings(name="deaot", propagator_checkpoint=str(ckpt)))


class FixedPropagator:
    """Answers with given label maps: the evaluation is checked apart from any model."""

    def __init__(self, pred: np.ndarray) -> None:
        self.pred = pred

    def propagate(self, frames, seed):
        for f, labels in zip(frames, self.pred):
            yield PropagatedFrame(f, labels)

    def identity(self) -> dict:
        return {"propagator": "fixed"}


def test_registered_propagators_are_loaded_by_name() -> None:
    register_propagator("fixed-test", lambda settings: FixedPropagator(np.zeros((1, 2, 2), np.uint8)))
    assert isinstance(load_propagator(PropagatorSettings(name="fixed-test")), FixedPropagator)


def test_semi_evaluation_reproduces_j_and_f_by_hand() -> None:
    """Four frames, the first and the last not scored. Object 1 (a 20x20 square): frame 1 predicted one
    row lower (J = 380/420; every boundary pixel within the 1.13-pixel tolerance of 0.008 x the 141-pixel
    diagonal, so F = 1), frame 2 missed (J = F = 0). Object 2 exact on both (J = F = 1)."""
    gt = np.zeros((4, 100, 100), np.uint8)
    gt[:, 20:40, 20:40] = 1
    gt[:, 60:80, 50:90] = 2
    pred = gt.copy()
    pred[1][pred[1] == 1] = 0
    pred[1, 21:41, 20:40] = 1
    pred[2][pred[2] == 1] = 0
    pred[3] = 0                                   # the last frame is not scored
    frames = [Frame(i, float(i), np.zeros((100, 100, 3), np.uint8)) for i in range(4)]
    clips = [EvalClip("seq", lambda: iter(frames), lambda: gt)]
    result = evaluate_semi(clips, FixedPropagator(pred))
    r = result["clips"]["seq"]
    j1, f1 = (380 / 420 + 0) / 2, (1 + 0) / 2
    assert r["per_object"]["1"]["J"] == pytest.approx(j1) and r["per_object"]["1"]["F"] == pytest.approx(f1)
    assert r["per_object"]["2"] == {"J": 1.0, "F": 1.0}
    assert r["J"] == pytest.approx((j1 + 1) / 2) and r["F"] == pytest.approx((f1 + 1) / 2)
    assert r["J&F"] == pytest.approx((r["J"] + r["F"]) / 2)
    assert result["mean"]["J"] == pytest.approx(r["J"]) and result["scored"] == 1


def test_cli_semi_eval_on_a_davis_folder(clip, tmp_path, capsys) -> None:
    root = tmp_path / "davis"
    for seq, sl in (("alpha", slice(0, 6)), ("beta", slice(6, 12))):
        (root / "JPEGImages" / "480p" / seq).mkdir(parents=True)
        (root / "Annotations" / "480p" / seq).mkdir(parents=True)
        for i, (im, m) in enumerate(zip(clip.frames[sl], clip.masks[sl])):
            Image.fromarray(im).save(root / "JPEGImages" / "480p" / seq / f"{i:05d}.jpg")
            Image.fromarray(m, mode="P").save(root / "Annotations" / "480p" / seq / f"{i:05d}.png")
    out_json = tmp_path / "semi.json"
    assert main(["segment", "--eval", str(root), "--semi", "--json", str(out_json), *FAST]) == 0
    out = capsys.readouterr().out
    assert "alpha" in out and "beta" in out and "J&F" in out and "colour baseline" in out
    result = json.loads(out_json.read_text())
    assert result["scored"] == 2 and result["mean"]["J"] > 0.5
    assert set(result["clips"]["alpha"]) >= {"J", "F", "J&F", "per_object"}


def test_davis_blackswan_follow_and_semi_eval(davis_dir, tmp_path, capsys) -> None:
    """The issue's two commands on the shared DAVIS-2016 clip, shortened to a few frames (the full runs are
    in BENCHMARKS.md)."""
    frames = davis_dir / "JPEGImages" / "480p" / "blackswan"
    seed = davis_dir / "Annotations" / "480p" / "blackswan" / "00000.png"
    out = tmp_path / "bs"
    assert main(["segment", str(frames), "--propagate", str(seed), "--backbone", "color", "--max-frames", "3",
                 "--short-side", "120", "--out", str(out)]) == 0
    assert len(list((out / "masks").glob("*.png"))) == 3
    gt = np.asarray(Image.open(davis_dir / "Annotations" / "480p" / "blackswan" / "00002.png")) > 0
    pred = np.asarray(Image.open(out / "masks" / "00002.png")) > 0
    assert jaccard_frames(gt[None], pred[None])[0] > 0.6
    capsys.readouterr()
    assert main(["segment", "--eval", str(davis_dir), "--semi", "--sequences", "blackswan", "--max-frames", "4",
                 "--backbone", "color", "--short-side", "120"]) == 0
    out_text = capsys.readouterr().out
    assert "blackswan" in out_text and "J&F" in out_text

"""Synthetic collections: deterministic, masks consistent with the frames, occlusion order, leaving and
re-entering, the MVK layout on disk, and bad arguments."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from mvk_tools import synth
from mvk_tools.video import iter_frames, probe


def test_render_is_deterministic_for_a_seed():
    a = synth.render_clip(n_frames=12, seed=3)
    b = synth.render_clip(n_frames=12, seed=3)
    c = synth.render_clip(n_frames=12, seed=4)
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.masks, b.masks)
    assert not np.array_equal(a.frames, c.frames)
    assert a.frames.shape == (12, 96, 160, 3) and a.frames.dtype == np.uint8
    assert a.masks.shape == (12, 96, 160) and a.masks.dtype == np.uint8
    assert a.fps == 12.0


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_masks_follow_the_depth_order_and_cover_every_object(seed):
    layers: list[np.ndarray] = []
    clip, objects = synth._render(n_frames=48, size=(160, 96), n_objects=3, fps=12.0, seed=seed, layers=layers)
    full = np.stack(layers)                                   # (K, T, H, W) unoccluded shapes
    assert set(np.unique(clip.masks)) == {0, 1, 2, 3}
    assert np.array_equal(clip.masks > 0, full.any(0))
    top = np.where(full.any(0), full.shape[0] - np.argmax(full[::-1], axis=0), 0)   # highest id present
    assert np.array_equal(clip.masks, top)
    overlap = sum(int((full[j] & full[k]).sum()) for j in range(3) for k in range(j + 1, 3))
    assert overlap > 0, "objects never occlude each other"
    in_view = full.reshape(3, 48, -1).any(2)                  # (K, T)
    assert [o.leaves_frame for o in objects] == [not row.all() for row in in_view]
    gone = np.flatnonzero(~in_view[0])
    assert gone.size and in_view[0, : gone[0]].any() and in_view[0, gone[-1]:].any(), "object 1 leaves and comes back"


def test_objects_are_told_apart_by_colour():
    clip = synth.render_clip(n_frames=24, n_objects=4, seed=5)
    means = np.stack([clip.frames[clip.masks == k].reshape(-1, 3).mean(0) for k in range(5)])
    distances = np.linalg.norm(means[:, None] - means[None], axis=2)
    assert distances[np.triu_indices(5, 1)].min() > 40


def test_make_collection_writes_the_mvk_layout(tmp_path):
    out = synth.make_collection(tmp_path / "c", sites=("Oahu_Jul2022", "Tulamben2_Jun2022"), videos_per_site=2,
                                n_frames=24, seed=2)
    for site in ("Oahu_Jul2022", "Tulamben2_Jun2022"):
        for vid in ("0001", "0002"):
            video = out / "videos" / site / f"{vid}.mp4"
            info = probe(video)
            assert (info.frame_count, info.width, info.height, info.fps) == (24, 160, 96, 12.0)
            meta = json.loads((out / "information" / "metadata" / site / f"{vid}.json").read_text())
            assert meta["site"] == site and meta["video_id"] == vid and meta["frame_count"] == 24
            assert meta["duration"] == pytest.approx(2.0) and meta["seed"] == 2
            names = sorted(p.name for p in (out / "information" / "selected_frames" / site).glob(f"{vid}_*.jpg"))
            assert names == [f"{vid}_00001.jpg", f"{vid}_00002.jpg"]        # ordinal, as MVK names them
            sel = meta["selected_frames"]
            assert [s["name"] for s in sel] == names and [s["number"] for s in sel] == [1, 2]
            frames = [s["frame"] for s in sel]               # one in the first half of each second
            assert 0 <= frames[0] < 6 and 12 <= frames[1] < 18
            assert [s["time"] for s in sel] == pytest.approx([f / 12.0 for f in frames])
            clip = synth._render(n_frames=24, size=(160, 96), n_objects=3, fps=12.0,
                                 seed=np.random.SeedSequence([2, ("Oahu_Jul2022", "Tulamben2_Jun2022").index(site),
                                                              int(vid) - 1]))[0]
            for s in sel:                                    # each image is its true frame
                with Image.open(out / "information" / "selected_frames" / site / s["name"]) as im:
                    err = np.abs(np.asarray(im).astype(int)[None] - clip.frames).mean(axis=(1, 2, 3))
                assert int(np.argmin(err)) == s["frame"] and err.min() < 6
            masks = synth.load_masks(out, site, vid)
            assert masks.shape == (24, 96, 160)
    clip = synth._render(n_frames=24, size=(160, 96), n_objects=3, fps=12.0,
                         seed=np.random.SeedSequence([2, 1, 0]))[0]
    assert np.array_equal(synth.load_masks(out, "Tulamben2_Jun2022", "0001"), clip.masks)
    decoded = np.stack([f.image for f in iter_frames(out / "videos" / "Tulamben2_Jun2022" / "0001.mp4")])
    assert np.abs(decoded.astype(int) - clip.frames).mean() < 6


def test_make_collection_is_deterministic(tmp_path):
    a = synth.make_collection(tmp_path / "a", sites=("Oahu_Jul2022",), videos_per_site=1, n_frames=12, seed=9)
    b = synth.make_collection(tmp_path / "b", sites=("Oahu_Jul2022",), videos_per_site=1, n_frames=12, seed=9)
    for rel in ("videos/Oahu_Jul2022/0001.mp4", "information/metadata/Oahu_Jul2022/0001.json",
                "information/masks/Oahu_Jul2022/0001.npz"):
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


def test_bad_arguments_and_missing_masks(tmp_path):
    with pytest.raises(synth.SynthError, match="must be even"):
        synth.make_collection(tmp_path / "odd", size=(161, 96))
    (tmp_path / "file").write_text("x")
    with pytest.raises(synth.SynthError, match="not a folder"):
        synth.make_collection(tmp_path / "file")
    with pytest.raises(synth.SynthError, match="0003.npz"):
        synth.load_masks(tmp_path, "Oahu_Jul2022", "0003")
    bad = tmp_path / "information" / "masks" / "Oahu_Jul2022"
    bad.mkdir(parents=True)
    (bad / "0001.npz").write_bytes(b"not an npz")
    with pytest.raises(synth.SynthError, match="cannot read"):
        synth.load_masks(tmp_path, "Oahu_Jul2022", "0001")


def test_rgb_to_yuv420p_planes():
    """Our own conversion (swscale's was not reproducible run to run): known colours land on BT.601 values."""
    image = np.zeros((4, 6, 3), np.uint8)
    image[:, :3] = (255, 255, 255)
    image[:, 3:] = (255, 0, 0)
    planes = synth.rgb_to_yuv420p(image)
    assert planes.shape == (6, 6) and planes.dtype == np.uint8
    y, u, v = planes[:4], planes[4:5].reshape(2, 3), planes[5:6].reshape(2, 3)
    assert (y[:, :3] == 235).all() and (y[:, 3:] == 82).all()
    assert u[0, 0] == 128 and v[0, 0] == 128               # white: neutral chroma
    assert u[0, 2] == 90 and v[0, 2] == 240                # red

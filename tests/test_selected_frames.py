"""MVK's selected frames, named by ordinal at irregular offsets (as `mvk synth` writes them): located in their
video by content, indexed with their true times, and ranked by `mvk kis` with exactly one matching frame."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from app.cli import main
from mvk_tools import locate, synth
from mvk_tools.layout import selected_images

SITE = "Oahu_Jul2022"
FPS = 12.0


def _meta(coll: Path, site: str, video: str) -> dict:
    return json.loads((coll / "information" / "metadata" / site / f"{video}.json").read_text())


@pytest.fixture(scope="module")
def coll(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two sites, two videos each, 36 frames at 12 fps (3 selected frames per video, irregular offsets)."""
    return synth.make_collection(tmp_path_factory.mktemp("sel") / "coll", sites=(SITE, "PhuQuoc1_Jun2022"),
                                 videos_per_site=2, n_frames=36, size=(96, 64), fps=FPS, n_objects=2, seed=11)


def test_ordinal_selected_frames_are_located_at_their_true_frames(coll: Path) -> None:
    for site in (SITE, "PhuQuoc1_Jun2022"):
        for video in ("0001", "0002"):
            meta = _meta(coll, site, video)
            images = selected_images(coll, site, video)
            assert [im.name for im in images] == [s["name"] for s in meta["selected_frames"]]
            found = locate.locate_files(coll / "videos" / site / f"{video}.mp4", [im.path for im in images])
            true = [s["frame"] for s in meta["selected_frames"]]
            assert found.frame_index.tolist() == true and not found.poor.any()
            assert found.time == pytest.approx([s["time"] for s in meta["selected_frames"]], abs=1e-3)
            assert locate.numbering([im.number for im in images], found.frame_index, found.poor) == "ordinal"


def test_numbers_that_are_frame_indices_are_recognised(coll: Path, tmp_path: Path) -> None:
    meta = _meta(coll, SITE, "0001")
    renamed = []
    for s in meta["selected_frames"]:                     # the same images named by frame index
        dst = tmp_path / f"0001_{s['frame']:05d}.jpg"
        shutil.copy(coll / "information" / "selected_frames" / SITE / s["name"], dst)
        renamed.append(dst)
    found = locate.locate_files(coll / "videos" / SITE / "0001.mp4", renamed)
    assert locate.numbering([s["frame"] for s in meta["selected_frames"]], found.frame_index) == "frame index"
    assert locate.numbering([3, 1, 2], [10, 20, 30]) == "other"
    assert locate.numbering([1, 2], [5, 9], [True, True]) == "unknown"


def test_an_image_from_another_video_is_flagged(coll: Path) -> None:
    other = selected_images(coll, "PhuQuoc1_Jun2022", "0002")
    own = selected_images(coll, SITE, "0001")
    found = locate.locate_files(coll / "videos" / SITE / "0001.mp4", [own[0].path, other[1].path])
    assert found.poor.tolist() == [False, True]
    assert found.distance[0] < 0.3 < locate.POOR_MATCH < found.distance[1]


@pytest.fixture(scope="module")
def mixed(coll: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A copy where site PhuQuoc1 video 0002 has no selected frames and SITE/0002 holds a stray image from
    another video, indexed with --selected-frames (frame vectors only, tiny random CLIP)."""
    base = tmp_path_factory.mktemp("mixed")
    copy = base / "coll"
    shutil.copytree(coll, copy)
    for p in (copy / "information" / "selected_frames" / "PhuQuoc1_Jun2022").glob("0002_*"):
        p.unlink()
    stray = copy / "information" / "selected_frames" / SITE / "0002_00004.jpg"
    shutil.copy(copy / "information" / "selected_frames" / "PhuQuoc1_Jun2022" / "0001_00002.jpg", stray)
    idx = base / "idx"
    assert main(["index", str(copy), "--all", "--index", str(idx), "--selected-frames", "--objects", "none",
                 "--model", "mvk-tiny-vit", "--random-weights", "--no-progress"]) == 0
    return copy, idx


def test_the_index_run_reports_the_stray_image_and_the_unselected_video(mixed: tuple[Path, Path], tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    copy, _ = mixed
    capsys.readouterr()
    assert main(["index", str(copy), "--all", "--index", str(tmp_path / "idx"), "--selected-frames", "--objects",
                 "none", "--model", "mvk-tiny-vit", "--random-weights", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "1 video(s) have no selected frames: sampled every 1 s" in out
    assert "selected frames: 10 images of 3 video(s) located by content; their numbers are ordinal in 3; " \
           "1 image(s) flagged" in out
    assert f"videos/{SITE}/0002.mp4: 1 selected frame(s) do not match the video" in out and "0002_00004.jpg" in out


def test_index_holds_true_times_and_flags_the_stray_image(mixed: tuple[Path, Path],
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    from search.store import open_index
    copy, idx = mixed
    frames = open_index(idx).frames.set_index(["site", "video_id"]).sort_index()
    own = frames.loc[(SITE, "0001")]
    meta = _meta(copy, SITE, "0001")
    assert own["selected_name"].tolist() == [s["name"] for s in meta["selected_frames"]]
    assert own["selected_number"].tolist() == [1, 2, 3]
    assert own["frame_index"].tolist() == [s["frame"] for s in meta["selected_frames"]]
    assert own["time"].to_numpy() == pytest.approx([s["time"] for s in meta["selected_frames"]], abs=1e-3)
    assert not own["match_poor"].any()
    with_stray = frames.loc[(SITE, "0002")]
    assert with_stray["selected_number"].tolist() == [1, 2, 3, 4]      # the stray row is kept ...
    assert with_stray["match_poor"].tolist() == [False, False, False, True]   # ... and flagged
    plain = frames.loc[("PhuQuoc1_Jun2022", "0002")]                  # no selected frames: one a second
    assert plain["frame_index"].tolist() == [0, 12, 24] and (plain["selected_number"] == -1).all()
    assert plain["selected_name"].tolist() == ["", "", ""]


def _kis_files(coll: Path, folder: Path) -> tuple[list[Path], list[tuple[str, str, dict]]]:
    """KIS files naming every selected frame of SITE in every target-name form, and the targets."""
    targets = [(SITE, v, s) for v in ("0001", "0002") for s in _meta(coll, SITE, v)["selected_frames"]]
    forms = [
        lambda v, s: f"/data/MVK/information/selected_frames/{SITE}/{s['name']}",
        lambda v, s: rf"C:\MVK\information\selected_frames\{SITE}\{s['name']}",
        lambda v, s: f"{SITE}_{s['name']}",
        lambda v, s: f"keyframes/{SITE}/{v}/{s['number']}.jpg",
    ]
    novice = folder / "novice_clipcap.csv"
    novice.write_bytes(("\ufeffimg; CLIP_img; ClipCap_text; CLIP_ClipCap; novice_text; CLIP_text;\r\n" + "".join(
        f"{forms[i % 4](v, s)}; 1|0; a reef; 1|0; fish {i}; 0|1;\r\n" for i, (_, v, s) in enumerate(targets)))
        .encode("utf-8"))
    expert = folder / "expert.csv"
    expert.write_text("img;text\n" + "".join(f"{forms[(i + 1) % 4](v, s)};striped shape {i}\n"
                                             for i, (_, v, s) in enumerate(targets)), encoding="utf-8")
    return [novice, expert], targets


def test_kis_ranks_every_target_at_its_own_selected_frame(coll: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    idx = tmp_path / "idx"
    assert main(["index", str(coll), "--all", "--index", str(idx), "--selected-frames", "--objects", "none",
                 "--model", "mvk-tiny-vit", "--random-weights", "--no-progress"]) == 0
    files, targets = _kis_files(coll, tmp_path)
    out = tmp_path / "out"
    assert main(["kis", *map(str, files), "--index", str(idx), "--out", str(out), "--random-weights",
                 "--fusion", "frame"]) == 0
    captured = capsys.readouterr()
    assert "skipped" not in captured.err and "hits: exact" in captured.out
    pq = pd.read_csv(out / "per_query.csv")
    assert len(pq) == 3 * len(targets)                                  # clipcap, novice, expert: none rejected
    assert (pq["status"] == "ranked").all() and (pq["n_matching"] == 1).all()
    true_time = {(v, s["number"]): s["time"] for _, v, s in targets}
    expected = [true_time[(f"{int(v):04d}", int(n))] for v, n in zip(pq["target_video"], pq["target_selected"])]
    assert np.abs(pq["best_time"].to_numpy() - expected).max() <= 1 / FPS
    assert (pq["best_selected"] == pq["target_selected"]).all()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["match"] == "exact" and "own frame" in summary["match_rule"] and summary["issues"] == []
    assert summary["many_matches"] == [] and "scatter_clipcap_vs_novice.png" in summary["plots"]


def test_timecode_targets_and_the_time_rule_on_the_same_index(mixed: tuple[Path, Path], tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    copy, idx = mixed
    sel = _meta(copy, SITE, "0001")["selected_frames"][1]
    seconds, hundredths = divmod(round(sel["time"] * 100), 100)   # the extraction script's hundredths
    qfile = tmp_path / "tc.csv"
    qfile.write_text(f"img;text\n{SITE}/0001/frame0-00-{seconds:02d}-{hundredths:02d}.jpg;a reef\n"
                     f"{SITE}/0001_00002.jpg;a reef\n", encoding="utf-8")
    out = tmp_path / "out"
    assert main(["kis", str(qfile), "--index", str(idx), "--out", str(out), "--random-weights",
                 "--fusion", "frame"]) == 0
    pq = pd.read_csv(out / "per_query.csv")
    assert (pq["status"] == "ranked").all() and (pq["n_matching"] == 1).all()
    assert pq["best_frame_index"].tolist() == [sel["frame"], sel["frame"]]
    wide = tmp_path / "wide"
    assert main(["kis", str(qfile), "--index", str(idx), "--out", str(wide), "--random-weights", "--fusion",
                 "frame", "--match", "time", "--tolerance", "5"]) == 0
    captured = capsys.readouterr()
    pq = pd.read_csv(wide / "per_query.csv")
    assert (pq["n_matching"] == 3).all()                                # all of the video's 3 frames
    assert "hits: time" in captured.out
    many = tmp_path / "many.csv"                                        # SITE/0002 has 4 rows (one stray)
    many.write_text(f"img;text\n{SITE}/0002_00001.jpg;a reef\n", encoding="utf-8")
    assert main(["kis", str(many), "--index", str(idx), "--out", str(tmp_path / "m"), "--random-weights",
                 "--fusion", "frame", "--match", "time", "--tolerance", "10"]) == 0
    captured = capsys.readouterr()
    assert f"{many}:2: warning: query 'novice:{SITE}/0002_00001'" not in captured.err      # expert file
    assert f"{many}:2: warning: query 'expert:{SITE}/0002_00001': its target matches 4 frames" in captured.err
    assert "1 target(s) match more than 3 frames" in captured.out
    summary = json.loads((tmp_path / "m" / "summary.json").read_text())
    assert summary["many_matches"] == [{"query_id": f"expert:{SITE}/0002_00001", "n_matching": 4}]


def test_captions_of_selected_frames_name_them_for_the_exact_rule() -> None:
    from mvk_tools.captions import caption_queryset
    targets = pd.DataFrame({"site": [SITE, SITE], "video_id": ["0001", "0002"], "frame_index": [5, 0],
                            "time": [5 / 12, 0.0], "selected_number": [2, -1]})
    q = caption_queryset(targets, ["a reef", "sand"], source="test", random_weights=True)
    assert q["target_selected"].tolist()[0] == 2 and pd.isna(q["target_selected"].iat[1])
    assert q["target_frame"].tolist() == [5, 0]


def test_the_run_summary_says_what_the_numbers_were() -> None:
    from indexer.selected import report, summary_line
    rows = pd.DataFrame({"selected_number": [1, 2, 3, -1], "frame_index": [5, 20, 31, 0],
                         "match_poor": [False, False, True, False]})
    assert report(rows) == {"images": 3, "poor": 1, "numbering": "ordinal"}
    assert report(rows.assign(selected_number=-1)) is None and report(rows.drop(columns="selected_number")) is None
    line = summary_line([report(rows), {"images": 2, "poor": 0, "numbering": "frame index"}])
    assert "5 images of 2 video(s)" in line and "ordinal in 1, frame index in 1" in line and "1 image(s)" in line


def test_an_unreadable_selected_image_is_named(coll: Path, tmp_path: Path) -> None:
    from indexer.selected import selected_frames
    from mvk_tools.layout import SelectedImage
    from mvk_tools.video import VideoError
    bad = tmp_path / "0001_00002.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    images = [*selected_images(coll, SITE, "0001")[:1], SelectedImage(bad.name, 2, bad)]
    with pytest.raises(VideoError, match="0001_00002.jpg"):
        list(selected_frames(coll / "videos" / SITE / "0001.mp4", images))


# ---- static footage, degraded images and a foreign frame (mvk_tools.synth.make_static_collection) ----

KINDS = ("moving", "noise", "pan", "still")


@pytest.fixture(scope="module")
def static(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One site: a moving clip, a still with sensor noise, a slow pan, a fully static video; every selected
    image at 1/4 size with JPEG 40; a frame of the moving clip slipped among the pan's selected frames."""
    return synth.make_static_collection(tmp_path_factory.mktemp("static") / "coll", site=SITE, kinds=KINDS,
                                        n_frames=80, size=(128, 96), fps=10.0, scale=0.25, quality=40,
                                        foreign=(0, 2), seed=3)


def _truth(coll: Path, video: str) -> list[int | None]:
    return [s["frame"] for s in _meta(coll, SITE, video)["selected_frames"]]


@pytest.mark.parametrize("video", ["0001", "0002", "0003", "0004"])
def test_every_image_is_within_one_frame_or_flagged_and_in_order(static: Path, video: str) -> None:
    images = selected_images(static, SITE, video)
    found = locate.locate_files(static / "videos" / SITE / f"{video}.mp4", [im.path for im in images],
                                numbers=[im.number for im in images])
    truth = _truth(static, video)
    genuine = np.array([t is not None for t in truth])
    for f, t, amb in zip(found.frame_index, truth, found.ambiguous):
        assert t is None or abs(int(f) - t) <= 1 or amb, (video, found.frame_index.tolist(), truth)
    assert np.all(np.diff(found.frame_index[genuine]) > 0)              # none out of order, none on one frame
    assert not found.poor[genuine].any()                                 # 1/4 size, JPEG 40: not flagged
    if KINDS[int(video) - 1] in ("noise", "still"):
        assert found.ambiguous.all()                                     # the content cannot tell: said
        assert locate.numbering([im.number for im in images], found.frame_index, found.poor,
                                found.ambiguous) == locate.AMBIGUOUS_NUMBERING
    if KINDS[int(video) - 1] == "moving":
        assert [int(f) for f in found.frame_index] == truth              # exact where the content tells


def test_alignment_spreads_a_fully_static_video_by_order_and_spacing() -> None:
    cost = np.full((5, 100), 0.4, np.float32)                            # every frame as close as any other
    time = np.arange(100) / 10.0
    per_image = np.argmin(cost, axis=1)
    assert len(set(per_image.tolist())) == 1                             # today's matching: one frame for all
    placed = locate.align(cost, np.arange(1, 6), time)
    assert np.all(np.diff(placed) > 0)
    assert np.abs(time[placed] - (np.arange(5) + 0.25)).max() <= 0.5     # about one a second, in order


def test_numbers_out_of_time_order_are_not_forced_into_order() -> None:
    cost = np.ones((3, 30), np.float32)
    for i, f in enumerate([20, 5, 12]):                                  # unique matches, numbers not in time order
        cost[i, f] = 0.05
    placed = locate.align(cost, np.array([1, 2, 3]), np.arange(30) / 10.0)
    assert placed.tolist() == [20, 5, 12]
    assert locate.numbering([1, 2, 3], placed) == "other"


def test_poor_threshold_comes_from_the_videos_own_matches() -> None:
    own = np.array([0.40, 0.42, 0.38, 0.41, 0.39, 0.43, 0.40])           # heavily re-encoded, all genuine
    assert not locate.poor_flags(own).any()                              # a fixed 0.5 would be close to them
    assert locate.poor_flags(np.r_[own, 0.9]).tolist() == [False] * 7 + [True]
    assert locate.foreign_flags(np.r_[own, 0.33], {"0009": np.r_[own + 0.5, 0.02]}) == [""] * 7 + ["0009"]


@pytest.fixture(scope="module")
def static_index(static: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    import contextlib
    import io
    idx = tmp_path_factory.mktemp("static_idx") / "idx"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["index", str(static), "--all", "--index", str(idx), "--selected-frames", "--objects", "none",
                     "--model", "mvk-tiny-vit", "--random-weights", "--no-progress"]) == 0
    return idx, out.getvalue()


def test_the_index_flags_static_images_as_ambiguous_and_the_foreign_frame(static: Path,
                                                                          static_index: tuple[Path, str]) -> None:
    from search.store import open_index
    idx, printed = static_index
    frames = open_index(idx).frames
    frames = frames[frames["selected_number"] >= 0]
    foreign = frames[frames["match_foreign"] != ""]
    truth3 = _truth(static, "0003")
    slipped = selected_images(static, SITE, "0003")[truth3.index(None)].name
    assert foreign["selected_name"].tolist() == [slipped] and foreign["match_foreign"].tolist() == ["0001"]
    for video in ("0001", "0002", "0003", "0004"):
        rows = frames[frames["video_id"] == video].sort_values("selected_number")
        truth = _truth(static, video)
        for f, t, amb in zip(rows["frame_index"], truth, rows["match_ambiguous"]):
            assert t is None or abs(int(f) - t) <= 1 or amb
    static_rows = frames[frames["video_id"].isin(["0002", "0004"])]
    assert static_rows["match_ambiguous"].all()
    assert not frames[frames["video_id"] == "0001"][["match_poor", "match_ambiguous"]].to_numpy().any()
    assert "ambiguous (static footage) in 2" in printed and "ordinal in 2" in printed   # noise, still; moving, pan
    assert "1 matched better by another video" in printed
    assert f"{slipped} (from video 0001)" in printed


def test_kis_names_the_flagged_targets(static: Path, static_index: tuple[Path, str], tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    idx, _ = static_index
    slipped = selected_images(static, SITE, "0003")[_truth(static, "0003").index(None)].name
    qfile = tmp_path / "q.csv"
    qfile.write_text(f"img;text\n{SITE}/{slipped};a reef\n{SITE}/0002_00003.jpg;sand\n"
                     f"{SITE}/0001_00002.jpg;fish\n", encoding="utf-8")
    out = tmp_path / "out"
    capsys.readouterr()
    assert main(["kis", str(qfile), "--index", str(idx), "--out", str(out), "--random-weights",
                 "--fusion", "frame"]) == 0
    captured = capsys.readouterr()
    pq = pd.read_csv(out / "per_query.csv", keep_default_na=False)
    assert pq["target_flag"].tolist() == ["foreign (matches video 0001 better)", "ambiguous (static footage)", ""]
    assert "2 target(s) are selected frames the index flagged (1 foreign, 1 ambiguous)" in captured.out
    assert "its target's selected frame is flagged by the index: foreign" in captured.err
    summary = json.loads((out / "summary.json").read_text())
    assert [f["flag"].split(" ")[0] for f in summary["flagged_targets"]] == ["foreign", "ambiguous"]


def test_long_videos_are_aligned_on_blocks_then_frame_by_frame() -> None:
    rng = np.random.default_rng(1)
    truth = np.sort(rng.choice(3000, 100, replace=False))
    cost = rng.uniform(0.5, 1.0, (100, 3000)).astype(np.float32)
    cost[np.arange(100), truth] = 0.05                                   # one unique frame per image
    time = np.arange(3000) / 30.0
    full = locate.align(cost, np.arange(1, 101), time)
    banded = locate.align(cost, np.arange(1, 101), time, max_cells=15_000)   # blocks of 20 frames
    assert full.tolist() == truth.tolist() and banded.tolist() == truth.tolist()

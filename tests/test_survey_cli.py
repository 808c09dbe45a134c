"""`mvk survey` on a small synthetic index (tiny random models, colour backbone): the files it writes, and
the user errors (exit 2, one clear line)."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from app.cli import main
from search import survey as S

QUERY = "a yellow striped ellipse"


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mvk_tools.synth import make_collection
    from tests.test_index_cli import index_args
    root = tmp_path_factory.mktemp("survey")
    coll = make_collection(root / "coll", sites=("Oahu_Jul2022", "PhuQuoc1_Jun2022"), videos_per_site=1,
                           n_frames=24, size=(96, 64), fps=12.0, n_objects=2, seed=5)
    assert main(index_args(coll, root / "idx", "--all")) == 0
    return root / "idx"


def _survey(index: Path, out: Path, *extra: str) -> int:
    return main(["survey", QUERY, "--index", str(index), "--out", str(out), "--random-weights", *extra])


def test_survey_writes_tables_and_plots(index, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    assert _survey(index, out) == 0
    for name in ("presence.csv", "occurrences.csv", "sites.csv", "months.csv", "survey.json", "timeline.png",
                 "sites.png", "map.png"):
        assert (out / name).stat().st_size > 0, name
    presence = pd.read_csv(out / "presence.csv")
    occ = pd.read_csv(out / "occurrences.csv")
    assert len(presence) == 2 and len(occ) == 2 and set(S.DWC_COLUMNS) <= set(occ.columns)
    assert (occ["individualCount"] == presence["maxn"]).all()
    sites = pd.read_csv(out / "sites.csv")
    assert sites["latitude"].notna().all()          # both synthetic sites are MVK sites with coordinates
    summary = json.loads((out / "survey.json").read_text())
    assert summary["calibrated"] is False and summary["threshold"] == S.DEFAULT_THRESHOLD
    assert "uncalibrated" in capsys.readouterr().err


def test_threshold_outside_the_score_range_is_exit_2(index, tmp_path, capsys) -> None:
    assert _survey(index, tmp_path / "o", "--threshold", "1.5") == 2
    err = capsys.readouterr().err
    assert "threshold 1.5 is outside the score range" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_a_query_matching_nothing_is_every_video_absent(index, tmp_path, capsys) -> None:
    out = tmp_path / "o"
    assert _survey(index, out, "--threshold", "1.0") == 0
    occ = pd.read_csv(out / "occurrences.csv")
    assert (occ["occurrenceStatus"] == "absent").all() and (occ["individualCount"] == 0).all()
    err = capsys.readouterr().err
    assert "every video is absent, at an uncalibrated T" in err


def test_sites_without_coordinates_are_blank_and_counted(index, tmp_path, capsys) -> None:
    coords = tmp_path / "coords.csv"
    coords.write_text("place,latitude,longitude\nOahu,21.38,-157.95\n")
    out = tmp_path / "o"
    assert _survey(index, out, "--coordinates", str(coords)) == 0
    sites = pd.read_csv(out / "sites.csv").set_index("site")
    assert sites.loc["Oahu_Jul2022", "latitude"] == pytest.approx(21.38)
    assert pd.isna(sites.loc["PhuQuoc1_Jun2022", "latitude"])
    assert "1 site(s) without coordinates" in capsys.readouterr().err


def test_labels_from_another_index_are_exit_2(index, tmp_path, capsys) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_text("site,video_id,frame_index,label\nLembeh_Jul2013,0001,0,1\nOahu_Jul2022,0001,0,0\n")
    assert _survey(index, tmp_path / "o", "--labels", str(labels)) == 2
    assert "labels from another index" in capsys.readouterr().err


def test_labels_calibrate_the_threshold(index, tmp_path, capsys) -> None:
    from search.store import open_index
    frames = open_index(index).frames
    rows = frames.iloc[[0, 1, 2, len(frames) - 1]]
    labels = tmp_path / "labels.csv"
    labels.write_text("site,video_id,frame_index,label\n" + "".join(
        f"{s},{v},{i},{lab}\n" for (s, v, i), lab in zip(rows[["site", "video_id", "frame_index"]].itertuples(index=False),
                                                          ("like", "like", "dislike", "dislike"))))
    out = tmp_path / "o"
    assert _survey(index, out, "--labels", str(labels), "--target-precision", "0.5") == 0
    summary = json.loads((out / "survey.json").read_text())
    assert summary["calibrated"] is True and summary["precision"]["n"] >= 1
    assert "isotonic" in summary["method"]
    presence = pd.read_csv(out / "presence.csv")
    absent = presence[~presence["present"]]
    assert absent["missed_chance"].between(0, 1).all()
    assert "calibrated on 2 match / 2 non-match labels" in capsys.readouterr().out


def test_bad_labels_file_is_exit_2(index, tmp_path, capsys) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_text("frame,label\n1,1\n")
    assert _survey(index, tmp_path / "o", "--labels", str(labels)) == 2
    assert "needs 'score'" in capsys.readouterr().err


def _ids(index: Path, rows: list[int]) -> list[str]:
    from search.store import open_index
    frames = open_index(index).frames
    return [f"{r.site}/{r.video_id}/{int(r.frame_index)}" for r in frames.iloc[rows].itertuples(index=False)]


def test_feedback_likes_and_dislikes_calibrate_the_threshold(index, tmp_path, capsys) -> None:
    first, second, third, last = _ids(index, [0, 1, 2, -1])
    out = tmp_path / "o"
    assert main(["survey", QUERY, "--index", str(index), "--out", str(out), "--random-weights",
                 "--positive", first, "--positive", second, "--negative", third, "--negative", last,
                 "--target-precision", "0.5"]) == 0
    summary = json.loads((out / "survey.json").read_text())
    assert summary["calibrated"] is True and summary["query"] == QUERY
    assert "calibrated on 2 match / 2 non-match labels" in capsys.readouterr().out


def test_like_surveys_a_result_and_finds_its_own_video(index, tmp_path) -> None:
    from search.store import open_index
    idx = open_index(index)
    obj = idx.objects[~idx.objects["is_background"].to_numpy(bool)].iloc[0]
    frame = idx.frames.iloc[int(obj["frame_gid"])]
    ref = f"{frame['site']}/{frame['video_id']}/{int(frame['frame_index'])}/{int(obj['track_id'])}"
    out = tmp_path / "o"
    # its own stored vector scores 1.0 against itself: present in its video at any T up to 0.99
    assert main(["survey", "--like", ref, "--index", str(index), "--out", str(out), "--threshold", "0.99"]) == 0
    presence = pd.read_csv(out / "presence.csv", dtype={"video_id": str}).set_index(["site", "video_id"])
    assert bool(presence.loc[(frame["site"], str(frame["video_id"])), "present"])
    assert json.loads((out / "survey.json").read_text())["query"].startswith("like " + ref)


@pytest.mark.parametrize("extra, message", [
    (["--like", "Oahu_Jul2022/nope/0"], "has no video 'nope'"),
    (["--like", "not-an-id"], "does not name a result"),
    (["--whole-track"], "--whole-track goes with --like"),
])
def test_bad_like_or_feedback_ids_are_exit_2(index, tmp_path, capsys, extra, message) -> None:
    args = ["survey", "--index", str(index), "--out", str(tmp_path / "o"), "--random-weights", *extra]
    if "--like" not in extra:
        args.insert(1, QUERY)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err

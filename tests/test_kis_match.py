"""KIS match rules: ``exact`` (the target's own selected frame, found by name) and ``time`` (a tolerance),
on hand-made frame tables whose answer is known."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mvk_tools import kis
from mvk_tools.querysets import make_queries

# Site Oahu_Jul2022, 30 fps. Video 0001: selected frames 1, 2, 3 located at frames 7, 41, 70 (irregular);
# video 0002: sampled every second, no selected frames (a site that mixes both).
FRAMES = pd.DataFrame({
    "site": ["Oahu_Jul2022"] * 6,
    "video_id": ["0001", "0001", "0001", "0002", "0002", "0002"],
    "frame_index": [7, 41, 70, 0, 30, 60],
    "time": [7 / 30, 41 / 30, 70 / 30, 0.0, 1.0, 2.0],
    "selected_number": [1, 2, 3, -1, -1, -1],
    "selected_name": ["0001_00001.jpg", "0001_00002.jpg", "0001_00003.jpg", "", "", ""],
})
FRAMES["gid"] = np.arange(len(FRAMES))


def q(qid: str, video: str, *, selected: int | None = None, frame: int | None = None, time: float | None = None,
      timecode: str | None = None) -> dict:
    return {"query_id": qid, "query_type": "novice", "text": qid, "target_site": "Oahu_Jul2022",
            "target_video": video, "target_frame": frame, "target_time": time, "target_selected": selected,
            "target_timecode": timecode}


def test_exact_is_the_default_when_the_index_holds_selected_frames() -> None:
    assert kis.default_match(FRAMES) == "exact"
    assert kis.default_match(FRAMES.drop(columns=["selected_number", "selected_name"])) == "time"
    assert kis.default_match(FRAMES.assign(selected_number=-1)) == "time"


def test_exact_matches_the_named_selected_frame_only() -> None:
    queries = make_queries([q("s2", "0001", selected=2), q("s9", "1", selected=9), q("other", "0002", selected=2),
                            q("f30", "0002", frame=30), q("t1", "0002", time=1.01),
                            q("tc", "0001", timecode="0:00:01:37")])        # 1.37 s (hundredths) = frame 41
    t = kis.resolve_targets(queries, FRAMES)                           # exact, by default here
    assert [list(x.gids) for x in t] == [[1], [], [], [4], [4], [1]]
    frames_read = kis.resolve_targets(make_queries([q("tc", "0001", timecode="0:00:01:11")]), FRAMES,
                                      readings={"None": "frames"})     # 1 s + 11 frames = frame 41
    assert [list(x.gids) for x in frames_read] == [[1]]
    assert t[0].time == pytest.approx(41 / 30)                         # where the index located it
    assert "Oahu_Jul2022/1_00009.jpg is not in the index" in t[1].reason and "1-3" in t[1].reason
    assert "indexed without its selected frames" in t[2].reason and "--selected-frames" in t[2].reason


def test_time_rule_uses_the_located_time_of_a_selected_frame() -> None:
    queries = make_queries([q("s2", "0001", selected=2), q("f30", "0002", frame=30), q("t", "0002", time=1.4),
                            q("other", "0002", selected=2)])
    t = kis.resolve_targets(queries, FRAMES, match="time", tolerance=1.2)
    assert [sorted(x.gids) for x in t] == [[0, 1, 2], [3, 4, 5], [4, 5], []]
    narrow = kis.resolve_targets(queries, FRAMES, match="time", tolerance=0.5)
    assert [sorted(x.gids) for x in narrow] == [[1], [4], [4], []]


def test_time_rule_on_an_index_sampled_every_second_is_unchanged() -> None:
    every = FRAMES.drop(columns=["selected_number", "selected_name"])
    queries = make_queries([q("f40", "0001", frame=40), q("t", "0002", time=0.9)])
    assert [list(x.gids) for x in kis.resolve_targets(queries, every, tolerance=0.5)] == [[1], [4]]


def test_bad_match_rule_and_tolerance_are_input_errors() -> None:
    queries = make_queries([q("s2", "0001", selected=2)])
    from search.errors import InputError
    for bad in (dict(match="fuzzy"), dict(tolerance=float("nan")), dict(tolerance=float("inf"))):
        with pytest.raises(InputError):
            kis.resolve_targets(queries, FRAMES, **bad)


def test_ranks_with_exact_targets_and_many_matches_reported() -> None:
    queries = make_queries([q("s2", "0001", selected=2), q("wide", "0002", time=1.0)])
    vecs = np.eye(2, dtype=np.float32)
    scores = {0: np.array([0.9, 0.5, 0.5, 0.1, 0.2, 0.3]), 1: np.array([0.9, 0.5, 0.5, 0.1, 0.2, 0.3])}
    pq = kis.rank_queries(queries, vecs, FRAMES, lambda v, f: scores[int(np.argmax(v))], match="time",
                          tolerance=5.0)
    assert list(pq["n_matching"]) == [3, 3]
    pq = kis.rank_queries(queries, vecs, FRAMES, lambda v, f: scores[int(np.argmax(v))], tolerance=5.0)
    r = pq.set_index("query_id")
    assert r.loc["s2", "n_matching"] == 1 and r.loc["s2", "rank"] == 3 and r.loc["s2", "ties"] == 1
    assert r.loc["s2", "best_selected"] == 2 and r.loc["s2", "target_selected"] == 2
    assert kis.many_matches(pq, limit=0) == [{"query_id": "s2", "n_matching": 1}, {"query_id": "wide",
                                                                                    "n_matching": 1}]
    assert kis.many_matches(pq) == []


def _tc(qid: str, timecode: str, file: str, vector: np.ndarray | None = None, video: str = "0001") -> dict:
    return {**q(qid, video, timecode=timecode), "source_file": file, "target_vector": vector}


def test_timecodes_default_to_hundredths_and_say_so() -> None:
    queries = make_queries([_tc("a", "0:00:00:23", "f.csv"), _tc("b", "0:00:02:00", "f.csv", video="0002")])
    got = kis.timecode_readings(queries, FRAMES)
    assert got["f.csv"]["reading"] == "hundredths" and "assumed" in got["f.csv"]["why"]
    t = kis.resolve_targets(queries, FRAMES, readings={f: r["reading"] for f, r in got.items()})
    assert [list(x.gids) for x in t] == [[0], [5]]                     # 0.23 s = frame 7 (as frames: 0.77 s)


def test_a_field_impossible_under_frames_rules_that_reading_out() -> None:
    queries = make_queries([_tc("a", "0:00:01:37", "f.csv"), _tc("b", "0:00:00:60", "f.csv")])   # 60 >= 30 fps
    got = kis.timecode_readings(queries, FRAMES)
    assert got["f.csv"]["reading"] == "hundredths" and "frames ruled out" in got["f.csv"]["why"]
    t = kis.resolve_targets(queries, FRAMES, readings={"f.csv": "frames"})
    assert list(t[1].gids) == [] and "60 is not a frame number at 30 fps" in t[1].reason


def test_image_vectors_choose_the_reading_of_a_file() -> None:
    # frame vectors: one axis per indexed frame; a target's CLIP_img vector points at its true frame
    eye = np.eye(len(FRAMES), dtype=np.float32)

    def scores_of(v: np.ndarray) -> np.ndarray:
        return v @ eye.T

    # 0:00:00:07 as frames = 0.233 s (frame 7, gid 0); as hundredths 0.07 s (gid 0 too): no vote
    # 0:00:01:28 as frames = 1.933 s (nearest gid 2); as hundredths 1.28 s (gid 1): the vector decides
    by_frames = make_queries([_tc("a", "0:00:01:28", "f.csv", eye[2]), _tc("b", "0:00:00:07", "f.csv", eye[0])])
    got = kis.timecode_readings(by_frames, FRAMES, scores_of=scores_of, dim=len(FRAMES))
    assert got["f.csv"]["reading"] == "frames" and "CLIP_img" in got["f.csv"]["why"]
    by_hundredths = make_queries([_tc("a", "0:00:01:28", "h.csv", eye[1])])
    got = kis.timecode_readings(by_hundredths, FRAMES, scores_of=scores_of, dim=len(FRAMES))
    assert got["h.csv"]["reading"] == "hundredths" and "CLIP_img" in got["h.csv"]["why"]
    other_model = kis.timecode_readings(by_frames, FRAMES, scores_of=scores_of, dim=512)
    assert other_model["f.csv"]["reading"] == "hundredths" and "no CLIP_img" in other_model["f.csv"]["why"]


def test_a_time_past_the_end_of_the_video_is_not_in_the_index() -> None:
    frames = FRAMES.assign(video_duration=[2.5, 2.5, 2.5, np.nan, np.nan, np.nan])
    t = kis.resolve_targets(make_queries([_tc("a", "0:00:09:60", "f.csv")]), frames, match="time", tolerance=100)
    assert list(t[0].gids) == [] and "past the end" in t[0].reason and "2.50 s" in t[0].reason


def test_flagged_selected_frames_are_named_per_query_and_in_the_summary() -> None:
    frames = FRAMES.assign(match_ambiguous=[True, False, False, False, False, False],
                           match_foreign=["", "", "0007", "", "", ""],
                           match_poor=[False, False, True, False, False, False])
    queries = make_queries([q("s1", "0001", selected=1), q("s2", "0001", selected=2), q("s3", "0001", selected=3)])
    pq = kis.rank_queries(queries, np.ones((3, 2), np.float32), frames,
                          lambda v, fusion: np.arange(len(frames), dtype=np.float32))
    assert pq["target_flag"].tolist() == ["ambiguous (static footage)", "", "foreign (matches video 0007 better)"]
    assert kis.flagged_targets(pq) == [{"query_id": "s1", "flag": "ambiguous (static footage)"},
                                       {"query_id": "s3", "flag": "foreign (matches video 0007 better)"}]

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
                            q("tc", "0001", timecode="0:00:01:11")])        # 1 s + 11 frames = frame 41
    t = kis.resolve_targets(queries, FRAMES)                           # exact, by default here
    assert [list(x.gids) for x in t] == [[1], [], [], [4], [4], [1]]
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

"""KIS ranking and metrics on hand-made frames and scores where the answer is known."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mvk_tools import kis
from mvk_tools.querysets import make_queries
from search.errors import InputError


def frames_table(rows: list[tuple[str, str, int, float]]) -> pd.DataFrame:
    """Frames table with the index's columns that KIS uses; gid = row."""
    df = pd.DataFrame(rows, columns=["site", "video_id", "frame_index", "time"])
    df["gid"] = np.arange(len(df))
    return df


def query(qid: str, site: str, video: str, frame: int | None = None, time: float | None = None,
          qtype: str = "novice") -> dict:
    return {"query_id": qid, "query_type": qtype, "text": f"text {qid}", "target_site": site,
            "target_video": video, "target_frame": frame, "target_time": time}


# Two videos of one site at 30 fps, one frame a second, plus another site.
FRAMES = frames_table([
    ("Oahu_Jul2022", "0001", 0, 0.0), ("Oahu_Jul2022", "0001", 30, 1.0), ("Oahu_Jul2022", "0001", 60, 2.0),
    ("Oahu_Jul2022", "0002", 0, 0.0), ("Oahu_Jul2022", "0002", 30, 1.0),
    ("PhuQuoc1_Jun2022", "0001", 0, 0.0), ("PhuQuoc1_Jun2022", "0001", 24, 1.0),   # 24 fps video
])


def test_rank_counts_strictly_higher_frames_and_ties_against_the_target() -> None:
    scores = np.array([0.9, 0.5, 0.7, 0.5, 0.1])
    assert kis.rank_of_target(scores, np.array([2])) == (2, 0, 2, pytest.approx(0.7))
    # target tied with two other frames: pessimistic rank 1 + 1 higher + 2 tied
    assert kis.rank_of_target(scores, np.array([1])) == (4, 1, 1, 0.5)
    assert kis.rank_of_target(np.array([0.3, 0.3, 0.3, 0.3]), np.array([0])) == (4, 3, 0, 0.3)
    # several matching frames: the best one counts, other matching frames never count against it
    assert kis.rank_of_target(scores, np.array([1, 2, 3])) == (2, 0, 2, pytest.approx(0.7))
    # matching frames tied among themselves: the lowest row is reported, no tie counted
    assert kis.rank_of_target(np.array([0.2, 0.8, 0.8, 0.9]), np.array([1, 2])) == (2, 0, 1, pytest.approx(0.8))


def test_resolve_targets_by_frame_time_and_tolerance() -> None:
    q = make_queries([
        query("exact", "Oahu_Jul2022", "0001", frame=30),
        query("near", "Oahu_Jul2022", "1", frame=40),               # 1.33 s; "1" == "0001"
        query("time", "oahu_jul2022", "0002", time=0.9),            # site case-insensitive
        query("fps24", "PhuQuoc1_Jun2022", "0001", frame=24),       # 1.0 s at the video's own 24 fps
        query("far", "Oahu_Jul2022", "0002", frame=300),            # 10 s: beyond the indexed frames
        query("novideo", "Oahu_Jul2022", "0009", frame=30),
        query("nosite", "Bali_Jan2020", "0001", frame=30),
    ])
    t = kis.resolve_targets(q, FRAMES, tolerance=0.5)
    assert [list(x.gids) for x in t] == [[1], [1], [4], [6], [], [], []]
    assert t[1].time == pytest.approx(40 / 30)
    assert t[3].time == pytest.approx(1.0)
    assert "within 0.5 s of 10.00 s" in t[4].reason
    assert t[5].reason == "video Oahu_Jul2022/0009 is not in the index"
    assert t[6].reason == "site Bali_Jan2020 is not in the index"
    wide = kis.resolve_targets(q.iloc[:1], FRAMES, tolerance=1.0)
    assert sorted(wide[0].gids) == [0, 1, 2]
    exact = kis.resolve_targets(q.iloc[:2], FRAMES, tolerance=0.0)
    assert [list(x.gids) for x in exact] == [[1], []]
    skipped = kis.resolve_targets(q.iloc[-1:], FRAMES, skipped_sites={"Bali_Jan2020": "frames.faiss is corrupt"})
    assert "was not read from the index (frames.faiss is corrupt)" in skipped[0].reason
    with pytest.raises(InputError):
        kis.resolve_targets(q, FRAMES, tolerance=-1)


def test_default_fps_when_the_video_has_no_timed_frame() -> None:
    frames = frames_table([("S_Jan2020", "0001", 0, 0.0), ("S_Jan2020", "0002", 0, 0.0)])
    frames.loc[1, ["frame_index", "time"]] = (60, 2.0)
    q = make_queries([query("a", "S_Jan2020", "0001", frame=15)])     # 15 / 30 fps = 0.5 s
    assert list(kis.resolve_targets(q, frames, tolerance=0.5, default_fps=30)[0].gids) == [0]
    assert list(kis.resolve_targets(q, frames, tolerance=0.5, default_fps=10)[0].gids) == []


def test_rank_queries_per_fusion_and_not_in_index_apart() -> None:
    q = make_queries([query("a", "Oahu_Jul2022", "0001", frame=30),
                      query("b", "Oahu_Jul2022", "0002", frame=0, qtype="expert"),
                      query("c", "Bali_Jan2020", "0001", frame=0)])
    vecs = np.eye(3, dtype=np.float32)
    # frame fusion: target of a (gid 1) ranked 3rd; object fusion: first. Query b: gid 3 tied with 2 others.
    table = {("frame", 0): [0.9, 0.5, 0.8, 0.1, 0.0, 0.2, 0.3], ("object", 0): [0.1, 0.9, 0.8, 0.1, 0.0, 0.2, 0.3],
             ("frame", 1): [0.4, 0.4, 0.1, 0.4, 0.0, 0.2, 0.3], ("object", 1): [0.1, 0.1, 0.1, 0.9, 0.0, 0.2, 0.3]}
    calls = []

    def scorer(v: np.ndarray, fusion: str) -> np.ndarray:
        calls.append((int(np.argmax(v)), fusion))
        return np.array(table[(fusion, int(np.argmax(v)))], np.float32)

    pq = kis.rank_queries(q, vecs, FRAMES, scorer, fusions=("frame", "object"))
    assert len(calls) == 4                                     # never scored for the target not in the index
    r = pq.set_index(["query_id", "fusion"])
    assert r.loc[("a", "frame"), "rank"] == 3 and r.loc[("a", "object"), "rank"] == 1
    assert r.loc[("b", "frame"), "rank"] == 3 and r.loc[("b", "frame"), "ties"] == 2
    assert r.loc[("a", "frame"), "best_gid"] == 1 and r.loc[("a", "frame"), "best_time"] == 1.0
    assert (r.loc["c", "status"] == "not_in_index").all() and r.loc["c", "rank"].isna().all()
    s = kis.summarize(pq).set_index(["query_type", "fusion"])
    assert s.loc[("novice", "frame"), "n"] == 1 and s.loc[("novice", "frame"), "n_not_in_index"] == 1
    assert s.loc[("novice", "object"), "hit@1"] == 1.0 and s.loc[("novice", "frame"), "hit@1"] == 0.0
    assert s.loc[("novice", "frame"), "mrr"] == pytest.approx(1 / 3)
    assert s.loc[("expert", "object"), "n_not_in_index"] == 0
    text = kis.format_table(kis.summarize(pq))
    assert "novice" in text and "100.0%" in text


def test_metrics_on_known_ranks() -> None:
    m = kis.metrics(np.array([1, 2, 10, 11, 1000, 5000]))
    assert m["hit@1"] == pytest.approx(1 / 6) and m["hit@10"] == pytest.approx(3 / 6)
    assert m["hit@100"] == pytest.approx(4 / 6) and m["hit@1000"] == pytest.approx(5 / 6)
    assert m["mrr"] == pytest.approx(np.mean([1, 1 / 2, 1 / 10, 1 / 11, 1 / 1000, 1 / 5000]))
    assert m["median_rank"] == pytest.approx(10.5) and m["mean_rank"] == pytest.approx(6024 / 6)
    assert np.isnan(kis.metrics(np.array([]))["mrr"])


def test_query_vectors_from_file_check_dimensions() -> None:
    q = make_queries([query("a", "S", "1", frame=1), query("b", "S", "1", frame=2), query("c", "S", "1", frame=3)])
    q["vector"] = [np.array([3.0, 4.0]), np.array([1.0, 2.0, 3.0]), None]
    keep, issues = kis.check_file_vectors(q, dim=2)
    assert list(keep) == [True, False, False]
    assert "3 dimensions, the index's encoder 2" in issues[0].message and "no precomputed vector" in issues[1].message
    v = kis.query_vectors(q[keep], dim=2, encode=None, use_file_vectors=True)
    np.testing.assert_allclose(v, [[0.6, 0.8]])
    with pytest.raises(InputError, match="another model"):
        kis.check_file_vectors(q.iloc[1:2], dim=2)
    enc = kis.query_vectors(q, dim=2, encode=lambda texts: np.ones((len(texts), 2)), use_file_vectors=False)
    np.testing.assert_allclose(np.linalg.norm(enc, axis=1), 1.0)


def _mixed_index(root):
    """Site A: frames without objects, several objects on one frame, a background object; site B: no objects."""
    from search import store
    from search.testing import encoder_identity, frame_rows, object_rows, random_unit

    d = 8
    store.init_index(root, {"encoder": encoder_identity(d)})
    shards = [("A_Jan2020", 7, [5, 0, 0, 3, 6, 6, 6]), ("B_Feb2020", 5, [])]
    for s, (site, n, obj_rows) in enumerate(shards):
        objects = object_rows(obj_rows, is_background=[i == 1 for i in range(len(obj_rows))])
        store.write_shard(root, site, frame_rows(site, n, videos=2), random_unit(n, d, seed=s), objects,
                          random_unit(len(obj_rows), d, seed=10 + s) if obj_rows else np.zeros((0, d)), {})
    return store.open_index(root)


def test_batched_ranking_gives_the_same_ranks_as_one_score_frames_call_per_query(tmp_path) -> None:
    from search.query import FUSIONS, score_frames, score_frames_batch
    from search.testing import random_unit

    index = _mixed_index(tmp_path / "idx")
    qv = random_unit(5, 8, seed=99)
    f = index.frames
    q = make_queries([query(f"q{i}", r.site, r.video_id, frame=int(r.frame_index))
                      for i, r in enumerate(f.iloc[:5].itertuples())])
    single = kis.rank_queries(q, qv, f, lambda v, fu: score_frames(index, v, fusion=fu), fusions=FUSIONS)
    batched = kis.rank_queries(q, qv, f, None, batch_size=2, fusions=FUSIONS,
                               batch_scorer=lambda v, fus: score_frames_batch(index, v, fusions=fus))
    pd.testing.assert_frame_equal(single.drop(columns="score"), batched.drop(columns="score"))
    assert (single["rank"] >= 1).all() and len(single) == 5 * len(FUSIONS)


def test_run_benchmark_reports_bad_files_and_rows_and_ranks_the_rest(tmp_path) -> None:
    from mvk_tools.querysets import write_queryset

    index = _mixed_index(tmp_path / "idx")
    f = index.frames
    good = [{**query(f"q{i}", r.site, r.video_id, frame=int(r.frame_index)), "vector": np.eye(8)[i]}
            for i, r in enumerate(f.iloc[[0, 8]].itertuples())]
    bad_dim = {**query("short", "A_Jan2020", "0", frame=0), "vector": np.ones(3)}
    absent = {**query("away", "Bali_Jan2020", "0001", frame=0), "vector": np.ones(8)}
    qfile = write_queryset(make_queries([*good, bad_dim, absent]), tmp_path / "q.csv", with_vectors=True)
    junk = tmp_path / "junk.csv"
    junk.write_text("a,b\n1,2\n", encoding="utf-8")
    warned, stages = [], []

    def progress(items, desc, total):
        stages.append((desc, total))
        return items

    def no_encoder():
        raise AssertionError("the files' vectors need no encoder")

    res = kis.run_benchmark(index, [qfile, junk], encoder=no_encoder, use_file_vectors=True,
                            fusions=("frame", "max", "frame"), progress=progress,
                            warn=lambda message, what: warned.append((what, message)))
    assert [w[0] for w in warned] == ["file", "row"]
    assert str(junk) in warned[0][1] and "3 dimensions" in warned[1][1] and f"{qfile}:4" in warned[1][1]
    assert res.warnings == [warned[0][1], warned[1][1]] and res.file_errors == [warned[0][1]]
    assert stages == [("ranking", 3)] and res.n_queries == 3 and not res.random_weights
    pq = res.per_query.set_index(["query_id", "fusion"])
    assert len(pq) == 6 and set(res.summary["fusion"]) == {"frame", "max"}
    assert (pq.loc["q0", "status"] == "ranked").all() and (pq.loc["q1", "best_gid"] == 8).all()
    assert res.not_in_index == [{"query_id": "away", "reason": "site Bali_Jan2020 is not in the index"}]
    with pytest.raises(InputError, match="no usable query.*header not recognised"):
        kis.run_benchmark(index, [junk], use_file_vectors=True)
    with pytest.raises(InputError, match="fusion"):
        kis.run_benchmark(index, [qfile], use_file_vectors=True, fusions=("best",))

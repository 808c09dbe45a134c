"""After the first query: more like this, relevance feedback, heatmaps, position and N-step temporal queries,
each written once in the query service and reached from the CLI and the API."""
from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.cli import main
from search import store
from search.errors import QueryError
from search.queries import FeedbackQuery, ItemRef, LikeQuery, Options, SequenceQuery
from search.service import NotFoundError, QueryService
from search.testing import encoder_identity, frame_rows, object_rows, random_unit, unit
from tests.app_fixtures import small_index

D = 16


def _index(root: Path, frame_vectors: np.ndarray, objects=None, object_vectors=None, *, site: str = "S",
           videos: int = 1) -> Path:
    n = len(frame_vectors)
    store.init_index(root, {"encoder": encoder_identity(D)})
    objs = objects if objects is not None else object_rows([])
    ovec = object_vectors if object_vectors is not None else np.zeros((0, D), np.float32)
    store.write_shard(root, site, frame_rows(site, n, videos=videos), frame_vectors, objs, ovec, {})
    return root


# -- more like this --------------------------------------------------------------------------------

def test_like_ranks_the_frame_itself_first_with_score_one(tmp_path):
    service = QueryService(_index(tmp_path / "idx", random_unit(40, D, 1)))
    ref = ItemRef("S", "S-v0", 17)
    page = service.run(LikeQuery(ref), Options(k=5))
    assert int(page.rows["frame_index"].iloc[0]) == 17
    assert page.rows["score"].iloc[0] == pytest.approx(1.0, abs=2e-3)


def test_like_an_object_and_its_whole_track(tmp_path):
    n = 12
    frames = random_unit(n, D, 2)
    objs = object_rows(list(range(n)), track_id=[7] * 6 + [8] * 6)
    ovec = random_unit(n, D, 3)
    service = QueryService(_index(tmp_path / "idx", frames, objs, ovec))
    page = service.run(LikeQuery(ItemRef("S", "S-v0", 3, 7)), Options(k=3, fusion="object"))
    assert int(page.rows["frame_index"].iloc[0]) == 3 and int(page.rows["track_id"].iloc[0]) == 7
    track = service.stored_vector(service.index(), ItemRef("S", "S-v0", 3, 7), whole_track=True)
    assert np.allclose(track, unit(ovec[:6].mean(axis=0, keepdims=True))[0], atol=2e-3)


def test_cli_like_returns_that_frame_at_rank_one(tmp_path_factory, capsys):
    _, idx = small_index(tmp_path_factory)
    frame = store.open_index(idx).frames.iloc[5]
    ref = f"{frame['site']}/{frame['video_id']}/{int(frame['frame_index'])}"
    assert main(["search", "--like", ref, "--index", str(idx), "--json"]) == 0
    first = json.loads(capsys.readouterr().out)["results"][0]
    assert first["id"] == ref and first["rank"] == 1 and first["frame_score"] == pytest.approx(1.0, abs=2e-3)


@pytest.mark.parametrize("ref, message", [
    ("Nowhere/0001/3", "no site 'Nowhere'"),
    ("S/S-v0/999", "has no indexed frame 999"),
    ("S/other/3", "has no video 'other'"),
    ("S/S-v0/3/42", "has no object 42"),
])
def test_unknown_ids_are_named(tmp_path, ref, message):
    service = QueryService(_index(tmp_path / "idx", random_unit(8, D, 1), object_rows([3]), random_unit(1, D, 4)))
    with pytest.raises(NotFoundError, match=message):
        service.run(LikeQuery(ItemRef.parse(ref)))


@pytest.mark.parametrize("text", ["S/S-v0", "S/S-v0/x", "S/S-v0/3/-1", "", "a/b/c/d/e"])
def test_malformed_ids_are_refused_by_value(text):
    with pytest.raises(QueryError) as err:
        ItemRef.parse(text)
    assert repr(text) in str(err.value)


# -- relevance feedback ----------------------------------------------------------------------------

def _clusters(tmp_path) -> tuple[QueryService, list[int], list[int]]:
    """Frames 0..9 near direction A, 10..19 near B, 20..39 noise; frame 40 leans to B, frame 41 to A."""
    rng = np.random.default_rng(5)
    a, b = np.eye(D)[0], np.eye(D)[1]
    noise = random_unit(20, D, 9)
    noise[:, :2] *= 0.2                                            # the noise frames lie away from A and B
    vecs = np.concatenate([unit(a + 0.1 * rng.standard_normal((10, D))), unit(b + 0.1 * rng.standard_normal((10, D))),
                           unit(noise), unit(np.stack([b + 0.3 * a, a + 0.3 * b]))])
    return QueryService(_index(tmp_path / "idx", vecs)), list(range(10)), list(range(10, 20))


def _mean_rank(rows, frames: list[int]) -> float:
    rank = dict(zip(rows["frame_index"].astype(int), rows["rank"].astype(int)))
    return float(np.mean([rank.get(f, len(rows) + 1) for f in frames]))


@pytest.mark.parametrize("method", ["bayes", "rocchio"])
def test_feedback_moves_liked_neighbours_up_and_disliked_down(tmp_path, method):
    """The user saw the first 6 results of a query leaning to B and liked an A frame: A rises; of a query leaning
    to A and disliked a B frame: B falls."""
    service, a, b = _clusters(tmp_path)
    to_b, to_a = LikeQuery(ItemRef("S", "S-v0", 40)), LikeQuery(ItemRef("S", "S-v0", 41))
    all_rows = Options(k=42)
    liked = service.run(FeedbackQuery(to_b, positives=(ItemRef("S", "S-v0", 0),), method=method, display=6),
                        all_rows).rows
    disliked = service.run(FeedbackQuery(to_a, negatives=(ItemRef("S", "S-v0", 10),), method=method, display=6),
                           all_rows).rows
    assert _mean_rank(liked, a[1:]) < _mean_rank(service.run(to_b, all_rows).rows, a[1:]) - 3
    assert _mean_rank(disliked, b[1:]) > _mean_rank(service.run(to_a, all_rows).rows, b[1:]) + (
        3 if method == "bayes" else 0)


def test_feedback_on_nothing_and_contradictions_are_refused(tmp_path):
    service, _, _ = _clusters(tmp_path)
    base = LikeQuery(ItemRef("S", "S-v0", 40))
    with pytest.raises(QueryError, match="at least one liked or disliked"):
        service.run(FeedbackQuery(base))
    same = ItemRef("S", "S-v0", 1)
    with pytest.raises(QueryError, match="both liked and disliked"):
        service.run(FeedbackQuery(base, positives=(same,), negatives=(same,)))


def test_cli_feedback_reranks_and_bad_ids_exit_2(tmp_path_factory, capsys):
    _, idx = small_index(tmp_path_factory)
    frames = store.open_index(idx).frames
    ids = [f"{r.site}/{r.video_id}/{int(r.frame_index)}" for r in frames.itertuples()]
    assert main(["search", "a red fish", "--index", str(idx), "--json", "-k", "8"]) == 0
    plain = [r["id"] for r in json.loads(capsys.readouterr().out)["results"]]
    assert main(["search", "a red fish", "--index", str(idx), "--json", "-k", "8", "--positive", plain[-1],
                 "--negative", plain[0]]) == 0
    fed = [r["id"] for r in json.loads(capsys.readouterr().out)["results"]]
    assert fed != plain and fed.index(plain[-1]) < plain.index(plain[-1])
    assert main(["search", "a red fish", "--index", str(idx), "--positive", "Atlantis/0001/3"]) == 2
    assert "no site 'Atlantis'" in capsys.readouterr().err
    assert main(["search", "x", "--index", str(idx), "--positive", ids[0] + "/x"]) == 2
    assert "whole numbers" in capsys.readouterr().err


# -- position and temporal queries --------------------------------------------------------------------

def test_position_cells_prefer_an_object_in_the_chosen_cells_and_only_down_weight_others(tmp_path):
    q = random_unit(1, D, 11)[0]
    frames = unit(np.stack([q * 0.2 + random_unit(1, D, 12)[0], q * 0.2 + random_unit(1, D, 13)[0]]))
    objs = object_rows([0, 1])
    objs.loc[0, ["x0", "y0", "x1", "y1"]] = [2, 2, 10, 8]        # top left of a 64 x 36 frame
    objs.loc[1, ["x0", "y0", "x1", "y1"]] = [50, 26, 60, 34]      # bottom right
    ovec = np.stack([q, q])
    index = store.open_index(_index(tmp_path / "idx", frames, objs, ovec))
    from search.query import POSITION_PENALTY, search
    plain = search(index, None, q, k=2)
    top_left = search(index, None, q, k=2, cells=(0,))
    bottom_right = search(index, None, q, k=2, cells=(8,))
    assert top_left["frame_index"].tolist()[0] == 0 and bottom_right["frame_index"].tolist()[0] == 1
    moved = top_left.set_index("frame_index")["score"]
    before = plain.set_index("frame_index")["score"]
    frame_only = plain.set_index("frame_index")["frame_score"]
    assert moved[0] == pytest.approx(before[0])                               # its object is in the cell
    assert moved[1] == pytest.approx(frame_only[1] - POSITION_PENALTY)        # scored as a whole frame, less
    assert len(top_left) == 2                                                  # down-weighted, not dropped
    with pytest.raises(QueryError, match="'9' is outside the 3x3 grid"):
        search(index, None, q, cells=(9,))


def test_a_three_step_temporal_query_finds_a_then_b_then_c(tmp_path):
    rng = np.random.default_rng(3)
    steps = unit(rng.standard_normal((3, D)))
    vecs = random_unit(30, D, 4) * 0.2
    vecs[5], vecs[7], vecs[9] = steps                         # A at 5 s, B at 7 s, C at 9 s of video 0
    vecs[20], vecs[17] = steps[0], steps[1]                  # in video 1: B before A (wrong order)
    service = QueryService(_index(tmp_path / "idx", unit(vecs), videos=2))
    from search.query import sequence_search
    found = sequence_search(service.index(), None, list(steps), within=3.0, k=3)
    top = found.iloc[0]
    assert top["video_id"] == "S-v0" and top["step_times"] == [5.0, 7.0, 9.0]
    assert top["first_time"] == 5.0 and top["then_time"] == 9.0 and top["gap"] == 4.0
    with pytest.raises(QueryError, match="at least two steps"):
        service.run(SequenceQuery((), 3.0))


def test_cli_then_is_repeatable_and_an_empty_step_is_named(tmp_path_factory, capsys):
    _, idx = small_index(tmp_path_factory)
    assert main(["search", "a red fish", "--then", "a blue ellipse", "--then", "a yellow star", "--within", "30",
                 "--index", str(idx), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["results"]
    assert rows and all(len(r["step_times"]) == 3 and r["step_times"] == sorted(r["step_times"]) for r in rows)
    assert main(["search", "a red fish", "--then", "a", "--then", "   ", "--index", str(idx)]) == 2
    assert "--then text number 2 is empty" in capsys.readouterr().err
    assert main(["search", "a red fish", "--where", "middle-ish", "--index", str(idx)]) == 2
    assert "'middle-ish' is outside the 3x3 grid" in capsys.readouterr().err


# -- heatmaps --------------------------------------------------------------------------------------

def test_a_heatmap_of_constructed_tokens_peaks_where_the_object_is():
    from search import heatmap
    q = np.zeros(D, np.float32)
    q[0] = 1.0
    tokens = np.tile(np.eye(D, dtype=np.float32)[1], (7, 7, 1))
    tokens[1:3, 4:6] = np.eye(D, dtype=np.float32)[0]          # the object: top right of the square
    sim = heatmap.similarity_map(tokens, q)
    values = heatmap.frame_map(sim, 90, 160, 224)              # a 16:9 frame letterboxed into the square
    row, col = heatmap.peak(values)
    assert col > 160 * 0.5 and row < 90 * 0.5
    png = heatmap.overlay_png(np.zeros((90, 160, 3), np.uint8), values)
    assert Image.open(io.BytesIO(png)).size == (160, 90)


def test_api_heatmap_like_feedback_and_cells(tmp_path_factory, tmp_path):
    from fastapi.testclient import TestClient

    from app.api import create_app
    from app.service import SearchService

    collection, built = small_index(tmp_path_factory)
    index = tmp_path / "index"
    shutil.copytree(built, index)
    api = TestClient(create_app(SearchService(index, collection)))
    resp = api.get("/frames/3/heatmap.png", params={"q": "fish"})
    assert resp.status_code == 200 and resp.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(resp.content)).format == "PNG" and "," in resp.headers["x-peak"]
    assert api.get("/frames/3/heatmap.png", params={"q": "  "}).json()["message"] == "the heatmap text is empty"
    first = api.get("/search", params={"q": "a red fish", "k": 6}).json()["results"]
    like = api.get("/search/like", params={"id": first[2]["id"]}).json()
    assert like["results"][0]["id"] == first[2]["id"]
    fed = api.post("/search/feedback", json={"q": "a red fish", "positive": [first[-1]["id"]], "session": "s1",
                                             "k": 6}).json()
    again = api.post("/search/feedback", json={"q": "a red fish", "negative": [first[0]["id"]], "session": "s1",
                                               "k": 6}).json()
    assert fed["positive"] == [first[-1]["id"]] and again["positive"] == [first[-1]["id"]]
    assert again["negative"] == [first[0]["id"]]
    assert api.get("/search", params={"q": "a red fish", "cells": "top-left,4"}).status_code == 200
    bad = api.get("/search", params={"q": "a red fish", "cells": "12"})
    assert bad.status_code == 422 and "'12' is outside the 3x3 grid" in bad.json()["message"]
    assert api.get("/search/like", params={"id": "Nowhere/1/2"}).status_code == 404
    assert api.post("/search/feedback", json={"q": "x"}).status_code == 422

"""The HTTP API on an index with two embedding spaces (tiny random ViT and SigLIP, built by ``mvk index --model
A --model B``): every search-like route fuses the spaces by default and takes ``space_fusion`` (rrf, zscore or a
space's name), fused results carry their rank in each space, an unknown value is refused naming the choices,
``/info`` lists the spaces, and a one-space index answers as before whatever the fusion."""
from __future__ import annotations

import io

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.api import create_app
from app.service import SearchService
from mvk_tools.eventlog import EventLog
from tests.app_fixtures import TWO_SPACES, small_index, two_space_index

FIRST, SECOND = TWO_SPACES
TEXT = "a red striped fish"


@pytest.fixture(scope="module")
def two(tmp_path_factory) -> tuple[object, object]:
    return two_space_index(tmp_path_factory)


@pytest.fixture(scope="module")
def api(two) -> TestClient:
    collection, index = two
    return TestClient(create_app(SearchService(index, collection, log=EventLog(None))))


@pytest.fixture(scope="module")
def one_space_api(tmp_path_factory) -> TestClient:
    collection, index = small_index(tmp_path_factory)
    return TestClient(create_app(SearchService(index, collection, log=EventLog(None))))


def ok(resp) -> dict:
    assert resp.status_code == 200, resp.text
    return resp.json()


def refused(resp) -> str:
    assert resp.status_code == 422, resp.text
    body = resp.json()
    assert body["error"] == "invalid request" and "Traceback" not in resp.text
    return body["message"]


def alone_in_space(index_path, name: str, text: str, k: int) -> list[int]:
    """The gids a plain search of the index's view in space ``name`` ranks, with that space's own encoder."""
    from search.identity import EncoderChoice, encoder_for_index
    from search.query import search
    from search.store import open_index

    view = open_index(index_path).in_space(name)
    encoder = encoder_for_index(view.encoder, EncoderChoice(random_weights=True))
    return search(view, encoder, text, k=k)["gid"].astype(int).tolist()


def test_a_search_fuses_the_spaces_by_default_and_gives_each_result_its_rank_in_each(api, two):
    body = ok(api.get("/search", params={"q": TEXT, "k": 16}))
    results = body["results"]
    assert len(results) == 16 and [r["rank"] for r in results] == list(range(1, 17))
    assert all(set(r["spaces"]) == set(TWO_SPACES) for r in results)
    assert any("fused the rankings of 2 embedding spaces" in n for n in body["notes"])
    alone = {name: alone_in_space(two[1], name, TEXT, 16) for name in TWO_SPACES}
    assert alone[FIRST] != alone[SECOND]            # the spaces rank differently: the test can tell them apart
    for name in TWO_SPACES:           # the rank shown for a space is the rank that space alone gives
        assert all(r["spaces"][name] == alone[name].index(r["gid"]) + 1 for r in results)
    same = ok(api.get("/search", params={"q": TEXT, "k": 16, "space_fusion": "rrf"}))["results"]
    assert [r["gid"] for r in same] == [r["gid"] for r in results]


@pytest.mark.parametrize("name", TWO_SPACES)
def test_a_space_name_answers_in_that_space_alone(api, two, name):
    body = ok(api.get("/search", params={"q": TEXT, "k": 10, "space_fusion": name}))
    assert [r["gid"] for r in body["results"]] == alone_in_space(two[1], name, TEXT, 10)
    assert all(r["spaces"] is None for r in body["results"])
    assert not any("fused the rankings" in n for n in body["notes"])


def test_zscore_fuses_the_scores(api):
    rrf = ok(api.get("/search", params={"q": TEXT, "k": 16}))["results"]
    body = ok(api.get("/search", params={"q": TEXT, "k": 16, "space_fusion": "zscore"}))
    results = body["results"]
    assert any("z-normalised scores" in n for n in body["notes"])
    assert {r["gid"] for r in results} == {r["gid"] for r in rrf}
    assert all(set(r["spaces"]) == set(TWO_SPACES) for r in results)
    scores = [r["score"] for r in results]
    assert scores == sorted(scores, reverse=True)


def test_an_unknown_space_fusion_is_refused_naming_the_choices(api):
    message = refused(api.get("/search", params={"q": TEXT, "space_fusion": "ViT-H-14"}))
    assert "ViT-H-14" in message and "rrf" in message and "zscore" in message
    assert FIRST in message and SECOND in message


def test_every_search_like_route_takes_space_fusion(api):
    first = ok(api.get("/search", params={"q": TEXT, "k": 4}))["results"][0]
    for params in ({}, {"space_fusion": SECOND}):
        like = ok(api.get("/search/like", params={"id": first["id"], "k": 4, **params}))["results"]
        assert like and all((r["spaces"] is None) == bool(params) for r in like)
        feedback = ok(api.post("/search/feedback", json={"q": TEXT, "positive": [first["id"]], "k": 4, **params}))
        assert feedback["results"] and all((r["spaces"] is None) == bool(params) for r in feedback["results"])
        temporal = ok(api.get("/search/temporal", params={"first": TEXT, "then": "a blue fish", "within": 30,
                                                          "k": 3, **params}))["results"]
        assert temporal and all((r["spaces"] is None) == bool(params) for r in temporal)
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 80, 3), dtype=np.uint8)).save(buf, "PNG")
    image = ok(api.post("/search/image", params={"k": 4, "space_fusion": "zscore"},
                        files={"image": ("example.png", buf.getvalue(), "image/png")}))["results"]
    assert len(image) == 4 and all(set(r["spaces"]) == set(TWO_SPACES) for r in image)


def test_every_route_refuses_an_unknown_space_fusion(api):
    first = ok(api.get("/search", params={"q": TEXT, "k": 1}))["results"][0]["id"]
    bad = {"space_fusion": "nope"}
    for resp in (api.get("/search/like", params={"id": first, **bad}),
                 api.post("/search/feedback", json={"q": TEXT, "positive": [first], **bad}),
                 api.get("/search/temporal", params={"first": TEXT, "then": "a blue fish", **bad})):
        assert "'nope'" in refused(resp) and SECOND in refused(resp)


def test_info_lists_the_spaces_with_their_models_and_sites(api):
    info = ok(api.get("/info"))
    spaces = info["spaces"]
    assert [s["name"] for s in spaces] == list(TWO_SPACES)
    assert [s["primary"] for s in spaces] == [True, False]
    sites = sorted(s["site"] for s in info["sites"])
    for space in spaces:
        assert space["dim"] == 64 and space["objects"] == "pool" and space["sites"] == sites
        assert space["name"] in space["model"] and "random" in space["model"]


def test_a_one_space_index_ignores_the_fusion_and_refuses_an_unknown_space(one_space_api):
    plain = ok(one_space_api.get("/search", params={"q": TEXT, "k": 8}))["results"]
    assert all(r["spaces"] is None for r in plain)
    for value in ("rrf", "zscore", "mvk-tiny-vit"):
        got = ok(one_space_api.get("/search", params={"q": TEXT, "k": 8, "space_fusion": value}))["results"]
        assert [(r["gid"], r["score"]) for r in got] == [(r["gid"], r["score"]) for r in plain], value
    assert "mvk-tiny-vit" in refused(one_space_api.get("/search", params={"q": TEXT, "space_fusion": SECOND}))
    info = ok(one_space_api.get("/info"))
    assert [(s["name"], s["primary"]) for s in info["spaces"]] == [("mvk-tiny-vit", True)]


def test_a_survey_scores_the_space_asked(api) -> None:
    first = ok(api.get("/survey", params={"q": TEXT}))
    second = ok(api.get("/survey", params={"q": TEXT, "space": SECOND}))
    assert first["model"].startswith(FIRST) and second["model"].startswith(SECOND)
    plot = api.get(second["plots"]["timeline"])
    assert plot.status_code == 200 and plot.headers["content-type"] == "image/png"
    assert "its spaces" in refused(api.get("/survey", params={"q": TEXT, "space": "nope"}))

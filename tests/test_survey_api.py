"""The survey shells of the HTTP API (`GET /survey`, its CSVs and plots) over the app tests' small real index:
the same tables `mvk survey` writes, likes/dislikes as calibration labels, and 422 for bad input."""
from __future__ import annotations

import io
import shutil
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from app.api import create_app
from app.service import SearchService
from search import survey as S
from tests.app_fixtures import small_index

QUERY = "a yellow striped ellipse"


@pytest.fixture(scope="module")
def api(tmp_path_factory) -> TestClient:
    collection, index = small_index(tmp_path_factory)
    copy = tmp_path_factory.mktemp("survey_api") / "index"
    shutil.copytree(index, copy)
    return TestClient(create_app(SearchService(copy, collection)))


def ids(api: TestClient, rows: list[int]) -> list[str]:
    out = []
    for gid in rows:
        f = api.get(f"/frames/{gid}").json()
        out.append(f"{f['site']}/{f['video_id']}/{f['frame_index']}")
    return out


def test_survey_answers_tables_notes_and_links(api):
    body = api.get("/survey", params={"q": QUERY}).json()
    assert body["calibrated"] is False and body["threshold"] == S.DEFAULT_THRESHOLD
    assert body["videos"] == 4 == len(body["presence"])
    assert {"present", "maxn", "first_time", "last_time"} <= set(body["presence"][0])
    assert [s["site"] for s in body["sites"]] == sorted({p["site"] for p in body["presence"]})
    assert any("uncalibrated" in n for n in body["notes"])
    assert set(body["plots"]) == {"timeline", "sites", "map"}
    png = api.get(body["plots"]["timeline"])
    assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"
    csv = api.get(body["downloads"]["occurrences"])
    assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
    occ = pd.read_csv(io.StringIO(csv.text))
    assert len(occ) == 4 and set(S.DWC_COLUMNS) <= set(occ.columns)
    assert list(occ["individualCount"]) == [p["maxn"] for p in body["presence"]]


def test_occurrences_route_takes_the_query_itself(api):
    resp = api.get("/survey/occurrences.csv", params={"q": QUERY, "threshold": 1.0})
    occ = pd.read_csv(io.StringIO(resp.text))
    assert (occ["occurrenceStatus"] == "absent").all()


def test_likes_and_dislikes_calibrate_the_threshold(api):
    first, second, third, last = ids(api, [0, 1, 2, api.get("/health").json()["frames"] - 1])
    body = api.get("/survey", params={"q": QUERY, "positive": [first, second], "negative": [third, last],
                                      "target_precision": 0.5}).json()
    assert body["calibrated"] is True and "2 match / 2 non-match" in body["calibration"]
    assert body["query"] == QUERY


@pytest.mark.parametrize("params, message", [
    ({"q": QUERY, "threshold": 1.5}, "outside the score range"),
    ({"q": ""}, "query text is empty"),
    ({"like": "Oahu_Jul2022/nope/0"}, "has no video 'nope'"),
    ({"q": QUERY, "positive": "Lembeh_Jul2013/0001/0"}, "no site 'Lembeh_Jul2013'"),
    ({"q": QUERY, "site": "Nowhere"}, "unknown site"),
])
def test_bad_survey_input_is_a_clear_error(api, params, message):
    resp = api.get("/survey", params=params)
    assert resp.status_code in (404, 422), resp.text
    assert message in resp.json()["message"]

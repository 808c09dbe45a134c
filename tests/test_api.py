"""The HTTP API (`mvk serve`) through FastAPI's TestClient on the app tests' small real index (tiny random CLIP):
every endpoint answers JSON with the documented models, each error case has its status and a clear message,
the bearer token guards every route, only files inside the index and collection are served, the index reopens
after a shard swap, and every query lands in the event log."""
from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.api import create_app
from app.service import SearchService
from mvk_tools.eventlog import EventLog
from tests.app_fixtures import SITES, small_index

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def built(tmp_path_factory) -> tuple[Path, Path]:
    return small_index(tmp_path_factory)


@pytest.fixture()
def env(built, tmp_path) -> tuple[Path, Path]:
    """(collection, a private copy of the index): tests may break or rebuild shards in it."""
    collection, index = built
    copy = tmp_path / "index"
    shutil.copytree(index, copy)
    return collection, copy


def client_for(index: Path, collection: Path | None, *, token: str | None = None, log: Path | None = None,
               **kw) -> TestClient:
    service = SearchService(index, collection, log=EventLog(log))
    return TestClient(create_app(service, token=token), **kw)


@pytest.fixture()
def api(env, tmp_path) -> TestClient:
    collection, index = env
    return client_for(index, collection, log=tmp_path / "events.jsonl")


def error_of(resp, status: int) -> str:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["status"] == status and body["message"] and "Traceback" not in resp.text
    return body["message"]


# -- health, info, docs ------------------------------------------------------------------------------

def test_health_and_info(api):
    health = api.get("/health").json()
    assert health["status"] == "ok" and health["sites"] == 2 and health["frames"] > 0
    info = api.get("/info").json()
    assert [s["site"] for s in info["sites"]] == sorted(SITES)
    assert sum(s["frames"] for s in info["sites"]) == info["frames"] == health["frames"]
    assert info["videos"] == 4 and all(s["videos"] == 2 for s in info["sites"])
    assert info["encoder"]["model"] == "mvk-tiny-vit" and info["skipped_shards"] == {}
    assert info["version"] == health["index_version"]


def test_docs_describe_every_endpoint(api):
    assert api.get("/docs").status_code == 200
    spec = api.get("/openapi.json").json()
    expected = {"/health", "/info", "/search", "/search/image", "/search/temporal", "/search/like", "/search/feedback",
                "/frames/{gid}/heatmap.png", "/frames/{gid}",
                "/frames/{gid}/thumbnail", "/frames/{gid}/objects/{track_id}/mask.png", "/videos/{site}/{video_id}",
                "/videos/{site}/{video_id}/segment", "/survey", "/survey/{name}.csv", "/survey/{name}.png",
                "/frames/{gid}/track"}
    assert set(spec["paths"]) == expected
    for path, ops in spec["paths"].items():
        for op in ops.values():
            assert op.get("summary"), path
            ok = op["responses"]["200"]["content"]
            assert any("schema" in c and c["schema"] for c in ok.values()) or set(ok) - {"application/json"}, path
            assert op["responses"]["404"]["content"]["application/json"]["schema"]["$ref"].endswith("ErrorResponse")
    schemas = spec["components"]["schemas"]
    assert {"SearchResponse", "FrameResult", "TemporalResponse", "FrameInfo", "InfoResponse",
            "HealthResponse"} <= set(schemas)


# -- text search -----------------------------------------------------------------------------------

def test_text_search_returns_ranked_frames_like_the_library(api, env):
    from search.encoder import load_encoder
    from search.query import search
    from search.store import open_index

    body = api.get("/search", params={"q": "a red striped fish", "k": 10}).json()
    results = body["results"]
    assert [r["rank"] for r in results] == list(range(1, 11))
    scores = [r["score"] for r in results]
    assert scores == sorted(scores, reverse=True)
    index = open_index(env[1])
    ident = index.encoder
    encoder = load_encoder(ident["model"], ident["pretrained"], random_weights=True)
    expected = search(index, encoder, "a red striped fish", k=10)
    assert [r["gid"] for r in results] == expected["gid"].tolist()
    first = results[0]
    assert first["thumbnail_url"] == f"/frames/{first['gid']}/thumbnail?version={body['index_version']}"
    assert first["video_url"].startswith(f"/videos/{first['site']}/{first['video_id']}#t=")
    assert any("random weights" in n for n in body["notes"])


def test_paging_gives_the_next_ranks(api):
    params = {"q": "a red striped fish"}
    whole = api.get("/search", params={**params, "k": 8}).json()
    page2 = api.get("/search", params={**params, "k": 4, "offset": 4}).json()
    assert [r["gid"] for r in page2["results"]] == [r["gid"] for r in whole["results"][4:8]]
    assert [r["rank"] for r in page2["results"]] == [5, 6, 7, 8] and page2["has_more"]
    total = api.get("/info").json()["frames"]
    last = api.get("/search", params={**params, "k": 10, "offset": total - 3}).json()
    assert len(last["results"]) == 3 and not last["has_more"]


def test_filters_fusion_and_grouping(api):
    only = api.get("/search", params={"q": "fish", "k": 50, "site": SITES[1]}).json()["results"]
    assert only and {r["site"] for r in only} == {SITES[1]}
    place = SITES[0].split("_")[0]
    assert {r["site"] for r in api.get("/search", params={"q": "fish", "place": place}).json()["results"]} == {SITES[0]}
    frame_only = api.get("/search", params={"q": "fish", "fusion": "frame", "k": 5}).json()["results"]
    assert all(r["score"] == pytest.approx(r["frame_score"]) for r in frame_only)
    grouped = api.get("/search", params={"q": "fish", "group_by": "video", "k": 50}).json()["results"]
    assert len(grouped) == 4 and len({(r["site"], r["video_id"]) for r in grouped}) == 4


@pytest.mark.parametrize("params, status, message", [
    ({"q": ""}, 422, "the query text is empty"),
    ({"q": "   "}, 422, "the query text is empty"),
    ({}, 422, "the query text is empty"),
    ({"q": "x" * 2001}, 422, "q: String should have at most 2000 characters"),
    ({"q": "fish", "k": 0}, 422, "k: Input should be greater than or equal to 1"),
    ({"q": "fish", "fusion": "sum"}, 422, "fusion: Input should be"),
    ({"q": "fish", "weight": 2}, 422, "weight"),
    ({"q": "fish", "date_from": "2022"}, 422, "must be YYYY-MM"),
    ({"q": "fish", "offset": 990, "k": 20}, 422, "at most 1000 results"),
    ({"q": "fish", "site": "Atlantis_2020"}, 404, "unknown site 'Atlantis_2020'"),
    ({"q": "fish", "place": "Atlantis"}, 404, "unknown place 'Atlantis'"),
])
def test_search_errors_are_json_with_a_status_and_message(api, params, status, message):
    assert message in error_of(api.get("/search", params=params), status)


def test_errors_name_the_apis_fields_not_the_command_lines_flags(api):
    from app.api import api_names

    message = error_of(api.get("/search", params={"q": "fish", "date_from": "2022"}), 422)
    assert "date_from must be YYYY-MM" in message and "--" not in message
    assert api_names("filter by place with --place Oahu_Jul2022 instead") == \
        "filter by place with place=Oahu_Jul2022 instead"
    assert api_names("--within must be a positive number") == "within must be a positive number"


def test_unknown_routes_are_json_404(api):
    assert "no route GET /nothing" in error_of(api.get("/nothing"), 404)


# -- a broken shard --------------------------------------------------------------------------------

def test_a_broken_shard_is_named_and_the_rest_still_answers(env):
    collection, index = env
    from search.store import shard_folder
    (shard_folder(index, SITES[0]) / "frames.faiss").write_bytes(b"garbage")
    api = client_for(index, collection)
    health = api.get("/health").json()
    assert health["status"] == "degraded" and SITES[0] in health["skipped_shards"]
    body = api.get("/search", params={"q": "fish", "k": 50}).json()
    assert {r["site"] for r in body["results"]} == {SITES[1]}
    assert "frames.faiss" in body["skipped_shards"][SITES[0]]
    resp = api.get("/search", params={"q": "fish", "site": SITES[0]})
    assert "frames.faiss" in error_of(resp, 503) and resp.json()["shard"] == SITES[0]


def test_the_index_reopens_after_a_shard_swap(env):
    from search.store import remove_shard, write_shard
    from search.testing import frame_rows, object_rows, random_unit

    collection, index = env
    api = client_for(index, collection)
    before = api.get("/info").json()
    remove_shard(index, SITES[0])
    dim = before["encoder"]["dim"]
    write_shard(index, "Newsite_Jan2023", frame_rows("Newsite_Jan2023", 3), random_unit(3, dim),
                object_rows([]), np.zeros((0, dim), np.float32), {})
    after = api.get("/info").json()
    assert [s["site"] for s in after["sites"]] == sorted([SITES[1], "Newsite_Jan2023"])
    assert after["version"] != before["version"]
    found = api.get("/search", params={"q": "fish", "site": "Newsite_Jan2023"}).json()["results"]
    assert len(found) == 3 and api.get("/search", params={"q": "x", "site": SITES[0]}).status_code == 404
    write_shard(index, SITES[1], frame_rows(SITES[1], 5), random_unit(5, dim), object_rows([]),
                np.zeros((0, dim), np.float32), {})                 # a rebuild of a site: a new version
    rebuilt = {s["site"]: s["frames"] for s in api.get("/info").json()["sites"]}
    assert rebuilt == {SITES[1]: 5, "Newsite_Jan2023": 3}


# -- image and temporal search -----------------------------------------------------------------------

def png(shape=(48, 80, 3)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def test_image_search_from_an_upload(api):
    resp = api.post("/search/image", params={"k": 6, "site": SITES[0]},
                    files={"image": ("example.png", png(), "image/png")})
    body = resp.json()
    assert resp.status_code == 200 and body["kind"] == "image" and body["query"] == "example.png"
    assert len(body["results"]) == 6 and {r["site"] for r in body["results"]} == {SITES[0]}


def test_a_bad_upload_is_named(api):
    resp = api.post("/search/image", files={"image": ("broken.png", b"not a png", "image/png")})
    assert "broken.png: not a readable image" in error_of(resp, 422)
    assert "image" in error_of(api.post("/search/image"), 422)


def test_temporal_search_gives_ordered_pairs_within_the_limit(api):
    body = api.get("/search/temporal", params={"first": "a fish", "then": "a rock", "within": 1.0, "k": 10}).json()
    assert body["results"] and [r["rank"] for r in body["results"]] == list(range(1, len(body["results"]) + 1))
    for r in body["results"]:
        assert 0 < r["gap"] <= 1.0 and r["then_time"] > r["first_time"]
        assert r["first_thumbnail_url"] == f"/frames/{r['first_gid']}/thumbnail?version={body['index_version']}"
    assert "then query text is empty" in error_of(api.get("/search/temporal", params={"first": "a"}), 422)
    assert "within" in error_of(api.get("/search/temporal", params={"first": "a", "then": "b", "within": 0}), 422)


# -- frames, thumbnails, masks ---------------------------------------------------------------------

def frame_with_objects(api) -> dict:
    for r in api.get("/search", params={"q": "a red striped fish", "k": 50}).json()["results"]:
        if r["track_id"] is not None:
            return r
    pytest.skip("no result with an object in the small index")


def test_a_frame_its_thumbnail_and_its_object_mask(api):
    from PIL import Image

    r = frame_with_objects(api)
    frame = api.get(f"/frames/{r['gid']}").json()
    assert frame["site"] == r["site"] and frame["time"] == pytest.approx(r["time"])
    assert r["track_id"] in [o["track_id"] for o in frame["objects"]]
    plain = api.get(r["thumbnail_url"])
    assert plain.status_code == 200 and plain.headers["content-type"] == "image/jpeg"
    masked = api.get(r["thumbnail_url"], params={"overlay": "mask", "track_id": r["track_id"]})
    boxed = api.get(r["thumbnail_url"], params={"overlay": "box", "track_id": r["track_id"]})
    assert masked.content[:2] == b"\xff\xd8" and masked.content != plain.content != boxed.content
    mask = api.get(r["mask_url"])
    assert mask.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(mask.content))
    assert image.size == (frame["width"], frame["height"])
    assert 0 < (np.asarray(image) > 0).sum() < frame["width"] * frame["height"]


def test_frame_errors(api):
    n = api.get("/health").json()["frames"]
    assert f"no frame {n}" in error_of(api.get(f"/frames/{n}"), 404)
    assert "no frame -1" in error_of(api.get("/frames/-1/thumbnail"), 404)
    assert "gid" in error_of(api.get("/frames/abc"), 422)
    assert "overlay" in error_of(api.get("/frames/0/thumbnail", params={"overlay": "glow"}), 422)
    assert "has no object 999" in error_of(api.get("/frames/0/objects/999/mask.png"), 404)


# -- videos and paths ------------------------------------------------------------------------------

def test_a_video_is_served_with_range_requests(api, env):
    collection, _ = env
    r = api.get("/search", params={"q": "fish", "k": 1}).json()["results"][0]
    url = r["video_url"].split("#")[0]
    whole = api.get(url)
    assert whole.status_code == 200 and whole.content == (collection / r["video_path"]).read_bytes()
    part = api.get(url, headers={"Range": "bytes=0-99"})
    assert part.status_code == 206 and part.content == whole.content[:100]


def test_a_segment_plays_in_browsers(api, tmp_path, monkeypatch):
    import av

    monkeypatch.setenv("MVK_CACHE", str(tmp_path / "cache"))
    r = api.get("/search", params={"q": "fish", "k": 1}).json()["results"][0]
    resp = api.get(r["segment_url"])
    assert resp.status_code == 200 and resp.headers["content-type"] == "video/mp4", resp.text
    start = float(resp.headers["x-segment-start"])
    assert 0 <= start <= r["time"]
    with av.open(io.BytesIO(resp.content)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name in ("h264", "vp9", "av1", "vp8")
        assert next(container.decode(stream)).width > 0
    url = r["segment_url"].split("?")[0]
    assert "at most 120 s" in error_of(api.get(url, params={"start": 0, "end": 500}), 422)
    assert "0 <= start < end" in error_of(api.get(url, params={"start": 5, "end": 2}), 422)
    assert "start" in error_of(api.get(url, params={"start": -1, "end": 2}), 422)
    assert "no video 'nope'" in error_of(api.get(f"/videos/{r['site']}/nope/segment?start=0&end=1"), 404)


@pytest.mark.parametrize("path", [
    "/videos/..%2F..%2F..%2Fetc/passwd",
    "/videos/../../etc/passwd",
    "/videos/%2e%2e/%2e%2e%2fetc%2fpasswd",
    "/frames/..%2F..%2Fmanifest.json/thumbnail",
])
def test_path_traversal_attempts_are_refused(api, path):
    resp = api.get(path)
    assert resp.status_code in (404, 422) and "root:" not in resp.text and resp.json()["message"]


def test_a_video_path_leading_outside_the_collection_is_refused(tmp_path):
    from search.store import init_index, write_shard
    from search.testing import encoder_identity, frame_rows, object_rows, random_unit

    collection, index = tmp_path / "collection", tmp_path / "index"
    (collection / "S").mkdir(parents=True)
    (collection / "S" / "v0.mp4").write_bytes(b"video 0")
    (tmp_path / "secret.mp4").write_bytes(b"secret")
    (collection / "S" / "v2.mp4").symlink_to(tmp_path / "secret.mp4")
    init_index(index, {"encoder": encoder_identity(8)})
    rows = frame_rows("S", 3, videos=3)
    rows["video_path"] = ["S/v0.mp4", "../secret.mp4", "S/v2.mp4"]
    write_shard(index, "S", rows, random_unit(3, 8), object_rows([]), np.zeros((0, 8), np.float32), {})
    api = client_for(index, collection)
    assert api.get("/videos/S/S-v0").content == b"video 0"
    assert "outside the folders" in error_of(api.get("/videos/S/S-v1"), 403)
    assert "outside the folders" in error_of(api.get("/videos/S/S-v2"), 403)
    assert "no video 'nope'" in error_of(api.get("/videos/S/nope"), 404)
    assert "no collection" in error_of(client_for(index, None).get("/videos/S/S-v0"), 404)


# -- token, unexpected errors, log ----------------------------------------------------------------

def test_a_token_is_required_on_every_request(env):
    collection, index = env
    api = client_for(index, collection, token="s3cret")
    for path in ("/health", "/search?q=fish", "/docs", "/openapi.json", "/frames/0/thumbnail", "/nothing"):
        resp = api.get(path)
        assert "Authorization: Bearer" in error_of(resp, 401), path
        assert resp.headers["www-authenticate"] == "Bearer"
    assert "wrong bearer token" in error_of(api.get("/health", headers={"Authorization": "Bearer nope"}), 401)
    assert error_of(api.get("/health", headers={"Authorization": "s3cret"}), 401)
    ok = api.get("/search", params={"q": "fish"}, headers={"Authorization": "Bearer s3cret"})
    assert ok.status_code == 200 and ok.json()["results"]


def test_an_unexpected_error_is_json_without_a_traceback(env):
    collection, index = env
    service = SearchService(index, collection)

    def broken() -> dict:
        raise RuntimeError("disk on fire")

    service.info = broken
    api = TestClient(create_app(service), raise_server_exceptions=False)
    message = error_of(api.get("/info"), 500)
    assert "RuntimeError" in message and "disk on fire" not in message


def test_every_query_is_logged(api, tmp_path):
    api.get("/search", params={"q": "a red striped fish", "k": 3, "site": SITES[0]})
    api.post("/search/image", files={"image": ("ex.png", png(), "image/png")})
    api.get("/search/temporal", params={"first": "a", "then": "b"})
    api.get("/search", params={"q": ""})                          # refused: not a query
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [(e["event"], e["kind"]) for e in events] == [("query", "text"), ("query", "image"), ("query", "temporal")]
    first = events[0]
    assert first["text"] == "a red striped fish" and first["filters"]["sites"] == [SITES[0]] and first["k"] == 3
    assert [r["rank"] for r in first["results"]] == [1, 2, 3] and first["source"] == "api"
    assert events[1]["image"] == "ex.png" and events[2]["then"] == "b"


# -- the command ---------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_mvk_serve_answers_health_and_a_text_search(built, tmp_path):
    import httpx

    collection, index = built
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "MVK_API_TOKEN": "tok", "MVK_LOG": str(tmp_path / "log.jsonl")}
    proc = subprocess.Popen([sys.executable, "-m", "app", "serve", "--index", str(index), "--collection",
                             str(collection), "--port", str(port)], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    headers = {"Authorization": "Bearer tok"}
    try:
        deadline = time.monotonic() + 90
        health = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", headers=headers, timeout=2)
                break
            except httpx.TransportError:
                time.sleep(0.3)
        assert health is not None and health.json()["status"] == "ok", proc.poll()
        found = httpx.get(f"http://127.0.0.1:{port}/search", params={"q": "a turtle", "k": 5}, headers=headers,
                          timeout=30).json()
        assert [r["rank"] for r in found["results"]] == [1, 2, 3, 4, 5]
        assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 401
    finally:
        proc.terminate()
        out = proc.communicate(timeout=30)[0]
    assert "Traceback" not in out and "bearer token required" in out


@pytest.mark.parametrize("argv, message", [
    (["serve", "--index", "{tmp}/nothing"], "no index folder at"),
    (["serve", "--index", "{tmp}"], "is not an index"),
    (["serve", "--index", "{tmp}", "--port", "70000"], "--port must be 1..65535"),
    (["serve", "--index", "{tmp}", "--collection", "{tmp}/missing"], "the collection is not a folder"),
])
def test_mvk_serve_refuses_bad_input_in_one_line(argv, message, tmp_path, capsys):
    from app.cli import main

    assert main([a.format(tmp=tmp_path) for a in argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_mvk_serve_refuses_a_model_that_does_not_match_the_index(built, capsys):
    from app.cli import main

    assert main(["serve", "--index", str(built[1]), "--model", "ViT-B-32", "--random-weights"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mvk serve: error: the index at") and "mvk-tiny-vit" in err and "ViT-B-32" in err


def test_the_fingerprint_sees_swaps_but_not_a_rebuild_in_progress(env):
    import os

    from app.service import index_fingerprint

    _, index = env
    before = index_fingerprint(index)
    (index / "sites" / f".tmp-{SITES[0]}-abc").mkdir()                # a rebuild writing its new shard
    assert index_fingerprint(index) == before
    site = index / "sites" / SITES[0]
    os.rename(site, index / "sites" / f".old-{SITES[0]}-abc")           # the swap: old out, new in
    os.rename(index / "sites" / f".tmp-{SITES[0]}-abc", site)
    assert index_fingerprint(index) != before
    (site / "CURRENT.tmp").write_text("v2")                              # a pointer replaced atomically
    mid = index_fingerprint(index)
    os.replace(site / "CURRENT.tmp", site / "CURRENT")
    assert index_fingerprint(index) != mid

"""Hostile requests to `mvk serve`, third pass: an upload far over the limit is refused before it is received
whole (with the real limit in the message), the bearer token is compared exactly, path ids are digits only."""
from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.api import create_app
from app.limits import BodyLimit
from app.security import MAX_IMAGE_BYTES
from app.service import SearchService
from mvk_tools.eventlog import EventLog
from tests.app_fixtures import small_index


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> tuple[Path, Path]:
    collection, index = small_index(tmp_path_factory)
    copy = tmp_path_factory.mktemp("api") / "index"
    shutil.copytree(index, copy)
    return collection, copy


def client(env, token: str | None = None) -> TestClient:
    collection, index = env
    return TestClient(create_app(SearchService(index, collection, log=EventLog(None)), token=token))


def test_a_declared_200_mib_upload_is_refused_unread(env) -> None:
    resp = client(env).post("/search/image", content=b"x" * 1000,
                            headers={"content-type": "multipart/form-data; boundary=b",
                                     "content-length": str(200 * 2 ** 20)})
    assert resp.status_code == 413
    body = resp.json()
    assert body["status"] == 413 and "200 MiB" in body["message"]
    assert f"{MAX_IMAGE_BYTES // 2 ** 20} MiB allowed" in body["message"]


def test_a_chunked_upload_is_read_only_up_to_the_limit() -> None:
    sent, reached, chunk = [0], [False], b"x" * 2 ** 20

    async def receive():
        sent[0] += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": sent[0] < 200 * 2 ** 20}

    async def app(scope, receive, send):
        reached[0] = True

    replies = []

    async def send(message):
        replies.append(message)

    limit = BodyLimit(app, max_bytes=21 * 2 ** 20, allowed=20 * 2 ** 20, what="an uploaded image")
    asyncio.run(limit({"type": "http", "method": "POST", "headers": []}, receive, send))
    assert not reached[0] and replies[0]["status"] == 413
    assert sent[0] <= 22 * 2 ** 20                       # about the limit read, not the 200 MiB
    assert b"20 MiB allowed" in replies[1]["body"]


def test_a_small_chunked_body_reaches_the_app_whole() -> None:
    parts = [b"ab", b"cd", b""]
    got = []

    async def receive():
        body = parts.pop(0)
        return {"type": "http.request", "body": body, "more_body": bool(parts)}

    async def app(scope, receive, send):
        while True:
            message = await receive()
            got.append(message.get("body", b""))
            if not message.get("more_body"):
                break

    async def send(message):
        pass

    asyncio.run(BodyLimit(app, max_bytes=10)({"type": "http", "method": "POST", "headers": []}, receive, send))
    assert b"".join(got) == b"abcd"


def test_the_bearer_token_is_compared_exactly(env) -> None:
    api = client(env, token="s3cret")
    assert api.get("/health", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    for wrong in ("Bearer s3cret ", "Bearer  s3cret", "bearer s3cret", "Bearer s3cre", "Bearer s3cret\t"):
        assert api.get("/health", headers={"Authorization": wrong}).status_code == 401, repr(wrong)


def test_serve_refuses_a_token_http_cannot_carry(env, capsys, monkeypatch) -> None:
    from app.cli import main

    collection, index = env
    monkeypatch.setenv("MVK_API_TOKEN", "s3cret ")
    assert main(["serve", "--index", str(index), "--collection", str(collection), "--random-weights"]) == 2
    assert "spaces at its ends" in capsys.readouterr().err


@pytest.mark.parametrize("path", ["/frames/%201", "/frames/1%20", "/frames/+1", "/frames/01x", "/frames/%EF%BC%91", "/frames/--1",
                                  "/frames/%201/thumbnail", "/frames/1/objects/%200/mask.png"])
def test_path_ids_are_digits_only(env, path: str) -> None:
    resp = client(env).get(path)
    assert resp.status_code == 422, path
    assert "digits" in resp.json()["message"]


def test_a_plain_id_still_works(env) -> None:
    api = client(env)
    assert api.get("/frames/1").status_code == 200
    assert api.get("/frames/1/thumbnail").status_code == 200


def test_a_frame_id_given_with_its_index_version_is_refused_once_the_index_changed(env, tmp_path: Path) -> None:
    import os

    collection, built_index = env
    index = tmp_path / "index"
    shutil.copytree(built_index, index)
    api = TestClient(create_app(SearchService(index, collection, log=EventLog(None))))
    page = api.get("/search", params={"q": "fish", "k": 2}).json()
    gid, version = page["results"][0]["gid"], page["index_version"]
    assert api.get(f"/frames/{gid}", params={"version": version}).status_code == 200
    assert api.get(f"/frames/{gid}/thumbnail", params={"version": version}).status_code == 200
    site = sorted(p for p in (index / "sites").iterdir() if p.is_dir())[0]
    copy = site / "CURRENT.swap"
    shutil.copy(site / "CURRENT", copy)
    os.replace(copy, site / "CURRENT")                  # a new version published (same content, new file)
    for path in (f"/frames/{gid}", f"/frames/{gid}/thumbnail", f"/frames/{gid}/objects/0/mask.png"):
        resp = api.get(path, params={"version": version})
        assert resp.status_code == 409, path
        assert version in resp.json()["message"] and "search again" in resp.json()["message"]
    assert api.get(page["results"][0]["thumbnail_url"]).status_code == 409   # a result's own link, followed late
    assert api.get(f"/frames/{gid}").status_code == 200                  # without a version: as before
    fresh = api.get("/search", params={"q": "fish", "k": 2}).json()["index_version"]
    assert fresh != version and api.get(f"/frames/{gid}", params={"version": fresh}).status_code == 200

"""Following an animal from a result (issue 23's shells): ``SearchService.track`` through the frames around an
indexed frame (colour baseline on a random-weight index), ``POST /frames/{gid}/track`` with a mask, a box, a
point or a stored object, and the clear errors for bad seeds (422)."""
from __future__ import annotations

import io
import json
import shutil
import zipfile

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.api import create_app
from app.service import SearchService
from indexer.tracks import coco_rle_decode
from search.errors import InputError, QueryError
from tests.app_fixtures import small_index


@pytest.fixture(scope="module")
def service(tmp_path_factory) -> SearchService:
    collection, index = small_index(tmp_path_factory)
    copy = tmp_path_factory.mktemp("track") / "index"
    shutil.copytree(index, copy)
    return SearchService(copy, collection)


@pytest.fixture(scope="module")
def api(service) -> TestClient:
    return TestClient(create_app(service))


def an_object(service: SearchService) -> tuple[int, int]:
    """(gid, track id) of the largest non-background object on a frame in the middle of a video."""
    objs = service.index().objects
    objs = objs[~objs["is_background"].to_numpy(bool)]
    frames = service.index().frames
    middle = frames.groupby(["site", "video_id"])["gid"].apply(lambda g: int(g.iloc[len(g) // 2]))
    cand = objs[objs["frame_gid"].isin(middle.to_numpy())].sort_values("area", ascending=False)
    row = cand.iloc[0]
    return int(row["frame_gid"]), int(row["track_id"])


def png(mask: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray((mask > 0).astype(np.uint8) * 255).save(buf, "PNG")
    return buf.getvalue()


def test_following_a_stored_object_covers_the_window_and_keeps_the_seed(service):
    gid, track_id = an_object(service)
    followed = service.track(gid, track_id=track_id, before=3, after=3)
    frames = [f.index for f in followed.track.frames]
    assert frames == sorted(frames) and len(frames) >= 2
    seed = int(service.frame(gid)["frame_index"])
    assert seed in frames and followed.track.seed_frame == seed
    assert followed.track.mask(seed, 1).any()                           # the seed frame keeps its object
    presence = followed.presence()
    assert (presence["area"] > 0).any() and set(presence["gid"]) <= set(service.index().frames["gid"]) | {-1}
    assert service.track(gid, track_id=track_id, before=3, after=3) is followed   # cached
    overlays = service.track_overlays(followed, 3)
    assert 1 <= len(overlays) <= 3 and all(j[:2] == b"\xff\xd8" for _, j in overlays)


def test_a_mask_png_seed_follows_that_mask(service):
    gid, track_id = an_object(service)
    first = service.track(gid, track_id=track_id, before=1, after=1)
    h, w = first.track.size
    seed = int(service.frame(gid)["frame_index"])
    mask = first.track.mask(seed, 1)
    followed = service.track(gid, png(mask), before=1, after=1)
    got = followed.track.mask(seed, 1)
    assert got.shape == (h, w) and (got == mask).all()


@pytest.mark.parametrize("seed, message", [
    ("empty", "is empty"),
    ("other", "another aspect ratio"),
    ((-5.0, 3.0), "outside the frame"),
    ((500.0, 500.0, 600.0, 600.0), "outside the frame"),
    (b"not a png", "not a readable image"),
])
def test_bad_seeds_are_named(service, seed, message):
    gid, _ = an_object(service)
    h, w = service.track(gid, track_id=an_object(service)[1], before=0, after=0).track.size
    if seed == "empty":
        seed = png(np.zeros((h, w), np.uint8))
    elif seed == "other":
        seed = png(np.ones((h, 3 * w), np.uint8))
    with pytest.raises((InputError, QueryError), match=message):
        service.track(gid, seed, before=1, after=1)


def test_a_frame_past_the_end_is_refused(service):
    n = len(service.index().frames)
    with pytest.raises(QueryError, match="past the end"):
        service.track(n + 5, (1.0, 1.0))


# -- the API --------------------------------------------------------------------------------------

def test_api_returns_coco_rle_per_frame_and_a_zip(api, service):
    gid, track_id = an_object(service)
    body = api.post(f"/frames/{gid}/track", params={"track_id": track_id, "before": 2, "after": 2}).json()
    assert body["gid"] == gid and body["object_ids"] == [1] and len(body["frames"]) >= 2
    first = body["frames"][0]
    assert {"frame_index", "time", "gid", "objects"} <= set(first)
    with_object = [f for f in body["frames"] if f["objects"]]
    assert with_object
    mask = coco_rle_decode(with_object[0]["objects"][0]["rle"])
    assert mask.shape == tuple(body["size"]) and mask.any()
    assert body["coco"]["annotations"] and body["coco"]["images"]
    got = api.post(f"/frames/{gid}/track", params={"track_id": track_id, "before": 2, "after": 2, "format": "zip"})
    assert got.status_code == 200 and got.headers["content-type"] == "application/zip"
    names = zipfile.ZipFile(io.BytesIO(got.content)).namelist()
    assert "track.json" in names and sum(n.endswith(".png") for n in names) == len(body["frames"])
    assert json.loads(zipfile.ZipFile(io.BytesIO(got.content)).read("track.json"))["annotations"]


def test_api_takes_a_mask_upload_a_box_and_a_point(api, service):
    gid, track_id = an_object(service)
    obj = service.object_row(gid, track_id)
    box = f"{int(obj['x0'])},{int(obj['y0'])},{int(obj['x1'])},{int(obj['y1'])}"
    resp = api.post(f"/frames/{gid}/track", params={"box": box, "before": 1, "after": 1})
    assert resp.status_code == 200, resp.text
    point = f"{(obj['x0'] + obj['x1']) // 2},{(obj['y0'] + obj['y1']) // 2}"
    resp = api.post(f"/frames/{gid}/track", params={"point": point, "before": 1, "after": 1})
    assert resp.status_code == 200, resp.text
    size = resp.json()["size"]
    m = np.zeros(size, np.uint8)
    m[size[0] // 4: size[0] // 2, size[1] // 4: size[1] // 2] = 1
    resp = api.post(f"/frames/{gid}/track", params={"before": 1, "after": 1},
                    files={"mask": ("m.png", png(m), "image/png")})
    assert resp.status_code == 200, resp.text


@pytest.mark.parametrize("params, files, message", [
    ({"point": "-4,2"}, None, "outside the frame"),
    ({"point": "1,2", "box": "0,0,4,4"}, None, "one seed"),
    ({"point": "nope"}, None, "point"),
    ({}, None, "give a seed"),
    ({}, {"mask": ("m.png", b"", "image/png")}, "empty"),
])
def test_api_bad_seeds_are_422(api, service, params, files, message):
    gid, _ = an_object(service)
    resp = api.post(f"/frames/{gid}/track", params={**params, "before": 1, "after": 1}, files=files)
    assert resp.status_code == 422, resp.text
    assert message in resp.json()["message"]


def test_api_frame_past_the_end_is_422(api, service):
    resp = api.post(f"/frames/{len(service.index().frames) + 3}/track", params={"point": "1,1"})
    assert resp.status_code == 422 and "past the end" in resp.json()["message"]


@pytest.mark.parametrize("manifest, backbone, checkpoint", [
    ({"encoder": {"random_weights": False}, "indexing": {"backbone": {"backbone": "color"}}}, "color", None),
    ({"encoder": {"random_weights": True}, "indexing": {"backbone": {"backbone": "dino_vits16"}}}, "color", None),
    ({"encoder": {}, "indexing": {"backbone": {"backbone": "dino_vits16", "random_weights": True}}}, "color", None),
    ({"encoder": {}, "indexing": {"backbone": {"backbone": "dino_vitb8", "checkpoint": "/w/dino.pth"}}},
     "dino_vitb8", "/w/dino.pth"),
    ({"encoder": {}, "indexing": None}, "color", None),
])
def test_the_propagator_follows_the_index_backbone(tmp_path, manifest, backbone, checkpoint):
    class Stub(SearchService):
        def index(self):
            return type("Index", (), {"manifest": manifest})()

    settings = Stub(tmp_path).propagator_settings()
    assert (settings.backbone, settings.checkpoint, settings.random_weights) == (backbone, checkpoint, False)

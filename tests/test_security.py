"""app.security: only files inside the collection and index folders are read or served; uploads are checked."""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest

from app.security import (PathNotAllowedError, check_uploaded_csv, collection_file, collection_folder,
                          read_uploaded_image, resolve_inside, safe_name)
from search.errors import InputError


@pytest.fixture()
def tree(tmp_path: Path) -> dict[str, Path]:
    coll = tmp_path / "coll"
    (coll / "videos" / "SiteA").mkdir(parents=True)
    (coll / "videos" / "SiteA" / "0001.mp4").write_bytes(b"video")
    secret = tmp_path / "secret.txt"
    secret.write_text("do not serve")
    index = tmp_path / "idx"
    index.mkdir()
    return {"coll": coll, "secret": secret, "index": index, "tmp": tmp_path}


def test_a_file_inside_the_collection_is_served(tree):
    path = collection_file(tree["coll"], "videos/SiteA/0001.mp4")
    assert path == (tree["coll"] / "videos/SiteA/0001.mp4").resolve()
    assert path.read_bytes() == b"video"


@pytest.mark.parametrize("typed", ["../secret.txt", "videos/../../secret.txt", "videos/SiteA/../../../secret.txt"])
def test_dotdot_escapes_are_refused(tree, typed):
    with pytest.raises(PathNotAllowedError, match="outside the folders"):
        collection_file(tree["coll"], typed)


def test_an_absolute_path_outside_is_refused_and_one_inside_is_accepted(tree):
    with pytest.raises(PathNotAllowedError, match="outside"):
        collection_file(tree["coll"], str(tree["secret"]))
    assert collection_folder(tree["coll"], str(tree["coll"] / "videos")) == (tree["coll"] / "videos").resolve()


def test_a_symlink_pointing_out_is_refused(tree):
    link = tree["coll"] / "videos" / "SiteA" / "0002.mp4"
    os.symlink(tree["secret"], link)
    with pytest.raises(PathNotAllowedError, match="outside"):
        collection_file(tree["coll"], "videos/SiteA/0002.mp4")
    dir_link = tree["coll"] / "videos" / "Escape"
    os.symlink(tree["tmp"], dir_link)
    with pytest.raises(PathNotAllowedError, match="outside"):
        collection_folder(tree["coll"], "videos/Escape")


def test_a_symlink_staying_inside_is_followed(tree):
    link = tree["coll"] / "videos" / "alias.mp4"
    os.symlink(tree["coll"] / "videos" / "SiteA" / "0001.mp4", link)
    assert collection_file(tree["coll"], "videos/alias.mp4").read_bytes() == b"video"


def test_a_sibling_folder_with_the_same_prefix_is_outside(tree):
    sibling = tree["tmp"] / "coll2"
    sibling.mkdir()
    (sibling / "x.mp4").write_bytes(b"x")
    with pytest.raises(PathNotAllowedError):
        collection_file(tree["coll"], "../coll2/x.mp4")


@pytest.mark.parametrize("typed", ["", "   ", "a\x00b", "videos/none.mp4"])
def test_empty_nul_and_missing_paths_are_refused(tree, typed):
    with pytest.raises(PathNotAllowedError):
        collection_file(tree["coll"], typed)


def test_a_folder_is_not_a_file_and_a_file_is_not_a_folder(tree):
    with pytest.raises(PathNotAllowedError, match="not a file"):
        collection_file(tree["coll"], "videos")
    with pytest.raises(PathNotAllowedError, match="not a folder"):
        collection_folder(tree["coll"], "videos/SiteA/0001.mp4")


def test_several_roots_and_no_root(tree):
    inside_index = tree["index"] / "manifest.json"
    inside_index.write_text("{}")
    assert resolve_inside(inside_index, [tree["coll"], tree["index"]]) == inside_index.resolve()
    with pytest.raises(PathNotAllowedError, match="no folder"):
        resolve_inside(inside_index, [])


def test_safe_name_keeps_only_a_plain_file_name():
    assert safe_name("../../etc/passwd") == "passwd"
    assert safe_name("my queries; rm -rf ~.csv", suffix=".csv") == "my_queries__rm_-rf__.csv"
    assert safe_name("novice", suffix=".csv") == "novice.csv"
    with pytest.raises(InputError):
        safe_name("../..")


def _png(width: int = 8, height: int = 6) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((height, width, 3), 90, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def test_an_uploaded_image_is_decoded_and_a_bad_one_is_named():
    image = read_uploaded_image(_png(), "ok.png")
    assert image.shape == (6, 8, 3) and image.dtype == np.uint8
    with pytest.raises(InputError, match="bad.png: not a readable image"):
        read_uploaded_image(b"not an image at all", "bad.png")
    with pytest.raises(InputError, match="cut.png"):
        read_uploaded_image(_png()[:40], "cut.png")


def test_huge_uploads_are_refused(monkeypatch):
    import app.security as security

    monkeypatch.setattr(security, "MAX_IMAGE_BYTES", 10)
    with pytest.raises(InputError, match="larger than"):
        read_uploaded_image(_png(), "big.png")
    monkeypatch.setattr(security, "MAX_IMAGE_BYTES", 10**8)
    monkeypatch.setattr(security, "MAX_IMAGE_PIXELS", 10)
    with pytest.raises(InputError, match="too large"):
        read_uploaded_image(_png(), "many_pixels.png")


def test_uploaded_csv_must_be_utf8_text():
    assert check_uploaded_csv("\ufeffa,b\n1,2\n".encode(), "q.csv") == "a,b\n1,2\n"
    with pytest.raises(InputError, match="q.csv: not a UTF-8"):
        check_uploaded_csv(b"\xff\xfe\x00bad", "q.csv")


def test_app_sources_never_use_a_shell_or_eval():
    """Nothing typed in the app can reach a shell or an interpreter: the app's code has no such call."""
    root = Path(__file__).resolve().parents[1] / "app"
    banned = ("eval(", "exec(", "shell=True", "os.system(", "os.popen(", "pickle.load")
    offenders = [f"{path.relative_to(root)}: {word}" for path in root.rglob("*.py")
                 for word in banned if word in path.read_text()]
    assert offenders == []

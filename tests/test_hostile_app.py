"""Hostile input to the app's Index page, third pass: a folder name over 255 bytes is named, without an
uncaught OSError and without the server's paths."""
from __future__ import annotations

from pathlib import Path

import pytest

from app.security import PathNotAllowedError, collection_file, collection_folder
from tests.test_app_pages import app_env, built, click, page  # noqa: F401  (fixtures and helpers)


def test_a_name_over_255_bytes_is_refused_by_the_security_layer(tmp_path: Path) -> None:
    (tmp_path / "videos").mkdir()
    for name in ("a" * 300, "videos/" + "é" * 200):
        for check in (collection_folder, collection_file):
            with pytest.raises(PathNotAllowedError) as caught:
                check(tmp_path, name)
            assert str(tmp_path) not in str(caught.value) and "not a usable name" in str(caught.value)


def test_the_index_page_names_a_folder_name_over_255_bytes(app_env) -> None:  # noqa: F811
    collection, _ = app_env
    at = page("index_page")
    at.text_input(key="b_folder").set_value("videos/" + "x" * 300)
    click(at, "Index")
    assert not at.exception, [e.value for e in at.exception]
    errors = [e.value for e in at.error]
    assert errors and "not a usable name" in errors[0] and str(collection) not in errors[0]


def test_links_out_of_the_collection_follow_one_rule(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from app.security import ENV_OUTSIDE_LINKS

    coll, outside = tmp_path / "coll", tmp_path / "outside"
    (coll / "videos").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.mp4").write_bytes(b"x")
    os.symlink(outside / "secret.mp4", coll / "videos" / "0050.mp4")
    monkeypatch.delenv(ENV_OUTSIDE_LINKS, raising=False)
    with pytest.raises(PathNotAllowedError) as caught:
        collection_file(coll, "videos/0050.mp4")
    assert "outside the folders" in str(caught.value) and "--follow-outside-links" in str(caught.value)
    assert collection_file(coll, "videos/0050.mp4", follow_outside_links=True) == (outside / "secret.mp4").resolve()
    monkeypatch.setenv(ENV_OUTSIDE_LINKS, "1")
    assert collection_file(coll, "videos/0050.mp4") == (outside / "secret.mp4").resolve()
    with pytest.raises(PathNotAllowedError):                 # a path that climbs out is never a link
        collection_file(coll, "../outside/secret.mp4")

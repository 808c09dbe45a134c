"""Hostile index folders, third pass: entries of the wrong kind (a folder where a file belongs and the other
way round) are named, moved aside (never deleted) and rebuilt by the next `mvk index`; temp files of the root
manifest left by killed runs are removed."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from app.cli import main
from tests.test_index_cli import index_args

SITE = "Oahu_Jul2022"


@pytest.fixture(scope="module")
def collection(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mvk_tools.synth import make_collection
    return make_collection(tmp_path_factory.mktemp("coll"), sites=(SITE,), videos_per_site=1, n_frames=12,
                           size=(96, 64), fps=12.0, n_objects=2, seed=4)


@pytest.fixture(scope="module")
def built(collection: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    idx = tmp_path_factory.mktemp("built") / "idx"
    assert main(index_args(collection, idx)) == 0
    return idx


def _work_site(idx: Path) -> Path:
    from indexer.parts import SiteWork
    return SiteWork(idx, SITE).path


def _to_folder(path: Path) -> None:
    path.unlink()
    path.mkdir()
    (path / "users-notes.txt").write_text("mine")


def _to_file(path: Path) -> None:
    shutil.rmtree(path)
    path.write_text("mine")


CASES = {
    "root manifest is a folder": lambda idx: _to_folder(idx / "manifest.json"),
    "root lock is a folder": lambda idx: _to_folder(idx / ".lock"),
    "CURRENT is a folder": lambda idx: _to_folder(idx / "sites" / SITE / "CURRENT"),
    "site lock is a folder": lambda idx: _to_folder(idx / "sites" / SITE / ".lock"),
    "work lock is a folder": lambda idx: _to_folder(_work_site(idx) / "lock"),
    "site folder is a file": lambda idx: _to_file(idx / "sites" / SITE),
    "work folder of the site is a file": lambda idx: _to_file(_work_site(idx)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_an_entry_of_the_wrong_kind_is_moved_aside_and_rebuilt(case: str, collection: Path, built: Path,
                                                                tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    from search.store import open_index

    idx = tmp_path / "idx"
    shutil.copytree(built, idx)
    if not (idx / ".lock").exists():
        (idx / ".lock").write_text("")
    if not (_work_site(idx) / "lock").exists():
        (_work_site(idx) / "lock").write_text("")
    frames = len(open_index(idx).frames)
    CASES[case](idx)
    capsys.readouterr()
    assert main(index_args(collection, idx)) == 0, case
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and "moved aside" in captured.out, case
    aside = list((idx / "set-aside").iterdir())
    assert len(aside) == 1
    kept = aside[0]
    assert (kept / "users-notes.txt").read_text() == "mine" if kept.is_dir() else kept.read_text() == "mine"
    index = open_index(idx)
    assert SITE in index.shards and len(index.frames) == frames and not index.errors, case
    assert main(["check", str(idx)]) == 0


def test_stale_root_manifest_temps_are_removed(collection: Path, built: Path, tmp_path: Path) -> None:
    idx = tmp_path / "idx"
    shutil.copytree(built, idx)
    stale = idx / ".manifest.json.0123456789abcdef0123456789abcdef.tmp"
    stale.write_text("{")
    users = idx / "notes.tmp"
    users.write_text("not ours")
    assert main(index_args(collection, idx)) == 0
    assert not stale.exists() and users.exists()

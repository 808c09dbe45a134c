"""Hostile inputs to `mvk index`, third pass: bad numeric flags, impossible index folders, symbolic-link loops
and links out of the collection, a permanently dangling link, a full disk. Exit 2 with a message naming the
thing, never a traceback, and nothing indexed is lost."""
from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import pytest

from app.cli import main
from tests.test_index_cli import index_args

SITE = "Oahu_Jul2022"


@pytest.fixture(scope="module")
def collection(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mvk_tools.synth import make_collection
    return make_collection(tmp_path_factory.mktemp("coll"), sites=(SITE,), videos_per_site=2, n_frames=12,
                           size=(96, 64), fps=12.0, n_objects=2, seed=3)


def _current(index: Path, site: str = SITE) -> str:
    return (index / "sites" / site / "CURRENT").read_text()


@pytest.mark.parametrize("flag", [["--max-side", "-5"], ["--crop-margin", "-1"], ["--crop-margin", "nan"],
                                  ["--crop-margin", "inf"], ["--max-side", "big"]])
def test_bad_numeric_flags_are_refused_before_anything_is_written(collection: Path, tmp_path: Path, flag,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        main(index_args(collection, tmp_path / "idx", *flag))
    assert stop.value.code == 2
    assert flag[0] in capsys.readouterr().err
    assert not (tmp_path / "idx").exists()


def test_settings_refused_by_the_library_too(collection: Path, tmp_path: Path) -> None:
    from indexer.pipeline import index_collection
    from indexer.tasks import IndexConfig
    from search.encoder import TEST_MODEL, load_encoder
    from search.errors import InputError

    enc = load_encoder(TEST_MODEL, random_weights=True)
    for bad in (IndexConfig(objects="none", decode_max_side=-5), IndexConfig(objects="none", crop_margin=float("nan"))):
        with pytest.raises(InputError, match="decode_max_side|crop_margin"):
            index_collection(collection, tmp_path / "idx", encoder=enc, config=bad)
    assert not (tmp_path / "idx").exists()


@pytest.mark.parametrize("where", ["/proc/mvk-no-such/idx", "file", "file/below"])
def test_an_impossible_index_folder_is_named(collection: Path, tmp_path: Path, where: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "file").write_text("not an index")
    target = where if where.startswith("/") else str(tmp_path / where)
    assert main(index_args(collection, Path(target), "--objects", "none")) == 2
    err = capsys.readouterr().err
    assert f"index folder {target}" in err and "Traceback" not in err
    assert (tmp_path / "file").read_text() == "not an index"


def _hostile_copy(collection: Path, tmp_path: Path) -> Path:
    """The collection with a symbolic-link loop, a dangling link and a link to a video outside it."""
    coll = tmp_path / "coll"
    shutil.copytree(collection, coll, symlinks=True)
    site = coll / "videos" / SITE
    os.symlink("0098.mp4", site / "0097.mp4")
    os.symlink("0097.mp4", site / "0098.mp4")
    os.symlink("gone.mp4", site / "0099.mp4")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    shutil.copy(site / "0001.mp4", outside / "secret.mp4")
    os.symlink(outside / "secret.mp4", site / "0050.mp4")
    return coll


def test_links_that_loop_dangle_or_leave_the_collection(collection: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    coll = _hostile_copy(collection, tmp_path)
    idx = tmp_path / "idx"
    assert main(index_args(coll, idx)) == 0
    out = capsys.readouterr().out
    assert "0097.mp4" in out and "0098.mp4" in out and "0099.mp4" in out
    assert "0050.mp4" in out and "outside the collection" in out and "--follow-outside-links" in out
    from search.store import open_index
    index = open_index(idx)
    assert set(index.frames["video_id"]) == {"0001", "0002"}
    assert not any(str(p).startswith("/") for p in index.frames["video_path"])
    version = _current(idx)
    # rerun: nothing changed, so nothing is rewritten (the dangling link, the loop and the refused link too)
    assert main(index_args(coll, idx)) == 0
    out = capsys.readouterr().out
    assert "up to date" in out and "Traceback" not in out
    assert _current(idx) == version
    # asked for, the link out of the collection is indexed (under its own name in the collection)
    assert main(index_args(coll, idx, "--follow-outside-links")) == 0
    capsys.readouterr()
    index = open_index(idx)
    assert set(index.frames["video_id"]) == {"0001", "0002", "0050"}
    assert f"videos/{SITE}/0050.mp4" in set(index.frames["video_path"])


def test_a_full_disk_stops_cleanly_and_the_next_run_resumes(collection: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    from indexer import parts

    idx = tmp_path / "idx"
    real = parts.SiteWork.write_part
    calls = []

    def full_after_one(self, key, part, record):
        calls.append(key)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path / key))
        return real(self, key, part, record)

    monkeypatch.setattr(parts.SiteWork, "write_part", full_after_one)
    assert main(index_args(collection, idx)) == 2
    err = capsys.readouterr().err
    assert "is full" in err and "free about" in err and "run the same command again" in err
    assert "Traceback" not in err and str(idx) in err
    monkeypatch.setattr(parts.SiteWork, "write_part", real)
    assert main(index_args(collection, idx)) == 0
    out = capsys.readouterr().out
    assert "resumed" in out
    from search.store import open_index
    assert set(open_index(idx).frames["video_id"]) == {"0001", "0002"}


def test_a_full_disk_while_the_shard_is_written(collection: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    from search import store

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    idx = tmp_path / "idx"
    monkeypatch.setattr(store, "write_shard", full)
    assert main(index_args(collection, idx)) == 2
    assert "is full" in capsys.readouterr().err
    monkeypatch.undo()
    assert main(index_args(collection, idx)) == 0
    assert "2" in capsys.readouterr().out


def test_a_fifo_named_like_a_video_is_a_lasting_failure_not_a_hang(collection: Path, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    import signal

    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this system")
    coll = tmp_path / "coll"
    shutil.copytree(collection, coll)
    os.mkfifo(coll / "videos" / SITE / "0077.mp4")
    idx = tmp_path / "idx"

    def _hung(*_):
        raise TimeoutError("mvk index blocked on a FIFO")
    old = signal.signal(signal.SIGALRM, _hung)
    signal.alarm(300)
    try:
        assert main(index_args(coll, idx)) == 0
        out = capsys.readouterr().out
        assert "0077.mp4" in out and "named pipe" in out
        version = _current(idx)
        assert main(index_args(coll, idx)) == 0
        assert "up to date" in capsys.readouterr().out and _current(idx) == version
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)

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


# -- frame rows verified where they are read ---------------------------------------------------------

def _flip_in(path: Path, group: int, column: str) -> None:
    """Flip one byte in the middle of ``column``'s data in row group ``group`` of a parquet file."""
    import pyarrow.parquet as pq
    pf = pq.ParquetFile(path)
    cc = pf.metadata.row_group(group).column(pf.schema_arrow.names.index(column))
    start = cc.dictionary_page_offset if cc.has_dictionary_page else cc.data_page_offset
    at = start + cc.total_compressed_size // 2
    data = bytearray(path.read_bytes())
    data[at] ^= 0x5A
    path.write_bytes(bytes(data))


@pytest.fixture
def rows_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path, "object"]:
    """An index of 40 frames in row groups of 8 (thumbnails 'thumb-<row>'), flat vectors one per frame."""
    import numpy as np

    from search import schema, store
    from search.testing import frame_rows, object_rows

    monkeypatch.setitem(schema.ROW_GROUP_ROWS, "frames", 8)
    root = tmp_path / "idx"
    store.init_index(root, {"encoder": {"model": "hand", "dim": 40}})
    frames = frame_rows(SITE, 40, videos=4)
    frames["thumbnail"] = [f"thumb-{i}".encode() for i in range(40)]
    vectors = np.eye(40, dtype=np.float32)
    store.write_shard(root, SITE, frames, vectors, object_rows(list(range(0, 40, 4))), vectors[0:40:4], {})
    version = store.shard_folder(root, SITE)
    return root, version / "frames.parquet", vectors


def test_a_damaged_row_group_of_frame_rows_is_named_and_left_out(rows_index) -> None:
    import numpy as np

    from search import query, store
    from search.scoring import score_frames

    root, parquet, vectors = rows_index
    _flip_in(parquet, 1, "time")
    index = store.open_index(root)
    assert SITE in index.shards and len(index.frames) == 40
    assert any("row group 1 (rows 8..15)" in n for n in index.notes)
    scores = score_frames(index, vectors[10])
    assert np.isneginf(scores[8:16]).all() and np.isfinite(scores[16:]).all()
    for exact in (True, False):
        hits = query.search(index, None, vectors[10], k=40, exact=exact)
        assert not set(hits["gid"]) & set(range(8, 16)), exact
        assert len(hits) == 32 and set(hits["time"]) <= set(index.frames["time"].iloc[np.r_[0:8, 16:40]])
    best = query.search(index, None, vectors[20], k=1)
    assert int(best["gid"].iloc[0]) == 20 and best["video_id"].iloc[0] == index.frames["video_id"].iloc[20]
    assert index.thumbnails([3, 9, 20]) == [b"thumb-3", b"", b"thumb-20"]


def test_a_damaged_thumbnail_group_is_named_and_the_rest_served(rows_index) -> None:
    from search import store

    root, parquet, _ = rows_index
    _flip_in(parquet, 2, "thumbnail")
    index = store.open_index(root)
    assert not index.notes or not any("row group" in n for n in index.notes)
    assert index.thumbnails([0, 16, 17, 30]) == [b"thumb-0", b"", b"", b"thumb-30"]
    assert any("row group 2 (rows 16..23)" in n and "thumbnail" in n for n in index.shards[SITE].damage)


def test_an_undamaged_index_reads_as_before(rows_index) -> None:
    from search import store

    root, _, _ = rows_index
    index = store.open_index(root)
    assert index.shards[SITE].left_out is None and index.thumbnails(range(40))[39] == b"thumb-39"
    assert "row_groups" in index.shards[SITE].manifest


def test_mvk_check_looks_at_the_work_folder(built: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    idx = tmp_path / "idx"
    shutil.copytree(built, idx)
    assert main(["check", str(idx)]) == 0
    assert ".work" not in capsys.readouterr().out.replace(f"{idx / '.work'})", "")
    work = _work_site(idx)
    part = sorted(work.glob("*.npz"))[0]
    data = bytearray(part.read_bytes())
    data[len(data) // 2] ^= 0xFF
    part.write_bytes(bytes(data))
    (work / "pending.json").write_text("{}")
    assert main(["check", str(idx)]) == 0                       # the shards are sound: exit 0, with notes
    out = capsys.readouterr().out
    assert f"{part}: does not match the checksum" in out and "recomputed by the next mvk index" in out
    assert "rebuild of this site is unfinished" in out

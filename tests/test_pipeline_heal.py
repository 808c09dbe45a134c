"""Failures that must heal (issue 15): transient failures are retried on every run until they succeed, only
lasting decoder errors on an unchanged file are remembered, and a damaged part is recomputed alone."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.test_pipeline import SITES, Recorder, _config, _index, coll, collection, encoder, extractor  # noqa: F401

CONFIG = _config(objects="none")


def _video_ids(root: Path, site: str) -> list[str]:
    from search.store import open_index
    return sorted(set(open_index(root).shards[site].frames["video_id"]))


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a chmod 000 file anyway")
def test_unreadable_video_is_retried_after_it_is_fixed(coll, tmp_path, encoder) -> None:
    video = coll / "videos" / SITES[0] / "0002.mp4"
    root = tmp_path / "idx"
    video.chmod(0)
    try:
        first = _index(coll, root, encoder, None, config=CONFIG, sites=[SITES[0]])
    finally:
        video.chmod(0o644)
    assert [e[1] for e in first.errors] == [f"videos/{SITES[0]}/0002.mp4"]
    rec = Recorder()
    second = _index(coll, root, encoder, None, config=CONFIG, sites=[SITES[0]], progress=rec)
    assert second.sites[0].status == "written" and not second.errors
    assert [v.status for v in rec.finished] == ["resumed", "indexed"]
    assert _video_ids(root, SITES[0]) == ["0001", "0002"]


def test_video_that_vanishes_while_read_is_retried_when_back(coll, tmp_path, encoder, monkeypatch) -> None:
    """Stat'ed by the plan, gone when the decoder opens it (moved away and back, same size and mtime)."""
    import mvk_tools.video as video
    path = coll / "videos" / SITES[0] / "0002.mp4"
    aside = tmp_path / "aside.mp4"
    real = video.iter_frames

    def vanishing(p, **kw):
        if Path(p).name == "0002.mp4" and path.exists():
            shutil.move(path, aside)
        return real(p, **kw)
    monkeypatch.setattr(video, "iter_frames", vanishing)
    root = tmp_path / "idx"
    first = _index(coll, root, encoder, None, config=CONFIG, sites=[SITES[0]])
    assert [e[1] for e in first.errors] == [f"videos/{SITES[0]}/0002.mp4"]
    assert "retried next run" in first.errors[0][2]
    monkeypatch.setattr(video, "iter_frames", real)
    shutil.move(aside, path)                       # back, with the size and mtime the plan saw
    again = Recorder()
    second = _index(coll, root, encoder, None, config=CONFIG, sites=[SITES[0]], progress=again)
    assert second.sites[0].status == "written" and not second.errors
    assert [v.status for v in again.finished] == ["resumed", "indexed"]
    assert _video_ids(root, SITES[0]) == ["0001", "0002"]


def test_failure_records_of_older_runs_are_retried_once(collection, tmp_path, encoder) -> None:
    """A failure recorded before lasting and passing failures were told apart is not trusted."""
    import json
    root = tmp_path / "idx"
    _index(collection, root, encoder, None, config=CONFIG, sites=[SITES[0]])
    done = sorted((root / ".work").rglob("*0002*.done.json"))[0]
    rec = json.loads(done.read_text())
    done.write_text(json.dumps({**rec, "error": "Permission denied", "frames": 0, "objects": 0}))
    shutil.rmtree(root / "sites" / SITES[0])                     # the shard is gone: the site must be written
    again = Recorder()
    result = _index(collection, root, encoder, None, config=CONFIG, sites=[SITES[0]], progress=again)
    assert not result.errors and [v.status for v in again.finished] == ["resumed", "indexed"]


@pytest.mark.parametrize("victim", ["npz", "frames.parquet"])
def test_damaged_part_is_discarded_and_only_its_video_recomputed(collection, tmp_path, encoder, victim) -> None:
    from tests.test_pipeline import Kill
    root = tmp_path / "idx"
    with pytest.raises(Kill):                      # the first video's part is committed, the site not written
        _index(collection, root, encoder, None, config=CONFIG, sites=[SITES[0]], progress=Recorder(kill_after=1))
    part = sorted((root / ".work").rglob(f"*0001*.{victim}"))[0]
    data = bytearray(part.read_bytes())
    data[len(data) // 2: len(data) // 2 + 64] = os.urandom(64)   # same size, other bytes
    part.write_bytes(bytes(data))
    rec = Recorder()
    result = _index(collection, root, encoder, None, config=CONFIG, sites=[SITES[0]], progress=rec)
    assert result.sites[0].status == "written" and not result.errors
    assert [v.status for v in rec.finished] == ["indexed", "indexed"]
    assert "damaged" in (rec.finished[0].note or "") and rec.finished[1].note is None
    assert _video_ids(root, SITES[0]) == ["0001", "0002"]
    assert len(result.sites[0].videos) == 2 and result.sites[0].frames == 8

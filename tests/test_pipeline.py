"""The indexing pipeline end to end on small synthetic collections with tiny random models: counts, resume
after a kill, atomic rebuild, corrupt videos, model mismatch, untouched shards, changed sources."""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from indexer.pipeline import IndexConfig, IndexResult, index_collection
from indexer.progress import Progress
from search.errors import ModelMismatchError

SITES = ("Oahu_Jul2022", "PhuQuoc1_Jun2022")
EVERY = 0.5                      # 24 frames at 12 fps: 4 sampled frames per video


class Kill(BaseException):
    """Stands for the process being killed: nothing in the pipeline may catch it."""


class Recorder(Progress):
    """Remembers every finished video; optionally raises after the n-th one, or calls a hook."""

    def __init__(self, kill_after: int | None = None, hook=None):
        self.finished = []
        self.kill_after, self.hook = kill_after, hook

    def video_finished(self, result) -> None:
        self.finished.append(result)
        if self.hook is not None:
            self.hook(result)
        if self.kill_after is not None and len(self.finished) >= self.kill_after:
            raise Kill()


@pytest.fixture(scope="module")
def collection(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mvk_tools.synth import make_collection
    return make_collection(tmp_path_factory.mktemp("coll"), sites=SITES, videos_per_site=2, n_frames=24,
                           size=(96, 64), fps=12.0, n_objects=2, seed=3)


@pytest.fixture
def coll(collection: Path, tmp_path: Path) -> Path:
    """A private copy, for tests that change or add files."""
    return Path(shutil.copytree(collection, tmp_path / "coll"))


@pytest.fixture(scope="module")
def encoder():
    from search.encoder import TEST_MODEL, load_encoder
    return load_encoder(TEST_MODEL, None, random_weights=True)


@pytest.fixture(scope="module")
def extractor():
    from indexer.backbone import load_backbone
    return load_backbone(TEST_BACKBONE, random_weights=True)


def _config(**kw) -> IndexConfig:
    from indexer.segment import SegmentParams
    seg = SegmentParams(short_side=64, key_stride=2, window=4, chunk=8)
    return replace(IndexConfig(every_seconds=EVERY, segment=seg, batch_size=4, decode_max_side=None), **kw)


def _index(collection: Path, root: Path, encoder, extractor, **kw) -> IndexResult:
    config = kw.pop("config", _config())
    return index_collection(collection, root, encoder=encoder, extractor=extractor, config=config, **kw)


def _site_files(root: Path, site: str) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in sorted((root / "sites" / site).rglob("*")) if p.is_file()}


TEST_BACKBONE = "color"   # indexer.color_extractor: colour statistics, no weights


def test_end_to_end_counts_objects_and_normalised_vectors(collection, tmp_path, encoder, extractor) -> None:
    from search import rle
    from search.store import open_index
    root = tmp_path / "idx"
    result = _index(collection, root, encoder, extractor)
    assert result.ok and not result.errors
    assert [s.status for s in result.sites] == ["written", "written"]
    assert result.frames_computed == 16 and all(result.seconds[k] > 0 for k in ("decode", "segmentation",
                                                                                 "frame_embedding", "write"))
    index = open_index(root)
    assert not index.errors and set(index.shards) == set(SITES)
    assert len(index.frames) == 16
    frames = index.frames
    assert frames.groupby(["site", "video_id"]).size().tolist() == [4, 4, 4, 4]
    assert not frames.duplicated(["site", "video_id", "frame_index"]).any()
    assert (frames["width"] == 96).all() and (frames["height"] == 64).all()
    assert all(t[:2] == b"\xff\xd8" for t in index.thumbnails(frames["gid"]))
    assert (frames["date"] == "2022-07").sum() == 8
    for site, shard in index.shards.items():
        assert len(shard.objects) > 0
        assert shard.objects["frame_row"].between(0, len(shard.frames) - 1).all()
        assert {"level", "track_id", "mask_rle"} <= set(shard.objects.columns)
        mask = rle.decode(shard.objects["mask_rle"].iloc[0])
        assert mask.shape == (64, 96) and mask.any()
        obj = shard.objects
        assert ((obj["x0"] >= 0) & (obj["x1"] <= 96) & (obj["x0"] < obj["x1"]) & (obj["y1"] <= 64)).all()
        for index_ in (shard.frame_index, shard.object_index):
            vectors = index_.reconstruct_n(0, index_.ntotal)
            assert vectors.shape[1] == encoder.dim
            np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=2e-3)
        assert shard.object_index.ntotal == len(shard.objects)
    manifest = index.manifest
    assert manifest["indexing"]["objects"] == "pool"
    assert manifest["indexing"]["backbone"] == extractor.identity()
    assert manifest["encoder"]["random_weights"] is True and manifest["encoder"]["fit"] == "letterbox"
    assert manifest["segmentation"]["tau"] == 1.0


def test_frame_only_and_crop_modes(collection, tmp_path, encoder, extractor) -> None:
    from search.store import open_index
    none = _index(collection, tmp_path / "none", encoder, None, config=_config(objects="none"),
                  sites=[SITES[0]])
    assert none.ok and none.seconds["segmentation"] == 0 and none.sites[0].objects == 0
    crop = _index(collection, tmp_path / "crop", encoder, extractor, config=_config(objects="crop"),
                  sites=[SITES[0]])
    shard = open_index(tmp_path / "crop").shards[SITES[0]]
    assert crop.sites[0].objects == len(shard.objects) > 0
    assert shard.object_index.ntotal == len(shard.objects)


def test_resume_after_kill_no_duplicates_and_no_recompute(collection, tmp_path, encoder, extractor) -> None:
    from search.store import open_index
    root = tmp_path / "idx"
    with pytest.raises(Kill):
        _index(collection, root, encoder, extractor, progress=Recorder(kill_after=1))
    assert not (root / "sites" / SITES[0] / "CURRENT").exists()             # nothing half-visible
    rec = Recorder()
    result = _index(collection, root, encoder, extractor, progress=rec)
    assert [v.status for v in rec.finished] == ["resumed", "indexed", "indexed", "indexed"]
    assert result.frames_computed == 12
    frames = open_index(root).frames
    assert len(frames) == 16 and not frames.duplicated(["site", "video_id", "frame_index"]).any()
    again = Recorder()
    assert [s.status for s in _index(collection, root, encoder, extractor, progress=again).sites] == \
        ["up-to-date", "up-to-date"]
    assert again.finished == []


def test_kill_between_part_files_and_commit_redoes_that_video(collection, tmp_path, encoder, extractor,
                                                              monkeypatch) -> None:
    from indexer.parts import SiteWork
    from search.store import open_index
    root = tmp_path / "idx"
    original = SiteWork.commit

    def dying_commit(self, key, record):
        raise Kill()
    monkeypatch.setattr(SiteWork, "commit", dying_commit)
    with pytest.raises(Kill):
        _index(collection, root, encoder, extractor, sites=[SITES[0]])
    monkeypatch.setattr(SiteWork, "commit", original)
    rec = Recorder()
    _index(collection, root, encoder, extractor, sites=[SITES[0]], progress=rec)
    assert [v.status for v in rec.finished] == ["indexed", "indexed"]
    assert len(open_index(root).frames) == 8


def test_rebuild_is_atomic(collection, tmp_path, encoder, extractor) -> None:
    from search.store import open_index
    root = tmp_path / "idx"
    _index(collection, root, encoder, extractor, sites=[SITES[0]])
    before = open_index(root)
    built = before.shards[SITES[0]].manifest["built_at"]
    seen = []

    def check_old_is_served(result) -> None:
        now = open_index(root)
        seen.append((len(now.frames), now.shards[SITES[0]].manifest["built_at"]))
    with pytest.raises(Kill):         # a rebuild that fails half-way
        _index(collection, root, encoder, extractor, sites=[SITES[0]], rebuild=True,
               progress=Recorder(kill_after=1, hook=check_old_is_served))
    assert seen == [(8, built)]
    after_failure = open_index(root)
    assert len(after_failure.frames) == 8 and after_failure.shards[SITES[0]].manifest["built_at"] == built
    rec = Recorder()                  # resumes the interrupted rebuild: not up to date, first video kept
    result = _index(collection, root, encoder, extractor, sites=[SITES[0]], progress=rec)
    assert result.sites[0].status == "written"
    assert [v.status for v in rec.finished] == ["resumed", "indexed"]
    assert len(open_index(root).frames) == 8


def test_corrupt_video_is_reported_and_the_rest_indexed(coll, tmp_path, encoder, extractor) -> None:
    from search.store import open_index
    bad = coll / "videos" / SITES[0] / "0003.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(2000))
    root = tmp_path / "idx"
    result = _index(coll, root, encoder, extractor, sites=[SITES[0]])
    assert result.ok and result.sites[0].status == "written"
    assert [e[1] for e in result.errors] == [f"videos/{SITES[0]}/0003.mp4"]
    shard = open_index(root).shards[SITES[0]]
    assert len(shard.frames) == 8
    assert f"videos/{SITES[0]}/0003.mp4" in shard.manifest["errors"]
    rec = Recorder()                  # a lasting input error is not retried until the file changes
    assert _index(coll, root, encoder, extractor, sites=[SITES[0]], progress=rec).sites[0].status == "up-to-date"


class _OtherModel:
    """The same tiny encoder under another identity, as a different model would have."""

    def __init__(self, encoder):
        self._e = encoder

    def __getattr__(self, name):
        return getattr(self._e, name)

    def identity(self, **kw) -> dict:
        return {**self._e.identity(**kw), "model": "some-other-model"}


def test_other_model_or_settings_refused(collection, tmp_path, encoder, extractor) -> None:
    root = tmp_path / "idx"
    _index(collection, root, encoder, extractor, sites=[SITES[0]])
    files = _site_files(root, SITES[0])
    with pytest.raises(ModelMismatchError, match="some-other-model"):
        _index(collection, root, _OtherModel(encoder), extractor, sites=[SITES[1]])
    with pytest.raises(ModelMismatchError, match="objects"):
        _index(collection, root, encoder, extractor, config=_config(objects="crop"), sites=[SITES[1]])
    assert _site_files(root, SITES[0]) == files
    assert not (root / "sites" / SITES[1]).exists()


def test_new_site_touches_no_other_shard_and_changed_video_is_redone(coll, tmp_path, encoder,
                                                                     extractor) -> None:
    from search.store import open_index
    root = tmp_path / "idx"
    _index(coll, root, encoder, extractor, sites=[SITES[0]])
    files = _site_files(root, SITES[0])
    assert _index(coll, root, encoder, extractor, sites=list(SITES)).sites[0].status == "up-to-date"
    assert _site_files(root, SITES[0]) == files
    assert set(open_index(root).shards) == set(SITES)
    video = coll / "videos" / SITES[1] / "0002.mp4"
    st = video.stat()
    os.utime(video, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    rec = Recorder()
    result = _index(coll, root, encoder, extractor, progress=rec)
    assert [s.status for s in result.sites] == ["up-to-date", "written"]
    assert [v.status for v in rec.finished] == ["resumed", "indexed"]
    assert _site_files(root, SITES[0]) == files
    assert len(open_index(root).frames) == 16


def test_decode_error_mid_video_and_unexpected_errors(collection, tmp_path, encoder, extractor,
                                                      monkeypatch) -> None:
    import mvk_tools.video as video
    from search.store import open_index
    real = video.iter_frames
    calls = {"boom": 0}

    def flaky(path, **kw):
        name = Path(path).name
        for i, frame in enumerate(real(path, **kw)):
            if name == "0001.mp4" and i == 2:
                raise video.VideoError(f"{path}: truncated at frame {frame.index}")
            if name == "0002.mp4" and i == 1 and calls["boom"] == 0:
                calls["boom"] += 1
                raise RuntimeError("out of memory")
            yield frame
    monkeypatch.setattr(video, "iter_frames", flaky)
    root = tmp_path / "idx"
    result = _index(collection, root, encoder, extractor, sites=[SITES[0]])
    assert result.sites[0].status == "failed" and not result.ok     # both videos failed: no shard
    errors = [v.error for v in result.sites[0].videos]
    assert "truncated at frame" in errors[0] and "0001.mp4" in errors[0]
    assert errors[1] == "RuntimeError: out of memory"
    assert not (root / "sites" / SITES[0]).exists()
    rec = Recorder()                  # the input error is remembered, the unexpected one is retried
    result = _index(collection, root, encoder, extractor, sites=[SITES[0]], progress=rec)
    assert [v.status for v in rec.finished] == ["failed", "indexed"]
    shard = open_index(root).shards[SITES[0]]
    assert shard.frames["video_id"].tolist() == ["0002"] * 4
    assert list(shard.manifest["errors"]) == [f"videos/{SITES[0]}/0001.mp4"]


def test_selected_frames_index_type_change_and_site_lock(collection, tmp_path, encoder) -> None:
    from indexer.parts import SiteWork
    from search.store import open_index
    root = tmp_path / "idx"
    config = _config(objects="none", selected_frames=True)
    _index(collection, root, encoder, None, config=config, sites=[SITES[0]])
    frames = open_index(root).frames
    true = [s["frame"] for v in ("0001", "0002") for s in json.loads(
        (collection / "information" / "metadata" / SITES[0] / f"{v}.json").read_text())["selected_frames"]]
    assert frames["frame_index"].tolist() == true                    # each selected image found at its frame
    rec = Recorder()                  # another index type: the shard is rewritten from the parts, not recomputed
    result = _index(collection, root, encoder, None, config=replace(config, index_type="hnsw"),
                    sites=[SITES[0]], progress=rec)
    assert result.sites[0].status == "written" and [v.status for v in rec.finished] == ["resumed", "resumed"]
    assert open_index(root).shards[SITES[0]].manifest["index_type"] == "hnsw"
    with SiteWork(root, SITES[0]).lock():
        result = _index(collection, root, encoder, None, config=config, sites=[SITES[0]], rebuild=True)
    assert result.sites[0].status == "failed" and "another process" in result.sites[0].error


def test_damaged_shard_is_rewritten_from_parts(collection, tmp_path, encoder) -> None:
    from search import store
    from search.store import open_index
    root = tmp_path / "idx"
    config = _config(objects="none")
    _index(collection, root, encoder, None, config=config, sites=[SITES[0]])
    faiss_file = store.shard_folder(root, SITES[0]) / "frames.faiss"
    faiss_file.write_bytes(faiss_file.read_bytes()[:40])             # truncated behind our back
    assert SITES[0] in open_index(root).errors
    rec = Recorder()
    result = _index(collection, root, encoder, None, config=config, sites=[SITES[0]], progress=rec)
    assert result.sites[0].status == "written" and [v.status for v in rec.finished] == ["resumed", "resumed"]
    assert any("repaired" in n and "frames.faiss" in n for n in result.sites[0].notes)
    index = open_index(root)
    assert not index.errors and len(index.frames) == 8

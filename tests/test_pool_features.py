"""`mvk index --objects pool | pool-raw --dense-size PX`: the dense feature variant is recorded in the root
manifest, an index is never extended with another variant or dense size, bad sizes and towers without a
ViT block are one-line errors (exit 2), and an index built before the variant was recorded reads as pool-raw."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from app.cli import main
from search.encoder import TEST_MODEL
from tests.test_index_cli import index_args

SITES = ("Oahu_Jul2022", "PhuQuoc1_Jun2022")


@pytest.fixture(scope="module")
def collection(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mvk_tools.synth import make_collection
    return make_collection(tmp_path_factory.mktemp("coll"), sites=SITES, videos_per_site=1, n_frames=12,
                           size=(96, 64), fps=12.0, n_objects=2, seed=11)


def _index(collection: Path, index: Path, *extra: str, model: str = TEST_MODEL) -> list[str]:
    return index_args(collection, index, *extra, model=model)


def _last_error(capsys) -> str:
    return capsys.readouterr().err.strip().splitlines()[-1]


def _vectors(index: Path, table: str) -> np.ndarray:
    from search.store import open_index
    return np.asarray(open_index(index).shards[SITES[0]].vectors(table), dtype=np.float32)


def test_manifest_records_the_variant_and_mixing_is_refused(collection, tmp_path, capsys) -> None:
    pool, raw = tmp_path / "pool", tmp_path / "raw"
    assert main(_index(collection, pool, "--site", SITES[0])) == 0
    manifest = json.loads((pool / "manifest.json").read_text())
    assert manifest["indexing"]["objects"] == "pool"
    assert manifest["indexing"]["pool_features"] == {"variant": "clearclip", "size": 64}
    assert main(_index(collection, raw, "--site", SITES[0], "--objects", "pool-raw")) == 0
    manifest = json.loads((raw / "manifest.json").read_text())
    assert manifest["indexing"]["pool_features"] == {"variant": "raw", "size": 64}
    assert not np.allclose(_vectors(pool, "objects"), _vectors(raw, "objects"), atol=1e-2)
    capsys.readouterr()

    assert main(_index(collection, pool, "--site", SITES[1], "--objects", "pool-raw")) == 2
    last = _last_error(capsys)
    assert last.startswith("mvk index: error:") and "--objects: index has 'pool', you asked 'pool-raw'" in last
    assert main(_index(collection, pool, "--site", SITES[1], "--dense-size", "128")) == 2
    last = _last_error(capsys)
    assert "--dense-size: index has 64, you asked 128" in last and "--objects" not in last
    assert not (pool / "sites" / SITES[1]).exists()                    # nothing written by a refused run
    assert main(_index(collection, pool, "--site", SITES[1], "--dense-size", "64")) == 0   # the same size


def test_larger_dense_size_builds_and_is_recorded(collection, tmp_path, capsys) -> None:
    idx = tmp_path / "big"
    assert main(_index(collection, idx, "--site", SITES[0], "--dense-size", "128")) == 0
    manifest = json.loads((idx / "manifest.json").read_text())
    assert manifest["indexing"]["pool_features"] == {"variant": "clearclip", "size": 128}
    assert len(_vectors(idx, "objects")) > 0
    from indexer.settings import settings_from_manifest
    assert settings_from_manifest(manifest, random_weights=True).config.dense_size == 128


@pytest.mark.parametrize("extra, message", [
    (("--dense-size", "100"), "dense size 100 px is not a positive multiple of the patch size of 'mvk-tiny-vit' (16 px)"),
    (("--objects", "crop", "--dense-size", "128"), "--dense-size applies to --objects pool and pool-raw, not 'crop'"),
])
def test_bad_dense_size_is_a_one_line_error(collection, tmp_path, capsys, extra, message) -> None:
    idx = tmp_path / "idx"
    assert main(_index(collection, idx, "--site", SITES[0], *extra)) == 2
    last = _last_error(capsys)
    assert last.startswith("mvk index: error:") and message in last
    assert not (idx / "manifest.json").exists()


@pytest.mark.parametrize("objects", ["pool", "pool-raw"])
def test_resnet_tower_names_the_modes_that_work(collection, tmp_path, capsys, objects) -> None:
    idx = tmp_path / "rn"
    assert main(_index(collection, idx, "--site", SITES[0], "--objects", objects, model="mvk-tiny-rn")) == 2
    last = _last_error(capsys)
    assert f"object mode {objects!r}" in last and "ModifiedResNet" in last and "--objects crop" in last
    assert not (idx / "manifest.json").exists()
    assert main(_index(collection, idx, "--site", SITES[0], "--objects", "crop", model="mvk-tiny-rn")) == 0


def test_an_index_from_before_the_variant_reads_as_pool_raw(collection, tmp_path, capsys) -> None:
    idx = tmp_path / "old"
    assert main(_index(collection, idx, "--site", SITES[0], "--objects", "pool-raw")) == 0
    path = idx / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["indexing"]["objects"] = "pool"                    # what an older version wrote
    del manifest["indexing"]["pool_features"]
    path.write_text(json.dumps(manifest))
    from indexer.settings import settings_from_manifest
    assert settings_from_manifest(manifest, random_weights=True).config.objects == "pool-raw"
    capsys.readouterr()
    assert main(_index(collection, idx, "--site", SITES[1], "--objects", "pool")) == 2
    assert "--objects: index has 'pool-raw', you asked 'pool'" in _last_error(capsys)
    assert main(_index(collection, idx, "--site", SITES[1])) == 0               # joins with what the index means


def test_pool_modes_share_the_frame_vectors(collection, tmp_path) -> None:
    dirs = {m: tmp_path / m for m in ("pool", "pool-raw", "crop")}
    for mode, idx in dirs.items():
        assert main(_index(collection, idx, "--site", SITES[0], "--objects", mode)) == 0
    frames = {m: _vectors(d, "frames") for m, d in dirs.items()}
    np.testing.assert_allclose(frames["pool"], frames["crop"], atol=2e-3)        # float16 on disk
    np.testing.assert_allclose(frames["pool-raw"], frames["crop"], atol=2e-3)

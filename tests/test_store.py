"""search.store: write/open round trip, atomic rewrite, broken shards skipped, model mismatch refused."""
import json
import shutil

import numpy as np
import pandas as pd
import pytest

from search import store, writer
from search.errors import IndexFormatError, InputError, ModelMismatchError
from search.testing import encoder_identity, frame_rows, object_rows, random_unit

D = 16


def make(root, site="Anilao_2019-04", n=6, seed=0, **kw):
    frames = frame_rows(site, n, videos=2)
    objects = object_rows([0, 0, n // 2, n - 1, 1])
    fv = random_unit(n, D, seed)
    ov = random_unit(len(objects), D, seed + 100)
    store.write_shard(root, site, frames, fv, objects, ov, {"sources": {}}, **kw)
    return frames, objects, fv, ov


@pytest.fixture
def root(tmp_path):
    r = tmp_path / "index"
    store.init_index(r, {"encoder": encoder_identity(D), "segmentation": {"tau": 1.0}})
    return r


def test_round_trip(root):
    frames, objects, fv, ov = make(root)
    _, _, fv2, _ = make(root, "Bali", n=4, seed=5)
    idx = store.open_index(root, expect=encoder_identity(D))
    assert not idx.errors and list(idx.shards) == ["Anilao_2019-04", "Bali"]
    assert list(idx.frames["gid"]) == list(range(10))
    sh = idx.shards["Anilao_2019-04"]
    assert np.allclose(sh.vectors("frames").astype(np.float32), fv, atol=1e-3)
    # objects are stored sorted by frame row, their vectors with them
    assert list(sh.objects["frame_row"]) == [0, 0, 1, 3, 5]
    assert np.allclose(sh.vectors("objects").astype(np.float32), ov[[0, 1, 4, 2, 3]], atol=1e-3)
    assert sh.objects["mask_rle"].iloc[2] == objects["mask_rle"].iloc[4]
    bali = idx.objects[idx.objects["site"] == "Bali"]
    assert list(bali["frame_gid"]) == [6, 6, 7, 8, 9]
    assert np.allclose(idx.shards["Bali"].vectors("frames").astype(np.float32), fv2, atol=1e-3)
    m = json.loads((root / "manifest.json").read_text())
    assert m["shards"]["Bali"]["frames"] == 4 and m["encoder"]["dim"] == D
    sm = json.loads((store.shard_folder(root, "Bali") / "manifest.json").read_text())
    assert sm["counts"] == {"frames": 4, "objects": 5} and sm["sources"] == {}


def test_vectors_are_normalised_on_write(root):
    frames = frame_rows("S", 3)
    fv = random_unit(3, D) * 7
    store.write_shard(root, "S", frames, fv, object_rows([]), np.zeros((0, D)), {})
    v = store.open_index(root).shards["S"].vectors("frames").astype(np.float32)
    assert np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-3)


def test_failed_rewrite_keeps_old_shard(root, monkeypatch):
    _, _, fv, _ = make(root)
    real = writer._write_faiss
    calls = []

    def failing(index, path):
        calls.append(path)
        if path.name == "objects.faiss":
            raise OSError("disk full (simulated)")
        real(index, path)

    monkeypatch.setattr(writer, "_write_faiss", failing)
    with pytest.raises(OSError, match="disk full"):
        make(root, n=9, seed=42)
    assert calls                                          # the new shard was half written
    idx = store.open_index(root)
    assert not idx.errors and len(idx.frames) == 6
    assert np.allclose(idx.shards["Anilao_2019-04"].vectors("frames").astype(np.float32), fv, atol=1e-3)
    assert [p.name for p in (root / "sites").iterdir()] == ["Anilao_2019-04"]   # no temporary left over
    monkeypatch.setattr(writer, "_write_faiss", real)
    make(root, n=9, seed=42)
    assert len(store.open_index(root).frames) == 9


def test_swap_interrupted_under_the_old_layout_is_restored_by_recover(root):
    make(root)
    sites = root / "sites"
    store.remove_shard(root, "Anilao_2019-04")
    make(root, "Anilao_2019-04-North")
    legacy = sites / ".old-Anilao_2019-04-0123456789ab"    # a writer of the old layout stopped mid-swap
    legacy.mkdir()
    folder = store.shard_folder(root, "Anilao_2019-04-North")
    for name in store.SHARD_FILES:
        shutil.copy(folder / name, legacy / name)
    manifest = json.loads((legacy / "manifest.json").read_text())
    manifest["files"] = {n: (legacy / n).stat().st_size for n in store.DATA_FILES}
    manifest["site"] = "Anilao_2019-04"
    (legacy / "manifest.json").write_text(json.dumps(manifest))
    (sites / ".tmp-Anilao_2019-04-North-0123456789ab").mkdir()
    assert "Anilao_2019-04" not in store.open_index(root).shards
    notes = store.recover(root)
    assert any("restored" in n for n in notes) and any("migrated" in n for n in notes)
    assert sorted(p.name for p in sites.iterdir()) == ["Anilao_2019-04", "Anilao_2019-04-North"]
    idx = store.open_index(root)
    assert not idx.errors and len(idx.shards["Anilao_2019-04"].frames) == 6


@pytest.mark.parametrize("damage", ["truncate-faiss", "garbage-parquet", "delete-objects", "delete-folder",
                                    "garbage-manifest"])
def test_broken_shard_is_skipped_with_reason(root, damage):
    make(root, "A")
    make(root, "B")
    d = store.shard_folder(root, "B")
    if damage == "truncate-faiss":
        data = (d / "frames.faiss").read_bytes()
        (d / "frames.faiss").write_bytes(data[: len(data) // 2])
    elif damage == "garbage-parquet":
        size = (d / "frames.parquet").stat().st_size
        (d / "frames.parquet").write_bytes(b"x" * size)
    elif damage == "delete-objects":
        (d / "objects.faiss").unlink()
    elif damage == "delete-folder":
        shutil.rmtree(d.parent)
    else:
        (d / "manifest.json").write_text("{not json")
    idx = store.open_index(root)
    assert list(idx.shards) == ["A"] and len(idx.frames) == 6
    assert set(idx.errors) == {"B"} and "B" in idx.errors["B"]


def test_corrupt_faiss_same_size_is_caught(root):
    make(root, "A")
    p = store.shard_folder(root, "A") / "objects.faiss"
    p.write_bytes(b"\0" * p.stat().st_size)
    idx = store.open_index(root)
    assert "objects.faiss" in idx.errors["A"]


def test_model_mismatch(root):
    make(root)
    other = encoder_identity(D, model="ViT-B-16")
    with pytest.raises(ModelMismatchError) as err:
        store.open_index(root, expect=other)
    assert "hand-made" in str(err.value) and "ViT-B-16" in str(err.value)
    with pytest.raises(ModelMismatchError):
        store.init_index(root, {"encoder": other})
    with pytest.raises(ModelMismatchError, match="segmentation"):
        store.init_index(root, {"encoder": encoder_identity(D), "segmentation": {"tau": 1.6}})
    assert store.init_index(root, {"encoder": encoder_identity(D)})["shards"]


def test_not_an_index(tmp_path):
    with pytest.raises(IndexFormatError):
        store.open_index(tmp_path / "nothing")
    with pytest.raises(IndexFormatError, match="manifest"):
        store.open_index(tmp_path)
    (tmp_path / "manifest.json").write_text("[]")
    with pytest.raises(IndexFormatError):
        store.open_index(tmp_path)
    with pytest.raises(IndexFormatError, match="init_index"):
        store.write_shard(tmp_path / "x", "S", frame_rows("S", 1), random_unit(1, D), object_rows([]),
                          np.zeros((0, D)), {})


def test_bad_rows_refused(root):
    f = frame_rows("S", 3)
    with pytest.raises(InputError, match="rows"):
        store.write_shard(root, "S", f, random_unit(2, D), object_rows([]), np.zeros((0, D)), {})
    with pytest.raises(InputError, match="dimension"):
        store.write_shard(root, "S", f, random_unit(3, D + 1), object_rows([]), np.zeros((0, D)), {})
    with pytest.raises(InputError, match="frame rows outside"):
        store.write_shard(root, "S", f, random_unit(3, D), object_rows([7]), random_unit(1, D), {})
    with pytest.raises(InputError, match="lack columns"):
        store.write_shard(root, "S", f.drop(columns=["time"]), random_unit(3, D), object_rows([]),
                          np.zeros((0, D)), {})
    with pytest.raises(InputError):
        store.write_shard(root, "../evil", f, random_unit(3, D), object_rows([]), np.zeros((0, D)), {})
    with pytest.raises(InputError, match="NaN"):
        store.write_shard(root, "S", f, np.full((3, D), np.nan), object_rows([]), np.zeros((0, D)), {})


def test_small_ivf_falls_back_to_flat_with_note(root):
    make(root, index_type="ivf-flat")
    sm = store.open_index(root).shards["Anilao_2019-04"].manifest
    assert sm["tables"]["frames"]["type"] == "flat" and any("flat" in n for n in sm["notes"])


def test_remove_shard(root):
    make(root, "A")
    make(root, "B")
    store.remove_shard(root, "A")
    idx = store.open_index(root)
    assert list(idx.shards) == ["B"] and not idx.errors


def test_cuda_without_gpu_is_a_clear_error(root):
    import faiss
    if faiss.get_num_gpus() > 0:
        pytest.skip("this machine has a GPU")
    make(root)
    with pytest.raises(InputError, match="GPU"):
        store.open_index(root, device="cuda")

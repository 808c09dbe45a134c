"""Serving past memory: memory-mapped opening (the default) gives the same search and KIS scores as loading
everything; exact scoring in blocks over the stored float16 codes; thumbnails read on demand; truncated
files refused and named; the resident-memory figure."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from search import faiss_index, store
from search.query import Filters, score_frames_batch, search
from search.testing import encoder_identity, frame_rows, random_unit

D = 32
N_FRAMES = 700          # enough for IVF lists and PQ training; more than one thumbnail row group (256)


def _build(root, index_type: str, seed: int = 0):
    rng = np.random.default_rng(seed)
    store.init_index(root, {"encoder": encoder_identity(D)})
    for k, site in enumerate(("Bali_2021-05", "Oahu_2022-07")):
        n = N_FRAMES - 100 * k
        frames = frame_rows(site, n, videos=7, fps=1.0)
        frames["thumbnail"] = [bytes([k, i % 251]) + rng.bytes(int(rng.integers(0, 40))) for i in range(n)]
        rows = np.sort(rng.integers(0, n - 50, 3 * n))      # the last 50 frames have no object
        objects = pd.DataFrame({
            "frame_row": rows, "track_id": np.arange(3 * n), "level": 0, "x0": 1, "y0": 2, "x1": 5, "y1": 6,
            "area": 0.1, "is_background": rng.random(3 * n) < 0.2, "mask_rle": [f"m{j}" for j in range(3 * n)]})
        store.write_shard(root, site, frames, random_unit(n, D, seed + 2 * k), objects,
                          random_unit(3 * n, D, seed + 2 * k + 1), {}, index_type=index_type)
    return root


@pytest.fixture(scope="module", params=["flat", "ivf-flat", "ivf-pq", "hnsw"])
def built(request, tmp_path_factory):
    return request.param, _build(tmp_path_factory.mktemp(request.param) / "index", request.param)


def test_mapped_opening_gives_the_same_results_as_full_loading(built):
    kind, root = built
    mapped, loaded = store.open_index(root), store.open_index(root, mmap=False)
    assert not mapped.errors and not loaded.errors
    assert mapped.shards["Bali_2021-05"].manifest["tables"]["objects"]["type"] == kind
    use = store.memory_use(mapped)
    if use.mapped_total is not None:      # every FAISS file of every type is mapped, not loaded
        assert use.mapped_total >= 0.9 * sum(p.stat().st_size for p in root.rglob("*.faiss"))
    queries = random_unit(12, D, 99)
    a = score_frames_batch(mapped, queries, fusions=("frame", "max", "weighted"))
    b = score_frames_batch(loaded, queries, fusions=("frame", "max", "weighted"))
    for fusion in a:
        np.testing.assert_array_equal(a[fusion], b[fusion])
    for q in queries[:4]:
        for exact in (None, True, False):
            for filters in (Filters(), Filters(sites=("Oahu_2022-07",))):
                x = search(mapped, None, q, k=15, exact=exact, filters=filters)
                y = search(loaded, None, q, k=15, exact=exact, filters=filters)
                pd.testing.assert_frame_equal(x, y)


def test_block_scores_equal_the_stored_vectors_times_the_query(built):
    kind, root = built
    index = store.open_index(root)
    for n_queries in (1, faiss_index.RANGE_QUERIES, faiss_index.RANGE_QUERIES + 5):   # IVF: scanner, blocks
        queries = random_unit(n_queries, D, 5)
        for shard in index.shards.values():
            for table, faiss_idx in (("frames", shard.cpu_frame_index), ("objects", shard.cpu_object_index)):
                reference = queries @ shard.vectors(table).astype(np.float32).T
                for block in (7, 100, faiss_index.SCORE_BLOCK):
                    got = faiss_index.inner_products(faiss_idx, queries, block=block)
                    assert got.shape == reference.shape and np.isfinite(got).all()
                    np.testing.assert_allclose(got, reference, atol=2e-3 if kind.startswith("ivf") else 1e-5)


def test_scores_of_some_ids_equal_the_stored_vectors_times_the_query(built):
    kind, root = built
    shard = store.open_index(root).shards["Oahu_2022-07"]
    q = random_unit(1, D, 11)[0]
    for table, faiss_idx in (("frames", shard.cpu_frame_index), ("objects", shard.cpu_object_index)):
        stored = shard.vectors(table).astype(np.float32)
        for many in (3, 150):           # IVF: few ids are reconstructed, more are picked out by a scan
            ids = np.unique(np.random.default_rng(1).integers(0, len(stored), many))
            got = faiss_index.scores_of_ids(faiss_idx, ids, q)
            assert got.dtype == np.float32 and got.shape == ids.shape
            np.testing.assert_allclose(got, stored[ids] @ q, atol=2e-3 if kind.startswith("ivf") else 1e-5)
    assert faiss_index.scores_of_ids(shard.cpu_frame_index, np.zeros(0, np.int64), q).shape == (0,)


@pytest.mark.parametrize("kind", ["ivf-flat", "ivf-pq"])
def test_ivf_files_carry_their_direct_map(tmp_path, kind):
    """Reconstructing vectors by id must not make FAISS walk every list of a mapped file to build the map."""
    import faiss
    root = _build(tmp_path / "index", kind)
    shard = store.open_index(root).shards["Bali_2021-05"]
    for faiss_idx in (shard.cpu_frame_index, shard.cpu_object_index):
        assert faiss.extract_index_ivf(faiss_idx).direct_map.type == faiss.DirectMap.Array


def test_exact_search_ranks_by_the_reconstructed_vectors(built):
    _, root = built
    index = store.open_index(root)
    q = random_unit(1, D, 7)[0]
    found = search(index, None, q, k=10, fusion="frame", exact=True)
    fv = np.concatenate([s.vectors("frames").astype(np.float32) for s in index.shards.values()])
    expected = np.argsort(-(fv @ q), kind="stable")[:10]
    assert set(found["gid"]) == set(expected) or np.allclose(np.sort(found["frame_score"])[::-1],
                                                              np.sort(fv @ q)[::-1][:10], atol=1e-3)


def test_thumbnails_are_read_on_demand(tmp_path):
    root = _build(tmp_path / "index", "flat", seed=3)
    mapped, loaded = store.open_index(root), store.open_index(root, mmap=False)
    assert "thumbnail" not in mapped.frames.columns and "thumbnail" in loaded.frames.columns
    gids = np.random.default_rng(0).permutation(len(loaded.frames))[:300]
    expected = [bytes(t) for t in loaded.frames["thumbnail"].to_numpy()[gids]]
    assert mapped.thumbnails(gids) == expected == loaded.thumbnails(gids)
    rows = mapped.with_thumbnails(mapped.frames.iloc[gids[:5]])
    assert rows["thumbnail"].tolist() == expected[:5] and "thumbnail" not in mapped.frames.columns
    assert mapped.thumbnail(int(gids[0])) == expected[0]
    with pytest.raises(IndexError):
        mapped.thumbnails([len(loaded.frames)])


@pytest.mark.parametrize("name", ["frames.faiss", "objects.faiss", "frames.parquet"])
@pytest.mark.parametrize("verify", ["full", "quick"])
def test_a_truncated_mapped_file_is_refused_and_named(tmp_path, name, verify):
    root = _build(tmp_path / "index", "ivf-flat", seed=4)
    folder = store.open_index(root).shards["Oahu_2022-07"].path
    data = (folder / name).read_bytes()
    (folder / name).write_bytes(data[: len(data) // 2])
    index = store.open_index(root, verify=verify)
    assert set(index.shards) == {"Bali_2021-05"}
    assert name in index.errors["Oahu_2022-07"] and "truncated" in index.errors["Oahu_2022-07"]


def test_memory_figure_counts_the_mapped_files(tmp_path):
    root = _build(tmp_path / "index", "flat", seed=5)
    mapped = store.open_index(root)
    use = store.memory_use(mapped)
    faiss_bytes = sum(p.stat().st_size for p in root.rglob("*.faiss"))
    if use.mapped_total is None:
        pytest.skip("no /proc on this system")
    assert use.mapped_total >= faiss_bytes * 0.9 and use.tables > 0 and use.process >= use.index
    assert "memory-mapped" in use.describe() and " 0 MiB" not in use.describe()
    assert store.MemoryUse(300_000, 5 * 2 ** 20, 6 * 2 ** 20, 2 ** 31).describe() == (
        "index resident memory 5 MiB (rows 293 KiB, memory-mapped files 5 MiB of 6 MiB); process 2,048 MiB")
    loaded = store.open_index(root, mmap=False)
    del mapped
    assert store.memory_use(loaded).tables > 0


def test_search_verbose_prints_the_memory_figure(tmp_path, capsys):
    from search.cli import main
    from search.encoder import TEST_MODEL, load_encoder
    from search.testing import object_rows
    enc = load_encoder(TEST_MODEL, random_weights=True)
    root = tmp_path / "index"
    store.init_index(root, {"encoder": enc.identity()})
    store.write_shard(root, "Bali_2021-05", frame_rows("Bali_2021-05", 4), enc.encode_text(["a", "b", "c", "d"]),
                      object_rows([0]), enc.encode_text(["e"]), {})
    assert main(["search", "a turtle", "--index", str(root), "--verbose"]) == 0
    err = capsys.readouterr().err
    assert "4 frames" in err and "resident memory" in err and "memory-mapped files" in err


def test_rows_are_held_once(tmp_path):
    """A shard's tables are slices of the index-wide tables, not copies, and keep their own columns and
    row numbers (0..n-1), so code reading a shard sees what was written."""
    root = _build(tmp_path / "index", "flat", seed=6)
    index = store.open_index(root)
    alone = store.open_shard(root, "Oahu_2022-07")
    shard = index.shards["Oahu_2022-07"]
    pd.testing.assert_frame_equal(shard.frames, alone.frames)
    pd.testing.assert_frame_equal(shard.objects, alone.objects)
    for table, shared in (("frames", "frame_index"), ("objects", "frame_row")):
        mine = getattr(shard, table)[shared].to_numpy()
        whole = getattr(index, table)[shared].to_numpy()
        assert np.shares_memory(mine, whole)
    assert set(index.objects["site"]) == set(index.shards)
    assert (index.objects.loc[index.objects["site"] == "Oahu_2022-07", "frame_gid"]
            >= index.frame_offset("Oahu_2022-07")).all()


@pytest.mark.parametrize("threads", [1, 2])
def test_approximate_search_with_every_frame_a_candidate_equals_exact(built, monkeypatch, threads):
    """Re-scoring candidates (FAISS's scores for its hits, the stored codes for the rest, shards in
    threads) gives the exact scores: with every list probed and candidates for every row, same ranking."""
    from search import query, scoring
    kind, root = built
    index = store.open_index(root)
    for shard in index.shards.values():
        faiss_index.set_search_params(shard.frame_index, nprobe=10_000)
        faiss_index.set_search_params(shard.object_index, nprobe=10_000)
    monkeypatch.setattr(query, "CANDIDATES", 10 * N_FRAMES)
    monkeypatch.setattr(scoring, "_THREADS", threads)
    for q in random_unit(5, D, 21):
        for fusion in ("max", "weighted", "object"):
            exact = search(index, None, q, k=25, fusion=fusion, exact=True)
            approx = search(index, None, q, k=25, fusion=fusion, exact=False)
            assert approx["gid"].tolist() == exact["gid"].tolist()
            for column in ("score", "frame_score", "object_score"):
                np.testing.assert_allclose(approx[column], exact[column], atol=1e-5)
            assert approx["track_id"].tolist() == exact["track_id"].tolist()

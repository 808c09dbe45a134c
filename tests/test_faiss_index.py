"""search.faiss_index: recall@10 of the approximate types against exact search, float16 storage, fallbacks."""
import numpy as np
import pytest

from search import faiss_index as fi
from search.errors import InputError
from search.testing import unit


@pytest.fixture(scope="module")
def data():
    """4000 clustered unit vectors (d = 32, like embeddings: 40 topics) and 50 queries near them."""
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((40, 32))
    x = unit(centres[rng.integers(0, 40, 4000)] + 0.6 * rng.standard_normal((4000, 32)))
    q = unit(x[rng.integers(0, 4000, 50)] + 0.3 * rng.standard_normal((50, 32)))
    return x, q


def recall_at_10(index, x, q):
    truth = np.argsort(-(q @ x.T), axis=1)[:, :10]
    _, got = index.search(q, 10)
    return np.mean([len(set(t) & set(g)) / 10 for t, g in zip(truth, got)])


@pytest.mark.parametrize("kind,threshold,kw", [
    ("flat", 0.99, {}),
    ("ivf-flat", 0.9, {}),
    ("ivf-pq", 0.4, {"nprobe": 16}),    # 4 one-byte codes per 32-d vector: lossy by design
    ("hnsw", 0.9, {}),
])
def test_recall_against_exact(data, kind, threshold, kw):
    x, q = data
    built = fi.build(x, kind, **kw)
    assert built.index_type == kind and built.index.ntotal == len(x)
    r = recall_at_10(built.index, x, q)
    assert r >= threshold, f"{kind} recall@10 {r:.3f}"


def test_more_probes_more_recall(data):
    x, q = data
    built = fi.build(x, "ivf-flat", nprobe=1)
    low = recall_at_10(built.index, x, q)
    fi.set_search_params(built.index, nprobe=built.params["nlist"])
    assert recall_at_10(built.index, x, q) >= 0.99 > low


def test_float16_storage_and_reconstruction(data):
    x, _ = data
    for kind in ("flat", "ivf-flat", "hnsw"):
        idx = fi.build(x, kind).index
        back = fi.reconstruct_all(idx)
        assert back.dtype == np.float16 and np.abs(back.astype(np.float32) - x).max() < 1e-3
        ids = np.array([5, 0, 3999])
        assert np.allclose(fi.reconstruct_ids(idx, ids), x[ids], atol=1e-3)
    flat = fi.build(x, "flat").index
    assert fi.bytes_per_vector(flat) < 2 * 32 + 1          # float16: 2 bytes per dimension
    assert fi.bytes_per_vector(fi.build(x, "ivf-pq").index) < 2 * 32


def test_defaults_and_fallbacks():
    assert fi.default_nlist(10 ** 6) == 4000 and fi.default_nlist(1000) == 25
    x = unit(np.random.default_rng(1).standard_normal((100, 16)))
    for kind in ("ivf-flat", "ivf-pq"):
        built = fi.build(x, kind)
        assert built.index_type == "flat" and "flat" in built.notes[0]
    empty = fi.build(np.zeros((0, 16), np.float32), "flat")
    assert empty.index.ntotal == 0 and fi.reconstruct_all(empty.index).shape == (0, 16)
    with pytest.raises(InputError, match="unknown index type"):
        fi.build(x, "lsh")


def test_hnsw_candidates_are_as_many_as_asked_and_the_index_is_left_as_it_was(data):
    """HNSW returns at most efSearch results: asking for more candidates than that must still give them
    (the approximate search path asks for >= 1024), without changing the shared index's efSearch."""
    x, q = data
    built = fi.build(x, "hnsw", ef_search=16)
    _, plain = built.index.search(q, 500)
    assert (plain[:, -1] == -1).all()                 # the shortfall this guards against
    ids = fi.search_candidates(built.index, q, 500)
    assert ids.shape == (len(q), 500) and (ids >= 0).all()
    assert all(len(set(row)) == 500 for row in ids)
    assert built.index.hnsw.efSearch == 16
    flat = fi.build(x, "flat")
    assert (fi.search_candidates(flat.index, q, 500) >= 0).all()

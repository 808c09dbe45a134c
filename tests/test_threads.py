"""The thread policy, the float16 code scan of exact scoring, and the cached batched text encoding: same results
at 1 and 2 threads and on every scoring path (no timing asserted: BENCHMARKS.md has the numbers)."""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from app.cli import main
from search import faiss_index as fi
from search import queries as Qs
from search import store
from search import threads as T
from search.query import search
from search.service import QueryService
from search.textcache import CachingEncoder, TextVectorCache, encode_texts
from search.testing import encoder_identity, frame_rows, object_rows, random_unit

D = 32


def _index(root: Path, index_type: str = "flat", n: int = 600) -> Path:
    """Two shards of random unit vectors, two objects per frame (the second one background in every fifth)."""
    store.init_index(root, {"encoder": encoder_identity(D)})
    for k, site in enumerate(("A", "B")):
        rows = np.repeat(np.arange(n), 2)
        objects = object_rows(list(rows))
        objects["is_background"] = (np.arange(2 * n) % 10) == 1
        store.write_shard(root, site, frame_rows(site, n, videos=3), random_unit(n, D, 10 * k),
                          objects, random_unit(2 * n, D, 10 * k + 1), {}, index_type=index_type)
    return root


def test_the_policy_and_its_context_restore_the_threads():
    import faiss
    import torch
    assert T.threads_for("query") == 1 and T.threads_for("batch") >= 1 and T.threads_for("index", 3) == 3
    with pytest.raises(ValueError, match="threads"):
        T.threads_for("query", 0)
    with pytest.raises(ValueError, match="kind of work"):
        T.threads_for("nonsense")
    before = (torch.get_num_threads(), faiss.omp_get_max_threads())
    with T.threads("query", 2) as n:
        assert n == 2 and torch.get_num_threads() == 2 and faiss.omp_get_max_threads() == 2
    assert (torch.get_num_threads(), faiss.omp_get_max_threads()) == before
    assert T.threads_from_env({}) is None and T.threads_from_env({"MVK_THREADS": "3"}) == 3
    with pytest.raises(ValueError, match="MVK_THREADS"):
        T.threads_from_env({"MVK_THREADS": "many"})


@pytest.mark.parametrize("index_type", ["flat", "hnsw"])
def test_the_code_scan_gives_the_scores_of_the_blocks_and_of_faiss(tmp_path, index_type):
    x = random_unit(3000, 64, 3)
    x[17] = np.nan                                      # an invalid stored vector scores -inf on every path
    built = fi.build(x, index_type).index
    q = random_unit(3, 64, 4)
    scanned = fi.scores_by_code_scan(built, q)
    blocks = fi.scores_by_blocks(built, q, 1024)
    assert scanned.shape == blocks.shape == (3, 3000)
    assert not np.isfinite(scanned[:, 17]).any()
    ok = np.isfinite(blocks) & np.isfinite(scanned)
    np.testing.assert_allclose(scanned[ok], blocks[ok], atol=1e-6)
    if index_type == "flat":                            # the same arithmetic as FAISS's own search
        scores, ids = built.search(q, 10)
        np.testing.assert_array_equal(np.argsort(-scanned, axis=1, kind="stable")[:, :10], ids)
        np.testing.assert_array_equal(np.take_along_axis(scanned, ids, axis=1), scores)
    assert fi.scores_by_code_scan(fi.build(random_unit(500, 64, 5), "ivf-flat").index, q) is None


def test_a_query_gives_identical_results_at_1_and_2_threads_and_on_both_scoring_paths(tmp_path, monkeypatch):
    root = _index(tmp_path / "idx")
    index = store.open_index(root)
    q = random_unit(1, D, 99)[0]
    with T.threads("query", 1):
        one = search(index, None, q, k=50, fusion="max")
    with T.threads("query", 2):
        two = search(index, None, q, k=50, fusion="max")
    monkeypatch.setattr(fi, "RANGE_QUERIES", 0)          # the float32 block path of before
    blocks = search(index, None, q, k=50, fusion="max")
    pd.testing.assert_frame_equal(one, two)
    assert one["gid"].tolist() == blocks["gid"].tolist()
    np.testing.assert_allclose(one["score"], blocks["score"], atol=1e-6)
    monkeypatch.undo()
    ref = Qs.ItemRef("A", "A-v1", 5)
    pages = [QueryService(root, threads=n).run(Qs.LikeQuery(ref), Qs.Options(k=30)) for n in (1, 2)]
    pd.testing.assert_frame_equal(pages[0].rows, pages[1].rows)


def test_search_kis_and_serve_refuse_a_bad_thread_count(tmp_path, capsys):
    for argv in (["search", "x", "--index", str(tmp_path), "--threads", "0"],
                 ["kis", "q.csv", "--index", str(tmp_path), "--out", str(tmp_path / "o"), "--threads", "two"],
                 ["serve", "--index", str(tmp_path), "--threads", "-1"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
        assert "--threads" in capsys.readouterr().err


class _CountingEncoder:
    """Text vectors from a hash of the text; counts the texts it encodes."""
    dim = 8

    def __init__(self) -> None:
        self.encoded = 0
        self.calls = 0

    def identity(self) -> dict:
        return {"model": "counting", "dim": self.dim}

    def encode_text(self, texts, *, batch_size: int = 64) -> np.ndarray:
        self.encoded += len(texts)
        self.calls += 1
        out = np.stack([np.random.default_rng(abs(hash(t)) % 2**32).standard_normal(self.dim) for t in texts])
        return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)


def test_texts_are_encoded_in_batches_once_and_a_rerun_reads_the_cache(tmp_path):
    texts = [f"a fish number {i}" for i in range(150)] + ["a fish number 3"]
    enc = _CountingEncoder()
    first = encode_texts(enc, texts, batch_size=64, cache=TextVectorCache(tmp_path, enc.identity()))
    assert enc.encoded == 150 and enc.calls == 3
    again = encode_texts(enc, texts, batch_size=64, cache=TextVectorCache(tmp_path, enc.identity()))
    assert enc.encoded == 150                            # a new process: everything from the folder
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(first[3], first[150])
    other = {"model": "another", "dim": 8}
    assert TextVectorCache(tmp_path, other).get(texts) == {}      # keyed by the model's identity


def test_concurrent_writers_lose_nothing_and_the_cache_stays_bounded(tmp_path):
    enc = _CountingEncoder()

    def write(k: int) -> None:
        cache = TextVectorCache(tmp_path, enc.identity())
        for i in range(10):
            cache.put([f"w{k}-{i}"], enc.encode_text([f"w{k}-{i}"]))

    workers = [threading.Thread(target=write, args=(k,)) for k in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    texts = [f"w{k}-{i}" for k in range(4) for i in range(10)]
    assert len(TextVectorCache(tmp_path, enc.identity()).get(texts)) == 40
    small = TextVectorCache(tmp_path / "small", enc.identity(), max_texts=20)
    for i in range(60):
        small.put([f"t{i}"], enc.encode_text([f"t{i}"]))
    fresh = TextVectorCache(tmp_path / "small", enc.identity(), max_texts=20)
    kept = fresh.get([f"t{i}" for i in range(60)])
    assert 0 < len(kept) <= 20 + 32 and "t59" in kept and "t0" not in kept


def test_the_caching_encoder_is_the_encoder_for_everything_else(tmp_path):
    enc = _CountingEncoder()
    wrapped = CachingEncoder(enc, TextVectorCache(tmp_path, enc.identity()))
    assert wrapped.identity() == enc.identity() and wrapped.dim == 8
    wrapped.encode_text(["x"])
    wrapped.encode_text(["x"])
    assert enc.encoded == 1


def test_batches_use_the_idle_cores_only(monkeypatch):
    monkeypatch.setattr(T, "usable_cores", lambda: 8)
    assert T.idle_cores(0.2) == 8 and T.idle_cores(5.4) == 3 and T.idle_cores(40.0) == 1


def test_texts_encoded_up_to_their_end_token_match_the_whole_context_in_any_order():
    import torch

    from search.encoder import TEST_MODEL, load_encoder
    enc = load_encoder(TEST_MODEL, random_weights=True)
    texts = ["a school of small silver fish above a sandy reef at dusk", "diver", "", "a green turtle on coral"]
    with torch.inference_mode():
        full = torch.nn.functional.normalize(enc.model.encode_text(enc.tokenizer(texts)).float(), dim=-1).numpy()
    batched = enc.encode_text(texts, batch_size=3)
    single = np.concatenate([enc.encode_text([t]) for t in texts])
    np.testing.assert_allclose(batched, full, atol=1e-5)
    np.testing.assert_allclose(single, full, atol=1e-5)


def test_the_query_service_encodes_a_repeated_text_once_and_ranks_it_the_same(tmp_path, monkeypatch):
    from search.encoder import TEST_MODEL, Encoder, load_encoder
    enc = load_encoder(TEST_MODEL, random_weights=True)
    root = tmp_path / "idx"
    store.init_index(root, {"encoder": enc.identity()})
    store.write_shard(root, "S", frame_rows("S", 4), enc.encode_text(["a red fish", "a diver", "a wreck", "coral"]),
                      object_rows([]), np.zeros((0, enc.dim), np.float32), {})
    encoded: list[str] = []
    real = Encoder.encode_text
    monkeypatch.setattr(Encoder, "encode_text", lambda self, texts, **kw: (encoded.extend(texts),
                                                                          real(self, texts, **kw))[1])
    first = QueryService(root).run(Qs.TextQuery("a  diver"), Qs.Options(k=4))
    second = QueryService(root).run(Qs.TextQuery("a diver"), Qs.Options(k=4))   # another process, same text
    assert encoded == ["a diver"]
    pd.testing.assert_frame_equal(first.rows, second.rows)
    assert first.rows["gid"].iloc[0] == 1

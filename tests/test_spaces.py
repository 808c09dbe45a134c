"""Several embedding spaces in one index: the store (further tables per shard, recorded in the manifests, the
first space's files untouched), views per space, and fusing the rankings of several spaces."""
import numpy as np
import pandas as pd
import pytest

from search import spacefusion, spaces, store, writer
from search.errors import IndexFormatError, ModelMismatchError, QueryError
from search.testing import encoder_identity, frame_rows, object_rows, random_unit

D, D2 = 16, 24


def second_identity(dim=D2, model="other-model", pretrained="tag-a"):
    return {**encoder_identity(dim), "model": model, "pretrained": pretrained}


@pytest.fixture
def root(tmp_path):
    r = tmp_path / "index"
    store.init_index(r, {"encoder": encoder_identity(D), "segmentation": {"tau": 1.0}})
    for site, n, seed in (("A", 6, 0), ("B", 4, 5)):
        objects = object_rows([0, 0, n // 2, n - 1])
        store.write_shard(r, site, frame_rows(site, n, videos=2), random_unit(n, D, seed), objects,
                          random_unit(len(objects), D, seed + 100), {"sources": {}})
    return r


def add_second(root, sites=("A", "B"), seed=7):
    space = spaces.Space("other-model", second_identity(), "pool", None)
    writer.add_space(root, space)
    out = {}
    for site in sites:
        version = store.shard_folder(root, site).name
        sm = store.shard_manifest(root, site)
        fv = random_unit(sm["counts"]["frames"], D2, seed)
        ov = random_unit(sm["counts"]["objects"], D2, seed + 1)
        writer.write_spaces(root, site, {"other-model": (fv, ov)}, based_on=version)
        out[site] = (fv, ov)
    return out


def test_a_second_space_leaves_the_first_space_byte_identical(root):
    before = {site: {n: (store.shard_folder(root, site) / n).read_bytes()
                     for n in ("frames.faiss", "objects.faiss", "frames.parquet", "objects.parquet")}
              for site in ("A", "B")}
    vectors = add_second(root)
    for site in ("A", "B"):
        folder = store.shard_folder(root, site)
        for name, data in before[site].items():
            assert (folder / name).read_bytes() == data
        assert (folder / "frames.other-model.faiss").is_file()
    assert store.check_index(root).ok
    idx = store.open_index(root)
    assert idx.spaces() == ["hand-made", "other-model"]
    view = idx.in_space("other-model")
    assert view.encoder["dim"] == D2 and view.space == "other-model"
    assert view.frames is idx.frames                      # rows and gids are shared between spaces
    got = view.shards["B"].vectors("frames").astype(np.float32)
    assert np.allclose(got, vectors["B"][0], atol=1e-3)
    assert idx.shards["B"].vectors("frames").shape[1] == D


def test_a_shard_without_the_space_scores_nothing_there(root):
    add_second(root, sites=("A",))
    check = store.check_index(root)
    assert check.ok and "2 embedding spaces: hand-made (dim 16), other-model (dim 24)" in check.notes
    assert any("site B has no vectors in the space other-model yet" in n for n in check.notes)
    idx = store.open_index(root)
    view = idx.in_space("other-model")
    assert any("site B has no vectors in the space other-model" in n for n in view.notes)
    from search.query import search
    out = search(view, None, random_unit(1, D2, 3)[0], k=20)
    assert set(out["site"]) == {"A"}


def test_another_version_of_the_same_model_is_refused_by_name(root):
    add_second(root)
    with pytest.raises(ModelMismatchError, match="other-model.*another version of the same model"):
        writer.add_space(root, spaces.Space("other-model", second_identity(pretrained="tag-b")))
    writer.add_space(root, spaces.Space("other-model", second_identity()))     # the same one: accepted
    assert len(store.read_manifest(root)["spaces"]) == 1


def test_unknown_space_names_the_spaces(root):
    add_second(root)
    idx = store.open_index(root)
    with pytest.raises(QueryError, match="no embedding space 'nope'.*other-model"):
        idx.in_space("nope")
    with pytest.raises(QueryError, match="rrf, zscore or one of"):
        spaces.check_fusion(idx.manifest, "nope")
    assert spaces.check_fusion(idx.manifest, "other-model") == ["other-model"]
    assert spaces.check_fusion(idx.manifest, "rrf") == idx.spaces()


def test_writing_spaces_against_a_replaced_version_is_refused(root):
    writer.add_space(root, spaces.Space("other-model", second_identity()))
    old = store.shard_folder(root, "A").name
    store.write_shard(root, "A", frame_rows("A", 3), random_unit(3, D, 1), object_rows([]), np.zeros((0, D)), {})
    with pytest.raises(IndexFormatError, match="changed while"):
        writer.write_spaces(root, "A", {"other-model": (random_unit(3, D2), np.zeros((0, D2)))}, based_on=old)


def test_rrf_and_zscore():
    a = np.array([0.9, 0.5, 0.1, -np.inf])
    b = np.array([0.1, 0.2, 0.3, 0.0])
    assert list(spacefusion.ranks_of(a)) == [1, 2, 3, np.inf]
    fused = spacefusion.fuse_scores([a, b], "rrf")
    expect = np.array([1 / 61 + 1 / 63, 1 / 62 + 1 / 62, 1 / 63 + 1 / 61, 1 / 64])
    assert np.allclose(fused, expect)
    z = spacefusion.fuse_scores([a, b], "zscore")
    assert np.argmax(z) in (0, 2) and np.isfinite(z).all()
    assert np.array_equal(spacefusion.fuse_scores([a], "rrf"), a)       # one space: its own scores
    with pytest.raises(QueryError, match="unknown space fusion"):
        spacefusion.fuse_scores([a, b], "sum")


def test_fuse_ranked_lists():
    one = pd.DataFrame({"rank": [1, 2, 3], "gid": [10, 11, 12], "score": [0.9, 0.8, 0.7], "x": ["a", "b", "c"]})
    two = pd.DataFrame({"rank": [1, 2], "gid": [12, 13], "score": [0.5, 0.4], "x": ["C", "d"]})
    out = spacefusion.fuse_ranked([one, two], ["s1", "s2"], "rrf")
    assert list(out["gid"]) == [12, 10, 11, 13]           # 12 is in both lists
    assert list(out["rank"]) == [1, 2, 3, 4]
    assert out["x"].iloc[0] == "c"                         # the row of the first space that returned it
    assert out["spaces"].iloc[0] == {"s1": 3, "s2": 1} and out["spaces"].iloc[3] == {"s1": None, "s2": 2}


def test_a_shard_without_the_space_scores_nothing_on_the_approximate_path(tmp_path):
    r = tmp_path / "index"
    store.init_index(r, {"encoder": encoder_identity(D)})
    for site, seed in (("A", 0), ("B", 1)):
        objects = object_rows(list(range(0, 300, 3)))
        store.write_shard(r, site, frame_rows(site, 300, videos=3), random_unit(300, D, seed), objects,
                          random_unit(len(objects), D, seed + 9), {}, index_type="HNSW8")
    writer.add_space(r, spaces.Space("other-model", second_identity(), "pool", None))
    writer.write_spaces(r, "A", {"other-model": (random_unit(300, D2, 4), random_unit(100, D2, 5))},
                        based_on=store.shard_folder(r, "A").name)
    from search.query import search
    from search.scoring import SearchParams
    view = store.open_index(r).in_space("other-model")
    out = search(view, None, random_unit(1, D2, 3)[0], k=30, exact=False, params=SearchParams(ef_search=32))
    assert len(out) == 30 and set(out["site"]) == {"A"}
    exact = search(view, None, random_unit(1, D2, 3)[0], k=30, exact=True)
    assert len(set(out["gid"]) & set(exact["gid"])) >= 25


def test_a_damaged_space_table_is_named_and_its_shard_skipped(root):
    add_second(root)
    path = store.shard_folder(root, "A") / "frames.other-model.faiss"
    data = bytearray(path.read_bytes())
    data[-8] ^= 0xFF
    path.write_bytes(bytes(data))
    idx = store.open_index(root)
    assert "A" in idx.errors and "frames.other-model.faiss" in idx.errors["A"] and "B" in idx.shards
    check = store.check_index(root)
    assert not check.ok and "frames.other-model.faiss" in " ".join(check.sites["A"])


def test_fuse_ranked_matches_a_plain_loop_reference():
    rng = np.random.default_rng(3)
    lists = []
    for n in (40, 25, 0, 33):
        gids = rng.choice(60, n, replace=False)
        lists.append(pd.DataFrame({"rank": np.arange(1, n + 1), "gid": gids, "x": [f"{len(lists)}:{g}" for g in gids],
                                   "score": np.sort(rng.random(n))[::-1]}))
    names = ["s1", "s2", "s3", "s4"]
    out = spacefusion.fuse_ranked(lists, names, "rrf")
    rank_in: dict[int, dict[str, int | None]] = {}
    row_of: dict[int, str] = {}
    for name, df in zip(names, lists):
        for rank, (gid, x) in enumerate(zip(df["gid"], df["x"]), 1):
            rank_in.setdefault(int(gid), dict.fromkeys(names))[name] = rank
            row_of.setdefault(int(gid), x)
    fused = {g: sum(1 / (60 + r) for r in ranks.values() if r is not None) for g, ranks in rank_in.items()}
    expect = sorted(fused, key=lambda g: (-fused[g], g))
    assert list(out["gid"]) == expect
    assert list(out["x"]) == [row_of[g] for g in expect]              # the row of the first space that returned it
    assert np.allclose(out["score"], [fused[g] for g in expect], atol=1e-6)
    assert list(out["spaces"]) == [rank_in[g] for g in expect]
    assert all(type(r) is int for d in out["spaces"] for r in d.values() if r is not None)
    assert list(out["rank"]) == list(range(1, len(expect) + 1))
    z = spacefusion.fuse_ranked(lists, names, "zscore")
    assert sorted(z["gid"]) == sorted(expect) and set(z.columns) == set(out.columns)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_ranks_break_ties_by_position_in_float32_and_float64(dtype):
    rng = np.random.default_rng(5)
    scores = np.round(rng.standard_normal(500) * 0.05 + 0.2, 2)            # many ties
    scores[[3, 77, 400]] = [np.inf, -np.inf, np.nan]
    scores[[10, 11, 12]] = [0.0, -0.0, 0.0]
    scores = scores.astype(dtype)
    finite = [i for i in range(len(scores)) if np.isfinite(scores[i])]
    expect = np.full(len(scores), np.inf)
    for rank, i in enumerate(sorted(finite, key=lambda i: (-float(scores[i]), i)), 1):
        expect[i] = rank
    assert np.array_equal(spacefusion.ranks_of(scores), expect)


def test_more_like_this_needs_no_encoder_in_any_space(root):
    from search import queries as Qs
    from search.service import QueryService
    add_second(root)
    service = QueryService(root)          # neither space's model can be loaded here: hand-made vectors
    ref = Qs.ItemRef("A", "A-v0", 0)
    page = service.run(Qs.LikeQuery(ref), Qs.Options(k=5))
    assert page.rows["gid"].iloc[0] == 0 and set(page.rows["spaces"].iloc[0]) == {"hand-made", "other-model"}
    assert page.rows["spaces"].iloc[0] == {"hand-made": 1, "other-model": 1}
    alone = service.run(Qs.LikeQuery(ref), Qs.Options(k=5, space_fusion="other-model"))
    assert alone.rows["gid"].iloc[0] == 0 and alone.rows["score"].iloc[0] == pytest.approx(1.0, abs=1e-3)
    with pytest.raises(Exception, match="hand-made|other-model"):
        service.run(Qs.TextQuery("a fish"), Qs.Options(k=5))


def test_more_like_a_result_of_a_shard_that_lacks_a_space_uses_the_other_spaces(root):
    from search import queries as Qs
    from search.errors import SpaceMissingError
    from search.service import QueryService
    add_second(root, sites=("A",))                  # B has no vectors in other-model yet
    service = QueryService(root)
    ref = Qs.ItemRef("B", "B-v0", 0)
    page = service.run(Qs.LikeQuery(ref), Qs.Options(k=5))
    assert page.rows["site"].iloc[0] == "B" and page.rows["spaces"].iloc[0] == {"hand-made": 1}
    assert any(n.startswith("space other-model left out: this shard has no vectors") for n in page.notes)
    liked = service.run(Qs.FeedbackQuery(None, (ref,), ()), Qs.Options(k=5))
    assert len(liked.rows) == 5
    with pytest.raises(SpaceMissingError, match="no vectors in the space 'other-model' yet"):
        service.run(Qs.LikeQuery(ref), Qs.Options(k=5, space_fusion="other-model"))

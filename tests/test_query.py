"""search.query on hand-made vectors with known ranks: fusion arithmetic, filters, group-by, image and
vector queries, temporal queries, approximate path, bad queries."""
import numpy as np
import pandas as pd
import pytest

from search import query as Q
from search import store
from search.encoder import TEST_MODEL, load_encoder
from search.errors import ModelMismatchError, QueryError
from search.testing import encoder_identity, frame_rows, object_rows, random_unit, unit

D = 8
E = np.eye(D, dtype=np.float32)


def vec(*pairs):
    """A unit vector with the given (axis, weight) components."""
    v = np.zeros(D, np.float32)
    for axis, w in pairs:
        v[axis] = w
    return v


@pytest.fixture
def idx(tmp_path):
    """Site A: 4 frames (video v0: frames 0,1; video v1: frames 2,3), site B: 2 frames.
    Query e0. Frame sims: A0 .6, A1 .2, A2 .0, A3 .9, B0 .5, B1 .1.
    Objects: A1 has one object with sim .8 and a background object with sim 1.0; A2 .4; B1 .7 and .3."""
    root = tmp_path / "ix"
    store.init_index(root, {"encoder": encoder_identity(D)})
    fa = frame_rows("A_2019-04", 4, videos=2, place="Anilao", date="2019-04")
    fva = unit([vec((0, .6), (1, .8)), vec((0, .2), (2, .98)), vec((3, 1)), vec((0, .9), (4, .436))])
    oa = object_rows([1, 1, 2], track_id=[7, 8, 9], is_background=[False, True, False])
    ova = unit([vec((0, .8), (5, .6)), vec((0, 1)), vec((0, .4), (6, .9165))])
    store.write_shard(root, "A_2019-04", fa, fva, oa, ova, {})
    fb = frame_rows("B_2020-01", 2, videos=1, place="Bali", date="2020-01")
    fvb = unit([vec((0, .5), (1, .866)), vec((0, .1), (2, .995))])
    ob = object_rows([1, 1], track_id=[3, 4])
    ovb = unit([vec((0, .7), (3, .714)), vec((0, .3), (4, .954))])
    store.write_shard(root, "B_2020-01", fb, fvb, ob, ovb, {})
    return store.open_index(root)


FRAME = np.array([.6, .2, 0, .9, .5, .1])
OBJ = np.array([-np.inf, .8, .4, -np.inf, -np.inf, .7])


@pytest.mark.parametrize("fusion,weight,expected", [
    ("frame", .5, FRAME),
    ("object", .5, np.where(np.isfinite(OBJ), OBJ, FRAME)),
    ("max", .5, np.maximum(FRAME, OBJ)),
    ("weighted", .25, .75 * FRAME + .25 * np.where(np.isfinite(OBJ), OBJ, FRAME)),
])
def test_fusion_arithmetic(idx, fusion, weight, expected):
    got = Q.score_frames(idx, E[0], fusion=fusion, weight=weight)
    assert got.shape == (6,)
    assert np.allclose(got, expected, atol=2e-3)


@pytest.fixture
def mixed_idx(tmp_path):
    """Site A: frames without objects, several objects on one frame, a frame with only a background
    object, another background object beside a real one; site B: no objects at all."""
    d = 8
    root = tmp_path / "mixed"
    store.init_index(root, {"encoder": encoder_identity(d)})
    shards = [("A_Jan2020", 7, [5, 0, 0, 3, 6, 6, 6, 4]), ("B_Feb2020", 5, [])]
    for s, (site, n, obj_rows) in enumerate(shards):
        objects = object_rows(obj_rows, is_background=[i in (1, 7) for i in range(len(obj_rows))])
        store.write_shard(root, site, frame_rows(site, n, videos=2), random_unit(n, d, seed=s), objects,
                          random_unit(len(obj_rows), d, seed=10 + s) if obj_rows else np.zeros((0, d)), {})
    return store.open_index(root)


def _reference_scores(index, q, fusion, weight):
    """Fused scores by the definitions, one frame at a time, from the stored float16 vectors."""
    out = []
    for shard in index.shards.values():
        fv, ov = shard.vectors("frames").astype(np.float32), shard.vectors("objects").astype(np.float32)
        for row in range(len(shard.frames)):
            s_f = float(fv[row] @ q)
            mine = (shard.objects["frame_row"] == row) & ~shard.objects["is_background"]
            s_o = float(np.max(ov[mine.to_numpy()] @ q)) if mine.any() else s_f
            out.append({"frame": s_f, "object": s_o, "max": max(s_f, s_o),
                        "weighted": (1 - weight) * s_f + weight * s_o}[fusion])
    return np.array(out, np.float32)


def test_score_frames_batch_equals_score_frames_and_the_definitions(mixed_idx):
    qv = random_unit(70, 8, seed=99)            # more than one QUERY_BLOCK of 64
    got = Q.score_frames_batch(mixed_idx, 3 * qv, fusions=Q.FUSIONS, weight=0.3)   # rows normalised
    assert set(got) == set(Q.FUSIONS)
    for fusion in Q.FUSIONS:
        assert got[fusion].shape == (70, 12) and got[fusion].dtype == np.float32
        single = np.stack([Q.score_frames(mixed_idx, v, fusion=fusion, weight=0.3) for v in qv])
        np.testing.assert_allclose(got[fusion], single, rtol=1e-6, atol=1e-6)
        for i in (0, 69):
            np.testing.assert_allclose(got[fusion][i], _reference_scores(mixed_idx, qv[i], fusion, 0.3),
                                       rtol=1e-5, atol=1e-5)
    # frame 4 of A has only a background object: it scores as a frame without objects
    np.testing.assert_allclose(got["object"][:, 4], got["frame"][:, 4])
    one = Q.score_frames_batch(mixed_idx, qv[0], fusions=("max",))
    assert one["max"].shape == (1, 12)


def test_score_frames_batch_bad_input(mixed_idx):
    qv = random_unit(3, 8, seed=1)
    qv[1] = 0
    with pytest.raises(QueryError, match="query vector 1 .* zero or not finite"):
        Q.score_frames_batch(mixed_idx, qv)
    with pytest.raises(QueryError, match="dimension"):
        Q.score_frames_batch(mixed_idx, np.ones((2, 9), np.float32))
    with pytest.raises(QueryError, match="fusion"):
        Q.score_frames_batch(mixed_idx, qv[:1], fusions=("frame", "min"))
    assert Q.score_frames_batch(mixed_idx, np.zeros((0, 8)), fusions=("frame",))["frame"].shape == (0, 12)


def test_background_object_ignored_and_best_object_reported(idx):
    df = Q.search(idx, None, E[0], k=6, fusion="max")
    assert list(df["gid"]) == [3, 1, 5, 0, 4, 2]
    assert list(df["rank"]) == [1, 2, 3, 4, 5, 6]
    row = df.set_index("gid").loc[1]
    assert row["track_id"] == 7 and row["mask_rle"] and row["x1"] > row["x0"]    # not the background (8)
    assert np.isclose(row["object_score"], .8, atol=2e-3) and np.isclose(row["frame_score"], .2, atol=2e-3)
    none = df.set_index("gid").loc[3]
    assert none["track_id"] == -1 and none["mask_rle"] == "" and np.isnan(none["object_score"])
    assert list(df.columns) == list(Q.RESULT_COLUMNS)


def test_k_and_frame_fusion_order(idx):
    df = Q.search(idx, None, E[0], k=3, fusion="frame")
    assert list(df["gid"]) == [3, 0, 4]


def test_filters(idx):
    by_site = Q.search(idx, None, E[0], k=10, filters=Q.Filters(sites=("B_2020-01",)))
    assert set(by_site["site"]) == {"B_2020-01"} and list(by_site["gid"]) == [5, 4]
    by_place = Q.search(idx, None, E[0], k=10, filters=Q.Filters(places=("anilao",)))
    assert set(by_place["gid"]) == {0, 1, 2, 3}
    by_date = Q.search(idx, None, E[0], k=10, filters=Q.Filters(date_from="2019-05"))
    assert set(by_date["gid"]) == {4, 5}
    by_date = Q.search(idx, None, E[0], k=10, filters=Q.Filters(date_from="2019-01", date_to="2019-04"))
    assert set(by_date["gid"]) == {0, 1, 2, 3}


@pytest.mark.parametrize("filters,match", [
    (Q.Filters(sites=("Nowhere",)), "unknown site 'Nowhere'.*A_2019-04, B_2020-01"),
    (Q.Filters(places=("Mars",)), "unknown place"),
    (Q.Filters(date_from="2019"), "YYYY-MM"),
    (Q.Filters(date_from="2020-02", date_to="2019-01"), "empty"),
])
def test_bad_filters(idx, filters, match):
    with pytest.raises(QueryError, match=match):
        Q.search(idx, None, E[0], filters=filters)


def test_group_by_video(idx):
    df = Q.search(idx, None, E[0], k=10, fusion="max", group_by="video")
    assert list(df["gid"]) == [3, 1, 5]          # best frame of A v1 (.9), A v0 (.8), B v0 (.7)
    assert df["video_id"].is_unique


def test_bad_arguments(idx):
    with pytest.raises(QueryError, match="fusion"):
        Q.search(idx, None, E[0], fusion="min")
    with pytest.raises(QueryError, match="weight"):
        Q.search(idx, None, E[0], fusion="weighted", weight=2)
    with pytest.raises(QueryError, match="dimension"):
        Q.search(idx, None, np.ones(D + 1, np.float32))
    with pytest.raises(QueryError, match="k must"):
        Q.search(idx, None, E[0], k=0)


def test_skipped_shard_is_noted_and_others_answer(idx):
    (store.shard_folder(idx.root, "B_2020-01") / "frames.faiss").write_bytes(b"broken")
    ix = store.open_index(idx.root)
    df = Q.search(ix, None, E[0], k=10)
    assert set(df["site"]) == {"A_2019-04"}
    assert any("B_2020-01" in n for n in df.attrs["notes"])
    with pytest.raises(QueryError, match="could not be read"):
        Q.search(ix, None, E[0], filters=Q.Filters(sites=("B_2020-01",)))


# -- with the tiny text encoder --------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny():
    return load_encoder(TEST_MODEL, random_weights=True)


@pytest.fixture
def tiny_idx(tmp_path, tiny):
    root = tmp_path / "tiny"
    store.init_index(root, {"encoder": tiny.identity()})
    texts = ["a turtle", "a diver", "a shark", "coral reef", "a wreck", "sand"]
    fv = tiny.encode_text(texts)
    store.write_shard(root, "S", frame_rows("S", 6, videos=2), fv, object_rows([]), np.zeros((0, tiny.dim)), {})
    return store.open_index(root, expect=tiny.identity())


def test_text_query_finds_its_frame(tiny_idx, tiny):
    df = Q.search(tiny_idx, tiny, "  a   shark ", k=3)
    assert df["gid"].iloc[0] == 2 and np.isclose(df["score"].iloc[0], 1, atol=2e-3)
    assert any("random weights" in n for n in df.attrs["notes"])


@pytest.mark.parametrize("text", ["", "   \n\t"])
def test_empty_query(tiny_idx, tiny, text):
    with pytest.raises(QueryError, match="empty"):
        Q.search(tiny_idx, tiny, text)


def test_long_query_truncated_with_note(tiny_idx, tiny):
    df = Q.search(tiny_idx, tiny, "a shark " + "swimming over the coral " * 40, k=2)
    assert len(df) == 2
    assert any("truncated" in n for n in df.attrs["notes"])
    assert not any("truncated" in n for n in Q.search(tiny_idx, tiny, "a shark").attrs["notes"])


def test_image_query(tmp_path, tiny):
    root = tmp_path / "img"
    store.init_index(root, {"encoder": tiny.identity()})
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (36, 64, 3), dtype=np.uint8) for _ in range(5)]
    store.write_shard(root, "S", frame_rows("S", 5), tiny.encode_images(images), object_rows([]),
                      np.zeros((0, tiny.dim)), {})
    df = Q.search(store.open_index(root), tiny, images[3], k=1)
    assert df["gid"].iloc[0] == 3


def test_encoder_of_another_space_refused(tiny_idx):
    class Other:
        random_weights = True

        def identity(self):
            return encoder_identity(64, model="ViT-B-16")
    with pytest.raises(ModelMismatchError, match="ViT-B-16"):
        Q.search(tiny_idx, Other(), "a shark")


# -- temporal --------------------------------------------------------------------------------------

@pytest.fixture
def clip_idx(tmp_path):
    """One site, video v0 with 10 frames at 1 fps and v1 with 10 frames. A (axis 0) at v0 t=2, B (axis 1)
    at v0 t=5 and t=9; in v1 B comes first (t=1) and A at t=3 with no B after it."""
    root = tmp_path / "t"
    store.init_index(root, {"encoder": encoder_identity(D)})
    v = np.tile(unit(vec((7, 1)))[None], (20, 1))
    v[2] = unit(vec((0, 1), (7, .3)))
    v[5] = unit(vec((1, 1), (7, .3)))
    v[9] = unit(vec((1, 1), (7, .6)))
    v[11] = unit(vec((1, 1), (7, .3)))
    v[13] = unit(vec((0, 1), (7, .3)))
    store.write_shard(root, "S", frame_rows("S", 20, videos=2), v, object_rows([]), np.zeros((0, D)), {})
    return store.open_index(root)


def test_temporal_pairs(clip_idx):
    df = Q.temporal_search(clip_idx, None, E[0], E[1], within=5, k=3)
    top = df.iloc[0]
    assert (top["first_gid"], top["then_gid"], top["gap"]) == (2, 5, 3.0)
    assert top["video_id"] == "S-v0"
    # B before A in v1 is no match; nor is A at t=2 with B at t=9 when within=5
    assert not ((df["first_gid"] == 13) & (df["first_score"] > .9)).any()
    narrow = Q.temporal_search(clip_idx, None, E[0], E[1], within=2, k=3)
    assert not ((narrow["first_gid"] == 2) & (narrow["then_gid"] == 5)).any()
    wide = Q.temporal_search(clip_idx, None, E[0], E[1], within=8, k=1, group_by="video")
    assert wide["then_gid"].iloc[0] == 5     # the stronger B at t=5 wins over t=9 (less similar)


def test_temporal_does_not_cross_videos(clip_idx):
    df = Q.temporal_search(clip_idx, None, E[0], E[1], within=100, k=50)
    f = clip_idx.frames.set_index("gid")
    assert (f.loc[df["first_gid"], "video_id"].to_numpy() == f.loc[df["then_gid"], "video_id"].to_numpy()).all()
    assert (df["gap"] > 0).all()


def test_temporal_bad_window(clip_idx):
    with pytest.raises(QueryError, match="within"):
        Q.temporal_search(clip_idx, None, E[0], E[1], within=0)


# -- approximate path ------------------------------------------------------------------------------

def test_approximate_path_matches_exact(tmp_path, monkeypatch):
    root = tmp_path / "big"
    d = 32
    store.init_index(root, {"encoder": encoder_identity(d)})
    n = 3000
    fv = random_unit(n, d, 1)
    obj_rows = np.sort(np.random.default_rng(2).integers(0, n, 4000))
    ov = random_unit(len(obj_rows), d, 3)
    store.write_shard(root, "S", frame_rows("S", n, videos=30), fv, object_rows(obj_rows), ov, {},
                      index_type="hnsw")
    ix = store.open_index(root)
    q = ov[17]
    exact = Q.search(ix, None, q, k=10, exact=True)
    approx = Q.search(ix, None, q, k=10, exact=False)
    assert len(set(exact["gid"]) & set(approx["gid"])) >= 9
    assert approx["gid"].iloc[0] == exact["gid"].iloc[0] == obj_rows[17]
    pd.testing.assert_series_equal(exact["score"].iloc[:3], approx["score"].iloc[:3], atol=1e-3)

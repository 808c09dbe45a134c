"""`mvk kis` and `mvk captions` end to end: known ranks on a hand-made index (precomputed query vectors),
bad input reported with file and line, and the full path on an `mvk synth` collection indexed by the
pipeline with tiny random models."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from app.cli import main
from mvk_tools.querysets import make_queries, write_queryset
from search import store
from search.testing import encoder_identity, frame_rows, object_rows

D = 4


@pytest.fixture(scope="module")
def hand_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Site Oahu_Jul2022, videos 0001/0002 at 30 fps, frames at 0 s and 1 s; one object on gid 3."""
    root = tmp_path_factory.mktemp("hand") / "idx"
    store.init_index(root, {"encoder": encoder_identity(D)})
    frames = frame_rows("Oahu_Jul2022", 4, videos=2, fps=1.0)
    frames["video_id"] = ["0001", "0001", "0002", "0002"]
    frames["frame_index"] = [0, 30, 0, 30]
    fv = np.array([[1, 0, 0, 0], [0.8, 0.6, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]], np.float32)
    objects = object_rows([3])
    store.write_shard(root, "Oahu_Jul2022", frames, fv, objects, np.array([[1, 0, 0, 0]], np.float32), {})
    return root


def _vector_queryset(path: Path) -> Path:
    q = make_queries([
        # frame fusion: gid3 scores 0, below gid0 (1) and gid1 (0.8), tied with gid2 (0): rank 4.
        # object fusion: gid3's object scores 1, tied with gid0: rank 2.
        {"query_id": "q1", "query_type": "novice", "text": "a starfish", "target_site": "Oahu_Jul2022",
         "target_video": "0002", "target_frame": 30, "target_time": None, "vector": np.array([1, 0, 0, 0.0])},
        # gid1 scores 0.6, below gid2 (1): rank 2 in every mode.
        {"query_id": "q2", "query_type": "expert", "text": "a crab", "target_site": "Oahu_Jul2022",
         "target_video": "1", "target_frame": None, "target_time": 1.2, "vector": np.array([0, 1, 0, 0.0])},
        {"query_id": "q3", "query_type": "novice", "text": "a wreck", "target_site": "Bali_Jan2020",
         "target_video": "0001", "target_frame": 3, "target_time": None, "vector": np.array([0, 0, 1, 0.0])},
        {"query_id": "q4", "query_type": "novice", "text": "wrong dim", "target_site": "Oahu_Jul2022",
         "target_video": "0001", "target_frame": 0, "target_time": None, "vector": np.array([1, 0, 0.0])},
    ])
    write_queryset(q, path, with_vectors=True)
    with path.open("a", encoding="utf-8") as f:
        f.write("q5,novice,,Oahu_Jul2022,0001,0,,,1|0|0|0\n")      # line 6: empty text
    return path


def test_known_ranks_with_file_vectors(hand_index: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    qfile = _vector_queryset(tmp_path / "q.csv")
    out = tmp_path / "run"
    code = main(["kis", str(qfile), "--index", str(hand_index), "--out", str(out), "--use-file-vectors",
                 "--fusion", "frame,object,max"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    pq = pd.read_csv(out / "per_query.csv").set_index(["query_id", "fusion"])
    assert pq.loc[("q1", "frame"), "rank"] == 4 and pq.loc[("q1", "frame"), "ties"] == 1
    assert pq.loc[("q1", "object"), "rank"] == 2 and pq.loc[("q1", "max"), "rank"] == 2
    assert (pq.loc["q2", "rank"] == 2).all()
    assert (pq.loc["q3", "status"] == "not_in_index").all()
    assert "q4" not in pq.index.get_level_values(0) and "q5" not in pq.index.get_level_values(0)
    assert f"{qfile}:5" in captured.err and "3 dimensions" in captured.err
    assert f"{qfile}:6" in captured.err and "empty text" in captured.err
    summary = json.loads((out / "summary.json").read_text())
    groups = {(g["query_type"], g["fusion"]): g for g in summary["groups"]}
    assert groups[("novice", "object")]["n"] == 1 and groups[("novice", "object")]["n_not_in_index"] == 1
    assert groups[("novice", "object")]["mrr"] == pytest.approx(0.5)
    assert groups[("expert", "frame")]["hit@1"] == 0.0 and groups[("expert", "frame")]["hit@10"] == 1.0
    assert summary["not_in_index"][0]["query_id"] == "q3" and "Bali_Jan2020" in summary["not_in_index"][0]["reason"]
    assert summary["n_frames"] == 4 and "pessimistic" in summary["tie_rule"]
    assert sorted(summary["plots"]) == ["rank_boxes.png", "rank_curves.png", "scatter_expert_vs_novice.png"] or \
        sorted(summary["plots"]) == ["rank_boxes.png", "rank_curves.png"]
    for name in summary["plots"]:
        assert (out / name).stat().st_size > 5000
    assert "novice" in captured.out and "not in the index" in captured.out
    wrote = [line for line in captured.out.splitlines() if line.startswith("wrote")]
    assert wrote == [f"wrote into {out}: " + ", ".join(["per_query.csv", "summary.json", *summary["plots"]])]


def test_file_vectors_of_another_dimension_are_refused(hand_index: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    q = make_queries([{"query_id": "a", "query_type": "novice", "text": "reef", "target_site": "Oahu_Jul2022",
                       "target_video": "0001", "target_frame": 0, "target_time": None, "vector": np.ones(512)}])
    qfile = write_queryset(q, tmp_path / "q.csv", with_vectors=True)
    assert main(["kis", str(qfile), "--index", str(hand_index), "--out", str(tmp_path / "o"),
                 "--use-file-vectors"]) == 2
    err = capsys.readouterr().err
    assert "[512] dimensions" in err and "encoder has 4" in err and "without --use-file-vectors" in err


def test_random_weight_index_is_queried_with_its_own_random_encoder_as_mvk_search_does(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """mvk search and mvk kis agree: an index built with random weights is queried with them, flag or not, and
    says so; --random-weights on an index with pretrained weights is refused by both."""
    from search.encoder import TEST_MODEL, load_encoder

    enc = load_encoder(TEST_MODEL, random_weights=True)
    texts = ["a red fish", "a diver", "a wreck", "coral"]
    for name, identity in (("random", enc.identity()), ("pretrained", {**enc.identity(), "random_weights": False,
                                                                       "pretrained": "openai"})):
        root = tmp_path / name
        store.init_index(root, {"encoder": identity})
        store.write_shard(root, "Oahu_Jul2022", frame_rows("Oahu_Jul2022", 4, videos=1), enc.encode_text(texts),
                          object_rows([]), np.zeros((0, enc.dim), np.float32), {})
    qfile = write_queryset(make_queries([{"query_id": "q", "query_type": "novice", "text": "a diver",
                                          "target_site": "Oahu_Jul2022", "target_video": "Oahu_Jul2022-v0",
                                          "target_frame": None, "target_time": 1.0}]), tmp_path / "q.csv")
    for flag in ([], ["--random-weights"]):
        assert main(["kis", str(qfile), "--index", str(tmp_path / "random"), "--out", str(tmp_path / "o"),
                     *flag]) == 0
        assert "random-weight encoder: these ranks mean nothing" in capsys.readouterr().out
        assert main(["search", "a diver", "--index", str(tmp_path / "random"), *flag]) == 0
        assert "random weights" in capsys.readouterr().err
    assert main(["kis", str(qfile), "--index", str(tmp_path / "pretrained"), "--out", str(tmp_path / "o"),
                 "--random-weights"]) == 2
    assert "drop the flag" in capsys.readouterr().err
    assert main(["search", "a diver", "--index", str(tmp_path / "pretrained"), "--random-weights"]) == 2
    assert "drop the flag" in capsys.readouterr().err


def test_a_rerun_of_mvk_kis_reads_its_text_vectors_from_the_index_cache_and_ranks_the_same(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from search.encoder import TEST_MODEL, Encoder, load_encoder

    enc = load_encoder(TEST_MODEL, random_weights=True)
    root = tmp_path / "idx"
    store.init_index(root, {"encoder": enc.identity()})
    store.write_shard(root, "Oahu_Jul2022", frame_rows("Oahu_Jul2022", 4, videos=1),
                      enc.encode_text(["a red fish", "a diver", "a wreck", "coral"]),
                      object_rows([]), np.zeros((0, enc.dim), np.float32), {})
    qfile = write_queryset(make_queries([{"query_id": f"q{i}", "query_type": "novice", "text": text,
                                          "target_site": "Oahu_Jul2022", "target_video": "Oahu_Jul2022-v0",
                                          "target_frame": None, "target_time": 1.0}
                                         for i, text in enumerate(["a diver", "a wreck", "a diver"])]),
                           tmp_path / "q.csv")
    encoded: list[str] = []
    real = Encoder.encode_text

    def counting(self, texts, **kw):
        encoded.extend(texts)
        return real(self, texts, **kw)

    monkeypatch.setattr(Encoder, "encode_text", counting)
    for out in ("o1", "o2"):
        assert main(["kis", str(qfile), "--index", str(root), "--out", str(tmp_path / out), "--threads", "1"]) == 0
    assert sorted(encoded) == ["a diver", "a wreck"]          # each text once, the second run none
    assert list((root / "cache" / "text-vectors").glob("*/seg-*.npz"))
    first, second = (pd.read_csv(tmp_path / o / "per_query.csv") for o in ("o1", "o2"))
    pd.testing.assert_frame_equal(first, second)
    assert main(["kis", str(qfile), "--index", str(root), "--out", str(tmp_path / "o3"), "--no-cache"]) == 0
    assert len(encoded) == 4


def test_unusable_files_and_bad_options(hand_index: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    junk = tmp_path / "junk.csv"
    junk.write_text("a,b,c\n1,2,3\n", encoding="utf-8")
    assert main(["kis", str(junk), "--index", str(hand_index), "--out", str(tmp_path / "o"),
                 "--use-file-vectors"]) == 2
    err = capsys.readouterr().err
    assert str(junk) in err and "header not recognised" in err and "no usable query" in err
    assert main(["kis", str(junk), "--index", str(hand_index), "--out", str(tmp_path / "o"),
                 "--fusion", "frame,best"]) == 2
    assert "unknown mode(s) ['best']" in capsys.readouterr().err


def test_caption_command_defaults_match_the_library() -> None:
    from mvk_tools import captions
    from mvk_tools.commands import captions as cmd
    assert (cmd.DEFAULT_MODEL, cmd.DEFAULT_PRETRAINED, cmd.DEFAULT_MAX_TOKENS) == \
        (captions.DEFAULT_MODEL, captions.DEFAULT_PRETRAINED, captions.DEFAULT_MAX_TOKENS)


@pytest.fixture(scope="module")
def synth_index(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """An `mvk synth` collection (12 fps) indexed by `mvk index` with the colour baseline backbone and the
    tiny random CLIP, one frame a second."""
    base = tmp_path_factory.mktemp("synth")
    coll, idx = base / "coll", base / "idx"
    assert main(["synth", str(coll), "--sites", "1", "--videos", "2", "--frames", "24", "--size", "96x64",
                 "--objects", "2", "--seed", "5"]) == 0
    assert main(["index", str(coll), "--index", str(idx), "--backbone", "color", "--model", "mvk-tiny-vit",
                 "--random-weights", "--every", "1", "--key-stride", "2", "--no-progress"]) == 0
    return coll, idx


def _mvk_files_from_selected_frames(coll: Path, folder: Path) -> tuple[Path, Path, int]:
    """MVK-format KIS files for the collection's selected frames, plus one target outside the collection."""
    jpgs = sorted((coll / "information" / "selected_frames").rglob("*.jpg"))
    rows = [f"/data/MVK/information/selected_frames/{p.parent.name}/{p.name}" for p in jpgs]
    rows.append("/data/MVK/information/selected_frames/Bali_Jan2020/0001_00030.jpg")
    vec = "|".join(["0.1"] * 8)
    novice = folder / "kis_novice_clipcap.csv"
    novice.write_text("img; CLIP_img; ClipCap_text; CLIP_ClipCap; novice_text; CLIP_text\n" + "".join(
        f"{r}; {vec}; a fish swimming over the sand.; {vec}; orange blob on blue; {vec}\n" for r in rows),
        encoding="utf-8")
    expert = folder / "kis_expert.csv"
    expert.write_text("img; text; CLIP_text\n" + "".join(f"{r}; two textured shapes, one striped; {vec}\n"
                                                          for r in rows), encoding="utf-8")
    return novice, expert, len(jpgs)


def test_full_path_on_a_synth_collection(synth_index: tuple[Path, Path], tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    coll, idx = synth_index
    caps = tmp_path / "captions.csv"
    assert main(["captions", "--index", str(idx), "--out", str(caps), "--n", "3", "--seed", "1",
                 "--model", "mvk-tiny-coca", "--random-weights", "--max-tokens", "5"]) == 0
    cap = pd.read_csv(caps)
    assert len(cap) == 3 and set(cap["query_type"]) == {"clipcap-random-weights"}
    assert cap["source"].str.contains("RANDOM WEIGHTS").all()
    from_video = tmp_path / "captions_video.csv"                        # frames decoded from the videos
    assert main(["captions", "--index", str(idx), "--out", str(from_video), "--n", "3", "--seed", "1",
                 "--collection", str(coll), "--model", "mvk-tiny-coca", "--random-weights", "--max-tokens", "5"]) == 0
    assert list(pd.read_csv(from_video)["query_id"]) == list(cap["query_id"])   # same seed, same targets

    novice, expert, n_targets = _mvk_files_from_selected_frames(coll, tmp_path)
    out = tmp_path / "run"
    code = main(["kis", str(novice), str(expert), str(caps), "--index", str(idx), "--out", str(out),
                 "--random-weights", "--fusion", "frame,object"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    pq = pd.read_csv(out / "per_query.csv")
    n_frames = int(pq["n_frames"].iat[0])
    assert len(pq) == 2 * (3 * (n_targets + 1) + 3)
    ranked = pq[pq["status"] == "ranked"]
    assert len(ranked) == 2 * 3                                          # the captions' targets, by time
    assert ranked["rank"].between(1, n_frames).all()
    assert (ranked["n_matching"] >= 1).all() and (np.abs(ranked["best_time"] - ranked["target_time"]) <= 0.5).all()
    # an index sampled every second cannot say which frame <video>_<n>.jpg is: not guessed, said
    missing = pq[pq["status"] == "not_in_index"]
    assert len(missing) == 2 * 3 * (n_targets + 1)
    away = missing["target_site"] == "Bali_Jan2020"
    assert away.sum() == 6 and missing[~away]["reason"].str.contains("indexed without its selected frames").all()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["random_weights"] is True and "mean nothing" in summary["warning"]
    assert {g["query_type"] for g in summary["groups"]} == {"clipcap", "novice", "expert", "clipcap-random-weights"}
    assert set(summary["plots"]) >= {"rank_curves.png", "rank_boxes.png"}
    for name in summary["plots"]:
        with Image.open(out / name) as im:
            assert im.size[0] >= 500 and im.size[1] >= 400
    assert "random-weight encoder" in captured.out and "hits: time" in captured.out
    assert summary["match"] == "time" and summary["tolerance_s"] == 0.5


def test_out_that_is_a_file_and_tolerances_that_are_no_number(hand_index: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    qfile = _vector_queryset(tmp_path / "q.csv")
    taken = tmp_path / "taken"
    taken.write_text("not a folder", encoding="utf-8")
    assert main(["kis", str(qfile), "--index", str(hand_index), "--out", str(taken), "--use-file-vectors"]) == 2
    err = capsys.readouterr().err
    assert f"--out {taken}: is a file" in err and "Traceback" not in err
    assert taken.read_text(encoding="utf-8") == "not a folder"
    for bad in ("nan", "inf", "-1"):
        with pytest.raises(SystemExit) as exc:
            main(["kis", str(qfile), "--index", str(hand_index), "--out", str(tmp_path / "o"), "--tolerance", bad])
        assert exc.value.code == 2
        assert f"expected a finite number >= 0, got {bad!r}" in capsys.readouterr().err


def test_an_all_zero_file_vector_skips_its_row_only(hand_index: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    qfile = tmp_path / "zero.csv"
    qfile.write_text("query_id,query_type,text,target_site,target_video,target_frame,target_time,vector\n"
                     "z,novice,reef,Oahu_Jul2022,0001,0,,0|0|0|0\n"
                     "a,novice,reef,Oahu_Jul2022,0001,0,,1|0|0|0\n", encoding="utf-8")
    out = tmp_path / "o"
    assert main(["kis", str(qfile), "--index", str(hand_index), "--out", str(out), "--use-file-vectors"]) == 0
    assert f"{qfile}:2: skipped: query 'z': vector: vector is all zeros" in capsys.readouterr().err
    assert set(pd.read_csv(out / "per_query.csv")["query_id"]) == {"a"}


def test_a_missing_query_set_is_reported_once(hand_index: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["kis", str(tmp_path / "nofile.csv"), "--index", str(hand_index), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("no such file") == 1 and err.strip().startswith("mvk kis: error:")
    qfile = _vector_queryset(tmp_path / "q.csv")          # with a usable file beside it, the run goes on
    assert main(["kis", str(tmp_path / "nofile.csv"), str(qfile), "--index", str(hand_index), "--out",
                 str(tmp_path / "o"), "--use-file-vectors"]) == 0
    assert capsys.readouterr().err.count("nofile.csv: no such file") == 1

"""Several embedding spaces end to end: mvk index --model A --model B, then mvk search (fused, one space), mvk kis
(rows per space and per fusion of spaces), adding a space to an existing index (the first space untouched,
the same vectors as building both at once), resuming a killed space run, mvk check."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from app.cli import main
from search import store

TWO = ["--model", "mvk-tiny-vit", "--model", "mvk-tiny-siglip"]
COMMON = ["--random-weights", "--backbone", "color", "--every", "1", "--key-stride", "2", "--no-progress"]


@pytest.fixture(scope="module")
def coll(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("spaces")
    assert main(["synth", str(base / "coll"), "--sites", "2", "--videos", "2", "--frames", "24", "--size", "96x64",
                 "--objects", "2", "--seed", "3"]) == 0
    return base / "coll"


@pytest.fixture(scope="module")
def together(coll: Path) -> Path:
    idx = coll.parent / "together"
    assert main(["index", str(coll), "--index", str(idx), *TWO, *COMMON]) == 0
    return idx


def search_json(capsys, idx: Path, *extra: str) -> dict:
    capsys.readouterr()
    assert main(["search", "a red fish", "--index", str(idx), "--json", "--random-weights", "-k", "50", *extra]) == 0
    return json.loads(capsys.readouterr().out)


def test_search_is_fused_by_default_and_one_space_alone_on_request(together: Path, capsys) -> None:
    fused = search_json(capsys, together)
    assert fused["encoder"]["spaces"] == ["mvk-tiny-vit", "mvk-tiny-siglip"]
    assert any("fused the rankings of 2 embedding spaces" in n for n in fused["notes"])
    ranks = [r["spaces"] for r in fused["results"]]
    assert all(set(r) == {"mvk-tiny-vit", "mvk-tiny-siglip"} for r in ranks)
    scores = [r["score"] for r in fused["results"]]
    assert scores == sorted(scores, reverse=True)
    first = ranks[0]
    assert scores[0] == pytest.approx(sum(1 / (60 + r) for r in first.values() if r is not None), rel=1e-5)

    alone = search_json(capsys, together, "--space-fusion", "mvk-tiny-siglip")
    assert "spaces" not in alone["results"][0]
    from search.encoder import load_encoder
    from search.query import search
    view = store.open_index(together).in_space("mvk-tiny-siglip")
    direct = search(view, load_encoder("mvk-tiny-siglip", None, random_weights=True), "a red fish", k=50)
    assert [r["gid"] for r in alone["results"]] == direct["gid"].tolist()
    by_siglip = sorted(fused["results"], key=lambda r: r["spaces"]["mvk-tiny-siglip"] or 10**9)
    assert [r["gid"] for r in by_siglip][:5] == direct["gid"].tolist()[:5]

    grouped = search_json(capsys, together, "--group-by", "video")       # fused per frame, then one per video
    videos = [(r["site"], r["video_id"]) for r in grouped["results"]]
    assert len(videos) == len(set(videos)) == 4
    assert all(None not in r["spaces"].values() for r in grouped["results"])

    z = search_json(capsys, together, "--space-fusion", "zscore")
    assert sorted(r["gid"] for r in z["results"]) == sorted(r["gid"] for r in fused["results"])

    capsys.readouterr()
    assert main(["search", "a red fish", "--index", str(together), "--random-weights",
                 "--space-fusion", "ViT-B-32"]) == 2
    assert "mvk-tiny-vit, mvk-tiny-siglip" in capsys.readouterr().err


def test_kis_has_rows_per_space_and_per_fusion(together: Path, tmp_path: Path, capsys) -> None:
    caps = tmp_path / "caps.csv"
    assert main(["captions", "--index", str(together), "--out", str(caps), "--n", "3", "--seed", "1",
                 "--model", "mvk-tiny-coca", "--random-weights", "--max-tokens", "5"]) == 0
    out = tmp_path / "run"
    assert main(["kis", str(caps), "--index", str(together), "--out", str(out), "--random-weights",
                 "--fusion", "max"]) == 0
    pq = pd.read_csv(out / "per_query.csv")
    assert list(pq["space"].drop_duplicates()) == ["mvk-tiny-vit", "mvk-tiny-siglip", "fused (rrf)", "fused (zscore)"]
    assert (pq.groupby("space").size() == 3).all() and pq["rank"].between(1, pq["n_frames"].max()).all()
    summary = json.loads((out / "summary.json").read_text())
    assert {g["space"] for g in summary["groups"]} == set(pq["space"])
    assert [s["name"] for s in summary["spaces"]] == ["mvk-tiny-vit", "mvk-tiny-siglip"]
    # a fused row is the rank of the target under the fused scores of the two spaces' full rankings
    from search.encoder import load_encoder
    from search.query import score_frames_batch
    from search.spacefusion import fuse_scores
    from mvk_tools.kis import rank_of_target
    index = store.open_index(together)
    row = pq[pq["space"] == "fused (rrf)"].iloc[0]
    per = []
    for name in index.spaces():
        q = load_encoder(name, None, random_weights=True).encode_text([row["text"]])
        per.append(score_frames_batch(index.in_space(name), q, fusions=["max"])["max"][0])
    fused = fuse_scores(per, "rrf")
    best = int(row["best_gid"])
    assert rank_of_target(fused, np.array([best]))[0] == row["rank"]


def test_adding_a_space_embeds_only_it_and_leaves_the_first_untouched(coll: Path, together: Path, capsys) -> None:
    idx = coll.parent / "added"
    assert main(["index", str(coll), "--index", str(idx), "--model", "mvk-tiny-vit", *COMMON]) == 0
    sites = store.list_sites(idx)
    before = {s: {n: (store.shard_folder(idx, s) / n).read_bytes() for n in store.DATA_FILES} for s in sites}
    capsys.readouterr()
    assert main(["index", str(coll), "--index", str(idx), *TWO, *COMMON]) == 0
    out = capsys.readouterr().out
    assert re.search(r"spaces mvk-tiny-siglip: 2 video\(s\) embedded \(4 frames in [0-9.]+ s, [0-9.]+ f/s\), 0 reused",
                     out)
    assert "0 frames computed" not in out and " 2        0       0" not in out     # no video of the first space redone
    for site in sites:
        folder = store.shard_folder(idx, site)
        assert {n: (folder / n).read_bytes() for n in store.DATA_FILES} == before[site]
    a, b = store.open_index(idx), store.open_index(together)
    for site in sites:
        got = a.in_space("mvk-tiny-siglip").shards[site]
        want = b.in_space("mvk-tiny-siglip").shards[site]
        assert np.array_equal(got.vectors("frames"), want.vectors("frames"))
        assert np.array_equal(got.vectors("objects"), want.vectors("objects"))
    capsys.readouterr()
    assert main(["index", str(coll), "--index", str(idx), *COMMON]) == 0      # the spaces are the index's now
    assert "is up to date" in capsys.readouterr().out
    assert main(["check", str(idx)]) == 0


def test_a_killed_space_run_resumes_at_the_next_video(coll: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    idx = tmp_path / "killed"
    assert main(["index", str(coll), "--index", str(idx), "--model", "mvk-tiny-vit", *COMMON]) == 0
    from indexer import spaces as S
    real, calls = S.video_vectors, []

    def dies_on_the_second(*args, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(S, "video_vectors", dies_on_the_second)
    assert main(["index", str(coll), "--index", str(idx), *TWO, *COMMON]) == 130      # as after Ctrl-C
    monkeypatch.setattr(S, "video_vectors", real)
    assert store.read_manifest(idx)["spaces"][0]["name"] == "mvk-tiny-siglip"
    capsys.readouterr()
    assert main(["index", str(coll), "--index", str(idx), *TWO, *COMMON]) == 0
    out = capsys.readouterr().out
    assert re.search(r"2 video\(s\) embedded \(.*\), 0 reused", out)
    assert re.search(r"1 video\(s\) embedded \(2 frames .*\), 1 reused", out)


def test_a_space_without_dense_features_embeds_crops(coll: Path, tmp_path: Path, capsys) -> None:
    idx = tmp_path / "rn"
    assert main(["index", str(coll), "--index", str(idx), "--model", "mvk-tiny-vit", "--model", "mvk-tiny-rn",
                 "--site", "Oahu_Jul2022", *COMMON]) == 0
    out = capsys.readouterr()
    assert "mvk-tiny-rn has no per-patch features" in out.out + out.err
    space = store.read_manifest(idx)["spaces"][0]
    assert space["name"] == "mvk-tiny-rn" and space["objects"] == "crop"
    view = store.open_index(idx).in_space("mvk-tiny-rn")
    assert np.isfinite(view.shards["Oahu_Jul2022"].vectors("objects").astype(np.float32)).all()


def test_the_same_model_twice_is_refused(coll: Path, tmp_path: Path, capsys) -> None:
    assert main(["index", str(coll), "--index", str(tmp_path / "x"), "--model", "mvk-tiny-vit",
                 "--model", "mvk-tiny-siglip", "--model", "mvk-tiny-siglip", *COMMON]) == 2
    assert "mvk-tiny-siglip is given twice" in capsys.readouterr().err
    assert main(["index", str(coll), "--index", str(tmp_path / "y"), "--model", "mvk-tiny-vit@",
                 *COMMON]) == 2
    assert "NAME@TAG" in capsys.readouterr().err


def test_a_damaged_space_table_is_rewritten_by_the_next_run(coll: Path, together: Path, tmp_path: Path,
                                                             capsys) -> None:
    import shutil
    idx = tmp_path / "damaged"
    shutil.copytree(together, idx)
    path = store.shard_folder(idx, "Oahu_Jul2022") / "objects.mvk-tiny-siglip.faiss"
    path.write_bytes(path.read_bytes()[:-16])
    assert main(["check", str(idx)]) == 1
    capsys.readouterr()
    assert main(["index", str(coll), "--index", str(idx), *TWO, *COMMON]) == 0
    out = capsys.readouterr().out
    assert re.search(r"Oahu_Jul2022: spaces mvk-tiny-siglip: 0 video\(s\) embedded \(0 frames .*\), 2 reused", out)
    assert main(["check", str(idx)]) == 0
    a, b = store.open_index(idx), store.open_index(together)
    assert np.array_equal(a.in_space("mvk-tiny-siglip").shards["Oahu_Jul2022"].vectors("objects"),
                          b.in_space("mvk-tiny-siglip").shards["Oahu_Jul2022"].vectors("objects"))


def test_another_first_model_is_refused_with_how_to_add_a_space(coll: Path, together: Path, capsys) -> None:
    capsys.readouterr()
    assert main(["index", str(coll), "--index", str(together), "--model", "mvk-tiny-siglip", *COMMON]) == 2
    err = capsys.readouterr().err
    assert "index has 'mvk-tiny-vit', you asked 'mvk-tiny-siglip'" in err
    assert "--model mvk-tiny-vit --model mvk-tiny-siglip" in err


def test_a_survey_scores_the_space_asked(together: Path, tmp_path: Path, capsys) -> None:
    capsys.readouterr()
    assert main(["survey", "a fish", "--index", str(together), "--out", str(tmp_path / "s"), "--random-weights",
                 "--space", "mvk-tiny-siglip"]) == 0
    assert "surveyed in the embedding space mvk-tiny-siglip" in capsys.readouterr().err
    assert json.loads((tmp_path / "s" / "survey.json").read_text())["model"].startswith("mvk-tiny-siglip")
    assert main(["survey", "a fish", "--index", str(together), "--out", str(tmp_path / "t"), "--random-weights",
                 "--space", "nope"]) == 2
    assert "its spaces: mvk-tiny-vit, mvk-tiny-siglip" in capsys.readouterr().err


def test_a_video_that_no_longer_gives_its_frames_fails_the_space_not_the_site(coll: Path, tmp_path: Path,
                                                                              monkeypatch, capsys) -> None:
    idx = tmp_path / "short"
    assert main(["index", str(coll), "--index", str(idx), "--model", "mvk-tiny-vit", "--site", "Oahu_Jul2022",
                 *COMMON]) == 0
    from indexer import work
    real = work.frames_of

    def one_frame_short(task, settings):
        frames = list(real(task, settings))
        return frames[:-1] if task.video_id == "0002" else frames

    monkeypatch.setattr(work, "frames_of", one_frame_short)
    capsys.readouterr()
    assert main(["index", str(coll), "--index", str(idx), *TWO, "--site", "Oahu_Jul2022", *COMMON]) == 0
    out = capsys.readouterr().out
    assert "space mvk-tiny-siglip not added: 1 video(s) could not be embedded" in out
    assert "gives 1 frames, the index holds 2: it changed since it was indexed" in out
    assert "some videos failed" in out
    index = store.open_index(idx)                                  # still served, from its first space
    assert not index.errors and "mvk-tiny-siglip" not in index.shards["Oahu_Jul2022"].space_tables
    monkeypatch.setattr(work, "frames_of", real)
    capsys.readouterr()
    assert main(["index", str(coll), "--index", str(idx), *TWO, "--site", "Oahu_Jul2022", *COMMON]) == 0
    assert re.search(r"1 video\(s\) embedded \(.*\), 1 reused", capsys.readouterr().out)   # the good part kept

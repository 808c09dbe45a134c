"""One query path: one encoder rule for every front end, one service behind the CLI, the app and the API, FAISS
indexes by factory string with query-time nprobe / efSearch."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from app.cli import main
from search import store
from search.errors import MissingWeightsError, QueryError
from search.query import search
from search.scoring import SearchParams
from search.testing import encoder_identity, frame_rows, object_rows, random_unit
from tests.app_fixtures import small_index

D = 32


def hand_made(root: Path, index_type: str, n: int = 2000, seed: int = 0) -> Path:
    """An index of random unit vectors, one object per frame, in one shard of the given type."""
    store.init_index(root, {"encoder": encoder_identity(D)})
    store.write_shard(root, "S", frame_rows("S", n), random_unit(n, D, seed), object_rows(list(range(n))),
                      random_unit(n, D, seed + 1), {}, index_type=index_type)
    return root


@pytest.mark.parametrize("spec", ["IVF8,Flat", "HNSW16"])
def test_a_factory_string_index_builds_is_recorded_and_searches(tmp_path, spec):
    root = hand_made(tmp_path / "idx", spec)
    manifest = store.shard_manifest(root, "S")
    assert manifest["index_type"] == spec
    assert manifest["tables"]["frames"]["params"]["factory"] == spec
    index = store.open_index(root)
    q = random_unit(1, D, 7)[0]
    exact = search(index, None, q, k=10, exact=True)
    approx = search(index, None, q, k=10, exact=False,
                    params=SearchParams(nprobe=8) if "IVF" in spec else SearchParams(ef_search=4000))
    assert approx["gid"].tolist() == exact["gid"].tolist()       # every list probed / whole graph: exact


def test_nprobe_changes_the_candidate_set_and_is_refused_where_it_does_not_apply(tmp_path):
    index = store.open_index(hand_made(tmp_path / "ivf", "IVF16,Flat"))
    q = random_unit(1, D, 3)[0]
    one = search(index, None, q, k=20, params=SearchParams(nprobe=1))
    every = search(index, None, q, k=20, params=SearchParams(nprobe=16))
    exact = search(index, None, q, k=20, exact=True)
    assert every["gid"].tolist() == exact["gid"].tolist()
    assert one["gid"].tolist() != every["gid"].tolist()
    with pytest.raises(QueryError, match="ef_search applies to HNSW"):
        search(index, None, q, params=SearchParams(ef_search=16))
    flat = store.open_index(hand_made(tmp_path / "flat", "flat", n=50))
    with pytest.raises(QueryError, match="nprobe applies to IVF"):
        search(flat, None, q, params=SearchParams(nprobe=4))


def test_a_typo_in_a_factory_string_is_refused_before_anything_is_built(tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["index", str(tmp_path), "--all", "--index", str(tmp_path / "idx"), "--index-type", "IVFx,Flat"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "IVFx,Flat" in err and "factory string" in err and "Traceback" not in err
    assert not (tmp_path / "idx").exists()


def test_mvk_index_with_a_factory_string_then_search_with_ef_search(tmp_path, capsys):
    from mvk_tools.synth import make_collection
    from tests.test_index_cli import index_args

    collection = make_collection(tmp_path / "coll", sites=("Oahu_Jul2022",), videos_per_site=1, n_frames=24,
                                 size=(160, 96), fps=12.0)
    idx = tmp_path / "idx"
    assert main(index_args(collection, idx, "--all", "--index-type", "HNSW8", "--backbone", "color")) == 0
    capsys.readouterr()
    manifest = store.shard_manifest(idx, "Oahu_Jul2022")
    assert manifest["index_type"] == "HNSW8" and manifest["tables"]["frames"]["params"]["factory"] == "HNSW8"
    assert main(["search", "a red fish", "--index", str(idx), "--ef-search", "16", "--json", "--random-weights"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["results"] and body["results"][0]["id"].startswith("Oahu_Jul2022/")
    assert main(["search", "a red fish", "--index", str(idx), "--nprobe", "4", "--random-weights"]) == 2
    assert "nprobe applies to IVF" in capsys.readouterr().err


# -- one encoder rule ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def checkpoint_index(tmp_path_factory):
    """An index built with a local CLIP checkpoint file (the tiny test model's random weights, saved), and that
    file."""
    import torch

    from indexer.models import load_models
    from indexer.pipeline import IndexConfig, index_collection
    from mvk_tools.synth import make_collection
    from search.encoder import TEST_MODEL, load_encoder

    base = tmp_path_factory.mktemp("ckpt")
    weights = base / "clip_marine.pt"
    torch.save(load_encoder(TEST_MODEL, None, random_weights=True).model.state_dict(), weights)
    collection = make_collection(base / "collection", sites=("Oahu_Jul2022",), videos_per_site=1, n_frames=24,
                                 size=(160, 96), fps=12.0)
    _, extractor = load_models(model=TEST_MODEL, pretrained=None, backbone="color", random_weights=True)
    encoder = load_encoder(TEST_MODEL, None, checkpoint=weights)
    index = base / "index"
    result = index_collection(collection, index, encoder=encoder, extractor=extractor,
                              config=IndexConfig(every_seconds=0.5))
    assert result.ok and store.read_manifest(index)["encoder"]["checkpoint"]["name"] == "clip_marine.pt"
    return collection, index, weights


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()[-1]
    return err.split(": error: ", 1)[1]


def test_a_checkpoint_index_is_refused_identically_without_the_file(checkpoint_index, capsys, tmp_path):
    from app.state import AppConfig, load_encoder_for

    collection, index, _ = checkpoint_index
    assert main(["search", "a fish", "--index", str(index)]) == 2
    from_search = _error(capsys)
    from mvk_tools.querysets import make_queries, write_queryset
    frame = store.open_index(index).frames.iloc[0]
    queries = write_queryset(make_queries([{"query_id": "q", "query_type": "novice", "text": "a fish",
                                            "target_site": frame["site"], "target_video": frame["video_id"],
                                            "target_frame": None, "target_time": float(frame["time"])}]),
                             tmp_path / "q.csv")
    assert main(["kis", str(queries), "--index", str(index), "--out", str(tmp_path / "kis")]) == 2
    from_kis = _error(capsys)
    assert main(["serve", "--index", str(index), "--port", "8765"]) == 2
    from_serve = _error(capsys)
    with pytest.raises(MissingWeightsError) as app_error:
        load_encoder_for(store.open_index(index), AppConfig(index=index, collection=collection))
    assert from_search == from_kis == from_serve == str(app_error.value)
    assert "clip_marine.pt" in from_search and "--clip-checkpoint" in from_search


def test_a_checkpoint_index_opens_everywhere_with_the_file(checkpoint_index, capsys, tmp_path):
    from fastapi.testclient import TestClient

    from app.api import create_app
    from app.service import SearchService
    from app.state import AppConfig, load_encoder_for
    from search.identity import EncoderChoice

    collection, index, weights = checkpoint_index
    assert main(["search", "a fish", "--index", str(index), "--clip-checkpoint", str(weights), "--json"]) == 0
    cli = [r["gid"] for r in json.loads(capsys.readouterr().out)["results"]]
    assert main(["search", "a fish", "--index", str(index), "--checkpoint", str(weights), "--json"]) == 0
    old_flag = capsys.readouterr()
    assert "--checkpoint is deprecated" in old_flag.err and "--clip-checkpoint" in old_flag.err
    service = SearchService(index, collection, choice=EncoderChoice(checkpoint=str(weights)))
    api = TestClient(create_app(service)).get("/search", params={"q": "a fish", "k": len(cli)}).json()
    assert [r["gid"] for r in api["results"]] == cli
    encoder = load_encoder_for(store.open_index(index), AppConfig(index=index, collection=collection,
                                                                  clip_checkpoint=weights))
    assert encoder.identity()["checkpoint"]["name"] == "clip_marine.pt"


def test_the_search_page_and_the_api_give_the_same_results_and_paging(tmp_path_factory, tmp_path, monkeypatch):
    from fastapi.testclient import TestClient
    from streamlit.testing.v1 import AppTest

    from app.api import create_app
    from app.service import SearchService
    from tests.test_app_pages import APP, TIMEOUT

    collection, built = small_index(tmp_path_factory)
    index = tmp_path / "index"
    shutil.copytree(built, index)
    monkeypatch.setenv("MVK_INDEX", str(index))
    monkeypatch.setenv("MVK_COLLECTION", str(collection))
    monkeypatch.setenv("MVK_RANDOM_WEIGHTS", "1")
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    at.switch_page("ui/search_page.py").run()
    at.text_input(key="q_text").set_value("a yellow striped ellipse")
    at.slider(key="k").set_value(8)
    [b for b in at.get("form_submit_button") if b.label == "Search"][0].click().run()
    assert not at.exception, [e.value for e in at.exception]
    page_gids = at.session_state["search_results"]["gid"].tolist()
    assert len(page_gids) == 8
    api = TestClient(create_app(SearchService(index, collection)))
    first = api.get("/search", params={"q": "a yellow striped ellipse", "k": 4}).json()
    second = api.get("/search", params={"q": "a yellow striped ellipse", "k": 4, "offset": 4}).json()
    assert first["has_more"] is True
    assert [r["gid"] for r in first["results"] + second["results"]] == page_gids

"""The app on an index with two embedding spaces (AppTest): the search page's *Embedding spaces* setting fuses
the spaces or picks one (and a link keeps the choice), fused result cards show their rank in each space, the
Index page lists the spaces; an index with one space shows none of it."""
from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from tests.app_fixtures import TWO_SPACES, configure_app, small_index, two_space_index
from tests.test_api_spaces import alone_in_space
from tests.test_app_pages import APP, TIMEOUT, page, search, shown

FIRST, SECOND = TWO_SPACES
TEXT = "a red striped fish"


@pytest.fixture()
def two(tmp_path_factory, tmp_path, monkeypatch):
    return configure_app(monkeypatch, two_space_index(tmp_path_factory), tmp_path)


@pytest.fixture()
def one(tmp_path_factory, tmp_path, monkeypatch):
    return configure_app(monkeypatch, small_index(tmp_path_factory), tmp_path)


def rank_captions(at: AppTest) -> list[str]:
    return [shown(c.value) for c in at.caption if c.value.startswith("ranks: ")]


def test_the_setting_fuses_by_default_and_a_space_answers_alone(two):
    at = page()
    control = at.selectbox(key="space_fusion")
    assert control.label == "Embedding spaces" and control.value == "rrf"
    assert control.options == ["fused: reciprocal rank", "fused: z-scores", FIRST, SECOND]
    search(at, TEXT)
    fused = at.session_state["search_results"]
    assert len(fused) == 16 and all(set(r) == set(TWO_SPACES) for r in fused["spaces"])
    captions = rank_captions(at)
    assert len(captions) == 16
    best = fused.iloc[0]["spaces"]
    assert captions[0] == f"ranks: {FIRST} {best[FIRST]} · {SECOND} {best[SECOND]}"
    assert any("spaces fused by reciprocal rank" in shown(c.value) for c in at.caption if " frames for " in c.value)

    at.selectbox(key="space_fusion").set_value(SECOND).run()
    assert not at.exception, [e.value for e in at.exception]
    alone = at.session_state["search_results"]
    assert alone["gid"].tolist() == alone_in_space(two, SECOND, TEXT, 16)
    assert alone["gid"].tolist() != fused["gid"].tolist() and not rank_captions(at)
    assert any(f"space {SECOND} only" in shown(c.value) for c in at.caption if " frames for " in c.value)

    at.selectbox(key="space_fusion").set_value("zscore").run()
    zscore = at.session_state["search_results"]
    assert set(zscore["gid"]) == set(fused["gid"]) and len(rank_captions(at)) == 16


def test_a_link_keeps_the_chosen_space(two):
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params["q_text"] = TEXT
    at.query_params["space_fusion"] = FIRST
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.selectbox(key="space_fusion").value == FIRST
    assert at.session_state["search_results"]["gid"].tolist() == alone_in_space(two, FIRST, TEXT, 16)


def test_the_index_page_lists_the_spaces(two):
    at = page("index_page")
    assert any(s.value == "Embedding spaces" for s in at.subheader)
    tables = [d.value for d in at.dataframe if "space" in d.value.columns]
    assert len(tables) == 1
    table = tables[0]
    assert table["space"].tolist() == list(TWO_SPACES)
    assert table["dim"].tolist() == [64, 64] and table["objects"].tolist() == ["pool", "pool"]
    assert table["sites with vectors"].tolist() == ["2 of 2", "2 of 2"]


def test_a_one_space_index_shows_no_spaces(one):
    at = search(page(), TEXT)
    assert not [s for s in at.selectbox if s.key == "space_fusion"]
    assert len(at.session_state["search_results"]) == 16 and not rank_captions(at)
    assert not any("fused" in c.value for c in at.caption)
    at = page("index_page")
    assert not any(s.value == "Embedding spaces" for s in at.subheader)
    assert not [d for d in at.dataframe if "space" in d.value.columns]


def test_the_random_weights_banner_names_a_further_space_once_in_words():
    from app.ui.common import part_names, random_parts

    manifest = {"encoder": {"model": FIRST, "random_weights": True},
                "spaces": [{"name": SECOND, "encoder": {"model": SECOND, "random_weights": True}}]}
    assert part_names(random_parts(manifest)) == ["CLIP encoder"]


def test_the_downloads_give_each_space_its_rank_column():
    import pandas as pd

    from app.ui.results import export_table

    found = pd.DataFrame({"rank": [1, 2], "gid": [5, 3], "spaces": [{FIRST: 2, SECOND: 1}, {FIRST: 1, SECOND: None}]})
    table = export_table(found)
    assert "spaces" not in table and table[f"rank in {FIRST}"].tolist() == [2, 1]
    assert table[f"rank in {SECOND}"].iloc[0] == 1 and pd.isna(table[f"rank in {SECOND}"].iloc[1])
    assert list(export_table(found.drop(columns="spaces")).columns) == ["rank", "gid"]


def test_the_spaces_table_names_the_sites_a_space_lacks():
    from types import SimpleNamespace

    from app.indexing import space_table
    from app.service import space_records

    identity = {"model": FIRST, "dim": 16}
    manifest = {"encoder": identity, "indexing": {"objects": "pool"},
                "spaces": [{"name": SECOND, "encoder": {"model": SECOND, "dim": 24}, "objects": "crop"}]}
    index = SimpleNamespace(manifest=manifest, shards={
        "A": SimpleNamespace(manifest={"spaces": {SECOND: {"dim": 24}}}), "B": SimpleNamespace(manifest={})})
    records = space_records(index)
    assert [(r["name"], r["dim"], r["objects"], r["sites"]) for r in records] == [
        (FIRST, 16, "pool", ["A", "B"]), (SECOND, 24, "crop", ["A"])]
    assert space_table(index)["sites with vectors"].tolist() == ["2 of 2", "1 of 2 (not yet: B)"]


def test_the_survey_page_scores_the_chosen_space(two):
    at = page("survey_page")
    control = at.selectbox(key="s_space")
    assert control.options == list(TWO_SPACES) and control.value == TWO_SPACES[0]
    control.set_value(TWO_SPACES[1]).run()
    at.text_input(key="s_text").input("a red fish")
    at.button[0].click().run()
    assert not at.exception and not at.error
    assert any(f"surveyed in the embedding space {TWO_SPACES[1]}" in shown(c.value) for c in at.caption)


def test_the_index_page_adds_a_model_as_a_further_space(one):
    import time

    from app.state import job_registry
    from search.store import open_index
    from tests.test_app_pages import click

    at = page("index_page")
    at.text_input(key="b_models").set_value(SECOND)
    click(at, "Index")
    assert not at.exception, [e.value for e in at.exception]
    job = job_registry().jobs["index"]
    deadline = time.time() + TIMEOUT
    while not job.finished and time.time() < deadline:
        time.sleep(0.5)
        at.run()
    assert job.finished and not job.error, job.error
    at.run()
    assert any("Indexing finished" in s.value for s in at.success)
    assert any(f"spaces {SECOND}: 2 video(s) embedded" in shown(c.value) for c in at.caption)
    assert open_index(one).spaces() == [FIRST, SECOND]
    at.run()
    tables = [d.value for d in at.dataframe if "space" in d.value.columns]
    assert tables and tables[0]["space"].tolist() == [FIRST, SECOND]


def test_a_model_that_cannot_be_added_fails_the_job_with_its_reason(one):
    import time

    from app.state import job_registry
    from tests.test_app_pages import click

    at = page("index_page")
    at.text_input(key="b_models").set_value("no-such-model")
    click(at, "Index")
    job = job_registry().jobs["index"]
    deadline = time.time() + TIMEOUT
    while not job.finished and time.time() < deadline:
        time.sleep(0.5)
        at.run()
    at.run()
    assert job.error and "unknown open_clip model 'no-such-model'" in job.error
    assert any("Indexing failed" in e.value and "no-such-model" in shown(e.value) for e in at.error)

"""Every page of the Streamlit app driven through streamlit.testing.v1.AppTest on a small real index
(tiny random CLIP, colour segmentation): queries give results, filters change them, the benchmark runs,
a session saves a query, a rebuild shows progress, paths outside the collection are not served."""
from __future__ import annotations

import io
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from tests.app_fixtures import SITES, small_index

APP = str(Path(__file__).resolve().parents[1] / "app" / "streamlit_app.py")
TIMEOUT = 120


@pytest.fixture(scope="session")
def built(tmp_path_factory) -> tuple[Path, Path]:
    return small_index(tmp_path_factory)


@pytest.fixture()
def app_env(built, tmp_path, monkeypatch) -> tuple[Path, Path]:
    """The app configured on a private copy of the index (pages may write query sets or shards into it)."""
    from tests.app_fixtures import configure_app
    return built[0], configure_app(monkeypatch, built, tmp_path)


def page(name: str | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    assert not at.exception, [e.value for e in at.exception]
    if name:
        at.switch_page(f"ui/{name}.py").run()
        assert not at.exception, [e.value for e in at.exception]
    return at


def search(at: AppTest, text: str) -> AppTest:
    at.text_input(key="q_text").set_value(text)
    click(at, "Search")
    assert not at.exception, [e.value for e in at.exception]
    return at


def click(at: AppTest, label: str) -> AppTest:
    """Press the (form submit or plain) button with this label and rerun."""
    buttons = [b for b in (*at.button, *at.get("form_submit_button")) if getattr(b, "label", "") == label]
    assert buttons, f"no button {label!r}"
    return buttons[0].click().run()


def shown(markdown: str) -> str:
    """What a reader sees of escaped Markdown text (backslash escapes removed)."""
    return re.sub(r"\\(.)", r"\1", markdown)


def result_captions(at: AppTest) -> list[str]:
    return [shown(c.value) for c in at.caption if " · video " in c.value and "score" not in c.value]


def test_search_page_labels_random_weights_and_answers_a_text_query(app_env):
    at = page()
    assert any("random weights" in w.value for w in at.warning), "the smoke-run banner is missing"
    search(at, "a red striped fish")
    results = at.session_state["search_results"]
    assert len(results) == 16 and list(results["rank"]) == list(range(1, 17))
    assert len(at.image) == 16                       # one thumbnail per result
    assert len(result_captions(at)) == 16
    assert "Play" in at.button(key=f"play_{int(results['gid'].iloc[0])}").label


def test_filters_change_the_results(app_env):
    at = search(page(), "a red striped fish")
    everything = at.session_state["search_results"]
    assert set(everything["site"]) == set(SITES)
    at.multiselect(key="f_sites").set_value([SITES[1]]).run()
    filtered = at.session_state["search_results"]
    assert set(filtered["site"]) == {SITES[1]} and len(filtered) == 8
    assert all(SITES[1] in c for c in result_captions(at))
    at.slider(key="k").set_value(4).run()
    assert len(at.session_state["search_results"]) == 4 and len(at.image) == 4


def test_an_empty_query_says_so(app_env):
    at = search(page(), "   ")
    assert any("Type a description" in w.value for w in at.warning)
    assert "search_results" not in at.session_state and not at.image


def test_an_uploaded_image_finds_similar_frames_and_a_bad_upload_is_named(app_env):
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 80, 3), dtype=np.uint8)).save(buf, "PNG")
    at = page()
    at.file_uploader(key="q_image").set_value(("example.png", buf.getvalue(), "image/png"))
    click(at, "Search")
    assert not at.exception
    assert len(at.session_state["search_results"]) == 16
    at.file_uploader(key="q_image").set_value(("broken.png", b"not a png", "image/png"))
    click(at, "Search")
    assert any("broken.png" in shown(e.value) for e in at.error)


def test_playing_a_result_shows_its_video_from_that_moment_and_its_track(app_env):
    at = search(page(), "a red striped fish")
    results = at.session_state["search_results"]
    row = results[results["track_id"] >= 0].iloc[0] if (results["track_id"] >= 0).any() else results.iloc[0]
    at.button(key=f"play_{int(row['gid'])}").click().run()
    assert not at.exception
    videos = at.get("video")
    assert len(videos) == 1
    assert videos[0].proto.start_time == int(row["time"])
    assert any(str(row["video_id"]) in h.value for h in at.subheader)
    if int(row["track_id"]) >= 0:
        assert any("over time" in m.value for m in at.markdown)


def test_a_result_pointing_outside_the_collection_is_not_served(app_env):
    at = search(page(), "a red striped fish")
    row = at.session_state["search_results"].iloc[0].to_dict()
    row["video_path"] = "../../../../etc/passwd"
    at.session_state["selected"] = row
    at.run()
    assert not at.get("video")
    assert any("outside the folders" in e.value for e in at.error)


def test_grouping_by_video_shows_one_section_per_video(app_env):
    at = search(page(), "a red striped fish")
    at.toggle(key="group").set_value(True).run()
    sections = [m.value for m in at.markdown if m.value.startswith("#### ")]
    assert len(sections) == 4 and len(at.image) == 16


def temporal(at: AppTest, first: str, then: str, within: float) -> AppTest:
    at.text_input(key="q_then").set_value(then)
    at.number_input(key="q_within").set_value(within)
    return search(at, first)


def test_a_temporal_query_shows_pairs_in_one_video_later_and_within_the_limit(app_env):
    from search.store import open_index

    _, index = app_env
    frames = open_index(index).frames.set_index("gid")
    at = temporal(page(), "a red striped fish", "a yellow ball", 0.6)
    pairs = at.session_state["search_results"]
    # 4 videos of 4 frames 0.5 s apart: every frame but the last of its video has a follower within 0.6 s
    assert len(pairs) == 12 and list(pairs["rank"]) == list(range(1, 13))
    first, then = frames.loc[pairs["first_gid"]], frames.loc[pairs["then_gid"]]
    assert (first["site"].to_numpy() == then["site"].to_numpy()).all()
    assert (first["video_id"].to_numpy() == then["video_id"].to_numpy()).all()
    assert (then["time"].to_numpy() > first["time"].to_numpy()).all()
    assert np.allclose(pairs["gap"], then["time"].to_numpy() - first["time"].to_numpy())
    assert pairs["gap"].between(0.0, 0.6).all() and (pairs["gap"] > 0).all()
    assert len(at.image) == 2 * 12                   # both frames of every pair
    assert any(shown(c.value).startswith("12 pairs for") and "then “a yellow ball” within 0.6 s" in shown(c.value)
               for c in at.caption)
    # the filters apply to the pairs
    at.multiselect(key="f_sites").set_value([SITES[0]]).run()
    assert set(at.session_state["search_results"]["site"]) == {SITES[0]}
    # ▶ Play starts the video at the first frame of the pair
    best = at.session_state["search_results"].iloc[0]
    at.button(key=f"play_pair_{int(best['first_gid'])}").click().run()
    assert not at.exception, [e.value for e in at.exception]
    videos = at.get("video")
    assert len(videos) == 1 and videos[0].proto.start_time == int(best["first_time"])
    assert any(str(best["video_id"]) in h.value for h in at.subheader)


def test_clearing_the_then_text_goes_back_to_frames(app_env):
    at = temporal(page(), "a red striped fish", "a yellow ball", 10.0)
    pairs = at.session_state["search_results"]
    assert "then_gid" in pairs and pairs["gap"].between(0.0, 10.0).all() and (pairs["gap"] > 0).all()
    at.text_input(key="q_then").set_value("")
    search(at, "a red striped fish")
    frames = at.session_state["search_results"]
    assert "then_gid" not in frames and len(frames) == 16
    assert len(at.image) == 16 and len(result_captions(at)) == 16


def test_a_then_text_without_a_first_one_warns(app_env):
    at = temporal(page(), "  ", "a yellow ball", 10.0)
    assert any("Type a description" in w.value for w in at.warning)
    assert "search_results" not in at.session_state and not at.image


def _write_queries(index: Path, frames: pd.DataFrame) -> Path:
    rows = frames.iloc[[0, 5, 9, 14]]
    qs = pd.DataFrame({"query_id": [f"q{i}" for i in range(len(rows))], "query_type": "novice",
                       "text": ["red fish", "a striped ball", "green water", "yellow dots"],
                       "target_site": rows["site"].to_list(), "target_video": rows["video_id"].to_list(),
                       "target_frame": rows["frame_index"].to_list(), "target_time": rows["time"].to_list()})
    path = index / "querysets" / "mine.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    qs.to_csv(path, index=False)
    return path


def test_kis_benchmark_runs_on_a_query_set_file(app_env):
    from search.store import open_index

    _, index = app_env
    path = _write_queries(index, open_index(index).frames)
    at = page("kis_page")
    assert str(path) in at.multiselect(key="kis_files").options or \
        any("mine.csv" in o for o in at.multiselect(key="kis_files").options)
    at.multiselect(key="kis_files").set_value([str(path)])
    at.button(key="kis_run").click().run()
    assert not at.exception, [e.value for e in at.exception]
    run = at.session_state["kis_result"]
    assert run.n_queries == 4
    assert set(run.summary["fusion"]) == {"frame", "object"}     # the defaults of `mvk kis`
    ranked = run.per_query[run.per_query["status"] == "ranked"]
    assert len(ranked) == 8 and ranked["rank"].between(1, 16).all()
    assert len(at.dataframe) >= 2                    # summary and per-query tables
    assert at.get("download_button")


def test_kis_benchmark_preselects_the_few_query_sets_found(app_env):
    from search.store import open_index

    _, index = app_env
    path = _write_queries(index, open_index(index).frames)
    second = path.with_name("also.csv")
    second.write_bytes(path.read_bytes())
    at = page("kis_page")
    assert {Path(p).name for p in at.multiselect(key="kis_files").value} >= {"mine.csv", "also.csv"}
    assert not at.button(key="kis_run").disabled


def test_kis_benchmark_takes_an_upload_and_names_a_bad_one(app_env):
    from search.store import open_index

    _, index = app_env
    good = _write_queries(index, open_index(index).frames).read_bytes()
    (index / "querysets" / "mine.csv").unlink()
    at = page("kis_page")
    at.file_uploader(key="kis_uploads").set_value([("up.csv", good, "text/csv"),
                                                    ("junk.csv", b"\xff\xfe\x00", "text/csv")]).run()
    at.button(key="kis_run").click().run()
    assert not at.exception
    assert at.session_state["kis_result"].n_queries == 4
    assert any("junk.csv" in shown(w.value) for w in at.warning)


def test_kis_session_ranks_and_saves_the_query(app_env):
    from mvk_tools.querysets import read_queryset

    _, index = app_env
    at = page("session_page")
    target = at.session_state["s_target"]
    assert at.get("metric"), "the timer is missing"
    at.text_area(key="s_text").set_value("a red ball with stripes on green water")
    at.radio(key="s_kind").set_value("expert")
    click(at, "Rank and save")
    assert not at.exception, [e.value for e in at.exception]
    outcome = at.session_state["s_outcome"]
    assert 1 <= outcome["rank"] <= 16 and outcome["n_frames"] == 16
    saved = read_queryset(index / "querysets" / "session_expert.csv").queries
    assert len(saved) == 1
    row = saved.iloc[0]
    assert row["query_type"] == "expert" and row["text"] == "a red ball with stripes on green water"
    assert (row["target_site"], str(row["target_video"]), int(row["target_frame"])) == \
        (target["site"], target["video_id"], target["frame_index"])
    # a second query on a new target is appended, not overwritten
    at.button(key="s_new").click().run()
    at.text_area(key="s_text").set_value("yellow dots")
    click(at, "Rank and save")
    assert len(read_queryset(index / "querysets" / "session_expert.csv").queries) == 2


def test_kis_session_feedback_reranks_the_description(app_env):
    at = page("session_page")
    at.text_area(key="s_text").set_value("a red ball with stripes on green water")
    click(at, "Rank and save")
    top = at.session_state["s_outcome"]["top"]
    at.checkbox(key=f"s_up_{int(top['gid'].iloc[-1])}").check()
    at.checkbox(key=f"s_down_{int(top['gid'].iloc[0])}").check().run()
    at.button(key="s_feedback").click().run()
    assert not at.exception, [e.value for e in at.exception]
    again = at.session_state["s_feedback_outcome"]
    assert again["n_liked"] == 1 and again["n_disliked"] == 1 and 1 <= again["rank"] <= 16
    import json
    from mvk_tools.eventlog import default_log_path
    events = [json.loads(line) for line in default_log_path(app_env[1]).read_text().splitlines()]
    fed = [e for e in events if e.get("kind") == "feedback" and e.get("source") == "app-session"]
    assert fed and len(fed[-1]["positives"]) == 1 and len(fed[-1]["negatives"]) == 1     # logged as a query


def test_kis_session_refuses_an_empty_description(app_env):
    _, index = app_env
    at = page("session_page")
    click(at, "Rank and save")
    assert any("description" in e.value for e in at.error)
    assert not (index / "querysets" / "session_novice.csv").exists()


def test_index_page_lists_shards_and_a_rebuild_shows_progress(app_env):
    from app.state import job_registry

    at = page("index_page")
    table = at.dataframe[0].value
    assert sorted(table["site"]) == sorted(SITES) and table["frames"].sum() == 16
    at.text_input(key="b_folder").set_value(f"videos/{SITES[0]}")
    at.checkbox(key="b_rebuild").set_value(True)
    click(at, "Index")
    assert not at.exception, [e.value for e in at.exception]
    job = job_registry().jobs["index"]
    seen_progress = bool(at.get("progress"))
    deadline = time.time() + TIMEOUT
    while not job.finished and time.time() < deadline:
        time.sleep(0.5)
        at.run()
        seen_progress |= bool(at.get("progress"))
    assert job.finished and not job.error, job.error
    assert seen_progress
    at.run()
    assert any("Indexing finished" in s.value for s in at.success)
    assert job.total == 8 and job.done == 8          # 2 videos x 4 sampled frames
    assert [s.status for s in job.result.sites] == ["written"]
    finished = [p.proto.text for p in at.get("progress")]
    assert len(finished) == 1 and finished[0].startswith("finished in "), finished
    time.sleep(1.5)
    at.run()
    assert [p.proto.text for p in at.get("progress")] == finished    # the job's duration, not a running clock


def test_index_page_refuses_a_folder_outside_the_collection(app_env):
    at = page("index_page")
    at.text_input(key="b_folder").set_value("../../")
    click(at, "Index")
    assert any("outside the folders" in e.value for e in at.error)


def test_an_empty_index_folder_points_to_the_index_page(tmp_path, monkeypatch):
    monkeypatch.setenv("MVK_INDEX", str(tmp_path / "empty"))
    monkeypatch.delenv("MVK_COLLECTION", raising=False)
    (tmp_path / "empty").mkdir()
    at = page()
    assert any("Index" in i.value for i in at.info)
    said = next(shown(i.value) for i in at.info if "No usable index" in i.value)
    assert said.count(str(tmp_path / "empty")) == 1, said                 # the folder named once
    assert "not an index" in said
    at.switch_page("ui/index_page.py").run()
    assert not at.exception
    assert any("--collection" in i.value for i in at.info)


def test_a_demo_server_says_what_the_collection_is(app_env, monkeypatch):
    at = page()
    assert not any("mvk demo" in i.value for i in at.info)
    monkeypatch.setenv("MVK_DEMO", "1")
    at = page()
    assert any("Demo collection built by `mvk demo`" in i.value for i in at.info)


# ---- issue 13: the Search page as people use it -------------------------------------------------------------


def _results_markdown(at: AppTest) -> list[str]:
    return [e.value for e in (*at.markdown, *at.caption, *at.subheader, *at.error, *at.warning, *at.info)]


def test_an_mpeg4_part2_video_plays_as_h264_from_its_moment(app_env, tmp_path, monkeypatch):
    from mvk_tools.video import probe
    from tests.videofiles import write_video

    collection, _ = app_env
    copy = tmp_path / "collection"
    shutil.copytree(collection, copy)
    write_video(copy / "part2.mp4", n_frames=30, size=(64, 48), fps=4, codec="mpeg4")     # 7.5 s
    monkeypatch.setenv("MVK_COLLECTION", str(copy))
    monkeypatch.setenv("MVK_CACHE", str(tmp_path / "cache"))
    at = search(page(), "a red striped fish")
    row = at.session_state["search_results"].iloc[0].to_dict()
    row.update(video_path="part2.mp4", time=5.0)
    at.session_state["selected"] = row
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    videos = at.get("video")
    # the converted segment keeps the source's times (issue 25: the player shows source times), so the
    # player starts at the moment itself, 5 s, not at 2 s into a segment that starts 3 s earlier
    assert len(videos) == 1 and videos[0].proto.start_time == 5
    converted = list((tmp_path / "cache" / "playback").glob("*.mp4"))
    assert len(converted) == 1 and probe(converted[0]).codec == "h264"
    assert any("mpeg4" in shown(c.value) and "converted to H.264" in shown(c.value) for c in at.caption)


def test_the_collection_line_counts_videos_per_site(app_env):
    at = page()
    # two sites with videos of the same names: 4 videos, not 2
    assert any(c.value.startswith("16 frames from 4 videos at 2 dive sites") for c in at.caption)


def test_an_error_clears_the_previous_results(app_env):
    at = search(page(), "a red striped fish")
    assert at.image
    dates = at.selectbox(key="f_from").options
    if len(dates) < 3:
        pytest.skip("the test index has a single month")
    at.selectbox(key="f_from").set_value(dates[-1])
    at.selectbox(key="f_to").set_value(dates[1]).run()
    assert at.error and "search_results" not in at.session_state and not at.image


def test_a_bad_upload_clears_the_results_and_names_the_file_not_a_buffer(app_env):
    at = search(page(), "a red striped fish")
    at.file_uploader(key="q_image").set_value(("reef.png", b"\x89PNG\r\n\x1a\n garbage", "image/png"))
    click(at, "Search")
    errors = [shown(e.value) for e in at.error]
    assert any("reef.png" in e for e in errors) and not any("BytesIO" in e for e in errors)
    assert "search_results" not in at.session_state and not at.image


def test_a_huge_uploaded_image_is_refused_by_name_without_a_traceback(app_env):
    from tests.test_search_cli import png_header

    at = page()
    at.file_uploader(key="q_image").set_value(("bomb.png", png_header(20000, 20000), "image/png"))
    click(at, "Search")
    assert not at.exception
    assert any("bomb.png" in shown(e.value) and "too large" in shown(e.value) for e in at.error)


def test_search_notes_are_shown_and_the_query_echo_is_plain_and_short(app_env):
    long_text = "**bold** $x^2$ [link](http://example.com) " + " ".join(["coral"] * 400)
    at = search(page(), long_text)
    captions = [c.value for c in at.caption]
    assert any("truncated" in shown(c) for c in captions), captions
    echo = next(c for c in captions if " frames for " in c)
    assert "**bold**" not in echo and "$x^2$" not in echo and "](http" not in echo
    assert "\\*\\*bold\\*\\*" in echo and len(shown(echo)) < 250


def test_results_export_as_csv_and_json(app_env):
    from app.ui.results import export_table

    at = search(page(), "a red striped fish")
    keys = {b.proto.id.split("-")[-1] if False else b.key for b in at.get("download_button")}
    assert {"export_csv", "export_json"} <= keys
    table = export_table(at.session_state["search_results"])
    assert len(table) == 16 and list(table["rank"]) == list(range(1, 17))
    assert {"score", "site", "video_id", "time", "track_id", "x0"} <= set(table.columns)
    assert not (table["x0"].dropna() < 0).any()                       # no -1 for "no object"


def test_a_url_with_a_query_and_filters_shows_those_results(app_env):
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params["q_text"] = "a red striped fish"
    at.query_params["f_sites"] = [SITES[1]]
    at.query_params["k"] = "4"
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    found = at.session_state["search_results"]
    assert len(found) == 4 and set(found["site"]) == {SITES[1]}
    assert at.text_input(key="q_text").value == "a red striped fish" and len(at.image) == 4


def test_paging_goes_past_the_first_page(app_env):
    at = search(page(), "a red striped fish")
    at.slider(key="k").set_value(4).run()
    assert len(at.image) == 4
    first_page = at.session_state["search_results"]["gid"].tolist()
    at.pagination[0].set_value(2).run()
    assert not at.exception, [e.value for e in at.exception]
    found = at.session_state["search_results"]
    assert len(found) == 8 and found["gid"].tolist()[:4] == first_page
    ranks = [m.value for m in at.markdown if m.value.startswith("**#")]
    assert len(at.image) == 4 and [r.split("**")[1] for r in ranks] == ["#5", "#6", "#7", "#8"]
    assert any("showing 5–8" in shown(c.value) for c in at.caption)


def test_escape_closes_the_player(app_env):
    at = search(page(), "a red striped fish")
    gid = int(at.session_state["search_results"]["gid"].iloc[0])
    at.button(key=f"play_{gid}").click().run()
    close = at.button(key="close_player")
    assert close.proto.shortcut.lower() in ("esc", "escape")
    close.click().run()
    assert "selected" not in at.session_state and not at.get("video")


CRAFTED = "![pic](http://127.0.0.1:9/x.png) [a](http://127.0.0.1:9/) **b** $c$ :red[d]"


def test_names_from_files_are_never_rendered_as_markdown(app_env):
    at = search(page(), "a red striped fish")
    found = at.session_state["search_results"].copy()
    found["site"] = CRAFTED
    found["video_id"] = CRAFTED
    at.session_state["search_results"] = found
    at.session_state["selected"] = found.iloc[0].to_dict()
    at.toggle(key="group").set_value(True).run()
    assert not at.exception, [e.value for e in at.exception]
    texts = _results_markdown(at)
    assert any(shown(t).count(CRAFTED) for t in texts)           # the name is shown, as text
    for text in texts:
        assert "](http" not in text and "**b**" not in text and "$c$" not in text and ":red[" not in text


# ---- issue 13: KIS pages ------------------------------------------------------------------------------------


def test_kis_defaults_match_the_cli_and_the_weight_shows_only_for_weighted(app_env):
    from mvk_tools import kis
    from mvk_tools.commands import kis as kis_command
    import argparse

    parser = argparse.ArgumentParser()
    kis_command.add_arguments(parser)
    assert tuple(parser.get_default("fusion").split(",")) == kis.DEFAULT_FUSIONS
    at = page("kis_page")
    assert tuple(at.multiselect(key="kis_fusions").value) == kis.DEFAULT_FUSIONS
    assert not [s for s in at.slider if s.key == "kis_weight"]
    at.multiselect(key="kis_fusions").set_value(["frame", "weighted"]).run()
    assert [s for s in at.slider if s.key == "kis_weight"]


def test_kis_upload_problems_name_the_uploaded_file_and_mrr_is_a_number(app_env):
    import json

    from search.store import open_index

    _, index = app_env
    good = _write_queries(index, open_index(index).frames).read_text()
    (index / "querysets" / "mine.csv").unlink()
    with_bad_row = good + "q9,novice,a fish,Nowhere_Site,0001,3,\n"
    at = page("kis_page")
    at.file_uploader(key="kis_uploads").set_value([("field notes.csv", with_bad_row.encode(), "text/csv")]).run()
    at.button(key="kis_run").click().run()
    assert not at.exception, [e.value for e in at.exception]
    run = at.session_state["kis_result"]
    lines = run.warnings + [str(p) for p in run.per_query.get("source_file", [])]
    assert any("field notes.csv" in line for line in lines)
    assert not any("mvk-upload-" in line for line in lines)
    summary = at.dataframe[0]
    assert "mrr" in summary.value.columns
    config = json.loads(summary.proto.columns)
    assert config["mrr"]["type_config"]["format"] == "%.3f"


def test_kis_session_new_target_clears_the_text_and_the_clock_reads_mm_ss(app_env):
    at = page("session_page")
    metric = at.get("metric")[0]
    assert re.fullmatch(r"\d\d:\d\d", metric.proto.body) and metric.proto.label == "Time left"
    assert "▲" not in metric.proto.delta and "▼" not in metric.proto.delta
    from streamlit.proto.Metric_pb2 import Metric
    assert metric.proto.direction == Metric.MetricDirection.NONE
    at.text_area(key="s_text").set_value("a red ball")
    click(at, "Rank and save")
    history = at.dataframe[0].value
    assert all(re.fullmatch(r"\d\d:\d\d", t) for t in history["time taken"])
    at.button(key="s_new").click().run()
    assert at.text_area(key="s_text").value == ""


def test_kis_session_limits_a_huge_description_and_keeps_its_file_readable(app_env):
    from app import sessions
    from app.state import parse_config
    from mvk_tools.querysets import read_queryset
    from search.errors import QueryError

    _, index = app_env
    at = page("session_page")
    at.text_area(key="s_text").set_value("a red ball")
    click(at, "Rank and save")
    at.text_area(key="s_text").set_value("x" * 131_073)        # the box keeps MAX_DESCRIPTION_CHARS of it
    click(at, "Rank and save")
    assert not at.exception
    at.text_area(key="s_text").set_value("yellow dots")
    click(at, "Rank and save")                                   # later saves still work
    saved = read_queryset(index / "querysets" / "session_novice.csv").queries
    assert saved["text"].str.len().tolist() == [10, sessions.MAX_DESCRIPTION_CHARS, 11]
    cfg = parse_config([], {"MVK_INDEX": str(index)})
    with pytest.raises(QueryError, match="131,073 characters"):
        sessions.rank_and_save(None, None, cfg, at.session_state["s_target"], "x" * 131_073, kind="novice")


def test_kis_session_moves_an_unreadable_file_aside_and_saves_again(app_env):
    from mvk_tools.querysets import read_queryset

    _, index = app_env
    path = index / "querysets" / "session_novice.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("query_id,query_type,text,target_site,target_video,target_frame,target_time,source\n"
                    f"q1,novice,\"{'y' * 140_000}\",{SITES[0]},0001,0,0.0,\n"
                    f"q2,novice,a small crab,{SITES[0]},0001,1,0.5,\n")
    at = page("session_page")
    at.text_area(key="s_text").set_value("a red ball")
    click(at, "Rank and save")
    assert not at.exception, [e.value for e in at.exception]
    assert read_queryset(path).queries["text"].tolist() == ["a small crab", "a red ball"]
    assert list(path.parent.glob("session_novice.csv.unreadable-*"))
    assert any("moved to" in shown(w.value) for w in at.warning)


def test_index_page_shows_the_settings_in_words(app_env):
    at = page("index_page")
    text = "\n".join(m.value for m in at.markdown)
    assert "mvk-tiny-vit with random weights" in text and "a smoke run" in text
    assert "colour-statistics baseline" in text and "one frame every 0.5 s" in text
    assert "pretrained None" not in text and not at.json                     # no raw manifest


def test_index_page_disables_the_index_button_while_a_job_runs(app_env):
    import threading

    from app.state import job_registry

    release = threading.Event()
    registry = job_registry()
    registry.start("index", lambda job: release.wait(TIMEOUT))
    try:
        at = page("index_page")
        button = next(b for b in at.get("form_submit_button") if b.label in ("Index", "Indexing…"))
        assert button.disabled and button.label == "Indexing…"
    finally:
        release.set()
        registry.jobs["index"].thread.join(TIMEOUT)
    at = page("index_page")
    assert not next(b for b in at.get("form_submit_button") if b.label == "Index").disabled


def test_index_page_of_a_random_weight_index_without_the_flag_says_what_to_do(app_env, monkeypatch):
    monkeypatch.delenv("MVK_RANDOM_WEIGHTS")
    at = page("index_page")
    assert not at.exception
    assert any("start the app with `--random-weights`" in i.value for i in at.info)
    assert next(b for b in at.get("form_submit_button") if b.label == "Index").disabled
    assert not any("ModelMismatchError" in e.value for e in at.error)


def test_a_folder_that_is_no_collection_fails_the_job_in_one_line(app_env):
    from app import indexing
    from app.state import AppConfig, JobRegistry

    collection, index = app_env
    cfg = AppConfig(index=index, collection=collection, random_weights=True)
    empty = collection / "information"                                 # a folder of the collection, no videos
    registry = JobRegistry()
    job = registry.start("index", lambda j: indexing.build_sites(cfg, empty, None, rebuild=False, job=j))
    job.thread.join(TIMEOUT)
    assert job.error.startswith(f"{empty}") and "no videos found" in job.error
    assert "Error" not in job.error and not any("Traceback" in line for line in job.log)


def test_more_like_this_likes_and_heatmaps_on_the_search_page(app_env):
    at = search(page("search_page"), "a red fish")
    found = at.session_state["search_results"]
    third = found.iloc[2]
    ref = f"{third['site']}/{third['video_id']}/{int(third['frame_index'])}"
    at.button(key=f"similar_{int(third['gid'])}").click().run()
    assert not at.exception, [e.value for e in at.exception]
    like = at.session_state["search_results"]
    assert int(like["gid"].iloc[0]) == int(third["gid"])                     # the frame itself comes first
    assert at.query_params["like"] in (ref, [ref])
    at.button(key="back_to_query").click().run()
    last = at.session_state["search_results"].iloc[-1]
    at.button(key=f"up_{int(last['gid'])}").click().run()
    liked = f"{last['site']}/{last['video_id']}/{int(last['frame_index'])}"
    assert at.query_params["up"] in (liked, [liked])
    at.toggle(key="use_feedback").set_value(True).run()
    assert not at.exception, [e.value for e in at.exception]
    assert "1 liked" in at.session_state["search_label"]
    at.toggle(key="heat_grid").set_value(True).run()
    assert not at.exception, [e.value for e in at.exception]
    assert not [c.value for c in at.caption if "No heatmap" in c.value]
    at.checkbox(key="cell_0").check().run()
    assert not at.exception, [e.value for e in at.exception]

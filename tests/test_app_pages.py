"""Every page of the Streamlit app driven through streamlit.testing.v1.AppTest on a small real index
(tiny random CLIP, colour segmentation): queries give results, filters change them, the benchmark runs,
a session saves a query, a rebuild shows progress, paths outside the collection are not served."""
from __future__ import annotations

import io
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
    collection, index = built
    copy = tmp_path / "index"
    shutil.copytree(index, copy)
    monkeypatch.setenv("MVK_INDEX", str(copy))
    monkeypatch.setenv("MVK_COLLECTION", str(collection))
    monkeypatch.setenv("MVK_RANDOM_WEIGHTS", "1")
    return collection, copy


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


def result_captions(at: AppTest) -> list[str]:
    return [c.value for c in at.caption if " · video " in c.value and "score" not in c.value]


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
    assert any("broken.png" in e.value for e in at.error)


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
    assert any(c.value.startswith("12 pairs for") and "then “a yellow ball” within 0.6 s" in c.value
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
    assert set(run.summary["fusion"]) == {"frame", "max"}
    ranked = run.per_query[run.per_query["status"] == "ranked"]
    assert len(ranked) == 8 and ranked["rank"].between(1, 16).all()
    assert len(at.dataframe) >= 2                    # summary and per-query tables
    assert at.get("download_button")


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
    assert any("junk.csv" in w.value for w in at.warning)


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
    at.switch_page("ui/index_page.py").run()
    assert not at.exception
    assert any("--collection" in i.value for i in at.info)


def test_a_demo_server_says_what_the_collection_is(app_env, monkeypatch):
    at = page()
    assert not any("mvk demo" in i.value for i in at.info)
    monkeypatch.setenv("MVK_DEMO", "1")
    at = page()
    assert any("Demo collection built by `mvk demo`" in i.value for i in at.info)

"""The Survey page of the Streamlit app (AppTest) on the app tests' small index: a text gives the presence,
site and month tables, the three plots and the CSV downloads; likes and dislikes calibrate T; bad input is a
clear message on the page."""
from __future__ import annotations

from tests.test_app_pages import app_env, built, click, page, shown  # noqa: F401  (fixtures)

QUERY = "a yellow striped ellipse"


def survey(at, text: str = QUERY, **fields):
    at.text_input(key="s_text").set_value(text)
    for key, value in fields.items():
        (at.text_area if key in ("s_pos", "s_neg") else at.text_input)(key=key).set_value(value)
    click(at, "Survey")
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_survey_page_shows_tables_plots_and_downloads(app_env):
    at = survey(page("survey_page"))
    report = at.session_state["survey_report"]
    assert len(report.result.presence) == 4
    assert len(at.dataframe) == 3                                   # presence, sites, months
    assert len(at.image) == 3                                       # timeline, sites, map
    assert {"timeline", "sites", "map"} == set(report.plots)
    assert all(p[:8] == b"\x89PNG\r\n\x1a\n" for p in report.plots.values())
    assert any("uncalibrated" in i.value for i in at.info)
    labels = [b.label for b in at.get("download_button")]
    assert labels == ["presence.csv", "occurrences.csv", "sites.csv", "months.csv"]


def test_likes_and_dislikes_calibrate_on_the_page(app_env):
    import os

    from search.store import open_index
    frames = open_index(os.environ["MVK_INDEX"]).frames
    ids = [f"{r.site}/{r.video_id}/{int(r.frame_index)}" for r in frames.iloc[[0, 1, 2, -1]].itertuples(index=False)]
    at = page("survey_page")
    at.slider(key="s_target").set_value(0.5)
    survey(at, s_pos="\n".join(ids[:2]), s_neg="\n".join(ids[2:]))
    assert at.session_state["survey_report"].result.calibration.calibrated
    assert any("2 match / 2 non-match" in shown(s.value) for s in at.success)


def test_a_bad_result_id_is_a_message_not_a_traceback(app_env):
    at = survey(page("survey_page"), "", s_like="Oahu_Jul2022/nope/0")
    assert any("has no video" in shown(e.value) for e in at.error)
    assert "survey_report" not in at.session_state


def test_an_example_image_is_surveyed_and_a_broken_one_named(app_env):
    import io

    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 80, 3), dtype=np.uint8)).save(buf, "PNG")
    at = page("survey_page")
    at.file_uploader(key="s_image").set_value(("example.png", buf.getvalue(), "image/png"))
    survey(at, "")
    assert at.session_state["survey_report"].result.query == "image example.png"
    at.file_uploader(key="s_image").set_value(("broken.png", b"not a png", "image/png"))
    survey(at, "")
    assert any("broken.png" in shown(e.value) for e in at.error)

"""The app's Submit buttons (result card, pair card, player) against a fake DRES server on loopback: the
submission reaches the server with the result's video and time, the verdict shows under the button, and both the
search and the submission are in the event log. Without a DRES server configured there is no button."""
from __future__ import annotations

import json

import pytest

from tests.fake_dres import FakeDres
from tests.test_app_pages import app_env, built, page, search, temporal  # noqa: F401  (fixtures)


@pytest.fixture()
def dres(app_env, monkeypatch):  # noqa: F811
    with FakeDres() as server:
        monkeypatch.setenv("MVK_DRES_URL", server.url)
        monkeypatch.setenv("MVK_DRES_USER", "team")
        monkeypatch.setenv("MVK_DRES_PASSWORD", "secret")
        yield server


def answers(server: FakeDres) -> list[dict]:
    return [a for s in server.submissions for a in s["body"]["answerSets"][0]["answers"]]


def events(index) -> list[dict]:
    return [json.loads(line) for line in (index / "logs" / "events.jsonl").read_text().splitlines()]


def submit_buttons(at) -> list:
    return [b for b in at.button if str(b.key).startswith("submit_")]


def test_no_submit_button_without_a_dres_server(app_env, monkeypatch):  # noqa: F811
    monkeypatch.delenv("MVK_DRES_URL", raising=False)
    at = search(page(), "a red striped fish")
    assert at.session_state["search_results"] is not None and not submit_buttons(at)


def test_a_result_card_submits_its_video_and_time(app_env, dres):  # noqa: F811
    at = search(page(), "a red striped fish")
    results = at.session_state["search_results"]
    assert len(submit_buttons(at)) == len(results)
    row = results.iloc[2]
    at.button(key=f"submit_{int(row['gid'])}").click().run()
    assert not at.exception, [e.value for e in at.exception]
    ms = int(round(float(row["time"]) * 1000))
    assert answers(dres) == [{"mediaItemName": str(row["video_id"]), "start": ms, "end": ms}]
    assert dres.submissions[0]["evaluation"] == "eval-1"
    assert any("CORRECT" in c.value for c in at.caption)
    log = events(app_env[1])
    assert [e["event"] for e in log] == ["query", "submit"]
    assert log[0]["source"] == "app" and log[0]["text"] == "a red striped fish" and len(log[0]["results"]) == 16
    assert log[1]["source"] == "app" and log[1]["verdict"] == "CORRECT" and log[1]["context"]["gid"] == int(row["gid"])


def test_the_player_and_a_pair_submit_and_a_refusal_is_shown(app_env, dres, monkeypatch):  # noqa: F811
    at = search(page(), "a red striped fish")
    row = at.session_state["search_results"].iloc[0]
    at.button(key=f"play_{int(row['gid'])}").click().run()
    at.button(key="submit_player").click().run()
    assert not at.exception
    ms = int(round(float(row["time"]) * 1000))
    assert answers(dres)[-1] == {"mediaItemName": str(row["video_id"]), "start": ms, "end": ms}

    at = temporal(page(), "a red striped fish", "a yellow ball", 10.0)
    pair = at.session_state["search_results"].iloc[0]
    at.button(key=f"submit_pair_{int(pair['first_gid'])}").click().run()
    assert not at.exception
    assert answers(dres)[-1] == {"mediaItemName": str(pair["video_id"]),
                                 "start": int(round(float(pair["first_time"]) * 1000)),
                                 "end": int(round(float(pair["then_time"]) * 1000))}

    monkeypatch.setenv("MVK_DRES_EVALUATION", "gone")
    at = search(page(), "a red striped fish")
    row = at.session_state["search_results"].iloc[0]
    at.button(key=f"submit_{int(row['gid'])}").click().run()
    assert not at.exception and len(dres.submissions) == 2
    assert any("Evaluation gone not found" in c.value for c in at.caption)
    assert events(app_env[1])[-1]["ok"] is False

"""The player's "Follow this animal" and "Search with this animal" (AppTest on the app tests' small index):
the followed track shows as a presence strip and masks over frames, and the search replaces the page's results
by frames like the object's whole track."""
from __future__ import annotations

from tests.test_app_pages import app_env, built, page, search, shown  # noqa: F401  (fixtures)


def open_object(at):
    results = at.session_state["search_results"]
    row = results[results["track_id"] >= 0].iloc[0]
    at.button(key=f"play_{int(row['gid'])}").click().run()
    assert not at.exception, [e.value for e in at.exception]
    return row


def test_follow_this_animal_shows_its_propagated_track(app_env):
    at = search(page(), "a red striped fish")
    row = open_object(at)
    gid, tid = int(row["gid"]), int(row["track_id"])
    images_before = len(at.image)
    at.button(key=f"follow_{gid}_{tid}").click().run()
    assert not at.exception, [e.value for e in at.exception]
    followed = at.session_state["followed"]
    assert followed.gid == gid and followed.track.frames
    assert any("Followed through" in shown(m.value) for m in at.markdown)
    assert len(at.image) > images_before                      # the mask drawn over a few frames


def test_search_with_this_animal_replaces_the_results(app_env):
    at = search(page(), "a red striped fish")
    row = open_object(at)
    gid, tid = int(row["gid"]), int(row["track_id"])
    at.button(key=f"like_{gid}_{tid}").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert "selected" not in at.session_state
    assert "whole track" in at.session_state["search_label"]
    results = at.session_state["search_results"]
    assert len(results) > 0
    # the animal's own frames rank first: its whole-track vector is closest to its own objects
    assert (results["video_id"].iloc[0], results["site"].iloc[0]) == (row["video_id"], row["site"])

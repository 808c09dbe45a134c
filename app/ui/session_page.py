"""KIS session page, the way MVK's queries were collected: a random target frame is shown, the user describes
it, the app shows where the target ranked and saves the description to a novice or expert query set."""
from __future__ import annotations

import time

import numpy as np
import pandas as pd
import streamlit as st

from app.ui import common, results

cfg = common.config()
index = common.open_index(cfg)
common.random_banner(index, cfg)

from app import sessions  # noqa: E402
from search.errors import MvkError  # noqa: E402
from search.queries import FUSIONS  # noqa: E402

st.title("KIS session")
st.caption("Describe the frame below so that someone could find it: the app ranks every indexed frame for your "
           "description, shows where the target landed, and saves your description to a query set for the "
           "benchmark.")

with st.sidebar:
    st.subheader("Session")
    kind = st.radio("Query set", sessions.KINDS, horizontal=True, key="s_kind",
                    help="novice: people who do not know the species; expert: marine biologists")
    limit = st.number_input("Time limit (s)", 30, 1800, sessions.DEFAULT_LIMIT_S, 30, key="s_limit",
                            help="as in interactive KIS tasks; a late query is still saved, with its time")
    fusion = st.selectbox("Ranking", FUSIONS, index=FUSIONS.index("max"), key="s_fusion")
    st.caption(f"Saved to {common.plain(sessions.queryset_path(cfg, kind))}")


def new_target() -> None:
    """A fresh random target, the clock restarted and the description box emptied."""
    st.session_state["s_target"] = sessions.pick_target(index.frames, np.random.default_rng())
    st.session_state["s_started"] = time.time()
    st.session_state["s_text"] = ""
    st.session_state.pop("s_outcome", None)
    st.session_state.pop("s_feedback_outcome", None)


if st.session_state.get("s_target") is None or st.session_state["s_target"]["gid"] >= len(index.frames):
    new_target()
target = st.session_state["s_target"]
started = st.session_state["s_started"]

left, right = st.columns([3, 2])
with left:
    st.image(sessions.target_image(index, cfg, target), width="stretch")
with right:
    # the clock ticks while the user writes; once the description is ranked it stops, and so do the reruns
    @st.fragment(run_every=None if st.session_state.get("s_outcome") else 1.0)
    def timer() -> None:
        outcome = st.session_state.get("s_outcome")
        elapsed = (outcome["seconds"] if outcome else time.time() - st.session_state["s_started"])
        remaining = float(st.session_state.get("s_limit", sessions.DEFAULT_LIMIT_S)) - elapsed
        if outcome:
            st.metric("Time taken", common.fmt_clock(elapsed), delta="stopped", delta_color="off",
                      delta_arrow="off")
        elif remaining > 0:
            st.metric("Time left", common.fmt_clock(remaining), delta=f"{common.fmt_clock(elapsed)} so far",
                      delta_color="off", delta_arrow="off")
        else:
            st.metric("Time left", "00:00", delta=f"time is up ({common.fmt_clock(-remaining)} over)",
                      delta_color="inverse", delta_arrow="off")

    timer()
    with st.form("s_form", clear_on_submit=False, border=False):
        text = st.text_area("Your description of this frame", key="s_text", height=110,
                            max_chars=sessions.MAX_DESCRIPTION_CHARS,
                            placeholder="e.g. a yellow fish swims above a sandy bottom near a rock")
        go = st.form_submit_button("Rank and save", type="primary", width="stretch")
    st.button("New target", on_click=new_target, key="s_new", width="stretch")

if go:
    try:
        outcome = sessions.rank_and_save(index, common.encoder(index, cfg), cfg, target, text, kind=kind,
                                         fusion=fusion, seconds=time.time() - started, limit=float(limit))
        st.session_state["s_outcome"] = outcome
        st.session_state.setdefault("s_history", []).append(
            {"query_id": outcome["query_id"], "query_type": outcome["query_type"], "rank": outcome["rank"],
             "n_frames": outcome["n_frames"], "time taken": common.fmt_clock(outcome["seconds"]),
             "text": common.shorten(outcome["text"], 200)})
    except MvkError as exc:
        st.session_state.pop("s_outcome", None)
        st.error(common.plain(exc))
    st.session_state.pop("s_feedback_outcome", None)

outcome = st.session_state.get("s_outcome")
if outcome:
    st.divider()
    a, b, c = st.columns(3)
    a.metric("Target rank", f"#{outcome['rank']:,}", help="1 is best; ties count against the target")
    b.metric("Among frames", f"{outcome['n_frames']:,}")
    c.metric("Time taken", common.fmt_clock(outcome["seconds"]))
    st.success(f"Saved as **{common.plain(outcome['query_id'])}** in {common.plain(outcome['path'])}")
    for note in outcome.get("notes", []):
        st.warning(common.plain(note))
    top = outcome["top"]
    if len(top):
        st.markdown("**Your description's top frames** (the target is marked ✓)")
        cols = st.columns(len(top))
        for col, (_, row) in zip(cols, results.frame_rows(index, top["gid"]).iterrows()):
            hit = bool(top.loc[top["gid"] == row["gid"], "is_target"].iloc[0])
            col.image(common.decode_jpeg(row["thumbnail"]), width="stretch",
                      caption=("✓ target · " if hit else "") + f"{common.plain(row['site'])} · "
                                                                 f"{common.fmt_time(row['time'])}")
            up, down = col.columns(2)
            up.checkbox(":material/thumb_up:", key=f"s_up_{int(row['gid'])}", help="looks like the target")
            down.checkbox(":material/thumb_down:", key=f"s_down_{int(row['gid'])}", help="does not look like the target")
        likes = [int(g) for g in top["gid"] if st.session_state.get(f"s_up_{int(g)}")]
        dislikes = [int(g) for g in top["gid"] if st.session_state.get(f"s_down_{int(g)}")
                    and int(g) not in likes]
        if st.button("Re-rank with my feedback", key="s_feedback", disabled=not (likes or dislikes),
                     help="SOMHunter's Bayesian feedback over these top frames: how far does it bring the target?"):
            try:
                again = sessions.rerank_with_feedback(common.service(cfg), index, target, outcome["text"],
                                                      likes, dislikes, fusion=fusion)
                st.session_state["s_feedback_outcome"] = again
            except MvkError as exc:
                st.error(common.plain(exc))
        again = st.session_state.get("s_feedback_outcome")
        if again:
            shown = f"#{again['rank']:,}" if again["rank"] else "beyond the first 999"
            st.metric("Target rank after feedback", shown,
                      help=f"{again['n_liked']} liked, {again['n_disliked']} disliked of the frames above")

history = st.session_state.get("s_history")
if history:
    st.subheader("This session")
    st.dataframe(pd.DataFrame(history), hide_index=True, width="stretch")

"""Search page: a text (or example image) query, optionally followed by a second description in the same video
within N seconds (pairs of frames); filters, fusion; a grid of frames; a result plays in place."""
from __future__ import annotations

import time

import pandas as pd
import streamlit as st

from app.state import index_fingerprint
from app.ui import common, competition, results

cfg = common.config()
index = common.open_index(cfg)
common.random_banner(index, cfg)

from search.errors import MvkError  # noqa: E402
from search.query import FUSIONS, Filters, search, temporal_search  # noqa: E402

frames = index.frames
st.title("Search")

with st.sidebar:
    st.subheader("Filters")
    sites = sorted(frames["site"].dropna().unique().tolist())
    places = sorted(p for p in frames["place"].dropna().unique().tolist() if p)
    dates = sorted(d for d in frames["date"].dropna().unique().tolist() if d)
    sel_sites = st.multiselect("Dive sites", sites, key="f_sites", placeholder="all sites")
    sel_places = st.multiselect("Places", places, key="f_places", placeholder="all places")
    date_from = date_to = ""
    if dates:
        date_from = st.selectbox("From (month)", [""] + dates, key="f_from", format_func=lambda d: d or "any")
        date_to = st.selectbox("To (month)", [""] + dates, key="f_to", format_func=lambda d: d or "any")
    st.subheader("Ranking")
    fusion = st.selectbox("Fusion of frame and object scores", FUSIONS, index=FUSIONS.index("max"), key="fusion",
                          help="frame: whole-frame similarity; object: best object mask; max: the larger of "
                               "both; weighted: (1−w)·frame + w·object")
    weight = st.slider("Object weight w", 0.0, 1.0, 0.5, 0.05, key="weight", disabled=fusion != "weighted")
    k = st.slider("Results", 4, 100, 20, 4, key="k")
    group = st.toggle("Group by video", key="group")
    overlay = st.radio("Draw the matching object", ["none", "mask", "box"], index=1, horizontal=True,
                       key="overlay")

with st.form("query", border=False):
    col_text, col_go = st.columns([6, 1], vertical_alignment="bottom")
    text = col_text.text_input("Describe what you are looking for", key="q_text",
                               placeholder="a turtle swimming over coral")
    submitted = col_go.form_submit_button("Search", type="primary", width="stretch")
    upload = st.file_uploader("…or find frames like an example image", type=["png", "jpg", "jpeg", "webp"],
                              key="q_image")
    with st.expander("Then, in the same video", expanded=bool(st.session_state.get("q_then", "").strip())):
        col_then, col_within = st.columns([5, 2], vertical_alignment="bottom")
        then_text = col_then.text_input("…then this happens", key="q_then", placeholder="a shark swims past",
                                        help="finds pairs of frames of one video: the first description (or "
                                             "the example image), then this one at most N seconds later; "
                                             "leave empty for an ordinary search")
        within = col_within.number_input("within N seconds", min_value=0.1, value=10.0, step=1.0,
                                         key="q_within")

filters = Filters(sites=tuple(sel_sites), places=tuple(sel_places), date_from=date_from or "",
                  date_to=date_to or "")
# The query box and the uploader live in a form, so their values change only on submit; a change of the
# filters, the ranking or the index (a rebuilt shard) re-runs the current query at once.
then_text = then_text.strip()
params = (text.strip(), upload.file_id if upload is not None else None, then_text, float(within), filters, fusion,
          float(weight), int(k), index_fingerprint(cfg.index))
last = st.session_state.get("search_params")
if submitted or (last is not None and params != last):
    query = None
    label = ""
    try:
        if upload is not None:
            from app.security import read_uploaded_image

            query = read_uploaded_image(upload.getvalue(), upload.name)
            label = f"image {upload.name}" + (" (clear the image to search by text)" if text.strip() else "")
        elif text.strip():
            query = text.strip()
            label = f"“{query}”"
        else:
            st.warning("Type a description or upload an example image."
                       + (" The “then” description needs a first one to follow." if then_text else ""))
            st.session_state.pop("search_results", None)
            st.session_state["search_params"] = params
        if query is not None:
            encoder = common.encoder(index, cfg)
            started = time.perf_counter()
            if then_text:
                found = temporal_search(index, encoder, query, then_text, within=float(within), k=int(k),
                                        fusion=fusion, weight=float(weight), filters=filters)
                label += f" then “{then_text}” within {float(within):g} s"
            else:
                found = search(index, encoder, query, k=int(k), fusion=fusion, weight=float(weight),
                               filters=filters)
            competition.log_search(found, kind="temporal" if then_text else "image" if upload is not None else "text",
                                   text=text.strip() or None, image=upload.name if upload is not None else None,
                                   then=then_text or None, within=float(within), filters=filters, fusion=fusion,
                                   weight=float(weight), k=int(k))
            st.session_state["search_results"] = found
            st.session_state["search_label"] = label
            st.session_state["search_ms"] = 1000 * (time.perf_counter() - started)
            st.session_state["search_params"] = params
            st.session_state.pop("selected", None)
    except MvkError as exc:
        st.error(str(exc))

found: pd.DataFrame | None = st.session_state.get("search_results")
if found is None:
    st.caption(f"{len(frames):,} frames from {frames['video_id'].nunique() if len(frames) else 0} videos at "
               f"{len(sites)} dive sites. Type a query and press Enter.")
    st.stop()

pairs = results.is_pairs(found)
st.caption(f"{len(found)} {'pairs' if pairs else 'frames'} for {st.session_state.get('search_label', '')} · "
           f"{st.session_state.get('search_ms', 0):.0f} ms · fusion {fusion}")
if found.empty:
    st.info("No frame of the second description follows one of the first within that time in the same video "
            "(with these filters)." if pairs else "No frame matches these filters.")
    st.stop()

selected = st.session_state.get("selected")
if selected is not None:
    results.player(index, cfg, selected, overlay)
    st.divider()

if pairs:
    results.pair_list(index, found, group_by_video=group)
else:
    results.grid(index, found, overlay=overlay, group_by_video=group)

"""Survey page: a text (or an example image, or a result, or the liked and disliked results of a search) turned into survey evidence
through the query service (``SearchService.survey_report``, what ``mvk survey`` writes): presence and MaxN per
video, per-site and per-month tables, the timeline, site and map plots, and the CSV files to download."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from app.ui import common

cfg = common.config()
index = common.open_index(cfg)
common.random_banner(index, cfg)

from search.errors import MvkError  # noqa: E402
from search.queries import FeedbackQuery, Filters, ImageQuery, ItemRef, LikeQuery, TextQuery  # noqa: E402
from search.survey import DEFAULT_THRESHOLD  # noqa: E402

frames = index.frames
st.title("Survey")
st.caption("Where and when something was seen, how many at once (MaxN), and what an absence means: the numbers "
           "`mvk survey` writes, for a description or a result you pick.")

with st.sidebar:
    st.subheader("Survey filters")
    sites = sorted(frames["site"].dropna().unique().tolist())
    sel_sites = st.multiselect("Dive sites", sites, key="s_sites", placeholder="all sites")
    dates = sorted(d for d in frames["date"].dropna().unique().tolist() if d)
    date_from = date_to = ""
    if dates:
        date_from = st.selectbox("From (month)", [""] + dates, key="s_from", format_func=lambda d: d or "any")
        date_to = st.selectbox("To (month)", [""] + dates, key="s_to", format_func=lambda d: d or "any")
    spaces = index.spaces()
    space = None
    if len(spaces) > 1:       # a threshold is one model's similarity: a survey scores one space
        space = st.selectbox("Embedding space", spaces, key="s_space",
                             help="The model whose similarities are thresholded (a survey scores one space; a "
                                  "BioCLIP space suits species names)")


def _refs(text: str) -> tuple[ItemRef, ...]:
    return tuple(ItemRef.parse(line) for line in text.replace(",", "\n").splitlines() if line.strip())


with st.form("survey", border=False):
    col_text, col_go = st.columns([6, 1], vertical_alignment="bottom")
    text = col_text.text_input("What to survey", key="s_text", placeholder="a turtle swimming over coral")
    submitted = col_go.form_submit_button("Survey", type="primary", width="stretch")
    upload = st.file_uploader("…or survey what looks like an example image", type=["png", "jpg", "jpeg", "webp"],
                              key="s_image")
    with st.expander("…or a result, and labels that calibrate the threshold"):
        like = st.text_input("More like this result (instead of a text)", key="s_like",
                             placeholder="SITE/VIDEO_ID/FRAME_INDEX/TRACK_ID")
        whole = st.checkbox("its whole track", key="s_whole")
        positives = st.text_area("Matches (one id a line): likes", key="s_pos", height=68)
        negatives = st.text_area("Non-matches (one id a line): dislikes", key="s_neg", height=68)
        target = st.slider("Target precision (with labels)", 0.5, 1.0, 0.9, 0.05, key="s_target")
    manual = st.checkbox("Set the threshold T myself", key="s_manual")
    threshold = st.slider("Threshold T (cosine)", -1.0, 1.0, DEFAULT_THRESHOLD, 0.01, key="s_threshold",
                          disabled=not manual)

if submitted:
    st.session_state.pop("survey_report", None)
    try:
        if like.strip():
            base = LikeQuery(ItemRef.parse(like), whole_track=whole)
        elif upload is not None:
            from app.security import read_uploaded_image
            base = ImageQuery(read_uploaded_image(upload.getvalue(), upload.name), f"image {upload.name}")
        else:
            base = TextQuery(text) if text.strip() else None
        pos, neg = _refs(positives), _refs(negatives)
        query = FeedbackQuery(base, pos, neg) if pos or neg else base
        if query is None:
            st.warning("Type a description, or name a result to survey what looks like it.")
        else:
            if not like.strip():
                common.encoder(index, cfg)        # a missing model stops the page with the reason
            filters = Filters(sites=tuple(sel_sites), date_from=date_from or "", date_to=date_to or "")
            with st.spinner("Surveying every video…"):
                st.session_state["survey_report"] = common.service(cfg).survey_report(
                    query, threshold=float(threshold) if manual else None, target_precision=float(target),
                    filters=filters, source="app", space=space)
    except MvkError as exc:
        st.error(common.plain(exc), icon=":material/error:")

report = st.session_state.get("survey_report")
if report is None:
    st.stop()

result = report.result
summary = result.summary()
st.subheader(f"{common.plain(common.shorten(result.query, 100))}: present in {summary['videos_present']} of "
             f"{summary['videos']} videos · total MaxN {summary['total_maxn']} · T = {result.threshold:.3g}")
(st.success if result.calibration.calibrated else st.info)(common.plain(result.calibration.remark()))
for note in result.notes:
    st.caption(f":material/info: Note: {common.plain(note)}")

downloads = st.columns(4)
for col, name in zip(downloads, ("presence", "occurrences", "sites", "months")):
    col.download_button(f"{name}.csv", report.csv(name).encode("utf-8"), file_name=f"{name}.csv", mime="text/csv",
                        key=f"survey_{name}", on_click="ignore", icon=":material/download:", width="stretch")

st.markdown("**Presence per video**")
presence: pd.DataFrame = result.presence
st.dataframe(presence.drop(columns=["video_path"], errors="ignore"), hide_index=True, width="stretch")
st.image(report.plots["timeline"], caption="presence timeline: matching tracks over time, the MaxN frame in red")

left, right = st.columns(2)
with left:
    st.markdown("**Per site**")
    st.dataframe(result.sites, hide_index=True, width="stretch")
    st.image(report.plots["sites"], caption="videos surveyed, with presence, and total MaxN per site")
with right:
    st.markdown("**Per month**")
    st.dataframe(result.months, hide_index=True, width="stretch")
    st.image(report.plots["map"], caption="sites (filled: seen; hollow: absent everywhere)")

"""Search page: a text (or example image) query, optionally followed by more descriptions in the same video
within N seconds (chains of frames); filters, fusion, where in the frame; a grid of frames; a result plays in
place. After the first query: "more like this" on any result, likes and dislikes that re-rank (kept in the
page's address, so a reload keeps them), and heatmaps of where the text matches."""
from __future__ import annotations


import pandas as pd
import streamlit as st

from app.state import index_fingerprint
from app.ui import common, results

cfg = common.config()
index = common.open_index(cfg)
common.random_banner(index, cfg)

from mvk_tools.exports import to_csv  # noqa: E402  (cells a spreadsheet would run as formulas are escaped)
from search.errors import MvkError  # noqa: E402
from search.queries import (FUSIONS, FeedbackQuery, Filters, ImageQuery, ItemRef, LikeQuery, Options,  # noqa: E402
                            SequenceQuery, TextQuery)
from search.service import MAX_RESULTS  # noqa: E402  (the deepest rank paging reaches, as in the API)
URL = "query-params"      # widgets bound to the URL: a link (or a reload) brings back the query and filters

frames = index.frames
st.title("Search")

with st.sidebar:
    st.subheader("Filters")
    sites = sorted(frames["site"].dropna().unique().tolist())
    places = sorted(p for p in frames["place"].dropna().unique().tolist() if p)
    dates = sorted(d for d in frames["date"].dropna().unique().tolist() if d)
    sel_sites = st.multiselect("Dive sites", sites, key="f_sites", placeholder="all sites", bind=URL)
    sel_places = st.multiselect("Places", places, key="f_places", placeholder="all places", bind=URL)
    date_from = date_to = ""
    if dates:
        date_from = st.selectbox("From (month)", [""] + dates, key="f_from", format_func=lambda d: d or "any",
                                 bind=URL)
        date_to = st.selectbox("To (month)", [""] + dates, key="f_to", format_func=lambda d: d or "any", bind=URL)
    st.subheader("Ranking")
    space_fusion = "rrf"                 # an index with one embedding space: the setting is not shown
    if len(index.spaces()) > 1:
        space_fusion = st.selectbox("Embedding spaces", ["rrf", "zscore", *index.spaces()], key="space_fusion",
                                    format_func=results.space_choice_label, bind=URL,
                                    help="the index holds vectors of several models: fuse their rankings "
                                         "(reciprocal rank, the robust default; or the mean of z-normalised "
                                         "scores), or search one model's space alone")
    fusion = st.selectbox("Fusion of frame and object scores", FUSIONS, index=FUSIONS.index("max"), key="fusion",
                          help="frame: whole-frame similarity; object: best object mask; max: the larger of "
                               "both; weighted: (1−w)·frame + w·object", bind=URL)
    weight = st.slider("Object weight w", 0.0, 1.0, 0.5, 0.05, key="weight", disabled=fusion != "weighted",
                       bind=URL)
    k = st.slider("Results per page", 4, 100, 20, 4, key="k", bind=URL)
    group = st.toggle("Group by video", key="group", bind=URL)
    overlay = st.radio("Draw the matching object", ["none", "mask", "box"], index=1, horizontal=True,
                       key="overlay", bind=URL)
    heat_grid = st.toggle("Heatmaps on the grid", key="heat_grid",
                          help="draw where the text matches over each result (one pass of the model per frame)")
    with st.expander("Where in the frame", expanded=any(st.session_state.get(f"cell_{i}") for i in range(9))):
        st.caption("The matching object lies in these parts of the frame; frames whose matching object lies "
                   "elsewhere are scored as whole frames, a little lower (not left out).")
        for row_no in range(3):
            for col, cell in zip(st.columns(3), range(3 * row_no, 3 * row_no + 3)):
                col.checkbox(["top left", "top", "top right", "left", "centre", "right", "bottom left", "bottom",
                              "bottom right"][cell], key=f"cell_{cell}", bind=URL)
cells = tuple(i for i in range(9) if st.session_state.get(f"cell_{i}"))

with st.form("query", border=False):
    col_text, col_go = st.columns([6, 1], vertical_alignment="bottom")
    text = col_text.text_input("Describe what you are looking for", key="q_text",
                               placeholder="a turtle swimming over coral", bind=URL)
    submitted = col_go.form_submit_button("Search", type="primary", width="stretch")
    upload = st.file_uploader("…or find frames like an example image", type=["png", "jpg", "jpeg", "webp"],
                              key="q_image")
    with st.expander("Then, in the same video", expanded=bool(st.session_state.get("q_then", "").strip())):
        col_then, col_within = st.columns([5, 2], vertical_alignment="bottom")
        then_text = col_then.text_input("…then this happens", key="q_then", placeholder="a shark swims past",
                                        help="finds pairs of frames of one video: the first description (or "
                                             "the example image), then this one at most N seconds later; "
                                             "leave empty for an ordinary search", bind=URL)
        within = col_within.number_input("within N seconds", min_value=0.1, value=10.0, step=1.0,
                                         key="q_within", bind=URL)
        then_more = st.text_input("…and then this (optional)", key="q_then2", placeholder="a turtle",
                                  help="a third step, at most N seconds after the second", bind=URL)


def clear_results() -> None:
    for name in ("search_results", "search_notes", "selected"):
        st.session_state.pop(name, None)


filters = Filters(sites=tuple(sel_sites), places=tuple(sel_places), date_from=date_from or "",
                  date_to=date_to or "")
page_no = max(1, int(st.session_state.get("page") or 1))
# The query box and the uploader live in a form, so their values change only on submit; a change of the
# filters, the ranking, the page or the index (a rebuilt shard) re-runs the current query at once, and so does
# opening a link (or reloading) that holds a query.
then_text = then_text.strip()
then_steps = [s for s in (then_text, then_more.strip()) if s]
like_ref = results.like_target()
likes, dislikes = results.feedback_labels()
use_feedback = bool(st.session_state.get("use_feedback")) and bool(likes or dislikes)
params = (text.strip(), upload.file_id if upload is not None else None, tuple(then_steps), float(within), filters,
          fusion, float(weight), int(k), cells, space_fusion, like_ref,
          (tuple(likes), tuple(dislikes)) if use_feedback else None,
          index_fingerprint(cfg.index))
last = st.session_state.get("search_params")
if (last is not None and params[:-1] != last[:-1]) or submitted:
    page_no = 1                      # a new query or new filters start on the first page
    st.session_state["page"] = 1
wanted = min(MAX_RESULTS, int(k) * page_no)
from_url = last is None and bool(params[0] or like_ref)
if submitted or from_url or (last is not None and (params != last or st.session_state.get("search_k") != wanted)):
    query = None
    label = ""
    st.session_state["search_params"] = params
    try:
        if like_ref:
            query = LikeQuery(ItemRef.parse(like_ref))
            label = f"more like {like_ref}"
        elif upload is not None:
            from app.security import read_uploaded_image

            query = read_uploaded_image(upload.getvalue(), upload.name)
            label = f"image {upload.name}" + (" (clear the image to search by text)" if text.strip() else "")
        elif text.strip():
            query = text.strip()
            label = f"“{query}”"
        else:
            st.warning("Type a description or upload an example image."
                       + (" The “then” description needs a first one to follow." if then_steps else ""))
            clear_results()
        if query is not None:
            common.encoder(index, cfg)           # a missing model stops the page with the reason
            if isinstance(query, LikeQuery):
                q = query
            else:
                q = TextQuery(query) if isinstance(query, str) else ImageQuery(query, f"image {upload.name}")
            if then_steps and not isinstance(q, LikeQuery):
                q = SequenceQuery((q, *(TextQuery(s) for s in then_steps)), float(within))
                label += "".join(f" then “{s}”" for s in then_steps) + f" within {float(within):g} s"
            elif use_feedback:
                q = FeedbackQuery(q, tuple(ItemRef.parse(r) for r in likes), tuple(ItemRef.parse(r) for r in dislikes),
                                  display=int(k))
                label += f" with {len(likes)} liked and {len(dislikes)} disliked results"
            page = common.service(cfg).run(q, Options(k=wanted, fusion=fusion, weight=float(weight), filters=filters,
                                                      space_fusion=space_fusion).with_cells(cells), source="app")
            found = page.rows
            if st.session_state.get("search_k") is None or params != last:
                st.session_state.pop("selected", None)
            st.session_state["search_results"] = found
            st.session_state["search_notes"] = [n for n in page.notes if "random weights" not in n]
            st.session_state["search_label"] = label
            st.session_state["search_ms"] = page.took_ms
            st.session_state["search_k"] = wanted
    except MvkError as exc:
        clear_results()
        st.error(common.plain(exc), icon=":material/error:")

found: pd.DataFrame | None = st.session_state.get("search_results")
if found is None:
    n_videos = len(frames[["site", "video_id"]].drop_duplicates()) if len(frames) else 0
    st.caption(f"{len(frames):,} frames from {n_videos:,} videos at {len(sites)} dive sites. "
               "Type a query and press Enter.")
    st.stop()

pairs = results.is_pairs(found)
first = (page_no - 1) * int(k)
shown = found.iloc[first:first + int(k)]
noun = "pairs" if pairs else "frames"
head, csv_col, json_col = st.columns([6, 1, 1], vertical_alignment="center")
span = f" · showing {first + 1}–{first + len(shown)}" if page_no > 1 or len(found) > len(shown) else ""
head.caption(f"{len(found)} {noun} for {common.plain(common.shorten(st.session_state.get('search_label', ''), 100))}"
             f"{span} · {st.session_state.get('search_ms', 0):.0f} ms · fusion {fusion}"
             + (f" · {common.plain(results.space_caption(space_fusion))}" if len(index.spaces()) > 1 else ""))
export = results.export_table(found)
csv_col.download_button("CSV", to_csv(export, index=False).encode("utf-8"), file_name="mvk_results.csv",
                        mime="text/csv", key="export_csv", on_click="ignore", icon=":material/download:",
                        help="download these results (ranks, scores, videos, times, boxes)", width="stretch")
json_col.download_button("JSON", export.to_json(orient="records", indent=1).encode("utf-8"),
                         file_name="mvk_results.json", mime="application/json", key="export_json",
                         on_click="ignore", icon=":material/download:", width="stretch")
for note in st.session_state.get("search_notes", []):
    st.caption(f":material/info: Note: {common.plain(note)}")
results.feedback_bar(likes, dislikes, like_ref)
if found.empty:
    st.info("No frame of the second description follows one of the first within that time in the same video "
            "(with these filters)." if pairs else "No frame matches these filters.")
    st.stop()

selected = st.session_state.get("selected")
if selected is not None:
    results.player(index, cfg, selected, overlay, heat_text=text.strip() if not like_ref else "")
    st.divider()

if pairs:
    results.pair_list(index, shown, group_by_video=group)
else:
    results.grid(index, shown, overlay=overlay, group_by_video=group,
                 heat_text=text.strip() if heat_grid and not like_ref and upload is None else "", cfg=cfg)

more = len(found) >= int(k) * page_no and int(k) * page_no < MAX_RESULTS
pages = page_no + 1 if more else page_no
if pages > 1:
    st.pagination(pages, key="page", default=page_no, bind=URL, max_visible_pages=9)

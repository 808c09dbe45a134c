"""KIS benchmark page: pick query sets (files beside the index or collection, or uploads), rank every target on
the open index, and show the summary, interactive rank plots and the per-query table."""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import altair as alt
import pandas as pd
import streamlit as st

from app.ui import common

cfg = common.config()
index = common.open_index(cfg)
common.random_banner(index, cfg)

from mvk_tools import kis, plots  # noqa: E402
from mvk_tools.exports import to_csv  # noqa: E402
from search.errors import MvkError  # noqa: E402
from search.queries import FUSIONS  # noqa: E402
from search.threads import threads_from_env  # noqa: E402

from app import kis_run  # noqa: E402
from app.security import check_uploaded_csv, safe_name  # noqa: E402

st.title("Known-item search benchmark")
st.caption("Each query describes one target frame; its rank is where that frame lands among all "
           f"{len(index.frames):,} indexed frames (1 is best; ties count against the target).")

files = kis_run.find_querysets(cfg.roots)
MAX_PRESELECTED = 4   # a few files found beside the index are all chosen, so the benchmark runs at once
left, right = st.columns([3, 2])
with left:
    chosen = st.multiselect("Query sets found beside the index and the collection", files,
                            default=files if len(files) <= MAX_PRESELECTED else [], key="kis_files",
                            format_func=lambda p: kis_run.short_name(p, cfg.roots),
                            placeholder="choose query-set files")
    uploads = st.file_uploader("…or upload query sets (tidy CSV, or MVK's semicolon files)", type=["csv", "txt"],
                               accept_multiple_files=True, key="kis_uploads")
with right:
    fusions = st.multiselect("Fusion modes", FUSIONS, default=list(kis.DEFAULT_FUSIONS), key="kis_fusions",
                             help="compared side by side; the default is that of `mvk kis`")
    weight = 0.5
    if "weighted" in fusions:
        weight = st.slider("Object weight w of the weighted fusion", 0.0, 1.0, 0.5, 0.05, key="kis_weight",
                           help="(1−w)·frame + w·object")
    tolerance = st.number_input("Time tolerance (s)", 0.0, 30.0, kis.DEFAULT_TOLERANCE, 0.25, key="kis_tol",
                                help="indexed frames within this many seconds of a target time match it")
    use_vectors = st.checkbox("Use the files' precomputed vectors", key="kis_vectors",
                              help="MVK ships CLIP vectors with its queries; they only fit an index built "
                                   "with the same CLIP model")

if st.button("Run benchmark", type="primary", disabled=not (chosen or uploads) or not fusions, key="kis_run"):
    with tempfile.TemporaryDirectory(prefix="mvk-upload-") as tmp:
        paths = [Path(p) for p in chosen]
        problems: list[str] = []
        uploaded: dict[str, str] = {}        # temporary file -> the name it was uploaded as
        for number, up in enumerate(uploads or []):
            try:
                text = check_uploaded_csv(up.getvalue(), up.name)
                target = Path(tmp) / f"{number}-{safe_name(up.name, suffix='.csv')}"
            except MvkError as exc:
                problems.append(str(exc))
                continue
            target.write_text(text, encoding="utf-8")
            paths.append(target)
            uploaded[str(target)] = f"{up.name} (uploaded)"
        bar = st.progress(0.0, text="Reading the query sets…")

        def progress(items, desc: str, total: int):
            unit = "queries" if desc == "ranking" else "batches"
            for done, item in enumerate(items):
                bar.progress(done / max(total, 1), text=f"{desc.capitalize()}: {done} of {total} {unit}")
                yield item

        started = time.perf_counter()
        try:
            run = kis.run_benchmark(index, paths, encoder=lambda: common.encoder(index, cfg),
                                    use_file_vectors=use_vectors, fusions=fusions, weight=weight,
                                    tolerance=tolerance, progress=progress, cache=index.root,
                                    threads=threads_from_env())
            run.file_errors[:0] = problems
            run.seconds = time.perf_counter() - started
            st.session_state["kis_result"] = kis_run.rename_files(run, uploaded)
        except MvkError as exc:
            st.session_state.pop("kis_result", None)
            st.error(common.plain(kis_run.renamed(str(exc), uploaded)))
        bar.empty()

run = st.session_state.get("kis_result")
if run is None:
    if not files:
        st.info("No query-set file found beside the index or the collection: upload one, or record queries "
                "on the **KIS session** page.")
    st.stop()

for problem in run.file_errors:
    st.warning(common.plain(problem))
if run.issues:
    with st.expander(f"{len(run.issues)} rows were skipped or need attention"):
        st.code("\n".join(str(i) for i in run.issues[:500]), language=None)
if run.flagged:
    with st.expander(f"{len(run.flagged)} targets are selected frames the index flagged (their time and place "
                     "are uncertain)"):
        st.dataframe(pd.DataFrame(run.flagged), hide_index=True, width="stretch")
for file, reading in run.timecode_readings.items():
    st.caption(f"time codes of {file}: read as {reading['reading']}"
               + (f" ({reading['why']})" if reading["why"] else ""))

summary = run.summary
st.subheader("Summary")
st.caption(f"{run.n_queries} queries · {len(summary)} query type × fusion rows · {run.seconds:.1f} s")
percent = {c: st.column_config.NumberColumn(c, format="percent") for c in summary.columns if c.startswith("hit@")}
st.dataframe(summary, hide_index=True, width="stretch",
             column_config={**percent, "mrr": st.column_config.NumberColumn("MRR", format="%.3f",
                                                                            help="mean reciprocal rank, 0 to 1"),
                            "median_rank": st.column_config.NumberColumn(format="%.1f"),
                            "mean_rank": st.column_config.NumberColumn(format="%.1f")})

per_query = run.per_query
curves = plots.rank_curve_data(per_query)
if not curves.empty:
    st.subheader("Targets found within rank k")
    curves["series"] = curves["query_type"] + " · " + curves["fusion"]
    n_frames = max(int(per_query["n_frames"].max()), 2)
    chart = (alt.Chart(curves).mark_line(point=alt.OverlayMarkDef(size=18), interpolate="step-after")
             .encode(x=alt.X("k:Q", scale=alt.Scale(type="log", domain=[1, n_frames]), title="rank k (log scale)"),
                     y=alt.Y("share:Q", axis=alt.Axis(format="%"), title="targets found",
                             scale=alt.Scale(domain=[0, 1], clamp=True)),
                     color=alt.Color("series:N", title="query type · fusion"),
                     tooltip=["query_type", "fusion", "k", alt.Tooltip("share:Q", format=".1%"), "n"])
             .properties(height=300).interactive(bind_y=False))
    st.altair_chart(chart, width="stretch")

    boxes = plots.rank_box_data(per_query)
    boxes["series"] = boxes["query_type"] + " · " + boxes["fusion"]
    st.subheader("Rank of each query")
    strip = (alt.Chart(boxes).mark_tick(thickness=3, size=22)
             .encode(y=alt.Y("series:N", title=None, axis=alt.Axis(labelLimit=0)),   # whole labels, never cut
                     x=alt.X("rank:Q", scale=alt.Scale(type="log", domain=[1, n_frames]), title="rank (log scale)"),
                     color=alt.Color("series:N", legend=None), tooltip=["query_id", "series", "rank"])
             .properties(height=alt.Step(34)))
    st.altair_chart(strip, width="stretch")

    pairs = plots.query_type_pairs(per_query)
    if pairs:
        x_type, y_type = st.selectbox("Compare query types on the same targets", pairs, key="kis_pair",
                                      format_func=lambda p: f"{p[0]} vs {p[1]}")
        scatter = plots.rank_scatter_data(per_query, x_type, y_type)
        chart = (alt.Chart(scatter).mark_circle(size=60, opacity=0.7)
                 .encode(x=alt.X("rank_x:Q", scale=alt.Scale(type="log"), title=f"rank, {x_type}"),
                         y=alt.Y("rank_y:Q", scale=alt.Scale(type="log"), title=f"rank, {y_type}"),
                         color="fusion:N", tooltip=["target", "fusion", "rank_x", "rank_y"])
                 .properties(height=320).interactive())
        st.altair_chart(chart, width="stretch")

st.subheader("Per query")
st.dataframe(per_query[["query_id", "query_type", "fusion", "status", "rank", "score", "text", "target_site",
                        "target_video", "target_frame", "target_time", "reason"]],
             hide_index=True, width="stretch", height=300)
st.download_button("Download the per-query CSV", to_csv(per_query, index=False).encode("utf-8"),
                   file_name="kis_per_query.csv", mime="text/csv", key="kis_download")

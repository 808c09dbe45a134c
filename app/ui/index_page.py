"""Index page: the shards with their counts, models and errors; add or rebuild a dive site in the background
while the other pages keep searching the current shards."""
from __future__ import annotations

import time

import streamlit as st

from app.state import job_registry
from app.ui import common

cfg = common.config()
index = common.open_index(cfg, stop_when_empty=False)
common.random_banner(index, cfg)

from app import indexing  # noqa: E402
from app.security import collection_folder  # noqa: E402
from indexer.engines import ENGINES  # noqa: E402
from search.errors import MvkError  # noqa: E402

st.title("Index")
st.caption(f"`{cfg.index}`")

if index is not None:
    a, b, c, d = st.columns(4)
    a.metric("Dive sites", len(index.shards))
    b.metric("Videos", f"{index.frames[['site', 'video_id']].drop_duplicates().shape[0]:,}" if len(index.frames) else 0)
    c.metric("Frames", f"{len(index.frames):,}")
    d.metric("Objects", f"{len(index.objects):,}")
    st.caption(indexing.memory_line(index))
    st.subheader("Shards")
    st.dataframe(indexing.shard_table(index), hide_index=True, width="stretch")
    spaces = indexing.space_table(index)
    if len(spaces) > 1:
        st.subheader("Embedding spaces")
        st.caption("A query runs in every space and their rankings are fused; the Search page's *Embedding "
                   "spaces* setting picks the fusion or one space alone.")
        st.dataframe(spaces, hide_index=True, width="stretch")
    errors = indexing.video_errors(index)
    if len(errors):
        st.warning(f"{len(errors)} video(s) could not be indexed")
        st.dataframe(errors, hide_index=True, width="stretch")
    with st.expander("Models and settings"):
        st.markdown("\n".join(f"- {line}" for line in indexing.settings_lines(index.manifest or {})))

st.subheader("Add or rebuild a dive site, or add a model")
registry = job_registry()
if cfg.collection is None:
    st.info("Start the app with `--collection DIR` to add or rebuild sites.")
else:
    known = sorted(index.shards) if index is not None else []
    refusal = indexing.build_refusal(cfg, index.manifest if index is not None else None)
    if refusal:
        st.info(refusal, icon=":material/info:")
    busy = registry.running("index")
    with st.form("build", border=True):
        typed = st.text_input("Folder inside the collection", key="b_folder", value="videos",
                              help="a site folder (e.g. `videos/Oahu_Jul2022`), a folder of videos, or `videos` "
                                   "for every site; it must lie inside the collection")
        site_names = st.text_input("Only these sites (comma-separated, optional)", key="b_sites",
                                   placeholder=", ".join(known[:2]) or "e.g. Oahu_Jul2022")
        engine = st.selectbox("Engine", list(ENGINES), key="b_engine", format_func=lambda k: f"{k}: {ENGINES[k].help}")
        models = st.text_input("Add models as further embedding spaces (optional)", key="b_models",
                               placeholder="e.g. ViT-B-16-SigLIP@webli, hf-hub:imageomics/bioclip",
                               help="NAME or NAME@TAG, comma-separated (as `mvk index --model`): each becomes a "
                                    "space of its own in every chosen site, fused with the others at query time; "
                                    "only what a site lacks is embedded (no segmentation), the other spaces stay "
                                    "as they are", disabled=index is None)
        rebuild = st.checkbox("Rebuild even if up to date", key="b_rebuild",
                              help="recompute aside; searches use the old shard until the new one is swapped in")
        start = st.form_submit_button("Indexing…" if busy else "Index", type="primary",
                                      disabled=busy or refusal is not None)
    if start and not busy:
        try:
            folder = collection_folder(cfg.collection, typed)
            sites = [s.strip() for s in site_names.split(",") if s.strip()] or None
            further = [m.strip() for m in models.split(",") if m.strip()]
            registry.start("index", lambda job: indexing.build_sites(cfg, folder, sites, rebuild=rebuild, job=job,
                                                                              engine=engine, models=further))
            st.rerun()                     # the form again, its button disabled while the job runs
        except (MvkError, RuntimeError) as exc:
            st.error(str(exc))
        except OSError as exc:             # never a traceback with the server's paths
            st.error(f"That folder cannot be used: {exc.strerror or type(exc).__name__}")


def job_panel(every: float | None) -> None:
    """The index job's progress while it runs (redrawn every ``every`` seconds), its outcome once done."""
    job = job_registry().jobs.get("index")
    if job is None:
        return
    now = time.time()
    if not job.finished:
        st.progress(job.fraction, text=indexing.progress_text(job, indexing.job_seconds(job, now)))
        if indexing.redraw_every(job, now) != every:
            st.rerun()      # the whole page: the panel comes back with the next (longer) interval
        return
    st.progress(1.0 if not job.error else job.fraction, text=f"finished in {indexing.job_seconds(job, now):.0f} s")
    if job.error:
        st.error(f"Indexing failed: {job.error}")
    else:
        result = job.result
        lines = [f"{s.site}: {s.status}, {s.frames} frames, {s.objects} objects" for s in getattr(result, "sites", [])]
        st.success("Indexing finished. " + "; ".join(lines))
        for site in getattr(result, "sites", []):
            for note in site.notes:
                st.caption(f"{site.site}: {note}")
        for site, path, msg in getattr(result, "errors", []):
            st.warning(indexing.error_line(site, path, msg))
    for note in job.notes:
        st.warning(note)
    with st.expander("Log"):
        st.code("\n".join(job.log[-50:]) or "(empty)", language=None)
    if st.session_state.get("seen_job") != job.started:
        st.session_state["seen_job"] = job.started
        st.rerun()   # the whole page: the new shard shows in the table, and the redraws stop


# Only the panel reruns, and only while a job runs: an idle page asks nothing of the server.
every = indexing.redraw_every(registry.jobs.get("index"), time.time())
st.fragment(job_panel, run_every=every)(every)

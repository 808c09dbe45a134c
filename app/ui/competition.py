"""What a competition (VBS, LSC) needs from the app: every search in the event log, and the Submit button of a
result card and of the player, which sends the result's video and moment (a pair: its first to
its second frame) to the DRES server named by the environment (``MVK_DRES_URL``, ``MVK_DRES_USER``,
``MVK_DRES_PASSWORD``, ``MVK_DRES_EVALUATION``, ``MVK_DRES_COLLECTION``) and appends the attempt to the event log
(``MVK_LOG``, else ``<index>/logs/events.jsonl``). Without ``MVK_DRES_URL`` no button is shown."""
from __future__ import annotations

import os

import streamlit as st

from app.ui import common


@st.cache_resource(max_entries=4)
def _client(settings):
    """One DRES session per server and user, shared by the app's sessions (it logs in on first use)."""
    from mvk_tools.dres import DresClient

    return DresClient(settings)


def _settings():
    """The DRES settings from the environment, None when no server is configured; an InputError's message when
    they are unusable."""
    from mvk_tools.dres import DresSettings
    from search.errors import InputError

    try:
        return DresSettings.from_env(os.environ)
    except InputError as exc:
        return str(exc)


def answer_of(row: dict) -> tuple[str, float, float]:
    """(video name, start s, end s) of a result row: a frame is one moment, a pair spans first to second frame."""
    start = float(row["time"])
    end = float(row["then_time"]) if "then_time" in row else start
    return str(row["video_id"]), start, end


def _submit(row: dict, key: str) -> None:
    from mvk_tools.dres import submit_logged
    from mvk_tools.eventlog import EventLog, default_log_path
    from search.errors import MvkError

    settings = _settings()
    video, start, end = answer_of(row)
    log = EventLog(default_log_path(common.config().index))
    try:
        reply = submit_logged(_client(settings), log, source="app", video=video, start_s=start, end_s=end,
                              context={"site": str(row["site"]), "gid": int(row["gid"]), "rank": int(row["rank"])})
        st.session_state[key + "_reply"] = (bool(reply.get("status", True)),
                                            f"{reply.get('submission', '?')}: {reply.get('description', '')}")
    except MvkError as exc:
        st.session_state[key + "_reply"] = (False, str(exc))


def submit_button(row: dict, key: str) -> None:
    """A "Submit" button for ``row`` (nothing when no DRES server is configured) and the server's last answer."""
    settings = _settings()
    if settings is None:
        return
    if isinstance(settings, str):
        st.caption(f":red[DRES: {common.plain(settings)}]")
        return
    video, start, end = answer_of(row)
    span = f"{start:.1f} s" if end == start else f"{start:.1f}–{end:.1f} s"
    st.button("Submit", key=key, on_click=_submit, args=(row, key), width="stretch", icon=":material/send:",
              help=f"send video {video} at {span} to the DRES server {settings.url}")
    reply = st.session_state.get(key + "_reply")
    if reply is not None:
        ok, text = reply
        st.caption(f":{'green' if ok else 'red'}[{common.plain(text)}]")


def log_search(found, *, kind: str, text: str | None, image: str | None = None, then: str | None = None,
               within: float | None = None, filters=None, fusion: str = "max", weight: float = 0.5,
               k: int = 20) -> None:
    """Append one search of the Search page to the event log (the same record ``mvk serve`` writes)."""
    from mvk_tools.eventlog import EventLog, default_log_path

    extra = {"then": then, "within": within} if then else {}
    EventLog(default_log_path(common.config().index)).query(
        source="app", kind=kind, text=text, image=image, filters=filters, fusion=fusion, weight=weight, k=k,
        results=found, **extra)

"""The Streamlit app: ``streamlit run app/streamlit_app.py -- --index DIR --collection DIR`` (or ``mvk app``).

The pages share one process-wide cache (the opened index and the CLIP model) and one job registry (index
rebuilds running in background threads).
"""
from __future__ import annotations

import sys
from pathlib import Path

# `streamlit run` puts this file's folder on sys.path, not the repository root; an uninstalled checkout
# still finds the packages this way (an installed one finds them anyway).
_REPO = str(Path(__file__).resolve().parents[1])
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)

import streamlit as st  # noqa: E402

from app.ui import common  # noqa: E402

st.set_page_config(page_title="mvk · underwater video search", page_icon="🐠", layout="wide",
                   initial_sidebar_state="auto")   # collapsed on a phone, where it would cover the page

UI = Path(__file__).resolve().parent / "ui"
PAGES = [
    st.Page(UI / "search_page.py", title="Search", icon=":material/search:", url_path="search", default=True),
    st.Page(UI / "survey_page.py", title="Survey", icon=":material/monitoring:", url_path="survey"),
    st.Page(UI / "kis_page.py", title="KIS benchmark", icon=":material/leaderboard:", url_path="kis"),
    st.Page(UI / "session_page.py", title="KIS session", icon=":material/timer:", url_path="session"),
    st.Page(UI / "index_page.py", title="Index", icon=":material/database:", url_path="index"),
]

navigation = st.navigation(PAGES)
common.sidebar_header()
navigation.run()

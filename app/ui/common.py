"""What every page shares: the configuration, the opened index and encoder, banners, thumbnails with overlays."""
from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping

import numpy as np
import streamlit as st

from app.images import decode_jpeg, draw_object, row_box  # noqa: F401  (the pages use them through common)
from app.state import AppConfig, load_encoder_for, open_index_cached, parse_config, service_for


_MARKDOWN_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")


def plain(text: object) -> str:
    """``text`` made safe to embed in Markdown: every ASCII punctuation character backslash-escaped and line
    breaks turned into spaces, so a file, site or user text can never become a link, an image that fetches a
    URL, emphasis, LaTeX, a heading or an icon. Use it for every name or text that comes from files or users."""
    return _MARKDOWN_PUNCTUATION.sub(r"\\\1", " ".join(str(text).split()))


def shorten(text: object, limit: int = 120) -> str:
    """``text`` on one line, cut to ``limit`` characters with an ellipsis."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def config() -> AppConfig:
    """The app's configuration; stops the page with an explanation when it is missing."""
    try:
        return parse_config(sys.argv[1:], os.environ)
    except ValueError as exc:
        st.error(str(exc))
        st.stop()


def sidebar_header() -> None:
    cfg = config()
    with st.sidebar:
        st.markdown("### :material/scuba_diving: mvk · underwater video search")
        st.caption(f"Index: {plain(cfg.index)}")
        st.caption(f"Collection: {plain(cfg.collection)}" if cfg.collection else "Collection: none (no video playback)")
        if cfg.demo:
            st.info("Demo collection built by `mvk demo`: synthetic dive sites of moving coloured shapes, plus the "
                    "real Brackish clips when they were found. Index your own footage with `mvk index`.",
                    icon=":material/science:")


def random_parts(manifest: Mapping) -> list[str]:
    """Names of the manifest entries built with random weights (``random_weights: true`` anywhere inside)."""
    found: list[str] = []

    def walk(node, path: str) -> None:
        if isinstance(node, Mapping):
            if node.get("random_weights") is True:
                found.append(path or "index")
            for key, value in node.items():
                walk(value, f"{path}.{key}" if path else str(key))
        elif isinstance(node, list):
            for item in node:
                walk(item, path)

    walk(manifest or {}, "")
    return sorted(set(found))


# What the manifest entries that ``random_parts`` finds are, in the words of the page.
PART_NAMES = {"encoder": "CLIP encoder", "spaces.encoder": "CLIP encoder", "indexing.backbone": "segmentation backbone",
              "index": "models"}


def part_names(parts: list[str]) -> list[str]:
    """``random_parts``' manifest keys in words ("indexing.backbone" is the segmentation backbone)."""
    return list(dict.fromkeys(PART_NAMES.get(p, p.rsplit(".", 1)[-1].replace("_", " ")) for p in parts))


def random_banner(index, cfg: AppConfig) -> None:
    """The visible label of a smoke run: models with random weights give meaningless rankings."""
    parts = random_parts(getattr(index, "manifest", {}) or {}) if index is not None else []
    if parts or cfg.random_weights:
        what = plain(", ".join(part_names(parts))) if parts else "models"
        st.warning(f"**Smoke run — random weights** ({what}). The models were initialised randomly, so the "
                   "rankings below are meaningless: this checks that everything runs. Get the pretrained "
                   "weights (see the README, *Model weights*) and rebuild the index for real results.",
                   icon=":material/science:")


def without_folder(message: str, folder) -> str:
    """``message`` without its mention of ``folder`` (a line that names the folder already says it once):
    "X is not an index: …" becomes "not an index: …", "no index folder at X" becomes "no index folder"."""
    name = str(folder)
    if message.startswith(f"{name} is "):
        return message[len(name) + 4:]
    if message.startswith(f"{name}: "):
        return message[len(name) + 2:]
    return message.replace(f" at {name}", "").replace(f" {name}", "")


def open_index(cfg: AppConfig, *, stop_when_empty: bool = True):
    """The opened index or None; shows why on the page. Stops the page when there is nothing to search."""
    from search.errors import MvkError

    try:
        index = open_index_cached(cfg)
    except MvkError as exc:
        st.info(f"No usable index in {plain(cfg.index)} yet ({plain(without_folder(str(exc), cfg.index))}). Build a "
                "dive site on the **Index** page, or start with `mvk demo`.", icon=":material/info:")
        if stop_when_empty:
            st.stop()
        return None
    for site, why in (index.errors or {}).items():
        st.error(f"Shard **{plain(site)}** is skipped: {plain(why)}", icon=":material/error:")
    if stop_when_empty and len(index.frames) == 0:
        st.info("The index has no frames yet: add a dive site on the **Index** page.", icon=":material/info:")
        st.stop()
    return index


def encoder(index, cfg: AppConfig):
    """The encoder the index was built with (loaded once per process); stops the page with the reason when
    its weights are missing."""
    from search.errors import MvkError

    try:
        return load_encoder_for(index, cfg)
    except MvkError as exc:
        st.error(f"Cannot load the CLIP model: {plain(exc)}", icon=":material/error:")
        st.stop()


def service(cfg: AppConfig):
    """The query service every page runs its queries through (the one ``mvk serve`` runs), with the page's
    encoder in it."""
    svc = service_for(cfg)
    if svc.encoder is None:
        svc.encoder = encoder(svc.index(), cfg)
    return svc


def fmt_time(seconds: float) -> str:
    seconds = max(0.0, float(seconds))
    minutes, rest = divmod(seconds, 60.0)
    return f"{int(minutes)}:{rest:04.1f}"


def fmt_clock(seconds: float) -> str:
    """Whole seconds as mm:ss (a countdown, a time taken)."""
    minutes, rest = divmod(int(round(max(0.0, float(seconds)))), 60)
    return f"{minutes:02d}:{rest:02d}"


def has_object(row) -> bool:
    rle_text = row.get("mask_rle")
    return bool(isinstance(rle_text, str) and rle_text) or row_box(row) is not None

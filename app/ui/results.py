"""Result grid (thumbnails with score, site, video, time), the list of "A then B" pairs, and the player of one
result (video + object track)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from app.ui import common, competition

COLUMNS = 5
TRACK_STRIP = 8
PLAY_BEFORE = 2.0       # seconds of video before the chosen moment
PLAY_SECONDS = 30.0     # seconds after it: the segment converted when the browser cannot play the source


def frame_rows(index, gids) -> pd.DataFrame:
    """Rows of ``index.frames`` for global frame ids, in the order given."""
    frames = index.frames
    gids = np.asarray(list(gids), dtype=np.int64)
    if len(frames) and "gid" in frames and np.array_equal(frames["gid"].to_numpy()[: len(frames)],
                                                          np.arange(len(frames))):
        return index.with_thumbnails(frames.iloc[gids])
    return index.with_thumbnails(frames.set_index("gid", drop=False).loc[gids])


def export_table(found: pd.DataFrame) -> pd.DataFrame:
    """The results as downloaded (CSV, JSON): every column of the ranking, a frame without an object has empty
    track and box cells instead of -1, and a fused result's rank in each embedding space is a column
    ``rank in NAME`` per space (empty where that space did not return it)."""
    out = found.copy()
    for name in ("track_id", "x0", "y0", "x1", "y1"):
        if name in out:
            out[name] = out[name].astype("Int64").mask(out[name] < 0)
    if "spaces" in out:
        ranks = [r if isinstance(r, dict) else {} for r in out.pop("spaces")]
        for space in dict.fromkeys(name for r in ranks for name in r):
            out[f"rank in {space}"] = pd.array([r.get(space) for r in ranks], dtype="Int64")
    return out


def thumbnail(frame: pd.Series, obj: dict, overlay: str) -> np.ndarray:
    image = common.decode_jpeg(frame["thumbnail"])
    return common.draw_object(image, mode=overlay, mask_rle=obj.get("mask_rle") or "", box=common.row_box(obj),
                              source_size=(int(frame["width"]), int(frame["height"])))


def _select(row: dict) -> None:
    st.session_state["selected"] = row


def _close() -> None:
    st.session_state.pop("selected", None)


def where(row: dict) -> str:
    """"site · video id" of a result, escaped for Markdown (names come from files)."""
    return f"{common.plain(row['site'])} · video {common.plain(row['video_id'])}"


# -- after the first query: more like this, likes and dislikes (kept in the page's address) --------------

LIKES, DISLIKES, LIKE = "up", "down", "like"      # URL parameters: a reload keeps the feedback and the query


def result_id(row: dict) -> str:
    """The stable id of a result's frame, SITE/VIDEO_ID/FRAME_INDEX (what the query service takes)."""
    return f"{row['site']}/{row['video_id']}/{int(row['frame_index'])}"


def object_id(row: dict) -> str | None:
    """The stable id of a result's best object, or None when the frame matched as a whole."""
    track = row.get("track_id")
    if track is None or (isinstance(track, float) and np.isnan(track)) or int(track) < 0:
        return None
    return f"{result_id(row)}/{int(track)}"


def like_target() -> str:
    """The result a "more like this" search starts from ('' for none)."""
    return str(st.query_params.get(LIKE, "") or "")


def feedback_labels() -> tuple[list[str], list[str]]:
    """The ids the user liked and disliked in this search session."""
    return st.query_params.get_all(LIKES), st.query_params.get_all(DISLIKES)


def _more_like(ref: str) -> None:
    st.query_params[LIKE] = ref
    st.session_state.pop("selected", None)
    st.session_state["page"] = 1


def _back_to_query() -> None:
    st.query_params.pop(LIKE, None)


def _label(ref: str, liked: bool) -> None:
    """Toggle a like (or a dislike) of ``ref``; a like replaces a dislike of the same result and back."""
    ups, downs = feedback_labels()
    mine, other = (ups, downs) if liked else (downs, ups)
    mine = [r for r in mine if r != ref] if ref in mine else [*mine, ref]
    other = [r for r in other if r != ref]
    ups, downs = (mine, other) if liked else (other, mine)
    st.query_params[LIKES] = ups
    st.query_params[DISLIKES] = downs


def _clear_feedback() -> None:
    st.query_params.pop(LIKES, None)
    st.query_params.pop(DISLIKES, None)
    st.session_state["use_feedback"] = False


def feedback_bar(likes: list[str], dislikes: list[str], like_ref: str) -> None:
    """What the user did after the first query, and how to use or undo it."""
    if like_ref:
        a, b = st.columns([5, 2], vertical_alignment="center")
        a.caption(f":material/image_search: More like {common.plain(like_ref)} (the result itself comes first)")
        b.button("Back to the query", key="back_to_query", on_click=_back_to_query, width="stretch")
    if not likes and not dislikes:
        return
    a, b, c = st.columns([5, 2, 2], vertical_alignment="center")
    a.caption(f":material/thumbs_up_down: {len(likes)} liked, {len(dislikes)} disliked: re-rank to move their "
              f"neighbours up and down (SOMHunter's Bayesian feedback over the results shown)")
    b.toggle("Re-rank with feedback", key="use_feedback")
    c.button("Clear feedback", key="clear_feedback", on_click=_clear_feedback, width="stretch")


def card_actions(row: dict, key: str) -> None:
    """The buttons under one result (widget keys end in ``key``): ▶ Play (the player opens above the results),
    more like this, like / dislike (feedback) and, when a competition server is configured, Submit."""
    st.button("▶ Play", key=f"play_{key}", on_click=_select, args=(row,), width="stretch",
              help="play the video from this moment and show the object's track")
    if "frame_index" in row:
        ref = result_id(row)
        ups, downs = feedback_labels()
        similar, up, down = st.columns(3)
        similar.button(":material/image_search:", key=f"similar_{key}", on_click=_more_like, args=(ref,),
                       width="stretch", help="more like this frame")
        up.button(":material/thumb_up:", key=f"up_{key}", on_click=_label, args=(ref, True), width="stretch",
                  type="primary" if ref in ups else "secondary", help="like: re-ranking moves similar frames up")
        down.button(":material/thumb_down:", key=f"down_{key}", on_click=_label, args=(ref, False), width="stretch",
                    type="primary" if ref in downs else "secondary", help="dislike: similar frames move down")
    competition.submit_button(row, key=f"submit_{key}")


def heatmap_image(cfg, gid: int, text: str):
    """PNG bytes of where ``text`` matches in frame ``gid`` (None with the reason shown when it cannot)."""
    from search.errors import MvkError
    try:
        return common.service(cfg).heatmap(int(gid), text)[0]
    except MvkError as exc:
        st.caption(f"No heatmap: {common.plain(exc)}")
        return None


# -- several embedding spaces: the choice of fusion, and each fused result's rank in each space --------

SPACE_FUSION_LABELS = {"rrf": "fused: reciprocal rank", "zscore": "fused: z-scores"}


def space_choice_label(value: str) -> str:
    """How the Embedding spaces setting names a value of ``Options.space_fusion`` (a space by its bare name, so a
    link to one space reads ``space_fusion=NAME``)."""
    return SPACE_FUSION_LABELS.get(value, value)


def space_caption(value: str) -> str:
    """The results' headline words for a value of ``Options.space_fusion``."""
    return {"rrf": "spaces fused by reciprocal rank", "zscore": "spaces fused by z-scores"}.get(value,
                                                                                               f"space {value} only")


def space_ranks(row: dict) -> str:
    """"ranks: A 3 · B 1" for a fused result (its rank in each embedding space, – where that space did not
    return it), escaped for Markdown; '' when one space answered."""
    ranks = row.get("spaces")
    if not isinstance(ranks, dict) or not ranks:
        return ""
    return "ranks: " + " · ".join(f"{common.plain(name)} {rank if rank is not None else '–'}"
                                  for name, rank in ranks.items())


def _card(index, row: dict, frame: pd.Series, overlay: str, heat_text: str = "", cfg=None) -> None:
    with st.container(border=True):
        heat = heatmap_image(cfg, row["gid"], heat_text) if heat_text and cfg is not None else None
        st.image(heat if heat is not None else thumbnail(frame, row, overlay), width="stretch")
        st.markdown(f"**#{int(row['rank'])}** · {float(row['score']):.3f} · {common.fmt_time(row['time'])}")
        st.caption(where(row))
        if ranks := space_ranks(row):
            st.caption(ranks)
        card_actions(row, str(int(row['gid'])))


def _cards(index, rows: pd.DataFrame, overlay: str, heat_text: str = "", cfg=None) -> None:
    frames = frame_rows(index, rows["gid"])
    records = rows.to_dict("records")
    for start in range(0, len(records), COLUMNS):
        cols = st.columns(COLUMNS)
        for col, row, (_, frame) in zip(cols, records[start:start + COLUMNS],
                                        frames.iloc[start:start + COLUMNS].iterrows()):
            with col:
                _card(index, row, frame, overlay, heat_text, cfg)


def grid(index, found: pd.DataFrame, *, overlay: str, group_by_video: bool, heat_text: str = "",
         cfg=None) -> None:
    """The ranked frames as cards; with ``group_by_video`` one section per video, best video first; with
    ``heat_text`` each card shows where that text matches instead of the object overlay."""
    _by_video(found, lambda rows: _cards(index, rows, overlay, heat_text, cfg), "frames", group_by_video)


def is_pairs(found: pd.DataFrame) -> bool:
    """Whether ``found`` holds temporal pairs (a sequence query) rather than frames."""
    return "then_gid" in found.columns


def pair_play_row(pair: dict, frame: pd.Series) -> dict:
    """What the player needs to start a pair's video at its first ``frame``: that frame's row, the pair's score,
    and the second frame's time and gap (shown in the player's caption)."""
    row = {name: frame[name] for name in ("gid", "site", "video_id", "video_path", "time", "frame_index")}
    row.update(rank=int(pair["rank"]), score=float(pair["score"]), first_score=float(pair["first_score"]),
               then_score=float(pair["then_score"]), then_time=float(pair["then_time"]), gap=float(pair["gap"]))
    return row


def _pair_card(index, pair: dict, first: pd.Series, then: pd.Series) -> None:
    with st.container(border=True):
        a, arrow, b, info = st.columns([3, 1, 3, 3], vertical_alignment="center")
        a.image(common.decode_jpeg(first["thumbnail"]), width="stretch",
                caption=f"{common.fmt_time(pair['first_time'])} · {float(pair['first_score']):.3f}")
        arrow.markdown(f"**→**  \n+{float(pair['gap']):.1f} s")
        b.image(common.decode_jpeg(then["thumbnail"]), width="stretch",
                caption=f"{common.fmt_time(pair['then_time'])} · {float(pair['then_score']):.3f}")
        with info:
            st.markdown(f"**#{int(pair['rank'])}** · {float(pair['score']):.3f} · "
                        f"{common.fmt_time(pair['first_time'])} → {common.fmt_time(pair['then_time'])} "
                        f"(+{float(pair['gap']):.1f} s)")
            st.caption(where(pair))
            if ranks := space_ranks(pair):
                st.caption(ranks)
            card_actions(pair_play_row(pair, first), f"pair_{int(pair['first_gid'])}")


def _pair_cards(index, pairs: pd.DataFrame) -> None:
    firsts = frame_rows(index, pairs["first_gid"])
    thens = frame_rows(index, pairs["then_gid"])
    for i, pair in enumerate(pairs.to_dict("records")):
        _pair_card(index, pair, firsts.iloc[i], thens.iloc[i])


def pair_list(index, pairs: pd.DataFrame, *, group_by_video: bool) -> None:
    """The ranked "A then B" pairs, one row each (first frame → second frame, gap, score, ▶ Play); with
    ``group_by_video`` one section per video, best video first."""
    _by_video(pairs, lambda rows: _pair_cards(index, rows), "pairs", group_by_video)


def _by_video(ranked: pd.DataFrame, show, noun: str, group_by_video: bool) -> None:
    """Show ``ranked`` rows with ``show``: all together, or one section per video, best video first."""
    if not group_by_video:
        show(ranked)
        return
    order = ranked.groupby(["site", "video_id"], sort=False)["rank"].min().sort_values()
    for (site, video_id), best in order.items():
        rows = ranked[(ranked["site"] == site) & (ranked["video_id"] == video_id)].sort_values("rank")
        st.markdown(f"#### {common.plain(site)} · video {common.plain(video_id)}")
        st.caption(f"best rank #{int(best)} · {len(rows)} matching {noun}")
        show(rows)


def video(cfg, row: dict) -> None:
    """The result's video from its moment: the file itself when browsers play its codec, else a segment around
    the moment converted to H.264 (cached); a clear message when neither works."""
    from app.security import collection_file
    from mvk_tools.playback import playable_segment
    from search.errors import MvkError

    if cfg.collection is None:
        st.info("Start the app with `--collection` to play the videos.")
        return
    moment = float(row["time"])
    try:
        path = collection_file(cfg.collection, row["video_path"])
        with st.spinner("Preparing the video for the browser…"):
            playable = playable_segment(path, max(0.0, moment - PLAY_BEFORE), moment + PLAY_SECONDS,
                                        cfg.playback_cache)
        st.video(str(playable.path), format=playable.mime, start_time=int(playable.offset(moment)),
                 autoplay=True, muted=True)
        if playable.transcoded:
            st.caption(f"The file is {common.plain(playable.codec)}, which browsers do not play: showing "
                       f"{common.fmt_time(playable.start)} – {common.fmt_time(playable.end)} converted to H.264.")
    except MvkError as exc:
        st.error(f"Cannot play this video: {common.plain(exc)}")


def player(index, cfg, row: dict, overlay: str, heat_text: str = "") -> None:
    """The chosen result: its video playing from that moment, the frame (or where ``heat_text`` matches in it),
    "more like" the frame or its object, and the object's track over time. Close (or Esc) goes back."""
    head, close = st.columns([8, 1], vertical_alignment="center")
    head.subheader(f"{where(row)} · {common.fmt_time(row['time'])}")
    close.button("Close", key="close_player", on_click=_close, shortcut="Esc", help="close the player (Esc)")
    left, right = st.columns([3, 2])
    with left:
        video(cfg, row)
    frame = frame_rows(index, [row["gid"]]).iloc[0]
    with right:
        heat = st.toggle("Where does the text match? (heatmap)", key="heat_player", disabled=not heat_text,
                         help="the similarity of the query text to each part of the frame, from the model's "
                              "dense features" if heat_text else "a heatmap needs a text query")
        image = heatmap_image(cfg, row["gid"], heat_text) if heat and heat_text else None
        st.image(image if image is not None else thumbnail(frame, row, overlay if overlay != "none" else "mask"),
                 width="stretch",
                 caption=f"score {float(row['score']):.3f} · {_parts(row)} · frame {int(row['frame_index'])}")
        if "frame_index" in row:
            a, b = st.columns(2)
            a.button("More like this frame", key="similar_player", on_click=_more_like, args=(result_id(row),),
                     width="stretch", icon=":material/image_search:")
            obj = object_id(row)
            b.button("More like this object", key="similar_object", on_click=_more_like, args=(obj or "",),
                     width="stretch", disabled=obj is None, icon=":material/category_search:",
                     help="search with this object's own vector" if obj else "this frame matched as a whole")
        competition.submit_button(row, key="submit_player")
    track(index, row, overlay)
    follow(cfg, row)


def _parts(row: dict) -> str:
    if "then_time" in row:
        return (f"first {float(row['first_score']):.3f}, then {float(row['then_score']):.3f} at "
                f"{common.fmt_time(row['then_time'])} (+{float(row['gap']):.1f} s)")
    parts = []
    for name in ("frame_score", "object_score"):
        value = row.get(name)
        if value is not None and np.isfinite(float(value)):
            parts.append(f"{name.split('_')[0]} {float(value):.3f}")
    return ", ".join(parts) or "no part scores"


def track_rows(index, row: dict) -> pd.DataFrame:
    """The best object's rows along its video (time-ordered), joined with their frames."""
    track_id = row.get("track_id")
    if track_id is None or (isinstance(track_id, float) and np.isnan(track_id)) or int(track_id) < 0:
        return pd.DataFrame()
    frames = index.frames
    video = frames[(frames["site"] == row["site"]) & (frames["video_id"] == row["video_id"])]
    objects = index.objects
    obj = objects[objects["frame_gid"].isin(video["gid"]) & (objects["track_id"] == int(track_id))]
    joined = obj.merge(video[["gid", "time", "frame_index", "width", "height"]],
                       left_on="frame_gid", right_on="gid", how="inner")
    return index.with_thumbnails(joined.sort_values("time").reset_index(drop=True))


def track_chart(rows: pd.DataFrame):
    """The track's area and centre over time: one line per measure, plain field names and explicit types (a
    field named "time (s)" in st.line_chart made Vega warn "Infinite extent" in the browser's console)."""
    import altair as alt

    measures = pd.DataFrame({
        "time": rows["time"].astype(float),
        "area (% of frame)": 100 * rows["area"].astype(float),
        "centre x (% of width)": 100 * (rows["x0"] + rows["x1"]) / 2 / rows["width"],
        "centre y (% of height)": 100 * (rows["y0"] + rows["y1"]) / 2 / rows["height"],
    }).melt("time", var_name="measure", value_name="percent").dropna()
    return (alt.Chart(measures).mark_line(point=True)
            .encode(x=alt.X("time:Q", title="time (s)"), y=alt.Y("percent:Q", title="%"),
                    color=alt.Color("measure:N", title=None), tooltip=["measure", "time", "percent"])
            .properties(height=180))


def track(index, row: dict, overlay: str) -> None:
    rows = track_rows(index, row)
    if rows.empty:
        st.caption("A pair of frames matched as a whole: no object track to show." if "then_time" in row
                   else "This frame matched as a whole: no object track to show.")
        return
    st.markdown(f"**Object {int(row['track_id'])} over time** · seen in {len(rows)} sampled frames, "
                f"{common.fmt_time(rows['time'].iloc[0])} – {common.fmt_time(rows['time'].iloc[-1])}")
    if len(rows) >= 3:
        st.altair_chart(track_chart(rows), width="stretch")
    picks = np.unique(np.linspace(0, len(rows) - 1, min(TRACK_STRIP, len(rows))).round().astype(int))
    cols = st.columns(TRACK_STRIP)
    for col, i in zip(cols, picks):
        r = rows.iloc[i]
        with col:
            st.image(thumbnail(r, r.to_dict(), overlay if overlay != "none" else "mask"), width="stretch",
                     caption=common.fmt_time(r["time"]))


def follow(cfg, row: dict) -> None:
    """"Follow this animal": the selected object's stored mask propagated through the frames around it (the
    service's ``track``), shown as a presence strip and the mask over a few frames; "Search with this animal":
    more like its whole track, shown as the page's results."""
    from search.errors import MvkError
    from search.queries import ItemRef, LikeQuery, Options

    track_id = row.get("track_id")
    if track_id is None or (isinstance(track_id, float) and np.isnan(track_id)) or int(track_id) < 0:
        return
    gid, tid = int(row["gid"]), int(track_id)
    ref = ItemRef(str(row["site"]), str(row["video_id"]), int(row["frame_index"]), tid)
    go, like = st.columns(2)
    try:
        if go.button("Follow this animal", key=f"follow_{gid}_{tid}", icon=":material/timeline:",
                     help="propagate this object's mask through the frames around this moment"):
            with st.spinner("Following the animal through the video…"):
                st.session_state["followed"] = common.service(cfg).track(gid, track_id=tid)
        if like.button("Search with this animal", key=f"like_{gid}_{tid}", icon=":material/manage_search:",
                       help="frames like this object's whole track"):
            options = Options(k=int(st.session_state.get("search_k") or 20),
                              space_fusion=str(st.session_state.get("space_fusion") or "rrf"))
            page = common.service(cfg).run(LikeQuery(ref, whole_track=True), options, source="app")
            st.session_state["search_results"] = page.rows
            st.session_state["search_notes"] = [n for n in page.notes if "random weights" not in n]
            st.session_state["search_label"] = f"this animal ({ref}, whole track)"
            st.session_state["search_ms"] = page.took_ms
            st.session_state.pop("selected", None)
            st.session_state.pop("followed", None)
            st.rerun()
    except MvkError as exc:
        st.error(f"Cannot follow this animal: {common.plain(exc)}", icon=":material/error:")
    followed = st.session_state.get("followed")
    if followed is None or followed.gid != gid:
        return
    presence = followed.presence()
    seen = presence[presence["area"] > 0]
    st.markdown(f"**Followed through {len(presence)} frames** · seen in {len(seen)}"
                + (f", {common.fmt_time(seen['time'].min())} – {common.fmt_time(seen['time'].max())}" if len(seen) else ""))
    st.bar_chart(presence.assign(**{"area (% of frame)": 100 * presence["area"]})
                 .set_index("time")[["area (% of frame)"]], height=120)
    for note in followed.track.notes:
        st.caption(f":material/info: {common.plain(note)}")
    overlays = common.service(cfg).track_overlays(followed, TRACK_STRIP)
    for col, (time, jpeg) in zip(st.columns(TRACK_STRIP), overlays):
        col.image(jpeg, width="stretch", caption=common.fmt_time(time))

"""Known-item search (seed 003): where does each query's target land among all indexed frames?

Which indexed frames are a target's ("matching frames") depends on the match rule (MATCH_RULES):

- ``exact`` (the default when the index holds MVK's selected frames, i.e. was built with
  ``--selected-frames``): only the target's own frame counts, as in MVK's KIS code where the identity of
  the selected frame decides. A target named ``<video>_<n>.jpg`` (``target_selected`` = n) matches the
  indexed row of that selected frame, found by name, never by guessing a frame from ``n``; a target given
  by ``target_frame`` matches the row of that frame index; one given by a time (``target_time`` or an MVK
  time code ``frame<h>-<mm>-<ss>-<xx>.jpg``) matches the rows shown at that time (within half a frame).
- ``time`` (the default otherwise, for indexes sampled every N seconds): every indexed frame of the
  target's video within ``tolerance`` seconds of the target time counts. The time of a selected frame is
  the time the index located it at; of a frame index, ``frame / fps`` with the video's fps estimated from
  its indexed rows (median of ``frame_index / time``) or ``default_fps`` (MVK: about 30); of a time code,
  its seconds under the file's reading (below).

Time codes (``frame0-00-28-03.jpg``) are read per file (``timecode_readings``): as hundredths of a second or as
frames at the video's fps (``mvk_tools.targetnames``). When the file carries the targets' image vectors
(``CLIP_img``) of the index's dimension, the reading whose frames score higher with them wins; else
hundredths (the frame-extraction script's output), and the result says so. A row impossible under the file's
reading, or a time past the video's end (known for selected-frame indexes), is ``not_in_index`` with that
reason.

A target whose own selected frame is flagged by the index (``match_foreign``, ``match_poor``: the image may
not come from that video; ``match_ambiguous``: its place in the video is not told by the content, static
footage) gets ``target_flag`` in the per-query table, and the summary lists them (``flagged``): its rank is
fine under the exact rule, but its time (``--match time``, ▶ Play) is uncertain or wrong.

Videos match by site (case-insensitive) and video id (numeric ids compare as numbers, ``0016`` == ``16``).
A target matching more than MANY_MATCHES frames is reported (per query and in the summary): its rank is
that of the best of them, which flatters it.

Rank (1 is best) of a query for one fusion mode: s* = the best fused score over the matching frames;
``rank = 1 + #{non-matching frames with score > s*} + #{non-matching frames with score == s*}``.
Ties are decided against the target (pessimistic rank): a constant scorer ranks every target last, never
first. ``ties`` in the per-query table counts the tied non-matching frames, so the optimistic rank is
``rank - ties``. MVK's own code counts ranks from 0 and breaks ties by file order: its rank is ``rank - 1``
here when nothing ties, and lies between ``rank - ties - 1`` and ``rank - 1`` otherwise.

Targets with no matching frame (site, video, selected frame or time not in the index) get status
``not_in_index`` with the reason and no rank; the summary counts them apart (``n_not_in_index``) and never
as misses.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from mvk_tools.querysets import Issue, parse_timecode
from mvk_tools.targetnames import timecode_seconds
from search.errors import InputError

HIT_KS = (1, 10, 100, 1000)
DEFAULT_TOLERANCE = 0.5   # seconds: with ~1 indexed frame per second, about one frame per target
DEFAULT_FPS = 30.0        # MVK videos are about 30 fps
MATCH_RULES = ("exact", "time")
MANY_MATCHES = 3          # a target matching more frames than this is reported
DEFAULT_FUSIONS = ("frame", "object")   # compared by default, in `mvk kis` and in the app
TIE_RULE = ("pessimistic: rank = 1 + number of non-matching frames scoring higher than or equal to the "
            "best matching frame (ties count against the target); rank - ties is the optimistic rank; "
            "MVK's code counts from 0 and breaks ties by file order")

Scorer = Callable[[np.ndarray, str], np.ndarray]   # (query vector, fusion) -> score of every frame
# (query vectors (B, d), fusions) -> {fusion: (B, N) scores}: many queries and fusions per pass over the vectors
BatchScorer = Callable[[np.ndarray, Sequence[str]], dict[str, np.ndarray]]


def video_key(site: str, video: str) -> tuple[str, str]:
    """Normalised (site, video) key: case-insensitive site, numeric video ids without leading zeros."""
    v = str(video).strip()
    return str(site).strip().casefold(), str(int(v)) if v.isdigit() else v.casefold()


def holds_selected_frames(frames: pd.DataFrame) -> bool:
    """Whether the index's frame rows include MVK selected frames (an index built with --selected-frames)."""
    return "selected_number" in frames and bool((pd.to_numeric(frames["selected_number"], errors="coerce")
                                                 .fillna(-1) >= 0).any())


def default_match(frames: pd.DataFrame) -> str:
    """``exact`` when the index holds selected frames, else ``time`` (see the module docstring)."""
    return "exact" if holds_selected_frames(frames) else "time"


def describe_match(match: str, tolerance: float) -> str:
    """The match rule in words, for the printed table and summary.json."""
    if match == "exact":
        return ("exact: only the target's own frame counts (the selected frame it names, found by name; "
                "else the frame at target_frame; else the frame shown at its time, within half a frame)")
    return (f"time: every indexed frame of the target's video within {tolerance:g} s of the target's time "
            "counts (a selected frame's time is where the index located it)")


@dataclass(frozen=True)
class _Video:
    gids: np.ndarray
    frame_index: np.ndarray
    time: np.ndarray
    selected: np.ndarray   # selected-frame number per row, -1 for rows that are not selected frames
    fps: float | None
    flags: np.ndarray      # per row: what the index flagged about a selected frame's place ("" for none)
    duration: float | None  # the video's length in seconds when the index knows it


def _bool_column(frames: pd.DataFrame, name: str) -> np.ndarray:
    if name not in frames:
        return np.zeros(len(frames), bool)
    return frames[name].where(frames[name].notna(), False).astype(bool).to_numpy()


def selected_flags(frames: pd.DataFrame) -> np.ndarray:
    """Per frame row, what the index says is wrong with a selected frame's place: ``foreign (video X)``,
    ``poor match``, ``ambiguous (static footage)``, or ""."""
    foreign = (frames["match_foreign"].where(frames["match_foreign"].notna(), "").astype(str).to_numpy()
               if "match_foreign" in frames else np.full(len(frames), "", object))
    poor, amb = _bool_column(frames, "match_poor"), _bool_column(frames, "match_ambiguous")
    out = np.full(len(frames), "", object)
    out[amb] = "ambiguous (static footage)"
    out[poor] = "poor match (may not come from this video)"
    has = foreign != ""
    out[has] = [f"foreign (matches video {v} better)" for v in foreign[has]]
    return out


def _videos(frames: pd.DataFrame) -> dict[tuple[str, str], _Video]:
    gid = frames["gid"].to_numpy() if "gid" in frames else np.arange(len(frames))
    out: dict[tuple[str, str], _Video] = {}
    sites = frames["site"].astype(str).str.strip().str.casefold()
    vids = frames["video_id"].astype(str).str.strip()
    vids = vids.where(~vids.str.isdigit(), vids.str.lstrip("0").replace("", "0")).str.casefold()
    groups = pd.DataFrame({"s": sites, "v": vids}).groupby(["s", "v"], sort=False).indices
    fi_all = frames["frame_index"].to_numpy(dtype=np.int64)
    t_all = frames["time"].to_numpy(dtype=np.float64)
    sel_all = (pd.to_numeric(frames["selected_number"], errors="coerce").fillna(-1).to_numpy(np.int64)
               if "selected_number" in frames else np.full(len(frames), -1, np.int64))
    flags = selected_flags(frames)
    dur_all = (pd.to_numeric(frames["video_duration"], errors="coerce").to_numpy(np.float64)
               if "video_duration" in frames else np.full(len(frames), np.nan))
    for key, rows in groups.items():
        fi, t = fi_all[rows], t_all[rows]
        pos = t > 0
        fps = float(np.median(fi[pos] / t[pos])) if pos.any() else None
        dur = dur_all[rows]
        dur = dur[np.isfinite(dur) & (dur > 0)]
        out[key] = _Video(gid[rows], fi, t, sel_all[rows], fps if fps and np.isfinite(fps) and fps > 0 else None,
                          flags[rows], float(dur.max()) if len(dur) else None)
    return out


@dataclass(frozen=True)
class Target:
    gids: np.ndarray      # matching frames (global rows), empty when not in the index
    time: float | None    # target time used, seconds
    reason: str           # why there is no matching frame ("" when found)
    flag: str = ""        # what the index flagged about the target's selected frame (``selected_flags``)


def _none_int(v: object) -> int | None:
    return None if v is None or pd.isna(v) else int(v)


def _none_float(v: object) -> float | None:
    return None if v is None or pd.isna(v) else float(v)


def _column(queries: pd.DataFrame, name: str) -> list:
    return queries[name].tolist() if name in queries else [None] * len(queries)


def _resolve_one(v: _Video, site: str, video: str, frame: int | None, ttime: float | None,
                 selected: int | None, timecode: str | None, *, match: str, tolerance: float,
                 default_fps: float, reading: str = "hundredths") -> Target:
    fps = v.fps or default_fps
    none = np.empty(0, np.int64)
    if selected is not None:
        rows = v.selected == selected
        name = f"{site}/{video}_{selected:05d}.jpg"
        if not rows.any():
            if not (v.selected >= 0).any():
                why = (f"video {site}/{video} was indexed without its selected frames, so {name} cannot be "
                       "identified; index with --selected-frames" + (", or use --match time with target_time"
                                                                     if match == "exact" else ""))
            else:
                have = np.sort(v.selected[v.selected >= 0])
                why = f"selected frame {name} is not in the index (it holds {site}/{video}'s {have[0]}-{have[-1]})"
            return Target(none, ttime, why)
        ttime = float(v.time[rows][0])
        flag = str(v.flags[rows][0])
        if match == "exact":
            return Target(v.gids[rows], ttime, "", flag)
        hit = np.abs(v.time - ttime) <= tolerance + 1e-9
        return Target(v.gids[hit], ttime, "", flag)
    elif timecode is not None:
        tc = parse_timecode(timecode)
        ttime, why = timecode_seconds(tc, reading, fps)
        if ttime is None:
            return Target(none, None, f"time code {tc[0]}-{tc[1]:02d}-{tc[2]:02d}-{tc[3]:02d} read as {reading}: {why}")
        if v.duration is not None and ttime > v.duration:
            return Target(none, ttime, f"time code read as {reading} is {ttime:.2f} s, past the end of "
                                       f"{site}/{video} ({v.duration:.2f} s)")
    elif ttime is None and frame is not None:
        ttime = frame / fps
    if match == "exact":
        if frame is not None:
            hit = v.frame_index == frame
            what = f"frame {frame}"
        else:
            hit = np.abs(v.time - ttime) <= 0.5 / fps + 1e-3
            what = f"the frame at {ttime:.3f} s"
    else:
        hit = np.abs(v.time - ttime) <= tolerance + 1e-9
        if frame is not None:
            hit |= v.frame_index == frame
        what = f"a frame within {tolerance:g} s of {ttime:.2f} s"
    if hit.any():
        return Target(v.gids[hit], ttime, "")
    return Target(none, ttime, f"no indexed frame of {site}/{video} is {what} "
                               f"(indexed: {v.time.min():.2f}-{v.time.max():.2f} s)")


def resolve_targets(queries: pd.DataFrame, frames: pd.DataFrame, *, match: str | None = None,
                    tolerance: float = DEFAULT_TOLERANCE, default_fps: float = DEFAULT_FPS,
                    skipped_sites: dict[str, str] | None = None,
                    readings: dict[str, str] | None = None) -> list[Target]:
    """Matching frames of each query's target under the ``match`` rule (None: ``default_match(frames)``),
    see the module docstring; ``skipped_sites`` (site -> why) names shards that could not be read, so
    their targets say so instead of "not in the index". ``readings``: source file -> how its time codes
    are read (``timecode_readings``; hundredths for files not named)."""
    if not (tolerance >= 0 and math.isfinite(tolerance)):
        raise InputError(f"tolerance must be a finite number of seconds >= 0, got {tolerance}")
    match = match or default_match(frames)
    if match not in MATCH_RULES:
        raise InputError(f"unknown match rule {match!r}; choose from {', '.join(MATCH_RULES)}")
    videos = _videos(frames)
    sites = {video_key(s, "")[0] for s in frames["site"].unique()}
    skipped = {video_key(s, "")[0]: why for s, why in (skipped_sites or {}).items()}
    out = []
    readings = readings or {}
    for site, video, frame, ttime, selected, timecode, file in zip(
            _column(queries, "target_site"), _column(queries, "target_video"), _column(queries, "target_frame"),
            _column(queries, "target_time"), _column(queries, "target_selected"),
            _column(queries, "target_timecode"), _column(queries, "source_file")):
        key = video_key(site, video)
        v = videos.get(key)
        if v is None:
            why = (f"site {site} was not read from the index ({skipped[key[0]]})" if key[0] in skipped
                   else f"site {site} is not in the index" if key[0] not in sites
                   else f"video {site}/{video} is not in the index")
            out.append(Target(np.empty(0, np.int64), _none_float(ttime), why))
            continue
        out.append(_resolve_one(v, str(site), str(video), _none_int(frame), _none_float(ttime), _none_int(selected),
                                None if timecode is None or pd.isna(timecode) else str(timecode),
                                match=match, tolerance=tolerance, default_fps=default_fps,
                                reading=readings.get(str(file), "hundredths")))
    return out


def _has_vector(v: object) -> bool:
    return isinstance(v, np.ndarray) and v.ndim == 1 and v.size > 0


def timecode_readings(queries: pd.DataFrame, frames: pd.DataFrame, *,
                      scores_of: Callable[[np.ndarray], np.ndarray] | None = None, dim: int | None = None,
                      default_fps: float = DEFAULT_FPS) -> dict[str, dict]:
    """How each file's time codes are read: source file -> {"reading", "why", "rows"}. A reading under
    which any of the file's time codes is impossible is ruled out. Between the two left, the targets' image
    vectors decide where the file has them (``target_vector`` of ``dim`` dimensions; ``scores_of(vectors)``
    gives their (k, n_frames) scores against the index, e.g. ``search.query.score_frames_batch``): per row
    whose readings land on different indexed frames, the reading whose frame scores higher wins a vote; the
    file takes the reading with more votes. Else hundredths, the frame-extraction script's output."""
    from mvk_tools.targetnames import TIMECODE_READINGS

    if "target_timecode" not in queries:
        return {}
    tc_rows = queries[queries["target_timecode"].notna()]
    if not len(tc_rows):
        return {}
    videos = _videos(frames)
    out = {}
    for file, rows in tc_rows.groupby(tc_rows["source_file"].astype(str), sort=False):
        rows = rows.drop_duplicates(["target_site", "target_video", "target_timecode"])
        cand: list[tuple[_Video | None, dict[str, float | None], object]] = []
        for site, video, tc, vec in zip(rows["target_site"], rows["target_video"], rows["target_timecode"],
                                        _column(rows, "target_vector")):
            v = videos.get(video_key(site, video))
            fps = (v.fps if v is not None and v.fps else None) or default_fps
            cand.append((v, {r: timecode_seconds(parse_timecode(str(tc)), r, fps)[0] for r in TIMECODE_READINGS},
                         vec))
        possible = [r for r in TIMECODE_READINGS if all(t[r] is not None for _, t, _ in cand)]
        ruled = [r for r in TIMECODE_READINGS if r not in possible]
        ruled_why = f"{' and '.join(ruled)} ruled out: some time code is impossible under it" if ruled else ""
        if len(possible) == 1:
            out[file] = {"reading": possible[0], "why": ruled_why, "rows": len(cand)}
            continue
        if not possible:
            out[file] = {"reading": "hundredths", "why": "every reading is impossible for some time code; rows "
                         "impossible under hundredths are not in the index", "rows": len(cand)}
            continue
        usable = [(v, t, vec) for v, t, vec in cand
                  if v is not None and _has_vector(vec) and (dim is None or vec.shape[0] == dim)]
        votes = {r: 0 for r in TIMECODE_READINGS}
        if usable and scores_of is not None:
            scores = scores_of(np.stack([np.asarray(vec, np.float32) for _, _, vec in usable]))
            for row, (v, t, _) in enumerate(usable):
                best = {r: int(v.gids[np.argmin(np.abs(v.time - t[r]))]) for r in TIMECODE_READINGS}
                if best["hundredths"] != best["frames"]:
                    win = max(TIMECODE_READINGS, key=lambda r: scores[row, best[r]])
                    votes[win] += 1
        if votes["frames"] > votes["hundredths"]:
            out[file] = {"reading": "frames", "why": f"the targets' image vectors (CLIP_img) agree with frames in "
                         f"{votes['frames']} of {sum(votes.values())} rows that tell the readings apart",
                         "rows": len(cand)}
        elif votes["hundredths"]:
            out[file] = {"reading": "hundredths", "why": "the targets' image vectors (CLIP_img) agree with "
                         f"hundredths in {votes['hundredths']} of {sum(votes.values())} rows that tell the readings "
                         "apart", "rows": len(cand)}
        else:
            why = ("no CLIP_img vectors of the index's dimension" if not usable else
                   "the image vectors could not tell the readings apart")
            out[file] = {"reading": "hundredths", "why": f"{why}: hundredths of a second assumed (what the "
                         "frame-extraction script writes)", "rows": len(cand)}
    return out


def rank_of_target(scores: np.ndarray, match: np.ndarray) -> tuple[int, int, int, float]:
    """(rank, ties, best matching row, its score) for one query; ``match`` holds the matching rows.
    Pessimistic ties, see TIE_RULE. Within the matching rows, the lowest row wins a tie."""
    scores = np.asarray(scores)
    sub = scores[match]
    best_pos = int(np.argmax(sub))            # first maximum: lowest row among equals when match is sorted
    best_row, best = int(match[best_pos]), sub[best_pos]
    at_least = int(np.count_nonzero(scores >= best)) - int(np.count_nonzero(sub >= best))
    ties = int(np.count_nonzero(scores == best)) - int(np.count_nonzero(sub == best))
    return 1 + at_least, ties, best_row, float(best)


PER_QUERY_COLUMNS = (
    "query_id", "query_type", "fusion", "status", "rank", "ties", "score", "best_gid", "best_site", "best_video",
    "best_frame_index", "best_time", "best_selected", "n_matching", "n_frames", "reason", "text", "target_site",
    "target_video", "target_selected", "target_frame", "target_time", "source_file", "source_line",
    "target_flag",
)


def rank_queries(queries: pd.DataFrame, vectors: np.ndarray, frames: pd.DataFrame, scorer: Scorer | None, *,
                 fusions: Sequence[str] = ("frame",), match: str | None = None,
                 tolerance: float = DEFAULT_TOLERANCE, default_fps: float = DEFAULT_FPS,
                 skipped_sites: dict[str, str] | None = None,
                 progress: Callable[[Iterable], Iterable] | None = None,
                 batch_scorer: BatchScorer | None = None, batch_size: int = 64,
                 targets: Sequence[Target] | None = None) -> pd.DataFrame:
    """One row per (query, fusion) with PER_QUERY_COLUMNS. ``vectors[i]`` is the query vector of row i of
    ``queries``; ``scorer(vector, fusion)`` returns the score of every row of ``frames`` (gid order).
    ``batch_scorer`` (e.g. over ``search.query.score_frames_batch``, as ``run_benchmark`` does), when given,
    scores ``batch_size`` queries at a time instead. ``targets`` (from ``resolve_targets``) saves resolving
    them again."""
    if scorer is None and batch_scorer is None:
        raise ValueError("a scorer or a batch_scorer is needed")
    if len(vectors) != len(queries):
        raise ValueError(f"{len(vectors)} vectors for {len(queries)} queries")
    if targets is None:
        targets = resolve_targets(queries, frames, match=match, tolerance=tolerance, default_fps=default_fps,
                                  skipped_sites=skipped_sites)
    n = len(frames)
    site_a, video_a = frames["site"].to_numpy(), frames["video_id"].to_numpy()
    fi_a, t_a = frames["frame_index"].to_numpy(), frames["time"].to_numpy()
    sel_a = (pd.to_numeric(frames["selected_number"], errors="coerce").to_numpy(np.float64)
             if "selected_number" in frames else np.full(n, np.nan))
    cols = {c: _column(queries, c) for c in ("query_id", "query_type", "text", "target_site", "target_video",
                                             "target_selected", "target_frame", "target_time", "source_file",
                                             "source_line")}
    out: dict[str, list] = {c: [] for c in PER_QUERY_COLUMNS}
    items = range(len(queries))
    batch: dict[str, np.ndarray] = {}
    batch_start = 0
    for i in (progress(items) if progress else items):
        if batch_scorer is not None and (not batch or i >= batch_start + batch_size):
            batch_start = i
            batch = batch_scorer(np.asarray(vectors[i:i + batch_size], np.float32), list(fusions))
        tgt = targets[i]
        base = {c: cols[c][i] for c in cols}
        base.update(n_matching=len(tgt.gids), n_frames=n, reason=tgt.reason, target_flag=tgt.flag,
                    target_time=tgt.time if tgt.time is not None else cols["target_time"][i])
        match_rows = np.sort(tgt.gids)
        for fusion in fusions:
            row = {**base, "fusion": fusion, "status": "not_in_index"}
            if len(match_rows):
                scores = batch[fusion][i - batch_start] if batch_scorer is not None else scorer(vectors[i], fusion)
                if scores.shape != (n,):
                    raise ValueError(f"scorer returned {scores.shape} scores for {n} frames")
                rank, ties, best, score = rank_of_target(scores, match_rows)
                row.update(status="ranked", rank=rank, ties=ties, score=score, best_gid=best,
                           best_site=site_a[best], best_video=video_a[best], best_frame_index=int(fi_a[best]),
                           best_time=float(t_a[best]), best_selected=sel_a[best])
            for c in PER_QUERY_COLUMNS:
                out[c].append(row.get(c))
    df = pd.DataFrame(out, columns=list(PER_QUERY_COLUMNS))
    for col in ("rank", "ties", "best_gid", "best_frame_index", "best_selected", "target_selected", "target_frame",
                "source_line"):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype("Int64")
    for col in ("score", "best_time", "target_time"):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype("float64")
    return df


def many_matches(per_query: pd.DataFrame, limit: int = MANY_MATCHES) -> list[dict]:
    """Queries whose target matches more than ``limit`` frames (their rank is of the best of them)."""
    many = per_query[per_query["n_matching"] > limit].drop_duplicates("query_id")
    return [{"query_id": q, "n_matching": int(k)} for q, k in zip(many["query_id"], many["n_matching"])]


def flagged_targets(per_query: pd.DataFrame) -> list[dict]:
    """Queries whose target's selected frame the index flagged (foreign, poor, ambiguous): one per query."""
    if "target_flag" not in per_query:
        return []
    flagged = per_query[per_query["target_flag"].fillna("").astype(str) != ""].drop_duplicates("query_id")
    return [{"query_id": q, "flag": f} for q, f in zip(flagged["query_id"], flagged["target_flag"])]


def metrics(ranks: np.ndarray, ks: Sequence[int] = HIT_KS) -> dict[str, float]:
    """hit@k (share of ranks <= k), MRR, median and mean rank of the given ranks (all ranked queries)."""
    r = np.asarray(ranks, dtype=np.float64)
    if r.size == 0:
        return {**{f"hit@{k}": float("nan") for k in ks}, "mrr": float("nan"),
                "median_rank": float("nan"), "mean_rank": float("nan")}
    return {**{f"hit@{k}": float(np.mean(r <= k)) for k in ks}, "mrr": float(np.mean(1.0 / r)),
            "median_rank": float(np.median(r)), "mean_rank": float(np.mean(r))}


def summarize(per_query: pd.DataFrame, ks: Sequence[int] = HIT_KS) -> pd.DataFrame:
    """One row per (query_type, fusion), and per space when the rows come from an index of several embedding
    spaces (a ``space`` column): n (ranked), n_not_in_index, hit@k, mrr, median_rank, mean_rank."""
    rows = []
    spaces = "space" in per_query.columns and per_query["space"].nunique() > 1
    keys = ["query_type", "space", "fusion"] if spaces else ["query_type", "fusion"]
    for group, g in per_query.groupby(keys, sort=False if spaces else True):
        ranked = g[g["status"] == "ranked"]
        rows.append({**dict(zip(keys, group)), "n": len(ranked),
                     "n_not_in_index": int((g["status"] == "not_in_index").sum()),
                     **metrics(ranked["rank"].to_numpy(dtype=np.float64), ks)})
    cols = [*keys, "n", "n_not_in_index", *[f"hit@{k}" for k in ks], "mrr", "median_rank", "mean_rank"]
    out = pd.DataFrame.from_records(rows, columns=cols)
    return out.sort_values("query_type", kind="stable").reset_index(drop=True) if spaces else out


def format_table(summary: pd.DataFrame) -> str:
    """The summary as a fixed-width text table (hit@k and MRR in percent)."""
    if summary.empty:
        return "(no ranked queries)"
    t = summary.copy()
    for col in t.columns:
        if col.startswith("hit@") or col == "mrr":
            t[col] = t[col].map(lambda v: "-" if pd.isna(v) else f"{100 * v:.1f}%")
    for col in ("median_rank", "mean_rank"):
        t[col] = t[col].map(lambda v: "-" if pd.isna(v) else f"{v:.1f}")
    return t.to_string(index=False)


def check_file_vectors(queries: pd.DataFrame, dim: int) -> tuple[np.ndarray, list[Issue]]:
    """Which queries have a usable precomputed vector of the index's dimension (``--use-file-vectors``):
    a boolean mask, and an issue naming file and line for each one left out. Raises InputError when no
    query has one, saying why (e.g. every file vector has another dimension: another model made them)."""
    keep = np.zeros(len(queries), bool)
    issues: list[Issue] = []
    dims: set[int] = set()
    for i, (v, f, line) in enumerate(zip(queries["vector"], queries["source_file"], queries["source_line"])):
        line = None if pd.isna(line) else int(line)
        if not isinstance(v, np.ndarray):
            issues.append(Issue(str(f), line, f"query {queries['query_id'].iat[i]!r}: no precomputed vector in "
                                              "the file (--use-file-vectors)"))
        elif v.shape[0] != dim:
            dims.add(int(v.shape[0]))
            issues.append(Issue(str(f), line, f"query {queries['query_id'].iat[i]!r}: the file's vector has "
                                              f"{v.shape[0]} dimensions, the index's encoder {dim}"))
        else:
            keep[i] = True
    if len(queries) and not keep.any():
        why = (f"the files' vectors have {sorted(dims)} dimensions but the index's encoder has {dim}: they come "
               "from another model; run without --use-file-vectors to encode the texts" if dims
               else "the query sets hold no precomputed vectors; run without --use-file-vectors")
        raise InputError(f"--use-file-vectors: no usable vector: {why}")
    return keep, issues


def query_vectors(queries: pd.DataFrame, *, dim: int, encode: Callable[[list[str]], np.ndarray] | None,
                  use_file_vectors: bool) -> np.ndarray:
    """(n, dim) float32 L2-normalised query vectors: the file vectors (``queries.vector``, checked first
    with ``check_file_vectors``) when asked for, else ``encode(texts)`` (batched by the encoder)."""
    if use_file_vectors:
        vecs = np.stack(list(queries["vector"])).astype(np.float32) if len(queries) else np.zeros((0, dim), np.float32)
    else:
        if encode is None:
            raise ValueError("an encoder is needed unless file vectors are used")
        vecs = np.asarray(encode(queries["text"].tolist()), dtype=np.float32).reshape(len(queries), -1)
    if vecs.shape[1] != dim:
        raise InputError(f"query vectors have {vecs.shape[1]} dimensions, the index {dim}")
    norms = np.linalg.norm(vecs, axis=1, keepdims=True)
    return vecs / np.where(norms > 0, norms, 1.0)


def encoder_for_index(identity: dict, *, checkpoint: str | None = None, random_weights: bool = False,
                      device: str = "cpu"):
    """The text encoder an index was built with (``Index.encoder``), by the one rule of ``search.identity`` that
    every front end uses; an index that records no encoder cannot be searched with texts here."""
    from search.errors import ModelMismatchError
    from search.identity import EncoderChoice, encoder_for_index as by_identity

    if not identity.get("model"):
        raise ModelMismatchError("the index records no encoder: it cannot be searched with text; use "
                                 "--use-file-vectors with vectors of its dimension")
    return by_identity(identity, EncoderChoice(checkpoint=checkpoint, random_weights=random_weights), device=device)


# (items, description, total) -> the same items, showing progress as they are consumed
Progress = Callable[[Iterable, str, int], Iterable]


@dataclass
class KisResult:
    """What ``run_benchmark`` ran and found; the CLI writes it to files, the app shows it."""
    per_query: pd.DataFrame                  # PER_QUERY_COLUMNS, one row per (query, fusion)
    summary: pd.DataFrame                    # ``summarize(per_query)``
    n_queries: int                           # usable queries ranked (or found not in the index)
    query_sets: dict                         # file -> detected format
    vectors: str                             # "encoded texts" or "precomputed vectors from the query files"
    random_weights: bool                     # the ranks come from a random-weight encoder: meaningless
    not_in_index: list[dict] = field(default_factory=list)   # {"query_id", "reason"}, one per query
    file_errors: list[str] = field(default_factory=list)     # whole files that could not be used
    issues: list[Issue] = field(default_factory=list)        # rows left out, with file and line
    seconds: float = 0.0
    match: str = "time"                                      # the match rule used (MATCH_RULES)
    match_rule: str = ""                                     # ``describe_match``: the rule in words
    many_matches: list[dict] = field(default_factory=list)   # {"query_id", "n_matching"} > MANY_MATCHES
    flagged: list[dict] = field(default_factory=list)        # {"query_id", "flag"}: ``flagged_targets``
    timecode_readings: dict = field(default_factory=dict)    # file -> ``timecode_readings`` entry

    @property
    def warnings(self) -> list[str]:
        """Unusable files, then rows left out, as lines for the user."""
        return [*self.file_errors, *(str(i) for i in self.issues)]


def index_dim(index) -> int:
    """The dimension of an index's vectors (its encoder's, else its first shard's FAISS index)."""
    dim = index.encoder.get("dim")
    if dim:
        return int(dim)
    return int(next(iter(index.shards.values())).frame_index.d) if index.shards else 0


def _pass_through(items: Iterable, desc: str, total: int) -> Iterable:
    return items


def _ignore(message: str, what: str) -> None:
    return None


def run_benchmark(index, querysets: Sequence[str | Path], *, encoder=None, use_file_vectors: bool = False,
                  fusions: Sequence[str] = ("frame",), weight: float = 0.5, tolerance: float = DEFAULT_TOLERANCE,
                  match: str | None = None, default_fps: float = DEFAULT_FPS, encode_batch: int = 64,
                  rank_batch: int = 64, progress: Progress | None = None,
                  warn: Callable[[str, str], None] | None = None, threads: int | None = None,
                  cache: str | Path | None = None,
                  space_encoders: Callable[[str, dict], object] | None = None) -> KisResult:
    """The whole benchmark on an open ``search.store.Index``: read the query sets, take the files' vectors
    (``use_file_vectors``) or encode the texts with ``encoder`` (an object with ``encode_text``, or a
    function returning one, called only once the query sets are read), rank every target among all frames
    for every fusion with ``search.query.score_frames_batch`` (``rank_batch`` queries per pass over the
    vectors) and summarise. Unusable files and rows are passed to ``warn(message, "file" | "row")`` as soon
    as found and kept in the result; the rest goes on. InputError when no query is left to rank or the
    index has no frame. Encoding and ranking run with the thread policy's threads for a batch of queries
    (``threads`` overrides it); ``cache``: an index folder whose text-vector cache is read and filled
    (``search.textcache``), so a rerun of the same texts costs ranking only. An index of several embedding
    spaces is ranked in each space and fused (rows per space and per fusion of spaces, ``space`` column);
    ``space_encoders(name, identity)`` gives a further space's encoder (default: by its recorded identity)."""
    from search.threads import threads as thread_policy
    with thread_policy("batch", threads):
        return _run_benchmark(index, querysets, encoder=encoder, use_file_vectors=use_file_vectors, fusions=fusions,
                              weight=weight, tolerance=tolerance, match=match, default_fps=default_fps,
                              encode_batch=encode_batch, rank_batch=rank_batch, progress=progress, warn=warn,
                              cache=cache, space_encoders=space_encoders or _recorded_encoder)


def _recorded_encoder(name: str, identity: dict):
    """A further space's encoder by its recorded identity (random weights where it was built with them)."""
    return encoder_for_index(identity, random_weights=bool(identity.get("random_weights")))


def _run_benchmark(index, querysets, *, encoder, use_file_vectors, fusions, weight, tolerance, match, default_fps,
                   encode_batch, rank_batch, progress, warn, cache, space_encoders) -> KisResult:
    from mvk_tools.querysets import read_querysets
    from search.query import FUSIONS, score_frames_batch

    started = time.perf_counter()
    progress = progress or _pass_through
    fusions = list(dict.fromkeys(fusions))
    bad = [f for f in fusions if f not in FUSIONS]
    if bad or not fusions:
        raise InputError(f"unknown fusion mode(s) {bad}; choose from {', '.join(FUSIONS)}")
    if not 0.0 <= weight <= 1.0:
        raise InputError(f"the fusion weight must lie in [0, 1], got {weight}")
    if not (default_fps > 0 and math.isfinite(default_fps)):
        raise InputError(f"the default fps must be a finite positive number, got {default_fps}")
    if not (tolerance >= 0 and math.isfinite(tolerance)):
        raise InputError(f"the tolerance must be a finite number of seconds >= 0, got {tolerance}")
    if not len(index.frames):
        raise InputError(f"index {index.root} holds no readable frame")
    match = match or default_match(index.frames)
    if match not in MATCH_RULES:
        raise InputError(f"unknown match rule {match!r}; choose from {', '.join(MATCH_RULES)}")
    dim = index_dim(index)

    qs, file_errors = read_querysets([str(p) for p in querysets], with_vectors=use_file_vectors)
    warn = warn or _ignore
    for err in file_errors:
        warn(err, "file")
    issues = list(qs.issues)
    queries = qs.queries
    if use_file_vectors and len(queries):
        keep, vec_issues = check_file_vectors(queries, dim)
        issues += vec_issues
        queries = queries[keep].reset_index(drop=True)
    for issue in issues:
        warn(str(issue), "row")
    if not len(queries):
        raise InputError("no usable query in " + ", ".join(str(p) for p in querysets)
                         + (f": {'; '.join(file_errors)}" if file_errors else ""))

    encode = None
    if not use_file_vectors:
        if encoder is None:
            raise ValueError("an encoder is needed unless the files' vectors are used")
        from search.textcache import TextVectorCache, encode_texts
        enc = encoder if hasattr(encoder, "encode_text") else encoder()
        text_cache = TextVectorCache(Path(cache), enc.identity()) if cache is not None else None

        def encode(texts: list[str]) -> np.ndarray:
            return encode_texts(enc, texts, batch_size=encode_batch, cache=text_cache, progress=progress)
    readings = timecode_readings(
        queries, index.frames, dim=dim, default_fps=default_fps,
        scores_of=lambda vecs: score_frames_batch(index, _unit(vecs), fusions=["frame"], weight=weight)["frame"])
    for file, r in readings.items():
        warn(f"{file}: {r['rows']} time code(s) read as {r['reading']}" + (f" ({r['why']})" if r["why"] else ""),
             "timecode")
    targets = resolve_targets(queries, index.frames, match=match, tolerance=tolerance, default_fps=default_fps,
                              skipped_sites=index.errors, readings={f: r["reading"] for f, r in readings.items()})
    for qid, file, line, tgt in zip(queries["query_id"], queries["source_file"], queries["source_line"], targets):
        if tgt.flag:
            warn(str(Issue(str(file), None if pd.isna(line) else int(line),
                           f"query {qid!r}: its target's selected frame is flagged by the index: {tgt.flag}",
                           skipped=False)), "flag")
    for qid, file, line, tgt in zip(queries["query_id"], queries["source_file"], queries["source_line"], targets):
        if len(tgt.gids) > MANY_MATCHES:
            warn(str(Issue(str(file), None if pd.isna(line) else int(line),
                           f"query {qid!r}: its target matches {len(tgt.gids)} frames under the {match} rule; "
                           "its rank is that of the best of them", skipped=False)), "match")
    vectors = query_vectors(queries, dim=dim, encode=encode, use_file_vectors=use_file_vectors)

    spaces = index.spaces() if not use_file_vectors else index.spaces()[:1]
    if use_file_vectors and len(index.spaces()) > 1:
        warn(f"the files' vectors are ranked in the index's first embedding space only ({spaces[0]})", "spaces")
    if len(spaces) > 1:
        per_query = _rank_in_spaces(index, spaces, queries, vectors, targets, fusions=fusions, weight=weight,
                                    encoders=space_encoders, encode_batch=encode_batch, cache=cache,
                                    progress=progress, rank_batch=rank_batch)
    else:
        per_query = rank_queries(
            queries, vectors, index.frames, None, fusions=fusions, targets=targets,
            progress=lambda items: progress(items, "ranking", len(queries)),
            batch_scorer=lambda qv, fus: score_frames_batch(index, qv, fusions=fus, weight=weight),
            batch_size=rank_batch)
        per_query.insert(2, "space", spaces[0] if spaces else "")
    missing = per_query[per_query["status"] == "not_in_index"].drop_duplicates("query_id")
    return KisResult(
        per_query=per_query, summary=summarize(per_query), n_queries=int(len(queries)), query_sets=qs.formats,
        vectors="precomputed vectors from the query files" if use_file_vectors else "encoded texts",
        random_weights=any(bool(index.in_space(n).encoder.get("random_weights")) for n in spaces)
        and not use_file_vectors,
        not_in_index=[{"query_id": q, "reason": r} for q, r in zip(missing["query_id"], missing["reason"])],
        file_errors=list(file_errors), issues=issues, seconds=time.perf_counter() - started, match=match,
        match_rule=describe_match(match, tolerance), many_matches=many_matches(per_query),
        flagged=flagged_targets(per_query), timecode_readings=readings)


FUSED = "fused"     # the space column of fused rows: "fused (rrf)", "fused (zscore)"


def _rank_in_spaces(index, spaces: Sequence[str], queries: pd.DataFrame, first: np.ndarray,
                    targets: Sequence[Target], *, fusions: Sequence[str], weight: float, encoders, encode_batch: int,
                    cache, progress: Progress, rank_batch: int) -> pd.DataFrame:
    """Per-query rows of an index of several embedding spaces: each query ranked in every space and fused over
    them (reciprocal rank and z-scores, ``search.spacefusion``, over every frame's score), for every fusion of
    frame and object scores. Column ``space`` names the space (or the fusion of spaces); ``fusion`` reads
    ``FUSION · SPACE`` so that plots and tables keep the rows apart."""
    from search.query import score_frames_batch
    from search.spacefusion import fuse_scores
    from search.spaces import SPACE_FUSIONS
    from search.textcache import TextVectorCache, encode_texts

    views = {name: index.in_space(name) for name in spaces}
    vectors = {spaces[0]: first}
    for name in spaces[1:]:
        enc = encoders(name, views[name].encoder)
        text_cache = TextVectorCache(Path(cache), enc.identity()) if cache is not None else None
        vectors[name] = query_vectors(queries, dim=int(views[name].encoder.get("dim") or 0), use_file_vectors=False,
                                      encode=lambda texts, enc=enc, c=text_cache: encode_texts(
                                          enc, texts, batch_size=encode_batch, cache=c, progress=progress))
    labels = [f"{space}\t{fusion}" for space in [*spaces, *(f"{FUSED} ({m})" for m in SPACE_FUSIONS)]
              for fusion in fusions]

    def score(ids: np.ndarray, wanted: list[str]) -> dict[str, np.ndarray]:
        rows = ids[:, 0].astype(np.int64)
        per = {name: score_frames_batch(view, vectors[name][rows], fusions=list(fusions), weight=weight)
               for name, view in views.items()}
        out = {}
        for label in wanted:
            space, fusion = label.split("\t")
            if space in per:
                out[label] = per[space][fusion]
                continue
            method = space[len(FUSED) + 2:-1]
            out[label] = np.stack([fuse_scores([per[name][fusion][j] for name in spaces], method)
                                   for j in range(len(rows))])
        return out

    ids = np.arange(len(queries), dtype=np.float64)[:, None]
    per_query = rank_queries(queries, ids, index.frames, None, fusions=labels, targets=targets,
                             progress=lambda items: progress(items, "ranking", len(queries)),
                             batch_scorer=score, batch_size=rank_batch)
    parts = per_query["fusion"].str.split("\t", expand=True)
    per_query.insert(2, "space", parts[0])
    per_query["fusion"] = parts[1] + " · " + parts[0]
    return per_query


def _unit(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.where(norms > 0, norms, 1.0)).astype(np.float32)


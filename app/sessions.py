"""KIS sessions: pick a random target frame, rank a typed description against it, save it to a query set."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

from app.state import AppConfig

KINDS = ("novice", "expert")
DEFAULT_LIMIT_S = 300      # five minutes, as in the interactive KIS tasks of VBS
TOP_SHOWN = 5
MAX_DESCRIPTION_CHARS = 2000   # a description longer than this is refused (CSV readers stop at 131,072 per field)
_WRITE_LOCK = threading.Lock()   # sessions of one server append to the same files


def queryset_path(cfg: AppConfig, kind: str) -> Path:
    if kind not in KINDS:
        raise ValueError(f"query set kind must be one of {KINDS}, got {kind!r}")
    return cfg.querysets_dir / f"session_{kind}.csv"


def pick_target(frames: pd.DataFrame, rng: np.random.Generator) -> dict:
    """A random frame of the index (uniform over frames) as a plain dict."""
    row = frames.iloc[int(rng.integers(len(frames)))]
    return {"gid": int(row["gid"]), "site": str(row["site"]), "video_id": str(row["video_id"]),
            "video_path": str(row["video_path"]), "frame_index": int(row["frame_index"]),
            "time": float(row["time"])}


def target_image(index, cfg: AppConfig, target: dict) -> np.ndarray:
    """The target at full resolution from its video when the collection is there, else its thumbnail."""
    from app.security import collection_file
    from app.ui.common import decode_jpeg
    from search.errors import MvkError

    if cfg.collection is not None:
        try:
            from mvk_tools.video import read_frame_at

            path = collection_file(cfg.collection, target["video_path"])
            return read_frame_at(path, target["time"], max_side=960).image
        except (MvkError, NotImplementedError):
            pass
    return decode_jpeg(index.thumbnail(int(target["gid"])))


def rank_and_save(index, encoder, cfg: AppConfig, target: dict, text: str, *, kind: str, fusion: str = "max",
                  seconds: float = 0.0, limit: float = DEFAULT_LIMIT_S, weight: float = 0.5) -> dict:
    """Rank ``text`` with the benchmark's own rule (mvk_tools.kis), append it to the kind's query set and
    return the outcome: query_id, query_type, rank, n_frames, seconds, text, path, top (gid, is_target)."""
    from mvk_tools import kis
    from mvk_tools.querysets import make_queries, write_queryset
    from search.errors import QueryError
    from search.query import score_frames

    text = " ".join(str(text).split())
    if not text:
        raise QueryError("type a description of the target frame first")
    if len(text) > MAX_DESCRIPTION_CHARS:
        raise QueryError(f"the description has {len(text):,} characters; at most {MAX_DESCRIPTION_CHARS:,} are "
                         f"saved to a query set: shorten it")
    if kind not in KINDS:
        raise QueryError(f"query set kind must be one of {KINDS}, got {kind!r}")
    query_id = f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}-{int(time.time() * 1000) % 1000:03d}"
    record = {"query_id": query_id, "query_type": kind, "text": text, "target_site": target["site"],
              "target_video": target["video_id"], "target_frame": target["frame_index"],
              "target_time": target["time"],
              "source": f"app session, {seconds:.0f} s" + (" (over the time limit)" if seconds > limit else "")}
    queries = make_queries([record])
    vector = encoder.encode_text([text])[0]
    scores = score_frames(index, vector, fusion=fusion, weight=weight)
    target_rows = kis.resolve_targets(queries, index.frames, skipped_sites=index.errors)[0]
    match = np.sort(target_rows.gids) if len(target_rows.gids) else np.array([target["gid"]])
    rank, _ties, _best, _score = kis.rank_of_target(scores, match)
    top = np.argsort(-scores, kind="stable")[:TOP_SHOWN]
    gids = index.frames["gid"].to_numpy()[top]
    path = queryset_path(cfg, kind)
    notes: list[str] = []
    with _WRITE_LOCK:
        existing = _existing_queries(path, notes)
        merged = pd.concat([existing, queries], ignore_index=True) if existing is not None and len(existing) else queries
        write_queryset(merged, path)     # written beside, then renamed over: never half a file
    return {"query_id": query_id, "query_type": kind, "rank": int(rank), "n_frames": int(len(scores)),
            "seconds": float(seconds), "text": text, "path": str(path), "notes": notes,
            "top": pd.DataFrame({"gid": gids, "is_target": np.isin(gids, match)})}


def rerank_with_feedback(service, index, target: dict, text: str, likes: list[int], dislikes: list[int], *,
                         fusion: str = "max") -> dict:
    """The target's rank once the session's description is re-ranked by the frames the user liked and disliked
    among its top frames (the query service's Bayesian feedback, logged like every query): rank (None beyond the
    deepest page), n_liked, n_disliked, top (gid, is_target)."""
    from search.queries import FeedbackQuery, Options, TextQuery
    from search.service import MAX_RESULTS

    frames = index.frames
    refs = {g: service.ref_of(index, g) for g in [*likes, *dislikes]}
    query = FeedbackQuery(TextQuery(text), tuple(refs[g] for g in likes), tuple(refs[g] for g in dislikes),
                          display=TOP_SHOWN)
    rows = service.run(query, Options(k=MAX_RESULTS - 1, fusion=fusion), source="app-session").rows
    target_gid = int(frames.loc[(frames["site"] == target["site"]) & (frames["video_id"] == target["video_id"])
                                & (frames["frame_index"] == target["frame_index"]), "gid"].iloc[0])
    hit = np.flatnonzero(rows["gid"].to_numpy(np.int64) == target_gid)
    gids = rows["gid"].to_numpy(np.int64)[:TOP_SHOWN]
    return {"rank": int(hit[0]) + 1 if hit.size else None, "n_liked": len(likes), "n_disliked": len(dislikes),
            "top": pd.DataFrame({"gid": gids, "is_target": gids == target_gid})}


def _existing_queries(path: Path, notes: list[str]) -> pd.DataFrame | None:
    """The queries already saved at ``path``. A file that cannot be read, or only in part (rows skipped, such as
    a field too long for CSV readers), is kept aside under a new name (said in ``notes``) and its readable rows
    are carried over, so this and later saves write a complete, readable file and nothing is lost."""
    import csv

    from mvk_tools.querysets import read_queryset
    from search.errors import MvkError

    if not path.exists():
        return None
    try:
        qs = read_queryset(path)
        skipped = [i for i in qs.issues if i.skipped]
        if not skipped:
            return qs.queries
        why, queries = f"{len(skipped)} row(s) could not be read: {skipped[0].message}", qs.queries
    except (MvkError, csv.Error, OSError, UnicodeDecodeError, ValueError) as exc:
        why, queries = str(exc), None
    aside = path.with_name(f"{path.name}.unreadable-{time.strftime('%Y%m%d-%H%M%S')}")
    path.replace(aside)
    notes.append(f"{path.name}: {why}; the file was moved to {aside.name} and a new one started"
                 + (f" with its {len(queries)} readable queries" if queries is not None and len(queries) else ""))
    return queries

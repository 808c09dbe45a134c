"""The plan stage (driver): which videos of a site need work under the resume rules.

A site whose shard already matches its sources (same files, fingerprint and index type, every shard file
matching its checksum) is left alone. Otherwise every video with a valid commit record is settled (resumed,
or a remembered lasting failure); a video that cannot be stat'ed fails for this run only; every other video
becomes a VideoTask.
"""
from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from indexer.parts import SiteWork, safe_key, source_signature
from indexer.tasks import IndexConfig, VideoResult, VideoTask
from mvk_tools.layout import outside_link
from search import store

if TYPE_CHECKING:
    from mvk_tools.layout import SelectedImage


@dataclass
class SitePlan:
    """One site as this run sees it: its videos in catalog order, what is settled, what needs work."""
    site: str
    work: SiteWork
    order: list[tuple[str, str]]                    # (rel, key) of every video, in catalog order
    tasks: list[VideoTask] = field(default_factory=list)
    settled: list[VideoResult] = field(default_factory=list)   # resumed, remembered or failed before work
    sources: dict[str, dict] = field(default_factory=dict)     # rel -> signature of every video of the site
    up_to_date: bool = False
    broken: list[str] = field(default_factory=list)            # what is wrong with its current shard

    @property
    def expected_frames(self) -> int:
        return sum(t.expected_frames for t in self.tasks) + sum(v.expected_frames for v in self.settled)


def _missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _str(value: Any) -> str:
    return "" if _missing(value) else str(value)


def _int(value: Any) -> int:
    return 0 if _missing(value) else int(value)


def _relative(path: Path, root: Path) -> str:
    """The video's name in manifests: its resolved path relative to the collection; for a link that cannot be
    resolved (dangling, a loop) or leads outside, the link's own path relative to the collection."""
    base = root.resolve()
    try:
        return path.resolve().relative_to(base).as_posix()
    except (ValueError, OSError, RuntimeError):       # RuntimeError: a symlink loop (Python < 3.13)
        pass
    try:
        return Path(os.path.abspath(path)).relative_to(base).as_posix()
    except ValueError:
        return path.as_posix()


def _signature(path: Path, collection: Path, config: IndexConfig) -> dict:
    """``source_signature`` of the video, or, when it is not to be read, why (``error``) with what says the
    reason is unchanged: a link's target (``link``) for a dangling link, a loop or a link out of the collection,
    so that such a video settles as a lasting failure and its site stays up to date until the link changes."""
    refused = None if config.follow_outside_links else outside_link(path, collection)
    if refused is None:
        try:
            return source_signature(path)
        except OSError as exc:
            refused = exc.strerror or str(exc)
    try:
        return {"error": refused, "link": os.readlink(path)}
    except OSError:
        return {"error": refused}


def _expected_frames(row: pd.Series, config: IndexConfig, selected: list["SelectedImage"] | None) -> int:
    if selected:
        return len(selected)
    duration = row.get("duration")
    return int(math.ceil(float(duration) / config.every_seconds)) if not _missing(duration) and duration > 0 else 0


def _selected_signature(selected: list["SelectedImage"]) -> str:
    """A short hash of a video's selected images (names, sizes, mtimes): a changed set redoes the video."""
    h = hashlib.sha1()
    for im in selected:
        try:
            st = im.path.stat()
            h.update(f"{im.name}:{st.st_size}:{st.st_mtime_ns};".encode())
        except OSError as exc:
            h.update(f"{im.name}:{exc};".encode())
    return h.hexdigest()[:16]


def video_tasks(collection: Path, site: str, videos: pd.DataFrame, config: IndexConfig) -> list[VideoTask]:
    """A task for every video of the site, in video_id order, with its source signature as of now."""
    videos = videos.sort_values("video_id", kind="stable")
    tasks: list[VideoTask] = []
    for _, row in videos.iterrows():
        path = Path(row["path"])
        rel = _relative(path, collection)
        sig = _signature(path, collection, config)
        selected, note = None, None
        if config.selected_frames:
            from mvk_tools.layout import selected_images
            selected = selected_images(collection, site, str(row["video_id"])) or None
            if selected is None:
                note = f"no selected frames: sampled every {config.every_seconds:g} s"
            elif "error" not in sig:
                sig = {**sig, "selected": _selected_signature(selected)}
        tasks.append(VideoTask(site, str(row["video_id"]), os.path.abspath(path), rel, safe_key(rel), sig,
                               tuple(selected) if selected else None,
                               (_int(row.get("width")), _int(row.get("height"))), _str(row.get("place")),
                               _str(row.get("date")), _expected_frames(row, config, selected), note,
                               _str(row.get("error")) or None))
    return tasks


def _shard_matches(root: Path, site: str, work: SiteWork, sources: dict[str, dict], *, config: IndexConfig,
                   fp: str, rebuild: bool) -> bool:
    """The site's current shard was made from these sources with this fingerprint and index type."""
    manifest = store.shard_manifest(root, site)
    return (not rebuild and work.pending is None and manifest is not None and manifest.get("fingerprint") == fp
            and manifest.get("sources") == sources and manifest.get("index_type") == config.index_type)


def site_up_to_date(root: Path, collection: Path, site: str, videos: pd.DataFrame, work: SiteWork, *,
                    config: IndexConfig, fp: str) -> bool:
    """The site's shard matches its sources and ``fp`` and every shard file its checksum; writes nothing
    (the check a rerun makes before loading any model)."""
    tasks = video_tasks(collection, site, videos, config)
    sources = {t.rel: t.signature for t in tasks}
    return (_shard_matches(root, site, work, sources, config=config, fp=fp, rebuild=False)
            and not store.verify_shard(root, site))


def plan_site(root: Path, collection: Path, site: str, videos: pd.DataFrame, work: SiteWork, *,
              config: IndexConfig, fp: str, rebuild: bool) -> SitePlan:
    """Plan one site (its work folder locked by the caller): up to date, or what to settle and what to do."""
    work.prepare()
    tasks = video_tasks(collection, site, videos, config)
    plan = SitePlan(site, work, [(t.rel, t.key) for t in tasks], sources={t.rel: t.signature for t in tasks})
    matches = _shard_matches(root, site, work, plan.sources, config=config, fp=fp, rebuild=rebuild)
    manifest = store.shard_manifest(root, site)
    # every file against its checksum (a broken shard is rewritten from the parts and the repair noted)
    if matches or (manifest is None and (root / "sites" / site).exists()):
        plan.broken = store.verify_shard(root, site)
    if matches and not plan.broken:
        plan.up_to_date = True
        return plan

    work.mark_pending(rebuild=rebuild)
    for task in tasks:
        if "error" in task.signature:
            plan.settled.append(VideoResult(site, task.video_id, task.rel, "failed",
                                            expected_frames=task.expected_frames, note=task.note,
                                            error=f"cannot read {task.path}: {task.signature['error']}",
                                            lasting="link" in task.signature))
            continue
        rec, damaged = work.check(task.key, task.signature, fp)
        if rec is None:
            if damaged:
                task = replace(task, note="; ".join(n for n in (task.note, damaged) if n))
            plan.tasks.append(task)
            continue
        failed = rec.get("error") is not None
        plan.settled.append(VideoResult(site, task.video_id, task.rel, "failed" if failed else "resumed",
                                        frames=int(rec.get("frames", 0)), objects=int(rec.get("objects", 0)),
                                        error=rec.get("error"), expected_frames=task.expected_frames,
                                        note=task.note, lasting=failed, selected=rec.get("selected")))
    return plan

"""The contract between the indexer's three stages: what the driver plans, what a worker gets, what it returns.

    plan (driver)      catalog -> VideoTask per video that needs work             (indexer.plan)
    work (executor)    (VideoTask, WorkSettings) -> committed part + VideoResult  (indexer.work)
    assemble (driver)  committed parts of a site -> shard, swapped in whole       (indexer.assemble)

Everything here is plain, picklable data, so a task can be shipped to another process or machine (the Ray
engine) and its result shipped back.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from indexer.embed import Fit, ObjectMode

if TYPE_CHECKING:
    from indexer.segment import SegmentParams
    from mvk_tools.layout import SelectedImage
    from mvk_tools.video import Frame

STAGES = ("decode", "segmentation", "object_embedding", "frame_embedding", "write")
# how selected frames are placed in their video; a new version makes an index built the old way refuse to be
# extended (its places may be wrong in static footage, and it lacks the ambiguity and foreign-frame columns)
SELECTED_SOURCE = "images aligned with their video by content and order, ambiguity and foreign checks (v2)"


@dataclass(frozen=True)
class IndexConfig:
    """How frames are sampled, objects embedded and shards written (everything but the models)."""
    every_seconds: float = 1.0            # one frame per this many seconds (ignored with selected_frames)
    selected_frames: bool = False         # use information/selected_frames/ when a video has them
    objects: ObjectMode = "pool"          # crop | pool | pool-raw | none (frame-only index)
    frame_fit: Fit = "letterbox"          # how frames meet CLIP's square input
    crop_margin: float = 0.1              # crop mode: margin around an object's box, times its longer side
    segment: "SegmentParams | None" = None   # None: SegmentParams() defaults
    index_type: str = "flat"              # flat | ivf-flat | ivf-pq | hnsw
    batch_size: int = 16                  # frames embedded per CLIP batch
    decode_max_side: int | None = 512     # frames are decoded at most this large (boxes are stored in source pixels)
    thumbnail_side: int = 256             # longest side of stored thumbnails and object masks
    dense_size: int | None = None         # pool modes: input side of the dense pass (None: CLIP's own)
    decode_threads: int | None = None     # FFmpeg decoder threads (None: the cores this process may use)
    decode_device: str | None = None      # "cuda": decode on the GPU (NVDEC) where FFmpeg offers it
    follow_outside_links: bool = False    # index videos whose symbolic links lead outside the collection

    def problems(self) -> list[str]:
        """What is wrong with these settings (``field: why``), checked before anything is written: a negative
        decode size or a ``nan`` margin recorded in a manifest would poison the index folder for later runs."""
        def number(value: object) -> bool:
            return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

        out = []
        if not (number(self.every_seconds) and self.every_seconds > 0):
            out.append(f"every_seconds: expected a number > 0, got {self.every_seconds!r}")
        if not (number(self.crop_margin) and self.crop_margin >= 0):
            out.append(f"crop_margin: expected a finite number >= 0, got {self.crop_margin!r}")
        if self.decode_max_side is not None and not (isinstance(self.decode_max_side, int)
                                                     and self.decode_max_side > 0):
            out.append(f"decode_max_side: expected a whole number > 0 (or none: full size), "
                       f"got {self.decode_max_side!r}")
        for name in ("batch_size", "thumbnail_side"):
            value = getattr(self, name)
            if not (isinstance(value, int) and not isinstance(value, bool) and value > 0):
                out.append(f"{name}: expected a whole number > 0, got {value!r}")
        if self.dense_size is not None and not (isinstance(self.dense_size, int) and self.dense_size > 0):
            out.append(f"dense_size: expected a whole number > 0, got {self.dense_size!r}")
        seg = self.segment
        if seg is not None:
            if not (number(seg.tau) and seg.tau > 0):
                out.append(f"segment.tau: expected a number > 0, got {seg.tau!r}")
            for name in ("key_stride", "short_side", "window", "chunk"):
                value = getattr(seg, name)
                if not (isinstance(value, int) and value > 0):
                    out.append(f"segment.{name}: expected a whole number > 0, got {value!r}")
        return out

    def segment_params(self) -> "SegmentParams":
        from indexer.segment import SegmentParams
        return self.segment if self.segment is not None else SegmentParams()

    def sampling(self) -> dict:
        out = {"every_seconds": self.every_seconds, "selected_frames": self.selected_frames,
               "decode_max_side": self.decode_max_side}
        if self.selected_frames:       # the selected images themselves, placed in their video by content
            out["selected_source"] = SELECTED_SOURCE
        return out


@dataclass(frozen=True)
class VideoTask:
    """One video that needs work, with everything a worker needs to know about it (no catalog access)."""
    site: str
    video_id: str
    path: str                             # where the worker reads the video (shared by every node)
    rel: str                              # path relative to the collection: the video's name in manifests
    key: str                              # its part files' name in the site's work folder
    signature: dict                       # size and mtime_ns when planned (and its selected images' hash):
                                          # the part is valid for this file only
    selected: tuple["SelectedImage", ...] | None = None   # MVK's selected images, or None: every N seconds
    src_size: tuple[int, int] = (0, 0)    # source width, height (boxes are stored in source pixels)
    place: str = ""
    date: str = ""
    expected_frames: int = 0
    note: str | None = None
    catalog_error: str | None = None      # the catalog could not probe it (checked again by the worker)

    def frame_columns(self) -> dict:
        """The constant frame-row columns of this video."""
        return {"site": self.site, "video_id": self.video_id, "video_path": self.rel, "place": self.place,
                "date": self.date}


FrameSource = Callable[[VideoTask, IndexConfig], Iterable["Frame"]]
"""Where a video's frames come from: ``(task, config) -> frames in order``. The default decodes the video
(``indexer.work.sampled_frames``); another source (selected JPEGs, say) plugs in through WorkSettings."""


@dataclass(frozen=True)
class WorkSettings:
    """What every worker shares: the index root (a path every node sees), the config, the fingerprint its
    parts are valid for, the frame source (None: the default decoder), and the identities of the driver's
    models (``{"encoder": ..., "backbone": ...}``), which a worker that loads its own checks it matches."""
    index_root: str
    config: IndexConfig
    fingerprint: str
    frame_source: FrameSource | None = None
    models: dict | None = None


@dataclass(frozen=True)
class EngineInfo:
    """What an engine reports about the work stage it runs: its name, how many workers run the models, on which
    devices (part of the contract: the driver and the progress display read it, every engine writes it)."""
    name: str
    workers: int
    devices: tuple[str, ...]
    detail: str = ""

    def describe(self) -> str:
        devices = ", ".join(sorted(set(self.devices))) or "cpu"
        text = f"engine {self.name}: {self.workers} worker{'s' if self.workers != 1 else ''} on {devices}"
        return f"{text} ({self.detail})" if self.detail else text


@dataclass
class VideoResult:
    site: str
    video_id: str
    video_path: str                      # relative to the collection root
    status: Literal["indexed", "resumed", "failed"]
    frames: int = 0
    objects: int = 0
    error: str | None = None
    expected_frames: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    note: str | None = None
    lasting: bool = False                # a failure remembered until the file changes (else retried next run)
    selected: dict | None = None         # indexer.selected.report: selected images, flagged ones, numbering


@dataclass
class SiteResult:
    site: str
    status: Literal["written", "up-to-date", "failed"]
    videos: list[VideoResult] = field(default_factory=list)
    frames: int = 0                      # rows in the site's shard
    objects: int = 0
    shard: Path | None = None
    error: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)     # e.g. the broken shard files this run rewrote

    @property
    def errors(self) -> dict[str, str]:
        return {v.video_path: v.error for v in self.videos if v.error}


class Clock:
    """Seconds per stage; a timed iterator can exclude the time of an inner stage it pulls from."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {s: 0.0 for s in STAGES}

    def add(self, seconds: dict[str, float]) -> None:
        for k, v in seconds.items():
            self.seconds[k] = self.seconds.get(k, 0.0) + v

    def timed(self, items: Iterable[Any], stage: str, inner: str | None = None) -> Iterator[Any]:
        it = iter(items)
        while True:
            inner_before = self.seconds[inner] if inner else 0.0
            t = time.perf_counter()
            try:
                item = next(it)
            except StopIteration:
                return
            finally:
                nested = (self.seconds[inner] - inner_before) if inner else 0.0
                self.seconds[stage] += time.perf_counter() - t - nested
            yield item

"""The search service behind ``mvk serve`` (usable by the app too): one encoder and one opened index shared by
every caller, over the same library calls as ``mvk search`` (``search.query.search``, ``temporal_search``).

The index reopens by itself when a shard is swapped: each call compares a fingerprint of the index folder (a few
``stat`` calls: the root manifest and each site's version pointer) with the one it was opened under; callers
that still hold the old ``Index`` keep using it.
Everything here takes values and returns values (DataFrames, bytes, paths); the HTTP layer (``app.api``) only
translates them, and errors are ``search.errors`` types with messages fit to show as they are.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from mvk_tools.eventlog import EventLog
from search.errors import IndexFormatError, QueryError
from search.query import Filters

MAX_RESULTS = 1000      # offset + k of one request: a page beyond this is refused (rank deeper with filters)
MAX_SEGMENT = 120.0     # seconds of video one segment request may convert
ENV_CACHE = "MVK_CACHE"


def default_cache(environ=os.environ) -> Path:
    """Where converted video segments are kept: ``$MVK_CACHE/playback``, else ``~/.cache/mvk/playback`` (the
    app's place, so both share the converted files)."""
    base = Path(environ[ENV_CACHE]).expanduser() if environ.get(ENV_CACHE) else \
        Path(environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mvk"
    return base / "playback"


class NotFoundError(QueryError):
    """A site, place, frame, object or video that the index does not have."""


class BrokenShardError(IndexFormatError):
    """A request names a site whose shard is in the index but could not be read."""

    def __init__(self, site: str, why: str) -> None:
        self.site = site
        super().__init__(f"the shard of site {site!r} could not be read: {why}")


def index_fingerprint(root: Path) -> tuple:
    """Changes whenever a shard is added, rebuilt, swapped or removed: the site folders present, and stat (inode,
    mtime, size) of the root manifest and of each site's ``CURRENT`` pointer (replaced atomically when a new
    version is published) or, in the older layout, its ``manifest.json`` (a swapped-in folder brings a new one).
    Work files (``.tmp-*``, ``.old-*``, ``.lock``) are left out: a rebuild in progress does not reopen the index
    before its shard is published."""
    from search.shard_layout import POINTER

    root = Path(root)
    try:
        children = sorted(p for p in (root / "sites").iterdir() if not p.name.startswith("."))
    except OSError:
        children = []
    paths = [root / "manifest.json"]
    for child in children:
        paths += [child / POINTER, child / "manifest.json"]
    parts = [tuple(child.name for child in children)]
    for path in paths:
        try:
            st = path.stat()
        except OSError:
            continue
        parts.append((str(path.relative_to(root)), st.st_ino, st.st_mtime_ns, st.st_size))
    return tuple(parts)


def fingerprint_version(fingerprint: tuple) -> str:
    """A short stable name of an index state, reported with every answer (gids are valid within one version)."""
    return hashlib.sha1(repr(fingerprint).encode()).hexdigest()[:12]


def encoder_for_index(root: Path, *, device: str = "cpu", model: str | None = None, pretrained: str | None = None,
                      checkpoint: str | None = None, random_weights: bool = False):
    """The encoder an index must be searched with, chosen exactly as ``mvk search`` chooses it: the model
    recorded in the index unless one is named. MissingWeightsError when its weights are not available."""
    from search.commands.search import encoder_arguments
    from search.encoder import load_encoder
    from search.store import read_manifest

    args = argparse.Namespace(model=model, pretrained=pretrained, checkpoint=checkpoint,
                              random_weights=random_weights, device=device)
    return load_encoder(**encoder_arguments(args, read_manifest(root).get("encoder") or {}))


@dataclass
class Page:
    """One page of ranked rows and what the caller should know about them."""
    rows: pd.DataFrame
    offset: int
    has_more: bool
    notes: list[str]
    skipped_shards: dict[str, str]
    version: str
    took_ms: float


@dataclass
class SearchService:
    """Queries, frames, thumbnails and videos of one index folder (and the collection it was built from)."""
    root: Path
    collection: Path | None = None
    device: str = "cpu"
    encoder: object | None = None             # search.encoder.Encoder; loaded from the index on first use
    cache: Path | None = None                 # converted video segments (default: default_cache())
    log: EventLog = field(default_factory=lambda: EventLog(None))
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _opened: tuple | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.root = Path(self.root).expanduser().resolve()
        if self.collection is not None:
            self.collection = Path(self.collection).expanduser().resolve()

    # -- shared resources ---------------------------------------------------------------------------

    def opened(self) -> tuple[object, str]:
        """(the opened index, its version); reopened when the folder's fingerprint changed."""
        fp = index_fingerprint(self.root)
        current = self._opened
        if current is not None and current[0] == fp:
            return current[1], current[2]
        with self._lock:
            if self._opened is None or self._opened[0] != fp:
                from search.store import open_index

                self._opened = (fp, open_index(self.root, device=self.device), fingerprint_version(fp))
            return self._opened[1], self._opened[2]

    def index(self):
        return self.opened()[0]

    def get_encoder(self):
        """The shared encoder, loaded once (from the index's recorded model when none was given)."""
        if self.encoder is None:
            with self._lock:
                if self.encoder is None:
                    self.encoder = encoder_for_index(self.root, device=self.device)
        return self.encoder

    @property
    def roots(self) -> tuple[Path, ...]:
        """The folders files may be served from."""
        return (self.root,) + ((self.collection,) if self.collection is not None else ())

    # -- queries --------------------------------------------------------------------------------------

    def check_filters(self, index, filters: Filters) -> None:
        """NotFoundError for a site or place the index does not have, BrokenShardError for a site whose
        shard could not be read (query.search would say both as a QueryError; callers need to tell them apart)."""
        for site in filters.sites:
            if site in index.errors:
                raise BrokenShardError(site, index.errors[site])
            if site not in index.shards:
                raise NotFoundError(f"unknown site {site!r}; the index has: {', '.join(index.shards) or 'no sites'}")
        if filters.places:
            known = sorted({str(p) for p in index.frames["place"].dropna()})
            lower = {p.lower() for p in known}
            for place in filters.places:
                if place.lower() not in lower:
                    raise NotFoundError(f"unknown place {place!r}; the index has: {', '.join(known) or 'no places'}")

    @staticmethod
    def _window(k: int, offset: int) -> int:
        if k < 1:
            raise QueryError(f"k must be at least 1, got {k}")
        if offset < 0:
            raise QueryError(f"offset must be 0 or more, got {offset}")
        if offset + k > MAX_RESULTS:
            raise QueryError(f"offset + k is {offset + k}; at most {MAX_RESULTS} results can be paged through "
                             f"(narrow the query with filters)")
        return offset + k + 1            # one more than the page, to know whether another page follows

    def search(self, query: str | np.ndarray, *, k: int = 20, offset: int = 0, fusion: str = "max",
               weight: float = 0.5, filters: Filters = Filters(), group_by: Literal["video"] | None = None,
               exact: bool | None = None, source: str = "api", label: str | None = None) -> Page:
        """Ranked frames ``offset .. offset+k-1`` for a text or an (H, W, 3) image (``label`` names it in
        the log); logged as one query event."""
        from search import query as Q

        if isinstance(query, str) and not query.strip():
            raise QueryError("the query text is empty")
        want = self._window(k, offset)
        started = time.perf_counter()
        index, version = self.opened()
        self.check_filters(index, filters)
        found = Q.search(index, self.get_encoder(), query, k=want, fusion=fusion, weight=weight, filters=filters,
                         group_by=group_by, exact=exact)
        page = self._page(found, index, version, k, offset, started)
        self.log.query(source=source, kind="text" if isinstance(query, str) else "image",
                       text=query if isinstance(query, str) else None, image=label, filters=filters,
                       fusion=fusion, weight=weight, k=k, offset=offset, results=page.rows,
                       took_ms=page.took_ms, version=version)
        return page

    def temporal(self, first: str, then: str, *, within: float = 10.0, k: int = 20, offset: int = 0,
                 fusion: str = "max", weight: float = 0.5, filters: Filters = Filters(),
                 group_by: Literal["video"] | None = None, source: str = "api") -> Page:
        """"``first`` then ``then`` within ``within`` seconds in the same video": ranked pairs of frames."""
        from search import query as Q

        for name, text in (("first", first), ("then", then)):
            if not str(text).strip():
                raise QueryError(f"the {name} query text is empty")
        want = self._window(k, offset)
        started = time.perf_counter()
        index, version = self.opened()
        self.check_filters(index, filters)
        found = Q.temporal_search(index, self.get_encoder(), first, then, within=within, k=want, fusion=fusion,
                                  weight=weight, filters=filters, group_by=group_by)
        page = self._page(found, index, version, k, offset, started)
        self.log.query(source=source, kind="temporal", text=first, then=then, within=within, filters=filters,
                       fusion=fusion, weight=weight, k=k, offset=offset, results=page.rows, took_ms=page.took_ms,
                       version=version)
        return page

    @staticmethod
    def _page(found: pd.DataFrame, index, version: str, k: int, offset: int, started: float) -> Page:
        rows = found.iloc[offset:offset + k].reset_index(drop=True)
        return Page(rows=rows, offset=offset, has_more=len(found) > offset + k,
                    notes=list(found.attrs.get("notes", [])), skipped_shards=dict(index.errors), version=version,
                    took_ms=1000 * (time.perf_counter() - started))

    # -- frames, objects, files -------------------------------------------------------------------------

    def frame(self, gid: int) -> pd.Series:
        """The frame row of a global frame id (as search results give it)."""
        index = self.index()
        if not 0 <= int(gid) < len(index.frames):
            raise NotFoundError(f"no frame {gid}: the index has frames 0..{len(index.frames) - 1}")
        return index.frames.iloc[int(gid)]

    def objects(self, gid: int) -> pd.DataFrame:
        """The object rows of one frame (track id, box, area, mask, background flag), in stored order."""
        self.frame(gid)
        objects = self.index().objects
        frame_gid = objects["frame_gid"].to_numpy(np.int64)
        lo, hi = np.searchsorted(frame_gid, [int(gid), int(gid) + 1])
        if not np.all(frame_gid[lo:hi] == int(gid)):     # not sorted (a hand-made index): scan
            return objects[frame_gid == int(gid)].reset_index(drop=True)
        return objects.iloc[lo:hi].reset_index(drop=True)

    def object_row(self, gid: int, track_id: int) -> pd.Series:
        objs = self.objects(gid)
        hit = objs[objs["track_id"].to_numpy(np.int64) == int(track_id)]
        if hit.empty:
            have = ", ".join(str(t) for t in objs["track_id"].tolist()) or "none"
            raise NotFoundError(f"frame {gid} has no object {track_id} (its objects: {have})")
        return hit.iloc[0]

    def thumbnail(self, gid: int, *, overlay: str = "none", track_id: int | None = None) -> bytes:
        """The frame's stored JPEG thumbnail; with ``overlay`` "mask" or "box" the object ``track_id`` (default:
        the frame's largest non-background object) drawn over it."""
        from app.images import decode_jpeg, draw_object, encode_jpeg

        if overlay not in ("none", "mask", "box"):
            raise QueryError(f"overlay must be none, mask or box, got {overlay!r}")
        frame = self.frame(gid)
        data = self.index().thumbnail(int(gid))
        if not data:
            raise NotFoundError(f"frame {gid} has no stored thumbnail")
        if overlay == "none":
            return data
        obj = self._pick_object(gid, track_id)
        if obj is None:
            return data
        image = draw_object(decode_jpeg(data), mode=overlay, mask_rle=str(obj["mask_rle"] or ""),
                            box=tuple(float(obj[c]) for c in ("x0", "y0", "x1", "y1")),
                            source_size=(int(frame["width"]), int(frame["height"])))
        return encode_jpeg(image)

    def _pick_object(self, gid: int, track_id: int | None):
        if track_id is not None:
            return self.object_row(gid, track_id)
        objs = self.objects(gid)
        objs = objs[~objs["is_background"].to_numpy(bool)]
        return None if objs.empty else objs.iloc[int(np.argmax(objs["area"].to_numpy(np.float64)))]

    def mask_png(self, gid: int, track_id: int) -> bytes:
        """The object's mask at the frame's source size, as a PNG (white = object)."""
        from app.images import mask_png

        frame = self.frame(gid)
        obj = self.object_row(gid, track_id)
        if not obj["mask_rle"]:
            raise NotFoundError(f"object {track_id} of frame {gid} has no stored mask")
        return mask_png(str(obj["mask_rle"]), int(frame["width"]), int(frame["height"]))

    def video_file(self, site: str, video_id: str) -> Path:
        """The video file of (site, video_id) inside the collection; NotFoundError when the index has no such
        video, PathNotAllowedError when its recorded path leads outside the collection."""
        from app.security import collection_file

        index = self.index()
        if site in index.errors:
            raise BrokenShardError(site, index.errors[site])
        frames = index.frames
        hit = frames[(frames["site"].astype(str) == site) & (frames["video_id"].astype(str) == video_id)]
        if hit.empty:
            raise NotFoundError(f"the index has no video {video_id!r} at site {site!r}")
        if self.collection is None:
            raise NotFoundError("no collection is configured to play videos from (start with --collection DIR)")
        return collection_file(self.collection, str(hit["video_path"].iloc[0]))

    def video_segment(self, site: str, video_id: str, start: float, end: float):
        """A browser-playable file for seconds ``start``..``end`` of a video (``mvk_tools.playback.Playable``):
        the source itself when browsers play its codec, else that segment converted to H.264 and cached."""
        from mvk_tools.playback import playable_segment

        if not (0 <= start < end) or not np.isfinite(end):
            raise QueryError(f"a segment needs 0 <= start < end seconds, got {start}..{end}")
        if end - start > MAX_SEGMENT:
            raise QueryError(f"a segment may span at most {MAX_SEGMENT:g} s, got {end - start:g} s")
        path = self.video_file(site, video_id)
        return playable_segment(path, float(start), float(end), self.cache or default_cache())

    def info(self) -> dict:
        """Sites with their counts, skipped shards, the encoder and segmentation the index was built with."""
        index, version = self.opened()
        frames = index.frames
        sites = []
        for site, shard in index.shards.items():
            f = shard.frames
            dates = sorted(d for d in f["date"].astype(str) if d)
            sites.append({"site": site, "frames": len(f), "objects": len(shard.objects),
                          "videos": int(f["video_id"].nunique()), "index_type": shard.index_type,
                          "places": sorted({str(p) for p in f["place"].dropna() if str(p)}),
                          "date_from": dates[0] if dates else "", "date_to": dates[-1] if dates else "",
                          "written": str(shard.manifest.get("written", ""))})
        videos = int(frames.groupby(["site", "video_id"]).ngroups) if len(frames) else 0
        return {"index": str(self.root), "collection": str(self.collection) if self.collection else None,
                "version": version, "frames": len(frames), "objects": len(index.objects), "videos": videos,
                "sites": sites, "skipped_shards": dict(index.errors), "encoder": index.encoder,
                "segmentation": index.manifest.get("segmentation"), "notes": list(index.notes)}

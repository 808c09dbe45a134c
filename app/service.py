"""The service behind the app and ``mvk serve``: the query service every front end shares
(``search.service.QueryService``: queries, paging, validation, the event log, the encoder rule) plus frames,
objects, thumbnails, masks and playable video segments.

Everything here takes values and returns values (DataFrames, bytes, paths); the HTTP layer (``app.api``) only
translates them, and errors are ``search.errors`` types with messages fit to show as they are.
"""
from __future__ import annotations

import os
from pathlib import Path
from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from mvk_tools.eventlog import EventLog
from search.errors import QueryError
from search.identity import EncoderChoice
from search.queries import ImageQuery, Options, SequenceQuery, TextQuery
from search.query import Filters
from search.scoring import SearchParams
from search.service import (MAX_RESULTS, BrokenShardError, NotFoundError, Page, QueryLog,  # noqa: F401
                            QueryService, fingerprint_version, index_fingerprint)

MAX_SEGMENT = 120.0     # seconds of video one segment request may convert
SURVEY_CACHE = 8        # surveys (tables and plots) kept per service, so a page's CSV and PNG requests reuse one
SURVEY_PLOTS = ("timeline", "sites", "map")
ENV_CACHE = "MVK_CACHE"


def default_cache(environ=os.environ) -> Path:
    """Where converted video segments are kept: ``$MVK_CACHE/playback``, else ``~/.cache/mvk/playback`` (the
    app's place, so both share the converted files)."""
    base = Path(environ[ENV_CACHE]).expanduser() if environ.get(ENV_CACHE) else \
        Path(environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mvk"
    return base / "playback"


@dataclass
class SurveyReport:
    """A survey (``search.survey.SurveyResult``) with its plots as PNG bytes (``SURVEY_PLOTS``) and the index
    version it was computed on."""
    result: object
    plots: dict[str, bytes]
    version: str

    def csv(self, name: str) -> str:
        """One of the survey's tables (presence, occurrences, sites, months) as CSV text, formula-safe."""
        from search.survey import to_csv

        tables = self.result.tables()
        if name not in tables:
            raise NotFoundError(f"a survey has no table {name!r} (it has {', '.join(tables)})")
        return to_csv(tables[name])


class SearchService(QueryService):
    """The query service (``search.service.QueryService``) plus what the app and the API serve besides ranked
    rows: frames, objects, thumbnails, masks and playable video segments of one index and its collection
    (``cache``: where converted video segments go, default ``default_cache()``)."""

    def __init__(self, root: Path, collection: Path | None = None, *, device: str = "cpu", encoder=None,
                 cache: Path | None = None, log: QueryLog | None = None, choice: EncoderChoice = EncoderChoice()):
        super().__init__(root, device=device, choice=choice, encoder=encoder, log=log or EventLog(None))
        self.collection = Path(collection).expanduser().resolve() if collection is not None else None
        self.cache = cache
        self._surveys: OrderedDict = OrderedDict()

    @property
    def roots(self) -> tuple[Path, ...]:
        """The folders files may be served from."""
        return (self.root,) + ((self.collection,) if self.collection is not None else ())

    # -- the query types the API names by verb (thin: each builds a query value and runs it) ------------

    def search(self, query: str | np.ndarray, *, k: int = 20, offset: int = 0, fusion: str = "max",
               weight: float = 0.5, filters: Filters = Filters(), group_by: Literal["video"] | None = None,
               exact: bool | None = None, source: str = "api", label: str | None = None,
               params: SearchParams = SearchParams(), cells: tuple[int, ...] = ()) -> Page:
        """Ranked frames ``offset .. offset+k-1`` for a text or an (H, W, 3) image (``label`` names it in
        the log); logged as one query event."""
        q = TextQuery(query) if isinstance(query, str) else ImageQuery(query, label or "image")
        return self.run(q, Options(k=k, offset=offset, fusion=fusion, weight=weight, filters=filters,
                                   group_by=group_by, exact=exact, params=params, cells=tuple(cells)), source=source)

    def temporal(self, first: str, then: str | list[str], *, within: float = 10.0, k: int = 20, offset: int = 0,
                 fusion: str = "max", weight: float = 0.5, filters: Filters = Filters(),
                 group_by: Literal["video"] | None = None, source: str = "api") -> Page:
        """"``first`` then ``then`` (one text or several, in order) within ``within`` seconds in the same
        video": ranked chains of frames."""
        thens = [then] if isinstance(then, str) else list(then)
        steps = tuple(TextQuery(s) for s in [first, *thens])
        return self.run(SequenceQuery(steps, within), Options(k=k, offset=offset, fusion=fusion, weight=weight,
                                                              filters=filters, group_by=group_by), source=source)

    # -- survey and its plots --------------------------------------------------------------------------------

    def survey_report(self, query, *, key: tuple | None = None, threshold: float | None = None,
                      labels: pd.DataFrame | None = None, target_precision: float = 0.9,
                      filters: Filters = Filters(), source: str = "api") -> SurveyReport:
        """``QueryService.survey`` plus its timeline, site and map plots as PNG bytes. With ``key`` (what the
        caller's request is, hashable) the report is cached per index version, so the tables, the CSV downloads
        and the plots of one request are computed once."""
        import tempfile

        from mvk_tools.survey_plots import write_survey_plots

        version = self.opened()[1]
        cache_key = None if key is None else (version, key)
        if cache_key is not None and cache_key in self._surveys:
            self._surveys.move_to_end(cache_key)
            return self._surveys[cache_key]
        result = self.survey(query, threshold=threshold, labels=labels, target_precision=target_precision,
                             filters=filters, source=source)
        with tempfile.TemporaryDirectory(prefix="mvk-survey-") as tmp:
            paths = write_survey_plots(result.presence, result.hits, result.sites, tmp,
                                       title=f"'{result.query}' at T = {result.threshold:.3g}")
            plots = {p.stem: p.read_bytes() for p in paths}
        report = SurveyReport(result=result, plots=plots, version=version)
        if cache_key is not None:
            with self._lock:
                self._surveys[cache_key] = report
                while len(self._surveys) > SURVEY_CACHE:
                    self._surveys.popitem(last=False)
        return report

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

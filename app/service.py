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
from search.queries import ImageQuery, ItemRef, Options, SequenceQuery, TextQuery
from search.query import Filters
from search.scoring import SearchParams
from search.service import (MAX_RESULTS, BrokenShardError, NotFoundError, Page, QueryLog,  # noqa: F401
                            QueryService, fingerprint_version, index_fingerprint)

MAX_SEGMENT = 120.0     # seconds of video one segment request may convert
SURVEY_CACHE = 8        # surveys (tables and plots) kept per service, so a page's CSV and PNG requests reuse one
SURVEY_PLOTS = ("timeline", "sites", "map")
TRACK_BEFORE = 20       # indexed frames before the seed frame one track request propagates through
TRACK_AFTER = 20        # and after it (bounded work: at most TRACK_BEFORE + TRACK_AFTER + 1 frames decoded)
TRACK_MAX_SPAN = 200    # the most frames before + after a request may ask for
TRACK_CACHE = 8         # tracks kept per service, by (index version, video, seed, window)
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


@dataclass
class FollowedTrack:
    """An object followed through the frames around an indexed frame (``indexer.tracks.Track``: COCO RLE per
    frame), with the index's frame row (``gid``, -1 when not indexed) of each propagated frame."""
    track: object
    gid: int
    site: str
    video_id: str
    gids: dict[int, int]            # frame index in the video -> global frame id of the index (indexed frames)

    def presence(self) -> pd.DataFrame:
        """Per propagated frame: frame_index, time, gid, area (fraction of the frame covered by the object)."""
        rows = [(f.index, f.time, self.gids.get(f.index, -1),
                 float(sum(o["area"] for o in f.objects.values()))) for f in self.track.frames]
        return pd.DataFrame(rows, columns=["frame_index", "time", "gid", "area"])


def _seed_key(seed) -> tuple:
    import hashlib
    if isinstance(seed, (bytes, bytearray)):
        return ("png", hashlib.sha1(bytes(seed)).hexdigest())
    if seed is None:
        return ("stored",)
    return ("xy", tuple(float(v) for v in seed))


class SearchService(QueryService):
    """The query service (``search.service.QueryService``) plus what the app and the API serve besides ranked
    rows: frames, objects, thumbnails, masks and playable video segments of one index and its collection
    (``cache``: where converted video segments go, default ``default_cache()``)."""

    def __init__(self, root: Path, collection: Path | None = None, *, device: str = "cpu", encoder=None,
                 cache: Path | None = None, log: QueryLog | None = None, choice: EncoderChoice = EncoderChoice(),
                 threads: int | None = None):
        super().__init__(root, device=device, choice=choice, encoder=encoder, log=log or EventLog(None),
                         threads=threads)
        self.collection = Path(collection).expanduser().resolve() if collection is not None else None
        self.cache = cache
        self._surveys: OrderedDict = OrderedDict()
        self._tracks: OrderedDict = OrderedDict()
        self._propagator = None

    @property
    def roots(self) -> tuple[Path, ...]:
        """The folders files may be served from."""
        return (self.root,) + ((self.collection,) if self.collection is not None else ())

    # -- the query types the API names by verb (thin: each builds a query value and runs it) ------------

    def search(self, query: str | np.ndarray, *, k: int = 20, offset: int = 0, fusion: str = "max",
               weight: float = 0.5, filters: Filters = Filters(), group_by: Literal["video"] | None = None,
               exact: bool | None = None, source: str = "api", label: str | None = None,
               params: SearchParams = SearchParams(), cells: tuple[int, ...] = (),
               space_fusion: str = "rrf") -> Page:
        """Ranked frames ``offset .. offset+k-1`` for a text or an (H, W, 3) image (``label`` names it in
        the log); logged as one query event."""
        q = TextQuery(query) if isinstance(query, str) else ImageQuery(query, label or "image")
        return self.run(q, Options(k=k, offset=offset, fusion=fusion, weight=weight, filters=filters,
                                   group_by=group_by, exact=exact, params=params, cells=tuple(cells),
                                   space_fusion=space_fusion), source=source)

    def temporal(self, first: str, then: str | list[str], *, within: float = 10.0, k: int = 20, offset: int = 0,
                 fusion: str = "max", weight: float = 0.5, filters: Filters = Filters(),
                 group_by: Literal["video"] | None = None, source: str = "api", space_fusion: str = "rrf") -> Page:
        """"``first`` then ``then`` (one text or several, in order) within ``within`` seconds in the same
        video": ranked chains of frames."""
        thens = [then] if isinstance(then, str) else list(then)
        steps = tuple(TextQuery(s) for s in [first, *thens])
        return self.run(SequenceQuery(steps, within), Options(k=k, offset=offset, fusion=fusion, weight=weight,
                                                              filters=filters, group_by=group_by,
                                                              space_fusion=space_fusion), source=source)

    # -- survey and its plots --------------------------------------------------------------------------------

    def survey_report(self, query, *, key: tuple | None = None, threshold: float | None = None,
                      labels: pd.DataFrame | None = None, target_precision: float = 0.9,
                      filters: Filters = Filters(), source: str = "api", space: str | None = None) -> SurveyReport:
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
                             filters=filters, source=source, space=space)
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

    # -- follow an animal --------------------------------------------------------------------------------

    def propagator_settings(self):
        """How this index's frames are followed: the colour baseline when the index was segmented with the colour
        backbone or built with random weights (a random ViT follows nothing), else the index's DINO backbone
        (its checkpoint, under the same offline-weights rules as indexing)."""
        from indexer.propagators import PropagatorSettings

        manifest = self.index().manifest
        backbone = (manifest.get("indexing") or {}).get("backbone") or {}
        name = backbone.get("backbone") or backbone.get("name") if isinstance(backbone, dict) else None
        random = bool((manifest.get("encoder") or {}).get("random_weights")) or \
            bool(isinstance(backbone, dict) and backbone.get("random_weights"))
        if not name or name == "color" or random:
            return PropagatorSettings(backbone="color", device=self.device)
        return PropagatorSettings(backbone=name, checkpoint=backbone.get("checkpoint"), device=self.device)

    def get_propagator(self):
        """The propagator of ``propagator_settings``, loaded once."""
        if self._propagator is None:
            from indexer.propagators import load_propagator
            with self._lock:
                if self._propagator is None:
                    self._propagator = load_propagator(self.propagator_settings())
        return self._propagator

    def track(self, frame: int | ItemRef, seed: bytes | tuple | None = None, *, track_id: int | None = None,
              before: int = TRACK_BEFORE, after: int = TRACK_AFTER) -> FollowedTrack:
        """Follow an object from an indexed frame (a gid or a result id) through the video's indexed frames
        around it (``before`` and ``after`` of them: bounded work), with ``indexer.follow.follow_frames``. The
        seed: a mask PNG (bytes; white or label ids = the object), a box (x0, y0, x1, y1) or a point (x, y) in
        source pixels, or None for the stored mask of ``track_id`` (or of the result id's track). Cached per
        (index version, frame, seed, window). QueryError/InputError (422 in the API) for bad input."""
        from indexer.follow import follow_frames
        from indexer.seeds import BoxSeed, MaskSeed, PointSeed
        from mvk_tools.video import VideoError, iter_frames
        from search.errors import InputError

        index, version = self.opened()
        if isinstance(frame, ItemRef):
            gid, _ = self.resolve(index, frame)
            track_id = frame.track_id if track_id is None else track_id
        else:
            gid = int(frame)
            if not 0 <= gid < len(index.frames):
                raise QueryError(f"frame {gid} is past the end: the index has frames 0..{len(index.frames) - 1}")
        for name, value in (("before", before), ("after", after)):
            if not 0 <= int(value) <= TRACK_MAX_SPAN:
                raise QueryError(f"{name} must be 0..{TRACK_MAX_SPAN} frames, got {value}")
        if seed is None and track_id is None:
            raise QueryError("give a seed: a mask PNG, a box, a point, or the track id of one of the frame's objects")
        if seed is not None and not isinstance(seed, (bytes, bytearray)) and len(seed) not in (2, 4):
            raise QueryError(f"a seed is a mask PNG, a box x0,y0,x1,y1 or a point x,y; got {seed!r}")
        key = (version, gid, _seed_key(seed), track_id if seed is None else None, int(before), int(after))
        if key in self._tracks:
            self._tracks.move_to_end(key)
            return self._tracks[key]
        row = index.frames.iloc[gid]
        site, video_id = str(row["site"]), str(row["video_id"])
        stored = self.object_row(gid, track_id) if seed is None else None
        path = self.video_file(site, video_id)
        video = index.frames[(index.frames["site"].astype(str) == site)
                             & (index.frames["video_id"].astype(str) == video_id)].sort_values("frame_index")
        indices = video["frame_index"].to_numpy(np.int64)
        at = int(np.flatnonzero(indices == int(row["frame_index"]))[0])
        window = indices[max(0, at - int(before)):at + int(after) + 1]
        try:
            frames = list(iter_frames(path, indices=[int(i) for i in window]))
        except VideoError as exc:
            raise InputError(f"{site}/{video_id}: {exc}") from exc
        position = next((i for i, f in enumerate(frames) if f.index == int(row["frame_index"])), None)
        if position is None:
            raise InputError(f"frame {int(row['frame_index'])} is past the end of {path.name} "
                             f"(the video has fewer frames than the index says)")
        size = frames[position].image.shape[:2]
        if seed is None:
            from search import rle
            if not stored["mask_rle"]:
                raise NotFoundError(f"object {track_id} of frame {gid} has no stored mask to follow")
            value = MaskSeed(rle.decode_at(str(stored["mask_rle"]), *size).astype(np.uint8))
        elif isinstance(seed, (bytes, bytearray)):
            value = MaskSeed(read_mask_png(bytes(seed)))
        elif len(seed) == 4:
            value = BoxSeed(tuple(float(v) for v in seed))
        else:
            value = PointSeed(tuple(float(v) for v in seed))
        track = follow_frames(frames, value, position, self.get_propagator(), source=f"{site}/{video_id}")
        gids = dict(zip(video["frame_index"].astype(int), video["gid"].astype(int)))
        result = FollowedTrack(track=track, gid=gid, site=site, video_id=video_id,
                               gids={int(f.index): gids[int(f.index)] for f in track.frames if int(f.index) in gids})
        with self._lock:
            self._tracks[key] = result
            while len(self._tracks) > TRACK_CACHE:
                self._tracks.popitem(last=False)
        return result

    def track_overlays(self, followed: FollowedTrack, n: int = 6) -> list[tuple[float, bytes]]:
        """(time, JPEG) of up to ``n`` evenly spaced indexed frames of a followed track: the stored thumbnail with
        the propagated mask drawn over it."""
        from app.images import decode_jpeg, draw_object, encode_jpeg
        from search import rle

        frames = [f for f in followed.track.frames if f.index in followed.gids]
        picks = np.unique(np.linspace(0, len(frames) - 1, min(n, len(frames))).round().astype(int)) if frames else []
        out = []
        for i in picks:
            f = frames[int(i)]
            data = self.index().thumbnail(followed.gids[f.index])
            if not data:
                continue
            mask = followed.track.labels(f.index) > 0
            image = draw_object(decode_jpeg(data), mode="mask", mask_rle=rle.encode(mask) if mask.any() else "")
            out.append((float(f.time), encode_jpeg(image)))
        return out

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
        """Sites with their counts, skipped shards, the encoder and segmentation the index was built with, and
        its embedding spaces (``space_records``)."""
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
                "spaces": space_records(index), "segmentation": index.manifest.get("segmentation"),
                "notes": list(index.notes)}


def space_records(index) -> list[dict]:
    """The embedding spaces of an opened index, the first one first: name, model in words, vector size, the
    object mode its object vectors were made with, and the readable sites that have vectors in it (every site
    for the first space; a further space's sites are those whose shard manifest lists it)."""
    from search.spaces import spaces_of

    out = []
    for space in spaces_of(index.manifest or {}):
        sites = [site for site, shard in sorted(index.shards.items())
                 if space.primary or space.name in ((shard.manifest or {}).get("spaces") or {})]
        out.append({"name": space.name, "model": space.describe(), "dim": space.dim, "objects": space.objects,
                    "primary": space.primary, "sites": sites})
    return out


def read_mask_png(data: bytes) -> np.ndarray:
    """(H, W) uint8 object ids of an uploaded mask image (``indexer.seeds.read_label_png``'s rules: palette
    indices, white = object 1, one id per colour); InputError when it is not a readable image."""
    import tempfile

    from indexer.seeds import read_label_png
    from search.errors import InputError

    if not data:
        raise InputError("the mask upload is empty")
    with tempfile.NamedTemporaryFile(suffix=".png") as tmp:
        tmp.write(data)
        tmp.flush()
        try:
            return read_label_png(tmp.name)
        except InputError as exc:
            raise InputError(str(exc).replace(tmp.name, "upload")) from None

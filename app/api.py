"""The JSON HTTP API of ``mvk serve``: FastAPI routes over ``app.service.SearchService``.

Every route is a thin translation: query parameters -> service call -> response model. Errors are JSON
``{"status", "error", "message"}`` (plus ``"shard"`` when a broken shard is the cause) with these codes:
422 bad input (empty query, bad filter value, malformed parameter), 404 unknown site, place, frame, object or
video, 403 a file outside the index and collection, 401 a missing or wrong bearer token, 503 an index, shard
or model that cannot be used, 500 anything unexpected (the message names the error type; the traceback stays
in the server's log). Routes are plain ``def``: Starlette runs them in its thread pool, and numpy, FAISS and
torch release the GIL in their heavy parts.
"""
from __future__ import annotations

import hmac
import logging
import mimetypes
import re
import urllib.parse
from dataclasses import dataclass
from typing import Annotated, Literal

import numpy as np
from fastapi import Depends, FastAPI, File, Query, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel, BeforeValidator, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.limits import BodyLimit
from app.security import MAX_IMAGE_BYTES, MAX_REQUEST_BYTES, PathNotAllowedError, read_uploaded_image
from app.service import MAX_RESULTS, BrokenShardError, NotFoundError, Page, SearchService
from search.errors import (IndexFormatError, InputError, MissingWeightsError, ModelMismatchError, MvkError,
                           QueryError, StaleIndexError)
from search.queries import (FUSIONS, FeedbackQuery, Filters, ItemRef, LikeQuery, Options, SearchParams, TextQuery,
                            parse_cells)
from search.versions import check_version

log = logging.getLogger("mvk.api")
ENV_TOKEN = "MVK_API_TOKEN"
SEGMENT_BEFORE = 2.0     # seconds of video before a result's moment in its segment_url
SEGMENT_AFTER = 30.0     # and after it


# -- response models ---------------------------------------------------------------------------------

SPACE_FUSION_HELP = ("an index with several embedding spaces: rrf (reciprocal-rank fusion of their rankings), "
                     "zscore (mean of z-normalised scores) or one space's name (that space alone); an index with "
                     "one space ignores it")


class ErrorResponse(BaseModel):
    status: int = Field(description="HTTP status code")
    error: str = Field(description="kind of error, e.g. 'not found'")
    message: str = Field(description="what went wrong, naming the thing")
    shard: str | None = Field(None, description="the site whose shard could not be read, when that is the cause")


class FrameResult(BaseModel):
    rank: int
    score: float = Field(description="fused score of the frame and its best object")
    frame_score: float
    object_score: float | None = Field(description="best non-background object's score; null when none")
    gid: int = Field(description="global frame id, valid within the index version of the response")
    id: str = Field(description="the stable id of the frame, SITE/VIDEO_ID/FRAME_INDEX (valid across rebuilds): "
                                "what /search/like and /search/feedback take")
    object_id: str | None = Field(None, description="the stable id of the best object, SITE/VIDEO_ID/FRAME_INDEX/"
                                                    "TRACK_ID; null when none")
    site: str
    video_id: str
    video_path: str = Field(description="relative to the collection root")
    frame_index: int
    time: float = Field(description="seconds into the video")
    place: str
    date: str
    track_id: int | None = Field(description="the best object's track id; null when the frame matched as a whole")
    box: list[int] | None = Field(description="the best object's box [x0, y0, x1, y1] in source pixels")
    mask_rle: str | None = Field(description="the best object's mask, search.rle run-length string")
    thumbnail_url: str
    mask_url: str | None
    video_url: str = Field(description="the video, with a #t= media fragment at this frame")
    segment_url: str = Field(description="a browser-playable segment around this frame (H.264 when converted); "
                                         "seek to time minus its X-Segment-Start header")
    spaces: dict[str, int | None] | None = Field(None, description="the result's rank in each embedding space of "
                                                                   "a fused search (null where that space did not "
                                                                   "return it); null when one space answered")


class PairResult(BaseModel):
    rank: int
    score: float = Field(description="mean of the two frames' fused scores")
    site: str
    video_id: str
    video_path: str
    place: str
    date: str
    first_gid: int
    first_time: float
    first_score: float
    then_gid: int
    then_time: float
    then_score: float
    gap: float = Field(description="seconds from the first to the last frame")
    first_thumbnail_url: str
    then_thumbnail_url: str
    video_url: str
    step_gids: list[int] = Field(default_factory=list, description="every step's frame, in order")
    step_times: list[float] = Field(default_factory=list, description="every step's time, in order")
    step_scores: list[float] = Field(default_factory=list, description="every step's fused score, in order")
    spaces: dict[str, int | None] | None = Field(None, description="the result's rank in each embedding space of "
                                                                   "a fused search (null where that space did not "
                                                                   "return it); null when one space answered")


class PageInfo(BaseModel):
    k: int
    offset: int
    has_more: bool = Field(description="whether a next page (offset + k) has results")
    notes: list[str] = Field(description="what the caller should know (truncated text, random weights, ...)")
    skipped_shards: dict[str, str] = Field(description="site -> why its shard could not be read")
    index_version: str
    took_ms: float


class SearchResponse(PageInfo):
    query: str
    kind: Literal["text", "image", "like", "feedback"]
    results: list[FrameResult]


class TemporalResponse(PageInfo):
    first: str
    then: str | list[str] = Field(description="the next step's text; a list when the query has more steps")
    within: float
    results: list[PairResult]


class FeedbackRequest(BaseModel):
    """Relevance feedback: results liked and disliked (stable ids), re-ranking a base query."""
    q: str | None = Field(None, max_length=2000, description="the base text query (omit to search by the likes)")
    like: str | None = Field(None, description="or a base 'more like this' id")
    positive: list[str] = Field(default_factory=list, description="ids of liked results (frames or objects)")
    negative: list[str] = Field(default_factory=list, description="ids of disliked results")
    method: Literal["bayes", "rocchio"] = Field("bayes", description="bayes: SOMHunter's Bayesian update; rocchio")
    session: str | None = Field(None, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$",
                                description="keep the likes and dislikes under this id: later requests with it "
                                            "add to them (a 'clear' list empties it)")
    clear: bool = Field(False, description="forget the session's earlier likes and dislikes first")
    display: int | None = Field(None, ge=1, le=MAX_RESULTS, description="how many results of the base query the "
                                                                       "user saw (default k)")
    k: int = Field(20, ge=1, le=MAX_RESULTS)
    offset: int = Field(0, ge=0, lt=MAX_RESULTS)
    fusion: Literal[FUSIONS] = "max"
    weight: float = Field(0.5, ge=0.0, le=1.0)
    space_fusion: str = Field("rrf", max_length=200, description=SPACE_FUSION_HELP)
    site: list[str] = Field(default_factory=list)
    place: list[str] = Field(default_factory=list)
    date_from: str = ""
    date_to: str = ""
    group_by: Literal["video"] | None = None


class FeedbackResponse(SearchResponse):
    session: str | None
    positive: list[str]
    negative: list[str]
    method: str


class ObjectInfo(BaseModel):
    track_id: int
    level: int
    box: list[int]
    area: float = Field(description="fraction of the frame covered by the mask")
    is_background: bool
    mask_rle: str
    mask_url: str


class FrameInfo(BaseModel):
    gid: int
    site: str
    video_id: str
    video_path: str
    frame_index: int
    time: float
    width: int
    height: int
    place: str
    date: str
    thumbnail_url: str
    video_url: str
    objects: list[ObjectInfo]
    index_version: str


class SiteInfo(BaseModel):
    site: str
    frames: int
    objects: int
    videos: int
    index_type: str
    places: list[str]
    date_from: str
    date_to: str
    written: str


class SpaceInfo(BaseModel):
    name: str = Field(description="the space's name (its model's): what space_fusion takes to search it alone")
    model: str = Field(description="the model in words (name, tag, weights)")
    dim: int = Field(description="vector size")
    objects: str | None = Field(description="how its object vectors were made (pool, crop, ...)")
    primary: bool = Field(description="the index's first space (the one encoder describes)")
    sites: list[str] = Field(description="the sites with vectors in this space (a site without them is searched "
                                         "in the other spaces)")


class InfoResponse(BaseModel):
    index: str
    collection: str | None
    version: str
    frames: int
    objects: int
    videos: int
    sites: list[SiteInfo]
    skipped_shards: dict[str, str]
    encoder: dict = Field(description="the CLIP model the index was built with (and queries are encoded with)")
    spaces: list[SpaceInfo] = Field(description="the index's embedding spaces, the first one first; a query runs in "
                                                "every one and their rankings are fused (space_fusion)")
    segmentation: dict | None
    notes: list[str]


class HealthResponse(BaseModel):
    status: Literal["ok", "degraded"] = Field(description="degraded: some shards could not be read")
    frames: int
    sites: int
    skipped_shards: dict[str, str]
    index_version: str


class SurveyResponse(BaseModel):
    query: str = Field(description="the query in words")
    model: str = Field(description="the CLIP model the scores come from")
    threshold: float = Field(description="T: an object matches when its score is at least T (cosine)")
    calibrated: bool = Field(description="false: T has no labels behind it, so its error rates are unknown")
    calibration: str = Field(description="what T means, in one line")
    method: str | None = Field(description="the score-to-probability fit, when calibrated")
    precision: dict | None = Field(description="estimated precision at T with its Wilson 95% interval")
    recall: dict | None = Field(description="estimated recall at T (over the labelled items)")
    videos: int
    videos_present: int
    total_maxn: int
    presence: list[dict] = Field(description="one row per video surveyed (presence, first/last time, MaxN, ...)")
    sites: list[dict] = Field(description="per site, with latitude/longitude where known")
    months: list[dict] = Field(description="per month")
    notes: list[str]
    skipped_shards: dict[str, str]
    index_version: str
    plots: dict[str, str] = Field(description="URLs of the timeline, sites and map PNGs of this survey")
    downloads: dict[str, str] = Field(description="URLs of presence.csv, occurrences.csv, sites.csv, months.csv")


class TrackObject(BaseModel):
    id: int = Field(description="object id of the seed (1 for a single mask, box or point)")
    rle: dict = Field(description="COCO RLE of the object's mask on this frame ({size: [h, w], counts})")
    bbox: list[int] = Field(description="[x0, y0, x1, y1] in frame pixels")
    area: float = Field(description="fraction of the frame covered")


class TrackFrameInfo(BaseModel):
    frame_index: int = Field(description="frame index in the video")
    time: float
    gid: int | None = Field(description="the index's global frame id of this frame; null when not indexed")
    objects: list[TrackObject]


class TrackResponse(BaseModel):
    gid: int
    site: str
    video_id: str
    seed_frame: int
    size: list[int] = Field(description="[height, width] of the masks")
    object_ids: list[int]
    frames: list[TrackFrameInfo]
    coco: dict = Field(description="the same track as COCO-style JSON (images, annotations with RLE masks)")
    propagation: dict = Field(description="the propagator, backbone and parameters used")
    notes: list[str]
    zip_url: str = Field(description="POST here for the track as a zip of PNG label maps and track.json")


# -- errors ------------------------------------------------------------------------------------------

def _status_of(exc: MvkError) -> tuple[int, str]:
    from mvk_tools.playback import PlaybackError

    if isinstance(exc, PlaybackError):
        return 422, "cannot play"
    if isinstance(exc, StaleIndexError):
        return 409, "index changed"
    if isinstance(exc, NotFoundError):
        return 404, "not found"
    if isinstance(exc, PathNotAllowedError):
        return 403, "forbidden"
    if isinstance(exc, BrokenShardError):
        return 503, "broken shard"
    if isinstance(exc, (IndexFormatError, MissingWeightsError, ModelMismatchError)):
        return 503, "index or model unavailable"
    if isinstance(exc, (QueryError, InputError)):
        return 422, "invalid request"
    return 400, "bad request"


# The library's messages name the command line's flags; the API's callers know its field names.
_API_FIELDS = {"date-from": "date_from", "date-to": "date_to", "place": "place", "site": "site",
               "within": "within", "then": "then", "fusion": "fusion", "weight": "weight", "k": "k"}


def api_names(message: str) -> str:
    """``message`` with the command-line flags it names (``--date-from``, ``--place X``) written as the API's
    query fields (``date_from``, ``place=X``)."""
    flags = "|".join(sorted(_API_FIELDS, key=len, reverse=True))
    message = re.sub(rf"\bwith --({flags}) (\S+)", lambda m: f"with {_API_FIELDS[m[1]]}={m[2]}", message)
    return re.sub(rf"(?<![\w-])--({flags})\b(?!-)", lambda m: _API_FIELDS[m[1]], message)


def _error(status: int, error: str, message: str, shard: str | None = None, headers: dict | None = None):
    body = {"status": status, "error": error, "message": message}
    if shard is not None:
        body["shard"] = shard
    return JSONResponse(body, status_code=status, headers=headers)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("query", "body", "path"))
        parts.append(f"{where or 'request'}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


ERRORS = {code: {"model": ErrorResponse} for code in (401, 403, 404, 422, 503)}


# -- helpers -----------------------------------------------------------------------------------------

def _q(text: str) -> str:
    return urllib.parse.quote(str(text), safe="")


def _video_url(site: str, video_id: str, at: float | None = None) -> str:
    return f"/videos/{_q(site)}/{_q(video_id)}" + (f"#t={float(at):.3f}" if at is not None else "")


def _segment_url(site: str, video_id: str, at: float) -> str:
    """The segment the app plays for a moment: SEGMENT_BEFORE seconds before it to SEGMENT_AFTER after."""
    return (f"/videos/{_q(site)}/{_q(video_id)}/segment?start={max(0.0, float(at) - SEGMENT_BEFORE):.3f}"
            f"&end={float(at) + SEGMENT_AFTER:.3f}")


def _float(value) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None


def _spaces(row: dict) -> dict[str, int | None] | None:
    """A fused result's rank in each embedding space (the ``spaces`` column), None when one space answered."""
    ranks = row.get("spaces")
    if not isinstance(ranks, dict):
        return None
    return {str(name): int(rank) if rank is not None else None for name, rank in ranks.items()}


def _frame_results(page: Page) -> list[FrameResult]:
    out = []
    for r in page.rows.to_dict("records"):
        track = int(r["track_id"])
        has = track >= 0
        frame_id = f"{r['site']}/{r['video_id']}/{int(r['frame_index'])}"
        out.append(FrameResult(
            rank=int(r["rank"]), score=float(r["score"]), frame_score=float(r["frame_score"]),
            object_score=_float(r["object_score"]), gid=int(r["gid"]), id=frame_id,
            object_id=f"{frame_id}/{track}" if has else None, site=str(r["site"]),
            video_id=str(r["video_id"]), video_path=str(r["video_path"]), frame_index=int(r["frame_index"]),
            time=float(r["time"]), place=str(r["place"]), date=str(r["date"]), track_id=track if has else None,
            box=[int(r[c]) for c in ("x0", "y0", "x1", "y1")] if has else None,
            mask_rle=str(r["mask_rle"]) if has and r["mask_rle"] else None,
            thumbnail_url=f"/frames/{int(r['gid'])}/thumbnail?version={page.version}",
            mask_url=f"/frames/{int(r['gid'])}/objects/{track}/mask.png?version={page.version}" if has else None,
            video_url=_video_url(r["site"], r["video_id"], r["time"]),
            segment_url=_segment_url(r["site"], r["video_id"], r["time"]), spaces=_spaces(r)))
    return out


def _pair_results(page: Page) -> list[PairResult]:
    out = []
    for r in page.rows.to_dict("records"):
        out.append(PairResult(
            rank=int(r["rank"]), score=float(r["score"]), site=str(r["site"]), video_id=str(r["video_id"]),
            video_path=str(r["video_path"]), place=str(r["place"]), date=str(r["date"]),
            first_gid=int(r["first_gid"]), first_time=float(r["first_time"]), first_score=float(r["first_score"]),
            then_gid=int(r["then_gid"]), then_time=float(r["then_time"]), then_score=float(r["then_score"]),
            gap=float(r["gap"]), first_thumbnail_url=f"/frames/{int(r['first_gid'])}/thumbnail?version={page.version}",
            then_thumbnail_url=f"/frames/{int(r['then_gid'])}/thumbnail?version={page.version}",
            video_url=_video_url(r["site"], r["video_id"], r["first_time"]),
            step_gids=[int(g) for g in r.get("step_gids") or []],
            step_times=[float(x) for x in r.get("step_times") or []],
            step_scores=[float(x) for x in r.get("step_scores") or []], spaces=_spaces(r)))
    return out


def _page_info(page: Page, k: int) -> dict:
    return {"k": k, "offset": page.offset, "has_more": page.has_more, "notes": page.notes,
            "skipped_shards": page.skipped_shards, "index_version": page.version, "took_ms": round(page.took_ms, 3)}


def filter_params(site: Annotated[list[str], Query(description="only this dive site (repeatable)")] = [],
                  place: Annotated[list[str], Query(description="only this place (repeatable)")] = [],
                  date_from: Annotated[str, Query(description="only footage from this month on (YYYY-MM)")] = "",
                  date_to: Annotated[str, Query(description="only footage up to this month (YYYY-MM)")] = "",
                  ) -> Filters:
    return Filters(sites=tuple(site), places=tuple(place), date_from=date_from, date_to=date_to)


K = Annotated[int, Query(ge=1, le=MAX_RESULTS, description="results per page")]
OFFSET = Annotated[int, Query(ge=0, lt=MAX_RESULTS, description="results to skip (paging)")]
FUSION = Annotated[Literal[FUSIONS], Query(description="how a frame's and its best object's scores combine")]
SPACE_FUSION = Annotated[str, Query(max_length=200, description=SPACE_FUSION_HELP)]
WEIGHT = Annotated[float, Query(ge=0.0, le=1.0, description="object weight w of fusion=weighted")]
GROUP = Annotated[Literal["video"] | None, Query(description="video: one result (the best) per video")]
CELLS = Annotated[str, Query(max_length=200, description="position query: the matching object lies in these "
                                                         "cells of a 3x3 grid, names (top-left, center, ...) or "
                                                         "numbers 0..8, comma-separated; others are down-weighted")]
NPROBE = Annotated[int | None, Query(ge=1, description="IVF lists probed (IVF indexes only)")]
EF_SEARCH = Annotated[int | None, Query(ge=1, description="HNSW nodes explored (HNSW indexes only)")]
FILTERS = Annotated[Filters, Depends(filter_params)]


def _records(df) -> list[dict]:
    """A table as JSON records (NaN as null)."""
    import json
    return json.loads(df.to_json(orient="records"))


@dataclass(frozen=True)
class SurveyRequest:
    """The query parameters of the survey routes (the same on /survey, its CSVs and its plots)."""
    q: str
    like: str
    whole_track: bool
    positive: tuple[str, ...]
    negative: tuple[str, ...]
    threshold: float | None
    target_precision: float
    filters: Filters
    space: str = ""

    def query(self):
        """The query value: a text or a result (like), as feedback when results are labelled."""
        if self.q.strip() and self.like:
            raise QueryError("survey one query: give q or like, not both")
        if self.whole_track and not self.like:
            raise QueryError("whole_track goes with like=SITE/VIDEO_ID/FRAME_INDEX/TRACK_ID")
        base = LikeQuery(ItemRef.parse(self.like), whole_track=self.whole_track) if self.like else \
            TextQuery(self.q) if self.q.strip() else None
        if self.positive or self.negative:
            return FeedbackQuery(base, tuple(ItemRef.parse(r) for r in self.positive),
                                 tuple(ItemRef.parse(r) for r in self.negative))
        if base is None:
            raise QueryError("the query text is empty (give q, like or positive)")
        return base

    def url_query(self) -> str:
        """These parameters as a URL query string (for the plot and download links)."""
        pairs = [("q", self.q)] if self.q else []
        pairs += [("like", self.like)] if self.like else []
        pairs += [("whole_track", "true")] if self.whole_track else []
        pairs += [("positive", p) for p in self.positive] + [("negative", n) for n in self.negative]
        pairs += [("threshold", repr(self.threshold))] if self.threshold is not None else []
        pairs += [("target_precision", repr(self.target_precision))]
        pairs += [("space", self.space)] if self.space else []
        f = self.filters
        pairs += [("site", x) for x in f.sites] + [("place", x) for x in f.places]
        pairs += [("date_from", f.date_from)] if f.date_from else []
        pairs += [("date_to", f.date_to)] if f.date_to else []
        return urllib.parse.urlencode(pairs)


def survey_params(q: Annotated[str, Query(max_length=2000, description="what to survey")] = "",
                  like: Annotated[str, Query(max_length=600, description="survey what looks like this result: "
                                                                         "SITE/VIDEO_ID/FRAME_INDEX[/TRACK_ID]")] = "",
                  whole_track: Annotated[bool, Query(description="with like: the object's whole track")] = False,
                  positive: Annotated[list[str], Query(description="a result that matches (repeatable): a "
                                                                   "calibration label")] = [],
                  negative: Annotated[list[str], Query(description="a result that does not match (repeatable)")] = [],
                  threshold: Annotated[float | None, Query(description="T (cosine, -1..1); default: calibrated "
                                                                       "on the labels, else uncalibrated 0.25")] = None,
                  target_precision: Annotated[float, Query(gt=0, le=1, description="precision T is chosen for "
                                                                                   "with labels")] = 0.9,
                  space: Annotated[str, Query(max_length=300, description="an index of several embedding "
                                                                          "spaces: the one scored (default its "
                                                                          "first)")] = "",
                  filters: FILTERS = Filters()) -> SurveyRequest:
    return SurveyRequest(q=q, like=like, whole_track=whole_track, positive=tuple(positive), negative=tuple(negative),
                         threshold=threshold, target_precision=target_precision, filters=filters, space=space)


SURVEY = Annotated[SurveyRequest, Depends(survey_params)]


class FeedbackSessions:
    """Likes and dislikes per API session id, in memory (bounded: the oldest sessions are forgotten)."""
    LIMIT = 1000

    def __init__(self) -> None:
        import threading
        from collections import OrderedDict
        self._lock = threading.Lock()
        self._store: OrderedDict[str, tuple[list[str], list[str]]] = OrderedDict()

    def update(self, session: str | None, positive: list[str], negative: list[str], *,
               clear: bool = False) -> tuple[list[str], list[str]]:
        """The session's likes and dislikes after adding these (a later label of one id replaces its earlier)."""
        if session is None:
            return list(dict.fromkeys(positive)), list(dict.fromkeys(negative))
        with self._lock:
            pos, neg = ([], []) if clear else self._store.get(session, ([], []))
            pos = [p for p in pos if p not in negative] + [p for p in positive if p not in pos]
            neg = [n for n in neg if n not in positive] + [n for n in negative if n not in neg]
            self._store[session] = (pos, neg)
            self._store.move_to_end(session)
            while len(self._store) > self.LIMIT:
                self._store.popitem(last=False)
            return list(pos), list(neg)


def _digits(value: object) -> object:
    """A path id exactly as a whole number (digits, a leading minus allowed): ``/frames/%201`` or ``/frames/+1``
    is refused, not read as 1."""
    body = value[1:] if isinstance(value, str) and value.startswith("-") else value
    if isinstance(body, str) and not (body.isascii() and body.isdigit() and len(body) <= 18):
        raise ValueError(f"expected a whole number written with the digits 0-9 only, got {value!r}")
    return value


GID = Annotated[int, BeforeValidator(_digits), PathParam(description="global frame id")]
TRACK = Annotated[int, BeforeValidator(_digits), PathParam(description="the object's track id in its video")]


# -- the application ---------------------------------------------------------------------------------

def create_app(service: SearchService, *, token: str | None = None) -> FastAPI:
    """The API over ``service``; with ``token``, every request must carry ``Authorization: Bearer <token>``."""
    app = FastAPI(
        title="mvk search API",
        version="1",
        description="Text-to-video search over an mvk index of underwater video (Marine Video Kit): ranked "
                    "frames for a text or an example image, 'A then B within S seconds' in one video, frame "
                    "thumbnails with their object masks and boxes, videos for playback, index information. "
                    "Errors are JSON {status, error, message}. With a token configured, every request needs "
                    "the header `Authorization: Bearer <token>`.",
    )
    expected = f"Bearer {token}".encode() if token else None
    sessions = FeedbackSessions()
    app.add_middleware(BodyLimit, max_bytes=MAX_REQUEST_BYTES, allowed=MAX_IMAGE_BYTES, what="an uploaded image")

    def version_guard(version: Annotated[str | None, Query(
            description="the index_version the id came from: 409 when the index has changed since")] = None) -> None:
        check_version(version, service.opened()[1])

    versioned = [Depends(version_guard)]

    @app.middleware("http")
    async def require_token(request: Request, call_next):
        if expected is not None:
            given = request.headers.get("authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                return _error(401, "unauthorized",
                              "this server needs the header 'Authorization: Bearer <token>' (the token of mvk "
                              "serve --token or MVK_API_TOKEN)" if not given else "wrong bearer token",
                              headers={"WWW-Authenticate": "Bearer"})
        return await call_next(request)

    @app.exception_handler(MvkError)
    async def mvk_error(request: Request, exc: MvkError):
        status, kind = _status_of(exc)
        return _error(status, kind, api_names(str(exc)), shard=getattr(exc, "site", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        return _error(422, "invalid request", _validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        kind = {404: "not found", 405: "method not allowed"}.get(exc.status_code, "error")
        message = f"no route {request.method} {request.url.path}" if exc.status_code in (404, 405) else str(exc.detail)
        return _error(exc.status_code, kind, message)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return _error(500, "internal error", f"{type(exc).__name__} while answering {request.url.path} "
                                             f"(details in the server log)")

    @app.get("/health", response_model=HealthResponse, responses=ERRORS, tags=["index"],
             summary="Whether the server is up and its index readable")
    def health() -> HealthResponse:
        index, version = service.opened()
        return HealthResponse(status="degraded" if index.errors else "ok", frames=len(index.frames),
                              sites=len(index.shards), skipped_shards=dict(index.errors), index_version=version)

    @app.get("/info", response_model=InfoResponse, responses=ERRORS, tags=["index"],
             summary="Sites, counts, models and skipped shards of the index")
    def info() -> InfoResponse:
        return InfoResponse(**service.info())

    @app.get("/search", response_model=SearchResponse, responses=ERRORS, tags=["search"],
             summary="Ranked frames for a text query")
    def search_text(q: Annotated[str, Query(description="what to look for", max_length=2000)] = "",
                    k: K = 20, offset: OFFSET = 0, fusion: FUSION = "max", weight: WEIGHT = 0.5,
                    filters: FILTERS = Filters(), group_by: GROUP = None,
                    exact: Annotated[bool, Query(description="score every frame exactly")] = False,
                    cells: CELLS = "", nprobe: NPROBE = None, ef_search: EF_SEARCH = None,
                    space_fusion: SPACE_FUSION = "rrf") -> SearchResponse:
        page = service.search(q, k=k, offset=offset, fusion=fusion, weight=weight, filters=filters,
                              group_by=group_by, exact=True if exact else None,
                              params=SearchParams(nprobe=nprobe, ef_search=ef_search),
                              cells=parse_cells(cells) if cells.strip() else (), space_fusion=space_fusion)
        return SearchResponse(query=q, kind="text", results=_frame_results(page), **_page_info(page, k))

    @app.post("/search/image", response_model=SearchResponse, responses=ERRORS, tags=["search"],
              summary="Ranked frames like an uploaded example image")
    def search_image(image: Annotated[UploadFile, File(description="PNG/JPEG/WebP, at most 20 MiB")],
                     k: K = 20, offset: OFFSET = 0, fusion: FUSION = "max", weight: WEIGHT = 0.5,
                     filters: FILTERS = Filters(), group_by: GROUP = None,
                     space_fusion: SPACE_FUSION = "rrf") -> SearchResponse:
        name = image.filename or "upload"
        pixels = read_uploaded_image(image.file.read(MAX_IMAGE_BYTES + 1), name)   # bounded read
        page = service.search(pixels, k=k, offset=offset, fusion=fusion, weight=weight, filters=filters,
                              group_by=group_by, label=name, space_fusion=space_fusion)
        return SearchResponse(query=name, kind="image", results=_frame_results(page), **_page_info(page, k))

    @app.get("/search/temporal", response_model=TemporalResponse, responses=ERRORS, tags=["search"],
             summary="Pairs of frames: 'first' then 'then' within some seconds in the same video")
    def search_temporal(first: Annotated[str, Query(description="what happens first", max_length=2000)] = "",
                        then: Annotated[list[str], Query(description="what happens next (repeatable: the steps "
                                                                     "after the first, in order)")] = [],
                        within: Annotated[float, Query(gt=0, le=86400, description="seconds allowed between")] = 10.0,
                        k: K = 20, offset: OFFSET = 0, fusion: FUSION = "max", weight: WEIGHT = 0.5,
                        filters: FILTERS = Filters(), group_by: GROUP = None,
                        space_fusion: SPACE_FUSION = "rrf") -> TemporalResponse:
        if any(len(t) > 2000 for t in then):
            raise QueryError("then: a text may have at most 2000 characters")
        steps = then or [""]
        page = service.temporal(first, steps, within=within, k=k, offset=offset, fusion=fusion, weight=weight,
                                filters=filters, group_by=group_by, space_fusion=space_fusion)
        return TemporalResponse(first=first, then=steps[0] if len(steps) == 1 else steps, within=within,
                                results=_pair_results(page), **_page_info(page, k))

    @app.get("/search/like", response_model=SearchResponse, responses=ERRORS, tags=["search"],
             summary="More like this: frames like a result (its frame, or one of its objects)")
    def search_like(id: Annotated[str, Query(max_length=600, description="SITE/VIDEO_ID/FRAME_INDEX, or "
                                                                         ".../TRACK_ID for one of its objects")],
                    whole_track: Annotated[bool, Query(description="the object's whole track in its video")] = False,
                    k: K = 20, offset: OFFSET = 0, fusion: FUSION = "max", weight: WEIGHT = 0.5,
                    filters: FILTERS = Filters(), group_by: GROUP = None, cells: CELLS = "",
                    space_fusion: SPACE_FUSION = "rrf") -> SearchResponse:
        query = LikeQuery(ItemRef.parse(id), whole_track=whole_track)
        page = service.run(query, Options(k=k, offset=offset, fusion=fusion, weight=weight, filters=filters,
                                          group_by=group_by, space_fusion=space_fusion).with_cells(cells),
                           source="api")
        return SearchResponse(query=id, kind="like", results=_frame_results(page), **_page_info(page, k))

    @app.post("/search/feedback", response_model=FeedbackResponse, responses=ERRORS, tags=["search"],
              summary="Relevance feedback: re-rank by liked and disliked results (kept per session id)")
    def search_feedback(body: FeedbackRequest) -> FeedbackResponse:
        positive, negative = sessions.update(body.session, body.positive, body.negative, clear=body.clear)
        if body.q is not None and body.like is not None:
            raise QueryError("give the base query once: q or like")
        base = TextQuery(body.q) if body.q else LikeQuery(ItemRef.parse(body.like)) if body.like else None
        query = FeedbackQuery(base, tuple(ItemRef.parse(r) for r in positive),
                              tuple(ItemRef.parse(r) for r in negative), body.method, display=body.display or body.k)
        filters = Filters(sites=tuple(body.site), places=tuple(body.place), date_from=body.date_from,
                          date_to=body.date_to)
        page = service.run(query, Options(k=body.k, offset=body.offset, fusion=body.fusion, weight=body.weight,
                                          filters=filters, group_by=body.group_by,
                                          space_fusion=body.space_fusion), source="api")
        return FeedbackResponse(query=body.q or body.like or "", kind="feedback", results=_frame_results(page),
                                session=body.session, positive=positive, negative=negative, method=body.method,
                                **_page_info(page, body.k))

    @app.get("/frames/{gid}/heatmap.png", response_class=Response, tags=["frames"], dependencies=versioned,
             responses={200: {"content": {"image/png": {}}, "description": "the thumbnail with the text's "
                              "similarity to each part drawn over it; header X-Peak: row,column"}, **ERRORS},
             summary="Where in a frame a text matches")
    def heatmap(gid: GID, q: Annotated[str, Query(max_length=2000, description="the text")] = "") -> Response:
        png, peak = service.heatmap(gid, q)
        return Response(png, media_type="image/png", headers={"X-Peak": f"{peak[0]},{peak[1]}"})

    @app.get("/frames/{gid}", response_model=FrameInfo, responses=ERRORS, tags=["frames"],
             dependencies=versioned,
             summary="One frame with its objects (boxes, masks, track ids)")
    def frame(gid: GID) -> FrameInfo:
        f = service.frame(gid)
        objects = [ObjectInfo(track_id=int(o["track_id"]), level=int(o["level"]),
                              box=[int(o[c]) for c in ("x0", "y0", "x1", "y1")], area=float(o["area"]),
                              is_background=bool(o["is_background"]), mask_rle=str(o["mask_rle"]),
                              mask_url=f"/frames/{gid}/objects/{int(o['track_id'])}/mask.png")
                   for o in service.objects(gid).to_dict("records")]
        return FrameInfo(gid=gid, site=str(f["site"]), video_id=str(f["video_id"]), video_path=str(f["video_path"]),
                         frame_index=int(f["frame_index"]), time=float(f["time"]), width=int(f["width"]),
                         height=int(f["height"]), place=str(f["place"]), date=str(f["date"]),
                         thumbnail_url=f"/frames/{gid}/thumbnail", video_url=_video_url(f["site"], f["video_id"],
                                                                                         f["time"]),
                         objects=objects, index_version=service.opened()[1])

    @app.get("/frames/{gid}/thumbnail", response_class=Response, tags=["frames"], dependencies=versioned,
             responses={200: {"content": {"image/jpeg": {}}, "description": "JPEG thumbnail"}, **ERRORS},
             summary="The frame's thumbnail, optionally with an object's mask or box drawn over it")
    def thumbnail(gid: GID,
                  overlay: Annotated[Literal["none", "mask", "box"], Query(description="draw an object")] = "none",
                  track_id: Annotated[int | None, Query(description="which object (default: the largest)")] = None,
                  ) -> Response:
        return Response(service.thumbnail(gid, overlay=overlay, track_id=track_id), media_type="image/jpeg")

    @app.get("/frames/{gid}/objects/{track_id}/mask.png", response_class=Response, tags=["frames"],
             dependencies=versioned,
             responses={200: {"content": {"image/png": {}}, "description": "mask, white = object"}, **ERRORS},
             summary="An object's mask at the frame's source size")
    def mask(gid: GID, track_id: TRACK) -> Response:
        return Response(service.mask_png(gid, track_id), media_type="image/png")

    @app.get("/videos/{site}/{video_id}", response_class=FileResponse, tags=["videos"],
             responses={200: {"content": {"video/mp4": {}}, "description": "the video file (Range requests "
                                                                            "honoured)"}, **ERRORS},
             summary="A video of the collection for playback (seek with a #t=start,end media fragment)")
    def video(site: str, video_id: str) -> FileResponse:
        path = service.video_file(site, video_id)
        media = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return FileResponse(path, media_type=media, filename=path.name, content_disposition_type="inline")

    @app.get("/videos/{site}/{video_id}/segment", response_class=FileResponse, tags=["videos"],
             responses={200: {"content": {"video/mp4": {}}, "description": "a browser-playable file; header "
                              "X-Segment-Start: the source time of its time 0"}, **ERRORS},
             summary="Seconds start..end of a video as a file every browser plays (H.264, converted when needed)")
    def segment(site: str, video_id: str,
                start: Annotated[float, Query(ge=0, description="seconds into the video")],
                end: Annotated[float, Query(gt=0, description="seconds into the video (at most start + 120)")],
                ) -> FileResponse:
        playable = service.video_segment(site, video_id, start, end)
        headers = {"X-Segment-Start": f"{playable.zero:.3f}", "X-Transcoded": str(playable.transcoded).lower()}
        return FileResponse(playable.path, media_type=playable.mime, headers=headers,
                            content_disposition_type="inline")

    def _survey(request: SurveyRequest):
        return service.survey_report(request.query(), key=request, threshold=request.threshold,
                                     target_precision=request.target_precision, filters=request.filters,
                                     space=request.space or None)

    @app.get("/survey", response_model=SurveyResponse, responses=ERRORS, tags=["survey"],
             summary="Survey evidence for a query: presence and MaxN per video, per-site and per-month tables")
    def survey(request: SURVEY) -> SurveyResponse:
        report = _survey(request)
        result, summary = report.result, report.result.summary()
        tail = request.url_query()
        return SurveyResponse(**summary, presence=_records(result.presence), sites=_records(result.sites),
                              months=_records(result.months), index_version=report.version,
                              plots={name: f"/survey/{name}.png?{tail}" for name in report.plots},
                              downloads={name: f"/survey/{name}.csv?{tail}" for name in result.tables()})

    @app.get("/survey/{name}.csv", response_class=Response, tags=["survey"],
             responses={200: {"content": {"text/csv": {}}, "description": "the table as CSV"}, **ERRORS},
             summary="A survey table as CSV: presence, occurrences (Darwin Core), sites or months")
    def survey_csv(name: Literal["presence", "occurrences", "sites", "months"], request: SURVEY) -> Response:
        return Response(_survey(request).csv(name), media_type="text/csv",
                        headers={"Content-Disposition": f'attachment; filename="{name}.csv"'})

    @app.get("/survey/{name}.png", response_class=Response, tags=["survey"],
             responses={200: {"content": {"image/png": {}}, "description": "the plot"}, **ERRORS},
             summary="A survey plot: the presence timeline, the bars per site, or the map of sites")
    def survey_png(name: Literal["timeline", "sites", "map"], request: SURVEY) -> Response:
        return Response(_survey(request).plots[name], media_type="image/png")

    @app.post("/frames/{gid}/track", response_model=TrackResponse, responses={
        200: {"content": {"application/json": {}, "application/zip": {}},
              "description": "the track (format=zip: PNG label maps and track.json in a zip)"}, **ERRORS},
              tags=["frames"], summary="Follow an object from this frame through its video (mask, box, point)")
    def track(gid: int,
              mask: Annotated[UploadFile | None, File(description="the object's mask as a PNG (white or label "
                                                                  "ids = the object), at the frame's size")] = None,
              box: Annotated[str, Query(max_length=100, description="x0,y0,x1,y1 in frame pixels")] = "",
              point: Annotated[str, Query(max_length=60, description="x,y in frame pixels: the segment under it")] = "",
              track_id: Annotated[int | None, Query(description="follow this stored object of the frame")] = None,
              before: Annotated[int, Query(ge=0, le=200, description="indexed frames before this one")] = 20,
              after: Annotated[int, Query(ge=0, le=200, description="indexed frames after this one")] = 20,
              format: Annotated[Literal["json", "zip"], Query(description="json, or a zip of PNGs")] = "json"):
        given = [name for name, on in (("mask", mask is not None), ("box", bool(box.strip())),
                                       ("point", bool(point.strip()))) if on]
        if len(given) > 1:
            raise QueryError(f"give one seed: got {' and '.join(given)}")
        seed = None
        if mask is not None:
            seed = mask.file.read(MAX_IMAGE_BYTES + 1)
            if len(seed) > MAX_IMAGE_BYTES:
                raise QueryError(f"the mask upload is larger than {MAX_IMAGE_BYTES // 2**20} MiB")
            if not seed:
                raise QueryError("the mask upload is empty")
        elif box.strip() or point.strip():
            name, text, n = ("box", box, 4) if box.strip() else ("point", point, 2)
            try:
                seed = tuple(float(v) for v in text.split(","))
            except ValueError:
                seed = ()
            if len(seed) != n or not all(np.isfinite(seed)):
                raise QueryError(f"{name} {text!r}: expected {n} numbers separated by commas")
        followed = service.track(gid, seed, track_id=track_id, before=before, after=after)
        from indexer.tracks import track_to_coco
        t = followed.track
        if format == "zip":
            import io
            import json
            import zipfile

            from PIL import Image

            from indexer.tracks import palette
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
                for f in t.frames:
                    img = Image.fromarray(t.labels(f.index), mode="P")
                    img.putpalette(palette())
                    png = io.BytesIO()
                    img.save(png, "PNG")
                    zf.writestr(f"{f.index:05d}.png", png.getvalue())
                zf.writestr("track.json", json.dumps(track_to_coco(t)))
            return Response(buf.getvalue(), media_type="application/zip",
                            headers={"Content-Disposition": f'attachment; filename="track-{gid}.zip"'})
        frames = [TrackFrameInfo(frame_index=f.index, time=f.time, gid=followed.gids.get(f.index),
                                 objects=[TrackObject(id=oid, rle=o["rle"], bbox=o["bbox"], area=o["area"])
                                          for oid, o in sorted(f.objects.items())]) for f in t.frames]
        return TrackResponse(gid=gid, site=followed.site, video_id=followed.video_id, seed_frame=t.seed_frame,
                             size=list(t.size), object_ids=list(t.object_ids), frames=frames, coco=track_to_coco(t),
                             propagation=t.identity, notes=list(t.notes),
                             zip_url=f"/frames/{gid}/track?format=zip")

    return app

"""The query service: every query of every front end (``mvk search``, the Streamlit pages, ``mvk serve``) runs
here, once. It holds one opened index (reopened by itself when a shard is swapped), one encoder (chosen by the
one rule of ``search.identity``), validates and pages, resolves stable result ids, and logs each query.

A query is a value of ``search.queries`` (text, image, sequence, more-like-this, feedback); ``run`` dispatches
on its type to one handler. Front ends only build these values and show ``Page``s.

The index reopens by itself when a shard is swapped: each call compares a fingerprint of the index folder (a few
``stat`` calls: the root manifest and each site's version pointer) with the one it was opened under; callers that
still hold the old ``Index`` keep using it.
"""
from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from search import queries as Qs
from search.cpus import usable_cores
from search.errors import IndexFormatError, QueryError, SpaceMissingError
from search.identity import EncoderChoice
from search.query import Filters
from search.threads import threads

MAX_RESULTS = 1000      # offset + k of one request: a page beyond this is refused (rank deeper with filters)
FUSION_DEPTH = 1000     # results of each embedding space fused into one ranking (TREC's customary depth)
MAX_TEXT = 10_000       # characters of one query text (longer texts are truncated to the model's context, with a note)
HEATMAP_CACHE = 64      # frames whose dense features stay cached for heatmaps


class NotFoundError(QueryError):
    """A site, place, frame, object or video that the index does not have."""


class BrokenShardError(IndexFormatError):
    """A request names a site whose shard is in the index but could not be read."""

    def __init__(self, site: str, why: str) -> None:
        self.site = site
        super().__init__(f"the shard of site {site!r} could not be read: {why}")


class QueryLog(Protocol):
    """Where the service records each query (``mvk_tools.eventlog.EventLog`` in the app and the API)."""

    def query(self, *, source: str, kind: str, filters=None, results=None, **fields) -> Any: ...


class NullLog:
    """No event log (the CLI's default)."""

    def query(self, **fields) -> bool:
        return False


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
    query: str = ""                    # the query in words


@dataclass
class QueryService:
    """Queries over one index folder: one opened index, one encoder, one paging limit, one validation, one log."""
    root: Path
    device: str = "cpu"
    choice: EncoderChoice = field(default_factory=EncoderChoice)
    encoder: object | None = None             # search.encoder.Encoder; loaded by the identity rule on first use
    log: QueryLog = field(default_factory=NullLog)
    threads: int | None = None                # intra-op threads per query (``search.threads``; None: the policy's)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _opened: tuple | None = field(default=None, repr=False)
    _dense: OrderedDict = field(default_factory=OrderedDict, repr=False)
    _text_encoder: Any = field(default=None, repr=False)
    space: str | None = None                  # the embedding space this service encodes for (None: the first)
    _spaces: dict = field(default_factory=dict, repr=False)    # further space name -> its QueryService

    def __post_init__(self) -> None:
        self.root = Path(self.root).expanduser().resolve()

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
        """The shared encoder, loaded once by the identity rule (``search.identity.encoder_for_index``)."""
        if self.encoder is None:
            from search.identity import encoder_for_index
            from search.spaces import find

            with self._lock:
                if self.encoder is None:
                    manifest = self._opened[1].manifest if self._opened else _read_manifest(self.root)
                    identity = dict((find(manifest, self.space).encoder if self.space else manifest.get("encoder"))
                                    or {})
                    self.encoder = encoder_for_index(identity, self.choice, device=self.device, where=self.root)
        return self.encoder

    def in_space(self, index, name: str) -> tuple["QueryService", object]:
        """The service that answers in the embedding space ``name`` (this one for the index's first space; for a
        further space one that loads that space's encoder by the identity rule when a query first needs it: a
        more-like-this query needs none) and the index's view in that space. The encoder choice (model,
        checkpoint) is the first space's; random weights apply to all."""
        view = index.in_space(name)
        if view is index:
            return self, index
        with self._lock:
            child = self._spaces.get(name)
            if child is None:
                child = QueryService(self.root, self.device, EncoderChoice(random_weights=self.choice.random_weights),
                                     threads=self.threads, space=name)
                self._spaces[name] = child
        return child, view

    # -- validation ---------------------------------------------------------------------------------

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
    def window(k: int, offset: int) -> int:
        """How many rows to rank for the page ``offset .. offset+k-1`` (one more, to know whether another page
        follows); QueryError beyond ``MAX_RESULTS``."""
        if k < 1:
            raise QueryError(f"k must be at least 1, got {k}")
        if offset < 0:
            raise QueryError(f"offset must be 0 or more, got {offset}")
        if offset + k > MAX_RESULTS:
            raise QueryError(f"offset + k is {offset + k}; at most {MAX_RESULTS} results can be paged through "
                             f"(narrow the query with filters)")
        return offset + k + 1

    @staticmethod
    def check_text(text: str, what: str = "the query text") -> str:
        """The text with its white space folded; QueryError when empty or longer than ``MAX_TEXT``."""
        folded = " ".join(str(text).split())
        if not folded:
            raise QueryError(f"{what} is empty")
        if len(folded) > MAX_TEXT:
            raise QueryError(f"{what} has {len(folded):,} characters; at most {MAX_TEXT:,} are accepted")
        return folded

    # -- running queries ------------------------------------------------------------------------------

    def run(self, query: "Qs.Query", options: "Qs.Options" = Qs.Options(), *, source: str = "api") -> Page:
        """The page ``options.offset .. offset+k-1`` of ``query``'s ranked results, logged as one query event."""
        handler = _HANDLERS.get(type(query))
        if handler is None:
            raise QueryError(f"unknown query type {type(query).__name__}")
        want = self.window(options.k, options.offset)
        started = time.perf_counter()
        index, version = self.opened()
        self.check_filters(index, options.filters)
        with threads("query", self.threads):
            found, fields = self._in_spaces(handler, index, query, replace(options, k=want))
        rows = found.iloc[options.offset:options.offset + options.k].reset_index(drop=True)
        page = Page(rows=rows, offset=options.offset, has_more=len(found) > options.offset + options.k,
                    notes=list(found.attrs.get("notes", [])), skipped_shards=dict(index.errors), version=version,
                    took_ms=1000 * (time.perf_counter() - started), query=Qs.describe(query))
        self.log.query(source=source, filters=options.filters, fusion=options.fusion, weight=options.weight,
                       k=options.k, offset=options.offset, results=page.rows, took_ms=page.took_ms,
                       version=version, cells=list(options.cells) or None, **fields)
        return page

    def _in_spaces(self, handler, index, query, options: "Qs.Options") -> tuple[pd.DataFrame, dict]:
        """Run ``handler`` in the space ``options.space_fusion`` names, or in every space of the index and fuse
        their rankings (each space's first ``FUSION_DEPTH`` results, ``search.spacefusion``)."""
        from search.spacefusion import fuse_ranked
        from search.spaces import check_fusion

        names = check_fusion(index.manifest, options.space_fusion)
        if len(names) == 1:
            service, view = self.in_space(index, names[0])
            found, fields = handler(service, view, query, options)
            if len(index.spaces()) > 1:
                fields["space"] = names[0]
            return found, fields
        deep = replace(options, k=max(options.k, FUSION_DEPTH), group_by=None)     # grouped after fusion

        def one(name: str) -> tuple[pd.DataFrame, dict] | SpaceMissingError:
            service, view = self.in_space(index, name)
            try:
                return handler(service, view, query, deep)
            except SpaceMissingError as exc:     # a result of a shard the space is being added to: the others
                return exc

        workers = min(len(names), usable_cores())
        if workers > 1:          # side by side: the scans release the GIL, so fused costs the slowest space
            from concurrent.futures import ThreadPoolExecutor
            with ThreadPoolExecutor(workers, thread_name_prefix="space") as pool:
                answers = list(pool.map(one, names))
        else:
            answers = [one(name) for name in names]
        missing = [(name, a) for name, a in zip(names, answers) if isinstance(a, SpaceMissingError)]
        if len(missing) == len(names):
            raise missing[0][1]
        names = [name for name, a in zip(names, answers) if not isinstance(a, SpaceMissingError)]
        lists, notes, fields = [], [f"space {name} left out: {exc}" for name, exc in missing], {}
        for found, fields in (a for a in answers if not isinstance(a, SpaceMissingError)):
            lists.append(found)
            notes += [n for n in found.attrs.get("notes", []) if n not in notes and not n.startswith("score:")]
        key = "gid" if "gid" in lists[0].columns else "first_gid"
        fused = fuse_ranked(lists, names, options.space_fusion, key=key)
        if options.group_by == "video":
            fused = fused.drop_duplicates(["site", "video_id"]).assign(rank=lambda d: np.arange(1, len(d) + 1))
        fused = fused.head(options.k).reset_index(drop=True)
        how = ("reciprocal-rank fusion: score = sum of 1/(60 + rank)" if options.space_fusion == "rrf" else
               "the mean of z-normalised scores")
        spaces = f"{len(names)} embedding space{'s' if len(names) != 1 else ''} ({', '.join(names)})"
        fused.attrs["notes"] = [*notes, f"fused the rankings of {spaces} by {how}; each result carries its rank in "
                                        f"each space"]
        return fused, {**fields, "spaces": names, "space_fusion": options.space_fusion}

    def text_encoder(self):
        """The shared encoder with its text vectors cached in the index folder (``search.textcache``)."""
        from search.textcache import CachingEncoder, TextVectorCache
        encoder = self.get_encoder()
        if self._text_encoder is None or self._text_encoder.encoder is not encoder:
            self._text_encoder = CachingEncoder(encoder, TextVectorCache(self.root, encoder.identity()))
        return self._text_encoder

    def _search(self, index, query, options: "Qs.Options") -> pd.DataFrame:
        from search.query import search
        encoder = None
        if isinstance(query, str):
            encoder = self.text_encoder()
        elif not isinstance(query, np.ndarray) or query.ndim != 1:
            encoder = self.get_encoder()
        return search(index, encoder,
                      query, k=options.k, fusion=options.fusion, weight=options.weight, filters=options.filters,
                      group_by=options.group_by, exact=options.exact, params=options.params, cells=options.cells)

    def _text(self, index, query: "Qs.TextQuery", options) -> tuple[pd.DataFrame, dict]:
        text = self.check_text(query.text)
        return self._search(index, text, options), {"kind": "text", "text": text}

    def _image(self, index, query: "Qs.ImageQuery", options) -> tuple[pd.DataFrame, dict]:
        return self._search(index, query.image, options), {"kind": "image", "image": query.label}

    def _sequence(self, index, query: "Qs.SequenceQuery", options) -> tuple[pd.DataFrame, dict]:
        from search.query import sequence_search
        if len(query.steps) < 2:
            raise QueryError("a temporal query needs at least two steps")
        steps: list = []
        for number, step in enumerate(query.steps, 1):
            if isinstance(step, Qs.TextQuery):
                what = "the query text" if number == 1 else ("the then query text" if number == 2 and
                                                             len(query.steps) == 2 else f"the text of step {number}")
                steps.append(self.check_text(step.text, what))
            else:
                steps.append(step.image)
        found = sequence_search(index, self.text_encoder(), steps, within=query.within, k=options.k,
                                fusion=options.fusion, weight=options.weight, filters=options.filters,
                                group_by=options.group_by)
        texts = [s if isinstance(s, str) else None for s in steps]
        return found, {"kind": "temporal", "text": texts[0], "then": texts[-1] if len(texts) == 2 else texts[1:],
                       "within": query.within}

    def _like(self, index, query: "Qs.LikeQuery", options) -> tuple[pd.DataFrame, dict]:
        vector = self.stored_vector(index, query.ref, whole_track=query.whole_track)
        found = self._search(index, vector, options)
        return found, {"kind": "like", "like": str(query.ref), "whole_track": query.whole_track}

    def _feedback(self, index, query: "Qs.FeedbackQuery", options) -> tuple[pd.DataFrame, dict]:
        from search import feedback as fb
        from search.scoring import score_frames_batch

        if not query.positives and not query.negatives:
            raise QueryError("feedback needs at least one liked or disliked result")
        if query.method not in Qs.FEEDBACK_METHODS:
            raise QueryError(f"unknown feedback method {query.method!r}; choose one of "
                             f"{', '.join(Qs.FEEDBACK_METHODS)}")
        clash = set(query.positives) & set(query.negatives)
        if clash:
            raise QueryError(f"{sorted(map(str, clash))[0]} is both liked and disliked")
        base_vec = self.query_vector(index, query.base) if query.base is not None else None
        pos = np.stack([self.stored_vector(index, r) for r in query.positives]) if query.positives else \
            np.zeros((0, 1), np.float32)
        neg = np.stack([self.stored_vector(index, r) for r in query.negatives]) if query.negatives else \
            np.zeros((0, 1), np.float32)
        fields = {"kind": "feedback", "method": query.method, "positives": [str(r) for r in query.positives],
                  "negatives": [str(r) for r in query.negatives],
                  "base": Qs.describe(query.base) if query.base is not None else None}
        if query.method == "rocchio" or base_vec is None and not len(pos):
            return self._search(index, fb.rocchio(base_vec, pos, neg), options), fields
        # Bayes: the displayed results are the base ranking's first page (or the likes' own neighbours)
        start = base_vec if base_vec is not None else fb.rocchio(None, pos, neg)
        if query.display < 1:
            raise QueryError(f"display must be at least 1 result, got {query.display}")
        shown = self._search(index, start, replace(options, k=query.display, cells=()))
        labelled = {self.resolve(index, r)[0] for r in (*query.positives, *query.negatives)}
        others_gid = [g for g in shown["gid"].astype(int) if g not in labelled][:fb.MAX_OTHERS]
        others = self.frame_vectors(index, np.asarray(others_gid, np.int64)).reshape(-1, start.size)
        examples = np.concatenate([a for a in (pos, neg, others) if len(a)])
        sims = score_frames_batch(index, examples, fusions=[options.fusion], weight=options.weight)[options.fusion]
        prior = score_frames_batch(index, start, fusions=[options.fusion], weight=options.weight)[options.fusion][0] \
            if base_vec is not None else None
        logp = fb.bayes_log_scores(prior, sims[:len(pos)], sims[len(pos) + len(neg):], sims[len(pos):len(pos) + len(neg)])
        ranked = self._search(index, start, replace(options, k=len(index.frames), exact=True, group_by=None))
        ranked = ranked.assign(score=logp[ranked["gid"].to_numpy(np.int64)].astype(np.float32))
        ranked = ranked[np.isfinite(ranked["score"].to_numpy())]
        ranked = ranked.sort_values(["score", "gid"], ascending=[False, True], kind="stable")
        if options.group_by == "video":
            ranked = ranked.drop_duplicates(["site", "video_id"])
        out = ranked.head(options.k).reset_index(drop=True).assign(rank=lambda d: np.arange(1, len(d) + 1))
        out.attrs["notes"] = [*shown.attrs.get("notes", []),
                              "score: log relevance after SOMHunter's Bayesian update (higher is better)"]
        return out, fields

    def query_vector(self, index, query: "Qs.Query") -> np.ndarray:
        """The normalised vector of a text, image or like query (for feedback's base)."""
        from search.query import encode_query
        if isinstance(query, Qs.TextQuery):
            return encode_query(index, self.get_encoder(), self.check_text(query.text))[0]
        if isinstance(query, Qs.ImageQuery):
            return encode_query(index, self.get_encoder(), query.image)[0]
        if isinstance(query, Qs.LikeQuery):
            return self.stored_vector(index, query.ref, whole_track=query.whole_track)
        raise QueryError(f"a {type(query).__name__} cannot be the base of feedback")

    # -- survey ------------------------------------------------------------------------------------------

    def survey(self, query: "Qs.Query", *, threshold: float | None = None, labels: pd.DataFrame | None = None,
               target_precision: float = 0.9, filters: Filters = Filters(), coordinates: pd.DataFrame | None = None,
               source: str = "api", space: str | None = None):
        """Survey evidence for a text, image or more-like-this query (``search.survey.survey``: presence, MaxN,
        occurrences, per-site and per-month tables), scored as ``mvk survey`` scores. A ``FeedbackQuery`` surveys
        its base query (or, with none, the Rocchio vector of its likes) and its likes and dislikes become
        calibration labels, added to ``labels``. ``space``: the embedding space scored (default the index's
        first; a threshold needs one space's similarities, fused ranks have none). Logged as one query event."""
        from search import survey as S
        from search.identity import describe

        started = time.perf_counter()
        index, version = self.opened()
        self.check_filters(index, filters)
        notes: list[str] = []
        every = index.spaces()
        service, index = self.in_space(index, space or every[0])
        if len(every) > 1:
            notes.append(f"surveyed in the embedding space {index.space} (of {', '.join(every)}; a survey scores "
                         f"one space)")
        if isinstance(query, Qs.FeedbackQuery):
            if not query.positives and not query.negatives:
                raise QueryError("feedback needs at least one liked or disliked result")
            for ref in (*query.positives, *query.negatives):
                service.resolve(index, ref)
            refs = S.labels_of_refs(query.positives, query.negatives)
            labels = refs if labels is None else pd.concat([labels, refs], ignore_index=True)
            if query.base is None:
                from search import feedback as fb
                pos = np.stack([service.stored_vector(index, r) for r in query.positives]) if query.positives else None
                if pos is None:
                    raise QueryError("a survey from feedback alone needs at least one liked result (or a base query)")
                neg = np.stack([service.stored_vector(index, r) for r in query.negatives]) if query.negatives else \
                    np.zeros((0, pos.shape[1]), np.float32)
                vector, described = fb.rocchio(None, pos, neg), Qs.describe(query)
            else:
                vector, described = service._survey_vector(index, query.base, notes), Qs.describe(query.base)
        elif isinstance(query, (Qs.TextQuery, Qs.ImageQuery, Qs.LikeQuery)):
            vector, described = service._survey_vector(index, query, notes), Qs.describe(query)
        else:
            raise QueryError(f"a {type(query).__name__} cannot be surveyed (survey a text, an image, a result "
                             f"or feedback)")
        identity = service.encoder.identity() if service.encoder is not None else (index.encoder or {})
        result = S.survey(index, vector, query=described.strip("“”"), model=describe(dict(identity)),
                          filters=filters, threshold=threshold, labels=labels, target_precision=target_precision,
                          coordinates=coordinates, notes=notes)
        self.log.query(source=source, kind="survey", query=described, filters=filters, threshold=result.threshold,
                       space=index.space if len(every) > 1 else None,
                       calibrated=bool(result.calibration.calibrated), version=version,
                       took_ms=1000 * (time.perf_counter() - started))
        return result

    def _survey_vector(self, index, query: "Qs.Query", notes: list[str]) -> np.ndarray:
        """The normalised vector of a text, image or like query, with the encoder's notes."""
        from search.query import encode_query
        if isinstance(query, Qs.TextQuery):
            vector, more = encode_query(index, self.get_encoder(), self.check_text(query.text))
        elif isinstance(query, Qs.ImageQuery):
            vector, more = encode_query(index, self.get_encoder(), query.image)
        elif isinstance(query, Qs.LikeQuery):
            return self.stored_vector(index, query.ref, whole_track=query.whole_track)
        else:
            raise QueryError(f"a {type(query).__name__} cannot be surveyed")
        notes.extend(more)
        return vector

    # -- stable result ids --------------------------------------------------------------------------

    def resolve(self, index, ref: "Qs.ItemRef") -> tuple[int, int | None]:
        """(global frame row, global object row or None) of a result id; NotFoundError naming what is missing."""
        if ref.site in index.errors:
            raise BrokenShardError(ref.site, index.errors[ref.site])
        if ref.site not in index.shards:
            raise NotFoundError(f"{ref}: no site {ref.site!r} in this index (it has: "
                                f"{', '.join(index.shards) or 'no sites'})")
        shard = index.shards[ref.site]
        f = shard.frames
        hit = np.flatnonzero((f["video_id"].astype(str).to_numpy() == ref.video_id)
                             & (f["frame_index"].to_numpy(np.int64) == ref.frame_index))
        if hit.size == 0:
            videos = f["video_id"].astype(str)
            if not (videos == ref.video_id).any():
                raise NotFoundError(f"{ref}: site {ref.site} has no video {ref.video_id!r}")
            near = f.loc[videos == ref.video_id, "frame_index"].astype(int).to_numpy()
            raise NotFoundError(f"{ref}: video {ref.video_id} has no indexed frame {ref.frame_index} (indexed "
                                f"frames {near.min()}..{near.max()}, e.g. {', '.join(map(str, near[:5]))})")
        gid = int(hit[0]) + index.frame_offset(ref.site)
        if ref.track_id is None:
            return gid, None
        objs = index.objects
        rows = np.flatnonzero((objs["frame_gid"].to_numpy(np.int64) == gid)
                              & (objs["track_id"].to_numpy(np.int64) == ref.track_id))
        if rows.size == 0:
            have = objs.loc[objs["frame_gid"].to_numpy(np.int64) == gid, "track_id"].astype(int).tolist()
            raise NotFoundError(f"{ref}: that frame has no object {ref.track_id} (its objects: "
                                f"{', '.join(map(str, have)) or 'none'})")
        return gid, int(rows[0])

    @staticmethod
    def ref_of(index, gid: int, track_id: int | None = None) -> "Qs.ItemRef":
        """The stable id of a frame row (and one of its objects)."""
        row = index.frames.iloc[int(gid)]
        return Qs.ItemRef(str(row["site"]), str(row["video_id"]), int(row["frame_index"]), track_id)

    def stored_vector(self, index, ref: "Qs.ItemRef", *, whole_track: bool = False) -> np.ndarray:
        """The stored, normalised vector of a result: its frame's, its object's, or the mean of that object's
        whole track in its video."""
        gid, obj = self.resolve(index, ref)
        site = ref.site
        shard = index.shards[site]
        if obj is None:
            rows = np.array([gid - index.frame_offset(site)], np.int64)
            vecs = shard.table("frames").get(rows)
        else:
            local = obj - index.object_offset(site)
            if whole_track:
                objs, frames = shard.objects, shard.frames
                video = frames["video_id"].astype(str).to_numpy()[objs["frame_row"].to_numpy(np.int64)]
                rows = np.flatnonzero((objs["track_id"].to_numpy(np.int64) == ref.track_id) & (video == ref.video_id))
            else:
                rows = np.array([local], np.int64)
            vecs = shard.table("objects").get(rows)
        v = np.nan_to_num(np.asarray(vecs, np.float64)).mean(axis=0)
        norm = float(np.linalg.norm(v))
        if norm == 0:
            raise NotFoundError(f"{ref}: its stored vector is invalid (mvk check names the broken file)")
        return (v / norm).astype(np.float32)

    @staticmethod
    def frame_vectors(index, gids: np.ndarray) -> np.ndarray:
        """The stored, normalised frame vectors of global frame rows, read in one batch per shard."""
        parts = index.locate(np.asarray(gids, np.int64))
        dim = index.shards[parts[0][0]].table("frames").dim if parts else 1
        out = np.zeros((len(gids), dim), np.float32)
        for site, positions, rows in parts:
            out[positions] = np.nan_to_num(np.asarray(index.shards[site].table("frames").get(rows), np.float32))
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return (out / np.where(norms > 0, norms, 1.0))[norms[:, 0] > 0]

    # -- heatmaps -------------------------------------------------------------------------------------

    def heatmap(self, gid: int, text: str) -> tuple[bytes, tuple[int, int]]:
        """PNG of frame ``gid``'s thumbnail with the text's similarity to each patch drawn over it, and the
        (row, column) in the thumbnail where it peaks. The frame's dense features come from one forward pass of
        its thumbnail, cached per index version."""
        from search import heatmap
        from search.images import read_image
        from search.query import encode_query

        text = self.check_text(text, "the heatmap text")
        index, version = self.opened()
        if not 0 <= int(gid) < len(index.frames):
            raise NotFoundError(f"no frame {gid}: the index has frames 0..{len(index.frames) - 1}")
        data = index.thumbnail(int(gid))
        if not data:
            raise NotFoundError(f"frame {gid} has no stored thumbnail to draw on")
        image = read_image(bytes(data), f"the thumbnail of frame {gid}")
        encoder = self.get_encoder()
        key = (version, int(gid))
        if key not in self._dense:
            pool = ((index.manifest.get("indexing") or {}).get("pool_features") or {})
            _, tokens = encoder.encode_image_tokens([image], variant=pool.get("variant"),
                                                    dense_size=pool.get("size"))
            self._dense[key] = (tokens[0], encoder.dense_side(pool.get("size")))
            while len(self._dense) > HEATMAP_CACHE:
                self._dense.popitem(last=False)
        tokens, side = self._dense[key]
        q = encode_query(index, encoder, text)[0]
        values = heatmap.frame_map(heatmap.similarity_map(tokens, q), image.shape[0], image.shape[1], side)
        return heatmap.overlay_png(image, values), heatmap.peak(values)


def _read_manifest(root: Path) -> dict:
    from search.store import read_manifest
    return read_manifest(root)


_HANDLERS = {Qs.TextQuery: QueryService._text, Qs.ImageQuery: QueryService._image,
             Qs.SequenceQuery: QueryService._sequence, Qs.LikeQuery: QueryService._like,
             Qs.FeedbackQuery: QueryService._feedback}

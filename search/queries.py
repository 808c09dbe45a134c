"""The query types a front end sends to the query service (``search.service``), as data: one small frozen
dataclass per type, and ``Options`` for what every query shares (page, filters, fusion, FAISS knobs, grid
cells). The service dispatches on the type once; the CLI, the Streamlit pages and the HTTP API only build
these values. Adding a query type is one dataclass here, one handler in the service, and its shells.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal, Union

import numpy as np

from search.errors import QueryError
from search.query import Filters, parse_cells
from search.scoring import FUSIONS, SearchParams

__all__ = ["FEEDBACK_METHODS", "FUSIONS", "FeedbackQuery", "Filters", "ImageQuery", "ItemRef", "LikeQuery", "Options",
           "parse_cells",
           "Query", "SearchParams", "SequenceQuery", "TextQuery", "describe"]


@dataclass(frozen=True)
class ItemRef:
    """A frame, or one object (track) in it, named by what stays true across index rebuilds: site, video and
    the frame's index in its video; ``track_id`` picks one of the frame's objects. Written
    ``SITE/VIDEO_ID/FRAME_INDEX[/TRACK_ID]``."""
    site: str
    video_id: str
    frame_index: int
    track_id: int | None = None

    def __str__(self) -> str:
        tail = f"/{self.track_id}" if self.track_id is not None else ""
        return f"{self.site}/{self.video_id}/{self.frame_index}{tail}"

    @classmethod
    def parse(cls, text: str) -> "ItemRef":
        """``SITE/VIDEO_ID/FRAME_INDEX[/TRACK_ID]``; QueryError naming the text otherwise."""
        parts = str(text).strip().split("/")
        if len(parts) not in (3, 4) or not all(p.strip() for p in parts):
            raise QueryError(f"{text!r} does not name a result: write SITE/VIDEO_ID/FRAME_INDEX, or "
                             f"SITE/VIDEO_ID/FRAME_INDEX/TRACK_ID for one of its objects")
        numbers = parts[2:]
        if not all(re.fullmatch(r"\d+", p) for p in numbers):
            raise QueryError(f"{text!r}: the frame index (and the track id) must be whole numbers >= 0")
        return cls(parts[0], parts[1], int(parts[2]), int(parts[3]) if len(parts) == 4 else None)


@dataclass(frozen=True)
class TextQuery:
    """A description of what to find."""
    text: str


@dataclass(frozen=True, eq=False)
class ImageQuery:
    """An example image, (H, W, 3) uint8 RGB; ``label`` names it in logs and captions."""
    image: np.ndarray
    label: str = "image"


Step = Union[TextQuery, ImageQuery]


@dataclass(frozen=True)
class SequenceQuery:
    """"A then B then C ...": steps in one video, each at most ``within`` seconds after the previous one."""
    steps: tuple[Step, ...]
    within: float = 10.0


@dataclass(frozen=True)
class LikeQuery:
    """"More like this": the stored vector of a result (its frame, or one of its objects); ``whole_track``
    uses the mean vector of that object's whole track in its video ("search with this animal")."""
    ref: ItemRef
    whole_track: bool = False


FeedbackMethod = Literal["bayes", "rocchio"]
FEEDBACK_METHODS: tuple[str, ...] = ("bayes", "rocchio")


@dataclass(frozen=True)
class FeedbackQuery:
    """A query re-ranked by results the user liked and disliked (frames or objects). ``base`` is the query the
    results came from (None: the liked examples alone). ``method``: SOMHunter's Bayesian update over the
    displayed results (default) or Rocchio's vector update (``search.feedback`` says which model and its
    parameters). ``display``: how many of the base query's first results the user saw (Bayes compares each
    label with the other displayed results)."""
    base: "Query | None"
    positives: tuple[ItemRef, ...] = ()
    negatives: tuple[ItemRef, ...] = ()
    method: FeedbackMethod = "bayes"
    display: int = 20


Query = Union[TextQuery, ImageQuery, SequenceQuery, LikeQuery, FeedbackQuery]


@dataclass(frozen=True)
class Options:
    """What every query shares: the page (``offset``, ``k``), filters, fusion of frame and object scores,
    grouping, exact or approximate scoring with its FAISS knobs, grid cells of a position query, and how the
    rankings of an index's embedding spaces are fused (``search.spacefusion``) or which one space answers."""
    k: int = 20
    offset: int = 0
    fusion: str = "max"
    weight: float = 0.5
    filters: Filters = field(default_factory=Filters)
    group_by: Literal["video"] | None = None
    exact: bool | None = None
    params: SearchParams = field(default_factory=SearchParams)
    cells: tuple[int, ...] = ()
    space_fusion: str = "rrf"          # several embedding spaces: rrf | zscore | one space's name

    def with_cells(self, cells) -> "Options":
        """These options with a position constraint (names or numbers, checked)."""
        from dataclasses import replace
        return replace(self, cells=parse_cells(cells) if cells else ())


def describe(query: Query) -> str:
    """The query in words, for captions and logs."""
    if isinstance(query, TextQuery):
        return f"“{query.text}”"
    if isinstance(query, ImageQuery):
        return query.label
    if isinstance(query, SequenceQuery):
        return " then ".join(describe(s) for s in query.steps) + f" (each within {query.within:g} s)"
    if isinstance(query, LikeQuery):
        return f"like {query.ref}" + (" (whole track)" if query.whole_track else "")
    if isinstance(query, FeedbackQuery):
        base = describe(query.base) if query.base is not None else "the liked results"
        return f"{base} with {len(query.positives)} liked, {len(query.negatives)} disliked ({query.method})"
    raise QueryError(f"unknown query type {type(query).__name__}")

"""Follow objects through a video from a seed on one frame: the library entry points the CLI, the app
and the API call.

``follow_stream`` yields every frame with its label map, streaming (the seed frame, the frames before it
in reverse, then the frames after it), so memory stays bounded on long videos; ``propagate_video``
collects the same into a compact ``Track`` (COCO RLE per frame and object)."""
from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from indexer.frame_source import FrameSource
from indexer.propagation import PropagatedFrame
from indexer.propagators import Propagator, PropagatorSettings, load_propagator
from indexer.seeds import MaskSeed, Seed, resolve_seed
from indexer.segment import SegmentParams
from indexer.tracks import Track, collect
from mvk_tools.video import Frame
from search.errors import InputError


@dataclass(frozen=True)
class FollowSettings:
    propagator: PropagatorSettings = field(default_factory=PropagatorSettings)
    every_nth: int = 1                          # propagate over every n-th frame only
    max_frames: int | None = None               # at most this many (sampled) frames from the start
    segment: SegmentParams = field(default_factory=SegmentParams)    # the unsupervised segments that clicks and boxes pick from


@dataclass
class Prepared:
    """Everything a run needs, checked before the first frame is propagated."""
    source: FrameSource
    seed: np.ndarray                            # (H, W) uint8 label map of the seed frame
    frame: int
    propagator: Propagator
    notes: list[str]


def prepare(path: str | Path, seed: Seed | np.ndarray, frame: int = 0,
            settings: FollowSettings = FollowSettings(), propagator: Propagator | None = None) -> Prepared:
    """Open the source, read the seed frame, turn the seed into a label map of it, load the propagator.
    InputError (exit 2 in the CLI) for a frame past the end, a click outside the frame, an empty mask..."""
    source = FrameSource.open(path, every_nth=settings.every_nth, max_frames=settings.max_frames)
    first = source.frame_at(frame)
    propagator = propagator or load_propagator(settings.propagator)
    if isinstance(seed, np.ndarray):
        seed = MaskSeed(seed)
    extractor = getattr(propagator, "extractor", None)
    if extractor is None and not isinstance(seed, MaskSeed):
        from indexer.backbone import load_backbone
        p = settings.propagator
        extractor = load_backbone(p.backbone, checkpoint=p.checkpoint, random_weights=p.random_weights,
                                  device=p.device)
    labels, note = resolve_seed(seed, first.image, extractor, settings.segment)
    return Prepared(source, labels, frame, propagator, [note] if note else [])


def follow_stream(prepared: Prepared) -> Iterator[PropagatedFrame]:
    """The seed frame, the earlier frames backward, then the later frames forward, each with its labels."""
    back = prepared.propagator.propagate(prepared.source.backward(prepared.frame), prepared.seed)
    yield from back
    forward = prepared.propagator.propagate(prepared.source.forward(prepared.frame), prepared.seed)
    next(forward)                   # the seed frame, already given
    yield from forward


def propagate_video(path: str | Path, seed: Seed | np.ndarray, frame: int = 0,
                    settings: FollowSettings = FollowSettings(), propagator: Propagator | None = None) -> Track:
    """Every frame's masks of the objects seeded on ``frame`` (a label map or PNG, a box, or a click) as a
    Track sorted by frame index (``Track.mask``, ``track_to_coco``, ``write_track_pngs``)."""
    prepared = prepare(path, seed, frame, settings, propagator)
    ids = tuple(int(i) for i in np.unique(prepared.seed) if i > 0)
    track = Track(source=str(path), size=tuple(prepared.seed.shape), seed_frame=frame, object_ids=ids,
                  identity=prepared.propagator.identity(), notes=list(prepared.notes))
    return collect(follow_stream(prepared), track)


def follow_frames(frames: Sequence[Frame], seed: Seed | np.ndarray, position: int, propagator: Propagator, *,
                  source: str = "frames", segment: SegmentParams = SegmentParams()) -> Track:
    """A Track of the objects seeded on ``frames[position]``, propagated backward to ``frames[0]`` and forward
    to the last: the bounded form of ``propagate_video`` for a window of frames already decoded (the app and the
    API follow an animal through the frames around a result). InputError for a bad seed, as ``prepare``."""
    if not 0 <= position < len(frames):
        raise InputError(f"seed position {position} is outside the {len(frames)} frames given")
    first = frames[position]
    if isinstance(seed, np.ndarray):
        seed = MaskSeed(seed)
    extractor = getattr(propagator, "extractor", None)
    if extractor is None and not isinstance(seed, MaskSeed):
        raise InputError("this propagator has no segmentation backbone: give a mask as the seed")
    labels, note = resolve_seed(seed, first.image, extractor, segment)
    ids = tuple(int(i) for i in np.unique(labels) if i > 0)
    track = Track(source=source, size=tuple(labels.shape), seed_frame=int(first.index), object_ids=ids,
                  identity=propagator.identity(), notes=[note] if note else [])
    back = propagator.propagate(list(reversed(frames[:position + 1])), labels)
    forward = propagator.propagate(list(frames[position:]), labels)
    next(forward)                   # the seed frame, given by the backward pass
    return collect(itertools.chain(back, forward), track)

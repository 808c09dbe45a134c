"""Executors of the per-video work stage: each runs the work over a list of VideoTasks and yields their
VideoResults in task order. The driver (``indexer.pipeline``) plans before and assembles after; an engine only
decides where and how the middle stage runs. Adding an engine is one small module and one line in ``ENGINES``,
the registry that ``mvk index --engine`` and the app's Index page offer.

- ``local`` (default): in this process, one video after another, with the models the driver loaded.
- ``ray``: a Ray Data streaming pipeline on a Ray cluster (``indexer.engines.raydata``).

This module imports no engine: each is imported when it is made (Ray only when asked for).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from indexer.progress import Progress
    from indexer.tasks import EngineInfo, VideoResult, VideoTask, WorkSettings


@dataclass(frozen=True)
class ModelSpec:
    """How a worker loads the models itself (the arguments of ``indexer.models.load_models``)."""
    model: str | None = None
    pretrained: str | None = None
    clip_checkpoint: str | None = None
    backbone: str | None = None
    checkpoint: str | None = None
    random_weights: bool = False

    def kwargs(self) -> dict:
        return {"model": self.model, "pretrained": self.pretrained, "clip_checkpoint": self.clip_checkpoint,
                "backbone": self.backbone, "checkpoint": self.checkpoint, "random_weights": self.random_weights}


@dataclass(frozen=True)
class EngineOptions:
    """What a user may set about where the work runs (each engine reads the fields that concern it)."""
    address: str | None = None            # ray: the cluster to join (None: a Ray instance started for the run)
    workers: int | None = None            # ray: model workers (None: from the cluster's resources)
    gpus_per_worker: float | None = None  # ray: GPUs per model worker, fractions allowed (None: 1 where GPUs exist)
    collection: str | None = None         # ray: the collection root, checked to be seen by every node


class Executor(Protocol):
    """Runs the work stage. ``info`` is set once it started (None before, or when it had nothing to do)."""
    info: EngineInfo | None

    def run(self, tasks: Sequence[VideoTask], settings: WorkSettings, progress: Progress) -> Iterator[VideoResult]:
        """Yield one VideoResult per task, in task order (each part committed before its result is yielded)."""
        ...


EngineFactory = Callable[[ModelSpec, Any, Any, EngineOptions], Executor]
"""``(how workers load the models, the driver's encoder, its extractor, options) -> Executor``."""


@dataclass(frozen=True)
class Engine:
    """A registered engine: its factory, a line of help, and a check that it can run here (raises InputError
    saying what to install, before any model is loaded)."""
    make: EngineFactory
    help: str
    check: Callable[[], None] = lambda: None


def _local(spec: ModelSpec, encoder: Any, extractor: Any, options: EngineOptions) -> Executor:
    from indexer.engines.local import LocalExecutor
    return LocalExecutor(encoder, extractor)


def _ray(spec: ModelSpec, encoder: Any, extractor: Any, options: EngineOptions) -> Executor:
    from indexer.engines.raydata import RayExecutor, model_memory
    return RayExecutor(spec, address=options.address, workers=options.workers, collection=options.collection,
                       actor_memory=model_memory(encoder, extractor), gpus_per_worker=options.gpus_per_worker)


def _check_ray() -> None:
    from indexer.engines.raydata import import_ray
    import_ray()


ENGINES: dict[str, Engine] = {
    "local": Engine(_local, "in this process, one video after another (the default)"),
    "ray": Engine(_ray, "a Ray Data pipeline on a Ray cluster (pip install -e \".[ray]\")", _check_ray),
}


def check_engine(name: str) -> None:
    """InputError when ``name`` is no registered engine or cannot run here (before any model is loaded)."""
    if name not in ENGINES:
        from search.errors import InputError
        raise InputError(f"unknown engine {name!r}: one of {', '.join(ENGINES)}")
    ENGINES[name].check()


def make_executor(name: str, spec: ModelSpec, encoder: Any, extractor: Any,
                  options: EngineOptions = EngineOptions()) -> Executor:
    """The registered engine ``name`` made for these models; InputError naming the known ones otherwise."""
    check_engine(name)
    return ENGINES[name].make(spec, encoder, extractor, options)

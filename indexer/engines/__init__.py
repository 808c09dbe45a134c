"""Executors of the per-video work stage: each runs ``indexer.work.run_video`` over a list of VideoTasks and
yields their VideoResults in task order. The driver (``indexer.pipeline``) plans before and assembles after;
an engine only decides where and how the middle stage runs. Adding an engine is one small module.

- ``local`` (default): in this process, one video after another, with the models the driver loaded.
- ``ray``: a Ray Data streaming pipeline on a Ray cluster (``indexer.engines.raydata``).
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from indexer.progress import Progress
from indexer.tasks import VideoResult, VideoTask, WorkSettings

ENGINES = ("local", "ray")


@dataclass(frozen=True)
class EngineInfo:
    """What the driver reports about the engine: its name, how many workers run the models, on which devices."""
    name: str
    workers: int
    devices: tuple[str, ...]
    detail: str = ""

    def describe(self) -> str:
        devices = ", ".join(sorted(set(self.devices))) or "cpu"
        text = f"engine {self.name}: {self.workers} worker{'s' if self.workers != 1 else ''} on {devices}"
        return f"{text} ({self.detail})" if self.detail else text


@dataclass(frozen=True)
class ModelSpec:
    """How a worker loads the models itself (the arguments of ``indexer.pipeline.load_models``)."""
    model: str | None = None
    pretrained: str | None = None
    clip_checkpoint: str | None = None
    backbone: str | None = None
    checkpoint: str | None = None
    random_weights: bool = False

    def kwargs(self) -> dict:
        return {"model": self.model, "pretrained": self.pretrained, "clip_checkpoint": self.clip_checkpoint,
                "backbone": self.backbone, "checkpoint": self.checkpoint, "random_weights": self.random_weights}


class Executor(Protocol):
    """Runs the work stage. ``info`` is set once it started (None before, or when it had nothing to do)."""
    info: EngineInfo | None

    def run(self, tasks: Sequence[VideoTask], settings: WorkSettings, progress: Progress) -> Iterator[VideoResult]:
        """Yield one VideoResult per task, in task order (each part committed before its result is yielded)."""
        ...

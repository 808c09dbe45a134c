"""Propagators: anything that follows a seed mask through frames, by name.

Built in: ``dino`` (DINO label propagation over a DINO ViT's frozen features, or over the colour
baseline with ``backbone="color"``). A trained propagator such as DeAOT is added by a user who has its
code and weights: ``register_propagator(name, factory)``, or an installed package's entry point in the
``mvk.propagators`` group naming such a factory. Its weights follow the project's rule: a checkpoint
path is required, a missing one stops with MissingWeightsError saying what to get; nothing is shipped
and nothing falls back to another model. ``deaot`` is registered as such a slot: it checks the
checkpoint and says how to plug the code in, and never pretends to run.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from indexer.backbone_names import DEFAULT_BACKBONE
from indexer.propagation import LabelPropagator, PropagatedFrame, PropagateParams
from mvk_tools.video import Frame
from search.errors import InputError, MissingWeightsError

ENTRY_POINT_GROUP = "mvk.propagators"


class Propagator(Protocol):
    """Follows the objects of a seed label map through frames."""

    def propagate(self, frames: Iterable[Frame], seed: np.ndarray) -> Iterator[PropagatedFrame]:
        """``frames``' first is the seed frame, labelled by ``seed`` (H, W) uint8 (0 background, object
        ids); yields every frame in order with its label map of the same ids."""
        ...

    def identity(self) -> dict:
        """Name, model and weights, for track files and reports."""
        ...


@dataclass(frozen=True)
class PropagatorSettings:
    name: str = "dino"
    backbone: str = DEFAULT_BACKBONE           # features for ``dino`` (and segments for click/box seeds)
    checkpoint: str | None = None              # backbone weights file
    random_weights: bool = False               # tests and cost measurements only
    device: str = "cpu"
    params: PropagateParams = field(default_factory=PropagateParams)
    propagator_checkpoint: str | None = None   # a trained propagator's weights (DeAOT and the like)


Factory = Callable[[PropagatorSettings], Propagator]
_REGISTRY: dict[str, Factory] = {}


def register_propagator(name: str, factory: Factory) -> None:
    """Make ``name`` loadable; ``factory(settings)`` builds the propagator (and loads its weights)."""
    _REGISTRY[name] = factory


def _dino(settings: PropagatorSettings) -> Propagator:
    from indexer.backbone import load_backbone
    extractor = load_backbone(settings.backbone, checkpoint=settings.checkpoint,
                              random_weights=settings.random_weights, device=settings.device)
    return LabelPropagator(extractor, settings.params)


def require_checkpoint(name: str, checkpoint: str | None, how_to_get: str) -> Path:
    """The checkpoint path of a trained propagator; MissingWeightsError when not given or not a file."""
    if not checkpoint:
        raise MissingWeightsError(f"propagator {name} needs its weights: pass --propagator-checkpoint FILE. "
                                  f"{how_to_get}")
    path = Path(checkpoint)
    if not path.is_file():
        raise MissingWeightsError(f"propagator {name}: checkpoint file {path} does not exist. {how_to_get}")
    return path


DEAOT_WEIGHTS = ("DeAOT checkpoints (DeAOT-T/S/B, R50-DeAOT-L, SwinB-DeAOT-L) are published with the "
                 "authors' AOT benchmark code (github.com/yoxu515/aot-benchmark, MODEL_ZOO); download one "
                 "on a machine with internet and copy it here.")


def _deaot(settings: PropagatorSettings) -> Propagator:
    path = require_checkpoint("deaot", settings.propagator_checkpoint, DEAOT_WEIGHTS)
    raise InputError(f"propagator deaot: the checkpoint {path} is there but no DeAOT code is plugged in. "
                     "Install a package that registers a 'deaot' factory in the "
                     f"'{ENTRY_POINT_GROUP}' entry-point group (or call "
                     "indexer.propagators.register_propagator('deaot', factory)); this project does not "
                     "ship DeAOT and does not imitate it")


register_propagator("dino", _dino)
register_propagator("deaot", _deaot)


def _entry_point(name: str) -> Factory | None:
    from importlib.metadata import entry_points
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            return ep.load()
    return None


def propagator_names() -> tuple[str, ...]:
    return tuple(sorted(_REGISTRY))


def load_propagator(settings: PropagatorSettings = PropagatorSettings()) -> Propagator:
    """The propagator ``settings.name``: an installed plug-in of that name first, then the registry."""
    settings.params.check()
    factory = _entry_point(settings.name) or _REGISTRY.get(settings.name)
    if factory is None:
        raise InputError(f"unknown propagator {settings.name!r}; choose one of {', '.join(propagator_names())}")
    return factory(settings)

"""The models and settings an index was built with, read back from its root manifest, so that a site
added later (from the CLI or the app) joins it with the same ones."""
from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any


def read_root_manifest(index_dir: str | Path) -> dict | None:
    """The index's root manifest (rebuilt from the shard manifests when it is broken), or None for a folder
    that is not an index yet or whose settings nothing records."""
    from search.store import load_root_manifest
    return load_root_manifest(Path(index_dir))[0]


@dataclass(frozen=True)
class BuildSettings:
    """Models and indexing settings a new site must share with the index it joins."""
    model: str | None
    pretrained: str | None
    clip_checkpoint: str | None
    backbone: str | None
    checkpoint: str | None
    random_weights: bool
    config: object   # indexer.pipeline.IndexConfig


def settings_from_manifest(manifest: dict | None, *, random_weights: bool, objects: str = "pool") -> BuildSettings:
    """The settings of an existing index (its manifest), or the defaults for an empty one. ``random_weights``
    (the command's --random-weights) is required to extend or start an index with random weights."""
    from indexer.identity import recorded_indexing
    from indexer.segment import SegmentParams
    from indexer.tasks import IndexConfig
    from search.errors import ModelMismatchError

    manifest = manifest or {}
    enc = manifest.get("encoder") or {}
    indexing = recorded_indexing(manifest) or {}
    if enc.get("random_weights") and not random_weights:
        raise ModelMismatchError("this index was built with random weights: pass --random-weights (to mvk index "
                                 "or mvk app) to add sites to it")
    backbone = indexing.get("backbone") or {}
    sampling = indexing.get("sampling") or {}
    seg = manifest.get("segmentation") or {}
    seg_names = {f.name for f in fields(SegmentParams)}
    config = IndexConfig(
        every_seconds=float(sampling.get("every_seconds", 1.0)),
        selected_frames=bool(sampling.get("selected_frames", False)),
        objects=indexing.get("objects", objects),
        frame_fit=indexing.get("frame_fit", "letterbox"),
        crop_margin=float(indexing.get("crop_margin") or 0.1),
        segment=SegmentParams(**{k: v for k, v in seg.items() if k in seg_names}) if seg else None,
        decode_max_side=sampling.get("decode_max_side", 512),
        thumbnail_side=int(indexing.get("thumbnail_side", 256)),
        dense_size=(indexing.get("pool_features") or {}).get("size"),
    )
    return BuildSettings(model=enc.get("model"), pretrained=enc.get("pretrained"),
                         clip_checkpoint=enc.get("checkpoint"),
                         backbone=(backbone.get("backbone") or backbone.get("name")) if isinstance(backbone, dict) else None,
                         checkpoint=backbone.get("checkpoint") if isinstance(backbone, dict) else None,
                         random_weights=bool(enc.get("random_weights", random_weights)), config=config)


# Settings a command line or the app asks for, by IndexConfig field ("segment.<name>" for SegmentParams):
# only those given explicitly are compared with, or laid over, what an index records.
PER_RUN_FIELDS = frozenset({"index_type", "batch_size", "follow_outside_links"})   # chosen per run, never recorded for the index


def apply_settings(config, requested: dict[str, Any]):
    """``config`` (an IndexConfig) with ``requested`` laid over it; keys are field names, ``segment.<name>``
    for segmentation parameters."""
    from dataclasses import replace

    top = {k: v for k, v in requested.items() if "." not in k}
    seg = {k.split(".", 1)[1]: v for k, v in requested.items() if k.startswith("segment.")}
    if seg:
        top["segment"] = replace(config.segment_params(), **seg)
    return replace(config, **top)


def _flat(config) -> dict[str, Any]:
    """IndexConfig as ``{field or segment.<name>: value}``."""
    out = {f.name: getattr(config, f.name) for f in fields(config) if f.name != "segment"}
    out.update({f"segment.{f.name}": getattr(config.segment_params(), f.name)
                for f in fields(config.segment_params())})
    return out


def setting_differences(recorded, requested: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(key, the index's value, the requested value) of every requested setting that differs from what the
    index records; per-run settings (index type, batch size) and, for an index without objects, segmentation
    parameters never differ."""
    have = _flat(recorded)
    out = []
    for key, want in requested.items():
        if key in PER_RUN_FIELDS or key not in have:
            continue
        if key.startswith("segment.") and recorded.objects == "none":
            continue
        if have[key] != want:
            out.append((key, have[key], want))
    return out


def model_differences(recorded: BuildSettings, requested: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """The same for model names (``model``, ``pretrained``, ``backbone``, checkpoints) given on a command line."""
    return [(key, getattr(recorded, key), want) for key, want in requested.items()
            if want is not None and getattr(recorded, key) != want]


def mismatch_message(index_dir: str | Path, differences: list[tuple[str, Any, Any]],
                     names: dict[str, str] | None = None) -> str:
    """One line naming only the differing keys: ``key: index has X, you asked Y`` (``names``: how to call a
    key, e.g. the command line flag that sets it); the index's one message format (``search.manifest``)."""
    from search.manifest import mismatch_message as message
    return message(index_dir, differences, names)

"""What decides an index's content, recorded and compared: the encoder's identity with its frame fit, the indexing
settings (objects, backbone, sampling), the root manifest, and the fingerprint a committed part is valid for.
Used by the driver (``indexer.pipeline``) and by workers that check their models match it (the Ray engine)."""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from typing import TYPE_CHECKING

from indexer.embed import POOL_VARIANTS, pool_variant
from indexer.tasks import IndexConfig
from search.errors import InputError

if TYPE_CHECKING:
    from indexer.backbone import QKExtractor
    from search.encoder import Encoder

PIPELINE_VERSION = 1


def _versions() -> dict[str, str]:
    import importlib.metadata as md
    out = {"pipeline": str(PIPELINE_VERSION)}
    for dist in ("mvk-retrieval", "torch", "open_clip_torch", "timm", "faiss-cpu", "faiss-gpu", "numpy", "av"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            continue
    return out


def encoder_identity(encoder: "Encoder", config: IndexConfig) -> dict:
    """The encoder's identity with the frame fit this index uses (part of its preprocessing)."""
    return {**encoder.identity(), "fit": config.frame_fit}


def pool_features(encoder: "Encoder", config: IndexConfig) -> dict | None:
    """What the pool modes' object vectors are made of: the dense feature variant and the input side of
    its pass (None for the other modes). Raises InputError when the model has no such features or the
    size does not fit its patches."""
    if config.objects not in POOL_VARIANTS:
        if config.dense_size is not None:
            raise InputError(f"--dense-size applies to --objects pool and pool-raw, not {config.objects!r}")
        return None
    variant = pool_variant(encoder, config.objects)
    encoder.check_dense(variant)
    return {"variant": variant, "size": encoder.dense_side(config.dense_size)}


def indexing_section(config: IndexConfig, extractor: "QKExtractor | None", encoder: "Encoder | None" = None) -> dict:
    """Everything besides the CLIP encoder that decides what the vectors mean: compared on every run."""
    section = {"objects": config.objects, "frame_fit": config.frame_fit,
               "crop_margin": config.crop_margin if config.objects == "crop" else None,
               "backbone": extractor.identity() if extractor is not None else None,
               "sampling": config.sampling(), "thumbnail_side": config.thumbnail_side}
    features = pool_features(encoder, config) if encoder is not None else None
    if features is not None:
        section["pool_features"] = features
    return section


def root_manifest(encoder: "Encoder", extractor: "QKExtractor | None", config: IndexConfig) -> dict:
    """What the index root records: encoder identity, backbone, segmentation parameters, sampling, versions."""
    section = indexing_section(config, extractor, encoder)
    return {"encoder": encoder_identity(encoder, config),
            "segmentation": asdict(config.segment_params()) if config.objects != "none" else None,
            "indexing": section, "versions": _versions()}


def fingerprint(encoder: "Encoder", extractor: "QKExtractor | None", config: IndexConfig) -> str:
    """A hash of everything that decides a part's content (models, parameters; not the index type)."""
    data = {"encoder": encoder_identity(encoder, config), "indexing": indexing_section(config, extractor, encoder),
            "pipeline": PIPELINE_VERSION}
    return hashlib.sha1(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def recorded_indexing(manifest: dict) -> dict | None:
    """The indexing section of a root manifest, with what an index built before the dense ClearCLIP path
    meant spelled out: its ``pool`` object vectors are raw last-layer tokens, i.e. today's ``pool-raw``."""
    have = manifest.get("indexing")
    if not isinstance(have, dict) or have.get("objects") != "pool" or "pool_features" in have:
        return have
    size = (manifest.get("encoder") or {}).get("image_size")
    return {**have, "objects": "pool-raw", "pool_features": {"variant": "raw", "size": size}}

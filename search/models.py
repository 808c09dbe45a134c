"""The embedding models the project knows how to use: a small catalogue with presets, the published
zero-shot retrieval figures of each (open_clip's retrieval results table), the cost per frame measured
here (``benchmarks/bench_models.py`` writes ``models_data/costs.json``), and whether the weights are in
the local cache. Pure data and look-ups; ``mvk models`` prints it.
"""
from __future__ import annotations

import csv
import functools
import json
from dataclasses import dataclass
from pathlib import Path

from search.errors import InputError

DATA_DIR = Path(__file__).resolve().parent / "models_data"
COSTS_FILE = DATA_DIR / "costs.json"
RETRIEVAL_FILE = DATA_DIR / "openclip_retrieval.csv"
RETRIEVAL_SOURCE = ("open_clip's retrieval results table, docs/openclip_retrieval_results.csv in "
                    "github.com/mlfoundations/open_clip (zero-shot, Flickr30k and MSCOCO 5k test sets)")


@dataclass(frozen=True)
class KnownModel:
    """One model the project recommends: the open_clip name and tag, the architecture its cost was measured
    on (the same name, or the open_clip architecture an hf-hub model is built on), and what it is for."""
    name: str
    pretrained: str | None
    arch: str
    use: str


KNOWN_MODELS: tuple[KnownModel, ...] = (
    KnownModel("ViT-B-32", "openai", "ViT-B-32", "the default: the weakest, cheapest CLIP"),
    KnownModel("ViT-B-32", "laion2b_s34b_b79k", "ViT-B-32", "same cost as the default, better retrieval"),
    KnownModel("ViT-B-16-SigLIP", "webli", "ViT-B-16-SigLIP", "SigLIP base: the balance of cost and quality"),
    KnownModel("ViT-L-14", "datacomp_xl_s13b_b90k", "ViT-L-14", "a large CLIP"),
    KnownModel("ViT-H-14", "laion2b_s32b_b79k", "ViT-H-14", "OpenCLIP ViT-H-14 (diveXplore, VISIONE at VBS)"),
    KnownModel("ViT-SO400M-14-SigLIP-384", "webli", "ViT-SO400M-14-SigLIP-384",
               "SigLIP so400m at 384 px (PraK's default, MVK): the best retrieval"),
    KnownModel("hf-hub:imageomics/bioclip", None, "ViT-B-16", "BioCLIP: species and taxon names"),
)

# preset -> (model, pretrained) for `mvk index --preset`
PRESETS: dict[str, tuple[str, str | None]] = {
    "fast": ("ViT-B-32", "laion2b_s34b_b79k"),
    "balanced": ("ViT-B-16-SigLIP", "webli"),
    "best": ("ViT-SO400M-14-SigLIP-384", "webli"),
    "species": ("hf-hub:imageomics/bioclip", None),
}


def preset(name: str) -> tuple[str, str | None]:
    """(model, pretrained) of a preset; InputError naming the presets for an unknown one."""
    if name not in PRESETS:
        raise InputError(f"unknown preset {name!r}: one of {', '.join(PRESETS)}")
    return PRESETS[name]


@functools.lru_cache(maxsize=1)
def measured_costs() -> dict:
    """The costs file: ``{"device": ..., "note": ..., "models": {arch: {"frame_ms": .., "objects_ms": ..,
    "objects_mode": .., "embed_dim": .., "image_size": ..}}}``; empty models when not measured yet."""
    if not COSTS_FILE.is_file():
        return {"models": {}}
    return json.loads(COSTS_FILE.read_text())


@functools.lru_cache(maxsize=1)
def retrieval_table() -> dict[tuple[str, str], dict[str, float]]:
    """(name, pretrained) -> the published figures kept here (image and text retrieval recall@1/@5)."""
    with RETRIEVAL_FILE.open(newline="") as f:
        return {(r["name"], r["pretrained"]): {k: float(v) for k, v in r.items() if k not in ("name", "pretrained")}
                for r in csv.DictReader(f)}


def fetch_command(name: str, pretrained: str | None) -> str:
    """The one command that caches a model's weights (and tokenizer) on a machine with internet."""
    tag = f", pretrained='{pretrained}'" if pretrained else ""
    return (f"python3 -c \"import open_clip as o; o.create_model_and_transforms('{name}'{tag}); "
            f"o.get_tokenizer('{name}')\"")


def model_rows(*, cached=None) -> list[dict]:
    """One dict per known model: name, pretrained, preset, embed_dim, image_size, frame_ms, objects_ms,
    objects_mode, cost ratios to ViT-B-32 (paired in time by the benchmark), published figures, cached, fetch. ``cached`` (name, pretrained)
    -> bool is the cache check (default: ``search.encoder.weights_cached``, which never uses the network)."""
    if cached is None:
        from search.encoder import weights_cached
        cached = weights_cached
    costs = measured_costs()
    by_arch = costs.get("models", {})
    base = by_arch.get("ViT-B-32", {}).get("frame_ms")
    presets = {v: k for k, v in PRESETS.items()}
    rows = []
    for m in KNOWN_MODELS:
        cost = by_arch.get(m.arch, {})
        figures = retrieval_table().get((m.name, m.pretrained or ""), {})
        rows.append({
            "name": m.name, "pretrained": m.pretrained, "preset": presets.get((m.name, m.pretrained)),
            "arch": m.arch, "use": m.use, "embed_dim": cost.get("embed_dim"), "image_size": cost.get("image_size"),
            "frame_ms": cost.get("frame_ms"), "objects_ms": cost.get("objects_ms"),
            "objects_mode": cost.get("objects_mode"),
            "frame_ratio": cost.get("frame_ratio") or (cost["frame_ms"] / base if base and cost.get("frame_ms")
                                                        else None),
            "objects_ratio": cost.get("objects_ratio"),
            "retrieval": figures, "cached": bool(cached(m.name, m.pretrained)),
            "fetch": fetch_command(m.name, m.pretrained),
        })
    return rows

"""A rerun with nothing to do, found before any model is loaded.

Loading CLIP and DINO takes most of a rerun that finds every shard up to date (42 s of 43 on a CPU). The
index's root manifest records the encoder identity and the indexing settings every part was made with, so
the fingerprint of a run with the same models and settings can be computed from it alone: when every chosen
site's shard matches its sources under that fingerprint (and every shard file its checksum), the run is
done without the models. Anything else (a changed file, a new site, other settings, an index made by an
older version whose records differ) answers None and the caller loads the models and runs as usual, so this
check can only save work, never skip any.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd

from indexer.identity import PIPELINE_VERSION
from indexer.parts import SiteWork, wrong_work
from indexer.pipeline import IndexResult, select_sites
from indexer.plan import site_up_to_date
from indexer.tasks import IndexConfig, SiteResult
from search.errors import MvkError
from search.recovery import needs_recovery


def _normal(value: Any) -> Any:
    """``value`` as JSON reads it back (tuples as lists, paths as strings)."""
    return json.loads(json.dumps(value, default=str))


def recorded_fingerprint(manifest: dict) -> str | None:
    """The parts' fingerprint (``indexer.identity.fingerprint``) of a run with the models and settings the
    root ``manifest`` records; None when it records no encoder or indexing section."""
    encoder, indexing = manifest.get("encoder"), manifest.get("indexing")
    if not isinstance(encoder, dict) or not isinstance(indexing, dict):
        return None
    data = {"encoder": encoder, "indexing": indexing, "pipeline": PIPELINE_VERSION}
    return hashlib.sha1(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def _same_settings(manifest: dict, config: IndexConfig) -> bool:
    """The manifest records exactly this config's settings (the parts the models do not decide)."""
    have = manifest.get("indexing") or {}
    want = {"objects": config.objects, "frame_fit": config.frame_fit,
            "crop_margin": config.crop_margin if config.objects == "crop" else None,
            "sampling": config.sampling(), "thumbnail_side": config.thumbnail_side}
    if any(_normal(have.get(k)) != _normal(v) for k, v in want.items()):
        return False
    if (manifest.get("encoder") or {}).get("fit") != config.frame_fit:
        return False
    segmentation = _normal(asdict(config.segment_params())) if config.objects != "none" else None
    return _normal(manifest.get("segmentation")) == segmentation


def up_to_date_result(collection: str | Path, index_dir: str | Path, *, config: IndexConfig,
                      random_weights: bool, sites: Sequence[str] | None = None,
                      catalog: pd.DataFrame | None = None, spaces: Sequence[str] = ()) -> IndexResult | None:
    """The result of ``index_collection`` when every chosen site is up to date under the index's recorded
    models and ``config`` (nothing to compute, no model needed), else None. ``spaces``: names of further
    embedding spaces asked for (each must be recorded, and every chosen shard must have every recorded space).
    Writes nothing."""
    from search import store
    t0 = time.perf_counter()
    root = Path(index_dir)
    if not (root / "manifest.json").is_file() or needs_recovery(root) or wrong_work(root):
        return None                  # entries to set aside or temps to remove: the full run does it
    manifest, notes = store.load_root_manifest(root)
    if manifest is None or notes or not _same_settings(manifest, config):
        return None
    if bool((manifest.get("encoder") or {}).get("random_weights")) != random_weights:
        return None
    fp = recorded_fingerprint(manifest)
    if fp is None:
        return None
    from search.spaces import names
    further = set(names(manifest)[1:])
    if not set(spaces) <= further | set(names(manifest)[:1]):
        return None
    collection = Path(collection)
    if catalog is None:
        from mvk_tools.layout import discover
        catalog = discover(collection)
    if catalog.attrs.get("site_errors"):
        return None
    results: list[SiteResult] = []
    try:
        with contextlib.ExitStack() as locks:
            for site in select_sites(catalog, sites):
                work = SiteWork(root, site)
                locks.enter_context(work.lock())
                videos = catalog[catalog["site"].astype(str) == site]
                if not site_up_to_date(root, collection, site, videos, work, config=config, fp=fp):
                    return None
                shard = store.shard_manifest(root, site) or {}
                if not further <= set(shard.get("spaces") or {}):
                    return None
                results.append(SiteResult(site, "up-to-date", frames=int(shard.get("frames", 0) or 0),
                                          objects=int(shard.get("objects", 0) or 0), shard=root / "sites" / site))
    except MvkError:                 # locked by another run, unreadable: the full run reports it
        return None
    return IndexResult(root, results, {}, time.perf_counter() - t0, 0, random_weights)

"""The indexing pipeline: a collection -> one search.store shard per dive site, resumably, in three stages.

    plan (driver)      catalog -> which videos need work under the resume rules      indexer.plan
    work (executor)    (video, settings) -> decode -> segment -> embed -> committed part   indexer.work
    assemble (driver)  a site's parts -> its shard, swapped in whole                  indexer.assemble

The work stage runs on an executor (``indexer.engines``): ``local`` in this process (the default) or
``ray`` on a Ray cluster; both commit the same parts, so the result is the same and either can resume the
other's run.

Resumability: parts are committed per video (temporary names + renames, checksums in a commit record written
last), so a run killed at any moment restarts at the first unfinished video, with no duplicate rows, and
nothing is ever visible to searches until the site's shard is swapped in whole. A changed source file (size,
mtime) is redone; a damaged part is discarded and its video recomputed; a site whose shard already matches its
sources is left alone (its files are not touched), so adding a site touches no other shard. ``rebuild``
recomputes a site aside; the old shard is served until the new one is swapped in, and a failed rebuild leaves
it. Per-video failures are recorded in the shard manifest and in the result; the other videos go on. Only
lasting input errors (a corrupt, unchanged file) are remembered; other failures are retried on the next run.
"""
from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from indexer.assemble import assemble_site
from indexer.disk import disk_full, is_disk_full
from indexer.embed import OBJECT_MODES
from indexer.identity import fingerprint, recorded_indexing, root_manifest
from indexer.parts import SiteWork, set_aside_wrong_work
from indexer.plan import SitePlan, plan_site
from indexer.progress import Progress
from indexer.tasks import (SELECTED_SOURCE, STAGES, Clock, EngineInfo, FrameSource, IndexConfig, SiteResult,
                           VideoResult, WorkSettings)
from search.errors import InputError, ModelMismatchError, MvkError
from search.manifest import differences, mismatch_message

if TYPE_CHECKING:
    from indexer.backbone import QKExtractor
    from indexer.spaces import SpaceModel
    from indexer.engines import Executor
    from search.encoder import Encoder

__all__ = ["SELECTED_SOURCE", "STAGES", "IndexConfig", "IndexResult", "SiteResult", "VideoResult", "index_collection",
           "select_sites"]


@dataclass
class IndexResult:
    """What ``index_collection`` did: per site and per video, with seconds per stage."""
    root: Path
    sites: list[SiteResult]
    seconds: dict[str, float]            # per stage, summed over what was computed in this run (all workers)
    wall_seconds: float
    frames_computed: int                 # frames decoded and embedded in this run (resumed ones excluded)
    random_weights: bool
    notes: list[str] = field(default_factory=list)   # what search.store.recover repaired or migrated
    engine: EngineInfo | None = None   # the engine that ran the work stage (None: nothing to compute)

    @property
    def errors(self) -> list[tuple[str, str, str]]:
        """(site, video_path, message) of every video or site that failed."""
        out = [(s.site, path, msg) for s in self.sites for path, msg in s.errors.items()]
        out += [(s.site, "", s.error) for s in self.sites if s.error]
        return out

    @property
    def ok(self) -> bool:
        """True when at least one site is in the index after the run."""
        return any(s.status in ("written", "up-to-date") for s in self.sites)

    def frames_per_second(self) -> dict[str, float]:
        """Frames computed in this run per second of each stage (and of all stages together)."""
        out = {k: (self.frames_computed / v if v > 0 else math.inf) for k, v in self.seconds.items()}
        total = sum(self.seconds.values())
        out["total"] = self.frames_computed / total if total > 0 else math.inf
        return out


# --------------------------------------------------------------------------------------------------------
# checking an existing index

def _check_indexing(on_disk: dict, wanted: dict, root: Path) -> None:
    """Refuse to extend an index whose objects (and their dense features), sampling or backbone differ
    from this run's."""
    have = recorded_indexing(on_disk)
    if have is None:
        return
    diffs = differences(have, wanted)
    if diffs:
        what = "index into a new --index folder or use the same settings"
        if any(k == "pool_features" for k, _, _ in diffs):
            what += " (clearclip, maskclip: --objects pool, raw: --objects pool-raw, px: --dense-size)"
        raise ModelMismatchError(mismatch_message(root, diffs, what=what))


# --------------------------------------------------------------------------------------------------------
# a collection

def select_sites(catalog: pd.DataFrame, sites: Sequence[str] | None) -> list[str]:
    """The sites to index, in catalog order; InputError naming unknown ones and listing the known ones."""
    known = list(dict.fromkeys([*catalog["site"].astype(str), *catalog.attrs.get("site_errors", {})]))
    if not sites:
        return known
    unknown = [s for s in sites if s not in known]
    if unknown:
        places = dict(zip(catalog["site"].astype(str), catalog["place"].astype(str).str.lower()))
        close = [s for s in known if places.get(s) in {u.lower() for u in unknown}]
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise InputError(f"unknown site(s) {', '.join(unknown)}{hint}; the collection has: {', '.join(known)}")
    return list(dict.fromkeys(sites))


def _plan_sites(root: Path, collection: Path, catalog: pd.DataFrame, chosen: list[str], locks: contextlib.ExitStack,
                *, config: IndexConfig, fp: str, rebuild: bool) -> list[SitePlan | SiteResult]:
    """Lock and plan every chosen site; a site that cannot be planned (locked by another process) fails alone."""
    out: list[SitePlan | SiteResult] = []
    unreadable = catalog.attrs.get("site_errors", {})
    for site in chosen:
        if site in unreadable:                 # its folder could not be listed: reported, the others go on
            out.append(SiteResult(site, "failed", error=unreadable[site]))
            continue
        videos = catalog[catalog["site"].astype(str) == site]
        work = SiteWork(root, site)
        try:
            locks.enter_context(work.lock())
            out.append(plan_site(root, collection, site, videos, work, config=config, fp=fp, rebuild=rebuild))
        except MvkError as exc:
            out.append(SiteResult(site, "failed", error=str(exc)))
    return out


def make_index_folder(root: Path) -> None:
    """Create the index folder ``root`` (and its parents); InputError naming it when it is a file, lies under
    a file, or cannot be created (``/proc``, a read-only disk, no permission)."""
    if root.exists() and not root.is_dir():
        raise InputError(f"index folder {root}: is a file, not a folder")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        if is_disk_full(exc):
            raise disk_full(root, exc) from None
        raise InputError(f"index folder {root}: cannot be created ({exc.strerror or exc})") from None


def index_collection(collection: str | Path, index_dir: str | Path, *, encoder: "Encoder",
                     extractor: "QKExtractor | None" = None, config: IndexConfig = IndexConfig(),
                     sites: Sequence[str] | None = None, rebuild: bool = False,
                     catalog: pd.DataFrame | None = None, progress: Progress | None = None,
                     executor: "Executor | None" = None, frame_source: FrameSource | None = None,
                     spaces: Sequence["Encoder"] = ()) -> IndexResult:
    """Index the chosen sites (all when ``sites`` is empty) of ``collection`` into ``index_dir``.

    ``spaces``: encoders of further embedding spaces (``indexer.spaces``), recorded in the index and filled in
    every chosen site's shard after its first space; spaces the index already records are kept filled whether
    given or not (their encoders are loaded by their recorded identity).

    The driver plans every site, hands the videos that need work to ``executor`` (default: the local engine
    with ``encoder`` and ``extractor``) and assembles each site's shard as soon as its videos are done.
    ``frame_source`` replaces the decoder as the place a video's frames come from (``indexer.tasks.FrameSource``).
    Raises ModelMismatchError before any work when the index was built with another encoder, backbone or
    settings; InputError for unknown sites. Per-video and per-site failures are in the result. Runs with the
    intra-op threads of the "index" kind of work (``search.threads``: the idle cores)."""
    from search.threads import threads
    with threads("index"):
        return _index_collection(collection, index_dir, encoder=encoder, extractor=extractor, config=config,
                                 sites=sites, rebuild=rebuild, catalog=catalog, progress=progress, executor=executor,
                                 frame_source=frame_source, spaces=spaces)


def _index_collection(collection: str | Path, index_dir: str | Path, *, encoder: "Encoder",
                      extractor: "QKExtractor | None", config: IndexConfig, sites: Sequence[str] | None,
                      rebuild: bool, catalog: pd.DataFrame | None, progress: Progress | None,
                      executor: "Executor | None", frame_source: FrameSource | None,
                      spaces: Sequence["Encoder"] = ()) -> IndexResult:
    from search import store
    if config.objects not in OBJECT_MODES:
        raise InputError(f"unknown object mode {config.objects!r}: one of {', '.join(OBJECT_MODES)}")
    if config.objects != "none" and extractor is None:
        raise InputError(f"objects mode {config.objects!r} needs a segmentation backbone")
    if config.problems():
        raise InputError("settings refused, nothing written: " + "; ".join(config.problems()))
    t0 = time.perf_counter()
    collection = Path(collection)
    root = Path(index_dir)
    if catalog is None:
        from mvk_tools.layout import discover
        catalog = discover(collection)
    chosen = select_sites(catalog, sites)
    extractor = extractor if config.objects != "none" else None
    manifest = root_manifest(encoder, extractor, config)
    make_index_folder(root)
    try:
        notes = store.recover(root) + set_aside_wrong_work(root)
        on_disk = store.init_index(root, manifest)
    except OSError as exc:
        if is_disk_full(exc):
            raise disk_full(root, exc) from None
        raise
    _check_indexing(on_disk, manifest["indexing"], root)
    space_models, space_notes = further_spaces(root, on_disk, spaces, config, device=str(encoder.device))
    notes += space_notes
    fp = fingerprint(encoder, extractor, config)
    progress = progress or Progress()
    if executor is None:
        from indexer.engines.local import LocalExecutor
        executor = LocalExecutor(encoder, extractor)
    clock = Clock()
    results: list[SiteResult] = []
    try:
        with contextlib.ExitStack() as locks:
            plans = _plan_sites(root, collection, catalog, chosen, locks, config=config, fp=fp, rebuild=rebuild)
            models = {"encoder": encoder.identity(), "backbone": extractor.identity() if extractor else None}
            settings = WorkSettings(os.path.abspath(root), config, fp, frame_source, models)
            done = executor.run([t for p in plans if isinstance(p, SitePlan) for t in p.tasks], settings, progress)
            for plan in plans:
                result = _finish_site(root, plan, done, encoder=encoder, config=config, fp=fp, clock=clock,
                                      progress=progress)
                if space_models and result.status in ("written", "up-to-date"):
                    _fill_spaces(root, collection, catalog, result, space_models, settings, progress, executor)
                results.append(result)
    except OSError as exc:
        if is_disk_full(exc):
            raise disk_full(root, exc) from None
        raise
    finally:
        progress.close()
    computed = sum(v.frames for s in results for v in s.videos if v.status == "indexed")
    random = bool(encoder.identity().get("random_weights")) or bool(
        extractor is not None and extractor.identity().get("random_weights"))
    return IndexResult(root, results, dict(clock.seconds), time.perf_counter() - t0, computed, random, notes,
                       executor.info)


def further_spaces(root: Path, on_disk: dict, encoders: Sequence["Encoder"], config: IndexConfig, *,
                   device: str = "cpu") -> tuple[list["SpaceModel"], list[str]]:
    """The further spaces this run keeps filled: the ones given (recorded in the root manifest first; another
    version of a recorded model is refused by name) and the ones the index already records (their encoders loaded
    by their recorded identity); and notes (objects embedded as crops in a space without dense features)."""
    from indexer.spaces import check_distinct, space_model
    from search.identity import EncoderChoice, encoder_for_index
    from search.spaces import check_new, spaces_of
    from search.writer import add_space
    first = spaces_of(on_disk)[0] if spaces_of(on_disk) else None
    models, notes = [], []
    for enc in encoders:
        model, note = space_model(enc, config)
        if first is not None and model.space.name == first.name and check_new(on_disk, model.space.encoder, root):
            continue                               # the index's first space, given again
        models.append(model)
        if note:
            notes.append(note)
    check_distinct(models, first)
    for model in models:
        on_disk = add_space(root, model.space)
    given = {m.space.name for m in models}
    for space in spaces_of(on_disk)[1:]:
        if space.name in given:
            continue
        enc = encoder_for_index(space.encoder, EncoderChoice(random_weights=bool(space.encoder.get("random_weights"))),
                                device=device, where=root)
        model, _ = space_model(enc, replace(config, objects=space.objects or config.objects))
        models.append(replace(model, space=space))
    return models, notes


def _fill_spaces(root: Path, collection: Path, catalog: pd.DataFrame, result: SiteResult, models: list["SpaceModel"],
                 settings: WorkSettings, progress: Progress, executor: "Executor") -> None:
    """Add the further spaces the site's shard lacks, their per-video work on ``executor`` where it runs it
    (``run_spaces``), else in this process; what happened goes into ``result`` (its status becomes ``written``
    when a space was added, its notes say which; a space that could not be completed is its error)."""
    from indexer.plan import video_tasks
    from indexer.spaces import embed_site, missing_spaces, run_local
    todo = missing_spaces(root, result.site, models)
    if not todo:
        return                                     # every space there: nothing to read or stat
    names = ", ".join(m.space.name for m in todo)
    videos = catalog[catalog["site"].astype(str) == result.site]
    tasks = {t.rel: t for t in video_tasks(collection, result.site, videos, settings.config)}
    t = time.perf_counter()
    try:
        done = embed_site(root, result.site, models, tasks, settings, progress,
                          runner=getattr(executor, "run_spaces", None) or run_local)
    except MvkError as exc:
        result.error = f"space {names} not added: {exc}"
        return
    seconds = time.perf_counter() - t
    result.seconds["spaces"] = seconds
    if done.status == "written":
        computed = [v for v in done.videos if v.status == "indexed"]
        frames = sum(v.frames for v in computed)
        result.notes.append(f"spaces {names}: {len(computed)} video(s) embedded ({frames} frames in {seconds:.1f} s, "
                            f"{frames / max(seconds, 1e-9):.1f} f/s), {len(done.videos) - len(computed)} reused")
        result.status = "written"
    elif done.status == "failed":          # the site stays served from its other spaces; listed as an error
        result.error = "; ".join([done.error or f"space {names} not added",
                                  *(f"{v.video_path}: {v.error}" for v in done.videos if v.error)])


def _finish_site(root: Path, plan: SitePlan | SiteResult, done: Iterator[VideoResult], *, encoder: "Encoder",
                 config: IndexConfig, fp: str, clock: Clock, progress: Progress) -> SiteResult:
    """Take a planned site's results from the executor (in task order) and assemble its shard."""
    if isinstance(plan, SiteResult):          # could not be planned
        progress.site_finished(plan)
        return plan
    if plan.up_to_date:
        from search import store
        manifest = store.shard_manifest(root, plan.site) or {}
        result = SiteResult(plan.site, "up-to-date", frames=int(manifest.get("frames", 0) or 0),
                            objects=int(manifest.get("objects", 0) or 0), shard=root / "sites" / plan.site)
        progress.site_finished(result)
        return result
    progress.site_started(plan.site, len(plan.order), plan.expected_frames)
    by_rel: dict[str, VideoResult] = {}
    for vr in plan.settled:
        by_rel[vr.video_path] = vr
        progress.video_finished(vr)
    for task in plan.tasks:
        vr = next(done, None)
        if vr is None or vr.video_path != task.rel:
            raise RuntimeError(f"the {plan.site} results came out of order at {task.rel}: an engine bug")
        clock.add(vr.seconds)
        by_rel[vr.video_path] = vr
        progress.video_finished(vr)
    videos = [by_rel[rel] for rel, _ in plan.order if rel in by_rel]
    t = time.perf_counter()
    try:
        result = assemble_site(root, plan, videos, dim=encoder.dim, config=config, fp=fp)
    except MvkError as exc:
        result = SiteResult(plan.site, "failed", videos=videos, error=str(exc))
    clock.seconds["write"] += time.perf_counter() - t
    progress.site_finished(result)
    return result

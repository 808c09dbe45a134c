"""The Index page's work: describe the shards, and add or rebuild dive sites in a background thread with the
same models and settings as the rest of the index (read back from its manifest)."""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from app.state import AppConfig, Job
from indexer.progress import Progress


def memory_line(index) -> str:
    """The opened index's resident memory (rows in memory + resident pages of its memory-mapped files)."""
    from search.store import memory_use
    return f"Memory: {memory_use(index).describe()}"


def shard_table(index) -> pd.DataFrame:
    """One row per readable shard (counts, index type, errors) and one per skipped shard (its error)."""
    rows = []
    for site, shard in sorted(index.shards.items()):
        manifest = shard.manifest or {}
        errors = manifest.get("errors") or {}
        rows.append({"site": site, "status": "ok", "videos": int(shard.frames["video_id"].nunique()),
                     "frames": len(shard.frames), "objects": len(shard.objects),
                     "index type": manifest.get("index_type", ""), "failed videos": len(errors),
                     "built": str(manifest.get("created", manifest.get("written", "")))})
    for site, why in sorted((index.errors or {}).items()):
        rows.append({"site": site, "status": f"skipped: {why}", "videos": 0, "frames": 0, "objects": 0,
                     "index type": "", "failed videos": 0, "built": ""})
    return pd.DataFrame(rows, columns=["site", "status", "videos", "frames", "objects", "index type",
                                       "failed videos", "built"])


def space_table(index) -> pd.DataFrame:
    """One row per embedding space of the index, the first one first: its name, model, vector size, object mode
    and how many of the readable sites have vectors in it (naming those that do not)."""
    from app.service import space_records

    every = sorted(index.shards)
    rows = []
    for space in space_records(index):
        missing = [site for site in every if site not in space["sites"]]
        filled = f"{len(space['sites'])} of {len(every)}" + (f" (not yet: {', '.join(missing)})" if missing else "")
        rows.append({"space": space["name"], "model": space["model"], "dim": space["dim"],
                     "objects": space["objects"] or "", "sites with vectors": filled})
    return pd.DataFrame(rows, columns=["space", "model", "dim", "objects", "sites with vectors"])


def without_path(message: str, path: str) -> str:
    """``message`` with a leading mention of ``path`` (absolute or relative, with ``: ``) taken off, so a table or
    a line that names the video already does not name it twice."""
    text = str(message)
    for prefix in (f"cannot read {path}: ",):
        if path and text.startswith(prefix):
            return text[len(prefix):]
    head, sep, rest = text.partition(": ")
    if path and sep and (head == path or head.endswith("/" + path.lstrip("/")) or path.endswith("/" + head)):
        return rest
    return text


def error_line(site: str, path: str, message: str) -> str:
    """One line per failed video or site, naming the video's path once."""
    return f"{site}/{path}: {without_path(message, path)}" if path else f"{site}: {message}"


def video_errors(index) -> pd.DataFrame:
    """Per-video errors recorded in the shard manifests (the videos that could not be indexed)."""
    rows = []
    for site, shard in sorted(index.shards.items()):
        errors = (shard.manifest or {}).get("errors") or {}
        items = errors.items() if isinstance(errors, dict) else ((e.get("video", ""), e) for e in errors)
        for video, message in items:
            rows.append({"site": site, "video": str(video), "error": without_path(str(message), str(video))})
    return pd.DataFrame(rows, columns=["site", "video", "error"])


def settings_lines(manifest: dict) -> list[str]:
    """The index's models and settings in words (Markdown lines), for people rather than for the code."""
    from indexer.identity import recorded_indexing
    from search.encoder import describe

    enc = manifest.get("encoder") or {}
    indexing = recorded_indexing(manifest) or {}
    smoke = " (**a smoke run**: rankings are meaningless)" if enc.get("random_weights") else ""
    lines = [f"**CLIP**: {describe(enc)}{smoke}; frames fit by {enc.get('fit', 'letterbox')}"]
    backbone = indexing.get("backbone") or {}
    objects = indexing.get("objects", "pool")
    if objects == "none" or not backbone:
        lines.append("**Objects**: none (frame vectors only, no segmentation)")
    else:
        if backbone.get("backbone") == "color":
            seg = "the colour-statistics baseline (not a learned model: it separates objects by colour)"
        else:
            seg = f"DINO `{backbone.get('backbone')}`" + (" with **random weights**" if backbone.get("random_weights")
                                                         else f" ({backbone.get('weights')})")
        lines.append(f"**Segmentation**: {seg}")
        seg_params = manifest.get("segmentation") or {}
        lines.append(f"**Objects**: `{objects}` vectors; clustering threshold τ {seg_params.get('tau', '?')}, "
                     f"every {seg_params.get('key_stride', '?')}th sampled frame a key frame, frames resized to a "
                     f"short side of about {seg_params.get('short_side', '?')} px")
    sampling = indexing.get("sampling") or {}
    how = ("MVK's selected frames where a video has them, else " if sampling.get("selected_frames") else "")
    side = sampling.get("decode_max_side")
    lines.append(f"**Sampling**: {how}one frame every {sampling.get('every_seconds', 1.0):g} s, decoded "
                 + (f"at most {side} px on the longer side" if side else "at full size"))
    versions = manifest.get("versions") or {}
    if versions:
        lines.append("**Built with**: " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items())))
    return lines


def build_refusal(cfg: AppConfig, manifest: dict | None) -> str | None:
    """Why this app cannot add sites to the index (said before a job starts), or None."""
    from indexer.settings import settings_from_manifest
    from search.errors import MvkError

    try:
        settings_from_manifest(manifest, random_weights=cfg.random_weights)
    except MvkError:
        return ("This index was built with random weights (a smoke run): start the app with `--random-weights` "
                "to add sites to it with the same models.")
    return None


def outside_links(catalog: pd.DataFrame, collection: Path) -> tuple[pd.DataFrame, list[str]]:
    """The catalog without the videos whose path leads out of the collection (a symbolic link to a file
    elsewhere), and one line for each video left out. The app reads and serves only files inside the
    collection, so such a video is refused, and no path outside it is stored in the index."""
    from app.security import resolve_inside
    from search.errors import InputError

    keep, refused = [], []
    for path in catalog["path"].astype(str):
        try:
            resolve_inside(path, [collection], must_exist=False)
            keep.append(True)
        except InputError:
            keep.append(False)
            rel = Path(path).relative_to(collection) if Path(path).is_relative_to(collection) else Path(path)
            refused.append(f"{rel}: refused: a symbolic link leading out of the collection")
    out = catalog[keep].copy()
    out.attrs = dict(catalog.attrs)
    return out, refused


class JobProgress(Progress):
    """Pipeline progress callbacks -> a Job the page polls (frames done of frames expected)."""

    def __init__(self, job: Job) -> None:
        self.job = job

    def site_started(self, site: str, n_videos: int, expected_frames: int) -> None:
        self.job.update(total=self.job.total + expected_frames, message=f"{site}: {n_videos} videos")

    def video_started(self, site: str, video_id: str, expected_frames: int) -> None:
        self.job.update(message=f"{site} · video {video_id}")

    def frames_done(self, n: int) -> None:
        self.job.update(done=self.job.done + n)

    def video_finished(self, result) -> None:
        if result.status != "indexed":     # resumed or failed: its share of the bar is done
            self.job.update(done=self.job.done + result.expected_frames)
        self.job.update(message=f"{result.site} · video {result.video_id}: {result.status}"
                                + (f" ({without_path(result.error, result.video_path)})" if result.error else ""))

    def site_finished(self, result) -> None:
        self.job.update(message=f"{result.site}: {result.status}, {result.frames} frames, {result.objects} objects"
                                + (f" ({result.error})" if result.error else ""))


# How often the Index page redraws a running job's progress, by the job's age: (age up to, seconds between).
REDRAW_STEPS = ((10.0, 0.5), (60.0, 1.0), (300.0, 2.0))
REDRAW_LONGEST_S = 5.0


def redraw_every(job: Job | None, now: float) -> float | None:
    """Seconds between redraws of the Index page's progress part: None when no job runs (an idle page costs
    nothing), else short at a job's start and backing off as it runs (each redraw costs the server CPU that
    the job would otherwise have)."""
    if job is None or job.finished:
        return None
    age = now - job.started
    return next((every for upto, every in REDRAW_STEPS if age < upto), REDRAW_LONGEST_S)


def job_seconds(job: Job, now: float) -> float:
    """How long ``job`` has run: up to ``now`` while it runs, up to its end once it has finished."""
    return (job.ended if job.finished and job.ended else now) - job.started


def progress_text(job: Job, elapsed: float) -> str:
    """The progress bar's caption: what is happening, then frames done of frames expected once known."""
    frames = f" · {job.done:,}/{job.total:,} frames" if job.total else ""
    return f"{job.message}{frames} · {elapsed:.0f} s"


def build_sites(cfg: AppConfig, folder: Path, sites: list[str] | None, *, rebuild: bool, job: Job,
                engine: str = "local", models: Sequence[str] = ()):
    """Index ``sites`` of the collection found in ``folder`` (a security-checked folder inside the collection)
    into the app's index; returns indexer.pipeline.IndexResult. Runs in the job's thread. Videos reached
    through links leading out of the collection are refused (listed in ``job.notes``). ``engine`` names one of
    ``indexer.engines.ENGINES`` (ray: a Ray instance on this machine, or the cluster RAY_ADDRESS names).
    ``models``: further embedding spaces to add (``NAME`` or ``NAME@TAG``, as ``mvk index --model``)."""
    from indexer.engines import EngineOptions, ModelSpec, check_engine, make_executor
    from indexer.models import load_models
    from indexer.pipeline import index_collection, select_sites
    from indexer.settings import read_root_manifest, settings_from_manifest
    from app.security import ENV_OUTSIDE_LINKS
    from mvk_tools.layout import discover

    settings = settings_from_manifest(read_root_manifest(cfg.index), random_weights=cfg.random_weights)
    job.update(message="reading the collection")
    allow = os.environ.get(ENV_OUTSIDE_LINKS) == "1"          # the app was started with --follow-outside-links
    catalog, refused = (discover(folder), []) if allow else outside_links(discover(folder), cfg.collection)
    for line in refused:
        job.note(line)
    select_sites(catalog, sites)
    check_engine(engine)
    from indexer.spaces import parse_model
    further = [parse_model(m) for m in models]
    job.update(message="loading the models")
    encoder, extractor = load_models(objects=settings.config.objects, model=settings.model,
                                     pretrained=settings.pretrained, clip_checkpoint=settings.clip_checkpoint,
                                     backbone=settings.backbone, checkpoint=settings.checkpoint,
                                     random_weights=settings.random_weights, device=cfg.device)
    spec = ModelSpec(settings.model, settings.pretrained, settings.clip_checkpoint, settings.backbone,
                     settings.checkpoint, settings.random_weights)
    executor = make_executor(engine, spec, encoder, extractor, EngineOptions(collection=str(cfg.collection)))
    from indexer.models import load_encoder
    spaces = [load_encoder(model=name, pretrained=tag, random_weights=settings.random_weights, device=cfg.device)
              for name, tag in further]
    job.update(message="models loaded: indexing")
    config = dataclasses.replace(settings.config, follow_outside_links=allow)
    return index_collection(cfg.collection, cfg.index, encoder=encoder, extractor=extractor, config=config,
                            sites=sites, rebuild=rebuild, catalog=catalog, progress=JobProgress(job),
                            executor=executor, spaces=spaces)

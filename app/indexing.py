"""The Index page's work: describe the shards, and add or rebuild dive sites in a background thread with the
same models and settings as the rest of the index (read back from its manifest)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from app.state import AppConfig, Job
from indexer.progress import Progress


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


def video_errors(index) -> pd.DataFrame:
    """Per-video errors recorded in the shard manifests (the videos that could not be indexed)."""
    rows = []
    for site, shard in sorted(index.shards.items()):
        errors = (shard.manifest or {}).get("errors") or {}
        items = errors.items() if isinstance(errors, dict) else ((e.get("video", ""), e) for e in errors)
        for video, message in items:
            rows.append({"site": site, "video": str(video), "error": str(message)})
    return pd.DataFrame(rows, columns=["site", "video", "error"])


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
                                + (f" ({result.error})" if result.error else ""))

    def site_finished(self, result) -> None:
        self.job.update(message=f"{result.site}: {result.status}, {result.frames} frames, {result.objects} objects"
                                + (f" ({result.error})" if result.error else ""))


def build_sites(cfg: AppConfig, folder: Path, sites: list[str] | None, *, rebuild: bool, job: Job):
    """Index ``sites`` of the collection found in ``folder`` (a security-checked folder inside the collection)
    into the app's index; returns indexer.pipeline.IndexResult. Runs in the job's thread."""
    from indexer.pipeline import index_collection, load_models
    from indexer.settings import read_root_manifest, settings_from_manifest
    from mvk_tools.layout import discover

    settings = settings_from_manifest(read_root_manifest(cfg.index), random_weights=cfg.random_weights)
    job.update(message="reading the collection")
    catalog = discover(folder)
    job.update(message="loading the models")
    encoder, extractor = load_models(objects=settings.config.objects, model=settings.model,
                                     pretrained=settings.pretrained, clip_checkpoint=settings.clip_checkpoint,
                                     backbone=settings.backbone, checkpoint=settings.checkpoint,
                                     random_weights=settings.random_weights, device=cfg.device)
    return index_collection(cfg.collection, cfg.index, encoder=encoder, extractor=extractor, config=settings.config,
                            sites=sites, rebuild=rebuild, catalog=catalog, progress=JobProgress(job))

"""Further embedding spaces: every site's shard gets the frame and object vectors of each space the index records
(``search.spaces``), computed from the shard's own rows, so a space added later holds exactly what a space built
together with the first one would.

    plan (driver)     which sites lack which spaces (the shard manifest lists the spaces it has)
    work (per video)  the video's frames from the same frame source as the first space (checked frame by frame
                      against the stored rows), its objects from their stored masks -> one part per space
    assemble          a new shard version: the first space's files linked, the new tables added, swapped in

Segmentation is not run again: the objects are the shard's. Masks are stored at thumbnail size and are brought
back to the decoded frame's size (nearest) for pooling or cropping, so a further space's object vectors come from
the same masks at that resolution. Parts are committed per (space, video) under ``.work/<site>/spaces/`` with a
digest of the video's rows, so a killed run resumes at the next video, and re-assembling a site after one video
changed recomputes only that video in every space.
"""
from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from indexer.embed import embed_batch
from indexer.identity import encoder_identity, pool_features
from indexer.parts import SiteWork, atomic_write, read_json, safe_key, write_json
from indexer.progress import Progress
from indexer.tasks import IndexConfig, SiteResult, VideoResult, VideoTask, WorkSettings
from search.errors import InputError, MvkError
from search.spaces import Space, space_name

if TYPE_CHECKING:
    from search.encoder import Encoder


@dataclass(frozen=True)
class SpaceModel:
    """A further space with the encoder that fills it and the settings its vectors are made with (its own object
    mode: crops when the tower has no dense path; its own dense input side)."""
    space: Space
    encoder: "Encoder"
    config: IndexConfig


def space_model(encoder: "Encoder", config: IndexConfig) -> tuple[SpaceModel, str | None]:
    """The space ``encoder`` fills under ``config``, and a note when its objects fall back to crops (``pool`` asked
    of a tower with no text-aligned per-patch features)."""
    own = replace(config, dense_size=None)
    note = None
    if own.objects == "pool" and encoder.aligned_variant() is None:
        own = replace(own, objects="crop")
        note = (f"{encoder.model_name} has no per-patch features in its joint space: its object vectors are "
                f"crops (one pass per object)")
    identity = encoder_identity(encoder, own)
    space = Space(space_name(identity), identity, own.objects, pool_features(encoder, own))
    return SpaceModel(space, encoder, own), note


@dataclass(frozen=True)
class StoredObject:
    """An object of the shard, as ``embed_batch`` takes it: its mask at the frame's size and its box there."""
    mask: np.ndarray
    bbox: tuple[int, int, int, int]


def object_masks(objects: pd.DataFrame, frame_row: int, size: tuple[int, int], src: tuple[int, int]
                 ) -> list[StoredObject]:
    """The objects of one frame (rows of ``objects`` with that ``frame_row``), masks decoded and brought to
    ``size`` (w, h) by nearest neighbour, boxes scaled from source pixels ``src`` (w, h) to ``size``."""
    from search import rle
    rows = objects[objects["frame_row"].to_numpy(np.int64) == frame_row]
    if not len(rows):
        return []
    big = [rle.decode_at(m, size[1], size[0]) for m in rows["mask_rle"]]
    sx, sy = size[0] / max(src[0], 1), size[1] / max(src[1], 1)
    boxes = np.round(rows[["x0", "y0", "x1", "y1"]].to_numpy(np.float64) * [sx, sy, sx, sy]).astype(int)
    return [StoredObject(m, tuple(int(v) for v in b)) for m, b in zip(big, boxes)]


def rows_digest(frames: pd.DataFrame, objects: pd.DataFrame) -> str:
    """What a video's vectors in a space are computed from: its frame numbers and times, its objects' frame rows,
    boxes and masks (a part is reused only while these are unchanged)."""
    h = hashlib.sha1()
    h.update(frames["frame_index"].to_numpy(np.int64).tobytes())
    h.update(np.round(frames["time"].to_numpy(np.float64), 6).tobytes())
    if len(objects):
        h.update(objects[["frame_row", "x0", "y0", "x1", "y1"]].to_numpy(np.int64).tobytes())
        h.update("\0".join(map(str, objects["mask_rle"])).encode())
    return h.hexdigest()


def space_key(model: SpaceModel) -> str:
    """A hash of everything that decides a space's vectors (its identity, object mode and dense features)."""
    data = {"space": model.space.record(), "margin": model.config.crop_margin, "fit": model.config.frame_fit}
    return hashlib.sha1(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


class SpaceParts:
    """One site's committed per-video vectors of further spaces: ``<key>.npz`` and the record ``<key>.json``
    (written last) under ``.work/<site>/spaces/<space>/``."""

    def __init__(self, work: SiteWork, model: SpaceModel):
        from search.spaces import slug
        self.path = work.path / "spaces" / slug(model.space.name)
        self.key = space_key(model)

    def load(self, video_key: str, digest: str, n_frames: int, n_objects: int) -> tuple[np.ndarray, np.ndarray] | None:
        record = read_json(self.path / f"{video_key}.json")
        if not record or record.get("digest") != digest or record.get("space") != self.key:
            return None
        try:
            with np.load(self.path / f"{video_key}.npz") as data:
                fv, ov = data["frames"], data["objects"]
        except (OSError, ValueError, KeyError):
            return None
        if len(fv) != n_frames or len(ov) != n_objects:
            return None
        return fv, ov

    def save(self, video_key: str, digest: str, fv: np.ndarray, ov: np.ndarray) -> None:
        self.path.mkdir(parents=True, exist_ok=True)

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as fh:
                np.savez(fh, frames=fv.astype(np.float32), objects=ov.astype(np.float32))
        atomic_write(self.path / f"{video_key}.npz", write)
        write_json(self.path / f"{video_key}.json", {"digest": digest, "space": self.key,
                                                     "written": time.strftime("%Y-%m-%dT%H:%M:%S")})


def missing_spaces(root: Path, site: str, models: Sequence[SpaceModel]) -> list[SpaceModel]:
    """The spaces the site's current shard has no tables of."""
    from search import store
    have = set((store.shard_manifest(root, site) or {}).get("spaces") or {})
    return [m for m in models if m.space.name not in have]


def video_vectors(task: VideoTask, settings: WorkSettings, frames: pd.DataFrame, objects: pd.DataFrame,
                  models: Sequence[SpaceModel], progress: Progress, *, first_row: int = 0
                  ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The frame and object vectors of one video's stored rows in each of ``models``: its frames read again from
    the settings' frame source (each checked against its stored frame number), its objects from their masks
    (``first_row``: the shard row of the video's first frame, which the objects' ``frame_row`` counts from)."""
    from indexer.work import frames_of
    rows = objects.assign(frame_row=objects["frame_row"].to_numpy(np.int64) - first_row)
    wanted = frames["frame_index"].to_numpy(np.int64)
    src = (int(frames["width"].iat[0]), int(frames["height"].iat[0]))
    out = {m.space.name: ([], []) for m in models}
    batch_size = max(1, settings.config.batch_size)
    position = 0
    batch: list = []

    def flush() -> None:
        images = [f.image for f in batch]
        objs = [object_masks(rows, position - len(batch) + i, (im.shape[1], im.shape[0]), src)
                for i, im in enumerate(images)]
        for m in models:
            emb = embed_batch(m.encoder, images, objs, m.config.objects, fit=m.config.frame_fit,
                              margin=m.config.crop_margin, batch_size=batch_size)
            out[m.space.name][0].append(emb.frame_vectors)
            out[m.space.name][1].append(emb.object_vectors)
        progress.frames_done(len(batch))
        batch.clear()

    for frame in frames_of(task, settings):
        if position >= len(wanted) or int(frame.index) != int(wanted[position]):
            got = "more frames than" if position >= len(wanted) else f"frame {frame.index} where the index has " \
                                                                      f"frame {wanted[position]}"
            raise MvkError(f"{task.rel}: the video gives {got} the index holds: it changed since it was indexed "
                           f"(mvk index --rebuild --site {task.site} redoes the site)")
        batch.append(frame)
        position += 1
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    if position != len(wanted):
        raise MvkError(f"{task.rel}: the video gives {position} frames, the index holds {len(wanted)}: it changed "
                       f"since it was indexed (mvk index --rebuild --site {task.site} redoes the site)")
    result = {}
    for m in models:
        fv, ov = out[m.space.name]
        result[m.space.name] = (np.concatenate(fv) if fv else np.zeros((0, m.space.dim), np.float32),
                                np.concatenate(ov) if ov else np.zeros((0, m.space.dim), np.float32))
    return result


@dataclass(frozen=True)
class SpaceJob:
    """One video's work in the further spaces it lacks: the task that reads its frames, its stored frame rows,
    its object rows (``frame_row`` counted from the video's first frame) and the names of the spaces to fill.
    Plain data, so an engine can ship it to a worker."""
    task: VideoTask
    frames: pd.DataFrame
    objects: pd.DataFrame
    spaces: tuple[str, ...]


SpaceVectors = dict[str, tuple[np.ndarray, np.ndarray]]
SpaceRunner = Callable[[Sequence[SpaceJob], WorkSettings, Sequence[SpaceModel], Progress],
                       Iterator["SpaceVectors | MvkError"]]
"""``(jobs, settings, models, progress) -> per job in order: its vectors per space, or the input error that
stopped it``: how an engine runs the further spaces' per-video work (``run_local`` here; the Ray engine's
``RayExecutor.run_spaces`` on its workers)."""


def run_job(job: SpaceJob, settings: WorkSettings, models: Sequence[SpaceModel], progress: Progress
            ) -> "SpaceVectors | MvkError":
    """One job's vectors in each of its spaces, or the input error that stopped it."""
    try:
        return video_vectors(job.task, settings, job.frames, job.objects,
                             [m for m in models if m.space.name in job.spaces], progress)
    except MvkError as exc:
        return exc


def run_local(jobs: Sequence[SpaceJob], settings: WorkSettings, models: Sequence[SpaceModel],
              progress: Progress) -> Iterator["SpaceVectors | MvkError"]:
    """The further spaces' work in this process, one video after another, with the driver's encoders."""
    for job in jobs:
        progress.video_started(job.task.site, job.task.video_id, len(job.frames))
        yield run_job(job, settings, models, progress)


def embed_site(root: Path, site: str, models: Sequence[SpaceModel], tasks: dict[str, VideoTask],
               settings: WorkSettings, progress: Progress, runner: SpaceRunner = run_local) -> SiteResult:
    """Add the spaces of ``models`` the site's shard lacks (``tasks``: the site's videos by their relative path,
    as the plan made them): committed parts are reused, the other videos go to ``runner`` as ``SpaceJob``s.
    Returns the site's result: ``written`` with one VideoResult per video, ``up-to-date`` when nothing was
    missing, or ``failed`` (the shard is then kept as it was, without those spaces)."""
    from search import store
    from search.writer import write_spaces
    todo = missing_spaces(root, site, models)
    manifest = store.shard_manifest(root, site) or {}
    result = SiteResult(site, "up-to-date", frames=int(manifest.get("frames", 0) or 0),
                        objects=int(manifest.get("objects", 0) or 0))
    if not todo or not manifest:
        return result
    shard = store.open_shard(root, site)
    frames, objects = shard.frames, shard.objects
    work = SiteWork(root, site)
    parts = {m.space.name: SpaceParts(work, m) for m in todo}
    vectors = {m.space.name: (np.zeros((len(frames), m.space.dim), np.float32),
                              np.zeros((len(objects), m.space.dim), np.float32)) for m in todo}
    video_of_frame = frames["video_path"].astype(str).to_numpy()
    object_frame = objects["frame_row"].to_numpy(np.int64)
    names = list(dict.fromkeys(video_of_frame))
    progress.site_started(f"{site}: space {', '.join(m.space.name for m in todo)}", len(names), len(frames))
    jobs: list[SpaceJob] = []
    where: dict[str, tuple[np.ndarray, np.ndarray, str]] = {}
    results: dict[str, VideoResult] = {}
    for rel in names:
        f_rows = np.flatnonzero(video_of_frame == rel)
        o_rows = np.flatnonzero(np.isin(object_frame, f_rows))
        fr, ob = frames.iloc[f_rows], objects.iloc[o_rows]
        digest, key = rows_digest(fr, ob), safe_key(rel)
        results[rel] = vr = VideoResult(site, str(fr["video_id"].iat[0]), rel, "resumed", frames=len(fr),
                                        objects=len(ob), expected_frames=len(fr))
        where[rel] = (f_rows, o_rows, digest)
        need = []
        for m in todo:
            got = parts[m.space.name].load(key, digest, len(fr), len(ob))
            if got is None:
                need.append(m.space.name)
            else:
                vectors[m.space.name][0][f_rows], vectors[m.space.name][1][o_rows] = got
        if not need:
            progress.video_finished(vr)
        elif rel not in tasks:
            vr.status, vr.error = "failed", (f"{rel}: the video is no longer in the collection (its rows stay in the "
                                             f"index; mvk index --rebuild --site {site} drops them)")
            progress.video_finished(vr)
        else:
            local = ob.assign(frame_row=ob["frame_row"].to_numpy(np.int64) - int(f_rows[0]))
            jobs.append(SpaceJob(tasks[rel], fr.reset_index(drop=True), local.reset_index(drop=True), tuple(need)))
    t = time.perf_counter()
    for job, got in zip(jobs, runner(jobs, settings, todo, progress)):
        vr = results[job.task.rel]
        f_rows, o_rows, digest = where[job.task.rel]
        if isinstance(got, MvkError):
            vr.status, vr.error = "failed", str(got)
        else:
            vr.status = "indexed"
            for name in job.spaces:
                fv, ov = got[name]
                parts[name].save(safe_key(job.task.rel), digest, fv, ov)
                vectors[name][0][f_rows], vectors[name][1][o_rows] = fv, ov
        vr.seconds = {"object_embedding": time.perf_counter() - t}
        t = time.perf_counter()
        progress.video_finished(vr)
    result.videos = [results[rel] for rel in names]
    failed = [v for v in result.videos if v.status == "failed"]
    if failed:
        result.status = "failed"
        result.error = (f"space {', '.join(m.space.name for m in todo)} not added: {len(failed)} video(s) could not "
                        f"be embedded (the shard is served from its other spaces meanwhile)")
    else:
        result.shard = write_spaces(root, site, vectors, based_on=shard.path.name)
        result.status = "written"
    progress.site_finished(result)
    return result


def parse_model(value: str) -> tuple[str, str | None]:
    """``NAME`` or ``NAME@TAG`` -> (name, tag or None); InputError for an empty name or tag."""
    name, at, tag = value.partition("@")
    if not name.strip() or (at and not tag.strip()):
        raise InputError(f"--model {value!r}: give NAME or NAME@TAG (e.g. ViT-B-16-SigLIP@webli)")
    return name.strip(), (tag.strip() if at else None)


def check_distinct(models: Sequence[SpaceModel], first: Space | None = None) -> None:
    """InputError when the same model is given twice (each --model is one embedding space)."""
    seen = [first.name] if first is not None else []
    for m in models:
        if m.space.name in seen:
            raise InputError(f"the model {m.space.name} is given twice: each --model is one embedding space")
        seen.append(m.space.name)

"""The indexing pipeline: a collection -> one search.store shard per dive site, resumably.

For each site, for each video: sampled frames (``mvk_tools.video.iter_frames``) -> objects
(``indexer.segment.segment_stream``; skipped when objects are ``none``) -> frame and object vectors
(``indexer.embed``) -> a part in the work folder (``indexer.parts``). When every video of the site is
settled, the parts are assembled in catalog order and ``search.store.write_shard`` swaps the shard in.

Resumability: parts are committed per video (temporary names + renames, a commit record last), so a run
killed at any moment restarts at the first unfinished video, with no duplicate rows, and nothing is ever
visible to searches until the site's shard is swapped in whole. A changed source file (size, mtime) is
redone; a site whose shard already matches its sources is left alone (its files are not touched), so
adding a site touches no other shard. ``rebuild`` recomputes a site aside; the old shard is served until
the new one is swapped in, and a failed rebuild leaves it. Per-video failures are recorded in the shard
manifest and in the result; the other videos go on.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import torch

from indexer.embed import OBJECT_MODES, POOL_VARIANTS, Fit, ObjectMode, embed_batch
from indexer.parts import Part, SiteWork, safe_key, source_signature
from indexer.progress import Progress
from search.errors import InputError, ModelMismatchError, MvkError

if TYPE_CHECKING:
    from indexer.backbone import QKExtractor
    from mvk_tools.layout import SelectedImage
    from indexer.segment import SegmentedFrame, SegmentParams
    from search.encoder import Encoder

STAGES = ("decode", "segmentation", "object_embedding", "frame_embedding", "write")
PIPELINE_VERSION = 1
SELECTED_SOURCE = "images located by content (v1)"


@dataclass(frozen=True)
class IndexConfig:
    """How frames are sampled, objects embedded and shards written (everything but the models)."""
    every_seconds: float = 1.0            # one frame per this many seconds (ignored with selected_frames)
    selected_frames: bool = False         # use information/selected_frames/ when a video has them
    objects: ObjectMode = "pool"          # crop | pool | pool-raw | none (frame-only index)
    frame_fit: Fit = "letterbox"          # how frames meet CLIP's square input
    crop_margin: float = 0.1              # crop mode: margin around an object's box, times its longer side
    segment: "SegmentParams | None" = None   # None: SegmentParams() defaults
    index_type: str = "flat"              # flat | ivf-flat | ivf-pq | hnsw
    batch_size: int = 16                  # frames embedded per CLIP batch
    decode_max_side: int | None = 512     # frames are decoded at most this large (boxes are stored in source pixels)
    thumbnail_side: int = 256             # longest side of stored thumbnails and object masks
    dense_size: int | None = None         # pool modes: input side of the dense pass (None: CLIP's own)

    def segment_params(self) -> "SegmentParams":
        from indexer.segment import SegmentParams
        return self.segment if self.segment is not None else SegmentParams()

    def sampling(self) -> dict:
        out = {"every_seconds": self.every_seconds, "selected_frames": self.selected_frames,
               "decode_max_side": self.decode_max_side}
        if self.selected_frames:       # the selected images themselves, placed in their video by content
            out["selected_source"] = SELECTED_SOURCE
        return out


@dataclass
class VideoResult:
    site: str
    video_id: str
    video_path: str                      # relative to the collection root
    status: Literal["indexed", "resumed", "failed"]
    frames: int = 0
    objects: int = 0
    error: str | None = None
    expected_frames: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    note: str | None = None


@dataclass
class SiteResult:
    site: str
    status: Literal["written", "up-to-date", "failed"]
    videos: list[VideoResult] = field(default_factory=list)
    frames: int = 0                      # rows in the site's shard
    objects: int = 0
    shard: Path | None = None
    error: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)     # e.g. the broken shard files this run rewrote

    @property
    def errors(self) -> dict[str, str]:
        return {v.video_path: v.error for v in self.videos if v.error}


@dataclass
class IndexResult:
    """What ``index_collection`` did: per site and per video, with seconds per stage."""
    root: Path
    sites: list[SiteResult]
    seconds: dict[str, float]            # per stage, summed over what was computed in this run
    wall_seconds: float
    frames_computed: int                 # frames decoded and embedded in this run (resumed ones excluded)
    random_weights: bool
    notes: list[str] = field(default_factory=list)   # what search.store.recover repaired or migrated

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
# models and manifests

def load_models(*, objects: ObjectMode = "pool", model: str | None = None, pretrained: str | None = None,
                clip_checkpoint: str | Path | None = None, backbone: str | None = None,
                checkpoint: str | Path | None = None, random_weights: bool = False,
                device: str = "cpu") -> tuple["Encoder", "QKExtractor | None"]:
    """The CLIP encoder and (unless objects are ``none``) the segmentation backbone, on ``device``."""
    from search import encoder as enc
    encoder = enc.load_encoder(model or enc.DEFAULT_MODEL,
                               pretrained if (pretrained is not None or model) else enc.DEFAULT_PRETRAINED,
                               checkpoint=clip_checkpoint, random_weights=random_weights, device=device)
    extractor = None
    if objects != "none":
        from indexer import backbone as bb
        extractor = bb.load_backbone(backbone or bb.DEFAULT_BACKBONE, checkpoint=checkpoint,
                                     random_weights=random_weights, device=device)
    return encoder, extractor


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
    variant = POOL_VARIANTS[config.objects]
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


def _setting(key: str, value: Any) -> str:
    """A recorded indexing setting in a mismatch message."""
    if key == "pool_features" and isinstance(value, dict):
        return f"{value.get('variant')} features at {value.get('size')} px"
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def _check_indexing(on_disk: dict, wanted: dict, root: Path) -> None:
    """Refuse to extend an index whose objects (and their dense features), sampling or backbone differ
    from this run's."""
    have = recorded_indexing(on_disk)
    if have is None:
        return
    have = json.loads(json.dumps(have, default=str))
    want = json.loads(json.dumps(wanted, default=str))
    diff = sorted(k for k in set(have) | set(want) if have.get(k) != want.get(k))
    if diff:
        parts = "; ".join(f"{k}: index has {_setting(k, have.get(k))}, this run {_setting(k, want.get(k))}"
                          for k in diff)
        if "pool_features" in diff:
            parts += " (clearclip: --objects pool, raw: --objects pool-raw, px: --dense-size)"
        raise ModelMismatchError(f"index {root} was built with other settings ({parts}); "
                                 "index into a new --index folder or use the same settings")


# --------------------------------------------------------------------------------------------------------
# one video

class _Clock:
    """Seconds per stage; a timed iterator can exclude the time of an inner stage it pulls from."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {s: 0.0 for s in STAGES}

    def timed(self, items: Iterable[Any], stage: str, inner: str | None = None) -> Iterator[Any]:
        it = iter(items)
        while True:
            inner_before = self.seconds[inner] if inner else 0.0
            t = time.perf_counter()
            try:
                item = next(it)
            except StopIteration:
                return
            finally:
                nested = (self.seconds[inner] - inner_before) if inner else 0.0
                self.seconds[stage] += time.perf_counter() - t - nested
            yield item


def thumbnail_jpeg(image: np.ndarray, side: int = 256, quality: int = 85) -> tuple[bytes, tuple[int, int]]:
    """JPEG bytes of the image with its longest side at most ``side``, and that size (w, h)."""
    from PIL import Image
    im = Image.fromarray(image)
    im.thumbnail((side, side), Image.BILINEAR)
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality)
    return buf.getvalue(), im.size


def reduce_masks(masks: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(n, h, w) bool at ``size`` (w, h) by area: a cell is in when at least half of it is; a mask that would
    vanish keeps every cell it touches."""
    if masks.shape[0] == 0:
        return np.zeros((0, size[1], size[0]), dtype=bool)
    m = torch.from_numpy(np.ascontiguousarray(masks, dtype=np.float32))[:, None]
    cover = torch.nn.functional.adaptive_avg_pool2d(m, (size[1], size[0]))[:, 0]
    out = cover >= 0.5
    vanished = ~out.flatten(1).any(dim=1)
    out[vanished] = cover[vanished] > 0
    return out.numpy()


def _rows_for_batch(batch: Sequence["SegmentedFrame"], *, video: dict, frame_row0: int,
                    src_size: tuple[int, int], thumb_side: int, with_objects: bool
                    ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The frame rows (with thumbnails) and object rows (boxes scaled to source pixels, masks as RLE at
    thumbnail size) of a batch of frames; object ``frame_row`` counts from ``frame_row0``."""
    from search import rle
    from search.store import FRAME_COLUMNS, OBJECT_COLUMNS
    h, w = batch[0].frame.image.shape[:2]            # the frames of one video share a size
    sw, sh = src_size if src_size[0] > 0 and src_size[1] > 0 else (w, h)
    thumbs = [thumbnail_jpeg(sf.frame.image, thumb_side) for sf in batch]
    frames = pd.DataFrame({**{k: [v] * len(batch) for k, v in video.items()},
                           "frame_index": [int(sf.frame.index) for sf in batch],
                           "time": [float(sf.frame.time) for sf in batch],
                           "width": int(sw), "height": int(sh), "thumbnail": [t for t, _ in thumbs]},
                          columns=list(FRAME_COLUMNS))
    from indexer.selected import extra_columns
    for name, values in (extra_columns([sf.frame for sf in batch]) or {}).items():
        frames[name] = values
    objs = [o for sf in batch for o in sf.objects] if with_objects else []
    if not objs:
        return frames, pd.DataFrame(columns=list(OBJECT_COLUMNS))
    counts = [len(sf.objects) for sf in batch]
    small = reduce_masks(np.stack([np.asarray(o.mask, dtype=bool) for o in objs]), thumbs[0][1])
    boxes = np.array([o.bbox for o in objs], dtype=np.float64) * np.array([sw / w, sh / h, sw / w, sh / h])
    lo = np.floor(boxes[:, :2]).astype(np.int64)
    hi = np.minimum(np.ceil(boxes[:, 2:]), [sw, sh]).astype(np.int64)
    objects = pd.DataFrame({
        "frame_row": np.repeat(np.arange(len(batch)) + frame_row0, counts),
        "track_id": np.array([o.track_id for o in objs], dtype=np.int64),
        "level": np.array([o.level for o in objs], dtype=np.int64),
        "x0": lo[:, 0], "y0": lo[:, 1], "x1": hi[:, 0], "y1": hi[:, 1],
        "area": np.array([o.area for o in objs], dtype=np.float64),
        "is_background": np.array([o.is_background for o in objs], dtype=bool),
        "mask_rle": [rle.encode(m) for m in small]}, columns=list(OBJECT_COLUMNS))
    return frames, objects


def _chunks(items: Iterable[Any], n: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch


@dataclass
class _Plain:
    """A frame without objects, shaped like a SegmentedFrame (frame-only indexing skips segmentation)."""
    frame: Any
    objects: tuple = ()


def index_video(path: str | Path, *, encoder: "Encoder", extractor: "QKExtractor | None", config: IndexConfig,
                video: dict, src_size: tuple[int, int] = (0, 0), selected: Sequence["SelectedImage"] | None = None,
                clock: _Clock | None = None, progress: Progress | None = None) -> Part:
    """Rows and vectors of one video. ``video`` holds the constant frame columns (site, video_id, video_path,
    place, date); ``selected`` indexes those selected images (``indexer.selected``) instead of one frame per
    ``config.every_seconds``."""
    from mvk_tools.video import iter_frames
    from search.store import FRAME_COLUMNS, OBJECT_COLUMNS
    clock = clock or _Clock()
    progress = progress or Progress()
    if selected:
        from indexer.selected import selected_frames
        frames = selected_frames(path, selected, max_side=config.decode_max_side)
    else:
        frames = iter_frames(path, every_seconds=config.every_seconds, max_side=config.decode_max_side)
    decoded = clock.timed(frames, "decode")
    with_objects = config.objects != "none"
    if with_objects:
        if extractor is None:
            raise ValueError("objects need a segmentation backbone (extractor)")
        from indexer.segment import segment_stream
        stream: Iterable[Any] = clock.timed(segment_stream(decoded, extractor, config.segment_params()),
                                            "segmentation", inner="decode")
    else:
        stream = (_Plain(f) for f in decoded)

    frame_rows: list[pd.DataFrame] = []
    object_rows: list[pd.DataFrame] = []
    n_frames = 0
    fvecs: list[np.ndarray] = []
    ovecs: list[np.ndarray] = []
    for batch in _chunks(stream, max(1, config.batch_size)):
        emb = embed_batch(encoder, [sf.frame.image for sf in batch], [sf.objects for sf in batch],
                          config.objects, fit=config.frame_fit, margin=config.crop_margin,
                          batch_size=config.batch_size, dense_size=config.dense_size)
        for k, v in emb.seconds.items():
            clock.seconds[k] += v
        t = time.perf_counter()
        fr, ob = _rows_for_batch(batch, video=video, frame_row0=n_frames, src_size=src_size,
                                 thumb_side=config.thumbnail_side, with_objects=with_objects)
        clock.seconds["write"] += time.perf_counter() - t
        n_frames += len(fr)
        frame_rows.append(fr)
        object_rows.append(ob)
        fvecs.append(emb.frame_vectors)
        ovecs.append(emb.object_vectors)
        progress.frames_done(len(batch))
    dim = encoder.dim
    objects = [o for o in object_rows if len(o)]
    return Part(pd.concat(frame_rows, ignore_index=True) if frame_rows else pd.DataFrame(columns=list(FRAME_COLUMNS)),
                pd.concat(objects, ignore_index=True) if objects else pd.DataFrame(columns=list(OBJECT_COLUMNS)),
                np.concatenate(fvecs) if fvecs else np.zeros((0, dim), np.float32),
                np.concatenate(ovecs) if ovecs else np.zeros((0, dim), np.float32))


# --------------------------------------------------------------------------------------------------------
# sites

def _expected_frames(row: pd.Series, config: IndexConfig, selected: Sequence["SelectedImage"] | None) -> int:
    if selected:
        return len(selected)
    duration = row.get("duration")
    return int(math.ceil(float(duration) / config.every_seconds)) if not _missing(duration) and duration > 0 else 0


def _missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _str(value: Any) -> str:
    return "" if _missing(value) else str(value)


def _int(value: Any) -> int:
    return 0 if _missing(value) else int(value)


def _relative(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return path.as_posix()




def _selected_signature(selected: Sequence["SelectedImage"]) -> str:
    """A short hash of a video's selected images (names, sizes, mtimes): a changed set redoes the video."""
    h = hashlib.sha1()
    for im in selected:
        try:
            st = im.path.stat()
            h.update(f"{im.name}:{st.st_size}:{st.st_mtime_ns};".encode())
        except OSError as exc:
            h.update(f"{im.name}:{exc};".encode())
    return h.hexdigest()[:16]


@dataclass
class _Planned:
    """One video of a site, as this run sees it."""
    row: pd.Series
    path: Path
    rel: str                          # path relative to the collection: the video's name in manifests
    key: str                          # its part files' name in the work folder
    signature: dict                   # size and mtime, or {"error": ...} when it cannot be stat'ed
    selected: list["SelectedImage"] | None   # selected frames, or None to sample every N seconds
    note: str | None


def index_site(root: Path, collection: Path, site: str, videos: pd.DataFrame, *, encoder: "Encoder",
               extractor: "QKExtractor | None", config: IndexConfig, fp: str, rebuild: bool = False,
               clock: _Clock | None = None, progress: Progress | None = None) -> SiteResult:
    """Index one site's videos (resuming from finished parts) and swap its shard in."""
    work = SiteWork(root, site)
    with work.lock():
        return _index_site_locked(root, collection, site, videos, work, encoder=encoder, extractor=extractor,
                                  config=config, fp=fp, rebuild=rebuild, clock=clock or _Clock(),
                                  progress=progress or Progress())


def _index_site_locked(root: Path, collection: Path, site: str, videos: pd.DataFrame, work: SiteWork, *,
                       encoder: "Encoder", extractor: "QKExtractor | None", config: IndexConfig, fp: str,
                       rebuild: bool, clock: _Clock, progress: Progress) -> SiteResult:
    from search import store
    work.prepare()
    videos = videos.sort_values("video_id", kind="stable")
    plan: list[_Planned] = []
    for _, row in videos.iterrows():
        path = Path(row["path"])
        rel = _relative(path, collection)
        try:
            sig = source_signature(path)
        except OSError as exc:
            sig = {"error": str(exc)}
        selected = None
        note = None
        if config.selected_frames:
            from mvk_tools.layout import selected_images
            selected = selected_images(collection, site, str(row["video_id"])) or None
            if selected is None:
                note = f"no selected frames: sampled every {config.every_seconds:g} s"
            else:
                sig = {**sig, "selected": _selected_signature(selected)}
        plan.append(_Planned(row, path, rel, safe_key(rel), sig, selected, note))

    sources = {p.rel: p.signature for p in plan}
    shard_manifest = store.shard_manifest(root, site)
    matches = (not rebuild and work.pending is None and shard_manifest is not None
               and shard_manifest.get("fingerprint") == fp and shard_manifest.get("sources") == sources
               and shard_manifest.get("index_type") == config.index_type)
    # every file against its checksum (a broken shard is rewritten from the parts and the repair noted)
    broken = store.verify_shard(root, site) if matches or (shard_manifest is None and
                                                           (root / "sites" / site).exists()) else []
    if matches and not broken:
        result = SiteResult(site, "up-to-date", frames=int(shard_manifest.get("frames", 0) or 0),
                            objects=int(shard_manifest.get("objects", 0) or 0), shard=root / "sites" / site)
        progress.site_finished(result)
        return result

    work.mark_pending(rebuild=rebuild)
    expected = {p.key: _expected_frames(p.row, config, p.selected) for p in plan}
    progress.site_started(site, len(plan), sum(expected.values()))
    results: list[VideoResult] = []
    settled: dict[str, dict] = {}         # rel -> signature of videos done or failed for good
    for p in plan:
        row, path, rel, key, sig, selected, note = p.row, p.path, p.rel, p.key, p.signature, p.selected, p.note
        vid = str(row["video_id"])
        vr = VideoResult(site, vid, rel, "indexed", expected_frames=expected[key], note=note)
        rec = work.record(key, sig, fp) if "error" not in sig else None
        if rec is not None:
            vr.status = "failed" if rec.get("error") else "resumed"
            vr.frames, vr.objects, vr.error = int(rec.get("frames", 0)), int(rec.get("objects", 0)), rec.get("error")
            settled[rel] = sig
        elif "error" in sig:
            vr.status, vr.error = "failed", f"cannot read {path}: {sig['error']}"
        elif _str(row.get("error")):         # the catalog could not probe it: lasting until the file changes
            vr.status, vr.error = "failed", _str(row.get("error"))
            work.commit(key, {"video_path": rel, "source": sig, "fingerprint": fp, "frames": 0, "objects": 0,
                              "error": vr.error})
            settled[rel] = sig
        else:
            progress.video_started(site, vid, expected[key])
            before = dict(clock.seconds)
            try:
                part = index_video(path, encoder=encoder, extractor=extractor, config=config,
                                   video={"site": site, "video_id": vid, "video_path": rel,
                                          "place": _str(row.get("place")), "date": _str(row.get("date"))},
                                   src_size=(_int(row.get("width")), _int(row.get("height"))),
                                   selected=selected, clock=clock, progress=progress)
                t = time.perf_counter()
                from indexer.selected import poor_matches
                poor = poor_matches(part.frames)
                if poor:
                    vr.note = (f"{len(poor)} selected frame(s) do not match the video (kept, flagged "
                               f"match_poor): {', '.join(poor[:5])}" + (" ..." if len(poor) > 5 else ""))
                record = {"video_path": rel, "source": sig, "fingerprint": fp, "frames": len(part.frames),
                          "objects": len(part.objects), "error": None}
                if len(part.frames) == 0:
                    record["error"] = f"{rel}: no frame could be decoded"
                    work.commit(key, record)
                else:
                    work.write_part(key, part, record)
                clock.seconds["write"] += time.perf_counter() - t
                vr.frames, vr.objects, vr.error = record["frames"], record["objects"], record["error"]
                vr.status = "failed" if record["error"] else "indexed"
                settled[rel] = sig
            except MvkError as exc:      # lasting input problem (corrupt video): remembered until the file changes
                vr.status, vr.error = "failed", str(exc)
                work.commit(key, {"video_path": rel, "source": sig, "fingerprint": fp, "frames": 0,
                                  "objects": 0, "error": str(exc)})
                settled[rel] = sig
            except Exception as exc:     # anything else: reported, retried on the next run
                vr.status, vr.error = "failed", f"{type(exc).__name__}: {exc}"
            vr.seconds = {k: clock.seconds[k] - before.get(k, 0.0) for k in STAGES}
        results.append(vr)
        progress.video_finished(vr)

    result = _write_site(root, site, plan, results, settled, work, encoder=encoder, config=config, fp=fp,
                         clock=clock)
    if broken and result.status == "written":
        result.notes += [f"repaired: {b}" for b in broken]
    progress.site_finished(result)
    return result


def _write_site(root: Path, site: str, plan: list[_Planned], results: list[VideoResult], settled: dict[str, dict],
                work: SiteWork, *, encoder: "Encoder", config: IndexConfig, fp: str, clock: _Clock) -> SiteResult:
    """Assemble the parts in catalog order and swap the shard in (nothing is written when no video has rows)."""
    from search import store
    t = time.perf_counter()
    frames, objects, fvecs, ovecs = [], [], [], []
    n_frames = 0
    ok = {v.video_path for v in results if v.status in ("indexed", "resumed")}
    for p in plan:
        if p.rel not in ok:
            continue
        part = work.read_part(p.key)
        obj = part.objects.copy()
        obj["frame_row"] = obj["frame_row"].astype(np.int64) + n_frames
        frames.append(part.frames)
        if len(obj):
            objects.append(obj)
        fvecs.append(part.frame_vectors)
        ovecs.append(part.object_vectors)
        n_frames += len(part.frames)
    result = SiteResult(site, "written", videos=results)
    errors = {v.video_path: v.error for v in results if v.error}
    if n_frames == 0:
        result.status = "failed"
        result.error = "no video of this site could be indexed" + \
            ("; the previous shard is kept" if store.shard_manifest(root, site) is not None else "")
        clock.seconds["write"] += time.perf_counter() - t
        return result
    dim = encoder.dim
    frames_df = pd.concat(frames, ignore_index=True)
    objects_df = pd.concat(objects, ignore_index=True) if objects else pd.DataFrame(columns=list(store.OBJECT_COLUMNS))
    fv = np.concatenate(fvecs).astype(np.float32)
    ov = np.concatenate(ovecs).astype(np.float32) if ovecs else np.zeros((0, dim), np.float32)
    manifest = {"site": site, "frames": len(frames_df), "objects": len(objects_df), "fingerprint": fp,
                "sources": settled, "errors": errors,
                "videos": {v.video_path: {"status": v.status, "frames": v.frames, "objects": v.objects}
                           for v in results},
                "objects_mode": config.objects, "sampling": config.sampling(), "index_type": config.index_type,
                "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    result.shard = store.write_shard(root, site, frames_df, fv, objects_df, ov, manifest,
                                     index_type=config.index_type)  # type: ignore[arg-type]
    work.clear_pending()
    work.drop_others({p.key for p in plan})
    result.frames, result.objects = len(frames_df), len(objects_df)
    clock.seconds["write"] += time.perf_counter() - t
    return result


# --------------------------------------------------------------------------------------------------------
# a collection

def select_sites(catalog: pd.DataFrame, sites: Sequence[str] | None) -> list[str]:
    """The sites to index, in catalog order; InputError naming unknown ones and listing the known ones."""
    known = list(dict.fromkeys(catalog["site"].astype(str)))
    if not sites:
        return known
    unknown = [s for s in sites if s not in known]
    if unknown:
        raise InputError(f"unknown site(s) {', '.join(unknown)}; the collection has: {', '.join(known)}")
    return list(dict.fromkeys(sites))


def index_collection(collection: str | Path, index_dir: str | Path, *, encoder: "Encoder",
                     extractor: "QKExtractor | None" = None, config: IndexConfig = IndexConfig(),
                     sites: Sequence[str] | None = None, rebuild: bool = False,
                     catalog: pd.DataFrame | None = None, progress: Progress | None = None) -> IndexResult:
    """Index the chosen sites (all when ``sites`` is empty) of ``collection`` into ``index_dir``.

    Raises ModelMismatchError before any work when the index was built with another encoder, backbone or
    settings; InputError for unknown sites. Per-video and per-site failures are in the result."""
    from search import store
    if config.objects not in OBJECT_MODES:
        raise InputError(f"unknown object mode {config.objects!r}: one of {', '.join(OBJECT_MODES)}")
    if config.objects != "none" and extractor is None:
        raise InputError(f"objects mode {config.objects!r} needs a segmentation backbone")
    t0 = time.perf_counter()
    collection = Path(collection)
    root = Path(index_dir)
    if catalog is None:
        from mvk_tools.layout import discover
        catalog = discover(collection)
    chosen = select_sites(catalog, sites)
    extractor = extractor if config.objects != "none" else None
    manifest = root_manifest(encoder, extractor, config)
    root.mkdir(parents=True, exist_ok=True)
    notes = store.recover(root)
    on_disk = store.init_index(root, manifest)
    _check_indexing(on_disk, manifest["indexing"], root)
    fp = fingerprint(encoder, extractor, config)
    progress = progress or Progress()
    clock = _Clock()
    results = []
    try:
        for site in chosen:
            videos = catalog[catalog["site"].astype(str) == site]
            try:
                results.append(index_site(root, collection, site, videos, encoder=encoder, extractor=extractor,
                                          config=config, fp=fp, rebuild=rebuild, clock=clock, progress=progress))
            except MvkError as exc:
                results.append(SiteResult(site, "failed", error=str(exc)))
    finally:
        progress.close()
    computed = sum(v.frames for s in results for v in s.videos if v.status == "indexed")
    random = bool(encoder.identity().get("random_weights")) or bool(
        extractor is not None and extractor.identity().get("random_weights"))
    return IndexResult(root, results, dict(clock.seconds), time.perf_counter() - t0, computed, random, notes)

"""The per-video work stage: (VideoTask, WorkSettings) -> a committed part and its VideoResult.

Frames come from a replaceable frame source (``sampled_frames`` decodes the video); they are segmented
(``indexer.segment.segment_stream``, skipped when objects are ``none``), embedded (``indexer.embed``) and the
part is committed in the site's work folder (``indexer.parts``). ``run_video`` is pure apart from that commit
and retryable: running it twice on the same task writes the same part under the same name, so a worker that
dies and is retried, or a second engine, never duplicates rows.

Failures: an input problem that lasts (a corrupt video, an unchanged file that decodes to nothing) is
committed as a failure record and remembered until the file changes; anything else (permission denied, a file
that vanished or changed while read, an unexpected exception) is reported and retried on the next run.
"""
from __future__ import annotations

import io
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from indexer.disk import is_disk_full
from indexer.embed import embed_batch
from indexer.parts import Part, SiteWork, source_signature
from indexer.progress import Progress
from indexer.tasks import STAGES, Clock, IndexConfig, VideoResult, VideoTask, WorkSettings
from search.errors import MvkError
from search.inputs import special_kind

if TYPE_CHECKING:
    from indexer.backbone import QKExtractor
    from indexer.segment import SegmentedFrame
    from indexer.prefetch import DecodePlan
    from mvk_tools.video import Frame
    from search.encoder import Encoder


MIN_DETAIL = 256    # short side (px) a decoded frame keeps at least: CLIP's 224 input, thumbnails of 256


def decode_detail(config: IndexConfig) -> int:
    """The short side the models need from a decoded frame: the segmentation input, the dense pass, CLIP's."""
    return max(MIN_DETAIL, config.segment_params().short_side, config.dense_size or 0)


def sampled_frames(task: VideoTask, config: IndexConfig) -> Iterator["Frame"]:
    """The default frame source: the task's selected images located in its video (``indexer.selected``), or
    one decoded frame per ``config.every_seconds``."""
    from mvk_tools.video import iter_frames
    if task.selected:
        from indexer.selected import selected_frames
        return selected_frames(task.path, task.selected, max_side=config.decode_max_side)
    return iter_frames(task.path, every_seconds=config.every_seconds, max_side=config.decode_max_side,
                       threads=config.decode_threads, hwaccel=config.decode_device, detail=decode_detail(config))


def frames_of(task: VideoTask, settings: WorkSettings) -> Iterable["Frame"]:
    """The frames of a task from the settings' frame source (the decoder unless another one is plugged in)."""
    return (settings.frame_source or sampled_frames)(task, settings.config)


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


def segmented_chunks(frames: Iterable["Frame"], *, extractor: "QKExtractor | None", config: IndexConfig,
                     clock: Clock | None = None) -> Iterator[list[Any]]:
    """A video's frames segmented (``SegmentedFrame``s; frames without objects when objects are ``none``), in
    chunks of ``config.batch_size``: the unit that is embedded together, here and on every engine. Memory is
    bounded by the segmentation chunk and one batch, not by the length of the video."""
    clock = clock or Clock()
    decoded = clock.timed(frames, "decode")
    if config.objects != "none":
        if extractor is None:
            raise ValueError("objects need a segmentation backbone (extractor)")
        from indexer.segment import segment_stream
        stream: Iterable[Any] = clock.timed(segment_stream(decoded, extractor, config.segment_params()),
                                            "segmentation", inner="decode")
    else:
        stream = (_Plain(f) for f in decoded)
    return _chunks(stream, max(1, config.batch_size))


def embed_chunk(chunk: Sequence[Any], *, encoder: "Encoder", config: IndexConfig, video: dict, frame_row0: int,
                src_size: tuple[int, int] = (0, 0), clock: Clock | None = None) -> Part:
    """Rows and vectors of one chunk of segmented frames of a video; object rows' ``frame_row`` counts from
    ``frame_row0`` (the frames of the video before this chunk). Its ``probes`` hold the chunk's share of the
    selected frames' probe thumbnails (``join_chunks`` puts a video's together)."""
    from indexer.selected import ProbeCollector
    clock = clock or Clock()
    collector = ProbeCollector()
    collector.add([sf.frame for sf in chunk])
    probes = {"probe_images": np.stack(collector.images)} if collector.images else {}
    if collector.video is not None:
        probes["probe_frames"] = collector.video
    emb = embed_batch(encoder, [sf.frame.image for sf in chunk], [sf.objects for sf in chunk], config.objects,
                      fit=config.frame_fit, margin=config.crop_margin, batch_size=config.batch_size,
                      dense_size=config.dense_size)
    clock.add(emb.seconds)
    t = time.perf_counter()
    fr, ob = _rows_for_batch(chunk, video=video, frame_row0=frame_row0, src_size=src_size,
                             thumb_side=config.thumbnail_side, with_objects=config.objects != "none")
    clock.seconds["write"] += time.perf_counter() - t
    return Part(fr, ob, emb.frame_vectors, emb.object_vectors, probes)


def join_chunks(chunks: Sequence[Part], dim: int) -> Part:
    """One video's part from its chunks, in order (the selected frames' probes of every chunk together)."""
    from indexer.selected import ProbeCollector
    from search.store import FRAME_COLUMNS, OBJECT_COLUMNS
    collector = ProbeCollector()
    for c in chunks:
        collector.images.extend(c.probes.get("probe_images", ()))
        if "probe_frames" in c.probes:
            collector.video = c.probes["probe_frames"]
    objects = [c.objects for c in chunks if len(c.objects)]
    return Part(pd.concat([c.frames for c in chunks], ignore_index=True) if chunks
                else pd.DataFrame(columns=list(FRAME_COLUMNS)),
                pd.concat(objects, ignore_index=True) if objects else pd.DataFrame(columns=list(OBJECT_COLUMNS)),
                np.concatenate([c.frame_vectors for c in chunks]) if chunks else np.zeros((0, dim), np.float32),
                np.concatenate([c.object_vectors for c in chunks]) if chunks else np.zeros((0, dim), np.float32),
                collector.result())


def compute_part(frames: Iterable["Frame"], *, encoder: "Encoder", extractor: "QKExtractor | None",
                 config: IndexConfig, video: dict, src_size: tuple[int, int] = (0, 0), clock: Clock | None = None,
                 progress: Progress | None = None) -> Part:
    """Rows and vectors of one video from its frames (in order). ``video`` holds the constant frame columns
    (site, video_id, video_path, place, date). Seconds per stage go to ``clock``."""
    clock = clock or Clock()
    progress = progress or Progress()
    chunks: list[Part] = []
    n_frames = 0
    for chunk in segmented_chunks(frames, extractor=extractor, config=config, clock=clock):
        chunks.append(embed_chunk(chunk, encoder=encoder, config=config, video=video, frame_row0=n_frames,
                                  src_size=src_size, clock=clock))
        n_frames += len(chunk)
        progress.frames_done(len(chunk))
    return join_chunks(chunks, encoder.dim)


def transient_reason(task: VideoTask) -> str | None:
    """Why a failure of this video must not be remembered (the file cannot be read now, or it is not the file
    that was planned), or None when it is readable and unchanged, so the failure lies in its content."""
    try:
        if special_kind(os.stat(task.path).st_mode) is None:     # never open a FIFO: it would block
            with open(task.path, "rb") as fh:
                fh.read(1)
        signature = source_signature(task.path)
    except OSError as exc:
        return f"cannot read {task.path}: {exc.strerror or exc}"
    if any(signature[k] != task.signature.get(k) for k in signature):
        return f"{task.path} changed while it was read"
    return None


def counted(frames: Iterable[Any], progress: Progress | None) -> Iterator[Any]:
    """The frames, each reported to ``progress`` as decoded when the models take it."""
    for frame in frames:
        if progress is not None:
            progress.frames_decoded(1)
        yield frame


def check_catalog(task: VideoTask) -> None:
    """MvkError when the catalog could not probe the video and it is still unreadable or changed."""
    if task.catalog_error:
        reason = transient_reason(task)
        raise MvkError(task.catalog_error if reason is None else reason)


def run_video(task: VideoTask, settings: WorkSettings, *, encoder: "Encoder", extractor: "QKExtractor | None",
              frames: Iterable["Frame"] | None = None, progress: Progress | None = None,
              prefetch: "DecodePlan | None" = None) -> VideoResult:
    """Index one video and commit its part (or its lasting failure) in the site's work folder.

    ``frames`` overrides the settings' frame source. ``prefetch``: decode in a producer thread while the
    models work (``indexer.prefetch``); the decode stage's seconds are then the producer's, beside the others.
    Never raises for a bad video: the result says what happened; ``lasting`` failures are committed, the
    others retried next run."""
    clock = Clock()
    ahead = None
    part: Part | None = None
    error: BaseException | None = None
    try:
        check_catalog(task)
        source = frames if frames is not None else frames_of(task, settings)
        if prefetch is not None:
            from indexer.prefetch import Prefetch
            source = ahead = Prefetch(source, batch=prefetch.batch, depth=prefetch.depth)
        part = compute_part(counted(source, progress), encoder=encoder, extractor=extractor,
                            config=settings.config, video=task.frame_columns(), src_size=task.src_size,
                            clock=clock, progress=progress)
    except Exception as exc:
        error = exc
    finally:
        if ahead is not None:          # the producer's seconds, not the models' wait on it
            ahead.close()
            clock.seconds["decode"] = ahead.seconds
    return settle_video(task, settings, part, error, clock)


def settle_video(task: VideoTask, settings: WorkSettings, part: Part | None, error: BaseException | None,
                 clock: Clock) -> VideoResult:
    """Commit a computed video's part once, or record why it failed: an input problem (MvkError) is committed
    as a lasting failure while the file is readable and unchanged; anything else is reported and retried on
    the next run. Shared by every engine, wherever the part was computed."""
    work = SiteWork(settings.index_root, task.site)
    vr = VideoResult(task.site, task.video_id, task.rel, "indexed", expected_frames=task.expected_frames,
                     note=task.note)
    record = {"video_path": task.rel, "source": task.signature, "fingerprint": settings.fingerprint,
              "frames": 0, "objects": 0, "error": None}
    try:
        if error is not None:
            raise error
        assert part is not None
        t = time.perf_counter()
        record.update(frames=len(part.frames), objects=len(part.objects))
        if len(part.frames) == 0:
            raise MvkError(f"{task.rel}: no frame could be decoded")
        from indexer.selected import poor_matches, report
        poor = poor_matches(part.frames)
        vr.selected = record["selected"] = report(part.frames)
        if poor:
            vr.note = "; ".join(n for n in (vr.note, f"{len(poor)} selected frame(s) do not match the video "
                                            f"(kept, flagged match_poor): {', '.join(poor[:5])}"
                                            + (" ..." if len(poor) > 5 else "")) if n)
        work.write_part(task.key, part, record)
        clock.seconds["write"] += time.perf_counter() - t
        vr.frames, vr.objects = record["frames"], record["objects"]
    except MvkError as exc:         # an input problem: remembered only while the file is readable and unchanged
        reason = transient_reason(task)
        vr.status, vr.error, vr.lasting = "failed", str(exc), reason is None
        if reason is None:
            work.commit(task.key, {**record, "frames": 0, "objects": 0, "error": str(exc), "lasting": True})
        elif reason not in vr.error:
            vr.error = f"{vr.error} ({reason}; retried next run)"
    except Exception as exc:        # anything else: reported, retried on the next run
        if is_disk_full(exc):       # every later video would fail the same way: the driver stops the run
            raise
        vr.status, vr.error = "failed", f"{type(exc).__name__}: {exc}"
    vr.seconds = {k: clock.seconds[k] for k in STAGES}
    return vr

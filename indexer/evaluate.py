"""Scoring the segmentation against ground truth: DAVIS-format folders (JPEGImages/Annotations) and
``mvk synth`` collections (videos plus ``information/masks``). Every clip goes through the same path as
indexing (``segment_stream``: attention -> clustering -> masks); the masks are painted into a track-id
volume and scored with ``indexer.metrics``."""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from indexer.backbone import QKExtractor
from indexer.metrics import davis_unsupervised, fg_ari, jaccard_frames, miou
from indexer.segment import SegmentedFrame, SegmentParams, label_volume, segment_stream
from mvk_tools.video import Frame
from search.errors import InputError, MvkError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclass(frozen=True)
class EvalClip:
    name: str
    frames: Callable[[], Iterator[Frame]]       # decoded lazily
    masks: Callable[[], np.ndarray]             # (T, H, W) ground truth aligned with the frames


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def read_image(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB; InputError naming the file when it is not a readable image."""
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except (OSError, UnidentifiedImageError) as exc:
        raise InputError(f"{path}: not a readable image ({exc})") from exc


def frames_from_folder(folder: str | Path, *, every_nth: int = 1, max_frames: int | None = None) -> Iterator[Frame]:
    """The images of a folder in name order as Frames (index = position in the folder, time = index)."""
    paths = _images(Path(folder))[::every_nth]
    if not paths:
        raise InputError(f"{folder}: no .jpg or .png frames")
    for i, p in enumerate(paths[:max_frames]):
        yield Frame(index=i * every_nth, time=float(i * every_nth), image=read_image(p))


def _davis_masks(paths: list[Path]) -> np.ndarray:
    from PIL import Image
    out = []
    for p in paths:
        try:
            with Image.open(p) as img:
                a = np.asarray(img)
        except OSError as exc:
            raise InputError(f"{p}: not a readable annotation ({exc})") from exc
        if a.ndim == 3:
            a = a[..., 0]
        # DAVIS-2016: 0/255 binary; DAVIS-2017: palette indices 0..K
        out.append((a > 0).astype(np.uint8) if a.max() == 255 and len(np.unique(a)) <= 2 else a.astype(np.uint8))
    return np.stack(out)


def davis_clips(root: str | Path, *, sequences: Sequence[str] | None = None, every_nth: int = 1,
                max_frames: int | None = None) -> list[EvalClip]:
    """Sequences of a DAVIS-format folder: JPEGImages[/<res>]/<seq>/*.jpg and Annotations[/<res>]/<seq>/*.png."""
    root = Path(root)
    images, annotations = root / "JPEGImages", root / "Annotations"
    if not images.is_dir() or not annotations.is_dir():
        raise InputError(f"{root}: not a DAVIS folder (expected JPEGImages/ and Annotations/)")
    levels = [d for d in images.iterdir() if d.is_dir()]
    if levels and not any(_images(d) for d in levels):          # a resolution level such as 480p
        res = "480p" if (images / "480p").is_dir() else sorted(d.name for d in levels)[0]
        images, annotations = images / res, annotations / res
        if not annotations.is_dir():
            raise InputError(f"{root}: JPEGImages/{res} has no matching Annotations/{res}")
    available = sorted(d.name for d in images.iterdir() if d.is_dir() and (annotations / d.name).is_dir())
    chosen = list(sequences) if sequences else available
    unknown = [s for s in chosen if s not in available]
    if unknown:
        raise InputError(f"{root}: no sequence {', '.join(unknown)}; available: {', '.join(available)}")
    clips = []
    for seq in chosen:
        frame_dir, ann_dir = images / seq, annotations / seq

        def frames(frame_dir: Path = frame_dir) -> Iterator[Frame]:
            return frames_from_folder(frame_dir, every_nth=every_nth, max_frames=max_frames)

        def masks(frame_dir: Path = frame_dir, ann_dir: Path = ann_dir) -> np.ndarray:
            wanted = [p.stem for p in _images(frame_dir)[::every_nth][:max_frames]]
            by_stem = {p.stem: p for p in _images(ann_dir)}
            missing = [s for s in wanted if s not in by_stem]
            if missing:
                raise InputError(f"{ann_dir}: no annotation for frame(s) {', '.join(missing[:5])}")
            return _davis_masks([by_stem[s] for s in wanted])

        clips.append(EvalClip(seq, frames, masks))
    return clips


def synth_clips(collection: str | Path, *, every_nth: int = 1, max_frames: int | None = None) -> list[EvalClip]:
    """Every video of an ``mvk synth`` collection that has a ground-truth masks file."""
    from mvk_tools.synth import load_masks
    from mvk_tools.video import iter_frames

    root = Path(collection)
    mask_root = root / "information" / "masks"
    if not mask_root.is_dir():
        raise InputError(f"{root}: no information/masks/ folder (not an mvk synth collection)")
    clips = []
    for npz in sorted(mask_root.glob("*/*.npz")):
        site, video_id = npz.parent.name, npz.stem
        video = root / "videos" / site / f"{video_id}.mp4"
        if not video.is_file():
            raise InputError(f"{npz}: its video {video} is missing")

        def frames(video: Path = video) -> Iterator[Frame]:
            for i, f in enumerate(iter_frames(video, every_nth=every_nth)):
                if max_frames is not None and i >= max_frames:
                    return
                yield f

        def masks(site: str = site, video_id: str = video_id) -> np.ndarray:
            return load_masks(root, site, video_id)

        clips.append(EvalClip(f"{site}/{video_id}", frames, masks))
    if not clips:
        raise InputError(f"{root}: no ground-truth masks under information/masks/")
    return clips


def eval_clips(path: str | Path, *, sequences: Sequence[str] | None = None, every_nth: int = 1,
               max_frames: int | None = None) -> list[EvalClip]:
    """DAVIS folder or synth collection, whichever ``path`` is."""
    path = Path(path)
    if not path.is_dir():
        raise InputError(f"{path}: not a folder (expected a DAVIS folder or an mvk synth collection)")
    if (path / "JPEGImages").is_dir():
        return davis_clips(path, sequences=sequences, every_nth=every_nth, max_frames=max_frames)
    if sequences:
        raise InputError("--sequences applies to DAVIS folders only")
    return synth_clips(path, every_nth=every_nth, max_frames=max_frames)


def score(gt: np.ndarray, segmented: Sequence[SegmentedFrame]) -> dict:
    """All metrics of one clip: FG-ARI and mIoU on every track (background included, as in the
    multi-object literature); DAVIS J, F (unsupervised, one matching, background tracks ignored); and
    the single-object per-frame Jaccard of the union of non-background tracks against any object."""
    pred = label_volume(segmented)
    if pred.shape != gt.shape:
        raise InputError(f"ground truth {gt.shape} and frames {pred.shape} differ (frames and masks misaligned)")
    background = sorted({o.track_id for sf in segmented for o in sf.objects if o.is_background})
    davis = davis_unsupervised(gt, pred, ignore=tuple(background))
    fg_pred = label_volume(segmented, include_background=False) >= 0
    return {"frames": int(gt.shape[0]), "objects": int(len(np.unique(gt[gt > 0]))),
            "tracks": int(len(np.unique(pred[pred >= 0]))), "fg_ari": fg_ari(gt, pred), "miou": miou(gt, pred),
            "J": davis.j, "F": davis.f, "J&F": davis.jf,
            "J_single": float(jaccard_frames(gt > 0, fg_pred).mean())}


METRICS = ("fg_ari", "miou", "J", "F", "J&F", "J_single")


def _mean(values: Sequence[float]) -> float:
    """Mean of the defined values (FG-ARI is NaN on single-object clips); NaN when there are none."""
    finite = [v for v in values if not np.isnan(v)]
    return float(np.mean(finite)) if finite else float("nan")


def evaluate(clips: Sequence[EvalClip], extractor: QKExtractor, params: SegmentParams = SegmentParams(), *,
             on_clip: Callable[[str, dict], None] | None = None) -> dict:
    """Segment and score every clip; a clip that fails is recorded with its error and the rest go on.
    Returns {"clips": {name: metrics or {"error": ...}}, "mean": {metric: mean over scored clips}}."""
    results: dict[str, dict] = {}
    for clip in clips:
        try:
            gt = clip.masks()
            segmented = list(segment_stream(clip.frames(), extractor, params))
            if len(segmented) != gt.shape[0]:
                raise InputError(f"{clip.name}: {len(segmented)} frames but {gt.shape[0]} masks")
            results[clip.name] = score(gt, segmented)
        except MvkError as exc:                 # unreadable video or frames, missing masks
            results[clip.name] = {"error": str(exc)}
        if on_clip is not None:
            on_clip(clip.name, results[clip.name])
    scored = [r for r in results.values() if "error" not in r]
    mean = {m: _mean([r[m] for r in scored]) for m in METRICS}
    return {"clips": results, "mean": mean, "scored": len(scored), "failed": len(results) - len(scored),
            "backbone": extractor.identity(), "params": {k: v for k, v in vars(params).items()}}

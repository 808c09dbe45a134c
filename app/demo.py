"""``mvk demo``: a small collection (synthetic sites plus the real clips found nearby), indexed, ready to browse."""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from app.launch import APP_FILE

DEMO_SITES = ("Oahu_Jul2022", "PhuQuoc1_Jun2022", "Tulamben2_Jun2022")
REAL_SITE = "Limfjord_Brackish"   # the brackish clips: Limfjord (Denmark), no date in the name
REAL_CLIP_NAMES = ("fish_test1.mp4", "crab_test.mp4")
# The smoke run: the tiny random CLIP, and the colour baseline for segmentation (a random DINO cuts every frame
# into one whole-frame box; colour statistics find the synthetic shapes, so masks, boxes and tracks appear).
SMOKE_MODELS = {"model": "mvk-tiny-vit", "pretrained": None, "backbone": "color"}
QUERYSET_NAME = "demo_synthetic_kis.csv"     # written into <index>/querysets/, found by the KIS page


@dataclass
class DemoPaths:
    out: Path
    collection: Path
    index: Path


def demo_paths(out: str | Path, *, random_weights: bool = False) -> DemoPaths:
    """The demo's folders; the smoke run's index has its own folder, so a later run with the pretrained models
    builds a new index instead of being refused by the smoke one."""
    out = Path(out).expanduser().resolve()
    return DemoPaths(out, out / "collection", out / ("index-random-weights" if random_weights else "index"))


def find_real_clips() -> list[Path]:
    """The real underwater clips of ../shared/data/brackish (or $MVK_SHARED_DATA/brackish), when present."""
    bases = [Path(os.environ["MVK_SHARED_DATA"])] if os.environ.get("MVK_SHARED_DATA") else []
    bases.append(APP_FILE.parents[2] / "shared" / "data")
    for base in bases:
        clips = [base / "brackish" / name for name in REAL_CLIP_NAMES if (base / "brackish" / name).is_file()]
        if clips:
            return clips
    return []


def make_demo_collection(collection: Path, *, real_clips: list[Path], n_frames: int = 48) -> Path:
    """Synthetic sites (mvk_tools.synth) and the real clips copied in as one more site (copies, not links:
    the app serves nothing outside the collection). An existing demo collection is kept as it is, so a second
    ``mvk demo`` reuses its index."""
    from mvk_tools.synth import make_collection

    if not (collection / "videos").is_dir():
        tmp = collection.with_name(collection.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        make_collection(tmp, sites=DEMO_SITES, videos_per_site=2, n_frames=n_frames, size=(320, 192), fps=12.0)
        tmp.rename(collection)
    real_dir = collection / "videos" / REAL_SITE
    for i, clip in enumerate(real_clips, start=1):
        target = real_dir / f"{i:04d}.mp4"
        if not target.exists():
            real_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(clip, target)
    return collection


def missing_weights(*, clip_checkpoint: str | Path | None = None, checkpoint: str | Path | None = None) -> list[str]:
    """How to fetch each pretrained model the demo needs and cannot get here (empty when all can be had).
    A checkpoint file given for a model stands for its pretrained weights."""
    from indexer import backbone as bb
    from search import encoder as enc

    missing = []
    if clip_checkpoint is None and not enc.weights_available(enc.DEFAULT_MODEL, enc.DEFAULT_PRETRAINED):
        missing.append(enc.fetch_instructions(enc.DEFAULT_MODEL, enc.DEFAULT_PRETRAINED)
                       + " (or pass its file with --clip-checkpoint FILE)")
    if checkpoint is None and not bb.weights_available(bb.DEFAULT_BACKBONE):
        missing.append(bb.fetch_instructions(bb.DEFAULT_BACKBONE) + " (or pass its file with --dino-checkpoint FILE)")
    return missing


def write_demo_queryset(collection: Path, index: Path) -> Path | None:
    """The KIS query set of the synthetic sites (from their ground truth) in ``index/querysets``; None when the
    collection has no synthetic video."""
    from mvk_tools.querysets import write_queryset
    from mvk_tools.synth_kis import synthetic_queryset

    queries = synthetic_queryset(collection)
    if queries.empty:
        return None
    return write_queryset(queries, index / "querysets" / QUERYSET_NAME)


def build_demo(paths: DemoPaths, *, random_weights: bool, device: str = "cpu", clip_checkpoint: str | None = None,
               checkpoint: str | None = None, n_frames: int = 48, progress=None):
    """Make the collection, index every site (sites already up to date are left alone) and write the KIS query
    set. Pretrained models unless ``random_weights``: then the tiny random CLIP and the colour baseline for
    segmentation (labelled so in the index). Raises MissingWeightsError before anything is written when the
    weights cannot be had. Returns indexer.pipeline.IndexResult."""
    from indexer.models import load_models
    from indexer.pipeline import IndexConfig, index_collection
    from indexer.segment import SegmentParams
    from search.errors import MissingWeightsError

    if random_weights:
        encoder, extractor = load_models(model=SMOKE_MODELS["model"], pretrained=SMOKE_MODELS["pretrained"],
                                         backbone=SMOKE_MODELS["backbone"], random_weights=True, device=device)
    else:
        missing = missing_weights(clip_checkpoint=clip_checkpoint, checkpoint=checkpoint)
        if missing:
            raise MissingWeightsError("mvk demo needs pretrained weights that are not on this machine and cannot "
                                      "be downloaded here:\n  - " + "\n  - ".join(missing)
                                      + "\nOr run the whole chain without any weights: mvk demo --random-weights "
                                        "(a smoke run; its rankings are meaningless)")
        encoder, extractor = load_models(clip_checkpoint=clip_checkpoint, checkpoint=checkpoint, device=device)
    paths.out.mkdir(parents=True, exist_ok=True)
    make_demo_collection(paths.collection, real_clips=find_real_clips(), n_frames=n_frames)
    config = IndexConfig(every_seconds=1.0, segment=SegmentParams(short_side=160), decode_max_side=640)
    result = index_collection(paths.collection, paths.index, encoder=encoder, extractor=extractor, config=config,
                              progress=progress)
    write_demo_queryset(paths.collection, paths.index)
    return result

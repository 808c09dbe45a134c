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
SMOKE_MODELS = {"model": "mvk-tiny-vit", "pretrained": None, "backbone": "dino-vits16"}


@dataclass
class DemoPaths:
    out: Path
    collection: Path
    index: Path


def demo_paths(out: str | Path) -> DemoPaths:
    out = Path(out).expanduser().resolve()
    return DemoPaths(out, out / "collection", out / "index")


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


def build_demo(paths: DemoPaths, *, random_weights: bool, device: str = "cpu", progress=None):
    """Make the collection and index every site (sites already up to date are left alone). Real pretrained
    models unless ``random_weights``: then the tiny CLIP and a random DINO (labelled so in the index).
    Raises MissingWeightsError offline without weights. Returns indexer.pipeline.IndexResult."""
    from indexer.pipeline import IndexConfig, index_collection, load_models
    from indexer.segment import SegmentParams

    paths.out.mkdir(parents=True, exist_ok=True)
    if random_weights:
        encoder, extractor = load_models(model=SMOKE_MODELS["model"], pretrained=SMOKE_MODELS["pretrained"],
                                         backbone=SMOKE_MODELS["backbone"], random_weights=True, device=device)
    else:
        encoder, extractor = load_models(device=device)   # MissingWeightsError before any file is written
    make_demo_collection(paths.collection, real_clips=find_real_clips())
    config = IndexConfig(every_seconds=1.0, segment=SegmentParams(short_side=160), decode_max_side=640)
    return index_collection(paths.collection, paths.index, encoder=encoder, extractor=extractor, config=config,
                            progress=progress)

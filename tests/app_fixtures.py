"""A small index for the app's tests: two synthetic dive sites, tiny random CLIP, colour segmentation.

Built once per test session (memoised here, so every app test module shares one build)."""
from __future__ import annotations

from pathlib import Path

SITES = ("Oahu_Jul2022", "PhuQuoc1_Jun2022")
_BUILT: dict[str, tuple[Path, Path]] = {}


def build_small_index(base: Path) -> tuple[Path, Path]:
    """(collection, index) under ``base``: 2 sites x 2 videos x 2 s at 12 fps, 2 frames per second indexed."""
    from indexer.models import load_models
    from indexer.pipeline import IndexConfig, index_collection
    from mvk_tools.synth import make_collection

    collection = make_collection(base / "collection", sites=SITES, videos_per_site=2, n_frames=24,
                                 size=(160, 96), fps=12.0)
    encoder, extractor = load_models(model="mvk-tiny-vit", pretrained=None, backbone="color", random_weights=True)
    index = base / "index"
    result = index_collection(collection, index, encoder=encoder, extractor=extractor,
                              config=IndexConfig(every_seconds=0.5))
    assert result.ok and not result.errors, result.errors
    return collection, index


def small_index(tmp_path_factory) -> tuple[Path, Path]:
    if "small" not in _BUILT:
        _BUILT["small"] = build_small_index(tmp_path_factory.mktemp("app_index"))
    return _BUILT["small"]


TWO_SPACES = ("mvk-tiny-vit", "mvk-tiny-siglip")


def build_two_space_index(base: Path) -> tuple[Path, Path]:
    """(collection, index) under ``base`` with two embedding spaces (tiny random ViT first, tiny random SigLIP),
    made the way a user makes one: ``mvk synth`` then ``mvk index`` with ``--model`` twice."""
    from app.cli import main

    collection, index = base / "collection", base / "index"
    assert main(["synth", str(collection), "--sites", "2", "--videos", "2", "--frames", "24"]) == 0
    assert main(["index", str(collection), "--all", "--index", str(index), "--model", TWO_SPACES[0], "--model",
                 TWO_SPACES[1], "--random-weights", "--backbone", "color", "--every", "0.5", "--no-progress"]) == 0
    return collection, index


def two_space_index(tmp_path_factory) -> tuple[Path, Path]:
    if "two" not in _BUILT:
        _BUILT["two"] = build_two_space_index(tmp_path_factory.mktemp("two_space_index"))
    return _BUILT["two"]


def configure_app(monkeypatch, built: tuple[Path, Path], tmp_path: Path) -> Path:
    """The app configured (environment) on a private copy of a built index (pages may write query sets or
    shards into it), with its collection and random weights; returns the copy."""
    import shutil
    collection, index = built
    copy = tmp_path / "index"
    shutil.copytree(index, copy)
    monkeypatch.setenv("MVK_INDEX", str(copy))
    monkeypatch.setenv("MVK_COLLECTION", str(collection))
    monkeypatch.setenv("MVK_RANDOM_WEIGHTS", "1")
    return copy

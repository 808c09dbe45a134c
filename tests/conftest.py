"""Shared fixtures: where the real data lives (skip cleanly when absent), small synthetic collections."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MVK_SHARED_DATA", REPO.parent / "shared" / "data"))


def shared_path(*parts: str) -> Path:
    """A path inside ../shared/data, skipping the calling test when it is absent (a user's clone has none)."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not present: {path}")
    return path


@pytest.fixture(scope="session")
def brackish_dir() -> Path:
    return shared_path("brackish")


@pytest.fixture(scope="session")
def davis_dir() -> Path:
    return shared_path("davis2016")

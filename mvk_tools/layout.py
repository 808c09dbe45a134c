"""Read an MVK-style collection into a catalog (a pandas DataFrame), one row per video.

Accepted layouts: the MVK tree (``videos/<site>/<NNNN>.mp4`` + ``information/...``), a plain folder
of videos (one site, named after the folder), and flat VBS-style names (``Tulamben2_Jun2022_0016.mp4``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from search.errors import InputError

CATALOG_COLUMNS = (
    "site", "video_id", "path", "duration", "fps", "frame_count", "width", "height",
    "place", "date", "has_metadata", "has_selected_frames", "error",
)


class NotACollectionError(InputError):
    """The path is not a folder of videos in any accepted layout."""


@dataclass(frozen=True)
class SiteName:
    place: str          # e.g. "PhuQuoc1"
    year: int | None    # e.g. 2022
    month: int | None   # 1..12

    @property
    def date(self) -> str:
        """``YYYY-MM`` or empty when the name carries no date."""
        return f"{self.year:04d}-{self.month:02d}" if self.year and self.month else ""


def parse_site_name(name: str) -> SiteName:
    """``Oahu_Jul2022`` -> SiteName("Oahu", 2022, 7); a name without ``_MonYYYY`` keeps all of it as the place."""
    raise NotImplementedError


def discover(root: str | Path, *, probe_videos: bool = True) -> pd.DataFrame:
    """The catalog of ``root`` with CATALOG_COLUMNS (path absolute). A file that cannot be read gets its
    row with ``error`` set; other files go on. Raises NotACollectionError naming ``root`` if it is not
    a collection at all (missing, a file, or no video in any accepted layout)."""
    raise NotImplementedError


def selected_frame_indices(root: str | Path, site: str, video_id: str) -> list[int]:
    """Frame indices of ``information/selected_frames/<site>/<video_id>_<FFFFF>.jpg``, sorted; empty if none."""
    raise NotImplementedError

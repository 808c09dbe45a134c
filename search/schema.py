"""What an index folder holds: the format version, the frame and object columns, the files of a shard
version and the index types. Every other module of the store reads these names from here."""
from __future__ import annotations

from typing import Any, Literal

from search.errors import InputError

FORMAT_VERSION = 1

FRAME_COLUMNS = (
    "site", "video_id", "video_path",   # video_path relative to the collection root
    "frame_index", "time",              # index in the source video, seconds
    "width", "height",                  # source frame size
    "place", "date",                    # from the site name; date "YYYY-MM" or ""
    "thumbnail",                        # JPEG bytes, longest side ~256 px
)
# Columns a frame table may carry besides FRAME_COLUMNS, with the value of rows that lack them: MVK's
# selected frames (indexer.selected): image name and number, distance to the video frame found for it by
# content, whether that match is poor, its margin, whether the place is ambiguous, the other video it rather
# comes from ("" when none) and the video's duration (seconds).
OPTIONAL_FRAME_COLUMNS: dict[str, Any] = {"selected_name": "", "selected_number": -1,
                                          "match_distance": float("nan"), "match_poor": False,
                                          "match_margin": float("nan"), "match_ambiguous": False,
                                          "match_foreign": "", "video_duration": float("nan")}
OBJECT_COLUMNS = (
    "frame_row",                        # row of the frame in this shard's frames table
    "track_id",                         # object id, stable across the frames of one video
    "level",                            # hierarchy level the object comes from (0 = finest)
    "x0", "y0", "x1", "y1",             # box in source-frame pixels, x1/y1 exclusive
    "area",                             # fraction of the frame covered by the mask
    "is_background",                    # the likely background cluster
    "mask_rle",                         # search.rle string of the mask at a reduced resolution
)

IndexType = str    # "flat", "ivf-flat", "ivf-pq", "hnsw", or any FAISS factory string (search.faiss_index.build)

LAZY_COLUMNS = {"frames": ("thumbnail",), "objects": ()}   # left in the file when opened memory-mapped
ROW_GROUP_ROWS = {"frames": 256, "objects": 8192}   # small row groups: one thumbnail reads ~1-2 MiB, not the table
SHARD_FILES = ("manifest.json", "frames.parquet", "objects.parquet", "frames.faiss", "objects.faiss")
DATA_FILES = SHARD_FILES[1:]
ROOT_MANIFEST = "manifest.json"
GRACE_SECONDS = 600.0          # a superseded version stays this long for readers that resolved it just before
Verify = Literal["full", "quick"]
SIZE_ONLY_WHEN_QUICK = ("frames.parquet",)   # verify="quick" (the default at open) checks only the size of these:


def check_site_name(site: str) -> None:
    if not site or not isinstance(site, str) or "/" in site or "\\" in site or site.startswith(".") \
            or site in ("..",):
        raise InputError(f"{site!r} cannot name a shard folder (empty, a path, or starting with a dot)")

# The indexer's work folder (``<index>/.work/<site-key>/``): one video's part files, named ``<key><suffix>``,
# and the commit record that lists their checksums by role. ``mvk check`` reads them; ``indexer.parts`` writes.
WORK_DIR = ".work"
PART_SUFFIXES = {"frames": ".frames.parquet", "objects": ".objects.parquet", "vectors": ".npz",
                 "done": ".done.json"}

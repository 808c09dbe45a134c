"""Read an MVK-style collection into a catalog (a pandas DataFrame), one row per video.

Accepted layouts: the MVK tree (``videos/<site>/<NNNN>.mp4`` + ``information/...``), a plain folder
of videos (one site, named after the folder), and flat VBS-style names (``Tulamben2_Jun2022_0016.mp4``).

Also accepted, as variants of the MVK tree: the ``videos`` folder itself, or any folder of site folders
(``<root>/<site>/<NNNN>.mp4``). ``information/`` is looked up beside ``videos/``.

Which files count: a file is a video when its extension is one of VIDEO_EXTENSIONS (any case). Every
video gets a row, and one that cannot be read keeps its row with ``error`` set. Other files (README.txt,
images, JSON, ``.DS_Store`` and other hidden files) in the folders searched for videos get no row; their
paths are listed in ``catalog.attrs["ignored"]`` so a shell can say how many were skipped. Subfolders of a
site folder are not searched.
"""
from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from search.errors import InputError
from search.inputs import special_kind

CATALOG_COLUMNS = (
    "site", "video_id", "path", "duration", "fps", "frame_count", "width", "height", "codec",
    "place", "date", "has_metadata", "has_selected_frames", "error",
)

VIDEO_EXTENSIONS = frozenset({".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".ts", ".wmv"})
MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")

_SITE_RE = re.compile(r"^(?P<place>.+?)_(?P<month>[A-Za-z]{3})(?P<year>\d{4})$")
_FLAT_RE = re.compile(r"^(?P<site>.+?_[A-Za-z]{3}\d{4})_(?P<video>[^_]+)$")
_SELECTED_RE = re.compile(r"^(?P<video>.+)_(?P<frame>\d+)$")


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
    name = name.strip()
    match = _SITE_RE.match(name)
    if match and match["month"].lower() in MONTHS:
        return SiteName(match["place"], int(match["year"]), MONTHS.index(match["month"].lower()) + 1)
    return SiteName(name, None, None)


def _video_name(path: Path) -> bool:
    return not path.name.startswith(".") and path.suffix.lower() in VIDEO_EXTENSIONS


def is_video_file(path: Path) -> bool:
    return path.is_file() and _video_name(path)


def link_problem(path: Path) -> str | None:
    """Why a symbolic link cannot be followed (dangling, a loop), or None (not a link, or a good one)."""
    if not path.is_symlink():
        return None
    try:
        target = os.readlink(path)
    except OSError as exc:
        return f"unreadable symbolic link ({exc.strerror or exc})"
    try:
        path.resolve(strict=True)
    except FileNotFoundError:
        return f"broken symbolic link: its target {target} does not exist"
    except (RuntimeError, OSError) as exc:      # RuntimeError: a loop (Python < 3.13), OSError ELOOP
        if isinstance(exc, OSError) and exc.errno not in (errno.ELOOP, None):
            return f"unreadable symbolic link ({exc.strerror or exc})"
        return f"symbolic link loop (it points to {target})"
    return None


def special_problem(path: Path) -> str | None:
    """Why ``path`` is no regular file to read (a FIFO, a device, a socket), or None (a file, a folder, missing)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    kind = None if stat.S_ISDIR(mode) else special_kind(mode)
    return f"is {kind}, not a regular file; refused" if kind else None


OUTSIDE_LINKS_FLAG = "--follow-outside-links"


def outside_link(path: str | Path, root: str | Path) -> str | None:
    """Why ``path`` must not be read as a file of the collection ``root``: it is (or lies under) a symbolic
    link whose target is outside the collection; None when it resolves inside (or cannot be resolved: that is
    ``link_problem``'s to say). The one rule of every reader (mvk index, the app, the API): refused unless the
    user passes OUTSIDE_LINKS_FLAG."""
    try:
        resolved = Path(path).resolve(strict=True)
        base = Path(root).resolve()
    except (OSError, RuntimeError):
        return None
    if resolved == base or resolved.is_relative_to(base):
        return None
    return (f"symbolic link to {resolved}, outside the collection {base}: refused (pass {OUTSIDE_LINKS_FLAG} "
            f"to read files that links lead to outside the collection)")


def _video_entry(path: Path) -> bool:
    """A video file, or a file named like one that cannot be read: a link that cannot be followed, a FIFO or
    a device (listed with its error, not dropped)."""
    return _video_name(path) and (path.is_file() or (path.is_symlink() and link_problem(path) is not None)
                                  or special_problem(path) is not None)


def split_flat_name(stem: str) -> tuple[str, str] | None:
    """``Tulamben2_Jun2022_0016`` -> ("Tulamben2_Jun2022", "0016"); None when the stem has no site prefix."""
    match = _FLAT_RE.match(stem)
    if match and parse_site_name(match["site"]).month is not None:
        return match["site"], match["video"]
    return None


def _entries(folder: Path) -> list[Path]:
    try:
        return sorted(folder.iterdir())
    except OSError as exc:
        raise NotACollectionError(f"{folder}: cannot list the folder ({exc.strerror or exc})") from None


def _videos_folder(root: Path) -> Path | None:
    """The folder whose subfolders are sites: ``root/videos``, or ``root`` itself when it holds site
    folders with videos and no loose video files. None for a flat / plain folder."""
    videos = root / "videos"
    if videos.is_dir():
        return videos
    entries = _entries(root)
    if any(is_video_file(p) for p in entries):
        return None
    if any(p.is_dir() and _may_hold_videos(p) for p in entries if not p.name.startswith(".")):
        return root
    return None


def _may_hold_videos(folder: Path) -> bool:
    """Whether ``folder`` holds a video, or cannot be listed (then it is reported as a site, not skipped)."""
    try:
        return any(_video_entry(q) for q in _entries(folder))
    except NotACollectionError:
        return True


def information_root(root: str | Path) -> Path:
    """Where ``information/`` lives for a collection ``root`` (beside ``videos/``)."""
    root = Path(root).expanduser().resolve()
    if root.name == "videos" and not (root / "information").is_dir():
        return root.parent / "information"
    return root / "information"


def _listing(root: Path) -> tuple[list[tuple[str, str, Path]], list[Path], dict[str, str]]:
    """(site, video id, path) of every video, the ignored non-video files, and the site folders that could
    not be listed (site -> why): one unreadable site does not stop the others."""
    videos: list[tuple[str, str, Path]] = []
    ignored: list[Path] = []
    site_errors: dict[str, str] = {}
    base = _videos_folder(root)
    if base is not None:
        entries = _entries(base)
        folders = [(p.name, p) for p in entries if p.is_dir() and not p.name.startswith(".")]
        loose = [p for p in entries if p.is_file() or _video_entry(p)]
        for p in entries:
            if not p.name.startswith(".") and not p.exists() and not _video_name(p):
                site_errors[p.name] = f"{p}: {link_problem(p) or 'cannot be read'}"
    else:
        folders, loose = [], [p for p in _entries(root) if p.is_file() or _video_entry(p)]
    for site, folder in folders:
        try:
            listed = _entries(folder)
        except NotACollectionError as exc:
            site_errors[site] = str(exc)
            continue
        for p in listed:
            if _video_entry(p):
                videos.append((site, p.stem, p))
            elif p.is_file():
                ignored.append(p)
    for p in loose:
        if not _video_entry(p):
            ignored.append(p)
            continue
        flat = split_flat_name(p.stem)
        videos.append(flat + (p,) if flat else (root.name, p.stem, p))
    return videos, ignored, site_errors


@dataclass(frozen=True)
class SelectedImage:
    """One of MVK's selected frames: ``<video>_<number>.jpg``. ``number`` orders a video's selected frames;
    what frame it shows is found by content (``mvk_tools.locate``), never from the number."""
    name: str
    number: int
    path: Path


def _selected_by_video(info: Path, site: str) -> dict[str, list[SelectedImage]]:
    folder = info / "selected_frames" / site
    found: dict[str, list[SelectedImage]] = {}
    if not folder.is_dir():
        return found
    for p in folder.iterdir():
        match = _SELECTED_RE.match(p.stem)
        if match and p.suffix.lower() in (".jpg", ".jpeg", ".png") and p.is_file():
            found.setdefault(match["video"], []).append(SelectedImage(p.name, int(match["frame"]), p))
    return found


def discover(root: str | Path, *, probe_videos: bool = True,
             on_video: Callable[[Path], None] | None = None) -> pd.DataFrame:
    """The catalog of ``root`` with CATALOG_COLUMNS (path absolute). A file that cannot be read gets its
    row with ``error`` set; other files go on. Raises NotACollectionError naming ``root`` if it is not
    a collection at all (missing, a file, or no video in any accepted layout).

    ``probe_videos=False`` only lists files (duration, fps, sizes, codec left empty). ``on_video`` is called
    with each video's path after it is probed (progress bars). ``attrs["ignored"]`` lists non-video files;
    ``attrs["site_errors"]`` maps each site folder that could not be listed to why (the other sites go on).
    A video named link that cannot be followed (dangling, a loop) keeps its row with the reason in ``error``."""
    from mvk_tools.video import VideoError, probe

    root = Path(root).expanduser()
    if not root.exists():
        raise NotACollectionError(f"{root}: no such folder")
    if not root.is_dir():
        raise NotACollectionError(f"{root}: is a file, not a collection folder")
    root = root.resolve()
    videos, ignored, site_errors = _listing(root)
    if not videos and site_errors:
        raise NotACollectionError(f"{root}: no site folder could be read: "
                                  + "; ".join(site_errors.values()))
    if not videos:
        raise NotACollectionError(
            f"{root}: no videos found (expected videos/<site>/<NNNN>.mp4, a folder of videos, "
            f"or files named like Site_MonYYYY_NNNN.mp4; video extensions: {', '.join(sorted(VIDEO_EXTENSIONS))})")
    info_root = information_root(root)
    selected: dict[str, dict[str, list[int]]] = {}
    rows = []
    for site, video_id, path in sorted(videos, key=lambda v: (v[0], v[1], v[2].name)):
        if site not in selected:
            selected[site] = _selected_by_video(info_root, site)
        name = parse_site_name(site)
        row = {"site": site, "video_id": video_id, "path": str(path), "duration": float("nan"),
               "fps": float("nan"), "frame_count": pd.NA, "width": pd.NA, "height": pd.NA, "codec": "",
               "place": name.place, "date": name.date,
               "has_metadata": (info_root / "metadata" / site / f"{video_id}.json").is_file(),
               "has_selected_frames": video_id in selected[site], "error": ""}
        broken = link_problem(path) or special_problem(path)
        if broken is not None:
            row["error"] = f"{path}: {broken}"
        elif probe_videos:
            try:
                meta = probe(path)
                row.update(duration=meta.duration, fps=meta.fps, frame_count=meta.frame_count,
                           width=meta.width, height=meta.height, codec=meta.codec)
            except VideoError as exc:
                row["error"] = str(exc)
        if probe_videos and on_video is not None:
            on_video(path)
        rows.append(row)
    catalog = pd.DataFrame(rows, columns=list(CATALOG_COLUMNS))
    for column in ("frame_count", "width", "height"):
        catalog[column] = catalog[column].astype("Int64")
    catalog["duration"] = catalog["duration"].astype(float)
    catalog["fps"] = catalog["fps"].astype(float)
    catalog.attrs["root"] = str(root)
    catalog.attrs["ignored"] = [str(p) for p in ignored]
    catalog.attrs["site_errors"] = dict(site_errors)
    return catalog


def selected_images(root: str | Path, site: str, video_id: str) -> list[SelectedImage]:
    """The selected frames ``information/selected_frames/<site>/<video_id>_<n>.jpg`` of one video, in the
    order of their numbers (then names); empty if none."""
    found = _selected_by_video(information_root(root), site).get(video_id, [])
    return sorted(found, key=lambda s: (s.number, s.name))

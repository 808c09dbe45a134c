"""MVK's selected frames as a frame source: the JPEGs themselves are indexed, located in their video by content.

The vectors come from the selected images (no video decode for them); each image's place in its video (frame
index, time) comes from ``mvk_tools.locate``: the video is decoded once at thumbnail size and the nearest
frame taken. Rows carry SELECTED_COLUMNS: the image's name and number, the match distance and a flag for a
poor match (an image that does not come from that video: kept, flagged, reported). Frames are given in the
order of the selected-frame numbers, every image at the size the video's frames are decoded to, so the
segmentation sees one frame size per video.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mvk_tools.layout import SelectedImage
from mvk_tools.video import Frame, VideoError

SELECTED_COLUMNS = ("selected_name", "selected_number", "match_distance", "match_poor")


@dataclass(frozen=True)
class SelectedFrame(Frame):
    """A selected image as a frame of its video: ``index`` and ``time`` are where it was found."""
    selected_name: str = ""
    selected_number: int = -1
    match_distance: float = float("nan")
    match_poor: bool = False

    def extra_columns(self) -> dict:
        """The SELECTED_COLUMNS values of this frame's row."""
        return {"selected_name": self.selected_name, "selected_number": self.selected_number,
                "match_distance": self.match_distance, "match_poor": self.match_poor}


def read_image(path: str | Path, size: tuple[int, int]) -> np.ndarray:
    """An image file as (H, W, 3) uint8 RGB at exactly ``size`` (w, h); JPEGs decode at a reduced scale
    when that is still at least ``size`` (``draft``). VideoError naming the file when it cannot be read."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.draft("RGB", size)
            rgb = im.convert("RGB")
            if rgb.size != size:
                rgb = rgb.resize(size, Image.BOX if rgb.size[0] >= size[0] else Image.BILINEAR)
            return np.asarray(rgb)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise VideoError(f"{path}: selected frame cannot be read ({exc})") from None


def selected_frames(video_path: str | Path, images: Sequence[SelectedImage], *,
                    max_side: int | None = None) -> Iterator[SelectedFrame]:
    """The selected images of one video as frames located in it (see the module docstring). Decodes the
    video once (thumbnails) before the first frame is given; VideoError naming the file on bad input."""
    from mvk_tools.locate import image_thumbs, locate, video_thumbs
    from mvk_tools.video import output_size, probe

    if not images:
        return
    info = probe(video_path, check_end=False)
    size = output_size(info.width, info.height, max_side=max_side)
    thumbs = video_thumbs(video_path)
    if len(thumbs.index) == 0:
        raise VideoError(f"{video_path}: no frame could be decoded to locate its selected frames")
    try:
        found = locate(image_thumbs([im.path for im in images], thumbs.size), thumbs)
    except (OSError, ValueError) as exc:
        raise VideoError(f"{video_path}: a selected frame cannot be read ({exc})") from None
    for i, im in enumerate(images):
        yield SelectedFrame(index=int(found.frame_index[i]), time=float(found.time[i]),
                            image=read_image(im.path, size), selected_name=im.name, selected_number=im.number,
                            match_distance=float(found.distance[i]), match_poor=bool(found.poor[i]))


def extra_columns(frames: Sequence[Frame]) -> dict[str, list] | None:
    """SELECTED_COLUMNS for a batch of frames when they are selected frames, else None."""
    if not frames or not isinstance(frames[0], SelectedFrame):
        return None
    rows = [f.extra_columns() for f in frames if isinstance(f, SelectedFrame)]
    return {c: [r[c] for r in rows] for c in SELECTED_COLUMNS}


def poor_matches(frames: pd.DataFrame) -> list[str]:
    """Names of the selected frames in ``frames`` (rows) flagged as not coming from their video."""
    if "match_poor" not in frames:
        return []
    poor = frames[frames["match_poor"].fillna(False).astype(bool)]
    return [f"{n} (distance {d:.2f})" for n, d in zip(poor["selected_name"], poor["match_distance"])]


def report(frames: pd.DataFrame) -> dict | None:
    """What a video's selected-frame rows say, for the run's summary: ``images``, ``poor`` (flagged) and
    ``numbering`` (``mvk_tools.locate.numbering``: what the numbers in the names turned out to be); None
    when the rows are no selected frames."""
    from mvk_tools.locate import numbering

    if "selected_number" not in frames:
        return None
    rows = frames[frames["selected_number"].fillna(-1).astype(int) >= 0]
    if not len(rows):
        return None
    poor = rows["match_poor"].fillna(False).astype(bool).to_numpy()
    return {"images": int(len(rows)), "poor": int(poor.sum()),
            "numbering": numbering(rows["selected_number"].to_numpy(), rows["frame_index"].to_numpy(), poor)}


def summary_line(reports: Sequence[dict]) -> str:
    """One line over the videos' ``report`` dicts: images located, what the numbers were, images flagged."""
    if not reports:
        return ""
    kinds: dict[str, int] = {}
    for r in reports:
        kinds[r["numbering"]] = kinds.get(r["numbering"], 0) + 1
    numbers = ", ".join(f"{k} in {n}" for k, n in sorted(kinds.items(), key=lambda kv: -kv[1]))
    poor = sum(r["poor"] for r in reports)
    return (f"selected frames: {sum(r['images'] for r in reports)} images of {len(reports)} video(s) located by "
            f"content; their numbers are {numbers}; {poor} image(s) flagged as not from their video")

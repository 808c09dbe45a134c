"""MVK's selected frames as a frame source: the JPEGs themselves are indexed, located in their video by content.

The vectors come from the selected images (no video decode for them); each image's place in its video (frame
index, time) comes from ``mvk_tools.locate``: the video is decoded once at thumbnail size and all images of
the video are aligned with it at once (in the order of their numbers). Rows carry SELECTED_COLUMNS: the
image's name and number, the match distance, the margin to the best frame elsewhere, whether the place is
ambiguous (static footage), a poor match (an outlier of the video's own matches) and, once the site is
assembled, the other video it rather comes from (``match_foreign``, from ``foreign_check``), and the video's
duration. Flagged images are kept and reported. Frames are given in the order of the selected-frame numbers,
every image at the size the video's frames are decoded to, so the segmentation sees one frame size per video.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mvk_tools.layout import SelectedImage
from mvk_tools.video import Frame, VideoError

SELECTED_COLUMNS = ("selected_name", "selected_number", "match_distance", "match_poor", "match_margin",
                    "match_ambiguous", "match_foreign", "video_duration")
PROBE_FPS = 10.0     # probe thumbnails kept per second of video for the foreign-frame check


@dataclass(frozen=True)
class SelectedFrame(Frame):
    """A selected image as a frame of its video: ``index`` and ``time`` are where it was found."""
    selected_name: str = ""
    selected_number: int = -1
    match_distance: float = float("nan")
    match_poor: bool = False
    match_margin: float = float("nan")
    match_ambiguous: bool = False
    video_duration: float = float("nan")
    probe: np.ndarray | None = None         # the image's probe thumbnail (foreign-frame check)
    video_probe: np.ndarray | None = None   # the video's probe thumbnails, on the video's first image only

    def extra_columns(self) -> dict:
        """The SELECTED_COLUMNS values of this frame's row (``match_foreign`` is set at assembly)."""
        return {"selected_name": self.selected_name, "selected_number": self.selected_number,
                "match_distance": self.match_distance, "match_poor": self.match_poor,
                "match_margin": self.match_margin, "match_ambiguous": self.match_ambiguous,
                "match_foreign": "", "video_duration": self.video_duration}


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
    from mvk_tools.locate import image_thumbs, locate, probe_thumbs, video_thumbs
    from mvk_tools.video import output_size, probe

    if not images:
        return
    info = probe(video_path, check_end=False)
    size = output_size(info.width, info.height, max_side=max_side)
    thumbs = video_thumbs(video_path)
    if len(thumbs.index) == 0:
        raise VideoError(f"{video_path}: no frame could be decoded to locate its selected frames")
    try:
        small = image_thumbs([im.path for im in images], thumbs.size)
    except (OSError, ValueError) as exc:
        raise VideoError(f"{video_path}: a selected frame cannot be read ({exc})") from None
    found = locate(small, thumbs, numbers=[im.number for im in images], fps=info.fps)
    w, h = thumbs.size
    image_probes = probe_thumbs(small.reshape(-1, h, w))
    step = max(1, int(np.ceil((info.fps or PROBE_FPS) / PROBE_FPS)))
    video_probe = probe_thumbs(thumbs.thumbs[::step].astype(np.float32).reshape(-1, h, w))
    duration = float(info.duration) if info.duration and np.isfinite(info.duration) else float("nan")
    for i, im in enumerate(images):
        yield SelectedFrame(index=int(found.frame_index[i]), time=float(found.time[i]),
                            image=read_image(im.path, size), selected_name=im.name, selected_number=im.number,
                            match_distance=float(found.distance[i]), match_poor=bool(found.poor[i]),
                            match_margin=float(found.margin[i]), match_ambiguous=bool(found.ambiguous[i]),
                            video_duration=duration, probe=image_probes[i],
                            video_probe=video_probe if i == 0 else None)


def extra_columns(frames: Sequence[Frame]) -> dict[str, list] | None:
    """SELECTED_COLUMNS for a batch of frames when they are selected frames, else None."""
    if not frames or not isinstance(frames[0], SelectedFrame):
        return None
    rows = [f.extra_columns() for f in frames if isinstance(f, SelectedFrame)]
    return {c: [r[c] for r in rows] for c in SELECTED_COLUMNS}


class ProbeCollector:
    """Gathers the probe thumbnails of a video's selected frames as they stream past (the frames themselves
    are not kept), for the part files."""

    def __init__(self) -> None:
        self.images: list[np.ndarray] = []
        self.video: np.ndarray | None = None

    def add(self, frames: Sequence[Frame]) -> None:
        for f in frames:
            if isinstance(f, SelectedFrame) and f.probe is not None:
                self.images.append(f.probe)
                if f.video_probe is not None:
                    self.video = f.video_probe

    def result(self) -> dict[str, np.ndarray]:
        """``probe_images`` (one per image) and ``probe_frames`` (the video's); empty for other frames."""
        if not self.images or self.video is None:
            return {}
        return {"probe_images": np.stack(self.images), "probe_frames": self.video}


def foreign_check(videos: dict[str, dict[str, np.ndarray]]) -> dict[str, list[str]]:
    """Per video (name -> its ``probes``), per selected image, the other video of the set whose best match
    beats the image's own video (``mvk_tools.locate.foreign_flags``), else ""."""
    from mvk_tools.locate import foreign_flags, probe_distances

    out = {}
    for name, p in videos.items():
        images = p.get("probe_images")
        if images is None or not len(images):
            continue
        own = probe_distances(images, p["probe_frames"])
        others = {o: probe_distances(images, q["probe_frames"]) for o, q in videos.items()
                  if o != name and q.get("probe_frames") is not None}
        out[name] = foreign_flags(own, others)
    return out


def _flag(frames: pd.DataFrame, column: str) -> np.ndarray:
    if column not in frames:
        return np.zeros(len(frames), bool)
    return frames[column].where(frames[column].notna(), False).astype(bool).to_numpy()


def _foreign(frames: pd.DataFrame) -> np.ndarray:
    if "match_foreign" not in frames:
        return np.full(len(frames), "", object)
    return frames["match_foreign"].where(frames["match_foreign"].notna(), "").astype(str).to_numpy()


def poor_matches(frames: pd.DataFrame) -> list[str]:
    """Names of the selected frames in ``frames`` (rows) flagged as not coming from their video: poor
    matches, and those another video matches better (``match_foreign``)."""
    if "match_poor" not in frames:
        return []
    poor, foreign = _flag(frames, "match_poor"), _foreign(frames)
    out = []
    for n, d, p, f in zip(frames["selected_name"], frames["match_distance"], poor, foreign):
        if f:
            out.append(f"{n} (foreign: from video {f})")
        elif p:
            out.append(f"{n} (distance {d:.2f})")
    return out


def ambiguous_matches(frames: pd.DataFrame) -> list[str]:
    """Names of the selected frames in ``frames`` whose place in the video the content cannot tell."""
    amb = _flag(frames, "match_ambiguous")
    return [str(n) for n in frames["selected_name"][amb]] if "selected_name" in frames else []


def report(frames: pd.DataFrame) -> dict | None:
    """What a video's selected-frame rows say, for the run's summary: ``images``, ``poor`` (poor matches),
    ``ambiguous`` (place not told by the content), ``foreign`` (rather from another video) and ``numbering``
    (``mvk_tools.locate.numbering``: what the numbers turned out to be, from the images placed with
    certainty); None when the rows are no selected frames."""
    from mvk_tools.locate import numbering

    if "selected_number" not in frames:
        return None
    rows = frames[frames["selected_number"].fillna(-1).astype(int) >= 0]
    if not len(rows):
        return None
    poor, amb, foreign = _flag(rows, "match_poor"), _flag(rows, "match_ambiguous"), _foreign(rows) != ""
    out = {"images": len(rows), "poor": int(poor.sum()),
           "numbering": numbering(rows["selected_number"].to_numpy(), rows["frame_index"].to_numpy(),
                                  poor | foreign, amb if "match_ambiguous" in rows else None)}
    if "match_ambiguous" in rows:
        out["ambiguous"] = int(amb.sum())
    if "match_foreign" in rows:
        out["foreign"] = int(foreign.sum())
        out["flagged"] = int((poor | foreign).sum())
    return out


def summary_line(reports: Sequence[dict]) -> str:
    """One line over the videos' ``report`` dicts: images located, what the numbers were, images flagged
    (poor or foreign), images whose place is ambiguous."""
    if not reports:
        return ""
    kinds: dict[str, int] = {}
    for r in reports:
        kinds[r["numbering"]] = kinds.get(r["numbering"], 0) + 1
    numbers = ", ".join(f"{k} in {n}" for k, n in sorted(kinds.items(), key=lambda kv: -kv[1]))
    flagged = sum(r.get("flagged", r["poor"]) for r in reports)
    foreign = sum(r.get("foreign", 0) for r in reports)
    ambiguous = sum(r.get("ambiguous", 0) for r in reports)
    return (f"selected frames: {sum(r['images'] for r in reports)} images of {len(reports)} video(s) located by "
            f"content; their numbers are {numbers}; {flagged} image(s) flagged as not from their video"
            + (f" ({foreign} matched better by another video)" if foreign else "")
            + (f"; {ambiguous} image(s) ambiguous (static footage: placed by order and spacing)" if ambiguous
               else ""))

"""The names KIS query files give their targets, read into (site, video, selected frame or time code).

Accepted forms (``/`` or ``\\`` separators, any prefix before them):

- ``<site>/<video>_<n>.jpg``, e.g. ``.../information/selected_frames/Oahu_Jul2022/0001_00031.jpg``: the
  ``n``-th selected frame of the video, as MVK names its selected frames (``n`` is an ordinal, about one
  a second, not a frame index);
- flat ``<site>_<video>_<n>.jpg`` (VBS style, ``Tulamben2_Jun2022_0016_00012.jpg``), bare or under a folder
  such as ``selected_frames/``;
- ``<site>/<video>/<n>.jpg``: the same selected frame, one folder per video;
- ``<site>/<video>/frame<h>-<mm>-<ss>-<xx>.jpg`` or ``frame<h>-<mm>-<ss>.<xx>.jpg`` (the form of MVK's KIS
  examples, ``frame0-00-28-03.jpg``): a time code. Nothing says what ``xx`` is, so it is read both ways
  (``TIMECODE_READINGS``, ``timecode_seconds``): ``hundredths`` of a second (what the widely copied
  frame-extraction script writes, ``frame0-00-28.03.jpg``; sanitised copies turn the dot into ``-``) and
  ``frames`` after the second at the video's frame rate (SMPTE style). A reading under which the field is
  impossible (``xx`` >= fps for frames, >= 100 for hundredths) is ruled out; which reading a file uses is
  decided from evidence by ``mvk_tools.kis`` (hundredths unless the file's image vectors say otherwise).
  A time code with no site and video folder names no target.

Any image extension (or none) is accepted. ``parse_target_name`` raises ValueError saying why a name
fits none of these.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

# folders that are never a site or a video name: a name under them is read in its flat form
CONTAINER_DIRS = frozenset({"selected_frames", "thumbnails", "keyframes", "frames", "images", "img",
                            "information", "videos", ""})
_TIMECODE = re.compile(r"^frame(?P<h>\d+)-(?P<m>\d{1,2})-(?P<s>\d{1,2})[-.](?P<f>\d{1,3})$", re.IGNORECASE)
TIMECODE_READINGS = ("hundredths", "frames")    # what the last field of a time code counts
_NUMBERED = re.compile(r"^(?P<video>.+)_(?P<n>\d+)$")
_IMAGE_EXT = re.compile(r"\.(jpe?g|png|webp|bmp|tiff?)$", re.IGNORECASE)
MAX_NUMBER = 10**9       # a selected-frame number beyond this is a typo, not a frame


@dataclass(frozen=True)
class TargetName:
    """A parsed target: a selected frame (``number``) or a time code (``timecode``: h, m, s, ff)."""
    site: str
    video: str
    number: int | None = None
    timecode: tuple[int, int, int, int] | None = None

    def time(self, fps: float, reading: str = "hundredths") -> float:
        """Seconds of the time code under ``reading`` (frames at ``fps``); ValueError when the time code is
        impossible under it (see the module docstring)."""
        if self.timecode is None:
            raise ValueError("not a time code")
        seconds, why = timecode_seconds(self.timecode, reading, fps)
        if seconds is None:
            raise ValueError(why)
        return seconds

    @property
    def key(self) -> str:
        """A short id: ``<site>/<video>_<nnnnn>`` or ``<site>/<video>@h-mm-ss-ff``."""
        if self.number is not None:
            return f"{self.site}/{self.video}_{self.number:05d}"
        h, m, s, f = self.timecode or (0, 0, 0, 0)
        return f"{self.site}/{self.video}@{h}-{m:02d}-{s:02d}-{f:02d}"


def timecode_seconds(timecode: tuple[int, int, int, int], reading: str, fps: float) -> tuple[float | None, str]:
    """(seconds, "") of a time code (h, m, s, xx) under one of TIMECODE_READINGS, or (None, why) when the
    field is impossible under it: ``xx`` >= 100 for hundredths, ``xx`` >= fps for frames at ``fps``."""
    h, m, s, x = timecode
    base = h * 3600 + m * 60 + s
    if reading == "hundredths":
        return (base + x / 100.0, "") if x < 100 else (None, f"{x} is not a number of hundredths of a second")
    if reading == "frames":
        if not fps > 0:
            return None, "no frame rate to read frames with"
        return (base + x / fps, "") if x < fps else (None, f"{x} is not a frame number at {fps:g} fps")
    raise ValueError(f"unknown time-code reading {reading!r}; choose from {', '.join(TIMECODE_READINGS)}")


def _split_flat(stem: str, name: str) -> tuple[str, str]:
    if "_" not in stem:
        raise ValueError(f"image name {name!r} names no site (expected <site>/<video>_<n>.jpg or "
                         "<site>_<video>_<n>.jpg)")
    site, video = stem.rsplit("_", 1)
    return site, video


def _number(text: str, name: str) -> int:
    n = int(text)
    if n > MAX_NUMBER:
        raise ValueError(f"image name {name!r}: frame number {text} is too large")
    return n


def parse_target_name(img: str) -> TargetName:
    """Read one target name (see the module docstring). Raises ValueError saying why it names no frame."""
    parts = [p for p in re.split(r"[\\/]+", img.strip().strip('"')) if p]
    if not parts:
        raise ValueError("empty image path")
    name = parts[-1]
    stem = _IMAGE_EXT.sub("", name)
    folders = [p for p in parts[:-1]]
    parent = folders[-1] if folders else ""
    grand = folders[-2] if len(folders) >= 2 else ""

    code = _TIMECODE.match(stem)
    if code:
        if not parent or not grand or parent.lower() in CONTAINER_DIRS or grand.lower() in CONTAINER_DIRS:
            raise ValueError(f"time code {name!r} needs its site and video folders (<site>/<video>/{name})")
        h, m, s, f = (int(code[k]) for k in "hmsf")
        if m >= 60 or s >= 60:
            raise ValueError(f"time code {name!r}: minutes and seconds must be below 60")
        return TargetName(grand, parent, timecode=(h, m, s, f))

    if stem.isdigit():
        if not parent or not grand or parent.lower() in CONTAINER_DIRS or grand.lower() in CONTAINER_DIRS:
            raise ValueError(f"image name {name!r} needs its site and video folders (<site>/<video>/{name})")
        return TargetName(grand, parent, number=_number(stem, name))

    match = _NUMBERED.match(stem)
    if not match:
        raise ValueError(f"image name {name!r} is not <video>_<n>.jpg, <video>/<n>.jpg or frame<h>-<mm>-<ss>-<ff>.jpg")
    video, number = match["video"], _number(match["n"], name)
    if parent.lower() in CONTAINER_DIRS or "_" in video:
        site, video = _split_flat(video, name)
    else:
        site = parent
    if not site or not video:
        raise ValueError(f"image name {name!r} names no site and video")
    return TargetName(site, video, number=number)

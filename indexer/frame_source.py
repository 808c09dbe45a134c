"""Frames of a video file or a folder of images, read forward from a frame or backward to the start,
with bounded memory (propagation from a middle frame goes both ways).

Frame indices are the source's: the position in the folder (name order) or the decode index in the
video. With ``every_nth`` only every n-th frame is read, and the start frame must be one of those."""
from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mvk_tools.video import Frame, VideoError
from search.errors import InputError


@dataclass(frozen=True)
class FrameSource:
    path: Path
    every_nth: int = 1
    max_frames: int | None = None      # at most this many sampled frames from the start

    @classmethod
    def open(cls, path: str | Path, *, every_nth: int = 1, max_frames: int | None = None) -> FrameSource:
        p = Path(path)
        if not (p.is_dir() or p.is_file()):
            raise InputError(f"{p}: no such video file or frame folder")
        if every_nth < 1 or (max_frames is not None and max_frames < 1):
            raise InputError(f"every_nth and max_frames must be at least 1 (got {every_nth}, {max_frames})")
        if p.is_dir() and not cls(p)._paths():
            raise InputError(f"{p}: no .jpg or .png frames")
        return cls(p, every_nth, max_frames)

    def _paths(self) -> list[Path]:
        from indexer.evaluate import IMAGE_SUFFIXES
        return sorted(q for q in self.path.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES and q.is_file())

    def _folder_indices(self) -> list[int]:
        return list(range(0, len(self._paths()), self.every_nth))[:self.max_frames]

    def _video_frames(self) -> Iterator[Frame]:
        from mvk_tools.video import iter_frames
        for i, f in enumerate(iter_frames(self.path, every_nth=self.every_nth)):
            if self.max_frames is not None and i >= self.max_frames:
                return
            yield f

    def _check_start(self, start: int) -> None:
        if start < 0:
            raise InputError(f"frame {start}: frame numbers start at 0")
        if start % self.every_nth:
            raise InputError(f"frame {start} is not read with every_nth={self.every_nth} "
                             f"(use a multiple of {self.every_nth})")
        if self.path.is_dir():
            last = self._folder_indices()[-1]
            if start > last:
                raise InputError(f"frame {start} is past the end of {self.path} (its last frame is {last})")

    def _past_end(self, start: int, seen: int | None) -> InputError:
        last = "it has no frames" if seen is None else f"its last frame is {seen}"
        return InputError(f"frame {start} is past the end of {self.path} ({last})")

    def frame_at(self, index: int) -> Frame:
        """The frame ``index``; InputError naming the source when it is past the end."""
        self._check_start(index)
        if self.path.is_dir():
            from indexer.evaluate import read_image
            return Frame(index=index, time=float(index), image=read_image(self._paths()[index]))
        seen = None
        try:
            for f in self._video_frames():
                if f.index == index:
                    return f
                if f.index > index:
                    break
                seen = f.index
        except VideoError as exc:
            raise InputError(str(exc)) from exc
        raise self._past_end(index, seen)

    def forward(self, start: int = 0) -> Iterator[Frame]:
        """Frames ``start``, ``start + every_nth``, ... to the end."""
        self._check_start(start)
        if self.path.is_dir():
            from indexer.evaluate import read_image
            paths = self._paths()
            for i in self._folder_indices():
                if i >= start:
                    yield Frame(index=i, time=float(i), image=read_image(paths[i]))
            return
        for f in self._video_frames():
            if f.index >= start:
                yield f

    def backward(self, start: int) -> Iterator[Frame]:
        """Frames ``start``, ``start - every_nth``, ... down to the first. A video is decoded once up to
        ``start`` and its frames kept in a temporary folder on disk (not in memory) to be read in reverse."""
        self._check_start(start)
        if self.path.is_dir():
            from indexer.evaluate import read_image
            paths = self._paths()
            for i in reversed([i for i in self._folder_indices() if i <= start]):
                yield Frame(index=i, time=float(i), image=read_image(paths[i]))
            return
        with tempfile.TemporaryDirectory(prefix="mvk-frames-") as tmp:
            kept: list[tuple[int, float, Path]] = []
            for f in self._video_frames():
                if f.index > start:
                    break
                file = Path(tmp) / f"{f.index:08d}.npy"
                np.save(file, f.image)
                kept.append((f.index, f.time, file))
            if not kept or kept[-1][0] != start:
                raise self._past_end(start, kept[-1][0] if kept else None)
            for index, time, file in reversed(kept):
                yield Frame(index=index, time=time, image=np.load(file))

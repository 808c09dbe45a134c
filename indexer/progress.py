"""Progress hooks of the indexing pipeline: the library reports, the CLI draws tqdm bars (stderr).

``Progress`` does nothing; subclass it to observe a run (tests use it to inject failures).
"""
from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from indexer.tasks import EngineInfo, SiteResult, VideoResult


class Progress:
    """Callbacks of ``index_collection``, in order: engine_started (once, when there is work), then per site
    site_started, video_finished for each video settled before the run, (video_started, frames_decoded*,
    frames_done*, video_finished) for each video computed, site_finished. frames_decoded comes as the
    models take each decoded frame, frames_done once per embedded batch (segmentation works on chunks of
    frames, so a video's first frames_done can come long after its frames were decoded). An engine that
    computes elsewhere (Ray) reports a chunk's frames in one frames_done when the chunk arrives and calls
    no video_started."""

    def engine_started(self, info: "EngineInfo") -> None:
        pass

    def site_started(self, site: str, n_videos: int, expected_frames: int) -> None:
        pass

    def video_started(self, site: str, video_id: str, expected_frames: int) -> None:
        pass

    def frames_decoded(self, n: int) -> None:
        pass

    def frames_done(self, n: int) -> None:
        pass

    def video_finished(self, result: "VideoResult") -> None:
        pass

    def site_finished(self, result: "SiteResult") -> None:
        pass

    def close(self) -> None:
        pass


def plural(n: int, noun: str, many: str | None = None) -> str:
    """``1 video``, ``2 videos`` (``many`` for irregular plurals)."""
    return f"{n} {noun if n == 1 else (many or noun + 's')}"


class TqdmProgress(Progress):
    """One bar per site (its frames, ETA for the site) and one per video (its frames, ETA for the video).

    Work settled before the run (resumed videos, remembered failures) is the site bar's starting point
    (tqdm's ``initial``), not progress of this run, so the rate and ETA count only what this run computes.
    The video bar counts embedded frames and shows how many were decoded (segmentation takes chunks of
    frames at once, so the count moves in steps)."""

    def __init__(self, file: Any = None):
        self.file = file if file is not None else sys.stderr
        self._site: tuple[str, int, int] | None = None
        self._settled = 0
        self._last = ""
        self._site_bar: Any = None
        self._video_bar: Any = None
        self._decoded = 0

    def site_started(self, site: str, n_videos: int, expected_frames: int) -> None:
        self._site, self._settled, self._last = (site, n_videos, expected_frames), 0, ""

    def _open_site_bar(self) -> None:
        """The site bar, opened once the settled videos are counted (they are its ``initial``)."""
        if self._site_bar is not None or self._site is None:
            return
        from tqdm import tqdm
        site, n_videos, expected = self._site
        self._site_bar = tqdm(total=expected or None, initial=min(self._settled, expected) if expected else 0,
                              desc=f"{site} ({plural(n_videos, 'video')})", unit="frame", file=self.file,
                              position=0, leave=True, dynamic_ncols=True)
        if self._last:
            self._site_bar.set_postfix_str(self._last, refresh=True)

    def video_started(self, site: str, video_id: str, expected_frames: int) -> None:
        from tqdm import tqdm
        self._open_site_bar()
        self._decoded = 0
        self._video_bar = tqdm(total=expected_frames or None, desc=f"  {video_id}", unit="frame",
                               file=self.file, position=1, leave=False, dynamic_ncols=True)

    def frames_decoded(self, n: int) -> None:
        self._decoded += n
        if self._video_bar is not None:
            self._video_bar.set_postfix_str(f"{self._decoded} decoded", refresh=False)
            self._video_bar.update(0)

    def frames_done(self, n: int) -> None:
        self._open_site_bar()
        for bar in (self._video_bar, self._site_bar):
            if bar is not None:
                bar.update(n)

    def video_finished(self, result: "VideoResult") -> None:
        status = f"{result.video_id}: {result.status}"
        if self._site_bar is None and self._video_bar is None:     # settled before this run computed anything
            if result.status != "indexed":
                self._settled += result.expected_frames
            self._last = status
            return
        if self._video_bar is not None:
            self._video_bar.close()
            self._video_bar = None
        if self._site_bar is not None and result.status != "indexed":
            self._site_bar.update(result.expected_frames)   # failed in this run: count its share as done
        if self._site_bar is not None:
            self._site_bar.set_postfix_str(status, refresh=True)

    def site_finished(self, result: "SiteResult") -> None:
        if self._site is not None:
            self._open_site_bar()
        if self._site_bar is not None:
            self._site_bar.set_postfix_str(result.status, refresh=True)
            self._site_bar.close()
        self._site_bar, self._site = None, None

    def close(self) -> None:
        for bar in (self._video_bar, self._site_bar):
            if bar is not None:
                bar.close()
        self._video_bar = self._site_bar = None

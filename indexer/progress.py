"""Progress hooks of the indexing pipeline: the library reports, the CLI draws tqdm bars (stderr).

``Progress`` does nothing; subclass it to observe a run (tests use it to inject failures).
"""
from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from indexer.engines import EngineInfo
    from indexer.tasks import SiteResult, VideoResult


class Progress:
    """Callbacks of ``index_collection``, in order: engine_started (once, when there is work), then per site
    site_started, video_finished for each video settled before the run, (video_started, frames_done*,
    video_finished) for each video computed, site_finished. An engine that computes elsewhere (Ray) reports a
    video's frames in one frames_done when its result arrives and calls no video_started."""

    def engine_started(self, info: "EngineInfo") -> None:
        pass

    def site_started(self, site: str, n_videos: int, expected_frames: int) -> None:
        pass

    def video_started(self, site: str, video_id: str, expected_frames: int) -> None:
        pass

    def frames_done(self, n: int) -> None:
        pass

    def video_finished(self, result: "VideoResult") -> None:
        pass

    def site_finished(self, result: "SiteResult") -> None:
        pass

    def close(self) -> None:
        pass


class TqdmProgress(Progress):
    """One bar per site (its frames, ETA for the site) and one per video (its frames, ETA for the video)."""

    def __init__(self, file: Any = None):
        self.file = file if file is not None else sys.stderr
        self._site_bar: Any = None
        self._video_bar: Any = None

    def engine_started(self, info: "EngineInfo") -> None:
        from tqdm import tqdm
        tqdm.write(info.describe(), file=self.file)   # above any open bar, not inside it

    def site_started(self, site: str, n_videos: int, expected_frames: int) -> None:
        from tqdm import tqdm
        self._site_bar = tqdm(total=expected_frames or None, desc=f"{site} ({n_videos} videos)", unit="frame",
                              file=self.file, position=0, leave=True, dynamic_ncols=True)

    def video_started(self, site: str, video_id: str, expected_frames: int) -> None:
        from tqdm import tqdm
        self._video_bar = tqdm(total=expected_frames or None, desc=f"  {video_id}", unit="frame",
                               file=self.file, position=1, leave=False, dynamic_ncols=True)

    def frames_done(self, n: int) -> None:
        for bar in (self._video_bar, self._site_bar):
            if bar is not None:
                bar.update(n)

    def video_finished(self, result: "VideoResult") -> None:
        if self._video_bar is not None:
            self._video_bar.close()
            self._video_bar = None
        if self._site_bar is not None and result.status != "indexed":
            self._site_bar.update(result.expected_frames)   # skipped or failed: count its share as done
        if self._site_bar is not None:
            self._site_bar.set_postfix_str(f"{result.video_id}: {result.status}", refresh=True)

    def site_finished(self, result: "SiteResult") -> None:
        if self._site_bar is not None:
            self._site_bar.set_postfix_str(result.status, refresh=True)
            self._site_bar.close()
            self._site_bar = None

    def close(self) -> None:
        for bar in (self._video_bar, self._site_bar):
            if bar is not None:
                bar.close()
        self._video_bar = self._site_bar = None

"""The local engine: the work stage in this process, one video after another (the default)."""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from indexer.engines import EngineInfo
from indexer.progress import Progress
from indexer.tasks import VideoResult, VideoTask, WorkSettings
from indexer.work import run_video

if TYPE_CHECKING:
    from indexer.backbone import QKExtractor
    from search.encoder import Encoder


class LocalExecutor:
    """Runs ``run_video`` in process with models already loaded; frames stream from decoder to embedder."""

    def __init__(self, encoder: "Encoder", extractor: "QKExtractor | None") -> None:
        self.encoder, self.extractor = encoder, extractor
        self.info: EngineInfo | None = None

    def run(self, tasks: Sequence[VideoTask], settings: WorkSettings, progress: Progress) -> Iterator[VideoResult]:
        if not tasks:
            return
        self.info = EngineInfo("local", 1, (str(getattr(self.encoder, "device", "cpu")),))
        progress.engine_started(self.info)
        for task in tasks:
            progress.video_started(task.site, task.video_id, task.expected_frames)
            yield run_video(task, settings, encoder=self.encoder, extractor=self.extractor, progress=progress)

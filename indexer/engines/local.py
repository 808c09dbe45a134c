"""The local engine: the work stage in this process, one video after another (the default).

Decoding overlaps the models: each video's frames are decoded in a producer thread, a few embedding
batches ahead (``indexer.prefetch``), with decoder threads and queue depth chosen from the cores and the
device (``indexer.prefetch.decode_plan``). With ``--device cuda`` the decoder uses NVDEC where FFmpeg offers
it (``mvk_tools.video.gpu_decoding``), else the CPU.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from indexer.prefetch import decode_plan
from indexer.progress import Progress, plural
from indexer.tasks import EngineInfo, VideoResult, VideoTask, WorkSettings
from indexer.work import run_video
from search.cpus import usable_cores

if TYPE_CHECKING:
    from indexer.backbone import QKExtractor
    from search.encoder import Encoder


class LocalExecutor:
    """Runs ``run_video`` in process with models already loaded; frames stream from decoder to embedder,
    decoded ahead in a producer thread unless ``overlap`` is False (then one stage after the other)."""

    def __init__(self, encoder: "Encoder", extractor: "QKExtractor | None", *, overlap: bool = True) -> None:
        self.encoder, self.extractor, self.overlap = encoder, extractor, overlap
        self.info: EngineInfo | None = None

    def run(self, tasks: Sequence[VideoTask], settings: WorkSettings, progress: Progress) -> Iterator[VideoResult]:
        if not tasks:
            return
        device = str(getattr(self.encoder, "device", "cpu"))
        plan = decode_plan(usable_cores(), device, settings.config.batch_size) if self.overlap else None
        detail = ""
        if plan is not None:
            from mvk_tools.video import gpu_decoding
            gpu = device.startswith("cuda") and gpu_decoding("cuda")
            config = replace(settings.config, decode_threads=settings.config.decode_threads or plan.threads,
                             decode_device="cuda" if gpu else None)
            settings = replace(settings, config=config)
            threads = "" if gpu else f", {plural(config.decode_threads, 'decoder thread')}"
            detail = f"decoding ahead on {'NVDEC' if gpu else 'the CPU'}{threads}"
        self.info = EngineInfo("local", 1, (device,), detail)
        progress.engine_started(self.info)
        for task in tasks:
            progress.video_started(task.site, task.video_id, task.expected_frames)
            yield run_video(task, settings, encoder=self.encoder, extractor=self.extractor, progress=progress,
                            prefetch=plan)

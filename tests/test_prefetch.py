"""Decoding ahead of the models (indexer.prefetch, the local engine) and the indexing progress it reports:
same frames and same index as decoding in line, errors where they happened, a producer that stops, and
bars whose rate counts only this run's work."""
from __future__ import annotations

import io
import threading

import numpy as np
import pytest

from indexer.prefetch import DecodePlan, Prefetch, decode_plan
from indexer.progress import Progress, TqdmProgress, plural
from tests.test_pipeline import SITES, _config, _index, collection, encoder, extractor  # noqa: F401 (fixtures)


@pytest.mark.parametrize("batch,depth", [(1, 1), (3, 2), (16, 4)])
def test_same_items_in_order(batch: int, depth: int) -> None:
    assert list(Prefetch(range(50), batch=batch, depth=depth)) == list(range(50))
    assert list(Prefetch([], batch=batch, depth=depth)) == []


def test_error_comes_after_the_items_before_it() -> None:
    def source():
        yield from range(7)
        raise ValueError("broken at 7")
    seen = []
    with pytest.raises(ValueError, match="broken at 7"):
        for item in Prefetch(source(), batch=3, depth=1):
            seen.append(item)
    assert seen == list(range(7))


def test_consumer_stopping_early_stops_and_closes_the_source() -> None:
    closed = threading.Event()

    def endless():
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            closed.set()
    it = iter(Prefetch(endless(), batch=4, depth=2))
    assert [next(it) for _ in range(5)] == list(range(5))
    it.close()
    assert closed.wait(5)


def test_bad_sizes_and_second_iteration_refused() -> None:
    with pytest.raises(ValueError):
        Prefetch([], batch=0)
    p = Prefetch([1, 2])
    assert list(p) == [1, 2]
    with pytest.raises(RuntimeError):
        list(p)


def test_decode_plan_from_cores_and_device() -> None:
    assert decode_plan(2, "cpu", 16) == DecodePlan(threads=1, batch=16, depth=2)
    assert decode_plan(16, "cpu", 8).threads == 4
    gpu = decode_plan(16, "cuda:0", 32)
    assert gpu.threads == 16 and gpu.depth > 2 and gpu.batch == 32


def test_overlapped_index_equals_sequential(collection, tmp_path, encoder, extractor) -> None:  # noqa: F811
    from indexer.engines.local import LocalExecutor
    from search.store import open_index
    a = _index(collection, tmp_path / "a", encoder, extractor, sites=[SITES[0]],
               executor=LocalExecutor(encoder, extractor, overlap=False))
    b = _index(collection, tmp_path / "b", encoder, extractor, sites=[SITES[0]],
               executor=LocalExecutor(encoder, extractor))
    assert a.ok and b.ok and "decoding ahead" in b.engine.describe()
    assert set(b.seconds) == set(a.seconds) and b.seconds["decode"] > 0        # the producer's time, no extra key
    sa, sb = open_index(tmp_path / "a").shards[SITES[0]], open_index(tmp_path / "b").shards[SITES[0]]
    assert sa.frames.drop(columns=["thumbnail"], errors="ignore").equals(
        sb.frames.drop(columns=["thumbnail"], errors="ignore"))
    assert sa.objects[["frame_row", "track_id", "x0", "y0", "x1", "y1"]].equals(
        sb.objects[["frame_row", "track_id", "x0", "y0", "x1", "y1"]])
    np.testing.assert_array_equal(sa.vectors("frames"), sb.vectors("frames"))
    np.testing.assert_array_equal(sa.vectors("objects"), sb.vectors("objects"))


class Counts(Progress):
    def __init__(self) -> None:
        self.decoded, self.done, self.calls = 0, 0, []

    def frames_decoded(self, n: int) -> None:
        self.decoded += n
        self.calls.append("decoded")

    def frames_done(self, n: int) -> None:
        self.done += n
        self.calls.append("done")


def test_progress_reports_decoded_frames_before_embedded_ones(collection, tmp_path, encoder,  # noqa: F811
                                                              extractor) -> None:  # noqa: F811
    progress = Counts()
    result = _index(collection, tmp_path / "idx", encoder, extractor, sites=[SITES[0]], progress=progress,
                    config=_config(batch_size=2))
    frames = result.sites[0].frames
    assert progress.decoded == progress.done == frames == 8
    assert progress.calls[0] == "decoded" and progress.calls.count("done") == 4     # one per batch of 2


def _segments(text: str) -> list[str]:
    return [s for s in text.replace("\n", "\r").split("\r") if s.strip()]


def test_site_bar_starts_at_the_resumed_frames() -> None:
    """Frames resumed from an earlier run are the bar's start, not progress of this run: no rate from them."""
    from indexer.tasks import SiteResult, VideoResult
    out = io.StringIO()
    bar = TqdmProgress(file=out)
    bar.site_started("Oahu_Jul2022", 2, 20)
    bar.video_finished(VideoResult("Oahu_Jul2022", "0001", "a.mp4", "resumed", frames=10, expected_frames=10))
    bar.video_started("Oahu_Jul2022", "0002", 10)
    first = _segments(out.getvalue())
    assert any("Oahu_Jul2022 (2 videos)" in s and "10/20" in s for s in first)
    assert all("?frame/s" in s or "frame/s" not in s for s in first if "10/20" in s)      # no rate from resumed
    bar.frames_decoded(3)
    bar.frames_done(10)
    bar.video_finished(VideoResult("Oahu_Jul2022", "0002", "b.mp4", "indexed", frames=10, expected_frames=10))
    bar.site_finished(SiteResult("Oahu_Jul2022", "written"))
    assert any("20/20" in s for s in _segments(out.getvalue()))
    assert plural(1, "video") == "1 video" and plural(2, "track") == "2 tracks"

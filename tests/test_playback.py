"""Browser-playable video: MPEG-4 Part 2 (MVK's and Brackish's codec) is transcoded to H.264 per segment and
cached under a byte bound; H.264 sources are served as they are; unreadable files get a message naming them."""
from __future__ import annotations

from pathlib import Path

import pytest

from mvk_tools import playback
from mvk_tools.playback import PlaybackError, playable_segment
from mvk_tools.video import iter_frames, probe
from tests.videofiles import index_of, write_video


@pytest.fixture()
def mpeg4(tmp_path) -> Path:
    return write_video(tmp_path / "part2.mp4", n_frames=24, size=(64, 48), fps=12, codec="mpeg4")


def test_an_mpeg4_part2_segment_is_transcoded_to_h264_from_its_start(mpeg4, tmp_path):
    assert probe(mpeg4).codec == "mpeg4"
    got = playable_segment(mpeg4, 0.5, 1.25, tmp_path / "cache")
    assert got.transcoded and got.codec == "mpeg4" and got.mime == "video/mp4"
    assert got.path.parent == tmp_path / "cache"
    info = probe(got.path)
    assert info.codec == "h264"
    frames = list(iter_frames(got.path))
    # frames 6..15 of the source (0.5 s .. 1.25 s at 12 fps)
    assert [index_of(f.image) for f in frames] == list(range(6, 16))
    assert abs(got.start - 0.5) < 1e-3 and abs(got.end - 15 / 12) < 1e-3
    # the file keeps the source's times, so a browser's player shows them (0:05 at 0:05, not 0:02)
    assert abs(first_frame_time(got.path) - 0.5) < 1e-3
    assert got.zero == 0.0 and got.offset(1.0) == 1.0 and got.offset(0.0) == 0.0


def first_frame_time(path: Path) -> float:
    """The presentation time of a file's first frame, in the file's own timeline."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return float(next(container.decode(stream)).pts * stream.time_base)


def test_a_cached_segment_is_reused_without_transcoding(mpeg4, tmp_path, monkeypatch):
    first = playable_segment(mpeg4, 0.0, 1.0, tmp_path / "cache")

    def fail(*args, **kwargs):
        raise AssertionError("transcoded again")

    monkeypatch.setattr(playback, "_transcode", fail)
    again = playable_segment(mpeg4, 0.0, 1.0, tmp_path / "cache")
    assert again == first


def test_the_cache_stays_under_its_byte_bound(mpeg4, tmp_path):
    cache = tmp_path / "cache"
    made = [playable_segment(mpeg4, s, s + 0.5, cache) for s in (0.0, 0.5, 1.0)]
    one = max(m.path.stat().st_size for m in made)
    bound = 2 * one
    newest = playable_segment(mpeg4, 1.5, 1.9, cache, max_bytes=bound)
    files = list(cache.glob("*.mp4"))
    assert newest.path in files and newest.path.exists()
    assert sum(f.stat().st_size for f in files) <= bound
    assert not made[0].path.exists()                 # the least recently used went first


def test_an_h264_source_is_served_as_it_is(tmp_path):
    src = write_video(tmp_path / "h264.mp4", codec="libx264")
    got = playable_segment(src, 0.0, 1.0, tmp_path / "cache")
    assert not got.transcoded and got.path == src.resolve() and got.offset(1.5) == 1.5
    assert not (tmp_path / "cache").exists()


def test_a_file_that_is_not_a_video_is_named(tmp_path):
    bad = tmp_path / "notes.mp4"
    bad.write_text("hello")
    with pytest.raises(PlaybackError, match="notes.mp4"):
        playable_segment(bad, 0.0, 1.0, tmp_path / "cache")


def test_real_brackish_footage_becomes_h264(brackish_dir, tmp_path):
    src = brackish_dir / "crab_test.mp4"
    got = playable_segment(src, 3.0, 5.0, tmp_path / "cache")
    assert got.transcoded and probe(got.path).codec == "h264"
    assert 2.9 < got.start <= 3.0 + 1e-3 and got.end <= 5.0

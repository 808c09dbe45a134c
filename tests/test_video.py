"""PyAV decoding: exact indices and timestamps in every sampling mode, resize, seeking, variable frame
rate, odd sizes, and bad files (missing, empty, text, audio-only, truncated); the real brackish clips."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mvk_tools.video import VideoError, iter_frames, output_size, probe, read_frame_at
from tests.videofiles import index_of, write_audio_only, write_truncated, write_video

VFR_MS = [0, 40, 80, 200, 240, 400, 440, 480, 1000, 1040, 1080, 1120]


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("media")
    return {
        "cfr": write_video(d / "cfr.mp4", n_frames=24, fps=12, faststart=True),
        "vfr": write_video(d / "vfr.mp4", n_frames=len(VFR_MS), pts_ms=VFR_MS),
        "h264": write_video(d / "h264.mp4", n_frames=24, fps=12, codec="libx264"),
    }


def test_probe(media):
    info = probe(media["cfr"])
    assert (info.width, info.height, info.frame_count, info.fps, info.codec) == (64, 48, 24, 12.0, "mpeg4")
    assert info.duration == pytest.approx(2.0)
    assert info.path.is_absolute()


@pytest.mark.parametrize("name", ["cfr", "h264"])
def test_every_frame_has_its_exact_index_and_time(media, name):
    frames = list(iter_frames(media[name]))
    assert [f.index for f in frames] == list(range(24))
    assert [index_of(f.image) for f in frames] == list(range(24))
    assert np.allclose([f.time for f in frames], np.arange(24) / 12)
    assert frames[0].image.shape == (48, 64, 3) and frames[0].image.dtype == np.uint8


def test_sampling_modes_pick_exact_frames(media):
    path = media["cfr"]
    every_half = list(iter_frames(path, every_seconds=0.5))
    assert [f.index for f in every_half] == [0, 6, 12, 18]
    assert [f.time for f in every_half] == pytest.approx([0.0, 0.5, 1.0, 1.5])
    assert [f.index for f in iter_frames(path, every_seconds=0.3)] == [0, 4, 8, 11, 15, 18, 22]
    assert [f.index for f in iter_frames(path, every_nth=5)] == [0, 5, 10, 15, 20]
    picked = list(iter_frames(path, indices=[17, 3, 3, 0]))
    assert [f.index for f in picked] == [0, 3, 17]
    assert [index_of(f.image) for f in picked] == [0, 3, 17]
    assert list(iter_frames(path, indices=[])) == []


def test_variable_frame_rate_keeps_true_times(media):
    frames = list(iter_frames(media["vfr"]))
    assert [f.index for f in frames] == list(range(len(VFR_MS)))
    assert [index_of(f.image) for f in frames] == list(range(len(VFR_MS)))
    assert [f.time for f in frames] == pytest.approx([t / 1000 for t in VFR_MS])
    # the first frame at or after each multiple of 0.25 s: 0.4 s stands for 0.25; 1.0 s for 0.5, 0.75
    # and 1.0 (each frame once); nothing comes at or after 1.25 s
    sampled = list(iter_frames(media["vfr"], every_seconds=0.25))
    assert [f.index for f in sampled] == [0, 5, 8]
    assert [f.time for f in sampled] == pytest.approx([0.0, 0.4, 1.0])


def test_resize_on_decode(media):
    assert next(iter_frames(media["cfr"], size=(32, 20))).image.shape == (20, 32, 3)
    assert next(iter_frames(media["cfr"], max_side=16)).image.shape == (12, 16, 3)
    assert next(iter_frames(media["cfr"], max_side=1000)).image.shape == (48, 64, 3)   # never enlarged
    assert output_size(1920, 1080, max_side=224) == (224, 126)
    assert output_size(1080, 1920, max_side=224) == (126, 224)
    with pytest.raises(ValueError):
        next(iter_frames(media["cfr"], size=(32, 20), max_side=16))


def test_bad_sampling_arguments(media):
    for kwargs in ({"every_seconds": 1.0, "every_nth": 2}, {"every_seconds": 0}, {"every_nth": 0},
                   {"indices": [-1]}):
        with pytest.raises(ValueError):
            next(iter_frames(media["cfr"], **kwargs))


@pytest.mark.parametrize("name", ["cfr", "h264", "vfr"])
def test_read_frame_at_matches_sequential_decoding(media, name):
    frames = list(iter_frames(media[name]))
    for f in frames:
        for t in (f.time, f.time + 0.02):
            got = read_frame_at(media[name], t)
            assert (got.index, got.time) == (f.index, pytest.approx(f.time)), t
            assert index_of(got.image) == f.index
    assert read_frame_at(media[name], 0.9, max_side=16).image.shape == (12, 16, 3)


def test_read_frame_at_outside_the_video(media):
    with pytest.raises(VideoError, match="past the end"):
        read_frame_at(media["cfr"], 5.0)
    with pytest.raises(ValueError):
        read_frame_at(media["cfr"], -1.0)


def test_indices_past_the_end_yield_the_rest_then_fail(media):
    got = []
    with pytest.raises(VideoError, match=r"cfr\.mp4.*30, 40.*24 frames"):
        for f in iter_frames(media["cfr"], indices=[2, 30, 40]):
            got.append(f.index)
    assert got == [2]


@pytest.mark.parametrize("size,codec", [((65, 47), "libx264"), ((48, 96), "mpeg4"), ((16, 16), "mpeg4")])
def test_odd_portrait_and_tiny_sizes(tmp_path, size, codec):
    path = write_video(tmp_path / "v.mp4", n_frames=8, size=size, codec=codec)
    info = probe(path)
    assert (info.width, info.height, info.frame_count) == (*size, 8)
    frames = list(iter_frames(path, every_nth=3))
    assert [f.index for f in frames] == [0, 3, 6]
    assert frames[0].image.shape == (size[1], size[0], 3)


def test_bad_files_raise_errors_naming_the_file(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 20)
    audio = write_audio_only(tmp_path / "audio.mp4")
    for path, why in ((tmp_path / "missing.mp4", "no such file"), (empty, "empty file"),
                      (text, "not a readable video"), (audio, "no video stream"), (tmp_path, "is a folder")):
        with pytest.raises(VideoError, match=why) as err:
            probe(path)
        assert str(path.name) in str(err.value)
        with pytest.raises(VideoError, match=why):
            next(iter_frames(path))


def test_truncated_file_yields_what_decodes_then_fails(media, tmp_path):
    cut = write_truncated(media["cfr"], tmp_path / "cut.mp4", keep=0.7)
    got = []
    with pytest.raises(VideoError, match=r"cut\.mp4.*truncated"):
        for f in iter_frames(cut):
            got.append(f.index)
    assert 0 < len(got) < 24 and got == list(range(len(got)))
    # indices inside the intact part come back without an error: decoding stops after the last one
    assert [f.index for f in iter_frames(cut, indices=[1, 4])] == [1, 4]
    with pytest.raises(VideoError, match="cut.mp4"):
        probe(write_truncated(media["cfr"], tmp_path / "cut.mp4", keep=0.05))


# --- the real underwater clips (1080p MPEG-4 Part 2, 15 fps), skipped when ../shared/data is absent ---

def _packet_times(path: Path) -> list[float]:
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        pts = sorted(p.pts for p in container.demux(stream) if p.pts is not None)
        return [float(p * stream.time_base) for p in pts]


@pytest.mark.shared_data
@pytest.mark.parametrize("name", ["crab_test.mp4", "fish_test1.mp4"])
def test_real_brackish_clip(brackish_dir, name):
    path = brackish_dir / name
    info = probe(path)
    assert (info.width, info.height, info.fps, info.codec) == (1920, 1080, 15.0, "mpeg4")
    assert 200 < info.frame_count < 260 and info.duration == pytest.approx(info.frame_count / 15, abs=0.2)
    times = _packet_times(path)
    assert len(times) == info.frame_count
    expected = [next(i for i, t in enumerate(times) if t >= k - 1e-3) for k in range(int(times[-1] + 1e-3) + 1)]
    sampled = list(iter_frames(path, every_seconds=1.0, max_side=96))
    assert [f.index for f in sampled] == expected
    assert [f.time for f in sampled] == pytest.approx(list(range(len(expected))), abs=1e-3)
    assert sampled[0].image.shape == (54, 96, 3)
    full = list(iter_frames(path, indices=[0, 30]))
    assert full[1].image.shape == (1080, 1920, 3) and full[1].time == pytest.approx(times[30])
    at = read_frame_at(path, 10.0, max_side=96)
    assert (at.index, at.time) == (expected[10], pytest.approx(10.0, abs=1e-3))


# --- sparse sampling: only the packets sampled frames depend on are decoded, indices and times stay exact ---

VFR_LONG_MS = [int(i * 1000 / 12 + (i % 3) * 20 + (150 if i > 17 else 0)) for i in range(30)]


def _first_at_or_after(frames, every: float) -> list:
    """The reference rule applied to a full decode: the first frame at or after each multiple of ``every``."""
    out, next_time = [], 0.0
    for f in frames:
        if f.time >= next_time - 1e-3:
            out.append(f)
            next_time = (int((f.time + 1e-3) // every) + 1) * every
    return out


@pytest.mark.parametrize("codec,size,bframes,pts_ms", [
    ("libx264", (64, 48), 2, VFR_LONG_MS),       # variable frame rate, B-frames (decode order != display order)
    ("mpeg4", (64, 48), 0, VFR_LONG_MS),
    ("libx264", (65, 47), 2, None),               # odd size
    ("mpeg4", (48, 96), 0, None),
    ("mpeg4", (16, 30), 1, None),                 # tiny, B-frames
])
def test_sparse_sampling_matches_full_decoding(tmp_path, codec, size, bframes, pts_ms):
    from mvk_tools import video
    path = write_video(tmp_path / "v.mp4", n_frames=30, size=size, codec=codec, gop=8, bframes=bframes,
                       pts_ms=pts_ms)
    full = list(iter_frames(path))
    assert [index_of(f.image) for f in full] == list(range(30))
    plan = video._plan(path.resolve(), video._Sampler(0.5, None, []), None)
    assert plan is not None and 0 < plan.needed.sum() < 30        # the sparse path runs and skips packets
    for kwargs, expected in (({"every_seconds": 0.5}, _first_at_or_after(full, 0.5)),
                             ({"every_seconds": 0.7}, _first_at_or_after(full, 0.7)),
                             ({"every_nth": 7}, full[::7]),
                             ({"indices": [29, 5, 13]}, [full[5], full[13], full[29]])):
        for threads in (1, 3):
            got = list(iter_frames(path, threads=threads, **kwargs))
            assert [(f.index, f.time) for f in got] == [(f.index, f.time) for f in expected], (kwargs, threads)
            assert [index_of(f.image) for f in got] == [f.index for f in expected], (kwargs, threads)
            assert all(np.array_equal(a.image, b.image) for a, b in zip(got, expected))


def test_sparse_sampling_of_a_truncated_file_yields_what_it_can(media, tmp_path):
    cut = write_truncated(media["cfr"], tmp_path / "cut.mp4", keep=0.7)
    got = []
    with pytest.raises(VideoError, match=r"cut\.mp4.*truncated"):
        for f in iter_frames(cut, every_seconds=0.5):
            got.append(f.index)
    assert got and got == [0, 6, 12, 18][:len(got)]


def test_decoder_threads_follow_the_cpu_affinity(monkeypatch, media):
    from mvk_tools import video
    monkeypatch.setattr(video.os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    assert video.decoder_threads() == 3
    container, stream = video._open(media["cfr"])
    try:
        assert stream.codec_context.thread_count == 3
    finally:
        container.close()
    with pytest.raises(ValueError):
        next(iter_frames(media["cfr"], threads=0))


@pytest.mark.parametrize("name", ["cfr", "h264", "vfr"])
def test_reduced_resolution_decoding_keeps_sizes_and_content(media, name):
    frames = list(iter_frames(media[name], size=(16, 12)))
    assert all(f.image.shape == (12, 16, 3) for f in frames)
    assert [index_of(f.image) for f in frames] == list(range(len(frames)))
    assert read_frame_at(media[name], frames[3].time, size=(16, 12)).image.shape == (12, 16, 3)


def test_detail_lets_mpeg4_decode_lower_and_keeps_frames_exact(tmp_path):
    """``detail`` below the output size: MPEG-4 decodes one lowres level further, the frames (indices, times,
    content, output size) stay those of the default, in every sampling mode alike; H.264 is unchanged."""
    from mvk_tools import video
    path = write_video(tmp_path / "m.mp4", n_frames=30, size=(256, 192), codec="mpeg4", gop=8)
    container, stream = video._open(path)
    try:
        assert video._lowres(stream, (128, 96)) == 1 and video._lowres(stream, (128, 96), 48) == 2
        assert video._lowres(stream, (128, 96), 96) == 1 and video._lowres(stream, (128, 96), 500) == 1
    finally:
        container.close()
    for kwargs in ({"every_seconds": 0.5}, {"every_nth": 7}, {}):
        base = list(iter_frames(path, max_side=128, **kwargs))
        low = list(iter_frames(path, max_side=128, detail=48, **kwargs))
        assert [(f.index, f.time) for f in low] == [(f.index, f.time) for f in base]
        assert all(f.image.shape == (96, 128, 3) for f in low)
        assert [index_of(f.image) for f in low] == [f.index for f in base]
    sparse = list(iter_frames(path, every_nth=7, max_side=128, detail=48))
    assert all(np.array_equal(a.image, b.image) for a, b in zip(sparse, low[::7]))
    h264 = write_video(tmp_path / "h.mp4", n_frames=12, size=(256, 192), codec="libx264")
    assert all(np.array_equal(a.image, b.image) for a, b in zip(iter_frames(h264, max_side=128),
                                                                 iter_frames(h264, max_side=128, detail=48)))

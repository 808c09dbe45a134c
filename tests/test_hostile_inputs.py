"""Hostile inputs, third pass: special files read as input are refused by name before a byte is read."""
from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest

from search.errors import InputError
from search.inputs import read_regular, regular_file

needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")


@pytest.fixture
def no_hang():
    """A read that blocks (a FIFO nobody writes) fails the test instead of hanging the suite."""
    def _fail(*_):
        raise TimeoutError("blocked on a special file")
    old = signal.signal(signal.SIGALRM, _fail)
    signal.alarm(120)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


@pytest.fixture
def fifo(tmp_path: Path, no_hang) -> Path:
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this system")
    path = tmp_path / "pipe.png"
    os.mkfifo(path)
    return path


def test_the_helper_refuses_devices_fifos_folders_and_large_files(tmp_path: Path, fifo: Path) -> None:
    with pytest.raises(InputError, match="/dev/zero: is a character device"):
        read_regular("/dev/zero", "query image", 1000)
    with pytest.raises(InputError, match="named pipe"):
        read_regular(fifo, "query image", 1000)
    with pytest.raises(InputError, match="is a folder"):
        regular_file(tmp_path, "query set")
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * 2000)
    with pytest.raises(InputError, match="big.bin: 2,000 bytes, more than the limit of 1,000 bytes"):
        read_regular(big, "", 1000)
    assert read_regular(big, "", 2000) == b"x" * 2000


def test_a_query_image_that_is_a_device_or_a_fifo_is_refused(fifo: Path) -> None:
    from search.images import read_image

    with pytest.raises(InputError, match="character device"):
        read_image("/dev/zero")
    with pytest.raises(InputError, match="pipe.png: is a named pipe"):
        read_image(fifo)


def test_a_query_set_that_is_a_device_or_a_fifo_is_refused(tmp_path: Path, no_hang) -> None:
    from mvk_tools.querysets import QuerySetError, read_queryset

    with pytest.raises(QuerySetError, match="query set /dev/zero: is a character device"):
        read_queryset("/dev/zero")
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "q.csv")
        with pytest.raises(QuerySetError, match="q.csv: is a named pipe"):
            read_queryset(tmp_path / "q.csv")


def test_search_cli_refuses_dev_zero_as_image(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from search import store
    from search.cli import main
    from search.encoder import TEST_MODEL, load_encoder
    from search.testing import frame_rows, object_rows

    enc = load_encoder(TEST_MODEL, random_weights=True)
    root = tmp_path / "index"
    store.init_index(root, {"encoder": enc.identity()})
    store.write_shard(root, "Anilao_2019-04", frame_rows("Anilao_2019-04", 2), enc.encode_text(["a", "b"]),
                      object_rows([0]), enc.encode_text(["c"]), {})
    assert main(["search", "--image", "/dev/zero", "--index", str(root)]) == 2
    err = capsys.readouterr().err
    assert "/dev/zero" in err and "character device" in err and "Traceback" not in err


@needs_fifo
def test_a_collection_file_that_is_a_fifo_is_listed_with_its_error(tmp_path: Path, no_hang) -> None:
    from mvk_tools.layout import discover
    from mvk_tools.synth import make_collection
    from mvk_tools.video import VideoError, probe

    make_collection(tmp_path / "c", sites=["Oahu_Jul2022"], videos_per_site=1, n_frames=4)
    site = tmp_path / "c" / "videos" / "Oahu_Jul2022"
    os.mkfifo(site / "0099.mp4")
    catalog = discover(tmp_path / "c")
    row = catalog[catalog["video_id"] == "0099"].iloc[0]
    assert "0099.mp4: is a named pipe" in row["error"]
    assert (catalog[catalog["video_id"] != "0099"]["error"] == "").all()
    with pytest.raises(VideoError, match="named pipe"):
        probe(site / "0099.mp4")
    assert np.isfinite(catalog[catalog["video_id"] != "0099"]["duration"]).all()

"""`mvk synth` and `mvk catalog` end to end: the README quick start, output formats, bad paths and options."""
from __future__ import annotations

import io
import json
from contextlib import redirect_stderr, redirect_stdout

import pandas as pd
import pytest

from mvk_tools.cli import main
from tests.videofiles import write_video


def mvk(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as exc:      # argparse usage errors
            code = exc.code
    return code, out.getvalue(), err.getvalue()


def test_quick_start_synth_then_catalog(tmp_path):
    target = tmp_path / "demo-collection"
    code, out, _ = mvk("synth", str(target))
    assert code == 0 and "wrote 4 videos" in out
    code, out, _ = mvk("catalog", str(target))
    assert code == 0
    lines = out.strip().splitlines()
    assert lines[0].split()[:3] == ["site", "video", "duration"]
    assert sum("Oahu_Jul2022" in line for line in lines) == 2 and sum("PhuQuoc1_Jun2022" in line for line in lines) == 2
    assert lines[-1].startswith("4 videos in 2 sites")
    assert "videos/Oahu_Jul2022/0001.mp4" in out
    assert mvk("synth", str(target))[0] == 0        # running the quick start again works


def test_synth_options_and_csv_json(tmp_path):
    target = tmp_path / "c"
    code, _, _ = mvk("synth", str(target), "--sites", "3", "--videos", "1", "--frames", "10", "--size", "64x48",
                     "--seed", "4", "--fps", "10")
    assert code == 0
    code, out, err = mvk("catalog", str(target), "--format", "csv")
    table = pd.read_csv(io.StringIO(out), dtype={"video_id": str})
    assert table.site.tolist() == ["Oahu_Jul2022", "PhuQuoc1_Jun2022", "Tulamben2_Jun2022"]
    assert table.video_id.tolist() == ["0001"] * 3
    assert table.frame_count.tolist() == [10] * 3 and table.width.tolist() == [64] * 3 and table.fps.tolist() == [10.0] * 3
    assert "3 videos in 3 sites" in err
    code, out, _ = mvk("catalog", str(target), "--format", "json")
    rows = json.loads(out)
    assert len(rows) == 3 and rows[0]["place"] == "Oahu" and rows[0]["date"] == "2022-07" and rows[0]["error"] == ""


def test_catalog_shows_errors_and_goes_on(tmp_path):
    folder = tmp_path / "Brackish"
    folder.mkdir()
    write_video(folder / "good.mp4", n_frames=6)
    (folder / "broken.mp4").write_text("nope")
    (folder / "README.txt").write_text("notes")
    code, out, _ = mvk("catalog", str(folder))
    assert code == 0
    assert "broken.mp4: not a readable video" in out
    assert "2 videos in 1 site" in out and "1 unreadable" in out and "1 non-video file skipped" in out
    code, out, _ = mvk("catalog", str(folder), "--format", "json")
    rows = {r["video_id"]: r for r in json.loads(out)}
    assert rows["good"]["frame_count"] == 6 and rows["broken"]["frame_count"] is None


def test_bad_paths_and_options(tmp_path):
    code, _, err = mvk("catalog", str(tmp_path / "nowhere"))
    assert code == 2 and "nowhere: no such folder" in err and err.count("\n") == 1
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.txt").write_text("x")
    code, _, err = mvk("synth", str(tmp_path / "junk"))
    assert code == 2 and "not empty" in err
    for argv in (("synth", "x", "--size", "161x96"), ("synth", "x", "--size", "big"), ("synth", "x", "--videos", "0"),
                 ("catalog", "x", "--format", "xml")):
        code, _, err = mvk(*argv)
        assert code == 2 and "error" in err
    code, _, err = mvk("synth", str(tmp_path / "s"), "--sites", "9")
    assert code == 2 and "at most" in err


@pytest.mark.parametrize("command", ["catalog", "synth"])
def test_help_explains_options(command):
    code, out, _ = mvk(command, "--help")
    assert code == 0
    for word in ({"catalog": ["--format", "--no-probe", "Tulamben2_Jun2022_0016"],
                  "synth": ["--sites", "--size", "--seed", "default"]}[command]):
        assert word in out


def test_catalog_reports_an_unreadable_site_and_lists_the_others(tmp_path, monkeypatch):
    from mvk_tools.synth import make_collection
    from tests.test_layout import unlistable

    coll = make_collection(tmp_path / "c", sites=("Oahu_Jul2022", "PhuQuoc1_Jun2022"), videos_per_site=1, n_frames=12)
    unlistable(monkeypatch, coll.resolve() / "videos" / "PhuQuoc1_Jun2022")
    code, out, err = mvk("catalog", str(coll))
    assert code == 0
    assert "error: site PhuQuoc1_Jun2022:" in err and "Permission denied" in err
    assert "Oahu_Jul2022" in out and "h264" in out and "1 site folder could not be read" in out

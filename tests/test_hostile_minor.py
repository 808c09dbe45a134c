"""Hostile inputs, third pass, the small ones: event log rotation, formulas in CSV exports, control and
bidirectional characters in the index summary, a closed pipe on stdout."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.test_kis_cli import hand_index  # noqa: F401  (a fixture)

REPO = Path(__file__).resolve().parents[1]


def test_the_event_log_is_rotated_and_bounded(tmp_path: Path) -> None:
    from mvk_tools.eventlog import EventLog

    path = tmp_path / "logs" / "events.jsonl"
    log = EventLog(path, max_bytes=2000, keep=2)
    for i in range(200):
        assert log.write("query", text=f"query number {i}", filler="x" * 50)
    names = sorted(p.name for p in path.parent.iterdir())
    assert names == ["events.jsonl", "events.jsonl.1", "events.jsonl.2"]
    assert all(p.stat().st_size <= 2000 for p in path.parent.iterdir())
    last = path.read_text().splitlines()[-1]
    assert '"query number 199"' in last
    older = (path.parent / "events.jsonl.1").read_text().splitlines()
    newest_first = int(path.read_text().splitlines()[0].split("query number ")[1].split('"')[0])
    assert f'"query number {newest_first - 1}"' in older[-1]           # no line lost between the files


def test_formula_cells_are_escaped_in_csv_exports() -> None:
    from mvk_tools.exports import spreadsheet_safe

    table = pd.DataFrame({"text": ['=HYPERLINK("http://x","y")', "+1+2", "@SUM(A1)", "-2", "a reef", None],
                          "rank": [1, 2, 3, 4, 5, 6], "score": [-1.0, 0.5, 0.1, 0.2, 0.3, 0.4]})
    safe = spreadsheet_safe(table)
    assert list(safe["text"][:5]) == ["'=HYPERLINK(\"http://x\",\"y\")", "'+1+2", "'@SUM(A1)", "-2", "a reef"]
    assert safe["text"].isna().iloc[5]
    assert safe["rank"].tolist() == table["rank"].tolist() and safe["score"].tolist() == table["score"].tolist()


def test_kis_per_query_csv_has_no_live_formula(hand_index: Path, tmp_path: Path) -> None:  # noqa: F811
    from mvk_tools.querysets import make_queries, write_queryset
    from search.cli import main

    qfile = write_queryset(make_queries([
        {"query_id": "q1", "query_type": "novice", "text": '=HYPERLINK("http://evil","click")',
         "target_site": "Oahu_Jul2022", "target_video": "0002", "target_frame": 30, "target_time": None,
         "vector": np.array([1, 0, 0, 0.0])}]), tmp_path / "q.csv", with_vectors=True)
    from app.cli import main as mvk
    assert main is not None
    assert mvk(["kis", str(qfile), "--index", str(hand_index), "--out", str(tmp_path / "o"),
                "--use-file-vectors"]) == 0
    text = (tmp_path / "o" / "per_query.csv").read_text()
    assert "'=HYPERLINK" in text and ",=HYPERLINK" not in text


def test_hostile_site_names_keep_the_summary_table_on_its_lines(tmp_path: Path) -> None:
    from indexer.commands.index import format_summary
    from indexer.pipeline import IndexResult
    from indexer.tasks import SiteResult, VideoResult

    evil = "Oahu\nJul2022 written 99 \u202eevil"
    video = VideoResult(evil, "0001", f"videos/{evil}/0001.mp4", "failed", error="bad\nline")
    result = IndexResult(tmp_path, [SiteResult(evil, "failed", videos=[video]), SiteResult("Bali_Jan2020", "written")],
                         {}, 0.0, 0, False)
    text = format_summary(result)
    assert "\u202e" not in text and "\\u202e" in text
    rows = text.splitlines()
    assert rows[0].split()[:2] == ["site", "status"]
    assert sum(line.startswith("Oahu") for line in rows) == 1
    assert any(line.startswith("Bali_Jan2020") for line in rows)
    assert all("Jul2022 written" not in line or "Oahu\\nJul2022" in line for line in rows)


def test_a_closed_stdout_pipe_ends_quietly(tmp_path: Path) -> None:
    from mvk_tools.synth import make_collection

    coll = make_collection(tmp_path / "c", sites=("Oahu_Jul2022",), videos_per_site=1, n_frames=4)
    proc = subprocess.Popen([sys.executable, "-m", "app", "catalog", str(coll), "--no-probe", "--format", "csv"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()                          # the reader is gone before anything is written (`| head -0`)
    err = proc.stderr.read().decode()
    proc.wait(timeout=120)
    assert "Traceback" not in err and "BrokenPipeError" not in err
    assert proc.returncode in (0, 141)

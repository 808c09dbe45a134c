"""Every command explains itself, and --help stays instant (no heavy imports at parse time)."""
from __future__ import annotations

import subprocess
import sys

import pytest

from app.cli import COMMANDS, main


def test_top_level_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for name in ("index", "segment", "search", "catalog", "synth", "kis", "captions", "app", "demo"):
        assert f"    {name}" in out


@pytest.mark.parametrize("module", COMMANDS)
def test_each_command_has_help(module: str, capsys: pytest.CaptureFixture[str]) -> None:
    name = __import__(module, fromlist=["NAME"]).NAME
    with pytest.raises(SystemExit) as exc:
        main([name, "--help"])
    assert exc.value.code == 0
    assert len(capsys.readouterr().out.strip().splitlines()) >= 2


def test_help_does_not_import_torch() -> None:
    code = "import sys; from app.cli import main\ntry: main(['--help'])\nexcept SystemExit: pass\nprint('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "False"


@pytest.mark.parametrize("package", ["search", "mvk_tools", "indexer", "app"])
def test_each_package_runs_as_module(package: str) -> None:
    proc = subprocess.run([sys.executable, "-m", package, "--help"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "usage:" in proc.stdout


@pytest.mark.parametrize("argv", [
    ["index", "coll", "--index", "idx", "--every", "0"],
    ["index", "coll", "--index", "idx", "--tau", "-1"],
    ["index", "coll", "--index", "idx", "--key-stride", "0"],
    ["index", "coll", "--index", "idx", "--batch-size", "many"],
    ["search", "turtle", "--index", "idx", "-k", "0"],
    ["search", "turtle", "--index", "idx", "--then", "shark", "--within", "inf"],
    ["kis", "q.csv", "--index", "idx", "--out", "o", "--fps", "0"],
    ["captions", "--index", "idx", "--out", "c.csv", "--n", "-3"],
    ["segment", "clip.mp4", "--out", "o", "--key-stride", "0"],
    ["synth", "out", "--videos", "0"],
])
def test_bad_numbers_are_refused_before_anything_runs(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """Counts, strides, thresholds and durations must be positive: argparse refuses them naming the value."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "expected a" in err and repr(argv[-1]) in err


@pytest.mark.parametrize("argv, unknown, close", [
    (["index", "coll", "--idnex", "idx"], "--idnex", "--index"),
    (["search", "turtle", "--idnex", "idx"], "--idnex", "--index"),
    (["app", "--index", "idx", "--colection", "c"], "--colection", "--collection"),
    (["kis", "q.csv", "--index", "idx", "--out", "o", "--fpss=3"], "--fpss", "--fps"),
    (["check", "idx", "--quik"], "--quik", "--quick"),
])
def test_a_mistyped_option_is_named_with_the_closest_known_one(argv, unknown, close, capsys) -> None:
    """A typo is named before any complaint about a missing required option (which it would otherwise cause)."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"unknown option {unknown} (did you mean {close}?)" in err and "required" not in err


def test_known_options_abbreviations_and_negative_values_are_not_typos() -> None:
    from search.clikit import unknown_option

    known = ["-h", "--help", "-k", "--k", "--index", "--tau", "--within"]
    assert unknown_option(["turtle", "--ind", "x", "-k5", "--tau=-1", "--within", "-3"], known) is None
    assert unknown_option(["--", "--idnex"], known) is None
    assert unknown_option(["--zebra"], known) == "unknown option --zebra"

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

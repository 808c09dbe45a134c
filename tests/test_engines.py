"""Engine selection in `mvk index`: the Ray engine without Ray installed says how to install it (exit 2);
Ray flags without the Ray engine are refused."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from app.cli import main
from tests.test_index_cli import index_args, collection  # noqa: F401


def test_ray_engine_without_ray_says_how_to_install_it(collection, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)          # as if it were not installed
    assert main(index_args(collection, tmp_path / "idx", "--engine", "ray")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'pip install -e ".[ray]"' in err[0]
    assert not (tmp_path / "idx").exists()


@pytest.mark.parametrize("flag", [["--ray-address", "auto"], ["--workers", "2"]])
def test_ray_flags_need_the_ray_engine(collection, tmp_path: Path, capsys, flag) -> None:
    assert main(index_args(collection, tmp_path / "idx", *flag)) == 2
    assert "go with --engine ray" in capsys.readouterr().err

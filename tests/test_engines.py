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


@pytest.mark.parametrize("flag", [["--ray-address", "auto"], ["--workers", "2"], ["--gpus-per-worker", "0.5"]])
def test_ray_flags_need_the_ray_engine(collection, tmp_path: Path, capsys, flag) -> None:
    assert main(index_args(collection, tmp_path / "idx", *flag)) == 2
    assert "go with --engine ray" in capsys.readouterr().err


def test_the_engine_registry_is_what_the_cli_offers_and_an_unknown_name_is_refused(capsys) -> None:
    from indexer.engines import ENGINES, ModelSpec, make_executor
    from indexer.engines.local import LocalExecutor
    from search.errors import InputError
    assert list(ENGINES) == ["local", "ray"]
    with pytest.raises(SystemExit):
        main(["index", "--help"])
    assert "{local,ray}" in capsys.readouterr().out
    assert isinstance(make_executor("local", ModelSpec(), None, None), LocalExecutor)
    with pytest.raises(InputError, match="unknown engine 'spark': one of local, ray"):
        make_executor("spark", ModelSpec(), None, None)

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


@pytest.mark.parametrize("cluster, objects, kw, want", [
    ({"CPU": 4}, True, {}, (2, 2, {"num_cpus": 1, "memory": 1})),
    ({"CPU": 4}, False, {}, (0, 2, {"num_cpus": 1, "memory": 1})),          # CPUs left for decoding tasks
    ({"CPU": 8, "GPU": 1}, True, {}, (1, 1, {"num_gpus": 0.5, "num_cpus": 1, "memory": 1})),
    ({"CPU": 8, "GPU": 2}, False, {}, (0, 2, {"num_gpus": 1.0, "num_cpus": 1, "memory": 1})),
    ({"CPU": 8, "GPU": 1}, True, {"gpus_per_worker": 0.25}, (2, 2, {"num_gpus": 0.25, "num_cpus": 1, "memory": 1})),
    ({"CPU": 8, "GPU": 2}, True, {"gpus_per_worker": 0.5, "workers": 1},
     (1, 1, {"num_gpus": 0.5, "num_cpus": 1, "memory": 1})),
])
def test_ray_resources_per_stage_and_fractional_gpus(cluster, objects, kw, want) -> None:
    from indexer.engines.raydata import plan_resources
    args = {"workers": None, "gpus_per_worker": None, **kw}
    assert plan_resources(cluster, objects=objects, actor_memory=1, **args) == want


def test_more_gpus_per_worker_than_the_cluster_has_is_refused() -> None:
    from indexer.engines.raydata import plan_resources
    from search.errors import InputError
    with pytest.raises(InputError, match="--gpus-per-worker 2: the cluster has 1 GPU"):
        plan_resources({"CPU": 4, "GPU": 1}, objects=True, workers=None, gpus_per_worker=2, actor_memory=1)

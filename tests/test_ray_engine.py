"""`mvk index --engine ray` on a local Ray cluster started here: the same index as the local engine, a video
that raises is recorded, a worker killed mid-video is retried, a killed driver resumes without duplicates.
Skipped where Ray Data is not installed (pip install -e ".[ray]")."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ray.data")

from tests.test_pipeline import SITES, TEST_BACKBONE, Kill, Recorder, _config, collection  # noqa: E402,F401

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cluster():
    """A 2-CPU Ray instance whose workers import this checkout; it and its processes end with the module."""
    import ray
    import ray.cloudpickle
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])   # test frame sources travel by value
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def models():
    from indexer.engines import ModelSpec
    from indexer.models import load_models
    from search.encoder import TEST_MODEL
    spec = ModelSpec(model=TEST_MODEL, backbone=TEST_BACKBONE, random_weights=True)
    return spec, *load_models(objects="pool", **spec.kwargs())


def _ray_index(collection: Path, root: Path, models, **kw):
    from indexer.engines.raydata import RayExecutor
    from indexer.pipeline import index_collection
    spec, encoder, extractor = models
    return index_collection(collection, root, encoder=encoder, extractor=extractor,
                            config=kw.pop("config", _config()), executor=RayExecutor(spec), **kw)


def _shard_contents(root: Path) -> dict:
    from search.store import open_index
    index = open_index(root)
    assert not index.errors
    out = {}
    for site, shard in index.shards.items():
        out[site] = (shard.frames, shard.objects, shard.frame_index.reconstruct_n(0, shard.frame_index.ntotal),
                     shard.object_index.reconstruct_n(0, shard.object_index.ntotal))
    return out


def test_cli_ray_engine_writes_the_same_index_as_the_local_engine(cluster, collection, tmp_path, capsys) -> None:
    from app.cli import main
    from search.encoder import TEST_MODEL
    args = ["index", str(collection), "--all", "--model", TEST_MODEL, "--backbone", TEST_BACKBONE,
            "--random-weights", "--every", "0.5", "--max-side", "0", "--batch-size", "4", "--short-side", "64",
            "--key-stride", "2", "--no-progress"]
    assert main([*args, "--index", str(tmp_path / "local")]) == 0
    assert main([*args, "--index", str(tmp_path / "ray"), "--engine", "ray", "--ray-address", "auto"]) == 0
    out = capsys.readouterr().out
    assert "engine ray: 1 worker on cpu" in out and "written" in out
    local, ray = _shard_contents(tmp_path / "local"), _shard_contents(tmp_path / "ray")
    assert set(local) == set(ray) == set(SITES)
    for site in SITES:
        (lf, lo, lfv, lov), (rf, ro, rfv, rov) = local[site], ray[site]
        assert len(lf) == 8 and len(lo) > 0
        assert lf.equals(rf) and lo.equals(ro)
        assert np.array_equal(lfv, rfv) and np.array_equal(lov, rov)


def _frames_failing_once(marker_dir: str):
    """A frame source: 0001 of the first site raises; 0002 kills its worker process on the first attempt."""
    def source(task, config):
        from indexer.work import sampled_frames
        for i, frame in enumerate(sampled_frames(task, config)):
            if task.site == SITES[0] and task.video_id == "0001" and i == 1:
                raise RuntimeError("decoder exploded")
            marker = Path(marker_dir) / f"killed-{task.video_id}"
            if task.site == SITES[0] and task.video_id == "0002" and i == 1 and not marker.exists():
                marker.write_text(str(os.getpid()))
                os._exit(1)                # the worker process dies mid-video
            yield frame
    return source


def test_raising_video_is_recorded_and_a_killed_worker_retried(cluster, collection, tmp_path, models) -> None:
    from search.store import open_index
    result = _ray_index(collection, tmp_path / "idx", models, sites=[SITES[0]],
                        frame_source=_frames_failing_once(str(tmp_path)))
    assert (tmp_path / "killed-0002").exists()                       # a worker did die
    assert result.errors == [(SITES[0], f"videos/{SITES[0]}/0001.mp4", "RuntimeError: decoder exploded")]
    assert [v.status for v in result.sites[0].videos] == ["failed", "indexed"]
    frames = open_index(tmp_path / "idx").frames
    assert frames["video_id"].tolist() == ["0002"] * 4


def test_killed_driver_resumes_without_duplicates(cluster, collection, tmp_path, models) -> None:
    from search.store import open_index
    root = tmp_path / "idx"
    with pytest.raises(Kill):
        _ray_index(collection, root, models, progress=Recorder(kill_after=1))
    assert not (root / "sites" / SITES[0] / "frames.parquet").exists()
    rec = Recorder()
    result = _ray_index(collection, root, models, progress=rec)
    assert [s.status for s in result.sites] == ["written", "written"] and not result.errors
    assert rec.finished[0].status == "resumed" and {v.status for v in rec.finished} <= {"resumed", "indexed"}
    frames = open_index(root).frames
    assert len(frames) == 16 and not frames.duplicated(["site", "video_id", "frame_index"]).any()


def test_paths_not_shared_by_every_node_stop_the_run(cluster, collection, tmp_path, models, monkeypatch) -> None:
    """Two nodes (the one node, listed twice), one path that no node sees: stopped before any work, by name."""
    from indexer.engines.raydata import EngineError, RayExecutor
    from indexer.pipeline import index_collection
    node = [n for n in cluster.nodes() if n.get("Alive")][0]
    monkeypatch.setattr(cluster, "nodes", lambda: [node, node])
    spec, encoder, extractor = models
    missing = tmp_path / "not-mounted-here"
    with pytest.raises(EngineError, match=f"not all see the same files: {missing} \\(not found on node"):
        index_collection(collection, tmp_path / "idx", encoder=encoder, extractor=extractor, config=_config(),
                         executor=RayExecutor(spec, collection=missing))
    assert not list((tmp_path / "idx" / ".work").rglob("*.done.json"))


def test_workers_that_cannot_load_the_drivers_models_stop_the_run(cluster, collection, tmp_path, models) -> None:
    from dataclasses import replace

    from indexer.engines.raydata import EngineError, RayExecutor
    from indexer.pipeline import index_collection
    spec, encoder, _ = models
    other = replace(spec, random_weights=False)          # the workers would need pretrained weights: none here
    with pytest.raises(EngineError, match="cannot load the models"):
        index_collection(collection, tmp_path / "idx", encoder=encoder, config=_config(objects="none"),
                         sites=[SITES[0]], executor=RayExecutor(other))


def test_further_spaces_run_on_the_workers_and_match_the_local_engine(cluster, collection, tmp_path, models) -> None:
    """A space added to an index on the Ray engine is embedded by actors that load its encoder themselves (by the
    identity the index records), with the same vectors as the local engine's."""
    from indexer.engines.raydata import RayExecutor
    from indexer.models import load_encoder
    from indexer.pipeline import index_collection
    from search.encoder import TEST_SIGLIP_MODEL
    from search.store import open_index
    spec, encoder, extractor = models
    siglip = load_encoder(model=TEST_SIGLIP_MODEL, random_weights=True)
    local = index_collection(collection, tmp_path / "local", encoder=encoder, extractor=extractor, config=_config(),
                             spaces=[siglip])
    assert local.ok and not local.errors
    executor = RayExecutor(spec)
    first = _ray_index(collection, tmp_path / "ray", models)          # one space, then the space added on Ray
    assert first.ok and not first.errors
    added = index_collection(collection, tmp_path / "ray", encoder=encoder, extractor=extractor, config=_config(),
                             executor=executor, spaces=[siglip])
    assert added.ok and not added.errors, added.errors
    assert sum(executor.spaces_per_node.values()) == 2 * len(SITES)      # every video embedded by an actor
    assert added.engine is not None and "further spaces only" in added.engine.detail
    a, b = open_index(tmp_path / "local").in_space(TEST_SIGLIP_MODEL), open_index(tmp_path / "ray").in_space(
        TEST_SIGLIP_MODEL)
    for site in SITES:
        assert np.array_equal(a.shards[site].vectors("frames"), b.shards[site].vectors("frames"))
        assert np.array_equal(a.shards[site].vectors("objects"), b.shards[site].vectors("objects"))


def test_a_node_that_dies_while_probed_stops_the_run_with_a_message(tmp_path) -> None:
    """check_shared on a cluster whose node dies during the probe: EngineError naming the cause, no traceback."""
    from indexer.engines.raydata import EngineError, check_shared

    class Remote:
        def options(self, **kw):
            return self

        def remote(self, *args):
            return object()

    class DyingRay:
        def nodes(self):
            return [{"Alive": True, "NodeID": "a" * 56}, {"Alive": True, "NodeID": "b" * 56}]

        def remote(self, **kw):
            return lambda fn: Remote()

        def get(self, refs, timeout=None):
            raise RuntimeError("The node with node id: bbbb has been marked dead")

    with pytest.raises(EngineError, match="could not check that its 2 nodes see the same files: .*marked dead"):
        check_shared(DyingRay(), tmp_path, [str(tmp_path)])
    assert not list((tmp_path / ".work").glob("probe-*"))         # the probe file is removed

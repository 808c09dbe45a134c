"""The README's multi-node Ray steps on a real cluster: a head and two worker nodes, each in its own network
namespace (veth pairs on a bridge made here, addresses in 198.18.0.0/15, no route out), every node seeing
this machine's filesystem as its shared one (tests/netns_cluster.py). `mvk index --engine ray --ray-address
HEAD_IP:6379` runs from the head's namespace and must give the local engine's rows and vectors, with work on
both worker nodes; a driver killed mid-run resumes from the committed parts; a worker node killed mid-run
(all its processes, by PID) leaves a run that completes, or a rerun that completes, without duplicate or
missing rows. Skipped, with the reason, only where namespaces cannot be made (not root, no iproute2, no Ray).
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ray.data")

from tests.netns_cluster import NetnsCluster, can_make_namespaces, readme_steps, start_ray  # noqa: E402

REASON = can_make_namespaces()
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"no multi-node cluster here: {REASON}")
SITES = ("Oahu_Jul2022", "RajaAmpat_Jan2017")
TEST_FLAGS = ["--model", "mvk-tiny-vit", "--backbone", "color", "--random-weights", "--every", "0.5",
              "--max-side", "0", "--batch-size", "2", "--short-side", "64", "--key-stride", "2", "--no-progress"]
RUN_TIMEOUT = 600.0      # seconds per `mvk index` run: generous, for a heavily shared machine


@pytest.fixture(scope="module")
def collection(tmp_path_factory) -> Path:
    from mvk_tools.synth import make_collection
    return make_collection(tmp_path_factory.mktemp("multinode") / "coll", sites=SITES, videos_per_site=2,
                           n_frames=24, size=(160, 96), fps=12.0)


@pytest.fixture(scope="module")
def cluster():
    with NetnsCluster(3) as made:
        steps = readme_steps()
        start_ray(made, steps["head"], steps["worker"], timeout=120)
        yield made


def index_command(cluster: NetnsCluster, collection: Path, index: Path) -> list[str]:
    """The README's `mvk index` line with its placeholders filled in (and the tiny test models added)."""
    words = [w.replace("HEAD_IP", cluster.head.ip).replace("/shared/MVK", str(collection))
             .replace("/shared/idx", str(index)) for w in readme_steps()["index"]]
    assert words[:2] == ["mvk", "index"] and f"{cluster.head.ip}:6379" in words
    return [sys.executable, "-m", "app", *words[1:], *TEST_FLAGS]


def start_index(cluster: NetnsCluster, collection: Path, index: Path, log: Path) -> subprocess.Popen:
    return cluster.popen(cluster.head, index_command(cluster, collection, index), log)


def finish(proc: subprocess.Popen, log: Path, timeout: float = RUN_TIMEOUT) -> tuple[int | None, str]:
    """(exit code, or None when it had to be killed after ``timeout`` seconds; its output)."""
    try:
        code: int | None = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        code = None
    return code, log.read_text()


def wait_for_commits(index: Path, n: int, proc: subprocess.Popen, timeout: float = RUN_TIMEOUT) -> bool:
    """Until ``n`` videos' parts are committed under ``index/.work`` (True), or the run ended first (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(list((index / ".work").rglob("*.done.json"))) >= n:
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.05)
    raise TimeoutError(f"no {n} committed part(s) under {index} in {timeout:.0f}s")


def contents(root: Path) -> dict:
    from search.store import open_index
    index = open_index(root)
    assert not index.errors
    return {site: (shard.frames, shard.objects, shard.frame_index.reconstruct_n(0, shard.frame_index.ntotal),
                   shard.object_index.reconstruct_n(0, shard.object_index.ntotal))
            for site, shard in index.shards.items()}


def assert_same_index(got: Path, want: Path) -> None:
    """Rows and vectors equal to the local engine's: nothing missing, nothing twice."""
    a, b = contents(got), contents(want)
    assert sorted(a) == sorted(b) == sorted(SITES)
    for site in SITES:
        (af, ao, afv, aov), (bf, bo, bfv, bov) = a[site], b[site]
        assert not af.duplicated(["video_id", "frame_index"]).any()
        assert af.equals(bf) and ao.equals(bo)
        assert np.array_equal(afv, bfv) and np.array_equal(aov, bov)


@pytest.fixture(scope="module")
def local_index(collection, tmp_path_factory) -> Path:
    from app.cli import main
    root = tmp_path_factory.mktemp("local") / "idx"
    assert main(["index", str(collection), "--all", "--index", str(root), *TEST_FLAGS]) == 0
    return root


def videos(output: str) -> dict[str, int]:
    """Videos indexed, resumed and failed over every site, from `mvk index`'s summary table."""
    out = {"indexed": 0, "resumed": 0, "failed": 0}
    for site in SITES:
        row = re.search(rf"^{site}\s+\S+\s+(\d+)\s+(\d+)\s+(\d+)\s", output, re.M)
        assert row, output
        for key, value in zip(out, row.groups()):
            out[key] += int(value)
    return out


def per_node(output: str) -> dict[str, int]:
    """The chunk tasks each node ran, from the engine line of `mvk index`'s summary."""
    found = re.search(r"chunk tasks per node: ([^)]*)\)", output)
    assert found, output
    return {node: int(n) for node, n in (item.rsplit(" ", 1) for item in found.group(1).split(", "))}


def test_readme_steps_index_like_the_local_engine_on_both_worker_nodes(cluster, collection, local_index,
                                                                        tmp_path) -> None:
    idx, log = tmp_path / "idx", tmp_path / "run.log"
    code, out = finish(start_index(cluster, collection, idx, log), log)
    assert code == 0, out
    assert "engine ray:" in out and "3 node(s)" in out and videos(out) == {"indexed": 4, "resumed": 0, "failed": 0}
    counts = per_node(out)
    workers = {n.ip for n in cluster.nodes[1:]}
    assert set(counts) == workers and all(counts[ip] > 0 for ip in workers), counts   # the head only drives
    assert_same_index(idx, local_index)


def test_a_further_space_is_embedded_on_the_worker_nodes(cluster, collection, tmp_path) -> None:
    """`mvk index ... --model A --model B` on the cluster: the second space's videos are read and embedded by
    actors on the worker nodes (none on the head), with the vectors of the local engine."""
    from app.cli import main
    from search.store import open_index
    local = tmp_path / "local"
    assert main(["index", str(collection), "--all", "--index", str(local), *TEST_FLAGS,
                 "--model", "mvk-tiny-siglip"]) == 0
    idx, log = tmp_path / "idx", tmp_path / "run.log"
    proc = cluster.popen(cluster.head, [*index_command(cluster, collection, idx), "--model", "mvk-tiny-siglip"], log)
    code, out = finish(proc, log)
    assert code == 0, out
    found = re.search(r"space videos per node: ([^)]*)\)", out)
    assert found, out
    counts = {node: int(n) for node, n in (item.rsplit(" ", 1) for item in found.group(1).split(", "))}
    assert set(counts) <= {n.ip for n in cluster.nodes[1:]} and sum(counts.values()) == 4, counts
    a, b = open_index(idx).in_space("mvk-tiny-siglip"), open_index(local).in_space("mvk-tiny-siglip")
    for site in SITES:
        assert np.array_equal(a.shards[site].vectors("frames"), b.shards[site].vectors("frames"))
        assert np.array_equal(a.shards[site].vectors("objects"), b.shards[site].vectors("objects"))


def test_killed_driver_then_killed_worker_node_resume_without_duplicates(cluster, collection, local_index,
                                                                         tmp_path) -> None:
    idx = tmp_path / "idx"
    first = start_index(cluster, collection, idx, tmp_path / "1.log")
    assert wait_for_commits(idx, 1, first), "the run ended before the driver could be killed"
    os.kill(first.pid, signal.SIGKILL)                         # the driver dies mid-run
    first.wait(timeout=30)
    committed = len(list((idx / ".work").rglob("*.done.json")))
    assert 1 <= committed < 4

    second = start_index(cluster, collection, idx, tmp_path / "2.log")
    assert wait_for_commits(idx, committed + 1, second), "the rerun ended before a node could be killed"
    victim = cluster.nodes[2]
    killed = cluster.kill_node(victim)                         # raylet, object store, workers: by PID
    assert killed and not cluster.pids(victim)
    code, out = finish(second, tmp_path / "2.log")
    if code != 0:                                              # Ray could not place the lost workers again
        code, out = finish(start_index(cluster, collection, idx, tmp_path / "3.log"), tmp_path / "3.log")
        assert code == 0, out
    done = videos(out)
    assert done["resumed"] >= committed and done["failed"] == 0, out       # committed parts were not redone
    assert done["resumed"] + done["indexed"] == 4, out
    assert_same_index(idx, local_index)
    print(f"resumed after the driver died with {committed} committed video(s); node {victim.ip} killed "
          f"({len(killed)} processes); the run after the kill exited {code}:\n{out}")


"""A multi-node Ray cluster on one machine: one network namespace per node, joined by veth pairs to a bridge,
addresses from 198.18.0.0/15 (the benchmarking range) and no route out of them. Needs root and iproute2.

Every node is a real ``ray start`` (head in the first namespace, a worker node in each other one) with its own
temp folder; every node sees the machine's filesystem, which stands in for a shared one. Processes are tracked
by the namespaces they run in (``ip netns pids``) and ended by PID, so nothing outside the cluster is touched.

By hand (the same as tests/test_ray_multinode.py does):

    python3 tests/netns_cluster.py up --nodes 3      # prints the namespaces and HEAD_IP:6379, then waits;
                                                     # Ctrl-C tears everything down
    ip netns exec NS1 mvk index ... --engine ray --ray-address HEAD_IP:6379      # in another shell
"""
from __future__ import annotations

import json
import os
import shutil
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PORT = 6379
OBJECT_STORE = 100 * 1024 * 1024      # bytes per node: the smallest Ray accepts is about 75 MiB


def can_make_namespaces() -> str | None:
    """None when this process can create network namespaces, else why not."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2 (the ip command) is not installed"
    if shutil.which("ray") is None:
        return "the ray command is not installed (pip install -e \".[ray]\")"
    name = f"mvkp{os.getpid() % 100000}"
    probe = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True, timeout=20)
    if probe.returncode != 0:
        return f"cannot create a network namespace: {probe.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=20)
    return None


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=20)


@dataclass
class Node:
    ns: str
    ip: str
    temp: Path


@dataclass
class NetnsCluster:
    """``nodes`` namespaces; ``start_ray`` runs the given ``ray start`` lines; ``close`` removes everything."""
    nodes_wanted: int = 3
    tag: str = field(default_factory=lambda: f"m{os.getpid() % 10000}")
    nodes: list[Node] = field(default_factory=list)
    bridge: str = ""
    work: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="mvk-netns-")))
    pythonpath: str = str(REPO)           # the code every node and the driver import (this checkout)
    token: str = field(default_factory=lambda: secrets.token_hex(32))   # Ray's token authentication, per cluster

    @property
    def head(self) -> Node:
        return self.nodes[0]

    @property
    def address(self) -> str:
        return f"{self.head.ip}:{PORT}"

    def env(self) -> dict[str, str]:
        """The environment of every command in the cluster: this checkout first, the cluster's own auth token
        (not the one ~/.ray holds for other Ray instances on this machine), no usage reports, quiet."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
        return {**env, "PYTHONPATH": self.pythonpath, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token,
                "RAY_USAGE_STATS_ENABLED": "0",
                "RAY_enable_metrics_collection": "0", "PYTHONUNBUFFERED": "1"}

    def make(self) -> "NetnsCluster":
        """Create the bridge, the namespaces and their links. Subnet 198.18.<x>.0/24 from the PID, so two
        clusters on one machine do not meet; the bridge has no address: nothing routes out."""
        x = 1 + os.getpid() % 250
        self.bridge = f"{self.tag}br"
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("link", "set", self.bridge, "up")
        for i in range(1, self.nodes_wanted + 1):
            ns, host, peer = f"{self.tag}n{i}", f"{self.tag}h{i}", f"{self.tag}p{i}"
            node = Node(ns, f"198.18.{x}.{i}", self.work / f"ray{i}")
            self.nodes.append(node)
            _ip("netns", "add", ns)
            _ip("link", "add", host, "type", "veth", "peer", "name", peer)
            _ip("link", "set", host, "master", self.bridge)
            _ip("link", "set", host, "up")
            _ip("link", "set", peer, "netns", ns)
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "addr", "add", f"{node.ip}/24", "dev", peer)
            _ip("-n", ns, "link", "set", peer, "up")
        return self

    def run(self, node: Node, command: list[str], *, timeout: float, check: bool = True,
            **kw) -> subprocess.CompletedProcess:
        """Run ``command`` inside ``node``'s namespace, with a timeout."""
        out = subprocess.run(["ip", "netns", "exec", node.ns, *command], env=self.env(), capture_output=True,
                             text=True, timeout=timeout, **kw)
        if check and out.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} in {node.ns} failed ({out.returncode}):\n{out.stdout}\n"
                               f"{out.stderr}")
        return out

    def popen(self, node: Node, command: list[str], log: Path) -> subprocess.Popen:
        """Start ``command`` inside ``node``'s namespace in the background (its output goes to ``log``)."""
        return subprocess.Popen(["ip", "netns", "exec", node.ns, *command], env=self.env(),
                                stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)

    def pids(self, node: Node) -> list[int]:
        """Every live process in ``node``'s namespace (zombies, already dead, left out)."""
        out = subprocess.run(["ip", "netns", "pids", node.ns], capture_output=True, text=True, timeout=20)
        live = []
        for pid in (int(p) for p in out.stdout.split()):
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                continue
            if state not in ("Z", "X"):
                live.append(pid)
        return live

    def kill_node(self, node: Node, timeout: float = 20.0) -> list[int]:
        """SIGKILL every process of the node (its raylet, object store, workers), by PID, until none is left:
        the node dies at once. Returns the PIDs killed."""
        killed: list[int] = []
        deadline = time.monotonic() + timeout
        while (pids := self.pids(node)) and time.monotonic() < deadline:
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                except ProcessLookupError:
                    pass
            time.sleep(0.2)
        return sorted(set(killed))

    def peak_memory(self) -> dict[int, tuple[str, int]]:
        """{pid: (process title, peak resident bytes so far)} of every Ray worker process in the cluster
        (``VmHWM``: the kernel's high-water mark of the process's resident memory)."""
        out: dict[int, tuple[str, int]] = {}
        for node in self.nodes:
            for pid in self.pids(node):
                try:
                    title = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
                    status = Path(f"/proc/{pid}/status").read_text()
                except OSError:
                    continue
                if not title.startswith("ray::"):
                    continue
                hwm = [ln for ln in status.splitlines() if ln.startswith("VmHWM:")]
                if hwm:
                    out[pid] = (f"{node.ns}:{title}", int(hwm[0].split()[1]) * 1024)
        return out

    def wait_for_nodes(self, n: int, timeout: float = 90.0) -> None:
        """Until the head counts ``n`` live nodes."""
        code = ("import ray, sys; ray.init(address=sys.argv[1], logging_level='ERROR', log_to_driver=False); "
                "print(sum(1 for n in ray.nodes() if n['Alive']))")
        deadline = time.monotonic() + timeout
        seen = "?"
        while time.monotonic() < deadline:
            out = self.run(self.head, [sys.executable, "-c", code, self.address], timeout=60, check=False)
            seen = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else out.stderr[-300:]
            if seen == str(n):
                return
            time.sleep(1.0)
        raise TimeoutError(f"the Ray cluster did not reach {n} live nodes in {timeout:.0f}s (last: {seen})")

    def close(self) -> None:
        """Kill every process in the namespaces, delete them, the links and the bridge, and the temp folders.
        Each step goes on when an earlier one failed (whatever happened before)."""
        for node in self.nodes:
            self.kill_node(node)
        for node in self.nodes:
            subprocess.run(["ip", "netns", "del", node.ns], capture_output=True, timeout=20)
        for i in range(1, len(self.nodes) + 1):          # a veth leaves with its namespace; this is belt and braces
            subprocess.run(["ip", "link", "del", f"{self.tag}h{i}"], capture_output=True, timeout=20)
        if self.bridge:
            subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, timeout=20)
        shutil.rmtree(self.work, ignore_errors=True)

    def __enter__(self) -> "NetnsCluster":
        try:
            return self.make()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc) -> None:
        self.close()


def ray_limits(node: Node, head: bool) -> list[str]:
    """What a node on a small shared machine adds to the README's `ray start` lines: logical CPUs (none on the
    head, which only drives; two per worker node, for one actor of each stage), a small object store, its own
    temp folder (several nodes on one filesystem); the head: no dashboard, no usage reports."""
    out = [f"--num-cpus={0 if head else 2}", f"--object-store-memory={OBJECT_STORE}", f"--temp-dir={node.temp}"]
    return out + (["--include-dashboard=false", "--disable-usage-stats"] if head else [])


def start_ray(cluster: NetnsCluster, head_line: list[str], worker_line: list[str], *, workers: int | None = None,
              timeout: float = 120.0) -> None:
    """Run ``head_line`` in the first namespace and ``worker_line`` in the others (HEAD_IP / NODE_IP replaced),
    each with ``ray_limits``; wait until the head sees them all."""
    chosen = cluster.nodes[1:1 + workers] if workers is not None else cluster.nodes[1:]
    for node, line in [(cluster.head, head_line)] + [(n, worker_line) for n in chosen]:
        words = [w.replace("HEAD_IP", cluster.head.ip).replace("NODE_IP", node.ip) for w in line]
        cluster.run(node, [*words, *ray_limits(node, node is cluster.head)], timeout=timeout)
    cluster.wait_for_nodes(1 + len(chosen))


def readme_steps(readme: Path = REPO / "README.md") -> dict[str, list[str]]:
    """The commands of the README's cluster section (its first bash block), by role: ``head`` (ray start --head),
    ``worker`` (ray start --address), ``index`` (mvk index), comments dropped."""
    import shlex
    text = readme.read_text()
    section = text[text.index("### Indexing on a Ray cluster"):]
    block = section[section.index("```bash") + len("```bash"):]
    block = block[:block.index("```")]
    steps: dict[str, list[str]] = {}
    for line in block.strip().splitlines():
        words = shlex.split(line.split("#", 1)[0])
        if words[:3] == ["ray", "start", "--head"]:
            steps["head"] = words
        elif words[:2] == ["ray", "start"]:
            steps["worker"] = words
        elif words[:2] == ["mvk", "index"]:
            steps["index"] = words
    return steps


def main() -> None:
    import argparse
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("up",))
    parser.add_argument("--nodes", type=int, default=3)
    args = parser.parse_args()
    reason = can_make_namespaces()
    if reason:
        raise SystemExit(reason)
    with NetnsCluster(args.nodes) as cluster:
        steps = readme_steps()
        start_ray(cluster, steps["head"], steps["worker"])
        print(json.dumps({"namespaces": [n.ns for n in cluster.nodes], "address": cluster.address}), flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()

"""The Ray engine: the work stage as a Ray Data streaming pipeline on a Ray cluster.

    tasks (one row per video)
      -> decode      Ray tasks on CPUs: the frame source runs to the end (``indexer.work.decode_ahead``)
      -> embed       Ray actors that load the models once (one GPU each where the cluster has GPUs):
                     segmentation + embedding + the part commit (``indexer.work.run_video``)
      -> results     streamed back to the driver in task order; it assembles each site when its videos are done

Parts are committed by the workers into ``<index>/.work``, so the index folder (and the collection) must be a
path every node sees under the same name; a multi-node cluster is checked before any work. Ray retries a task
whose worker died and restarts a dead actor (Ray Data's defaults); a retried video rewrites the same part
under the same name, so nothing is duplicated. A killed driver resumes from the committed parts, as with the
local engine.
"""
from __future__ import annotations

import inspect
import logging
import os
import pickle
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from indexer.engines import ModelSpec
from indexer.progress import Progress
from indexer.tasks import EngineInfo, VideoResult, VideoTask, WorkSettings
from search.errors import InputError, MvkError

INSTALL_HINT = 'the Ray engine needs Ray Data: pip install -e ".[ray]" (or pip install "ray[data]>=2.9")'


class EngineError(MvkError):
    """The Ray cluster cannot run the work (not reachable, paths not shared, the workers' models differ)."""


def import_ray() -> Any:
    """The ``ray`` module with Ray Data, or InputError saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise InputError(INSTALL_HINT) from None
    return ray


def _decode(row: dict, settings: WorkSettings) -> dict:
    """CPU stage: decode one video's frames ahead; a decoding error travels with them."""
    from indexer.work import Decoded, decode_ahead
    decoded = decode_ahead(pickle.loads(row["task"]), settings)
    try:
        blob = pickle.dumps(decoded)
    except Exception:                       # an exception that does not pickle: keep its text
        blob = pickle.dumps(Decoded(decoded.frames, RuntimeError(f"{type(decoded.error).__name__}: "
                                                                 f"{decoded.error}"), decoded.seconds))
    return {"task": row["task"], "decoded": blob}


class _Embedder:
    """Model stage: an actor that loads the models once, then segments, embeds and commits one video a call."""

    def __init__(self, spec: ModelSpec, settings: WorkSettings) -> None:
        import ray

        from indexer.identity import fingerprint
        from indexer.models import load_models
        self.device = "cuda" if ray.get_gpu_ids() else "cpu"
        self.settings = settings
        self.problem: str | None = None      # raised by the first call: a failed constructor would be retried
        try:
            self.encoder, self.extractor = load_models(objects=settings.config.objects, device=self.device,
                                                       **spec.kwargs())
            if fingerprint(self.encoder, self.extractor, settings.config) != settings.fingerprint:
                self.problem = "its models differ from the driver's (other weights or versions there)"
        except MvkError as exc:
            self.problem = str(exc)
        if self.problem is not None:
            self.problem = (f"worker on node {ray.util.get_node_ip_address()} cannot load the models: "
                            f"{self.problem}; install the same versions and weights on every node")

    def __call__(self, row: dict) -> dict:
        from indexer.work import run_video
        if self.problem is not None:
            raise EngineError(self.problem)
        task: VideoTask = pickle.loads(row["task"])
        decoded = pickle.loads(row["decoded"])
        result = run_video(task, self.settings, encoder=self.encoder, extractor=self.extractor,
                           frames=decoded.replay())
        result.seconds["decode"] = result.seconds.get("decode", 0.0) + decoded.seconds
        return {"result": pickle.dumps(result), "device": self.device}


def _probe(paths: list[str], token_file: str, token: str) -> list[str]:
    """On one node: which of ``paths`` it cannot see, and whether it reads the driver's token file."""
    import ray
    node = ray.util.get_node_ip_address()
    missing = [f"{p} (not found on node {node})" for p in paths if not os.path.exists(p)]
    try:
        seen = Path(token_file).read_text() == token
    except OSError:
        seen = False
    if not seen:
        missing.append(f"{os.path.dirname(token_file)} (node {node} does not see files the driver writes there)")
    return missing


def check_shared(ray: Any, index_root: Path, collection_paths: Sequence[str]) -> None:
    """Stop with EngineError when a node of a multi-node cluster does not see the index folder (writes included)
    or the videos under the same paths. One node: nothing to check."""
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if len(nodes) <= 1:
        return
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
    token = uuid.uuid4().hex
    work = index_root / ".work"
    work.mkdir(parents=True, exist_ok=True)
    token_file = work / f"probe-{token}"
    token_file.write_text(token)
    try:
        probe = ray.remote(num_cpus=0)(_probe)
        refs = [probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(
            list(collection_paths), str(token_file), token) for n in nodes]
        problems = sorted({p for found in ray.get(refs) for p in found})
    finally:
        token_file.unlink(missing_ok=True)
    if problems:
        raise EngineError("the Ray cluster has %d nodes, but not all see the same files: %s. Parts, shards and "
                          "videos must be on a path every node sees under the same name (NFS, a cluster "
                          "filesystem)" % (len(nodes), "; ".join(problems[:5])))


def model_memory(*models: Any) -> int:
    """Bytes of host memory a model actor reserves: its models' parameters, four times over (weights, a copy
    while loading, activations), plus 1 GiB for the worker process (torch) and a video's frames and rows."""
    import torch
    params = 0
    for m in models:
        net = getattr(m, "model", None)
        if isinstance(net, torch.nn.Module):
            params += sum(p.numel() * p.element_size() for p in net.parameters())
    return 4 * params + (1 << 30)


def plan_resources(ray: Any, workers: int | None, actor_memory: int) -> tuple[int, dict, dict]:
    """(number of model actors, their Ray resources, the decode tasks' resources) from the cluster's resources:
    one actor per GPU where there are GPUs, else about half the CPUs (decoding keeps the rest). The actors
    reserve the memory of their models, the decode tasks a CPU each; as their resources differ, Ray Data keeps
    decoding in its own CPU tasks instead of fusing it into the actors. A dead actor is restarted and a dead
    task retried (Ray Data's defaults)."""
    res = ray.cluster_resources()
    gpus, cpus = int(res.get("GPU", 0)), max(1, int(res.get("CPU", 1)))
    if gpus:
        n = min(workers or gpus, gpus)
        return n, {"num_gpus": 1, "num_cpus": 1, "memory": actor_memory}, {"num_cpus": 1}
    n = max(1, min(workers or max(1, cpus // 2), cpus - 1 if cpus > 1 else 1))
    return n, {"num_cpus": 1, "memory": actor_memory}, {"num_cpus": 1}


class RayExecutor:
    """Runs the work stage on a Ray cluster (``address``: ``auto``, ``ray://host:port``, or None for a local
    one started here). ``workers`` caps the number of model actors (default: from the cluster's resources);
    ``actor_memory`` is what each reserves (``model_memory`` of the loaded models)."""

    def __init__(self, spec: ModelSpec, *, address: str | None = None, workers: int | None = None,
                 collection: str | Path | None = None, actor_memory: int = 1 << 30,
                 gpus_per_worker: float | None = None) -> None:
        self.spec, self.address, self.workers, self.actor_memory = spec, address, workers, actor_memory
        self.gpus_per_worker = gpus_per_worker
        self.collection = Path(os.path.abspath(collection)) if collection is not None else None
        self.info: EngineInfo | None = None

    def connect(self) -> Any:
        ray = import_ray()
        if not ray.is_initialized():
            try:
                ray.init(address=self.address, logging_level="ERROR", log_to_driver=False,
                         configure_logging=True)
            except ConnectionError as exc:
                raise EngineError(f"no Ray cluster at {self.address!r} ({exc}); start one with `ray start --head` "
                                  "or leave out --ray-address for a local one") from None
        return ray

    def run(self, tasks: Sequence[VideoTask], settings: WorkSettings, progress: Progress) -> Iterator[VideoResult]:
        if not tasks:
            return
        ray = self.connect()
        roots = [str(self.collection)] if self.collection is not None else sorted({t.path for t in tasks})[:1]
        check_shared(ray, Path(settings.index_root), roots)
        n, actor_res, decode_res = plan_resources(ray, self.workers, self.actor_memory)
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True        # results come back in task order
        ctx.enable_progress_bars = False
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        items = [{"task": pickle.dumps(t)} for t in tasks]
        kw = {"override_num_blocks": len(items)} if "override_num_blocks" in inspect.signature(
            ray.data.from_items).parameters else {"parallelism": len(items)}
        ds = ray.data.from_items(items, **kw)
        ds = ds.map(_decode, fn_kwargs={"settings": settings}, **decode_res)
        ds = ds.map(_Embedder, fn_constructor_kwargs={"spec": self.spec, "settings": settings},
                    compute=ray.data.ActorPoolStrategy(size=n), **actor_res)
        devices = ("cuda",) * n if actor_res.get("num_gpus") else ("cpu",) * n
        self.info = EngineInfo("ray", n, devices, f"{len(ray.nodes())} node(s), decoding in CPU tasks")
        progress.engine_started(self.info)
        try:
            for row in ds.iter_rows():
                result: VideoResult = pickle.loads(row["result"])
                progress.frames_done(result.frames)
                yield result
        except Exception as exc:             # Ray wraps what a worker raised; name the cause in one line
            cause = _cause(exc)
            raise EngineError(f"the Ray engine stopped: {cause}") from None


def _cause(exc: BaseException) -> str:
    """The message of the MvkError behind a Ray error (found in its chain or in the traceback text Ray
    carries over from the worker), else the error's first line."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, MvkError):
            return str(seen)
        seen = getattr(seen, "cause", None) or seen.__cause__ or seen.__context__
    lines = str(exc).strip().splitlines()
    names = tuple(f"{cls.__name__}: " for cls in (EngineError, InputError, MvkError))
    for line in reversed(lines):
        for name in names:
            if name in line:
                return line.split(name, 1)[1]
    return lines[0] if lines else type(exc).__name__

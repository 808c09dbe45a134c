"""The Ray engine: the work stage as a Ray Data streaming pipeline on a Ray cluster, frames in bounded chunks.

    tasks (one row per video)
      -> frames    map_batches, one video per call: decode and (unless objects are ``none``) segment, in Ray
                   actors that hold the segmentation backbone (CPU tasks for frame-only indexes); yields the
                   video's frames in chunks of ``--batch-size`` (``indexer.work.segmented_chunks``), one row each,
                   then an end row that counts them (or carries the error that stopped the video)
      -> embed     map_batches over chunk rows (several videos' chunks per batch), in Ray actors that hold the
                   CLIP encoder: each chunk becomes rows + vectors (``indexer.work.embed_chunk``), exactly the
                   batches the local engine embeds, so the vectors are the same bit for bit
      -> driver    joins a video's chunks in order once its end row and every chunk arrived, and commits the part
                   once (``indexer.work.settle_video``); results go back in task order

A worker holds one segmentation chunk and a few frame chunks, never a whole video, so its memory does not grow
with the length of a video. Workers read the videos; the driver writes the parts into ``<index>/.work``: the
index folder and the collection must be on a path every node sees under the same name (checked on a
multi-node cluster before any work). Ray retries a task whose worker died and restarts dead actors; a retried
video sends its chunks again and the driver keeps one copy of each (by video and chunk number), so nothing is
duplicated. A killed driver resumes from the committed parts, as with the local engine.
"""
from __future__ import annotations

import json
import logging
import os
import pickle
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from indexer.engines import ModelSpec
from indexer.progress import Progress
from indexer.tasks import STAGES, Clock, EngineInfo, VideoResult, VideoTask, WorkSettings
from search.errors import InputError, MvkError

INSTALL_HINT = 'the Ray engine needs Ray Data: pip install -e ".[ray]" (or pip install "ray[data]>=2.9")'
BLOCK_BYTES = 16 << 20       # Ray Data blocks of at most about this size: a few chunks of frames, never a video


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


def _portable(error: BaseException) -> bytes:
    """A pickled exception, or a RuntimeError with its text when it does not pickle."""
    try:
        return pickle.dumps(error)
    except Exception:
        return pickle.dumps(RuntimeError(f"{type(error).__name__}: {error}"))


def _rows(task: bytes, chunk: int, end: bool, payload: bytes, seconds: dict, node: str) -> dict:
    return {"task": np.array([task], dtype=object), "chunk": np.array([chunk], dtype=np.int64),
            "end": np.array([end]), "payload": np.array([payload], dtype=object),
            "seconds": np.array([json.dumps(seconds)], dtype=object), "node": np.array([node], dtype=object)}


def _node() -> str:
    import ray
    return ray.util.get_node_ip_address()


def _since(clock: Clock, before: dict[str, float]) -> dict[str, float]:
    """Seconds per stage added to ``clock`` since ``before`` (and ``before`` brought up to date)."""
    out = {k: v - before.get(k, 0.0) for k, v in clock.seconds.items() if v - before.get(k, 0.0) > 0}
    before.update(clock.seconds)
    return out


def video_chunks(batch: dict, settings: WorkSettings, extractor: Any = None) -> Iterator[dict]:
    """Frame stage of one video (a batch of one task row): a row per chunk of segmented frames, then an end row
    with the number of chunks and the error that stopped the video, if any."""
    from indexer.work import check_catalog, frames_of, segmented_chunks
    blob = batch["task"][0]
    task: VideoTask = pickle.loads(blob)
    clock, before, node = Clock(), {}, _node()
    n, error = 0, None
    try:
        check_catalog(task)
        for chunk in segmented_chunks(frames_of(task, settings), extractor=extractor, config=settings.config,
                                      clock=clock):
            yield _rows(blob, n, False, pickle.dumps(chunk), _since(clock, before), node)
            n += 1
    except Exception as exc:                 # travels to the driver, which records it as run_video would
        error = exc
    yield _rows(blob, n, True, _portable(error) if error is not None else b"", _since(clock, before), node)


def _model_problem(problem: str) -> str:
    return (f"worker on node {_node()} cannot load the models: {problem}; install the same versions and "
            f"weights on every node")


class _Segmenter:
    """Frame-stage actor: loads the segmentation backbone once, then decodes and segments one video a call."""

    def __init__(self, spec: ModelSpec, settings: WorkSettings, backbone: dict | None) -> None:
        import ray

        from indexer.models import load_backbone
        self.settings, self.problem = settings, None
        device = "cuda" if ray.get_gpu_ids() else "cpu"
        try:
            self.extractor = load_backbone(spec.backbone, checkpoint=spec.checkpoint,
                                           random_weights=spec.random_weights, device=device)
            if backbone is not None and not _same(self.extractor.identity(), backbone):
                self.problem = "its segmentation backbone differs from the driver's (other weights or versions)"
        except MvkError as exc:
            self.problem = str(exc)

    def __call__(self, batch: dict) -> Iterator[dict]:
        if self.problem is not None:
            raise EngineError(_model_problem(self.problem))
        yield from video_chunks(batch, self.settings, self.extractor)


def _same(a: dict, b: dict) -> bool:
    norm = lambda d: json.loads(json.dumps(d, sort_keys=True, default=str))   # noqa: E731
    return norm(a) == norm(b)


class _Embedder:
    """Embedding actor: loads the CLIP encoder once, then turns each chunk row of a batch (chunks of several
    videos) into that chunk's rows and vectors; end rows pass through."""

    def __init__(self, spec: ModelSpec, settings: WorkSettings, encoder: dict | None) -> None:
        import ray

        from indexer.models import load_encoder
        self.settings, self.problem = settings, None
        self.device = "cuda" if ray.get_gpu_ids() else "cpu"
        try:
            self.encoder = load_encoder(model=spec.model, pretrained=spec.pretrained,
                                        clip_checkpoint=spec.clip_checkpoint, random_weights=spec.random_weights,
                                        device=self.device)
            if encoder is not None and not _same(self.encoder.identity(), encoder):
                self.problem = "its CLIP model differs from the driver's (other weights or versions)"
        except MvkError as exc:
            self.problem = str(exc)

    def __call__(self, batch: dict) -> dict:
        from indexer.work import embed_chunk
        if self.problem is not None:
            raise EngineError(_model_problem(self.problem))
        node = _node()
        out: dict[str, list] = {k: [] for k in ("task", "chunk", "end", "payload", "seconds", "node")}
        size = max(1, self.settings.config.batch_size)
        for i in range(len(batch["task"])):
            payload, seconds = batch["payload"][i], json.loads(batch["seconds"][i])
            if not batch["end"][i]:
                task: VideoTask = pickle.loads(batch["task"][i])
                clock = Clock()
                try:
                    part = embed_chunk(pickle.loads(payload), encoder=self.encoder, config=self.settings.config,
                                       video=task.frame_columns(), frame_row0=int(batch["chunk"][i]) * size,
                                       src_size=task.src_size, clock=clock)
                    payload = pickle.dumps(part)
                except Exception as exc:     # the video fails; the driver records why
                    payload = _portable(exc)
                seconds = {k: seconds.get(k, 0.0) + clock.seconds.get(k, 0.0) for k in STAGES}
            for key, value in (("task", batch["task"][i]), ("chunk", int(batch["chunk"][i])),
                               ("end", bool(batch["end"][i])), ("payload", payload),
                               ("seconds", json.dumps(seconds)), ("node", f"{batch['node'][i]}>{node}")):
                out[key].append(value)
        return {k: np.array(v, dtype=object if k in ("task", "payload", "seconds", "node") else None)
                for k, v in out.items()}


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
        try:
            problems = sorted({p for found in ray.get(refs, timeout=120) for p in found})
        except Exception as exc:         # a node died or hangs while probed: name it, no traceback
            raise EngineError(f"the Ray cluster could not check that its {len(nodes)} nodes see the same files: "
                              f"{_cause(exc)}; check the cluster (ray status) and run again") from None
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


def plan_resources(cluster: dict, *, objects: bool, workers: int | None, gpus_per_worker: float | None,
                   actor_memory: int) -> tuple[int, int, dict]:
    """(segmentation actors, embedding actors, the Ray resources of each) from the cluster's resources.

    With GPUs: each model actor reserves ``gpus_per_worker`` of a GPU (default 1, or 0.5 when a video is also
    segmented, so one GPU holds one actor of each stage) and a CPU, as many as fit, shared between the two
    stages. On CPUs: one CPU per actor, half the CPUs for embedding and the rest for segmenting (or for the
    decoding tasks of a frame-only index). ``workers`` caps the actors of each stage. Every actor reserves
    ``actor_memory`` bytes of host memory."""
    gpus, cpus = float(cluster.get("GPU", 0)), max(1, int(cluster.get("CPU", 1)))
    stages = 2 if objects else 1
    if gpus:
        per = gpus_per_worker if gpus_per_worker is not None else (0.5 if objects else 1.0)
        if per > gpus:
            raise InputError(f"--gpus-per-worker {per:g}: the cluster has {gpus:g} GPU(s)")
        slots = max(stages, int(gpus / per + 1e-9))
        resources = {"num_gpus": per, "num_cpus": 1, "memory": actor_memory}
        embed = max(1, slots // stages)
    else:
        slots = max(2, cpus)
        resources = {"num_cpus": 1, "memory": actor_memory}
        embed = max(1, slots // 2)
    segment = max(1, slots - embed) if objects else 0
    if workers is not None:
        embed, segment = min(embed, workers), min(segment, workers)
    return segment, embed, resources


class _SpaceEmbedder:
    """Further-space actor (``indexer.spaces``): loads each space's encoder once, by the identity the index
    records, then computes one video's vectors in its spaces a call: the video's frames read again on the worker
    (the same frame source, checked against the stored rows), its objects from the stored masks."""

    def __init__(self, spaces: list[dict], settings: WorkSettings) -> None:
        import ray

        from indexer.spaces import space_model
        from search.identity import EncoderChoice, encoder_for_index
        from search.spaces import Space
        self.settings, self.problem, self.models = settings, None, []
        device = "cuda" if ray.get_gpu_ids() else "cpu"
        try:
            for record in spaces:
                space = Space(**record)
                encoder = encoder_for_index(space.encoder, EncoderChoice(
                    random_weights=bool(space.encoder.get("random_weights"))), device=device)
                config = replace(settings.config, objects=space.objects or settings.config.objects)
                self.models.append(replace(space_model(encoder, config)[0], space=space))
        except MvkError as exc:
            self.problem = str(exc)

    def __call__(self, batch: dict) -> dict:
        from indexer.spaces import run_job
        if self.problem is not None:
            raise EngineError(_model_problem(self.problem))
        payloads = []
        for raw in batch["job"]:
            got = run_job(pickle.loads(raw), self.settings, self.models, Progress())
            payloads.append(_portable(got) if isinstance(got, BaseException) else pickle.dumps(got))
        return {"payload": np.array(payloads, dtype=object), "node": np.array([_node()] * len(payloads), dtype=object)}


def space_actors(cluster: dict, *, workers: int | None, gpus_per_worker: float | None,
                 actor_memory: int) -> tuple[int, dict]:
    """(actors, the Ray resources of each) for the further spaces' stage, where one actor both reads a video and
    embeds it: one per GPU share (``gpus_per_worker``, default a whole GPU) where the cluster has GPUs, else one
    per CPU; ``workers`` caps them."""
    gpus, cpus = float(cluster.get("GPU", 0)), max(1, int(cluster.get("CPU", 1)))
    if gpus:
        per = gpus_per_worker if gpus_per_worker is not None else 1.0
        if per > gpus:
            raise InputError(f"--gpus-per-worker {per:g}: the cluster has {gpus:g} GPU(s)")
        actors, resources = max(1, int(gpus / per + 1e-9)), {"num_gpus": per, "num_cpus": 1, "memory": actor_memory}
    else:
        actors, resources = cpus, {"num_cpus": 1, "memory": actor_memory}
    return (min(actors, workers) if workers is not None else actors), resources


class RayExecutor:
    """Runs the work stage on a Ray cluster (``address``: ``HEAD_IP:6379``, ``auto``, ``ray://host:port``, or
    None for a Ray instance started here). ``workers`` caps the model actors of each stage (default: from the
    cluster's resources); ``gpus_per_worker`` is the GPU share of each (fractions allowed); ``actor_memory``
    is the host memory each reserves (``model_memory`` of the loaded models). After a run, ``chunks_per_node``
    counts the chunks each node worked on (segmenting and embedding, by node address)."""

    def __init__(self, spec: ModelSpec, *, address: str | None = None, workers: int | None = None,
                 collection: str | Path | None = None, actor_memory: int = 1 << 30,
                 gpus_per_worker: float | None = None) -> None:
        self.spec, self.address, self.workers, self.actor_memory = spec, address, workers, actor_memory
        self.gpus_per_worker = gpus_per_worker
        self.collection = Path(os.path.abspath(collection)) if collection is not None else None
        self.info: EngineInfo | None = None
        self.chunks_per_node: Counter[str] = Counter()
        self.spaces_per_node: Counter[str] = Counter()

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

    def pipeline(self, ray: Any, tasks: Sequence[VideoTask], settings: WorkSettings) -> tuple[Any, int, int, dict]:
        """The Ray Data pipeline of these tasks, and the actors per stage and their resources."""
        objects = settings.config.objects != "none"
        segment, embed, res = plan_resources(ray.cluster_resources(), objects=objects, workers=self.workers,
                                             gpus_per_worker=self.gpus_per_worker, actor_memory=self.actor_memory)
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True        # chunks come back in task order
        ctx.enable_progress_bars = False
        ctx.target_max_block_size = BLOCK_BYTES
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        models = settings.models or {}
        ds = ray.data.from_items([{"task": pickle.dumps(t)} for t in tasks], override_num_blocks=len(tasks))
        if objects:
            ds = ds.map_batches(_Segmenter, batch_size=1, batch_format="numpy",
                                fn_constructor_kwargs={"spec": self.spec, "settings": settings,
                                                       "backbone": models.get("backbone")},
                                compute=ray.data.ActorPoolStrategy(min_size=1, max_size=segment), **res)
        else:
            ds = ds.map_batches(video_chunks, batch_size=1, batch_format="numpy", fn_kwargs={"settings": settings},
                                num_cpus=1)
        ds = ds.map_batches(_Embedder, batch_size=4, batch_format="numpy",
                            fn_constructor_kwargs={"spec": self.spec, "settings": settings,
                                                   "encoder": models.get("encoder")},
                            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=embed), **res)
        return ds, segment, embed, res

    def run(self, tasks: Sequence[VideoTask], settings: WorkSettings, progress: Progress) -> Iterator[VideoResult]:
        from indexer.work import join_chunks, settle_video
        if not tasks:
            return
        ray = self.connect()
        roots = [str(self.collection)] if self.collection is not None else sorted({t.path for t in tasks})[:1]
        check_shared(ray, Path(settings.index_root), roots)
        ds, segment, embed, res = self.pipeline(ray, tasks, settings)
        device = "cuda" if res.get("num_gpus") else "cpu"
        stages = f"decoding and segmenting in {segment} more" if segment else "decoding in CPU tasks"
        nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
        self.info = EngineInfo("ray", embed, (device,) * embed,
                               f"{nodes} node(s); {stages}; frames in chunks of {settings.config.batch_size}")
        progress.engine_started(self.info)
        order = [t.key for t in tasks]
        by_key = {t.key: t for t in tasks}
        chunks: dict[str, dict[int, Any]] = {k: {} for k in order}
        ends: dict[str, tuple[int, BaseException | None]] = {}
        errors: dict[str, BaseException] = {}
        clocks: dict[str, Clock] = {k: Clock() for k in order}
        counted: set[tuple[str, int, bool]] = set()
        arrived: dict[str, set[int]] = {k: set() for k in order}
        done: dict[str, VideoResult] = {}
        dim = None
        base = self.info.detail
        ready: list[VideoResult] = []
        rows = iter(ds.iter_rows())
        try:
            for row in rows:
                task: VideoTask = pickle.loads(row["task"])
                key, n = task.key, int(row["chunk"])
                if key in done or (key, n, bool(row["end"])) in counted:
                    continue                 # a chunk sent again by a retried task: one copy is kept
                counted.add((key, n, bool(row["end"])))
                clocks[key].add(json.loads(row["seconds"]))
                if row["end"]:
                    ends[key] = (n, pickle.loads(row["payload"]) if row["payload"] else None)
                else:
                    arrived[key].add(n)
                    for node in str(row["node"]).split(">"):
                        self.chunks_per_node[node] += 1
                    part = pickle.loads(row["payload"])
                    if isinstance(part, BaseException):
                        errors.setdefault(key, part)
                    else:
                        chunks[key][n] = part
                        dim = part.frame_vectors.shape[1]
                        progress.frames_done(len(part.frames))
                if key in ends and len(arrived[key]) == ends[key][0]:
                    count, error = ends[key]
                    error = errors.get(key, error)
                    parts = [chunks[key][i] for i in range(count)]
                    part = join_chunks(parts, dim or 0) if error is None else None
                    done[key] = settle_video(by_key[key], settings, part, error, clocks[key])
                    chunks[key].clear()
                while order and order[0] in done:
                    ready.append(done.pop(order.pop(0)))
                if ready:
                    spread = ", ".join(f"{node} {n}" for node, n in sorted(self.chunks_per_node.items()))
                    self.info = replace(self.info, detail=f"{base}; chunk tasks per node: {spread}")
                if not order:
                    break                    # the last results go out after the pipeline is closed
                yield from ready
                ready.clear()
        except MvkError:
            raise
        except Exception as exc:             # Ray wraps what a worker raised; name the cause in one line
            cause = _cause(exc)
            raise EngineError(f"the Ray engine stopped: {cause}") from None
        finally:
            close = getattr(rows, "close", None)
            if close is not None:            # stops Ray Data's execution now, not when the driver exits
                close()
        if order:
            raise EngineError(f"the Ray engine stopped before {len(order)} video(s) were done: an engine bug")
        yield from ready

    def run_spaces(self, jobs: Sequence[Any], settings: WorkSettings, models: Sequence[Any],
                   progress: Progress) -> Iterator[Any]:
        """``indexer.spaces.SpaceRunner`` on the cluster: one row per video, through actors that hold the further
        spaces' encoders (``_SpaceEmbedder``); each video's vectors (or the input error that stopped it) in job
        order. ``spaces_per_node`` counts the videos each node embedded."""
        if not jobs:
            return
        ray = self.connect()
        roots = [str(self.collection)] if self.collection is not None else sorted({j.task.path for j in jobs})[:1]
        check_shared(ray, Path(settings.index_root), roots)
        actors, res = space_actors(ray.cluster_resources(), workers=self.workers, gpus_per_worker=self.gpus_per_worker,
                                   actor_memory=model_memory(*(m.encoder for m in models)))
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True
        ctx.enable_progress_bars = False
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        ds = ray.data.from_items([{"job": pickle.dumps(j)} for j in jobs], override_num_blocks=len(jobs))
        ds = ds.map_batches(_SpaceEmbedder, batch_size=1, batch_format="numpy",
                            fn_constructor_kwargs={"spaces": [m.space.record() for m in models], "settings": settings},
                            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=actors), **res)
        if self.info is None:
            nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
            device = "cuda" if res.get("num_gpus") else "cpu"
            self.info = EngineInfo("ray", actors, (device,) * actors, f"{nodes} node(s); further spaces only")
            progress.engine_started(self.info)
        rows = iter(ds.iter_rows())
        try:
            for job, row in zip(jobs, rows):
                self.spaces_per_node[str(row["node"])] += 1
                spread = ", ".join(f"{node} {n}" for node, n in sorted(self.spaces_per_node.items()))
                self.info = replace(self.info, detail=self.info.detail.split("; space videos per node:")[0]
                                    + f"; space videos per node: {spread}")
                got = pickle.loads(row["payload"])
                progress.frames_done(len(job.frames))
                yield got
        except MvkError:
            raise
        except Exception as exc:             # Ray wraps what a worker raised; name the cause in one line
            raise EngineError(f"the Ray engine stopped: {_cause(exc)}") from None
        finally:
            close = getattr(rows, "close", None)
            if close is not None:
                close()


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

"""The app's configuration, its cached resources (encoder, opened index) and its background jobs.

Configuration comes from the arguments after ``--`` on the ``streamlit run`` line (what ``mvk app``
passes), falling back to the environment (``MVK_INDEX``, ``MVK_COLLECTION``, ``MVK_RANDOM_WEIGHTS``,
``MVK_DEVICE``, ``MVK_DEMO``, ``MVK_CACHE``), which is how tests configure it.

The opened index is cached under a fingerprint of the index folder (``app.service.index_fingerprint``: stat of its
manifests and shard folders): a shard swapped in by a rebuild changes the fingerprint, so the next run of
a page opens the new index while the old object keeps serving whoever still holds it.
"""
from __future__ import annotations

import argparse
import os
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import streamlit as st

from search.errors import MvkError

from app.service import ENV_CACHE, default_cache, index_fingerprint  # noqa: F401  (pages read the fingerprint here)

ENV_INDEX = "MVK_INDEX"
ENV_COLLECTION = "MVK_COLLECTION"
ENV_RANDOM_WEIGHTS = "MVK_RANDOM_WEIGHTS"
ENV_DEVICE = "MVK_DEVICE"
ENV_DEMO = "MVK_DEMO"
ENV_CLIP_CHECKPOINT = "MVK_CLIP_CHECKPOINT"


@dataclass(frozen=True)
class AppConfig:
    index: Path                  # the index folder (may be empty: the Index page can build into it)
    collection: Path | None      # the collection the index was built from (video playback, rebuilds)
    random_weights: bool = False # explicit permission to build with random weights (labelled everywhere)
    device: str = "cpu"
    demo: bool = False
    cache: Path | None = None    # where converted video segments are kept (default: ~/.cache/mvk)
    clip_checkpoint: Path | None = None   # the CLIP checkpoint file of an index built from one

    @property
    def playback_cache(self) -> Path:
        """Where video segments converted for the browser are cached (bounded in size)."""
        return self.cache / "playback" if self.cache else default_cache()

    @property
    def roots(self) -> tuple[Path, ...]:
        """The folders the app may read from."""
        return (self.index,) + ((self.collection,) if self.collection is not None else ())

    @property
    def querysets_dir(self) -> Path:
        """Where KIS sessions save the queries people type."""
        return self.index / "querysets"


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def parse_config(argv: Sequence[str], environ: dict[str, str] | os._Environ) -> AppConfig:
    """The configuration from script arguments, then the environment. ValueError when no index is named."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--index")
    parser.add_argument("--collection")
    parser.add_argument("--random-weights", action="store_true")
    parser.add_argument("--device")
    parser.add_argument("--demo", action="store_true")
    parser.add_argument("--clip-checkpoint")
    args, _ = parser.parse_known_args(list(argv))
    index = args.index or environ.get(ENV_INDEX)
    if not index:
        raise ValueError(f"no index folder: start the app with `mvk app --index DIR` (or set {ENV_INDEX})")
    collection = args.collection or environ.get(ENV_COLLECTION) or None
    return AppConfig(
        index=Path(index).expanduser().resolve(),
        collection=Path(collection).expanduser().resolve() if collection else None,
        random_weights=args.random_weights or _truthy(environ.get(ENV_RANDOM_WEIGHTS)),
        device=args.device or environ.get(ENV_DEVICE) or "cpu",
        demo=args.demo or _truthy(environ.get(ENV_DEMO)),
        cache=Path(environ[ENV_CACHE]).expanduser().resolve() if environ.get(ENV_CACHE) else None,
        clip_checkpoint=Path(clip).expanduser().resolve() if (clip := args.clip_checkpoint
                                                               or environ.get(ENV_CLIP_CHECKPOINT)) else None,
    )


@st.cache_resource(max_entries=2, show_spinner="Loading the CLIP model…")
def _load_encoder(identity_json: str, checkpoint: str | None, device: str):
    import json

    from search.identity import EncoderChoice, encoder_for_index

    return encoder_for_index(json.loads(identity_json), EncoderChoice(checkpoint=checkpoint), device=device)


def encoder_identity(index) -> dict:
    """The encoder identity an index was built with (its manifest's ``encoder`` entry)."""
    manifest = index.manifest or {}
    return dict(manifest.get("encoder") or {})


def load_encoder_for(index, config: AppConfig):
    """The encoder the index was built with, loaded once per process by the one rule every front end uses
    (``search.identity``): a random-weight index is searched with the same random weights (the page shows a
    banner saying so), a checkpoint-built index with ``--clip-checkpoint FILE`` (``mvk app`` passes it);
    MissingWeightsError otherwise when the weights are not available offline."""
    import json

    from search.identity import EncoderChoice, resolve_choice

    identity = encoder_identity(index)
    checkpoint = str(config.clip_checkpoint) if config.clip_checkpoint else None
    resolve_choice(identity, EncoderChoice(checkpoint=checkpoint))     # refusals before the cache is touched
    return _load_encoder(json.dumps(identity, sort_keys=True, default=str), checkpoint, config.device)


@st.cache_resource(max_entries=2, show_spinner="Opening the index…")
def _service(root: str, collection: str | None, device: str, checkpoint: str | None, cache: str | None):
    from app.service import SearchService
    from mvk_tools.eventlog import EventLog, default_log_path
    from search.identity import EncoderChoice
    from search.threads import threads_from_env

    return SearchService(Path(root), Path(collection) if collection else None, device=device,
                         cache=Path(cache) if cache else None, log=EventLog(default_log_path(root)),
                         choice=EncoderChoice(checkpoint=checkpoint), threads=threads_from_env())


def service_for(config: AppConfig):
    """The query service of the app (one per index and settings, shared by every page and session): the same
    ``SearchService`` that ``mvk serve`` runs, so a query gives the same results and paging in both."""
    return _service(str(config.index), str(config.collection) if config.collection else None, config.device,
                    str(config.clip_checkpoint) if config.clip_checkpoint else None,
                    str(config.playback_cache) if config.cache else None)


def open_index_cached(config: AppConfig):
    """The opened index (reopened by the service when its manifests change). Raises IndexFormatError."""
    return service_for(config).index()


# ---- background jobs (index rebuilds) ---------------------------------------------------------------


@dataclass
class Job:
    """One background task with the progress it reports; read by the Index page while it runs."""
    name: str
    started: float = field(default_factory=time.time)
    done: int = 0
    total: int = 0
    message: str = "starting"
    finished: bool = False
    ended: float = 0.0                                  # time.time() when it finished (0 while it runs)
    error: str = ""
    result: object = None
    log: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)     # things the page shows when the job is done
    thread: threading.Thread | None = None

    @property
    def fraction(self) -> float:
        return min(1.0, self.done / self.total) if self.total else 0.0

    def update(self, done: int | None = None, total: int | None = None, message: str | None = None) -> None:
        if done is not None:
            self.done = int(done)
        if total is not None:
            self.total = int(total)
        if message is not None:
            self.message = str(message)
            self.log.append(message)
            del self.log[:-200]

    def note(self, text: str) -> None:
        """Something the page shows once the job is done (a video refused, ...), also logged."""
        self.notes.append(str(text))
        self.update(message=str(text))


class JobRegistry:
    """Process-wide: jobs outlive the browser session that started them (and are seen by every session)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.jobs: dict[str, Job] = {}

    def running(self, name: str) -> bool:
        job = self.jobs.get(name)
        return job is not None and not job.finished

    def start(self, name: str, work: Callable[[Job], object]) -> Job:
        """Run ``work(job)`` in a daemon thread; refuses a second job of the same name while one runs."""
        with self._lock:
            if self.running(name):
                raise RuntimeError(f"{name} is already running")
            job = Job(name)

            def target() -> None:
                try:
                    job.result = work(job)
                except MvkError as exc:   # bad input or settings: its own message says it all
                    job.error = str(exc)
                except Exception as exc:  # reported on the page, the app goes on
                    job.error = f"{type(exc).__name__}: {exc}"
                    job.log.append(traceback.format_exc(limit=3))
                finally:
                    job.ended = time.time()
                    job.finished = True

            job.thread = threading.Thread(target=target, name=f"mvk-job-{name}", daemon=True)
            self.jobs[name] = job
            job.thread.start()
            return job


@st.cache_resource
def job_registry() -> JobRegistry:
    return JobRegistry()

"""One thread policy: how many intra-op threads torch and FAISS use for each kind of work, set where the work
starts (``QueryService.run``, the KIS ranking, ``mvk index``) and restored after it.

Why: one query is about a hundred small torch and FAISS calls, each a parallel region; with the default of one
thread per core they oversubscribe a machine that already serves concurrent requests (a server runs each
request on its own thread) and a query became 12x slower at 2 threads than at 1 (BENCHMARKS.md, "threads").
A batch of queries (KIS) or indexing multiplies large matrices, where threads pay off.

``torch.set_num_threads`` and ``faiss.omp_set_num_threads`` set OpenMP's per-thread setting of the calling
thread, so concurrent requests on other threads are not affected; ``threads(kind)`` restores the previous
values on exit. A user overrides the policy with ``--threads N`` (``MVK_THREADS`` for the Streamlit app),
passed here as ``override``.
"""
from __future__ import annotations

import contextlib
import os
from typing import Iterator, Literal

from search.cpus import usable_cores

Work = Literal["query", "batch", "index"]

WORKS: tuple[str, ...] = ("query", "batch", "index")

ENV = "MVK_THREADS"          # read by the Streamlit app only (it has no command line of its own)


def idle_cores(load: float | None = None) -> int:
    """Usable cores not already busy: the cores minus the 1-minute load average (rounded), at least 1. Threads
    beyond the idle cores wait on each other at every parallel region (8x slower KIS ranking at 2 threads
    on a busy 2-core machine: BENCHMARKS.md "threads")."""
    cores = usable_cores()
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):
            load = 0.0
    return max(1, min(cores, cores - int(round(load))))


def threads_for(work: Work, override: int | None = None) -> int:
    """Intra-op threads for ``work``: ``override`` when given, else one for a single query (its calls are
    small and a server runs requests side by side), the idle cores (``idle_cores``) for a batch of queries or
    indexing, whose large matrix products gain from threads that do not have to wait for a core."""
    if override is not None:
        if int(override) < 1:
            raise ValueError(f"threads must be at least 1, got {override}")
        return int(override)
    if work not in WORKS:
        raise ValueError(f"unknown kind of work {work!r}; choose one of {', '.join(WORKS)}")
    return 1 if work == "query" else idle_cores()


def threads_from_env(environ: dict | None = None) -> int | None:
    """``MVK_THREADS`` as a thread count, None when unset or empty; ValueError naming it when not a count >= 1."""
    value = (os.environ if environ is None else environ).get(ENV, "").strip()
    if not value:
        return None
    try:
        n = int(value)
    except ValueError:
        raise ValueError(f"{ENV}={value!r} is not a number of threads") from None
    if n < 1:
        raise ValueError(f"{ENV}={value!r}: threads must be at least 1")
    return n


def current() -> tuple[int, int]:
    """(torch, FAISS) intra-op threads of the calling thread."""
    import faiss
    import torch
    return torch.get_num_threads(), faiss.omp_get_max_threads()


def set_threads(n: int) -> None:
    """Set torch's and FAISS's intra-op threads of the calling thread to ``n``."""
    import faiss
    import torch
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    faiss.omp_set_num_threads(n)


@contextlib.contextmanager
def threads(work: Work, override: int | None = None) -> Iterator[int]:
    """Run the block with ``threads_for(work, override)`` torch and FAISS threads; restore the previous ones."""
    import faiss
    import torch
    n = threads_for(work, override)
    before_torch, before_faiss = current()
    set_threads(n)
    try:
        yield n
    finally:
        if torch.get_num_threads() != before_torch:
            torch.set_num_threads(before_torch)
        faiss.omp_set_num_threads(before_faiss)

"""Decoding ahead of the models: a producer thread pulls frames from a source into a bounded queue of frame
batches while the consumer (segmentation and embedding) works, so a video's wall time approaches
max(decode, models) instead of their sum.

Threads suffice: PyAV decodes and converts without the GIL, torch computes without it. Memory stays bounded
by ``depth`` batches of ``batch`` frames. The consumer sees the same frames in the same order as from the
source itself, and an error the source raised comes out after the frames before it, where it happened.
"""
from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

_END = object()


@dataclass(frozen=True)
class DecodePlan:
    """How the local engine decodes: decoder threads inside FFmpeg, frames per queued batch, batches queued."""
    threads: int
    batch: int
    depth: int


def decode_plan(cores: int, device: str, batch_size: int) -> DecodePlan:
    """Decoder threads and queue size from the cores this process may use and the model device.

    On a GPU the models are fast and decoding is the bottleneck: the decoder gets every core and a deeper
    queue. On the CPU the models need the cores: the decoder gets a quarter of them (at least one), enough
    to keep ahead of segmentation and embedding (decode is 5-10x faster than the models per frame there).
    A queued batch is the embedding batch, so a whole batch is ready when the models ask for it."""
    cores = max(1, int(cores))
    batch = max(1, int(batch_size))
    if str(device).startswith("cuda"):
        return DecodePlan(threads=cores, batch=batch, depth=4)
    return DecodePlan(threads=max(1, cores // 4), batch=batch, depth=2)


class Prefetch:
    """Iterates ``source`` in a producer thread, ``batch`` frames at a time, at most ``depth`` batches ahead.

    ``seconds`` is the time the producer spent pulling from the source (the decode stage, overlapped).
    Closing the iterator early (or garbage collection) stops the producer and closes the source."""

    def __init__(self, source: Iterable[Any], *, batch: int = 8, depth: int = 2) -> None:
        if batch < 1 or depth < 1:
            raise ValueError(f"batch and depth must be at least 1, got {batch} and {depth}")
        self._source = source
        self._batch, self._queue = batch, queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self.seconds = 0.0
        self._thread = threading.Thread(target=self._produce, name="mvk-decode", daemon=True)
        self._started = False

    def _put(self, item: Any) -> bool:
        """Queue ``item`` unless the consumer stopped; False once it has."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self) -> None:
        it = iter(self._source)
        batch: list[Any] = []
        try:
            while not self._stop.is_set():
                t = time.perf_counter()
                try:
                    item = next(it)
                except StopIteration:
                    break
                finally:
                    self.seconds += time.perf_counter() - t
                batch.append(item)
                if len(batch) == self._batch:
                    if not self._put(batch):
                        return
                    batch = []
            if batch and not self._stop.is_set():
                self._put(batch)
            self._put(_END)
        except BaseException as exc:       # re-raised in the consumer after the frames before it
            if batch:
                self._put(batch)
            self._put(exc)
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()

    def close(self) -> None:
        """Stop the producer (it closes the source) and wait a moment for it."""
        self._stop.set()
        if self._started:
            self._thread.join(timeout=10)

    def __iter__(self) -> Iterator[Any]:
        if self._started:
            raise RuntimeError("a Prefetch can be iterated once")
        self._started = True
        self._thread.start()
        try:
            while True:
                item = self._queue.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield from item
        finally:
            self.close()

"""Text vectors encoded in batches and cached by (model identity, text) in the index folder, so a rerun of the
same query set (``mvk kis``) or a repeated query (the API, the app) costs ranking only.

Layout: ``INDEX/cache/text-vectors/<model key>/`` holds ``identity.json`` (the encoder identity the key is a hash
of) and segment files ``seg-<time>-<pid>-<random>.npz`` (texts as UTF-8 JSON, vectors float32). A writer only
ever adds a whole segment (written beside, then renamed into place), so concurrent writers never see half a
file; many small segments are merged into one, and the oldest segments go once a model holds more than
``MAX_TEXTS`` texts. A segment that cannot be read is ignored (the texts are encoded again). The cache is an
optimisation: a folder that cannot be written (a read-only index) only means nothing is cached.
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
import threading
import time
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

FOLDER = ("cache", "text-vectors")
MAX_TEXTS = 50_000        # texts kept per model: 100 MB at d = 512
MAX_SEGMENTS = 32         # more segment files than this are merged into one
BATCH = 64                # texts per encoder call: BENCHMARKS.md "text encoding" (throughput flat beyond 32-64)

Progress = Callable[[Iterable, str, int], Iterable]


def model_key(identity: dict) -> str:
    """A short stable name of an encoder identity (``Encoder.identity()``)."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:20]


class TextVectorCache:
    """The cached text vectors of one model under one index folder."""

    def __init__(self, index_root: Path, identity: dict, *, max_texts: int = MAX_TEXTS) -> None:
        self.folder = Path(index_root).joinpath(*FOLDER, model_key(identity))
        self.identity = identity
        self.max_texts = int(max_texts)
        self._vectors: dict[str, np.ndarray] = {}
        self._seen: set[str] = set()
        self._lock = threading.Lock()          # a server encodes on several threads

    def _segments(self) -> list[Path]:
        try:
            return sorted(p for p in self.folder.glob("seg-*.npz"))
        except OSError:
            return []

    def _refresh(self) -> None:
        """Read the segments written since the last look (by this or another process)."""
        for path in self._segments():
            if path.name in self._seen:
                continue
            self._seen.add(path.name)
            loaded = _read_segment(path)
            if loaded is not None:
                self._vectors.update(zip(*loaded))

    def get(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """The cached vectors of those ``texts`` that are cached."""
        with self._lock:
            self._refresh()
            return {t: self._vectors[t] for t in texts if t in self._vectors}

    def put(self, texts: Sequence[str], vectors: np.ndarray) -> None:
        """Add ``texts`` with their (n, d) ``vectors`` as one new segment; merge and trim the folder when due."""
        if not len(texts):
            return
        vectors = np.asarray(vectors, np.float32)
        with self._lock:
            self._vectors.update(zip(texts, vectors))
            self._store(list(texts), vectors)

    def _store(self, texts: list[str], vectors: np.ndarray) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            ident = self.folder / "identity.json"
            if not ident.exists():
                _write_atomic(ident, json.dumps(self.identity, sort_keys=True, default=str).encode())
            self._seen.add(_write_segment(self.folder, texts, vectors).name)
            segments = self._segments()
            if len(segments) > MAX_SEGMENTS:
                self._merge(segments)
        except OSError:
            return

    def _merge(self, segments: list[Path]) -> None:
        """Replace ``segments`` by one holding the newest ``max_texts`` of their texts (older ones dropped)."""
        merged: dict[str, np.ndarray] = {}
        for path in segments:
            loaded = _read_segment(path)
            if loaded is not None:
                merged.update(zip(*loaded))
        keep = list(merged)[-self.max_texts:]
        if keep:
            self._seen.add(_write_segment(self.folder, keep, np.stack([merged[t] for t in keep])).name)
        for path in segments:
            try:
                path.unlink()
            except OSError:
                pass
        dropped = set(merged) - set(keep)
        for text in dropped:
            self._vectors.pop(text, None)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".tmp-{os.getpid()}-{secrets.token_hex(4)}-{path.name}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _write_segment(folder: Path, texts: list[str], vectors: np.ndarray) -> Path:
    import io
    buf = io.BytesIO()
    np.savez(buf, texts=np.frombuffer(json.dumps(texts).encode(), np.uint8), vectors=vectors.astype(np.float32))
    path = folder / f"seg-{time.time_ns():020d}-{os.getpid()}-{secrets.token_hex(4)}.npz"
    _write_atomic(path, buf.getvalue())
    return path


def _read_segment(path: Path) -> tuple[list[str], np.ndarray] | None:
    """(texts, vectors) of one segment; None when it is gone or unreadable."""
    try:
        with np.load(path, allow_pickle=False) as data:
            texts = json.loads(data["texts"].tobytes().decode())
            vectors = np.asarray(data["vectors"], np.float32)
    except (OSError, ValueError, KeyError, EOFError):
        return None
    if not isinstance(texts, list) or vectors.ndim != 2 or len(texts) != len(vectors):
        return None
    return [str(t) for t in texts], vectors


def _pass(items: Iterable, desc: str, total: int) -> Iterable:
    return items


def encode_texts(encoder, texts: Sequence[str], *, batch_size: int = BATCH, cache: TextVectorCache | None = None,
                 progress: Progress | None = None) -> np.ndarray:
    """(n, d) float32 vectors of ``texts`` (``encoder.encode_text``): repeated texts encoded once, cached ones
    read from ``cache``, the rest encoded ``batch_size`` at a time and added to it."""
    texts = list(texts)
    unique = list(dict.fromkeys(texts))
    found = cache.get(unique) if cache is not None else {}
    missing = [t for t in unique if t not in found]
    if missing:
        batch = max(1, int(batch_size))
        starts = range(0, len(missing), batch)
        parts = [np.asarray(encoder.encode_text(missing[i:i + batch], batch_size=batch), np.float32)
                 for i in (progress or _pass)(starts, "encoding queries", len(starts))]
        encoded = np.concatenate(parts)
        if cache is not None:
            cache.put(missing, encoded)
        found.update(zip(missing, encoded))
    if not texts:
        return np.zeros((0, int(getattr(encoder, "dim", 0))), np.float32)
    return np.stack([found[t] for t in texts]).astype(np.float32)


class CachingEncoder:
    """An encoder whose ``encode_text`` goes through a ``TextVectorCache``; everything else is the encoder's."""

    def __init__(self, encoder, cache: TextVectorCache) -> None:
        self.encoder = encoder
        self.cache = cache

    def encode_text(self, texts: Sequence[str], *, batch_size: int = BATCH) -> np.ndarray:
        return encode_texts(self.encoder, texts, batch_size=batch_size, cache=self.cache)

    def __getattr__(self, name: str):
        return getattr(self.encoder, name)

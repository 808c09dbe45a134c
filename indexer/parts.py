"""The indexing work folder: per-video part files that make a site's build resumable.

Layout, inside the index folder (searches never look there)::

    <index>/.work/<site-key>/
        pending.json                 the site's shard must be (re)written; ``since``: parts older are void
        <video-key>.frames.parquet   frame rows of one video (frame_row local to the video)
        <video-key>.objects.parquet  object rows of one video
        <video-key>.npz              frame_vectors, object_vectors (float32)
        <video-key>.done.json        the commit record: written last, by rename

Every file is written under a temporary name and renamed into place, and the ``.done.json`` record goes
last, so a run killed at any moment leaves either a complete part or one that is ignored and redone. A
record is valid only for the same source file (size, mtime), the same indexing fingerprint (models,
parameters) and, while a rebuild is pending, only if it was finished after the rebuild began.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from search.errors import InputError

WORK_DIR = ".work"
_TMP_MARK = ".tmp-"


def safe_key(name: str) -> str:
    """A file-name-safe key for a site or video name, unique per name (a short hash keeps odd names apart)."""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_")[:80] or "x"
    return f"{stem}-{hashlib.sha1(name.encode('utf-8')).hexdigest()[:8]}"


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary name beside ``path``, then rename it onto ``path``."""
    tmp = path.with_name(f"{path.name}{_TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json(path: Path, data: dict) -> None:
    atomic_write(path, lambda p: p.write_text(json.dumps(data, indent=1, sort_keys=True, default=str)))


def read_json(path: Path) -> dict | None:
    """The JSON object at ``path``, or None when it is missing or unreadable (a part then counts as not done)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def source_signature(path: str | Path) -> dict:
    """What says a source video changed: its size and modification time (ns)."""
    st = os.stat(path)
    return {"size": int(st.st_size), "mtime_ns": int(st.st_mtime_ns)}


@dataclass
class Part:
    """One video's rows and vectors."""
    frames: pd.DataFrame
    objects: pd.DataFrame
    frame_vectors: np.ndarray
    object_vectors: np.ndarray


class SiteWork:
    """The work folder of one site."""

    def __init__(self, index_root: str | Path, site: str):
        self.site = site
        self.path = Path(index_root) / WORK_DIR / safe_key(site)

    # -- site state --------------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the site for this process: a second indexer of the same site (another ``mvk index``, the
        app) gets InputError instead of mixing its parts in. Advisory; a no-op where fcntl is missing."""
        self.path.mkdir(parents=True, exist_ok=True)
        try:
            import fcntl
        except ImportError:
            yield
            return
        with open(self.path / "lock", "w") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                raise InputError(f"site {self.site!r} is being indexed by another process right now "
                                 f"(lock {self.path / 'lock'}); wait for it to finish") from None
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def prepare(self) -> None:
        """Create the folder and remove temporary files that a killed run left behind."""
        self.path.mkdir(parents=True, exist_ok=True)
        for stale in self.path.glob(f"*{_TMP_MARK}*"):
            stale.unlink(missing_ok=True)

    @property
    def pending(self) -> dict | None:
        return read_json(self.path / "pending.json")

    def mark_pending(self, *, rebuild: bool) -> None:
        """The site's shard must be written. ``rebuild`` voids every part finished before now; otherwise an
        existing pending record (perhaps of a killed rebuild) is kept so the rebuild resumes."""
        current = self.pending
        if rebuild or current is None:
            write_json(self.path / "pending.json", {"since_ns": time.time_ns() if rebuild else 0,
                                                    "rebuild": rebuild})

    def clear_pending(self) -> None:
        (self.path / "pending.json").unlink(missing_ok=True)

    # -- parts -------------------------------------------------------------------------------------
    def _files(self, key: str) -> dict[str, Path]:
        return {"frames": self.path / f"{key}.frames.parquet", "objects": self.path / f"{key}.objects.parquet",
                "vectors": self.path / f"{key}.npz", "done": self.path / f"{key}.done.json"}

    def record(self, key: str, signature: dict, fingerprint: str) -> dict | None:
        """The video's commit record if it is valid for this source file and fingerprint, else None."""
        rec = read_json(self._files(key)["done"])
        if rec is None or rec.get("fingerprint") != fingerprint:
            return None
        if rec.get("source") != signature:
            return None
        since = (self.pending or {}).get("since_ns", 0)
        if int(rec.get("finished_ns", 0)) < int(since):
            return None
        if rec.get("error") is None and not all(p.exists() for p in self._files(key).values()):
            return None
        return rec

    def write_part(self, key: str, part: Part, record: dict) -> dict:
        """Write a video's part files, then its commit record. Returns the record."""
        files = self._files(key)
        atomic_write(files["frames"], lambda p: part.frames.to_parquet(p, index=False))
        atomic_write(files["objects"], lambda p: part.objects.to_parquet(p, index=False))

        def save_vectors(p: Path) -> None:
            with open(p, "wb") as fh:
                np.savez(fh, frame_vectors=part.frame_vectors, object_vectors=part.object_vectors)
        atomic_write(files["vectors"], save_vectors)
        return self.commit(key, record)

    def commit(self, key: str, record: dict) -> dict:
        """Write the commit record (also alone, for a video that failed with a lasting input error)."""
        record = {**record, "finished_ns": time.time_ns()}
        write_json(self._files(key)["done"], record)
        return record

    def read_part(self, key: str) -> Part:
        files = self._files(key)
        with np.load(files["vectors"]) as z:
            fv, ov = z["frame_vectors"], z["object_vectors"]
        return Part(pd.read_parquet(files["frames"]), pd.read_parquet(files["objects"]), fv, ov)

    def drop_others(self, keep: set[str]) -> None:
        """Delete the parts of videos that are no longer in the site."""
        for f in self.path.iterdir():
            key = f.name.split(".", 1)[0]
            if f.is_file() and f.name not in ("pending.json", "lock") and key not in keep:
                f.unlink(missing_ok=True)

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

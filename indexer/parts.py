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
parameters), with part files that match the checksums it records, and, while a rebuild is pending, only if it
was finished after the rebuild began. A damaged part is discarded and only that video is recomputed.
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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from search.errors import InputError
from search.schema import PART_SUFFIXES, WORK_DIR

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


def file_checksum(path: Path) -> str:
    """SHA-256 of a file's bytes (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
    probes: dict[str, np.ndarray] = field(default_factory=dict)   # selected frames' probe thumbnails, if any


def wrong_work(index_root: str | Path) -> list[tuple[Path, str, str]]:
    """(path, what it is, what belongs there) of the work folder's entries of the wrong kind."""
    from search.recovery import entry_kind

    root = Path(index_root)
    expected = [(root / WORK_DIR, "folder")]
    if entry_kind(root / WORK_DIR) == "folder":
        for entry in sorted((root / WORK_DIR).iterdir()):
            if entry.is_symlink():
                continue
            expected.append((entry, "folder"))
            if entry_kind(entry) == "folder":
                expected += [(entry / "lock", "file"), (entry / "pending.json", "file")]
    found = [(path, entry_kind(path), wanted) for path, wanted in expected]
    return [(path, kind, wanted) for path, kind, wanted in found if kind is not None and kind != wanted]


def set_aside_wrong_work(index_root: str | Path) -> list[str]:
    """The work folder, a site's work folder that is a file, or a site's ``lock`` or ``pending.json`` that is a
    folder: each moved aside (never deleted) with a note, so this run makes the right kind of entry again."""
    from search.recovery import set_aside
    return [set_aside(Path(index_root), path, kind, wanted) for path, kind, wanted in wrong_work(index_root)]


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
        return {role: self.path / f"{key}{suffix}" for role, suffix in PART_SUFFIXES.items()}

    def check(self, key: str, signature: dict, fingerprint: str) -> tuple[dict | None, str | None]:
        """The video's commit record if it is valid for this source file and fingerprint (else None), and a
        note when its part was damaged: then the part is discarded, so that video alone is recomputed.

        Valid means: same fingerprint and source signature, finished after a pending rebuild began, and
        either a lasting failure or part files whose checksums match the record. A failure record without
        ``lasting`` (written before transient failures were told apart) is void, so it is retried."""
        rec = read_json(self._files(key)["done"])
        if rec is None or rec.get("fingerprint") != fingerprint:
            return None, None
        if rec.get("source") != signature:
            return None, None
        since = (self.pending or {}).get("since_ns", 0)
        if int(rec.get("finished_ns", 0)) < int(since):
            return None, None
        if rec.get("error") is not None:
            return (rec, None) if rec.get("lasting") else (None, None)
        damaged = self.damaged(key, rec)
        if damaged:
            self.discard(key)
            return None, f"its part in the work folder was damaged ({damaged}): discarded and recomputed"
        return rec, None

    def record(self, key: str, signature: dict, fingerprint: str) -> dict | None:
        """The video's valid commit record (see ``check``), else None."""
        return self.check(key, signature, fingerprint)[0]

    def damaged(self, key: str, record: dict) -> str | None:
        """What is wrong with a committed part's files (missing, or a checksum that differs), or None."""
        sums = record.get("checksums")
        if not isinstance(sums, dict):
            return "no checksums recorded"
        for name, path in self._files(key).items():
            if name == "done":
                continue
            try:
                actual = file_checksum(path)
            except OSError:
                return f"{path.name} is missing"
            if actual != sums.get(name):
                return f"{path.name} does not match its checksum"
        return None

    def discard(self, key: str) -> None:
        """Remove a video's commit record, then its part files."""
        files = self._files(key)
        files["done"].unlink(missing_ok=True)
        for path in files.values():
            path.unlink(missing_ok=True)

    def write_part(self, key: str, part: Part, record: dict) -> dict:
        """Write a video's part files, then its commit record with their checksums. Returns the record."""
        files = self._files(key)
        atomic_write(files["frames"], lambda p: part.frames.to_parquet(p, index=False))
        atomic_write(files["objects"], lambda p: part.objects.to_parquet(p, index=False))

        def save_vectors(p: Path) -> None:
            with open(p, "wb") as fh:
                np.savez(fh, frame_vectors=part.frame_vectors, object_vectors=part.object_vectors, **part.probes)
        atomic_write(files["vectors"], save_vectors)
        sums = {name: file_checksum(path) for name, path in files.items() if name != "done"}
        return self.commit(key, {**record, "checksums": sums})

    def commit(self, key: str, record: dict) -> dict:
        """Write the commit record (also alone, for a video that failed with a lasting input error)."""
        record = {**record, "finished_ns": time.time_ns()}
        write_json(self._files(key)["done"], record)
        return record

    def read_part(self, key: str) -> Part:
        """A committed part; InputError naming the file when it cannot be read (it is then discarded, so the
        next run recomputes that video)."""
        files = self._files(key)
        try:
            with np.load(files["vectors"]) as z:
                fv, ov = z["frame_vectors"], z["object_vectors"]
                probes = {k: z[k] for k in z.files if k.startswith("probe_")}
            return Part(pd.read_parquet(files["frames"]), pd.read_parquet(files["objects"]), fv, ov, probes)
        except Exception as exc:
            self.discard(key)
            raise InputError(f"part {key} in {self.path} is unreadable ({type(exc).__name__}: {exc}); it was "
                             "discarded and is recomputed by the next run") from None

    def drop_others(self, keep: set[str]) -> None:
        """Delete the parts of videos that are no longer in the site."""
        for f in self.path.iterdir():
            key = f.name.split(".", 1)[0]
            if f.is_file() and f.name not in ("pending.json", "lock") and key not in keep:
                f.unlink(missing_ok=True)

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

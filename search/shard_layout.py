"""Immutable version folders of one site's shard and the one pointer file that names the current one.

    sites/<site>/
        CURRENT         {"version": "v-<id>", "manifest": {"size", "sha256"}, "retired": {"v-<id>": unix time}}
        v-<id>/         one complete shard; never changed once published
        .lock           held (flock) by the writer of this site
        .tmp-...        a version or pointer being written; a crash leaves it, the next writer removes it

Publishing a version: its files are written into ``.tmp-v-<id>/``, the folder is renamed to ``v-<id>``
(nobody reads it yet), then ``CURRENT`` is replaced with ``os.replace`` -- the one atomic step. A reader
reads ``CURRENT`` once and opens every file through the folder it names, so it sees one whole version,
never a mix of two. The version that stopped being current is listed under ``retired`` with the time and
removed by a later writer once the grace period has passed (a reader that resolved it just before the
swap can still open it; a reader that reads lazily keeps its files open, which POSIX keeps readable after
removal). Versions neither current nor retired (a crash between the rename and the pointer) and ``.tmp-``
entries are removed at once, under the lock.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from search.checksums import file_record
from search.errors import IndexFormatError

POINTER = "CURRENT"
LOCK = ".lock"
TMP = ".tmp-"
_VERSION = re.compile(r"v-[0-9a-f]{20}")


@dataclass(frozen=True)
class Pointer:
    version: str                 # folder name of the current version
    manifest: dict               # size and checksum of that version's manifest.json
    retired: dict[str, float]    # earlier versions -> when they stopped being current (unix seconds)


def is_version(name: str) -> bool:
    return bool(_VERSION.fullmatch(name))


def read_pointer(site_dir: Path) -> Pointer | None:
    """The site's pointer; None when it has none (no shard, or one written before versions existed);
    IndexFormatError when it is unreadable or names no valid version."""
    path = site_dir / POINTER
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise IndexFormatError(f"{path} is not readable: {exc}") from None
    version = data.get("version") if isinstance(data, dict) else None
    if not isinstance(version, str) or not is_version(version) or not isinstance(data.get("manifest"), dict):
        raise IndexFormatError(f"{path} does not name a shard version (corrupt)")
    retired = data.get("retired") if isinstance(data.get("retired"), dict) else {}
    return Pointer(version, data["manifest"], {str(k): float(v) for k, v in retired.items()
                                               if isinstance(v, (int, float))})


def _write_pointer(site_dir: Path, pointer: Pointer) -> None:
    data = {"version": pointer.version, "manifest": pointer.manifest, "retired": pointer.retired}
    tmp = site_dir / f"{TMP}{POINTER}-{uuid.uuid4().hex[:12]}"
    with open(tmp, "w") as fh:
        json.dump(data, fh, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, site_dir / POINTER)
    fsync_dir(site_dir)


def fsync_dir(path: Path) -> None:
    """Make renames inside ``path`` durable (a no-op where directories cannot be opened)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def locked(site_dir: Path, *, wait: bool = True) -> Iterator[bool]:
    """Hold the site's writer lock; with ``wait=False`` yields False instead of waiting when another process
    holds it. Advisory (flock); a no-op yielding True where fcntl does not exist."""
    site_dir.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:
        yield True
        return
    with open(site_dir / LOCK, "a") as fh:          # "a": taking the lock changes no file time
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except OSError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def begin(site_dir: Path) -> Path:
    """A new, empty folder to write a version into (published by ``publish``)."""
    path = site_dir / f"{TMP}v-{uuid.uuid4().hex[:20]}"
    path.mkdir(parents=True)
    return path


def publish(site_dir: Path, tmp: Path, *, now: float | None = None) -> Path:
    """Make the version written in ``tmp`` (its manifest.json last) the current one: rename, then replace the
    pointer. The previous version is retired (kept until the grace period has passed). Caller holds the lock."""
    version = tmp.name[len(TMP):]
    final = site_dir / version
    fsync_dir(tmp)
    os.rename(tmp, final)
    fsync_dir(site_dir)
    try:
        old = read_pointer(site_dir)
    except IndexFormatError:
        old = None                     # nobody can resolve through a broken pointer: nothing to retire
    retired = dict(old.retired) if old else {}
    if old is not None and old.version != version:
        retired[old.version] = time.time() if now is None else now
    _write_pointer(site_dir, Pointer(version, file_record(final / "manifest.json"), retired))
    return final


def collect(site_dir: Path, grace: float, *, now: float | None = None) -> list[str]:
    """Remove what no reader can be opening: ``.tmp-`` entries, versions neither current nor retired, and
    versions retired more than ``grace`` seconds ago. Returns the names removed. Caller holds the lock."""
    if not site_dir.is_dir():
        return []
    now = time.time() if now is None else now
    try:
        pointer = read_pointer(site_dir)
    except IndexFormatError:
        return []                      # leave everything to the writer that repairs the pointer
    keep = {pointer.version} if pointer else set()
    retired = {v: t for v, t in (pointer.retired if pointer else {}).items() if now - t < grace}
    keep |= set(retired)
    removed = []
    for entry in site_dir.iterdir():
        if entry.name.startswith(TMP) or (is_version(entry.name) and entry.name not in keep):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry.name)
    if pointer is not None and retired != pointer.retired:
        _write_pointer(site_dir, Pointer(pointer.version, pointer.manifest,
                                         {v: t for v, t in retired.items() if (site_dir / v).is_dir()}))
    return removed

"""A full disk during `mvk index`: name the disk and the space needed, stop cleanly (the next run resumes).

A write that fails with ENOSPC (or EDQUOT, a full quota) would fail again for every later video and site,
so the run stops at the first one instead of piling up failures; every committed part is kept.
"""
from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from search.errors import DiskFullError

FULL = (errno.ENOSPC, errno.EDQUOT)
MARGIN = 64 * 2 ** 20          # room asked for beyond the estimate: manifests, temp files, a part in flight


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` is a write refused for lack of space (anywhere in its chain of causes)."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in FULL:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def mount_point(path: str | Path) -> Path:
    """The mount point of the filesystem holding ``path`` (the nearest existing folder above it)."""
    p = Path(os.path.abspath(path))
    while not p.exists() and p != p.parent:
        p = p.parent
    while not os.path.ismount(p) and p != p.parent:
        p = p.parent
    return p


def folder_bytes(path: str | Path) -> int:
    """Total size of the files under ``path`` (0 when it is missing)."""
    total = 0
    for dirpath, _, names in os.walk(path):
        for name in names:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total


def _mib(n: int) -> str:
    return f"{n / 2 ** 20:,.0f} MiB" if n >= 2 ** 20 else f"{n / 1024:,.0f} KiB"


def disk_full(root: str | Path, exc: OSError) -> DiskFullError:
    """The error that stops the run: which disk, how much is free, about how much more is needed (the index's
    work parts, from which the shards are written, plus a margin), and that the next run resumes."""
    disk = mount_point(root)
    try:
        free = shutil.disk_usage(disk).free
    except OSError:
        free = 0
    needed = folder_bytes(Path(root) / ".work") + MARGIN
    where = getattr(exc, "filename", None)
    return DiskFullError(
        f"the disk holding {root} is full (mounted at {disk}, {_mib(free)} free)"
        + (f" while writing {where}" if where else "")
        + f": free about {_mib(needed)} (the work parts of this index, from which its shards are written, plus "
          f"{_mib(MARGIN)}), then run the same command again: finished videos are kept and it resumes")

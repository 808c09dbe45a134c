"""Files read as input (query images, query sets, collection files): a regular file, or refused by name.

``/dev/zero`` reports a size of 0 and never ends; a FIFO nobody writes blocks the first read for ever. So the
kind of file is checked (``stat`` + ``S_ISREG``) before a byte is read, the file is opened with
``O_NONBLOCK`` (opening a FIFO then returns at once) and checked again on the open descriptor (the name may
have been swapped in between), and at most ``limit`` + 1 bytes are ever read.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

from search.errors import InputError

_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe (FIFO)"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def special_kind(mode: int) -> str | None:
    """What a non-regular file is (``"a named pipe (FIFO)"``), from its ``st_mode``; None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    return next((what for test, what in _KINDS if test(mode)), "not a regular file")


def _label(path: str | Path, what: str) -> str:
    return f"{what} {path}" if what else str(path)


def _size_text(n: int) -> str:
    return f"{n / 2 ** 20:.0f} MiB" if n >= 2 ** 20 else f"{n:,} bytes"


def _checked(st: os.stat_result, label: str, limit: int | None, error: type[Exception]) -> int:
    kind = special_kind(st.st_mode)
    if kind is not None:
        raise error(f"{label}: is {kind}, not a regular file; refused")
    if limit is not None and st.st_size > limit:
        raise error(f"{label}: {_size_text(st.st_size)}, more than the limit of {_size_text(limit)}")
    return st.st_size


def regular_file(path: str | Path, what: str = "", limit: int | None = None, *,
                 error: type[Exception] = InputError) -> int:
    """The size of ``path`` when it is a regular file (links followed) of at most ``limit`` bytes; ``error``
    naming it (``what`` + path) when it is missing, a folder, a FIFO, a device or a socket, or too large."""
    label = _label(path, what)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise error(f"{label}: no such file") from None
    except OSError as exc:
        raise error(f"{label}: cannot be read ({exc.strerror or exc})") from None
    return _checked(st, label, limit, error)


def read_regular(path: str | Path, what: str, limit: int, *, error: type[Exception] = InputError) -> bytes:
    """The bytes of the regular file ``path``, refused (``error`` naming it) as ``regular_file`` says, and
    never more than ``limit`` + 1 bytes read: a file that grows past ``limit`` while read is refused too."""
    label = _label(path, what)
    regular_file(path, what, limit, error=error)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise error(f"{label}: cannot be read ({exc.strerror or exc})") from None
    try:
        _checked(os.fstat(fd), label, limit, error)
        chunks, total = [], 0
        while total <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    except OSError as exc:
        raise error(f"{label}: cannot be read ({exc.strerror or exc})") from None
    finally:
        os.close(fd)
    if total > limit:
        raise error(f"{label}: more than the limit of {_size_text(limit)}")
    return b"".join(chunks)

"""Which files the app may read or serve: only those inside the configured collection and index folders.

Every path that comes from outside (a typed folder, a ``video_path`` read from an index table, the name of
an uploaded file) goes through ``resolve_inside`` before anything opens it: symlinks are resolved first, so
neither ``..`` nor a link can lead out of the allowed roots. Uploads are read into memory, checked for size
and decoded in-process (PIL, pandas); they never touch the disk and nothing from them reaches a shell.
"""
from __future__ import annotations

import stat
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from search.errors import InputError

MAX_IMAGE_BYTES = 20 * 1024 * 1024     # an uploaded query image
MAX_CSV_BYTES = 20 * 1024 * 1024       # an uploaded query set
MAX_IMAGE_PIXELS = 40_000_000          # decompression-bomb guard for uploaded images
MAX_REQUEST_BYTES = MAX_IMAGE_BYTES + 2**20   # an API request: one image upload and its multipart framing


class PathNotAllowedError(InputError):
    """A path points outside the folders the app was started on (or cannot be resolved)."""


def resolve_inside(path: str | Path, roots: Iterable[str | Path], *, base: str | Path | None = None,
                   must_exist: bool = True) -> Path:
    """``path`` resolved (symlinks followed) if it lies inside one of ``roots``; PathNotAllowedError otherwise.

    A relative ``path`` is taken relative to ``base`` (default: the first root). The check runs on the
    fully resolved path, so ``a/../../etc`` and links that point out of the roots are both refused.
    """
    root_list = [Path(r).resolve() for r in roots]
    if not root_list:
        raise PathNotAllowedError("no folder is configured to read files from")
    text = str(path)
    if not text.strip() or "\x00" in text:
        raise PathNotAllowedError(f"not a usable path: {text!r}")
    candidate = Path(text).expanduser()
    if not candidate.is_absolute():
        candidate = Path(base).resolve() / candidate if base is not None else root_list[0] / candidate
    try:
        resolved = candidate.resolve()
    except (OSError, RuntimeError) as exc:   # symlink loop
        raise PathNotAllowedError(f"{_short(text)}: cannot be resolved ({getattr(exc, 'strerror', None) or 'a symbolic-link loop'})") from None
    if not any(resolved == root or resolved.is_relative_to(root) for root in root_list):
        names = ", ".join(str(r) for r in root_list)
        raise PathNotAllowedError(f"{text}: outside the folders this app may read ({names})")
    if must_exist and _stat(resolved, text) is None:
        raise PathNotAllowedError(f"{_short(text)}: no such file or folder")
    return resolved


def _short(text: str, limit: int = 80) -> str:
    """A typed path as shown in a message: at most ``limit`` characters (a 300-byte name stays readable)."""
    return text if len(text) <= limit else f"{text[:limit - 1]}…"


def _stat(path: Path, typed: str):
    """``os.stat`` of ``path``, None when nothing is there; PathNotAllowedError naming what was typed (never
    the server's path) when the system refuses the name (a folder name over 255 bytes, a path too long)."""
    import os
    try:
        return os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise PathNotAllowedError(f"{_short(typed)}: not a usable name ({exc.strerror or exc})") from None


ENV_OUTSIDE_LINKS = "MVK_FOLLOW_OUTSIDE_LINKS"   # "1": set by mvk app / mvk serve --follow-outside-links


def _link_inside(collection: str | Path, relative: str | Path) -> Path | None:
    """The target of ``relative`` when its own path (``..`` applied, links not followed) lies inside the
    collection, so only a symbolic link can have led out of it; None otherwise."""
    import os
    base = Path(collection).resolve()
    lexical = Path(os.path.normpath(base / Path(str(relative)).expanduser()))
    if not lexical.is_relative_to(base):
        return None
    try:
        return lexical.resolve(strict=True)
    except (OSError, RuntimeError, ValueError):        # ValueError: a NUL in the name
        return None


def collection_file(collection: str | Path, relative: str | Path, *,
                    follow_outside_links: bool | None = None) -> Path:
    """A file of the collection named by its path relative to the collection root (as index tables store it).
    A symbolic link in the collection that leads out of it is refused, as ``mvk index`` refuses it, unless
    ``follow_outside_links`` (default: ``$MVK_FOLLOW_OUTSIDE_LINKS`` is 1, set by ``--follow-outside-links``)."""
    import os
    allow = os.environ.get(ENV_OUTSIDE_LINKS) == "1" if follow_outside_links is None else follow_outside_links
    try:
        path = resolve_inside(relative, [collection], base=collection)
    except PathNotAllowedError as exc:
        target = _link_inside(collection, relative)
        if target is None:
            raise
        if not allow:
            raise PathNotAllowedError(f"{exc} (a symbolic link in the collection leads there: start with "
                                      f"--follow-outside-links to allow such links)") from None
        path = target
    if not stat.S_ISREG(_stat(path, str(relative)).st_mode):
        raise PathNotAllowedError(f"{relative}: not a file")
    return path


def collection_folder(collection: str | Path, typed: str | Path) -> Path:
    """A folder inside the collection, typed by a user (relative to the collection root, or absolute)."""
    path = resolve_inside(typed, [collection], base=collection)
    if not stat.S_ISDIR(_stat(path, str(typed)).st_mode):
        raise PathNotAllowedError(f"{typed}: not a folder")
    return path


def safe_name(name: str, *, suffix: str = "") -> str:
    """A file name made of letters, digits, ``-``, ``_`` and ``.`` only (for files the app writes)."""
    cleaned = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in Path(str(name)).name).strip("._")
    if not cleaned:
        raise InputError(f"not a usable file name: {name!r}")
    if suffix and not cleaned.endswith(suffix):
        cleaned += suffix
    return cleaned


def read_uploaded_image(data: bytes, name: str = "upload") -> np.ndarray:
    """An uploaded image as (H, W, 3) uint8 RGB; InputError naming the file when it is too big (bytes or
    pixels, checked before decoding) or no image."""
    from search.images import read_image

    return read_image(data, name, max_pixels=MAX_IMAGE_PIXELS, max_bytes=MAX_IMAGE_BYTES)


def check_uploaded_csv(data: bytes, name: str = "upload") -> str:
    """The text of an uploaded CSV (UTF-8); InputError naming the file when it is too big or not text."""
    if len(data) > MAX_CSV_BYTES:
        raise InputError(f"{name}: file larger than {MAX_CSV_BYTES // 2**20} MiB")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"{name}: not a UTF-8 text file") from exc

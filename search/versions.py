"""Ids that carry the index version they came from: positions (gids) are valid within one version only.

A client that searched, then follows a frame id while a site is re-indexed, would get another frame: the
ids are positions in the current version. Given the version its id came from, a reader refuses it
(StaleIndexError) once the index has moved on, instead of answering with whatever frame is there now.
"""
from __future__ import annotations

from search.errors import StaleIndexError


def check_version(asked: str | None, current: str, what: str = "frame ids") -> None:
    """Nothing when ``asked`` is None (no version given) or the ``current`` one; StaleIndexError otherwise."""
    if asked is not None and asked != current:
        raise StaleIndexError(f"{what} of index version {asked!r} are no longer valid: the index is now at version "
                              f"{current!r} (a shard was rebuilt or swapped since); search again for current ids")

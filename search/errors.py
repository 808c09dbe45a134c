"""Errors that every layer raises and the shells turn into one clear message.

They live in ``search`` because it is the package that every other may import.
"""
from __future__ import annotations


class MvkError(Exception):
    """Base class: an expected failure with a message fit to show a user as is."""


class MissingWeightsError(MvkError):
    """Pretrained weights are not available offline; the message says what to fetch and where to put it."""


class ModelMismatchError(MvkError):
    """An index was built with another model or preprocessing than the one asked for."""


class IndexFormatError(MvkError):
    """An index folder or one of its shard files is missing, corrupt or of another format."""


class QueryError(MvkError):
    """A query cannot be run as given (empty text, unknown site, bad filter, ...)."""


class SpaceMissingError(QueryError):
    """A query needs a shard's vectors in an embedding space the shard has none in yet (a space being added)."""


class InputError(MvkError):
    """A user-supplied file or folder is not what it should be (not a collection, bad CSV, ...)."""


class DiskFullError(MvkError):
    """A write failed because the disk (or the user's quota) is full; names the disk and the space needed.
    Nothing written before is lost: the run stops, and the same command resumes once space is freed."""


class StaleIndexError(MvkError):
    """An id given with the index version it came from, and that version is gone (a shard was rebuilt or
    swapped since): the id would name another frame now, so it is refused rather than answered."""

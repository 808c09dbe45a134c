"""Checksums of a parquet file per row group, so rows are verified where they are read.

Opening an index checks ``frames.parquet`` by size only: hashing it whole (it holds every thumbnail) is most
of an open. Instead the writer records, per row group, the SHA-256 of the bytes of its metadata columns
(site, video, time, frame index...) and, apart, of each lazy column (the thumbnails). The metadata columns
are checked when they are read at open (their bytes are a small part of the file), a lazy column's group the
first time it is read. A damaged group is named; its rows are left out (placeholder values, marked in a
mask the shard's vector tables honour) and every other group is served.
"""
from __future__ import annotations

import hashlib
import mmap
from pathlib import Path

import numpy as np
import pandas as pd

from search.errors import IndexFormatError

META = "meta"       # key of the digests of every non-lazy column together


def _chunk(meta, group: int, column: int) -> tuple[int, int]:
    """(start, length) of one column chunk's bytes in the file."""
    cc = meta.row_group(group).column(column)
    offsets = [o for o in (cc.dictionary_page_offset if cc.has_dictionary_page else None, cc.data_page_offset)
               if o is not None and o > 0]
    return min(offsets), int(cc.total_compressed_size)


def _digest(buf, meta, group: int, columns: list[int]) -> str:
    h = hashlib.sha256()
    for column in columns:
        start, length = _chunk(meta, group, column)
        h.update(buf[start:start + length])
    return h.hexdigest()


def _columns(pf, lazy: tuple[str, ...]) -> dict[str, list[int]]:
    names = pf.schema_arrow.names
    out = {META: [i for i, n in enumerate(names) if n not in lazy]}
    out.update({n: [names.index(n)] for n in lazy if n in names})
    return out


def _mapped(path: Path):
    fh = open(path, "rb")
    try:
        return fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    except ValueError:               # an empty file cannot be mapped
        return fh, b""


def _footer(buf) -> str:
    """SHA-256 of the file's footer (schema, row-group offsets; its length is in the 4 bytes before the end)."""
    size = len(buf)
    if size < 12:
        return ""
    length = int.from_bytes(buf[size - 8:size - 4], "little")
    return hashlib.sha256(buf[max(0, size - 8 - length):size]).hexdigest()


def group_digests(path: str | Path, lazy: tuple[str, ...]) -> dict:
    """``{"footer": digest, "meta": [digest per row group], <lazy column>: [...]}`` of the parquet file
    ``path``."""
    import pyarrow.parquet as pq
    pf = pq.ParquetFile(path)
    fh, buf = _mapped(Path(path))
    try:
        out: dict = {"footer": _footer(buf)}
        out.update({key: [_digest(buf, pf.metadata, g, cols) for g in range(pf.metadata.num_row_groups)]
                    for key, cols in _columns(pf, lazy).items()})
        return out
    finally:
        if isinstance(buf, mmap.mmap):
            buf.close()
        fh.close()


def damaged(path: str | Path, pf, digests: list[str], columns: list[int], groups=None) -> list[int]:
    """The row groups (of ``groups``, default all) whose ``columns`` do not match ``digests``."""
    groups = range(pf.metadata.num_row_groups) if groups is None else groups
    fh, buf = _mapped(Path(path))
    try:
        return [g for g in groups if g >= len(digests) or _digest(buf, pf.metadata, g, columns) != digests[g]]
    finally:
        if isinstance(buf, mmap.mmap):
            buf.close()
        fh.close()


def group_rows(pf, group: int) -> tuple[int, int]:
    """(first row, row count) of a row group."""
    sizes = [pf.metadata.row_group(i).num_rows for i in range(group + 1)]
    return int(sum(sizes[:-1])), int(sizes[-1])


def describe(path: str | Path, pf, group: int, what: str) -> str:
    first, n = group_rows(pf, group)
    return (f"{path}: row group {group} (rows {first}..{first + n - 1}) does not match its checksum: its "
            f"{what} are left out (the rest is served; mvk check names it and mvk index rewrites the shard)")


def _placeholder(schema, n: int):
    """``n`` rows of ``schema`` with neutral values: 0, NaN, False, "" or b"" (never read as real data)."""
    import pyarrow as pa
    arrays = []
    for field in schema:
        t = field.type
        value = (0 if pa.types.is_integer(t) else float("nan") if pa.types.is_floating(t) else
                 False if pa.types.is_boolean(t) else "" if pa.types.is_string(t) or pa.types.is_large_string(t)
                 else b"" if pa.types.is_binary(t) or pa.types.is_large_binary(t) else None)
        try:
            arrays.append(pa.array([value] * n, type=t))
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            arrays.append(pa.nulls(n, type=t))
    return pa.Table.from_arrays(arrays, schema=schema)


def read_verified(path: str | Path, lazy: tuple[str, ...], digests: dict | None
                  ) -> tuple[pd.DataFrame, np.ndarray | None, list[str]]:
    """The table without its ``lazy`` columns, its rows that failed their checksum (a bool mask, None when
    all are good or nothing was recorded) and one note per damaged group. Without ``digests`` (a shard
    written before they were recorded) the table is read unchecked, as it always was."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    pf = pq.ParquetFile(path)
    columns = _columns(pf, lazy)
    names = [n for n in pf.schema_arrow.names if n not in lazy]
    if not digests or META not in digests:
        return pd.read_parquet(path, columns=names), None, []
    fh, buf = _mapped(Path(path))
    try:
        footer = _footer(buf)
    finally:
        if isinstance(buf, mmap.mmap):
            buf.close()
        fh.close()
    if footer != digests.get("footer", footer):
        raise IndexFormatError(f"{path}: its footer (schema and row-group offsets) does not match its checksum")
    bad = damaged(path, pf, digests[META], columns[META])
    if not bad:
        return pd.read_parquet(path, columns=names), None, []
    schema = pa.schema([pf.schema_arrow.field(n) for n in names], metadata=pf.schema_arrow.metadata)
    tables, mask = [], np.zeros(pf.metadata.num_rows, bool)
    for g in range(pf.metadata.num_row_groups):
        first, n = group_rows(pf, g)
        if g in bad:
            tables.append(_placeholder(schema, n))
            mask[first:first + n] = True
        else:
            t = pf.read_row_group(g, columns=names)
            tables.append(pa.Table.from_arrays(t.columns, schema=schema))
    notes = [describe(path, pf, g, "rows") for g in bad]
    return pa.concat_tables(tables).to_pandas(), mask, notes

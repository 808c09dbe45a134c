"""CSV files written for people (per-query results, catalogs, result lists) made safe to open in a spreadsheet.

A query text such as ``=HYPERLINK("http://…","click")`` written verbatim into a CSV becomes a live formula
when the file is opened in Excel or LibreOffice (CSV injection). A text cell that begins with ``=``, ``+``,
``-``, ``@``, a tab or a carriage return, and is not a plain number, gets a leading ``'``, which spreadsheets
show as text. Numeric columns are never touched, so the numbers stay numbers.
"""
from __future__ import annotations

import re

import pandas as pd

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def escape_cell(value: object) -> object:
    """``value`` with a leading ``'`` when it is text a spreadsheet would run as a formula; else unchanged."""
    if isinstance(value, str) and value.startswith(_FORMULA_START) and not _NUMBER.match(value):
        return "'" + value
    return value


def spreadsheet_safe(table: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``table`` whose text cells (object and string columns) are escaped by ``escape_cell``."""
    out = table.copy()
    for column in out.columns:
        if out[column].dtype == object or pd.api.types.is_string_dtype(out[column].dtype):
            out[column] = out[column].map(escape_cell, na_action="ignore")
    return out


def to_csv(table: pd.DataFrame, path=None, **kwargs):
    """``table.to_csv`` after ``spreadsheet_safe`` (the text, when ``path`` is None)."""
    return spreadsheet_safe(table).to_csv(path, **kwargs)

"""Query sets for the known-item-search benchmark: a tidy CSV model and importers for the MVK KIS files.

Tidy CSV (comma-separated, one query a row; this is what ``mvk captions`` writes)::

    query_id,query_type,text,target_site,target_video,target_frame,target_time[,source][,vector]

``target_frame`` (index of the frame in its video) or ``target_time`` (seconds) names the target;
at least one of them per row. Optional columns: ``target_selected`` (the number ``n`` of MVK's selected
frame ``<video>_<n>.jpg``, which an index built with ``--selected-frames`` identifies exactly),
``source`` (where the text comes from, e.g. the captioning model) and ``vector`` (a precomputed query
vector, ``|``-separated).

MVK KIS files (semicolon-separated, header, vectors ``|``-separated), recognised by their header:

- ``img; CLIP_img; ClipCap_text; CLIP_ClipCap; novice_text; CLIP_text``: one row gives a ``clipcap``
  and a ``novice`` query for the same target (vectors ``CLIP_ClipCap`` and ``CLIP_text``);
- ``img; text; CLIP_text``: ``expert`` queries.

The vector columns may be absent (``img; text``). The target is named by the image path's last parts in
any form ``mvk_tools.targetnames`` reads (``<site>/<video>_<n>.jpg``, where ``n`` is the selected frame's
number, not a frame index; flat, per-video folder and time-code forms). For time-code targets the target
image's own vector (``CLIP_img``), when the file has one, is kept in ``target_vector``: ``mvk_tools.kis``
uses it to decide how the file's time codes are to be read. A row whose query text is empty is kept (MVK's
code ranks it: it is the query of an empty text) and reported as a warning, not skipped. A byte-order mark, CRLF line
ends and a trailing separator on every line are read. Precomputed vectors are parsed only when asked
for (``with_vectors``); an all-zero or non-finite vector is a bad row.

Bad rows (wrong field count, unreadable target, a text over MAX_TEXT_CHARS, a target frame that is no
integer a video can have) become :class:`Issue` entries naming file and line and are skipped; the valid
rows of the same file are kept. A file over MAX_FILE_BYTES is refused whole, naming the limit.
"""
from __future__ import annotations

import contextlib
import csv
import io
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from mvk_tools.targetnames import TargetName, parse_target_name
from search.errors import InputError
from search.inputs import read_regular

QUERY_COLUMNS = ("query_id", "query_type", "text", "target_site", "target_video", "target_frame", "target_time")
OPTIONAL_COLUMNS = ("source", "vector")
# Target columns besides QUERY_COLUMNS: the selected frame's number, or an MVK time code "h:mm:ss:ff"
TARGET_EXTRA_COLUMNS = ("target_selected", "target_timecode")
# Columns every loaded query set carries besides QUERY_COLUMNS: where each query came from.
ORIGIN_COLUMNS = ("source", "source_file", "source_line")

MVK_NOVICE_CLIPCAP = ("img", "clipcap_text", "novice_text")      # vector columns optional
MVK_EXPERT = ("img", "text")
TIDY_REQUIRED = ("query_id", "query_type", "text", "target_site", "target_video")

# format name -> (required lower-case columns, the separator files of that format use)
FORMATS: dict[str, tuple[tuple[str, ...], str]] = {
    "mvk-novice-clipcap": (MVK_NOVICE_CLIPCAP, ";"),
    "mvk-expert": (MVK_EXPERT, ";"),
    "tidy": (TIDY_REQUIRED, ","),
}
SEPARATORS = (";", ",", "\t")
_SEP_NAMES = {";": "';'", ",": "','", "\t": "tab"}
MAX_TEXT_CHARS = 10_000             # a query text longer than this is not a query (CLIP reads 77 tokens)
MAX_FILE_BYTES = 64 * 1024 ** 2     # a query file larger than this is refused whole (MVK's are ~2 MB)
MAX_FRAME = 2 ** 31 - 1             # the largest frame index or selected-frame number a target can name


class QuerySetError(InputError):
    """A query-set file cannot be used at all (missing, unreadable, no known header); names the file."""


@dataclass(frozen=True)
class Issue:
    """A problem found in a query-set file. ``skipped``: the row (or query) was left out."""
    path: str
    line: int | None
    message: str
    skipped: bool = True

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line is not None else self.path
        return f"{where}: {message_prefix(self.skipped)}{self.message}"


def message_prefix(skipped: bool) -> str:
    return "skipped: " if skipped else "warning: "


@dataclass
class QuerySet:
    """Queries (QUERY_COLUMNS + ORIGIN_COLUMNS, and ``vector`` holding float32 arrays or None) and the
    issues met while reading them."""
    queries: pd.DataFrame
    issues: list[Issue] = field(default_factory=list)
    formats: dict[str, str] = field(default_factory=dict)   # file -> detected format


def parse_vector(text: str) -> np.ndarray:
    """A ``|``-separated vector (brackets and spaces tolerated) as float32. Raises ValueError."""
    body = text.strip().strip("[]()").strip()
    if not body:
        raise ValueError("empty vector")
    vec = np.array(body.split("|"), dtype=np.float32)
    if not np.all(np.isfinite(vec)):
        raise ValueError("vector has non-finite values")
    if not vec.any():
        raise ValueError("vector is all zeros (it has no direction)")
    return vec


def format_vector(vec: np.ndarray) -> str:
    return "|".join(f"{v:.6g}" for v in np.asarray(vec, dtype=np.float32))


def _read_text(path: Path) -> str:
    if path.is_dir():
        raise QuerySetError(f"query set {path}: is a folder, not a CSV file")
    data = read_regular(path, "query set", MAX_FILE_BYTES, error=QuerySetError)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise QuerySetError(f"query set {path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def _header_line(text: str) -> tuple[int, str]:
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip() and not line.lstrip().startswith("#"):
            return number, line
    return 0, ""


def detect_format(header: str) -> tuple[str, str] | None:
    """(format name, separator) whose required columns all appear in ``header``, or None."""
    for sep in SEPARATORS:
        cols = {c.strip().strip('"').lower() for c in header.split(sep)}
        for name, (required, _) in FORMATS.items():
            if set(required) <= cols and (name != "tidy" or cols & {"target_frame", "target_time"}):
                return name, sep
    return None


def _explain_header(path: Path, number: int, header: str) -> str:
    best_sep = max(SEPARATORS, key=lambda s: header.count(s))
    cols = [c.strip().strip('"').lower() for c in header.split(best_sep)] if header.count(best_sep) else [header.strip()]
    lines = [f"query set {path} line {number}: header not recognised (columns {cols}"
             + (f", separated by {_SEP_NAMES[best_sep]})" if header.count(best_sep) else ", no ';', ',' or tab separator)")]
    for name, (required, sep) in FORMATS.items():
        missing = [c for c in required if c not in cols]
        if name == "tidy" and not {"target_frame", "target_time"} & set(cols):
            missing.append("target_frame or target_time")
        lines.append(f"  {name} ({_SEP_NAMES[sep]}-separated) would need: {', '.join(missing)}")
    return "\n".join(lines)


@contextlib.contextmanager
def _field_limit(limit: int):
    """csv's per-field limit (128 KiB by default) raised for one read: long fields are judged by the
    readers (MAX_TEXT_CHARS), with a line number, instead of aborting the file."""
    old = csv.field_size_limit()
    csv.field_size_limit(max(old, limit))
    try:
        yield
    finally:
        csv.field_size_limit(old)


def _rows(text: str, sep: str) -> Iterable[tuple[int, list[str]]]:
    """(line number, stripped fields) per non-empty, non-comment record; handles quoted fields. The first
    record is the header, whose empty names at the end (a trailing separator) are dropped; so are empty
    fields at the end of a later record beyond the header's length."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep, skipinitialspace=True)
    start = 1
    width = 0
    for record in reader:
        line = start
        start = reader.line_num + 1
        if not record or all(not f.strip() for f in record) or record[0].lstrip().startswith("#"):
            continue
        fields = [f.strip() for f in record]
        while len(fields) > width and not fields[-1]:
            fields.pop()
        width = width or len(fields)
        yield line, fields


def _too_long(fields: Sequence[str]) -> str:
    """Why a record is refused for its size, or ""."""
    longest = max((len(f) for f in fields), default=0)
    return f"a field of {longest} characters (limit {MAX_TEXT_CHARS})" if longest > MAX_TEXT_CHARS else ""


ALL_COLUMNS = (*QUERY_COLUMNS, *TARGET_EXTRA_COLUMNS, *ORIGIN_COLUMNS, "vector", "target_vector")


def _empty_frame() -> pd.DataFrame:
    return _frame([])


def _int_or_none(v: object) -> int | None:
    return None if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)) else int(v)


class _Columns:
    """Query rows gathered column by column (a dict per row costs several times the row's own data)."""

    def __init__(self) -> None:
        self.data: dict[str, list] = {c: [] for c in ALL_COLUMNS}
        self.n = 0

    def add(self, **values: object) -> None:
        for c, column in self.data.items():
            column.append(values.get(c))
        self.n += 1


def _frame(records: "list[dict] | _Columns") -> pd.DataFrame:
    if isinstance(records, _Columns):
        df = pd.DataFrame(records.data)
    else:
        df = pd.DataFrame.from_records(records) if records else pd.DataFrame()
    for col in ALL_COLUMNS:
        if col not in df:
            df[col] = pd.Series([None] * len(df), dtype=object)
    for col in ("target_frame", "target_selected", "source_line"):
        df[col] = pd.array([_int_or_none(v) for v in df[col]], dtype="Int64")
    df["target_time"] = pd.to_numeric(df["target_time"], errors="coerce").astype("float64")
    return df[list(ALL_COLUMNS)].reset_index(drop=True)


def _target_columns(target: TargetName) -> dict:
    """The target columns of a query aimed at a parsed target name."""
    h, m, s, f = target.timecode or (0, 0, 0, 0)
    return {"target_site": target.site, "target_video": target.video, "target_frame": None,
            "target_time": None, "target_selected": target.number,
            "target_timecode": f"{h}:{m:02d}:{s:02d}:{f:02d}" if target.timecode else None}


def parse_timecode(text: str) -> tuple[int, int, int, int]:
    """``"h:mm:ss:ff"`` (as stored in ``target_timecode``) -> (h, m, s, ff)."""
    h, m, s, f = (int(v) for v in text.split(":"))
    return h, m, s, f


def _read_mvk(path: Path, text: str, fmt: str, sep: str, with_vectors: bool) -> tuple[_Columns, list[Issue]]:
    issues: list[Issue] = []
    records = _Columns()
    rows = iter(_rows(text, sep))
    header_line, header = next(rows)
    cols = [c.lower() for c in header]
    pos = {c: cols.index(c) for c in cols[::-1]}        # first occurrence of each column
    # (query_type, text column, vector column) per query a row gives
    kinds = ([("clipcap", "clipcap_text", "clip_clipcap"), ("novice", "novice_text", "clip_text")]
             if fmt == "mvk-novice-clipcap" else [("expert", "text", "clip_text")])
    seen: dict[str, int] = {}
    source, file = f"MVK KIS file ({fmt})", str(path)
    for line, fields in rows:
        if len(fields) != len(cols):
            issues.append(Issue(str(path), line, f"{len(fields)} fields, the header has {len(cols)}"
                                + (" (unquoted separator inside a text?)" if len(fields) > len(cols) else "")))
            continue
        too_long = _too_long(fields)
        if too_long:
            issues.append(Issue(str(path), line, too_long))
            continue
        try:
            target = parse_target_name(fields[pos["img"]])
        except ValueError as exc:
            issues.append(Issue(str(path), line, f"img {fields[pos['img']]!r}: {exc}"))
            continue
        target_vector = None
        if target.timecode is not None and "clip_img" in pos and fields[pos["clip_img"]]:
            try:
                target_vector = parse_vector(fields[pos["clip_img"]])
            except ValueError as exc:
                issues.append(Issue(str(path), line, f"CLIP_img: {exc} (not used to read the time code)",
                                    skipped=False))
        for qtype, text_col, vec_col in kinds:
            qtext = fields[pos[text_col]]
            if not qtext:
                issues.append(Issue(str(path), line, f"empty {text_col} ({qtype} query): kept and ranked as the "
                                                     "query of an empty text, as MVK's code does", skipped=False))
            vector = None
            if with_vectors and vec_col in pos:
                try:
                    vector = parse_vector(fields[pos[vec_col]])
                except ValueError as exc:
                    issues.append(Issue(str(path), line, f"{vec_col} ({qtype} query): {exc}"))
                    continue
            base = f"{qtype}:{target.key}"
            seen[base] = seen.get(base, 0) + 1
            records.add(query_id=base if seen[base] == 1 else f"{base}#{seen[base]}", query_type=qtype,
                        text=qtext, **_target_columns(target), source=source, source_file=file,
                        source_line=line, vector=vector, target_vector=target_vector)
    return records, issues


def _number(text: str, what: str) -> float | None:
    """A number from a CSV field: None when empty; ValueError naming ``what`` when it is none."""
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{what} {text!r} is not a number") from None


def _whole_number(text: str, what: str) -> int | None:
    """A frame index or selected-frame number from a CSV field: None when empty; ValueError unless it is
    a whole number in [0, MAX_FRAME] (``1e30``, ``inf``, ``2.5`` and ``-1`` are refused)."""
    value = _number(text, what)
    if value is not None and not (math.isfinite(value) and value == int(value) and 0 <= value <= MAX_FRAME):
        raise ValueError(f"{what} {text!r} is not a whole number from 0 to {MAX_FRAME}")
    return None if value is None else int(value)


def _seconds(text: str) -> float | None:
    """A target time from a CSV field: None when empty; ValueError unless finite and >= 0."""
    value = _number(text, "target_time")
    if value is not None and not (math.isfinite(value) and value >= 0):
        raise ValueError(f"target_time {text!r} is not a finite number of seconds >= 0")
    return value


def _read_tidy(path: Path, text: str, sep: str, with_vectors: bool) -> tuple[_Columns, list[Issue]]:
    issues: list[Issue] = []
    records = _Columns()
    rows = iter(_rows(text, sep))
    _, header = next(rows)
    cols = [c.lower() for c in header]
    seen: dict[str, int] = {}
    for line, fields in rows:
        if len(fields) != len(cols):
            issues.append(Issue(str(path), line, f"{len(fields)} fields, the header has {len(cols)}"))
            continue
        too_long = _too_long(fields)
        if too_long:
            issues.append(Issue(str(path), line, too_long))
            continue
        row = dict(zip(cols, fields))
        qid = row["query_id"]
        problem = ""
        if not qid:
            problem = "empty query_id"
        elif qid in seen:
            problem = f"duplicate query_id {qid!r} (first on line {seen[qid]})"
        elif not row["text"]:
            problem = f"query {qid!r}: empty text"
        elif not row["query_type"]:
            problem = f"query {qid!r}: empty query_type"
        elif not row["target_site"] or not row["target_video"]:
            problem = f"query {qid!r}: target_site and target_video are required"
        if problem:
            issues.append(Issue(str(path), line, problem))
            continue
        frame_s, time_s = row.get("target_frame", ""), row.get("target_time", "")
        try:
            frame = _whole_number(frame_s, "target_frame")
            selected = _whole_number(row.get("target_selected", ""), "target_selected")
            time = _seconds(time_s)
        except ValueError as exc:
            issues.append(Issue(str(path), line, f"query {qid!r}: {exc}"))
            continue
        if frame is None and time is None and selected is None:
            issues.append(Issue(str(path), line, f"query {qid!r}: neither target_frame nor target_time given"))
            continue
        vector = None
        if with_vectors and row.get("vector"):
            try:
                vector = parse_vector(row["vector"])
            except ValueError as exc:
                issues.append(Issue(str(path), line, f"query {qid!r}: vector: {exc}"))
                continue
        seen[qid] = line
        records.add(query_id=qid, query_type=row["query_type"], text=row["text"], target_site=row["target_site"],
                    target_video=row["target_video"], target_frame=frame, target_time=time,
                    target_selected=selected, source=row.get("source", ""), source_file=str(path),
                    source_line=line, vector=vector)
    return records, issues


def read_queryset(path: str | Path, *, with_vectors: bool = False) -> QuerySet:
    """Read one query-set file, detecting its format from the header. Row problems become issues (the row
    is skipped, the rest kept); a file that is no query set at all raises QuerySetError naming it."""
    path = Path(path)
    text = _read_text(path)
    number, header = _header_line(text)
    if not header:
        raise QuerySetError(f"query set {path}: empty file (no header)")
    found = detect_format(header)
    if found is None:
        raise QuerySetError(_explain_header(path, number, header))
    fmt, sep = found
    issues: list[Issue] = []
    expected_sep = FORMATS[fmt][1]
    if sep != expected_sep:
        issues.append(Issue(str(path), number, f"{fmt} files are {_SEP_NAMES[expected_sep]}-separated, this one "
                                               f"is {_SEP_NAMES[sep]}-separated: read with {_SEP_NAMES[sep]}",
                            skipped=False))
    with _field_limit(MAX_FILE_BYTES):
        if fmt == "tidy":
            records, row_issues = _read_tidy(path, text, sep, with_vectors)
        else:
            records, row_issues = _read_mvk(path, text, fmt, sep, with_vectors)
    issues.extend(row_issues)
    return QuerySet(_frame(records), issues, {str(path): fmt})


def merge(sets: Sequence[QuerySet]) -> QuerySet:
    """Concatenate query sets; a query id already seen in an earlier set is skipped with an issue."""
    frames, issues, formats = [], [], {}
    seen: dict[str, str] = {}
    for qs in sets:
        issues.extend(qs.issues)
        formats.update(qs.formats)
        keep = []
        for i, (qid, file, line) in enumerate(zip(qs.queries["query_id"], qs.queries["source_file"],
                                                  qs.queries["source_line"])):
            if qid in seen:
                issues.append(Issue(str(file), None if pd.isna(line) else int(line),
                                    f"duplicate query_id {qid!r} (already in {seen[qid]})"))
            else:
                seen[qid] = f"{file}:{line}"
                keep.append(i)
        frames.append(qs.queries.iloc[keep])
    queries = pd.concat(frames, ignore_index=True) if frames else _empty_frame()
    return QuerySet(queries, issues, formats)


def read_querysets(paths: Sequence[str | Path], *, with_vectors: bool = False) -> tuple[QuerySet, list[str]]:
    """Read and merge several files. A file that cannot be used at all is reported in the returned list of
    file errors and the others go on."""
    sets, errors = [], []
    for p in paths:
        try:
            sets.append(read_queryset(p, with_vectors=with_vectors))
        except QuerySetError as exc:
            errors.append(str(exc))
    return merge(sets), errors


def make_queries(records: Iterable[dict]) -> pd.DataFrame:
    """A query frame (QUERY_COLUMNS + ORIGIN_COLUMNS + vector) from dicts with at least QUERY_COLUMNS."""
    return _frame([{**r} for r in records])


def write_queryset(queries: pd.DataFrame, path: str | Path, *, with_vectors: bool = False) -> Path:
    """Write the tidy CSV (QUERY_COLUMNS, ``source`` and, if asked and present, ``vector``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = pd.DataFrame({c: queries[c] if c in queries else None for c in QUERY_COLUMNS})
    if "target_selected" in queries and queries["target_selected"].notna().any():
        out["target_selected"] = queries["target_selected"].astype("Int64")
    out["source"] = queries["source"] if "source" in queries else ""
    if with_vectors and "vector" in queries:
        out["vector"] = [format_vector(v) if v is not None else "" for v in queries["vector"]]
    out["target_frame"] = out["target_frame"].astype("Int64")
    tmp = path.with_name(path.name + ".tmp")
    out.to_csv(tmp, index=False, float_format="%.6g")
    tmp.replace(path)
    return path

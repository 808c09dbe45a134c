"""Query sets for the known-item-search benchmark: a tidy CSV model and importers for the MVK KIS files.

Tidy CSV (comma-separated, one query a row; this is what ``mvk captions`` writes)::

    query_id,query_type,text,target_site,target_video,target_frame,target_time[,source][,vector]

``target_frame`` (index of the frame in its video) or ``target_time`` (seconds) names the target;
at least one of them per row. ``source`` says where the text comes from (e.g. the captioning model);
``vector`` is an optional precomputed query vector, ``|``-separated.

MVK KIS files (semicolon-separated, header, vectors ``|``-separated), recognised by their header:

- ``img; CLIP_img; ClipCap_text; CLIP_ClipCap; novice_text; CLIP_text``: one row gives a ``clipcap``
  and a ``novice`` query for the same target (vectors ``CLIP_ClipCap`` and ``CLIP_text``);
- ``img; text; CLIP_text``: ``expert`` queries.

The target is named by the image path's last parts, ``<site>/<video>_<frame>.jpg`` (``/`` or ``\\``);
``<frame>`` is a frame index of the video. Precomputed vectors are parsed only when asked for
(``with_vectors``). Bad rows become :class:`Issue` entries naming file and line and are skipped;
the valid rows of the same file are kept.
"""
from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from search.errors import InputError

QUERY_COLUMNS = ("query_id", "query_type", "text", "target_site", "target_video", "target_frame", "target_time")
OPTIONAL_COLUMNS = ("source", "vector")
# Columns every loaded query set carries besides QUERY_COLUMNS: where each query came from.
ORIGIN_COLUMNS = ("source", "source_file", "source_line")

MVK_NOVICE_CLIPCAP = ("img", "clip_img", "clipcap_text", "clip_clipcap", "novice_text", "clip_text")
MVK_EXPERT = ("img", "text", "clip_text")
TIDY_REQUIRED = ("query_id", "query_type", "text", "target_site", "target_video")

# format name -> (required lower-case columns, the separator files of that format use)
FORMATS: dict[str, tuple[tuple[str, ...], str]] = {
    "mvk-novice-clipcap": (MVK_NOVICE_CLIPCAP, ";"),
    "mvk-expert": (MVK_EXPERT, ";"),
    "tidy": (TIDY_REQUIRED, ","),
}
SEPARATORS = (";", ",", "\t")
_SEP_NAMES = {";": "';'", ",": "','", "\t": "tab"}
_SKIP_DIRS = {"selected_frames", "thumbnails", "keyframes", "frames", "images", "img", "information", ""}


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


@dataclass(frozen=True)
class MvkTarget:
    site: str
    video: str
    frame: int


def parse_mvk_image_path(img: str) -> MvkTarget:
    """``.../<site>/<video>_<frame>.jpg`` -> MvkTarget; also flat ``<site>_<video>_<frame>.jpg`` names
    (VBS style, e.g. ``Tulamben2_Jun2022_0016_00012.jpg``). Raises ValueError when it names no frame."""
    parts = [p for p in re.split(r"[\\/]+", img.strip()) if p]
    if not parts:
        raise ValueError("empty image path")
    stem = parts[-1].rsplit(".", 1)[0] if "." in parts[-1] else parts[-1]
    if "_" not in stem:
        raise ValueError(f"image name {parts[-1]!r} is not <video>_<frame>.jpg")
    video, frame = stem.rsplit("_", 1)
    if not frame.isdigit() or not video:
        raise ValueError(f"image name {parts[-1]!r} is not <video>_<frame>.jpg")
    site = parts[-2] if len(parts) >= 2 else ""
    if site.lower() in _SKIP_DIRS or "_" in video:
        if "_" not in video:
            raise ValueError(f"image path {img!r} names no site folder")
        site, video = video.rsplit("_", 1)
    return MvkTarget(site=site, video=video, frame=int(frame))


def parse_vector(text: str) -> np.ndarray:
    """A ``|``-separated vector (brackets and spaces tolerated) as float32. Raises ValueError."""
    body = text.strip().strip("[]()").strip()
    if not body:
        raise ValueError("empty vector")
    vec = np.array([v for v in body.split("|")], dtype=np.float32)
    if not np.all(np.isfinite(vec)):
        raise ValueError("vector has non-finite values")
    return vec


def format_vector(vec: np.ndarray) -> str:
    return "|".join(f"{v:.6g}" for v in np.asarray(vec, dtype=np.float32))


def _read_text(path: Path) -> str:
    if not path.exists():
        raise QuerySetError(f"query set {path}: no such file")
    if path.is_dir():
        raise QuerySetError(f"query set {path}: is a folder, not a CSV file")
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise QuerySetError(f"query set {path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise QuerySetError(f"query set {path}: cannot read ({exc.strerror})") from None


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


def _rows(text: str, sep: str) -> Iterable[tuple[int, list[str]]]:
    """(line number, stripped fields) per non-empty, non-comment record; handles quoted fields."""
    reader = csv.reader(io.StringIO(text), delimiter=sep, skipinitialspace=True)
    start = 1
    for record in reader:
        line = start
        start = reader.line_num + 1
        if not record or all(not f.strip() for f in record) or record[0].lstrip().startswith("#"):
            continue
        yield line, [f.strip() for f in record]


def _empty_frame() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in (*QUERY_COLUMNS, *ORIGIN_COLUMNS, "vector")})


def _frame(records: list[dict]) -> pd.DataFrame:
    if not records:
        return _empty_frame()
    df = pd.DataFrame.from_records(records)
    for col in (*QUERY_COLUMNS, *ORIGIN_COLUMNS, "vector"):
        if col not in df:
            df[col] = None
    df["target_frame"] = pd.array([None if v is None or (isinstance(v, float) and math.isnan(v)) else int(v)
                                   for v in df["target_frame"]], dtype="Int64")
    df["target_time"] = pd.to_numeric(df["target_time"], errors="coerce").astype("float64")
    df["source_line"] = df["source_line"].astype("Int64")
    return df[[*QUERY_COLUMNS, *ORIGIN_COLUMNS, "vector"]].reset_index(drop=True)


def _read_mvk(path: Path, text: str, fmt: str, sep: str, with_vectors: bool) -> tuple[list[dict], list[Issue]]:
    issues: list[Issue] = []
    records: list[dict] = []
    rows = iter(_rows(text, sep))
    header_line, header = next(rows)
    cols = [c.lower() for c in header]
    pos = {c: cols.index(c) for c in FORMATS[fmt][0]}
    # (query_type, text column, vector column) per query a row gives
    kinds = ([("clipcap", "clipcap_text", "clip_clipcap"), ("novice", "novice_text", "clip_text")]
             if fmt == "mvk-novice-clipcap" else [("expert", "text", "clip_text")])
    seen: dict[str, int] = {}
    for line, fields in rows:
        if len(fields) != len(cols):
            issues.append(Issue(str(path), line, f"{len(fields)} fields, the header has {len(cols)}"
                                + (" (unquoted separator inside a text?)" if len(fields) > len(cols) else "")))
            continue
        try:
            target = parse_mvk_image_path(fields[pos["img"]])
        except ValueError as exc:
            issues.append(Issue(str(path), line, f"img {fields[pos['img']]!r}: {exc}"))
            continue
        for qtype, text_col, vec_col in kinds:
            qtext = fields[pos[text_col]]
            if not qtext:
                issues.append(Issue(str(path), line, f"empty {text_col} ({qtype} query)"))
                continue
            vector = None
            if with_vectors:
                try:
                    vector = parse_vector(fields[pos[vec_col]])
                except ValueError as exc:
                    issues.append(Issue(str(path), line, f"{vec_col} ({qtype} query): {exc}"))
                    continue
            base = f"{qtype}:{target.site}/{target.video}_{target.frame:05d}"
            seen[base] = seen.get(base, 0) + 1
            records.append({
                "query_id": base if seen[base] == 1 else f"{base}#{seen[base]}",
                "query_type": qtype, "text": qtext, "target_site": target.site, "target_video": target.video,
                "target_frame": target.frame, "target_time": None, "source": f"MVK KIS file ({fmt})",
                "source_file": str(path), "source_line": line, "vector": vector,
            })
    return records, issues


def _read_tidy(path: Path, text: str, sep: str, with_vectors: bool) -> tuple[list[dict], list[Issue]]:
    issues: list[Issue] = []
    records: list[dict] = []
    rows = iter(_rows(text, sep))
    _, header = next(rows)
    cols = [c.lower() for c in header]
    seen: dict[str, int] = {}
    for line, fields in rows:
        if len(fields) != len(cols):
            issues.append(Issue(str(path), line, f"{len(fields)} fields, the header has {len(cols)}"))
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
            frame = int(float(frame_s)) if frame_s else None
            time = float(time_s) if time_s else None
            if frame is not None and frame < 0 or time is not None and not (time >= 0 and math.isfinite(time)):
                raise ValueError("negative or non-finite")
        except ValueError:
            issues.append(Issue(str(path), line, f"query {qid!r}: bad target_frame {frame_s!r} / target_time {time_s!r}"))
            continue
        if frame is None and time is None:
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
        records.append({
            "query_id": qid, "query_type": row["query_type"], "text": row["text"],
            "target_site": row["target_site"], "target_video": row["target_video"],
            "target_frame": frame, "target_time": time, "source": row.get("source", ""),
            "source_file": str(path), "source_line": line, "vector": vector,
        })
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
    out["source"] = queries["source"] if "source" in queries else ""
    if with_vectors and "vector" in queries:
        out["vector"] = [format_vector(v) if v is not None else "" for v in queries["vector"]]
    out["target_frame"] = out["target_frame"].astype("Int64")
    tmp = path.with_name(path.name + ".tmp")
    out.to_csv(tmp, index=False, float_format="%.6g")
    tmp.replace(path)
    return path

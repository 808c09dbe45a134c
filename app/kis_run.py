"""The app's side of the KIS benchmark: find query-set files under the allowed folders (the benchmark itself is
``mvk_tools.kis.run_benchmark``, as for `mvk kis`)."""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path

from app.security import resolve_inside

MAX_DEPTH = 4          # folders below a root searched for query sets
MAX_FILES = 200


def _looks_like_queryset(path: Path) -> bool:
    from mvk_tools.querysets import detect_format

    try:
        with path.open(encoding="utf-8-sig", errors="replace") as fh:
            for line in fh:
                if line.strip():
                    return detect_format(line.strip()) is not None
    except OSError:
        return False
    return False


def find_querysets(roots: Sequence[Path]) -> list[str]:
    """CSV files under ``roots`` (a few levels deep, symlinks leading out skipped) whose header is that of a
    query set; absolute paths, sorted."""
    found: set[str] = set()
    for root in roots:
        root = Path(root)
        if not root.is_dir():
            continue
        for depth in range(MAX_DEPTH + 1):
            for path in root.glob("/".join(["*"] * depth + ["*.csv"])):
                if len(found) >= MAX_FILES:
                    break
                try:
                    safe = resolve_inside(path, roots)
                except Exception:
                    continue
                if safe.is_file() and _looks_like_queryset(safe):
                    found.add(str(safe))
    return sorted(found)


def short_name(path: str, roots: Sequence[Path]) -> str:
    """``path`` relative to the root that holds it (for display)."""
    for root in roots:
        try:
            return f"{Path(root).name}/{Path(path).relative_to(Path(root).resolve())}"
        except ValueError:
            continue
    return Path(path).name


def renamed(text: str, names: Mapping[str, str]) -> str:
    """``text`` with every temporary file path in ``names`` replaced by the name the user knows it by."""
    for path, name in names.items():
        text = text.replace(path, name)
    return text


def rename_files(run, names: Mapping[str, str]):
    """A benchmark run whose messages and per-query rows name uploads as uploaded, not by their temporary
    path (``names``: temporary path -> uploaded name)."""
    if not names:
        return run
    per_query = run.per_query.copy()
    if "source_file" in per_query:
        per_query["source_file"] = per_query["source_file"].map(lambda p: names.get(str(p), p))
    issues = [dataclasses.replace(i, path=names.get(str(i.path), i.path), message=renamed(i.message, names))
              for i in run.issues]
    return dataclasses.replace(run, per_query=per_query, issues=issues,
                               query_sets={names.get(k, k): v for k, v in run.query_sets.items()},
                               file_errors=[renamed(e, names) for e in run.file_errors])

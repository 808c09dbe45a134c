"""The app's side of the KIS benchmark: find query-set files under the allowed folders and run
mvk_tools.kis on the opened index with progress reported to the page."""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from app.security import resolve_inside

MAX_DEPTH = 4          # folders below a root searched for query sets
MAX_FILES = 200


@dataclass
class KisRun:
    per_query: pd.DataFrame
    summary: pd.DataFrame
    n_queries: int
    issues: list[str] = field(default_factory=list)     # rows skipped, with file and line
    problems: list[str] = field(default_factory=list)   # whole files that could not be used
    seconds: float = 0.0


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


def run_benchmark(index, encoder, paths: Sequence[str | Path], *, fusions: Sequence[str], weight: float = 0.5,
                  tolerance: float = 0.5, use_file_vectors: bool = False,
                  on_progress: Callable[[int, int], None] | None = None) -> KisRun:
    """Read the query sets, encode (or take the files' vectors), rank every target with
    ``search.query.score_frames``. Bad rows and unusable files are reported, the rest goes on; InputError
    when nothing is left to rank."""
    from mvk_tools import kis
    from mvk_tools.querysets import read_querysets
    from search.errors import InputError
    from search.query import score_frames

    qs, file_errors = read_querysets(list(paths), with_vectors=use_file_vectors)
    issues = [str(i) for i in qs.issues]
    queries = qs.queries
    dim = int(index.shards[next(iter(index.shards))].frame_index.d) if index.shards else 0
    if use_file_vectors and len(queries):
        keep, vec_issues = kis.check_file_vectors(queries, dim)
        issues += [str(i) for i in vec_issues]
        queries = queries[keep].reset_index(drop=True)
    if not len(queries):
        raise InputError("no usable query in the chosen files" + (f": {'; '.join(file_errors)}" if file_errors else ""))
    vectors = kis.query_vectors(queries, dim=dim, encode=None if use_file_vectors else encoder.encode_text,
                                use_file_vectors=use_file_vectors)
    total = len(queries)

    def progress(items: Iterable) -> Iterable:
        for done, item in enumerate(items):
            if on_progress is not None:
                on_progress(done, total)
            yield item
        if on_progress is not None:
            on_progress(total, total)

    per_query = kis.rank_queries(queries, vectors, index.frames,
                                 lambda v, fusion: score_frames(index, np.asarray(v, np.float32), fusion=fusion,
                                                                weight=weight),
                                 fusions=fusions, tolerance=tolerance, skipped_sites=index.errors,
                                 progress=progress)
    return KisRun(per_query=per_query, summary=kis.summarize(per_query), n_queries=total, issues=issues,
                  problems=list(file_errors))

"""What ``mvk check`` says about the indexer's work folder (``.work``): the per-video parts a damaged shard is
rewritten from. Parts are a cache of finished work, so what is found here is a note, not a broken index: a
damaged or missing part only means that video is recomputed by the next ``mvk index``."""
from __future__ import annotations

import json
from pathlib import Path

from search.checksums import file_digest
from search.schema import PART_SUFFIXES, WORK_DIR


def _kind(path: Path) -> str:
    return "folder" if path.is_dir() else "file" if path.is_file() else "special file"


def _record(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _part_problems(folder: Path, done: Path, *, full: bool) -> list[str]:
    key = done.name[: -len(PART_SUFFIXES["done"])]
    record = _record(done)
    if record is None:
        return [f"{done}: unreadable commit record"]
    problems = []
    for role, digest in sorted((record.get("checksums") or {}).items()):
        path = folder / f"{key}{PART_SUFFIXES.get(role, '.' + role)}"
        if not path.is_file():
            problems.append(f"{path}: missing")
        elif full and file_digest(path) != digest:
            problems.append(f"{path}: does not match the checksum in its commit record")
    return problems


def work_notes(root: str | Path, *, full: bool = True) -> list[str]:
    """Notes on ``root/.work``: entries of the wrong kind (the next ``mvk index`` moves them aside), pending
    rebuilds, and parts whose files are missing or do not match their commit record's checksums (``full``:
    checksums, else presence only)."""
    work = Path(root) / WORK_DIR
    if not work.exists():
        return []
    if not work.is_dir():
        return [f"{work}: a {_kind(work)} where the work folder belongs (the next mvk index moves it aside)"]
    notes, damaged = [], []
    for folder in sorted(work.iterdir()):
        if not folder.is_dir():
            notes.append(f"{folder}: a {_kind(folder)} where a site's work folder belongs (the next mvk index "
                         f"moves it aside)")
            continue
        for name in ("lock", "pending.json"):
            entry = folder / name
            if entry.exists() and not entry.is_file():
                notes.append(f"{entry}: a {_kind(entry)} where a file belongs (the next mvk index moves it aside)")
        if (folder / "pending.json").is_file():
            notes.append(f"{folder}: a rebuild of this site is unfinished (the next mvk index finishes it)")
        for done in sorted(folder.glob(f"*{PART_SUFFIXES['done']}")):
            damaged += _part_problems(folder, done, full=full)
    if damaged:
        notes.append(f"{len(damaged)} damaged work part file(s) (those videos are recomputed by the next mvk "
                     f"index; the shards do not depend on them): " + "; ".join(damaged[:5])
                     + (" ..." if len(damaged) > 5 else ""))
    return notes

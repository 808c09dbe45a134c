"""Bringing an index folder back to a clean state after crashes: the root manifest rewritten, interrupted
swaps finished, old-layout shards migrated into versions, and what crashed writes left removed."""
from __future__ import annotations

import os
import re
import shutil
import time
import uuid
from pathlib import Path

from search import schema, shard_layout
from search.checksums import file_record
from search.errors import IndexFormatError
from search.manifest import (
    index_settings,
    is_legacy,
    load_root_manifest,
    locked_root,
    read_json,
    site_folders,
    write_json_atomic,
    write_root,
)
from search.opener import read_shard
from search.schema import DATA_FILES, ROOT_MANIFEST
from search.writer import drop_loose_files, fsync_files

LEGACY_STRAY = re.compile(r"\.(old|tmp)-(.+)-[0-9a-f]{12}")
ROOT_TMP = re.compile(r"\.manifest\.json\.[0-9a-f]{32}\.tmp")   # write_json_atomic's temp of the root manifest
ASIDE = "set-aside"          # entries of the wrong kind are moved here, never deleted: they may be the user's


def entry_kind(path: Path) -> str | None:
    """``"folder"``, ``"file"`` or another kind (``"named pipe (FIFO)"``...) of what ``path`` is; None when
    nothing is there (a dangling link counts as nothing: it is replaced like a missing entry)."""
    import stat
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if stat.S_ISDIR(mode):
        return "folder"
    return "file" if stat.S_ISREG(mode) else "special file"


def set_aside(root: Path, path: Path, found: str, wanted: str) -> str:
    """Move ``path`` (a ``found`` where a ``wanted`` belongs) into ``root/set-aside/`` and say so: the next
    writer then makes the right kind of entry. Nothing is deleted."""
    folder = root / ASIDE
    folder.mkdir(exist_ok=True)
    name = path.relative_to(root).as_posix().replace("/", "__")
    dest = folder / f"{name}.{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
    os.rename(path, dest)
    return f"{path} was a {found} where a {wanted} belongs: moved aside to {dest} (nothing deleted) and rebuilt"


def wrong_kinds(root: Path) -> list[tuple[Path, str, str]]:
    """(path, what it is, what belongs there) of every index entry of the wrong kind: the root manifest,
    ``.lock`` or a site's ``CURRENT``/``.lock`` that is a folder, ``sites`` or a site that is a file."""
    expected = [(root / ROOT_MANIFEST, "file"), (root / ".lock", "file"), (root / "sites", "folder")]
    sites = root / "sites"
    if entry_kind(sites) == "folder":
        for entry in sorted(sites.iterdir()):
            if entry.name.startswith(".") or entry.is_symlink():
                continue
            expected.append((entry, "folder"))
            if entry_kind(entry) == "folder":
                expected += [(entry / shard_layout.POINTER, "file"), (entry / shard_layout.LOCK, "file")]
    found = [(path, entry_kind(path), wanted) for path, wanted in expected]
    return [(path, kind, wanted) for path, kind, wanted in found if kind is not None and kind != wanted]


def needs_recovery(root: Path) -> bool:
    """Whether ``recover`` has something to set aside or remove (so a run cannot skip it as up to date)."""
    root = Path(root)
    return root.is_dir() and (bool(wrong_kinds(root)) or any(ROOT_TMP.fullmatch(p.name) for p in root.iterdir()))


def set_aside_wrong_kinds(root: Path) -> list[str]:
    """Move every entry of the wrong kind aside (``wrong_kinds``); notes naming each."""
    return [set_aside(root, path, kind, wanted) for path, kind, wanted in wrong_kinds(root)]


def _stale_root_temps(root: Path) -> list[str]:
    """Remove the root manifest's temp files left by runs killed while writing it (caller holds the root
    lock, which every writer of the root manifest holds too)."""
    removed = []
    for entry in root.iterdir():
        if ROOT_TMP.fullmatch(entry.name) and entry.is_file():
            entry.unlink(missing_ok=True)
            removed.append(entry.name)
    return [f"removed {len(removed)} temp file(s) of the root manifest left by interrupted runs"] if removed else []



def link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)



def _migrate(root_manifest: dict | None, site_dir: Path) -> str:
    """Move a shard of the layout before versions into a version folder, with checksums of its files as
    they are (after checking their sizes and that they read back). Caller holds the site lock."""
    site = site_dir.name
    try:
        read_shard(site_dir, site)
    except IndexFormatError as exc:
        return f"site {site}: its shard (old layout) is broken and was left for mvk index to rewrite: {exc}"
    manifest = read_json(site_dir / "manifest.json")
    tmp = shard_layout.begin(site_dir)
    try:
        for name in DATA_FILES:
            link_or_copy(site_dir / name, tmp / name)
        manifest["files"] = {name: file_record(tmp / name) for name in DATA_FILES}
        if root_manifest is not None:
            manifest.setdefault("index", index_settings(root_manifest))
        manifest["migrated"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        write_json_atomic(tmp / "manifest.json", manifest)
        fsync_files(tmp)
        shard_layout.publish(site_dir, tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    drop_loose_files(site_dir)
    return f"site {site}: migrated to the versioned layout (checksums recorded of its files as they were)"



def _legacy_strays(sites_dir: Path) -> list[str]:
    """Finish or drop what a writer of the layout before versions left mid-swap (``.old-<site>-<12 hex>``,
    ``.tmp-<site>-<12 hex>``); the site name is matched exactly."""
    notes = []
    for entry in sorted(sites_dir.iterdir()):
        m = LEGACY_STRAY.fullmatch(entry.name)
        if m is None or not entry.is_dir():
            continue
        final = sites_dir / m.group(2)
        if m.group(1) == "old" and not final.exists():
            os.rename(entry, final)
            notes.append(f"site {final.name}: restored from a swap that was interrupted")
        else:
            shutil.rmtree(entry, ignore_errors=True)
    return notes



def recover(root: str | Path) -> list[str]:
    """Bring an index folder to a clean state; returns notes on what was done. Rewrites a missing or broken
    root manifest from the shard manifests, finishes swaps interrupted under the old layout, migrates
    shards of the old layout, and removes what crashed writes left (``.tmp-`` entries, versions never
    published, versions retired more than ``GRACE_SECONDS`` ago). Run by every ``mvk index``."""
    root = Path(root)
    if not root.is_dir():
        return []
    notes: list[str] = set_aside_wrong_kinds(root)
    with locked_root(root):
        notes += _stale_root_temps(root)
        sites_dir = root / "sites"
        if sites_dir.is_dir():
            notes += _legacy_strays(sites_dir)
        disk, why = load_root_manifest(root)
        if disk is not None and why:
            write_root(root, disk)
            notes += [f"{n}; written back" for n in why]
        else:
            notes += why
        for site in site_folders(root):
            site_dir = sites_dir / site
            with shard_layout.locked(site_dir, wait=False) as mine:
                if not mine:
                    continue                       # its writer cleans up after itself
                if is_legacy(site_dir):
                    notes.append(_migrate(disk, site_dir))
                shard_layout.collect(site_dir, schema.GRACE_SECONDS)
    return notes

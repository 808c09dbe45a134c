"""The index's manifests: the root ``manifest.json`` (its own pointer, with a checksum of its content) and
each shard version's manifest (checked against the site's ``CURRENT`` pointer); reading, atomic writing,
rebuilding the root from the shard manifests, locating a site's current version, and the one compatibility
check of a run or a query encoder against what the index records."""
from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from search import shard_layout
from search.checksums import ALGORITHM, bytes_digest, json_digest
from search.errors import IndexFormatError, ModelMismatchError
from search.identity import check_space
from search.schema import FORMAT_VERSION, ROOT_MANIFEST, check_site_name
from search.shard import Index


def parse_json(raw: bytes, path: Path) -> dict:
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise IndexFormatError(f"{path} is not readable JSON: {exc}") from None
    if not isinstance(data, dict):
        raise IndexFormatError(f"{path} does not hold a JSON object")
    return data



def read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise IndexFormatError(f"{path} is missing") from None
    except OSError as exc:
        raise IndexFormatError(f"{path} cannot be read: {exc}") from exc



def read_json(path: Path) -> dict:
    return parse_json(read_bytes(path), path)



def write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "w") as fh:
        json.dump(data, fh, indent=2, sort_keys=True, default=str)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)



@contextlib.contextmanager
def locked_root(root: Path):
    """An advisory lock on the root manifest (a no-op where fcntl does not exist)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(root / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)



def _root_body(data: dict) -> dict:
    """The root manifest without its checksum, as it reads back from JSON."""
    return json.loads(json.dumps({k: v for k, v in data.items() if k != "checksum"}, default=str))



def write_root(root: Path, data: dict) -> None:
    """Replace the root manifest atomically, with a checksum of its content."""
    body = _root_body(data)
    write_json_atomic(root / ROOT_MANIFEST, {**body, "checksum": json_digest(body)})



def read_root(root: Path) -> dict:
    """The root manifest; IndexFormatError when it is missing, unreadable or does not match its checksum."""
    path = root / ROOT_MANIFEST
    data = read_json(path)
    if "checksum" in data and json_digest(_root_body(data)) != data["checksum"]:
        raise IndexFormatError(f"{path} does not match its checksum (corrupt or edited)")
    return data



def index_settings(root_manifest: dict) -> dict:
    """What every shard manifest keeps of the root manifest, so the root can be rebuilt from any shard."""
    return {k: v for k, v in root_manifest.items() if k not in ("shards", "checksum")}



def shard_entry(manifest: dict) -> dict:
    counts = manifest.get("counts") or {}
    return {"frames": int(counts.get("frames", manifest.get("frames", 0)) or 0),
            "objects": int(counts.get("objects", manifest.get("objects", 0)) or 0),
            "index_type": manifest.get("index_type", "flat"), "written": manifest.get("written")}



def rebuild_root(root: Path) -> tuple[dict | None, dict[str, dict]]:
    """A root manifest made from the readable shard manifests (the settings of the newest shard), or None
    when no shard records the settings; and the shard entries found."""
    shards: dict[str, dict] = {}
    settings, newest = None, ""
    for site in site_folders(root):
        manifest = shard_manifest(root, site)
        if manifest is None:
            continue
        shards[site] = shard_entry(manifest)
        written = str(manifest.get("written") or "")
        if isinstance(manifest.get("index"), dict) and (settings is None or written >= newest):
            settings, newest = manifest["index"], written
    return ({**settings, "shards": shards} if settings is not None else None), shards



def load_root_manifest(root: str | Path) -> tuple[dict | None, list[str]]:
    """The root manifest and notes. When it is missing, unreadable or fails its checksum while shards exist,
    it is rebuilt in memory from the shard manifests (a note says so; ``recover`` writes it back). None
    (and no note) for a folder that is no index; None with a note when nothing can rebuild it."""
    root = Path(root)
    try:
        return read_root(root), []
    except IndexFormatError as exc:
        why = str(exc)
    rebuilt, shards = rebuild_root(root)
    if rebuilt is None:
        if not (root / ROOT_MANIFEST).exists() and not shards:
            return None, []
        return None, [f"{why}, and no shard manifest records the index's settings to rebuild it from"]
    return rebuilt, [f"{why}: rebuilt from the manifests of {len(shards)} shard(s) ({', '.join(shards)})"]



def differences(have: dict, want: dict, keys: Iterable[str] | None = None) -> list[tuple[str, Any, Any]]:
    """``(key, recorded, asked)`` for every key whose values differ (``keys``: only these; default: all keys
    of either side), compared as they read back from JSON (so a tuple equals the list it was written as)."""
    have = json.loads(json.dumps(have, default=str))
    want = json.loads(json.dumps(want, default=str))
    names = sorted(set(have) | set(want)) if keys is None else list(keys)
    return [(k, have.get(k), want.get(k)) for k in names if have.get(k) != want.get(k)]


def _shown(value: Any) -> str:
    if isinstance(value, dict) and "variant" in value and "size" in value:   # dense pooling features
        return f"{value.get('variant')} features at {value.get('size')} px"
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def mismatch_message(root: str | Path, diffs: list[tuple[str, Any, Any]], names: dict[str, str] | None = None,
                     *, what: str = "leave these flags out to use the index's own, or index into a new --index "
                                    "folder") -> str:
    """The one message of every "does this match the index" check: ``index R was built with other settings
    (key: index has X, you asked Y; ...): what to do`` (``names``: how to call a key, e.g. its flag)."""
    names = names or {}
    parts = "; ".join(f"{names.get(key, key)}: index has {_shown(have)}, you asked {_shown(want)}"
                      for key, have, want in diffs)
    return f"index {root} was built with other settings ({parts}): {what}"


def check_compatible(disk: dict, asked: dict, root: str | Path) -> None:
    """The compatibility check of a run against an index's root manifest: the encoder's embedding space, its
    frame fit and the segmentation parameters (ModelMismatchError naming what differs)."""
    have_enc, want_enc = disk.get("encoder"), asked.get("encoder")
    diffs = []
    if have_enc and want_enc:
        check_space(have_enc, want_enc, root)
        diffs += [("frame fit", have, want) for _, have, want in differences(have_enc, want_enc, ["fit"])]
    if isinstance(asked.get("segmentation"), dict) and isinstance(disk.get("segmentation"), dict):
        # a key the index does not record was no setting when it was built (its behaviour then is the default)
        recorded = disk["segmentation"]
        diffs += [("segmentation", recorded, asked["segmentation"]) for _ in differences(
            recorded, {k: v for k, v in asked["segmentation"].items() if k in recorded})[:1]]
    elif asked.get("segmentation") is not None and disk.get("segmentation") is not None:
        diffs += differences(disk, asked, ["segmentation"])
    if diffs:
        raise ModelMismatchError(mismatch_message(root, diffs, what="use the same settings or another index "
                                                                    "folder"))


def check_encoder(index: "Index", identity: dict) -> None:
    """ModelMismatchError when the encoder ``identity`` does not share the index's embedding space."""
    check_space((index.manifest or {}).get("encoder") or {}, identity, index.root)


def init_index(root: str | Path, manifest: dict) -> dict:
    """Create ``root/manifest.json`` or check that the existing one has the same encoder identity and
    segmentation parameters (ModelMismatchError naming both otherwise). Returns the manifest on disk. A
    broken root manifest is rebuilt from the shard manifests first (see ``recover`` for the notes)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / "sites").mkdir(exist_ok=True)
    with locked_root(root):
        path = root / ROOT_MANIFEST
        disk, notes = load_root_manifest(root)
        if disk is not None and notes:
            write_root(root, disk)
        if disk is not None:
            if disk.get("format") != FORMAT_VERSION:
                raise IndexFormatError(f"{path} has format {disk.get('format')!r}; this version reads "
                                       f"format {FORMAT_VERSION}: rebuild the index")
            check_compatible(disk, manifest, root)
            return disk
        data = dict(manifest)
        data["format"] = FORMAT_VERSION
        data["shards"] = {**rebuild_root(root)[1], **data.get("shards", {})}
        data.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%S"))
        write_root(root, data)
        return read_root(root)



def site_folders(root: Path) -> list[str]:
    sites_dir = root / "sites"
    if not sites_dir.is_dir():
        return []
    return sorted(p.name for p in sites_dir.iterdir() if p.is_dir() and not p.name.startswith("."))



def is_legacy(site_dir: Path) -> bool:
    return not (site_dir / shard_layout.POINTER).exists() and (site_dir / "manifest.json").is_file()



def resolve(root: Path, site: str) -> tuple[Path, dict | None]:
    """The folder of ``site``'s current version and the record of its manifest (None for a shard of the old
    layout, whose folder is the site folder). Exact name only; IndexFormatError when there is none."""
    check_site_name(site)
    site_dir = root / "sites" / site
    pointer = shard_layout.read_pointer(site_dir)
    if pointer is not None:
        return site_dir / pointer.version, pointer.manifest
    if is_legacy(site_dir):
        return site_dir, None
    if site_dir.is_dir():
        raise IndexFormatError(f"shard of site {site!r} is missing: {site_dir} has no {shard_layout.POINTER}")
    raise IndexFormatError(f"shard folder {site_dir} is missing")



def shard_folder(root: str | Path, site: str) -> Path:
    """The folder of ``site``'s current shard version (IndexFormatError when the site has none)."""
    return resolve(Path(root), site)[0]



def shard_manifest(root: str | Path, site: str) -> dict | None:
    """The manifest of ``site``'s current shard, checked against its pointer; None when missing or broken."""
    try:
        folder, record = resolve(Path(root), site)
        return read_shard_manifest(folder, record)
    except IndexFormatError:
        return None



def read_shard_manifest(folder: Path, record: dict | None) -> dict:
    path = folder / "manifest.json"
    raw = read_bytes(path)
    if record is not None and (len(raw) != record.get("size") or bytes_digest(raw) != record.get(ALGORITHM)):
        raise IndexFormatError(f"{path} does not match the checksum in {shard_layout.POINTER} (corrupt or edited)")
    manifest = parse_json(raw, path)
    if manifest.get("format") != FORMAT_VERSION:
        raise IndexFormatError(f"{path} has format {manifest.get('format')!r}, expected {FORMAT_VERSION}")
    return manifest



def read_manifest(root: str | Path) -> dict:
    """The root manifest of an index folder, rebuilt from the shards when broken (IndexFormatError when the
    folder is no index or nothing can rebuild it)."""
    root = Path(root)
    manifest, notes = load_root_manifest(root)
    if manifest is None:
        raise IndexFormatError(notes[0] if notes else
                               f"{root} is not an index: it has no manifest.json (build one with mvk index)")
    return manifest



def list_sites(root: str | Path, manifest: dict | None = None) -> list[str]:
    """Sites named by the root manifest or present as shard folders (exact names), sorted."""
    root = Path(root)
    if manifest is None:
        manifest = load_root_manifest(root)[0] or {}
    return sorted(set(manifest.get("shards", {})) | set(site_folders(root)))

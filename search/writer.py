"""Writing a site's shard as a new version and publishing it atomically; removing a shard."""
from __future__ import annotations

import os
import shutil
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from search import schema, shard_layout
from search.checksums import file_record
from search.errors import IndexFormatError, InputError
from search.rowgroups import group_digests
from search.manifest import index_settings, load_root_manifest, locked_root, shard_entry, write_json_atomic, write_root
from search.schema import (
    DATA_FILES,
    FORMAT_VERSION,
    FRAME_COLUMNS,
    LAZY_COLUMNS,
    OBJECT_COLUMNS,
    OPTIONAL_FRAME_COLUMNS,
    ROW_GROUP_ROWS,
    SHARD_FILES,
    IndexType,
    check_site_name,
)

if TYPE_CHECKING:
    from search.spaces import Space


def _normalise(vectors: np.ndarray, n: int, what: str, dim: int | None) -> np.ndarray:
    x = np.asarray(vectors, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] != n:
        raise InputError(f"{what}: {n} rows but vectors of shape {x.shape}")
    if dim is not None and x.shape[0] and x.shape[1] != dim:
        raise InputError(f"{what}: vectors of dimension {x.shape[1]}, the index's encoder has {dim}")
    if not np.isfinite(x).all():
        raise InputError(f"{what}: vectors hold NaN or infinite values")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.maximum(norms, 1e-12))



def _write_table(df: pd.DataFrame, path: Path, row_group_rows: int) -> None:
    df.to_parquet(path, index=False, row_group_size=row_group_rows)



def _write_faiss(index: Any, path: Path) -> None:
    import faiss
    faiss.write_index(index, str(path))



def fsync_files(folder: Path, names: tuple[str, ...] | list[str] = SHARD_FILES) -> None:
    for name in names:
        with open(folder / name, "rb") as fh:
            os.fsync(fh.fileno())


def record_shard(root: Path, site: str, shard_manifest: dict, root_manifest: dict) -> None:
    """Enter a newly published shard version in the root manifest (its counts, type and time)."""
    with locked_root(root):
        disk, _ = load_root_manifest(root)
        disk = disk if disk is not None else dict(root_manifest)
        disk.setdefault("shards", {})[site] = shard_entry(shard_manifest)
        write_root(root, disk)



def drop_loose_files(site_dir: Path) -> None:
    """Remove a shard of the layout before versions (files directly in the site folder)."""
    for name in SHARD_FILES:
        (site_dir / name).unlink(missing_ok=True)



def write_shard(root: str | Path, site: str, frames: pd.DataFrame, frame_vectors: np.ndarray,
                objects: pd.DataFrame, object_vectors: np.ndarray, manifest: dict, *,
                index_type: IndexType = "flat", nlist: int | None = None, nprobe: int | None = None,
                hnsw_m: int | None = None) -> Path:
    """Write one site's shard as a new version, publish it atomically and add it to the root manifest;
    returns the version folder. Objects are stored sorted by ``frame_row`` (their vectors with them).
    ``index_type`` applies to both tables; a table too small to train an IVF index is stored flat and the
    shard manifest notes it. Versions superseded more than ``GRACE_SECONDS`` ago are removed."""
    from search import faiss_index
    root = Path(root)
    check_site_name(site)
    root_manifest, _ = load_root_manifest(root)
    if root_manifest is None:
        raise IndexFormatError(f"no index at {root}: create it with init_index first")
    dim = (root_manifest.get("encoder") or {}).get("dim")
    missing = [c for c in FRAME_COLUMNS if c not in frames.columns]
    if missing:
        raise InputError(f"frame rows of site {site!r} lack columns {missing}")
    missing = [c for c in OBJECT_COLUMNS if c not in objects.columns]
    if missing:
        raise InputError(f"object rows of site {site!r} lack columns {missing}")
    fvec = _normalise(frame_vectors, len(frames), f"frames of site {site!r}", dim)
    ovec = _normalise(object_vectors, len(objects), f"objects of site {site!r}", dim)
    extra = [c for c in OPTIONAL_FRAME_COLUMNS if c in frames.columns]
    frames = frames.loc[:, [*FRAME_COLUMNS, *extra]].reset_index(drop=True)
    for c in extra:
        default = OPTIONAL_FRAME_COLUMNS[c]
        frames[c] = frames[c].where(frames[c].notna(), default).astype(type(default))
    objects = objects.loc[:, list(OBJECT_COLUMNS)].reset_index(drop=True)
    rows = objects["frame_row"].to_numpy(dtype=np.int64)
    if len(rows) and (rows.min() < 0 or rows.max() >= len(frames)):
        raise InputError(f"objects of site {site!r} point at frame rows outside 0..{len(frames) - 1}")
    order = np.argsort(rows, kind="stable")
    objects = objects.iloc[order].reset_index(drop=True)
    ovec = ovec[order]
    if len(frames) and (frames["site"].astype(str) != site).any():
        raise InputError(f"frame rows given for site {site!r} name other sites: "
                         f"{sorted(set(frames['site'].astype(str)) - {site})[:5]}")

    kw: dict = {"nlist": nlist, "nprobe": nprobe}
    if hnsw_m is not None:
        kw["hnsw_m"] = hnsw_m
    built_f = faiss_index.build(fvec, index_type, **kw)
    built_o = faiss_index.build(ovec, index_type, **kw)

    site_dir = root / "sites" / site
    with shard_layout.locked(site_dir):
        shard_layout.collect(site_dir, schema.GRACE_SECONDS)
        tmp = shard_layout.begin(site_dir)
        try:
            _write_table(frames, tmp / "frames.parquet", ROW_GROUP_ROWS["frames"])
            _write_table(objects, tmp / "objects.parquet", ROW_GROUP_ROWS["objects"])
            _write_faiss(built_f.index, tmp / "frames.faiss")
            _write_faiss(built_o.index, tmp / "objects.faiss")
            shard_manifest = dict(manifest)
            shard_manifest.update({
                "format": FORMAT_VERSION, "site": site, "index_type": index_type,
                "tables": {"frames": {"type": built_f.index_type, "params": built_f.params},
                           "objects": {"type": built_o.index_type, "params": built_o.params}},
                "notes": [*manifest.get("notes", []), *built_f.notes, *[f"objects: {n}" for n in built_o.notes]],
                "counts": {"frames": len(frames), "objects": len(objects)},
                "dim": int(fvec.shape[1]) if len(fvec) else dim,
                "written": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "files": {name: file_record(tmp / name) for name in DATA_FILES},
                "row_groups": {"frames.parquet": group_digests(tmp / "frames.parquet", LAZY_COLUMNS["frames"])},
                "index": index_settings(root_manifest),
            })
            write_json_atomic(tmp / "manifest.json", shard_manifest)
            fsync_files(tmp)
            final = shard_layout.publish(site_dir, tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        drop_loose_files(site_dir)
        shard_layout.collect(site_dir, schema.GRACE_SECONDS)
    record_shard(root, site, shard_manifest, root_manifest)
    return final



def remove_shard(root: str | Path, site: str) -> None:
    """Delete one site's shard and its entry in the root manifest."""
    root = Path(root)
    check_site_name(site)
    site_dir = root / "sites" / site
    if site_dir.exists():
        with shard_layout.locked(site_dir):
            (site_dir / shard_layout.POINTER).unlink(missing_ok=True)
            trash = root / "sites" / f".tmp-{site}-{uuid.uuid4().hex[:12]}"
            os.rename(site_dir, trash)
        shutil.rmtree(trash, ignore_errors=True)
    with locked_root(root):
        disk, _ = load_root_manifest(root)
        if disk is not None:
            disk.get("shards", {}).pop(site, None)
            write_root(root, disk)


def write_spaces(root: str | Path, site: str, vectors: dict[str, tuple[np.ndarray, np.ndarray]], *,
                 based_on: str) -> Path:
    """A new version of ``site``'s shard with the frame and object tables of further embedding spaces
    (``vectors``: space name -> (frame vectors, object vectors), rows in the shard's order) beside every file of
    version ``based_on``, which are linked, not rewritten (the other spaces' vectors stay byte-identical); published
    atomically. IndexFormatError when the site's current version is no longer ``based_on`` (the caller redoes
    its work against the new one) or a space is not in the root manifest."""
    from search import faiss_index
    from search.manifest import read_shard_manifest, resolve
    from search.recovery import link_or_copy
    from search.spaces import spaces_of
    root = Path(root)
    root_manifest, _ = load_root_manifest(root)
    if root_manifest is None:
        raise IndexFormatError(f"no index at {root}: create it with init_index first")
    known = {s.name: s for s in spaces_of(root_manifest) if not s.primary}
    site_dir = root / "sites" / site
    with shard_layout.locked(site_dir):
        folder, record = resolve(root, site)
        if folder.name != based_on:
            raise IndexFormatError(f"the shard of site {site!r} changed while its spaces were embedded "
                                   f"({based_on} -> {folder.name})")
        manifest = read_shard_manifest(folder, record)
        counts = manifest.get("counts") or {}
        spaces = dict(manifest.get("spaces") or {})
        built = {}
        for name, (fv, ov) in vectors.items():
            if name not in known:
                raise IndexFormatError(f"space {name!r} is not recorded in {root / 'manifest.json'}")
            space = known[name]
            fvec = _normalise(fv, int(counts.get("frames", 0)), f"frames of site {site!r} in space {name}", space.dim)
            ovec = _normalise(ov, int(counts.get("objects", 0)), f"objects of site {site!r} in space {name}",
                              space.dim)
            index_type = manifest.get("index_type", "flat")
            built[name] = (faiss_index.build(fvec, index_type), faiss_index.build(ovec, index_type))
        shard_layout.collect(site_dir, schema.GRACE_SECONDS)
        tmp = shard_layout.begin(site_dir)
        try:
            files = dict(manifest.get("files") or {})
            for name in files:
                link_or_copy(folder / name, tmp / name)
            notes = list(manifest.get("notes", []))
            for name, (bf, bo) in built.items():
                space = known[name]
                for file, b in zip(space.files, (bf, bo)):
                    _write_faiss(b.index, tmp / file)
                    files[file] = file_record(tmp / file)
                notes += [f"{name}: {n}" for n in (*bf.notes, *bo.notes)]
                spaces[name] = {"frames": space.files[0], "objects": space.files[1], "dim": space.dim,
                                "encoder": space.encoder, "objects_mode": space.objects,
                                "tables": {"frames": {"type": bf.index_type, "params": bf.params},
                                           "objects": {"type": bo.index_type, "params": bo.params}}}
            shard_manifest = {**manifest, "spaces": spaces, "files": files, "notes": notes,
                              "written": time.strftime("%Y-%m-%dT%H:%M:%S"), "index": index_settings(root_manifest)}
            write_json_atomic(tmp / "manifest.json", shard_manifest)
            fsync_files(tmp, ["manifest.json", *files])
            final = shard_layout.publish(site_dir, tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        shard_layout.collect(site_dir, schema.GRACE_SECONDS)
    record_shard(root, site, shard_manifest, root_manifest)
    return final


def add_space(root: str | Path, space: "Space") -> dict:
    """Record the further embedding space ``space`` in the root manifest (refused by name when the index holds
    another version of that model: ``search.spaces.check_new``); returns the root manifest. Its vectors are
    written per shard by ``write_spaces``."""
    from search.spaces import check_new
    root = Path(root)
    with locked_root(root):
        disk, _ = load_root_manifest(root)
        if disk is None:
            raise IndexFormatError(f"no index at {root}: create it with init_index first")
        if check_new(disk, space.encoder, root) is None:
            disk["spaces"] = [*(disk.get("spaces") or []), space.record()]
            write_root(root, disk)
        return disk

"""The on-disk index: one shard per dive site, FAISS + parquet + manifests.

index/
  manifest.json            format, encoder identity, segmentation parameters, versions, shard list
  sites/<site>/
    manifest.json          counts, source files (size, mtime), per-video errors, index type
    frames.parquet         FRAME_COLUMNS, row i <-> vector i of frames.faiss
    objects.parquet        OBJECT_COLUMNS, row j <-> vector j of objects.faiss
    frames.faiss, objects.faiss

A shard is written to a temporary folder beside its final place and swapped in with renames, so
readers never see a half-written shard and a failed write leaves the old shard in place.

The swap is two renames (old -> ``.old-<site>-*``, new -> ``<site>``); a reader that lands between
them serves the ``.old`` folder, and the next writer of that site restores it if a crash left it
there. Vectors are L2-normalised and stored float16 (see ``search.faiss_index``). The shard manifest
records every file's size, so a truncated file is caught at open. The root manifest is updated under
an advisory lock (``root/.lock``), so writers of different sites may run side by side.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from search.errors import IndexFormatError, InputError, ModelMismatchError

FORMAT_VERSION = 1

FRAME_COLUMNS = (
    "site", "video_id", "video_path",   # video_path relative to the collection root
    "frame_index", "time",              # index in the source video, seconds
    "width", "height",                  # source frame size
    "place", "date",                    # from the site name; date "YYYY-MM" or ""
    "thumbnail",                        # JPEG bytes, longest side ~256 px
)
OBJECT_COLUMNS = (
    "frame_row",                        # row of the frame in this shard's frames table
    "track_id",                         # object id, stable across the frames of one video
    "level",                            # hierarchy level the object comes from (0 = finest)
    "x0", "y0", "x1", "y1",             # box in source-frame pixels, x1/y1 exclusive
    "area",                             # fraction of the frame covered by the mask
    "is_background",                    # the likely background cluster
    "mask_rle",                         # search.rle string of the mask at a reduced resolution
)

IndexType = Literal["flat", "ivf-flat", "ivf-pq", "hnsw"]

SHARD_FILES = ("manifest.json", "frames.parquet", "objects.parquet", "frames.faiss", "objects.faiss")


@dataclass
class Shard:
    site: str
    path: Path
    manifest: dict
    frames: pd.DataFrame
    objects: pd.DataFrame
    frame_index: "object"    # faiss.Index
    object_index: "object"   # faiss.Index
    cpu_frame_index: "object" = None    # the CPU copy (the GPU copy cannot reconstruct vectors)
    cpu_object_index: "object" = None
    _vectors: dict = field(default_factory=dict, repr=False)

    @property
    def index_type(self) -> str:
        return str(self.manifest.get("index_type", "flat"))

    def vectors(self, table: Literal["frames", "objects"]) -> np.ndarray:
        """The stored (n, d) float16 vectors of one table, decoded once and kept."""
        from search.faiss_index import reconstruct_all
        if table not in self._vectors:
            idx = self.cpu_frame_index if table == "frames" else self.cpu_object_index
            self._vectors[table] = reconstruct_all(idx)
        return self._vectors[table]

    def vectors32(self, table: Literal["frames", "objects"]) -> np.ndarray:
        """The stored vectors of one table as (n, d) float32, converted once and kept (twice the memory of
        float16): exact scoring multiplies them for every query, and converting float16 on each call cost
        more than the matmul itself (numpy and torch have no fast float16 matmul on a CPU)."""
        from search.faiss_index import reconstruct_all
        key = f"{table}:float32"
        if key not in self._vectors:
            if table in self._vectors:
                half = self._vectors[table]
            else:
                half = reconstruct_all(self.cpu_frame_index if table == "frames" else self.cpu_object_index)
            self._vectors[key] = np.ascontiguousarray(half, dtype=np.float32)
        return self._vectors[key]


@dataclass
class Index:
    """All readable shards of an index folder. ``frames``/``objects`` concatenate the shards: column
    ``gid`` is the global frame row (0..N-1, the order of ``score_frames``), objects carry ``frame_gid``."""
    root: Path
    manifest: dict
    shards: dict[str, Shard]
    frames: pd.DataFrame
    objects: pd.DataFrame
    errors: dict[str, str] = field(default_factory=dict)   # site -> why its shard was skipped
    notes: list[str] = field(default_factory=list)
    device: str = "cpu"

    @property
    def encoder(self) -> dict:
        """The encoder identity recorded at build time."""
        return dict(self.manifest.get("encoder") or {})

    def frame_offset(self, site: str) -> int:
        """Global row (gid) of the first frame of ``site``'s shard."""
        return self._offsets()[site][0]

    def object_offset(self, site: str) -> int:
        return self._offsets()[site][1]

    def _offsets(self) -> dict[str, tuple[int, int]]:
        out, f, o = {}, 0, 0
        for site, shard in self.shards.items():
            out[site] = (f, o)
            f += len(shard.frames)
            o += len(shard.objects)
        return out


# -- manifests -------------------------------------------------------------------------------------

def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise IndexFormatError(f"{path} is missing") from None
    except (OSError, ValueError) as exc:
        raise IndexFormatError(f"{path} is not readable JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise IndexFormatError(f"{path} does not hold a JSON object")
    return data


def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "w") as fh:
        json.dump(data, fh, indent=2, sort_keys=True, default=str)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


@contextlib.contextmanager
def _locked(root: Path):
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


def _encoder_mismatch(on_disk: dict, asked: dict, root: Path) -> ModelMismatchError:
    from search.encoder import describe
    return ModelMismatchError(f"the index at {root} was built with {describe(on_disk)}, but "
                              f"{describe(asked)} was asked for: search it with the index's model (the default "
                              f"when no --model is given) or rebuild it into another folder")


def init_index(root: str | Path, manifest: dict) -> dict:
    """Create ``root/manifest.json`` or check that the existing one has the same encoder identity and
    segmentation parameters (ModelMismatchError naming both otherwise). Returns the manifest on disk."""
    from search.encoder import same_space
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / "sites").mkdir(exist_ok=True)
    with _locked(root):
        path = root / "manifest.json"
        if path.exists():
            disk = _read_json(path)
            if disk.get("format") != FORMAT_VERSION:
                raise IndexFormatError(f"{path} has format {disk.get('format')!r}; this version reads "
                                       f"format {FORMAT_VERSION}: rebuild the index")
            if "encoder" in manifest and "encoder" in disk and not same_space(disk["encoder"], manifest["encoder"]):
                raise _encoder_mismatch(disk["encoder"], manifest["encoder"], root)
            if "encoder" in manifest and "encoder" in disk and \
                    disk["encoder"].get("fit") != manifest["encoder"].get("fit"):
                raise ModelMismatchError(f"the index at {root} was built with {disk['encoder'].get('fit')} "
                                         f"frames, this run asks for {manifest['encoder'].get('fit')}")
            if manifest.get("segmentation") is not None and disk.get("segmentation") is not None and \
                    manifest["segmentation"] != disk["segmentation"]:
                raise ModelMismatchError(f"the index at {root} was built with segmentation parameters "
                                         f"{disk['segmentation']}, this run asks for {manifest['segmentation']}: "
                                         f"use the same parameters or another index folder")
            return disk
        data = dict(manifest)
        data["format"] = FORMAT_VERSION
        data.setdefault("shards", {})
        data.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%S"))
        _write_json_atomic(path, data)
        return data


# -- writing ---------------------------------------------------------------------------------------

def _check_site(site: str) -> None:
    if not site or not isinstance(site, str) or "/" in site or "\\" in site or site.startswith(".") \
            or site in ("..",):
        raise InputError(f"{site!r} cannot name a shard folder (empty, a path, or starting with a dot)")


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


def _write_table(df: pd.DataFrame, path: Path) -> None:
    df.to_parquet(path, index=False)


def _write_faiss(index: Any, path: Path) -> None:
    import faiss
    faiss.write_index(index, str(path))


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _recover(sites_dir: Path, site: str) -> None:
    """Finish or undo a swap a crash interrupted, and drop stale temporary folders of ``site``."""
    final = sites_dir / site
    olds = sorted(sites_dir.glob(f".old-{site}-*"), key=lambda p: p.stat().st_mtime)
    if not final.exists() and olds:
        os.rename(olds.pop(), final)
    for stale in [*olds, *sites_dir.glob(f".tmp-{site}-*")]:
        shutil.rmtree(stale, ignore_errors=True)


def write_shard(root: str | Path, site: str, frames: pd.DataFrame, frame_vectors: np.ndarray,
                objects: pd.DataFrame, object_vectors: np.ndarray, manifest: dict, *,
                index_type: IndexType = "flat", nlist: int | None = None, nprobe: int | None = None,
                hnsw_m: int | None = None) -> Path:
    """Write one site's shard atomically (temporary folder + rename) and add it to the root manifest.
    Objects are stored sorted by ``frame_row`` (their vectors with them). ``index_type`` applies to both
    tables; a table too small to train an IVF index is stored flat and the shard manifest notes it."""
    from search import faiss_index
    root = Path(root)
    _check_site(site)
    root_manifest_path = root / "manifest.json"
    if not root_manifest_path.exists():
        raise IndexFormatError(f"no index at {root}: create it with init_index first")
    root_manifest = _read_json(root_manifest_path)
    dim = (root_manifest.get("encoder") or {}).get("dim")
    missing = [c for c in FRAME_COLUMNS if c not in frames.columns]
    if missing:
        raise InputError(f"frame rows of site {site!r} lack columns {missing}")
    missing = [c for c in OBJECT_COLUMNS if c not in objects.columns]
    if missing:
        raise InputError(f"object rows of site {site!r} lack columns {missing}")
    fvec = _normalise(frame_vectors, len(frames), f"frames of site {site!r}", dim)
    ovec = _normalise(object_vectors, len(objects), f"objects of site {site!r}", dim)
    frames = frames.loc[:, list(FRAME_COLUMNS)].reset_index(drop=True)
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

    sites_dir = root / "sites"
    sites_dir.mkdir(exist_ok=True)
    _recover(sites_dir, site)
    tmp = sites_dir / f".tmp-{site}-{uuid.uuid4().hex[:12]}"
    tmp.mkdir()
    try:
        _write_table(frames, tmp / "frames.parquet")
        _write_table(objects, tmp / "objects.parquet")
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
            "files": {name: (tmp / name).stat().st_size for name in SHARD_FILES if name != "manifest.json"},
        })
        _write_json_atomic(tmp / "manifest.json", shard_manifest)
        for name in SHARD_FILES:
            with open(tmp / name, "rb") as fh:
                os.fsync(fh.fileno())
        _fsync_dir(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    final = sites_dir / site
    old = None
    if final.exists():
        old = sites_dir / f".old-{site}-{uuid.uuid4().hex[:12]}"
        os.rename(final, old)
    try:
        os.rename(tmp, final)
    except BaseException:
        if old is not None:
            os.rename(old, final)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(sites_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    with _locked(root):
        disk = _read_json(root_manifest_path)
        disk.setdefault("shards", {})[site] = {
            "frames": len(frames), "objects": len(objects), "index_type": index_type,
            "written": shard_manifest["written"]}
        _write_json_atomic(root_manifest_path, disk)
    return final


def remove_shard(root: str | Path, site: str) -> None:
    """Delete one site's shard and its entry in the root manifest."""
    root = Path(root)
    _check_site(site)
    final = root / "sites" / site
    if final.exists():
        trash = root / "sites" / f".old-{site}-{uuid.uuid4().hex[:12]}"
        os.rename(final, trash)
        shutil.rmtree(trash, ignore_errors=True)
    with _locked(root):
        disk = _read_json(root / "manifest.json")
        disk.get("shards", {}).pop(site, None)
        _write_json_atomic(root / "manifest.json", disk)


# -- reading ---------------------------------------------------------------------------------------

def _shard_dir(sites_dir: Path, site: str) -> Path:
    """The shard folder, or the ``.old`` one while a writer is between its two renames."""
    final = sites_dir / site
    for _ in range(3):
        if final.is_dir():
            return final
        olds = sorted(sites_dir.glob(f".old-{site}-*"))
        if olds:
            return olds[-1]
        time.sleep(0.05)
    raise IndexFormatError(f"shard folder {final} is missing")


def read_shard(path: Path, site: str) -> Shard:
    """One shard from its folder; IndexFormatError naming the file when a part is missing or corrupt."""
    import faiss
    manifest = _read_json(path / "manifest.json")
    if manifest.get("format") != FORMAT_VERSION:
        raise IndexFormatError(f"{path / 'manifest.json'} has format {manifest.get('format')!r}, "
                               f"expected {FORMAT_VERSION}")
    for name, size in (manifest.get("files") or {}).items():
        p = path / name
        if not p.exists():
            raise IndexFormatError(f"{p} is missing")
        if p.stat().st_size != size:
            raise IndexFormatError(f"{p} has {p.stat().st_size} bytes, its manifest says {size} (truncated or "
                                   f"overwritten)")
    tables = {}
    for name in ("frames", "objects"):
        p = path / f"{name}.parquet"
        try:
            tables[name] = pd.read_parquet(p)
        except FileNotFoundError:
            raise IndexFormatError(f"{p} is missing") from None
        except Exception as exc:   # pyarrow raises several types for broken files
            raise IndexFormatError(f"{p} is not a readable parquet file: {exc}") from exc
    indexes = {}
    for name in ("frames", "objects"):
        p = path / f"{name}.faiss"
        if not p.exists():
            raise IndexFormatError(f"{p} is missing")
        try:
            indexes[name] = faiss.read_index(str(p))
        except Exception as exc:
            raise IndexFormatError(f"{p} is not a readable FAISS index: {str(exc).splitlines()[0][:200]}") from exc
        if indexes[name].ntotal != len(tables[name]):
            raise IndexFormatError(f"{p} holds {indexes[name].ntotal} vectors for {len(tables[name])} rows "
                                   f"of {name}.parquet")
    return Shard(site=site, path=path, manifest=manifest, frames=tables["frames"], objects=tables["objects"],
                 frame_index=indexes["frames"], object_index=indexes["objects"],
                 cpu_frame_index=indexes["frames"], cpu_object_index=indexes["objects"])


def read_manifest(root: str | Path) -> dict:
    """The root manifest of an index folder (IndexFormatError when there is none)."""
    root = Path(root)
    if not (root / "manifest.json").exists():
        raise IndexFormatError(f"{root} is not an index: it has no manifest.json (build one with mvk index)")
    return _read_json(root / "manifest.json")


def list_sites(root: str | Path) -> list[str]:
    """Sites named by the root manifest or present as shard folders, sorted."""
    root = Path(root)
    disk = _read_json(root / "manifest.json")
    sites = set(disk.get("shards", {}))
    if (root / "sites").is_dir():
        sites |= {p.name for p in (root / "sites").iterdir() if p.is_dir() and not p.name.startswith(".")}
    return sorted(sites)


def open_index(root: str | Path, *, expect: dict | None = None, device: str = "cpu") -> Index:
    """Open every shard; a missing or corrupt shard is skipped and reported in ``Index.errors``. Raises
    IndexFormatError when ``root`` is no index, ModelMismatchError when ``expect`` (an encoder identity)
    differs from the manifest's."""
    from search.encoder import same_space
    from search.faiss_index import to_device
    root = Path(root)
    if not root.is_dir():
        raise IndexFormatError(f"no index folder at {root}")
    if not (root / "manifest.json").exists():
        raise IndexFormatError(f"{root} is not an index: it has no manifest.json (build one with mvk index)")
    manifest = _read_json(root / "manifest.json")
    if manifest.get("format") != FORMAT_VERSION:
        raise IndexFormatError(f"{root / 'manifest.json'} has format {manifest.get('format')!r}; this version "
                               f"reads format {FORMAT_VERSION}: rebuild the index")
    if expect is not None and manifest.get("encoder") and not same_space(manifest["encoder"], expect):
        raise _encoder_mismatch(manifest["encoder"], expect, root)
    shards: dict[str, Shard] = {}
    errors: dict[str, str] = {}
    notes: list[str] = []
    for site in list_sites(root):
        try:
            shard = read_shard(_shard_dir(root / "sites", site), site)
        except IndexFormatError as exc:
            errors[site] = str(exc)
            continue
        except Exception as exc:
            errors[site] = f"{type(exc).__name__}: {exc}"
            continue
        for attr in ("frame_index", "object_index"):
            moved, why = to_device(getattr(shard, attr), device)
            setattr(shard, attr, moved)
            notes.extend(f"{site}: {w}" for w in why)
        shards[site] = shard
    frames_parts, object_parts = [], []
    gid = 0
    for site, shard in shards.items():
        f = shard.frames.copy()
        f["row"] = np.arange(len(f), dtype=np.int64)
        f["gid"] = np.arange(gid, gid + len(f), dtype=np.int64)
        o = shard.objects.copy()
        o["site"] = site
        o["row"] = np.arange(len(o), dtype=np.int64)
        o["frame_gid"] = o["frame_row"].to_numpy(dtype=np.int64) + gid
        frames_parts.append(f)
        object_parts.append(o)
        gid += len(f)
    frames = pd.concat(frames_parts, ignore_index=True) if frames_parts else \
        pd.DataFrame({c: [] for c in (*FRAME_COLUMNS, "row", "gid")})
    objects = pd.concat(object_parts, ignore_index=True) if object_parts else \
        pd.DataFrame({c: [] for c in (*OBJECT_COLUMNS, "site", "row", "frame_gid")})
    return Index(root=root, manifest=manifest, shards=shards, frames=frames, objects=objects,
                 errors=errors, notes=notes, device=device)

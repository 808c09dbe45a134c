"""The on-disk index: one shard per dive site, FAISS + parquet + manifests, every file checksummed.

index/
  manifest.json            format, encoder identity, segmentation parameters, versions, shard list, checksum
  sites/<site>/
    CURRENT                names the current version folder and the checksum of its manifest
    v-<id>/                one immutable version of the shard:
      manifest.json          counts, source files (size, mtime), per-video errors, index type, and the
                             size and SHA-256 of every other file of the version
      frames.parquet         FRAME_COLUMNS, row i <-> vector i of frames.faiss
      objects.parquet        OBJECT_COLUMNS, row j <-> vector j of objects.faiss
      frames.faiss, objects.faiss

A shard is written into a new version folder and published by replacing ``CURRENT`` atomically
(``search.shard_layout``): a reader resolves the version once and opens every file through it, so it sees
one whole version or the previous one, never a mix; superseded versions go after ``GRACE_SECONDS``. A
file that does not match its checksum, size or manifest makes the shard count as missing: skipped when
serving, named in ``Index.errors``, reported by ``check_index`` and rewritten by the next ``mvk index``.
Checksums are streamed from the files (``search.checksums``), so memory-mapped or lazy readers can verify
too; opening checks every file's size and the checksum of all but the thumbnails (``verify="quick"``).
The root manifest is one small file replaced atomically (it is its own pointer) and carries a checksum of
its content; when it is missing or broken it is rebuilt from the shard manifests, each of which keeps a
copy of the index-wide settings. It is updated under an advisory lock (``root/.lock``), so writers of
different sites may run side by side; writers of one site take ``sites/<site>/.lock``. Vectors are
L2-normalised and stored float16 (see ``search.faiss_index``).

Shards written before versions existed (files loose in ``sites/<site>/``, sizes only) are still read,
with a note, and ``recover`` (run by every ``mvk index``) moves them into a version folder, recording
checksums of the files as they are.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from search import shard_layout
from search.checksums import ALGORITHM, bytes_digest, file_problem, file_record, json_digest
from search.cpus import usable_cores
from search.errors import IndexFormatError, InputError, ModelMismatchError

FORMAT_VERSION = 1

FRAME_COLUMNS = (
    "site", "video_id", "video_path",   # video_path relative to the collection root
    "frame_index", "time",              # index in the source video, seconds
    "width", "height",                  # source frame size
    "place", "date",                    # from the site name; date "YYYY-MM" or ""
    "thumbnail",                        # JPEG bytes, longest side ~256 px
)
# Columns a frame table may carry besides FRAME_COLUMNS, with the value of rows that lack them: MVK's
# selected frames (indexer.selected): image name and number, distance to the video frame found for it by
# content, and whether that match is poor (the image does not seem to come from that video).
OPTIONAL_FRAME_COLUMNS: dict[str, Any] = {"selected_name": "", "selected_number": -1,
                                          "match_distance": float("nan"), "match_poor": False}
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

LAZY_COLUMNS = {"frames": ("thumbnail",), "objects": ()}   # left in the file when opened memory-mapped
ROW_GROUP_ROWS = {"frames": 256, "objects": 8192}   # small row groups: one thumbnail reads ~1-2 MiB, not the table
SHARD_FILES = ("manifest.json", "frames.parquet", "objects.parquet", "frames.faiss", "objects.faiss")
DATA_FILES = SHARD_FILES[1:]
ROOT_MANIFEST = "manifest.json"
GRACE_SECONDS = 600.0          # a superseded version stays this long for readers that resolved it just before
Verify = Literal["full", "quick"]
SIZE_ONLY_WHEN_QUICK = ("frames.parquet",)   # verify="quick" (the default at open) checks only the size of these:
                                              # the thumbnails, most of the bytes, read lazily by a server


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
        """The stored (n, d) float16 vectors of one table, decoded whole (a copy: for tests and tools; the
        query path scores in blocks with ``scores`` instead)."""
        from search.faiss_index import reconstruct_all
        return reconstruct_all(self.cpu_frame_index if table == "frames" else self.cpu_object_index)

    def scores(self, table: Literal["frames", "objects"], queries: np.ndarray) -> np.ndarray:
        """(q, n) float32 inner products of L2-normalised ``queries`` with the stored vectors of ``table``,
        block by block over the (memory-mapped) stored float16 codes; a row whose stored vector holds NaN
        or infinity (never written so: a corrupt file whose checksum was not checked, or an old index) scores
        -inf, so scoring leaves it out instead of returning NaN."""
        from search.faiss_index import inner_products
        out = inner_products(self.cpu_frame_index if table == "frames" else self.cpu_object_index, queries)
        out[~np.isfinite(out)] = -np.inf
        return out

    def column(self, table: Literal["frames", "objects"], name: str, rows: np.ndarray) -> list:
        """Values of one column for ``rows`` of ``table``: from memory when the column was loaded, else read
        from the parquet file by row group (thumbnails are read this way, on demand)."""
        loaded = self.frames if table == "frames" else self.objects
        rows = np.asarray(rows, dtype=np.int64)
        if name in loaded.columns:
            return loaded[name].to_numpy()[rows].tolist()
        return _read_rows(self.path / f"{table}.parquet", name, rows)


def _read_rows(path: Path, name: str, rows: np.ndarray) -> list:
    """``rows`` of column ``name`` of a parquet file, reading only the row groups that hold them."""
    import pyarrow.parquet as pq
    try:
        pf = pq.ParquetFile(path, memory_map=True)
    except FileNotFoundError:
        raise IndexFormatError(f"{path} is gone (a newer version of the shard replaced it): reopen the "
                               f"index") from None
    except Exception as exc:
        raise IndexFormatError(f"{path} is not a readable parquet file: {exc}") from exc
    sizes = [pf.metadata.row_group(i).num_rows for i in range(pf.metadata.num_row_groups)]
    starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    if len(rows) and (rows.min() < 0 or rows.max() >= starts[-1]):
        raise IndexFormatError(f"{path} has {starts[-1]} rows, asked for row {int(rows.max())}")
    out: list = [None] * len(rows)
    groups = np.searchsorted(starts, rows, side="right") - 1
    for g in np.unique(groups):
        where = np.flatnonzero(groups == g)
        column = pf.read_row_group(int(g), columns=[name]).column(0)
        values = column.take(rows[where] - starts[g]).to_pylist()
        for i, v in zip(where, values):
            out[i] = v
    return out


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

    def locate(self, gids: np.ndarray) -> list[tuple[str, np.ndarray, np.ndarray]]:
        """Global frame rows grouped by shard: (site, positions in ``gids``, rows in that shard)."""
        gids = np.asarray(gids, dtype=np.int64)
        sites = list(self.shards)
        starts = np.array([self.frame_offset(site) for site in sites] + [len(self.frames)], np.int64)
        if len(gids) and (gids.min() < 0 or gids.max() >= starts[-1]):
            raise IndexError(f"frame gid out of range 0..{starts[-1] - 1}")
        which = np.searchsorted(starts, gids, side="right") - 1
        return [(sites[k], np.flatnonzero(which == k), gids[which == k] - starts[k]) for k in np.unique(which)]

    def thumbnails(self, gids) -> list[bytes]:
        """The stored JPEG thumbnails of frames ``gids`` (b"" where none), read on demand from the shards'
        parquet files (a few row groups), not kept in ``frames``."""
        gids = np.asarray(list(gids) if not isinstance(gids, np.ndarray) else gids, dtype=np.int64)
        out: list[bytes] = [b""] * len(gids)
        for site, positions, rows in self.locate(gids):
            for i, value in zip(positions, self.shards[site].column("frames", "thumbnail", rows)):
                out[i] = bytes(value or b"")
        return out

    def thumbnail(self, gid: int) -> bytes:
        return self.thumbnails([int(gid)])[0]

    def with_thumbnails(self, rows: pd.DataFrame, gid_column: str = "gid") -> pd.DataFrame:
        """``rows`` (of frames, or joined with them) with a ``thumbnail`` column, read for these rows only."""
        if "thumbnail" in rows.columns:
            return rows
        out = rows.copy()
        out["thumbnail"] = self.thumbnails(rows[gid_column].to_numpy(np.int64)) if len(rows) else []
        return out

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


@dataclass(frozen=True)
class MemoryUse:
    """Resident memory of an opened index, in bytes: ``tables`` (the frame and object rows held in memory),
    ``mapped`` (pages of the index's memory-mapped files resident in this process, of ``mapped_total``
    mapped), and ``process`` (this process's whole resident set, libraries included). None where the OS
    does not say (no /proc)."""
    tables: int
    mapped: int | None
    mapped_total: int | None
    process: int | None

    @property
    def index(self) -> int:
        """The index's own resident memory: its tables plus its resident mapped pages."""
        return self.tables + (self.mapped or 0)

    def describe(self) -> str:
        text = f"index resident memory {_size(self.index)} (rows {_size(self.tables)}"
        if self.mapped is not None:
            text += f", memory-mapped files {_size(self.mapped)} of {_size(self.mapped_total or 0)}"
        text += ")"
        if self.process is not None:
            text += f"; process {_size(self.process)}"
        return text


def _size(n: int) -> str:
    """Bytes for people: KiB under 1 MiB (a small index is not "0 MiB"), MiB under 10 GiB, GiB above."""
    if n < 2 ** 20:
        return f"{n / 2 ** 10:,.0f} KiB"
    if n < 10 * 2 ** 30:
        return f"{n / 2 ** 20:,.0f} MiB"
    return f"{n / 2 ** 30:,.1f} GiB"


def memory_use(index: "Index") -> MemoryUse:
    """How much memory the opened ``index`` holds resident (see MemoryUse); Linux reads /proc/self/smaps."""
    tables = int(sum(t.memory_usage(index=True, deep=True).sum() for t in (index.frames, index.objects)))
    mapped = total = process = None
    root = str(Path(index.root).resolve())
    try:
        text = Path("/proc/self/smaps").read_text()
    except OSError:
        return MemoryUse(tables, None, None, None)
    mapped = total = 0
    inside = False
    for line in text.splitlines():
        head = line.split(None, 5)
        if len(head) >= 5 and "-" in head[0] and not head[0].endswith(":"):
            inside = len(head) == 6 and head[5].startswith(root + os.sep)
        elif inside and line.startswith("Rss:"):
            mapped += int(line.split()[1]) * 1024
        elif inside and line.startswith("Size:"):
            total += int(line.split()[1]) * 1024
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                process = int(line.split()[1]) * 1024
    return MemoryUse(tables, mapped, total, process)


# -- manifests -------------------------------------------------------------------------------------

def _parse_json(raw: bytes, path: Path) -> dict:
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise IndexFormatError(f"{path} is not readable JSON: {exc}") from None
    if not isinstance(data, dict):
        raise IndexFormatError(f"{path} does not hold a JSON object")
    return data


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise IndexFormatError(f"{path} is missing") from None
    except OSError as exc:
        raise IndexFormatError(f"{path} cannot be read: {exc}") from exc


def _read_json(path: Path) -> dict:
    return _parse_json(_read_bytes(path), path)


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


def _root_body(data: dict) -> dict:
    """The root manifest without its checksum, as it reads back from JSON."""
    return json.loads(json.dumps({k: v for k, v in data.items() if k != "checksum"}, default=str))


def _write_root(root: Path, data: dict) -> None:
    """Replace the root manifest atomically, with a checksum of its content."""
    body = _root_body(data)
    _write_json_atomic(root / ROOT_MANIFEST, {**body, "checksum": json_digest(body)})


def _read_root(root: Path) -> dict:
    """The root manifest; IndexFormatError when it is missing, unreadable or does not match its checksum."""
    path = root / ROOT_MANIFEST
    data = _read_json(path)
    if "checksum" in data and json_digest(_root_body(data)) != data["checksum"]:
        raise IndexFormatError(f"{path} does not match its checksum (corrupt or edited)")
    return data


def _index_settings(root_manifest: dict) -> dict:
    """What every shard manifest keeps of the root manifest, so the root can be rebuilt from any shard."""
    return {k: v for k, v in root_manifest.items() if k not in ("shards", "checksum")}


def _shard_entry(manifest: dict) -> dict:
    counts = manifest.get("counts") or {}
    return {"frames": int(counts.get("frames", manifest.get("frames", 0)) or 0),
            "objects": int(counts.get("objects", manifest.get("objects", 0)) or 0),
            "index_type": manifest.get("index_type", "flat"), "written": manifest.get("written")}


def _rebuild_root(root: Path) -> tuple[dict | None, dict[str, dict]]:
    """A root manifest made from the readable shard manifests (the settings of the newest shard), or None
    when no shard records the settings; and the shard entries found."""
    shards: dict[str, dict] = {}
    settings, newest = None, ""
    for site in _site_folders(root):
        manifest = shard_manifest(root, site)
        if manifest is None:
            continue
        shards[site] = _shard_entry(manifest)
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
        return _read_root(root), []
    except IndexFormatError as exc:
        why = str(exc)
    rebuilt, shards = _rebuild_root(root)
    if rebuilt is None:
        if not (root / ROOT_MANIFEST).exists() and not shards:
            return None, []
        return None, [f"{why}, and no shard manifest records the index's settings to rebuild it from"]
    return rebuilt, [f"{why}: rebuilt from the manifests of {len(shards)} shard(s) ({', '.join(shards)})"]


def _encoder_mismatch(on_disk: dict, asked: dict, root: Path) -> ModelMismatchError:
    from search.encoder import describe
    return ModelMismatchError(f"the index at {root} was built with {describe(on_disk)}, but "
                              f"{describe(asked)} was asked for: search it with the index's model (the default "
                              f"when no --model is given) or rebuild it into another folder")


def check_encoder(index: "Index", identity: dict) -> None:
    """ModelMismatchError when the encoder ``identity`` does not share the index's embedding space."""
    from search.encoder import same_space
    built = (index.manifest or {}).get("encoder")
    if built and not same_space(built, identity):
        raise _encoder_mismatch(built, identity, index.root)


def init_index(root: str | Path, manifest: dict) -> dict:
    """Create ``root/manifest.json`` or check that the existing one has the same encoder identity and
    segmentation parameters (ModelMismatchError naming both otherwise). Returns the manifest on disk. A
    broken root manifest is rebuilt from the shard manifests first (see ``recover`` for the notes)."""
    from search.encoder import same_space
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / "sites").mkdir(exist_ok=True)
    with _locked(root):
        path = root / ROOT_MANIFEST
        disk, notes = load_root_manifest(root)
        if disk is not None and notes:
            _write_root(root, disk)
        if disk is not None:
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
        data["shards"] = {**_rebuild_root(root)[1], **data.get("shards", {})}
        data.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%S"))
        _write_root(root, data)
        return _read_root(root)


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


def _write_table(df: pd.DataFrame, path: Path, row_group_rows: int) -> None:
    df.to_parquet(path, index=False, row_group_size=row_group_rows)


def _write_faiss(index: Any, path: Path) -> None:
    import faiss
    faiss.write_index(index, str(path))


def _fsync_files(folder: Path) -> None:
    for name in SHARD_FILES:
        with open(folder / name, "rb") as fh:
            os.fsync(fh.fileno())


def _drop_loose_files(site_dir: Path) -> None:
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
    _check_site(site)
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
        shard_layout.collect(site_dir, GRACE_SECONDS)
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
                "index": _index_settings(root_manifest),
            })
            _write_json_atomic(tmp / "manifest.json", shard_manifest)
            _fsync_files(tmp)
            final = shard_layout.publish(site_dir, tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _drop_loose_files(site_dir)
        shard_layout.collect(site_dir, GRACE_SECONDS)
    with _locked(root):
        disk, _ = load_root_manifest(root)
        disk = disk if disk is not None else dict(root_manifest)
        disk.setdefault("shards", {})[site] = _shard_entry(shard_manifest)
        _write_root(root, disk)
    return final


def remove_shard(root: str | Path, site: str) -> None:
    """Delete one site's shard and its entry in the root manifest."""
    root = Path(root)
    _check_site(site)
    site_dir = root / "sites" / site
    if site_dir.exists():
        with shard_layout.locked(site_dir):
            (site_dir / shard_layout.POINTER).unlink(missing_ok=True)
            trash = root / "sites" / f".tmp-{site}-{uuid.uuid4().hex[:12]}"
            os.rename(site_dir, trash)
        shutil.rmtree(trash, ignore_errors=True)
    with _locked(root):
        disk, _ = load_root_manifest(root)
        if disk is not None:
            disk.get("shards", {}).pop(site, None)
            _write_root(root, disk)


# -- recovery --------------------------------------------------------------------------------------

_LEGACY_STRAY = re.compile(r"\.(old|tmp)-(.+)-[0-9a-f]{12}")


def _is_legacy(site_dir: Path) -> bool:
    return not (site_dir / shard_layout.POINTER).exists() and (site_dir / "manifest.json").is_file()


def _link_or_copy(src: Path, dst: Path) -> None:
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
    manifest = _read_json(site_dir / "manifest.json")
    tmp = shard_layout.begin(site_dir)
    try:
        for name in DATA_FILES:
            _link_or_copy(site_dir / name, tmp / name)
        manifest["files"] = {name: file_record(tmp / name) for name in DATA_FILES}
        if root_manifest is not None:
            manifest.setdefault("index", _index_settings(root_manifest))
        manifest["migrated"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        _write_json_atomic(tmp / "manifest.json", manifest)
        _fsync_files(tmp)
        shard_layout.publish(site_dir, tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _drop_loose_files(site_dir)
    return f"site {site}: migrated to the versioned layout (checksums recorded of its files as they were)"


def _legacy_strays(sites_dir: Path) -> list[str]:
    """Finish or drop what a writer of the layout before versions left mid-swap (``.old-<site>-<12 hex>``,
    ``.tmp-<site>-<12 hex>``); the site name is matched exactly."""
    notes = []
    for entry in sorted(sites_dir.iterdir()):
        m = _LEGACY_STRAY.fullmatch(entry.name)
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
    notes: list[str] = []
    with _locked(root):
        sites_dir = root / "sites"
        if sites_dir.is_dir():
            notes += _legacy_strays(sites_dir)
        disk, why = load_root_manifest(root)
        if disk is not None and why:
            _write_root(root, disk)
            notes += [f"{n}; written back" for n in why]
        else:
            notes += why
        for site in _site_folders(root):
            site_dir = sites_dir / site
            with shard_layout.locked(site_dir, wait=False) as mine:
                if not mine:
                    continue                       # its writer cleans up after itself
                if _is_legacy(site_dir):
                    notes.append(_migrate(disk, site_dir))
                shard_layout.collect(site_dir, GRACE_SECONDS)
    return notes


# -- reading ---------------------------------------------------------------------------------------

def _site_folders(root: Path) -> list[str]:
    sites_dir = root / "sites"
    if not sites_dir.is_dir():
        return []
    return sorted(p.name for p in sites_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def _resolve(root: Path, site: str) -> tuple[Path, dict | None]:
    """The folder of ``site``'s current version and the record of its manifest (None for a shard of the old
    layout, whose folder is the site folder). Exact name only; IndexFormatError when there is none."""
    _check_site(site)
    site_dir = root / "sites" / site
    pointer = shard_layout.read_pointer(site_dir)
    if pointer is not None:
        return site_dir / pointer.version, pointer.manifest
    if _is_legacy(site_dir):
        return site_dir, None
    if site_dir.is_dir():
        raise IndexFormatError(f"shard of site {site!r} is missing: {site_dir} has no {shard_layout.POINTER}")
    raise IndexFormatError(f"shard folder {site_dir} is missing")


def shard_folder(root: str | Path, site: str) -> Path:
    """The folder of ``site``'s current shard version (IndexFormatError when the site has none)."""
    return _resolve(Path(root), site)[0]


def shard_manifest(root: str | Path, site: str) -> dict | None:
    """The manifest of ``site``'s current shard, checked against its pointer; None when missing or broken."""
    try:
        folder, record = _resolve(Path(root), site)
        return _read_shard_manifest(folder, record)
    except IndexFormatError:
        return None


def _read_shard_manifest(folder: Path, record: dict | None) -> dict:
    path = folder / "manifest.json"
    raw = _read_bytes(path)
    if record is not None and (len(raw) != record.get("size") or bytes_digest(raw) != record.get(ALGORITHM)):
        raise IndexFormatError(f"{path} does not match the checksum in {shard_layout.POINTER} (corrupt or edited)")
    manifest = _parse_json(raw, path)
    if manifest.get("format") != FORMAT_VERSION:
        raise IndexFormatError(f"{path} has format {manifest.get('format')!r}, expected {FORMAT_VERSION}")
    return manifest


def _file_problems(folder: Path, manifest: dict, *, full: bool) -> list[str]:
    """Every file of a shard version that does not match its manifest record."""
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        return [f"{folder / 'manifest.json'} lists no files"]
    problems = [f"{folder / 'manifest.json'} does not list {name}" for name in DATA_FILES if name not in files]
    for name, record in sorted(files.items()):
        problem = file_problem(folder / name, record, full=full or name not in SIZE_ONLY_WHEN_QUICK)
        if problem:
            problems.append(problem)
    return problems


def verify_shard(root: str | Path, site: str, *, full: bool = True) -> list[str]:
    """What is wrong with ``site``'s current shard (empty when nothing): pointer, manifest, and every file's
    size and, when ``full``, its checksum, streamed from disk. A shard of the old layout has sizes only."""
    try:
        folder, record = _resolve(Path(root), site)
        manifest = _read_shard_manifest(folder, record)
    except IndexFormatError as exc:
        return [str(exc)]
    return _file_problems(folder, manifest, full=full)


def read_shard(path: Path, site: str, *, manifest_record: dict | None = None, verify: Verify = "quick",
               mmap: bool = True) -> Shard:
    """One shard from its version folder; IndexFormatError naming the file when a part is missing, corrupt or
    does not match its checksum. ``verify="full"`` checksums every file; ``"quick"`` only the manifest and
    files but SIZE_ONLY_WHEN_QUICK (the thumbnails: their size only); checksums are streamed. ``mmap`` (the
    default) memory-maps the FAISS files and leaves the frames' thumbnails in their parquet file
    (``Index.thumbnails`` reads them on demand); ``mmap=False`` loads everything."""
    from search.faiss_index import read as read_faiss
    manifest = _read_shard_manifest(path, manifest_record)
    problems = _file_problems(path, manifest, full=verify == "full")
    if problems:
        raise IndexFormatError("; ".join(problems))
    tables = {}
    for name in ("frames", "objects"):
        p = path / f"{name}.parquet"
        try:
            tables[name] = _read_table(p, LAZY_COLUMNS[name] if mmap else ())
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
            indexes[name], mapped = read_faiss(str(p), mmap=mmap)
        except Exception as exc:
            raise IndexFormatError(f"{p} is not a readable FAISS index: {str(exc).splitlines()[0][:200]}") from exc
        if indexes[name].ntotal != len(tables[name]):
            raise IndexFormatError(f"{p} holds {indexes[name].ntotal} vectors for {len(tables[name])} rows "
                                   f"of {name}.parquet")
        if mmap and not mapped:
            manifest = {**manifest, "notes": [*manifest.get("notes", []),
                                              f"{name}.faiss: this FAISS cannot memory-map it: loaded whole"]}
    return Shard(site=site, path=path, manifest=manifest, frames=tables["frames"], objects=tables["objects"],
                 frame_index=indexes["frames"], object_index=indexes["objects"],
                 cpu_frame_index=indexes["frames"], cpu_object_index=indexes["objects"])


def _read_table(path: Path, lazy: tuple[str, ...]) -> pd.DataFrame:
    """A parquet table without its ``lazy`` columns (those stay in the file, read by ``Shard.column``)."""
    if not lazy:
        return _one_chunk(pd.read_parquet(path))
    import pyarrow.parquet as pq
    names = pq.ParquetFile(path).schema_arrow.names
    return _one_chunk(pd.read_parquet(path, columns=[c for c in names if c not in lazy]))


def _one_chunk(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with every Arrow-backed column in one piece. Parquet gives a piece per row group (256
    frames: ``ROW_GROUP_ROWS``) and concatenating shards adds more; Arrow's ``take`` on a column in
    thousands of pieces joins them first, which made picking the 20 result rows of 10^6 frames cost 8 ms
    per column instead of 0.03 ms."""
    import pyarrow as pa
    for name in table.columns:
        values = table[name].array
        if not hasattr(values, "__arrow_array__") or isinstance(table[name].dtype, pd.CategoricalDtype):
            continue
        arrow = values.__arrow_array__()
        if isinstance(arrow, pa.ChunkedArray) and arrow.num_chunks > 1:
            table[name] = pa.table({name: arrow.combine_chunks()}).to_pandas()[name].array
    return table


def open_shard(root: str | Path, site: str, *, verify: Verify = "quick", mmap: bool = True) -> Shard:
    """``site``'s current shard: the version is resolved once and every file opened through it; when a file
    vanished because a writer published a newer version meanwhile (and the old one went), it resolves again."""
    root = Path(root)
    for attempt in range(3):
        folder, record = _resolve(root, site)
        try:
            return read_shard(folder, site, manifest_record=record, verify=verify, mmap=mmap)
        except IndexFormatError:
            if attempt == 2 or _resolve(root, site)[0] == folder:
                raise
    raise AssertionError("unreachable")


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
    return sorted(set(manifest.get("shards", {})) | set(_site_folders(root)))


@dataclass
class IndexCheck:
    """What ``check_index`` found: per site the problems of its shard (empty when sound)."""
    root: Path
    root_problem: str | None
    sites: dict[str, list[str]]
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.root_problem is None and not any(self.sites.values())

    @property
    def broken(self) -> list[str]:
        return [site for site, problems in self.sites.items() if problems]


def check_index(root: str | Path, *, full: bool = True) -> IndexCheck:
    """Check every file of an index against its manifest: the root manifest, every site's pointer, shard
    manifest and files (sizes and, when ``full``, checksums, streamed). IndexFormatError when ``root`` is
    no index at all. Leftovers of crashed writes are listed in ``notes`` (the next ``mvk index`` removes them)."""
    root = Path(root)
    if not root.is_dir():
        raise IndexFormatError(f"no index folder at {root}")
    try:
        manifest: dict | None = _read_root(root)
        root_problem = None
    except IndexFormatError as exc:
        manifest, root_problem = None, str(exc)
        if not _site_folders(root):
            raise IndexFormatError(f"{root} is not an index: {exc}") from None
    sites = {site: verify_shard(root, site, full=full) for site in list_sites(root, manifest)}
    notes = []
    for site in sites:
        site_dir = root / "sites" / site
        if _is_legacy(site_dir):
            notes.append(f"site {site}: old layout without checksums (sizes checked only); mvk index migrates it")
        try:
            pointer = shard_layout.read_pointer(site_dir)
        except IndexFormatError:
            continue
        if pointer is None or not site_dir.is_dir():
            continue
        keep = {pointer.version, *pointer.retired}
        stray = [p.name for p in site_dir.iterdir() if p.name.startswith(shard_layout.TMP)
                 or (shard_layout.is_version(p.name) and p.name not in keep)]
        if stray:
            notes.append(f"site {site}: left over by an interrupted write: {', '.join(sorted(stray))} "
                         f"(the next mvk index removes it)")
    if (root / "sites").is_dir():
        stray = [p.name for p in (root / "sites").iterdir() if _LEGACY_STRAY.fullmatch(p.name)]
        if stray:
            notes.append(f"left over by an interrupted swap: {', '.join(sorted(stray))} (the next mvk index "
                         f"restores or removes it)")
    return IndexCheck(root, root_problem, sites, notes)


def open_index(root: str | Path, *, expect: dict | None = None, device: str = "cpu",
               verify: Verify = "quick", mmap: bool = True) -> Index:
    """Open every shard; a missing or corrupt shard (a file that does not match its size or checksum) is
    skipped and reported in ``Index.errors``. ``verify="quick"`` (default) checksums every file but the
    thumbnails (SIZE_ONLY_WHEN_QUICK: their size only; ``check_index`` and ``mvk index`` check them in full),
    ``"full"`` every file. ``mmap`` (the default) memory-maps the FAISS files and reads thumbnails on demand,
    so an index larger than memory can be served; ``mmap=False`` loads it whole. Raises IndexFormatError
    when ``root`` is no index,
    ModelMismatchError when ``expect`` (an encoder identity) differs from the manifest's. A broken root
    manifest is rebuilt in memory from the shard manifests, with a note."""
    from search.encoder import same_space
    from search.faiss_index import to_device
    root = Path(root)
    if not root.is_dir():
        raise IndexFormatError(f"no index folder at {root}")
    manifest, why = load_root_manifest(root)
    if manifest is None:
        raise IndexFormatError(f"{why[0]}: rebuild the index with mvk index" if why else
                               f"{root} is not an index: it has no manifest.json (build one with mvk index)")
    notes: list[str] = [f"{n} (the next mvk index writes it back)" for n in why]
    if manifest.get("format") != FORMAT_VERSION:
        raise IndexFormatError(f"{root / ROOT_MANIFEST} has format {manifest.get('format')!r}; this version "
                               f"reads format {FORMAT_VERSION}: rebuild the index")
    if expect is not None and manifest.get("encoder") and not same_space(manifest["encoder"], expect):
        raise _encoder_mismatch(manifest["encoder"], expect, root)
    shards: dict[str, Shard] = {}
    errors: dict[str, str] = {}
    sites = list_sites(root, manifest)
    for site, got in zip(sites, _open_shards(root, sites, verify=verify, mmap=mmap)):
        if isinstance(got, str):
            errors[site] = got
            continue
        shard = got
        if shard.path.name == site:
            notes.append(f"site {site}: old layout without checksums (sizes checked only); mvk index migrates it")
        for attr in ("frame_index", "object_index"):
            moved, why_not = to_device(getattr(shard, attr), device)
            setattr(shard, attr, moved)
            notes.extend(f"{site}: {w}" for w in why_not)
        shards[site] = shard
    frames, objects = _join_rows(shards)
    _release_arrow_memory()
    return Index(root=root, manifest=manifest, shards=shards, frames=frames, objects=objects,
                 errors=errors, notes=notes, device=device)


def _release_arrow_memory() -> None:
    """Hand memory Arrow freed while reading (the per-row-group pieces of the tables) back to the OS: its
    allocator keeps it otherwise, which at 10^6 frames was 440 MiB of the process's resident memory."""
    import pyarrow as pa
    with contextlib.suppress(Exception):
        pa.default_memory_pool().release_unused()


def _open_shards(root: Path, sites: list[str], *, verify: Verify, mmap: bool) -> list["Shard | str"]:
    """Every site's shard, or why it could not be opened, in the order of ``sites``. Shards open in threads
    (one per core): checksumming and parquet decoding release the GIL, and hashing the FAISS files is
    most of an open."""
    from concurrent.futures import ThreadPoolExecutor

    def one(site: str) -> "Shard | str":
        try:
            return open_shard(root, site, verify=verify, mmap=mmap)
        except IndexFormatError as exc:
            return str(exc)
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"

    workers = max(1, min(len(sites), usable_cores()))
    if workers == 1:
        return [one(site) for site in sites]
    with ThreadPoolExecutor(workers, thread_name_prefix="open-shard") as pool:
        return list(pool.map(one, sites))


def _join_rows(shards: dict[str, Shard]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The index-wide frame and object tables (with gid, row, site, frame_gid), and each shard's tables
    replaced by slices of them: pandas' copy-on-write shares the data, so every row is held once (a
    shard's own copy doubled the memory of the rows)."""
    frames_parts, object_parts = [], []
    gid = 0
    sites = list(shards)
    for k, (site, shard) in enumerate(shards.items()):
        n, m = len(shard.frames), len(shard.objects)
        f = shard.frames.assign(row=np.arange(n, dtype=np.int64), gid=np.arange(gid, gid + n, dtype=np.int64))
        o = shard.objects.assign(site=pd.Categorical.from_codes(np.full(m, k, np.int32), categories=sites),
                                 row=np.arange(m, dtype=np.int64),
                                 frame_gid=shard.objects["frame_row"].to_numpy(dtype=np.int64) + gid)
        frames_parts.append(f)
        object_parts.append(o)
        gid += len(f)
    if not shards:
        return (pd.DataFrame({c: [] for c in (*FRAME_COLUMNS, "row", "gid")}),
                pd.DataFrame({c: [] for c in (*OBJECT_COLUMNS, "site", "row", "frame_gid")}))
    frames = _one_chunk(pd.concat(frames_parts, ignore_index=True))
    objects = _one_chunk(pd.concat(object_parts, ignore_index=True))
    f0 = o0 = 0
    for shard, f, o in zip(shards.values(), frames_parts, object_parts):
        own_f = [c for c in f.columns if c not in ("row", "gid")]
        own_o = [c for c in o.columns if c not in ("site", "row", "frame_gid")]
        shard.frames = frames.iloc[f0:f0 + len(f)][own_f].reset_index(drop=True)
        shard.objects = objects.iloc[o0:o0 + len(o)][own_o].reset_index(drop=True)
        f0, o0 = f0 + len(f), o0 + len(o)
    return frames, objects

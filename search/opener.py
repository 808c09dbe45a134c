"""Opening an index: each shard's version resolved once, its files checked against the manifest (sizes,
checksums) and read (FAISS memory-mapped, thumbnails left in the parquet file), shards in threads."""
from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import pandas as pd

from search.checksums import file_problem
from search.cpus import usable_cores
from search.errors import IndexFormatError
from search.identity import check_space
from search.manifest import list_sites, load_root_manifest, read_shard_manifest, resolve
from search.schema import (
    DATA_FILES,
    FORMAT_VERSION,
    FRAME_COLUMNS,
    LAZY_COLUMNS,
    OBJECT_COLUMNS,
    ROOT_MANIFEST,
    SIZE_ONLY_WHEN_QUICK,
    Verify,
)
from search.rowgroups import read_verified
from search.shard import Index, Shard


def file_problems(folder: Path, manifest: dict, *, full: bool) -> list[str]:
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



def read_shard(path: Path, site: str, *, manifest_record: dict | None = None, verify: Verify = "quick",
               mmap: bool = True) -> Shard:
    """One shard from its version folder; IndexFormatError naming the file when a part is missing, corrupt or
    does not match its checksum. ``verify="full"`` checksums every file; ``"quick"`` only the manifest and
    files but SIZE_ONLY_WHEN_QUICK (the thumbnails: their size only); checksums are streamed. ``mmap`` (the
    default) memory-maps the FAISS files and leaves the frames' thumbnails in their parquet file
    (``Index.thumbnails`` reads them on demand); ``mmap=False`` loads everything."""
    from search.faiss_index import read as read_faiss
    manifest = read_shard_manifest(path, manifest_record)
    problems = file_problems(path, manifest, full=verify == "full")
    if problems:
        raise IndexFormatError("; ".join(problems))
    tables, left_out, damage = {}, None, []
    for name in ("frames", "objects"):
        p = path / f"{name}.parquet"
        try:
            if name == "frames" and mmap:    # size-checked only: its metadata columns checked per row group
                table, left_out, damage = read_verified(p, LAZY_COLUMNS[name],
                                                        (manifest.get("row_groups") or {}).get("frames.parquet"))
                tables[name] = one_chunk(table)
                continue
            tables[name] = _read_table(p, LAZY_COLUMNS[name] if mmap else ())
        except IndexFormatError:
            raise
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
    spaces = {}
    for name, record in (manifest.get("spaces") or {}).items():
        pair = []
        for table, file in zip(("frames", "objects"), (record.get("frames"), record.get("objects"))):
            p = path / str(file)
            try:
                got, _ = read_faiss(str(p), mmap=mmap)
            except Exception as exc:
                raise IndexFormatError(f"{p} (space {name}) is not a readable FAISS index: "
                                       f"{str(exc).splitlines()[0][:200]}") from exc
            if got.ntotal != len(tables[table]):
                raise IndexFormatError(f"{p} holds {got.ntotal} vectors for {len(tables[table])} rows of "
                                       f"{table}.parquet")
            pair.append(got)
        spaces[str(name)] = (pair[0], pair[1], pair[0], pair[1])   # searched, and the CPU copies
    return Shard(site=site, path=path, manifest=manifest, frames=tables["frames"], objects=tables["objects"],
                 frame_index=indexes["frames"], object_index=indexes["objects"],
                 cpu_frame_index=indexes["frames"], cpu_object_index=indexes["objects"],
                 left_out=left_out, damage=damage, space_tables=spaces)



def _read_table(path: Path, lazy: tuple[str, ...]) -> pd.DataFrame:
    """A parquet table without its ``lazy`` columns (those stay in the file, read by ``Shard.column``)."""
    if not lazy:
        return one_chunk(pd.read_parquet(path))
    import pyarrow.parquet as pq
    names = pq.ParquetFile(path).schema_arrow.names
    return one_chunk(pd.read_parquet(path, columns=[c for c in names if c not in lazy]))



def one_chunk(table: pd.DataFrame) -> pd.DataFrame:
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
        folder, record = resolve(root, site)
        try:
            return read_shard(folder, site, manifest_record=record, verify=verify, mmap=mmap)
        except IndexFormatError:
            if attempt == 2 or resolve(root, site)[0] == folder:
                raise
    raise AssertionError("unreachable")



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
    if expect is not None:
        check_space(manifest.get("encoder") or {}, expect, root)
    shards: dict[str, Shard] = {}
    errors: dict[str, str] = {}
    sites = list_sites(root, manifest)
    for site, got in zip(sites, _open_shards(root, sites, verify=verify, mmap=mmap)):
        if isinstance(got, str):
            errors[site] = got
            continue
        shard = got
        notes.extend(shard.damage)
        if shard.path.name == site:
            notes.append(f"site {site}: old layout without checksums (sizes checked only); mvk index migrates it")
        for attr in ("frame_index", "object_index"):
            moved, why_not = to_device(getattr(shard, attr), device)
            setattr(shard, attr, moved)
            notes.extend(f"{site}: {w}" for w in why_not)
        for name, pair in list(shard.space_tables.items()):
            shard.space_tables[name] = (to_device(pair[0], device)[0], to_device(pair[1], device)[0], *pair[2:])
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
    frames = one_chunk(pd.concat(frames_parts, ignore_index=True))
    objects = one_chunk(pd.concat(object_parts, ignore_index=True))
    f0 = o0 = 0
    for shard, f, o in zip(shards.values(), frames_parts, object_parts):
        own_f = [c for c in f.columns if c not in ("row", "gid")]
        own_o = [c for c in o.columns if c not in ("site", "row", "frame_gid")]
        shard.frames = frames.iloc[f0:f0 + len(f)][own_f].reset_index(drop=True)
        shard.objects = objects.iloc[o0:o0 + len(o)][own_o].reset_index(drop=True)
        f0, o0 = f0 + len(f), o0 + len(o)
    return frames, objects

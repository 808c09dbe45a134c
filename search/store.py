"""The on-disk index, its public face: one shard per dive site, FAISS + parquet + manifests, every file checksummed.

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

The work is split by job: ``search.schema`` (columns, files, format), ``search.manifest`` (root and shard
manifests, the compatibility check), ``search.shard`` (``Shard``, ``Index``), ``search.opener`` (opening and
verifying at open), ``search.writer`` (writing and publishing), ``search.recovery`` (crash recovery),
``search.integrity`` (``mvk check``), ``search.memory`` (resident memory). This module re-exports their
public names, which is what callers import.
"""
from __future__ import annotations

from search.integrity import IndexCheck, check_index, verify_shard
from search.manifest import (check_encoder, init_index, list_sites, load_root_manifest, read_manifest,
                             shard_folder, shard_manifest)
from search.memory import MemoryUse, memory_use
from search.opener import open_index, open_shard, read_shard
from search.recovery import recover
from search.schema import (DATA_FILES, FORMAT_VERSION, FRAME_COLUMNS, GRACE_SECONDS, LAZY_COLUMNS, OBJECT_COLUMNS,
                           OPTIONAL_FRAME_COLUMNS, ROOT_MANIFEST, ROW_GROUP_ROWS, SHARD_FILES,
                           SIZE_ONLY_WHEN_QUICK, IndexType, Verify)
from search.shard import Index, Shard
from search.writer import remove_shard, write_shard

__all__ = [
    "DATA_FILES", "FORMAT_VERSION", "FRAME_COLUMNS", "GRACE_SECONDS", "LAZY_COLUMNS", "OBJECT_COLUMNS",
    "OPTIONAL_FRAME_COLUMNS", "ROOT_MANIFEST", "ROW_GROUP_ROWS", "SHARD_FILES", "SIZE_ONLY_WHEN_QUICK",
    "Index", "IndexCheck", "IndexType", "MemoryUse", "Shard", "Verify", "check_encoder", "check_index",
    "init_index", "list_sites", "load_root_manifest", "memory_use", "open_index", "open_shard", "read_manifest",
    "read_shard", "recover", "remove_shard", "shard_folder", "shard_manifest", "verify_shard", "write_shard",
]

"""Embedding spaces of an index: one per model, each with its own frame and object vector tables in every
shard, recorded in the manifests.

The first space is the index's own (``manifest["encoder"]`` and ``manifest["indexing"]``; its tables are
``frames.faiss`` and ``objects.faiss``), so an index built with one model is a one-space index unchanged.
Further spaces are listed in the root manifest's ``spaces`` (model identity, object mode, dense features) and in
each shard manifest's ``spaces`` (its files, counts, dimension), with tables ``frames.<space>.faiss`` and
``objects.<space>.faiss`` beside the first ones. A space is named by its model: one name holds one model's
vectors, so a second version of the same model (another tag or checkpoint) is refused by name.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from search.errors import ModelMismatchError, QueryError
from search.identity import describe, same_space

PRIMARY_FILES = ("frames.faiss", "objects.faiss")


@dataclass(frozen=True)
class Space:
    """One embedding space of an index: its name (the model's), the encoder identity (with its frame fit), the
    object mode its object vectors were made with and their dense features (pool modes), and whether it is the
    index's first space."""
    name: str
    encoder: dict
    objects: str | None = None
    pool_features: dict | None = None
    primary: bool = False

    @property
    def files(self) -> tuple[str, str]:
        """The shard files of its frame and object tables."""
        return table_files(self.name, primary=self.primary)

    @property
    def dim(self) -> int:
        return int(self.encoder.get("dim") or 0)

    def record(self) -> dict:
        """What the root manifest's ``spaces`` list keeps of a further space."""
        return {"name": self.name, "encoder": self.encoder, "objects": self.objects,
                "pool_features": self.pool_features}

    def describe(self) -> str:
        return describe(self.encoder)


def space_name(identity: dict) -> str:
    """The name of the space an encoder identity embeds into: its model name."""
    return str(identity.get("model") or "")


def slug(name: str) -> str:
    """A file-name-safe form of a space name (``hf-hub:org/model`` -> ``hf-hub_org_model``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "space"


def table_files(name: str, *, primary: bool = False) -> tuple[str, str]:
    if primary:
        return PRIMARY_FILES
    return f"frames.{slug(name)}.faiss", f"objects.{slug(name)}.faiss"


def spaces_of(manifest: dict) -> list[Space]:
    """Every space of an index (root manifest), the first one first; an index that records no encoder has none."""
    identity = manifest.get("encoder") or {}
    if not identity:
        return []
    indexing = manifest.get("indexing") or {}
    out = [Space(space_name(identity), dict(identity), indexing.get("objects"), indexing.get("pool_features"),
                 primary=True)]
    for record in manifest.get("spaces") or []:
        if isinstance(record, dict) and isinstance(record.get("encoder"), dict):
            out.append(Space(str(record.get("name") or space_name(record["encoder"])), dict(record["encoder"]),
                             record.get("objects"), record.get("pool_features")))
    return out


def names(manifest: dict) -> list[str]:
    return [s.name for s in spaces_of(manifest)]


def find(manifest: dict, name: str) -> Space:
    """The space called ``name``; QueryError listing the index's spaces when there is none."""
    for space in spaces_of(manifest):
        if space.name == name:
            return space
    raise QueryError(f"the index has no embedding space {name!r}; its spaces: "
                     f"{', '.join(names(manifest)) or 'none'}")


def check_new(manifest: dict, identity: dict, where: object = None) -> Space | None:
    """The recorded space ``identity`` belongs to (None when its model is not in the index yet);
    ModelMismatchError when the index holds another version of the same model under that name."""
    name = space_name(identity)
    for space in spaces_of(manifest):
        if space.name != name:
            continue
        if same_space(space.encoder, identity):
            return space
        at = f"index {where}" if where is not None else "the index"
        raise ModelMismatchError(
            f"{at} has the space {name!r} of {space.describe()}; {describe(identity)} is another version of the "
            f"same model and cannot share that space (one space holds one model's vectors): index it into "
            f"another --index folder")
    return None


# -- fusing the rankings of several spaces ------------------------------------------------------------------

SPACE_FUSIONS = ("rrf", "zscore")
RRF_K = 60      # Cormack, Clarke & Buettcher (SIGIR 2009): 1 / (60 + rank), robust across runs without tuning


def check_fusion(manifest: dict, value: str | None) -> list[str]:
    """The spaces a query runs in for ``value`` (``rrf``, ``zscore``, or one space's name; None: ``rrf``):
    every space for a fusion, the named one alone otherwise (QueryError listing the choices)."""
    value = value or "rrf"
    all_names = names(manifest)
    if value in SPACE_FUSIONS:
        return all_names
    if value in all_names:
        return [value]
    raise QueryError(f"unknown space fusion {value!r}: choose {', '.join(SPACE_FUSIONS)} or one of the index's "
                     f"spaces ({', '.join(all_names) or 'none'})")

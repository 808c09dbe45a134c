"""Checking every file of an index against its manifests (``mvk check``)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from search import shard_layout
from search.errors import IndexFormatError
from search.manifest import is_legacy, list_sites, read_root, read_shard_manifest, resolve, site_folders
from search.opener import file_problems
from search.recovery import LEGACY_STRAY
from search.workcheck import work_notes


def verify_shard(root: str | Path, site: str, *, full: bool = True) -> list[str]:
    """What is wrong with ``site``'s current shard (empty when nothing): pointer, manifest, and every file's
    size and, when ``full``, its checksum, streamed from disk. A shard of the old layout has sizes only."""
    try:
        folder, record = resolve(Path(root), site)
        manifest = read_shard_manifest(folder, record)
    except IndexFormatError as exc:
        return [str(exc)]
    return file_problems(folder, manifest, full=full)



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
        manifest: dict | None = read_root(root)
        root_problem = None
    except IndexFormatError as exc:
        manifest, root_problem = None, str(exc)
        if not site_folders(root):
            raise IndexFormatError(f"{root} is not an index: {exc}") from None
    sites = {site: verify_shard(root, site, full=full) for site in list_sites(root, manifest)}
    notes = []
    for site in sites:
        site_dir = root / "sites" / site
        if is_legacy(site_dir):
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
        stray = [p.name for p in (root / "sites").iterdir() if LEGACY_STRAY.fullmatch(p.name)]
        if stray:
            notes.append(f"left over by an interrupted swap: {', '.join(sorted(stray))} (the next mvk index "
                         f"restores or removes it)")
    notes += work_notes(root, full=full)
    notes += space_notes(root, manifest, sites)
    return IndexCheck(root, root_problem, sites, notes)


def space_notes(root: Path, manifest: dict | None, sites: dict[str, list[str]]) -> list[str]:
    """The index's embedding spaces, and the sound shards that have no vectors in one yet (served from the
    others meanwhile; the next ``mvk index`` adds them)."""
    from search.manifest import shard_manifest
    from search.spaces import spaces_of
    spaces = spaces_of(manifest or {})
    if len(spaces) < 2:
        return []
    out = [f"{len(spaces)} embedding spaces: " + ", ".join(f"{s.name} (dim {s.dim})" for s in spaces)]
    for site, problems in sites.items():
        if problems:
            continue
        have = set((shard_manifest(root, site) or {}).get("spaces") or {})
        missing = [s.name for s in spaces[1:] if s.name not in have]
        if missing:
            out.append(f"site {site} has no vectors in the space {', '.join(missing)} yet (searches use its other "
                       f"spaces; the next mvk index adds them)")
    return out

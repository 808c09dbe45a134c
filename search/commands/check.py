"""`mvk check`: verify every file of an index against its checksums and say what repairs it"""
from __future__ import annotations

import argparse

NAME = "check"
HELP = "verify every file of an index against its checksums and say what repairs what is broken"
DESCRIPTION = """\
Verify an index built by `mvk index`: the root manifest, and for every dive site its pointer to the
current shard version, the shard manifest and every shard file (size and SHA-256, read in full).
Every broken file is listed (missing, truncated, or changed at the same size), with what repairs it.

Exit code 0 when everything matches, 1 when something is broken, 2 when the folder is no index.

Example:
  mvk check idx
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("index", metavar="IDX", help="the index folder (made by mvk index)")
    parser.add_argument("--quick", action="store_true", help="compare sizes only (no checksums)")


def format_check(check: "object", *, quick: bool = False) -> str:
    """The report of ``search.store.check_index``: per site ok or each problem, and what repairs it. ``quick``:
    the check compared sizes only, and the last line says so instead of claiming checksums."""
    from search.store import IndexCheck
    assert isinstance(check, IndexCheck)
    root = check.root
    lines = [f"checked {len(check.sites)} shards of {root}"]
    if check.root_problem:
        lines += [f"BROKEN root manifest: {check.root_problem}",
                  f"  repair: mvk index COLLECTION --index {root} rewrites it from the shard manifests "
                  f"(searches rebuild it in memory meanwhile)"]
    for site, problems in check.sites.items():
        if not problems:
            lines.append(f"ok      {site}")
            continue
        lines += [f"BROKEN  {site}: {p}" for p in problems]
        lines.append(f"  repair: mvk index COLLECTION --index {root} --site {site} rewrites this shard from its "
                     f"parts in {root / '.work'} (videos whose parts are gone are recomputed); until then "
                     f"searches skip it")
    lines += [f"note: {n}" for n in check.notes]
    broken = check.broken + (["the root manifest"] if check.root_problem else [])
    ok = ("every file has its recorded size (--quick: no checksum computed)" if quick
          else "every file matches its checksum")
    lines.append(f"{len(broken)} broken: {', '.join(broken)}" if broken else ok)
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from search.store import check_index
    check = check_index(args.index, full=not args.quick)
    print(format_check(check, quick=args.quick))
    return 0 if check.ok else 1

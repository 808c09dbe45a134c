"""``python -m indexer``: segmentation and index building."""
from __future__ import annotations

from collections.abc import Sequence

from search import clikit

COMMANDS = ("indexer.commands.index", "indexer.commands.segment")


def main(argv: Sequence[str] | None = None) -> int:
    return clikit.main("python -m indexer", "Segment videos and build the per-site index.", COMMANDS, argv)

"""``python -m search``: the search package's own commands."""
from __future__ import annotations

from collections.abc import Sequence

from search import clikit

COMMANDS = ("search.commands.search", "search.commands.check", "search.commands.models")


def main(argv: Sequence[str] | None = None) -> int:
    return clikit.main("python -m search", "Query a built index.", COMMANDS, argv)

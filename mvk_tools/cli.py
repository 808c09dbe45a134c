"""``python -m mvk_tools``: collections, synthetic data, the known-item-search benchmark."""
from __future__ import annotations

from collections.abc import Sequence

from search import clikit

COMMANDS = (
    "mvk_tools.commands.catalog",
    "mvk_tools.commands.synth",
    "mvk_tools.commands.kis",
    "mvk_tools.commands.captions",
    "mvk_tools.commands.submit",
    "mvk_tools.commands.survey",
)


def main(argv: Sequence[str] | None = None) -> int:
    return clikit.main("python -m mvk_tools", "MVK collections, synthetic data and the KIS benchmark.", COMMANDS, argv)

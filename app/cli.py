"""``mvk``: the one console command; every package's subcommands in one place."""
from __future__ import annotations

from collections.abc import Sequence

import indexer.cli
import mvk_tools.cli
import search.cli
from search import clikit

COMMANDS = (
    *indexer.cli.COMMANDS,
    *search.cli.COMMANDS,
    *mvk_tools.cli.COMMANDS,
    "app.commands.app",
    "app.commands.demo",
    "app.commands.serve",
)

DESCRIPTION = """\
Text-to-video retrieval for underwater video archives (Marine Video Kit).

Typical session:
  mvk catalog COLLECTION                       list the sites and videos found
  mvk index COLLECTION --all --index IDX       segment, embed and index every site
  mvk search "a turtle over coral" --index IDX rank frames for a text query
  mvk check IDX                                verify every index file against its checksum
  mvk kis QUERIES.csv --index IDX --out RUN    known-item-search benchmark
  mvk survey "a turtle" --index IDX --out DIR  presence, MaxN and occurrence records for a query
  mvk app --index IDX --collection COLLECTION  the browser front end
  mvk serve --index IDX                        a JSON HTTP API for other programs
  mvk submit --video V --time S                submit an answer to a DRES server
"""


def main(argv: Sequence[str] | None = None) -> int:
    return clikit.main("mvk", DESCRIPTION, COMMANDS, argv)

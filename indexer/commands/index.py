"""`mvk index`: segment, embed and index the videos of a collection, one shard per dive site"""
from __future__ import annotations

import argparse

NAME = "index"
HELP = "segment, embed and index the videos of a collection, one shard per dive site"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    raise NotImplementedError("mvk index is not built yet")

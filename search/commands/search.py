"""`mvk search`: rank the frames of an index for a text or image query"""
from __future__ import annotations

import argparse

NAME = "search"
HELP = "rank the frames of an index for a text or image query"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    raise NotImplementedError("mvk search is not built yet")

"""`mvk catalog`: list the sites and videos of a collection"""
from __future__ import annotations

import argparse

NAME = "catalog"
HELP = "list the sites and videos of a collection"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    raise NotImplementedError("mvk catalog is not built yet")

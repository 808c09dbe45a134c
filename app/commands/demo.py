"""`mvk demo`: build a small demo collection, index it and open the app"""
from __future__ import annotations

import argparse

NAME = "demo"
HELP = "build a small demo collection, index it and open the app"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    raise NotImplementedError("mvk demo is not built yet")

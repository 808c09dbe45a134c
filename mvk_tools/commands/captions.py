"""`mvk captions`: write a clipcap-style query set of automatic captions for random target frames"""
from __future__ import annotations

import argparse

NAME = "captions"
HELP = "write a clipcap-style query set of automatic captions for random target frames"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    raise NotImplementedError("mvk captions is not built yet")

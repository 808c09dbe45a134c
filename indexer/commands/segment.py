"""`mvk segment`: segment a video into object tracks from DINO attention; --eval scores against ground truth"""
from __future__ import annotations

import argparse

NAME = "segment"
HELP = "segment a video into object tracks from DINO attention; --eval scores against ground truth"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    raise NotImplementedError("mvk segment is not built yet")

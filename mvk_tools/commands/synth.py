"""`mvk synth`: write a small synthetic MVK-like collection with ground-truth masks"""
from __future__ import annotations

import argparse

NAME = "synth"
HELP = "write a small synthetic MVK-like collection with ground-truth masks"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    raise NotImplementedError("mvk synth is not built yet")

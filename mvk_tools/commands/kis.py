"""`mvk kis`: known-item-search benchmark: the rank of each query's target frame, hit@k, MRR, plots"""
from __future__ import annotations

import argparse

NAME = "kis"
HELP = "known-item-search benchmark: the rank of each query's target frame, hit@k, MRR, plots"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    raise NotImplementedError("mvk kis is not built yet")

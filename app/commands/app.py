"""`mvk app`: start the Streamlit app on an index and a collection"""
from __future__ import annotations

import argparse

NAME = "app"
HELP = "start the Streamlit app on an index and a collection"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    raise NotImplementedError("mvk app is not built yet")

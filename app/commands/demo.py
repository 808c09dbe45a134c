"""`mvk demo`: build a small demo collection, index it and open the app"""
from __future__ import annotations

import argparse
import sys

NAME = "demo"
HELP = "build a small demo collection, index it and open the app"
DESCRIPTION = """\
Build a small demo collection (synthetic dive sites from `mvk synth`, plus the real brackish-water clips of
../shared/data when present), index it with the pretrained models and start the app on it.

Offline without the pretrained weights it stops and says how to get them; `--random-weights` runs the whole
chain with randomly initialised models instead (a smoke run: the rankings are meaningless, and the app
shows a banner saying so). A second run reuses the collection and index in --out.

  mvk demo                       pretrained models (needs their weights, see the README)
  mvk demo --random-weights      smoke run, no weights needed (about a minute on 2 cores)
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from search.clikit import add_model_weight_arguments

    parser.add_argument("--out", default="mvk-demo", help="folder for the demo collection and index "
                                                          "(default ./mvk-demo)")
    parser.add_argument("--no-open", action="store_true", help="do not open a browser window (headless server)")
    parser.add_argument("--no-serve", action="store_true", help="build the collection and index, then stop")
    parser.add_argument("--port", type=int, default=8501, help="port to serve on (default 8501)")
    add_model_weight_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from app.demo import build_demo, demo_paths, find_real_clips
    from app.launch import run_streamlit, streamlit_command
    from indexer.progress import TqdmProgress
    from search.errors import MissingWeightsError

    paths = demo_paths(args.out)
    clips = find_real_clips()
    print(f"demo collection: {paths.collection} (synthetic sites"
          + (f" + {len(clips)} real clips)" if clips else "; no real clips found)"), file=sys.stderr)
    if args.random_weights:
        print("note: --random-weights: a smoke run with randomly initialised models; rankings are meaningless",
              file=sys.stderr)
    try:
        result = build_demo(paths, random_weights=args.random_weights, device=args.device, progress=TqdmProgress())
    except MissingWeightsError as exc:
        raise MissingWeightsError(f"{exc}\nOr try the whole chain without weights: mvk demo --random-weights "
                                  "(a smoke run; its rankings are meaningless)") from exc
    for site, path, msg in result.errors:
        print(f"warning: {site}/{path}: {msg}" if path else f"warning: {site}: {msg}", file=sys.stderr)
    print(f"demo index: {paths.index} ({sum(s.frames for s in result.sites)} frames, "
          f"{result.wall_seconds:.0f} s)", file=sys.stderr)
    if args.no_serve:
        print(f"start it with: mvk app --index {paths.index} --collection {paths.collection}"
              + (" --random-weights" if args.random_weights else ""))
        return 0
    cmd = streamlit_command(paths.index, paths.collection, port=args.port, headless=args.no_open,
                            random_weights=args.random_weights, device=args.device, demo=True)
    return run_streamlit(cmd)

"""`mvk demo`: build a small demo collection, index it and open the app"""
from __future__ import annotations

import argparse
import sys

NAME = "demo"
HELP = "build a small demo collection, index it and open the app"
DESCRIPTION = """\
Build a small demo collection (synthetic dive sites from `mvk synth`, plus the real brackish-water clips of
../shared/data when present), index it with the pretrained models (CLIP ViT-B-32 'openai' and DINO
dino-vits16), write a KIS query set from the synthetic ground truth into the index and start the app on it.

Offline without the pretrained weights it stops before writing anything and says how to get each one (or
pass the weight files with --clip-checkpoint and --dino-checkpoint). `--random-weights` runs the whole chain
without any weights instead: a tiny random CLIP and the colour-statistics baseline for segmentation (a smoke
run: the rankings are meaningless, and the app shows a banner saying so; the colour baseline does find the
synthetic shapes, so masks, boxes and tracks appear). A second run reuses the collection and index in --out.

  mvk demo                       pretrained models (needs their weights, see the README)
  mvk demo --random-weights      smoke run, no weights needed (about a minute on 2 cores)
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from search.clikit import add_deprecated_alias, add_model_weight_arguments

    parser.add_argument("--out", default="mvk-demo", help="folder for the demo collection and index "
                                                          "(default ./mvk-demo)")
    parser.add_argument("--no-open", action="store_true",
                        help="do not open a browser window (the server is headless either way: it never waits "
                             "on the terminal)")
    parser.add_argument("--no-serve", action="store_true", help="build the collection and index, then stop")
    parser.add_argument("--port", type=int, default=8501, help="port to serve on (default 8501)")
    parser.add_argument("--clip-checkpoint", default=None, metavar="FILE",
                        help="local open_clip checkpoint file of CLIP ViT-B-32, instead of the cached 'openai' weights")
    parser.add_argument("--dino-checkpoint", dest="checkpoint", default=None, metavar="FILE",
                        help="local checkpoint file of the DINO backbone (dino-vits16), instead of the cached one")
    add_deprecated_alias(parser, "--checkpoint", "--dino-checkpoint", "checkpoint")
    add_model_weight_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from app.demo import build_demo, demo_paths, find_real_clips
    from app.launch import app_url, check_port, run_streamlit, streamlit_command
    from indexer.progress import TqdmProgress
    from search.errors import InputError

    host = "127.0.0.1"
    if not args.no_serve:
        check_port(host, args.port)                 # before anything is built
    if args.random_weights and (args.clip_checkpoint or args.checkpoint):
        raise InputError("--random-weights takes no checkpoint files (it is the run without any weights)")
    paths = demo_paths(args.out, random_weights=args.random_weights)
    clips = find_real_clips()
    if args.random_weights:
        print("note: --random-weights: a smoke run with a randomly initialised CLIP and the colour baseline for "
              "segmentation; rankings are meaningless", file=sys.stderr)
    result = build_demo(paths, random_weights=args.random_weights, device=args.device,
                        clip_checkpoint=args.clip_checkpoint, checkpoint=args.checkpoint, progress=TqdmProgress())
    print(f"demo collection: {paths.collection} (synthetic sites"
          + (f" + {len(clips)} real clips)" if clips else "; no real clips found)"), file=sys.stderr)
    for site, path, msg in result.errors:
        print(f"warning: {site}/{path}: {msg}" if path else f"warning: {site}: {msg}", file=sys.stderr)
    print(f"demo index: {paths.index} ({sum(s.frames for s in result.sites)} frames, "
          f"{result.wall_seconds:.0f} s)", file=sys.stderr)
    if args.no_serve:
        print(f"start it with: mvk app --index {paths.index} --collection {paths.collection}"
              + (" --random-weights" if args.random_weights else ""))
        return 0
    cmd = streamlit_command(paths.index, paths.collection, port=args.port, host=host,
                            random_weights=args.random_weights, device=args.device, demo=True)
    return run_streamlit(cmd, url=app_url(host, args.port), open_browser=not args.no_open)

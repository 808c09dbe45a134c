"""`mvk app`: start the Streamlit app on an index and a collection"""
from __future__ import annotations

import argparse
import os

NAME = "app"
HELP = "start the Streamlit app on an index and a collection"
DESCRIPTION = """\
Start the browser front end: search (text or an example image), the KIS benchmark, KIS query-collection
sessions and index management. The app reads and serves only files inside --index and --collection.

  mvk app --index IDX --collection COLLECTION            then open http://localhost:8501
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from search.clikit import add_deprecated_alias, add_model_weight_arguments

    parser.add_argument("--index", required=True, help="index folder (an existing one, unless --new-index)")
    parser.add_argument("--new-index", action="store_true",
                        help="create the --index folder if it is missing, to build the index from the Index page")
    parser.add_argument("--collection", default=None,
                        help="the collection the index was built from: needed to play videos and to add or "
                             "rebuild sites (default: none)")
    parser.add_argument("--port", type=int, default=8501, help="port to serve on (default 8501)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 serves "
                             "the network, with no authentication)")
    parser.add_argument("--no-open", action="store_true",
                        help="do not open a browser window (the server is headless either way: it never waits "
                             "on the terminal)")
    parser.add_argument("--clip-checkpoint", dest="clip_checkpoint", default=None, metavar="FILE",
                        help="local open_clip checkpoint file, for an index built from one")
    add_deprecated_alias(parser, "--checkpoint", "--clip-checkpoint", "clip_checkpoint")
    add_model_weight_arguments(parser)
    parser.add_argument("--follow-outside-links", action="store_true",
                        help="play videos whose symbolic links in the collection lead outside it (refused by "
                             "default, as mvk index refuses to index them)")


def run(args: argparse.Namespace) -> int:
    from app.launch import app_url, check_folders, check_port, run_streamlit, streamlit_command

    check_port(args.host, args.port)
    index, collection = check_folders(args.index, args.collection, create=args.new_index)
    if args.follow_outside_links:
        from app.security import ENV_OUTSIDE_LINKS
        os.environ[ENV_OUTSIDE_LINKS] = "1"         # read where a collection file is resolved (and by the app)
    cmd = streamlit_command(index, collection, port=args.port, host=args.host,
                            random_weights=args.random_weights, device=args.device,
                            clip_checkpoint=args.clip_checkpoint)
    return run_streamlit(cmd, url=app_url(args.host, args.port), open_browser=not args.no_open)

"""`mvk serve`: a JSON HTTP API over an index, for other programs"""
from __future__ import annotations

import argparse
import ipaddress
import os
import sys

NAME = "serve"
HELP = "a JSON HTTP API over an index, for other programs"
DESCRIPTION = """\
Serve an index over HTTP (FastAPI + uvicorn): text and image search with filters, fusion and paging, "A then B
within S seconds", frame thumbnails with object masks and boxes, videos for playback, index information,
health. One CLIP model and one opened index are shared by every request; the index reopens by itself when a
shard is rebuilt. OpenAPI documentation at http://HOST:PORT/docs. Every query is appended to the event log.

  mvk serve --index IDX --collection COLLECTION
  curl 'http://127.0.0.1:8000/search?q=a+turtle+over+coral&k=10'

Listens on 127.0.0.1 (this machine only) unless --host says otherwise; --token (or MVK_API_TOKEN) requires
'Authorization: Bearer TOKEN' on every request. Only files inside --index and --collection are served.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from search.clikit import add_encoder_arguments, add_threads_argument

    parser.add_argument("--index", required=True, help="the index folder (made by mvk index)")
    parser.add_argument("--collection", default=None,
                        help="the collection the index was built from, to serve its videos (default: none)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument("--follow-outside-links", action="store_true",
                        help="play videos whose symbolic links in the collection lead outside it (refused by "
                             "default, as mvk index refuses to index them)")
    parser.add_argument("--token", default=None,
                        help="require 'Authorization: Bearer TOKEN' on every request (default: $MVK_API_TOKEN; "
                             "prefer the variable: a flag shows in the process list)")
    parser.add_argument("--log", default=None,
                        help="JSONL event log of every query (default: $MVK_LOG, else IDX/logs/events.jsonl)")
    add_threads_argument(parser, "request (default 1: requests run side by side)")
    add_encoder_arguments(parser)


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import uvicorn

    from app.api import ENV_TOKEN, create_app
    from app.launch import check_folders
    from app.service import SearchService
    from search.clikit import encoder_choice
    from search.identity import encoder_for_index
    from mvk_tools.eventlog import EventLog, default_log_path
    from search.errors import InputError
    from search.store import open_index

    if not 0 < args.port < 65536:
        raise InputError(f"--port must be 1..65535, got {args.port}")
    if not Path(args.index).expanduser().is_dir():
        raise InputError(f"no index folder at {args.index} (build one with mvk index)")
    index_root, collection = check_folders(args.index, args.collection)
    if args.follow_outside_links:
        from app.security import ENV_OUTSIDE_LINKS
        os.environ[ENV_OUTSIDE_LINKS] = "1"         # read where a collection file is resolved (and by the app)
    token = args.token if args.token is not None else os.environ.get(ENV_TOKEN) or None
    if token is not None and (token != token.strip() or not token.isprintable()):
        raise InputError(f"the bearer token (--token or {ENV_TOKEN}) has spaces at its ends or invisible "
                         "characters: HTTP drops spaces around a header's value, so clients could never send it "
                         "exactly; use letters, digits and punctuation only")
    index = open_index(index_root, device=args.device)
    encoder = encoder_for_index(index.encoder, encoder_choice(args), device=args.device, where=index_root)
    log_path = args.log or default_log_path(index_root)
    service = SearchService(index_root, collection, device=args.device, encoder=encoder, log=EventLog(log_path),
                            choice=encoder_choice(args), threads=args.threads)
    print(f"mvk serve: {len(index.frames):,} frames at {len(index.shards)} sites from {index_root}"
          f"{'' if not index.errors else f' ({len(index.errors)} shards skipped: ' + ', '.join(index.errors) + ')'}",
          file=sys.stderr)
    print(f"mvk serve: http://{args.host}:{args.port}/docs · event log {log_path} · "
          f"{'bearer token required' if token else 'no token'}", file=sys.stderr)
    if not is_loopback(args.host) and not token:
        print(f"mvk serve: warning: listening on {args.host} without a token: anyone who can reach this port can "
              f"search the index and read its videos (set {ENV_TOKEN} or --token)", file=sys.stderr)
    uvicorn.run(create_app(service, token=token), host=args.host, port=args.port, log_level="warning",
                access_log=False)
    return 0

"""`mvk submit`: submit an answer to a DRES evaluation server (VBS, LSC)"""
from __future__ import annotations

import argparse

from search.clikit import positive_float

NAME = "submit"
HELP = "submit an answer to a DRES evaluation server (VBS, LSC)"
DESCRIPTION = """\
Submit a known-item-search answer (a video and a moment or interval in it) or a text answer to a DRES server's
v2 API, or list its evaluations. The server and credentials come from flags or the environment (MVK_DRES_URL,
MVK_DRES_USER, MVK_DRES_PASSWORD, MVK_DRES_EVALUATION, MVK_DRES_COLLECTION); they are never stored in an index.
Without --evaluation, the one ACTIVE evaluation is used. Every submission, accepted or not, is appended to the
event log (--log, default $MVK_LOG, else ./mvk-events.jsonl). The video is named as DRES's media collection
names it: mvk's video id (the file name without extension) unless you pass another name.

  export MVK_DRES_URL=https://dres.example.org MVK_DRES_USER=team7 MVK_DRES_PASSWORD=...
  mvk submit --list
  mvk submit --video 0042 --time 83.5                  the moment 83.5 s into video 0042
  mvk submit --video 0042 --time 80 --end 90           the interval 80-90 s
  mvk submit --text "a green turtle"                   a text (question-answering) answer
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    what = parser.add_argument_group("the answer (one of --video/--time, --text, --list)")
    what.add_argument("--video", default=None, help="the video's name in the DRES collection (mvk's video id)")
    what.add_argument("--time", type=float, default=None, help="seconds into the video (the start of --end)")
    what.add_argument("--end", type=float, default=None, help="end of the interval in seconds (default: --time)")
    what.add_argument("--text", default=None, help="a text answer instead of a video moment")
    what.add_argument("--list", action="store_true", help="only list the evaluations this user can see")
    server = parser.add_argument_group("the server (default: the MVK_DRES_* variables)")
    server.add_argument("--dres-url", default=None, help="e.g. https://dres.example.org ($MVK_DRES_URL)")
    server.add_argument("--dres-user", default=None, help="user name ($MVK_DRES_USER)")
    server.add_argument("--dres-password", default=None,
                        help="password ($MVK_DRES_PASSWORD; prefer the variable: a flag shows in the process list)")
    server.add_argument("--evaluation", default=None, help="evaluation id (default: $MVK_DRES_EVALUATION, else "
                        "the one active evaluation)")
    server.add_argument("--collection", default=None, help="DRES media collection name, when the server needs "
                        "it ($MVK_DRES_COLLECTION)")
    server.add_argument("--timeout", type=positive_float, default=10.0, help="seconds per request (default 10)")
    parser.add_argument("--log", default=None, help="JSONL event log (default: $MVK_LOG, else ./mvk-events.jsonl)")
    parser.add_argument("--json", action="store_true", help="print the server's answer as JSON")


def run(args: argparse.Namespace) -> int:
    import json
    import os
    from pathlib import Path

    from mvk_tools.dres import ENV_URL, DresClient, DresSettings, submit_logged
    from mvk_tools.eventlog import EventLog, default_log_path
    from search.errors import InputError

    kis = args.video is not None or args.time is not None or args.end is not None
    if sum((kis, args.text is not None, args.list)) != 1:
        raise InputError("give one answer: --video with --time (and --end), or --text, or --list")
    if kis and (args.video is None or args.time is None):
        raise InputError("a video answer needs both --video and --time")
    settings = DresSettings.from_env(os.environ, url=args.dres_url, username=args.dres_user,
                                     password=args.dres_password, evaluation=args.evaluation,
                                     collection=args.collection, timeout=args.timeout)
    if settings is None:
        raise InputError(f"no DRES server: pass --dres-url URL or set {ENV_URL}")
    client = DresClient(settings)
    if args.list:
        evaluations = client.evaluations()
        if args.json:
            print(json.dumps(evaluations, indent=2))
        for e in evaluations if not args.json else []:
            print(f"{e.get('id')}\t{e.get('status')}\t{e.get('name')}")
        return 0
    log = EventLog(args.log or default_log_path(None) or Path("mvk-events.jsonl"))
    reply = submit_logged(client, log, source="cli", video=args.video, start_s=args.time, end_s=args.end,
                          text=args.text)
    if args.json:
        print(json.dumps(reply, indent=2))
    else:
        print(f"{reply.get('submission', '?')}: {reply.get('description', '')} (evaluation {reply['evaluation']})")
    return 0 if reply.get("status", True) else 1

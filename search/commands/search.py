"""`mvk search`: rank the frames of an index for a text or image query"""
from __future__ import annotations

import argparse

from search.clikit import add_model_weight_arguments, positive_float, positive_int

NAME = "search"
HELP = "rank the frames of an index for a text or image query"
DESCRIPTION = """Rank the frames of an index built by `mvk index` for a text query (or an image: --image).

The query is encoded with the index's own CLIP model (recorded in its manifest) unless --model/--pretrained/
--checkpoint say otherwise; an index built with another model is refused. Each frame's score fuses the
frame's similarity with its best object's (--fusion). Examples:

  mvk search "a green turtle resting on coral" --index idx
  mvk search "diver" --index idx --site RajaAmpat_Jan2017 --group-by video --json
  mvk search "" --image frame.jpg --index idx
  mvk search "a diver" --then "a shark" --within 20 --index idx
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("text", nargs="?", default="", help="what to look for (omit with --image)")
    parser.add_argument("--index", required=True, help="the index folder (made by mvk index)")
    parser.add_argument("-k", "--k", type=positive_int, default=20, help="number of results (default 20)")
    parser.add_argument("--fusion", default="max", choices=("frame", "object", "max", "weighted"),
                        help="how a frame's and its best object's scores combine (default max)")
    parser.add_argument("--weight", type=float, default=0.5,
                        help="object weight w of --fusion weighted: (1-w)*frame + w*object (default 0.5)")
    parser.add_argument("--site", action="append", default=[], help="only this dive site (repeatable)")
    parser.add_argument("--place", action="append", default=[], help="only this place (repeatable)")
    parser.add_argument("--date-from", default="", help="only footage from this month on (YYYY-MM)")
    parser.add_argument("--date-to", default="", help="only footage up to this month (YYYY-MM)")
    parser.add_argument("--group-by", choices=("video",), default=None, help="one result (the best frame) per video")
    parser.add_argument("--image", default=None, help="query with this image file instead of a text ('more like this')")
    parser.add_argument("--then", default=None,
                        help="temporal query: TEXT then this text in the same video within --within seconds")
    parser.add_argument("--within", type=positive_float, default=10.0, help="seconds allowed between the two texts of --then "
                        "(default 10)")
    parser.add_argument("--exact", action="store_true", help="score every frame exactly even in an approximate index")
    parser.add_argument("--verbose", action="store_true",
                        help="also say how long the index took to open and how much memory it holds resident")
    parser.add_argument("--json", action="store_true", help="print JSON (results, notes, skipped shards) instead of a table")
    parser.add_argument("--model", default=None, help="open_clip model (default: the one recorded in the index)")
    parser.add_argument("--pretrained", default=None, help="open_clip pretrained tag (default: the index's)")
    parser.add_argument("--checkpoint", default=None, help="local open_clip checkpoint file (default: the index's "
                        "model with its pretrained tag)")
    add_model_weight_arguments(parser)


def encoder_arguments(args: argparse.Namespace, built: dict) -> dict:
    """Encoder to load: the command line's choice, else the index's recorded one."""
    from search.errors import MissingWeightsError
    model = args.model or built.get("model")
    if not model:
        from search.encoder import DEFAULT_MODEL
        model = DEFAULT_MODEL
    random_weights = bool(args.random_weights)
    checkpoint = args.checkpoint
    pretrained = args.pretrained
    if random_weights and not built.get("random_weights") and not args.model and built.get("model"):
        from search.encoder import describe
        from search.errors import ModelMismatchError
        raise ModelMismatchError(f"the index was built with {describe(built)}; --random-weights cannot query it: "
                                 "drop the flag")
    if not random_weights and checkpoint is None and pretrained is None and not args.model:
        if built.get("checkpoint"):
            raise MissingWeightsError(f"the index was built from checkpoint file {built['checkpoint'].get('name')}: "
                                      f"pass it with --checkpoint FILE")
        if built.get("random_weights"):
            random_weights = True
        pretrained = built.get("pretrained")
    if pretrained is None and not random_weights and checkpoint is None:
        from search.encoder import DEFAULT_PRETRAINED
        pretrained = DEFAULT_PRETRAINED
    return {"model": model, "pretrained": pretrained, "checkpoint": checkpoint, "random_weights": random_weights,
            "device": args.device}


def _read_image(path: str):
    from search.images import read_image

    return read_image(path)


TIME_COLUMNS = ("time", "first_time", "then_time", "gap")                       # seconds, one decimal
SCORE_COLUMNS = ("score", "frame_score", "object_score", "first_score", "then_score")
OBJECT_COLUMNS = ("track_id", "x0", "y0", "x1", "y1")                        # -1 / NaN: the frame has no object


def format_table(df, columns) -> str:
    """The results as aligned text: every time in seconds with one decimal, scores with three, and "-" where a
    frame has no object (no object score, track or box)."""
    import pandas as pd

    if df.empty:
        return "no results"
    show = df.loc[:, [c for c in columns if c in df.columns]].copy()

    def cell(column: str, v) -> str:
        if v is None or (isinstance(v, float) and pd.isna(v)) or v is pd.NA:
            return "-"
        if column in TIME_COLUMNS:
            return f"{float(v):.1f}"
        if column in SCORE_COLUMNS:
            return f"{float(v):.3f}"
        if column in OBJECT_COLUMNS:
            return "-" if int(v) < 0 else str(int(v))
        return str(v)

    for c in show.columns:
        show[c] = [cell(c, v) for v in show[c]]
    return show.to_string(index=False)


def run(args: argparse.Namespace) -> int:
    import json
    import sys

    from search import query as Q
    from search.encoder import load_encoder
    from search.errors import QueryError
    from search.store import check_encoder, open_index

    if args.image and args.then:
        raise QueryError("--image and --then cannot be combined")
    if not args.image and not args.text.strip():
        raise QueryError("the query text is empty (give a text, or --image PATH)")
    image = _read_image(args.image) if args.image else None
    import time
    started = time.perf_counter()
    index = open_index(args.index, device=args.device)
    opened = time.perf_counter() - started
    filters = Q.Filters(sites=tuple(args.site), places=tuple(args.place), date_from=args.date_from,
                        date_to=args.date_to)
    Q.filter_mask(index, filters)                     # unknown sites, places, bad months: before the model loads
    encoder = load_encoder(**encoder_arguments(args, (index.manifest or {}).get("encoder") or {}))
    check_encoder(index, encoder.identity())
    if args.then is not None:
        df = Q.temporal_search(index, encoder, args.text, args.then, within=args.within, k=args.k,
                               fusion=args.fusion, weight=args.weight, filters=filters, group_by=args.group_by)
        columns = ("rank", "score", "site", "video_id", "first_time", "then_time", "gap", "first_score", "then_score")
    else:
        df = Q.search(index, encoder, image if image is not None else args.text, k=args.k, fusion=args.fusion,
                      weight=args.weight, filters=filters, group_by=args.group_by, exact=True if args.exact else None)
        columns = ("rank", "score", "frame_score", "object_score", "site", "video_id", "frame_index", "time",
                   "track_id", "x0", "y0", "x1", "y1")
    notes = list(df.attrs.get("notes", []))
    if args.verbose:
        from search.store import memory_use
        print(f"index {args.index}: {len(index.frames):,} frames, {len(index.objects):,} objects in "
              f"{len(index.shards)} shards, opened memory-mapped in {opened:.2f} s; "
              f"{memory_use(index).describe()}", file=sys.stderr)
    if args.json:
        records = json.loads(df.to_json(orient="records"))
        print(json.dumps({"query": args.text, "image": args.image, "then": args.then,
                          "encoder": encoder.identity(), "notes": notes, "skipped_shards": index.errors,
                          "results": records}, indent=2))
    else:
        print(format_table(df, columns))
        for note in notes:
            print(f"note: {note}", file=sys.stderr)
    return 0

"""`mvk search`: rank the frames of an index for a text or image query"""
from __future__ import annotations

import argparse

from search.clikit import add_encoder_arguments, add_threads_argument, positive_float, positive_int

NAME = "search"
HELP = "rank the frames of an index for a text or image query"
DESCRIPTION = """Rank the frames of an index built by `mvk index` for a text query (or an image: --image), and act on
the results: more like one of them (--like), re-rank by liked and disliked ones (--positive/--negative), ask for
an object in a part of the frame (--where/--cells), or a sequence of events (--then, repeatable).

The query is encoded with the index's own CLIP model (recorded in its manifest) unless --model/--pretrained/
--clip-checkpoint say otherwise; an index built with another model is refused. Each frame's score fuses the
frame's similarity with its best object's (--fusion). A result is named SITE/VIDEO_ID/FRAME_INDEX (add /TRACK_ID
for one of its objects), as --json prints it in "id". Examples:

  mvk search "a green turtle resting on coral" --index idx
  mvk search "diver" --index idx --site RajaAmpat_Jan2017 --group-by video --json
  mvk search "" --image frame.jpg --index idx
  mvk search "a diver" --then "a shark" --then "a turtle" --within 20 --index idx
  mvk search --like Oahu_Jul2022/0003/120 --index idx               more like this frame
  mvk search --like Oahu_Jul2022/0003/120/4 --index idx             more like its object 4
  mvk search "a fish" --positive Oahu_Jul2022/0003/120 --negative Oahu_Jul2022/0001/30 --index idx
  mvk search "a fish" --where top-left --index idx                  the fish in the top left third
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("text", nargs="?", default="", help="what to look for (omit with --image or --like)")
    parser.add_argument("--index", required=True, help="the index folder (made by mvk index)")
    parser.add_argument("-k", "--k", type=positive_int, default=20, help="number of results (default 20)")
    parser.add_argument("--fusion", default="max", choices=("frame", "object", "max", "weighted"),
                        help="how a frame's and its best object's scores combine (default max)")
    parser.add_argument("--weight", type=float, default=0.5,
                        help="object weight w of --fusion weighted: (1-w)*frame + w*object (default 0.5)")
    parser.add_argument("--space-fusion", default="rrf", metavar="rrf|zscore|SPACE",
                        help="an index of several embedding spaces (mvk index --model A --model B): fuse their "
                             "rankings by reciprocal rank (rrf, default) or by z-normalised scores (zscore), or give "
                             "one space's name (its model) to search it alone")
    parser.add_argument("--site", action="append", default=[], help="only this dive site (repeatable)")
    parser.add_argument("--place", action="append", default=[], help="only this place (repeatable)")
    parser.add_argument("--date-from", default="", help="only footage from this month on (YYYY-MM)")
    parser.add_argument("--date-to", default="", help="only footage up to this month (YYYY-MM)")
    parser.add_argument("--group-by", choices=("video",), default=None, help="one result (the best frame) per video")
    parser.add_argument("--image", default=None, help="query with this image file instead of a text ('more like this')")
    parser.add_argument("--then", action="append", default=None, metavar="TEXT",
                        help="temporal query: TEXT then this text in the same video within --within seconds "
                             "(repeatable: A --then B --then C, each step within --within of the one before)")
    parser.add_argument("--within", type=positive_float, default=10.0, help="seconds allowed between two steps of "
                        "--then (default 10)")
    interact = parser.add_argument_group("after the first query")
    interact.add_argument("--like", default=None, metavar="ID",
                          help="more like this result: SITE/VIDEO_ID/FRAME_INDEX, or .../TRACK_ID for one of its "
                               "objects (the result itself comes first)")
    interact.add_argument("--whole-track", action="store_true",
                          help="with --like .../TRACK_ID: the mean vector of that object's whole track")
    interact.add_argument("--positive", action="append", default=[], metavar="ID",
                          help="a result you liked (repeatable): re-rank by relevance feedback")
    interact.add_argument("--negative", action="append", default=[], metavar="ID",
                          help="a result you disliked (repeatable)")
    interact.add_argument("--feedback", choices=("bayes", "rocchio"), default="bayes",
                          help="feedback model: bayes (SOMHunter's Bayesian update, default) or rocchio")
    interact.add_argument("--where", default=None, metavar="CELL[,CELL]",
                          help="position query: the matching object lies in these parts of a 3x3 grid (top-left, "
                               "top, top-right, left, center, right, bottom-left, bottom, bottom-right); frames "
                               "whose matching object lies elsewhere are down-weighted, not dropped")
    interact.add_argument("--cells", default=None, metavar="N[,N]",
                          help="the same as --where with cell numbers 0..8, row by row from the top left")
    tuning = parser.add_argument_group("approximate indexes")
    tuning.add_argument("--exact", action="store_true", help="score every frame exactly even in an approximate index")
    tuning.add_argument("--nprobe", type=positive_int, default=None,
                        help="IVF lists probed per table (an IVF index only; default: the index's own)")
    tuning.add_argument("--ef-search", type=positive_int, default=None,
                        help="HNSW nodes explored per table (an HNSW index only; default: at least the candidates)")
    parser.add_argument("--verbose", action="store_true",
                        help="also say how long the index took to open and how much memory it holds resident")
    parser.add_argument("--json", action="store_true", help="print JSON (results, notes, skipped shards) instead of a table")
    add_threads_argument(parser, "query (default 1: small calls gain nothing from more)")
    add_encoder_arguments(parser)


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


def build_query(args: argparse.Namespace):
    """The query value of the command line (``search.queries``); QueryError for combinations that mean nothing."""
    from search import queries as Qs
    from search.errors import QueryError

    if args.image and args.then:
        raise QueryError("--image and --then cannot be combined")
    if args.like and (args.image or args.then or args.text.strip()):
        raise QueryError("--like searches with a result's own vector: give no text, --image or --then with it")
    if args.whole_track and not args.like:
        raise QueryError("--whole-track goes with --like SITE/VIDEO_ID/FRAME_INDEX/TRACK_ID")
    if args.like:
        ref = Qs.ItemRef.parse(args.like)
        if args.whole_track and ref.track_id is None:
            raise QueryError(f"--whole-track needs an object: --like {args.like}/TRACK_ID")
        base = Qs.LikeQuery(ref, whole_track=args.whole_track)
    elif args.image:
        base = Qs.ImageQuery(_read_image(args.image), f"image {args.image}")
    elif args.text.strip():
        base = Qs.TextQuery(args.text)
    elif args.positive or args.negative:
        base = None
    else:
        raise QueryError("the query text is empty (give a text, or --image PATH, or --like ID)")
    if args.then is not None:
        for number, text in enumerate(args.then, 1):
            if not text.strip():
                raise QueryError(f"the --then text{f' number {number}' if len(args.then) > 1 else ''} is empty")
        if args.positive or args.negative:
            raise QueryError("--then and relevance feedback (--positive/--negative) cannot be combined")
        return Qs.SequenceQuery((base, *(Qs.TextQuery(t) for t in args.then)), args.within)
    if args.positive or args.negative:
        return Qs.FeedbackQuery(base, tuple(Qs.ItemRef.parse(r) for r in args.positive),
                                tuple(Qs.ItemRef.parse(r) for r in args.negative), args.feedback, display=args.k)
    return base


def run(args: argparse.Namespace) -> int:
    import json
    import sys
    import time

    import pandas as pd

    from search import queries as Qs
    from search.clikit import encoder_choice
    from search.errors import QueryError
    from search.query import Filters
    from search.scoring import SearchParams
    from search.service import QueryService

    if args.where and args.cells:
        raise QueryError("give the position once: --where NAMES or --cells NUMBERS")
    query = build_query(args)
    filters = Filters(sites=tuple(args.site), places=tuple(args.place), date_from=args.date_from,
                      date_to=args.date_to)
    options = Qs.Options(k=args.k, fusion=args.fusion, weight=args.weight, filters=filters, group_by=args.group_by,
                         exact=True if args.exact else None,
                         params=SearchParams(nprobe=args.nprobe, ef_search=args.ef_search),
                         space_fusion=args.space_fusion).with_cells(args.where or args.cells)
    service = QueryService(args.index, device=args.device, choice=encoder_choice(args), threads=args.threads)
    started = time.perf_counter()
    index, _ = service.opened()
    opened = time.perf_counter() - started
    from search.query import check_search_params, filter_mask
    filter_mask(index, filters)                      # unknown sites, places, bad months: before the model loads
    check_search_params(index, options.params)
    from search.spaces import check_fusion
    spaces = check_fusion(index.manifest, args.space_fusion)
    if not isinstance(query, Qs.LikeQuery) and not (isinstance(query, Qs.FeedbackQuery) and query.base is None):
        service.get_encoder()                         # the encoder rule's refusals before anything is ranked
    page = service.run(query, options, source="cli")
    df = page.rows
    if isinstance(query, Qs.SequenceQuery):
        columns = ("rank", "score", "site", "video_id", "first_time", "then_time", "gap", "first_score", "then_score")
        if len(query.steps) > 2:
            columns = ("rank", "score", "site", "video_id", "step_times", "step_scores")
    else:
        columns = ("rank", "score", "frame_score", "object_score", "site", "video_id", "frame_index", "time",
                   "track_id", "x0", "y0", "x1", "y1")
        if len(spaces) > 1:       # fused: the rank in each space instead of one space's similarities
            columns = ("rank", "score", *(f"rank in {name}" for name in spaces), "site", "video_id", "frame_index",
                       "time", "track_id")
            df = df.assign(**{f"rank in {name}": pd.array([r.get(name) for r in df["spaces"]], dtype="Int64")
                              for name in spaces})
    notes = list(page.notes)
    if args.verbose:
        from search.store import memory_use
        print(f"index {args.index}: {len(index.frames):,} frames, {len(index.objects):,} objects in "
              f"{len(index.shards)} shards, opened memory-mapped in {opened:.2f} s; "
              f"{memory_use(index).describe()}", file=sys.stderr)
    if args.json:
        records = json.loads(df.to_json(orient="records"))
        if "frame_index" in df.columns:
            for record in records:
                tail = f"/{record['track_id']}" if record.get("track_id", -1) >= 0 else ""
                record["id"] = f"{record['site']}/{record['video_id']}/{record['frame_index']}"
                record["object_id"] = record["id"] + tail if tail else None
        encoder = service.encoder.identity() if service.encoder is not None else index.encoder
        if len(spaces) > 1 or len(index.spaces()) > 1:
            encoder = {**encoder, "spaces": spaces, "space_fusion": args.space_fusion if len(spaces) > 1 else None}
        then = args.then[0] if args.then and len(args.then) == 1 else args.then
        print(json.dumps({"query": args.text, "image": args.image, "then": then, "like": args.like,
                          "positive": args.positive, "negative": args.negative, "described": page.query,
                          "encoder": encoder, "notes": notes, "skipped_shards": page.skipped_shards,
                          "results": records}, indent=2))
    else:
        print(format_table(df, columns))
        for note in notes:
            print(f"note: {note}", file=sys.stderr)
    return 0

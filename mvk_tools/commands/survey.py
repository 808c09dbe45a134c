"""`mvk survey`: from a query to survey evidence (presence, MaxN, sites, Darwin Core occurrences, plots)"""
from __future__ import annotations

import argparse

from search.clikit import add_encoder_arguments

NAME = "survey"
HELP = "presence, MaxN counts, per-site tables, Darwin Core occurrences and plots for a query"
DESCRIPTION = """\
Turn a query into numbers a survey can use. An object matches when its score is at least the threshold T;
per video: presence, first and last time seen, distinct matching tracks, MaxN (the most matching tracks
visible in one frame, the maximum over frames) and its time; per site and month: videos surveyed, videos
with presence, total MaxN. Written to OUT:

  presence.csv      one row per video surveyed (missed_chance: calibrated chance an absent video was a miss)
  occurrences.csv   Darwin Core occurrence records, one per (video, query)
  sites.csv         per site, with latitude/longitude where known (MVK sites ship with the package)
  months.csv        per month
  survey.json       query, model, threshold, calibration and notes
  timeline.png, sites.png, map.png

T: --threshold, or from --labels (a CSV of matches and non-matches: columns label and either score, or
site, video_id, frame_index[, track_id], or id = SITE/VIDEO_ID/FRAME_INDEX[/TRACK_ID]) chosen for
--target-precision; without labels T is uncalibrated and said so. Examples:

  mvk survey "a green turtle" --index idx --out turtle-survey
  mvk survey "a green turtle" --index idx --labels likes.csv --target-precision 0.9 --out turtle-survey
  mvk survey --like Oahu_Jul2022/0003/120/4 --whole-track --index idx --out turtle-survey
  mvk survey "a green turtle" --positive Oahu_Jul2022/0003/120/4 --negative Oahu_Jul2022/0001/30 \\
      --index idx --out turtle-survey     (likes and dislikes calibrate T, as --labels rows would)
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("text", nargs="?", default="", help="what to survey (omit with --image or --like)")
    parser.add_argument("--index", required=True, help="the index folder (made by mvk index)")
    parser.add_argument("--out", required=True, help="folder to write the tables and plots to")
    parser.add_argument("--threshold", type=float, default=None,
                        help="score T at which an object matches (cosine, -1..1; default: from --labels, else "
                             "an uncalibrated 0.25)")
    parser.add_argument("--labels", default=None, help="CSV of labelled matches / non-matches to calibrate T")
    parser.add_argument("--target-precision", type=float, default=0.9,
                        help="precision T is chosen for with --labels (default 0.9)")
    parser.add_argument("--coordinates", default=None,
                        help="CSV place,latitude,longitude (default: the MVK dive sites shipped with mvk)")
    parser.add_argument("--image", default=None, help="survey with this image file as the query instead of a text")
    parser.add_argument("--like", default=None, metavar="ID",
                        help="survey what looks like this result: SITE/VIDEO_ID/FRAME_INDEX[/TRACK_ID]")
    parser.add_argument("--whole-track", action="store_true",
                        help="with --like .../TRACK_ID: the mean vector of that object's whole track")
    parser.add_argument("--positive", action="append", default=[], metavar="ID",
                        help="a result that is a match (repeatable): a calibration label, as a like of feedback")
    parser.add_argument("--negative", action="append", default=[], metavar="ID",
                        help="a result that is not a match (repeatable): a calibration label")
    parser.add_argument("--space", default=None, metavar="NAME",
                        help="an index of several embedding spaces: the one to score (its model's name; default the "
                             "index's first), e.g. a BioCLIP space for species names")
    parser.add_argument("--site", action="append", default=[], help="only this dive site (repeatable)")
    parser.add_argument("--place", action="append", default=[], help="only this place (repeatable)")
    parser.add_argument("--date-from", default="", help="only footage from this month on (YYYY-MM)")
    parser.add_argument("--date-to", default="", help="only footage up to this month (YYYY-MM)")
    add_encoder_arguments(parser)


def build_query(args: argparse.Namespace):
    """The query value of the flags: a text, --image, or --like (with --whole-track); with --positive or
    --negative a FeedbackQuery whose likes and dislikes calibrate T."""
    from pathlib import Path

    from search import queries as Qs
    from search.commands.search import _read_image
    from search.errors import QueryError

    given = [name for name, on in (("a text", bool(args.text.strip())), ("--image", bool(args.image)),
                                   ("--like", bool(args.like))) if on]
    if len(given) > 1:
        raise QueryError(f"survey one query at a time: got {' and '.join(given)}")
    if args.whole_track and not args.like:
        raise QueryError("--whole-track goes with --like SITE/VIDEO_ID/FRAME_INDEX/TRACK_ID")
    base = None
    if args.like:
        base = Qs.LikeQuery(Qs.ItemRef.parse(args.like), whole_track=bool(args.whole_track))
    elif args.image:
        base = Qs.ImageQuery(_read_image(args.image), f"image {Path(args.image).name}")
    elif args.text.strip():
        base = Qs.TextQuery(args.text)
    positives = tuple(Qs.ItemRef.parse(r) for r in args.positive)
    negatives = tuple(Qs.ItemRef.parse(r) for r in args.negative)
    if positives or negatives:
        return Qs.FeedbackQuery(base, positives, negatives)
    if base is None:
        raise QueryError("the query text is empty (give a text, --image PATH, --like ID or --positive ID)")
    return base


def run(args: argparse.Namespace) -> int:
    import json
    import sys
    from pathlib import Path

    from mvk_tools.survey_plots import write_survey_plots
    from search import calibration as C
    from search import survey as S
    from search.clikit import encoder_choice
    from search.query import Filters
    from search.service import QueryService

    if args.threshold is not None:
        S.check_threshold(args.threshold)
    coordinates = S.site_coordinates(args.coordinates)
    query = build_query(args)
    labels = C.read_labels(args.labels) if args.labels else None
    service = QueryService(Path(args.index), device=args.device, choice=encoder_choice(args))
    filters = Filters(sites=tuple(args.site), places=tuple(args.place), date_from=args.date_from, date_to=args.date_to)
    result = service.survey(query, space=args.space, threshold=args.threshold, labels=labels,
                            target_precision=args.target_precision, filters=filters, coordinates=coordinates,
                            source="cli")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, table in result.tables().items():
        (out / f"{name}.csv").write_text(S.to_csv(table), encoding="utf-8")
    plots = write_survey_plots(result.presence, result.hits, result.sites, out,
                               title=f"'{result.query}' at T = {result.threshold:.3g}")
    summary = result.summary()
    (out / "survey.json").write_text(json.dumps(summary, indent=2, default=float), encoding="utf-8")
    print(f"'{result.query}': present in {summary['videos_present']} of {summary['videos']} videos, total MaxN "
          f"{summary['total_maxn']}, T = {result.threshold:.4g}")
    print(result.calibration.remark())
    print(f"wrote presence.csv, occurrences.csv, sites.csv, months.csv, survey.json, "
          f"{', '.join(p.name for p in plots)} to {out}")
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    return 0

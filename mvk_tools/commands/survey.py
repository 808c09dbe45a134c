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
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("text", nargs="?", default="", help="what to survey (omit with --image)")
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
    parser.add_argument("--site", action="append", default=[], help="only this dive site (repeatable)")
    parser.add_argument("--place", action="append", default=[], help="only this place (repeatable)")
    parser.add_argument("--date-from", default="", help="only footage from this month on (YYYY-MM)")
    parser.add_argument("--date-to", default="", help="only footage up to this month (YYYY-MM)")
    add_encoder_arguments(parser)


def _calibration(args: argparse.Namespace, index, scores, notes: list[str]):
    """The Calibration of T: fitted on --labels, or the given / default threshold uncalibrated."""
    import numpy as np

    from search import calibration as C
    from search.survey import DEFAULT_THRESHOLD
    if not args.labels:
        return C.uncalibrated(DEFAULT_THRESHOLD if args.threshold is None else args.threshold)
    labels = C.read_labels(args.labels)
    got = C.label_scores(labels, index.frames, index.objects, scores.object)
    finite = np.isfinite(got)
    if not finite.all():
        notes.append(f"{int((~finite).sum())} labelled frame(s) have no object (or lie outside the filters) and "
                     f"were left out of the calibration")
    return C.calibrate(got[finite], labels["label"].to_numpy(bool)[finite], target_precision=args.target_precision,
                       threshold=args.threshold)


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    import numpy as np

    from mvk_tools.survey_plots import write_survey_plots
    from search import calibration as C
    from search import survey as S
    from search.clikit import encoder_choice
    from search.commands.search import _read_image
    from search.errors import QueryError
    from search.identity import describe, encoder_for_index
    from search.query import Filters, encode_query, filter_mask
    from search.store import open_index

    if args.threshold is not None:
        S.check_threshold(args.threshold)
    if not 0 < args.target_precision <= 1:
        raise QueryError(f"--target-precision must be in (0, 1], got {args.target_precision}")
    if not args.image and not args.text.strip():
        raise QueryError("the query text is empty (give a text, or --image PATH)")
    coordinates = S.site_coordinates(args.coordinates)
    image = _read_image(args.image) if args.image else None
    index = open_index(args.index, device=args.device)
    filters = Filters(sites=tuple(args.site), places=tuple(args.place), date_from=args.date_from, date_to=args.date_to)
    if not filter_mask(index, filters).any():
        raise QueryError("no frames of the index pass the filters: nothing to survey")
    encoder = encoder_for_index(index.encoder, encoder_choice(args), device=args.device, where=args.index)
    query = args.text if image is None else f"image {Path(args.image).name}"
    vector, notes = encode_query(index, encoder, image if image is not None else args.text)
    scores = S.survey_scores(index, vector, filters)
    cal = _calibration(args, index, scores, notes)
    threshold = S.check_threshold(cal.threshold)
    frames = index.frames.loc[scores.keep].drop(columns=["thumbnail"], errors="ignore")
    presence = S.video_presence(frames, index.objects, scores.object, threshold)
    hits = S.matches(frames, index.objects, scores.object, threshold)
    missed = C.missed_chance(cal, presence, S.track_scores(frames, index.objects, scores.object))
    presence["missed_chance"] = missed
    model = describe(encoder.identity())
    occ, coord_notes = S.occurrences(presence, query=query, model=model, threshold=threshold, coordinates=coordinates,
                                     calibration_remark=cal.remark(), missed_chance=missed if cal.calibrated else None)
    sites, _ = S.with_coordinates(S.summarise(presence, "site"), coordinates)
    months = S.summarise(presence, "date")
    notes += list(cal.notes) + coord_notes
    if not presence["present"].any():
        top = float(np.max(scores.object[np.isfinite(scores.object)], initial=-np.inf))
        notes.append(f"no object scores at or above T = {threshold:.4g} (best {top:.4g}): every video is absent"
                     + ("" if cal.calibrated else ", at an uncalibrated T"))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, table in (("presence", presence), ("occurrences", occ), ("sites", sites), ("months", months)):
        (out / f"{name}.csv").write_text(S.to_csv(table), encoding="utf-8")
    plots = write_survey_plots(presence, hits, sites, out, title=f"'{query}' at T = {threshold:.3g}")
    summary = {"query": query, "model": model, "threshold": threshold, "calibrated": cal.calibrated,
               "calibration": cal.remark(), "method": cal.method or None,
               "precision": None if cal.precision is None else vars(cal.precision),
               "recall": None if cal.recall is None else vars(cal.recall),
               "videos": int(len(presence)), "videos_present": int(presence["present"].sum()),
               "total_maxn": int(presence["maxn"].sum()), "notes": notes, "skipped_shards": index.errors}
    (out / "survey.json").write_text(json.dumps(summary, indent=2, default=float), encoding="utf-8")
    print(f"'{query}': present in {summary['videos_present']} of {summary['videos']} videos, total MaxN "
          f"{summary['total_maxn']}, T = {threshold:.4g}")
    print(cal.remark())
    print(f"wrote presence.csv, occurrences.csv, sites.csv, months.csv, survey.json, "
          f"{', '.join(p.name for p in plots)} to {out}")
    import sys
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    return 0

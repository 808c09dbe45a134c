"""`mvk catalog`: list the sites and videos of a collection"""
from __future__ import annotations

import argparse

NAME = "catalog"
HELP = "list the sites and videos of a collection"
DESCRIPTION = """\
List every video of a collection with its site, duration, frame rate, frame count, size, codec, place and
date (from the site name, e.g. PhuQuoc1_Jun2022 -> PhuQuoc1, 2022-06), and whether MVK metadata and
selected frames exist for it.

Accepted layouts:
  PATH/videos/<site>/<NNNN>.mp4 (+ PATH/information/...)   the Marine Video Kit tree
  PATH/<site>/<NNNN>.mp4                                   a folder of site folders
  PATH/*.mp4                                               a plain folder of videos: one site named PATH
  PATH/Tulamben2_Jun2022_0016.mp4                          flat names: site and video id from the name

A video that cannot be read (truncated, empty, audio only, not a video, a broken or looping symbolic link)
keeps its row with the reason in the error column; the others are listed as usual. A site folder that
cannot be listed (no permission) is reported as an error and the other sites go on. Files that are not videos (README.txt, images,
hidden files) are skipped and counted.

examples:
  mvk catalog demo-collection
  mvk catalog /data/mvk --format csv > catalog.csv
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", metavar="PATH", help="collection folder")
    parser.add_argument("--format", choices=("table", "csv", "json"), default="table",
                        help="table: aligned text for reading (default); csv / json: every column, "
                             "for other tools (the summary then goes to stderr)")
    parser.add_argument("--no-probe", action="store_true",
                        help="only list files, without opening them (fast; duration, fps and size left empty)")


def summary(catalog) -> str:
    """One line: videos, sites, total duration, unreadable videos, skipped files."""
    bad = int((catalog["error"] != "").sum())
    ignored = len(catalog.attrs.get("ignored", []))
    minutes = float(catalog["duration"].sum(skipna=True)) / 60
    sites = catalog["site"].nunique()
    text = (f"{len(catalog)} video{'s' * (len(catalog) != 1)} in {sites} site{'s' * (sites != 1)}, "
            f"{minutes:.1f} min")
    if bad:
        text += f"; {bad} unreadable (see the error column)"
    if ignored:
        text += f"; {ignored} non-video file{'s' * (ignored != 1)} skipped"
    unreadable = len(catalog.attrs.get("site_errors", {}))
    if unreadable:
        text += f"; {unreadable} site folder{'s' * (unreadable != 1)} could not be read (listed above)"
    return text


def format_table(catalog) -> str:
    """The catalog as aligned text: the columns a reader wants, path relative to the collection."""
    import os

    root = catalog.attrs.get("root", "")
    view = catalog.assign(
        path=[os.path.relpath(p, root) if root else p for p in catalog["path"]],
        duration=catalog["duration"].round(2),
        fps=catalog["fps"].round(3),
        size=[f"{w}x{h}" if w is not None and str(w) != "<NA>" else "" for w, h in zip(catalog["width"], catalog["height"])],
        metadata=catalog["has_metadata"].map({True: "yes", False: "-"}),
        selected=catalog["has_selected_frames"].map({True: "yes", False: "-"}),
    )
    columns = ["site", "video_id", "duration", "fps", "frame_count", "size", "codec", "place", "date", "metadata",
               "selected", "path"]
    if (catalog["error"] != "").any():
        columns.append("error")
    return view[columns].rename(columns={"video_id": "video", "frame_count": "frames"}).to_string(
        index=False, na_rep="")


def run(args: argparse.Namespace) -> int:
    import sys

    from tqdm import tqdm

    from mvk_tools.layout import discover

    with tqdm(desc="probing", unit="video", disable=None if not args.no_probe else True, leave=False) as bar:
        catalog = discover(args.path, probe_videos=not args.no_probe, on_video=lambda _p: bar.update())
    for site, why in catalog.attrs.get("site_errors", {}).items():
        print(f"error: site {site}: {why}", file=sys.stderr)
    if args.format == "table":
        print(format_table(catalog))
        print(summary(catalog))
    else:
        if args.format == "csv":
            from mvk_tools.exports import to_csv
            sys.stdout.write(to_csv(catalog, index=False))
        else:
            sys.stdout.write(catalog.to_json(orient="records", indent=2) + "\n")
        print(summary(catalog), file=sys.stderr)
    return 0

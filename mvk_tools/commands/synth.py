"""`mvk synth`: write a small synthetic MVK-like collection with ground-truth masks"""
from __future__ import annotations

import argparse

from search.clikit import positive_int

NAME = "synth"
HELP = "write a small synthetic MVK-like collection with ground-truth masks"
DESCRIPTION = """\
Write a small synthetic collection in the Marine Video Kit layout: a few dive sites named like MVK's
(Oahu_Jul2022, PhuQuoc1_Jun2022, ...), each with a few short videos of textured shapes moving over a
textured blue-green background; the shapes occlude each other and one leaves the frame and comes back.

  OUT/videos/<site>/<NNNN>.mp4                              H.264 (MPEG-4 Part 2 if libx264 is missing)
  OUT/information/metadata/<site>/<NNNN>.json               site, video id, fps, frames, size, seed, objects
  OUT/information/selected_frames/<site>/<NNNN>_<nnnnn>.jpg about one frame per second, irregular offsets;
                                                            nnnnn = 1, 2, 3, ... as in MVK (not a frame
                                                            index; the metadata JSON has each one's frame)
  OUT/information/thumbnails/<site>/<NNNN>_<nnnnn>.jpg      small copies of the selected frames
  OUT/information/masks/<site>/<NNNN>.npz                   ground-truth object ids of every frame

The same --seed gives the same collection. The defaults build in about a second.

example:
  mvk synth demo-collection && mvk catalog demo-collection
"""

MAX_SITES = 6


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 160x96, got {text!r}") from None
    if w < 16 or h < 16 or w % 2 or h % 2:
        raise argparse.ArgumentTypeError(f"width and height must be even and at least 16, got {text!r}")
    return w, h


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", metavar="OUT",
                        help="folder to write (created; must be empty or hold an earlier synthetic collection)")
    parser.add_argument("--sites", type=positive_int, default=2,
                        help=f"number of dive sites, at most {MAX_SITES} (default: 2)")
    parser.add_argument("--videos", type=positive_int, default=2, help="videos per site (default: 2)")
    parser.add_argument("--frames", type=positive_int, default=48, help="frames per video (default: 48)")
    parser.add_argument("--fps", type=float, default=12.0, help="frame rate (default: 12)")
    parser.add_argument("--size", type=_size, default=(160, 96), metavar="WxH",
                        help="frame size, both even (default: 160x96)")
    parser.add_argument("--objects", type=int, default=3, help="moving objects per video (default: 3)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tqdm import tqdm

    from mvk_tools.synth import SYNTH_SITES, SynthError, make_collection

    out = Path(args.out)
    if args.sites > MAX_SITES:
        raise SynthError(f"--sites {args.sites}: at most {MAX_SITES} sites")
    if not 0 <= args.objects <= 8:
        raise SynthError(f"--objects {args.objects}: between 0 and 8")
    if not args.fps > 0:
        raise SynthError(f"--fps {args.fps}: must be > 0")
    if out.is_dir() and any(out.iterdir()) and not (out / "videos").is_dir():
        raise SynthError(f"{out} is not empty and holds no collection: pick a new folder")
    sites = SYNTH_SITES[: args.sites]
    total = len(sites) * args.videos
    with tqdm(total=total, desc="synth", unit="video", disable=None) as bar:
        make_collection(out, sites=sites, videos_per_site=args.videos, n_frames=args.frames, size=args.size,
                        fps=args.fps, n_objects=args.objects, seed=args.seed, on_video=lambda _p: bar.update())
    w, h = args.size
    print(f"wrote {total} videos ({len(sites)} sites x {args.videos}) of {args.frames} frames "
          f"{w}x{h} at {args.fps:g} fps to {out}")
    return 0

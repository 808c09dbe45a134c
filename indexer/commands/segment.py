"""`mvk segment`: segment a video into object tracks from DINO attention; --eval scores against ground truth"""
from __future__ import annotations

import argparse

from indexer.commands.propagate_cli import PROPAGATION_HELP
from search.clikit import add_deprecated_alias, add_model_weight_arguments, positive_float, positive_int

NAME = "segment"
HELP = "segment a video into object tracks from DINO attention; --eval scores against ground truth"
DESCRIPTION = """\
Cut a video into object tracks without labels: the last-block queries and keys of a DINO ViT give every
patch of every sampled frame an attention distribution over the patches of the key frames (every r-th
frame); hierarchical clustering of those distributions (symmetric KL, threshold tau) gives one id per
object, the same in every frame.

  mvk segment VIDEO --out DIR        overlay PNGs (one per sampled frame) and tracks.json in DIR;
                                     VIDEO is a video file or a folder of .jpg/.png frames
  mvk segment --eval PATH            score against ground truth and print a table and JSON; PATH is a
                                     DAVIS folder (JPEGImages/, Annotations/) or an `mvk synth` collection

Metrics: FG-ARI and mIoU (Hungarian) over the clip volume, DAVIS J and F for unsupervised multi-object
(one matching per sequence, background tracks ignored), J_single: per-frame Jaccard of all non-background
tracks against the whole foreground (single-object benchmarks such as DAVIS-2016; use --tau 1.6).

--backbone color is a non-learned colour-statistics baseline that needs no weights (offline demos);
--random-weights runs the real DINO architecture untrained: only for speed and plumbing checks, and
every output says so.

examples:
  mvk synth demo && mvk segment --eval demo --backbone color --short-side 96
  mvk segment --eval ../shared/data/davis2016 --sequences blackswan,dog --tau 1.6 --every-nth 5
  mvk segment clip.mp4 --out overlays --every-seconds 1 --level 0

""" + PROPAGATION_HELP


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from indexer.backbone_names import BACKBONE_CHOICES, DEFAULT_BACKBONE

    parser.add_argument("video", metavar="VIDEO", nargs="?",
                        help="video file or folder of frames to segment (with --out)")
    parser.add_argument("--out", metavar="DIR", help="write overlay images and tracks.json here")
    parser.add_argument("--eval", metavar="PATH", dest="eval_path",
                        help="score against ground truth: a DAVIS folder or an mvk synth collection")
    parser.add_argument("--sequences", metavar="A,B", help="DAVIS sequences to score (default: all)")
    parser.add_argument("--json", metavar="FILE", dest="json_out", help="also write the --eval results to FILE")
    sampling = parser.add_argument_group("frame sampling")
    sampling.add_argument("--every-seconds", type=positive_float, default=None,
                          help="VIDEO: one frame per this many seconds (default: every frame)")
    sampling.add_argument("--every-nth", type=positive_int, default=1,
                          help="take every n-th frame (default: 1); with --eval, of the frames and the masks")
    sampling.add_argument("--max-frames", type=positive_int, default=None,
                          help="stop after this many sampled frames per video (default: all)")
    method = parser.add_argument_group("method")
    method.add_argument("--backbone", choices=BACKBONE_CHOICES, default=DEFAULT_BACKBONE,
                        help=f"DINO/DINOv2 ViT, or 'color' (non-learned baseline) (default: {DEFAULT_BACKBONE})")
    method.add_argument("--dino-checkpoint", dest="checkpoint", metavar="FILE",
                        help="load backbone weights from this .pth/.safetensors")
    add_deprecated_alias(method, "--checkpoint", "--dino-checkpoint", "checkpoint")
    method.add_argument("--tau", type=positive_float, default=1.0,
                        help="merge threshold on symmetric KL; 1.6 merges the foreground into one (default: 1.0)")
    method.add_argument("--key-stride", type=positive_int, default=10,
                        help="r: one key frame per r sampled frames (default: 10)")
    method.add_argument("--window", type=positive_int, default=8,
                        help="frames per first-pass clustering window (default: 8)")
    method.add_argument("--chunk", type=positive_int, default=64,
                        help="frames segmented together; tracks are linked across chunks (default: 64)")
    method.add_argument("--short-side", type=positive_int, default=None,
                        help="model input short side in pixels, rounded to the patch size (default: 224; "
                             "propagation: 480, the colour baseline 240)")
    method.add_argument("--min-area", type=float, default=0.005,
                        help="drop objects smaller than this fraction of the frame (default: 0.005)")
    method.add_argument("--level", type=int, default=None,
                        help="hierarchy level to output, 0 = finest (default: the last, tau's result)")
    add_model_weight_arguments(parser)
    from indexer.commands import propagate_cli
    propagate_cli.add_arguments(parser)


def _params(args: argparse.Namespace):
    from indexer.segment import SegmentParams
    return SegmentParams(tau=args.tau, key_stride=args.key_stride, window=args.window, chunk=args.chunk,
                         short_side=args.short_side or 224, min_area=args.min_area, level=args.level)


def _weights_note(identity: dict) -> str:
    if identity.get("random_weights"):
        return "RANDOM WEIGHTS (untrained model: the segmentation is meaningless)"
    if identity.get("backbone") == "color":
        return "colour baseline (not a learned model)"
    return ""


def _table(result: dict) -> str:
    from indexer.commands.tables import score_table
    from indexer.evaluate import METRICS
    return score_table(result, METRICS, first="clip", count="tracks")


def _strict_json(value: object) -> object:
    """NaN (FG-ARI of single-object ground truth, which ARI cannot score) becomes null, so strict parsers read it."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: _strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict_json(v) for v in value]
    return value


def run(args: argparse.Namespace) -> int:
    import json
    import sys
    from pathlib import Path

    from tqdm import tqdm

    from indexer.backbone import load_backbone
    from search.errors import InputError

    if (args.eval_path is None) == (args.video is None):
        raise InputError("give either VIDEO (with --out DIR) or --eval PATH")
    if args.video is not None and not args.out:
        raise InputError("segmenting VIDEO needs --out DIR for the overlay images")
    from indexer.commands import propagate_cli
    if propagate_cli.wants_propagation(args):
        if args.semi and args.eval_path is None:
            raise InputError("--semi goes with --eval DAVIS_DIR")
        if args.eval_path is not None and not args.semi:
            raise InputError("--propagate, --box and --point follow objects in VIDEO; to score use --eval PATH --semi")
        if args.level is not None and args.level < 0:
            raise InputError(f"--level must be 0 or more, got {args.level}")
        if args.eval_path is not None:
            return propagate_cli.run_semi(args, _params(args))
        return propagate_cli.run_follow(args, _params(args))
    if args.level is not None and args.level < 0:
        raise InputError(f"--level must be 0 or more, got {args.level}")
    if not 0 <= args.min_area < 1:
        raise InputError(f"--min-area must be in [0, 1), got {args.min_area}")
    params = _params(args)
    extractor = load_backbone(args.backbone, checkpoint=args.checkpoint, random_weights=args.random_weights,
                              device=args.device)
    identity = extractor.identity()
    note = _weights_note(identity)

    if args.eval_path is not None:
        from indexer.evaluate import eval_clips, evaluate
        sequences = [s for s in args.sequences.split(",") if s] if args.sequences else None
        clips = eval_clips(args.eval_path, sequences=sequences, every_nth=args.every_nth,
                           max_frames=args.max_frames)
        bar = tqdm(total=len(clips), desc="segment --eval", unit="clip", file=sys.stderr)

        def on_clip(name: str, res: dict) -> None:
            bar.update(1)
            if "error" in res:
                tqdm.write(f"{name}: {res['error']}", file=sys.stderr)

        result = evaluate(clips, extractor, params, on_clip=on_clip)
        bar.close()
        result["note"] = note
        if note:
            print(f"NOTE: {note}")
        print(_table(result))
        text = json.dumps(_strict_json(result), indent=2, default=str, allow_nan=False)
        print(text)
        if args.json_out:
            Path(args.json_out).write_text(text)
        return 0 if result["scored"] else 2

    from indexer.evaluate import frames_from_folder
    from indexer.overlay import write_overlays
    from indexer.segment import segment_stream

    video = Path(args.video)
    if video.is_dir():
        frames = frames_from_folder(video, every_nth=args.every_nth, max_frames=args.max_frames)
    elif video.is_file():
        from mvk_tools.video import iter_frames
        if args.every_seconds is not None:
            source = iter_frames(video, every_seconds=args.every_seconds)
        else:
            source = iter_frames(video, every_nth=args.every_nth)
        frames = (f for i, f in enumerate(source) if args.max_frames is None or i < args.max_frames)
    else:
        raise InputError(f"{video}: no such video file or frame folder")
    stream = tqdm(segment_stream(frames, extractor, params), desc="segment", unit="frame", file=sys.stderr)
    caption = f"{identity.get('backbone')} tau={args.tau} r={args.key_stride}" + (f"  {note}" if note else "")
    summary = write_overlays(stream, args.out, caption=caption, identity=identity)
    if note:
        print(f"NOTE: {note}")
    fg = sum(1 for t in summary["tracks"].values() if not t["background"])
    from indexer.progress import plural
    print(f"{plural(summary['frames'], 'frame')}, {plural(len(summary['tracks']), 'track')} "
          f"({plural(fg, 'object')}) -> {args.out}")
    return 0

"""The propagation half of `mvk segment`: --propagate/--box/--point (follow objects from a seed) and
--eval --semi (the DAVIS semi-supervised protocol). Arguments and a thin shell over indexer.follow and
indexer.semi_eval."""
from __future__ import annotations

import argparse

PROPAGATION_HELP = """\
Follow objects (semi-supervised): give the objects on one frame, get them in every frame.
  mvk segment VIDEO --propagate MASK.png --out DIR   a label PNG (palette ids or a binary mask)
  mvk segment VIDEO --box X0,Y0,X1,Y1 --out DIR      the segments inside a box
  mvk segment VIDEO --point X,Y --out DIR            the unsupervised segment under a click
  --from-frame N seeds frame N (default 0) and propagates forward to the end and backward to the start.
  DIR gets masks/<frame>.png (palette label maps), frame_<frame>.png overlays, tracks.json and
  track_coco.json (COCO RLE masks). DINO's label propagation (frozen last-block patch tokens; context =
  the seed frame + --n-last-frames previous frames; --neighborhood; --topk; --temperature); with
  --backbone color it runs offline on colour statistics.
  mvk segment --eval DAVIS_DIR --semi                DAVIS semi-supervised J, F, J&F per sequence
"""


def _pair(text: str, n: int, what: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != n:
        raise argparse.ArgumentTypeError(f"{what} must be {n} numbers separated by commas, got {text!r}")
    return values


def box_arg(text: str) -> tuple[float, ...]:
    return _pair(text, 4, "--box")


def point_arg(text: str) -> tuple[float, ...]:
    return _pair(text, 2, "--point")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from indexer.propagate_params import PropagateParams

    d = PropagateParams()
    g = parser.add_argument_group("following objects (semi-supervised propagation)")
    g.add_argument("--propagate", metavar="MASK", help="seed label PNG of the objects on --from-frame")
    g.add_argument("--box", metavar="X0,Y0,X1,Y1", type=box_arg, help="seed: the segments inside this box")
    g.add_argument("--point", metavar="X,Y", type=point_arg, help="seed: the unsupervised segment under this click")
    g.add_argument("--from-frame", type=int, default=0, metavar="N",
                   help="the seeded frame; propagate forward and backward from it (default: 0)")
    g.add_argument("--semi", action="store_true",
                   help="with --eval: the DAVIS semi-supervised protocol (first-frame annotation given)")
    g.add_argument("--n-last-frames", type=int, default=d.n_last_frames,
                   help=f"previous frames in the context besides the seed frame (default: {d.n_last_frames})")
    g.add_argument("--neighborhood", type=int, default=d.neighborhood,
                   help=f"source patches within this many patches of the target; 0: all (default: {d.neighborhood})")
    g.add_argument("--topk", type=int, default=d.topk,
                   help=f"labels from the k most similar patches (default: {d.topk})")
    g.add_argument("--temperature", type=float, default=d.temperature,
                   help=f"affinity exp(cos / temperature) (default: {d.temperature})")
    g.add_argument("--propagator", default="dino",
                   help="dino (label propagation, built in), or a trained propagator plugged in (deaot)")
    g.add_argument("--propagator-checkpoint", metavar="FILE", help="a trained propagator's weights")


def wants_propagation(args: argparse.Namespace) -> bool:
    return bool(args.semi or args.propagate or args.box or args.point)


def _settings(args: argparse.Namespace, default_segment_params):
    from indexer.follow import FollowSettings
    from search.errors import InputError

    if args.every_seconds is not None:
        raise InputError("--every-seconds does not apply to propagation (it needs consecutive frames); "
                         "use --every-nth")
    from indexer.propagate_params import PropagateParams
    from indexer.propagators import PropagatorSettings

    params = PropagateParams(n_last_frames=args.n_last_frames, neighborhood=args.neighborhood, topk=args.topk,
                             temperature=args.temperature, short_side=args.short_side)
    params.check()
    prop = PropagatorSettings(name=args.propagator, backbone=args.backbone, checkpoint=args.checkpoint,
                              random_weights=args.random_weights, device=args.device, params=params,
                              propagator_checkpoint=args.propagator_checkpoint)
    return FollowSettings(propagator=prop, every_nth=args.every_nth, max_frames=args.max_frames,
                          segment=default_segment_params)


def _note(identity: dict) -> str:
    backbone = identity.get("backbone", {}) if isinstance(identity.get("backbone"), dict) else {}
    if backbone.get("random_weights"):
        return "RANDOM WEIGHTS (untrained model: the propagation is meaningless)"
    if backbone.get("backbone") == "color":
        return "colour baseline (not a learned model)"
    return ""


def semi_table(result: dict) -> str:
    from indexer.commands.tables import score_table
    from indexer.semi_eval import SEMI_METRICS
    return score_table(result, SEMI_METRICS, first="sequence", count="objects", width_of_score=6)


def run_semi(args: argparse.Namespace, segment_params) -> int:
    import json
    import sys
    from pathlib import Path

    from tqdm import tqdm

    from indexer.commands.segment import _strict_json
    from indexer.evaluate import eval_clips
    from indexer.propagators import load_propagator
    from indexer.semi_eval import evaluate_semi

    settings = _settings(args, segment_params)
    propagator = load_propagator(settings.propagator)
    sequences = [s for s in args.sequences.split(",") if s] if args.sequences else None
    clips = eval_clips(args.eval_path, sequences=sequences, every_nth=args.every_nth, max_frames=args.max_frames)
    bar = tqdm(total=len(clips), desc="segment --eval --semi", unit="clip", file=sys.stderr)

    def on_clip(name: str, res: dict) -> None:
        bar.update(1)
        if "error" in res:
            tqdm.write(f"{name}: {res['error']}", file=sys.stderr)

    result = evaluate_semi(clips, propagator, on_clip=on_clip)
    bar.close()
    note = _note(result["propagator"])
    result["note"] = note
    if note:
        print(f"NOTE: {note}")
    print(semi_table(result))
    text = json.dumps(_strict_json(result), indent=2, default=str, allow_nan=False)
    print(text)
    if args.json_out:
        Path(args.json_out).write_text(text)
    return 0 if result["scored"] else 2


def _seed(args: argparse.Namespace):
    from indexer.seeds import BoxSeed, MaskSeed, PointSeed
    from search.errors import InputError

    given = [s for s in (args.propagate, args.box, args.point) if s]
    if len(given) != 1:
        raise InputError("give one seed: --propagate MASK.png, --box X0,Y0,X1,Y1 or --point X,Y")
    if args.propagate:
        return MaskSeed(args.propagate)
    return BoxSeed(tuple(args.box)) if args.box else PointSeed(tuple(args.point))


def run_follow(args: argparse.Namespace, segment_params) -> int:
    import json
    import sys
    from pathlib import Path

    from PIL import Image
    from tqdm import tqdm

    from indexer.follow import follow_stream, prepare
    from indexer.overlay import overlay_frame
    from indexer.segment import SegmentedFrame, objects_in_frame
    from indexer.tracks import Track, track_frame, track_to_coco, write_label_png

    settings = _settings(args, segment_params)
    prepared = prepare(args.video, _seed(args), args.from_frame, settings)
    out = Path(args.out)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    identity = prepared.propagator.identity()
    note = _note(identity)
    ids = tuple(int(i) for i in sorted(set(prepared.seed.ravel().tolist())) if i > 0)
    track = Track(source=str(args.video), size=tuple(prepared.seed.shape), seed_frame=args.from_frame,
                  object_ids=ids, identity=identity, notes=list(prepared.notes))
    for n in prepared.notes:
        print(f"NOTE: {n}")
    caption = f"{prepared.propagator.identity().get('propagator')}" + (f"  {note}" if note else "")
    track_of = list(range(1, 256))
    for pf in tqdm(follow_stream(prepared), desc="propagate", unit="frame", file=sys.stderr):
        write_label_png(pf.labels, out / "masks" / f"{pf.frame.index:05d}.png")
        objects = objects_in_frame(pf.labels.astype(int) - 1, track_of, level=0, background=(), min_area=0.0)
        text = f"{caption}  frame {pf.frame.index}  t={pf.frame.time:.2f}s"
        Image.fromarray(overlay_frame(SegmentedFrame(pf.frame, objects), caption=text)).save(
            out / f"frame_{pf.frame.index:06d}.png")
        track.frames.append(track_frame(pf))
    track.frames.sort(key=lambda f: f.index)
    summary = track.summary()
    (out / "tracks.json").write_text(json.dumps(summary, indent=2, default=str))
    (out / "track_coco.json").write_text(json.dumps(track_to_coco(track)))
    if note:
        print(f"NOTE: {note}")
    seen = ", ".join(f"object {k}: {v['n_frames']} frames" for k, v in summary["tracks"].items())
    print(f"{summary['frames']} frames propagated from frame {args.from_frame} ({seen}) -> {out}")
    return 0

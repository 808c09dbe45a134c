"""`mvk captions`: write a clipcap-style query set of automatic captions for random target frames"""
from __future__ import annotations

import argparse

from search.clikit import add_model_weight_arguments, positive_int

# Same values as mvk_tools.captions (kept here so that --help imports nothing heavy; a test checks them).
DEFAULT_MODEL = "coca_ViT-B-32"
DEFAULT_PRETRAINED = "mscoco_finetuned_laion2b_s13b_b90k"
DEFAULT_MAX_TOKENS = 20

NAME = "captions"
HELP = "write a clipcap-style query set of automatic captions for random target frames"
DESCRIPTION = """\
Pick N target frames of an index at random (seeded: the same index and seed give the same targets) and
caption each with an open_clip CoCa model (greedy decoding). The result is a tidy query set of query_type
'clipcap' for `mvk kis`, for users without MVK's ClipCap file. Frames come from the thumbnails stored in
the index, or from the videos when --collection is given (full resolution).

With --random-weights the captions are gibberish: the query type becomes 'clipcap-random-weights' and the
source column says so.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--index", required=True, help="index folder whose frames are the candidate targets")
    parser.add_argument("--out", required=True, help="query-set CSV file to write")
    parser.add_argument("--n", type=positive_int, default=100, help="number of target frames (default 100, as MVK's KIS)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random choice of targets (default 0)")
    parser.add_argument("--collection", default=None,
                        help="collection folder: caption the video frames instead of the index thumbnails")
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"open_clip CoCa model (default {DEFAULT_MODEL})")
    parser.add_argument("--pretrained", default=DEFAULT_PRETRAINED,
                        help=f"open_clip pretrained tag (default {DEFAULT_PRETRAINED})")
    parser.add_argument("--checkpoint", default=None, help="local checkpoint file instead of a pretrained tag")
    parser.add_argument("--max-tokens", type=positive_int, default=DEFAULT_MAX_TOKENS,
                        help=f"longest caption in tokens (default {DEFAULT_MAX_TOKENS})")
    parser.add_argument("--batch-size", type=positive_int, default=16, help="images per captioning batch (default 16)")
    add_model_weight_arguments(parser)


def run(args: argparse.Namespace) -> int:
    import sys

    from tqdm import tqdm

    from mvk_tools import captions
    from mvk_tools.querysets import write_queryset
    from search.errors import InputError
    from search.store import open_index

    index = open_index(args.index)
    for site, why in index.errors.items():
        print(f"warning: shard {site} skipped: {why}", file=sys.stderr)
    if not len(index.frames):
        raise InputError(f"index {args.index} holds no readable frame")
    targets = index.with_thumbnails(captions.pick_targets(index.frames, args.n, args.seed))
    if len(targets) < args.n:
        print(f"warning: the index has {len(targets)} frames, fewer than --n {args.n}: captioning all", file=sys.stderr)
    captioner = captions.load_captioner(args.model, args.pretrained, checkpoint=args.checkpoint,
                                        random_weights=args.random_weights, device=args.device)
    images, positions, issues = captions.frame_images(targets, collection=args.collection)
    for issue in issues:
        print(str(issue), file=sys.stderr)
    if not images:
        raise InputError("no target frame could be read" + (" (pass --collection?)" if args.collection is None else ""))
    texts = captioner.caption(images, max_tokens=args.max_tokens, batch_size=args.batch_size,
                              progress=lambda it: tqdm(it, desc="captioning", unit="batch", file=sys.stderr))
    queries = captions.caption_queryset(targets.iloc[positions], texts, source=captioner.describe(),
                                        random_weights=args.random_weights)
    path = write_queryset(queries, args.out)
    print(f"wrote {len(queries)} {queries['query_type'].iat[0] if len(queries) else 'clipcap'} queries to {path}"
          + (f" ({len(images) - len(queries)} empty captions left out)" if len(queries) < len(images) else ""))
    if args.random_weights:
        print("warning: random weights: the captions are gibberish (tests only)")
    return 0

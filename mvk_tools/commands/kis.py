"""`mvk kis`: known-item-search benchmark: the rank of each query's target frame, hit@k, MRR, plots"""
from __future__ import annotations

import argparse

from search.clikit import (add_encoder_arguments, add_threads_argument, non_negative_float, positive_float,
                           positive_int)

NAME = "kis"
HELP = "known-item-search benchmark: the rank of each query's target frame, hit@k, MRR, plots"
DESCRIPTION = """\
Known-item-search benchmark (MVK, seed 003). For every query, the rank of its target among ALL indexed
frames (1 = best), per query type and per fusion mode in the same run: N, hit@1/10/100/1000, MRR, median
and mean rank. Writes per_query.csv, summary.json and rank plots (PNG) into --out and prints a table.

Query sets: the tidy CSV (query_id,query_type,text,target_site,target_video,target_frame|target_time
[,target_selected]) or MVK's KIS files ('img; CLIP_img; ClipCap_text; CLIP_ClipCap; novice_text; CLIP_text'
and 'img; text; CLIP_text', vector columns optional); the format is detected from the header. Targets:
<site>/<video>_<n>.jpg under any prefix (n = the video's n-th selected frame), <site>_<video>_<n>.jpg,
<site>/<video>/<n>.jpg, <site>/<video>/frame<h>-<mm>-<ss>-<ff>.jpg (a time code: ff frames after h:mm:ss).
Bad rows are reported with file and line and skipped; the other rows run. At most 64 MiB per file.

What counts as a hit (--match; stated in the table and summary.json):
  exact  only the target's own frame: the selected frame it names, found by name in an index built with
         --selected-frames (as in MVK's KIS code); else the frame at target_frame or at its time.
         The default when the index holds selected frames.
  time   any indexed frame of the target's video within --tolerance seconds of the target's time (for
         indexes sampled every N seconds; the default for them).
A target matching more than 3 frames is warned about. Ties count against the target (pessimistic rank;
rank - ties is the optimistic one; MVK's code counts from 0). Targets not in the index are reported apart
(n_not_in_index, with the reason), never counted as misses.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("querysets", nargs="+", metavar="QUERYSET", help="query-set CSV files (tidy or MVK KIS)")
    parser.add_argument("--index", required=True, help="index folder (built by mvk index)")
    parser.add_argument("--out", required=True, help="output folder for per_query.csv, summary.json and plots")
    parser.add_argument("--fusion", default="frame,object",
                        help="comma-separated fusion modes to compare in one run, from frame, object, max, "
                             "weighted (default: frame,object)")
    parser.add_argument("--weight", type=float, default=0.5,
                        help="object weight w of the weighted fusion, (1-w)*frame + w*object (default 0.5)")
    parser.add_argument("--match", choices=("exact", "time"), default=None,
                        help="what counts as a hit: exact = the target's own frame (default when the index holds "
                             "selected frames), time = any frame of its video within --tolerance (default "
                             "otherwise)")
    parser.add_argument("--tolerance", type=non_negative_float, default=0.5,
                        help="--match time: seconds around the target time within which a frame of the target's "
                             "video counts as a hit (default 0.5: one frame at one indexed frame per second)")
    parser.add_argument("--fps", type=positive_float, default=30.0,
                        help="frame rate used to turn target frame numbers into times when the index cannot tell "
                             "a video's own (default 30, MVK's)")
    parser.add_argument("--use-file-vectors", action="store_true",
                        help="rank with the precomputed vectors in the query files instead of encoding the texts "
                             "(their dimension must match the index)")
    parser.add_argument("--batch-size", type=positive_int, default=64,
                        help="texts per encoding batch (default 64: BENCHMARKS.md, text encoding)")
    parser.add_argument("--no-cache", action="store_true",
                        help="encode every text again (default: text vectors are cached in INDEX/cache/text-vectors)")
    add_threads_argument(parser, "encoding and ranking pass (default: every usable core)")
    add_encoder_arguments(parser, models=False)


def _fusions(text: str) -> list[str]:
    from search.errors import InputError
    from search.query import FUSIONS

    modes = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in modes if m not in FUSIONS]
    if bad or not modes:
        raise InputError(f"--fusion {text!r}: unknown mode(s) {bad}; choose from {', '.join(FUSIONS)}")
    return list(dict.fromkeys(modes))


def run(args: argparse.Namespace) -> int:
    import json
    import sys
    import time
    from pathlib import Path

    from tqdm import tqdm

    from mvk_tools import kis, plots
    from search.errors import InputError
    from search.store import open_index

    started = time.time()
    fusions = _fusions(args.fusion)
    if not 0.0 <= args.weight <= 1.0:
        raise InputError(f"--weight must lie in [0, 1], got {args.weight}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: is a file; give a folder (created if missing)")
    index = open_index(args.index, device=args.device)
    for site, why in index.errors.items():
        print(f"warning: shard {site} skipped: {why}", file=sys.stderr)
    if not len(index.frames):
        raise InputError(f"index {args.index} holds no readable frame")

    identity = index.encoder
    result = kis.run_benchmark(
        index, args.querysets, use_file_vectors=args.use_file_vectors, fusions=fusions, weight=args.weight,
        tolerance=args.tolerance, match=args.match, default_fps=args.fps, encode_batch=args.batch_size,
        threads=args.threads, cache=None if args.no_cache else Path(args.index),
        encoder=lambda: kis.encoder_for_index(identity, checkpoint=args.clip_checkpoint,
                                              random_weights=args.random_weights, device=args.device),
        space_encoders=lambda name, space: kis.encoder_for_index(space, random_weights=args.random_weights,
                                                                 device=args.device),
        # an unusable file is printed once: in the error when no query is left, else after the run
        warn=lambda message, what: print(message, file=sys.stderr) if what != "file" else None,
        progress=lambda items, desc, total: tqdm(items, desc=desc, total=total, file=sys.stderr,
                                                 unit="batch" if desc.startswith("encoding") else "query"))
    for message in result.file_errors:
        print(f"error: {message}", file=sys.stderr)
    per_query, summary = result.per_query, result.summary
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"--out {out}: cannot create the folder ({exc.strerror or exc})") from None
    from mvk_tools.exports import to_csv
    to_csv(per_query, out / "per_query.csv", index=False)
    report = {
        "index": str(Path(args.index).resolve()), "n_frames": int(len(index.frames)),
        "sites": sorted(index.shards), "skipped_sites": index.errors, "encoder": identity,
        "spaces": [{"name": name, "encoder": index.in_space(name).encoder} for name in index.spaces()],
        "random_weights": result.random_weights,
        "warning": "the index's encoder has random weights: these ranks mean nothing" if result.random_weights else "",
        "vectors": result.vectors, "query_sets": result.query_sets, "file_errors": result.file_errors,
        "issues": [str(i) for i in result.issues],
        "fusions": fusions, "weight": args.weight, "match": result.match, "match_rule": result.match_rule,
        "tolerance_s": args.tolerance if result.match == "time" else None, "default_fps": args.fps,
        "tie_rule": kis.TIE_RULE, "n_queries": result.n_queries,
        "many_matches": result.many_matches,
        "flagged_targets": result.flagged,
        "timecode_readings": result.timecode_readings,
        "groups": json.loads(summary.to_json(orient="records")),
        "not_in_index": result.not_in_index,
    }
    paths = plots.write_all(per_query, out, title_suffix="(RANDOM WEIGHTS)" if result.random_weights else "")
    report["plots"] = [p.name for p in paths]
    report["seconds"] = round(time.time() - started, 2)
    (out / "summary.json").write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")

    print(f"hits: {result.match_rule}")
    print(kis.format_table(summary))
    if result.many_matches:
        print(f"warning: {len(result.many_matches)} target(s) match more than {kis.MANY_MATCHES} frames (their rank "
              f"is that of the best one): see above and summary.json")
    if result.flagged:
        kinds: dict[str, int] = {}
        for f in result.flagged:
            kind = f["flag"].split(" (")[0]
            kinds[kind] = kinds.get(kind, 0) + 1
        print(f"warning: {len(result.flagged)} target(s) are selected frames the index flagged ("
              + ", ".join(f"{n} {k}" for k, n in kinds.items()) + "): their time and place are uncertain; "
              "see above, per_query.csv (target_flag) and summary.json")
    for file, r in result.timecode_readings.items():
        print(f"time codes of {file}: read as {r['reading']}" + (f" ({r['why']})" if r["why"] else ""))
    if result.not_in_index:
        print(f"{len(result.not_in_index)} target(s) not in the index (not counted as misses; reasons in "
              f"summary.json)")
    if result.issues or result.file_errors:
        print(f"{len(result.issues)} row issue(s), {len(result.file_errors)} unusable file(s): see above and "
              f"summary.json")
    if result.random_weights:
        print("warning: random-weight encoder: these ranks mean nothing")
    print(f"wrote into {out}: {', '.join(['per_query.csv', 'summary.json', *(p.name for p in paths)])}")
    return 0

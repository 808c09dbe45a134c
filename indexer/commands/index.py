"""`mvk index`: segment, embed and index the videos of a collection, one shard per dive site"""
from __future__ import annotations

import argparse
import os
import sys

from search.clikit import (add_deprecated_alias, add_model_weight_arguments, index_type, non_negative_float,
                           non_negative_int, positive_float, positive_int)

NAME = "index"
HELP = "segment, embed and index the videos of a collection, one shard per dive site"
DESCRIPTION = """\
Segment, embed and index the videos of a collection, one FAISS shard per dive site.

For every video: frames are sampled (one per --every seconds, or MVK's selected frames), cut into
objects by clustering DINO attention, and every frame and object gets a CLIP vector. A site's shard is
swapped in whole when all its videos are done, so searches keep working during a build.

Resumable: a run stopped at any moment (Ctrl-C, a crash, a killed job) continues where it stopped when
run again with the same arguments; finished videos are not recomputed and no row is duplicated. Sites
whose shard already matches their video files, and whose every file matches its checksum, are left
untouched; a changed video is redone, a broken shard file is rewritten from the parts (and named).
--rebuild recomputes the chosen sites from scratch, aside: the old shard is served until the new one
replaces it (rerun without --rebuild to resume an interrupted rebuild).

Adding a site to an existing index: the index's recorded models and settings (sampling, decode size,
objects, segmentation, frame fit) are used for every flag left out; a flag that differs from the index is
refused before any model is loaded, naming only the differing settings.

Videos that cannot be read are listed at the end and recorded in the site's manifest; the other
videos go on. Exit code 0 when the run completed (even if some videos failed), 1 when nothing could
be indexed, 2 on a usage or model error.

Engines: --engine local (the default) runs in this process. --engine ray runs the per-video work on a
Ray cluster (decoding and segmentation in workers that hold the backbone, frames in chunks of --batch-size
to workers that hold CLIP; --gpus-per-worker G where the cluster has GPUs): install it with pip install -e ".[ray]", start a cluster
(ray start --head --port=6379 --node-ip-address=HEAD_IP; ray start --address=HEAD_IP:6379 on the other
machines) and pass --ray-address HEAD_IP:6379.
Workers read the videos themselves and the driver writes the parts: on a cluster of several
machines the index folder and the collection must be on a path every node sees under the same name
(NFS or another shared filesystem); a run on paths that are not shared stops before any work. Both
engines write the same index and can resume each other's runs.

Example:
  mvk index MVK --all --index idx
  mvk index MVK --site Oahu_Jul2022 --index idx --objects crop --every 2
  mvk index MVK --all --index idx-448 --dense-size 448
  mvk index MVK --all --index idx-siglip --preset balanced      (SigLIP ViT-B-16; mvk models lists them)
  mvk index MVK --all --index idx --model ViT-B-32@openai --model ViT-B-16-SigLIP@webli   (two spaces, fused)
  mvk index /shared/MVK --all --index /shared/idx --engine ray --ray-address HEAD_IP:6379
  mvk index MVK --site Tulamben2_Jun2022 --index idx          (a new site joins with idx's settings)
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("collection", metavar="COLLECTION",
                        help="collection folder (MVK layout, a plain folder of videos, or flat VBS-style names)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--site", nargs="+", action="extend", metavar="S", dest="sites",
                       help="index only these dive sites (repeatable)")
    which.add_argument("--all", action="store_true", help="index every site (the default when no --site is given)")
    parser.add_argument("--index", required=True, metavar="DIR", help="index folder (created if missing)")
    parser.add_argument("--rebuild", action="store_true",
                        help="recompute the chosen sites even when up to date; the old shards stay searchable "
                             "until the new ones replace them")
    parser.add_argument("--follow-outside-links", action="store_true", default=None,
                        help="also index videos whose symbolic links lead outside the collection (refused by "
                             "default, as the app and the API refuse to read them)")
    parser.add_argument("--verify", action="store_true",
                        help="after the run, check every shard of the index against its checksums (as mvk "
                             "check does) and list what is broken; exit code 1 if anything is")

    sampling = parser.add_argument_group("sampling")
    how = sampling.add_mutually_exclusive_group()
    how.add_argument("--every", type=positive_float, default=None, metavar="SECONDS",
                     help="sample one frame per SECONDS (default 1.0)")
    how.add_argument("--selected-frames", action="store_true", default=None,
                     help="use MVK's information/selected_frames/ (about one per second); videos without "
                          "them fall back to --every")
    sampling.add_argument("--max-side", type=non_negative_int, default=None,
                          help="decode frames at most this many pixels on the longest side (default 512; "
                               "0: full size); boxes are stored in source pixels")

    objects = parser.add_argument_group("objects and segmentation")
    objects.add_argument("--objects", choices=("pool", "pool-raw", "crop", "none"), default=None,
                         help="object vectors: pool = dense CLIP features (the last block computed the "
                              "ClearCLIP way) of the frame's own CLIP pass averaged inside each mask (default, "
                              "cheap); pool-raw = the same with CLIP's raw last-layer patch tokens; crop = one "
                              "CLIP pass per object on its masked box; none = frame vectors only, no "
                              "segmentation. pool needs a ViT CLIP or a SigLIP tower (there: the attention-pooling "
                              "head's value path, MaskCLIP-style), pool-raw a ViT CLIP; left out with a model "
                              "that has neither, objects are crops (a note says so)")
    objects.add_argument("--dense-size", type=positive_int, default=None, metavar="PX",
                         help="pool modes: run the dense pass on a PX x PX input (a multiple of the patch size; "
                              "position embeddings interpolated), e.g. 448 for a 14x14 grid with ViT-B-32, for "
                              "small animals; the frame vector stays CLIP's own size (default: CLIP's own size, "
                              "one pass for both)")
    objects.add_argument("--backbone", default=None,
                         help="DINO backbone for segmentation (default dino-vits16)")
    objects.add_argument("--dino-checkpoint", dest="checkpoint", default=None, metavar="FILE",
                         help="local checkpoint file for the DINO backbone")
    add_deprecated_alias(objects, "--checkpoint", "--dino-checkpoint", "checkpoint")
    objects.add_argument("--tau", type=positive_float, default=None,
                         help="clustering threshold (default 1.0: several objects; 1.6 merges the foreground)")
    objects.add_argument("--key-stride", type=positive_int, default=None, metavar="R",
                         help="every R-th sampled frame is a key frame of the attention (default 10)")
    objects.add_argument("--short-side", type=positive_int, default=None, metavar="PX",
                         help="segmentation input: frames resized so the short side is about PX (default 224; "
                              "160 roughly halves the segmentation cost, coarser masks)")
    objects.add_argument("--crop-margin", type=non_negative_float, default=None,
                         help="crop mode: margin around the object's box, times its longer side (default 0.1)")

    clip = parser.add_argument_group("CLIP model")
    clip.add_argument("--preset", choices=("fast", "balanced", "best", "species"), default=None,
                      help="a named model (mvk models shows each with its cost and published retrieval figures): "
                           "fast = ViT-B-32 laion2b, balanced = ViT-B-16-SigLIP, best = ViT-SO400M-14-SigLIP-384, "
                           "species = BioCLIP; instead of --model/--pretrained")
    clip.add_argument("--model", action="append", default=None, metavar="NAME[@TAG]",
                      help="open_clip model name, optionally with its pretrained tag (ViT-B-16-SigLIP@webli); "
                           "default ViT-B-32. Repeat it for several embedding spaces in one index, fused at query "
                           "time (the first is the index's first space; a space added to an existing index embeds "
                           "only what it lacks, the other spaces stay as they are)")
    clip.add_argument("--pretrained", default=None, help="open_clip pretrained tag of the first --model (default openai)")
    clip.add_argument("--clip-checkpoint", default=None, metavar="FILE", help="local open_clip checkpoint file")
    clip.add_argument("--frame-fit", choices=("letterbox", "crop"), default=None,
                      help="how frames meet CLIP's square input: letterbox keeps the sides of 16:9 footage "
                           "(default), crop takes the centre square")
    clip.add_argument("--batch-size", type=positive_int, default=16, help="frames per CLIP batch (default 16)")

    store = parser.add_argument_group("index")
    store.add_argument("--index-type", type=index_type, default="flat", metavar="TYPE",
                       help="FAISS index per shard: flat = exact inner product (default); ivf-flat, ivf-pq, hnsw "
                            "or any FAISS factory string (\"IVF4096,PQ32x4fs\", \"HNSW32\", \"OPQ16,IVF1024,PQ16\") "
                            "are approximate, for big collections; a table too small to train one is stored flat")
    engine = parser.add_argument_group("engine")
    from indexer.engines import ENGINES
    engine.add_argument("--engine", choices=tuple(ENGINES), default="local",
                        help="where the per-video work runs: " + "; ".join(f"{k} = {e.help}" for k, e in ENGINES.items())
                             + "; with several machines the collection and --index must be on a path every node sees")
    engine.add_argument("--ray-address", default=None, metavar="ADDR",
                        help="Ray cluster to join: HEAD_IP:6379 (the head's address as `ray start --head` prints "
                             "it), auto (the one started with `ray start` on this machine) or ray://HOST:10001; "
                             "default: start a Ray instance on this machine for this run")
    engine.add_argument("--workers", type=positive_int, default=None, metavar="N",
                        help="--engine ray: model workers (default: one per GPU of the cluster, else half its CPUs)")
    engine.add_argument("--gpus-per-worker", type=positive_float, default=None, metavar="G",
                        help="--engine ray: GPUs each model worker reserves, fractions allowed (0.5: two workers "
                             "share a GPU); default 1 where the cluster has GPUs")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_model_weight_arguments(parser)


# flag (argparse dest) -> the IndexConfig field it sets ("segment.<name>" for segmentation parameters)
FLAG_SETTINGS = {"every": "every_seconds", "selected_frames": "selected_frames", "max_side": "decode_max_side",
                 "objects": "objects", "crop_margin": "crop_margin", "frame_fit": "frame_fit",
                 "tau": "segment.tau", "key_stride": "segment.key_stride", "short_side": "segment.short_side",
                 "dense_size": "dense_size", "index_type": "index_type", "batch_size": "batch_size",
                 "follow_outside_links": "follow_outside_links"}
MODEL_FLAGS = {"model": "model", "pretrained": "pretrained", "clip_checkpoint": "clip_checkpoint",
               "backbone": "backbone", "checkpoint": "checkpoint"}


def requested_settings(args: argparse.Namespace) -> dict:
    """The settings the command line gives explicitly (flags left out are absent)."""
    out = {field: getattr(args, dest) for dest, field in FLAG_SETTINGS.items() if getattr(args, dest) is not None}
    if "decode_max_side" in out:
        out["decode_max_side"] = out["decode_max_side"] or None          # --max-side 0: full size
    return out


def split_models(args: argparse.Namespace) -> list[tuple[str, str | None]]:
    """Set ``args.model``/``args.pretrained`` to the first ``--model`` and return the further ones as
    (name, tag) pairs (InputError when the first has a tag and --pretrained too)."""
    from indexer.spaces import parse_model
    from search.errors import InputError
    given = [parse_model(v) for v in (args.model or [])]
    if not given:
        args.model = None
        return []
    (name, tag), rest = given[0], given[1:]
    if tag is not None and args.pretrained is not None and tag != args.pretrained:
        raise InputError(f"--model {name}@{tag} and --pretrained {args.pretrained} name two tags: give one")
    args.model, args.pretrained = name, tag if tag is not None else args.pretrained
    return rest


def apply_preset(args: argparse.Namespace) -> None:
    """--preset NAME sets --model and --pretrained (InputError when either is given as well)."""
    if args.preset is None:
        return
    from search.errors import InputError
    from search.models import preset
    if args.model is not None or args.pretrained is not None:
        raise InputError(f"--preset {args.preset} names the model itself: leave --model and --pretrained out")
    args.model, args.pretrained = preset(args.preset)


def objects_fallback(config: "object", encoder: "object", explicit: bool) -> tuple["object", str | None]:
    """(config, note): when --objects was left out, pool is the default and the model's tower has no dense
    path (ResNet, ConvNeXt, MobileCLIP, ...), the objects are crops instead, with a note saying so. An
    explicit --objects pool is refused later by the pipeline with the modes that work."""
    from dataclasses import replace
    if explicit or config.objects != "pool" or encoder.aligned_variant() is not None:
        return config, None
    if config.dense_size is not None:
        return config, None
    note = (f"note: {encoder.model_name} has no per-patch features in its joint space: objects are embedded "
            f"as crops (--objects crop), one pass per object")
    return replace(config, objects="crop"), note


def plan_run(args: argparse.Namespace) -> tuple[object, dict]:
    """(IndexConfig, model names) of this run, checked against the index before any model is loaded: for an
    existing index its recorded settings fill every flag left out, and a flag that differs is refused
    (ModelMismatchError naming only the differing keys)."""
    from indexer.pipeline import IndexConfig
    from indexer.settings import (apply_settings, mismatch_message, model_differences, read_root_manifest,
                                  setting_differences, settings_from_manifest)
    from search.errors import ModelMismatchError

    requested = requested_settings(args)
    models = {key: getattr(args, dest) for dest, key in MODEL_FLAGS.items()}
    manifest = read_root_manifest(args.index)
    if manifest is None:
        return apply_settings(IndexConfig(), requested), models
    built = settings_from_manifest(manifest, random_weights=args.random_weights)
    differences = setting_differences(built.config, requested) + model_differences(built, models)
    if differences:
        flags = {key: "--" + dest.replace("_", "-") for dest, key in (*FLAG_SETTINGS.items(), *MODEL_FLAGS.items())}
        message = mismatch_message(args.index, differences, flags)
        if any(key == "model" for key, _, _ in differences):
            message += (f"; to add a model to this index as a further embedding space, give the index's own first: "
                        f"--model {built.model} --model {args.model}")
        raise ModelMismatchError(message)
    recorded = {key: getattr(built, key) for key in MODEL_FLAGS.values()}
    return apply_settings(built.config, requested), {k: v if v is not None else recorded[k] for k, v in models.items()}


def run(args: argparse.Namespace) -> int:
    from indexer.engines import EngineOptions, ModelSpec, check_engine, make_executor
    from indexer.models import load_models
    from indexer.pipeline import index_collection, select_sites
    from indexer.progress import Progress, TqdmProgress
    from indexer.rerun import up_to_date_result
    from mvk_tools.layout import discover
    from search.errors import InputError

    if args.engine != "ray" and (args.ray_address is not None or args.workers is not None
                                 or args.gpus_per_worker is not None):
        raise InputError("--ray-address, --workers and --gpus-per-worker go with --engine ray")
    check_engine(args.engine)                  # says what to install, before any model is loaded

    further = split_models(args)
    apply_preset(args)
    config, models = plan_run(args)
    catalog = discover(args.collection)
    select_sites(catalog, args.sites)                    # unknown sites: refused before the models load
    result = None if args.rebuild or models["clip_checkpoint"] or models["checkpoint"] else up_to_date_result(
        args.collection, args.index, config=config, random_weights=args.random_weights, sites=args.sites,
        catalog=catalog, spaces=[name for name, _ in further])
    if result is not None:                               # nothing to compute: no model is loaded
        return _report(result, args)
    encoder, extractor = load_models(objects=config.objects, random_weights=args.random_weights,
                                     device=args.device, **models)
    config, note = objects_fallback(config, encoder, explicit=args.objects is not None)
    if note:
        print(note, file=sys.stderr)
    from indexer.models import load_encoder
    spaces = [load_encoder(model=name, pretrained=tag, random_weights=args.random_weights, device=args.device)
              for name, tag in further]
    if args.random_weights:
        print("note: --random-weights: models are randomly initialised; this index is for tests and "
              "benchmarks only (its manifest says so)", file=sys.stderr)
    progress = Progress() if args.no_progress else TqdmProgress()
    files = {k: os.path.abspath(v) if k.endswith("checkpoint") and v else v for k, v in models.items()}
    executor = make_executor(args.engine, ModelSpec(random_weights=args.random_weights, **files), encoder, extractor,
                             EngineOptions(address=args.ray_address, workers=args.workers,
                                           gpus_per_worker=args.gpus_per_worker, collection=args.collection))
    try:
        result = index_collection(args.collection, args.index, encoder=encoder, extractor=extractor,
                                  config=config, sites=args.sites, rebuild=args.rebuild, catalog=catalog,
                                  progress=progress, executor=executor, spaces=spaces)
    except KeyboardInterrupt:
        print("\nstopped: finished videos are kept; run the same command again to resume", file=sys.stderr)
        raise
    return _report(result, args)


def _report(result: "object", args: argparse.Namespace) -> int:
    """Print the run's summary (and the --verify check); the exit code."""
    from indexer.pipeline import IndexResult
    assert isinstance(result, IndexResult)
    print(format_summary(result))
    code = 0 if result.ok else 1
    if args.verify:
        from search.commands.check import format_check
        from search.store import check_index
        check = check_index(args.index)
        print("\n" + format_check(check))
        code = code or (0 if check.ok else 1)
    return code


def format_summary(result: "object") -> str:
    """The table printed at the end of a run: per site, stage throughput, errors, and what it means."""
    from indexer.pipeline import STAGES, IndexResult
    from indexer.progress import plural
    from search.clikit import printable
    assert isinstance(result, IndexResult)
    head = ("site", "status", "indexed", "resumed", "failed", "frames", "objects")
    rows = []
    for s in result.sites:
        n = {k: sum(v.status == k for v in s.videos) for k in ("indexed", "resumed", "failed")}
        rows.append((printable(s.site), s.status, *(str(n[k]) for k in ("indexed", "resumed", "failed")),
                     str(s.frames), str(s.objects)))
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)]
    line = lambda cells: "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    out = [f"note: {n}" for n in result.notes]
    out += [line(head), line(tuple("-" * w for w in widths)), *(line(r) for r in rows)]
    out += [f"  {printable(s.site)}: {printable(n)}" for s in result.sites for n in s.notes]
    if result.frames_computed:
        fps = result.frames_per_second()
        stages = ", ".join(f"{k} {result.seconds[k]:.1f}s ({fps[k]:.1f} f/s)" for k in STAGES if result.seconds[k] > 0)
        out.append(f"\n{plural(result.frames_computed, 'frame')} computed in {result.wall_seconds:.1f}s: {stages}")
        if result.engine is not None:
            summed = "; stage seconds are summed over the workers" if result.engine.name != "local" else ""
            out.append(f"{result.engine.describe()}{summed}")
    from indexer.selected import summary_line
    selected = summary_line([v.selected for s in result.sites for v in s.videos if v.selected])
    if selected:
        out.append(f"\n{selected}")
    notes = [(s.site, v.video_path, v.note) for s in result.sites for v in s.videos if v.note]
    unselected = [n for n in notes if n[2].startswith("no selected frames")]
    if unselected:
        out.append(f"\n{len(unselected)} video(s) have no selected frames: {unselected[0][2].split(': ', 1)[1]}")
    flagged = [n for n in notes if not n[2].startswith("no selected frames")]
    if flagged:
        out.append(f"\n{len(flagged)} note(s):")
        out += [f"  {printable(path)}: {printable(msg)}" for _, path, msg in flagged]
    errors = result.errors
    if errors:
        out.append(f"\n{len(errors)} error(s):")
        out += [f"  {printable(path or site)}: {printable(msg)}" for site, path, msg in errors]
    if result.random_weights:
        out.append("\nbuilt with RANDOM weights: vectors are meaningless (tests and benchmarks only)")
    written = any(s.status == "written" for s in result.sites)
    if not result.ok:
        out.append("\nnothing could be indexed")
    elif not written and not errors:
        out.append(f"\nindex at {result.root} is up to date")
    elif errors:
        out.append(f"\nindex written to {result.root}; the run completed, but some videos failed (listed above)")
    else:
        out.append(f"\nindex written to {result.root}")
    return "\n".join(out)

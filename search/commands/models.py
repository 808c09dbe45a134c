"""`mvk models`: the embedding models the project knows, with measured cost and published retrieval"""
from __future__ import annotations

import argparse

NAME = "models"
HELP = "list the embedding models the project knows: cost per frame measured here, published retrieval, cache"
DESCRIPTION = """\
List the open_clip models the project recommends, one row each: name and pretrained tag, the preset that
picks it (mvk index --preset), embedding size, input size, the cost per frame measured on this project's
CPU with the real architecture and random weights (frame only, and with objects; x B-32 is the ratio to
ViT-B-32 measured next to it in time, which holds on a busy machine where the milliseconds do not), published zero-shot retrieval figures (recall@1 of text-to-image retrieval on
Flickr30k and MSCOCO, from open_clip's retrieval results table), and whether the weights are in the local
cache (checked in the cache folders, without network). Below the table: the command that fetches each
model's weights on a machine with internet.

Published figures are for photos with captions, not underwater video: measure on MVK with
`mvk kis QUERIES.csv --index IDX --out RUN` once the weights are here.

Example:
  mvk models
  mvk models --json
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="one JSON object per model instead of the table")


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def format_table(rows: list[dict], costs: dict, source: str) -> str:
    """The table of ``search.models.model_rows`` with the cost and figure sources under it."""
    head = ("model", "tag", "preset", "dim", "px", "frame ms", "x B-32", "objects ms", "Flickr R@1", "COCO R@1",
            "cached")
    body = []
    for r in rows:
        fig = r["retrieval"]
        objects = "-" if r["objects_ms"] is None else f"{r['objects_ms']:.0f} ({r['objects_mode']})"
        body.append((r["name"], r["pretrained"] or "-", r["preset"] or "", _num(r["embed_dim"], "d"),
                     _num(r["image_size"], "d"), _num(r["frame_ms"], ".0f"), _num(r["frame_ratio"], ".1f"), objects,
                     _num(fig.get("flickr_image_r1"), ".3f"), _num(fig.get("mscoco_image_r1"), ".3f"),
                     "yes" if r["cached"] else "no"))
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
    line = lambda cells: "  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    out = [line(head), line(tuple("-" * w for w in widths)), *(line(b) for b in body)]
    arch = [f"{r['name']} costs as {r['arch']}" for r in rows if r["arch"] != r["name"]]
    out += ["", f"cost: {costs.get('note', 'not measured yet: python3 benchmarks/bench_models.py --write')}"
                f"{'; ' + costs['device'] if costs.get('device') else ''}" + (f"; {', '.join(arch)}" if arch else ""),
            f"retrieval: text-to-image recall@1, zero-shot; {source}; '-' where the table has no row",
            "quality on MVK: measure it with mvk kis QUERIES.csv --index IDX --out RUN once the weights are here",
            "", "fetch the weights on a machine with internet (then copy ~/.cache/huggingface or ~/.cache/clip here):"]
    out += [f"  {r['name']}{' ' + r['pretrained'] if r['pretrained'] else ''}: {r['fetch']}"
            for r in rows if not r["cached"]]
    return "\n".join(out)


def run(args: argparse.Namespace) -> int:
    import json

    from search.models import RETRIEVAL_SOURCE, measured_costs, model_rows
    rows = model_rows()
    if args.json:
        for r in rows:
            print(json.dumps(r))
        return 0
    print(format_table(rows, measured_costs(), RETRIEVAL_SOURCE))
    return 0

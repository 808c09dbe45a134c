"""A known-item-search query set written from a synthetic collection's ground truth (``mvk_tools.synth``):
every selected frame of every synthetic video gets queries that describe the shapes in view, by colour and
shape (``synthetic-colour``) and by colour, pattern, shape and motion (``synthetic-full``). The generator
knows what each shape looks like (metadata JSON) and where it is in every frame (the ground-truth masks), so
the descriptions are true by construction; ``mvk demo`` ships this set so the KIS page has something to run.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from mvk_tools.querysets import make_queries
from mvk_tools.synth import COLOUR_NAMES, load_masks

QUERY_TYPES = ("synthetic-colour", "synthetic-full")
SOURCE = "mvk_tools.synth ground truth"
PATTERN_WORDS = {"stripes": "striped", "checker": "checkered", "dots": "dotted", "rings": "ringed"}
MIN_AREA = 0.01          # share of the frame an object must cover to be described
MAX_OBJECTS = 3          # the largest ones in view


def _colour_name(rgb: list[int] | tuple[int, ...]) -> str:
    """The palette name of ``rgb``, or the nearest palette colour's."""
    key = tuple(int(c) for c in rgb)
    if key in COLOUR_NAMES:
        return COLOUR_NAMES[key]
    nearest = min(COLOUR_NAMES, key=lambda c: sum((a - b) ** 2 for a, b in zip(c, key)))
    return COLOUR_NAMES[nearest]


def _motion(masks: np.ndarray, obj: int, frame: int, step: int) -> str:
    """How object ``obj`` moves around ``frame``: from its centroid ``step`` frames before to ``step`` after."""
    def centre(f: int) -> np.ndarray | None:
        ys, xs = np.nonzero(masks[f] == obj)
        return np.array([xs.mean(), ys.mean()]) if len(xs) else None

    t = masks.shape[0]
    a, b = centre(max(frame - step, 0)), centre(min(frame + step, t - 1))
    if a is None or b is None:
        return "leaving the frame" if b is None else "entering the frame"
    dx, dy = b - a
    if max(abs(dx), abs(dy)) < 1.0:
        return "standing still"
    if abs(dx) >= abs(dy):
        return "moving right" if dx > 0 else "moving left"
    return "moving down" if dy > 0 else "moving up"


def describe_frame(masks: np.ndarray, objects: list[dict], frame: int, fps: float) -> dict[str, str]:
    """``{query type: text}`` for one frame; empty when no object covers MIN_AREA of it."""
    area = np.bincount(masks[frame].ravel(), minlength=256)[1:] / masks[frame].size
    shown = [o for o in sorted(objects, key=lambda o: -area[o["id"] - 1]) if area[o["id"] - 1] >= MIN_AREA]
    shown = shown[:MAX_OBJECTS]
    if not shown:
        return {}
    step = max(1, round(fps / 4))
    colour = [f"a {_colour_name(o['color'])} {o['shape']}" for o in shown]
    full = [f"a {_colour_name(o['color'])} {PATTERN_WORDS.get(o['texture'], o['texture'])} {o['shape']} "
            f"{_motion(masks, o['id'], frame, step)}" for o in shown]
    join = lambda items: items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
    return {"synthetic-colour": join(colour) + " over blue-green water", "synthetic-full": join(full)}


def synthetic_queryset(collection: str | Path) -> pd.DataFrame:
    """Tidy queries (mvk_tools.querysets columns) for every selected frame of every synthetic video of
    ``collection`` (videos without synthetic metadata, such as real clips, are skipped)."""
    info = Path(collection) / "information" / "metadata"
    records = []
    for meta_path in sorted(info.glob("*/*.json")):
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if not meta.get("synthetic"):
            continue
        site, video = str(meta["site"]), str(meta["video_id"])
        masks = load_masks(collection, site, video)
        fps = float(meta["fps"])
        for entry in meta.get("selected_frames", []):
            frame = int(entry["frame"] if isinstance(entry, dict) else entry)    # the true frame index
            if not 0 <= frame < masks.shape[0]:
                continue
            for query_type, text in describe_frame(masks, meta.get("objects", []), int(frame), fps).items():
                records.append({"query_id": f"{site}-{video}-{frame:05d}-{query_type.split('-')[1]}",
                                "query_type": query_type, "text": text, "target_site": site,
                                "target_video": video, "target_frame": int(frame),
                                "target_time": frame / fps, "source": SOURCE})
    return make_queries(records)

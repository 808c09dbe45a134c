"""Overlay images of segmented frames that a person can look at: each track in its own colour (the same
colour in every frame), object outlines, boxes with the track id, the background dimmed, and a caption
(which also says when the model had random weights)."""
from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from indexer.segment import SegmentedFrame


def track_color(track_id: int) -> tuple[int, int, int]:
    """A bright colour per track id, stable across frames and runs (golden-angle hues)."""
    hue = (track_id * 0.618033988749895) % 1.0
    h6 = hue * 6
    i = int(h6)
    f = h6 - i
    v, s = 1.0, 0.85
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    r, g, b = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i % 6]
    return int(r * 255), int(g * 255), int(b * 255)


def _outline(mask: np.ndarray) -> np.ndarray:
    m = np.pad(mask, 1)
    inner = m[1:-1, 1:-1] & m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]
    return mask & ~inner


def overlay_frame(sf: SegmentedFrame, *, alpha: float = 0.45, caption: str | None = None) -> np.ndarray:
    """(H, W, 3) uint8: the frame with its objects painted over it. Each outline contrasts with its own
    object (black or white where the track's colour would vanish on it); lines and text grow with the frame."""
    from PIL import ImageFont

    from search.drawing import line_width, outline_colour, text_size

    source = sf.frame.image
    out = source.astype(np.float32)
    edges = {}
    for obj in sf.objects:
        if obj.is_background:
            out[obj.mask] *= 0.55
            continue
        color = np.asarray(track_color(obj.track_id), dtype=np.float32)
        edges[obj.track_id] = outline_colour(source[obj.mask], track_color(obj.track_id))
        out[obj.mask] = (1 - alpha) * out[obj.mask] + alpha * color
        out[_outline(obj.mask)] = edges[obj.track_id]
    img = Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    size = text_size(img.height)
    font = ImageFont.load_default(size=size)
    for obj in sf.objects:
        if obj.is_background:
            continue
        x0, y0, x1, y1 = obj.bbox
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), outline=edges[obj.track_id], width=line_width(img.height))
        draw.text((x0 + 2, y0 + 1), str(obj.track_id), fill=(255, 255, 255), font=font,
                  stroke_width=max(1, size // 12), stroke_fill=(0, 0, 0))
    if caption:
        bar = size + 4
        draw.rectangle((0, img.height - bar, img.width, img.height), fill=(0, 0, 0))
        draw.text((2, img.height - bar + 1), caption, fill=(255, 255, 0), font=font)
    return np.asarray(img)


def write_overlays(frames: Iterable[SegmentedFrame], out_dir: str | Path, *, caption: str = "",
                   identity: dict | None = None) -> dict:
    """Write ``frame_<index>.png`` per frame and ``tracks.json`` (per track: frames seen, mean area,
    background or not; plus the backbone identity) into ``out_dir``; returns that summary."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tracks: dict[int, dict] = {}
    n = 0
    for sf in frames:
        text = f"{caption}  frame {sf.frame.index}  t={sf.frame.time:.2f}s".strip()
        Image.fromarray(overlay_frame(sf, caption=text)).save(out / f"frame_{sf.frame.index:06d}.png")
        for obj in sf.objects:
            t = tracks.setdefault(obj.track_id, {"frames": [], "area": 0.0, "background": obj.is_background})
            t["frames"].append(sf.frame.index)
            t["area"] += obj.area
        n += 1
    summary = {
        "frames": n,
        "backbone": identity or {},
        "random_weights": bool((identity or {}).get("random_weights")),
        "tracks": {str(k): {"first_frame": v["frames"][0], "last_frame": v["frames"][-1],
                            "n_frames": len(v["frames"]), "mean_area": v["area"] / len(v["frames"]),
                            "background": v["background"]} for k, v in sorted(tracks.items())},
    }
    (out / "tracks.json").write_text(json.dumps(summary, indent=2))
    return summary

"""A propagated track in a compact, exchangeable form: per frame and object a COCO run-length mask
(pycocotools' compressed string format, written here in numpy so pycocotools is not needed), its box
and area; PNG masks (palette, DAVIS style) and a COCO-style JSON for other tools."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from indexer.propagation import PropagatedFrame
from search.errors import InputError

# DAVIS-style palette: index 0 black, then the colours DAVIS annotations use for objects 1..
_DAVIS_HEAD = [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0, 0, 0, 128, 128, 0, 128, 0, 128, 128, 128, 128, 128]


def palette() -> list[int]:
    """768 palette values: DAVIS's first eight colours, then a deterministic spread for the rest."""
    rest = [(i * 67 + 40) % 256 for i in range(768 - len(_DAVIS_HEAD))]
    return _DAVIS_HEAD + rest


def coco_rle_encode(mask: np.ndarray) -> dict:
    """COCO RLE of a (H, W) binary mask: column-major runs starting with background, compressed into
    pycocotools' string (5 bits a character, offset 48, counts after the second as deltas)."""
    m = np.asarray(mask)
    if m.ndim != 2:
        raise InputError(f"a mask to encode must be 2-D, got shape {m.shape}")
    flat = m.astype(bool).ravel(order="F")
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    counts = np.diff(np.concatenate(([0], change, [flat.size]))).tolist()
    if flat.size and flat[0]:
        counts = [0, *counts]
    chars = []
    for i, c in enumerate(counts):
        x = c - counts[i - 2] if i > 2 else c
        more = True
        while more:
            ch = x & 0x1F
            x >>= 5
            more = x != -1 if ch & 0x10 else x != 0
            if more:
                ch |= 0x20
            chars.append(chr(ch + 48))
    return {"size": [int(m.shape[0]), int(m.shape[1])], "counts": "".join(chars)}


def coco_rle_decode(rle: dict) -> np.ndarray:
    """The (H, W) bool mask of a COCO RLE (compressed string or a list of counts)."""
    try:
        h, w = (int(v) for v in rle["size"])
        raw = rle["counts"]
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"not a COCO RLE: {str(rle)[:60]!r}") from exc
    if isinstance(raw, list):
        counts = [int(c) for c in raw]
    else:
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        counts, p = [], 0
        while p < len(text):
            x, k, more = 0, 0, True
            while more:
                if p >= len(text):
                    raise InputError("COCO RLE string ends inside a count")
                c = ord(text[p]) - 48
                x |= (c & 0x1F) << (5 * k)
                more = bool(c & 0x20)
                p += 1
                k += 1
                if not more and c & 0x10:
                    x |= -1 << (5 * k)
            if len(counts) > 2:
                x += counts[-2]
            counts.append(x)
    if any(c < 0 for c in counts) or sum(counts) != h * w:
        raise InputError(f"COCO RLE counts cover {sum(counts)} pixels, its size {h}x{w} says {h * w}")
    values = (np.arange(len(counts)) % 2).astype(bool)
    return np.repeat(values, counts).reshape(w, h).T


@dataclass(frozen=True)
class TrackFrame:
    index: int
    time: float
    objects: dict[int, dict]     # object id -> {"rle": COCO RLE, "bbox": [x0, y0, x1, y1], "area": fraction}


@dataclass
class Track:
    """Every frame's masks of the followed objects, sorted by frame index."""
    source: str
    size: tuple[int, int]                    # (H, W)
    seed_frame: int
    object_ids: tuple[int, ...]
    frames: list[TrackFrame] = field(default_factory=list)
    identity: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def mask(self, index: int, object_id: int) -> np.ndarray:
        """(H, W) bool mask of one object on frame ``index`` (all False where it is absent)."""
        for f in self.frames:
            if f.index == index:
                obj = f.objects.get(object_id)
                return coco_rle_decode(obj["rle"]) if obj else np.zeros(self.size, dtype=bool)
        raise InputError(f"frame {index} is not in the track of {self.source}")

    def labels(self, index: int) -> np.ndarray:
        """(H, W) uint8 label map of frame ``index`` (0 background)."""
        out = np.zeros(self.size, dtype=np.uint8)
        for oid in self.object_ids:
            out[self.mask(index, oid)] = oid
        return out

    def summary(self) -> dict:
        """tracks.json: per object the first and last frame it is seen on, how many, its mean area."""
        per: dict[int, list[tuple[int, float]]] = {oid: [] for oid in self.object_ids}
        for f in self.frames:
            for oid, obj in f.objects.items():
                per[oid].append((f.index, obj["area"]))
        tracks = {str(oid): {"first_frame": v[0][0] if v else None, "last_frame": v[-1][0] if v else None,
                             "n_frames": len(v), "mean_area": float(np.mean([a for _, a in v])) if v else 0.0,
                             "background": False} for oid, v in per.items()}
        backbone = self.identity.get("backbone", {})
        return {"frames": len(self.frames), "source": self.source, "seed_frame": self.seed_frame,
                "size": list(self.size), "backbone": backbone,
                "random_weights": bool(isinstance(backbone, dict) and backbone.get("random_weights")),
                "propagation": self.identity, "notes": self.notes, "tracks": tracks}


def track_frame(pf: PropagatedFrame) -> TrackFrame:
    """One propagated frame in compact form (objects absent from the frame are left out)."""
    labels = pf.labels
    hh, ww = labels.shape
    objects = {}
    for oid in np.unique(labels[labels > 0]).tolist():
        m = labels == oid
        rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
        objects[int(oid)] = {"rle": coco_rle_encode(m),
                             "bbox": [int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1],
                             "area": float(m.sum() / (hh * ww))}
    return TrackFrame(index=pf.frame.index, time=float(pf.frame.time), objects=objects)


def track_to_coco(track: Track) -> dict:
    """COCO-style JSON: one image per frame, one annotation per object and frame (``segmentation`` a
    compressed RLE, ``bbox`` [x, y, w, h], ``area`` in pixels, ``track_id`` the object id)."""
    h, w = track.size
    images = [{"id": f.index, "frame_index": f.index, "time": f.time, "width": w, "height": h,
               "file_name": f"{f.index:05d}.png"} for f in track.frames]
    annotations = []
    for f in track.frames:
        for oid, obj in sorted(f.objects.items()):
            x0, y0, x1, y1 = obj["bbox"]
            annotations.append({"id": len(annotations) + 1, "image_id": f.index, "category_id": 1,
                                "track_id": oid, "segmentation": obj["rle"], "bbox": [x0, y0, x1 - x0, y1 - y0],
                                "area": round(obj["area"] * h * w), "iscrowd": 0})
    return {"info": {"source": track.source, "seed_frame": track.seed_frame}, "images": images,
            "annotations": annotations, "categories": [{"id": 1, "name": "object"}]}


def write_label_png(labels: np.ndarray, path: str | Path) -> None:
    """A palette PNG of a label map (0 background), readable by the DAVIS toolkit."""
    from PIL import Image
    img = Image.fromarray(np.asarray(labels, dtype=np.uint8), mode="P")
    img.putpalette(palette())
    img.save(path)


def write_track_pngs(track: Track, out_dir: str | Path) -> list[Path]:
    """``<index:05d>.png`` label maps of every frame of ``track`` in ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for f in track.frames:
        p = out / f"{f.index:05d}.png"
        write_label_png(track.labels(f.index), p)
        paths.append(p)
    return paths


def collect(frames: Iterable[PropagatedFrame], track: Track) -> Track:
    """Append every frame to ``track`` (compactly) and sort it by frame index."""
    track.frames.extend(track_frame(pf) for pf in frames)
    track.frames.sort(key=lambda f: f.index)
    return track

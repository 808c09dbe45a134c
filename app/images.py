"""Thumbnails with the matching object drawn over them (mask tinted and outlined, or its box): used by the app's
pages and by the HTTP API, so it imports no Streamlit."""
from __future__ import annotations

import io

import numpy as np

MASK_COLOUR = np.array([255, 196, 0], dtype=np.float32)   # amber: readable over blue-green water
BOX_COLOUR = (255, 64, 64)


def decode_jpeg(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"), dtype=np.uint8)


def draw_object(image: np.ndarray, *, mode: str, mask_rle: str = "", box: tuple | None = None,
                source_size: tuple[int, int] | None = None) -> np.ndarray:
    """``image`` with the object's mask tinted and outlined (``mode="mask"``) or its box drawn (``"box"``).
    ``box`` is in source-frame pixels, ``source_size`` (W, H) the source frame size."""
    if mode not in ("mask", "box"):
        return image
    out = image.copy()
    h, w = out.shape[:2]
    if mode == "mask" and mask_rle:
        from search import rle

        from search.drawing import outline_colour

        mask = rle.decode_at(mask_rle, h, w)
        edge = outline_colour(out[mask], MASK_COLOUR)       # amber, unless the object itself is amber-bright
        out[mask] = (0.45 * out[mask] + 0.55 * MASK_COLOUR).astype(np.uint8)
        inner = mask.copy()
        inner[1:, :] &= mask[:-1, :]
        inner[:-1, :] &= mask[1:, :]
        inner[:, 1:] &= mask[:, :-1]
        inner[:, :-1] &= mask[:, 1:]
        out[mask & ~inner] = np.asarray(edge, dtype=np.uint8)
        return out
    if box is not None and source_size and all(np.isfinite(v) for v in box):
        from PIL import Image, ImageDraw

        sx, sy = w / source_size[0], h / source_size[1]
        x0, y0, x1, y1 = box
        pil = Image.fromarray(out)
        ImageDraw.Draw(pil).rectangle([x0 * sx, y0 * sy, max(x0 * sx, x1 * sx - 1), max(y0 * sy, y1 * sy - 1)],
                                      outline=BOX_COLOUR, width=max(2, w // 120))
        return np.asarray(pil)
    return out


def row_box(row) -> tuple | None:
    """The best object's box of a result row, or None when the row has no object."""
    values = [row.get(k) for k in ("x0", "y0", "x1", "y1")]
    if any(v is None or (isinstance(v, float) and np.isnan(v)) for v in values):
        return None
    return tuple(float(v) for v in values)


def encode_jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    """An (H, W, 3) uint8 RGB image as JPEG bytes."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def mask_png(mask_rle: str, width: int, height: int) -> bytes:
    """An object's mask (``search.rle`` string) as a black-and-white PNG of ``width`` x ``height`` pixels."""
    from PIL import Image

    from search import rle

    mask = rle.decode_at(mask_rle, int(height), int(width))
    buf = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8) * 255, mode="L").save(buf, "PNG")
    return buf.getvalue()

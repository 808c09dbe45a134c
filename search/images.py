"""Query images from files or uploads, decoded with bounded memory.

A PNG of 20000 x 20000 pixels is a few hundred kilobytes on disk and 1.2 GB once decoded: the size in the
header is checked against MAX_PIXELS before any pixel is decoded (Pillow's own decompression-bomb check
only warns below twice its limit, and raises an exception nobody expects above it).
"""
from __future__ import annotations

import io
import os
import re
import warnings
from pathlib import Path

import numpy as np

from search.errors import InputError
from search.inputs import read_regular

MAX_PIXELS = 40_000_000      # 40 megapixels: any camera frame; a CLIP query image is resized to 224 anyway
MAX_BYTES = 50 * 2**20
_BUFFER_REPR = re.compile(r"<_io\.BytesIO object at 0x[0-9a-fA-F]+>")


def read_image(source: str | Path | bytes, name: str | None = None, *, max_pixels: int = MAX_PIXELS,
               max_bytes: int = MAX_BYTES) -> np.ndarray:
    """An image file (path) or its bytes as (H, W, 3) uint8 RGB. InputError naming ``name`` (default: the
    path) when it is missing, larger than ``max_bytes`` or ``max_pixels``, or not a readable image."""
    from PIL import Image, UnidentifiedImageError

    label = name or (str(source) if not isinstance(source, bytes) else "uploaded image")
    if isinstance(source, bytes):
        data = source
    else:
        path = Path(source)
        if not os.path.lexists(path):
            raise InputError(f"image file {label} does not exist")
        data = read_regular(path, "image file", max_bytes)
    if len(data) > max_bytes:
        raise InputError(f"{label}: image of {len(data) / 2**20:.0f} MiB is larger than the "
                         f"{max_bytes // 2**20} MiB allowed")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                if image.width * image.height > max_pixels:
                    raise InputError(f"{label}: image of {image.width}x{image.height} pixels is too large (more "
                                     f"than {max_pixels / 1e6:g} megapixels); scale it down first")
                return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except Image.DecompressionBombError as exc:
        raise InputError(f"{label}: image too large to decode safely ({_clean(exc, label)}); scale it down "
                         f"first") from None
    except UnidentifiedImageError:
        raise InputError(f"{label}: not a readable image (not a PNG, JPEG, WebP or other image file)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"{label}: not a readable image ({_clean(exc, label)})") from None


def _clean(exc: BaseException, label: str) -> str:
    """The exception's text with Pillow's ``<_io.BytesIO object at 0x…>`` replaced by the file's name."""
    return _BUFFER_REPR.sub(label, str(exc)) or type(exc).__name__

"""Frame and object embeddings in the CLIP space of ``search.encoder``.

Object vectors come from the segmentation masks in one of these modes:

- ``crop``: the mask's box with a margin, pixels outside the mask set to the encoder's own mean colour
  (zero after its normalisation: OpenAI's mean for CLIP, grey for SigLIP), one pass per object, batched
  across the objects of many frames;
- ``pool``: one CLIP pass per frame (``Encoder.encode_image_tokens``); each object's vector is the
  area-weighted mean of the dense features under its mask, then L2-normalised. The dense features are
  CLIP's last block computed the ClearCLIP way, or for a SigLIP-style tower the patches through its
  attention-pooling head's value path (MaskCLIP; ``search.dense``), which align with text where raw
  last-layer tokens do not; ``pool-raw`` pools CLIP's raw last-layer patch tokens instead. Masks are brought
  to the token grid with exact area weights that follow the letterbox (or centre-crop) geometry of the
  encoder, and all objects of all frames of a batch are pooled with one matmul.

In the pool modes the frame vectors come out of the same pass (with a ``dense_size`` larger than the
model's input, the dense features come from a second pass at that size, the frame vectors still from the
model's own); in ``crop`` and ``none`` modes frames get their own ``encode_images`` pass.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch

if TYPE_CHECKING:
    from indexer.segment import ObjectMask
    from search.encoder import Encoder

ObjectMode = Literal["crop", "pool", "pool-raw", "none"]
OBJECT_MODES: tuple[str, ...] = ("crop", "pool", "pool-raw", "none")
# The dense feature variant (``search.dense``) of each pooling object mode on a CLIP ViT; ``pool_variant``
# gives the one of any tower.
POOL_VARIANTS: dict[str, str] = {"pool": "clearclip", "pool-raw": "raw"}
Fit = Literal["letterbox", "crop"]

# OpenAI CLIP's normalisation mean as 8-bit RGB (the default fill of ``object_crop``; ``embed_batch`` fills
# with the encoder's own mean, ``Encoder.fill_rgb``).
CLIP_MEAN_RGB = np.array([0.48145466, 0.4578275, 0.40821073]) * 255.0
NEUTRAL_RGB = np.round(CLIP_MEAN_RGB).astype(np.uint8)


def square_geometry(height: int, width: int, fit: Fit) -> tuple[float, float, float]:
    """(side, top, left): the square the encoder sees, in source pixels, and where the image's (0, 0)
    lands in it. ``letterbox`` centres the image in a max-side square (pads); ``crop`` takes the centred
    min-side square (negative offsets: the image sticks out)."""
    if fit == "letterbox":
        side = float(max(height, width))
    elif fit == "crop":
        side = float(min(height, width))
    else:
        raise ValueError(f"unknown fit {fit!r}: letterbox or crop")
    return side, (side - height) / 2.0, (side - width) / 2.0


def overlap_matrix(n_pixels: int, offset: float, side: float, cells: int, *,
                   device: str | torch.device = "cpu") -> torch.Tensor:
    """(cells, n_pixels): length of pixel p's span ``[p+offset, p+offset+1)`` inside cell i's span
    ``[i*side/cells, (i+1)*side/cells)``. Rows of it are exact 1-D area weights."""
    edges = torch.arange(cells + 1, device=device, dtype=torch.float32) * (side / cells)
    starts = torch.arange(n_pixels, device=device, dtype=torch.float32) + offset
    lo = torch.maximum(edges[:-1, None], starts[None, :])
    hi = torch.minimum(edges[1:, None], starts[None, :] + 1.0)
    return (hi - lo).clamp_min(0.0)


def mask_grid_weights(masks: np.ndarray | torch.Tensor, grid: tuple[int, int], *, fit: Fit = "letterbox",
                      device: str | torch.device = "cpu", extent: float = 1.0) -> torch.Tensor:
    """(n, gh*gw) float32: the area of each (H, W) mask that falls in each cell of the encoder's token grid,
    as a fraction of the mask's area inside the grid (rows sum to 1, or are all zero when the mask is
    entirely outside the square the encoder sees, which only ``crop`` fit can cause). ``extent``: the
    fraction of the square's side the grid covers from its top-left corner (below 1 when the input side is
    not a multiple of the patch size, e.g. 27 patches of 14 px cover 378 of SigLIP-384's 384 px)."""
    m = torch.as_tensor(masks, device=device).to(torch.float32)
    if m.ndim == 2:
        m = m[None]
    n, h, w = m.shape
    gh, gw = grid
    side, top, left = square_geometry(h, w, fit)
    ry = overlap_matrix(h, top, side * extent, gh, device=m.device)     # (gh, H)
    rx = overlap_matrix(w, left, side * extent, gw, device=m.device)    # (gw, W)
    weights = torch.matmul(torch.matmul(ry, m), rx.T).reshape(n, gh * gw)
    total = weights.sum(dim=1, keepdim=True)
    return torch.where(total > 0, weights / total.clamp_min(1e-12), torch.zeros_like(weights))


def l2_normalise(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def pool_tokens(tokens: np.ndarray | torch.Tensor, frame_of_object: np.ndarray | torch.Tensor,
                weights: torch.Tensor, fallback: np.ndarray | torch.Tensor | None = None) -> torch.Tensor:
    """Mask-pooled object vectors, (n, dim) L2-normalised, in one matmul.

    ``tokens`` (F, gh, gw, dim) patch tokens of F frames; ``weights`` (n, gh*gw) from ``mask_grid_weights``;
    ``frame_of_object`` (n,) the frame each object belongs to. The weights are placed in an (n, F*gh*gw)
    block matrix and multiplied with the (F*gh*gw, dim) tokens. An object with all-zero weights gets its
    frame's ``fallback`` vector (the frame's global vector) when given.
    """
    tok = torch.as_tensor(tokens).to(torch.float32)
    f, gh, gw, dim = tok.shape
    cells = gh * gw
    w = weights.to(device=tok.device, dtype=torch.float32)
    idx = torch.as_tensor(frame_of_object, device=tok.device, dtype=torch.long)
    n = idx.shape[0]
    if n == 0:
        return torch.zeros((0, dim), dtype=torch.float32, device=tok.device)
    block = torch.zeros((n, f, cells), dtype=torch.float32, device=tok.device)
    block[torch.arange(n, device=tok.device), idx] = w
    pooled = block.reshape(n, f * cells) @ tok.reshape(f * cells, dim)
    if fallback is not None:
        empty = w.sum(dim=1) <= 0
        if bool(empty.any()):
            fb = torch.as_tensor(fallback, device=tok.device).to(torch.float32)
            pooled[empty] = fb[idx[empty]]
    return l2_normalise(pooled)


def crop_box(bbox: tuple[int, int, int, int], height: int, width: int, margin: float) -> tuple[int, int, int, int]:
    """The object's box grown by ``margin`` times its longer side on every side, clipped to the frame."""
    x0, y0, x1, y1 = bbox
    pad = int(round(margin * max(x1 - x0, y1 - y0)))
    return max(0, x0 - pad), max(0, y0 - pad), min(width, x1 + pad), min(height, y1 + pad)


def object_crop(image: np.ndarray, mask: np.ndarray, bbox: tuple[int, int, int, int], *,
                margin: float = 0.1, fill: np.ndarray = NEUTRAL_RGB) -> np.ndarray:
    """(h, w, 3) uint8: the object's box with a margin, pixels outside the mask set to ``fill`` (the
    encoder's mean colour, zero at its input)."""
    h, w = image.shape[:2]
    fill = np.asarray(fill, dtype=np.uint8)
    x0, y0, x1, y1 = crop_box(bbox, h, w, margin)
    if x1 <= x0 or y1 <= y0:
        return np.broadcast_to(fill, (1, 1, 3)).copy()
    region = image[y0:y1, x0:x1]
    inside = np.asarray(mask[y0:y1, x0:x1], dtype=bool)[..., None]
    return np.where(inside, region, fill).astype(np.uint8)


def pool_variant(encoder: "Encoder", mode: str) -> str:
    """The dense feature variant a pooling object mode computes with this encoder: ``pool`` is the tower's
    text-aligned variant (ClearCLIP for a CLIP ViT, MaskCLIP's value path for a SigLIP attention-pooling
    head), ``pool-raw`` the raw last-layer tokens."""
    variant = POOL_VARIANTS[mode]
    if variant == "clearclip":
        return encoder.aligned_variant() or variant
    return variant


@dataclass
class EmbeddedBatch:
    """Vectors for a batch of frames: frame vectors in input order, object vectors in (frame, object) order."""
    frame_vectors: np.ndarray                 # (F, dim) float32, L2-normalised
    object_vectors: np.ndarray                # (n, dim) float32, L2-normalised
    frame_of_object: np.ndarray               # (n,) int: the input frame of each object row
    seconds: dict[str, float] = field(default_factory=dict)   # "frame_embedding", "object_embedding"


def embed_frames(encoder: "Encoder", images: Sequence[np.ndarray], *, fit: Fit = "letterbox",
                 batch_size: int = 32) -> np.ndarray:
    """(F, dim) float32 L2-normalised frame vectors."""
    if not images:
        return np.zeros((0, encoder.dim), dtype=np.float32)
    return np.asarray(encoder.encode_images(list(images), fit=fit, batch_size=batch_size), dtype=np.float32)


def embed_batch(encoder: "Encoder", images: Sequence[np.ndarray], objects: Sequence[Sequence["ObjectMask"]],
                mode: ObjectMode = "pool", *, fit: Fit = "letterbox", margin: float = 0.1,
                batch_size: int = 32, dense_size: int | None = None) -> EmbeddedBatch:
    """Frame vectors for every image and object vectors for every object of every image.

    ``objects[i]`` are the masks of ``images[i]`` (masks at the image's resolution). ``mode="none"``
    skips objects; ``dense_size`` is the input side of the pool modes' dense pass (None: the model's own).
    The seconds spent go to ``frame_embedding`` (the CLIP pass over frames; in the pool modes it also
    yields the dense features) and ``object_embedding`` (crops and their pass, or the pooling).
    """
    if len(objects) != len(images):
        raise ValueError(f"{len(images)} images but {len(objects)} object lists")
    if mode not in OBJECT_MODES:
        raise ValueError(f"unknown object mode {mode!r}: one of {', '.join(OBJECT_MODES)}")
    dim = encoder.dim
    counts = [len(o) for o in objects] if mode != "none" else [0] * len(images)
    frame_of_object = np.repeat(np.arange(len(images)), counts).astype(np.int64)
    empty_objects = np.zeros((0, dim), dtype=np.float32)
    seconds = {"frame_embedding": 0.0, "object_embedding": 0.0}
    if not images:
        return EmbeddedBatch(np.zeros((0, dim), np.float32), empty_objects, frame_of_object, seconds)

    t0 = time.perf_counter()
    if mode in POOL_VARIANTS:
        frame_vectors, tokens = encoder.encode_image_tokens(list(images), fit=fit, batch_size=batch_size,
                                                            variant=pool_variant(encoder, mode),
                                                            dense_size=dense_size)
        frame_vectors = np.asarray(frame_vectors, dtype=np.float32)
        t1 = time.perf_counter()
        seconds["frame_embedding"] = t1 - t0
        if frame_of_object.size:
            device = encoder.device
            tok = torch.as_tensor(np.asarray(tokens), device=device)
            grid = (tok.shape[1], tok.shape[2])
            weights = _grid_weights_per_image(images, objects, grid, fit=fit, device=device,
                                              extent=encoder.token_extent(dense_size))
            object_vectors = pool_tokens(tok, frame_of_object, weights,
                                         fallback=torch.as_tensor(frame_vectors, device=device))
            object_vectors = object_vectors.cpu().numpy().astype(np.float32)
        else:
            object_vectors = empty_objects
        seconds["object_embedding"] = time.perf_counter() - t1
        return EmbeddedBatch(frame_vectors, object_vectors, frame_of_object, seconds)

    frame_vectors = embed_frames(encoder, images, fit=fit, batch_size=batch_size)
    t1 = time.perf_counter()
    seconds["frame_embedding"] = t1 - t0
    if mode == "crop" and frame_of_object.size:
        fill = encoder.fill_rgb
        crops = [object_crop(img, o.mask, o.bbox, margin=margin, fill=fill)
                 for img, objs in zip(images, objects) for o in objs]
        object_vectors = np.asarray(encoder.encode_images(crops, fit="letterbox", batch_size=batch_size),
                                    dtype=np.float32)
    else:
        object_vectors = empty_objects
    seconds["object_embedding"] = time.perf_counter() - t1
    return EmbeddedBatch(frame_vectors, object_vectors, frame_of_object, seconds)


def _grid_weights_per_image(images: Sequence[np.ndarray], objects: Sequence[Sequence["ObjectMask"]],
                            grid: tuple[int, int], *, fit: Fit, device: str | torch.device,
                            extent: float = 1.0) -> torch.Tensor:
    """The grid weights of every object of every image, in (image, object) order: one vectorised call
    when all images share a size (the frames of one video), else one per image."""
    for img, objs in zip(images, objects):
        for o in objs:
            if o.mask.shape != img.shape[:2]:
                raise ValueError(f"mask size {o.mask.shape} differs from its frame's {img.shape[:2]}")
    masks = [np.asarray(o.mask, dtype=bool) for objs in objects for o in objs]
    if not masks:
        return torch.zeros((0, grid[0] * grid[1]), device=device)
    if len({img.shape[:2] for img in images}) == 1:
        return mask_grid_weights(np.stack(masks), grid, fit=fit, device=device, extent=extent)
    return torch.cat([mask_grid_weights(np.stack([np.asarray(o.mask, dtype=bool) for o in objs]), grid,
                                        fit=fit, device=device, extent=extent) for objs in objects if objs])

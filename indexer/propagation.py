"""Semi-supervised mask propagation with frozen features: DINO's label propagation.

The protocol of DINO's video-segmentation evaluation (Caron et al. 2021, Table 5): every patch of the
target frame takes its label from its ``topk`` most similar patches among the context frames (the seed
frame plus the ``n_last_frames`` previous frames), only sources within ``neighborhood`` patches
(Chebyshev distance on the patch grid) counting; similarity is ``exp(cos / temperature)`` between the
last block's output patch tokens (after the final norm); the context labels are soft (the seed one-hot,
the previous frames' propagated distributions). The result is upsampled bilinearly, each label channel
min-max normalised, and the arg-max taken. Defaults are the published ones: n_last_frames=7,
neighborhood=12, topk=5, temperature=0.1, frames resized to a short side of 480.

Two deliberate differences, both documented where they act: the seed mask reaches the patch grid by area
averaging (DINO takes the nearest pixel, which can drop a small object entirely), and the model size
rounds both sides to the patch (DINO floors the long side to a multiple of 64).

Features: a DINO ViT gives normalised last-block tokens (``TimmQK.patch_tokens``, the same forward pass
the segmentation's q/k come from); the colour baseline gives its colour-kernel q, k (``q·k/√d =
−|f − f'|²/2σ²``), so its affinity is a Gaussian kernel on patch colour. The step works on logits
``q·k`` for both, subtracting each target's maximum before ``exp`` (the normalised weights are the same
as DINO's un-stabilised ``exp``, without overflow).

Streaming: frames come in one at a time and leave with their labels; only the seed frame's and the last
``n_last_frames`` frames' features and soft labels are kept, so memory does not grow with the video.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from indexer.propagate_params import COLOR_SHORT_SIDE, DINO_SHORT_SIDE, PropagateParams
from indexer.segment import model_size, resize_frames
from mvk_tools.video import Frame
from search.errors import InputError

__all__ = ["COLOR_SHORT_SIDE", "DINO_SHORT_SIDE", "LabelPropagator", "PropagateParams", "PropagatedFrame",
           "features", "labels_from_soft", "neighborhood_bias", "propagate_frames", "propagate_step",
           "seed_ids", "seed_to_grid", "short_side_for"]


@dataclass(frozen=True)
class PropagatedFrame:
    frame: Frame
    labels: np.ndarray            # (H, W) uint8: 0 background, the seed's object ids elsewhere


def short_side_for(extractor: object, params: PropagateParams) -> int:
    if params.short_side is not None:
        return params.short_side
    return COLOR_SHORT_SIDE if getattr(extractor, "name", None) == "color" else DINO_SHORT_SIDE


def features(extractor: object, images: np.ndarray, temperature: float
             ) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
    """Query and key features (T, n, D) of model-size frames whose dot products are the affinity logits:
    DINO tokens L2-normalised (the query also divided by ``temperature``); the colour baseline's own
    kernel q, k (its width is its sigma; ``temperature`` does not apply)."""
    if hasattr(extractor, "patch_tokens"):
        tokens, grid = extractor.patch_tokens(images)
        tokens = F.normalize(tokens.float(), dim=-1)
        return tokens / temperature, tokens, grid
    q, k, grid = extractor.qk(images)                     # (T, heads, n, d)
    d = q.shape[-1]
    t, heads, n, _ = q.shape
    q = q.permute(0, 2, 1, 3).reshape(t, n, heads * d) / (heads * d ** 0.5)
    k = k.permute(0, 2, 1, 3).reshape(t, n, heads * d)
    return q, k, grid


def neighborhood_bias(grid: tuple[int, int], radius: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(h*w, h*w) float: 0 where the source patch (column) is within ``radius`` patches (Chebyshev) of the
    target patch (row), -inf elsewhere; added to the logits it removes the far sources."""
    h, w = grid
    ys = torch.arange(h, device=device).repeat_interleave(w)
    xs = torch.arange(w, device=device).repeat(h)
    near = ((ys[:, None] - ys[None, :]).abs() <= radius) & ((xs[:, None] - xs[None, :]).abs() <= radius)
    return torch.zeros(near.shape, device=device).masked_fill_(~near, float("-inf"))


def propagate_step(query: torch.Tensor, context_keys: torch.Tensor, context_labels: torch.Tensor,
                   grid: tuple[int, int], *, topk: int = 5, neighborhood: int = 12, block: int = 1 << 22,
                   bias: torch.Tensor | None = None) -> torch.Tensor:
    """Soft labels (n, C) of one target frame from its query features (n, D), the context frames' keys
    (F, n, D) and soft labels (F, n, C). Per target patch: logits to every context patch, sources beyond
    ``neighborhood`` removed (0: none removed), the ``topk`` largest kept (ties at the k-th value kept too,
    as DINO's threshold does), weights normalised, labels averaged. Computed in blocks of target rows so
    at most about ``block`` affinities exist at once. ``bias``: ``neighborhood_bias`` of the grid, when the
    caller keeps it from frame to frame."""
    n = query.shape[0]
    nf = context_keys.shape[0]
    keys = context_keys.reshape(nf * n, -1)
    flat_labels = context_labels.reshape(nf * n, -1)
    if neighborhood > 0 and bias is None:
        bias = neighborhood_bias(grid, neighborhood, query.device)
    out = torch.empty(n, flat_labels.shape[1], device=query.device, dtype=flat_labels.dtype)
    k = min(topk, nf * n)
    rows_per = max(1, block // max(1, nf * n))
    for s in range(0, n, rows_per):
        e = min(s + rows_per, n)
        logits = query[s:e] @ keys.T
        if neighborhood > 0:
            logits.view(e - s, nf, n).add_(bias[s:e, None, :])
        vals, idx = torch.topk(logits, k, dim=1)
        weights = torch.exp(vals - vals[:, :1])
        out[s:e] = torch.einsum("bk,bkc->bc", weights, flat_labels[idx]) / weights.sum(1, keepdim=True)
        tied = torch.nonzero((logits >= vals[:, -1:]).sum(1) > k).flatten()
        if len(tied):          # more sources equal to the k-th value: DINO's threshold keeps them all
            sub = logits[tied]
            dense = torch.exp(sub - vals[tied, :1]).masked_fill_(sub < vals[tied, -1:], 0.0)
            out[s + tied] = (dense @ flat_labels) / dense.sum(1, keepdim=True)
    return out


def seed_to_grid(seed: np.ndarray, ids: np.ndarray, grid: tuple[int, int], device: torch.device | str
                 ) -> torch.Tensor:
    """(h*w, C) soft labels of a label map (H, W): the share of each patch covered by each id in ``ids``
    (area averaging; DINO takes the nearest pixel, which loses objects smaller than a patch)."""
    lab = torch.from_numpy(np.array(seed, dtype=np.int64)).to(device)
    lookup = torch.full((256,), -1, dtype=torch.long, device=device)
    lookup[torch.from_numpy(ids.astype(np.int64)).to(device)] = torch.arange(len(ids), device=device)
    one_hot = F.one_hot(lookup[lab], len(ids)).permute(2, 0, 1).float()[None]
    pooled = F.adaptive_avg_pool2d(one_hot, grid)[0]                      # (C, h, w)
    return pooled.reshape(len(ids), -1).T.contiguous()


def labels_from_soft(soft: torch.Tensor, ids: np.ndarray, grid: tuple[int, int], size: tuple[int, int]
                     ) -> np.ndarray:
    """(H, W) uint8 ids from soft patch labels (n, C): bilinear upsampling, each channel min-max normalised
    over the frame (DINO's ``norm_mask``), arg-max."""
    maps = soft.T.reshape(1, -1, *grid)
    up = F.interpolate(maps, size=size, mode="bilinear", align_corners=False)[0]
    flat = up.reshape(up.shape[0], -1)
    lo, hi = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    normed = torch.where(hi > 0, (flat - lo) / (hi - lo).clamp_min(1e-12), flat)
    choice = normed.argmax(0).reshape(size).cpu().numpy()
    return ids.astype(np.uint8)[choice]


def seed_ids(seed: np.ndarray) -> np.ndarray:
    """Background 0 and the object ids of a seed label map; InputError when it has no object."""
    if seed.ndim != 2:
        raise InputError(f"a seed mask must be one (H, W) label map, got shape {seed.shape}")
    ids = np.unique(seed)
    if not (ids > 0).any():
        raise InputError("the seed mask is empty: it marks no object")
    if ids.max() > 255:
        raise InputError(f"seed mask ids must be 0..255, got {int(ids.max())}")
    return np.union1d([0], ids).astype(np.int64)


def _batched(frames: Iterator[Frame], n: int) -> Iterator[list[Frame]]:
    buf: list[Frame] = []
    for f in frames:
        buf.append(f)
        if len(buf) == n:
            yield buf
            buf = []
    if buf:
        yield buf


def propagate_frames(frames: Iterable[Frame], seed: np.ndarray, extractor: object,
                     params: PropagateParams = PropagateParams()) -> Iterator[PropagatedFrame]:
    """Label every frame of ``frames``, whose first is the seed frame labelled by ``seed`` (H, W) (0
    background, object ids 1..255); yields every frame in order, the seed frame with ``seed`` itself."""
    params.check()
    ids = seed_ids(seed)
    it = iter(frames)
    first = next(it, None)
    if first is None:
        raise InputError("no frames to propagate the mask through")
    size = first.image.shape[:2]
    if seed.shape != size:
        raise InputError(f"the seed mask is {seed.shape[1]}x{seed.shape[0]} but the frames are {size[1]}x{size[0]}")
    device = getattr(extractor, "device", "cpu")
    msize = model_size(size[0], size[1], extractor.patch_size, short_side_for(extractor, params))
    _, k0, grid = features(extractor, resize_frames(np.stack([first.image]), msize, device), params.temperature)
    seg0 = seed_to_grid(seed, ids, grid, k0.device)
    bias = neighborhood_bias(grid, params.neighborhood, k0.device) if params.neighborhood > 0 else None
    yield PropagatedFrame(first, seed.astype(np.uint8))
    recent: deque[tuple[torch.Tensor, torch.Tensor]] = deque(maxlen=params.n_last_frames)
    for batch in _batched(it, params.batch):
        for f in batch:
            if f.image.shape[:2] != size:
                raise InputError(f"frame {f.index} is {f.image.shape[1]}x{f.image.shape[0]}, the seed frame "
                                 f"{size[1]}x{size[0]}: one video's frames must share a size")
        q, k, _ = features(extractor, resize_frames(np.stack([f.image for f in batch]), msize, device),
                           params.temperature)
        for i, f in enumerate(batch):
            keys = torch.stack([k0[0], *(e[0] for e in recent)])
            labels = torch.stack([seg0, *(e[1] for e in recent)])
            soft = propagate_step(q[i], keys, labels, grid, topk=params.topk, neighborhood=params.neighborhood,
                                  block=params.block, bias=bias)
            if params.n_last_frames:
                recent.append((k[i], soft))
            yield PropagatedFrame(f, labels_from_soft(soft, ids, grid, size))


class LabelPropagator:
    """The built-in propagator: DINO label propagation over a backbone's features (a DINO ViT or the
    colour baseline)."""

    name = "dino-label-propagation"

    def __init__(self, extractor: object, params: PropagateParams = PropagateParams()) -> None:
        params.check()
        self.extractor = extractor
        self.params = params

    def propagate(self, frames: Iterable[Frame], seed: np.ndarray) -> Iterator[PropagatedFrame]:
        return propagate_frames(frames, seed, self.extractor, self.params)

    def identity(self) -> dict:
        return {"propagator": self.name, "backbone": self.extractor.identity(),
                "params": {k: v for k, v in vars(self.params).items() if k != "block"},
                "short_side": short_side_for(self.extractor, self.params)}

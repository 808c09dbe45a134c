"""Dense (per-patch) features of an open_clip ViT in the joint image-text space, for mask pooling.

Two variants of the last residual block, both followed by ``ln_post`` and the projection exactly as the
pooled image vector is:

- ``clearclip`` (ClearCLIP, ECCV 2024): the attention output only, with self-self (query-query)
  attention, no residual connection and no feed-forward network. The residual stream of CLIP's last
  block carries global information at the expense of locality (MaskCLIP, ECCV 2022; SCLIP, 2023);
  these training-free changes give patch features that align with text where they are.
- ``raw``: the last block as trained (the patch tokens of CLIP's last layer).

The last block's input is taken through open_clip's public modules: a forward hook on
``visual.transformer.resblocks[-1]`` during the model's own forward pass (so the frame vector and the
dense features come from one pass), or, for a larger dense input, ``conv1``, ``class_embedding``, the
position embeddings interpolated to the larger grid, ``ln_pre`` and ``resblocks[:-1]`` run here.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from search.errors import InputError

VARIANTS: tuple[str, ...] = ("clearclip", "raw")
MODES_FOR_VARIANT = {"clearclip": "pool", "raw": "pool-raw"}


def _mode(variant: str) -> str:
    return MODES_FOR_VARIANT.get(variant, variant)


def check_tower(visual: Any, model_name: str, variant: str) -> None:
    """InputError unless ``visual`` is an open_clip VisionTransformer whose last block supports ``variant``;
    the message says which object modes work with this model instead."""
    from open_clip.transformer import ResidualAttentionBlock, VisionTransformer
    if variant not in VARIANTS:
        raise InputError(f"unknown dense feature variant {variant!r}: one of {', '.join(VARIANTS)}")
    mode = _mode(variant)
    if not isinstance(visual, VisionTransformer) or getattr(visual, "attn_pool", None) is not None:
        kind = type(visual).__name__ + (" with attentional pooling" if isinstance(visual, VisionTransformer) else "")
        raise InputError(f"object mode {mode!r} pools patch features of a CLIP vision transformer; "
                         f"{model_name!r} has a {kind} visual tower without per-patch tokens in the joint "
                         f"space: use --objects crop (one CLIP pass per object) or --objects none there")
    if variant == "clearclip":
        block = visual.transformer.resblocks[-1]
        attn = getattr(block, "attn", None)
        if not isinstance(block, ResidualAttentionBlock) or not isinstance(attn, torch.nn.MultiheadAttention) \
                or attn.in_proj_weight is None:
            raise InputError(f"object mode 'pool' computes the last block of {model_name!r} the ClearCLIP way and "
                             f"needs a standard attention block (nn.MultiheadAttention); its last block is a "
                             f"{type(block).__name__}: use --objects pool-raw, crop or none there")


def grid_for(visual: Any, side: int, model_name: str = "this model") -> tuple[int, int]:
    """The token grid of a ``side`` x ``side`` input; InputError unless ``side`` is a positive multiple of
    the patch size (so the grid covers the whole input and mask weights stay exact)."""
    ph, pw = (int(p) for p in visual.patch_size)
    if side <= 0 or side % ph or side % pw:
        lo = max(ph, side // ph * ph)
        raise InputError(f"dense size {side} px is not a positive multiple of the patch size of {model_name!r} "
                         f"({ph} px): try {lo} or {lo + ph}")
    return side // ph, side // pw


def resize_positions(pos: torch.Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int]) -> torch.Tensor:
    """(1 + gh*gw, D) position embeddings (class position first) interpolated bicubically from ``old_grid``
    to ``new_grid``, as open_clip does when it loads weights at another image size."""
    cls, grid = pos[:1], pos[1:]
    oh, ow = old_grid
    d = grid.shape[-1]
    img = grid.reshape(1, oh, ow, d).permute(0, 3, 1, 2).float()
    out = F.interpolate(img, size=tuple(new_grid), mode="bicubic", antialias=True, align_corners=False)
    out = out.permute(0, 2, 3, 1).reshape(new_grid[0] * new_grid[1], d).to(pos.dtype)
    return torch.cat([cls, out], dim=0)


def embed_patches(visual: Any, x: torch.Tensor) -> torch.Tensor:
    """(N, 1 + gh*gw, D): the input of the first block for images of any size that the patch size divides
    (position embeddings interpolated to the input's grid), through the tower's public modules."""
    t = visual.conv1(x)
    n, d, gh, gw = t.shape
    t = t.reshape(n, d, gh * gw).permute(0, 2, 1)
    cls = visual.class_embedding.to(t.dtype).view(1, 1, d).expand(n, 1, d)
    t = torch.cat([cls, t], dim=1)
    pos = visual.positional_embedding
    if (gh, gw) != tuple(visual.grid_size):
        pos = resize_positions(pos, tuple(visual.grid_size), (gh, gw))
    t = t + pos.to(t.dtype)
    t = visual.patch_dropout(t)
    return visual.ln_pre(t)


def last_block_input(visual: Any, x: torch.Tensor) -> torch.Tensor:
    """(N, L, D), batch first: the input of the tower's last block for images ``x`` of any valid size."""
    h = embed_patches(visual, x)
    batch_first = getattr(visual.transformer, "batch_first", True)
    if not batch_first:
        h = h.transpose(0, 1)
    for block in visual.transformer.resblocks[:-1]:
        h = block(h)
    return h if batch_first else h.transpose(0, 1)


def encode_with_last_block(model: Any, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The model's own image vector (not normalised) of ``x`` and, from the same forward pass, the last
    block's input and output (N, L, D), batch first, captured with a forward hook on that block."""
    visual = model.visual
    caught: dict[str, torch.Tensor] = {}

    def hook(module: Any, args: tuple, output: torch.Tensor) -> None:
        caught["input"], caught["output"] = args[0], output

    handle = visual.transformer.resblocks[-1].register_forward_hook(hook)
    try:
        pooled = model.encode_image(x)
    finally:
        handle.remove()
    h_in, h_out = caught["input"], caught["output"]
    if not getattr(visual.transformer, "batch_first", True):
        h_in, h_out = h_in.transpose(0, 1), h_out.transpose(0, 1)
    return pooled, h_in, h_out


def clearclip_attention(block: Any, h: torch.Tensor) -> torch.Tensor:
    """(N, L, D): ClearCLIP's last block on its input ``h`` (N, L, D): ``ls_1(attention(ln_1(h)))`` with
    query-query attention, softmax(q qᵀ / √d) v per head, no residual and no feed-forward network."""
    attn = block.attn
    y = block.ln_1(h)
    n, length, d = y.shape
    heads = attn.num_heads
    q, _, v = F.linear(y, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    q = q.reshape(n, length, heads, d // heads).transpose(1, 2)
    v = v.reshape(n, length, heads, d // heads).transpose(1, 2)
    out = F.scaled_dot_product_attention(q, q, v, scale=1.0 / math.sqrt(d // heads))
    out = attn.out_proj(out.transpose(1, 2).reshape(n, length, d))
    return block.ls_1(out)


def run_last_block(visual: Any, h: torch.Tensor) -> torch.Tensor:
    """(N, L, D): the tower's last block as trained, on its input ``h`` (N, L, D), batch first."""
    block = visual.transformer.resblocks[-1]
    if getattr(visual.transformer, "batch_first", True):
        return block(h)
    return block(h.transpose(0, 1)).transpose(0, 1)


def project_tokens(visual: Any, out: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(N, gh, gw, dim): the patch tokens of a last-block output (class token dropped) through ``ln_post``
    and the projection, as the pooled image vector goes."""
    tokens = visual.ln_post(out[:, 1:])
    if visual.proj is not None:
        tokens = tokens @ visual.proj
    return tokens.reshape(out.shape[0], grid[0], grid[1], tokens.shape[-1])


def dense_tokens(visual: Any, h_in: torch.Tensor, grid: tuple[int, int], variant: str,
                 h_out: torch.Tensor | None = None) -> torch.Tensor:
    """(N, gh, gw, dim) dense features of ``variant`` from the last block's input ``h_in``; ``h_out`` (the
    block's own output, when the forward pass already computed it) spares running it again for ``raw``."""
    if variant == "clearclip":
        out = clearclip_attention(visual.transformer.resblocks[-1], h_in)
    elif variant == "raw":
        out = h_out if h_out is not None else run_last_block(visual, h_in)
    else:
        raise InputError(f"unknown dense feature variant {variant!r}: one of {', '.join(VARIANTS)}")
    return project_tokens(visual, out, grid)

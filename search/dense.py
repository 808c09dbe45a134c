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

Towers whose image vector comes out of an attention-pooling head (SigLIP/SigLIP2: a timm ViT trunk with a
multi-head attention pooling "MAP" head, ``trunk.attn_pool``) have no class token in the joint space. For
them the ``maskclip`` variant follows MaskCLIP (Zhou, Loy, Dai, "Extract Free Dense Labels from CLIP", ECCV
2022), which for CLIP's attention-pooling head drops the query-key attention and sends every spatial token
through the head's value and output projections alone. Here each patch token of the trunk's final (normed)
output goes through the MAP head's value projection (the value half of ``kv``), its output projection
``proj`` and then the rest of the head exactly as the pooled vector does (the head's MLP residual,
``fc_norm``, the trunk's and open_clip's heads): the vector the head would output if its latent query
attended to that patch alone. The trunk's features are caught with a forward hook on ``trunk.norm`` during
the model's own forward pass, so the frame vector and the dense features again come from one pass.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from search.errors import InputError

VARIANTS: tuple[str, ...] = ("clearclip", "raw", "maskclip")
MODES_FOR_VARIANT = {"clearclip": "pool", "raw": "pool-raw", "maskclip": "pool"}
# The text-aligned variant of each kind of tower (``tower_kind``): what ``--objects pool`` computes there.
ALIGNED_VARIANT = {"vit": "clearclip", "map": "maskclip"}


def _mode(variant: str) -> str:
    return MODES_FOR_VARIANT.get(variant, variant)


def tower_kind(visual: Any) -> str | None:
    """``vit``: an open_clip VisionTransformer with a class token (no attentional pooler); ``map``: an
    open_clip TimmModel whose timm ViT trunk pools with a latent-query attention head (SigLIP); None: a tower
    without a dense path here (ResNets, ConvNeXt, FastViT/MobileCLIP, CoCa's attentional pooler)."""
    from open_clip.timm_model import TimmModel
    from open_clip.transformer import VisionTransformer
    if isinstance(visual, VisionTransformer):
        return "vit" if getattr(visual, "attn_pool", None) is None else None
    if isinstance(visual, TimmModel):
        from timm.layers import AttentionPoolLatent
        trunk = visual.trunk
        pool = getattr(trunk, "attn_pool", None)
        if isinstance(pool, AttentionPoolLatent) and pool.pos_embed is None and hasattr(trunk, "patch_embed") \
                and hasattr(trunk, "norm") and not getattr(trunk, "pool_include_prefix", False):
            return "map"
    return None


def aligned_variant(visual: Any) -> str | None:
    """The dense variant ``--objects pool`` computes on this tower (None: the tower has no dense path)."""
    kind = tower_kind(visual)
    return ALIGNED_VARIANT[kind] if kind else None


def check_tower(visual: Any, model_name: str, variant: str) -> None:
    """InputError unless ``visual`` has dense features of ``variant``: ``clearclip`` and ``raw`` need an
    open_clip VisionTransformer (``clearclip`` with a standard attention block), ``maskclip`` a timm trunk
    with a MAP head; the message says which object modes work with this model instead."""
    from open_clip.transformer import ResidualAttentionBlock, VisionTransformer
    if variant not in VARIANTS:
        raise InputError(f"unknown dense feature variant {variant!r}: one of {', '.join(VARIANTS)}")
    mode = _mode(variant)
    kind = tower_kind(visual)
    if kind == "map" and variant != "maskclip":
        raise InputError(f"object mode {mode!r} needs a CLIP vision transformer with a class token; {model_name!r} "
                         f"pools its patches with an attention head (SigLIP): use --objects pool (the head's value "
                         f"path, MaskCLIP-style), crop or none there")
    if kind is None or (kind == "vit" and variant == "maskclip"):
        what = type(visual).__name__
        if isinstance(visual, VisionTransformer):
            what += " with attentional pooling"
        raise InputError(f"object mode {mode!r} pools patch features of a CLIP vision transformer; "
                         f"{model_name!r} has a {what} visual tower without per-patch tokens in the joint "
                         f"space: use --objects crop (one CLIP pass per object) or --objects none there")
    if variant == "clearclip":
        block = visual.transformer.resblocks[-1]
        attn = getattr(block, "attn", None)
        if not isinstance(block, ResidualAttentionBlock) or not isinstance(attn, torch.nn.MultiheadAttention) \
                or attn.in_proj_weight is None:
            raise InputError(f"object mode 'pool' computes the last block of {model_name!r} the ClearCLIP way and "
                             f"needs a standard attention block (nn.MultiheadAttention); its last block is a "
                             f"{type(block).__name__}: use --objects pool-raw, crop or none there")


def patch_size(visual: Any) -> tuple[int, int]:
    """(ph, pw) of an open_clip ViT or of a timm ViT trunk."""
    trunk = getattr(visual, "trunk", None)
    size = trunk.patch_embed.patch_size if trunk is not None else visual.patch_size
    ph, pw = (size, size) if isinstance(size, int) else size
    return int(ph), int(pw)


def grid_for(visual: Any, side: int, model_name: str = "this model") -> tuple[int, int]:
    """The token grid of a ``side`` x ``side`` input; InputError unless ``side`` is a positive multiple of
    the patch size (so the grid covers the whole input and mask weights stay exact)."""
    ph, pw = patch_size(visual)
    if side <= 0 or side % ph or side % pw:
        lo = max(ph, side // ph * ph)
        raise InputError(f"dense size {side} px is not a positive multiple of the patch size of {model_name!r} "
                         f"({ph} px): try {lo} or {lo + ph}")
    return side // ph, side // pw


def own_grid(visual: Any, side: int) -> tuple[int, int]:
    """The token grid of the tower at its own input side: what its patch convolution outputs, the floor of
    side over patch, so it may cover a little less than the input (SigLIP-384: 27 x 14 = 378 px of 384)."""
    ph, pw = patch_size(visual)
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


def encode_with_trunk_features(model: Any, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's own image vector (not normalised) of ``x`` and, from the same forward pass, the timm
    trunk's final token features (N, L, D) (after ``trunk.norm``, prefix tokens included), caught with a
    forward hook."""
    caught: dict[str, torch.Tensor] = {}

    def hook(module: Any, args: tuple, output: torch.Tensor) -> None:
        caught["features"] = output

    handle = model.visual.trunk.norm.register_forward_hook(hook)
    try:
        pooled = model.encode_image(x)
    finally:
        handle.remove()
    return pooled, caught["features"]


def maskclip_map_tokens(visual: Any, features: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(N, gh, gw, dim): every patch token of a timm trunk's final features (N, L, D) through the MAP head's
    value path (MaskCLIP): value half of ``kv``, ``proj``, the head's MLP residual, then ``fc_norm`` and the
    heads after the pool, as the pooled vector goes."""
    trunk = visual.trunk
    pool = trunk.attn_pool
    tokens = features[:, trunk.num_prefix_tokens:]
    width = pool.kv.out_features // 2
    bias = pool.kv.bias[width:] if pool.kv.bias is not None else None
    y = pool.proj(F.linear(tokens, pool.kv.weight[width:], bias))
    y = pool.proj_drop(y)
    if pool.mlp is not None:
        y = y + pool.mlp(pool.norm(y))
    y = trunk.head(trunk.head_drop(trunk.fc_norm(y)))
    y = visual.head(y)
    return y.reshape(features.shape[0], grid[0], grid[1], y.shape[-1])


def encode_with_dense(model: Any, x: torch.Tensor, grid: tuple[int, int], variant: str
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """(image vectors (N, dim) not normalised, dense features (N, gh, gw, dim)) of ``x`` at the model's own
    input size, from one forward pass, for any tower with a dense path (``check_tower`` first)."""
    if variant == "maskclip":
        pooled, features = encode_with_trunk_features(model, x)
        return pooled, maskclip_map_tokens(model.visual, features, grid)
    pooled, h_in, h_out = encode_with_last_block(model, x)
    return pooled, dense_tokens(model.visual, h_in, grid, variant, h_out)

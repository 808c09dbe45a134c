"""DINO ViT backbones through timm: each head's query and key of every patch token of the last block.

Weights rule as in search.encoder: timm pretrained names (fetched online, cached after) or a local
checkpoint; offline without them MissingWeightsError says what to fetch; ``random_weights`` only for
tests and benchmarks, and ``identity()`` records it.

The q and k come from a forward hook on the last block's ``attn.qkv`` projection; the forward pass is
stopped there (the rest of the last block is not needed). Models are built with ``dynamic_img_size``,
so any frame whose sides are multiples of the patch size works (positional embeddings interpolated).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from search.weights import hub_cache_dir, hub_reachable
from search.errors import InputError, MissingWeightsError

from indexer.backbone_names import BACKBONE_CHOICES, BACKBONES, COLOR_BACKBONE, DEFAULT_BACKBONE

__all__ = ["BACKBONES", "BACKBONE_CHOICES", "COLOR_BACKBONE", "DEFAULT_BACKBONE", "QKExtractor", "TimmQK",
           "build_timm_extractor", "load_backbone"]


class QKExtractor(Protocol):
    """Anything that turns frames into per-head patch queries and keys (DINO, or the test extractor)."""

    patch_size: int

    def qk(self, frames: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
        """From (T, H, W, 3) uint8 frames (H, W multiples of ``patch_size``): q and k of shape
        (T, heads, h*w, d) (no CLS or register tokens) and the patch grid (h, w)."""
        ...

    def identity(self) -> dict:
        """Name, weights and whether they are random, for manifests."""
        ...


class _Captured(Exception):
    """Raised by the hook to stop the forward pass once the last block's qkv is computed."""


class TimmQK:
    """A timm ViT with a hook that captures the last block's per-head q and k of the patch tokens."""

    def __init__(self, model: torch.nn.Module, *, name: str, timm_name: str, weights: str,
                 random_weights: bool, checkpoint: str | None, device: str, batch_size: int = 8) -> None:
        self.model = model.eval().to(device)
        self.name = name
        self.timm_name = timm_name
        self.weights = weights
        self.random_weights = random_weights
        self.checkpoint = checkpoint
        self.device = torch.device(device)
        self.batch_size = batch_size
        patch = model.patch_embed.patch_size
        self.patch_size = int(patch[0] if isinstance(patch, (tuple, list)) else patch)
        attn = model.blocks[-1].attn
        self.heads = int(attn.num_heads)
        self.head_dim = int(attn.head_dim)
        self.prefix_tokens = int(getattr(model, "num_prefix_tokens", 1))
        cfg = getattr(model, "pretrained_cfg", {}) or {}
        self.mean = torch.tensor(cfg.get("mean", (0.485, 0.456, 0.406)), device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(cfg.get("std", (0.229, 0.224, 0.225)), device=self.device).view(1, 3, 1, 1)

    def _forward(self, x: torch.Tensor, *, tokens: bool = False
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """q, k of the last block's patch tokens and, with ``tokens``, the last block's output patch tokens
        (after the final norm, DINO's ``get_intermediate_layers(n=1)``) from the same forward pass.
        Without ``tokens`` the pass stops at the last block's qkv projection."""
        attn = self.model.blocks[-1].attn
        box: dict[str, torch.Tensor] = {}

        def hook(_module: Any, _inputs: Any, output: torch.Tensor) -> None:
            box["qkv"] = output
            if not tokens:
                raise _Captured

        handle = attn.qkv.register_forward_hook(hook)
        out = None
        try:
            out = self.model.forward_features(x)
        except _Captured:
            pass
        finally:
            handle.remove()
        if "qkv" not in box:
            raise RuntimeError(f"{self.timm_name}: the last block's qkv projection was never called")
        b, n, _ = box["qkv"].shape
        qkv = box["qkv"].reshape(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k = attn.q_norm(qkv[0]), attn.k_norm(qkv[1])
        patch_tokens = out[:, self.prefix_tokens:] if out is not None else None
        return q[:, :, self.prefix_tokens:], k[:, :, self.prefix_tokens:], patch_tokens

    def _batches(self, frames: np.ndarray) -> tuple[list[torch.Tensor], tuple[int, int]]:
        """Normalised model inputs (B, 3, H, W) of at most ``batch_size`` frames each, and the patch grid."""
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"expected (T, H, W, 3) uint8 frames, got shape {frames.shape}")
        t, hh, ww, _ = frames.shape
        p = self.patch_size
        if hh % p or ww % p:
            raise ValueError(f"frame size {ww}x{hh} is not a multiple of the patch size {p}")
        out = []
        for i in range(0, t, self.batch_size):
            x = torch.from_numpy(np.ascontiguousarray(frames[i:i + self.batch_size])).to(self.device)
            out.append((x.permute(0, 3, 1, 2).float() / 255.0 - self.mean) / self.std)
        return out, (hh // p, ww // p)

    @torch.inference_mode()
    def qk(self, frames: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
        batches, grid = self._batches(frames)
        qs, ks = [], []
        for x in batches:
            q, k, _ = self._forward(x)
            qs.append(q.float())
            ks.append(k.float())
        return torch.cat(qs), torch.cat(ks), grid

    @torch.inference_mode()
    def qk_tokens(self, frames: np.ndarray
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, tuple[int, int]]:
        """``qk`` plus the last block's output patch tokens (T, h*w, D) of the same forward pass."""
        batches, grid = self._batches(frames)
        qs, ks, ts = [], [], []
        for x in batches:
            q, k, tok = self._forward(x, tokens=True)
            qs.append(q.float())
            ks.append(k.float())
            ts.append(tok.float())
        return torch.cat(qs), torch.cat(ks), torch.cat(ts), grid

    def patch_tokens(self, frames: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
        """Last-block output patch tokens (T, h*w, D) after the final norm: DINO's label-propagation features."""
        _, _, tokens, grid = self.qk_tokens(frames)
        return tokens, grid

    def identity(self) -> dict:
        return {"backbone": self.name, "timm_name": self.timm_name, "weights": self.weights,
                "checkpoint": self.checkpoint, "random_weights": self.random_weights,
                "patch_size": self.patch_size, "heads": self.heads, "head_dim": self.head_dim}


def _hub_cached_file(hf_hub_id: str) -> str | None:
    """The cached weight file of a Hugging Face repo, or None (never touches the network)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    for filename in ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"):
        found = try_to_load_from_cache(hf_hub_id, filename)
        if isinstance(found, str) and os.path.exists(found):
            return found
    return None


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the hub may be asked (``search.weights.hub_reachable``, the rule the CLIP encoder follows too)."""
    return hub_reachable(timeout)


def missing_weights_message(name: str, timm_name: str, hf_hub_id: str) -> str:
    return (f"pretrained weights for backbone {name} (timm '{timm_name}', Hugging Face repo '{hf_hub_id}') "
            f"are not in the local cache {hub_cache_dir()} and the hub cannot be reached. On a machine with "
            f"internet run: python3 -c \"import timm; timm.create_model('{timm_name}', pretrained=True)\" "
            f"and copy that cache folder (huggingface_hub's HF_HUB_CACHE) to the same place here, or pass "
            f"--dino-checkpoint FILE (formerly --checkpoint) "
            f"(a .pth or .safetensors state dict of {timm_name})")


def _hub_id(timm_name: str) -> str:
    import timm
    cfg = timm.models.get_pretrained_cfg(timm_name)
    return cfg.hf_hub_id if cfg is not None and cfg.hf_hub_id else f"timm/{timm_name}"


def weights_available(name: str = DEFAULT_BACKBONE) -> bool:
    """Whether ``load_backbone(name)`` can get pretrained weights: in the local cache, or the hub reachable
    (the colour baseline needs none)."""
    if name == COLOR_BACKBONE:
        return True
    if name not in BACKBONES:
        return False
    return _hub_cached_file(_hub_id(BACKBONES[name])) is not None or _hub_reachable()


def fetch_instructions(name: str = DEFAULT_BACKBONE) -> str:
    """How to get a DINO backbone's weights onto an offline machine, in one sentence."""
    timm_name = BACKBONES[name]
    return (f"DINO {name} (timm '{timm_name}') comes from the Hugging Face repo {_hub_id(timm_name)} (cached "
            f"under {hub_cache_dir()}): on a machine with internet run python3 -c \"import timm; "
            f"timm.create_model('{timm_name}', pretrained=True)\" and copy that cache folder to the same place here")


def build_timm_extractor(timm_name: str, *, name: str | None = None, checkpoint: str | Path | None = None,
                         random_weights: bool = False, device: str = "cpu", batch_size: int = 8,
                         **model_kwargs: Any) -> TimmQK:
    """A ``TimmQK`` for any timm ViT name: from ``checkpoint``, randomly initialised, or from the hub
    (local cache first; MissingWeightsError when absent and offline). ``model_kwargs`` go to
    ``timm.create_model`` (tests build tiny ViTs this way through the same code path)."""
    import timm

    name = name or timm_name
    kwargs = {"dynamic_img_size": True, "num_classes": 0, **model_kwargs}
    if checkpoint is not None:
        path = Path(checkpoint)
        if not path.is_file():
            raise MissingWeightsError(f"checkpoint file {path} does not exist (expected a .pth or .safetensors "
                                      f"state dict of {timm_name})")
        try:
            model = timm.create_model(timm_name, pretrained=True, pretrained_cfg_overlay={"file": str(path)},
                                      **kwargs)
        except Exception as exc:   # corrupt file, wrong architecture: the message names both
            raise InputError(f"checkpoint {path} cannot be loaded into {timm_name}: "
                             f"{type(exc).__name__}: {str(exc)[:300]}") from exc
        weights, ckpt = f"checkpoint:{path}", str(path)
    elif random_weights:
        model = timm.create_model(timm_name, pretrained=False, **kwargs)
        weights, ckpt = "random", None
    else:
        hf_hub_id = _hub_id(timm_name)
        cached = _hub_cached_file(hf_hub_id)
        try:
            if cached is not None:
                model = timm.create_model(timm_name, pretrained=True, pretrained_cfg_overlay={"file": cached},
                                          **kwargs)
            elif _hub_reachable():
                model = timm.create_model(timm_name, pretrained=True, **kwargs)
            else:
                raise MissingWeightsError(missing_weights_message(name, timm_name, hf_hub_id))
        except MissingWeightsError:
            raise
        except Exception as exc:   # hub errors, interrupted downloads
            raise MissingWeightsError(missing_weights_message(name, timm_name, hf_hub_id)
                                      + f" [{type(exc).__name__}: {str(exc)[:200]}]") from exc
        weights, ckpt = f"hf-hub:{hf_hub_id}", None
    return TimmQK(model, name=name, timm_name=timm_name, weights=weights, random_weights=random_weights and
                  checkpoint is None, checkpoint=ckpt, device=device, batch_size=batch_size)


def load_backbone(name: str = DEFAULT_BACKBONE, *, checkpoint: str | Path | None = None,
                  random_weights: bool = False, device: str = "cpu") -> QKExtractor:
    """One of BACKBONES (dino-vits16, dino-vits8, dino-vitb16, dino-vitb8, dinov2-vits14, dinov2-vitb14),
    or ``color``: the non-learned colour-statistics baseline (needs no weights)."""
    if name == COLOR_BACKBONE:
        from indexer.color_extractor import ColorExtractor
        return ColorExtractor(device=device)
    if name not in BACKBONES:
        raise InputError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONE_CHOICES)}")
    return build_timm_extractor(BACKBONES[name], name=name, checkpoint=checkpoint,
                                random_weights=random_weights, device=device)

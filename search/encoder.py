"""The embedding space: an open_clip model chosen by name and pretrained tag (or a local checkpoint),
encoding texts and images in batches into L2-normalised float32 vectors.

Weights rule: pretrained tags are fetched on a machine with internet and read from the local cache
after; offline without them ``load_encoder`` raises MissingWeightsError saying what to fetch and where.
``random_weights=True`` (tests and benchmarks only) initialises the real architecture randomly and
``Encoder.identity()["random_weights"]`` says so, so everything built with it is labelled.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

DEFAULT_MODEL = "ViT-B-32"
DEFAULT_PRETRAINED = "openai"
TEST_MODEL = "mvk-tiny-vit"   # a tiny ViT CLIP registered from search/model_configs/ for tests

Fit = Literal["letterbox", "crop"]


class Encoder:
    """A loaded open_clip model with its preprocessing and tokenizer."""

    model_name: str
    pretrained: str | None
    dim: int
    device: str
    random_weights: bool
    context_length: int

    def encode_text(self, texts: Sequence[str], *, batch_size: int = 256) -> np.ndarray:
        """(n, dim) float32, L2-normalised. Texts longer than the context are truncated (see ``fits_context``)."""
        raise NotImplementedError

    def fits_context(self, text: str) -> bool:
        """False when the tokenizer would truncate ``text``."""
        raise NotImplementedError

    def encode_images(self, images: Sequence[np.ndarray], *, fit: Fit = "letterbox",
                      batch_size: int = 64) -> np.ndarray:
        """(n, dim) float32, L2-normalised, from (H, W, 3) uint8 RGB images. ``letterbox`` pads to a square
        (16:9 sides kept), ``crop`` centre-crops as the model's own preprocessing does."""
        raise NotImplementedError

    def encode_image_tokens(self, images: Sequence[np.ndarray], *, fit: Fit = "letterbox",
                            batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """Global vectors (n, dim) and patch tokens projected into the joint space (n, gh, gw, dim), both
        float32; tokens are not normalised (pool first, then normalise). For ``pool`` object embeddings."""
        raise NotImplementedError

    def identity(self) -> dict:
        """What an index must record to be searched with this encoder: model, pretrained, checkpoint,
        dim, random_weights, preprocessing."""
        raise NotImplementedError


def load_encoder(model: str = DEFAULT_MODEL, pretrained: str | None = DEFAULT_PRETRAINED, *,
                 checkpoint: str | Path | None = None, random_weights: bool = False,
                 device: str = "cpu") -> Encoder:
    """Load an open_clip model (cached per process: a second call with the same arguments is free).
    Raises MissingWeightsError offline when the weights are not cached."""
    raise NotImplementedError

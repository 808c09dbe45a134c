"""Loading the indexer's models: the CLIP encoder and the segmentation backbone, by name, checkpoint or random
weights. Its own module so a worker (the Ray engine's actors) loads models without importing the driver."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from indexer.embed import ObjectMode

if TYPE_CHECKING:
    from indexer.backbone import QKExtractor
    from search.encoder import Encoder


def load_encoder(*, model: str | None = None, pretrained: str | None = None,
                 clip_checkpoint: str | Path | None = None, random_weights: bool = False,
                 device: str = "cpu") -> "Encoder":
    """The CLIP encoder (default ViT-B-32 / openai; a model named without a tag has no default tag)."""
    from search import encoder as enc
    return enc.load_encoder(model or enc.DEFAULT_MODEL,
                            pretrained if (pretrained is not None or model) else enc.DEFAULT_PRETRAINED,
                            checkpoint=clip_checkpoint, random_weights=random_weights, device=device)


def load_backbone(backbone: str | None = None, *, checkpoint: str | Path | None = None, random_weights: bool = False,
                  device: str = "cpu") -> "QKExtractor":
    """The segmentation backbone (default dino-vits16)."""
    from indexer import backbone as bb
    return bb.load_backbone(backbone or bb.DEFAULT_BACKBONE, checkpoint=checkpoint, random_weights=random_weights,
                            device=device)


def load_models(*, objects: ObjectMode = "pool", model: str | None = None, pretrained: str | None = None,
                clip_checkpoint: str | Path | None = None, backbone: str | None = None,
                checkpoint: str | Path | None = None, random_weights: bool = False,
                device: str = "cpu") -> tuple["Encoder", "QKExtractor | None"]:
    """The CLIP encoder and (unless objects are ``none``) the segmentation backbone, on ``device``."""
    encoder = load_encoder(model=model, pretrained=pretrained, clip_checkpoint=clip_checkpoint,
                           random_weights=random_weights, device=device)
    extractor = None
    if objects != "none":
        extractor = load_backbone(backbone, checkpoint=checkpoint, random_weights=random_weights, device=device)
    return encoder, extractor

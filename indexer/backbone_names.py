"""Backbone names without importing torch (the CLI's --help must stay instant)."""
from __future__ import annotations

DEFAULT_BACKBONE = "dino-vits16"

# our name -> timm pretrained name
BACKBONES = {
    "dino-vits16": "vit_small_patch16_224.dino",
    "dino-vits8": "vit_small_patch8_224.dino",
    "dino-vitb16": "vit_base_patch16_224.dino",
    "dino-vitb8": "vit_base_patch8_224.dino",
    "dinov2-vits14": "vit_small_patch14_dinov2.lvd142m",
    "dinov2-vitb14": "vit_base_patch14_dinov2.lvd142m",
}
COLOR_BACKBONE = "color"   # the non-learned colour baseline (indexer.color_extractor), for offline demos
BACKBONE_CHOICES = (*BACKBONES, COLOR_BACKBONE)

"""Where pretrained weights come from, one rule for the CLIP encoder (open_clip) and the DINO backbone (timm): the
Hugging Face hub's cache folder (one spelling in every message) and whether the hub may be asked at all (never
when ``HF_HUB_OFFLINE`` is set, and not when its host does not answer within a few seconds, which spares the hub
client's long retry loop on an offline machine)."""
from __future__ import annotations

import os
import socket
from urllib.parse import urlparse


def hub_cache_dir() -> str:
    """The Hugging Face hub's cache folder, the home folder written ``~``."""
    try:
        from huggingface_hub import constants
        folder = str(constants.HF_HUB_CACHE)
    except ImportError:
        folder = os.path.join(os.path.expanduser("~"), ".cache", "huggingface", "hub")
    home = os.path.expanduser("~")
    return "~" + folder[len(home):] if home not in ("", "/") and folder.startswith(home + os.sep) else folder


def hub_reachable(timeout: float = 3.0) -> bool:
    """False when Hugging Face is switched offline (``HF_HUB_OFFLINE``) or its host cannot be reached within
    ``timeout`` seconds."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return False
    try:
        from huggingface_hub import constants
        if getattr(constants, "HF_HUB_OFFLINE", False):
            return False
        host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    except ImportError:
        host = "huggingface.co"
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False

"""Propagation settings, without importing torch (the CLI's --help reads the defaults from here)."""
from __future__ import annotations

from dataclasses import dataclass

from search.errors import InputError

DINO_SHORT_SIDE = 480      # DINO's eval_video_segmentation reads frames at a short side of 480
COLOR_SHORT_SIDE = 240     # the colour baseline's 8-pixel patches at 240 give the grid of a /16 ViT at 480


@dataclass(frozen=True)
class PropagateParams:
    n_last_frames: int = 7        # previous frames in the context (besides the seed frame)
    neighborhood: int = 12        # sources within this many patches (Chebyshev) of the target patch; 0: all
    topk: int = 5                 # labels accumulate from the k most similar source patches
    temperature: float = 0.1      # DINO: affinity = exp(cos / temperature)
    short_side: int | None = None  # model input short side (None: 480 for ViTs, 240 for the colour baseline)
    batch: int = 4                # frames through the backbone at once
    block: int = 1 << 22          # affinity entries computed at once (bounds memory on large grids)

    def check(self) -> None:
        if self.n_last_frames < 0 or self.neighborhood < 0 or self.topk < 1 or self.temperature <= 0 \
                or self.batch < 1 or (self.short_side is not None and self.short_side < 1):
            raise InputError(f"bad propagation settings: n_last_frames={self.n_last_frames} (>= 0), "
                             f"neighborhood={self.neighborhood} (>= 0), topk={self.topk} (>= 1), "
                             f"temperature={self.temperature} (> 0), short_side={self.short_side}")

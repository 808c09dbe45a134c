"""Automatic captions of indexed frames with an open_clip captioning model (CoCa): a ``clipcap``-type query
set for users without MVK's ClipCap file.

Protocol (seed 003): N target frames drawn uniformly without replacement from all indexed frames with a
seeded generator; each gets one caption, decoded greedily (argmax token by token) with the model's own
forward pass, in batches. open_clip's ``model.generate`` is not used because it needs the ``transformers``
package, which is no dependency of this project; greedy decoding is deterministic as well.

Weights rule as everywhere (``search.encoder.create_open_clip``): a pretrained tag, a local checkpoint, or
explicitly random weights; captions made with random weights are gibberish, and the query set says so
(query_type ``clipcap-random-weights`` and the ``source`` column).
"""
from __future__ import annotations

import functools
import io
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mvk_tools.querysets import Issue, make_queries

DEFAULT_MODEL = "coca_ViT-B-32"
DEFAULT_PRETRAINED = "mscoco_finetuned_laion2b_s13b_b90k"
TEST_MODEL = "mvk-tiny-coca"      # tiny random CoCa for tests, from mvk_tools/model_configs/
MODEL_CONFIG_DIR = Path(__file__).resolve().parent / "model_configs"
DEFAULT_MAX_TOKENS = 20
MIN_TOKENS = 2                   # end-of-text is forbidden before this many tokens: no empty captions
QUERY_TYPE = "clipcap"
RANDOM_QUERY_TYPE = "clipcap-random-weights"


@functools.lru_cache(maxsize=1)
def register_model_configs() -> None:
    """Make our model configs (the tiny test CoCa) known to open_clip, once per process."""
    import open_clip
    open_clip.add_model_config(MODEL_CONFIG_DIR)


@dataclass
class Captioner:
    """A loaded CoCa model with its preprocessing and tokenizer."""
    model: Any
    preprocess: Callable
    tokenizer: Any
    model_name: str
    pretrained: str | None
    checkpoint: str | None
    random_weights: bool
    device: str

    def describe(self) -> str:
        weights = ("RANDOM WEIGHTS: the captions are gibberish, for tests only" if self.random_weights
                   else f"checkpoint {self.checkpoint}" if self.checkpoint else f"pretrained {self.pretrained}")
        return f"open_clip {self.model_name} ({weights}), greedy decoding"

    def caption(self, images: Sequence[np.ndarray], *, max_tokens: int = DEFAULT_MAX_TOKENS,
                batch_size: int = 16, progress: Callable[[Iterable], Iterable] | None = None) -> list[str]:
        """One caption per (H, W, 3) uint8 RGB image."""
        import torch
        from PIL import Image

        batches = range(0, len(images), batch_size)
        out: list[str] = []
        for start in (progress(batches) if progress else batches):
            chunk = images[start:start + batch_size]
            x = torch.stack([self.preprocess(Image.fromarray(np.ascontiguousarray(im[:, :, :3]))) for im in chunk])
            tokens = greedy_decode(self.model, x.to(self.device), max_tokens=max_tokens)
            out.extend(decode_tokens(self.tokenizer, tokens))
        return out


def load_captioner(model: str = DEFAULT_MODEL, pretrained: str | None = DEFAULT_PRETRAINED, *,
                   checkpoint: str | Path | None = None, random_weights: bool = False,
                   device: str = "cpu") -> Captioner:
    """Load a CoCa model with the project's weights rule. Raises MissingWeightsError offline without the
    weights (naming what to fetch), InputError for a model that cannot caption."""
    from search.encoder import create_open_clip
    from search.errors import InputError

    register_model_configs()
    net, preprocess, tokenizer = create_open_clip(model, pretrained, checkpoint=checkpoint,
                                                  random_weights=random_weights, device=device)
    if not hasattr(net, "text_decoder"):
        raise InputError(f"open_clip model {model!r} has no text decoder: captions need a CoCa model "
                         f"(e.g. {DEFAULT_MODEL} / {DEFAULT_PRETRAINED})")
    return Captioner(net, preprocess, tokenizer, model, None if random_weights else pretrained,
                     str(checkpoint) if checkpoint and not random_weights else None, random_weights, device)


def greedy_decode(model: Any, images: "torch.Tensor", *, max_tokens: int = DEFAULT_MAX_TOKENS,
                  sot_id: int = 49406, eos_id: int = 49407, min_tokens: int = MIN_TOKENS) -> "torch.Tensor":
    """(B, 1 + <= max_tokens) token ids: start-of-text, then the argmax token at each step for the whole
    batch at once; rows that emitted end-of-text are padded with it until every row is done."""
    import torch

    with torch.no_grad():
        latent, embs = model._encode_image(images)
        b = images.shape[0]
        text = torch.full((b, 1), sot_id, dtype=torch.long, device=images.device)
        done = torch.zeros(b, dtype=torch.bool, device=images.device)
        for step in range(max_tokens):
            logits = model(images, text, image_latent=latent, image_embs=embs, output_labels=False)["logits"][:, -1]
            logits[:, sot_id] = -torch.inf
            if step < min_tokens:
                logits[:, eos_id] = -torch.inf
            nxt = logits.argmax(dim=-1)
            nxt = torch.where(done, torch.full_like(nxt, eos_id), nxt)
            text = torch.cat([text, nxt[:, None]], dim=1)
            done |= nxt == eos_id
            if bool(done.all()):
                break
    return text


def decode_tokens(tokenizer: Any, tokens: "torch.Tensor", *, sot_id: int = 49406, eos_id: int = 49407) -> list[str]:
    """Texts of generated token rows: the tokens after start-of-text up to the first end-of-text."""
    decode = getattr(tokenizer, "decode", None)
    if decode is None:
        from open_clip import decode
    texts = []
    for row in tokens.tolist():
        ids = [t for t in row[1:] if t != sot_id]
        if eos_id in ids:
            ids = ids[:ids.index(eos_id)]
        texts.append(" ".join(decode(ids).split()))
    return texts


def pick_targets(frames: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """``n`` frames drawn uniformly without replacement (all of them when ``n`` >= the number of frames),
    with ``numpy.random.default_rng(seed)``: the same index and seed give the same targets."""
    if n <= 0:
        return frames.iloc[:0]
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(frames), size=min(n, len(frames)), replace=False)
    return frames.iloc[pick]


def frame_images(targets: pd.DataFrame, *, collection: str | Path | None = None,
                 max_side: int | None = 512) -> tuple[list[np.ndarray], list[int], list[Issue]]:
    """RGB images of the target frames: from the source video (``collection`` given: the frame at its time,
    via ``mvk_tools.video.read_frame_at``) or else from the thumbnail JPEG bytes in the frames table.
    Returns (images, positions in ``targets`` they belong to, issues for the frames left out)."""
    from PIL import Image

    from mvk_tools.video import read_frame_at
    from search.errors import MvkError

    images, positions, issues = [], [], []
    for pos, row in enumerate(targets.itertuples(index=False)):
        where = f"{row.site}/{row.video_id} frame {row.frame_index}"
        try:
            if collection is not None:
                images.append(read_frame_at(Path(collection) / row.video_path, float(row.time),
                                            max_side=max_side).image)
            else:
                data = getattr(row, "thumbnail", None)
                if not data:
                    raise ValueError("the index holds no thumbnail for it (pass --collection to read the video)")
                with Image.open(io.BytesIO(data)) as im:
                    images.append(np.asarray(im.convert("RGB")))
            positions.append(pos)
        except (MvkError, OSError, ValueError) as exc:
            issues.append(Issue(where, None, f"cannot read the frame: {exc}"))
    return images, positions, issues


def caption_queryset(targets: pd.DataFrame, captions: Sequence[str], *, source: str,
                     random_weights: bool) -> pd.DataFrame:
    """The tidy query set (``mvk_tools.querysets``) of one caption per target frame; empty captions are left
    out. Ids follow the MVK importer's, ``clipcap:<site>/<video>_<frame>``; a selected frame's number goes
    to ``target_selected``, so the exact match rule finds it by name."""
    qtype = RANDOM_QUERY_TYPE if random_weights else QUERY_TYPE
    records = []
    for row, text in zip(targets.itertuples(index=False), captions):
        if not text.strip():
            continue
        selected = getattr(row, "selected_number", None)
        selected = int(selected) if selected is not None and not pd.isna(selected) and selected >= 0 else None
        records.append({"query_id": f"{qtype}:{row.site}/{row.video_id}_{int(row.frame_index):05d}",
                        "query_type": qtype, "text": text, "target_site": row.site, "target_video": row.video_id,
                        "target_frame": int(row.frame_index), "target_time": float(row.time),
                        "target_selected": selected, "source": source})
    return make_queries(records)

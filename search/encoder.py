"""The embedding space: an open_clip model chosen by name and pretrained tag (or a local checkpoint),
encoding texts and images in batches into L2-normalised float32 vectors.

Weights rule: pretrained tags are fetched on a machine with internet and read from the local cache
after; offline without them ``load_encoder`` raises MissingWeightsError saying what to fetch and where.
``random_weights=True`` (tests and benchmarks only) initialises the real architecture randomly and
``Encoder.identity()["random_weights"]`` says so, so everything built with it is labelled. Random
initialisation is seeded, so two processes build the same random model (an index built with
``--random-weights`` can be searched with ``--random-weights`` from another process).
"""
from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from search.errors import InputError, MissingWeightsError
from search.weights import hub_cache_dir, hub_reachable
from search.identity import IDENTITY_KEYS, describe, same_space  # noqa: F401  (re-exported: the one identity rule)

DEFAULT_MODEL = "ViT-B-32"
DEFAULT_PRETRAINED = "openai"
TEST_MODEL = "mvk-tiny-vit"   # a tiny ViT CLIP registered from search/model_configs/ for tests
MODEL_CONFIG_DIR = Path(__file__).resolve().parent / "model_configs"
RANDOM_SEED = 0


Fit = Literal["letterbox", "crop"]
FITS: tuple[str, ...] = ("letterbox", "crop")


TEST_SIGLIP_MODEL = "mvk-tiny-siglip"   # a tiny SigLIP-shaped model (timm ViT trunk, MAP head, mean 0.5)
# What open_clip's model configs cannot hold for our own test models: their preprocessing and tokenizer.
OWN_MODEL_EXTRAS = MODEL_CONFIG_DIR / "extras" / "own_models.json"
PREPROCESS_KEYS = ("mean", "std", "interpolation", "resize_mode")


@functools.lru_cache(maxsize=1)
def _register_model_configs() -> None:
    """Make our own model configs (the tiny test models) known to open_clip, once per process."""
    import open_clip
    open_clip.add_model_config(MODEL_CONFIG_DIR)


@functools.lru_cache(maxsize=1)
def _own_extras() -> dict:
    import json
    return json.loads(OWN_MODEL_EXTRAS.read_text())


def model_preprocess(model: str, pretrained: str | None) -> dict:
    """The image preprocessing (mean, std, interpolation, resize_mode) of a model's own config: the pretrained
    tag's (open_clip's table, e.g. SigLIP's mean 0.5 and squash resize) or our own test model's; empty when
    neither says (open_clip's OpenAI defaults then apply). Used when the tag's weights are not loaded (random
    weights, a checkpoint file), so the real architecture still preprocesses as its trained weights expect."""
    from open_clip.pretrained import get_pretrained_cfg
    own = _own_extras().get(model, {}).get("preprocess", {})
    tag = get_pretrained_cfg(model, pretrained) if pretrained else {}
    return {k: v for k in PREPROCESS_KEYS for v in [own.get(k, tag.get(k))] if v is not None}


def _tokenizer(model: str) -> Any:
    """open_clip's tokenizer for ``model``; our own test models name theirs (the SigLIP-shaped one uses the
    bundled CLIP tokenizer so that it needs no download)."""
    import open_clip
    extras = _own_extras().get(model, {})
    if extras.get("tokenizer") == "simple":
        return open_clip.SimpleTokenizer(context_length=open_clip.get_model_config(model)["text_cfg"]["context_length"])
    return open_clip.get_tokenizer(model)


def _weights_source(model: str, pretrained: str) -> str:
    """Where open_clip would fetch the weights of a pretrained tag from, in words."""
    from open_clip.pretrained import get_pretrained_cfg
    cfg = get_pretrained_cfg(model, pretrained)
    if cfg.get("hf_hub"):
        return f"the Hugging Face repo {cfg['hf_hub'].rstrip('/')} (cached under {hub_cache_dir()})"
    if cfg.get("url"):
        return f"{cfg['url']} (cached under ~/.cache/clip)"
    return "its hub"


def _is_cached(model: str, pretrained: str) -> bool:
    """Whether the weights of a pretrained tag are already in the local cache."""
    from open_clip.pretrained import get_pretrained_cfg
    cfg = get_pretrained_cfg(model, pretrained)
    if cfg.get("file"):
        return os.path.isfile(cfg["file"])
    if cfg.get("hf_hub"):
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            return False
        repo, filename = os.path.split(cfg["hf_hub"])   # "org/name/file" or "org/name/" (default file names)
        names = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        return any(isinstance(try_to_load_from_cache(repo, n), str) for n in names)
    if cfg.get("url"):
        return os.path.isfile(os.path.join(os.path.expanduser("~/.cache/clip"), os.path.basename(cfg["url"])))
    return False


def _hf_hub_cached(model: str) -> bool:
    """Whether an ``hf-hub:ORG/NAME`` model's config and weights are in the local Hugging Face cache."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    repo = model.split(":", 1)[1]
    has = lambda name: isinstance(try_to_load_from_cache(repo, name), str)
    return has("open_clip_config.json") and (has("open_clip_model.safetensors") or has("open_clip_pytorch_model.bin"))


def weights_cached(model: str, pretrained: str | None) -> bool:
    """Whether a model's weights (an open_clip pretrained tag, or an ``hf-hub:`` repo) are in the local cache;
    looks at the cache folders only, never the network."""
    _register_model_configs()
    if model.startswith("hf-hub:"):
        return _hf_hub_cached(model)
    from open_clip.pretrained import get_pretrained_cfg
    return bool(pretrained) and bool(get_pretrained_cfg(model, pretrained)) and _is_cached(model, pretrained)


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the hub may be asked (``search.weights.hub_reachable``: never with HF_HUB_OFFLINE set)."""
    return hub_reachable(timeout)


def weights_available(model: str = DEFAULT_MODEL, pretrained: str = DEFAULT_PRETRAINED) -> bool:
    """Whether ``load_encoder(model, pretrained)`` can get its weights: in the local cache, or the hub reachable."""
    _register_model_configs()
    from open_clip.pretrained import get_pretrained_cfg
    if not get_pretrained_cfg(model, pretrained):
        return False
    return _is_cached(model, pretrained) or _hub_reachable()


def fetch_instructions(model: str = DEFAULT_MODEL, pretrained: str = DEFAULT_PRETRAINED) -> str:
    """How to get the weights of an open_clip pretrained tag onto an offline machine, in one sentence."""
    return (f"CLIP {model} '{pretrained}' comes from {_weights_source(model, pretrained)}: on a machine with "
            f"internet run python3 -c \"import open_clip; open_clip.create_model_and_transforms('{model}', "
            f"pretrained='{pretrained}')\" and copy that cache folder to the same place here")


def _missing_weights(model: str, pretrained: str, exc: BaseException) -> MissingWeightsError:
    return MissingWeightsError(
        f"pretrained weights for open_clip model {model!r} tag {pretrained!r} are not available offline: "
        f"they come from {_weights_source(model, pretrained)}. Run the same command once on a machine with "
        f"internet to cache them (then copy the cache folder here), or copy the checkpoint file here and pass "
        f"--clip-checkpoint FILE (formerly --checkpoint); --random-weights is for tests and speed benchmarks "
        f"only. ({type(exc).__name__}: {str(exc)[:200]})")


class _NoRandomInitWarning(logging.Filter):
    """Drops open_clip's "No pretrained weights loaded ... initialized randomly" warning: random weights are
    asked for explicitly here, and the commands and the app say so in their own words."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "No pretrained weights loaded" not in record.getMessage()


@contextlib.contextmanager
def _quiet_random_init(random_weights: bool) -> Iterator[None]:
    """While open_clip builds a model that was asked for with random weights, its warning about them is dropped."""
    if not random_weights:
        yield
        return
    root = logging.getLogger()
    quiet = _NoRandomInitWarning()
    root.addFilter(quiet)
    try:
        yield
    finally:
        root.removeFilter(quiet)


def create_open_clip(model: str = DEFAULT_MODEL, pretrained: str | None = DEFAULT_PRETRAINED, *,
                     checkpoint: str | Path | None = None, random_weights: bool = False,
                     device: str = "cpu") -> tuple[Any, Any, Any]:
    """(model, preprocess, tokenizer) of an open_clip model in eval mode on ``device``, with the weights
    rule of this module: a pretrained tag, a local ``checkpoint`` file, or explicitly random weights.
    Raises MissingWeightsError when the weights (or the tokenizer files) are not available offline."""
    import open_clip
    import torch
    from open_clip.pretrained import get_pretrained_cfg, list_pretrained_tags_by_model

    _register_model_configs()
    if not model.startswith(("hf-hub:", "local-dir:")) and open_clip.get_model_config(model) is None:
        raise InputError(f"unknown open_clip model {model!r}; known models include: "
                         f"{', '.join(open_clip.list_models()[:40])}, ...")
    if random_weights:
        weights: str | None = None
    elif checkpoint is not None:
        path = Path(checkpoint)
        if not path.is_file():
            raise MissingWeightsError(f"checkpoint file {str(path)!r} for open_clip model {model!r} does not "
                                      f"exist; copy the .pt/.bin/.safetensors file there or fix --clip-checkpoint")
        weights = str(path)
    elif model.startswith("hf-hub:"):
        weights = None          # open_clip reads the config and weights of an hf-hub: model from its repo
        if not _hf_hub_cached(model) and not _hub_reachable():
            raise MissingWeightsError(f"open_clip model {model!r} is not in the local Hugging Face cache and there "
                                      f"is no network: run the same command once on a machine with internet "
                                      f"(then copy ~/.cache/huggingface here)")
    elif pretrained:
        if not get_pretrained_cfg(model, pretrained):
            tags = list_pretrained_tags_by_model(model)
            raise InputError(f"open_clip model {model!r} has no pretrained tag {pretrained!r}; known tags: "
                             f"{', '.join(tags) or 'none (pass --clip-checkpoint FILE or --random-weights)'}")
        weights = pretrained
        if not _is_cached(model, pretrained) and not _hub_reachable():
            raise _missing_weights(model, pretrained, ConnectionError("not in the local cache and no network"))
    else:
        raise InputError(f"no weights given for open_clip model {model!r}: pass a pretrained tag, "
                         f"--clip-checkpoint FILE, or --random-weights (tests and benchmarks only)")
    own = {} if weights is not None and weights == pretrained else model_preprocess(model, pretrained)
    forced = {f"image_{k}": tuple(v) if isinstance(v, list) else v for k, v in own.items()}
    try:
        with torch.random.fork_rng(devices=[]), _quiet_random_init(random_weights):
            torch.manual_seed(RANDOM_SEED)
            net, _, preprocess = open_clip.create_model_and_transforms(model, pretrained=weights, device=device,
                                                                       **forced)
    except MissingWeightsError:
        raise
    except Exception as exc:  # open_clip wraps hub/network failures in RuntimeError, OSError, ...
        if checkpoint is not None and not random_weights:
            raise MissingWeightsError(f"cannot load checkpoint {str(checkpoint)!r} into open_clip model "
                                      f"{model!r}: {type(exc).__name__}: {str(exc)[:300]}") from exc
        if weights is None and (random_weights or not model.startswith("hf-hub:")):
            raise
        raise _missing_weights(model, pretrained or "", exc) from exc
    try:
        tokenizer = _tokenizer(model)
    except Exception as exc:   # HF tokenizers (SigLIP, ...) fetch their files from the hub
        raise MissingWeightsError(f"the tokenizer of open_clip model {model!r} is not available offline "
                                  f"({type(exc).__name__}: {str(exc)[:200]}); run once on a machine with "
                                  f"internet to cache it under {hub_cache_dir()}") from exc
    net.eval()
    return net, preprocess, tokenizer


def _to_tensor_batch(images: Sequence[np.ndarray]) -> list:
    import torch
    out = []
    for i, im in enumerate(images):
        arr = np.asarray(im)
        if arr.ndim == 2:
            arr = np.repeat(arr[:, :, None], 3, axis=2)
        if arr.ndim != 3 or arr.shape[2] not in (3, 4) or arr.shape[0] == 0 or arr.shape[1] == 0:
            raise InputError(f"image {i} has shape {arr.shape}; expected (H, W, 3) uint8 RGB")
        rgb = np.ascontiguousarray(arr[:, :, :3])
        out.append(torch.from_numpy(rgb if rgb.flags.writeable else rgb.copy()))
    return out


class Encoder:
    """A loaded open_clip model with its preprocessing and tokenizer."""

    model_name: str
    pretrained: str | None
    dim: int
    device: str
    random_weights: bool
    context_length: int

    def __init__(self, model: Any, tokenizer: Any, *, model_name: str, pretrained: str | None,
                 checkpoint: Path | None, random_weights: bool, device: str) -> None:
        import torch
        self.model = model
        self.tokenizer = tokenizer
        self.model_name = model_name
        self.pretrained = None if (random_weights or checkpoint is not None) else pretrained
        self.checkpoint = checkpoint
        self.random_weights = random_weights
        self.device = device
        cfg = getattr(model.visual, "preprocess_cfg", {}) or {}
        size = cfg.get("size", getattr(model.visual, "image_size", 224))
        self.image_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        self.mean = tuple(float(v) for v in cfg.get("mean", (0.48145466, 0.4578275, 0.40821073)))
        self.std = tuple(float(v) for v in cfg.get("std", (0.26862954, 0.26130258, 0.27577711)))
        self.interpolation = str(cfg.get("interpolation", "bicubic"))
        self.resize_mode = str(cfg.get("resize_mode", "shortest"))
        self.context_length = int(getattr(tokenizer, "context_length", None) or model.context_length)
        with torch.inference_mode():
            probe = model.encode_text(tokenizer(["a"]).to(device))
        self.dim = int(probe.shape[-1])

    @property
    def fill_rgb(self) -> np.ndarray:
        """(3,) uint8: this model's normalisation mean as an 8-bit colour (zero at the model's input), the
        neutral fill of letterbox padding and of masked-out pixels in object crops."""
        return np.round(np.asarray(self.mean) * 255.0).astype(np.uint8)

    # -- text ---------------------------------------------------------------------------------------
    def _n_tokens(self, text: str) -> int:
        tok = self.tokenizer
        if hasattr(tok, "encode") and hasattr(tok, "clean_fn"):      # open_clip SimpleTokenizer
            return len(tok.encode(text)) + 2                         # + start and end of text
        if hasattr(tok, "tokenizer"):                                # open_clip HFTokenizer
            return len(tok.tokenizer(text)["input_ids"])
        ids = tok([text])[0]
        return int((ids != 0).sum())

    def fits_context(self, text: str) -> bool:
        """False when the tokenizer would truncate ``text``."""
        return self._n_tokens(text) <= self.context_length

    def encode_text(self, texts: Sequence[str], *, batch_size: int = 256) -> np.ndarray:
        """(n, dim) float32, L2-normalised. Texts longer than the context are truncated (see ``fits_context``)."""
        import torch
        texts = list(texts)
        out = np.zeros((len(texts), self.dim), np.float32)
        if not texts:
            return out
        tokens = self.tokenizer(texts)
        order = torch.argsort(tokens.argmax(dim=-1), stable=True)     # similar lengths share a batch
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                rows = order[start:start + batch_size]
                feats = _encode_tokens(self.model, tokens[rows].to(self.device)).float()
                out[rows.numpy()] = torch.nn.functional.normalize(feats, dim=-1).cpu().numpy()
        return out

    # -- images -------------------------------------------------------------------------------------
    def preprocess(self, images: Sequence[np.ndarray], *, fit: Fit = "letterbox", size: int | None = None):
        """(n, 3, S, S) normalised float tensor on ``device``, S = ``size`` or the model's input size.
        ``letterbox``: the longest side scaled to S and the rest padded with the normalisation mean colour
        (zero after normalising); ``crop``: the shortest side scaled to S and the centre cut out. Images of
        one shape are resized together."""
        import torch
        import torch.nn.functional as F
        if fit not in FITS:
            raise InputError(f"unknown fit {fit!r}; choose one of {', '.join(FITS)}")
        s = int(size or self.image_size)
        tensors = _to_tensor_batch(images)
        batch = torch.zeros((len(tensors), 3, s, s), dtype=torch.float32, device=self.device)
        mean = torch.tensor(self.mean, device=self.device).view(1, 3, 1, 1) * 255.0
        std = torch.tensor(self.std, device=self.device).view(1, 3, 1, 1) * 255.0
        mode = "bicubic" if self.interpolation == "bicubic" else "bilinear"
        groups: dict[tuple[int, int], list[int]] = {}
        for i, t in enumerate(tensors):
            groups.setdefault((t.shape[0], t.shape[1]), []).append(i)
        for (h, w), idx in groups.items():
            x = torch.stack([tensors[i] for i in idx]).to(self.device).permute(0, 3, 1, 2).float()
            scale = s / max(h, w) if fit == "letterbox" else s / min(h, w)
            nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
            x = F.interpolate(x, size=(nh, nw), mode=mode, antialias=True, align_corners=False).clamp_(0, 255)
            x = (x - mean) / std
            if fit == "letterbox":
                top, left = (s - nh) // 2, (s - nw) // 2
                batch[idx, :, top:top + nh, left:left + nw] = x
            else:
                top, left = (nh - s) // 2, (nw - s) // 2
                batch[idx] = x[:, :, top:top + s, left:left + s]
        return batch

    def encode_images(self, images: Sequence[np.ndarray], *, fit: Fit = "letterbox",
                      batch_size: int = 64) -> np.ndarray:
        """(n, dim) float32, L2-normalised, from (H, W, 3) uint8 RGB images. ``letterbox`` pads to a square
        (16:9 sides kept), ``crop`` centre-crops as the model's own preprocessing does."""
        import torch
        out = np.zeros((len(images), self.dim), np.float32)
        with torch.inference_mode():
            for start in range(0, len(images), batch_size):
                x = self.preprocess(images[start:start + batch_size], fit=fit)
                feats = self.model.encode_image(x).float()
                out[start:start + len(x)] = torch.nn.functional.normalize(feats, dim=-1).cpu().numpy()
        return out

    def dense_side(self, dense_size: int | None = None) -> int:
        """The input side of the dense pass: ``dense_size`` (checked against the patch size) or, when None,
        the model's own input size (the dense features then come from the frame vector's pass)."""
        from search import dense
        side = self.image_size if dense_size is None else int(dense_size)
        if side == self.image_size:
            return side
        dense.grid_for(self.model.visual, side, self.model_name)
        if dense.tower_kind(self.model.visual) == "map":
            raise InputError(f"--dense-size {side}: {self.model_name!r} pools with an attention head (SigLIP) and "
                             f"computes its dense features at its own input size only ({self.image_size} px); "
                             f"leave --dense-size out")
        return side

    def check_dense(self, variant: str = "clearclip") -> None:
        """InputError naming the object modes that work here unless this model has dense features of
        ``variant`` (an open_clip ViT; ``clearclip`` also needs a standard attention block; ``maskclip`` a
        timm trunk with an attention-pooling head)."""
        from search import dense
        dense.check_tower(self.model.visual, self.model_name, variant)

    def aligned_variant(self) -> str | None:
        """The text-aligned dense variant of this tower (``clearclip`` for a CLIP ViT, ``maskclip`` for a
        SigLIP-style attention-pooling head), None when the tower has no dense path (crop objects there)."""
        from search import dense
        return dense.aligned_variant(self.model.visual)

    def encode_image_tokens(self, images: Sequence[np.ndarray], *, fit: Fit = "letterbox", batch_size: int = 64,
                            variant: str | None = None, dense_size: int | None = None
                            ) -> tuple[np.ndarray, np.ndarray]:
        """Global vectors (n, dim), L2-normalised as ``encode_images``'s, and dense features projected into
        the joint space (n, gh, gw, dim), not normalised (pool first, then normalise); both float32.

        ``variant``: ``clearclip`` (the last block as ClearCLIP computes it), ``raw`` (CLIP's last-layer
        patch tokens) or, for SigLIP-style towers, ``maskclip`` (patches through the attention-pooling head's
        value path); None: the tower's text-aligned one (``aligned_variant``); see ``search.dense``.
        ``dense_size``: the side of the dense pass's input (a multiple
        of the patch size, position embeddings interpolated); None or the model's own size: one forward
        pass yields both the frame vectors and the dense features, else the frame vectors still come from
        the model's own size and the dense features from a second pass at ``dense_size``."""
        import torch
        from search import dense
        variant = variant or self.aligned_variant() or "clearclip"
        self.check_dense(variant)
        visual = self.model.visual
        side = self.dense_side(dense_size)
        grid = self.token_grid(dense_size)
        pooled_out: list[np.ndarray] = []
        tokens_out: list[np.ndarray] = []
        with torch.inference_mode():
            for start in range(0, len(images), batch_size):
                chunk = images[start:start + batch_size]
                x = self.preprocess(chunk, fit=fit)
                if side == self.image_size:
                    pooled, tokens = dense.encode_with_dense(self.model, x, grid, variant)
                else:
                    pooled = self.model.encode_image(x)
                    h_in = dense.last_block_input(visual, self.preprocess(chunk, fit=fit, size=side))
                    tokens = dense.dense_tokens(visual, h_in, grid, variant)
                pooled_out.append(torch.nn.functional.normalize(pooled.float(), dim=-1).cpu().numpy())
                tokens_out.append(tokens.float().cpu().numpy())
        if not pooled_out:
            return np.zeros((0, self.dim), np.float32), np.zeros((0, grid[0], grid[1], self.dim), np.float32)
        return np.concatenate(pooled_out), np.concatenate(tokens_out)

    def token_grid(self, dense_size: int | None = None) -> tuple[int, int]:
        """(gh, gw) of ``encode_image_tokens`` at ``dense_size``; the tokens cover the letterboxed/cropped
        square."""
        from search import dense
        side = self.image_size if dense_size is None else int(dense_size)
        if side == self.image_size:
            return dense.own_grid(self.model.visual, side)
        return dense.grid_for(self.model.visual, side, self.model_name)

    def token_extent(self, dense_size: int | None = None) -> float:
        """The fraction of the input square's side that ``token_grid(dense_size)`` covers from the top-left:
        1.0 unless the model's own size is not a multiple of its patch size (SigLIP-384's 27 patches of
        14 px cover 378 of 384 px; the patch convolution drops the rest)."""
        from search import dense
        side = self.image_size if dense_size is None else int(dense_size)
        return self.token_grid(dense_size)[0] * dense.patch_size(self.model.visual)[0] / side

    def identity(self, *, fit: Fit = "letterbox") -> dict:
        """What an index must record to be searched with this encoder: model, pretrained, checkpoint,
        dim, random_weights, preprocessing."""
        ckpt = None
        if self.checkpoint is not None:
            ckpt = {"name": self.checkpoint.name, "size": self.checkpoint.stat().st_size}
        return {"model": self.model_name, "pretrained": self.pretrained, "checkpoint": ckpt, "dim": self.dim,
                "random_weights": self.random_weights, "fit": fit, "image_size": self.image_size,
                "mean": list(self.mean), "std": list(self.std), "context_length": self.context_length}


def _encode_tokens(model, tokens):
    """``model.encode_text(tokens)``, computed only up to the batch's last end-of-text token when the text tower
    is causal and pools that token (CLIP's towers): nothing after it reaches it, so the result is the same and
    a short query costs a fraction of the full 77-token context (BENCHMARKS.md, "text encoding"). Other towers:
    ``encode_text`` as is."""
    import torch
    mask = getattr(model, "attn_mask", None)
    if (getattr(model, "text_pool_type", None) != "argmax" or not isinstance(mask, torch.Tensor)
            or not hasattr(model, "positional_embedding") or not hasattr(model, "token_embedding")
            or not torch.isinf(mask[torch.ones_like(mask, dtype=torch.bool).triu(1)]).all()):
        return model.encode_text(tokens)
    ends = tokens.argmax(dim=-1)
    n = int(ends.max()) + 1
    cast = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens[:, :n]).to(cast) + model.positional_embedding[:n].to(cast)
    x = model.ln_final(model.transformer(x, attn_mask=mask[:n, :n]))
    x = x[torch.arange(x.shape[0], device=x.device), ends]
    proj = model.text_projection
    if proj is None:
        return x
    return proj(x) if isinstance(proj, torch.nn.Linear) else x @ proj


@functools.lru_cache(maxsize=8)
def _load_cached(model: str, pretrained: str | None, checkpoint: str | None, stamp: tuple[int, int] | None,
                 random_weights: bool, device: str) -> Encoder:
    net, _, tokenizer = create_open_clip(model, pretrained, checkpoint=checkpoint,
                                         random_weights=random_weights, device=device)
    return Encoder(net, tokenizer, model_name=model, pretrained=pretrained,
                   checkpoint=Path(checkpoint) if checkpoint else None,
                   random_weights=random_weights, device=device)


def load_encoder(model: str = DEFAULT_MODEL, pretrained: str | None = DEFAULT_PRETRAINED, *,
                 checkpoint: str | Path | None = None, random_weights: bool = False,
                 device: str = "cpu") -> Encoder:
    """Load an open_clip model (cached per process: a second call with the same arguments is free).
    Raises MissingWeightsError offline when the weights are not cached."""
    ckpt = None
    stamp = None
    if checkpoint is not None and not random_weights:
        ckpt = str(Path(checkpoint).resolve())
        if os.path.isfile(ckpt):
            st = os.stat(ckpt)
            stamp = (st.st_size, st.st_mtime_ns)
    return _load_cached(model, pretrained, ckpt, stamp, bool(random_weights), str(device))

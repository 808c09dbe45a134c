"""Which encoder searches an index: one rule for every front end (``mvk search``, ``mvk kis``, ``mvk serve``,
``mvk submit``, the app and the HTTP API).

An index records the identity of the encoder it was built with (``Encoder.identity()``: model, pretrained tag or
checkpoint, dimension, random weights, preprocessing). Two identities share one embedding space when the
``IDENTITY_KEYS`` agree. ``encoder_for_index`` loads the encoder for a recorded identity, honouring what a user
may override (another model of the same space, a checkpoint file, random weights for a random-weight index), and
refuses everything else with one message per case, the same wherever it is asked.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from search.errors import MissingWeightsError, ModelMismatchError

# The keys of ``Encoder.identity()`` that decide whether two encoders share one embedding space.
IDENTITY_KEYS = ("model", "pretrained", "checkpoint", "dim", "random_weights")

CHECKPOINT_FLAG = "--clip-checkpoint"     # the CLIP checkpoint file, in every command
DINO_CHECKPOINT_FLAG = "--dino-checkpoint"


def same_space(a: dict, b: dict) -> bool:
    """True when two encoder identities embed into the same space (model, weights, dim)."""
    return all(a.get(k) == b.get(k) for k in IDENTITY_KEYS)


def describe(identity: dict) -> str:
    """One line naming an encoder identity, for messages."""
    if identity.get("random_weights"):
        weights = "random weights"
    elif identity.get("checkpoint"):
        ck = identity["checkpoint"]
        name = ck.get("name") if isinstance(ck, dict) else ck
        size = f" ({ck.get('size')} bytes)" if isinstance(ck, dict) and ck.get("size") is not None else ""
        weights = f"checkpoint {name}{size}"
    else:
        weights = f"pretrained {identity.get('pretrained')!r}"
    return f"{identity.get('model')} with {weights}, dim {identity.get('dim')}"


def checkpoint_name(identity: dict) -> str | None:
    """The file name of the checkpoint an index was built from (None when it used a pretrained tag)."""
    ck = identity.get("checkpoint")
    if not ck:
        return None
    return str(ck.get("name") if isinstance(ck, dict) else Path(str(ck)).name)


@dataclass(frozen=True)
class EncoderChoice:
    """What a user may say about the encoder on a command line, in the app's settings or the API's start-up:
    nothing (the index's own), a model/tag of the same space, a local checkpoint file, random weights."""
    model: str | None = None
    pretrained: str | None = None
    checkpoint: str | None = None
    random_weights: bool = False


def resolve_choice(identity: dict, choice: EncoderChoice = EncoderChoice()) -> dict:
    """The ``load_encoder`` arguments (model, pretrained, checkpoint, random_weights) for searching an index
    built with ``identity``. ModelMismatchError for random weights on a pretrained index; MissingWeightsError
    naming the file and the flag for a checkpoint-built index when no checkpoint is given."""
    from search.encoder import DEFAULT_MODEL, DEFAULT_PRETRAINED

    model = choice.model or identity.get("model") or DEFAULT_MODEL
    pretrained, checkpoint, random_weights = choice.pretrained, choice.checkpoint, bool(choice.random_weights)
    built_random = bool(identity.get("random_weights"))
    if random_weights and not built_random and identity.get("model") and not choice.model:
        raise ModelMismatchError(f"the index was built with {describe(identity)}; --random-weights cannot query "
                                 "it: drop the flag")
    if not random_weights and checkpoint is None and pretrained is None and not choice.model:
        name = checkpoint_name(identity)
        if name and not built_random:
            raise MissingWeightsError(
                f"the index was built from the CLIP checkpoint file {name}: pass it with {CHECKPOINT_FLAG} FILE "
                f"(mvk search, kis, serve, submit and app take it; the old --checkpoint still works)")
        random_weights = built_random
        pretrained = identity.get("pretrained")
    if pretrained is None and not random_weights and checkpoint is None:
        pretrained = DEFAULT_PRETRAINED
    return {"model": model, "pretrained": pretrained, "checkpoint": checkpoint, "random_weights": random_weights}


def encoder_for_index(identity: dict, choice: EncoderChoice = EncoderChoice(), *, device: str = "cpu",
                      where: str | Path | None = None):
    """The encoder that searches an index (at ``where``) built with ``identity`` (``resolve_choice``), loaded and
    checked to share the index's space (ModelMismatchError otherwise, naming both)."""
    from search.encoder import load_encoder

    encoder = load_encoder(**resolve_choice(identity, choice), device=device)
    check_space(identity, encoder.identity(), where)
    return encoder


def check_space(built: dict, asked: dict, where: str | Path | None = None) -> None:
    """ModelMismatchError when the encoder identity ``asked`` does not share the space of ``built`` (what an
    index records); an index that records no encoder accepts any."""
    if built and not same_space(built, asked):
        at = f" at {where}" if where is not None else ""
        raise ModelMismatchError(f"the index{at} was built with {describe(built)}, but {describe(asked)} was "
                                 f"asked for: search it with the index's model (the default when no --model is "
                                 f"given) or rebuild it into another folder")

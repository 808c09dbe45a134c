"""The DAVIS semi-supervised protocol: the first frame's annotation is given, every later frame is
predicted; J (region Jaccard) and F (boundary F-measure) per object, averaged over the frames between
the first and the last (both excluded, as the DAVIS-2017 toolkit does), J&F = (J + F) / 2. A sequence's
score is the mean over its objects; the overall mean is over all objects of all sequences (the
toolkit's global J&F-Mean), and also given over sequences."""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from indexer.evaluate import EvalClip
from indexer.metrics import boundary_f_frames, jaccard_frames
from indexer.propagators import Propagator
from search.errors import InputError, MvkError

SEMI_METRICS = ("J", "F", "J&F")


def scored_frames(n_frames: int) -> slice:
    """The frames the protocol scores: all but the first and the last (all when there are two or fewer)."""
    return slice(1, n_frames - 1) if n_frames > 2 else slice(0, n_frames)


def semi_scores(gt: np.ndarray, pred: np.ndarray, *, bound_th: float = 0.008) -> dict:
    """J, F per object of the first frame's annotation (ids > 0 of ``gt[0]``) and their means."""
    if gt.shape != pred.shape:
        raise InputError(f"ground truth {gt.shape} and prediction {pred.shape} differ in shape")
    ids = [int(i) for i in np.unique(gt[0]) if i > 0]
    if not ids:
        raise InputError("the first frame's annotation marks no object")
    keep = scored_frames(gt.shape[0])
    per_object = {}
    for oid in ids:
        g, p = gt[keep] == oid, pred[keep] == oid
        per_object[oid] = {"J": float(jaccard_frames(g, p).mean()),
                           "F": float(boundary_f_frames(g, p, bound_th).mean())}
    j = float(np.mean([v["J"] for v in per_object.values()]))
    f = float(np.mean([v["F"] for v in per_object.values()]))
    return {"frames": int(gt.shape[0]), "objects": len(ids), "J": j, "F": f, "J&F": (j + f) / 2,
            "per_object": {str(k): v for k, v in per_object.items()}}


def evaluate_semi(clips: Sequence[EvalClip], propagator: Propagator, *,
                  on_clip: Callable[[str, dict], None] | None = None) -> dict:
    """Propagate every clip's first-frame annotation and score it; a failing clip is recorded with its
    error and the rest go on."""
    results: dict[str, dict] = {}
    for clip in clips:
        try:
            gt = clip.masks()
            pred = np.stack([pf.labels for pf in propagator.propagate(clip.frames(), gt[0])])
            if pred.shape[0] != gt.shape[0]:
                raise InputError(f"{clip.name}: {pred.shape[0]} frames but {gt.shape[0]} masks")
            results[clip.name] = semi_scores(gt, pred)
        except MvkError as exc:
            results[clip.name] = {"error": str(exc)}
        if on_clip is not None:
            on_clip(clip.name, results[clip.name])
    scored = [r for r in results.values() if "error" not in r]
    objects = [o for r in scored for o in r["per_object"].values()]
    mean = {"J": float(np.mean([o["J"] for o in objects])) if objects else float("nan"),
            "F": float(np.mean([o["F"] for o in objects])) if objects else float("nan")}
    mean["J&F"] = (mean["J"] + mean["F"]) / 2
    per_seq = {m: float(np.mean([r[m] for r in scored])) if scored else float("nan") for m in SEMI_METRICS}
    return {"protocol": "semi-supervised (first-frame annotation given)", "clips": results, "mean": mean,
            "mean_over_sequences": per_seq, "scored": len(scored), "failed": len(results) - len(scored),
            "propagator": propagator.identity()}

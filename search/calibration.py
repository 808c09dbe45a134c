"""Calibrated thresholds from a handful of labels: score -> probability, T for a target precision,
precision and recall at T with their uncertainty, and the chance that an "absent" video was a miss.

The mapping is **isotonic** (pool-adjacent-violators, PAV): the only assumption is that a higher score
never means a lower chance of a match. A logistic fit would also assume the probability follows a
sigmoid in the cosine score, which nothing guarantees for CLIP similarities of one query; with the tens
of labels a user gives, PAV's blocks are few, so each block's rate is smoothed with a uniform Beta(1, 1)
prior ((k + 1) / (n + 2), then made non-decreasing again): no score is ever called certainly a match or
certainly not from a handful of labels.

T for a target precision: the lowest labelled score at which the labelled items scoring at least T are
matches at the target rate or better (so recall is as high as the labels allow). Precision at T is the
share of matches among labelled items >= T, recall the share of labelled matches >= T, each with a
Wilson 95 % interval from its count. Both are over the *labelled* items: labels picked from the top of a
ranking over-represent high scores, so recall over the whole collection is likely lower than this.

The chance that an absent video held the thing: its tracks' best scores are all below T; with p(s) the
calibrated probability of each, 1 - prod(1 - p(s)) over the video's tracks (tracks taken as independent).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from search.errors import InputError, QueryError

METHOD = "isotonic (pool-adjacent-violators, Beta(1,1)-smoothed blocks)"
Z95 = 1.959964
POSITIVE = {"1", "true", "yes", "y", "like", "liked", "match", "present", "positive", "+"}
NEGATIVE = {"0", "false", "no", "n", "dislike", "disliked", "non-match", "nonmatch", "absent", "negative", "-"}


@dataclass(frozen=True)
class Interval:
    """An estimated rate k / n with its Wilson 95 % interval."""
    estimate: float
    low: float
    high: float
    k: int
    n: int

    def describe(self) -> str:
        if self.n == 0:
            return "unknown (no labels)"
        return f"{self.estimate:.2f} (95% {self.low:.2f}-{self.high:.2f}, {self.k}/{self.n} labels)"


@dataclass(frozen=True)
class Calibration:
    """What a threshold T means. ``calibrated`` False: no labels; ``precision``/``recall`` None then."""
    threshold: float
    calibrated: bool
    method: str = ""
    target_precision: float | None = None
    precision: Interval | None = None
    recall: Interval | None = None
    n_positive: int = 0
    n_negative: int = 0
    knots: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float64))   # lowest score of each block
    values: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float64))  # P(match) of each block
    notes: tuple[str, ...] = ()

    def probability(self, scores: np.ndarray) -> np.ndarray:
        """Calibrated P(match) of each score (NaN when uncalibrated): the value of the block it falls in."""
        s = np.asarray(scores, dtype=np.float64)
        if not self.calibrated or len(self.knots) == 0:
            return np.full(s.shape, np.nan)
        at = np.clip(np.searchsorted(self.knots, s, side="right") - 1, 0, len(self.values) - 1)
        return self.values[at]

    def remark(self) -> str:
        """One line for records and reports."""
        if not self.calibrated:
            return "T uncalibrated (no labels): presence and absence at T carry no stated error rate"
        return (f"calibrated on {self.n_positive} match / {self.n_negative} non-match labels ({self.method}); "
                f"precision at T {self.precision.describe()}; recall at T {self.recall.describe()}")


def wilson(k: int, n: int, z: float = Z95) -> Interval:
    """Wilson score interval of k successes in n trials (n = 0: estimate NaN, interval 0..1)."""
    if n == 0:
        return Interval(float("nan"), 0.0, 1.0, 0, 0)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return Interval(float(p), float(max(0.0, centre - half)), float(min(1.0, centre + half)), int(k), int(n))


def pav(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Isotonic regression of 0/1 ``labels`` on ``scores`` by pool-adjacent-violators. Returns the blocks
    as (lowest score, matches, count), in score order; tied scores share a block."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    uniq, inv = np.unique(s, return_inverse=True)
    ks = list(np.bincount(inv, weights=y, minlength=len(uniq)))
    ns = list(np.bincount(inv, minlength=len(uniq)).astype(np.float64))
    lows = list(uniq)
    bk: list[float] = []
    bn: list[float] = []
    bl: list[float] = []
    for low, k, n in zip(lows, ks, ns):
        bk.append(k)
        bn.append(n)
        bl.append(low)
        while len(bk) > 1 and bk[-2] / bn[-2] >= bk[-1] / bn[-1]:
            k2, n2 = bk.pop(), bn.pop()
            bl.pop()
            bk[-1] += k2
            bn[-1] += n2
    return np.array(bl), np.array(bk), np.array(bn)


def _check(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(labels).reshape(-1).astype(bool)
    if len(s) != len(y):
        raise QueryError(f"{len(s)} scores for {len(y)} labels")
    if not np.isfinite(s).all():
        raise QueryError("a labelled item has no finite score (it has no object to score)")
    if y.all() or not y.any():
        raise InputError(f"calibration needs at least one match and one non-match label; got {int(y.sum())} "
                         f"match(es) and {int((~y).sum())} non-match(es)")
    return s, y


def at_threshold(scores: np.ndarray, labels: np.ndarray, threshold: float) -> tuple[Interval, Interval]:
    """Precision and recall of "score >= T" over the labelled items, with Wilson intervals."""
    s, y = np.asarray(scores, np.float64), np.asarray(labels, bool)
    above = s >= threshold
    return wilson(int((above & y).sum()), int(above.sum())), wilson(int((above & y).sum()), int(y.sum()))


def pick_threshold(scores: np.ndarray, labels: np.ndarray, target_precision: float) -> tuple[float, bool]:
    """The lowest labelled score whose "score >= T" precision over the labels reaches the target, and
    whether it does (else the threshold of the best precision, highest recall among equals)."""
    s, y = np.asarray(scores, np.float64), np.asarray(labels, bool)
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    last = np.r_[s[1:] != s[:-1], True]          # cut only after the last of tied scores
    tp = np.cumsum(y)[last]
    n = np.arange(1, len(s) + 1)[last]
    cut = s[last]
    precision = tp / n
    ok = np.flatnonzero(precision >= target_precision)
    if len(ok):
        return float(cut[ok[-1]]), True
    best = np.flatnonzero(precision == precision.max())[-1]
    return float(cut[best]), False


def calibrate(scores: np.ndarray, labels: np.ndarray, *, target_precision: float = 0.9,
              threshold: float | None = None) -> Calibration:
    """Fit score -> P(match) on labelled scores (isotonic), pick T for ``target_precision`` (or evaluate
    the given ``threshold``) and estimate precision and recall at T from the labels."""
    if not 0 < target_precision <= 1:
        raise QueryError(f"target precision must be in (0, 1], got {target_precision}")
    s, y = _check(scores, labels)
    lows, k, n = pav(s, y)
    values = np.maximum.accumulate((k + 1) / (n + 2))
    notes: list[str] = []
    if threshold is None:
        t, reached = pick_threshold(s, y, target_precision)
        if not reached:
            notes.append(f"no threshold reaches precision {target_precision:.2f} on these labels: T is the one "
                         f"of the best labelled precision")
    else:
        t = float(threshold)
    precision, recall = at_threshold(s, y, t)
    if len(s) < 20:
        notes.append(f"only {len(s)} labels: the intervals are wide")
    notes.append("precision and recall are over the labelled items; labels from the top of a ranking "
                 "over-represent high scores, so recall over the collection is likely lower")
    return Calibration(threshold=t, calibrated=True, method=METHOD,
                       target_precision=target_precision if threshold is None else None,
                       precision=precision, recall=recall, n_positive=int(y.sum()), n_negative=int((~y).sum()),
                       knots=lows, values=values, notes=tuple(notes))


def uncalibrated(threshold: float) -> Calibration:
    """A threshold with no labels behind it, said plainly."""
    return Calibration(threshold=float(threshold), calibrated=False,
                       notes=(f"T = {threshold:g} is uncalibrated: no labels were given, so neither its precision "
                              f"nor the chance that an absent video was missed is known (give --labels)",))


def missed_chance(calibration: Calibration, presence: pd.DataFrame, track_best: pd.DataFrame) -> np.ndarray:
    """Per row of ``presence``: for an absent video, 1 - prod(1 - P(match | s)) over its tracks' best
    scores (``track_best``: site, video_id, track_id, score); 0 for an absent video with no track; NaN
    for present videos and when uncalibrated."""
    out = np.full(len(presence), np.nan)
    if not calibration.calibrated:
        return out
    p = track_best.assign(miss=np.log1p(-np.clip(calibration.probability(track_best["score"].to_numpy()), 0, 1 - 1e-12)))
    per_video = p.groupby(["site", "video_id"])["miss"].sum()
    keys = list(zip(presence["site"].astype(str), presence["video_id"].astype(str)))
    log_none = np.array([per_video.get(key, 0.0) for key in keys], dtype=np.float64)
    absent = ~presence["present"].to_numpy(dtype=bool)
    out[absent] = 1.0 - np.exp(log_none[absent])
    return out


def parse_labels(values) -> np.ndarray:
    """Label cells (1/0, true/false, like/dislike, match/non-match, ...) -> bool; InputError naming a bad one."""
    out = []
    for i, v in enumerate(values):
        text = str(v).strip().lower()
        if text.endswith(".0"):
            text = text[:-2]
        if text in POSITIVE:
            out.append(True)
        elif text in NEGATIVE:
            out.append(False)
        else:
            raise InputError(f"label {v!r} (row {i + 2}) is not a match/non-match value (use 1/0, like/dislike, "
                             f"true/false)")
    return np.array(out, dtype=bool)


def read_labels(path: str | Path) -> pd.DataFrame:
    """A labels CSV: a ``label`` column and either ``score`` (ready scores) or ``site``, ``video_id``,
    ``frame_index`` [``track_id``] (items of the index, scored for the query), or ``id`` as
    SITE/VIDEO_ID/FRAME_INDEX[/TRACK_ID]. Returns the table with ``label`` as bool."""
    path = Path(path)
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable labels CSV ({exc})") from exc
    if "label" not in table.columns:
        raise InputError(f"{path}: the labels CSV needs a 'label' column (found: {', '.join(table.columns)})")
    if table.empty:
        raise InputError(f"{path}: the labels CSV has no rows")
    if "id" in table.columns and "site" not in table.columns:
        parts = table["id"].str.split("/")
        if (parts.str.len() < 3).any() or (parts.str.len() > 4).any():
            bad = table["id"][(parts.str.len() < 3) | (parts.str.len() > 4)].iloc[0]
            raise InputError(f"{path}: id {bad!r} is not SITE/VIDEO_ID/FRAME_INDEX[/TRACK_ID]")
        table = table.assign(site=parts.str[0], video_id=parts.str[1], frame_index=parts.str[2],
                             track_id=parts.str[3].fillna(""))
    if "score" not in table.columns and not {"site", "video_id", "frame_index"} <= set(table.columns):
        raise InputError(f"{path}: the labels CSV needs 'score', or 'site', 'video_id', 'frame_index' "
                         f"[, 'track_id'], or 'id' columns besides 'label'")
    table = table.assign(label=parse_labels(table["label"]))
    if "score" in table.columns:
        table["score"] = pd.to_numeric(table["score"], errors="coerce")
        if table["score"].isna().any():
            raise InputError(f"{path}: score {table.loc[table['score'].isna()].index[0] + 2} is not a number")
    return table


def label_scores(labels: pd.DataFrame, frames: pd.DataFrame, objects: pd.DataFrame,
                 object_scores: np.ndarray) -> np.ndarray:
    """The query's score of every labelled item: a ready ``score`` column as is; else the labelled track's
    object score in that frame, or with no track the frame's best non-background object score (what the
    survey thresholds). QueryError when items are not in this index (labels from another index)."""
    if "score" in labels.columns:
        return labels["score"].to_numpy(np.float64)
    f = frames.assign(key=frames["site"].astype(str) + "/" + frames["video_id"].astype(str) + "/"
                      + frames["frame_index"].astype(np.int64).astype(str))
    gid_of = dict(zip(f["key"], f["gid"].to_numpy(np.int64)))
    try:
        frame_index = labels["frame_index"].astype(np.int64).astype(str)
    except ValueError:
        raise InputError("a labelled frame_index is not a whole number") from None
    keys = labels["site"].astype(str) + "/" + labels["video_id"].astype(str) + "/" + frame_index
    unknown = [k for k in keys if k not in gid_of]
    if unknown:
        raise QueryError(f"labels from another index? {len(unknown)} of {len(keys)} labelled frames are not in "
                         f"this index (first: {unknown[0]})")
    gids = np.array([gid_of[k] for k in keys], dtype=np.int64)
    s = np.asarray(object_scores, dtype=np.float64)
    fg = ~objects["is_background"].to_numpy(dtype=bool)
    obj = pd.DataFrame({"frame_gid": objects["frame_gid"].to_numpy(np.int64),
                        "track_id": objects["track_id"].to_numpy(np.int64), "score": np.where(fg, s, -np.inf)})
    best = obj.groupby("frame_gid")["score"].max()
    by_track = obj.set_index(["frame_gid", "track_id"])["score"]
    tracks = labels["track_id"] if "track_id" in labels.columns else pd.Series([""] * len(labels))
    out = np.empty(len(labels))
    for i, (gid, track) in enumerate(zip(gids, tracks.astype(str))):
        if track.strip() not in ("", "-1"):
            try:
                out[i] = float(by_track.loc[(gid, int(track))])
            except (KeyError, ValueError):
                raise QueryError(f"labels from another index? track {track} is not in labelled frame "
                                 f"{keys.iloc[i]}") from None
        else:
            out[i] = float(best.get(gid, -np.inf))
    return out

"""Segmentation metrics on label volumes (T, H, W): FG-ARI, mIoU with Hungarian matching, DAVIS region J
and boundary F for unsupervised multi-object (one matching per sequence), per-frame Jaccard for
single-object.

Conventions: ground truth 0 is background, 1..K objects; predictions are any non-negative ids, -1 for
"no object" (dropped pixels). All metrics are computed over the whole clip volume, so an object that
changes id between frames is penalised (tracks matter).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import distance_transform_edt
from scipy.optimize import linear_sum_assignment


def _check_pair(gt: np.ndarray, pred: np.ndarray) -> None:
    if gt.shape != pred.shape:
        raise ValueError(f"ground truth {gt.shape} and prediction {pred.shape} differ in shape")


def contingency(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Counts of every (a, b) id pair: (table (n_a, n_b), ids of a, ids of b)."""
    ua, ia = np.unique(a.ravel(), return_inverse=True)
    ub, ib = np.unique(b.ravel(), return_inverse=True)
    table = np.bincount(ia * len(ub) + ib, minlength=len(ua) * len(ub)).reshape(len(ua), len(ub))
    return table, ua, ub


def adjusted_rand_index(a: np.ndarray, b: np.ndarray) -> float:
    """ARI between two labelings of the same items (1: identical partitions, about 0: chance)."""
    a = np.asarray(a).ravel()
    b = np.asarray(b).ravel()
    if a.size != b.size:
        raise ValueError("adjusted_rand_index needs labelings of the same items")
    n = a.size
    if n < 2:
        return 1.0
    table, _, _ = contingency(a, b)
    comb = lambda x: (x.astype(np.float64) * (x - 1)) / 2.0  # noqa: E731
    sum_cells = comb(table).sum()
    sum_a = comb(table.sum(1)).sum()
    sum_b = comb(table.sum(0)).sum()
    expected = sum_a * sum_b / comb(np.array(n))
    max_index = (sum_a + sum_b) / 2.0
    if max_index == expected:      # both labelings trivial (one cluster each, or all singletons)
        return 1.0
    return float((sum_cells - expected) / (max_index - expected))


def fg_ari(gt: np.ndarray, pred: np.ndarray) -> float:
    """ARI restricted to ground-truth foreground pixels (gt > 0), over the whole volume. NaN when the ground
    truth has fewer than two objects: ARI is degenerate there (1 for any single predicted id, 0 otherwise)."""
    _check_pair(gt, pred)
    fg = gt > 0
    if len(np.unique(gt[fg])) < 2:
        return float("nan")
    return adjusted_rand_index(gt[fg], pred[fg])


def iou_matrix(gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IoU between every ground-truth object (gt > 0) and every predicted id (>= 0) over the volume:
    (matrix (n_gt, n_pred), gt ids, pred ids)."""
    _check_pair(gt, pred)
    table, ug, up = contingency(gt, pred)
    area_g = table.sum(1)
    area_p = table.sum(0)
    union = area_g[:, None] + area_p[None, :] - table
    iou = np.where(union > 0, table / np.maximum(union, 1), 0.0)
    keep_g = ug > 0
    keep_p = up >= 0
    return iou[keep_g][:, keep_p], ug[keep_g], up[keep_p]


def miou(gt: np.ndarray, pred: np.ndarray) -> float:
    """Mean IoU over ground-truth objects after a one-to-one Hungarian matching with predicted ids
    (an unmatched object counts 0); NaN without ground-truth objects."""
    iou, ug, _ = iou_matrix(gt, pred)
    if len(ug) == 0:
        return float("nan")
    if iou.shape[1] == 0:
        return 0.0
    rows, cols = linear_sum_assignment(-iou)
    matched = np.zeros(len(ug))
    matched[rows] = iou[rows, cols]
    return float(matched.mean())


def jaccard_frames(gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Per-frame Jaccard of two binary volumes (T, H, W); 1 where both are empty."""
    _check_pair(gt, pred)
    g = gt.astype(bool).reshape(gt.shape[0], -1)
    p = pred.astype(bool).reshape(pred.shape[0], -1)
    inter = (g & p).sum(1)
    union = (g | p).sum(1)
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """One-pixel boundary of a binary mask (H, W), as the DAVIS toolkit's seg2bmap: pixels that differ
    from their right, lower or lower-right neighbour (the image border is not a boundary)."""
    m = np.pad(mask.astype(bool), ((0, 1), (0, 1)), mode="edge")
    c = m[:-1, :-1]
    return (c != m[:-1, 1:]) | (c != m[1:, :-1]) | (c != m[1:, 1:])


def _dilate(b: np.ndarray, radius: float) -> np.ndarray:
    if not b.any():
        return b
    return distance_transform_edt(~b) <= radius


def boundary_f_frames(gt: np.ndarray, pred: np.ndarray, bound_th: float = 0.008) -> np.ndarray:
    """DAVIS contour accuracy F per frame of two binary volumes: boundary precision/recall with a
    tolerance of ``bound_th`` of the image diagonal (as the DAVIS toolkit); 1 where both are empty."""
    _check_pair(gt, pred)
    radius = bound_th * np.hypot(*gt.shape[1:]) if bound_th < 1 else bound_th
    out = np.empty(gt.shape[0])
    for t in range(gt.shape[0]):   # per frame: the distance transform is a whole-image operation
        bg, bp = boundary_map(gt[t]), boundary_map(pred[t])
        ng, np_ = bg.sum(), bp.sum()
        if ng == 0 and np_ == 0:
            out[t] = 1.0
            continue
        if ng == 0 or np_ == 0:
            out[t] = 0.0
            continue
        precision = (bp & _dilate(bg, radius)).sum() / np_
        recall = (bg & _dilate(bp, radius)).sum() / ng
        out[t] = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    return out


@dataclass(frozen=True)
class DavisScore:
    j: float                        # mean region similarity over ground-truth objects
    f: float                        # mean contour accuracy over ground-truth objects
    per_object: dict[int, tuple[float, float]]   # gt id -> (J, F) of its matched prediction
    matching: dict[int, int | None]              # gt id -> predicted id (None: unmatched, scores 0)

    @property
    def jf(self) -> float:
        return (self.j + self.f) / 2


def davis_unsupervised(gt: np.ndarray, pred: np.ndarray, *, ignore: tuple[int, ...] = (),
                       bound_th: float = 0.008) -> DavisScore:
    """DAVIS unsupervised multi-object J and F: every predicted object (ids >= 0 not in ``ignore``, e.g.
    the background cluster) against every ground-truth object, J and F averaged over all frames; one
    Hungarian matching per sequence on (J + F) / 2, as the DAVIS-2017 toolkit; unmatched objects score 0."""
    _check_pair(gt, pred)
    gids = [int(g) for g in np.unique(gt) if g > 0]
    pids = [int(p) for p in np.unique(pred) if p >= 0 and int(p) not in ignore]
    if not gids:
        raise ValueError("davis_unsupervised needs ground truth with at least one object")
    j = np.zeros((len(gids), len(pids)))
    f = np.zeros((len(gids), len(pids)))
    for a, g in enumerate(gids):
        gm = gt == g
        for b, p in enumerate(pids):
            pm = pred == p
            j[a, b] = jaccard_frames(gm, pm).mean()
            f[a, b] = boundary_f_frames(gm, pm, bound_th).mean()
    matching: dict[int, int | None] = {g: None for g in gids}
    per_object = {g: (0.0, 0.0) for g in gids}
    if pids:
        rows, cols = linear_sum_assignment(-(j + f) / 2)
        for r, c in zip(rows, cols):
            matching[gids[r]] = pids[c]
            per_object[gids[r]] = (float(j[r, c]), float(f[r, c]))
    js = [v[0] for v in per_object.values()]
    fs = [v[1] for v in per_object.values()]
    return DavisScore(float(np.mean(js)), float(np.mean(fs)), per_object, matching)


@dataclass(frozen=True)
class TrackCounts:
    """How well tracks count objects in one clip (see ``track_counts``)."""
    gt_maxn: int                 # most ground-truth objects visible in one frame
    pred_maxn: int               # most non-background tracks visible in one frame
    maxn_error: int              # pred_maxn - gt_maxn
    object_maxn_error: float     # mean over objects of (most tracks of that object in one frame - 1)
    count_mae: float             # mean over frames of |tracks visible - objects visible|
    fragmentation: float         # mean over matched objects of the distinct tracks matched to it
    id_switches: int             # changes of an object's matched track between its matched frames
    spurious_tracks: int         # tracks never matched to an object
    objects: int
    tracks: int
    missed_objects: int          # objects never matched


def track_counts(gt: np.ndarray, pred: np.ndarray, *, iou_min: float = 0.5, min_area: float = 0.005) -> TrackCounts:
    """Count accuracy of tracks ``pred`` (T, H, W) (track ids >= 0, -1 none; background tracks should be -1)
    against ground truth ``gt`` (0 background, 1..K). Objects count in a frame where they cover at least
    ``min_area`` of it (the segmentation drops smaller objects too). Per frame, objects and tracks are
    matched one-to-one (Hungarian) on IoU >= ``iou_min``; fragmentation and identity switches follow the
    matched track of each object over time (CLEAR-MOT style). ``object_maxn_error`` is what a perfect
    query for one object would over-count: every track is given to the object it overlaps most over the
    clip, and per object the most of its tracks visible at once, minus one, is averaged."""
    _check_pair(gt, pred)
    t, h, w = gt.shape
    min_px = max(1, int(np.ceil(min_area * h * w)))
    gt_count = np.zeros(t, np.int64)
    pred_count = np.zeros(t, np.int64)
    matched_tracks: dict[int, list[int]] = {}
    ever_matched: set[int] = set()
    for i in range(t):
        table, ug, up = contingency(gt[i], pred[i])
        area_g, area_p = table.sum(1), table.sum(0)
        keep_g = (ug > 0) & (area_g >= min_px)
        keep_p = up >= 0
        gt_count[i], pred_count[i] = int(keep_g.sum()), int(keep_p.sum())
        if not keep_g.any() or not keep_p.any():
            continue
        inter = table[keep_g][:, keep_p]
        union = area_g[keep_g][:, None] + area_p[keep_p][None, :] - inter
        iou = inter / np.maximum(union, 1)
        rows, cols = linear_sum_assignment(-iou)
        for r, c in zip(rows, cols):
            if iou[r, c] >= iou_min:
                matched_tracks.setdefault(int(ug[keep_g][r]), []).append(int(up[keep_p][c]))
                ever_matched.add(int(up[keep_p][c]))
    objects = [int(g) for g in np.unique(gt) if g > 0 and (gt == g).reshape(t, -1).sum(1).max() >= min_px]
    tracks = [int(p) for p in np.unique(pred) if p >= 0]
    switches = sum(int(np.sum(np.diff(seq) != 0)) for seq in matched_tracks.values())
    frag = [len(set(seq)) for seq in matched_tracks.values()]
    # per object MaxN of the tracks assigned to it (by most overlap over the clip)
    over, ug, up = contingency(gt, pred)
    owner = {}
    for j, p in enumerate(up):
        if p < 0:
            continue
        col = over[:, j].copy()
        col[ug <= 0] = 0
        if col.max() > 0:
            owner[int(p)] = int(ug[int(np.argmax(col))])
    per_object = []
    for g in objects:
        mine = [p for p, o in owner.items() if o == g]
        if not mine:
            per_object.append(0.0)          # never tracked: counted as missed, not as an over-count
            continue
        visible = np.isin(pred.reshape(t, -1), mine)
        n_at_once = max(len(np.unique(pred[i][visible[i].reshape(h, w)])) for i in range(t))
        per_object.append(float(n_at_once - 1))
    return TrackCounts(gt_maxn=int(gt_count.max(initial=0)), pred_maxn=int(pred_count.max(initial=0)),
                       maxn_error=int(pred_count.max(initial=0) - gt_count.max(initial=0)),
                       object_maxn_error=float(np.mean(per_object)) if per_object else float("nan"),
                       count_mae=float(np.abs(pred_count - gt_count).mean()) if t else float("nan"),
                       fragmentation=float(np.mean(frag)) if frag else float("nan"), id_switches=int(switches),
                       spurious_tracks=len(set(tracks) - ever_matched), objects=len(objects), tracks=len(tracks),
                       missed_objects=len([g for g in objects if g not in matched_tracks]))

"""Video -> object tracks: attention rows -> hierarchical clustering -> masks, boxes, areas.

The streaming entry point ``segment_stream`` is what the indexing pipeline uses: frames go in one at a
time, are segmented in chunks of bounded memory, tracks are linked across chunks, and each frame comes
back with its objects.

One chunk (``segment_frames``): frames resized (short side about ``short_side``, sides multiples of the
patch) -> per-head q, k of the last block -> attention rows of every patch over the key frames' patches,
computed one window of ``window`` frames at a time -> windowed Algorithm 1 -> one label per patch and
frame, ids shared by the whole chunk (tracks, also across occlusion). Tiny clusters are dropped (label
-1). Background: the cluster with the most patches on the frame border, and every cluster with at least
``BACKGROUND_BORDER_SHARE`` of its border count (a background split by a light gradient stays background;
an object crossing the edge for a few frames does not).

Fragments (``merge_comoving``, on by default): a textured object often comes out as one big cluster and a
few small ones at its edges, each a track of its own, so counting tracks (MaxN) over-counts. Inside a
chunk, a small non-background cluster (at most a quarter of the other's area) that touches a larger one
in most frames they share, keeps a steady offset from it and moves is merged into it
(``comoving_groups``); objects that pass each other touch briefly and their offset changes, two animals
of a size swimming side by side are not fragments, still scenery does not move, so all stay apart
(``benchmarks/bench_tracks.py``: MaxN error before and after).

Across chunks, attention rows over different key frames are not comparable, so every track keeps a small
sample of its patches' queries (at most ``TRACK_SAMPLES``). When a chunk is done, each track's sample
attends over the new chunk's key patches; the mean of those rows is the track's centroid in the new
chunk's space, directly comparable (symmetric KL, as the clustering) with the new chunk's cluster
centroids. A one-to-one Hungarian matching accepts pairs closer than ``link_tau`` (None: ``tau``); the
unmatched clusters open new tracks. Matching against every earlier track lets an object that was absent
for a whole chunk get its old id back; memory stays bounded by tracks x samples.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from indexer.attention import attention_rows, flatten_keys, key_frame_indices
from indexer.backbone import QKExtractor
from indexer.clustering import sym_kl, windowed_cluster
from mvk_tools.video import Frame
from search.errors import InputError

TRACK_SAMPLES = 64    # queries kept per track to re-express it over a later chunk's key frames
BACKGROUND_BORDER_SHARE = 0.3   # background: clusters with at least this share of the top cluster's border patches


@dataclass(frozen=True)
class SegmentParams:
    tau: float = 1.0              # merge threshold on symmetric KL (1.6 merges the foreground into one)
    key_stride: int = 10          # r: every r-th sampled frame is a key frame
    window: int = 8               # frames per first-pass clustering window
    chunk: int = 64               # frames per chunk of bounded memory; tracks linked across chunks
    short_side: int = 224         # frames resized so the short side is about this, sides multiples of the patch
    min_area: float = 0.005       # objects smaller than this fraction of the frame are dropped
    level: int | None = None      # hierarchy level to output (None: the last, i.e. tau's result)
    window_max_clusters: int = 32  # first pass: a window stops merging once it has at most this many clusters
    link_tau: float | None = None  # symmetric-KL distance below which a cluster continues a track across chunks (None: tau)
    merge_comoving: bool = True   # one track for the fragments of an object that move together (comoving_groups)


@dataclass(frozen=True)
class ObjectMask:
    track_id: int                 # stable for one object across the whole video
    level: int
    mask: np.ndarray              # (H, W) bool at the source frame's resolution
    bbox: tuple[int, int, int, int]   # x0, y0, x1, y1 (exclusive) in source pixels
    area: float                   # fraction of the frame
    is_background: bool


@dataclass(frozen=True)
class SegmentedFrame:
    frame: Frame
    objects: tuple[ObjectMask, ...]


@dataclass
class ChunkSegmentation:
    """One chunk of frames segmented on the patch grid.

    ``labels`` (T, h, w) int64: cluster of every patch at ``level`` after nearest-centroid assignment,
    ids 0..K-1 in order of first appearance, -1 for dropped tiny clusters. ``levels``: every hierarchy
    level (T, h, w) by membership, fine -> coarse, ids as the clustering made them. ``background``: the
    background cluster ids. ``centroids`` (K, D): attention centroids over ``keys``; ``samples``: per-cluster queries.
    """

    labels: np.ndarray
    levels: list[np.ndarray]
    level: int
    grid: tuple[int, int]
    model_size: tuple[int, int]          # (H, W) the frames were resized to
    background: tuple[int, ...]
    centroids: torch.Tensor
    keys: torch.Tensor
    samples: list[torch.Tensor]
    window_clusters: int
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def n_clusters(self) -> int:
        return int(self.centroids.shape[0])


def model_size(height: int, width: int, patch: int, short_side: int) -> tuple[int, int]:
    """(H, W) for the model: short side about ``short_side``, both sides multiples of ``patch`` (at least one)."""
    if height < 1 or width < 1:
        raise InputError(f"frame of size {width}x{height} cannot be segmented")
    scale = short_side / min(height, width)
    return (max(patch, int(round(height * scale / patch)) * patch),
            max(patch, int(round(width * scale / patch)) * patch))


def resize_frames(images: np.ndarray, size: tuple[int, int], device: torch.device | str = "cpu") -> np.ndarray:
    """(T, H, W, 3) uint8 -> (T, size[0], size[1], 3) uint8, antialiased bilinear."""
    if images.shape[1:3] == tuple(size):
        return images
    x = torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    return x.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def _relabel_by_first_appearance(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Compact ids 0..K-1 ordered by first occurrence in ``labels`` (flat). Returns (new labels, old id of
    each new id)."""
    uniq, inverse = torch.unique(labels, return_inverse=True)
    first = torch.full((len(uniq),), labels.numel(), dtype=torch.long, device=labels.device)
    first.scatter_reduce_(0, inverse, torch.arange(labels.numel(), device=labels.device), reduce="amin")
    order = torch.argsort(first)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order), device=order.device)
    return rank[inverse], uniq[order]


def query_samples(q: torch.Tensor, labels: torch.Tensor, n_clusters: int, m: int = TRACK_SAMPLES
                  ) -> list[torch.Tensor]:
    """Per cluster, the queries (m_c, heads, d) of at most ``m`` of its patches, evenly spread in
    frame/row-major order. ``q`` (T, heads, n, d); ``labels`` (T*n,), negatives ignored."""
    t, heads, n, d = q.shape
    flat = q.permute(0, 2, 1, 3).reshape(t * n, heads, d)
    order = torch.argsort(labels, stable=True)
    counts = torch.bincount(labels[labels >= 0], minlength=n_clusters).tolist()
    start = int((labels < 0).sum())
    out = []
    for count in counts:            # one slice per cluster: a handful per chunk
        pick = torch.linspace(0, count - 1, min(m, count), device=q.device).round().long()
        out.append(flat[order[start + pick]].clone())
        start += count
    return out


def comoving_groups(labels: np.ndarray, background: Sequence[int], *, min_shared: int = 3, min_touch: float = 0.8,
                    max_offset_spread: float = 1.0, spread_radius: float = 1.25, min_path: float = 2.0,
                    max_size_ratio: float = 0.25) -> np.ndarray:
    """Fragments of one object in a chunk: cluster pairs that move together. ``labels`` (T, h, w) cluster
    ids (-1 none) on the patch grid. Two non-background clusters are one object when they are both
    visible in at least ``min_shared`` frames, touch (4-neighbour patches) in at least ``min_touch`` of
    those frames, the offset between their centres stays put (spread, the RMS distance from its mean, at
    most ``spread_radius`` times the radius of the larger one, sqrt(mean area / pi), or ``max_offset_spread``
    patches if more: a small fragment at the edge of an object jitters about as far as the object is wide,
    another object passing by moves through and beyond it), the smaller covers at most ``max_size_ratio``
    of the larger's area (a fragment, not a second animal swimming alongside) and both travel (path of each centre over those frames at least
    ``min_path`` patches: two parts of a still scene are not merged). Objects that cross each other touch
    briefly and their offset changes, so they stay apart. Returns the group of every cluster (union-find
    roots, the smallest id of each group), shape (K,)."""
    t, h, w = labels.shape
    k = int(labels.max()) + 1 if labels.size else 0
    parent = np.arange(k)
    if k < 2:
        return parent
    flat = labels.reshape(t, -1)
    counts = np.stack([np.bincount(f[f >= 0], minlength=k) for f in flat])          # (T, K)
    ys, xs = np.divmod(np.arange(h * w), w)
    cy = np.stack([np.bincount(f[f >= 0], weights=ys[f >= 0], minlength=k) for f in flat]) / np.maximum(counts, 1)
    cx = np.stack([np.bincount(f[f >= 0], weights=xs[f >= 0], minlength=k) for f in flat]) / np.maximum(counts, 1)
    touch = np.zeros((t, k, k), bool)
    for a, b in ((labels[:, :, 1:], labels[:, :, :-1]), (labels[:, 1:, :], labels[:, :-1, :])):
        pair = (a != b) & (a >= 0) & (b >= 0)
        fr = np.broadcast_to(np.arange(t)[:, None, None], a.shape)[pair]
        touch[fr, a[pair], b[pair]] = True
    touch |= touch.transpose(0, 2, 1)
    fg = [c for c in range(k) if c not in set(background)]

    def root(c: int) -> int:
        while parent[c] != c:
            c = parent[c]
        return c

    for i, a in enumerate(fg):
        for b in fg[i + 1:]:
            shared = np.flatnonzero((counts[:, a] > 0) & (counts[:, b] > 0))
            if len(shared) < min_shared or touch[shared, a, b].mean() < min_touch:
                continue
            off = np.stack([cy[shared, a] - cy[shared, b], cx[shared, a] - cx[shared, b]], 1)
            spread = float(np.sqrt(((off - off.mean(0)) ** 2).sum(1).mean()))
            path = [float(np.hypot(np.diff(cy[shared, c]), np.diff(cx[shared, c])).sum()) for c in (a, b)]
            small, large = sorted((counts[shared, a].mean(), counts[shared, b].mean()))
            if small > max_size_ratio * large:
                continue
            radius = float(np.sqrt(large / np.pi))
            if spread <= max(max_offset_spread, spread_radius * radius) and min(path) >= min_path:
                ra, rb = root(a), root(b)
                parent[max(ra, rb)] = min(ra, rb)
    return np.array([root(c) for c in range(k)])


def _merge_groups(labels: torch.Tensor, centroids: torch.Tensor, background: tuple[int, ...], groups: np.ndarray
                  ) -> tuple[torch.Tensor, torch.Tensor, tuple[int, ...]]:
    """Labels, centroids (the mean of each group's attention centroids) and background of the clusters
    after merging each group of ``groups`` (cluster -> group root) into one, ids again by first appearance."""
    if np.array_equal(groups, np.arange(len(groups))):
        return labels, centroids, background
    g = torch.as_tensor(groups, device=labels.device)
    kept = labels >= 0
    merged = torch.full_like(labels, -1)
    new, old_of_new = _relabel_by_first_appearance(g[labels[kept]])
    merged[kept] = new
    member = torch.as_tensor(groups, device=centroids.device)[None, :] == old_of_new.to(centroids.device)[:, None]
    merged_centroids = (member.to(centroids.dtype) @ centroids) / member.sum(1, keepdim=True).to(centroids.dtype)
    back = tuple(i for i, root in enumerate(old_of_new.tolist()) if root in set(background))
    return merged, merged_centroids, back


def border_mask(h: int, w: int, device: torch.device | str = "cpu") -> torch.Tensor:
    m = torch.zeros(h, w, dtype=torch.bool, device=device)
    m[0], m[-1], m[:, 0], m[:, -1] = True, True, True, True
    return m


def segment_frames(images: np.ndarray, extractor: QKExtractor, params: SegmentParams = SegmentParams(),
                   ) -> ChunkSegmentation:
    """Segment one in-memory clip (T, H, W, 3) uint8 as a single chunk; every hierarchy level is kept."""
    import time

    if images.ndim != 4 or images.shape[-1] != 3 or images.shape[0] == 0 or images.dtype != np.uint8:
        raise InputError(f"expected a non-empty (T, H, W, 3) frame array, got shape {images.shape}")
    if params.tau <= 0 or params.key_stride < 1 or params.window < 1:
        raise InputError(f"bad segmentation parameters: tau={params.tau}, key_stride={params.key_stride}, "
                         f"window={params.window}")
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    device = getattr(extractor, "device", "cpu")
    size = model_size(images.shape[1], images.shape[2], extractor.patch_size, params.short_side)
    resized = resize_frames(images, size, device)
    q, k, (h, w) = extractor.qk(resized)
    if not (torch.isfinite(q).all() and torch.isfinite(k).all()):
        raise InputError(f"the backbone {extractor.identity().get('backbone')} produced NaN or infinite "
                         "queries/keys for these frames")
    t1 = time.perf_counter()
    times["backbone"] = t1 - t0
    n_frames = q.shape[0]
    keys = flatten_keys(k, key_frame_indices(n_frames, params.key_stride))
    bounds = [(s, min(s + params.window, n_frames)) for s in range(0, n_frames, params.window)]
    attn_time = [0.0]

    def rows_of(wi: int) -> torch.Tensor:
        ta = time.perf_counter()
        rows = attention_rows(q[bounds[wi][0]:bounds[wi][1]], keys)
        attn_time[0] += time.perf_counter() - ta
        return rows

    result = windowed_cluster(rows_of, len(bounds), params.tau, window_max_clusters=params.window_max_clusters,
                              level=params.level)
    t2 = time.perf_counter()
    times["attention"] = attn_time[0]
    times["clustering"] = t2 - t1 - attn_time[0]

    labels = result.labels
    n = h * w
    # drop clusters that never cover min_area of any frame
    per_frame = labels.view(n_frames, n)
    n_ids = int(labels.max()) + 1
    counts = torch.zeros(n_frames, n_ids, device=labels.device)
    counts.scatter_add_(1, per_frame, torch.ones_like(per_frame, dtype=counts.dtype))
    tiny = (counts.max(0).values / n) < params.min_area
    labels = torch.where(tiny[labels], torch.full_like(labels, -1), labels)
    kept = labels >= 0
    compact = torch.full_like(labels, -1)
    n_clusters = 0
    source_ids = torch.zeros(0, dtype=torch.long, device=labels.device)
    if kept.any():
        new, source_ids = _relabel_by_first_appearance(labels[kept])
        compact[kept] = new
        n_clusters = int(new.max()) + 1
    grid_labels = compact.view(n_frames, h, w)
    background: tuple[int, ...] = ()
    if n_clusters:
        on_border = grid_labels[:, border_mask(h, w, grid_labels.device)]
        on_border = on_border[on_border >= 0]
        if on_border.numel():
            border_counts = torch.bincount(on_border, minlength=n_clusters)
            flagged = border_counts >= BACKGROUND_BORDER_SHARE * border_counts.max()
            background = tuple(int(i) for i in torch.nonzero(flagged).flatten())
    centroids = result.centroids[result.assigned_level][source_ids]
    if params.merge_comoving and n_clusters > 1:
        grid_labels, centroids, background = _merge_groups(
            grid_labels, centroids, background, comoving_groups(grid_labels.cpu().numpy(), background))
        compact = grid_labels.reshape(-1)
        n_clusters = int(centroids.shape[0])
    samples = query_samples(q, compact, n_clusters)
    times["postprocess"] = time.perf_counter() - t2
    return ChunkSegmentation(
        labels=grid_labels.cpu().numpy(),
        levels=[lv.view(n_frames, h, w).cpu().numpy() for lv in result.levels],
        level=result.assigned_level, grid=(h, w), model_size=size, background=background,
        centroids=centroids, keys=keys, samples=samples, window_clusters=result.window_clusters, timings=times)


def upsample_labels(labels: np.ndarray, size: tuple[int, int], device: torch.device | str = "cpu",
                    batch: int = 4) -> np.ndarray:
    """Patch-grid labels (T, h, w) (-1 = none) -> (T, H, W) int32 at ``size`` (H, W): each id's indicator
    map is upsampled bilinearly and every pixel takes the strongest, so boundaries are smooth, not blocky."""
    t = labels.shape[0]
    lab = torch.from_numpy(labels).to(device).long()
    n_ids = int(lab.max()) + 2 if lab.numel() else 1    # channel 0: "none" (-1)
    out = np.empty((t, *size), dtype=np.int32)
    for s in range(0, t, batch):
        one_hot = F.one_hot(lab[s:s + batch] + 1, n_ids).permute(0, 3, 1, 2).float()
        up = F.interpolate(one_hot, size=size, mode="bilinear", align_corners=False)
        out[s:s + batch] = (up.argmax(1) - 1).to(torch.int32).cpu().numpy()
    return out


def objects_in_frame(label_map: np.ndarray, track_of: Sequence[int], *, level: int, background: Sequence[int],
                     min_area: float) -> tuple[ObjectMask, ...]:
    """ObjectMasks of one frame's label map (H, W) (cluster ids, -1 none); ``track_of[c]`` is cluster c's track."""
    hh, ww = label_map.shape
    ids, counts = np.unique(label_map[label_map >= 0], return_counts=True)
    out = []
    for c, count in zip(ids.tolist(), counts.tolist()):   # a handful of objects per frame
        area = count / (hh * ww)
        if area < min_area:
            continue
        mask = label_map == c
        rows = np.flatnonzero(mask.any(1))
        cols = np.flatnonzero(mask.any(0))
        bbox = (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)
        out.append(ObjectMask(track_id=int(track_of[c]), level=level, mask=mask, bbox=bbox, area=float(area),
                              is_background=c in background))
    return tuple(sorted(out, key=lambda o: o.track_id))


class TrackLinker:
    """Gives the clusters of successive chunks video-wide track ids (see the module docstring)."""

    def __init__(self, tau: float = 1.0, samples: int = TRACK_SAMPLES) -> None:
        self.tau = tau
        self.max_samples = samples
        self.samples: list[torch.Tensor] = []     # per track: (m, heads, d) queries

    @property
    def n_tracks(self) -> int:
        return len(self.samples)

    def track_centroids(self, keys: torch.Tensor) -> torch.Tensor:
        """Every track's mean attention row over ``keys`` (heads, D, d): (N_tracks, D)."""
        stacked = torch.cat(self.samples).to(keys.device)                  # (sum m, heads, d)
        rows = attention_rows(stacked.permute(1, 0, 2)[None], keys)       # (sum m, D)
        owner = torch.repeat_interleave(torch.arange(self.n_tracks, device=keys.device),
                                        torch.tensor([len(s) for s in self.samples], device=keys.device))
        sums = torch.zeros(self.n_tracks, rows.shape[1], device=keys.device).index_add_(0, owner, rows)
        return sums / torch.bincount(owner, minlength=self.n_tracks)[:, None]

    def link(self, seg: ChunkSegmentation) -> list[int]:
        """Track id of every cluster of the next chunk; unmatched clusters open new tracks. A matched
        track's query sample becomes an even mix of its old sample and the cluster's."""
        from scipy.optimize import linear_sum_assignment

        k = seg.n_clusters
        track_of = [-1] * k
        if self.samples and k:
            dist = sym_kl(seg.centroids, self.track_centroids(seg.keys)).cpu().numpy()
            # gate: every pair beyond tau costs the same, so the matching maximises the accepted pairs
            gated = np.where(dist < self.tau, dist, self.tau * (1 + dist.shape[0] + dist.shape[1]))
            rows, cols = linear_sum_assignment(gated)
            for r, c in zip(rows.tolist(), cols.tolist()):
                if dist[r, c] < self.tau:
                    track_of[r] = c
        for r in range(k):
            new = seg.samples[r].detach()
            if track_of[r] >= 0:
                both = torch.cat([self.samples[track_of[r]].to(new.device), new])
                pick = torch.linspace(0, len(both) - 1, min(self.max_samples, len(both)),
                                      device=new.device).round().long()
                self.samples[track_of[r]] = both[pick]
            else:
                track_of[r] = self.n_tracks
                self.samples.append(new)
        return track_of


def _chunks_by_size(frames: Iterable[Frame], chunk: int) -> Iterator[list[Frame]]:
    """Consecutive frames in lists of at most ``chunk``, a new list whenever the frame size changes."""
    buf: list[Frame] = []
    for frame in frames:
        image = frame.image
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise InputError(f"frame {frame.index}: expected an (H, W, 3) uint8 image, got "
                             f"{image.dtype} {image.shape}")
        if buf and (len(buf) >= chunk or buf[0].image.shape != image.shape):
            yield buf
            buf = []
        buf.append(frame)
    if buf:
        yield buf


def segment_stream(frames: Iterable[Frame], extractor: QKExtractor,
                   params: SegmentParams = SegmentParams()) -> Iterator[SegmentedFrame]:
    """Segment a stream of sampled frames of one video; yields every input frame, in order, with its objects."""
    if params.chunk < 1:
        raise InputError(f"chunk must be at least one frame, got {params.chunk}")
    linker = TrackLinker(params.tau if params.link_tau is None else params.link_tau)
    device = getattr(extractor, "device", "cpu")
    for batch in _chunks_by_size(frames, params.chunk):
        images = np.stack([f.image for f in batch])
        seg = segment_frames(images, extractor, params)
        track_of = linker.link(seg)
        size = images.shape[1:3]
        for s in range(0, len(batch), 8):     # masks at source resolution a few frames at a time
            maps = upsample_labels(seg.labels[s:s + 8], size, device)
            for frame, label_map in zip(batch[s:s + 8], maps):
                yield SegmentedFrame(frame, objects_in_frame(label_map, track_of, level=seg.level,
                                                             background=seg.background, min_area=params.min_area))


def label_volume(segmented: Iterable[SegmentedFrame], *, include_background: bool = True) -> np.ndarray:
    """(T, H, W) int32 track ids painted from segmented frames (-1 where no object), for the metrics."""
    maps = []
    for sf in segmented:
        m = np.full(sf.frame.image.shape[:2], -1, dtype=np.int32)
        for obj in sf.objects:
            if include_background or not obj.is_background:
                m[obj.mask] = obj.track_id
        maps.append(m)
    if not maps:
        raise InputError("no frames were segmented")
    return np.stack(maps)

"""Known-item search (seed 003): where does each query's target land among all indexed frames?

Matching frames of a target: frames of the target's video (same site, same video id; numeric ids compare
as numbers, so ``0016`` == ``16``) whose ``frame_index`` equals the target frame, or whose ``time`` is within
``tolerance`` seconds of the target time. The indexed frames need not be MVK's selected frames, hence the
tolerance. A target given by frame index gets its time as ``frame / fps``, with the video's fps estimated
from its indexed rows (median of ``frame_index / time``) or ``default_fps`` (MVK: about 30) when the video
has no row with ``time > 0``.

Rank (1 is best) of a query for one fusion mode: s* = the best fused score over the matching frames;
``rank = 1 + #{non-matching frames with score > s*} + #{non-matching frames with score == s*}``.
Ties are decided against the target (pessimistic rank): a constant scorer ranks every target last, never
first. ``ties`` in the per-query table counts the tied non-matching frames, so the optimistic rank is
``rank - ties``.

Targets with no matching frame (site, video or time not in the index) get status ``not_in_index`` and no
rank; the summary counts them apart (``n_not_in_index``) and never as misses.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from mvk_tools.querysets import Issue
from search.errors import InputError

HIT_KS = (1, 10, 100, 1000)
DEFAULT_TOLERANCE = 0.5   # seconds: with ~1 indexed frame per second, about one frame per target
DEFAULT_FPS = 30.0        # MVK videos are about 30 fps
TIE_RULE = ("pessimistic: rank = 1 + number of non-matching frames scoring higher than or equal to the "
            "best matching frame (ties count against the target)")

Scorer = Callable[[np.ndarray, str], np.ndarray]   # (query vector, fusion) -> score of every frame
# (query vectors (B, d), fusions) -> {fusion: (B, N) scores}: many queries and fusions per pass over the vectors
BatchScorer = Callable[[np.ndarray, Sequence[str]], dict[str, np.ndarray]]


def video_key(site: str, video: str) -> tuple[str, str]:
    """Normalised (site, video) key: case-insensitive site, numeric video ids without leading zeros."""
    v = str(video).strip()
    return str(site).strip().casefold(), str(int(v)) if v.isdigit() else v.casefold()


@dataclass(frozen=True)
class _Video:
    gids: np.ndarray
    frame_index: np.ndarray
    time: np.ndarray
    fps: float | None


def _videos(frames: pd.DataFrame) -> dict[tuple[str, str], _Video]:
    gid = frames["gid"].to_numpy() if "gid" in frames else np.arange(len(frames))
    out: dict[tuple[str, str], _Video] = {}
    sites = frames["site"].astype(str).str.strip().str.casefold()
    vids = frames["video_id"].astype(str).str.strip()
    vids = vids.where(~vids.str.isdigit(), vids.str.lstrip("0").replace("", "0")).str.casefold()
    groups = pd.DataFrame({"s": sites, "v": vids}).groupby(["s", "v"], sort=False).indices
    fi_all = frames["frame_index"].to_numpy(dtype=np.int64)
    t_all = frames["time"].to_numpy(dtype=np.float64)
    for key, rows in groups.items():
        fi, t = fi_all[rows], t_all[rows]
        pos = t > 0
        fps = float(np.median(fi[pos] / t[pos])) if pos.any() else None
        out[key] = _Video(gid[rows], fi, t, fps if fps and np.isfinite(fps) and fps > 0 else None)
    return out


@dataclass(frozen=True)
class Target:
    gids: np.ndarray      # matching frames (global rows), empty when not in the index
    time: float | None    # target time used, seconds
    reason: str           # why there is no matching frame ("" when found)


def resolve_targets(queries: pd.DataFrame, frames: pd.DataFrame, *, tolerance: float = DEFAULT_TOLERANCE,
                    default_fps: float = DEFAULT_FPS, skipped_sites: dict[str, str] | None = None) -> list[Target]:
    """Matching frames of each query's target (see the module docstring); ``skipped_sites`` (site -> why)
    names shards that could not be read, so their targets say so instead of "not in the index"."""
    if tolerance < 0:
        raise InputError(f"tolerance must be >= 0 seconds, got {tolerance}")
    videos = _videos(frames)
    sites = {video_key(s, "")[0] for s in frames["site"].unique()}
    skipped = {video_key(s, "")[0]: why for s, why in (skipped_sites or {}).items()}
    out = []
    for site, video, frame, ttime in zip(queries["target_site"], queries["target_video"],
                                         queries["target_frame"], queries["target_time"]):
        key = video_key(site, video)
        frame = None if pd.isna(frame) else int(frame)
        ttime = None if pd.isna(ttime) else float(ttime)
        v = videos.get(key)
        if v is None:
            why = (f"site {site} was not read from the index ({skipped[key[0]]})" if key[0] in skipped
                   else f"site {site} is not in the index" if key[0] not in sites
                   else f"video {site}/{video} is not in the index")
            out.append(Target(np.empty(0, np.int64), ttime, why))
            continue
        if ttime is None and frame is not None:
            ttime = frame / (v.fps or default_fps)
        match = np.abs(v.time - ttime) <= tolerance + 1e-9 if ttime is not None else np.zeros(len(v.gids), bool)
        if frame is not None:
            match |= v.frame_index == frame
        if match.any():
            out.append(Target(v.gids[match], ttime, ""))
        else:
            out.append(Target(np.empty(0, np.int64), ttime,
                              f"no indexed frame of {site}/{video} within {tolerance:g} s of {ttime:.2f} s "
                              f"(indexed: {v.time.min():.2f}-{v.time.max():.2f} s)"))
    return out


def rank_of_target(scores: np.ndarray, match: np.ndarray) -> tuple[int, int, int, float]:
    """(rank, ties, best matching row, its score) for one query; ``match`` holds the matching rows.
    Pessimistic ties, see TIE_RULE. Within the matching rows, the lowest row wins a tie."""
    scores = np.asarray(scores)
    sub = scores[match]
    best_pos = int(np.argmax(sub))            # first maximum: lowest row among equals when match is sorted
    best_row, best = int(match[best_pos]), sub[best_pos]
    mask = np.ones(scores.shape[0], bool)
    mask[match] = False
    higher = int(np.count_nonzero(scores[mask] > best))
    ties = int(np.count_nonzero(scores[mask] == best))
    return 1 + higher + ties, ties, best_row, float(best)


PER_QUERY_COLUMNS = (
    "query_id", "query_type", "fusion", "status", "rank", "ties", "score", "best_gid", "best_site", "best_video",
    "best_frame_index", "best_time", "n_matching", "n_frames", "reason", "text", "target_site", "target_video",
    "target_frame", "target_time", "source_file", "source_line",
)


def rank_queries(queries: pd.DataFrame, vectors: np.ndarray, frames: pd.DataFrame, scorer: Scorer | None, *,
                 fusions: Sequence[str] = ("frame",), tolerance: float = DEFAULT_TOLERANCE,
                 default_fps: float = DEFAULT_FPS, skipped_sites: dict[str, str] | None = None,
                 progress: Callable[[Iterable], Iterable] | None = None,
                 batch_scorer: BatchScorer | None = None, batch_size: int = 64) -> pd.DataFrame:
    """One row per (query, fusion) with PER_QUERY_COLUMNS. ``vectors[i]`` is the query vector of row i of
    ``queries``; ``scorer(vector, fusion)`` returns the score of every row of ``frames`` (gid order).
    ``batch_scorer`` (e.g. over ``search.query.score_frames_batch``, as ``run_benchmark`` does), when given,
    scores ``batch_size`` queries at a time instead."""
    if scorer is None and batch_scorer is None:
        raise ValueError("a scorer or a batch_scorer is needed")
    if len(vectors) != len(queries):
        raise ValueError(f"{len(vectors)} vectors for {len(queries)} queries")
    targets = resolve_targets(queries, frames, tolerance=tolerance, default_fps=default_fps,
                              skipped_sites=skipped_sites)
    n = len(frames)
    site_a, video_a = frames["site"].to_numpy(), frames["video_id"].to_numpy()
    fi_a, t_a = frames["frame_index"].to_numpy(), frames["time"].to_numpy()
    rows = []
    items = range(len(queries))
    batch: dict[str, np.ndarray] = {}
    batch_start = 0
    for i in (progress(items) if progress else items):
        if batch_scorer is not None and (not batch or i >= batch_start + batch_size):
            batch_start = i
            batch = batch_scorer(np.asarray(vectors[i:i + batch_size], np.float32), list(fusions))
        q = queries.iloc[i]
        tgt = targets[i]
        base = {"query_id": q["query_id"], "query_type": q["query_type"], "n_matching": len(tgt.gids),
                "n_frames": n, "reason": tgt.reason, "text": q["text"], "target_site": q["target_site"],
                "target_video": q["target_video"], "target_frame": q["target_frame"],
                "target_time": tgt.time if tgt.time is not None else q["target_time"],
                "source_file": q.get("source_file"), "source_line": q.get("source_line")}
        match = np.sort(tgt.gids)
        for fusion in fusions:
            if not len(match):
                rows.append({**base, "fusion": fusion, "status": "not_in_index"})
                continue
            scores = batch[fusion][i - batch_start] if batch_scorer is not None else scorer(vectors[i], fusion)
            if scores.shape != (n,):
                raise ValueError(f"scorer returned {scores.shape} scores for {n} frames")
            rank, ties, best, score = rank_of_target(scores, match)
            rows.append({**base, "fusion": fusion, "status": "ranked", "rank": rank, "ties": ties, "score": score,
                         "best_gid": best, "best_site": site_a[best], "best_video": video_a[best],
                         "best_frame_index": int(fi_a[best]), "best_time": float(t_a[best])})
    df = pd.DataFrame.from_records(rows, columns=list(PER_QUERY_COLUMNS))
    for col in ("rank", "ties", "best_gid", "best_frame_index", "target_frame", "source_line"):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype("Int64")
    return df


def metrics(ranks: np.ndarray, ks: Sequence[int] = HIT_KS) -> dict[str, float]:
    """hit@k (share of ranks <= k), MRR, median and mean rank of the given ranks (all ranked queries)."""
    r = np.asarray(ranks, dtype=np.float64)
    if r.size == 0:
        return {**{f"hit@{k}": float("nan") for k in ks}, "mrr": float("nan"),
                "median_rank": float("nan"), "mean_rank": float("nan")}
    return {**{f"hit@{k}": float(np.mean(r <= k)) for k in ks}, "mrr": float(np.mean(1.0 / r)),
            "median_rank": float(np.median(r)), "mean_rank": float(np.mean(r))}


def summarize(per_query: pd.DataFrame, ks: Sequence[int] = HIT_KS) -> pd.DataFrame:
    """One row per (query_type, fusion): n (ranked), n_not_in_index, hit@k, mrr, median_rank, mean_rank."""
    rows = []
    for (qtype, fusion), g in per_query.groupby(["query_type", "fusion"], sort=True):
        ranked = g[g["status"] == "ranked"]
        rows.append({"query_type": qtype, "fusion": fusion, "n": len(ranked),
                     "n_not_in_index": int((g["status"] == "not_in_index").sum()),
                     **metrics(ranked["rank"].to_numpy(dtype=np.float64), ks)})
    cols = ["query_type", "fusion", "n", "n_not_in_index", *[f"hit@{k}" for k in ks], "mrr", "median_rank",
            "mean_rank"]
    return pd.DataFrame.from_records(rows, columns=cols)


def format_table(summary: pd.DataFrame) -> str:
    """The summary as a fixed-width text table (hit@k and MRR in percent)."""
    if summary.empty:
        return "(no ranked queries)"
    t = summary.copy()
    for col in t.columns:
        if col.startswith("hit@") or col == "mrr":
            t[col] = t[col].map(lambda v: "-" if pd.isna(v) else f"{100 * v:.1f}%")
    for col in ("median_rank", "mean_rank"):
        t[col] = t[col].map(lambda v: "-" if pd.isna(v) else f"{v:.1f}")
    return t.to_string(index=False)


def check_file_vectors(queries: pd.DataFrame, dim: int) -> tuple[np.ndarray, list[Issue]]:
    """Which queries have a usable precomputed vector of the index's dimension (``--use-file-vectors``):
    a boolean mask, and an issue naming file and line for each one left out. Raises InputError when no
    query has one, saying why (e.g. every file vector has another dimension: another model made them)."""
    keep = np.zeros(len(queries), bool)
    issues: list[Issue] = []
    dims: set[int] = set()
    for i, (v, f, line) in enumerate(zip(queries["vector"], queries["source_file"], queries["source_line"])):
        line = None if pd.isna(line) else int(line)
        if not isinstance(v, np.ndarray):
            issues.append(Issue(str(f), line, f"query {queries['query_id'].iat[i]!r}: no precomputed vector in "
                                              "the file (--use-file-vectors)"))
        elif v.shape[0] != dim:
            dims.add(int(v.shape[0]))
            issues.append(Issue(str(f), line, f"query {queries['query_id'].iat[i]!r}: the file's vector has "
                                              f"{v.shape[0]} dimensions, the index's encoder {dim}"))
        else:
            keep[i] = True
    if len(queries) and not keep.any():
        why = (f"the files' vectors have {sorted(dims)} dimensions but the index's encoder has {dim}: they come "
               "from another model; run without --use-file-vectors to encode the texts" if dims
               else "the query sets hold no precomputed vectors; run without --use-file-vectors")
        raise InputError(f"--use-file-vectors: no usable vector: {why}")
    return keep, issues


def query_vectors(queries: pd.DataFrame, *, dim: int, encode: Callable[[list[str]], np.ndarray] | None,
                  use_file_vectors: bool) -> np.ndarray:
    """(n, dim) float32 L2-normalised query vectors: the file vectors (``queries.vector``, checked first
    with ``check_file_vectors``) when asked for, else ``encode(texts)`` (batched by the encoder)."""
    if use_file_vectors:
        vecs = np.stack(list(queries["vector"])).astype(np.float32) if len(queries) else np.zeros((0, dim), np.float32)
    else:
        if encode is None:
            raise ValueError("an encoder is needed unless file vectors are used")
        vecs = np.asarray(encode(queries["text"].tolist()), dtype=np.float32).reshape(len(queries), -1)
    if vecs.shape[1] != dim:
        raise InputError(f"query vectors have {vecs.shape[1]} dimensions, the index {dim}")
    norms = np.linalg.norm(vecs, axis=1, keepdims=True)
    return vecs / np.where(norms > 0, norms, 1.0)


def encoder_for_index(identity: dict, *, checkpoint: str | None = None, random_weights: bool = False,
                      device: str = "cpu"):
    """The text encoder an index was built with (``Index.encoder``), under the weights rule: an index made
    with random weights needs ``random_weights=True`` said explicitly, and the reverse; a checkpoint-built
    index needs the ``checkpoint`` file. Raises ModelMismatchError / MissingWeightsError with what to do."""
    from search.encoder import describe, load_encoder, same_space
    from search.errors import ModelMismatchError

    if not identity.get("model"):
        raise ModelMismatchError("the index records no encoder: it cannot be searched with text; use "
                                 "--use-file-vectors with vectors of its dimension")
    built_random = bool(identity.get("random_weights"))
    if built_random != bool(random_weights):
        raise ModelMismatchError(
            f"the index was built with {describe(identity)}; "
            + ("pass --random-weights to query it (its ranks mean nothing)" if built_random
               else "--random-weights cannot query it: drop the flag"))
    if identity.get("checkpoint") and not random_weights and checkpoint is None:
        raise ModelMismatchError(f"the index was built with {describe(identity)}: pass --checkpoint FILE")
    enc = load_encoder(identity["model"], identity.get("pretrained"), checkpoint=checkpoint,
                       random_weights=random_weights, device=device)
    if not same_space(enc.identity(), identity):
        raise ModelMismatchError(f"the index was built with {describe(identity)}, the loaded encoder is "
                                 f"{describe(enc.identity())}")
    return enc


# (items, description, total) -> the same items, showing progress as they are consumed
Progress = Callable[[Iterable, str, int], Iterable]


@dataclass
class KisResult:
    """What ``run_benchmark`` ran and found; the CLI writes it to files, the app shows it."""
    per_query: pd.DataFrame                  # PER_QUERY_COLUMNS, one row per (query, fusion)
    summary: pd.DataFrame                    # ``summarize(per_query)``
    n_queries: int                           # usable queries ranked (or found not in the index)
    query_sets: dict                         # file -> detected format
    vectors: str                             # "encoded texts" or "precomputed vectors from the query files"
    random_weights: bool                     # the ranks come from a random-weight encoder: meaningless
    not_in_index: list[dict] = field(default_factory=list)   # {"query_id", "reason"}, one per query
    file_errors: list[str] = field(default_factory=list)     # whole files that could not be used
    issues: list[Issue] = field(default_factory=list)        # rows left out, with file and line
    seconds: float = 0.0

    @property
    def warnings(self) -> list[str]:
        """Unusable files, then rows left out, as lines for the user."""
        return [*self.file_errors, *(str(i) for i in self.issues)]


def index_dim(index) -> int:
    """The dimension of an index's vectors (its encoder's, else its first shard's FAISS index)."""
    dim = index.encoder.get("dim")
    if dim:
        return int(dim)
    return int(next(iter(index.shards.values())).frame_index.d) if index.shards else 0


def _pass_through(items: Iterable, desc: str, total: int) -> Iterable:
    return items


def _ignore(message: str, what: str) -> None:
    return None


def run_benchmark(index, querysets: Sequence[str | Path], *, encoder=None, use_file_vectors: bool = False,
                  fusions: Sequence[str] = ("frame",), weight: float = 0.5, tolerance: float = DEFAULT_TOLERANCE,
                  default_fps: float = DEFAULT_FPS, encode_batch: int = 256, rank_batch: int = 64,
                  progress: Progress | None = None, warn: Callable[[str, str], None] | None = None) -> KisResult:
    """The whole benchmark on an open ``search.store.Index``: read the query sets, take the files' vectors
    (``use_file_vectors``) or encode the texts with ``encoder`` (an object with ``encode_text``, or a
    function returning one, called only once the query sets are read), rank every target among all frames
    for every fusion with ``search.query.score_frames_batch`` (``rank_batch`` queries per pass over the
    vectors) and summarise. Unusable files and rows are passed to ``warn(message, "file" | "row")`` as soon
    as found and kept in the result; the rest goes on. InputError when no query is left to rank or the
    index has no frame."""
    from mvk_tools.querysets import read_querysets
    from search.query import FUSIONS, score_frames_batch

    started = time.perf_counter()
    progress = progress or _pass_through
    fusions = list(dict.fromkeys(fusions))
    bad = [f for f in fusions if f not in FUSIONS]
    if bad or not fusions:
        raise InputError(f"unknown fusion mode(s) {bad}; choose from {', '.join(FUSIONS)}")
    if not 0.0 <= weight <= 1.0:
        raise InputError(f"the fusion weight must lie in [0, 1], got {weight}")
    if default_fps <= 0:
        raise InputError(f"the default fps must be positive, got {default_fps}")
    if not len(index.frames):
        raise InputError(f"index {index.root} holds no readable frame")
    dim = index_dim(index)

    qs, file_errors = read_querysets([str(p) for p in querysets], with_vectors=use_file_vectors)
    warn = warn or _ignore
    for err in file_errors:
        warn(err, "file")
    issues = list(qs.issues)
    queries = qs.queries
    if use_file_vectors and len(queries):
        keep, vec_issues = check_file_vectors(queries, dim)
        issues += vec_issues
        queries = queries[keep].reset_index(drop=True)
    for issue in issues:
        warn(str(issue), "row")
    if not len(queries):
        raise InputError("no usable query in " + ", ".join(str(p) for p in querysets)
                         + (f": {'; '.join(file_errors)}" if file_errors else ""))

    encode = None
    if not use_file_vectors:
        if encoder is None:
            raise ValueError("an encoder is needed unless the files' vectors are used")
        enc = encoder if hasattr(encoder, "encode_text") else encoder()
        batch = max(1, int(encode_batch))

        def encode(texts: list[str]) -> np.ndarray:
            starts = range(0, len(texts), batch)
            return np.concatenate([enc.encode_text(texts[i:i + batch], batch_size=batch)
                                   for i in progress(starts, "encoding queries", len(starts))])
    vectors = query_vectors(queries, dim=dim, encode=encode, use_file_vectors=use_file_vectors)

    per_query = rank_queries(
        queries, vectors, index.frames, None, fusions=fusions, tolerance=tolerance, default_fps=default_fps,
        skipped_sites=index.errors, progress=lambda items: progress(items, "ranking", len(queries)),
        batch_scorer=lambda qv, fus: score_frames_batch(index, qv, fusions=fus, weight=weight),
        batch_size=rank_batch)
    missing = per_query[per_query["status"] == "not_in_index"].drop_duplicates("query_id")
    return KisResult(
        per_query=per_query, summary=summarize(per_query), n_queries=int(len(queries)), query_sets=qs.formats,
        vectors="precomputed vectors from the query files" if use_file_vectors else "encoded texts",
        random_weights=bool(index.encoder.get("random_weights")) and not use_file_vectors,
        not_in_index=[{"query_id": q, "reason": r} for q, r in zip(missing["query_id"], missing["reason"])],
        file_errors=list(file_errors), issues=issues, seconds=time.perf_counter() - started)


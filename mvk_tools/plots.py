"""Rank plots of the KIS benchmark: data frames ready for interactive charts (the app) and PNG files.

All functions take the per-query table of ``mvk_tools.kis.rank_queries`` (one row per query and fusion
mode; only rows with status ``ranked`` are plotted). PNGs are drawn with matplotlib's object API on an
Agg canvas: no pyplot global state, no display needed.
"""
from __future__ import annotations

from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd

_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")
_STYLES = ("-", "--", ":", "-.")


def _ranked(per_query: pd.DataFrame) -> pd.DataFrame:
    r = per_query[per_query["status"] == "ranked"].copy()
    r["rank"] = r["rank"].astype("int64")
    return r


def rank_grid(n_frames: int, points: int = 60) -> np.ndarray:
    """Integer ranks 1..n_frames spaced evenly on a log scale (the x axis of the rank curves)."""
    n_frames = max(int(n_frames), 1)
    return np.unique(np.round(np.logspace(0, np.log10(n_frames), points)).astype(np.int64))


def rank_curve_data(per_query: pd.DataFrame, *, points: int = 60) -> pd.DataFrame:
    """Share of targets found within rank k: columns query_type, fusion, k, share, n (ranked targets).
    k runs over a log-spaced grid of 1..n_frames plus every observed rank, so the steps are exact."""
    ranked = _ranked(per_query)
    n_frames = int(per_query["n_frames"].max()) if len(per_query) else 1
    grid = rank_grid(n_frames, points)
    parts = []
    for (qtype, fusion), g in ranked.groupby(["query_type", "fusion"], sort=True):
        ranks = np.sort(g["rank"].to_numpy())
        ks = np.union1d(grid, ranks)      # exact steps at the ranks themselves
        share = np.searchsorted(ranks, ks, side="right") / len(ranks)
        parts.append(pd.DataFrame({"query_type": qtype, "fusion": fusion, "k": ks, "share": share, "n": len(ranks)}))
    if not parts:
        return pd.DataFrame(columns=["query_type", "fusion", "k", "share", "n"])
    return pd.concat(parts, ignore_index=True)


def rank_box_data(per_query: pd.DataFrame) -> pd.DataFrame:
    """The ranks behind the box plots: columns query_type, fusion, query_id, rank."""
    return _ranked(per_query)[["query_type", "fusion", "query_id", "rank"]].reset_index(drop=True)


def _target_key(df: pd.DataFrame) -> pd.Series:
    """One key per target: its selected frame's number, else its frame index, else its time."""
    frame = df["target_frame"].astype("string").fillna("")
    time = df["target_time"].map(lambda t: "" if pd.isna(t) else f"{float(t):.3f}")
    key = frame.where(frame != "", time)
    if "target_selected" in df:
        selected = df["target_selected"].astype("string").fillna("")
        key = ("s" + selected).where(selected != "", key)
    return df["target_site"].astype(str) + "/" + df["target_video"].astype(str) + "#" + key


def rank_scatter_data(per_query: pd.DataFrame, x_type: str, y_type: str) -> pd.DataFrame:
    """Rank of ``x_type`` vs ``y_type`` queries on the same targets (the MVK paper's figure): columns target,
    fusion, rank_x, rank_y; a target with several queries of one type takes their median rank."""
    ranked = _ranked(per_query)
    ranked["target"] = _target_key(ranked)
    per = ranked.groupby(["query_type", "fusion", "target"], sort=True)["rank"].median().reset_index()
    x = per[per["query_type"] == x_type].drop(columns="query_type").rename(columns={"rank": "rank_x"})
    y = per[per["query_type"] == y_type].drop(columns="query_type").rename(columns={"rank": "rank_y"})
    return x.merge(y, on=["fusion", "target"])[["target", "fusion", "rank_x", "rank_y"]]


def query_type_pairs(per_query: pd.DataFrame) -> list[tuple[str, str]]:
    """Pairs of query types that share at least one ranked target, in sorted order."""
    ranked = _ranked(per_query)
    ranked["target"] = _target_key(ranked)
    targets = {t: set(g) for t, g in ranked.groupby("query_type")["target"]}
    return [(a, b) for a, b in combinations(sorted(targets), 2) if targets[a] & targets[b]]


def _figure(width: float = 7.0, height: float = 4.5):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def log_ticks(low: float, high: float) -> list[int]:
    """Ranks to label on a log axis from ``low`` to ``high``: 1, 2, 5, 10, 20, 50, 100, … (read as plain
    numbers, not powers of ten), at least 1 and at most the first step past ``high``."""
    ticks, decade = [], 1
    while True:
        for step in (1, 2, 5):
            value = step * decade
            if value >= max(low, 1):
                ticks.append(value)
            if value >= high:
                return ticks or [1]
        decade *= 10


def _plain_log_axis(axis, low: float, high: float) -> None:
    """Label a log-scaled matplotlib axis with ``log_ticks`` as plain numbers (1,000 rather than 10³)."""
    from matplotlib.ticker import FixedLocator, NullFormatter

    ticks = log_ticks(low, high)
    axis.set_major_locator(FixedLocator(ticks))
    axis.set_major_formatter(lambda value, _pos: f"{value:,.0f}")
    axis.set_minor_formatter(NullFormatter())


def _colours(values) -> dict[str, str]:
    return {v: _COLOURS[i % len(_COLOURS)] for i, v in enumerate(sorted(set(values)))}


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path


def plot_rank_curves(per_query: pd.DataFrame, path: str | Path, *, title: str = "") -> Path:
    """PNG: share of targets found within rank k (log k); colour = fusion mode, line style = query type."""
    data = rank_curve_data(per_query)
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    colour = _colours(data["fusion"])
    style = {t: _STYLES[i % len(_STYLES)] for i, t in enumerate(sorted(set(data["query_type"])))}
    for (qtype, fusion), g in data.groupby(["query_type", "fusion"], sort=True):
        ax.step(g["k"], g["share"], where="post", color=colour[fusion], linestyle=style[qtype],
                label=f"{qtype} / {fusion} (n={g['n'].iat[0]})")
    ax.set_xscale("log")
    ax.set_xlim(1, max(int(per_query["n_frames"].max()) if len(per_query) else 1, 2))
    _plain_log_axis(ax.xaxis, *ax.get_xlim())
    ax.set_ylim(0, 1)
    ax.set_xlabel("rank k (log scale)")
    ax.set_ylabel("share of targets within rank k")
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(title or "Known-item search: targets found within rank k")
    if len(data):
        ax.legend(fontsize=8, loc="upper left")
    else:
        ax.text(0.5, 0.5, "no ranked queries", ha="center", transform=ax.transAxes)
    return _save(fig, path)


def plot_rank_boxes(per_query: pd.DataFrame, path: str | Path, *, title: str = "") -> Path:
    """PNG: box plot of rank (log scale) per query type, one box per fusion mode, coloured by fusion."""
    data = rank_box_data(per_query)
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    types, fusions = sorted(set(data["query_type"])), sorted(set(data["fusion"]))
    colour = _colours(fusions)
    width = 0.8 / max(len(fusions), 1)
    for j, fusion in enumerate(fusions):
        sub = data[data["fusion"] == fusion]
        ranks = [sub.loc[sub["query_type"] == t, "rank"].to_numpy() for t in types]
        pos = [i + (j - (len(fusions) - 1) / 2) * width for i, r in enumerate(ranks) if len(r)]
        ranks = [r for r in ranks if len(r)]
        if not ranks:
            continue
        bp = ax.boxplot(ranks, positions=pos, widths=width * 0.9, patch_artist=True, manage_ticks=False)
        for box in bp["boxes"]:
            box.set_facecolor(colour[fusion])
            box.set_alpha(0.6)
        ax.plot([], [], color=colour[fusion], linewidth=8, alpha=0.6, label=fusion)
    ax.set_xticks(range(len(types)), types)
    ax.set_yscale("log")
    ax.set_ylabel("rank of the target (log scale, 1 = best)")
    top = int(data["rank"].max()) if len(data) else 10
    ax.set_ylim(0.8, top * 1.25)
    _plain_log_axis(ax.yaxis, 1, top)
    ax.grid(True, axis="y", which="both", alpha=0.3)
    ax.set_title(title or "Known-item search: rank per query type")
    if fusions:
        ax.legend(fontsize=8, title="fusion")
    else:
        ax.text(0.5, 0.5, "no ranked queries", ha="center", transform=ax.transAxes)
    return _save(fig, path)


def plot_rank_scatter(per_query: pd.DataFrame, x_type: str, y_type: str, path: str | Path, *,
                      title: str = "") -> Path:
    """PNG: rank of ``x_type`` vs ``y_type`` queries on the same targets, log-log, one colour per fusion mode;
    points below the diagonal are targets that ``y_type`` found better."""
    data = rank_scatter_data(per_query, x_type, y_type)
    n_frames = max(int(per_query["n_frames"].max()) if len(per_query) else 1, 2)
    fig = _figure(5.5, 5.5)
    ax = fig.add_subplot(1, 1, 1)
    colour = _colours(data["fusion"])
    for fusion, g in data.groupby("fusion", sort=True):
        ax.scatter(g["rank_x"], g["rank_y"], s=18, color=colour[fusion], alpha=0.7, label=f"{fusion} (n={len(g)})")
    ax.plot([1, n_frames], [1, n_frames], color="grey", linewidth=0.8, linestyle="--")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(0.8, n_frames * 1.25)
    ax.set_ylim(0.8, n_frames * 1.25)
    _plain_log_axis(ax.xaxis, 1, n_frames)
    _plain_log_axis(ax.yaxis, 1, n_frames)
    ax.set_xlabel(f"rank with {x_type} query")
    ax.set_ylabel(f"rank with {y_type} query")
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(title or f"Known-item search: {y_type} vs {x_type} on the same targets")
    if len(data):
        ax.legend(fontsize=8, title="fusion")
    return _save(fig, path)


def write_all(per_query: pd.DataFrame, out: str | Path, *, title_suffix: str = "") -> list[Path]:
    """Every plot of a run into ``out``: rank_curves.png, rank_boxes.png and one scatter_<x>_vs_<y>.png per
    pair of query types sharing targets. Returns the paths written."""
    out = Path(out)
    suffix = f" {title_suffix}" if title_suffix else ""
    paths = [plot_rank_curves(per_query, out / "rank_curves.png",
                              title=f"Targets found within rank k{suffix}"),
             plot_rank_boxes(per_query, out / "rank_boxes.png", title=f"Rank per query type{suffix}")]
    for x, y in query_type_pairs(per_query):
        paths.append(plot_rank_scatter(per_query, x, y, out / f"scatter_{_safe(x)}_vs_{_safe(y)}.png",
                                       title=f"{y} vs {x}{suffix}"))
    return paths


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in str(name))

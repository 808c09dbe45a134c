"""PNG plots of a survey (``search.survey`` tables): a presence timeline per video, a bar chart per site
and a map of the sites. Drawn with matplotlib's object API on an Agg canvas (no display, thread-safe)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from mvk_tools.plots import _figure, _save

MAX_TIMELINE_VIDEOS = 40    # lanes of the timeline; the rest are named in the title


def plot_presence_timeline(presence: pd.DataFrame, hits: pd.DataFrame, path: str | Path, *,
                           title: str = "") -> Path:
    """One lane per video (videos with presence first, at most MAX_TIMELINE_VIDEOS): a grey bar over the
    surveyed time, and a dot per matching track and frame (score >= T), tracks offset inside the lane."""
    videos = presence.sort_values(["present", "maxn", "site", "video_id"], ascending=[False, False, True, True])
    shown = videos.head(MAX_TIMELINE_VIDEOS).reset_index(drop=True)
    fig = _figure(8.0, max(2.5, 0.35 * len(shown) + 1.5))
    ax = fig.add_subplot(1, 1, 1)
    lane = {(s, v): i for i, (s, v) in enumerate(zip(shown["site"].astype(str), shown["video_id"].astype(str)))}
    for i, row in shown.iterrows():
        ax.plot([0, float(row["duration"])], [i, i], color="#dddddd", linewidth=6, solid_capstyle="butt", zorder=1)
    if len(hits):
        h = hits.assign(key=list(zip(hits["site"].astype(str), hits["video_id"].astype(str))))
        h = h[h["key"].isin(lane)]
        for key, group in h.groupby("key", sort=False):
            tracks = sorted(group["track_id"].unique())
            offset = {t: (k - (len(tracks) - 1) / 2) * min(0.6 / max(len(tracks), 1), 0.15) for k, t in enumerate(tracks)}
            y = lane[key] + group["track_id"].map(offset).to_numpy()
            ax.scatter(group["time"], y, c=group["score"], cmap="viridis", s=14, zorder=2, vmin=hits["score"].min(),
                       vmax=max(hits["score"].max(), hits["score"].min() + 1e-6))
        best = shown[shown["present"]]
        ax.scatter(best["maxn_time"], best.index, marker="|", s=200, color="#d62728", zorder=3, label="MaxN frame")
        ax.legend(loc="upper right", fontsize=8)
    ax.set_yticks(range(len(shown)))
    ax.set_yticklabels([f"{s}/{v} (MaxN {int(n)})" for s, v, n in zip(shown["site"], shown["video_id"], shown["maxn"])],
                       fontsize=7)
    ax.set_ylim(len(shown) - 0.5, -0.5)
    ax.set_xlabel("time in video (s)")
    more = len(videos) - len(shown)
    ax.set_title((title or "presence timeline") + (f" ({more} more videos not shown)" if more > 0 else ""), fontsize=10)
    return _save(fig, path)


def plot_site_bars(sites: pd.DataFrame, path: str | Path, *, title: str = "") -> Path:
    """Per site: videos surveyed, videos with presence, and total MaxN (sum of the videos' MaxN)."""
    fig = _figure(max(5.0, 0.6 * len(sites) + 2), 4.5)
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(len(sites))
    w = 0.28
    ax.bar(x - w, sites["videos"], w, label="videos surveyed", color="#bbbbbb")
    ax.bar(x, sites["videos_present"], w, label="videos with presence", color="#1f77b4")
    ax.bar(x + w, sites["total_maxn"], w, label="total MaxN", color="#ff7f0e")
    ax.set_xticks(x)
    ax.set_xticklabels(sites["site"].astype(str), rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("count")
    ax.legend(fontsize=8)
    ax.set_title(title or "per site", fontsize=10)
    return _save(fig, path)


def plot_site_map(sites: pd.DataFrame, path: str | Path, *, title: str = "") -> Path:
    """Sites at their longitude/latitude (no basemap: offline): circle area by total MaxN, filled where the
    thing was seen, hollow where every video was absent; sites without coordinates are counted in the title."""
    fig = _figure(8.0, 4.5)
    ax = fig.add_subplot(1, 1, 1)
    known = sites.dropna(subset=["latitude", "longitude"])
    present = known["videos_present"].to_numpy() > 0
    size = 30 + 40 * np.sqrt(known["total_maxn"].to_numpy(dtype=float))
    ax.scatter(known["longitude"][present], known["latitude"][present], s=size[present], color="#1f77b4",
               alpha=0.7, label="present")
    ax.scatter(known["longitude"][~present], known["latitude"][~present], s=size[~present], facecolors="none",
               edgecolors="#555555", label="absent")
    for _, row in known.iterrows():
        ax.annotate(str(row["site"]), (row["longitude"], row["latitude"]), fontsize=7, xytext=(4, 4),
                    textcoords="offset points")
    if len(known):
        pad = 5.0
        ax.set_xlim(known["longitude"].min() - pad, known["longitude"].max() + pad)
        ax.set_ylim(max(-90, known["latitude"].min() - pad), min(90, known["latitude"].max() + pad))
    ax.set_xlabel("longitude")
    ax.set_ylabel("latitude")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    missing = len(sites) - len(known)
    ax.set_title((title or "sites") + (f" ({missing} site(s) without coordinates not drawn)" if missing else ""),
                 fontsize=10)
    return _save(fig, path)


def write_survey_plots(presence: pd.DataFrame, hits: pd.DataFrame, sites: pd.DataFrame, out: str | Path, *,
                       title: str = "") -> list[Path]:
    """timeline.png, sites.png and map.png in ``out``."""
    out = Path(out)
    return [plot_presence_timeline(presence, hits, out / "timeline.png", title=title),
            plot_site_bars(sites, out / "sites.png", title=title),
            plot_site_map(sites, out / "map.png", title=title)]

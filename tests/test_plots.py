"""Rank plots: the data frames behind them hold the right numbers, the PNGs are written and non-empty."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mvk_tools import plots


def per_query_table() -> pd.DataFrame:
    """Three targets, novice and clipcap queries, two fusion modes, one target not in the index."""
    rows = []
    ranks = {("novice", "frame"): [1, 50, 900], ("novice", "object"): [2, 10, 400],
             ("clipcap", "frame"): [5, 5, 3000], ("clipcap", "object"): [1, 7, 2000]}
    for (qtype, fusion), rs in ranks.items():
        for i, r in enumerate(rs):
            rows.append({"query_id": f"{qtype}{i}", "query_type": qtype, "fusion": fusion, "status": "ranked",
                         "rank": r, "n_frames": 5000, "target_site": "Oahu_Jul2022", "target_video": f"000{i}",
                         "target_frame": 30 * i, "target_time": np.nan})
        rows.append({"query_id": f"{qtype}x", "query_type": qtype, "fusion": fusion, "status": "not_in_index",
                     "rank": pd.NA, "n_frames": 5000, "target_site": "Bali", "target_video": "1",
                     "target_frame": 1, "target_time": np.nan})
    df = pd.DataFrame(rows)
    df["rank"] = df["rank"].astype("Int64")
    df["target_frame"] = df["target_frame"].astype("Int64")
    return df


def test_rank_curve_data_is_the_share_within_k() -> None:
    data = plots.rank_curve_data(per_query_table())
    g = data[(data["query_type"] == "novice") & (data["fusion"] == "frame")].set_index("k")["share"]
    assert g.loc[1] == pytest.approx(1 / 3)
    assert g.index.min() == 1 and g.index.max() == 5000
    assert g.loc[g.index[g.index >= 900][0]] == pytest.approx(1.0)
    assert g.is_monotonic_increasing
    assert set(data["n"]) == {3}                        # the not-in-index target is not a miss


def test_scatter_pairs_queries_on_the_same_targets() -> None:
    pq = per_query_table()
    assert plots.query_type_pairs(pq) == [("clipcap", "novice")]
    s = plots.rank_scatter_data(pq, "clipcap", "novice")
    assert len(s) == 6
    row = s[(s["fusion"] == "object") & (s["target"] == "Oahu_Jul2022/0002#60")].iloc[0]
    assert (row["rank_x"], row["rank_y"]) == (2000, 400)
    box = plots.rank_box_data(pq)
    assert len(box) == 12 and box["rank"].max() == 3000


def _check_png(path: Path, width: int, height: int) -> None:
    assert path.exists() and path.stat().st_size > 5000
    with Image.open(path) as im:
        assert im.size == (width, height)
        arr = np.asarray(im.convert("L"))
    assert arr.std() > 5      # something was drawn, not a blank canvas


def test_pngs_are_written_and_not_empty(tmp_path: Path) -> None:
    paths = plots.write_all(per_query_table(), tmp_path / "run", title_suffix="(random weights)")
    names = sorted(p.name for p in paths)
    assert names == ["rank_boxes.png", "rank_curves.png", "scatter_clipcap_vs_novice.png"]
    _check_png(tmp_path / "run" / "rank_curves.png", 700, 450)
    _check_png(tmp_path / "run" / "rank_boxes.png", 700, 450)
    _check_png(tmp_path / "run" / "scatter_clipcap_vs_novice.png", 550, 550)


def test_plots_of_a_run_without_ranked_queries(tmp_path: Path) -> None:
    pq = per_query_table()
    pq = pq[pq["status"] == "not_in_index"]
    paths = plots.write_all(pq, tmp_path)
    assert [p.name for p in paths] == ["rank_curves.png", "rank_boxes.png"]
    assert all(p.stat().st_size > 1000 for p in paths)


def test_log_axes_are_labelled_1_2_5_10_not_powers_of_ten(tmp_path: Path, monkeypatch) -> None:
    assert plots.log_ticks(1, 5000) == [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000]
    assert plots.log_ticks(1, 30) == [1, 2, 5, 10, 20, 50] and plots.log_ticks(1, 1) == [1]
    figures = []
    save = plots._save
    monkeypatch.setattr(plots, "_save", lambda fig, path: (figures.append(fig), save(fig, path))[1])
    plots.write_all(per_query_table(), tmp_path)
    for fig in figures:
        ax = fig.axes[0]
        fig.canvas.draw()
        for axis in (ax.xaxis, ax.yaxis):
            if axis.get_scale() != "log":
                continue
            labels = [t.get_text() for t in axis.get_ticklabels(which="both") if t.get_text()]
            assert labels and all(text.replace(",", "").isdigit() for text in labels), labels
            assert "1" in labels and "10" in labels

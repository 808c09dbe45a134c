"""Survey evidence from constructed rows and exact scores: presence, first/last time, MaxN (a max over
frames, not a sum), per-site tables, Darwin Core records, CSV escaping, and calibration."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from search import calibration as C
from search import survey as S
from search.errors import InputError, QueryError


def _rows_from_masks(masks: np.ndarray, *, site: str = "Oahu_Jul2022", video_id: str = "0001", gid0: int = 0,
                     every: int = 1) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Frame rows (one per sampled frame, 1 s apart) and object rows (a background row plus one row per
    ground-truth object visible, its track = its ground-truth id) of a synthetic clip."""
    frames, objects = [], []
    for i, t in enumerate(range(0, masks.shape[0], every)):
        gid = gid0 + i
        frames.append({"gid": gid, "site": site, "video_id": video_id, "video_path": f"videos/{site}/{video_id}.mp4",
                       "frame_index": t, "time": float(i), "place": site.split("_")[0], "date": "2022-07"})
        objects.append({"frame_gid": gid, "track_id": 0, "is_background": True})
        for k in np.unique(masks[t]):
            if k > 0:
                objects.append({"frame_gid": gid, "track_id": int(k), "is_background": False})
    return pd.DataFrame(frames), pd.DataFrame(objects)


def _exact_scores(objects: pd.DataFrame, wanted: set[int]) -> np.ndarray:
    """1 for the objects the query is about, 0 for others (exact scores)."""
    return np.where(objects["track_id"].isin(wanted) & ~objects["is_background"], 1.0, 0.0).astype(np.float32)


@pytest.fixture(scope="module")
def clip_masks() -> np.ndarray:
    from mvk_tools.synth import render_clip
    return render_clip(n_frames=48, size=(96, 64), n_objects=3, seed=3).masks


def test_maxn_is_ground_truth_count_and_a_max_over_frames(clip_masks) -> None:
    frames, objects = _rows_from_masks(clip_masks)
    wanted = {1, 2, 3}
    presence = S.video_presence(frames, objects, _exact_scores(objects, wanted), 0.5)
    visible = np.array([len(set(np.unique(m)) & wanted) for m in clip_masks])
    assert len(presence) == 1
    row = presence.iloc[0]
    assert row["maxn"] == visible.max()
    assert row["maxn_time"] == float(np.argmax(visible))           # the first frame reaching the max
    assert row["maxn"] < visible.sum()                              # a sum over frames would be far larger
    assert row["tracks"] == len(wanted & set(np.unique(clip_masks)))
    assert row["present"] and row["best_score"] == 1.0


def test_maxn_counts_only_matching_objects(clip_masks) -> None:
    frames, objects = _rows_from_masks(clip_masks)
    presence = S.video_presence(frames, objects, _exact_scores(objects, {2}), 0.5)
    assert presence.iloc[0]["maxn"] == 1 and presence.iloc[0]["tracks"] == 1


def test_presence_times_are_first_and_last_frames_above_threshold() -> None:
    frames = pd.DataFrame({"gid": np.arange(6), "site": "S_Jan2020", "video_id": "v", "time": np.arange(6) * 2.0,
                           "place": "S", "date": "2020-01", "video_path": "videos/S_Jan2020/v.mp4"})
    objects = pd.DataFrame({"frame_gid": [0, 1, 2, 2, 3, 4, 5], "track_id": [1, 1, 1, 2, 1, 2, 1],
                            "is_background": [False] * 7})
    scores = np.array([0.1, 0.35, 0.2, 0.4, 0.5, 0.31, 0.29], np.float32)
    row = S.video_presence(frames, objects, scores, 0.3).iloc[0]
    assert (row["first_time"], row["last_time"]) == (2.0, 8.0)      # frames 1 and 4
    assert row["maxn"] == 1 and row["tracks"] == 2
    assert row["best_score"] == pytest.approx(0.5) and row["best_time"] == 6.0


def test_background_never_counts_and_nothing_matching_is_absent() -> None:
    frames = pd.DataFrame({"gid": [0, 1], "site": "S_Jan2020", "video_id": "v", "time": [0.0, 1.0], "place": "S",
                           "date": "2020-01", "video_path": "p"})
    objects = pd.DataFrame({"frame_gid": [0, 1], "track_id": [0, 0], "is_background": [True, True]})
    row = S.video_presence(frames, objects, np.array([0.9, 0.9], np.float32), 0.3).iloc[0]
    assert not row["present"] and row["maxn"] == 0 and np.isnan(row["first_time"])


def test_threshold_outside_the_score_range_is_refused() -> None:
    with pytest.raises(QueryError, match="outside the score range"):
        S.check_threshold(1.5)
    with pytest.raises(QueryError, match="nan"):
        S.check_threshold(float("nan"))


def test_site_and_month_summaries_and_darwin_core(clip_masks) -> None:
    f1, o1 = _rows_from_masks(clip_masks, site="Oahu_Jul2022", video_id="0001")
    f2, o2 = _rows_from_masks(clip_masks, site="Oahu_Jul2022", video_id="0002", gid0=len(f1))
    f3, o3 = _rows_from_masks(clip_masks, site="Nowhere_Jan2020", video_id="0001", gid0=len(f1) * 2)
    frames = pd.concat([f1, f2, f3], ignore_index=True)
    frames.loc[frames["site"] == "Nowhere_Jan2020", "date"] = "2020-01"
    objects = pd.concat([o1, o2, o3], ignore_index=True)
    scores = _exact_scores(objects, {1, 2, 3})
    scores[objects["frame_gid"].to_numpy() >= len(f1)] = 0.0      # only the first video holds the thing
    presence = S.video_presence(frames, objects, scores, 0.5)
    assert presence["present"].tolist() == [False, True, False]   # sorted: Nowhere/0001, Oahu/0001, Oahu/0002
    sites = S.summarise(presence, "site")
    oahu = sites.set_index("site").loc["Oahu_Jul2022"]
    assert (oahu["videos"], oahu["videos_present"], oahu["total_maxn"]) == (2, 1, presence["maxn"].max())
    months = S.summarise(presence, "date").set_index("date")
    assert months.loc["2020-01", "videos"] == 1 and months.loc["2022-07", "videos_present"] == 1
    dwc, notes = S.occurrences(presence, query="=a yellow fish", model="ViT-B-32/laion2b", threshold=0.5,
                               coordinates=S.site_coordinates())
    assert set(S.DWC_COLUMNS) <= set(dwc.columns) and len(dwc) == len(presence)
    assert dwc["occurrenceID"].is_unique
    assert dwc["occurrenceStatus"].tolist() == ["absent", "present", "absent"]
    assert dwc["individualCount"].tolist() == presence["maxn"].tolist()
    assert (dwc["basisOfRecord"] == "MachineObservation").all()
    assert dwc.loc[1, "eventDate"] == "2022-07" and dwc.loc[1, "locality"] == "Oahu"
    assert dwc.loc[1, "decimalLatitude"] == pytest.approx(21.377254)
    assert np.isnan(dwc.loc[0, "decimalLatitude"]) and "1 site(s) without coordinates" in notes[0]
    assert "threshold T=0.5" in dwc.loc[1, "identificationRemarks"] and "ViT-B-32" in dwc.loc[1, "identificationRemarks"]
    assert dwc.loc[1, "associatedMedia"].endswith(f"#t={presence.loc[1, 'maxn_time']:.1f}")
    assert "uncalibrated" in dwc.loc[0, "occurrenceRemarks"]
    text = S.to_csv(dwc)
    assert "'=a yellow fish" in text and ",=a yellow" not in text
    assert ",21.377254," in text                                      # numbers are never escaped


def test_csv_safe_escapes_formula_leading_text_only() -> None:
    df = pd.DataFrame({"a": ["=1+1", "+x", "-y", "@z", "ok"], "n": [-1.5, 2, 3, 4, 5]})
    out = S.csv_safe(df)
    assert out["a"].tolist() == ["'=1+1", "'+x", "'-y", "'@z", "ok"] and out["n"].tolist() == df["n"].tolist()


def test_coordinates_table_ships_with_the_package_and_bad_files_are_named(tmp_path) -> None:
    table = S.site_coordinates()
    assert {"Oahu", "PhuQuoc1", "Tulamben"} <= set(table["place"])
    bad = tmp_path / "c.csv"
    bad.write_text("place,lat\nX,1\n")
    with pytest.raises(InputError, match="longitude"):
        S.site_coordinates(bad)


# -- calibration ------------------------------------------------------------------------------------

def test_calibration_recovers_a_known_precision() -> None:
    rng = np.random.default_rng(0)
    pos, neg = rng.normal(0.32, 0.04, 400), rng.normal(0.22, 0.04, 1600)
    scores = np.r_[pos, neg]
    labels = np.r_[np.ones(400, bool), np.zeros(1600, bool)]
    cal = C.calibrate(scores, labels, target_precision=0.9)
    # the true precision at the chosen T, from fresh draws of the same two populations
    fresh_pos, fresh_neg = rng.normal(0.32, 0.04, 400_000), rng.normal(0.22, 0.04, 1_600_000)
    tp, fp = (fresh_pos >= cal.threshold).sum(), (fresh_neg >= cal.threshold).sum()
    true_precision = tp / (tp + fp)
    true_recall = tp / len(fresh_pos)
    assert cal.calibrated and cal.precision.low <= true_precision <= cal.precision.high
    assert abs(true_precision - 0.9) < 0.05
    assert cal.recall.low <= true_recall <= cal.recall.high
    p = cal.probability(np.array([0.1, 0.27, 0.45]))
    assert p[0] < 0.1 and p[2] > 0.9 and np.all(np.diff(p) >= 0)


def test_pav_is_monotone_and_pools_violators() -> None:
    lows, k, n = C.pav(np.array([0.1, 0.2, 0.3, 0.4]), np.array([0, 1, 0, 1]))
    assert np.all(np.diff(k / n) >= 0) and n.sum() == 4 and list(k / n) == [0.0, 0.5, 1.0]


def test_few_labels_give_wide_intervals_and_absent_videos_a_miss_chance() -> None:
    cal = C.calibrate(np.array([0.9, 0.8, 0.7, 0.3, 0.2]), np.array([1, 1, 0, 0, 0]), target_precision=0.9)
    assert cal.threshold == 0.8 and cal.precision.estimate == 1.0 and cal.precision.low < 0.5
    assert any("only 5 labels" in n for n in cal.notes)
    presence = pd.DataFrame({"site": ["a", "a", "b"], "video_id": ["1", "2", "1"], "present": [True, False, False]})
    tracks = pd.DataFrame({"site": ["a", "a", "a"], "video_id": ["1", "2", "2"], "track_id": [1, 1, 2],
                           "score": [0.95, 0.75, 0.1]})
    chance = C.missed_chance(cal, presence, tracks)
    p = cal.probability(np.array([0.75, 0.1]))
    assert np.isnan(chance[0]) and chance[1] == pytest.approx(1 - (1 - p[0]) * (1 - p[1])) and chance[2] == 0.0


def test_no_labels_is_said_plainly_and_one_class_is_refused() -> None:
    cal = C.uncalibrated(0.25)
    assert not cal.calibrated and "uncalibrated" in cal.notes[0] and "uncalibrated" in cal.remark()
    assert np.isnan(C.missed_chance(cal, pd.DataFrame({"site": ["a"], "video_id": ["1"], "present": [False]}),
                                    pd.DataFrame({"site": [], "video_id": [], "track_id": [], "score": []}))[0])
    with pytest.raises(InputError, match="one match and one non-match"):
        C.calibrate(np.array([0.5, 0.6]), np.array([1, 1]))


def test_wilson_interval() -> None:
    iv = C.wilson(9, 10)
    assert iv.estimate == 0.9 and 0.55 < iv.low < 0.6 and 0.98 < iv.high <= 1.0


def test_labels_of_frames_not_in_the_index_are_refused(tmp_path) -> None:
    frames = pd.DataFrame({"gid": [0, 1], "site": "S_Jan2020", "video_id": "v", "frame_index": [0, 12]})
    objects = pd.DataFrame({"frame_gid": [0, 1, 1], "track_id": [0, 0, 3], "is_background": [True, True, False]})
    scores = np.array([0.9, 0.9, 0.4])
    path = tmp_path / "labels.csv"
    path.write_text("id,label\nS_Jan2020/v/12,like\nS_Jan2020/v/12/3,1\nS_Jan2020/v/0,dislike\n")
    got = C.label_scores(C.read_labels(path), frames, objects, scores)
    assert got[0] == pytest.approx(0.4) and got[1] == pytest.approx(0.4) and got[2] == -np.inf
    path.write_text("site,video_id,frame_index,label\nOther_Jan2020,v,0,1\n")
    with pytest.raises(QueryError, match="another index"):
        C.label_scores(C.read_labels(path), frames, objects, scores)
    path.write_text("site,video_id,frame_index,label\nS_Jan2020,v,0,maybe\n")
    with pytest.raises(InputError, match="maybe"):
        C.read_labels(path)

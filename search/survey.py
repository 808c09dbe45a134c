"""From a query's scores to survey evidence: presence per video, MaxN, per-site and per-month tables and
Darwin Core occurrence records.

Everything here is a pure function over the index's row tables (``Index.frames`` with ``gid``, ``site``,
``video_id``, ``time``, ``place``, ``date``; ``Index.objects`` with ``frame_gid``, ``track_id``,
``is_background``) and one score per object row for the query. An object *matches* when it is not the
background and its score is at least the threshold T. Per video:

* present: some object matches; first/last time seen: the first and last frame with a match;
* tracks: distinct track ids among the matches (a track is one object followed through the video);
* MaxN: the most distinct matching tracks visible in one frame, the maximum over frames (never a sum
  over frames, so one animal seen in 40 frames counts once), with the time of the first frame reaching it.

``survey_scores`` is the one place that touches the index's vectors (``Shard.scores``); the query service
can call it, or pass scores from elsewhere (a feedback vector, an image) straight to ``video_presence``.
"""
from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from search.errors import InputError, QueryError
from search.query import Filters, filter_mask, selected_sites
from search.store import Index

LOCATIONS_CSV = Path(__file__).resolve().parent / "data" / "mvk_locations.csv"
DEFAULT_THRESHOLD = 0.25     # uncalibrated: a cosine similarity at which CLIP text-image pairs usually match
SCORE_RANGE = (-1.0, 1.0)    # cosine similarity of L2-normalised vectors
FORMULA_LEADS = ("=", "+", "-", "@", "\t", "\r")

PRESENCE_COLUMNS = ("site", "video_id", "video_path", "place", "date", "frames", "duration", "present",
                    "first_time", "last_time", "tracks", "maxn", "maxn_time", "maxn_gid", "best_score",
                    "best_time", "best_gid", "best_track")
SUMMARY_COLUMNS = ("videos", "videos_present", "total_maxn", "max_maxn", "tracks")
DWC_COLUMNS = ("occurrenceID", "basisOfRecord", "eventDate", "locality", "decimalLatitude", "decimalLongitude",
               "geodeticDatum", "individualCount", "occurrenceStatus", "verbatimIdentification",
               "identificationRemarks", "occurrenceRemarks", "associatedMedia")


@dataclass(frozen=True)
class SurveyScores:
    """A query's scores over a whole index, aligned with ``Index.frames`` and ``Index.objects`` rows;
    ``keep`` marks the frames the filters keep (the videos surveyed)."""
    frame: np.ndarray     # (n_frames,) float32, -inf outside the filters
    object: np.ndarray    # (n_objects,) float32, -inf outside the filters
    keep: np.ndarray      # (n_frames,) bool


def survey_scores(index: Index, query_vector: np.ndarray, filters: Filters = Filters()) -> SurveyScores:
    """Exact scores of every frame and object of the shards ``filters`` select against one query vector
    (L2-normalised here), from the stored codes (``Shard.scores``); rows outside the filters score -inf."""
    q = np.asarray(query_vector, dtype=np.float32).reshape(-1)
    norm = float(np.linalg.norm(q))
    if not np.isfinite(norm) or norm == 0:
        raise QueryError("query vector is zero or not finite")
    q = q / norm
    keep = filter_mask(index, filters)
    frame = np.full(len(index.frames), -np.inf, np.float32)
    obj = np.full(len(index.objects), -np.inf, np.float32)
    for site in selected_sites(index, filters):
        shard = index.shards[site]
        f0, o0 = index.frame_offset(site), index.object_offset(site)
        frame[f0:f0 + len(shard.frames)] = shard.scores("frames", q[None, :])[0]
        if len(shard.objects):
            obj[o0:o0 + len(shard.objects)] = shard.scores("objects", q[None, :])[0]
    frame[~keep] = -np.inf
    if len(obj):
        obj[~keep[index.objects["frame_gid"].to_numpy(np.int64)]] = -np.inf
    return SurveyScores(frame=frame, object=obj, keep=keep)


def check_threshold(threshold: float) -> float:
    """T as a float inside the cosine range; QueryError naming the value otherwise."""
    t = float(threshold)
    if not (np.isfinite(t) and SCORE_RANGE[0] <= t <= SCORE_RANGE[1]):
        raise QueryError(f"threshold {threshold!r} is outside the score range {SCORE_RANGE[0]:g}..{SCORE_RANGE[1]:g} "
                         f"(scores are cosine similarities)")
    return t


def _surveyed(frames: pd.DataFrame, objects: pd.DataFrame, object_scores: np.ndarray) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(frames, their non-background objects with score, site, video_id, time) restricted to ``frames``."""
    scores = np.asarray(object_scores, dtype=np.float32).reshape(-1)
    if len(scores) != len(objects):
        raise QueryError(f"{len(scores)} object scores for {len(objects)} object rows")
    frames = frames.reset_index(drop=True)
    pos = pd.Series(np.arange(len(frames)), index=frames["gid"].to_numpy(np.int64))
    fg = objects["frame_gid"].to_numpy(np.int64)
    inside = np.isin(fg, frames["gid"].to_numpy(np.int64)) & ~objects["is_background"].to_numpy(dtype=bool)
    inside &= np.isfinite(scores)
    rows = pos.loc[fg[inside]].to_numpy()
    obj = pd.DataFrame({"frame_gid": fg[inside], "track_id": objects["track_id"].to_numpy(np.int64)[inside],
                        "score": scores[inside], "site": frames["site"].astype(str).to_numpy()[rows],
                        "video_id": frames["video_id"].astype(str).to_numpy()[rows],
                        "time": frames["time"].to_numpy(np.float64)[rows]})
    return frames, obj


def matches(frames: pd.DataFrame, objects: pd.DataFrame, object_scores: np.ndarray, threshold: float) -> pd.DataFrame:
    """The matching object rows (not background, score >= T) of ``frames``: site, video_id, time, frame_gid,
    track_id, score, sorted by video and time (what a presence timeline draws)."""
    t = check_threshold(threshold)
    _, obj = _surveyed(frames, objects, object_scores)
    hit = obj[obj["score"] >= t]
    return hit.sort_values(["site", "video_id", "time", "track_id"], kind="stable").reset_index(drop=True)


def track_scores(frames: pd.DataFrame, objects: pd.DataFrame, object_scores: np.ndarray) -> pd.DataFrame:
    """Each non-background track's best score in each video of ``frames``: site, video_id, track_id, score
    (what ``search.calibration.missed_chance`` needs for absent videos)."""
    _, obj = _surveyed(frames, objects, object_scores)
    return obj.groupby(["site", "video_id", "track_id"], sort=True)["score"].max().reset_index()


def frame_counts(hits: pd.DataFrame) -> pd.DataFrame:
    """Distinct matching tracks per frame: site, video_id, frame_gid, time, n."""
    if hits.empty:
        return pd.DataFrame({"site": [], "video_id": [], "frame_gid": [], "time": [], "n": []})
    return (hits.groupby(["site", "video_id", "frame_gid", "time"], sort=True, observed=True)["track_id"]
            .nunique().rename("n").reset_index())


def video_presence(frames: pd.DataFrame, objects: pd.DataFrame, object_scores: np.ndarray,
                   threshold: float) -> pd.DataFrame:
    """One row per video of ``frames`` (PRESENCE_COLUMNS): presence, first/last time seen, distinct
    matching tracks, MaxN (max over frames of the distinct matching tracks in one frame) and the time and
    gid of the first frame reaching it, the best object score (also below T) and where it is."""
    t = check_threshold(threshold)
    frames, obj = _surveyed(frames, objects, object_scores)
    keys = ["site", "video_id"]
    f = frames.assign(site=frames["site"].astype(str), video_id=frames["video_id"].astype(str))
    for col, default in (("video_path", f["site"] + "/" + f["video_id"]), ("place", f["site"]), ("date", "")):
        if col not in f.columns:
            f[col] = default
    base = f.groupby(keys, sort=True).agg(video_path=("video_path", "first"), place=("place", "first"),
                                          date=("date", "first"), frames=("gid", "size"),
                                          duration=("time", "max")).reset_index()
    hits = obj[obj["score"] >= t]
    seen = hits.groupby(keys).agg(first_time=("time", "min"), last_time=("time", "max"),
                                  tracks=("track_id", "nunique")).reset_index()
    counts = frame_counts(hits)
    if len(counts):
        top = counts.sort_values(["site", "video_id", "n", "time"], ascending=[True, True, False, True],
                                 kind="stable").drop_duplicates(keys)
        top = top.rename(columns={"n": "maxn", "time": "maxn_time", "frame_gid": "maxn_gid"})
    else:
        top = pd.DataFrame({"site": [], "video_id": [], "maxn": [], "maxn_time": [], "maxn_gid": []})
    best = (obj.sort_values(["site", "video_id", "score", "time"], ascending=[True, True, False, True],
                            kind="stable").drop_duplicates(keys)
            .rename(columns={"score": "best_score", "time": "best_time", "frame_gid": "best_gid",
                             "track_id": "best_track"}))
    out = base.merge(seen, on=keys, how="left").merge(top, on=keys, how="left").merge(
        best[keys + ["best_score", "best_time", "best_gid", "best_track"]], on=keys, how="left")
    out["present"] = out["tracks"].fillna(0).to_numpy() > 0
    out["tracks"] = out["tracks"].fillna(0).astype(np.int64)
    out["maxn"] = out["maxn"].fillna(0).astype(np.int64)
    for col in ("maxn_gid", "best_gid", "best_track"):
        out[col] = out[col].fillna(-1).astype(np.int64)
    return out.loc[:, list(PRESENCE_COLUMNS)]


def summarise(presence: pd.DataFrame, by: str | list[str] = "site") -> pd.DataFrame:
    """Per ``by`` ("site", "date" for months, "place", or a list): videos surveyed, videos with presence,
    total MaxN (sum over videos of each video's MaxN), largest MaxN of one video, matching tracks."""
    keys = [by] if isinstance(by, str) else list(by)
    extra = {"place": ("place", "first"), "date": ("date", "first")} if keys == ["site"] else {}
    return presence.groupby(keys, sort=True).agg(
        **extra, videos=("video_id", "size"), videos_present=("present", "sum"), total_maxn=("maxn", "sum"),
        max_maxn=("maxn", "max"), tracks=("tracks", "sum")).reset_index()


def site_coordinates(path: str | Path | None = None) -> pd.DataFrame:
    """Place -> decimal latitude/longitude (WGS84): the MVK dive sites shipped with the package, or a CSV
    with columns place, latitude, longitude (InputError naming the file and what is wrong)."""
    path = Path(path) if path is not None else LOCATIONS_CSV
    try:
        table = pd.read_csv(path, dtype={"place": str})
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable coordinates CSV ({exc})") from exc
    missing = [c for c in ("place", "latitude", "longitude") if c not in table.columns]
    if missing:
        raise InputError(f"{path}: coordinates CSV lacks column(s) {', '.join(missing)} "
                         f"(needs place, latitude, longitude)")
    lat = pd.to_numeric(table["latitude"], errors="coerce")
    lon = pd.to_numeric(table["longitude"], errors="coerce")
    bad = ~(lat.between(-90, 90) & lon.between(-180, 180))
    if bad.any():
        raise InputError(f"{path}: row {int(np.flatnonzero(bad.to_numpy())[0]) + 2} has no valid latitude/longitude")
    return (pd.DataFrame({"place": table["place"].astype(str), "latitude": lat, "longitude": lon})
            .drop_duplicates("place").reset_index(drop=True))


def with_coordinates(table: pd.DataFrame, coordinates: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """``table`` (with a place column) plus latitude/longitude where the place is known (NaN elsewhere),
    and a note counting the sites left without coordinates."""
    lookup = {p.lower(): (la, lo) for p, la, lo in coordinates[["place", "latitude", "longitude"]].itertuples(index=False)}
    got = [lookup.get(str(p).lower(), (np.nan, np.nan)) for p in table["place"]]
    out = table.assign(latitude=[g[0] for g in got], longitude=[g[1] for g in got])
    notes: list[str] = []
    unknown = out["latitude"].isna()
    if unknown.any():
        key = "site" if "site" in out.columns else "place"
        names = sorted(set(out.loc[unknown, key].astype(str)))
        notes.append(f"{len(names)} site(s) without coordinates (latitude/longitude left blank): "
                     f"{', '.join(names[:10])}{' ...' if len(names) > 10 else ''}")
    return out, notes


def query_id(query: str) -> str:
    """A short stable id of a query text, for occurrence ids."""
    return hashlib.sha1(" ".join(query.split()).encode()).hexdigest()[:10]


def occurrences(presence: pd.DataFrame, *, query: str, model: str, threshold: float,
                coordinates: pd.DataFrame | None = None, calibration_remark: str = "",
                missed_chance: np.ndarray | None = None) -> tuple[pd.DataFrame, list[str]]:
    """Darwin Core occurrence records (DWC_COLUMNS), one per (video, query): eventDate is the site's month,
    individualCount the video's MaxN (0 when absent), occurrenceStatus present/absent, associatedMedia the
    video with a media-fragment time (#t=) of the MaxN frame (of the best frame when absent). Absent rows
    say in occurrenceRemarks the estimated chance that the thing was there and missed (``missed_chance``,
    one value per row, from ``search.calibration``), or that T is uncalibrated. Returns the rows and notes."""
    t = check_threshold(threshold)
    notes: list[str] = []
    table = presence
    if coordinates is not None:
        table, notes = with_coordinates(presence, coordinates)
    n = len(table)
    lat = table["latitude"] if "latitude" in table.columns else pd.Series(np.nan, index=table.index)
    lon = table["longitude"] if "longitude" in table.columns else pd.Series(np.nan, index=table.index)
    present = table["present"].to_numpy(dtype=bool)
    when = np.where(present, table["maxn_time"].to_numpy(np.float64), table["best_time"].to_numpy(np.float64))
    media = [f"{p}#t={w:.1f}" if np.isfinite(w) else str(p) for p, w in zip(table["video_path"].astype(str), when)]
    qid = query_id(query)
    remark = f"query '{query}'; model {model}; threshold T={t:.4g}" + (f"; {calibration_remark}" if calibration_remark else "")
    if missed_chance is None:
        missed = ["" if p else "absent at an uncalibrated threshold: the chance of a miss is unknown" for p in present]
    else:
        chance = np.asarray(missed_chance, dtype=np.float64).reshape(-1)
        if len(chance) != n:
            raise QueryError(f"{len(chance)} missed-chance values for {n} videos")
        missed = ["" if p else f"estimated chance present but missed: {c:.3f}" for p, c in zip(present, chance)]
    out = pd.DataFrame({
        "occurrenceID": [f"mvk:{s}/{v}:q{qid}" for s, v in zip(table["site"].astype(str), table["video_id"].astype(str))],
        "basisOfRecord": "MachineObservation",
        "eventDate": table["date"].astype(str).to_numpy(),
        "locality": table["place"].astype(str).to_numpy(),
        "decimalLatitude": lat.to_numpy(np.float64),
        "decimalLongitude": lon.to_numpy(np.float64),
        "geodeticDatum": np.where(lat.notna().to_numpy(), "WGS84", ""),
        "individualCount": table["maxn"].to_numpy(np.int64),
        "occurrenceStatus": np.where(present, "present", "absent"),
        "verbatimIdentification": query,
        "identificationRemarks": remark,
        "occurrenceRemarks": missed,
        "associatedMedia": media,
    }, index=range(n))
    return out.loc[:, list(DWC_COLUMNS)], notes


def csv_safe(df: pd.DataFrame) -> pd.DataFrame:
    """A copy whose text cells that a spreadsheet would run as a formula (leading =, +, -, @, tab, CR) are
    prefixed with a quote; numbers stay numbers."""
    out = df.copy()
    for col in out.columns:
        if out[col].dtype == object or pd.api.types.is_string_dtype(out[col]):
            out[col] = [("'" + v) if isinstance(v, str) and v.startswith(FORMULA_LEADS) else v for v in out[col]]
    return out


def to_csv(df: pd.DataFrame) -> str:
    """``df`` as CSV text, formula-leading cells escaped (``csv_safe``)."""
    buf = io.StringIO()
    csv_safe(df).to_csv(buf, index=False, quoting=csv.QUOTE_MINIMAL)
    return buf.getvalue()


@dataclass
class SurveyResult:
    """Everything one survey gives: the tables (``presence``, ``occurrences``, ``sites``, ``months``), the
    matching object rows a timeline draws (``hits``), the threshold's calibration and notes for the user."""
    query: str
    model: str
    calibration: object                     # search.calibration.Calibration
    presence: pd.DataFrame
    hits: pd.DataFrame
    occurrences: pd.DataFrame
    sites: pd.DataFrame
    months: pd.DataFrame
    notes: list[str]
    skipped_shards: dict[str, str]

    @property
    def threshold(self) -> float:
        return float(self.calibration.threshold)

    def tables(self) -> dict[str, pd.DataFrame]:
        """The CSV files of a survey, by name (``presence``, ``occurrences``, ``sites``, ``months``)."""
        return {"presence": self.presence, "occurrences": self.occurrences, "sites": self.sites,
                "months": self.months}

    def summary(self) -> dict:
        """survey.json: query, model, threshold, calibration, counts and notes (JSON-ready)."""
        cal = self.calibration
        return {"query": self.query, "model": self.model, "threshold": self.threshold,
                "calibrated": bool(cal.calibrated), "calibration": cal.remark(), "method": cal.method or None,
                "precision": None if cal.precision is None else {k: _plain(v) for k, v in vars(cal.precision).items()},
                "recall": None if cal.recall is None else {k: _plain(v) for k, v in vars(cal.recall).items()},
                "videos": int(len(self.presence)), "videos_present": int(self.presence["present"].sum()),
                "total_maxn": int(self.presence["maxn"].sum()), "notes": list(self.notes),
                "skipped_shards": dict(self.skipped_shards)}


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


def labels_of_refs(positives, negatives) -> pd.DataFrame:
    """A labels table (``search.calibration.label_scores``'s form) from liked and disliked result ids
    (``search.queries.ItemRef``: site, video_id, frame_index, track_id or None)."""
    rows = [(r.site, r.video_id, str(r.frame_index), "" if r.track_id is None else str(r.track_id), flag)
            for flag, refs in ((True, positives), (False, negatives)) for r in refs]
    return pd.DataFrame(rows, columns=["site", "video_id", "frame_index", "track_id", "label"])


def survey(index: Index, vector: np.ndarray, *, query: str, model: str, filters: Filters = Filters(),
           threshold: float | None = None, labels: pd.DataFrame | None = None, target_precision: float = 0.9,
           coordinates: pd.DataFrame | None = None, notes: list[str] | None = None) -> SurveyResult:
    """A whole survey of one query vector over the frames ``filters`` keep: T given, or calibrated on
    ``labels`` (``search.calibration.read_labels``'s table, or ``labels_of_refs``) for ``target_precision``,
    else the uncalibrated default; presence, MaxN, Darwin Core occurrences, per-site (with ``coordinates``,
    default the MVK sites) and per-month tables. QueryError when no frame passes the filters."""
    from search import calibration as C

    if threshold is not None:
        check_threshold(threshold)
    if not 0 < target_precision <= 1:
        raise QueryError(f"target precision must be in (0, 1], got {target_precision}")
    notes = list(notes or [])
    coordinates = site_coordinates() if coordinates is None else coordinates
    if not filter_mask(index, filters).any():
        raise QueryError("no frames of the index pass the filters: nothing to survey")
    scores = survey_scores(index, vector, filters)
    if labels is None or labels.empty:
        cal = C.uncalibrated(DEFAULT_THRESHOLD if threshold is None else threshold)
    else:
        got = C.label_scores(labels, index.frames, index.objects, scores.object)
        finite = np.isfinite(got)
        if not finite.all():
            notes.append(f"{int((~finite).sum())} labelled frame(s) have no object (or lie outside the filters) "
                         f"and were left out of the calibration")
        cal = C.calibrate(got[finite], labels["label"].to_numpy(bool)[finite], target_precision=target_precision,
                          threshold=threshold)
    t = check_threshold(cal.threshold)
    frames = index.frames.loc[scores.keep].drop(columns=["thumbnail"], errors="ignore")
    presence = video_presence(frames, index.objects, scores.object, t)
    hits = matches(frames, index.objects, scores.object, t)
    missed = C.missed_chance(cal, presence, track_scores(frames, index.objects, scores.object))
    presence["missed_chance"] = missed
    occ, coord_notes = occurrences(presence, query=query, model=model, threshold=t, coordinates=coordinates,
                                   calibration_remark=cal.remark(), missed_chance=missed if cal.calibrated else None)
    sites, _ = with_coordinates(summarise(presence, "site"), coordinates)
    months = summarise(presence, "date")
    notes += list(cal.notes) + coord_notes
    if not presence["present"].any():
        top = float(np.max(scores.object[np.isfinite(scores.object)], initial=-np.inf))
        notes.append(f"no object scores at or above T = {t:.4g} (best {top:.4g}): every video is absent"
                     + ("" if cal.calibrated else ", at an uncalibrated T"))
    return SurveyResult(query=query, model=model, calibration=cal, presence=presence, hits=hits, occurrences=occ,
                        sites=sites, months=months, notes=notes, skipped_shards=dict(index.errors))

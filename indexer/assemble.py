"""The assembly stage (driver): the committed parts of a site -> its shard, swapped in whole.

Parts are read in catalog order (object rows re-pointed at the site's frame rows) and handed to
``search.store.write_shard``, which writes the shard aside and swaps it in. Selected frames that another
video of the site matches better than their own are flagged here (``indexer.selected.foreign_check`` over the
parts' probe thumbnails), since only the driver sees every video of the site. Nothing is written when no video
of the site has rows; the previous shard is then kept.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from indexer.plan import SitePlan
from indexer.tasks import IndexConfig, SiteResult, VideoResult
from search import store


def settled_sources(plan: SitePlan, results: list[VideoResult]) -> dict[str, dict]:
    """rel -> signature of the videos that need no work next time: indexed, resumed or failed for good.
    A video that failed for a passing reason is left out, so the site is not up to date until it succeeds."""
    done = {v.video_path for v in results if v.status in ("indexed", "resumed") or v.lasting}
    return {rel: sig for rel, sig in plan.sources.items() if rel in done}


def assemble_site(root: Path, plan: SitePlan, results: list[VideoResult], *, dim: int, config: IndexConfig,
                  fp: str) -> SiteResult:
    """Write the site's shard from its parts (``results`` in catalog order) and return the SiteResult."""
    frames, objects, fvecs, ovecs = [], [], [], []
    n_frames = 0
    ok = {v.video_path for v in results if v.status in ("indexed", "resumed")}
    parts = {rel: plan.work.read_part(key) for rel, key in plan.order if rel in ok}
    foreign = _flag_foreign(parts, {v.video_path: v for v in results})
    for rel, part in parts.items():
        obj = part.objects.copy()
        obj["frame_row"] = obj["frame_row"].astype(np.int64) + n_frames
        frames.append(foreign.get(rel, part.frames))
        if len(obj):
            objects.append(obj)
        fvecs.append(part.frame_vectors)
        ovecs.append(part.object_vectors)
        n_frames += len(part.frames)
    site = plan.site
    result = SiteResult(site, "written", videos=results)
    if n_frames == 0:
        result.status = "failed"
        result.error = "no video of this site could be indexed" + \
            ("; the previous shard is kept" if store.shard_manifest(root, site) is not None else "")
        return result
    frames_df = pd.concat(frames, ignore_index=True)
    objects_df = pd.concat(objects, ignore_index=True) if objects else pd.DataFrame(columns=list(store.OBJECT_COLUMNS))
    fv = np.concatenate(fvecs).astype(np.float32)
    ov = np.concatenate(ovecs).astype(np.float32) if ovecs else np.zeros((0, dim), np.float32)
    manifest = {"site": site, "frames": len(frames_df), "objects": len(objects_df), "fingerprint": fp,
                "sources": settled_sources(plan, results), "errors": {v.video_path: v.error for v in results if v.error},
                "videos": {v.video_path: {"status": v.status, "frames": v.frames, "objects": v.objects}
                           for v in results},
                "objects_mode": config.objects, "sampling": config.sampling(), "index_type": config.index_type,
                "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    result.shard = store.write_shard(root, site, frames_df, fv, objects_df, ov, manifest,
                                     index_type=config.index_type)  # type: ignore[arg-type]
    result.notes += list((store.shard_manifest(root, site) or {}).get("notes", []))   # e.g. ivf stored as flat
    plan.work.clear_pending()
    plan.work.drop_others({key for _, key in plan.order})
    result.frames, result.objects = len(frames_df), len(objects_df)
    result.notes += [f"repaired: {b}" for b in plan.broken]
    return result


def _flag_foreign(parts: dict, results: dict[str, VideoResult]) -> dict[str, pd.DataFrame]:
    """The frame rows of the videos with selected frames, ``match_foreign`` filled by the foreign-frame
    check; their VideoResults' ``selected`` report and note updated to say so."""
    from indexer.selected import foreign_check, report

    probes = {rel: p.probes for rel, p in parts.items() if p.probes}
    out = {}
    names = {rel: str(parts[rel].frames["video_id"].iat[0]) if len(parts[rel].frames) else rel for rel in probes}
    for rel, flags in foreign_check(probes).items():
        frames = parts[rel].frames.copy()
        sel = np.flatnonzero(pd.to_numeric(frames["selected_number"], errors="coerce").fillna(-1).to_numpy() >= 0)
        if len(sel) != len(flags):
            continue
        column = np.full(len(frames), "", object)
        column[sel] = [names.get(f, f) for f in flags]
        frames["match_foreign"] = column
        out[rel] = frames
        vr = results.get(rel)
        if vr is not None:
            vr.selected = report(frames)
            hits = [f"{n} (from video {names.get(f, f)})" for n, f in zip(frames["selected_name"].iloc[sel], flags)
                    if f]
            if hits:
                vr.note = "; ".join(n for n in (vr.note, f"{len(hits)} selected frame(s) match another video "
                                                f"better (kept, flagged match_foreign): {', '.join(hits[:5])}"
                                                + (" ..." if len(hits) > 5 else "")) if n)
    return out

"""`mvk demo --random-weights`: a smoke index whose objects are real (colour baseline), with a KIS query set
written from the synthetic ground truth; and the query texts themselves."""
from __future__ import annotations

import numpy as np
import pandas as pd


def test_the_smoke_demo_has_objects_tracks_and_a_kis_query_set_the_app_finds(tmp_path, monkeypatch):
    import app.demo as demo
    from app.kis_run import find_querysets
    from mvk_tools import kis
    from mvk_tools.querysets import read_queryset
    from search.store import open_index

    monkeypatch.setattr(demo, "find_real_clips", lambda: [])          # the synthetic sites are enough here
    paths = demo.demo_paths(tmp_path / "mvk-demo", random_weights=True)
    result = demo.build_demo(paths, random_weights=True, n_frames=24)
    assert result.ok and not result.errors
    index = open_index(paths.index)
    assert index.manifest["indexing"]["backbone"]["backbone"] == "color"     # labelled as the colour baseline
    assert index.manifest["encoder"]["random_weights"]
    for site in demo.DEMO_SITES:
        objects = index.shards[site].objects
        fg = objects[~objects["is_background"].astype(bool)]
        assert len(fg) >= len(index.shards[site].frames)                  # shapes found, not one box per frame
        assert fg.groupby("track_id")["frame_row"].nunique().max() > 1    # a track spans frames

    found = find_querysets([paths.index])
    assert found == [str(paths.index / "querysets" / demo.QUERYSET_NAME)]
    qs = read_queryset(found[0])
    assert not qs.issues and set(qs.queries["query_type"]) == {"synthetic-colour", "synthetic-full"}
    assert set(qs.queries["target_site"]) == set(demo.DEMO_SITES)
    from search.encoder import load_encoder
    encoder = load_encoder(index.manifest["encoder"]["model"], None, random_weights=True)
    run = kis.run_benchmark(index, found, encoder=encoder, fusions=("frame", "object"))
    assert run.n_queries == len(qs.queries) and not run.not_in_index    # every target is an indexed frame


def test_queries_describe_colour_pattern_shape_and_motion_of_the_shapes_in_view():
    from mvk_tools.synth_kis import describe_frame

    masks = np.zeros((9, 40, 60), dtype=np.uint8)
    for t in range(9):
        masks[t, 5:25, 5 + 3 * t:20 + 3 * t] = 1          # object 1 moves right
        masks[t, 25:35, 40:50] = 2                         # object 2 stands still
    objects = [{"id": 1, "shape": "ellipse", "texture": "stripes", "color": [235, 50, 40]},
               {"id": 2, "shape": "rectangle", "texture": "dots", "color": [250, 215, 30]},
               {"id": 3, "shape": "ellipse", "texture": "rings", "color": [245, 245, 245]}]   # not in view
    texts = describe_frame(masks, objects, 4, fps=8.0)
    assert texts["synthetic-full"] == "a red striped ellipse moving right and a yellow dotted rectangle standing still"
    assert texts["synthetic-colour"] == "a red ellipse and a yellow rectangle over blue-green water"
    assert describe_frame(np.zeros_like(masks), objects, 4, fps=8.0) == {}


def test_the_query_set_covers_every_selected_frame_of_the_synthetic_videos_only(tmp_path):
    import json

    from mvk_tools.synth import make_collection
    from mvk_tools.synth_kis import synthetic_queryset

    collection = make_collection(tmp_path / "c", sites=("Oahu_Jul2022",), videos_per_site=2, n_frames=24)
    (collection / "videos" / "Real_Site").mkdir()                        # a real clip has no ground truth
    queries = synthetic_queryset(collection)
    for video in ("0001", "0002"):
        meta = json.loads((collection / "information" / "metadata" / "Oahu_Jul2022" / f"{video}.json").read_text())
        frames = [s["frame"] for s in meta["selected_frames"]]             # true frame indices
        mine = queries[queries["target_video"] == video]
        assert len(mine) == 2 * len(frames) and sorted(set(mine["target_frame"])) == frames
    assert queries["query_id"].is_unique and isinstance(queries, pd.DataFrame)

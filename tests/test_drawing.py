"""Objects drawn over frames stay visible: an outline contrasts with its own object (a yellow fish under the
amber mask colour), and the overlay PNGs' labels grow with the frame (readable on 1920x1080)."""
from __future__ import annotations

import numpy as np

from app.images import MASK_COLOUR, draw_object
from search import rle
from search.drawing import line_width, outline_colour, text_size


def _yellow_object(h: int = 60, w: int = 80):
    image = np.zeros((h, w, 3), np.uint8)
    image[:] = (20, 90, 110)                            # blue-green water
    mask = np.zeros((h, w), bool)
    mask[15:45, 20:60] = True
    image[mask] = (250, 210, 20)                        # a yellow fish
    return image, mask


def test_an_outline_is_the_preferred_colour_unless_the_object_has_it():
    water = np.full((50, 3), (20, 90, 110), np.uint8)
    yellow = np.full((50, 3), (250, 210, 20), np.uint8)
    assert outline_colour(water, MASK_COLOUR) == tuple(int(v) for v in MASK_COLOUR)
    assert outline_colour(yellow, MASK_COLOUR) == (0, 0, 0)
    assert outline_colour(np.full((5, 3), (10, 10, 60), np.uint8), (20, 20, 40)) == (255, 255, 255)


def test_the_mask_outline_on_a_yellow_object_is_not_yellow():
    image, mask = _yellow_object()
    drawn = draw_object(image, mode="mask", mask_rle=rle.encode(mask))
    edge = drawn[15, 30]                                # on the mask's top edge
    assert abs(int(edge.astype(int) @ [299, 587, 114]) // 1000 - 212) > 60, edge   # stands out from the fish
    assert tuple(drawn[5, 5]) == (20, 90, 110)          # outside the mask untouched


def test_overlay_labels_and_lines_grow_with_the_frame():
    from indexer.overlay import overlay_frame
    from indexer.segment import ObjectMask, SegmentedFrame
    from mvk_tools.video import Frame

    assert text_size(96) == 11 and text_size(1080) >= 24 and line_width(1080) >= 3 and line_width(96) == 1
    image = np.zeros((1080, 1920, 3), np.uint8)
    image[:] = (20, 90, 110)
    mask = np.zeros((1080, 1920), bool)
    mask[300:700, 500:1100] = True
    image[mask] = (250, 210, 20)
    frame = SegmentedFrame(Frame(0, 0.0, image), (ObjectMask(1, 0, mask, (500, 300, 1100, 700), 0.12, False),))
    out = overlay_frame(frame, caption="caption")
    bar = np.all(out[:, -3] == 0, axis=1)               # the caption's black bar, down the right edge
    assert bar[-text_size(1080):].all() and not bar[:-40].any()
    assert np.abs(out[300:303, 800].astype(int) - (250, 210, 20)).sum(axis=1).min() > 100   # box edge visible


def test_the_track_chart_has_plain_typed_fields_and_no_missing_values():
    import pandas as pd

    from app.ui.results import track_chart

    rows = pd.DataFrame({"time": [0.0, 1.0, 2.0], "area": [0.1, 0.2, 0.15], "x0": [0, 10, 20], "x1": [40, 50, 60],
                         "y0": [0, 0, 5], "y1": [30, 30, 35], "width": [160] * 3, "height": [96] * 3})
    spec = track_chart(rows).to_dict()
    assert spec["encoding"]["x"]["field"] == "time" and spec["encoding"]["x"]["type"] == "quantitative"
    assert spec["encoding"]["y"]["field"] == "percent"
    values = next(iter(spec["datasets"].values()))
    assert len(values) == 9 and all(v["percent"] == v["percent"] for v in values)

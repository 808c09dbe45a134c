"""Screenshots of every page for the README: ``python3 docs/screenshots/take.py --index IDX --collection COLL``
(e.g. the folders `mvk demo --random-weights --no-serve` builds). Headless system Chromium via playwright."""
from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.browser_util import browser_page, running_app, type_query  # noqa: E402

OUT = Path(__file__).resolve().parent
MAX_BYTES = 300_000


def save(page, name: str, height: int | None = None) -> None:
    """A PNG of the viewport, made smaller (palette, then scale) until it is under MAX_BYTES."""
    from PIL import Image

    image = Image.open(io.BytesIO(page.screenshot(full_page=False))).convert("RGB")
    if height:
        image = image.crop((0, 0, image.width, min(height, image.height)))
    scale = 1.0
    while True:
        shown = image if scale == 1.0 else image.resize((int(image.width * scale), int(image.height * scale)),
                                                        Image.LANCZOS)
        buf = io.BytesIO()
        shown.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(buf, "PNG", optimize=True)
        if buf.tell() <= MAX_BYTES or scale < 0.4:
            break
        scale *= 0.85
    (OUT / f"{name}.png").write_bytes(buf.getvalue())
    print(f"{name}.png: {buf.tell() // 1024} KB", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--index", required=True)
    parser.add_argument("--collection", required=True)
    parser.add_argument("--query", default="a red fish swimming over the sand")
    args = parser.parse_args()
    with running_app(Path(args.index), Path(args.collection)) as url, browser_page(1400, 1100) as page:
        type_query(page, url, args.query)
        time.sleep(2)
        save(page, "search")
        page.get_by_role("button", name="▶ Play").first.click()
        page.wait_for_selector("video", timeout=60_000)
        time.sleep(3)
        save(page, "search_player")

        page.goto(f"{url}/session")
        box = page.get_by_label("Your description of this frame")
        descriptions = ("a crab walking on the sandy bottom", "a fish in murky green water",
                        "a red checkered square next to a striped ball", "an orange dotted ball on blue water")
        for i, text in enumerate(descriptions):
            if i:
                page.get_by_role("button", name="New target").click()
                time.sleep(2)
            box.wait_for(timeout=60_000)
            box.fill(text)
            page.get_by_role("button", name="Rank and save").click()
            page.get_by_text("Target rank").wait_for(timeout=60_000)
            time.sleep(2)
        save(page, "session")

        page.goto(f"{url}/kis")
        page.get_by_text("Run benchmark").wait_for(timeout=60_000)
        if page.get_by_text("choose query-set files").count():
            page.get_by_text("choose query-set files").click()
            page.get_by_role("option").first.click()
            page.keyboard.press("Escape")
        run = page.get_by_role("button", name="Run benchmark")
        if run.is_enabled():
            run.click()
            page.get_by_text("Targets found within rank k").wait_for(timeout=120_000)
            time.sleep(3)
            page.mouse.move(800, 600)
            page.mouse.wheel(0, 560)
            time.sleep(2)
        save(page, "kis")

        page.goto(f"{url}/index")
        page.get_by_text("Shards").wait_for(timeout=60_000)
        time.sleep(2)
        save(page, "index")


if __name__ == "__main__":
    main()

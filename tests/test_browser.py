"""In a real browser: headless Chromium opens the running app, types a query, sees result images; names from
files never become links or images that fetch a URL; MPEG-4 Part 2 footage plays; the URL holds the query."""
from __future__ import annotations

import contextlib
import http.server
import threading
import time
from pathlib import Path

import pytest

from tests.app_fixtures import small_index
from tests.browser_util import (browser_page, cpu_seconds, free_port, running_app, server_pid, type_query,
                                why_no_browser)


def private_index(tmp_path_factory) -> tuple[Path, Path]:
    """The shared small index copied for one test: the app writes into its index (event log, query sets)."""
    import shutil

    collection, index = small_index(tmp_path_factory)
    copy = tmp_path_factory.mktemp("browser") / "index"
    shutil.copytree(index, copy)
    return collection, copy


pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(why_no_browser() is not None, reason=why_no_browser() or "")]


def test_typing_a_query_in_chromium_shows_result_images(tmp_path_factory):
    collection, index = private_index(tmp_path_factory)
    with running_app(index, collection) as url, browser_page() as page:
        type_query(page, url, "a red striped fish")
        page.wait_for_function(
            "document.querySelectorAll('[data-testid=\"stImage\"] img').length >= 16", timeout=60_000)
        images = page.locator('[data-testid="stImage"] img')
        assert images.count() >= 16
        # the images really loaded (served by the app, decoded by the browser)
        page.wait_for_function("Array.from(document.querySelectorAll('[data-testid=\"stImage\"] img'))"
                               ".every(i => i.complete && i.naturalWidth > 0)", timeout=30_000)
        assert page.get_by_text("random weights", exact=False).first.is_visible()
        assert page.get_by_role("button", name="▶ Play").count() >= 16
        # the URL holds the query: a reload (or a shared link) shows the same results
        assert "q_text=a+red+striped+fish" in page.url or "q_text=a%20red%20striped%20fish" in page.url
        page.reload()
        page.wait_for_function(
            "document.querySelectorAll('[data-testid=\"stImage\"] img').length >= 16", timeout=90_000)
        # a search with more than one page of results: the page number goes back to 1 (the first search of
        # a start used to print a Streamlit warning with a 30-line stack in the terminal here)
        page.goto(f"{url}/?k=8")
        box = page.get_by_label("Describe what you are looking for")
        box.fill("a blue fish")
        box.press("Enter")
        page.locator('[data-testid="stPagination"]').first.wait_for(timeout=90_000)
    log = server_log(index, url)
    assert "Stack (most recent call last)" not in log and "Traceback" not in log, log[-3000:]


def server_log(index: Path, url: str) -> str:
    """What the app's server printed while ``running_app`` served ``url`` (tests/browser_util.py keeps it)."""
    return (index.parent / f"streamlit-{url.rsplit(':', 1)[1]}.log").read_text(errors="replace")


def _to_mpeg4(src: Path, dst: Path) -> None:
    """Re-encode ``src`` as MPEG-4 Part 2 (the codec of MVK's and Brackish's files) at ``dst``."""
    import av

    from mvk_tools.video import iter_frames, probe

    info = probe(src)
    with av.open(str(dst), mode="w") as out:
        stream = out.add_stream("mpeg4", rate=round(info.fps))
        stream.width, stream.height, stream.pix_fmt = info.width, info.height, "yuv420p"
        stream.options = {"qscale": "3"}
        for i, frame in enumerate(iter_frames(src)):
            picture = av.VideoFrame.from_ndarray(frame.image, format="rgb24")
            picture.pts = i
            for packet in stream.encode(picture):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


@contextlib.contextmanager
def trap_server():
    """An HTTP server that records every request it gets (a crafted name must never make the page call it)."""
    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            hits.append(self.path)
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], hits
    finally:
        server.shutdown()
        server.server_close()


def _crafted_collection(base: Path, trap: int) -> tuple[Path, Path, str]:
    """A collection whose one site and video carry Markdown in their names (a link, an image pointing at
    the trap server), every video MPEG-4 Part 2; indexed with the tiny models."""
    from indexer.models import load_models
    from indexer.pipeline import IndexConfig, index_collection
    from mvk_tools.synth import make_collection

    collection = make_collection(base / "collection", sites=("Oahu_Jul2022",), videos_per_site=2, n_frames=24,
                                 size=(160, 96), fps=12.0)
    site = collection / "videos" / "Oahu_Jul2022"
    crafted_video = f"![pic](http:127.0.0.1:{trap}\\img.png) **bold** $x$"
    for i, video in enumerate(sorted(site.glob("*.mp4"))):
        name = crafted_video if i == 0 else video.stem
        _to_mpeg4(video, site / f"{name}.tmp.mp4")
        video.unlink()
        (site / f"{name}.tmp.mp4").rename(site / f"{name}.mp4")
    crafted_site = collection / "videos" / f"[site](http:127.0.0.1:{trap}) **s**"
    site.rename(crafted_site)
    encoder, extractor = load_models(model="mvk-tiny-vit", pretrained=None, backbone="color", random_weights=True)
    index = base / "index"
    result = index_collection(collection, index, encoder=encoder, extractor=extractor,
                              config=IndexConfig(every_seconds=0.5))
    assert result.ok and not result.errors, result.errors
    return collection, index, crafted_video


def test_crafted_names_fetch_nothing_and_mpeg4_part2_plays(tmp_path):
    with trap_server() as (trap, hits):
        collection, index, crafted = _crafted_collection(tmp_path, trap)
        with running_app(index, collection) as url, browser_page() as page:
            outside: list[str] = []
            page.on("request", lambda r: None if r.url.startswith(url) or r.url.startswith("data:")
                    else outside.append(r.url))
            type_query(page, url, "a red striped fish")
            page.wait_for_function(
                "document.querySelectorAll('[data-testid=\"stImage\"] img').length >= 8", timeout=60_000)
            # the crafted name is shown as text, not as a link or an image
            assert page.get_by_text("**bold** $x$", exact=False).count() >= 1
            assert page.locator('a[href*="127.0.0.1:%d"]' % trap).count() == 0
            assert page.locator('img[src*="127.0.0.1:%d"]' % trap).count() == 0
            # ▶ Play: the MPEG-4 Part 2 file is converted, and the browser decodes and plays it
            page.get_by_role("button", name="▶ Play").first.click()
            page.wait_for_selector("video", timeout=90_000)
            page.wait_for_function("(() => { const v = document.querySelector('video');"
                                   " return v && v.readyState >= 2 && v.videoWidth > 0; })()", timeout=90_000)
            assert page.evaluate("document.querySelector('video').error") is None
            assert page.get_by_text("converted to H.264", exact=False).count() >= 1
            # Esc closes the player
            page.keyboard.press("Escape")
            page.wait_for_selector("video", state="detached", timeout=30_000)
        assert not hits, hits
        assert not [u for u in outside if str(trap) in u], outside


def test_the_search_page_fits_a_narrow_screen(tmp_path_factory):
    collection, index = private_index(tmp_path_factory)
    with running_app(index, collection) as url, browser_page(390, 844) as page:
        type_query(page, url, "a red striped fish")
        page.wait_for_function(
            "document.querySelectorAll('[data-testid=\"stImage\"] img').length >= 4", timeout=60_000)
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
        box = page.locator('[data-testid="stImage"] img').first.bounding_box()
        assert box is not None and box["width"] >= 100       # a readable thumbnail, not a 5-column sliver
        # nothing covers the results (the sidebar starts collapsed on a phone): ▶ Play can be pressed
        page.get_by_role("button", name="▶ Play").first.click(timeout=15_000)
        page.wait_for_selector("video", timeout=60_000)


IDLE_WINDOW_S = 10.0
IDLE_CPU_BOUND_S = 0.6     # generous: the Index page redrawing every 0.5 s cost 1.6 CPU-s here, an idle one ~0.05


def test_an_idle_index_page_costs_the_server_almost_nothing(tmp_path_factory):
    collection, index = private_index(tmp_path_factory)
    with running_app(index, collection) as url, browser_page() as page:
        pid = server_pid(url)
        page.goto(f"{url}/index")
        page.get_by_role("button", name="Index", exact=True).wait_for(timeout=90_000)
        time.sleep(3)                                   # the page has settled
        before = cpu_seconds(pid)
        time.sleep(IDLE_WINDOW_S)
        used = cpu_seconds(pid) - before
    assert used < IDLE_CPU_BOUND_S, f"the idle Index page cost the server {used:.2f} CPU-s in {IDLE_WINDOW_S:g} s"


def test_the_survey_page_shows_its_plots_and_downloads(tmp_path_factory):
    collection, index = private_index(tmp_path_factory)
    with running_app(index, collection) as url, browser_page() as page:
        page.goto(url.rstrip("/") + "/survey")
        box = page.get_by_label("What to survey")
        box.wait_for(timeout=90_000)
        box.fill("a yellow striped ellipse")
        box.press("Enter")
        page.wait_for_function(
            "document.querySelectorAll('[data-testid=\"stImage\"] img').length >= 3", timeout=120_000)
        page.wait_for_function("Array.from(document.querySelectorAll('[data-testid=\"stImage\"] img'))"
                               ".every(i => i.complete && i.naturalWidth > 100)", timeout=30_000)
        assert page.get_by_text("presence timeline", exact=False).first.is_visible()
        assert page.get_by_text("uncalibrated", exact=False).first.is_visible()
        for name in ("presence.csv", "occurrences.csv", "sites.csv"):
            assert page.get_by_role("button", name=name).count() == 1, name




def test_more_like_this_a_like_and_a_heatmap_in_chromium(tmp_path_factory, tmp_path):
    """After the first query: "more like this" on a card searches like it, a like is kept in the address, and the
    heatmaps draw on the grid; each step is screenshotted (into the test's folder)."""
    collection, index = private_index(tmp_path_factory)
    with running_app(index, collection) as url, browser_page() as page:
        type_query(page, url, "a red striped fish")
        page.wait_for_function(
            "document.querySelectorAll('[data-testid=\"stImage\"] img').length >= 16", timeout=60_000)
        page.get_by_role("button", name="image_search").nth(2).click()
        page.get_by_text("More like", exact=False).first.wait_for(timeout=90_000)
        assert "like=" in page.url
        page.screenshot(path=str(tmp_path / "more_like_this.png"), full_page=True)
        page.get_by_role("button", name="Back to the query").click()
        page.wait_for_function("!location.search.includes('like=')", timeout=60_000)
        page.get_by_role("button", name="thumb_up").first.click()
        page.wait_for_function("location.search.includes('up=')", timeout=60_000)
        page.get_by_text("1 liked", exact=False).first.wait_for(timeout=60_000)
        page.get_by_text("Heatmaps on the grid").click()
        page.wait_for_function("Array.from(document.querySelectorAll('[data-testid=\"stImage\"] img'))"
                               ".every(i => i.complete && i.naturalWidth > 0)", timeout=90_000)
        page.screenshot(path=str(tmp_path / "like_and_heatmaps.png"), full_page=True)
        assert page.get_by_text("No heatmap", exact=False).count() == 0
    assert (tmp_path / "more_like_this.png").stat().st_size > 10_000
    assert (tmp_path / "like_and_heatmaps.png").stat().st_size > 10_000


def test_the_embedding_spaces_setting_in_chromium(tmp_path_factory, tmp_path):
    """On an index with two embedding spaces: the search page's sidebar has the setting, fused cards show their
    rank in each space, choosing one space goes into the address and a reload keeps it; each step is
    screenshotted (into the test's folder)."""
    import shutil

    from tests.app_fixtures import TWO_SPACES, two_space_index

    collection, built = two_space_index(tmp_path_factory)
    index = tmp_path / "index"
    shutil.copytree(built, index)
    with running_app(index, collection) as url, browser_page(1400, 1400) as page:
        type_query(page, url, "a red striped fish")
        page.wait_for_function(
            "document.querySelectorAll('[data-testid=\"stImage\"] img').length >= 16", timeout=60_000)
        control = page.locator('[data-testid="stSidebar"]').get_by_role("combobox", name="Embedding spaces")
        assert control.count() == 1 and control.input_value() == "fused: reciprocal rank"
        page.get_by_text(f"ranks: {TWO_SPACES[0]}", exact=False).first.wait_for(timeout=30_000)
        page.screenshot(path=str(tmp_path / "spaces_fused.png"), full_page=True)
        control.click()
        page.get_by_role("option", name=TWO_SPACES[1], exact=True).click()
        page.wait_for_function(f"location.search.includes('space_fusion={TWO_SPACES[1]}')", timeout=60_000)
        page.get_by_text(f"space {TWO_SPACES[1]} only", exact=False).first.wait_for(timeout=60_000)
        page.wait_for_function("!document.body.innerText.includes('ranks: ')", timeout=60_000)   # one space
        page.reload()
        page.get_by_text(f"space {TWO_SPACES[1]} only", exact=False).first.wait_for(timeout=90_000)
        assert control.input_value() == TWO_SPACES[1]
        page.screenshot(path=str(tmp_path / "spaces_one.png"), full_page=True)
    assert (tmp_path / "spaces_fused.png").stat().st_size > 10_000
    log = server_log(index, url)
    assert "Traceback" not in log, log[-3000:]

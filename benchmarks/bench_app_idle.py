"""What an open app page costs the server: CPU seconds of the Streamlit process while a page sits idle in
headless Chromium, per page, and how long an indexing job started from the Index page takes with the page
open against the page closed.

    python3 benchmarks/bench_app_idle.py [--seconds 20] [--pages search,kis,session,index] [--job]

Builds a small synthetic collection and index with the tiny random models in a temporary folder (or uses
``--index``/``--collection``), starts the app headless on a free port (tests/browser_util.py), opens each
page alone in a fresh headless Chromium, lets it settle, then samples the server's user+system CPU
(/proc/PID/stat) over ``--seconds``.
``--job``: rebuilds every site from the Index page twice, once watching the page until the job ends and
once leaving it (about:blank) right after the click but for a look every 5 s; the job's duration is read
back from the page's "finished in N s" line.
"""
from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.browser_util import browser_page, cpu_seconds, running_app, server_pid, why_no_browser  # noqa: E402

PAGES = ("search", "kis", "session", "index")


def idle_cost(url: str, pid: int, name: str, seconds: float, settle: float) -> float:
    """Server CPU seconds over ``seconds`` while page ``name`` is open, alone in a fresh browser, and nobody
    touches it."""
    with browser_page() as page:
        page.goto(f"{url}/{name}")
        page.get_by_role("heading", level=1).first.wait_for(timeout=180_000)      # the page's script has run
        time.sleep(settle)
        before = cpu_seconds(pid)
        time.sleep(seconds)
        return cpu_seconds(pid) - before


def start_rebuild(page, url: str) -> None:
    """Open the Index page, tick "Rebuild even if up to date" and press Index."""
    page.goto(f"{url}/index")
    page.get_by_text("Rebuild even if up to date").click(timeout=90_000)
    page.get_by_role("button", name="Index", exact=True).click()
    page.get_by_text("Indexing", exact=False).first.wait_for(timeout=30_000)


def finished_seconds(page, timeout_s: float = 600) -> float:
    """The job's duration as the Index page prints it ("finished in N s")."""
    node = page.get_by_text(re.compile(r"finished in \d+ s")).first
    node.wait_for(timeout=timeout_s * 1000)
    return float(re.search(r"finished in (\d+) s", node.inner_text()).group(1))


def job_times(url: str) -> tuple[float, float]:
    """(seconds with the Index page open throughout, seconds with it closed after the click but for a look
    every 5 s to see whether the job is done)."""
    with browser_page() as page:
        start_rebuild(page, url)
        watched = finished_seconds(page)
    with browser_page() as page:
        start_rebuild(page, url)
        while True:                    # no page open but for a glance every 5 s
            page.goto("about:blank")
            time.sleep(5.0)
            page.goto(f"{url}/index")
            try:
                closed = finished_seconds(page, timeout_s=3)
                break
            except Exception:          # still running
                continue
    return watched, closed


def small_collection(base: Path, frames: int) -> tuple[Path, Path]:
    """A 2-site synthetic collection (3 videos of ``frames`` frames at 12 fps each) indexed by the tiny models."""
    from indexer.models import load_models
    from indexer.pipeline import IndexConfig, index_collection
    from mvk_tools.synth import make_collection

    collection = make_collection(base / "collection", sites=("Oahu_Jul2022", "PhuQuoc1_Jun2022"), videos_per_site=3,
                                 n_frames=frames, size=(320, 192), fps=12.0)
    encoder, extractor = load_models(model="mvk-tiny-vit", pretrained=None, backbone="color", random_weights=True)
    index = base / "index"
    index_collection(collection, index, encoder=encoder, extractor=extractor, config=IndexConfig(every_seconds=0.5))
    return collection, index


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0, help="sampling window per page")
    parser.add_argument("--settle", type=float, default=10.0, help="seconds a page gets to load before sampling")
    parser.add_argument("--pages", default=",".join(PAGES))
    parser.add_argument("--job", action="store_true", help="also time a rebuild with the Index page open / closed")
    parser.add_argument("--frames", type=int, default=120, help="frames per synthetic video (12 fps)")
    parser.add_argument("--index")
    parser.add_argument("--collection")
    args = parser.parse_args()
    if why_no_browser():
        sys.exit(f"bench_app_idle: {why_no_browser()}")
    with tempfile.TemporaryDirectory() as tmp:
        if args.index:
            index, collection = Path(args.index), Path(args.collection) if args.collection else None
        else:
            collection, index = small_collection(Path(tmp), args.frames)
        print(f"{args.seconds:g} s per page after {args.settle:g} s to settle; a fresh server per page")
        for name in args.pages.split(","):
            with running_app(index, collection) as url:   # nothing left over from another page's work
                used = idle_cost(url, server_pid(url), name, args.seconds, args.settle)
            print(f"idle {name:8s} {used:6.2f} CPU-s in {args.seconds:g} s ({100 * used / args.seconds:.1f}%)")
        if args.job:
            with running_app(index, collection) as url:
                watched, closed = job_times(url)
                print(f"rebuild from the Index page: {watched:.0f} s with the page open, {closed:.0f} s with it closed "
                      f"(ratio {watched / max(closed, 1):.2f})")


if __name__ == "__main__":
    main()

"""One test in a real browser: headless Chromium opens the running app, types a query, sees result images."""
from __future__ import annotations

import pytest

from tests.app_fixtures import small_index
from tests.browser_util import running_app, browser_page, type_query, why_no_browser

pytestmark = pytest.mark.browser


@pytest.mark.skipif(why_no_browser() is not None, reason=why_no_browser() or "")
def test_typing_a_query_in_chromium_shows_result_images(tmp_path_factory):
    collection, index = small_index(tmp_path_factory)
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

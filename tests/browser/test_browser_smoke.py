"""The browser infrastructure itself: a page that changes late, separate visitors, a
screenshot, and a real `calltrack serve`, all in Chromium."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import TYPE_CHECKING

from calltrack import __version__
from tests.browser.conftest import VIEWPORT, ContextFactory, LiveServers, Seen, StaticSite

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Expect

OWN = "+1 (555) 010-0100"
SWAPPED = "+1 (555) 010-0199"
# Like content a tracking snippet must still reach: a number changed and a tel: link added
# 2 s after load. The cookie, set at once unless the visitor has it, tells visitors apart.
PAGE = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>smoke</title></head>
<body>
<p>Call us: <span id="number">{OWN}</span></p>
<script>
  if (!/(^|; )visitor=/.test(document.cookie)) {{
    document.cookie = "visitor=" + Math.random().toString(36).slice(2) + "; path=/";
  }}
  setTimeout(function () {{
    document.getElementById("number").textContent = "{SWAPPED}";
    var link = document.createElement("a");
    link.id = "call";
    link.href = "tel:+15550100199";
    link.textContent = "Call";
    document.body.appendChild(link);
  }}, 2000);
</script>
</body></html>
"""
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def visitor_cookie(context: BrowserContext) -> str:
    """The one cookie the page set in ``context``."""
    cookies = context.cookies()
    assert [cookie.get("name") for cookie in cookies] == ["visitor"]
    value = cookies[0].get("value")
    assert value
    return value


def page_requests(site: StaticSite) -> list[Seen]:
    """The requests for pages (the browser also asks for /favicon.ico, when it likes)."""
    return [seen for seen in site.requests if seen.path != "/favicon.ico"]


def test_a_change_made_two_seconds_after_load_is_waited_for(
    browser_context: BrowserContext, live_server: LiveServers, expect: Expect, tmp_path: Path
) -> None:
    site = live_server.static({"/": PAGE})
    page = browser_context.new_page()
    page.goto(site.url("/?utm_source=smoke"))
    # Before the timer fires the page shows its own number (a local page loads in far less
    # than the 2 s), so the assertions below pass only because they waited.
    assert page.text_content("#number") == OWN
    assert page.locator("#call").count() == 0
    expect(page.locator("#number")).to_have_text(SWAPPED)
    expect(page.locator("#call")).to_have_attribute("href", "tel:+15550100199")
    assert page.get_attribute("a[href^='tel:']", "href") == "tel:+15550100199"
    assert [seen.path for seen in page_requests(site)] == ["/?utm_source=smoke"]

    shot = tmp_path / "smoke.png"
    page.screenshot(path=shot)
    data = shot.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    # IHDR, the first chunk, holds the picture's size: the context's viewport.
    assert data[12:16] == b"IHDR"
    assert struct.unpack(">II", data[16:24]) == (VIEWPORT["width"], VIEWPORT["height"])


def test_contexts_are_separate_visitors_and_tabs_of_one_share_its_cookies(
    make_context: ContextFactory, live_server: LiveServers
) -> None:
    site = live_server.static({"/": PAGE})
    first, second = make_context(), make_context()
    first.new_page().goto(site.url())
    assert second.cookies() == []
    mine = visitor_cookie(first)

    tab = first.new_page()  # a second tab of the same visitor sends the cookie back
    tab.goto(site.url())
    assert tab.evaluate("document.cookie") == f"visitor={mine}"
    assert visitor_cookie(first) == mine
    assert page_requests(site)[-1].headers.get("Cookie") == f"visitor={mine}"

    other = second.new_page()
    other.goto(site.url())
    assert "Cookie" not in page_requests(site)[-1].headers  # none of the first's cookies
    theirs = visitor_cookie(second)
    assert theirs != mine
    assert visitor_cookie(first) == mine  # the second's page did not touch the first's jar


def test_a_real_calltrack_serve_renders_its_home_page(
    browser_context: BrowserContext, live_server: LiveServers, expect: Expect
) -> None:
    server = live_server.calltrack()
    page = browser_context.new_page()
    answer = page.goto(server.base + "/")
    assert answer is not None
    assert answer.status == 200
    expect(page.locator("body")).to_contain_text(__version__)
    live_server.close()
    assert server.process.poll() is not None  # the helper stops what it started

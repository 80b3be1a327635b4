"""The page snippet in Chromium, against a real `calltrack serve` and a site on another port.

A page with the site's own number in text, in a tel: link, in a selector's element and in a
box added two seconds after load: the snippet shows the visit's tracking number in the
campaign's format everywhere; a second tab keeps it, another visitor gets another one, an
exhausted pool shows the stub, and a snippet whose server is down leaves the page as it was.
"""

from __future__ import annotations

import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from calltrack.config import Settings
from calltrack.store import open_store
from tests.browser.conftest import ContextFactory, LiveServers
from tests.conftest import new_account
from tests.faults._common import Server

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Expect, Page

OWN_TEXT = "8 (495) 123-45-67"
POOL = ("74950000001", "74950000002")
STUB = "74959999999"


def page_html(snippet_src: str) -> str:
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>shop</title></head>
<body>
<header><a id="header" class="phone" href="tel:+74951234567">+7 495 123-45-67</a></header>
<p>Call us: <span id="text">{OWN_TEXT}</span> or <a id="link" href="tel:84951234567">call</a></p>
<div id="later"></div>
<script>
  setTimeout(function () {{
    document.getElementById("later").textContent = "Credit: 74951234567";
  }}, 2000);
</script>
<script async src="{snippet_src}"></script>
</body></html>
"""


@dataclass
class Setup:
    site_url: str
    snippet_url: str
    server: Server


@pytest.fixture
def tracked(live_server: LiveServers, tmp_path: Path) -> Setup:
    """A campaign on 127.0.0.1 (any port) with a pool of two, its server, and its site."""
    database = f"sqlite:///{tmp_path / 'tracked.db'}"
    store = open_store(Settings.from_env(env={}, database_url=database))
    account, _ = new_account(store, "shop")
    store.add_campaign(account, 1, "Shop", "http://127.0.0.1", "active")
    for number in POOL:
        store.add_phone(account, number, 1, "", "dynamic")
    campaign = store.configure_campaign(
        account,
        1,
        stub=STUB,
        display_format="+7 (XXX) XXX-XX-XX",
        replace_numbers=["74951234567"],
        selector=".phone",
    )
    store.close()
    server = live_server.calltrack(database)
    snippet_url = f"{server.base}/t/{campaign.site_key}.js"
    site = live_server.static({"/": page_html(snippet_url)})
    return Setup(site.url("/"), snippet_url, server)


def shown(page: Page) -> dict[str, str | None]:
    return {
        "text": page.text_content("#text"),
        "link": page.get_attribute("#link", "href"),
        "header": page.text_content("#header"),
        "header_link": page.get_attribute("#header", "href"),
    }


def visit(context: BrowserContext, setup: Setup, expect: Expect, query: str = "") -> Page:
    page = context.new_page()
    page.goto(setup.site_url + query)
    expect(page.locator("#text")).not_to_have_text(OWN_TEXT)
    return page


def formatted(number: str) -> str:
    return f"+7 ({number[1:4]}) {number[4:7]}-{number[7:9]}-{number[9:]}"


def test_a_visit_with_utm_tags_shows_a_tracking_number_everywhere_also_in_content_added_later(
    browser_context: BrowserContext, tracked: Setup, expect: Expect
) -> None:
    page = visit(browser_context, tracked, expect, "?utm_source=yandex&utm_medium=cpc")
    number = POOL[0]
    assert shown(page) == {
        "text": formatted(number),
        "link": f"tel:+{number}",
        "header": formatted(number),
        "header_link": f"tel:+{number}",
    }
    expect(page.locator("#later")).to_have_text(f"Credit: {formatted(number)}")


def test_a_second_tab_keeps_the_number_and_another_visitor_gets_another(
    make_context: ContextFactory, tracked: Setup, expect: Expect
) -> None:
    first = make_context()
    one = shown(visit(first, tracked, expect, "?utm_source=yandex"))["text"]
    again = shown(visit(first, tracked, expect))["text"]
    other = shown(visit(make_context(), tracked, expect))["text"]
    assert one == again == formatted(POOL[0])
    assert other == formatted(POOL[1])


def test_when_the_pool_is_exhausted_the_stub_is_shown(
    make_context: ContextFactory, tracked: Setup, expect: Expect
) -> None:
    for number in POOL:
        assert shown(visit(make_context(), tracked, expect))["text"] == formatted(number)
    assert shown(visit(make_context(), tracked, expect))["text"] == formatted(STUB)


def test_a_snippet_whose_server_is_down_leaves_the_page_its_own_numbers(
    browser_context: BrowserContext, tracked: Setup, live_server: LiveServers, expect: Expect
) -> None:
    # The snippet comes from the site's own copy (a cache), but its server, which answers
    # hits, is down: the hit fails, and the page must stay as it was, without an error.
    with urllib.request.urlopen(tracked.snippet_url, timeout=10) as answer:
        script = answer.read()
    tracked.server.stop()
    site = live_server.static({"/": page_html("/snippet.js"), "/snippet.js": script})
    page = browser_context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(site.url("/?utm_source=yandex"))
    expect(page.locator("#later")).to_have_text("Credit: 74951234567")  # after 2 s
    assert shown(page) == {
        "text": OWN_TEXT,
        "link": "tel:84951234567",
        "header": "+7 495 123-45-67",
        "header_link": "tel:+74951234567",
    }
    assert [seen.path for seen in site.requests if seen.path == "/snippet.js"] == ["/snippet.js"]
    assert errors == []

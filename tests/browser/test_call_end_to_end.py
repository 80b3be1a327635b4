"""A call end to end: a visit in Chromium, then the PBX's events, then the v3 record.

A visitor with a Google Analytics cookie arrives from a search engine on a landing page with
utm tags, reads three pages of a site on another port, and calls the tracking number the
snippet showed. The PBX posts that call in the generic format and a second caller's call as
Zadarma's signed notifications, both over plain HTTP to a real `calltrack serve`. The v3
export then holds records that carry that visit (source, pages, analytics id, device, IP)
and the unique/target flags of the account's settings; a later call from the first caller
is not unique.
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import pytest

from calltrack.config import Settings
from calltrack.store import open_store
from calltrack.telephony import zadarma
from tests.browser.conftest import LiveServers, StaticSite
from tests.conftest import new_account
from tests.faults._common import Server

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Expect, Page

ZONE = "Europe/Moscow"
OWN = "8 (495) 123-45-67"
POOL = ("74950000001", "74950000002")
OFFICE = "74957654321"
CALLER = "79161234567"
OTHER_CALLER = "79037654321"
TARGET_SECONDS = 120
GA_COOKIE = "GA1.1.123456789.987654321"
UTM = "utm_source=yandex&utm_medium=cpc&utm_campaign=winter"
SEARCH = "http://ya.ru/search?text=shop"  # http: a https referrer is not sent to an http site
PAGES = ("/", "/catalog", "/contacts")  # the visit's order; each links to the next


def page_html(title: str, snippet_src: str, next_path: str) -> str:
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title></head>
<body>
<p>Call us: <a id="phone" href="tel:84951234567">{OWN}</a></p>
<a id="next" href="{next_path}">next</a>
<script async src="{snippet_src}"></script>
</body></html>
"""


@dataclass
class Shop:
    server: Server
    site: StaticSite
    key: str  # the account's API key, for the v3 export
    generic_secret: str
    zadarma_url: str
    zadarma_secret: str


@pytest.fixture
def shop(live_server: LiveServers, tmp_path: Path) -> Shop:
    """A campaign on 127.0.0.1 with a pool, target calls from 120 s, a generic and a Zadarma
    endpoint, its server and its three-page site."""
    database = f"sqlite:///{tmp_path / 'calls.db'}"
    store = open_store(Settings.from_env(env={}, database_url=database))
    account, key = new_account(store, "shop")
    store.add_campaign(account, 1, "Winter", "http://127.0.0.1", "active")
    for number in POOL:
        store.add_phone(account, number, 1, OFFICE, "dynamic")
    campaign = store.configure_campaign(
        account, 1, display_format="+7 (XXX) XXX-XX-XX", replace_numbers=["74951234567"]
    )
    store.set_account_settings(account, unique_days=180, target_seconds=TARGET_SECONDS)
    generic = store.add_telephony_endpoint(account, "generic")
    zadarma_endpoint = store.add_telephony_endpoint(account, "zadarma")
    store.close()
    server = live_server.calltrack(database, env={"CALLTRACK_TIMEZONE": ZONE})
    snippet = f"{server.base}/t/{campaign.site_key}.js"
    following = (*PAGES[1:], PAGES[0])
    site = live_server.static(
        {
            path: page_html(path, snippet, after)
            for path, after in zip(PAGES, following, strict=True)
        }
    )
    return Shop(
        server,
        site,
        key,
        generic.secret,
        f"{server.base}/telephony/zadarma/{zadarma_endpoint.endpoint.endpoint}",
        zadarma_endpoint.secret,
    )


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    """A POST as a PBX makes it: the status and the decoded JSON answer."""
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def post_generic(shop: Shop, call_id: str, caller: str, called: str, start: int) -> None:
    """started, answered, ended with 130 s of talk: one request per event, as they happen."""
    events = [
        {"event": "call.started", "call_id": call_id, "at": start, "caller": caller,
         "called": called},
        {"event": "call.answered", "call_id": call_id, "at": start + 5,
         "forwarded_to": OFFICE},
        {"event": "call.ended", "call_id": call_id, "at": start + 135, "talk_seconds": 130,
         "disposition": "answered"},
    ]  # fmt: skip
    headers = {"Authorization": f"Bearer {shop.generic_secret}", "Content-Type": "application/json"}
    for event in events:
        answer = post(f"{shop.server.base}/telephony/generic", json.dumps(event).encode(), headers)
        assert answer == (200, {"ok": True}), event


def post_zadarma(shop: Shop, call_id: str, caller: str, called: str, start: str) -> None:
    """NOTIFY_START, NOTIFY_ANSWER, NOTIFY_END of a 45 s call, each signed as Zadarma signs:
    the event's fields concatenated (START/END: caller_id, called_did, call_start; ANSWER:
    caller_id, destination, call_start) under the account's secret."""
    call = {"pbx_call_id": call_id, "caller_id": caller, "call_start": start}
    notifications = [
        ({"event": "NOTIFY_START", **call, "called_did": called}, caller + called + start),
        ({"event": "NOTIFY_ANSWER", **call, "destination": OFFICE}, caller + OFFICE + start),
        (
            {"event": "NOTIFY_END", **call, "called_did": called, "internal": "100",
             "duration": "45", "disposition": "answered", "status_code": "16",
             "is_recorded": "0"},
            caller + called + start,
        ),
    ]  # fmt: skip
    for form, signed in notifications:
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "Signature": zadarma.sign(signed, shop.zadarma_secret),
        }
        body = urllib.parse.urlencode(form).encode()
        assert post(shop.zadarma_url, body, headers) == (200, {"ok": True}), form


def records(shop: Shop, since: datetime) -> list[dict[str, Any]]:
    """The account's calls from the day of ``since`` on, from the v3 export over HTTP."""
    url = f"{shop.server.base}/api/?json/v3/{shop.key}/call/get/0/{since.date().isoformat()}"
    with urllib.request.urlopen(url, timeout=10) as answer:
        found = json.loads(answer.read())
    assert isinstance(found, list), found
    return found


def view(page: Page, expect: Expect, url: str) -> str:
    """Wait until the snippet swapped the number on ``url`` (its hit answered); the number."""
    expect(page).to_have_url(url)
    phone = page.locator("#phone")
    expect(phone).not_to_have_text(OWN)
    link = phone.get_attribute("href") or ""
    return re.sub(r"\D", "", link)


def test_a_call_to_the_number_a_visit_was_shown_carries_that_visit(
    browser_context: BrowserContext, shop: Shop, expect: Expect
) -> None:
    site = shop.site
    browser_context.add_cookies([{"name": "_ga", "value": GA_COOKIE, "url": site.base}])
    page = browser_context.new_page()
    landing = site.url(f"/?{UTM}")
    page.goto(landing, referer=SEARCH)
    shown = [view(page, expect, landing)]
    for path in PAGES[1:]:  # the visitor follows the site's own links
        page.click("#next")
        shown.append(view(page, expect, site.url(path)))
    number = shown[0]
    assert shown == [number] * 3  # the session keeps its number from page to page
    assert number in POOL
    assert page.text_content("#phone") == (
        f"+7 ({number[1:4]}) {number[4:7]}-{number[7:9]}-{number[9:]}"
    )
    user_agent = page.evaluate("navigator.userAgent")

    # The calls start after the last page view, the repeat call a second after the first
    # (a call in the same second is not earlier). The export shows calls up to now, so it is
    # read once the repeat call's start has passed.
    start = int(time.time())
    local_start = datetime.fromtimestamp(start, ZoneInfo(ZONE))  # today, for the service
    post_generic(shop, "pbx-1", "8" + CALLER[1:], "+" + number, start)
    zadarma_start = local_start.strftime("%Y-%m-%d %H:%M:%S")
    post_zadarma(shop, "in_1764625000.1", OTHER_CALLER, number, zadarma_start)
    post_generic(shop, "pbx-2", CALLER, number, start + 1)
    time.sleep(max(0.0, start + 1.1 - time.time()))

    found = records(shop, local_start)
    assert sorted(record["clientNumber"] for record in found) == sorted(
        [CALLER] * 2 + [OTHER_CALLER]
    )
    [other] = [record for record in found if record["clientNumber"] == OTHER_CALLER]
    first, repeat = sorted(
        (record for record in found if record["clientNumber"] == CALLER),
        key=lambda record: str(record["callTime"]),
    )
    visit = {
        "utm_source": "yandex",
        "utm_medium": "cpc",
        "utm_campaign": "winter",
        "referrer": "ya.ru",
        "entryPoint": site.url("/"),
        "entryPointQuery": landing,
        "callPage": site.url(PAGES[-1]),
        "pagesCount": 3,
        "counts": 1,
        "gaClid": "123456789.987654321",
        "ipAddress": "127.0.0.1",
        "userAgent": user_agent,
        "site": "127.0.0.1",
        "callerIdToClient": number,
        "ctCampaignId": 1,
        "ctCampaignName": "Winter",
        "managerNumber": OFFICE,
    }
    for record in (first, other, repeat):
        assert {name: record[name] for name in visit} == visit, record["clientNumber"]
        # Chromium on Linux (X11) is a computer; another build's user agent may name a model.
        assert record["device"] != ""
        assert "X11; Linux" not in user_agent or record["device"] == "desktop"
    flags = ("duration", "status", "unique", "target", "uniqueTarget")
    assert [[record[name] for name in flags] for record in (first, other, repeat)] == [
        [130, "success", True, True, True],  # the caller's first call, target (130 >= 120)
        [45, "success", True, False, False],  # another caller's first, too short for target
        [130, "success", False, True, False],  # the same caller again, after a target call
    ]
    assert len({record["universalId"] for record in found}) == 3

"""The console (/console/) in Chromium against a real `calltrack serve`, on SQLite and PostgreSQL.

A known data set (tests/browser/console_data.py) is imported into the server's database; every
number a page shows is checked against counts made in Python from the records imported. The
tests sign in, read the overview's counts and the chart drawn from them, switch to Russian and
back, sign out; filter the calls, page through them, follow one to its page and download the
filtered CSV, which must be what /api/v4/calls answers the same filters; read the campaigns'
numbers, rules, pool and advice and copy a snippet tag; in settings issue a key, use it, revoke
it and see it refused everywhere, grant a role and revoke the grant; add a webhook and a
telephony endpoint there, post a PBX's call to it and find the webhook's delivery (and its
answer) on the call's page. They check the session
cookie's flags and that forms without their CSRF token are refused; show a data set whose every
text field is markup and script on every page, which must stay text (no dialog, no console
error, no injected element); and sign in with a role key, which sees its grantor's calls and
campaigns and no settings (no link; the URLs and forms answer 403).

Screenshots: with ``CALLTRACK_SCREENSHOTS=1`` the SQLite runs write docs/console/*.png (one
1024x768 viewport each, English, the demo data set) for the README; otherwise nothing is
written, so a test run leaves the tree as it was.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from calltrack.store import Store
from tests.browser import console_data as data
from tests.browser.conftest import ContextFactory, LiveServers
from tests.conftest import StoreFactory
from tests.faults._common import Server
from tests.helpers_console import overview_counts

if TYPE_CHECKING:
    from playwright.sync_api import (
        BrowserContext,
        ConsoleMessage,
        Dialog,
        Expect,
        Locator,
        Page,
        Response,
    )

SESSION_COOKIE = "calltrack_console"
SESSION_HOURS = 12  # CALLTRACK_CONSOLE_SESSION_HOURS' default
SHOTS = Path(__file__).resolve().parents[2] / "docs" / "console"
TAKE_SHOTS = os.environ.get("CALLTRACK_SCREENSHOTS", "") == "1"


@dataclass
class Console:
    """A running server over a store holding a data set."""

    server: Server
    store: Store
    shop: data.Shop
    backend: str

    def url(self, path: str = "/console/") -> str:
        return self.server.base + path


def start(make_store: StoreFactory, backend: str, live_server: LiveServers, fill: Any) -> Console:
    store = make_store()
    shop = fill(store)
    # Webhooks may reach this machine's test sites (plain http on 127.0.0.1).
    env = {"CALLTRACK_HOOKS_ALLOW_HOSTS": "127.0.0.1"}
    server = live_server.calltrack(store.settings.database_url, env=env)
    return Console(server, store, shop, backend)


@pytest.fixture
def demo(make_store: StoreFactory, backend: str, live_server: LiveServers) -> Console:
    """The demo-like data set behind a real server, on this test's store."""
    return start(make_store, backend, live_server, data.demo_shop)


@pytest.fixture
def hostile(make_store: StoreFactory, backend: str, live_server: LiveServers) -> Console:
    """The hostile data set behind a real server, on this test's store."""
    return start(make_store, backend, live_server, data.hostile_shop)


@dataclass
class Watch:
    """What a page did that it must not: dialogs opened, console errors, failed scripts."""

    dialogs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    confirmed: list[str] = field(default_factory=list)  # the questions a test said yes to
    confirm_next: bool = False

    def attach(self, page: Page) -> Page:
        def on_dialog(dialog: Dialog) -> None:
            if dialog.type == "confirm" and self.confirm_next:
                self.confirm_next = False
                self.confirmed.append(dialog.message)
                dialog.accept()
                return
            self.dialogs.append(f"{dialog.type}: {dialog.message}")
            dialog.dismiss()

        def on_console(message: ConsoleMessage) -> None:
            # An error status is logged as "Failed to load resource": those of pages (a 401
            # for a wrong key, a 403) are the tests' own doing; on_response judges the rest.
            if message.type == "error" and not message.text.startswith("Failed to load"):
                self.errors.append(message.text)

        def on_response(response: Response) -> None:
            kind = response.request.resource_type
            if response.status >= 400 and kind != "document" and "favicon" not in response.url:
                self.errors.append(f"{response.status} for {kind} {response.url}")

        page.on("dialog", on_dialog)
        page.on("console", on_console)
        page.on("response", on_response)
        page.on("pageerror", lambda error: self.errors.append(f"page error: {error}"))
        return page

    def clean(self) -> None:
        assert self.dialogs == [], self.dialogs
        assert self.errors == [], self.errors


def new_page(context: BrowserContext) -> tuple[Page, Watch]:
    watch = Watch()
    return watch.attach(context.new_page()), watch


def sign_in(page: Page, expect: Expect, console: Console, key: str, path: str = "/") -> None:
    """Opens a console page signed out, is sent to the sign-in form, signs in, comes back."""
    page.goto(console.url("/console" + path))
    expect(page).to_have_url(re.compile(r"/console/sign-in\?next="))
    page.fill("input[name=key]", key)
    page.click("form[action='/console/sign-in'] button[type=submit]")
    expect(page).to_have_url(console.url("/console" + path))


def shot(page: Page, console: Console, name: str) -> None:
    """docs/console/NAME.png, when asked for (CALLTRACK_SCREENSHOTS=1) and on SQLite only."""
    if not TAKE_SHOTS or console.backend != "sqlite":
        return
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=False, animations="disabled")


def shown_counts(page: Page) -> dict[str, tuple[str, str]]:
    """The overview's counts: name -> (value shown, the previous period's, in its title)."""
    found: dict[str, tuple[str, str]] = {}
    for box in page.locator("[data-count]").all():
        name = box.get_attribute("data-count") or ""
        value = box.locator(".value").inner_text().strip()
        before = box.locator(".change").get_attribute("title") or ""
        found[name] = (value, before)
    return found


def expected_counts(console: Console, days: int) -> dict[str, tuple[str, str]]:
    """What the overview of the last ``days`` days must show, from the records imported."""
    last = data.today(console.store.settings.zone)
    first = last - timedelta(days=days - 1)
    now = overview_counts(data.in_days(console.shop.calls, first, last))
    before = overview_counts(
        data.in_days(console.shop.calls, first - timedelta(days=days), first - timedelta(1))
    )
    return {name: (data.thousands(now[name]), str(before[name])) for name in data.COUNTS}


def check_chart(page: Page, expect: Expect, console: Console, days: int) -> None:
    """The chart's data are the records' calls per day and source; uPlot drew them."""
    last = data.today(console.store.settings.zone)
    first = last - timedelta(days=days - 1)
    chart = json.loads(page.locator("#chart-data").text_content() or "null")
    assert chart["days"] == [(first + timedelta(n)).isoformat() for n in range(days)]
    wanted = data.per_day_and_source(console.shop.calls, first, last)
    named = [s for s in chart["series"] if not s.get("other")]
    assert 0 < len(named) <= 8
    for series in named:  # each named source: its own calls on each day
        assert series["values"] == wanted[series["name"]], series["name"]
    totals = [sum(values[n] for values in wanted.values()) for n in range(days)]
    drawn = [sum(s["values"][n] for s in chart["series"]) for n in range(days)]
    assert drawn == totals  # the rest is "other", so every call is in a bar
    rest = set(wanted) - {s["name"] for s in named}
    assert any(s.get("other") for s in chart["series"]) == bool(rest)
    holder = page.locator("#chart")
    expect(holder).to_have_attribute("data-drawn", str(len(chart["series"])))
    expect(holder.locator("canvas").first).to_be_visible()
    legend = holder.locator(".u-legend").inner_text()
    for series in named:
        assert series["name"] in legend


# -- signing in, the overview, the languages, signing out ---------------------------------------


def test_sign_in_overview_language_and_sign_out(
    demo: Console, browser_context: BrowserContext, expect: Expect
) -> None:
    page, watch = new_page(browser_context)
    page.goto(demo.url("/console/"))
    expect(page).to_have_url(re.compile(r"/console/sign-in\?next=%2Fconsole%2F$"))
    expect(page.locator("h1")).to_have_text("Sign in")
    shot(page, demo, "sign-in")

    # A wrong key: refused, still on the form.
    page.fill("input[name=key]", "0123456789abcdef")
    page.click("form[action='/console/sign-in'] button[type=submit]")
    expect(page.locator(".problem")).to_have_text("The key is unknown or revoked.")
    assert not [c for c in browser_context.cookies() if c["name"] == SESSION_COOKIE]

    page.fill("input[name=key]", demo.shop.key)
    page.click("form[action='/console/sign-in'] button[type=submit]")
    expect(page).to_have_url(demo.url("/console/"))
    expect(page.locator("h1")).to_have_text("Overview")
    expect(page.locator("header .who")).to_have_text("Account Demo shop")
    assert shown_counts(page) == expected_counts(demo, 7)  # 7 days unless asked
    check_chart(page, expect, demo, 7)
    shot(page, demo, "overview")

    page.click("a.chip[href='/console/?period=30d']")
    expect(page).to_have_url(demo.url("/console/?period=30d"))
    assert shown_counts(page) == expected_counts(demo, 30)
    check_chart(page, expect, demo, 30)
    top = page.locator(".top-table").first.locator("tbody tr").first.locator("td")
    last = data.today(demo.store.settings.zone)
    month = data.in_days(demo.shop.calls, last - timedelta(29), last)
    per_source = data.per_day_and_source(month, last - timedelta(29), last)
    best = max(sum(v) for v in per_source.values())
    assert top.nth(1).inner_text() == data.thousands(best)  # the top source's calls

    # Russian, and back: the same numbers under other words, the period kept.
    page.click("header .languages a[hreflang=ru]")
    expect(page).to_have_url(demo.url("/console/?period=30d"))
    expect(page.locator("html")).to_have_attribute("lang", "ru")
    expect(page.locator("h1")).to_have_text("Обзор")
    expect(page.locator("header nav a").first).to_have_text("Обзор")
    expect(page.locator("[data-count=calls] .label")).to_have_text("Звонки")
    assert shown_counts(page) == expected_counts(demo, 30)
    check_chart(page, expect, demo, 30)
    page.click("header .languages a[hreflang=en]")
    expect(page.locator("html")).to_have_attribute("lang", "en")
    expect(page.locator("h1")).to_have_text("Overview")

    page.click("form.sign-out button[type=submit]")
    expect(page).to_have_url(demo.url("/console/sign-in"))
    assert not [c for c in browser_context.cookies() if c["name"] == SESSION_COOKIE]
    page.goto(demo.url("/console/?period=30d"))
    expect(page).to_have_url(re.compile(r"/console/sign-in\?next=%2Fconsole%2F%3Fperiod%3D30d$"))
    watch.clean()


def test_the_session_cookie_is_http_only_strict_and_expires(
    demo: Console, browser_context: BrowserContext, expect: Expect
) -> None:
    page, watch = new_page(browser_context)
    before = time.time()
    sign_in(page, expect, demo, demo.shop.key)
    cookies = {c["name"]: c for c in browser_context.cookies()}
    session = cookies[SESSION_COOKIE]
    assert session["httpOnly"] is True
    assert session["sameSite"] == "Strict"
    assert session["path"] == "/console"
    assert session["secure"] is False  # plain http here; https sets Secure
    lifetime = SESSION_HOURS * 3600
    assert before + lifetime - 5 <= session["expires"] <= time.time() + lifetime + 5
    assert demo.shop.key not in session["value"]  # the key's id is in it, never the key
    assert SESSION_COOKIE not in page.evaluate("document.cookie")  # scripts cannot read it
    assert "calltrack_console_form" not in cookies  # the sign-in form's nonce is gone
    watch.clean()


def test_forms_without_their_csrf_token_are_refused(
    demo: Console, make_context: ContextFactory, expect: Expect
) -> None:
    context = make_context()
    page, _ = new_page(context)
    # The sign-in form without its token (or with a forged one) signs nobody in.
    for token in (None, "0" * 64):
        page.goto(demo.url("/console/sign-in"))
        strip_csrf(page, "form[action='/console/sign-in']", token)
        page.fill("input[name=key]", demo.shop.key)
        with page.expect_response(demo.url("/console/sign-in")) as answer:
            page.click("form[action='/console/sign-in'] button[type=submit]")
        assert answer.value.status == 403
        expect(page.locator(".problem")).to_have_text("The form expired; please sign in again.")
        assert not [c for c in context.cookies() if c["name"] == SESSION_COOKIE]

    # Signed in: the sign-out and a settings form without their token (or with another
    # session's) do nothing: still signed in, no key issued.
    sign_in(page, expect, demo, demo.shop.key)
    other, _ = new_page(make_context())
    sign_in(other, expect, demo, demo.shop.key)
    foreign = other.locator("form.sign-out input[name=csrf]").get_attribute("value")
    keys = demo.store.list_keys(demo.shop.account)
    forms = (
        ("/console/", "/console/sign-out"),
        ("/console/settings", "/console/settings/keys/issue"),
    )
    for (path, action), token in itertools.product(forms, (None, foreign)):
        page.goto(demo.url(path))
        strip_csrf(page, f"form[action='{action}']", token)
        with page.expect_response(demo.url(action)) as answer:
            page.click(f"form[action='{action}'] button[type=submit]")
        assert answer.value.status == 403
        expect(page.locator(".problem")).to_contain_text("The form was not sent from this console")
        page.goto(demo.url("/console/"))
        expect(page).to_have_url(demo.url("/console/"))  # still signed in
    assert demo.store.list_keys(demo.shop.account) == keys
    # The same POST from outside a page (no form at all) is refused too.
    refused = context.request.post(demo.url("/console/sign-out"), form={"x": "1"})
    assert refused.status == 403


def strip_csrf(page: Page, form: str, token: str | None) -> None:
    """Removes the form's CSRF field, or puts ``token`` in it."""
    field = page.locator(f"{form} input[name=csrf]")
    if token is None:
        field.evaluate("input => input.remove()")
    else:
        field.evaluate("(input, token) => { input.value = token; }", token)


# -- hostile data --------------------------------------------------------------------------------


def no_injection(page: Page, watch: Watch) -> None:
    """No element a payload carries exists, no dialog opened, no console error (a CSP refusal
    of an inline script would be one)."""
    assert page.locator("[id^='xss-']").count() == 0
    assert page.locator("main script").count() == page.locator("main script#chart-data").count()
    watch.clean()


def test_hostile_data_shows_as_text_on_the_overview(
    hostile: Console, browser_context: BrowserContext, expect: Expect
) -> None:
    page, watch = new_page(browser_context)
    sign_in(page, expect, hostile, hostile.shop.key)
    expect(page.locator("header .who")).to_have_text(f"Account {data.HOSTILE_NAME}")
    chart = json.loads(page.locator("#chart-data").text_content() or "null")
    sources = {data.source(r) for r in hostile.shop.calls}
    assert {s["name"] for s in chart["series"]} == sources  # the JSON kept the markup as data
    expect(page.locator("#chart")).to_have_attribute("data-drawn", str(len(sources)))
    tables = page.locator(".top-table")
    for index, name in enumerate(("utm_source", "ctCampaignName", "utm_campaign")):
        cell = tables.nth(index).locator("tbody tr").first.locator("td").first
        expect(cell).to_have_text(data.payload(name))
    assert data.payload("utm_source") in page.locator("#chart .u-legend").inner_text()
    no_injection(page, watch)
    # The calls: the table's text columns, then each call's page, field by field.
    page.click("header nav a[href='/console/calls']")
    expect(page.locator("table.calls tbody tr[data-id]")).to_have_count(len(hostile.shop.calls))
    first = page.locator("table.calls tbody tr[data-id]").first
    expect(first.locator("td").nth(5)).to_contain_text(data.payload("utm_source"))
    expect(first.locator("td").nth(6)).to_have_text(data.payload("ctCampaignName"))
    expect(first.locator(".tag").first).to_have_text(data.payload("tag"))
    no_injection(page, watch)
    for call in hostile.shop.calls[:2]:
        page.goto(hostile.url(f"/console/calls/{call['universalId']}"))
        for name in (*data.text_fields(), "visitSite"):
            expect(page.locator(f"dd[data-field={name}]")).to_have_text(data.payload(name))
        expect(page.locator("dd[data-field=tags]")).to_contain_text(data.payload("tag"))
        expect(page.locator("audio")).to_have_count(0)  # recordUrl is no web URL: no player
        assert page.locator("main a[href^='javascript'], main [src^='javascript']").count() == 0
        no_injection(page, watch)
    # The campaign the import made from the calls, named with markup.
    page.click("header nav a[href='/console/campaigns']")
    expect(page.locator("section.campaign .campaign-name")).to_have_text(
        data.payload("ctCampaignName")
    )
    no_injection(page, watch)
    # Settings: roles named with markup, granted to and by accounts named with markup.
    page.goto(hostile.url("/console/settings"))
    roles = page.locator("#roles")
    expect(roles.locator(".settings-card h3")).to_have_text(f"Role 1: {data.payload('role')}")
    expect(roles.locator("tr[data-grant] td").first).to_contain_text(data.payload("grantee"))
    expect(roles).to_contain_text(data.payload("grantor"))
    no_injection(page, watch)
    page.goto(hostile.url("/console/"))
    # In Russian too (other templates' strings around the same values).
    page.click("header .languages a[hreflang=ru]")
    expect(page.locator("html")).to_have_attribute("lang", "ru")
    expect(page.locator("header .who")).to_have_text(f"Аккаунт {data.HOSTILE_NAME}")
    no_injection(page, watch)


# -- a role key -----------------------------------------------------------------------------------


def test_a_role_key_sees_the_grantors_calls_and_no_settings(
    demo: Console, browser_context: BrowserContext, expect: Expect
) -> None:
    page, watch = new_page(browser_context)
    sign_in(page, expect, demo, demo.shop.role_key)
    expect(page.locator("header .who")).to_have_text("read-only: calls of Demo shop")
    links = page.locator("header nav a")
    expect(links).to_have_text(["Overview", "Calls", "Campaigns"])
    expect(page.locator("header nav a[href='/console/settings']")).to_have_count(0)
    assert shown_counts(page) == expected_counts(demo, 7)  # the shop's, not the agency's
    check_chart(page, expect, demo, 7)
    # The grantor's calls and campaigns, not the agency's own (it has none) nor another's.
    page.click("header nav a[href='/console/calls']")
    expect(page.locator(".calls-summary")).to_contain_text(
        f"Calls found: {data.thousands(len(demo.shop.calls))}"
    )
    foreign = demo.shop.other_calls[0]["universalId"]
    answer = page.goto(demo.url(f"/console/calls/{foreign}"))
    assert answer is not None
    assert answer.status == 404
    own = demo.shop.calls[0]
    page.goto(demo.url(f"/console/calls/{own['universalId']}"))
    expect(page.locator("#record dd[data-field=clientNumber]")).to_have_text(own["clientNumber"])
    page.click("header nav a[href='/console/campaigns']")
    expect(page.locator("section.campaign[data-campaign]")).to_have_count(
        len({r["ctCampaignId"] for r in demo.shop.calls if r["ctCampaignId"]})
    )
    for path in ("/console/settings", "/console/settings/hooks/1/log"):
        answer = page.goto(demo.url(path))
        assert answer is not None
        assert answer.status == 403, path
        expect(page.locator(".problem")).to_have_text(
            "A role key opens a read-only console: settings need a user key."
        )
    # Nor may it post a settings form, even with its own session's token.
    token = page.locator("form.sign-out input[name=csrf]").get_attribute("value") or ""
    refused = page.request.post(
        demo.url("/console/settings/keys/issue"), form={"csrf": token}, max_redirects=0
    )
    assert refused.status == 403
    assert "settings need a user key" in refused.text()  # refused as a role key, not for CSRF
    watch.clean()


# -- settings: keys issued and revoked, a role granted --------------------------------------------


def api_status(console: Console, key: str) -> int:
    """The status /api/v4/calls answers ``key``."""
    answer = urllib.request.Request(
        console.url("/api/v4/calls?limit=1"), headers={"Authorization": f"Bearer {key}"}
    )
    try:
        with urllib.request.urlopen(answer, timeout=10) as done:
            return int(done.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def key_row(page: Page, key: str) -> Locator:
    """The keys table's row of ``key`` (shown by its first four characters)."""
    return page.locator("#keys tr[data-key]").filter(
        has=page.locator(f"code:text-is('{key[:4]}…')")
    )


def test_settings_issue_and_revoke_a_key_and_grant_a_role(
    demo: Console, make_context: ContextFactory, expect: Expect
) -> None:
    page, watch = new_page(make_context())
    sign_in(page, expect, demo, demo.shop.key)
    page.click("header nav a[href='/console/settings']")
    expect(page).to_have_url(demo.url("/console/settings"))
    expect(page.locator("h1")).to_have_text("Settings")
    shot(page, demo, "settings")

    # The tracking settings: saved, and shown again.
    page.fill("#tracking input[name=unique_days]", "30")
    page.fill("#tracking input[name=target_seconds]", "90")
    page.click("#tracking button[type=submit]")
    expect(page.locator("#tracking input[name=unique_days]")).to_have_value("30")
    expect(page.locator("#tracking input[name=target_seconds]")).to_have_value("90")

    # A new user key, shown once with a copy button; it opens the API and the console.
    page.click("#keys form[action='/console/settings/keys/issue'] button")
    secret = page.locator("#secret")
    expect(secret).to_have_text(re.compile(r"^[a-z0-9]{16}$"))
    new_key = secret.inner_text()
    expect(page.locator("button[data-copy=secret]")).to_be_visible()
    assert api_status(demo, new_key) == 200
    elsewhere, _ = new_page(make_context())
    sign_in(elsewhere, expect, demo, new_key)
    page.goto(demo.url("/console/settings"))
    expect(page.locator("#secret")).to_have_count(0)  # never shown again
    assert new_key not in page.content()

    # Revoked (after the page's question): refused by the API, its session ended, no sign-in.
    row = key_row(page, new_key)
    expect(row).to_contain_text("active")
    watch.confirm_next = True
    row.locator("button", has_text="Revoke").click()
    expect(key_row(page, new_key)).to_contain_text("revoked")
    assert len(watch.confirmed) == 1
    assert new_key[:4] in watch.confirmed[0]
    assert api_status(demo, new_key) == 401
    elsewhere.goto(demo.url("/console/"))
    expect(elsewhere).to_have_url(re.compile(r"/console/sign-in\?next="))
    elsewhere.fill("input[name=key]", new_key)
    elsewhere.click("form[action='/console/sign-in'] button[type=submit]")
    expect(elsewhere.locator(".problem")).to_have_text("The key is unknown or revoked.")
    assert api_status(demo, demo.shop.key) == 200  # the others still work

    # A role granted to the agency: its key, shown once, opens a read-only console of ours.
    page.fill("#roles input[name=name]", "auditors")
    page.click("#roles form[action='/console/settings/roles/add'] button")
    card = page.locator("#roles .settings-card").filter(has_text="auditors")
    card.locator("input[name=grantee]").fill("Agency")
    card.locator("button", has_text="Grant").click()
    expect(page.locator("#secret")).to_have_text(re.compile(r"^[a-z0-9]{16}$"))
    role_key = page.locator("#secret").inner_text()
    agency, agency_watch = new_page(make_context())
    sign_in(agency, expect, demo, role_key)
    expect(agency.locator("header .who")).to_have_text("read-only: calls of Demo shop")
    # Its grant revoked: the role key's session ends.
    page.goto(demo.url("/console/settings"))
    grant = (
        page.locator("#roles .settings-card").filter(has_text="auditors").locator("tr[data-grant]")
    )
    watch.confirm_next = True
    grant.locator("button", has_text="Revoke").click()
    expect(
        page.locator("#roles .settings-card").filter(has_text="auditors").locator("tr[data-grant]")
    ).to_contain_text("revoked")
    agency.reload()
    expect(agency).to_have_url(re.compile(r"/console/sign-in\?next="))
    watch.clean()
    agency_watch.clean()


# -- calls: filtered, paged, one call, the CSV against the API -----------------------------------


def api_calls(console: Console, key: str, **params: str) -> list[dict[str, Any]]:
    """Every call /api/v4/calls gives ``key`` for ``params``, page after page."""
    found: list[dict[str, Any]] = []
    cursor = ""
    while True:
        query = {**params, "limit": "200", **({"cursor": cursor} if cursor else {})}
        request = urllib.request.Request(
            console.url("/api/v4/calls?" + urllib.parse.urlencode(query)),
            headers={"Authorization": f"Bearer {key}"},
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            body = json.loads(answer.read())
        found += body["calls"]
        cursor = body["next"]
        if not cursor:
            return found


FREE_TEXT = {*data.text_fields(), "visitSite", "siteVisit"}  # what visitors and PBXs write
CSV_TEXT = {*FREE_TEXT, "timezoneOffset"}  # "+0300" Excel would read as the number 300


def csv_cell(name: str, value: object) -> str:
    """A record value as the CSV for Excel writes it: booleans true/false, lists JSON, free
    text that a spreadsheet would run as a formula, and a time zone's offset, after a '."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    text = str(value)
    formula = text.startswith(("=", "+", "-", "@", "\t", "\r"))
    return "'" + text if formula and name in CSV_TEXT else text


def read_csv(content: bytes) -> tuple[list[str], list[dict[str, str]]]:
    """The header and rows of a CSV for Excel: UTF-8 with a byte order mark, ; between."""
    assert content.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(io.StringIO(content[3:].decode("utf-8"), newline=""), delimiter=";"))
    header = rows[0]
    return header, [dict(zip(header, row, strict=True)) for row in rows[1:]]


def row_ids(page: Page) -> list[str]:
    return [
        row.get_attribute("data-id") or ""
        for row in page.locator("table.calls tbody tr[data-id]").all()
    ]


def test_calls_filtered_paged_a_call_and_the_csv_the_api_gives(
    demo: Console, browser_context: BrowserContext, expect: Expect
) -> None:
    page, watch = new_page(browser_context)
    calls = demo.shop.calls
    sign_in(page, expect, demo, demo.shop.key, "/calls")
    expect(page.locator("h1")).to_have_text("Calls")
    expect(page.locator(".calls-summary")).to_contain_text(
        f"Calls found: {data.thousands(len(calls))}"
    )
    newest = sorted(calls, key=lambda r: r["callTime"], reverse=True)
    assert (
        page.locator("table.calls tbody tr[data-id]").first.locator("td").first.inner_text()
        == (newest[0]["callTime"])
    )
    shot(page, demo, "calls")

    # Filters from the form land in the URL; the page counts what Python counts.
    form = page.locator("form.filters")
    form.locator("select[name=status]").select_option("success")
    form.locator("select[name=serviceType]").select_option("calltracking")
    form.locator("select[name=unique]").select_option("true")
    form.locator("button[type=submit]").click()
    expect(page).to_have_url(re.compile(r"status=success"))
    page.wait_for_load_state()
    for part in ("serviceType=calltracking", "unique=true"):
        assert part in page.url
    filters = {"status": "success", "serviceType": "calltracking", "unique": "true"}
    wanted = [
        r
        for r in calls
        if r["status"] == "success" and r["serviceType"] == "calltracking" and r["unique"]
    ]
    assert 50 < len(wanted) < len(calls)  # more than one page, fewer than all
    expect(page.locator(".calls-summary")).to_contain_text(
        f"Calls found: {data.thousands(len(wanted))}"
    )
    api = api_calls(demo, demo.shop.key, order="-callTime", **filters)
    assert sorted(c["universalId"] for c in api) == sorted(r["universalId"] for r in wanted)
    ids = [c["universalId"] for c in api]
    times = {c["universalId"]: c["callTime"] for c in api}
    first_page = row_ids(page)
    assert first_page == ids[:50], [(i, times.get(i)) for i in first_page[:5]] + [
        (i, times[i]) for i in ids[:5]
    ]  # newest first, as the API orders them
    page.click("nav.pager a[rel=next]")
    expect(page).to_have_url(re.compile(r"cursor="))
    assert "status=success" in page.url  # the filters kept across pages
    rows = page.locator("table.calls tbody tr[data-id]")
    expect(rows.first).to_have_attribute("data-id", ids[50])
    assert row_ids(page) == ids[50:100]
    page.go_back()
    expect(rows.first).to_have_attribute("data-id", ids[0])

    # A call's page: its record, its visit, its recording.
    record = next(r for r in wanted if r["universalId"] == ids[0])
    page.locator(f"table.calls tr[data-id='{ids[0]}'] td a").first.click()
    expect(page).to_have_url(demo.url(f"/console/calls/{ids[0]}"))
    expect(page.locator("h1")).to_contain_text(str(ids[0]))
    for name in ("clientNumber", "managerNumber", "callTime", "ctCampaignName", "status"):
        expect(page.locator(f"#record dd[data-field={name}]")).to_have_text(str(record[name]))
    for name in ("utm_source", "referrer", "city", "userAgent"):
        expect(page.locator(f"#visit dd[data-field={name}]")).to_have_text(str(record[name]) or "—")
    expect(page.locator("audio")).to_have_attribute("src", str(record["recordUrl"]))
    shot(page, demo, "call")
    foreign = demo.shop.other_calls[0]["universalId"]
    answer = page.goto(demo.url(f"/console/calls/{foreign}"))
    assert answer is not None
    assert answer.status == 404  # another account's call is not there
    page.go_back()
    page.go_back()

    # The download of the filtered calls is the API's answer to the same filters.
    expect(page).to_have_url(re.compile(r"/console/calls\?"))
    with page.expect_download() as started:
        page.click(".downloads a[href^='/console/calls.csv']")
    download = started.value
    assert download.suggested_filename.endswith(".csv")
    header, lines = read_csv(Path(download.path()).read_bytes())
    assert set(header) - {"page"} == set(api[0])
    assert [line["universalId"] for line in lines] == ids
    for line, call in zip(lines, api, strict=True):
        assert {name: line[name] for name in call} == {
            name: csv_cell(name, value) for name, value in call.items()
        }, call["universalId"]
    watch.clean()


# -- campaigns: numbers, rules, the pool and its advice, the snippet tag ---------------------------


def test_campaigns_show_numbers_rules_pool_advice_and_copy_the_snippet(
    demo: Console, make_context: ContextFactory, expect: Expect
) -> None:
    context = make_context(permissions=["clipboard-read", "clipboard-write"])
    page, watch = new_page(context)
    sign_in(page, expect, demo, demo.shop.key)
    page.click("header nav a[href='/console/campaigns']")
    expect(page).to_have_url(demo.url("/console/campaigns"))
    expect(page.locator("h1")).to_have_text("Campaigns")
    sections = page.locator("section.campaign[data-campaign]")
    named = {r["ctCampaignId"] for r in demo.shop.calls if r["ctCampaignId"]}  # made by import
    shown = {int(s.get_attribute("data-campaign") or 0) for s in sections.all()}
    assert shown == named
    for campaign in demo.shop.campaigns:
        section = page.locator(f"section.campaign[data-campaign='{campaign.id}']")
        expect(section.locator(".campaign-name")).to_have_text(campaign.name)
        expect(section.locator("dl.settings")).to_contain_text(campaign.site)
        numbers = [
            (row.get_attribute("data-number"), row.get_attribute("data-kind"))
            for row in section.locator("table.numbers tbody tr").all()
        ]
        assert numbers == campaign.numbers
        rules = section.locator("table.rules tbody tr")
        expect(rules).to_have_count(len(campaign.rules))
        for row, (utm_source, number) in zip(rules.all(), campaign.rules, strict=True):
            expect(row.locator("td").nth(1)).to_have_text(utm_source)
            expect(row.locator("td").last).to_have_text(number or "a pool number")
        pool = {
            name: section.locator(f"[data-pool={name}] .value").inner_text()
            for name in ("size", "held_now", "peak", "exhausted")
        }
        assert pool == {
            "size": str(campaign.pool),
            "held_now": str(campaign.held),
            "peak": str(campaign.held),
            "exhausted": str(campaign.exhausted),
        }, campaign.name
        expect(section.locator("[data-advice]")).to_have_attribute("data-advice", campaign.advice)
        tag = f'<script async src="{demo.server.base}/t/{campaign.site_key}.js"></script>'
        expect(section.locator(f"#snippet-{campaign.id}")).to_have_text(tag)
    full = demo.shop.campaigns[0]  # every number held and a visitor got the stub
    wanted = max(full.pool + 1, -(-full.held * 4 // 3))  # the peak at 75% of the pool
    advice = page.locator(f"section.campaign[data-campaign='{full.id}'] .advice")
    expect(advice).to_contain_text(f"add numbers (about {wanted} in all)")
    shot(page, demo, "campaigns")  # the first is the one with a full pool

    # The copy button puts the tag on the clipboard.
    first = demo.shop.campaigns[0]
    button = page.locator(f"button[data-copy='snippet-{first.id}']")
    expect(button).to_be_visible()  # the script shows it
    button.click()
    expect(button).to_have_attribute("data-copied", "true")
    copied = page.evaluate("navigator.clipboard.readText()")
    assert copied == f'<script async src="{demo.server.base}/t/{first.site_key}.js"></script>'
    watch.clean()


# -- a call from the PBX: the endpoints made in settings, its webhook delivery on its page -------


def post_json(url: str, body: dict[str, Any], secret: str) -> int:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {secret}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        return int(answer.status)


def issued_secret(page: Page, expect: Expect) -> str:
    """The secret a settings form just issued, shown once."""
    secret = page.locator("#secret")
    expect(secret).to_be_visible()
    return secret.inner_text().strip()


def test_a_pbx_call_through_endpoints_made_in_settings_shows_its_webhook_delivery(
    demo: Console, browser_context: BrowserContext, live_server: LiveServers, expect: Expect
) -> None:
    crm = live_server.static({"/hook": "ok"})  # answers GET
    page, watch = new_page(browser_context)
    sign_in(page, expect, demo, demo.shop.key, "/settings")

    # A webhook (GET, after the call) and a generic telephony endpoint, from the forms.
    hooks = page.locator("form[action='/console/settings/hooks/add']")
    hooks.locator("input[name=url]").fill(crm.url("/hook"))
    hooks.locator("select[name=method]").select_option("GET")
    expect(hooks.locator("input[name=event_AFTER_CALL_FINISH]")).to_be_checked()
    hooks.locator("button[type=submit]").click()
    issued_secret(page, expect)
    expect(page.locator("#hooks tr[data-hook]")).to_contain_text(crm.url("/hook"))
    endpoints = page.locator("form[action='/console/settings/telephony/add']")
    endpoints.locator("select[name=provider]").select_option("generic")
    endpoints.locator("button[type=submit]").click()
    secret = issued_secret(page, expect)
    events_url = page.locator("#secret-url").inner_text().strip()
    assert events_url == demo.url("/telephony/generic")

    # The PBX's events of one answered call of 130 s.
    caller, start = "79161234567", int(time.time())
    events = [
        {"event": "call.started", "call_id": "pbx-1", "at": start, "caller": caller,
         "called": "74951234567"},
        {"event": "call.answered", "call_id": "pbx-1", "at": start + 1},
        {"event": "call.ended", "call_id": "pbx-1", "at": start + 131, "talk_seconds": 130,
         "disposition": "answered"},
    ]  # fmt: skip
    for event in events:
        assert post_json(events_url, event, secret) == 200, event
    deadline = time.monotonic() + 30
    while not [seen for seen in crm.requests if seen.path.startswith("/hook")]:
        assert time.monotonic() < deadline, "the webhook was never delivered"
        time.sleep(0.2)

    # The call is the newest; its page shows the delivery and its attempt.
    page.goto(demo.url(f"/console/calls?q={caller}"))
    rows = page.locator("table.calls tbody tr[data-id]")
    expect(rows).to_have_count(1 + sum(caller in str(r["clientNumber"]) for r in demo.shop.calls))
    expect(rows.first.locator("td").nth(1)).to_have_text(caller)
    rows.first.locator("td a").first.click()
    expect(page.locator("#record dd[data-field=duration]")).to_have_text("130")
    delivery = page.locator("table.deliveries tr[data-delivery]")
    deadline = time.monotonic() + 15  # the site has answered; the attempt is written after
    while "delivered" not in (delivery.all_inner_texts() or [""])[0]:
        assert time.monotonic() < deadline, delivery.all_inner_texts()
        time.sleep(0.2)
        page.reload()
    expect(delivery).to_have_count(1)
    expect(delivery).to_contain_text(crm.url("/hook"))
    expect(delivery).to_contain_text("AFTER_CALL_FINISH")
    expect(delivery).to_contain_text("delivered")
    expect(delivery.locator("ol.attempts li")).to_contain_text("HTTP 200")
    watch.clean()

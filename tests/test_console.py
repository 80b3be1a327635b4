"""The console's core: sign-in and its limits, the session cookie, CSRF, languages, safe
answers, and the overview's numbers against counts computed here from the imported records."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from datetime import date, datetime, timedelta
from html import unescape
from typing import Any

import msgspec
import pytest
from starlette.testclient import TestClient

from calltrack import access
from calltrack.console import i18n
from calltrack.console.overview import BadPeriod, Period, period_of
from calltrack.console.routes import console
from calltrack.console.session import COOKIE, SessionSigner
from calltrack.console.web import safe_next
from calltrack.demo_data import generate_calls
from calltrack.importer import import_bytes
from calltrack.model import source_of
from calltrack.store import Store
from tests.conftest import new_account
from tests.helpers_console import csrf_of, overview_counts, sign_in

MakeClient = Callable[..., tuple[TestClient, Store]]
Record = dict[str, Any]
HOSTILE = '<script>alert(1)</script>"><img src=x onerror=alert(2)>'


def load(store: Store, account: int, records: list[Record]) -> None:
    lines = b"\n".join(msgspec.json.encode(r) for r in records)
    import_bytes(store, account, lines, store.settings.zone)


def recent_calls(count: int, seed: int, prefix: str, days: int = 40) -> list[Record]:
    """Calls over the last ``days`` days up to now, in the service zone."""
    return list(generate_calls(count, seed=seed, id_prefix=prefix, days=days, now=datetime.now()))


# -- sign-in, the cookie, sign-out -----------------------------------------------------------


def test_pages_send_a_visitor_who_is_not_signed_in_to_the_sign_in_form(client: Any) -> None:
    http, _store = client
    answer = http.get("/console/?period=30d", follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/console/sign-in?next=%2Fconsole%2F%3Fperiod%3D30d"
    form = http.get(answer.headers["location"])
    assert form.status_code == 200
    assert 'name="next" value="/console/?period=30d"' in form.text
    assert http.get("/console", follow_redirects=False).headers["location"] == "/console/"


def test_a_user_key_signs_in_into_a_strict_http_only_expiring_cookie(client: Any) -> None:
    http, store = client
    _account, key = new_account(store, "shop")
    answer = sign_in(http, key, "/console/?period=7d")
    assert answer.headers["location"] == "/console/?period=7d"
    cookie = next(
        c for c in answer.headers.get_list("set-cookie") if c.startswith(COOKIE + "=")
    ).lower()
    assert "httponly" in cookie
    assert "samesite=strict" in cookie
    assert "path=/console" in cookie
    assert "max-age=43200" in cookie  # CALLTRACK_CONSOLE_SESSION_HOURS=12
    assert key not in answer.headers.get_list("set-cookie")[0]
    page = http.get("/console/")
    assert page.status_code == 200
    assert "Account shop" in page.text
    assert key not in page.text  # the key is never put into a page


def test_an_unknown_key_is_refused_and_failures_are_limited_per_ip(make_client: MakeClient) -> None:
    http, store = make_client(console_sign_in_limit=3)
    _account, key = new_account(store, "shop")
    for _ in range(3):
        form = http.get("/console/sign-in")
        answer = http.post(
            "/console/sign-in", data={"csrf": csrf_of(form.text), "key": "0" * 16, "next": ""}
        )
        assert answer.status_code in (401, 429)
        assert COOKIE not in http.cookies
    assert answer.status_code == 429
    assert "Too many failed sign-ins" in answer.text
    # Even the right key waits out the window: the limit is on the address, not the key.
    form = http.get("/console/sign-in")
    blocked = http.post("/console/sign-in", data={"csrf": csrf_of(form.text), "key": key})
    assert blocked.status_code == 429
    assert int(blocked.headers["retry-after"]) > 0
    assert COOKIE not in http.cookies


def test_sign_in_without_its_form_token_is_refused(client: Any) -> None:
    http, store = client
    _account, key = new_account(store, "shop")
    answer = http.post("/console/sign-in", data={"key": key}, follow_redirects=False)
    assert answer.status_code == 403
    form = http.get("/console/sign-in")
    forged = http.post("/console/sign-in", data={"key": key, "csrf": "0" * 64})
    assert forged.status_code == 403
    assert COOKIE not in http.cookies
    assert csrf_of(form.text)


def test_sign_out_needs_the_session_s_csrf_token_and_ends_it(client: Any) -> None:
    http, store = client
    _account, key = new_account(store, "shop")
    sign_in(http, key)
    refused = http.post("/console/sign-out", data={"csrf": "nope"}, follow_redirects=False)
    assert refused.status_code == 403
    assert http.get("/console/", follow_redirects=False).status_code == 200
    page = http.get("/console/")
    done = http.post("/console/sign-out", data={"csrf": csrf_of(page.text)}, follow_redirects=False)
    assert done.status_code == 303
    assert http.get("/console/", follow_redirects=False).status_code == 303


def test_a_revoked_key_ends_its_sessions_at_once(client: Any) -> None:
    http, store = client
    account, key = new_account(store, "shop")
    sign_in(http, key)
    assert http.get("/console/", follow_redirects=False).status_code == 200
    (info,) = store.list_keys(account)
    store.revoke_key(info.id)
    assert http.get("/console/", follow_redirects=False).status_code == 303


def test_forged_tampered_and_expired_cookies_are_refused() -> None:
    signer = SessionSigner("secret-one", 3600)
    session, value = signer.new(7, role_key=False)
    assert signer.read(value) == session
    assert SessionSigner("secret-two", 3600).read(value) is None
    body, _, signature = value.rpartition(".")
    assert signer.read(body + "." + signature[::-1]) is None
    assert signer.read("W1swLDAsIngiXQ.x.y") is None
    assert signer.read("") is None
    assert SessionSigner("secret-one", -1).read(value) is None  # past its age
    other, _ = signer.new(7, role_key=False)
    assert signer.csrf_ok(session, signer.csrf_token(session))
    assert not signer.csrf_ok(session, signer.csrf_token(other))
    assert not signer.csrf_ok(session, None)


def test_a_role_key_gets_a_read_only_console_of_its_grantor(client: Any) -> None:
    http, store = client
    grantor, _ = new_account(store, "clinic")
    grantee, _ = new_account(store, "agency")
    role = store.create_role(grantor, "reports")
    grant = store.create_grant(role.id, grantee)
    role_key = access.issue_role_key(store, grant)
    load(store, grantor, recent_calls(30, seed=3, prefix="3"))
    load(store, grantee, recent_calls(10, seed=4, prefix="4"))
    sign_in(http, role_key)
    page = http.get("/console/?period=30d")
    assert page.status_code == 200
    assert "read-only: calls of clinic" in page.text
    assert 'href="/console/settings"' not in page.text
    settings = http.get("/console/settings", follow_redirects=False)
    assert settings.status_code in (403, 404)  # 404 while the settings page is not routed
    store.revoke_grant(role.id, grantee)
    assert http.get("/console/", follow_redirects=False).status_code == 303


def test_a_role_key_granted_by_oneself_opens_no_console(client: Any) -> None:
    http, store = client
    account, _ = new_account(store, "self")
    grant = store.create_grant(store.create_role(account, "mine").id, account)
    form = http.get("/console/sign-in")
    answer = http.post(
        "/console/sign-in",
        data={"csrf": csrf_of(form.text), "key": access.issue_role_key(store, grant)},
    )
    assert answer.status_code == 401


@pytest.mark.parametrize(
    ("wanted", "goes"),
    [
        ("/console/calls?status=fail", "/console/calls?status=fail"),
        ("//evil.example/console/", "/console/"),
        ("https://evil.example/", "/console/"),
        ("/console/\\evil", "/console/"),
        ("/api/?json", "/console/"),
        (None, "/console/"),
    ],
)
def test_after_sign_in_the_console_goes_only_to_its_own_pages(
    wanted: str | None, goes: str
) -> None:
    assert safe_next(wanted) == goes


# -- languages, messages, answers ------------------------------------------------------------


def test_every_message_exists_in_both_languages_and_keeps_its_placeholders() -> None:
    catalog = console().catalog
    english, russian = catalog.translator("en"), catalog.translator("ru")
    field = re.compile(r"{(\w*)}")
    for key in catalog:
        en, ru = catalog.texts(key)
        assert en.strip(), key
        assert ru.strip(), key
        assert sorted(field.findall(en)) == sorted(field.findall(ru)), key
        values = {name: "X" for name in field.findall(en)}
        assert english(key, **values)
        assert russian(key, **values)


@pytest.mark.parametrize(
    ("cookie", "header", "chosen"),
    [
        (None, "ru-RU,ru;q=0.9,en;q=0.8", "ru"),
        (None, "en-US,en;q=0.9,ru;q=0.8", "en"),
        (None, "de-DE,de;q=0.9,ru;q=0.5", "ru"),
        (None, "ru;q=0.2,en;q=0.5", "en"),
        (None, "ru;q=0", "en"),
        (None, None, "en"),
        ("ru", "en", "ru"),
        ("xx", "ru", "ru"),
    ],
)
def test_the_language_comes_from_the_switch_else_the_browser(
    cookie: str | None, header: str | None, chosen: str
) -> None:
    assert i18n.choose(cookie, header) == chosen


def test_the_switch_remembers_russian_and_pages_speak_it(client: Any) -> None:
    http, store = client
    _account, key = new_account(store, "shop")
    sign_in(http, key)
    assert "Обзор" in http.get("/console/", headers={"accept-language": "ru"}).text
    switched = http.get("/console/language/ru?next=%2Fconsole%2F", follow_redirects=False)
    assert switched.status_code == 303
    assert switched.headers["location"] == "/console/"
    page = http.get("/console/")
    assert '<html lang="ru">' in page.text
    assert "Звонки" in page.text
    evil = http.get("/console/language/en?next=https://evil.example/", follow_redirects=False)
    assert evil.headers["location"] == "/console/"


def test_pages_carry_a_policy_that_runs_no_inline_script(client: Any) -> None:
    http, store = client
    _account, key = new_account(store, "shop")
    for answer in (http.get("/console/sign-in"), (sign_in(http, key), http.get("/console/"))[1]):
        policy = answer.headers["content-security-policy"]
        assert "script-src 'self'" in policy
        assert "unsafe-inline" not in policy
        assert "frame-ancestors 'none'" in policy
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["cache-control"] == "no-store"
        assert "<script>" not in answer.text  # scripts come from files only


def test_static_files_and_the_chart_library_s_licence_are_served(client: Any) -> None:
    http, _store = client
    script = http.get("/console/static/vendor/uPlot.iife.min.js")
    assert script.status_code == 200
    assert "uPlot" in script.text[:200]
    assert "MIT License" in http.get("/console/static/vendor/uPlot.LICENSE").text
    assert http.get("/console/static/console.js").status_code == 200
    assert http.get("/console/static/../routes.py").status_code == 404


# -- the overview ----------------------------------------------------------------------------


def _shown_counts(html: str) -> dict[str, int]:
    found = re.findall(r'data-count="(\w+)">\s*<div class="label">[^<]*</div>\s*'
                       r'<div class="value">([^<]*)</div>', html)  # fmt: skip
    return {name: int(value.replace("\u202f", "")) for name, value in found}


def _chart(html: str) -> dict[str, Any]:
    found = re.search(r'<script type="application/json" id="chart-data">(.*?)</script>', html)
    assert found, "no chart data"
    return msgspec.json.decode(unescape(found.group(1)))  # type: ignore[no-any-return]


@pytest.mark.parametrize("period", ["today", "7d", "30d", "custom"])
def test_the_overview_counts_a_period_against_the_previous_one(client: Any, period: str) -> None:
    http, store = client
    account, key = new_account(store, "shop")
    other, _ = new_account(store, "other")
    records = recent_calls(400, seed=11, prefix="1", days=70)
    load(store, account, records)
    load(store, other, recent_calls(100, seed=12, prefix="2", days=70))
    sign_in(http, key)
    today = datetime.now(store.settings.zone).date()
    first = {"today": today, "7d": today - timedelta(days=6), "30d": today - timedelta(days=29)}
    custom = {"period": "custom", "from": "2026-01-01", "to": "2026-01-01"}
    start = first.get(period, today - timedelta(days=20))
    end = today if period != "custom" else today - timedelta(days=5)
    if period == "custom":
        custom.update({"from": start.isoformat(), "to": end.isoformat()})
    params = custom if period == "custom" else {"period": period}
    page = http.get("/console/", params=params)
    assert page.status_code == 200, page.text

    def within(first_day: date, last_day: date) -> list[Record]:
        return [
            r
            for r in records
            if first_day.isoformat() <= r["callTime"][:10] <= last_day.isoformat()
        ]

    shown = within(start, end)
    length = timedelta(days=(end - start).days + 1)
    before = within(start - length, end - length)
    assert _shown_counts(page.text) == overview_counts(shown)
    wanted_calls = len(shown)
    if before:
        change = round((wanted_calls - len(before)) * 100 / len(before))
        assert f"{change:+d}%" in page.text

    if not shown:
        assert "No calls in this period." in page.text
        assert 'id="chart-data"' not in page.text
        return
    chart = _chart(page.text)
    assert chart["days"][0] == start.isoformat()
    assert chart["days"][-1] == end.isoformat()
    per_day_source = Counter(
        (r["callTime"][:10], source_of(r["utm_source"], r["referrer"])) for r in shown
    )
    drawn: Counter[tuple[str, str]] = Counter()
    for series in chart["series"]:
        assert not series.get("other"), "fewer sources than the chart stacks: no 'other'"
        for day, value in zip(chart["days"], series["values"], strict=True):
            if value:
                drawn[(day, series["name"])] = value
    assert drawn == per_day_source
    top_sources = Counter(source_of(r["utm_source"], r["referrer"]) for r in shown).most_common(1)
    if top_sources:
        assert f"<td>{top_sources[0][0]}</td>" in page.text


def test_the_overview_shows_hostile_values_as_text(client: Any) -> None:
    http, store = client
    account, key = new_account(store, "shop")
    records = recent_calls(5, seed=2, prefix="9", days=3)
    for record in records:
        record.update(utm_source=HOSTILE, utm_campaign=HOSTILE, ctCampaignName=HOSTILE)
    load(store, account, records)
    store.create_account(HOSTILE)
    sign_in(http, key)
    page = http.get("/console/?period=7d")
    assert page.status_code == 200
    assert HOSTILE not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    chart = re.search(r'id="chart-data">(.*?)</script>', page.text)
    assert chart
    assert "<" not in chart.group(1)


def test_a_bad_period_is_named_and_the_default_shown(client: Any) -> None:
    http, store = client
    _account, key = new_account(store, "shop")
    sign_in(http, key)
    for params in (
        {"period": "custom", "from": "2026-02-10", "to": "2026-02-01"},
        {"period": "custom", "from": "yesterday"},
        {"period": "custom", "from": "2020-01-01", "to": "2026-01-01"},
        {"period": "fortnight"},
    ):
        page = http.get("/console/", params=params)
        assert page.status_code == 400
        assert "The period needs two dates" in page.text


def test_periods_are_whole_days_and_the_previous_one_as_long() -> None:
    today = date(2026, 3, 31)
    assert period_of({"period": "today"}, today) == Period("today", today, today)
    week = period_of({}, today)
    assert (week.first, week.last, week.days) == (date(2026, 3, 25), today, 7)
    assert week.previous().last == date(2026, 3, 24)
    assert week.previous().days == 7
    one_day = period_of({"from": "2026-03-01"}, today)
    assert one_day == Period("custom", date(2026, 3, 1), date(2026, 3, 1))
    with pytest.raises(BadPeriod):
        period_of({"period": "custom", "from": "2026-03-02", "to": "2026-03-01"}, today)

"""The console's campaigns page over real stores (SQLite and PostgreSQL): each campaign's
numbers, rules, pool and advice (against ``pool_stats``), the snippet tag (against the CLI's),
both languages, whose campaigns a key sees, and hostile names escaped."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from html import unescape

import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient

from calltrack import access
from calltrack.cli import main
from calltrack.console.campaigns import MESSAGES
from calltrack.store import Store
from calltrack.store.tracking import TrackingCampaign
from calltrack.tracking.hits import HitBody, Visit, record_hit
from tests.conftest import new_account
from tests.helpers_console import sign_in

SITE = "https://shop.example"

MakeClient = Callable[..., tuple[TestClient, Store]]
HOSTILE = '<script>alert(1)</script>"><img src=x onerror=alert(1)>'
STATIC = "74951110000"
POOL = ("74950000000", "74950000001", "74950000002", "74950000003")
LATER = "74950000004"  # added to the pool after its peak
STUB = "74959999999"


def shop(store: Store, name: str = "shop") -> tuple[int, str, TrackingCampaign]:
    """An account with three campaigns: 1 tracked (a static number, a pool of four, three
    rules, a site key), 2 with a pool and no rules, 3 made without a site key."""
    account, key = new_account(store, name)
    store.add_campaign(account, 1, "Shop", SITE, "active")
    store.add_phone(account, STATIC, 1, "office", "static")
    for number in POOL:
        store.add_phone(account, number, 1, "office", "dynamic")
    tracked = store.configure_campaign(account, 1, stub=STUB, display_format="+7 (XXX) XXX-XX-XX")
    store.add_rule(account, 1, utm_source="yandex", number=STATIC)
    store.add_rule(account, 1, referrer="partner.example")
    store.add_rule(account, 1, source_type="social")
    store.save_campaign(account, 2, name="Blog", site="https://blog.example", status="paused")
    store.add_phone(account, "74952220000", 2, "office", "dynamic")
    store.add_campaign(account, 3, "Offline", "", "archived")  # no site key
    return account, key, tracked


def campaign_html(page: str, campaign_id: int) -> str:
    """The section of one campaign in the page."""
    found = re.search(
        rf'<section class="campaign" id="campaign-{campaign_id}".*?</section>', page, re.S
    )
    assert found, f"no campaign {campaign_id} on the page"
    return found.group(0)


def pool_shown(section: str) -> dict[str, int]:
    shown = re.findall(
        r'data-pool="(\w+)">\s*<div class="label">[^<]*</div>\s*<div class="value">(\d+)</div>',
        section,
    )
    return {name: int(value) for name, value in shown}


def snippet_shown(section: str, campaign_id: int) -> str:
    found = re.search(
        rf'<pre class="snippet" id="snippet-{campaign_id}"><code>(.*?)</code></pre>', section
    )
    assert found, "no snippet"
    return unescape(found.group(1))


def cli_snippet_tag(store: Store, account: str, campaign_id: int, server: str) -> str:
    result = CliRunner().invoke(
        main,
        ["--database", store.settings.database_url, "campaign", "snippet", account,
         str(campaign_id), "--server", server, "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    return str(json.loads(result.stdout.strip().splitlines()[-1])["tag"])


def visit(store: Store, campaign: TrackingCampaign, at: int) -> str:
    """A new visitor from no source at ``at``: the number it is shown."""
    hit = HitBody(k=campaign.site_key, u=f"{SITE}/")
    return record_hit(
        store, campaign, hit, Visit("127.0.0.1", "test", at, 0), store.settings.zone
    ).n


def peak_then_one_held(store: Store, campaign: TrackingCampaign) -> None:
    """Two hours ago six visitors came: four held the whole pool, two got the stub; those
    holds have ended. Then a fifth number joined the pool, and now one visitor holds one.
    So the pool is 5, held now 1, the peak 4, the stub hits 2: each figure its own."""
    earlier = int(time.time()) - 7200
    shown = [visit(store, campaign, earlier + second) for second in range(6)]
    assert shown == [*POOL, STUB, STUB]
    store.add_phone(campaign.account_id, LATER, campaign.campaign_id, "office", "dynamic")
    assert visit(store, campaign, int(time.time())) in (*POOL, LATER)


def test_the_page_shows_each_campaign_with_its_numbers_rules_pool_and_snippet(
    client: tuple[TestClient, Store],
) -> None:
    http, store = client
    account, key, tracked = shop(store)
    peak_then_one_held(store, tracked)
    sign_in(http, key)

    answer = http.get("/console/campaigns")
    assert answer.status_code == 200, answer.text
    assert "script-src 'self'" in answer.headers["content-security-policy"]
    page = answer.text
    assert "style=" not in page
    assert all("src=" in tag for tag in re.findall(r"<script[^>]*>", page))  # nothing inline

    first = campaign_html(page, 1)
    assert "Shop" in first
    assert "active" in first
    numbers = re.findall(r'data-number="(\d+)" data-kind="(\w+)"', first)
    assert numbers == store.campaign_numbers(account, 1)
    assert numbers == [(STATIC, "static"), *((n, "dynamic") for n in (*POOL, LATER))]
    rules = store.rules(account, 1)
    assert re.findall(r'data-rule="(\d+)"', first) == [str(rule.id) for rule in rules]
    rows = re.findall(r'<tr data-rule="\d+">(.*?)</tr>', first, re.S)
    assert "yandex" in rows[0]
    assert STATIC in rows[0]
    assert "partner.example" in rows[1]
    assert "a pool number" in rows[1]
    assert "social" in rows[2]
    assert "a pool number" in rows[2]

    stats = store.pool_stats(account, 1)
    assert (stats.size, stats.held_now, stats.peak_held, stats.exhausted_hits) == (5, 1, 4, 2)
    assert pool_shown(first) == {
        "size": stats.size,
        "held_now": stats.held_now,
        "peak": stats.peak_held,
        "exhausted": stats.exhausted_hits,
    }
    assert 'data-advice="add"' in first
    assert "add numbers (about 6 in all)" in first

    # The tag is the CLI's, with this server's address as the browser reached it.
    assert snippet_shown(first, 1) == cli_snippet_tag(store, "shop", 1, "http://testserver")
    assert tracked.site_key in snippet_shown(first, 1)
    button = re.search(r'<button type="button" data-copy="snippet-1"[^>]*>', first)
    assert button
    assert " hidden" in button.group(0)
    assert 'data-done="Copied"' in button.group(0)

    second = campaign_html(page, 2)
    assert "Blog" in second
    assert "paused" in second
    assert 'data-advice="enough"' in second
    assert "The pool is large enough." in second
    assert pool_shown(second) == {"size": 1, "held_now": 0, "peak": 0, "exhausted": 0}
    assert "No rules" in second

    third = campaign_html(page, 3)
    assert 'data-advice="no_pool"' in third
    assert "has no dynamic numbers" in third
    assert "no site key yet" in third
    assert "<pre" not in third
    # The page wrote nothing: the campaign still has no site key.
    assert store.campaign_setups(account)[2].campaign.site_key == ""


def test_campaign_setups_agree_with_the_per_campaign_reads(store: Store) -> None:
    account, _key, tracked = shop(store)
    peak_then_one_held(store, tracked)
    setups = store.campaign_setups(account)
    assert [s.campaign.campaign_id for s in setups] == [1, 2, 3]
    for setup in setups:
        campaign_id = setup.campaign.campaign_id
        assert setup.numbers == store.campaign_numbers(account, campaign_id)
        assert setup.rules == store.rules(account, campaign_id)
        assert setup.pool == store.pool_stats(account, campaign_id)
    assert setups[0].pool.advice == (
        "the peak passed 75% of the pool: add numbers (about 6 in all)"
    )  # the CLI's wording, unchanged


@pytest.mark.parametrize("how", ["accept-language", "cookie"])
def test_the_page_and_its_advice_are_in_russian(client: tuple[TestClient, Store], how: str) -> None:
    http, store = client
    _account, key, tracked = shop(store)
    peak_then_one_held(store, tracked)
    sign_in(http, key)
    if how == "cookie":
        page = http.get("/console/language/ru", params={"next": "/console/campaigns"}).text
        assert http.cookies.get("calltrack_lang") == "ru"
    else:
        page = http.get("/console/campaigns", headers={"accept-language": "ru-RU,ru;q=0.9"}).text
    assert '<html lang="ru">' in page
    first = campaign_html(page, 1)
    assert "добавьте номера (всего около 6)" in first
    assert "add numbers" not in first
    assert "Пула достаточно." in campaign_html(page, 2)
    assert "нет динамических номеров" in campaign_html(page, 3)
    assert 'data-done="Скопировано"' in first
    assert ">Копировать</button>" in first
    assert "номер из пула" in first
    assert "соцсети" in first


def test_every_message_has_both_languages_with_the_same_placeholders() -> None:
    for key, (english, russian) in MESSAGES.items():
        assert key.startswith("campaigns."), key
        assert english, key
        assert re.search("[а-яё]", russian, re.I), key  # worded in Russian, not left English
        assert set(re.findall(r"\{\w+\}", english)) == set(re.findall(r"\{\w+\}", russian)), key


def test_another_accounts_campaigns_never_appear(make_client: MakeClient) -> None:
    http, store = make_client()
    _account, key, _tracked = shop(store)
    rival, rival_key = new_account(store, "rival")
    store.add_campaign(rival, 9, "Rival secret", "https://rival.example", "active")
    store.add_phone(rival, "74957770000", 9, "office", "dynamic")
    sign_in(http, key)
    page = http.get("/console/campaigns", params={"account": str(rival)}).text
    assert "Shop" in page
    assert "Rival secret" not in page
    assert "74957770000" not in page

    other, _ = make_client()
    sign_in(other, rival_key)
    rival_page = other.get("/console/campaigns").text
    assert "Rival secret" in rival_page
    assert "74957770000" in rival_page
    assert "Shop" not in rival_page
    assert STATIC not in rival_page


def test_a_role_key_sees_the_grantors_campaigns(client: tuple[TestClient, Store]) -> None:
    http, store = client
    grantor, _key, _tracked = shop(store, "clinic")
    grantee, _ = new_account(store, "agency")
    store.add_campaign(grantee, 5, "Agency own", "https://agency.example", "active")
    grant = store.create_grant(store.create_role(grantor, "reports").id, grantee)
    sign_in(http, access.issue_role_key(store, grant))
    page = http.get("/console/campaigns").text
    assert "read-only" in page
    assert campaign_html(page, 1)
    assert "Shop" in page
    assert STATIC in page
    assert "Agency own" not in page


def test_hostile_names_and_rule_values_are_escaped(client: tuple[TestClient, Store]) -> None:
    http, store = client
    account, key = new_account(store, "shop")
    store.save_campaign(account, 1, name=HOSTILE, site=HOSTILE, status="active")
    store.add_rule(account, 1, utm_source=HOSTILE, utm_campaign=HOSTILE, referrer=HOSTILE)
    sign_in(http, key)
    page = http.get("/console/campaigns").text
    assert "<script>alert" not in page
    assert "<img" not in page
    section = campaign_html(page, 1)
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt;&#34;&gt;&lt;img src=x onerror=alert(1)&gt;"
    assert section.count(escaped) == 5  # the name, the site and three rule values
    assert page.count(escaped) == 6  # and the name in the index


def test_a_visitor_who_is_not_signed_in_goes_to_the_sign_in_form(
    client: tuple[TestClient, Store],
) -> None:
    http, _store = client
    answer = http.get("/console/campaigns", follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/console/sign-in?next=%2Fconsole%2Fcampaigns"


def test_an_account_without_campaigns_is_told_how_to_make_one(
    client: tuple[TestClient, Store],
) -> None:
    http, store = client
    _account, key = new_account(store, "empty")
    sign_in(http, key)
    answer = http.get("/console/campaigns")
    assert answer.status_code == 200
    assert "no campaigns yet" in answer.text
    assert "<section" not in answer.text
    assert http.head("/console/campaigns").status_code == 200


@pytest.mark.parametrize(("peer", "scheme"), [("10.0.0.5", "https"), ("192.0.2.7", "http")])
def test_the_tag_names_https_only_when_a_trusted_proxy_says_so(
    make_client: MakeClient, peer: str, scheme: str
) -> None:
    first, store = make_client(trusted_proxies="10.0.0.0/8")
    _account, key, tracked = shop(store)
    with TestClient(first.app, base_url="http://calls.example", client=(peer, 5000)) as http:
        sign_in(http, key)
        page = http.get("/console/campaigns", headers={"x-forwarded-proto": "https"}).text
    expected = cli_snippet_tag(store, "shop", 1, f"{scheme}://calls.example")
    assert snippet_shown(campaign_html(page, 1), 1) == expected
    assert tracked.site_key in expected

"""The public hit API and the snippet route over a real store, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import msgspec
import pytest
from starlette.testclient import TestClient

from calltrack.model import parse_local
from calltrack.store import Store
from calltrack.store import tracking as store_tracking
from calltrack.store.tracking import HIT_CAMPAIGN_SECONDS, SEEN_SLACK_SECONDS, TrackingCampaign
from calltrack.tracking.hits import HitBody, Visit, record_hit
from tests.conftest import new_account

MakeClient = Callable[..., tuple[TestClient, Store]]
SITE = "https://shop.example"
OWN = "74951234567"


def tracked_campaign(
    store: Store, dynamic: int = 2, static: tuple[str, ...] = (), **settings: Any
) -> TrackingCampaign:
    account, _ = new_account(store, "shop")
    store.add_campaign(account, 1, "Shop", SITE, "active")
    for number in static:
        store.add_phone(account, number, 1, "office", "static")
    for index in range(dynamic):
        store.add_phone(account, f"7495000000{index}", 1, "office", "dynamic")
    return store.configure_campaign(
        account,
        1,
        stub=settings.pop("stub", "74959999999"),
        replace_numbers=[OWN],
        display_format="+7 (XXX) XXX-XX-XX",
        **settings,
    )


def post_hit(
    http: TestClient, campaign: TrackingCampaign, origin: str | None = SITE, **fields: Any
) -> Any:
    body = {"k": campaign.site_key, "t": "hit", "u": f"{SITE}/catalog?utm_source=yandex"}
    body.update(fields)
    headers = {"content-type": "text/plain"}
    if origin is not None:
        headers["origin"] = origin
    return http.post("/t/hit", content=msgspec.json.encode(body), headers=headers)


def test_a_first_hit_gets_ids_and_a_pool_number_in_the_campaign_format(
    make_client: MakeClient,
) -> None:
    http, store = make_client()
    campaign = tracked_campaign(store)
    answer = post_hit(http, campaign)
    assert answer.status_code == 200, answer.text
    assert answer.headers["access-control-allow-origin"] == SITE
    got = answer.json()
    assert got["n"] == "74950000000"
    assert got["d"] == "+7 (495) 000-00-00"
    assert got["hold"] == 600
    assert len(got["v"]) >= 16
    assert len(got["s"]) >= 16


def test_the_same_session_keeps_its_number_and_another_visitor_gets_another(
    make_client: MakeClient,
) -> None:
    http, store = make_client()
    campaign = tracked_campaign(store)
    first = post_hit(http, campaign).json()
    again = post_hit(http, campaign, v=first["v"], s=first["s"], t="ping").json()
    assert (again["v"], again["s"], again["n"]) == (first["v"], first["s"], first["n"])
    other = post_hit(http, campaign).json()
    assert other["n"] not in ("", first["n"])
    exhausted = post_hit(http, campaign).json()
    assert exhausted["n"] == "74959999999"  # the stub
    assert store.pool_stats(campaign.account_id, 1).exhausted_hits == 1


def test_ids_the_server_did_not_issue_are_replaced(make_client: MakeClient) -> None:
    http, store = make_client()
    campaign = tracked_campaign(store)
    got = post_hit(http, campaign, v="x" * 22, s="<script>").json()
    assert got["v"] != "x" * 22
    assert got["s"] != "<script>"


@pytest.mark.parametrize(
    ("fields", "origin", "status"),
    [
        pytest.param({"k": "nosuchkeyatall"}, SITE, 404, id="unknown-site-key"),
        pytest.param({"u": "https://evil.example/"}, SITE, 403, id="page-off-the-site"),
        pytest.param({}, "https://evil.example", 403, id="foreign-origin"),
        pytest.param({"t": "click"}, SITE, 400, id="unknown-kind"),
        pytest.param({"u": "x" * 3000}, SITE, 400, id="huge-url"),
        pytest.param({"v": 5}, SITE, 400, id="wrong-type"),
    ],
)
def test_bad_hits_get_a_4xx_and_store_nothing(
    make_client: MakeClient, fields: dict[str, Any], origin: str, status: int
) -> None:
    http, store = make_client()
    campaign = tracked_campaign(store)
    answer = post_hit(http, campaign, origin=origin, **fields)
    assert answer.status_code == status
    assert set(answer.json()) == {"error"}
    if origin != SITE:  # a foreign page may not even read the refusal
        assert "access-control-allow-origin" not in answer.headers
    assert store.pool_stats(campaign.account_id, 1).held_now == 0


def test_a_body_that_is_not_json_or_too_large_is_refused(make_client: MakeClient) -> None:
    http, store = make_client()
    campaign = tracked_campaign(store)
    assert http.post("/t/hit", content=b"{not json").status_code == 400
    assert http.post("/t/hit", content=b"{" + b" " * 9000 + b"}").status_code == 413
    assert store.pool_stats(campaign.account_id, 1).held_now == 0


def test_hits_past_the_per_ip_limit_answer_429(make_client: MakeClient) -> None:
    http, store = make_client(hit_limit=3)
    campaign = tracked_campaign(store, dynamic=5)
    statuses = [post_hit(http, campaign).status_code for _ in range(5)]
    assert statuses == [200, 200, 200, 429, 429]
    assert store.pool_stats(campaign.account_id, 1).held_now == 3


def test_a_paused_campaign_answers_no_number(make_client: MakeClient) -> None:
    http, store = make_client()
    campaign = tracked_campaign(store)
    store.set_campaign_status(campaign.account_id, 1, "paused")
    assert post_hit(http, campaign).json()["n"] == ""


def test_a_settings_change_shows_in_hits_within_a_second(
    make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = SimpleNamespace(monotonic=lambda: 1000.0)
    monkeypatch.setattr(store_tracking, "time", clock)  # the store's clock only
    http, store = make_client()
    campaign = tracked_campaign(store)
    assert post_hit(http, campaign).json()["n"] == "74950000000"
    store.set_campaign_status(campaign.account_id, 1, "paused")
    store.remove_phone(campaign.account_id, "74950000001")
    # The worker still answers from the settings it read, but lends from the numbers' rows:
    # the removed number is not lent, and the pool is exhausted.
    assert post_hit(http, campaign).json()["n"] == "74959999999"
    clock.monotonic = lambda: 1000.0 + HIT_CAMPAIGN_SECONDS
    assert post_hit(http, campaign).json()["n"] == ""  # paused: the page keeps its numbers


def test_a_visitors_last_hit_is_written_to_within_an_hour(store: Store) -> None:
    campaign = tracked_campaign(store)
    zone = store.settings.zone
    start = parse_local("2026-05-01 10:00:00", zone, "from")  # an hour and more before midnight
    ids: dict[str, str | None] = {"v": None, "s": None}

    def ping_at(now: int) -> int:
        hit = HitBody(k=campaign.site_key, u=f"{SITE}/", t="ping", **ids)
        answer = record_hit(store, campaign, hit, Visit("127.0.0.1", "test", now, 0), zone)
        ids.update(v=answer.v, s=answer.s)
        with store._connect() as conn:
            row = conn.execute(
                "SELECT last_seen_at FROM visitors WHERE id = ?", (answer.v,)
            ).fetchone()
        return int(row[0])

    assert ping_at(start) == start
    # Pings of one visit (under 30 minutes apart) change nothing else of the visitor.
    for later in range(1200, SEEN_SLACK_SECONDS + 1, 1200):
        assert ping_at(start + later) == start
    assert ping_at(start + SEEN_SLACK_SECONDS + 1) == start + SEEN_SLACK_SECONDS + 1


def test_a_stub_that_is_a_pool_number_too_is_kept_like_any_number(
    make_client: MakeClient,
) -> None:
    http, store = make_client()
    campaign = tracked_campaign(store, stub="74950000000")
    first = post_hit(http, campaign).json()
    assert first["n"] == "74950000000"
    again = post_hit(http, campaign, v=first["v"], s=first["s"], t="ping").json()
    assert (again["s"], again["n"]) == (first["s"], "74950000000")


def test_a_rule_sends_a_source_to_its_static_number(make_client: MakeClient) -> None:
    http, store = make_client()
    campaign = tracked_campaign(store, static=("74951110000",))
    store.add_rule(campaign.account_id, 1, utm_source="yandex", number="74951110000")
    assert post_hit(http, campaign).json()["n"] == "74951110000"
    other = post_hit(http, campaign, u=f"{SITE}/?utm_source=google").json()
    assert other["n"].startswith("7495000000")


def test_the_snippet_carries_the_campaign_settings_and_is_cacheable(
    make_client: MakeClient,
) -> None:
    http, store = make_client()
    campaign = tracked_campaign(store)
    answer = http.get(f"/t/{campaign.site_key}.js")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/javascript")
    assert answer.headers["cache-control"] == "public, max-age=300"
    assert campaign.site_key in answer.text
    assert OWN in answer.text
    assert "/t/hit" in answer.text
    etag = answer.headers["etag"]
    assert (
        http.get(f"/t/{campaign.site_key}.js", headers={"if-none-match": etag}).status_code == 304
    )
    assert http.get("/t/nosuchkey.js").status_code == 404


def test_the_demo_site_is_served_only_when_the_demo_names_its_campaign(
    make_client: MakeClient,
) -> None:
    http, store = make_client()
    assert http.get("/demo/").status_code == 404
    campaign = tracked_campaign(store)
    demo, _ = make_client(demo_site=campaign.site_key)
    page = demo.get("/demo/catalog")
    assert page.status_code == 200
    assert f'<script async src="/t/{campaign.site_key}.js"></script>' in page.text
    assert "+7 (495) 123-45-67" in page.text  # the site's own number, for the snippet to swap
    assert demo.get("/demo/nosuchpage").status_code == 404

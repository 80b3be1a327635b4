"""Telephony events become v3 call records: the generic endpoint over a real store, on SQLite
and PostgreSQL."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypedDict, Unpack

import msgspec
import pytest
from starlette.testclient import TestClient

from calltrack.model import format_local
from calltrack.store import Store
from calltrack.telephony.service import sweep
from calltrack.tracking.hits import HitBody, Visit, record_hit
from tests.conftest import new_account

MakeClient = Callable[..., tuple[TestClient, Store]]
POOL = ("74950000001", "74950000002")
STATIC = "74951110000"
CALLER = "74991234567"
IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1"
)


class VisitIds(TypedDict, total=False):
    """The ids a hit may carry: visitor, session and the analytics client ids."""

    v: str | None
    s: str | None
    ga: str | None
    ym: str | None
    rs: str | None


class Shop:
    """An account with a tracked campaign, a telephony endpoint and an API key."""

    def __init__(self, http: TestClient, store: Store) -> None:
        self.http, self.store = http, store
        self.account, self.key = new_account(store, "shop")
        store.add_campaign(self.account, 7, "Spring", "https://shop.example", "active")
        for number in POOL:
            store.add_phone(self.account, number, 7, "74957654321", "dynamic")
        store.add_phone(self.account, STATIC, 7, "", "static")
        self.campaign = store.configure_campaign(self.account, 7)
        self.secret = store.add_telephony_endpoint(self.account, "generic").secret

    def visit(
        self, url: str, at: int, referrer: str = "", **ids: Unpack[VisitIds]
    ) -> dict[str, Any]:
        hit = HitBody(k=self.campaign.site_key, u=url, r=referrer, **ids)
        answer = record_hit(
            self.store, self.campaign, hit, Visit("203.0.113.7", IPHONE, at, 0),
            self.store.settings.zone,
        )  # fmt: skip
        return {"v": answer.v, "s": answer.s, "n": answer.n}

    def post(self, events: object, secret: str | None = None) -> Any:
        headers = {"authorization": f"Bearer {secret or self.secret}"}
        return self.http.post(
            "/telephony/generic", content=msgspec.json.encode(events), headers=headers
        )

    def calls(self) -> list[dict[str, Any]]:
        answer = self.http.get(f"/api/?json/v3/{self.key}/call/get/0/2020-01-01").json()
        return [] if isinstance(answer, dict) else list(answer)


def call_events(call_id: str, called: str, start: int, talk: int = 130) -> list[dict[str, Any]]:
    return [
        {"event": "call.started", "call_id": call_id, "at": start, "caller": "8" + CALLER[1:],
         "called": "+" + called},
        {"event": "call.answered", "call_id": call_id, "at": start + 5},
        {"event": "call.ended", "call_id": call_id, "at": start + 5 + talk, "talk_seconds": talk,
         "disposition": "answered", "forwarded_to": "74957654321"},
    ]  # fmt: skip


@pytest.fixture
def shop(make_client: MakeClient) -> Shop:
    return Shop(*make_client())


def test_a_call_to_a_lent_number_carries_the_visit_it_was_lent_to(shop: Shop) -> None:
    now = int(time.time()) - 3600
    first = shop.visit(
        "https://shop.example/landing?utm_source=yandex&utm_medium=cpc&utm_campaign=spring",
        now, referrer="https://ya.ru/", ga="123.456", ym="777",
    )  # fmt: skip
    shop.visit("https://shop.example/catalog", now + 30, v=first["v"], s=first["s"])
    shop.visit("https://shop.example/price?x=1", now + 60, v=first["v"], s=first["s"])
    answer = shop.post(call_events("pbx-1", first["n"], now + 90))
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"ok": True}
    [call] = shop.calls()
    expected = {
        "serviceType": "calltracking", "clientNumber": CALLER, "callerIdToManager": CALLER,
        "callerIdToClient": first["n"], "managerNumber": "74957654321",
        "statusFirst": 200, "statusSecond": 200, "status": "success",
        "callTime": format_local(now + 90, shop.store.settings.zone),
        "duration": 130, "tariffTime": 3, "site": "shop.example", "siteVisit": "shop.example",
        "visitSite": "shop.example", "referrer": "ya.ru", "utm_source": "yandex",
        "utm_medium": "cpc", "utm_campaign": "spring", "gaClid": "123.456", "yaClid": "777",
        "ipAddress": "203.0.113.7", "pagesCount": 3,
        "entryPoint": "https://shop.example/landing",
        "entryPointQuery": "https://shop.example/landing?utm_source=yandex&utm_medium=cpc"
        "&utm_campaign=spring",
        "callPage": "https://shop.example/price?x=1", "counts": 1, "userAgent": IPHONE,
        "ctCampaignId": 7, "ctCampaignName": "Spring", "unique": True, "target": True,
        "uniqueTarget": True, "region": "г. Москва", "country": "Россия",
    }  # fmt: skip
    assert {name: call[name] for name in expected} == expected
    assert call["device"] != ""
    assert call["localDate"] == call["callTime"]  # a Moscow caller, a Moscow service
    assert call["timezoneOffset"] == "+0000"
    assert call["ctCallId"] > 0
    # Written by the request itself: nothing is left behind for the sweeper.
    assert sweep(shop.store, shop.store.settings, int(time.time())) == 0


def test_the_same_events_twice_and_out_of_order_give_one_whole_call(shop: Shop) -> None:
    start = int(time.time()) - 600
    events = call_events("pbx-2", POOL[0], start)
    assert shop.post(events[::-1]).status_code == 200  # ended first: the whole call
    once = shop.calls()
    assert shop.post(events).status_code == 200  # again, in order: nothing changes
    assert shop.post(events[0]).status_code == 200  # a late start adds nothing
    assert shop.calls() == once
    [call] = once
    assert call["duration"] == 130
    recording = {"event": "call.recording", "call_id": "pbx-2", "at": start + 200,
                 "recording_url": "https://pbx.example/rec/2.mp3"}  # fmt: skip
    assert shop.post(recording).status_code == 200
    [updated] = shop.calls()
    assert updated["universalId"] == call["universalId"]
    assert updated["recordUrl"] == "https://pbx.example/rec/2.mp3"
    # Rebuilt from the late recording, the record keeps its flags (its own stored record,
    # in the same second, is no earlier call of the caller's).
    assert (updated["unique"], updated["uniqueTarget"]) == (call["unique"], True)


def test_a_second_call_from_the_caller_within_the_window_is_not_unique(shop: Shop) -> None:
    start = int(time.time()) - 7200
    shop.post(call_events("pbx-3", POOL[0], start, talk=30))
    shop.post(call_events("pbx-4", POOL[1], start + 600, talk=200))
    first, second = shop.calls()
    assert (first["unique"], first["target"], first["uniqueTarget"]) == (True, False, False)
    assert (second["unique"], second["target"], second["uniqueTarget"]) == (False, True, True)


def test_a_static_number_gives_its_rule_source_and_an_unknown_number_no_campaign(
    shop: Shop,
) -> None:
    shop.store.add_rule(shop.account, 7, utm_source="flyer", utm_medium="print", number=STATIC)
    start = int(time.time()) - 900
    shop.post(call_events("pbx-5", STATIC, start))
    shop.post(call_events("pbx-6", "74990000000", start + 1))
    static, unknown = shop.calls()
    assert (static["utm_source"], static["utm_medium"], static["ctCampaignId"]) == (
        "flyer", "print", 7,
    )  # fmt: skip
    assert static["pagesCount"] == 0
    assert (unknown["ctCampaignId"], unknown["site"], unknown["utm_source"]) == (0, "", "")


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        pytest.param({"event": "call.rang", "call_id": "x", "at": 1}, 422, "not an event",
                     id="unknown-event"),
        pytest.param({"event": "call.ended", "call_id": "x", "at": 5}, 422, "not a time",
                     id="impossible-time"),
        pytest.param({"event": "call.ended", "call_id": "x", "at": "soon"}, 422, "ISO 8601",
                     id="unreadable-time"),
        pytest.param({"event": "call.started", "call_id": "x", "at": 1700000000,
                      "caller": "call me"}, 422, "event", id="not-a-number"),
        pytest.param({"event": "call.recording", "call_id": "x", "at": 1700000000}, 422,
                     "recording_url", id="recording-without-url"),
        pytest.param([], 422, "no event", id="empty-array"),
    ],
)  # fmt: skip
def test_invalid_events_get_422_and_store_nothing(
    shop: Shop, body: object, status: int, message: str
) -> None:
    answer = shop.post(body)
    assert answer.status_code == status
    assert message in answer.json()["error"]
    assert shop.calls() == []


def test_a_bad_or_revoked_secret_gets_401(shop: Shop) -> None:
    events = call_events("pbx-7", POOL[0], int(time.time()) - 60)
    assert shop.post(events, secret="not-the-secret").status_code == 401
    no_header = shop.http.post("/telephony/generic", content=msgspec.json.encode(events))
    assert no_header.status_code == 401
    [endpoint] = shop.store.telephony_endpoints(shop.account)
    shop.store.revoke_telephony_endpoint(shop.account, endpoint.id)
    assert shop.post(events).status_code == 401
    assert shop.calls() == []


def test_a_call_left_open_four_hours_is_ended_as_failed_by_the_sweeper(shop: Shop) -> None:
    now = int(time.time())
    shop.post(call_events("pbx-8", POOL[0], now - 100)[:1])
    assert shop.calls() == []
    assert sweep(shop.store, shop.store.settings, now + 4 * 3600 + 1) == 1
    [call] = shop.calls()
    assert (call["status"], call["duration"], call["statusFirst"]) == ("fail", 0, 503)


def test_events_are_answered_while_an_import_holds_the_write_lock_and_never_lost(
    shop: Shop,
) -> None:
    start = int(time.time()) - 300
    held = threading.Event()
    release = threading.Event()

    def long_import() -> None:  # holds the calls' write lock as a long import does
        with shop.store._transaction():
            held.set()
            release.wait(timeout=30)

    importer = threading.Thread(target=long_import)
    importer.start()
    try:
        assert held.wait(timeout=10)
        began = time.monotonic()
        answer = shop.post(call_events("pbx-9", POOL[0], start))
        waited = time.monotonic() - began
        assert answer.status_code == 200, answer.text
        assert waited < shop.store.settings.db_timeout  # not left to wait out the import
    finally:
        release.set()
        importer.join()
    sweep(shop.store, shop.store.settings, int(time.time()))  # the turn the sweeper takes
    [call] = shop.calls()
    assert (call["duration"], call["callerIdToClient"]) == (130, POOL[0])
    assert sweep(shop.store, shop.store.settings, int(time.time())) == 0  # nothing left


def test_a_record_that_fails_to_build_leaves_the_events_merged_for_the_sweeper(
    shop: Shop, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The record is written in the transaction that merges call.ended: its failure must not
    # refuse the events (a PBX would post them again and again), nor lose them.
    from calltrack.telephony import service

    def broken(*args: object) -> object:
        raise RuntimeError("a record that cannot be built")

    monkeypatch.setattr(service, "build_record", broken)
    answer = shop.post(call_events("pbx-10", POOL[0], int(time.time()) - 300))
    assert answer.status_code == 200, answer.text
    assert shop.calls() == []
    monkeypatch.undo()
    assert sweep(shop.store, shop.store.settings, int(time.time())) == 1
    [call] = shop.calls()
    assert (call["duration"], call["callerIdToClient"]) == (130, POOL[0])

"""Telephony routes under bad input, repetition, reordering and a long write (contract section
5), over HTTP on SQLite and PostgreSQL: a documented answer each time, nothing stored on an
error, nothing lost and nothing doubled.

``CALLTRACK_HYPOTHESIS_EXAMPLES=500 pytest tests/test_telephony_robust.py`` runs the
interleaving test longer.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from calltrack.store import Store
from calltrack.telephony.service import sweep
from tests.conftest import new_account
from tests.test_telephony_zadarma import php_signature

MakeClient = Callable[..., tuple[TestClient, Store]]
App = tuple[TestClient, Store]
EXAMPLES = int(os.environ.get("CALLTRACK_HYPOTHESIS_EXAMPLES", "25"))
TRACKED = "74951110000"
CALL_START = "2026-11-30 12:00:05"
_runs = itertools.count()


class Account:
    """An account with a campaign owning TRACKED, a generic and two Zadarma endpoints."""

    def __init__(self, http: TestClient, store: Store, name: str) -> None:
        self.http, self.store = http, store
        self.id, self.key = new_account(store, name)
        store.add_campaign(self.id, 7, "Spring", "https://shop.example", "active")
        store.add_phone(self.id, TRACKED, 7, "74957654321", "static")
        self.secret = store.add_telephony_endpoint(self.id, "generic").secret
        self.zadarma = [store.add_telephony_endpoint(self.id, "zadarma") for _ in range(2)]

    def post(self, events: object) -> Any:
        return self.http.post(
            "/telephony/generic",
            content=msgspec.json.encode(events),
            headers={"authorization": f"Bearer {self.secret}"},
        )

    def notify(self, form: dict[str, str], endpoint: str, signature: str) -> Any:
        return self.http.post(
            f"/telephony/zadarma/{endpoint}",
            content=urlencode(form).encode(),
            headers={"content-type": "application/x-www-form-urlencoded",
                     "signature": signature},
        )  # fmt: skip

    def calls(self) -> list[dict[str, Any]]:
        answer = self.http.get(f"/api/?json/v3/{self.key}/call/get/0/2020-01-01")
        assert answer.status_code == 200, answer.text
        body = answer.json()
        return [] if isinstance(body, dict) else list(body)

    def stored_calls(self) -> int:
        """Calls the account's events made, ended or not."""
        with self.store._connect() as conn:
            row = conn.execute(
                "SELECT count(*) FROM telephony_calls WHERE account_id = ?", (self.id,)
            ).fetchone()
        return int(row[0])


@pytest.fixture
def app(make_client: MakeClient) -> App:
    """One app for all of a test's examples (each example opens an account of its own)."""
    return make_client()


@pytest.fixture
def shop(app: App) -> Account:
    return Account(*app, "shop")


# -- Zadarma signatures ----------------------------------------------------------------------

END = {
    "event": "NOTIFY_END", "call_start": CALL_START, "pbx_call_id": "in_robust_1",
    "caller_id": "79161234567", "called_did": TRACKED, "internal": "100", "duration": "42",
    "disposition": "answered", "status_code": "16", "is_recorded": "0",
}  # fmt: skip
END_TEXT = END["caller_id"] + END["called_did"] + CALL_START


def test_zadarma_bad_foreign_or_unknown_signatures_get_401_and_store_nothing(
    shop: Account,
) -> None:
    mine, other = shop.zadarma
    attempts = {
        "bad signature": (mine.endpoint.endpoint, php_signature(END_TEXT, "not-the-secret")),
        "another endpoint's": (mine.endpoint.endpoint, php_signature(END_TEXT, other.secret)),
        "unknown endpoint": ("no-such-endpoint", php_signature(END_TEXT, mine.secret)),
        "no signature": (mine.endpoint.endpoint, ""),
        "a changed signed field": (
            mine.endpoint.endpoint,
            php_signature(END_TEXT.replace("7916", "7917"), mine.secret),
        ),
    }
    for why, (endpoint, signature) in attempts.items():
        answer = shop.notify(END, endpoint, signature)
        assert answer.status_code == 401, why
        assert answer.json() == {"error": "unknown endpoint or bad signature"}, why
    assert shop.stored_calls() == 0
    assert shop.calls() == []
    # The same notification rightly signed is taken: the refusals above were the signature's.
    assert shop.notify(
        END, mine.endpoint.endpoint, php_signature(END_TEXT, mine.secret)
    ).json() == {"ok": True}
    [call] = shop.calls()
    assert (call["callerIdToClient"], call["duration"], call["ctCampaignId"]) == (TRACKED, 42, 7)


# -- bodies, numbers, times ------------------------------------------------------------------


def test_a_body_over_one_mib_gets_413_and_stores_nothing(shop: Account) -> None:
    event = {"event": "call.ended", "call_id": "big", "at": int(time.time()) - 60,
             "caller": "79161234567", "called": TRACKED, "talk_seconds": 5}  # fmt: skip
    padding = " " * (1024 * 1024)  # valid JSON once trimmed: only the size is wrong
    answer = shop.http.post(
        "/telephony/generic",
        content=msgspec.json.encode(event) + padding.encode(),
        headers={"authorization": f"Bearer {shop.secret}"},
    )
    assert answer.status_code == 413
    assert "error" in answer.json()
    form = {**END, "padding": "x" * (1024 * 1024)}
    signed = php_signature(END_TEXT, shop.zadarma[0].secret)
    assert shop.notify(form, shop.zadarma[0].endpoint.endpoint, signed).status_code == 413
    assert shop.stored_calls() == 0
    exact = msgspec.json.encode(event)
    exact += b" " * (1024 * 1024 - len(exact))  # 1 MiB exactly is still taken
    answer = shop.http.post(
        "/telephony/generic", content=exact, headers={"authorization": f"Bearer {shop.secret}"}
    )
    assert answer.status_code == 200, answer.text
    assert len(shop.calls()) == 1


def test_a_call_to_a_number_no_campaign_owns_is_kept_without_campaign(shop: Account) -> None:
    at = int(time.time()) - 300
    for index, called in enumerate(["74990000000", "+44 20 7946 0958", "+1 (212) 555-0100"]):
        event = {"event": "call.ended", "call_id": f"u{index}", "at": at + index,
                 "caller": "79161234567", "called": called, "talk_seconds": 3}  # fmt: skip
        answer = shop.post(event)
        assert answer.status_code == 200, answer.text
    records = {call["callerIdToClient"]: call for call in shop.calls()}
    assert sorted(records) == ["12125550100", "442079460958", "74990000000"]
    for record in records.values():
        assert (record["ctCampaignId"], record["ctCampaignName"], record["site"]) == (0, "", "")
        assert (record["duration"], record["clientNumber"]) == (3, "79161234567")


@pytest.mark.parametrize(
    "at",
    [
        pytest.param(0, id="epoch"),
        pytest.param(-1, id="negative"),
        pytest.param(946684799, id="a-second-before-2000"),
        pytest.param("in-two-days", id="two-days-ahead"),
        pytest.param(10**15, id="far-future"),
        pytest.param(2**70, id="beyond-64-bits"),
        pytest.param("2026-13-45T25:61:00", id="no-such-date"),
        pytest.param("1999-12-31T23:59:59+00:00", id="iso-before-2000"),
        pytest.param("", id="empty"),
        pytest.param(1.5e9, id="a-float"),
    ],
)
def test_impossible_times_get_422_and_store_nothing(shop: Account, at: object) -> None:
    now = int(time.time())
    when = now + 2 * 86400 if at == "in-two-days" else at
    good = {"event": "call.started", "call_id": "t0", "at": now - 10, "caller": "79161234567",
            "called": TRACKED}  # fmt: skip
    bad = {"event": "call.ended", "call_id": "t1", "at": when, "talk_seconds": 1}
    for body in (bad, [good, bad]):  # alone, and after a good event in the same request
        answer = shop.post(body)
        assert answer.status_code == 422, answer.text
        assert answer.json()["error"]
    form = {**END, "call_start": "2026-02-30 10:00:00"}
    signed = php_signature(END["caller_id"] + TRACKED + form["call_start"], shop.zadarma[0].secret)
    assert shop.notify(form, shop.zadarma[0].endpoint.endpoint, signed).status_code == 422
    assert shop.stored_calls() == 0


# -- duplicates, reordering, splitting -------------------------------------------------------


def call_events(call: int, base: int, ring: int, talk: int, recorded: bool) -> list[dict[str, Any]]:
    """A call's events in order; each names both numbers, as Zadarma's do."""
    caller, start = f"7916000{call:04d}", base + call * 1000
    numbers = {"call_id": f"pbx-{call}", "caller": caller, "called": TRACKED}
    events: list[dict[str, Any]] = [{"event": "call.started", "at": start, **numbers}]
    if talk:
        events.append({"event": "call.answered", "at": start + ring, "forwarded_to": "74957650000",
                       **numbers})  # fmt: skip
    events.append({
        "event": "call.ended", "at": start + ring + talk, "talk_seconds": talk,
        "disposition": "answered" if talk else "no_answer", **numbers,
    })  # fmt: skip
    if recorded:
        events.append({"event": "call.recording", "at": start + ring + talk + 9,
                       "recording_url": f"https://pbx.example/{call}.mp3", **numbers})  # fmt: skip
    return events


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[list[list[dict[str, Any]]], list[list[dict[str, Any]]]]:
    """(every call's events once in order, the same events as a PBX might deliver them:
    interleaved, some twice, out of order, split across requests)."""
    base = int(time.time()) - 86400
    calls = [
        call_events(call, base, draw(st.integers(0, 20)), draw(st.integers(0, 200)),
                    draw(st.booleans()))
        for call in range(draw(st.integers(1, 4)))
    ]  # fmt: skip
    stream = [event for events in calls for event in events]
    stream += draw(st.lists(st.sampled_from(stream), max_size=6))  # retries
    stream = draw(st.permutations(stream))
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(stream) - 1)), max_size=4)))
    requests = [stream[a:b] for a, b in itertools.pairwise([0, *cuts, len(stream)]) if a < b]
    return calls, requests


def as_delivered(events: list[dict[str, Any]], stream: list[dict[str, Any]]) -> list[Any]:
    """A call's events posted once in order, without those the contract lets add nothing:
    a start or an answer that first came after the call had ended."""
    ended = next(i for i, e in enumerate(stream) if e["event"] == "call.ended"
                 and e["call_id"] == events[0]["call_id"])  # fmt: skip
    late = {e["event"] for e in stream[ended:] if e["call_id"] == events[0]["call_id"]}
    early = {e["event"] for e in stream[:ended] if e["call_id"] == events[0]["call_id"]}
    return [e for e in events if e["event"] not in late - early - {"call.ended", "call.recording"}]


def comparable(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Records by caller, without what differs between two accounts (ids of the service)."""
    return {
        r["clientNumber"]: {k: v for k, v in r.items() if k not in ("universalId", "ctCallId")}
        for r in records
    }


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(delivery=deliveries())
def test_interleaved_repeated_reordered_events_give_the_records_of_one_ordered_delivery(
    app: App, delivery: tuple[list[list[dict[str, Any]]], list[list[dict[str, Any]]]]
) -> None:
    calls, requests = delivery
    run = next(_runs)
    once, shuffled = Account(*app, f"once{run}"), Account(*app, f"shuffled{run}")
    stream = [event for request in requests for event in request]
    for events in calls:
        assert once.post(as_delivered(events, stream)).status_code == 200
    for request in requests:
        answer = shuffled.post(request[0] if len(request) == 1 else request)
        assert answer.status_code == 200, answer.text
    records = shuffled.calls()
    assert len(records) == len(calls), "a call lost or doubled"
    assert len({r["universalId"] for r in records}) == len(calls)
    assert comparable(records) == comparable(once.calls())
    for record in records:  # each complete: its campaign, its end and its caller
        assert (record["ctCampaignId"], record["callerIdToClient"]) == (7, TRACKED)


# -- a long write on the store ---------------------------------------------------------------

HOLD_SECONDS = 3.0


def hold_write_lock(store: Store, held: threading.Event, seconds: float) -> None:
    """Hold the calls' write lock as an import does, for ``seconds``."""
    with store._transaction():
        held.set()
        time.sleep(seconds)


def test_events_are_answered_while_an_import_holds_the_write_lock(
    backend: str, shop: Account
) -> None:
    start = int(time.time()) - 86400
    held = threading.Event()
    holder = threading.Thread(target=hold_write_lock, args=(shop.store, held, HOLD_SECONDS))
    holder.start()
    assert held.wait(5)
    answers: list[tuple[int, float, str]] = []
    try:
        for call in range(3):
            events = call_events(call, start, 5, 60, False)
            began = time.monotonic()
            answer = shop.post(events)
            answers.append(
                (
                    answer.status_code,
                    time.monotonic() - began,
                    answer.headers.get("retry-after", ""),
                )
            )
    finally:
        holder.join()
    print(f"\n{backend}: answers during a {HOLD_SECONDS} s write hold: {answers}")
    if backend == "postgres":
        # Events merge beside the import; their records wait for the lock, not the request.
        assert [status for status, _, _ in answers] == [200, 200, 200]
        assert max(seconds for _, seconds, _ in answers) < HOLD_SECONDS / 3
    else:
        # One write lock serializes SQLite: each answer is 200 (kept aside or merged) or 503
        # with Retry-After, and never waits past the store's timeout.
        for status, seconds, retry in answers:
            assert status == 200 or (status == 503 and retry), (status, retry)
            assert seconds < shop.store.settings.db_timeout + 1
    sweep(shop.store, shop.store.settings, int(time.time()))
    stored = {call["clientNumber"] for call in shop.calls()}
    accepted = {
        f"7916000{call:04d}" for call, (status, _, _) in enumerate(answers) if status == 200
    }
    assert stored == accepted, "an answered call is missing after the sweep"

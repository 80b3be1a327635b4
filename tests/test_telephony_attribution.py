"""Calls attributed through the real store against models of the rules (contract section 6).

Random visitors hit a small pool while holds run out, and calls to pool numbers arrive at
random times (also at the very edges of holds): every record carries exactly the visit fields
of the session that held the called number at the call's start (``[lent, until)``), or none.
Random call histories of a few callers get ``unique``/``target``/``uniqueTarget`` as a model
of the account's settings says, with calls exactly ``unique_days`` days apart, in the same
second, and around midnight in the service time zone (across a daylight saving change).

``CALLTRACK_HYPOTHESIS_EXAMPLES=500 pytest tests/test_telephony_attribution.py`` runs it
longer.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from calltrack.model import parse_local
from calltrack.store import Store
from calltrack.telephony.events import TelephonyEvent
from calltrack.telephony.service import receive
from calltrack.tracking.hits import HitBody, Visit, record_hit
from tests.conftest import new_account

MakeClient = Callable[..., tuple[TestClient, Store]]
App = tuple[TestClient, Store]
EXAMPLES = int(os.environ.get("CALLTRACK_HYPOTHESIS_EXAMPLES", "25"))
HOLD = 60
POOL = ("74950000001", "74950000002")
_runs = itertools.count()
Step = Literal["hit", "ping", "wait", "call", "edge"]
RUN = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture
def app(make_client: MakeClient) -> App:
    """One app for all of a test's examples (each example opens an account of its own)."""
    return make_client()


@pytest.fixture
def berlin(make_client: MakeClient) -> App:
    return make_client(timezone=ZONE)


@dataclass
class Session:
    """What a record must say of the session: fixed by its first hit, and its page views."""

    visitor: int
    ordinal: int
    landing: str
    referrer: str
    ga: str
    ym: str
    rs: str
    views: list[tuple[int, str]] = field(default_factory=list)

    def fields(self, at: int) -> dict[str, object]:
        seen = [url for viewed, url in self.views if viewed <= at]
        return {
            "utm_source": f"src{self.visitor}", "utm_medium": "cpc", "utm_campaign": "",
            "referrer": self.referrer, "gaClid": self.ga, "yaClid": self.ym,
            "roistatClid": self.rs, "entryPoint": self.landing.split("?")[0],
            "entryPointQuery": self.landing, "pagesCount": len(seen),
            "callPage": seen[-1] if seen else "", "counts": self.ordinal,
            "ipAddress": f"203.0.113.{self.visitor + 1}", "userAgent": f"agent-{self.visitor}",
        }  # fmt: skip


NO_VISIT: dict[str, object] = {
    "utm_source": "", "utm_medium": "", "utm_campaign": "", "referrer": "", "gaClid": "",
    "yaClid": "", "roistatClid": "", "entryPoint": "", "entryPointQuery": "", "pagesCount": 0,
    "callPage": "", "counts": 0, "ipAddress": "", "userAgent": "",
}  # fmt: skip


@dataclass
class Lending:
    """The holds the answers told of: per number, (session, lent, until) in lending order."""

    spans: dict[str, list[list[Any]]] = field(default_factory=lambda: {n: [] for n in POOL})

    def lent(self, number: str, session: str, now: int) -> None:
        if number not in self.spans:
            return  # the stub or no number: nothing held
        spans = self.spans[number]
        if spans and spans[-1][0] == session and spans[-1][2] > now:
            spans[-1][2] = max(spans[-1][2], now + HOLD)  # the session keeps its number
        else:
            assert not spans or spans[-1][2] <= now, f"{number} lent while held"
            spans.append([session, now, now + HOLD])

    def holder(self, number: str, at: int) -> str | None:
        held = [session for session, lent, until in self.spans[number] if lent <= at < until]
        assert len(held) <= 1
        return held[0] if held else None


steps = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(["hit", "ping"]), st.integers(0, 3), st.just(0)),
        st.tuples(st.just("wait"), st.integers(1, 150), st.just(0)),
        # A call to a pool number some seconds before now (0: this very second).
        st.tuples(st.just("call"), st.integers(0, 1), st.integers(0, 200)),
        # A call at an edge of one of the number's holds: its lending second, its last
        # second, the second it ended, the second before it was lent.
        st.tuples(st.just("edge"), st.integers(0, 1), st.integers(0, 63)),
    ),
    max_size=40,
)


@RUN
@given(script=steps)
def test_every_call_gets_the_session_that_held_its_number_at_its_start_or_none(
    app: App, script: list[tuple[Step, int, int]]
) -> None:
    http, store = app
    run = next(_runs)
    account, key = new_account(store, f"attr{run}")
    store.add_campaign(account, 1, "Shop", "https://shop.example", "active")
    for number in POOL:
        store.add_phone(account, number, 1, "", "dynamic")
    campaign = store.configure_campaign(account, 1, hold_seconds=HOLD)
    endpoint = store.add_telephony_endpoint(account, "generic").endpoint
    zone = store.settings.zone
    now = parse_local("2026-05-01 10:00:00", zone, "from")
    lending = Lending()
    sessions: dict[str, Session] = {}
    ids: dict[int, tuple[str | None, str | None]] = {}
    hits = itertools.count()
    expected: dict[str, dict[str, object]] = {}  # caller: the record's visit fields
    for kind, a, b in script:
        if kind == "wait":
            now += a
            continue
        if kind in ("hit", "ping"):
            index = next(hits)
            url = f"https://shop.example/p{index}?utm_source=src{a}&utm_medium=cpc"
            visitor, session = ids.get(a, (None, None))
            hit = HitBody(
                k=campaign.site_key, u=url, t=kind, v=visitor, s=session,
                r=f"https://ref{a}.example/x", ga=f"GA1.{index}", ym=f"{index}", rs=f"rs{index}",
            )  # fmt: skip
            answer = record_hit(store, campaign, hit, Visit(f"203.0.113.{a + 1}",
                                f"agent-{a}", now, 0), zone)  # fmt: skip
            if answer.s not in sessions:
                ordinal = 1 + sum(1 for s in sessions.values() if s.visitor == a)
                sessions[answer.s] = Session(
                    a, ordinal, url, f"ref{a}.example", f"GA1.{index}", f"{index}", f"rs{index}"
                )
            if kind == "hit":
                sessions[answer.s].views.append((now, url))
            lending.lent(answer.n, answer.s, now)
            ids[a] = (answer.v, answer.s)
            continue
        number = POOL[a]
        if kind == "call":
            at = now - b
        else:
            spans = lending.spans[number]
            if not spans:
                continue
            _, lent, until = spans[(b // 4) % len(spans)]
            at = (lent, until - 1, until, lent - 1)[b % 4]
            if at > now:
                continue  # not yet: the hold may still be extended
        caller = f"7916{len(expected):07d}"
        holder = lending.holder(number, at)
        expected[caller] = NO_VISIT if holder is None else sessions[holder].fields(at)
        events = [
            TelephonyEvent("call.started", f"c{caller}", at, caller=caller, called=number),
            TelephonyEvent("call.ended", f"c{caller}", at + 30, talk_seconds=30,
                           disposition="answered"),
        ]  # fmt: skip
        receive(store, endpoint, events, store.settings, now)
    records = {call["clientNumber"]: call for call in v3_calls(http, key)}
    assert sorted(records) == sorted(expected)
    for caller, fields in expected.items():
        record = records[caller]
        assert {name: record[name] for name in fields} == fields, caller
        assert (record["ctCampaignId"], record["siteVisit"]) == (1, "shop.example")


def v3_calls(http: TestClient, key: str) -> list[dict[str, Any]]:
    answer = http.get(f"/api/?json/v3/{key}/call/get/0/2020-01-01")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    return [] if isinstance(body, dict) else list(body)


# -- unique, target, uniqueTarget ------------------------------------------------------------

ZONE = "Europe/Berlin"  # a daylight saving change (2026-03-29) inside the calls' days
FIRST_DAY = datetime(2026, 3, 27, tzinfo=ZoneInfo(ZONE))
CALLERS = ("79160000001", "79160000002", "79160000003")

# A call: (caller, how, a, b, talk). how "day": at local midnight of day ``a`` plus ``b``
# seconds; how "after": ``a``-th earlier call's start + unique_days * 86400 + ``b`` (b in
# -1, 0, 1: the window's edge), or that call's very second when b is 2.
calls = st.lists(
    st.tuples(
        st.integers(0, len(CALLERS) - 1),
        st.sampled_from(["day", "after"]),
        st.integers(0, 4),
        st.one_of(st.sampled_from([-1, 0, 1, 2]), st.integers(-7200, 7200)),
        st.integers(0, 150),
    ),
    min_size=1,
    max_size=14,
)


def local_midnight(day: int) -> int:
    """Unix seconds of midnight ``day`` calendar days after the first (23 h days happen)."""
    date = FIRST_DAY.date() + timedelta(days=day)
    return int(datetime(date.year, date.month, date.day, tzinfo=ZoneInfo(ZONE)).timestamp())


@RUN
@given(
    unique_days=st.integers(0, 3),
    target_seconds=st.sampled_from([0, 1, 30, 60, 150]),
    script=calls,
)
def test_unique_and_target_flags_follow_the_settings_over_random_histories(
    berlin: App,
    unique_days: int,
    target_seconds: int,
    script: list[tuple[int, str, int, int, int]],
) -> None:
    http, store = berlin
    run = next(_runs)
    account, key = new_account(store, f"flags{run}")
    store.set_account_settings(account, unique_days, target_seconds)
    secret = store.add_telephony_endpoint(account, "generic").secret
    posted: list[tuple[str, int, int]] = []  # (caller, start, talk), in the order posted
    expected: dict[str, tuple[bool, bool, bool, int]] = {}  # called: flags, start
    for index, (who, how, a, b, talk) in enumerate(script):
        caller = CALLERS[who]
        if how == "after" and posted:
            _, earlier, _ = posted[a % len(posted)]
            start = earlier if b == 2 else earlier + unique_days * 86400 + b
        else:
            start = local_midnight(a) + b
        window = [
            t for c, s, t in posted if c == caller and start - unique_days * 86400 < s < start
        ]  # the caller's calls posted before this one and started in the window before it
        target = talk >= target_seconds
        unique = not window
        unique_target = target and not any(t >= target_seconds for t in window)
        called = f"7495{index:07d}"  # a number no campaign owns: the record has no visit
        expected[called] = (unique, target, unique_target, start)
        events = [
            {"event": "call.started", "call_id": f"f{index}", "at": start, "caller": caller,
             "called": called},
            {"event": "call.ended", "call_id": f"f{index}", "at": start + talk + 5,
             "talk_seconds": talk, "disposition": "answered" if talk else "no_answer"},
        ]  # fmt: skip
        answer = http.post(
            "/telephony/generic",
            content=msgspec.json.encode(events),
            headers={"authorization": f"Bearer {secret}"},
        )
        assert answer.status_code == 200, answer.text
        posted.append((caller, start, talk))
    records = {call["callerIdToClient"]: call for call in v3_calls(http, key)}
    assert sorted(records) == sorted(expected)
    zone = ZoneInfo(ZONE)
    for called, (unique, target, unique_target, start) in expected.items():
        record = records[called]
        flags = (record["unique"], record["target"], record["uniqueTarget"])
        assert flags == (unique, target, unique_target), (called, start)
        # callTime is the start's wall clock in the service zone, its date right at midnight.
        assert record["callTime"] == datetime.fromtimestamp(start, zone).strftime(
            "%Y-%m-%d %H:%M:%S"
        )

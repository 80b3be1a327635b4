"""Lending through the real store against a model of the rules (contract section 4).

Random hits, pings, waits and number removals over several visitors and a small pool: every
answer is the number the model says (the session's own while held, else the one free the
longest, else the stub), no number is ever held by two sessions at once, and no hold ends
before its session's last activity plus the hold time: neither the number's nor its entry in
the history of holds, which answers who held it until then, with the session's page views.

``CALLTRACK_HYPOTHESIS_EXAMPLES=500 pytest tests/test_tracking_lending_store.py`` runs it
longer.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from typing import Literal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from calltrack.model import parse_local
from calltrack.store import Store
from calltrack.tracking.hits import HitBody, Visit, record_hit
from tests.conftest import new_account

EXAMPLES = int(os.environ.get("CALLTRACK_HYPOTHESIS_EXAMPLES", "30"))
HOLD = 60
POOL = ("74950000001", "74950000002", "74950000003")
STUB = "74959999999"
_runs = itertools.count()
Operation = Literal["hit", "ping", "wait", "remove"]


@dataclass
class Model:
    held: dict[str, tuple[str, int]] = field(default_factory=dict)  # number: (session, until)
    free_since: dict[str, int] = field(default_factory=dict)  # number: when its hold ended
    pool: list[str] = field(default_factory=lambda: list(POOL))

    def expected(self, session: str, now: int) -> str:
        if not self.pool:  # no pool and no static number: the page keeps its own numbers
            return ""
        for number, (holder, until) in self.held.items():
            if holder == session and until > now and number in self.pool:
                return number
        free = [n for n in self.pool if n not in self.held or self.held[n][1] <= now]
        if not free:
            return STUB
        return min(free, key=lambda n: (self.free_since.get(n, 0), n))

    def lend(self, number: str, session: str, now: int) -> None:
        if number in self.pool:
            kept = self.held.get(number, ("", 0))
            until = max(kept[1], now + HOLD) if kept[0] == session else now + HOLD
            self.held[number] = (session, until)
            self.free_since[number] = until


operations = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(["hit", "ping"]), st.integers(0, 4)),
        st.tuples(st.just("wait"), st.integers(1, 150)),
        st.tuples(st.just("remove"), st.integers(0, 2)),
    ),
    max_size=40,
)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(script=operations)
def test_lending_matches_the_model_and_never_holds_a_number_twice(
    store: Store, script: list[tuple[Operation, int]]
) -> None:
    run = next(_runs)
    account, _ = new_account(store, f"lend{run}")
    store.add_campaign(account, 1, "Shop", "https://shop.example", "active")
    for number in POOL:
        store.add_phone(account, number, 1, "", "dynamic")
    campaign = store.configure_campaign(account, 1, hold_seconds=HOLD, stub=STUB)
    zone = store.settings.zone
    now = parse_local("2026-05-01 10:00:00", zone, "from")
    model = Model()
    ids: dict[int, tuple[str | None, str | None]] = {}
    activity: dict[str, int] = {}  # session: last activity
    views: dict[str, int] = {}  # session: its page views (hits; pings are none)
    for kind, value in script:
        if kind == "wait":
            now += value
            continue
        if kind == "remove":
            number = POOL[value]
            if number in model.pool:
                store.remove_phone(account, number)
                model.pool.remove(number)
                model.held.pop(number, None)
            continue
        visitor, session = ids.get(value, (None, None))
        hit = HitBody(k=campaign.site_key, u="https://shop.example/", t=kind, v=visitor, s=session)
        answer = record_hit(store, campaign, hit, Visit("127.0.0.1", "test", now, 0), zone)
        if session is not None and now - activity[session] < 1800:
            assert answer.s == session, "a session ended before 30 idle minutes"
        expected = model.expected(answer.s, now)
        assert answer.n == expected, f"{kind} of visitor {value} at +{now % 86400}"
        model.lend(answer.n, answer.s, now)
        ids[value] = (answer.v, answer.s)
        activity[answer.s] = now
        views[answer.s] = views.get(answer.s, 0) + (kind == "hit")
        if answer.n in model.held:
            # The history of holds agrees: a call to the number just before the hold ends is
            # the session's, with its page views (what a call's record is built from).
            held = store.holder_at(account, answer.n, model.held[answer.n][1] - 1)
            assert held is not None, f"{answer.n}: no holder before its hold ends"
            assert held.session.session_id == answer.s
            assert held.pages == views[answer.s]
    assert_no_number_held_twice(store, account)


def assert_no_number_held_twice(store: Store, account: int) -> None:
    with store._connect() as conn:
        rows = conn.execute(
            "SELECT number, session_id, held_from, held_until FROM holds WHERE account_id = ? "
            "ORDER BY number, held_from, id",
            (account,),
        ).fetchall()
    for (number, session, _, until), (next_number, next_session, start, _) in itertools.pairwise(
        rows
    ):
        if number == next_number:
            assert start >= until or session == next_session, f"{number} held twice at {start}"

"""Hits in group commits (``api/tracking.answer_hits``, ``tracking/hits.record_hits``): the
hits a worker takes together are recorded in one transaction in order, each as if it had
come alone; a hit refused (unknown key, foreign origin, over its address's limit) writes
nothing and the others go on; on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from typing import Any

import pytest

from calltrack.api.tracking import PostedHit, answer_hits
from calltrack.errors import StoreUnavailable
from calltrack.store import Store
from calltrack.store.tracking import TrackingTx
from calltrack.tracking.hits import HitAnswer, HitBody, HitRejected, Visit
from tests.test_tracking_hits import SITE, tracked_campaign


def _hit(key: str, visitor: HitAnswer | None = None, **fields: Any) -> HitBody:
    ids = {"v": visitor.v, "s": visitor.s} if visitor else {}
    return HitBody(**{"k": key, "u": f"{SITE}/catalog?utm_source=yandex", **ids, **fields})


def _count(store: Store, table: str) -> int:
    with store._connect() as conn:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def test_a_batch_of_hits_answers_each_as_if_it_came_alone(store: Store) -> None:
    campaign = tracked_campaign(store, dynamic=2)
    key, zone, now = campaign.site_key, store.settings.zone, int(time.time())
    visit = Visit("198.51.100.7", "Mozilla/5.0", now, 3)
    (first,) = answer_hits(store, [(_hit(key), SITE, visit)], zone)
    assert isinstance(first, HitAnswer)
    before = {table: _count(store, table) for table in ("sessions", "page_views", "holds")}

    answers = answer_hits(
        store,
        [
            (_hit(key, first, t="ping"), SITE, visit),  # the same visit: keeps its number
            (_hit("no-such-key"), SITE, visit),  # 404
            (_hit(key), "https://evil.example", visit),  # 403, a foreign origin
            (_hit(key), SITE, visit),  # a new visitor: the other pool number
            (_hit(key), SITE, visit),  # over the address's 3 hits a minute: 429
            (_hit(key), SITE, Visit("198.51.100.8", "Mozilla/5.0", now, 3)),  # the stub
        ],
        zone,
    )
    kept, unknown, foreign, second, limited, third = answers
    assert isinstance(kept, HitAnswer)
    assert (kept.v, kept.s, kept.n) == (first.v, first.s, first.n)
    assert isinstance(unknown, HitRejected)
    assert unknown.status == 404
    assert isinstance(foreign, HitRejected)
    assert foreign.status == 403
    assert isinstance(second, HitAnswer)
    assert second.n not in ("", first.n)
    assert isinstance(third, HitAnswer)
    assert third.n == "74959999999"  # both pool numbers held: the stub
    # The 429 came past the origin check: it is answered with the origin's CORS headers.
    assert getattr(limited, "reason", None) is not None
    assert limited.reason.status == 429  # type: ignore[union-attr]
    after = {table: _count(store, table) for table in ("sessions", "page_views", "holds")}
    # Two new sessions with a page view each, one hold lent; the refused hits left nothing.
    assert after == {
        "sessions": before["sessions"] + 2,
        "page_views": before["page_views"] + 2,
        "holds": before["holds"] + 1,
    }
    with store._connect() as conn:
        counted = conn.execute("SELECT ip, hits FROM hit_counts ORDER BY ip").fetchall()
    assert [(str(ip), int(hits)) for ip, hits in counted] == [
        ("198.51.100.7", 3),
        ("198.51.100.8", 1),
    ]


@pytest.mark.parametrize("failure", ["raised", "refused by the database"])
def test_a_hit_that_fails_in_a_batch_fails_alone(
    store: Store, monkeypatch: pytest.MonkeyPatch, failure: str
) -> None:
    """Whether the failure is raised at its own statement or, refused by the database, at a
    later one (on PostgreSQL a batch's writes are pipelined: the error comes back with
    another hit's statement), the batch is rolled back whole and its hits recorded again one
    by one, so that only the bad one fails."""
    campaign = tracked_campaign(store, dynamic=2)
    key, zone, now = campaign.site_key, store.settings.zone, int(time.time())
    real = TrackingTx.add_session

    def add_session(self: TrackingTx, session: Any, *args: Any) -> None:
        if args[-1] == "poison" and failure == "raised":  # the user agent, the last argument
            raise RuntimeError("this session cannot be stored")
        real(self, session, *args)
        if args[-1] == "poison":  # a second row of the same id: the database refuses it
            real(self, session, *args)

    # The store's own transaction, but for one user agent: the batch's transaction fails.
    monkeypatch.setattr(TrackingTx, "add_session", add_session)
    answers = answer_hits(
        store,
        [
            (_hit(key), SITE, Visit("198.51.100.1", "Mozilla/5.0", now, 0)),
            (_hit(key), SITE, Visit("198.51.100.2", "poison", now, 0)),
            (_hit(key), SITE, Visit("198.51.100.3", "Mozilla/5.0", now, 0)),
        ],
        zone,
    )
    first, poisoned, last = answers
    assert isinstance(first, HitAnswer)
    assert isinstance(last, HitAnswer)
    assert not isinstance(poisoned, HitAnswer)
    if failure == "raised":
        assert isinstance(poisoned, RuntimeError)
    assert {first.n, last.n} == {"74950000000", "74950000001"}
    assert _count(store, "sessions") == 2
    assert _count(store, "holds") == 2  # the poisoned hit's hold went with its transaction


def test_a_store_that_cannot_be_read_is_asked_once_a_batch(store: Store) -> None:
    """Each hit would wait out the store's timeout: once one campaign read fails, the batch's
    other hits get the same 503 without asking again."""
    campaign = tracked_campaign(store, dynamic=2)
    asked: list[str] = []

    def hit_campaign(self: Store, key: str) -> Any:
        asked.append(key)
        raise StoreUnavailable()

    store.__class__ = type("Down", (type(store),), {"hit_campaign": hit_campaign})
    visit = Visit("198.51.100.1", "Mozilla/5.0", int(time.time()), 0)
    hits: list[PostedHit] = [(_hit(campaign.site_key), SITE, visit) for _ in range(3)]
    answers = answer_hits(store, hits, store.settings.zone)
    assert asked == [campaign.site_key]
    assert all(isinstance(answer, StoreUnavailable) for answer in answers)


def test_a_visitors_hits_in_one_batch_see_each_other(store: Store) -> None:
    """A batch reads its visitors at once, before it writes: a visitor's second hit in the
    batch must still see what its first wrote (here the session that hit started)."""
    campaign = tracked_campaign(store, dynamic=3)
    key, zone, now = campaign.site_key, store.settings.zone, int(time.time())
    visit = Visit("198.51.100.7", "Mozilla/5.0", now, 0)
    (first,) = answer_hits(store, [(_hit(key), SITE, visit)], zone)
    assert isinstance(first, HitAnswer)
    google = _hit(key, first, u=f"{SITE}/?utm_source=google")  # another source: a new visit
    facebook = _hit(key, first, u=f"{SITE}/?utm_source=facebook")  # and another
    second, third, other = answer_hits(
        store, [(google, SITE, visit), (facebook, SITE, visit), (_hit(key), SITE, visit)], zone
    )
    assert isinstance(second, HitAnswer)
    assert isinstance(third, HitAnswer)
    assert isinstance(other, HitAnswer)
    assert second.v == third.v == first.v != other.v
    assert len({first.s, second.s, third.s}) == 3
    with store._connect() as conn:
        sessions = conn.execute("SELECT sessions FROM visitors WHERE id = ?", (first.v,)).fetchone()
        ordinals = conn.execute(
            "SELECT ordinal FROM sessions WHERE visitor_id = ? ORDER BY started_at, ordinal",
            (first.v,),
        ).fetchall()
    assert int(sessions[0]) == 3
    assert [int(ordinal) for (ordinal,) in ordinals] == [1, 2, 3]


def test_a_batch_asks_a_held_pool_once_a_second(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once every pool number is held, the batch's later hits of the same second are shown
    the stub without asking the pool again (on PostgreSQL each question was a round trip)."""
    campaign = tracked_campaign(store, dynamic=1)
    key, zone, now = campaign.site_key, store.settings.zone, int(time.time())
    visits = [Visit(f"198.51.100.{index}", "Mozilla/5.0", now, 0) for index in range(4)]
    asked: list[str] = []
    real = TrackingTx.__init__

    def counting(self: TrackingTx, conn: Any, row_locks: bool) -> None:
        class Counted:  # the real connection, its questions to the pool counted
            def __getattr__(self, name: str) -> Any:
                return getattr(conn, name)

            def execute(self, sql: str, params: Any = ()) -> Any:
                if sql.startswith("SELECT number FROM phones"):
                    asked.append(sql)
                return conn.execute(sql, params)

        real(self, Counted(), row_locks)

    monkeypatch.setattr(TrackingTx, "__init__", counting)
    answers = answer_hits(store, [(_hit(key), SITE, visit) for visit in visits], zone)
    numbers = [answer.n for answer in answers if isinstance(answer, HitAnswer)]
    assert numbers == ["74950000000", "74959999999", "74959999999", "74959999999"]
    assert len(asked) == 2  # the lend, then the question that found the pool held
    with store._connect() as conn:
        (stub_hits,) = conn.execute("SELECT sum(hits) FROM exhausted_hits").fetchone()
    assert int(stub_hits) == 3


def test_a_keep_that_fails_lends_before_the_next_hits_lend(store: Store) -> None:
    """The keeps of a batch are sent together and settled later, but a keep that fails (its
    hold ended) lends before any later hit of the batch lends: the numbers go as if the hits
    had come one by one."""
    campaign = tracked_campaign(store, dynamic=3, hold_seconds=60)
    key, zone, start = campaign.site_key, store.settings.zone, int(time.time()) - 600
    visit = Visit("198.51.100.7", "Mozilla/5.0", start, 0)
    answers = answer_hits(store, [(_hit(key), SITE, visit), (_hit(key), SITE, visit)], zone)
    lent = [answer for answer in answers if isinstance(answer, HitAnswer)]
    assert sorted(answer.n for answer in lent) == ["74950000000", "74950000001"]
    # Both holds ended: the first in the batch's order (by visitor on PostgreSQL) pings and
    # must lend again, the second starts a visit from another source and lends too.
    keeper, returning = sorted(lent, key=lambda answer: answer.v)
    later = Visit("198.51.100.7", "Mozilla/5.0", start + 61, 0)
    ping = _hit(key, keeper, t="ping")
    google = _hit(key, returning, u=f"{SITE}/?utm_source=google")
    first, second = answer_hits(store, [(ping, SITE, later), (google, SITE, later)], zone)
    assert isinstance(first, HitAnswer)
    assert isinstance(second, HitAnswer)
    assert first.n == "74950000002"  # never held: free the longest
    assert second.n == "74950000000"  # both others free since the same second: by number


def test_a_batch_reads_visitors_with_a_foreign_session_or_none(store: Store) -> None:
    """Visitors read together (one round trip on PostgreSQL): one naming another visitor's
    session, one naming none, one as usual. Each keeps its visitor id; the first two start
    new visits, the third goes on with its own."""
    campaign = tracked_campaign(store, dynamic=3)
    key, zone, now = campaign.site_key, store.settings.zone, int(time.time())
    visit = Visit("198.51.100.7", "Mozilla/5.0", now, 0)
    first = answer_hits(store, [(_hit(key), SITE, visit) for _ in range(3)], zone)
    a, b, c = (answer for answer in first if isinstance(answer, HitAnswer))
    foreign = HitBody(k=key, u=f"{SITE}/catalog?utm_source=yandex", v=a.v, s=b.s)
    alone = HitBody(k=key, u=f"{SITE}/catalog?utm_source=yandex", v=b.v)
    answers = answer_hits(
        store, [(foreign, SITE, visit), (alone, SITE, visit), (_hit(key, c), SITE, visit)], zone
    )
    again = [answer for answer in answers if isinstance(answer, HitAnswer)]
    assert [answer.v for answer in again] == [a.v, b.v, c.v]
    assert again[0].s not in (a.s, b.s)
    assert again[1].s != b.s
    assert (again[2].s, again[2].n) == (c.s, c.n)
    with store._connect() as conn:
        visitors = conn.execute("SELECT count(*) FROM visitors").fetchone()[0]
    assert int(visitors) == 3

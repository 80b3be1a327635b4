"""Lending numbers, sessions' ends, who held a number when, and a call's flags."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from calltrack.tracking.lending import (
    STUB,
    CallFlags,
    EarlierCall,
    HeldSpan,
    Hold,
    Lending,
    PoolNumber,
    attributed_session,
    call_flags,
    check_hold_seconds,
    lend,
    session_ended,
)
from tests.helpers_tables import cases

NOW = 1_800_000_000
HOLD = 600
A, B, C = "74950000001", "74950000002", "74950000003"

LENT = [
    ("keep while held", Hold(A, NOW + 1), [PoolNumber(A, None, True)],
     Lending("keep", A, NOW + HOLD)),
    ("keep never shortens", Hold(A, NOW + 900), [PoolNumber(A, 5, True)],
     Lending("keep", A, NOW + 900)),
    ("hold ended this second", Hold(A, NOW), [PoolNumber(A, NOW, False)],
     Lending("lend", A, NOW + HOLD)),
    ("number removed from the campaign", Hold(A, NOW + 300), [PoolNumber(B, 7, False)],
     Lending("lend", B, NOW + HOLD)),
    ("removed and nothing free", Hold(A, NOW + 300), [PoolNumber(B, 7, True)], STUB),
    ("never held first", None, [PoolNumber(A, 1, False), PoolNumber(C, None, False)],
     Lending("lend", C, NOW + HOLD)),
    ("never held, ties by number", None, [PoolNumber(C, None, False), PoolNumber(B, None, False)],
     Lending("lend", B, NOW + HOLD)),
    ("free the longest", None, [PoolNumber(A, NOW - 5, False), PoolNumber(B, NOW - 50, False)],
     Lending("lend", B, NOW + HOLD)),
    ("free as long, ties by number", None, [PoolNumber(C, 9, False), PoolNumber(A, 9, False)],
     Lending("lend", A, NOW + HOLD)),
    ("held ones skipped", None, [PoolNumber(A, None, True), PoolNumber(B, NOW - 1, False)],
     Lending("lend", B, NOW + HOLD)),
    ("exhausted", None, [PoolNumber(A, None, True), PoolNumber(B, 3, True)], STUB),
    ("empty pool", Hold(A, NOW + 5), [], STUB),
    ("an old hold gets no preference", Hold(B, NOW - 1),
     [PoolNumber(A, NOW - 100, False), PoolNumber(B, NOW - 1, False)],
     Lending("lend", A, NOW + HOLD)),
]  # fmt: skip


@pytest.mark.parametrize(
    ("current", "pool", "lent"),
    cases(LENT),
)
def test_lend(current: Hold | None, pool: list[PoolNumber], lent: Lending) -> None:
    assert lend(current, pool, NOW, HOLD) == lent


@pytest.mark.parametrize("seconds", [0, -1, 59, 86401])
def test_a_hold_time_out_of_bounds_is_refused(seconds: int) -> None:
    with pytest.raises(ValueError, match=f"hold seconds: {seconds} is not between 60 and 86400"):
        lend(None, [], NOW, seconds)
    assert check_hold_seconds(86400) == 86400


MOSCOW = ZoneInfo("Europe/Moscow")
BERLIN = ZoneInfo("Europe/Berlin")


def at(text: str, zone: ZoneInfo = MOSCOW) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=zone).timestamp())


ENDED = [
    ("active a second ago", "12:00:00", "12:10:00", "12:10:01", MOSCOW, False),
    ("idle 29:59", "12:00:00", "12:10:00", "12:39:59", MOSCOW, False),
    ("idle exactly 30 minutes", "12:00:00", "12:10:00", "12:40:00", MOSCOW, True),
    ("hours long but active", "08:00:00", "17:59:00", "18:00:00", MOSCOW, False),
    ("a second before midnight", "23:50:00", "23:59:00", "23:59:59", MOSCOW, False),
    ("midnight in the zone", "23:50:00", "23:59:00", "00:00:00+1", MOSCOW, True),
    ("midnight in another zone", "23:50:00", "23:59:00", "00:00:00+1", BERLIN, True),
]


@pytest.mark.parametrize(
    ("started", "last", "now", "zone", "ended"),
    cases(ENDED),
)
def test_session_ended(started: str, last: str, now: str, zone: ZoneInfo, ended: bool) -> None:
    def instant(clock: str) -> int:
        day = "2026-12-02" if clock.endswith("+1") else "2026-12-01"
        return at(f"{day} {clock.removesuffix('+1')}", zone)

    assert session_ended(instant(last), instant(started), instant(now), zone) is ended


def test_midnight_is_the_service_zone_s() -> None:
    # 23:30 to 00:10 Berlin time is 01:30 to 02:10 in Moscow: one Moscow day, two Berlin days.
    started, now = at("2026-12-01 23:30:00", BERLIN), at("2026-12-02 00:10:00", BERLIN)
    assert session_ended(now - 60, started, now, BERLIN)
    assert not session_ended(now - 60, started, now, MOSCOW)


def test_a_daylight_saving_night_still_ends_at_midnight() -> None:
    # Berlin leaves summer time on 2026-10-25 at 03:00; midnight is still midnight.
    started = at("2026-10-24 23:50:00", BERLIN)
    assert not session_ended(started, started, at("2026-10-24 23:59:59", BERLIN), BERLIN)
    assert session_ended(started, started, at("2026-10-25 00:00:00", BERLIN), BERLIN)


def test_a_clock_behind_is_not_idleness() -> None:
    assert not session_ended(NOW, NOW - 60, NOW - 5, MOSCOW)


SPANS = [
    HeldSpan("s1", A, 100, 700),
    HeldSpan("s2", A, 700, 1300),
    HeldSpan("s3", B, 150, 750),
    HeldSpan("s1", B, 2000, 2600),
]

ATTRIBUTED = [
    ("at the lending second", A, 100, "s1"),
    ("in the middle", A, 400, "s1"),
    ("the last held second", A, 699, "s1"),
    ("handed over: the next session", A, 700, "s2"),
    ("after every hold", A, 1300, None),
    ("before any hold", A, 99, None),
    ("another number", B, 400, "s3"),
    ("a gap between holds", B, 1000, None),
    ("a later hold of the same session", B, 2100, "s1"),
    ("a number nobody held", C, 400, None),
]


@pytest.mark.parametrize(
    ("number", "instant", "session"),
    cases(ATTRIBUTED),
)
def test_attributed_session(number: str, instant: int, session: str | None) -> None:
    assert attributed_session(SPANS, number, instant) == session


def test_overlapping_spans_go_to_the_later_lending() -> None:
    damaged = [HeldSpan(1, A, 100, 900), HeldSpan(2, A, 500, 800)]
    assert attributed_session(damaged, A, 600) == 2
    assert attributed_session(damaged[::-1], A, 600) == 2
    assert attributed_session(damaged, A, 850) == 1


DAY = 86400
T = 1_800_000_000

FLAGS = [
    ("first call, long", [], (T, 130), (True, True, True)),
    ("first call, short", [], (T, 30), (True, False, False)),
    ("talk exactly the target", [], (T, 120), (True, True, True)),
    ("a second short of the target", [], (T, 119), (True, False, False)),
    ("an earlier call in the window", [(T - DAY, 0)], (T, 130), (False, True, True)),
    ("an earlier target call in the window", [(T - DAY, 500)], (T, 130), (False, True, False)),
    ("a second inside the window", [(T - 180 * DAY + 1, 500)], (T, 130), (False, True, False)),
    ("exactly the window before: outside", [(T - 180 * DAY, 500)], (T, 130), (True, True, True)),
    ("the same second is not earlier", [(T, 500)], (T, 130), (True, True, True)),
    ("a second earlier is earlier", [(T - 1, 500)], (T, 130), (False, True, False)),
    ("a later call is ignored", [(T + 10, 500)], (T, 130), (True, True, True)),
    ("short calls before a target call", [(T - 5, 10), (T - 9, 0)], (T, 130), (False, True, True)),
    ("an old target, a recent short one", [(T - 200 * DAY, 500), (T - DAY, 3)], (T, 200),
     (False, True, True)),
]  # fmt: skip


@pytest.mark.parametrize(
    ("history", "this", "flags"),
    cases(FLAGS),
)
def test_call_flags(
    history: list[tuple[int, int]], this: tuple[int, int], flags: tuple[bool, bool, bool]
) -> None:
    earlier = [EarlierCall(*call) for call in history]
    assert call_flags(earlier, EarlierCall(*this), 180, 120) == CallFlags(*flags)


def test_call_flags_settings_at_their_bounds() -> None:
    history = [EarlierCall(T - 1, 0)]
    assert call_flags(history, EarlierCall(T, 0), 0, 0) == CallFlags(True, True, True)
    assert call_flags(history, EarlierCall(T, 0), 3650, 0) == CallFlags(False, True, False)
    with pytest.raises(ValueError, match="unique days: 3651 is not between 0 and 3650"):
        call_flags(history, EarlierCall(T, 0), 3651, 120)
    with pytest.raises(ValueError, match="unique days: -1"):
        call_flags(history, EarlierCall(T, 0), -1, 120)
    with pytest.raises(ValueError, match="target seconds: -1 is negative"):
        call_flags(history, EarlierCall(T, 0), 180, -1)


calls = st.builds(EarlierCall, st.integers(T - 3 * DAY, T + DAY), st.integers(0, 300))


@given(st.lists(calls, max_size=12), calls, st.integers(0, 4), st.integers(0, 300))
def test_call_flags_agree_with_a_history_walked_one_call_at_a_time(
    history: list[EarlierCall], this: EarlierCall, days: int, target_seconds: int
) -> None:
    flags = call_flags(history, this, days, target_seconds)
    assert flags.target == (this.talk_seconds >= target_seconds)
    assert not flags.unique_target or flags.target
    # Adding calls never makes a call unique; taking away the calls outside the window (or
    # not earlier) changes nothing.
    inside = [c for c in history if 0 < this.start - c.start < days * DAY]
    assert call_flags(inside, this, days, target_seconds) == flags
    assert flags.unique == (inside == [])
    for extra in history:
        more = call_flags([*history, extra], this, days, target_seconds)
        assert more.unique <= flags.unique
        assert more.unique_target <= flags.unique_target


# -- lending against a model ------------------------------------------------------------------


@dataclass
class World:
    """The store's part, as the service runs it: hold spans are the history, the pool is the
    campaign's numbers now; each hit asks lend() and applies its answer."""

    pool: list[str]
    hold_seconds: int
    now: int = NOW
    spans: list[HeldSpan[int]] = field(default_factory=list)
    current: dict[int, int] = field(default_factory=dict)  # session -> index of its span

    def pool_view(self) -> list[PoolNumber]:
        view = []
        for number in self.pool:
            mine = [s for s in self.spans if s.number == number]
            held = any(s.start <= self.now < s.until for s in mine)
            free_since = max((s.until for s in mine), default=None)
            view.append(PoolNumber(number, free_since, held))
        return view

    def hit(self, session: int) -> Lending:
        index = self.current.get(session)
        hold = None if index is None else Hold(self.spans[index].number, self.spans[index].until)
        decided = lend(hold, self.pool_view(), self.now, self.hold_seconds)
        if decided.action == "keep":
            assert index is not None
            span = self.spans[index]
            self.spans[index] = HeldSpan(session, span.number, span.start, decided.until)
        elif decided.action == "lend":
            self.current[session] = len(self.spans)
            self.spans.append(HeldSpan(session, decided.number, self.now, decided.until))
        else:
            self.current.pop(session, None)
        return decided

    def remove(self, number: str) -> None:
        # A number removed from the campaign: lent no more, and its hold ends now.
        self.pool.remove(number)
        for i, span in enumerate(self.spans):
            if span.number == number and span.until > self.now:
                self.spans[i] = HeldSpan(span.session, number, span.start, self.now)


def model_holder(spans: list[HeldSpan[int]], number: str, instant: int) -> set[int]:
    return {s.session for s in spans if s.number == number and s.start <= instant < s.until}


def model_free_since(spans: list[HeldSpan[int]], number: str) -> float:
    return max((s.until for s in spans if s.number == number), default=float("-inf"))


steps = st.lists(
    st.one_of(
        st.tuples(st.just("hit"), st.integers(0, 7)),
        st.tuples(st.just("wait"), st.integers(0, 900)),
        st.tuples(st.just("remove"), st.integers(0, 3)),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(steps, st.integers(1, 4), st.integers(60, 700))
def test_lending_against_a_model(
    plan: list[tuple[str, int]], pool_size: int, hold_seconds: int
) -> None:
    pool = [f"7495000000{i}" for i in range(pool_size)]
    world = World(list(pool), hold_seconds)
    for action, value in plan:
        if action == "wait":
            world.now += value
            continue
        if action == "remove":
            if value < len(world.pool):
                world.remove(world.pool[value])
            continue
        session = value
        index = world.current.get(session)
        before = None if index is None else world.spans[index]
        held_by_others = {
            n for n in world.pool if model_holder(world.spans, n, world.now) - {session}
        }
        decided = world.hit(session)
        still_mine = before is not None and world.now < before.until and before.number in world.pool
        if still_mine:
            # No hold ends early: a live hold is kept and runs at least as long as promised.
            assert before is not None
            assert decided == Lending(
                "keep", before.number, max(before.until, world.now + hold_seconds)
            )
            continue
        free = [n for n in world.pool if n not in held_by_others]
        if not free:
            assert decided == STUB
            continue
        # The number free the longest (never held first), ties by number.
        longest = min(free, key=lambda n: (model_free_since(world.spans[:-1], n), n))
        assert decided == Lending("lend", longest, world.now + hold_seconds)
        assert decided.number not in held_by_others
    # Never one number held by two sessions at once: one number's spans never overlap.
    for number in pool:
        mine = sorted((s for s in world.spans if s.number == number), key=lambda s: s.start)
        for first, second in itertools.pairwise(mine):
            assert first.until <= second.start
    # And every instant of a span answers "who held it" with that span's session.
    for span in world.spans:
        if span.start < span.until:
            for instant in (span.start, span.until - 1):
                assert attributed_session(world.spans, span.number, instant) == span.session

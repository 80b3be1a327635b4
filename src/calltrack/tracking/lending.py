"""Lending dynamic numbers, sessions' ends, who held a number, a call's flags: the rules of
contract sections 1, 4 and 6 as pure functions over plain data.

Times are unix seconds. A hold covers the half-open span ``[start, until)``: a session holds
its number from the second it was lent up to, not including, ``until`` (its last activity
plus the campaign's hold time). The store keeps these spans and applies what :func:`lend`
decides inside one transaction that locks the rows it reads; this module only decides.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Generic, Literal, NamedTuple, TypeVar
from zoneinfo import ZoneInfo

# A session ends after this long without a hit or a ping.
IDLE_SECONDS: Final = 30 * 60
DAY_SECONDS: Final = 24 * 3600
# What the settings accept: a hold of a second to a day (longer would let a few idle tabs
# take a whole pool), a unique window of up to ten years.
MAX_HOLD_SECONDS: Final = DAY_SECONDS
# Shorter than the snippet's ping interval, a hold would end between two pings of a live page.
MIN_HOLD_SECONDS: Final = 60
MAX_UNIQUE_DAYS: Final = 3650

SessionT = TypeVar("SessionT")


class Hold(NamedTuple):
    """The number a session was last lent and when that hold ends (unix seconds)."""

    number: str
    until: int


class PoolNumber(NamedTuple):
    """One dynamic number of the campaign as the store sees it at the hit.

    ``free_since``: when its last hold ended, None if it was never held. ``held``: whether a
    session holds it now.
    """

    number: str
    free_since: int | None
    held: bool


@dataclass(frozen=True, slots=True)
class Lending:
    """What a hit on the pool gets: ``keep`` the session's number (its hold extended),
    ``lend`` a free number, or ``stub`` (the pool is exhausted: show the campaign's stub and
    count the hit). ``number`` is "" and ``until`` 0 for the stub.
    """

    action: Literal["keep", "lend", "stub"]
    number: str = ""
    until: int = 0


STUB: Final = Lending("stub")


def lend(current: Hold | None, pool: Sequence[PoolNumber], now: int, hold_seconds: int) -> Lending:
    """Which number a session on the pool gets at ``now`` (contract section 4).

    - ``keep``: the session's hold has not ended (``now < until``) and its number is still
      one of the campaign's; the hold runs to ``now + hold_seconds``, never shortened (a hold
      time lowered since keeps the longer end promised before).
    - ``lend``: otherwise the free number that has been free the longest: never-held numbers
      first, then the earliest ``free_since``, ties by number (so every worker picks the same
      one and the store's row lock settles who gets it).
    - ``stub``: otherwise.

    A session whose hold ended gets no preference for its old number: it is lent by the same
    rule as anyone's (the contract's "free the longest").
    """
    check_hold_seconds(hold_seconds)
    until = now + hold_seconds
    if current is not None and _kept(current, pool, now):
        return Lending("keep", current.number, max(current.until, until))
    free = [entry for entry in pool if not entry.held]
    if not free:
        return STUB
    chosen = min(free, key=_free_order)
    return Lending("lend", chosen.number, until)


def _kept(current: Hold, pool: Sequence[PoolNumber], now: int) -> bool:
    # The hold runs on only while it has not ended and the number is still the campaign's.
    return now < current.until and any(entry.number == current.number for entry in pool)


def _free_order(entry: PoolNumber) -> tuple[bool, int, str]:
    # False sorts first: a never-held number has been free the longest of all.
    return (entry.free_since is not None, entry.free_since or 0, entry.number)


def check_hold_seconds(hold_seconds: int) -> int:
    """The campaign's hold time, checked: 60 to 86400 seconds; ValueError otherwise."""
    if not MIN_HOLD_SECONDS <= hold_seconds <= MAX_HOLD_SECONDS:
        raise ValueError(
            f"hold seconds: {hold_seconds} is not between {MIN_HOLD_SECONDS} and {MAX_HOLD_SECONDS}"
        )
    return hold_seconds


def session_ended(last_activity: int, started: int, now: int, zone: ZoneInfo) -> bool:
    """Whether a hit at ``now`` starts a new session instead of continuing this one.

    Ended after 30 minutes without activity (``now - last_activity >= 1800``: a hit exactly
    30 minutes after the last one opens a new session, as in Google Analytics), or when
    midnight in the service time zone ``zone`` has passed since the session started (the
    calendar dates differ, daylight saving time included). A ``now`` earlier than the last
    activity (clocks of two hosts) is not idleness. The third end, a new non-direct source,
    is :func:`calltrack.tracking.sources.is_new_source`.
    """
    if now - last_activity >= IDLE_SECONDS:
        return True
    return _local_date(now, zone) != _local_date(started, zone)


def _local_date(instant: int, zone: ZoneInfo) -> tuple[int, int, int]:
    day = datetime.fromtimestamp(instant, zone)
    return (day.year, day.month, day.day)


@dataclass(frozen=True, slots=True)
class HeldSpan(Generic[SessionT]):
    """One hold in the history: ``session`` held ``number`` over ``[start, until)``."""

    session: SessionT
    number: str
    start: int
    until: int


def attributed_session(
    holds: Iterable[HeldSpan[SessionT]], number: str, at: int
) -> SessionT | None:
    """The session that held ``number`` at instant ``at`` (``start <= at < until``), or None.

    A call at the very second a hold ended belongs to no one, as the number was free to be
    lent then. Lending never lets two spans of one number overlap; if a damaged history has
    them, the most recently started span wins (the later lending is the one the caller saw).
    """
    best: HeldSpan[SessionT] | None = None
    for span in holds:
        held_then = span.number == number and span.start <= at < span.until
        if held_then and (best is None or span.start > best.start):
            best = span
    return None if best is None else best.session


class EarlierCall(NamedTuple):
    """A call of the same caller in the same account: its start (unix seconds), talk seconds."""

    start: int
    talk_seconds: int


class CallFlags(NamedTuple):
    unique: bool
    target: bool
    unique_target: bool


def call_flags(
    history: Iterable[EarlierCall], this: EarlierCall, unique_days: int, target_seconds: int
) -> CallFlags:
    """``unique``, ``target`` and ``uniqueTarget`` of ``this`` call (contract section 6).

    The window is the ``unique_days * 86400`` seconds before this call's start, open at both
    ends: an earlier call counts when ``this.start - unique_days * 86400 < start <
    this.start``. So a call exactly ``unique_days`` days before does not count, a call in
    the same second does not count (neither is earlier: both are unique), and a later call
    in ``history`` is ignored, so the caller's whole history may be passed. Days are spans
    of 86400 seconds, not calendar days, so daylight saving time moves no edge.

    - ``unique``: no call in the window.
    - ``target``: ``this.talk_seconds >= target_seconds``.
    - ``unique_target``: target, and no call in the window is target by today's
      ``target_seconds`` (the setting now, not the one when that call was made).

    ``unique_days`` 0 makes every call unique; ``target_seconds`` 0 makes every call target.
    Raises ValueError for a negative setting or ``unique_days`` over 3650.
    """
    if not 0 <= unique_days <= MAX_UNIQUE_DAYS:
        raise ValueError(f"unique days: {unique_days} is not between 0 and {MAX_UNIQUE_DAYS}")
    if target_seconds < 0:
        raise ValueError(f"target seconds: {target_seconds} is negative")
    since = this.start - unique_days * DAY_SECONDS
    window = [call for call in history if since < call.start < this.start]
    target = this.talk_seconds >= target_seconds
    unique = not window
    earlier_target = any(call.talk_seconds >= target_seconds for call in window)
    return CallFlags(unique, target, target and not earlier_target)

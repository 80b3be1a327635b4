"""The changes feed's cursor: opaque to clients, a small state to the service.

A cursor says how far the feed is (the last change number served), which accounts' calls it
has been following (so that an account that becomes visible later is first filled in with
its calls up to there) and, while such a fill runs, how far the fill is: the change number
it has served up to and, inside a run of one write's changes read in page order
(store.changes), the run and the place (call time, id) in it.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, replace

from calltrack.store.changes import ChangeRun

# Outside a run: the accounts in base64, then the change numbers in plain digits, which the
# feed writes after the cursor's head for each change (base64 of the whole state for each
# change, the earlier "c1." form still read, cost a fifth of a line's CPU).
PREFIX = "c3."
OLD_PREFIX = "c1."  # the whole state in base64: issued before, still accepted
# Inside a run: the state in base64 as after OLD_PREFIX, then the place in plain digits,
# which the feed writes after the run's head for each call (no base64 a call).
RUN_PREFIX = "c2."
_LARGEST = 2**63 - 1  # what the store's BIGINT columns hold
_URLSAFE = bytes.maketrans(b"+/", b"-_")


@dataclass(frozen=True, slots=True)
class RunPlace:
    """A fill inside a run: the run's calls up to (``after_time``, ``after_id``) in page
    order are served."""

    run: ChangeRun
    after_time: int
    after_id: int = 0  # ids start at 1: (first_time, 0) is before every call of the run


@dataclass(frozen=True, slots=True)
class FeedCursor:
    seq: int  # changes up to this number are served (for the accounts in ``known``)
    known: tuple[int, ...]  # accounts followed so far
    filling: tuple[int, ...] = ()  # accounts being filled in with their calls up to ``seq``
    fill_after: int = 0  # the fill has served their calls numbered up to this
    run: RunPlace | None = None  # and, of the run after ``fill_after``, up to this place

    def encode(self) -> str:
        if self.run is not None:
            return f"{self.run_head()}{self.run.after_time}.{self.run.after_id}"
        return (self._head() + b"%d.%d" % (self.seq, self.fill_after)).decode()

    def line_cursor(self, fill: bool) -> bytes:
        """The cursor (outside a run) of each change a read serves, as ASCII bytes and a ``%``
        format with ``%d`` where the change's number goes: the fill's number (``fill``), else
        the feed's. A read writes one cursor a change, so the rest is encoded once here."""
        numbers = b"%d.%%d" % self.seq if fill else b"%%d.%d" % self.fill_after
        return self._head().replace(b"%", b"%%") + numbers

    def _head(self) -> bytes:
        accounts = f"{'-'.join(map(str, self.known))}.{'-'.join(map(str, self.filling))}"
        text = binascii.b2a_base64(accounts.encode(), newline=False)
        return PREFIX.encode() + text.translate(_URLSAFE).rstrip(b"=") + b"."

    def run_head(self) -> str:
        """This cursor inside its run without its place: the cursor of the run's call at
        (time, id) is this, then ``time.id`` (computed once for all the calls of a read)."""
        if self.run is None:
            raise ValueError("not inside a run")
        run = self.run.run
        state = (
            f"{self.seq}.{self.fill_after}.{'-'.join(map(str, self.known))}."
            f"{'-'.join(map(str, self.filling))}.{run.account_id}:{run.first_seq}:"
            f"{run.last_seq}:{run.first_time}:{run.last_time}:{run.written_at}"
        )
        return RUN_PREFIX + base64.urlsafe_b64encode(state.encode()).decode().rstrip("=") + "."

    def filled(self) -> FeedCursor:
        """The cursor once the fill is done: its accounts are followed from ``seq`` on."""
        return replace(
            self,
            known=tuple(sorted({*self.known, *self.filling})),
            filling=(),
            fill_after=0,
            run=None,
        )


class BadCursor(ValueError):
    """Not a cursor this service issued."""


def decode(text: str) -> FeedCursor:
    if len(text) > 20_000:
        raise BadCursor("not a cursor of this feed")
    # "." is not in base64's URL-safe alphabet: it parts the base64 from the digits.
    kind, body = text[: len(PREFIX)], text[len(PREFIX) :]
    try:
        run: RunPlace | None = None
        if kind == PREFIX:  # c3.<accounts>.<seq>.<fill_after>
            head, seq, fill_after = body.split(".")
            if not (seq.isascii() and seq.isdigit() and fill_after.isascii()
                    and fill_after.isdigit()):  # fmt: skip
                raise ValueError("change numbers are digits")
            known, filling = _unbase64(head).split(".")
        elif kind == OLD_PREFIX:  # c1.<seq.fill_after.accounts>
            seq, fill_after, known, filling = _unbase64(body).split(".")
        elif kind == RUN_PREFIX:  # c2.<seq.fill_after.accounts.run>.<time>.<id>
            head, place = body.split(".", 1)
            seq, fill_after, known, filling, run_text = _unbase64(head).split(".")
            run = _run_place(run_text, place)
        else:
            raise ValueError("not a cursor's prefix")
        cursor = FeedCursor(
            seq=int(seq),
            known=_ids(known),
            filling=_ids(filling),
            fill_after=int(fill_after),
            run=run,
        )
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise BadCursor("not a cursor of this feed") from None
    if (
        not 0 <= cursor.fill_after <= cursor.seq <= _LARGEST
        or max(cursor.known, default=0) > _LARGEST
        or (cursor.run is not None and not _run_fits(cursor, cursor.run))
    ):
        raise BadCursor("not a cursor of this feed")
    return cursor


def _unbase64(text: str) -> str:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode("ascii")


def _run_place(run: str, place: str) -> RunPlace:
    account, first, last, first_time, last_time, written_at = map(int, run.split(":"))
    after_time, after_id = map(int, place.split("."))
    changes = ChangeRun(account, first, last, first_time, last_time, written_at)
    return RunPlace(changes, after_time, after_id)


def _run_fits(cursor: FeedCursor, place: RunPlace) -> bool:
    """A run right after the fill's change number, of an account being filled, its place
    within its times: what this service writes (a forged one could only skip or repeat the
    client's own calls, never show another account's)."""
    run = place.run
    return (
        run.account_id in cursor.filling
        and cursor.fill_after < run.first_seq <= run.last_seq <= cursor.seq
        and run.first_time <= place.after_time <= run.last_time
        and 0 <= place.after_id <= _LARGEST
        and 0 <= run.written_at <= _LARGEST
    )


def _ids(text: str) -> tuple[int, ...]:
    ids = tuple(int(part) for part in text.split("-")) if text else ()
    if any(not 1 <= i <= _LARGEST for i in ids):
        raise ValueError("bad account id")
    return ids

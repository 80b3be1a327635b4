"""The changes feed: each change of the calls a key sees, exactly once, in commit order.

A read serves, in this order: the fill of accounts that became visible (their current calls
up to the cursor's change number, as upserts), then the changes after the cursor's number.
Without a cursor everything visible is such a fill, up to the newest change at that moment:
every current call once, then what changes after. Accounts no longer visible are dropped
from the cursor at once, and their calls are never served again.

A fill goes in change order, except through a run (one large write of an account's calls,
store.changes), whose calls it serves in page order: the run committed whole, so that order
is as true as any, and on SQLite it is the order the calls are stored in.
"""

from __future__ import annotations

import logging
from bisect import bisect_right
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

import msgspec

from calltrack.api.v4.cursor import FeedCursor, RunPlace
from calltrack.api.v4.problems import cursor_expired
from calltrack.model import format_local
from calltrack.store import Store
from calltrack.store.changes import Change, ChangeRun, ChangeStream, RunCall

log = logging.getLogger("calltrack.feed")
_encode = msgspec.json.Encoder().encode
_decode_record = msgspec.json.Decoder(dict[str, Any]).decode


@dataclass(frozen=True, slots=True)
class FeedPage:
    # The changes as NDJSON in pieces, joined once when sent: a stored body is a piece of its
    # own, copied only by that join (a line made first and joined after copied every body
    # twice; bench/RESULTS.md, API v4).
    parts: list[bytes]
    count: int  # how many changes
    next: FeedCursor
    has_more: bool

    def ndjson(self) -> bytes:
        """The changes, each on a line ended by a newline."""
        return b"".join(self.parts)

    @property
    def lines(self) -> list[bytes]:
        """Each change as JSON, without a line end (JSON as this service writes it holds no
        raw newline: a newline in a string is escaped)."""
        return self.ndjson().split(b"\n")[:-1]


_ChangesRead = tuple[tuple[int, ...], int, int, int | None, bool]


class ReadingAhead:
    """The reads of one streamed feed, where the database runs apart from this process
    (PostgreSQL): once a batch of changes is read, the read of the next batch (the same
    question from the batch's last change on) starts in another thread, so the database
    answers it while this thread writes the batch's lines. Read one batch after another, the
    database waited while this process wrote lines, and this process while the database read.

    The read ahead is used only when the next read asks exactly it; it is one statement, as
    true at that moment as a moment later. One not yet started when asked for is cancelled
    and read here (every thread of the pool may be a feed waiting for its read ahead)."""

    def __init__(self, store: Store, submit: Callable[..., Future[list[Change]]]) -> None:
        self._store = store
        self._submit = submit
        self._ahead: tuple[_ChangesRead, Future[list[Change]]] | None = None

    def read_changes(
        self,
        owners: Sequence[int],
        after: int,
        limit: int,
        through: int | None = None,
        deletes: bool = True,
    ) -> list[Change]:
        asked: _ChangesRead = (tuple(owners), after, limit, through, deletes)
        rows: list[Change] | None = None
        if self._ahead is not None:
            question, future = self._ahead
            self._ahead = None
            if question == asked and not future.cancel():
                rows = future.result()
            else:
                future.cancel()
        if rows is None:
            rows = self._store.read_changes(*asked)
        if len(rows) == limit > 1:  # a full batch: most likely the next begins after it
            following = (asked[0], rows[-2].seq, limit, through, deletes)
            self._ahead = following, self._submit(self._store.read_changes, *following)
        return rows

    def next_run(self, owners: Sequence[int], after: int, through: int) -> ChangeRun | None:
        return self._store.next_run(owners, after, through)

    def read_run(self, run: ChangeRun, after_time: int, after_id: int, limit: int) -> list[RunCall]:
        return self._store.read_run(run, after_time, after_id, limit)


# Rows one stream reads at most: it ends by its LIMIT rather than by a cancel, and a slow
# client holds one statement for a bounded time (PostgreSQL's statement_timeout counts it
# whole; should it strike, the question is read plainly).
STREAM_ROWS = 20_000


class StreamedReads(ReadingAhead):
    """The reads of one streamed feed, where the database runs apart from this process
    (PostgreSQL), for a request of at most ``rows`` changes. The batches of a request ask one
    question after another, each from where the last one's lines end; for one account they
    are answered from one statement streaming the rows (``Store.stream_changes``), which the
    database sends while this process writes lines. Read ahead batch by batch, each batch
    still waited for the database's read and then for psycopg's parse of its rows (in
    process, a fill of 100,000 calls: 7.8-8.0 us a line, against 4.6-5.2 streamed).

    One statement is one snapshot, as true for the batches it serves as a statement each.
    Questions of several accounts are read ahead as before; a question that does not go on
    from the last (the fill moved on, the feed's own changes began) starts another stream;
    a stream that fails is dropped and the request reads plainly from there."""

    def __init__(
        self, store: Store, submit: Callable[..., Future[list[Change]]], rows: int
    ) -> None:
        super().__init__(store, submit)
        self._rows = rows
        self._stream: ChangeStream | None = None
        self._bound = self._taken = 0  # the stream's LIMIT, and the rows it gave so far
        self._question: tuple[int, int | None, bool] | None = None
        self._position = 0  # the question's rows up to this number are consumed
        self._pending: list[Change] = []  # its rows read after that, in order
        self._exhausted = False  # the question has no rows beyond ``_pending``
        self._plain = False  # streaming failed (or the store has none): plain reads

    def read_changes(
        self,
        owners: Sequence[int],
        after: int,
        limit: int,
        through: int | None = None,
        deletes: bool = True,
    ) -> list[Change]:
        if len(owners) != 1 or limit < 1 or self._plain:
            return super().read_changes(owners, after, limit, through, deletes)
        try:
            return self._streamed((owners[0], through, deletes), after, limit)
        except Exception as exc:  # a slow client's statement timeout, most likely
            log.info("a streamed changes read failed (%s); reading plainly", exc)
            self._plain = True
            self.close()
            return self._store.read_changes(owners, after, limit, through, deletes)

    def _streamed(self, question: tuple[int, int | None, bool], after: int, limit: int
                  ) -> list[Change]:  # fmt: skip
        pending = self._pending
        consumed = bisect_right(pending, after, key=_change_seq)
        goes_on = after == self._position or (consumed and pending[consumed - 1].seq == after)
        if question == self._question and goes_on:
            pending = pending[consumed:]
        else:
            self.close()
            pending, self._question = [], question
        self._position = after
        owner, through, deletes = question
        while len(pending) < limit and not self._exhausted:
            if self._stream is None:
                start = pending[-1].seq if pending else after
                self._bound, self._taken = min(self._rows + 1, STREAM_ROWS), 0
                stream = self._store.stream_changes(owner, start, self._bound, through, deletes)
                if stream is None:  # the store reads in process: nothing to stream
                    self._plain = True
                    return self._store.read_changes((owner,), after, limit, through, deletes)
                self._stream = stream
            wanted = limit - len(pending)
            more = self._stream.next_rows(wanted)
            pending = pending + more
            self._taken += len(more)
            if len(more) < wanted:  # the statement is done
                self._exhausted = self._taken < self._bound  # not cut by its LIMIT
                self._close_stream()
        self._pending = pending
        return pending[:limit]

    def _close_stream(self) -> None:
        stream, self._stream = self._stream, None
        if stream is None:
            return
        try:
            stream.close()  # its connection goes back to the pool whatever happens
        except Exception as exc:
            log.info("closing a changes stream failed: %s", exc)

    def close(self) -> None:
        """Give the stream's connection back (the request is done, or the question moved)."""
        self._question, self._pending, self._exhausted = None, [], False
        self._close_stream()


def _change_seq(change: Change) -> int:
    return change.seq


# Where a feed read reads: the store, or the store read ahead.
FeedReads = Store | ReadingAhead


def start(store: Store, owners: tuple[int, ...], after: FeedCursor | None) -> FeedCursor:
    """Where a read starts: the cursor given, checked against what the key sees now."""
    visible = set(owners)
    if after is None:
        return FeedCursor(seq=store.last_change(), known=(), filling=tuple(sorted(visible)))
    if after.seq < store.changes_pruned_through():
        raise cursor_expired(
            "deletes after this cursor were pruned (CALLTRACK_CHANGES_DAYS): "
            "start over without `after`"
        )
    known = tuple(sorted(visible.intersection(after.known)))
    filling = tuple(sorted(visible.intersection(after.filling)))
    cursor = replace(after, known=known, filling=filling)
    if cursor.run is not None and cursor.run.run.account_id not in filling:
        # The run's account is no longer visible: the rest of its run is never served, and
        # the other accounts' fill goes on after the change number before it.
        cursor = replace(cursor, run=None)
    if not filling:
        cursor = replace(cursor, fill_after=0)
        new = visible.difference(known)
        if new:  # granted since: fill them in with their calls up to here first
            cursor = replace(cursor, filling=tuple(sorted(new)))
    return cursor


def read(
    store: FeedReads,
    cursor: FeedCursor,
    limit: int,
    zone: ZoneInfo,
    fields: tuple[str, ...] | None,
    owners: tuple[int, ...] = (),
) -> FeedPage:
    """Up to ``limit`` changes from ``cursor`` on. ``owners``: the accounts the key sees now;
    those that became visible while a fill ran are filled in once it is done."""
    parts: list[bytes] = []
    count = 0
    while count < limit:
        wanted = limit - count
        if cursor.run is not None:  # inside a run of the fill: its calls in page order
            place = cursor.run
            calls = store.read_run(place.run, place.after_time, place.after_id, wanted + 1)
            changed = _when(place.run.written_at, zone)
            add_run_lines(parts, calls[:wanted], cursor.run_head().encode(), changed, fields)
            count += min(len(calls), wanted)
            if len(calls) > wanted:
                *_, last_time, last_id = calls[wanted - 1]
                cursor = replace(cursor, run=replace(place, after_time=last_time,
                                                     after_id=last_id))  # fmt: skip
                return FeedPage(parts, count, cursor, True)
            cursor = replace(cursor, fill_after=place.run.last_seq, run=None)
            continue
        if cursor.filling:
            # In change order up to the next run worth reading in page order, if any.
            run = store.next_run(cursor.filling, cursor.fill_after, cursor.seq)
            through = cursor.seq if run is None else run.first_seq - 1
            rows = store.read_changes(
                cursor.filling, cursor.fill_after, wanted + 1, through=through, deletes=False
            )
            shown = rows[:wanted]
            # A fill's cursor keeps the feed's number and carries the change's as the fill's.
            add_lines(parts, shown, cursor.line_cursor(fill=True), zone, fields)
            count += len(shown)
            if shown:
                cursor = replace(cursor, fill_after=shown[-1].seq)
            if len(rows) > wanted:
                return FeedPage(parts, count, cursor, True)
            if run is not None:
                place = RunPlace(run, after_time=run.first_time)
                cursor = replace(cursor, fill_after=through, run=place)
                continue
            cursor = cursor.filled()
            new = tuple(sorted(set(owners).difference(cursor.known)))
            if new:  # granted during the fill: theirs next, or hasMore would be false
                cursor = replace(cursor, filling=new)
            continue
        rows = store.read_changes(cursor.known, cursor.seq, wanted + 1)
        shown = rows[:wanted]
        add_lines(parts, shown, cursor.line_cursor(fill=False), zone, fields)
        count += len(shown)
        if shown:
            cursor = replace(cursor, seq=shown[-1].seq)
        return FeedPage(parts, count, cursor, len(rows) > wanted)
    return FeedPage(parts, count, cursor, True)


_LINE_END = b"}\n"


def add_lines(
    parts: list[bytes],
    changes: list[Change],
    line_cursor: bytes,
    zone: ZoneInfo,
    fields: tuple[str, ...] | None,
) -> None:
    """Changes as NDJSON lines, appended to ``parts``; ``line_cursor``: each line's cursor,
    with ``%d`` where the change's number goes. One format a line, the body a piece of its
    own: the feed's hot loop."""
    cursor = b'{"cursor":"' + line_cursor
    upsert = cursor + b'","op":"upsert","universalId":%b,"changedAt":"%b","call":'
    upsert_body = upsert + b"{"  # the stored body is the record after its "{"
    delete = cursor + b'","op":"delete","universalId":%b,"changedAt":"%b"}\n'
    append, encode = parts.append, _encode
    last_at, when = -1, b""
    for seq, uid, _, at, body in changes:
        if at != last_at:  # a write's changes share their time: formatted once
            last_at, when = at, _when(at, zone)
        if body is None:
            append(delete % (seq, encode(uid), when))
        elif fields is None:
            append(upsert_body % (seq, encode(uid), when))
            append(body)
            append(_LINE_END)
        else:
            append(upsert % (seq, encode(uid), when))
            append(call_json(body, fields))
            append(_LINE_END)


def add_run_lines(
    parts: list[bytes],
    calls: list[RunCall],
    cursor_head: bytes,
    changed: bytes,
    fields: tuple[str, ...] | None,
) -> None:
    """A run's calls as NDJSON lines, appended to ``parts``: each cursor is ``cursor_head``
    and the call's place, every changedAt ``changed``. No object a call: the fill's hot loop."""
    head = _escaped(b'{"cursor":"' + cursor_head)
    upsert = head + b'%d.%d","op":"upsert","universalId":%b,"changedAt":"' + _escaped(changed)
    upsert += b'","call":'
    upsert_body = upsert + b"{"  # the stored body is the record after its "{"
    append, encode = parts.append, _encode
    for uid, body, at, call_id in calls:
        if fields is None:
            append(upsert_body % (at, call_id, encode(uid)))
            append(body)
        else:
            append(upsert % (at, call_id, encode(uid)))
            append(call_json(body, fields))
        append(_LINE_END)


def _escaped(text: bytes) -> bytes:
    """``text`` as literal text of a ``%`` format."""
    return text.replace(b"%", b"%%")


def call_json(body: bytes, fields: tuple[str, ...] | None) -> bytes:
    """The stored body as the v3 record without ``page``, or only ``fields`` of it."""
    if fields is None:
        return b"{" + body
    record = _decode_record(b"{" + body)
    return _encode({name: record[name] for name in fields if name in record})


def lines_json(page: FeedPage) -> bytes:
    return (
        b'{"changes":['
        + b",".join(page.lines)
        + b'],"next":"'
        + page.next.encode().encode()
        + b'","hasMore":'
        + (b"true" if page.has_more else b"false")
        + b"}"
    )


def trailer(page: FeedPage) -> bytes:
    """NDJSON's last line."""
    return (
        b'{"next":"'
        + page.next.encode().encode()
        + b'","hasMore":'
        + (b"true" if page.has_more else b"false")
        + b"}\n"
    )


@lru_cache(maxsize=8192)
def _when_cached(at: int, zone: ZoneInfo) -> bytes:
    return format_local(at, zone).encode()


def _when(at: int, zone: ZoneInfo) -> bytes:
    return _when_cached(at, zone)
